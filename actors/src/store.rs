//! The persistence ports: the stream actors record what must survive through
//! three traits, one per job ([`StreamLog`], [`Billing`], [`StyleRequests`],
//! bundled as [`Stores`]); the control node implements each with its
//! database, where that job's tables are.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use crate::stream::community::RequestStatus;

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

/// The owner's credit as the meter sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credit {
    /// Credits not spent yet.
    pub balance: i64,
    /// What is left of the period the last credit paid for (zero when
    /// none runs): streaming time the owner has already paid.
    pub paid_left: Duration,
}

impl Credit {
    /// Whether the owner may go live now: a credit to spend, or a paid
    /// period still running.
    pub fn can_stream(&self) -> bool {
        self.balance >= 1 || !self.paid_left.is_zero()
    }
}

/// The answer to "make sure the owner's time is paid for now".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// One credit was taken for a new period.
    Charged(Credit),
    /// A period already paid (by this stream or an earlier one of the same
    /// owner) is still running: nothing was taken.
    AlreadyPaid(Credit),
    /// No period runs and no credit is left: nothing was taken.
    Insufficient { balance: i64 },
}

impl Charge {
    pub fn balance(self) -> i64 {
        match self {
            Charge::Charged(c) | Charge::AlreadyPaid(c) => c.balance,
            Charge::Insufficient { balance } => balance,
        }
    }

    pub fn paid(self) -> bool {
        !matches!(self, Charge::Insufficient { .. })
    }
}

/// Where a new paid period starts, given when the last one ended: right at
/// its end when that was a moment ago (a live stream crossing a boundary,
/// its meter a little late), so continuous streaming is charged
/// continuously; now otherwise (a new start after a pause). Any clock whose
/// instants subtract to a `Duration`: tokio's, or time since the epoch.
pub fn next_period_start<T>(now: T, previous_end: Option<T>, period: Duration) -> T
where
    T: Copy
        + PartialOrd
        + std::ops::Add<Duration, Output = T>
        + std::ops::Sub<T, Output = Duration>,
{
    /// How late a meter may be at a boundary and still be continuous.
    const LATE: Duration = Duration::from_secs(2);
    match previous_end {
        Some(end) if end <= now && now - end <= LATE && end + period > now => end,
        _ => now,
    }
}

/// The stream log: a row per stream, from go-live to its end.
#[async_trait]
pub trait StreamLog: Send + Sync + 'static {
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

/// Billing: the owner's credits and the streaming time they bought.
#[async_trait]
pub trait Billing: Send + Sync + 'static {
    /// Makes sure the owner's streaming time is paid for now, on behalf of
    /// the stream `id`: inside a period already paid (by any of the owner's
    /// streams, before a restart too) it takes nothing (`AlreadyPaid`);
    /// otherwise one credit buys `period` from [`next_period_start`]
    /// (`Charged`), or nothing happens (`Insufficient`). Atomic per owner, so
    /// racing callers take one credit between them; a retry after a lost
    /// answer finds the period paid.
    async fn pay_for_now(
        &self,
        id: StreamId,
        username: &Username,
        period: Duration,
    ) -> Result<Charge, StoreError>;

    /// The owner's credits and paid time left.
    async fn credit(&self, username: &Username) -> Result<Credit, StoreError>;
}

/// Viewers' style requests, as the stream decides them.
#[async_trait]
pub trait StyleRequests: Send + Sync + 'static {
    /// A queued style request was applied or dropped by the stream itself
    /// (auto-approve mode).
    async fn style_request_decided(
        &self,
        request: i64,
        status: RequestStatus,
    ) -> Result<(), StoreError>;
}

/// Where a stream's life is written: one port per job, each implemented
/// where its tables live (and decorated on its own: the audience numbers
/// wrap only the stream log).
#[derive(Clone)]
pub struct Stores {
    pub log: Arc<dyn StreamLog>,
    pub billing: Arc<dyn Billing>,
    pub requests: Arc<dyn StyleRequests>,
}

impl Stores {
    /// One value that does all three jobs (tests, [`NoStore`]).
    pub fn all_in<T: StreamLog + Billing + StyleRequests>(store: Arc<T>) -> Self {
        Self {
            log: store.clone(),
            billing: store.clone(),
            requests: store,
        }
    }

    /// Keeps nothing and charges nothing.
    pub fn none() -> Self {
        Self::all_in(Arc::new(NoStore::default()))
    }
}

/// Keeps nothing and charges nothing (tests and tools that need no database).
pub struct NoStore {
    next: std::sync::atomic::AtomicI64,
}

impl NoStore {
    /// Time without end, credits without end.
    const UNMETERED: Credit = Credit {
        balance: i64::MAX,
        paid_left: Duration::MAX,
    };
}

impl Default for NoStore {
    fn default() -> Self {
        Self {
            next: std::sync::atomic::AtomicI64::new(1),
        }
    }
}

#[async_trait]
impl StreamLog for NoStore {
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

#[async_trait]
impl Billing for NoStore {
    async fn pay_for_now(
        &self,
        _: StreamId,
        _: &Username,
        _: Duration,
    ) -> Result<Charge, StoreError> {
        Ok(Charge::AlreadyPaid(Self::UNMETERED))
    }

    async fn credit(&self, _: &Username) -> Result<Credit, StoreError> {
        Ok(Self::UNMETERED)
    }
}

#[async_trait]
impl StyleRequests for NoStore {
    async fn style_request_decided(&self, _: i64, _: RequestStatus) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_secs(600);

    fn at(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn a_period_continues_the_last_one_only_when_that_just_ended() {
        // No earlier period, or one still running far away in the past: now.
        assert_eq!(next_period_start(at(1000), None, PERIOD), at(1000));
        assert_eq!(next_period_start(at(1000), Some(at(500)), PERIOD), at(1000));
        // Just ended (a meter a second late): continuous.
        assert_eq!(
            next_period_start(at(1001), Some(at(1000)), PERIOD),
            at(1000)
        );
        // Not ended yet (callers charge only after the end): now.
        assert_eq!(
            next_period_start(at(1000), Some(at(1001)), PERIOD),
            at(1000)
        );
        // A period shorter than the lateness never starts in the past beyond itself.
        let short = Duration::from_secs(1);
        assert_eq!(next_period_start(at(1002), Some(at(1001)), short), at(1002));
    }

    #[test]
    fn a_running_period_or_a_credit_lets_the_owner_stream() {
        let credit = |balance, left| Credit {
            balance,
            paid_left: Duration::from_secs(left),
        };
        assert!(credit(1, 0).can_stream());
        assert!(credit(0, 30).can_stream());
        assert!(!credit(0, 0).can_stream());
    }
}
