//! The actors' persistence port over the database.

use async_trait::async_trait;
use dreamstream_actors::store::{EndReason, StoreError, StreamStore, StreamTotals};
use dreamstream_actors::{StreamId, StyleParams, Username};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, DatabaseConnection, EntityTrait};

use super::entities::stream;

pub struct DbStreamStore {
    db: DatabaseConnection,
}

impl DbStreamStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

#[async_trait]
impl StreamStore for DbStreamStore {
    async fn stream_started(
        &self,
        username: &Username,
        settings: &StyleParams,
    ) -> Result<StreamId, StoreError> {
        let row = stream::ActiveModel {
            username: Set(username.to_string()),
            started_at: Set(chrono::Utc::now()),
            settings: Set(serde_json::to_string(settings).map_err(err)?),
            frames_in: Set(0),
            frames_out: Set(0),
            frames_dropped: Set(0),
            peak_viewers: Set(0),
            ..Default::default()
        }
        .insert(&self.db)
        .await
        .map_err(err)?;
        Ok(StreamId(row.id))
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
