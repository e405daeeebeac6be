//! Comments, chat bans, style requests and channel switches in the database.
//! The web tier checks who may do what; this module only stores.

use dreamstream_actors::store::{StoreError, StyleRequests};
use dreamstream_actors::stream::community::{CommunitySettings, RequestStatus};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, SqlErr,
};

use crate::db::entities::{chat_ban, comment, style_request, user};

/// Longest comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 300;

/// The channel's switches, as saved by its owner.
pub async fn load_settings(
    db: &DatabaseConnection,
    owner: i64,
) -> Result<CommunitySettings, DbErr> {
    let row = user::Entity::find_by_id(owner).one(db).await?;
    Ok(row
        .map(|u| CommunitySettings {
            comments: u.comments_enabled,
            requests: u.requests_enabled,
            auto_approve: u.auto_approve,
            dwell_secs: u.dwell_secs.max(0) as u64,
        })
        .unwrap_or_default())
}

pub async fn save_settings(
    db: &DatabaseConnection,
    owner: i64,
    s: &CommunitySettings,
) -> Result<(), DbErr> {
    user::Entity::update_many()
        .col_expr(user::Column::CommentsEnabled, Expr::value(s.comments))
        .col_expr(user::Column::RequestsEnabled, Expr::value(s.requests))
        .col_expr(user::Column::AutoApprove, Expr::value(s.auto_approve))
        .col_expr(user::Column::DwellSecs, Expr::value(s.dwell_secs as i64))
        .filter(user::Column::Id.eq(owner))
        .exec(db)
        .await?;
    Ok(())
}

pub async fn add_comment(
    db: &DatabaseConnection,
    stream_id: i64,
    channel_id: i64,
    author: (i64, &str),
    body: &str,
) -> Result<comment::Model, DbErr> {
    comment::ActiveModel {
        stream_id: Set(stream_id),
        channel_id: Set(channel_id),
        user_id: Set(author.0),
        username: Set(author.1.to_string()),
        body: Set(body.to_string()),
        deleted: Set(false),
        created_at: Set(chrono::Utc::now()),
        ..Default::default()
    }
    .insert(db)
    .await
}

/// The newest `limit` comments of a stream, oldest first.
pub async fn recent_comments(
    db: &DatabaseConnection,
    stream_id: i64,
    limit: u64,
) -> Result<Vec<comment::Model>, DbErr> {
    let mut rows = comment::Entity::find()
        .filter(comment::Column::StreamId.eq(stream_id))
        .filter(comment::Column::Deleted.eq(false))
        .order_by_desc(comment::Column::Id)
        .limit(limit)
        .all(db)
        .await?;
    rows.reverse();
    Ok(rows)
}

/// Marks a comment of `channel_id`'s chat deleted; false if there is none.
pub async fn delete_comment(
    db: &DatabaseConnection,
    channel_id: i64,
    id: i64,
) -> Result<bool, DbErr> {
    let r = comment::Entity::update_many()
        .col_expr(comment::Column::Deleted, Expr::value(true))
        .filter(comment::Column::Id.eq(id))
        .filter(comment::Column::ChannelId.eq(channel_id))
        .exec(db)
        .await?;
    Ok(r.rows_affected > 0)
}

pub async fn ban(db: &DatabaseConnection, channel_id: i64, user_id: i64) -> Result<(), DbErr> {
    let r = chat_ban::ActiveModel {
        channel_id: Set(channel_id),
        user_id: Set(user_id),
        created_at: Set(chrono::Utc::now()),
        ..Default::default()
    }
    .insert(db)
    .await;
    match r {
        Ok(_) => Ok(()),
        // Already banned.
        Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => Ok(()),
        Err(e) => Err(e),
    }
}

pub async fn unban(db: &DatabaseConnection, channel_id: i64, user_id: i64) -> Result<(), DbErr> {
    chat_ban::Entity::delete_many()
        .filter(chat_ban::Column::ChannelId.eq(channel_id))
        .filter(chat_ban::Column::UserId.eq(user_id))
        .exec(db)
        .await?;
    Ok(())
}

pub async fn is_banned(
    db: &DatabaseConnection,
    channel_id: i64,
    user_id: i64,
) -> Result<bool, DbErr> {
    Ok(chat_ban::Entity::find()
        .filter(chat_ban::Column::ChannelId.eq(channel_id))
        .filter(chat_ban::Column::UserId.eq(user_id))
        .one(db)
        .await?
        .is_some())
}

/// What a style request asks for, as stored.
pub struct NewRequest<'a> {
    pub stream_id: i64,
    pub author: (i64, &'a str),
    pub kind: &'a str,
    pub label: &'a str,
    pub spec: &'a str,
    pub image: Option<Vec<u8>>,
}

pub async fn add_request(db: &DatabaseConnection, r: NewRequest<'_>) -> Result<i64, DbErr> {
    let row = style_request::ActiveModel {
        stream_id: Set(r.stream_id),
        user_id: Set(r.author.0),
        username: Set(r.author.1.to_string()),
        kind: Set(r.kind.to_string()),
        label: Set(r.label.to_string()),
        spec: Set(r.spec.to_string()),
        image: Set(r.image),
        status: Set(RequestStatus::Pending.as_str().into()),
        created_at: Set(chrono::Utc::now()),
        decided_at: Set(None),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(row.id)
}

pub async fn decide_request(
    db: &DatabaseConnection,
    id: i64,
    status: RequestStatus,
) -> Result<(), DbErr> {
    style_request::Entity::update_many()
        .col_expr(style_request::Column::Status, Expr::value(status.as_str()))
        .col_expr(
            style_request::Column::DecidedAt,
            Expr::value(chrono::Utc::now()),
        )
        .filter(style_request::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

/// The actors' [`StyleRequests`] port: what a stream decides on its own
/// (auto-approve) is written where the studio's decisions are.
pub struct DbStyleRequests {
    db: DatabaseConnection,
}

impl DbStyleRequests {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[async_trait::async_trait]
impl StyleRequests for DbStyleRequests {
    async fn style_request_decided(
        &self,
        request: i64,
        status: RequestStatus,
    ) -> Result<(), StoreError> {
        decide_request(&self.db, request, status)
            .await
            .map_err(|e| StoreError(e.to_string()))
    }
}
