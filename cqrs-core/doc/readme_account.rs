// The aggregate of README.md, section 1, for the README's later examples: doctests compile
// one by one, and these include this file. A unit test (lib.rs) keeps the two identical.
use cqrs_core::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Account { open: bool, balance: i64 }

pub enum AccountCommand { Open, Deposit(i64) }

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AccountEvent { Opened, Deposited { amount: i64 } }

impl DomainEvent for AccountEvent {
    // A stable name, stored with the event: never derive it from the Rust type name.
    fn event_type(&self) -> &'static str {
        match self { AccountEvent::Opened => "AccountOpened", AccountEvent::Deposited { .. } => "MoneyDeposited" }
    }
    // Bump when the payload changes shape, and register an upcaster (step 4).
    fn event_version(&self) -> u32 { 1 }
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum AccountError {
    #[error("account is not open")] NotOpen,
}

impl Aggregate for Account {
    const TYPE: &'static str = "Account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;

    fn handle(&self, command: &AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        match command {
            AccountCommand::Open => Ok(vec![AccountEvent::Opened]),
            AccountCommand::Deposit(_) if !self.open => Err(AccountError::NotOpen),
            AccountCommand::Deposit(n) => Ok(vec![AccountEvent::Deposited { amount: *n }]),
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened => self.open = true,
            AccountEvent::Deposited { amount } => self.balance += amount,
        }
    }
}
