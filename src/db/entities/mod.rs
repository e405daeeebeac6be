//! sea-orm entities (the schema itself lives in `migrations/`).

pub mod stream;
