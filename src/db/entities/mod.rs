//! sea-orm entities (the schema itself lives in `migrations/`).

pub mod api_key;
pub mod credit_ledger;
pub mod oauth_identity;
pub mod payment;
pub mod stream;
pub mod stripe_event;
pub mod user;
