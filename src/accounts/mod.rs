//! Accounts and credits: users (password or OAuth), the append-only credit
//! ledger, stream keys. Storage is sea-orm, the same on SQLite and PostgreSQL.
//!
//! Invariant: the balance of a user (the sum of their ledger rows) is never
//! negative, and a ledger `reference` is written at most once — every charge
//! and every credit goes through [`ledger::LedgerTxn`], which locks the user's
//! row first.

pub mod billing;
pub mod keys;
pub mod ledger;
pub mod oauth;
pub mod password;
mod users;

pub use billing::{DbBilling, paid_left};
pub use ledger::{Ledger, LedgerTxn};
pub use users::{AccountError, Accounts, User};
