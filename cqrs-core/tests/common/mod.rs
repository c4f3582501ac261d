//! A small bank-account domain used by the tests.
//!
//! Not `cqrs_test_support::account::Account`: these tests rely on the opposite rule (a
//! deposit into an account that was not opened is refused, `"account is not open"`) and on
//! adjacently tagged payloads (`{"type": "Deposited", "data": {"cents": 3}}`), while the
//! PostgreSQL store's tests deposit into fresh accounts; one aggregate cannot do both.
#![allow(dead_code)]

use cqrs_core::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub open: bool,
    pub balance: i64,
    pub deposits: u64,
}

#[derive(Debug, Clone)]
pub enum AccountCommand {
    Open,
    Deposit(i64),
    Withdraw(i64),
    /// Decides nothing.
    Noop,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum AccountEvent {
    Opened,
    /// v2 stores cents; v1 stored `{"euros": n}`.
    Deposited {
        cents: i64,
    },
    Withdrawn {
        cents: i64,
    },
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::Opened => "AccountOpened",
            AccountEvent::Deposited { .. } => "MoneyDeposited",
            AccountEvent::Withdrawn { .. } => "MoneyWithdrawn",
        }
    }

    fn event_version(&self) -> u32 {
        match self {
            AccountEvent::Deposited { .. } => 2,
            _ => 1,
        }
    }
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum AccountError {
    #[error("account is not open")]
    NotOpen,
    #[error("account is already open")]
    AlreadyOpen,
    #[error("amount must be positive")]
    NotPositive,
    #[error("insufficient funds")]
    InsufficientFunds,
}

impl Aggregate for Account {
    const TYPE: &'static str = "Account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;

    fn handle(&self, command: &AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        match command {
            AccountCommand::Open if self.open => Err(AccountError::AlreadyOpen),
            AccountCommand::Open => Ok(vec![AccountEvent::Opened]),
            _ if !self.open => Err(AccountError::NotOpen),
            AccountCommand::Deposit(n) | AccountCommand::Withdraw(n) if *n <= 0 => {
                Err(AccountError::NotPositive)
            }
            AccountCommand::Deposit(n) => Ok(vec![AccountEvent::Deposited { cents: *n }]),
            AccountCommand::Withdraw(n) if *n > self.balance => {
                Err(AccountError::InsufficientFunds)
            }
            AccountCommand::Withdraw(n) => Ok(vec![AccountEvent::Withdrawn { cents: *n }]),
            AccountCommand::Noop => Ok(vec![]),
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened => self.open = true,
            AccountEvent::Deposited { cents } => {
                self.balance += cents;
                self.deposits += 1;
            }
            AccountEvent::Withdrawn { cents } => self.balance -= cents,
        }
    }
}
