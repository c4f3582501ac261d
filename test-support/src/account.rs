//! The test aggregate: a bank account whose deposits are in cents since event version 2.
//!
//! One type for the PostgreSQL store's tests, the Vault rotation tests and the append
//! benchmark. Deposits need no opening (the store tests deposit into fresh accounts);
//! [`AccountCommand::Open`] names an owner and makes a first deposit, two events in one
//! command (the benchmark's workload).
//!
//! Stored payloads are serde's externally tagged enum: `{"Deposited": {"amount_cents": 5}}`.
//! Version 1 of `MoneyDeposited` was `{"Deposited": {"amount": <whole euros>}}`; the tests
//! register an upcaster from it.
//!
//! ```
//! use cqrs_core::Aggregate;
//! use cqrs_test_support::account::{Account, AccountCommand, AccountError, AccountEvent};
//!
//! let mut account = Account::default();
//! let events = account.handle(&AccountCommand::Deposit(250)).unwrap();
//! assert_eq!(events, vec![AccountEvent::Deposited { amount_cents: 250 }]);
//! events.iter().for_each(|e| account.apply(e));
//! assert_eq!(account.balance_cents, 250);
//! assert_eq!(
//!     account.handle(&AccountCommand::Withdraw(300)),
//!     Err(AccountError::InsufficientFunds)
//! );
//! ```

use cqrs_core::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// The state.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// Set by [`AccountEvent::Opened`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Deposits minus withdrawals.
    pub balance_cents: i64,
    /// How many deposits.
    pub deposits: u64,
    /// Every amount in order, withdrawals negative.
    pub history: Vec<i64>,
}

/// The commands.
#[derive(Debug, Clone, PartialEq)]
pub enum AccountCommand {
    /// Names the owner and deposits `initial` cents: two events. Refused when the account
    /// already has an owner.
    Open {
        /// The owner.
        owner: String,
        /// The first deposit, in cents.
        initial: i64,
    },
    /// One deposit, in cents.
    Deposit(i64),
    /// One event per amount, all in one command.
    DepositMany(Vec<i64>),
    /// A withdrawal, in cents; refused beyond the balance.
    Withdraw(i64),
}

/// The events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AccountEvent {
    /// `AccountOpened` v1.
    Opened {
        /// The owner.
        owner: String,
    },
    /// `MoneyDeposited` v2: amounts in cents (version 1 had `amount` in whole euros).
    Deposited {
        /// The amount, in cents.
        amount_cents: i64,
    },
    /// `MoneyWithdrawn` v1.
    Withdrawn {
        /// The amount, in cents.
        amount_cents: i64,
    },
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::Opened { .. } => "AccountOpened",
            AccountEvent::Deposited { .. } => "MoneyDeposited",
            AccountEvent::Withdrawn { .. } => "MoneyWithdrawn",
        }
    }

    fn event_version(&self) -> u32 {
        match self {
            AccountEvent::Deposited { .. } => 2,
            AccountEvent::Opened { .. } | AccountEvent::Withdrawn { .. } => 1,
        }
    }
}

/// The domain's refusals.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum AccountError {
    /// A deposit (or the first one) of zero or less.
    #[error("amount must be positive")]
    NotPositive,
    /// A withdrawal beyond the balance.
    #[error("insufficient funds")]
    InsufficientFunds,
    /// [`AccountCommand::Open`] on an account that has an owner.
    #[error("account already open")]
    AlreadyOpen,
}

impl Aggregate for Account {
    const TYPE: &'static str = "Account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;

    fn handle(&self, command: &AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        match command {
            AccountCommand::Open { .. } if self.owner.is_some() => Err(AccountError::AlreadyOpen),
            AccountCommand::Open { initial, .. } if *initial <= 0 => Err(AccountError::NotPositive),
            AccountCommand::Open { owner, initial } => Ok(vec![
                AccountEvent::Opened {
                    owner: owner.clone(),
                },
                AccountEvent::Deposited {
                    amount_cents: *initial,
                },
            ]),
            AccountCommand::Deposit(n) if *n <= 0 => Err(AccountError::NotPositive),
            AccountCommand::Deposit(n) => Ok(vec![AccountEvent::Deposited { amount_cents: *n }]),
            AccountCommand::DepositMany(amounts) => {
                if amounts.iter().any(|n| *n <= 0) {
                    return Err(AccountError::NotPositive);
                }
                Ok(amounts
                    .iter()
                    .map(|n| AccountEvent::Deposited { amount_cents: *n })
                    .collect())
            }
            AccountCommand::Withdraw(n) if *n > self.balance_cents => {
                Err(AccountError::InsufficientFunds)
            }
            AccountCommand::Withdraw(n) => Ok(vec![AccountEvent::Withdrawn { amount_cents: *n }]),
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { owner } => self.owner = Some(owner.clone()),
            AccountEvent::Deposited { amount_cents } => {
                self.balance_cents += amount_cents;
                self.deposits += 1;
                self.history.push(*amount_cents);
            }
            AccountEvent::Withdrawn { amount_cents } => {
                self.balance_cents -= amount_cents;
                self.history.push(-amount_cents);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn open_names_the_owner_and_deposits_once() {
        let open = AccountCommand::Open {
            owner: "ada".into(),
            initial: 100,
        };
        let mut account = Account::default();
        let events = account.handle(&open).unwrap();
        assert_eq!(
            events.iter().map(|e| e.event_type()).collect::<Vec<_>>(),
            ["AccountOpened", "MoneyDeposited"]
        );
        events.iter().for_each(|e| account.apply(e));
        assert_eq!(account.owner.as_deref(), Some("ada"));
        assert_eq!((account.balance_cents, account.deposits), (100, 1));
        assert_eq!(account.handle(&open), Err(AccountError::AlreadyOpen));
    }

    #[test]
    fn payloads_are_externally_tagged() {
        let json = serde_json::to_value(AccountEvent::Deposited { amount_cents: 5 }).unwrap();
        assert_eq!(json, serde_json::json!({"Deposited": {"amount_cents": 5}}));
    }
}
