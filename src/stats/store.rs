//! [`AudienceStore`]: the actors' [`StreamLog`] with the audience added —
//! when a stream ends, its final distinct IPs and peak (with when) go to its
//! row in `streams`, so the history survives restarts.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dreamstream_actors::store::{EndReason, StoreError, StreamLog, StreamTotals};
use dreamstream_actors::{StreamId, StyleParams, Username};
use sea_orm::DatabaseConnection;

use crate::audience::Audience;

/// The end of a stream waits this long for its audience numbers at most (the
/// supervisor is waiting); the periodic save has stored them until shortly
/// before anyway.
const END_WAIT: Duration = Duration::from_secs(5);

pub struct AudienceStore {
    inner: Arc<dyn StreamLog>,
    audience: Arc<dyn Audience>,
    db: DatabaseConnection,
}

impl AudienceStore {
    pub fn new(
        inner: Arc<dyn StreamLog>,
        audience: Arc<dyn Audience>,
        db: DatabaseConnection,
    ) -> Self {
        Self {
            inner,
            audience,
            db,
        }
    }

    async fn save_audience(&self, id: StreamId) -> anyhow::Result<()> {
        if let Some(a) = self.audience.stream_ended(id).await? {
            super::tables::save_stream(&self.db, &a).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl StreamLog for AudienceStore {
    async fn stream_started(
        &self,
        username: &Username,
        settings: &StyleParams,
    ) -> Result<StreamId, StoreError> {
        self.inner.stream_started(username, settings).await
    }

    async fn stream_ended(
        &self,
        id: StreamId,
        reason: EndReason,
        totals: &StreamTotals,
    ) -> Result<(), StoreError> {
        let ended = self.inner.stream_ended(id, reason, totals).await;
        match tokio::time::timeout(END_WAIT, self.save_audience(id)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(stream_id = %id, error = format!("{e:#}"), "failed to save a stream's audience");
            }
            Err(_) => tracing::warn!(stream_id = %id, "saving a stream's audience timed out"),
        }
        ended
    }
}
