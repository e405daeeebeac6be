//! The persistence port: the stream actors record what must survive through
//! this trait; the control node implements it with its database.

use async_trait::async_trait;

use crate::ids::{StreamId, Username};
use crate::style::StyleParams;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("storage failed: {0}")]
pub struct StoreError(pub String);

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The streamer stopped it.
    Stopped,
    /// The broadcaster was gone longer than the idle timeout.
    BroadcasterGone,
    OutOfCredits,
    /// The actor kept failing and the supervisor gave up.
    Crashed,
    /// The control node shut down.
    Shutdown,
    /// An administrator ended it.
    Admin,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Stopped => "stopped",
            EndReason::BroadcasterGone => "broadcaster_gone",
            EndReason::OutOfCredits => "out_of_credits",
            EndReason::Crashed => "crashed",
            EndReason::Shutdown => "shutdown",
            EndReason::Admin => "admin",
        }
    }
}

/// Counters of a stream, recorded when it ends.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct StreamTotals {
    pub frames_in: u64,
    pub frames_out: u64,
    pub frames_dropped: u64,
    pub peak_viewers: u64,
}

#[async_trait]
pub trait StreamStore: Send + Sync + 'static {
    /// A stream goes live; returns its id.
    async fn stream_started(
        &self,
        username: &Username,
        settings: &StyleParams,
    ) -> Result<StreamId, StoreError>;

    async fn stream_ended(
        &self,
        id: StreamId,
        reason: EndReason,
        totals: &StreamTotals,
    ) -> Result<(), StoreError>;
}

/// Keeps nothing (tests and tools that need no database).
pub struct NoStore {
    next: std::sync::atomic::AtomicI64,
}

impl Default for NoStore {
    fn default() -> Self {
        Self {
            next: std::sync::atomic::AtomicI64::new(1),
        }
    }
}

#[async_trait]
impl StreamStore for NoStore {
    async fn stream_started(&self, _: &Username, _: &StyleParams) -> Result<StreamId, StoreError> {
        Ok(StreamId(
            self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        ))
    }

    async fn stream_ended(
        &self,
        _: StreamId,
        _: EndReason,
        _: &StreamTotals,
    ) -> Result<(), StoreError> {
        Ok(())
    }
}
