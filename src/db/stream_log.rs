//! The stream log over the database: a row in `streams` per stream, written
//! when it goes live and when it ends (the actors' [`StreamLog`] port).

use async_trait::async_trait;
use dreamstream_actors::store::{EndReason, StoreError, StreamLog, StreamTotals};
use dreamstream_actors::{StreamId, StyleParams, Username};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter,
};

use super::entities::{stream, user};

pub struct DbStreamLog {
    db: DatabaseConnection,
    /// This control node ([`super::node_id`]), written into every stream row.
    node: String,
}

impl DbStreamLog {
    pub fn new(db: DatabaseConnection, node: String) -> Self {
        Self { db, node }
    }

    /// Closes the streams this node left open when it last stopped without
    /// ending them (kill -9, a power cut): `crashed`, ended now. Other
    /// nodes' rows are theirs. Returns how many were closed.
    pub async fn close_unfinished(&self) -> Result<u64, sea_orm::DbErr> {
        let closed = stream::Entity::update_many()
            .col_expr(stream::Column::EndedAt, Expr::value(chrono::Utc::now()))
            .col_expr(
                stream::Column::EndReason,
                Expr::value(EndReason::Crashed.as_str()),
            )
            .filter(stream::Column::EndedAt.is_null())
            .filter(stream::Column::Node.eq(self.node.as_str()))
            .exec(&self.db)
            .await?;
        Ok(closed.rows_affected)
    }

    async fn owner(&self, username: &Username) -> Result<i64, StoreError> {
        user::Entity::find()
            .filter(user::Column::Username.eq(username.as_str()))
            .one(&self.db)
            .await
            .map_err(err)?
            .map(|u| u.id)
            .ok_or_else(|| StoreError(format!("no account named {username}")))
    }
}

/// The store error for a database error (its text is logged by the caller,
/// never sent to a client).
pub(crate) fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

#[async_trait]
impl StreamLog for DbStreamLog {
    async fn stream_started(
        &self,
        username: &Username,
        settings: &StyleParams,
    ) -> Result<StreamId, StoreError> {
        let owner = self.owner(username).await?;
        let row = stream::ActiveModel {
            username: Set(username.to_string()),
            user_id: Set(Some(owner)),
            credits_charged: Set(0),
            started_at: Set(chrono::Utc::now()),
            settings: Set(serde_json::to_string(settings).map_err(err)?),
            frames_in: Set(0),
            frames_out: Set(0),
            frames_dropped: Set(0),
            peak_viewers: Set(0),
            node: Set(Some(self.node.clone())),
            ..Default::default()
        };
        // Only the new id comes back (no decoding of the whole row).
        let inserted = stream::Entity::insert(row)
            .exec(&self.db)
            .await
            .map_err(err)?;
        Ok(StreamId(inserted.last_insert_id))
    }

    async fn stream_ended(
        &self,
        id: StreamId,
        reason: EndReason,
        totals: &StreamTotals,
    ) -> Result<(), StoreError> {
        let Some(row) = stream::Entity::find_by_id(id.0)
            .one(&self.db)
            .await
            .map_err(err)?
        else {
            return Err(StoreError(format!("stream {id} is not in the database")));
        };
        let mut row: stream::ActiveModel = row.into();
        row.ended_at = Set(Some(chrono::Utc::now()));
        row.end_reason = Set(Some(reason.as_str().to_string()));
        row.frames_in = Set(totals.frames_in as i64);
        row.frames_out = Set(totals.frames_out as i64);
        row.frames_dropped = Set(totals.frames_dropped as i64);
        row.peak_viewers = Set(totals.peak_viewers as i64);
        row.update(&self.db).await.map_err(err)?;
        Ok(())
    }
}
