//! Keys for scripts and devices, all in `api_keys`, only their SHA-256
//! stored; a key is shown once, when it is made.
//!
//! - **Stream keys** (`dsk_…`, kind `stream`, one per user): broadcast
//!   instead of a login (`?key=` or `Authorization: Bearer`).
//! - **Ingest keys** (`dsk_…`, kind `ingest`): the `stream_key` of one `/v1`
//!   stream; they broadcast like a stream key and die with their stream.
//! - **API keys** (`dsa_…`, kind `api`, named, any number): `Authorization:
//!   Bearer` on `/v1/*`. They do not broadcast.
//!
//! A revoked key (`revoked_at` set) opens nothing from that moment: every
//! use reads its row.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr,
    EntityTrait, QueryFilter, QueryOrder,
};
use sha2::{Digest, Sha256};

use crate::db::entities::api_key;

/// The name of the stream key row (one per user; making a new one replaces it).
const STREAM_KEY: &str = "stream";

/// What a key opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// The studio's stream key: broadcasting.
    Stream,
    /// A `/v1` stream's key: broadcasting.
    Ingest,
    /// `/v1/*`.
    Api,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Stream => "stream",
            KeyKind::Ingest => "ingest",
            KeyKind::Api => "api",
        }
    }

    fn secret_prefix(self) -> &'static str {
        match self {
            KeyKind::Stream | KeyKind::Ingest => "dsk_",
            KeyKind::Api => "dsa_",
        }
    }
}

/// Longest name of an API key, in characters.
pub const MAX_KEY_NAME: usize = 64;
/// Characters of a key kept (and shown) to tell keys apart.
const SHOWN_PREFIX: usize = 10;

fn digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new secret of `kind` and the part of it that may be shown later.
fn new_secret(kind: KeyKind) -> (String, String) {
    let key = format!(
        "{}{}",
        kind.secret_prefix(),
        hex::encode(rand::random::<[u8; 24]>())
    );
    let shown = key[..SHOWN_PREFIX].to_string();
    (key, shown)
}

