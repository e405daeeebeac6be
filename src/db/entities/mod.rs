//! sea-orm entities (the schema itself lives in `migrations/`).

pub mod api_key;
pub mod api_stream;
pub mod chat_ban;
pub mod comment;
pub mod credit_ledger;
pub mod oauth_identity;
pub mod paid_time;
pub mod payment;
pub mod stream;
pub mod stripe_event;
pub mod style_request;
pub mod user;
