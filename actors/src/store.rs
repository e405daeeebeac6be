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

/// The answer to charging one credit period of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// One credit was taken; `balance` is what is left.
    Charged { balance: i64 },
    /// This period was already paid (a retry, or a restarted actor).
    AlreadyPaid { balance: i64 },
    /// Not enough credits: nothing was taken.
    Insufficient { balance: i64 },
}

impl Charge {
    pub fn balance(self) -> i64 {
        match self {
            Charge::Charged { balance }
            | Charge::AlreadyPaid { balance }
            | Charge::Insufficient { balance } => balance,
        }
    }

    pub fn paid(self) -> bool {
        !matches!(self, Charge::Insufficient { .. })
    }
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

    /// Charges the owner one credit for `period` (0 = the first ten minutes) of
    /// the stream `id`. Idempotent per (stream, period): calling it again for a
    /// paid period takes nothing and answers `AlreadyPaid`.
    async fn charge_period(
        &self,
        id: StreamId,
        username: &Username,
        period: u64,
    ) -> Result<Charge, StoreError>;

    /// The owner's credits.
    async fn balance(&self, username: &Username) -> Result<i64, StoreError>;

    /// A queued style request was applied or dropped by the stream itself
    /// (auto-approve mode).
    async fn style_request_decided(&self, _request: i64, _status: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Keeps nothing and charges nothing (tests and tools that need no database).
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

    async fn charge_period(&self, _: StreamId, _: &Username, _: u64) -> Result<Charge, StoreError> {
        Ok(Charge::Charged { balance: i64::MAX })
    }

    async fn balance(&self, _: &Username) -> Result<i64, StoreError> {
        Ok(i64::MAX)
    }
}
