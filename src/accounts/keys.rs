//! Stream keys: a secret a script or device uses instead of a login to
//! broadcast (`?key=` or `Authorization: Bearer`). Only the SHA-256 of a key is
//! stored; the key itself is shown once, when it is made.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter,
};
use sha2::{Digest, Sha256};

use crate::db::entities::api_key;

/// The name of the stream key row (one per user; making a new one replaces it).
const STREAM_KEY: &str = "stream";

fn digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Makes a new stream key for `user_id`, replacing the old one.
pub async fn rotate(db: &DatabaseConnection, user_id: i64) -> Result<String, DbErr> {
    use sea_orm::TransactionTrait;
    let key = format!("dsk_{}", hex::encode(rand::random::<[u8; 24]>()));
    // One transaction: two concurrent rotations never leave two valid keys
    // (the user's row lock serialises them).
    let txn = db.begin().await?;
    super::ledger::lock_user(&txn, user_id).await?;
    api_key::Entity::delete_many()
        .filter(api_key::Column::UserId.eq(user_id))
        .filter(api_key::Column::Name.eq(STREAM_KEY))
        .exec(&txn)
        .await?;
    api_key::ActiveModel {
        user_id: Set(user_id),
        name: Set(STREAM_KEY.into()),
        key_hash: Set(digest(&key)),
        created_at: Set(chrono::Utc::now()),
        last_used_at: Set(None),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    txn.commit().await?;
    Ok(key)
}

/// The user a key belongs to.
pub async fn owner(db: &DatabaseConnection, key: &str) -> Result<Option<i64>, DbErr> {
    if !key.starts_with("dsk_") || key.len() > 100 {
        return Ok(None);
    }
    let Some(row) = api_key::Entity::find()
        .filter(api_key::Column::KeyHash.eq(digest(key)))
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let user_id = row.user_id;
    let mut row: api_key::ActiveModel = row.into();
    row.last_used_at = Set(Some(chrono::Utc::now()));
    row.update(db).await?;
    Ok(Some(user_id))
}

/// Whether the user has a stream key (the studio says so without showing it).
pub async fn exists(db: &DatabaseConnection, user_id: i64) -> Result<bool, DbErr> {
    Ok(api_key::Entity::find()
        .filter(api_key::Column::UserId.eq(user_id))
        .filter(api_key::Column::Name.eq(STREAM_KEY))
        .one(db)
        .await?
        .is_some())
}
