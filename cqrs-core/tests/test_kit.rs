//! The given/when/then kit reports failures with useful messages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Account, AccountCommand, AccountError, AccountEvent};
use cqrs_core::TestFramework;

#[test]
fn expected_events_pass() {
    TestFramework::<Account>::new()
        .given(vec![AccountEvent::Opened])
        .when(AccountCommand::Deposit(3))
        .then_expect_events(vec![AccountEvent::Deposited { cents: 3 }]);
}

#[test]
fn expected_errors_pass() {
    TestFramework::<Account>::new()
        .given(vec![
            AccountEvent::Opened,
            AccountEvent::Deposited { cents: 1 },
        ])
        .when(AccountCommand::Withdraw(2))
        .then_expect_error(AccountError::InsufficientFunds);
    TestFramework::<Account>::new()
        .given_no_previous_events()
        .when(AccountCommand::Deposit(1))
        .then_expect_error_message("account is not open");
}

#[test]
fn state_after_the_command_can_be_checked() {
    TestFramework::<Account>::new()
        .given(vec![
            AccountEvent::Opened,
            AccountEvent::Deposited { cents: 10 },
        ])
        .when(AccountCommand::Withdraw(4))
        .then_expect_state(|account| assert_eq!(account.balance, 6));
}

#[test]
#[should_panic(expected = "the command produced other events than expected")]
fn other_events_fail() {
    TestFramework::<Account>::new()
        .given(vec![AccountEvent::Opened])
        .when(AccountCommand::Deposit(3))
        .then_expect_events(vec![AccountEvent::Deposited { cents: 4 }]);
}

#[test]
#[should_panic(expected = "expected events, but the command failed: account is not open")]
fn an_error_where_events_were_expected_fails() {
    TestFramework::<Account>::new()
        .given_no_previous_events()
        .when(AccountCommand::Deposit(3))
        .then_expect_events(vec![]);
}

#[test]
#[should_panic(expected = "expected error")]
fn events_where_an_error_was_expected_fail() {
    TestFramework::<Account>::new()
        .given(vec![AccountEvent::Opened])
        .when(AccountCommand::Deposit(3))
        .then_expect_error(AccountError::NotOpen);
}