async fn insert(
    db: &impl ConnectionTrait,
    user_id: i64,
    kind: KeyKind,
    name: &str,
) -> Result<(api_key::Model, String), DbErr> {
    let (key, prefix) = new_secret(kind);
    let row = api_key::ActiveModel {
        user_id: Set(user_id),
        name: Set(name.to_string()),
        key_hash: Set(digest(&key)),
        created_at: Set(chrono::Utc::now()),
        last_used_at: Set(None),
        kind: Set(kind.as_str().to_string()),
        prefix: Set(prefix),
        revoked_at: Set(None),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok((row, key))
}

/// Makes a new stream key for `user_id`, replacing the old one.
pub async fn rotate(db: &DatabaseConnection, user_id: i64) -> Result<String, DbErr> {
    use sea_orm::TransactionTrait;
    // One transaction: two concurrent rotations never leave two valid keys
    // (the user's row lock serialises them).
    let txn = db.begin().await?;
    super::ledger::lock_user(&txn, user_id).await?;
    api_key::Entity::delete_many()
        .filter(api_key::Column::UserId.eq(user_id))
        .filter(api_key::Column::Kind.eq(KeyKind::Stream.as_str()))
        .exec(&txn)
        .await?;
    let (_, key) = insert(&txn, user_id, KeyKind::Stream, STREAM_KEY).await?;
    txn.commit().await?;
    Ok(key)
}

/// The live (not revoked) row of `key` if it is of one of `kinds`; notes
/// the use.
async fn find_live(
    db: &DatabaseConnection,
    key: &str,
    kinds: &[KeyKind],
) -> Result<Option<api_key::Model>, DbErr> {
    if key.len() > 100 || !kinds.iter().any(|k| key.starts_with(k.secret_prefix())) {
        return Ok(None);
    }
    let Some(row) = api_key::Entity::find()
        .filter(api_key::Column::KeyHash.eq(digest(key)))
        .filter(api_key::Column::RevokedAt.is_null())
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    if !kinds.iter().any(|k| k.as_str() == row.kind) {
        return Ok(None);
    }
    let found = row.clone();
    let mut row: api_key::ActiveModel = row.into();
    row.last_used_at = Set(Some(chrono::Utc::now()));
    row.update(db).await?;
    Ok(Some(found))
}

/// The user a broadcasting key (stream or ingest key) belongs to.
pub async fn owner(db: &DatabaseConnection, key: &str) -> Result<Option<i64>, DbErr> {
    Ok(find_live(db, key, &[KeyKind::Stream, KeyKind::Ingest])
        .await?
        .map(|row| row.user_id))
}

/// The broadcasting key's row (the `/v1` stream an ingest key belongs to is
/// found by its id).
pub async fn broadcasting_key(
    db: &DatabaseConnection,
    key: &str,
) -> Result<Option<api_key::Model>, DbErr> {
    find_live(db, key, &[KeyKind::Stream, KeyKind::Ingest]).await
}

/// The API key's row, if `key` is a live API key.
pub async fn api_key(db: &DatabaseConnection, key: &str) -> Result<Option<api_key::Model>, DbErr> {
    find_live(db, key, &[KeyKind::Api]).await
}

/// Whether the user has a stream key (the studio says so without showing it).
pub async fn exists(db: &DatabaseConnection, user_id: i64) -> Result<bool, DbErr> {
    Ok(api_key::Entity::find()
        .filter(api_key::Column::UserId.eq(user_id))
        .filter(api_key::Column::Kind.eq(KeyKind::Stream.as_str()))
        .one(db)
        .await?
        .is_some())
}

/// Why an API key could not be made or revoked.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("a key name is 1 to {MAX_KEY_NAME} characters, without control characters")]
    BadName,
    #[error("you already have a key named {0:?}: pick another name or revoke it first")]
    NameTaken(String),
    #[error("no such API key")]
    NoSuchKey,
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// A checked key name: trimmed, 1 to [`MAX_KEY_NAME`] characters, no control
/// characters.
pub fn check_name(name: &str) -> Result<&str, KeyError> {
    let name = name.trim();
    let n = name.chars().count();
    if n == 0 || n > MAX_KEY_NAME || name.chars().any(char::is_control) {
        return Err(KeyError::BadName);
    }
    Ok(name)
}

/// Makes a named API key for `user_id`; returns its row and the key (the
/// only time the key exists outside its owner's hands). Names are unique
/// among the user's live API keys.
pub async fn create_api_key(
    db: &DatabaseConnection,
    user_id: i64,
    name: &str,
) -> Result<(api_key::Model, String), KeyError> {
    use sea_orm::TransactionTrait;
    let name = check_name(name)?;
    let txn = db.begin().await?;
    super::ledger::lock_user(&txn, user_id).await?;
    let taken = api_key::Entity::find()
        .filter(api_key::Column::UserId.eq(user_id))
        .filter(api_key::Column::Kind.eq(KeyKind::Api.as_str()))
        .filter(api_key::Column::RevokedAt.is_null())
        .filter(api_key::Column::Name.eq(name))
        .one(&txn)
        .await?
        .is_some();
    if taken {
        return Err(KeyError::NameTaken(name.to_string()));
    }
    let made = insert(&txn, user_id, KeyKind::Api, name).await?;
    txn.commit().await?;
    Ok(made)
}

/// The user's API keys, newest first (revoked ones too, marked).
pub async fn list_api_keys(
    db: &DatabaseConnection,
    user_id: i64,
) -> Result<Vec<api_key::Model>, DbErr> {
    api_key::Entity::find()
        .filter(api_key::Column::UserId.eq(user_id))
        .filter(api_key::Column::Kind.eq(KeyKind::Api.as_str()))
        .order_by_desc(api_key::Column::Id)
        .all(db)
        .await
}

/// Which API key to revoke.
#[derive(Debug, Clone)]
pub enum KeyRef<'a> {
    Id(i64),
    /// The live key of that name.
    Name(&'a str),
}

/// Revokes one of the user's API keys; it is refused from now on. Revoking
/// a revoked key is not an error (the answer is the same row).
pub async fn revoke_api_key(
    db: &DatabaseConnection,
    user_id: i64,
    which: KeyRef<'_>,
) -> Result<api_key::Model, KeyError> {
    let mut q = api_key::Entity::find()
        .filter(api_key::Column::UserId.eq(user_id))
        .filter(api_key::Column::Kind.eq(KeyKind::Api.as_str()));
    q = match which {
        KeyRef::Id(id) => q.filter(api_key::Column::Id.eq(id)),
        KeyRef::Name(name) => q
            .filter(api_key::Column::Name.eq(name.trim()))
            .filter(api_key::Column::RevokedAt.is_null()),
    };
    let row = q.one(db).await?.ok_or(KeyError::NoSuchKey)?;
    if row.revoked_at.is_some() {
        return Ok(row);
    }
    let mut active: api_key::ActiveModel = row.into();
    active.revoked_at = Set(Some(chrono::Utc::now()));
    Ok(active.update(db).await?)
}

/// Makes the ingest key of a `/v1` stream (inside the caller's transaction).
pub async fn create_ingest_key(
    db: &impl ConnectionTrait,
    user_id: i64,
    stream_id: &str,
) -> Result<(api_key::Model, String), DbErr> {
    insert(db, user_id, KeyKind::Ingest, stream_id).await
}

/// Deletes a `/v1` stream's ingest key: it stops broadcasting at once.
pub async fn delete_key(db: &impl ConnectionTrait, key_id: i64) -> Result<(), DbErr> {
    api_key::Entity::delete_by_id(key_id).exec(db).await?;
    Ok(())
}
