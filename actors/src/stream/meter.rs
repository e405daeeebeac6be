//! The credit meter of a stream: one credit as each period (10 minutes by
//! default) begins, a warning to the streamer `warn_before` a boundary that
//! cannot be paid, and the end of the stream (`out_of_credits`) at that
//! boundary.
//!
//! The first period is paid by the supervisor before the stream starts (no
//! credit, no stream). Charges go through [`StreamStore::charge_period`], which
//! is idempotent per (stream, period): a restarted actor or a retried charge
//! never takes a credit twice. The periods already paid live in
//! [`StreamShared`] so a restarted actor does not even ask again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::StreamShared;
use crate::sink::StreamEvent;
use crate::store::{Charge, StreamStore};

/// When credits are charged.
#[derive(Debug, Clone, Copy)]
pub struct MeterConfig {
    /// What one credit buys.
    pub period: Duration,
    /// How long before an unpayable boundary the streamer is warned.
    pub warn_before: Duration,
}

impl Default for MeterConfig {
    fn default() -> Self {
        Self {
            period: Duration::from_secs(600),
            warn_before: Duration::from_secs(60),
        }
    }
}

/// What the stream must do after a check.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go on; check again after this long.
    Continue(Duration),
    /// A boundary came that cannot be paid: end the stream.
    OutOfCredits,
}

pub(super) struct Meter {
    config: MeterConfig,
    /// The boundary whose warning was already given.
    warned_for: Option<u64>,
}

impl Meter {
    pub fn new(config: MeterConfig) -> Self {
        Self {
            config,
            warned_for: None,
        }
    }

    fn boundary(&self, shared: &StreamShared, period: u64) -> Instant {
        shared.started_at + self.config.period * period as u32
    }

    /// Pays every period that has begun, warns before an unpayable boundary,
    /// and says when to look again. A storage error is retried a second later
    /// (the stream goes on meanwhile; the charge is idempotent).
    pub async fn check(&mut self, shared: &Arc<StreamShared>, store: &dyn StreamStore) -> Verdict {
        let retry = Duration::from_secs(1);
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(shared.started_at);
        let current = (elapsed.as_nanos() / self.config.period.as_nanos().max(1)) as u64;
        let mut paid = shared.periods_paid.load(Ordering::Acquire);
        while paid <= current {
            match store.charge_period(shared.id, &shared.username, paid).await {
                Ok(charge @ (Charge::Charged { .. } | Charge::AlreadyPaid { .. })) => {
                    paid += 1;
                    shared.periods_paid.store(paid, Ordering::Release);
                    if matches!(charge, Charge::Charged { .. }) {
                        shared
                            .counters
                            .credits_charged
                            .fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("dreamstream_credits_charged_total").increment(1);
                    }
                    self.tell_balance(shared, charge.balance(), paid);
                }
                Ok(Charge::Insufficient { .. }) => {
                    tracing::info!(stream_id = %shared.id, period = paid, "out of credits");
                    return Verdict::OutOfCredits;
                }
                Err(e) => {
                    tracing::warn!(stream_id = %shared.id, period = paid, error = %e, "charging a period failed; retrying");
                    return Verdict::Continue(retry);
                }
            }
        }
        let next_boundary = self.boundary(shared, paid);
        let warn_at = next_boundary - self.config.warn_before.min(self.config.period);
        if now >= warn_at && self.warned_for != Some(paid) {
            match store.balance(&shared.username).await {
                Ok(balance) => {
                    self.warned_for = Some(paid);
                    if balance < 1 {
                        let seconds_left = next_boundary.saturating_duration_since(now).as_secs();
                        shared.tell_broadcaster(&StreamEvent::CreditsLow { seconds_left });
                    }
                }
                Err(e) => {
                    tracing::warn!(stream_id = %shared.id, error = %e, "reading the balance failed; retrying");
                    return Verdict::Continue(retry);
                }
            }
        }
        let next = if now < warn_at {
            warn_at
        } else {
            next_boundary
        };
        Verdict::Continue(
            next.saturating_duration_since(now)
                .max(Duration::from_millis(1)),
        )
    }

    fn tell_balance(&self, shared: &StreamShared, balance: i64, paid: u64) {
        let to_boundary = self
            .boundary(shared, paid)
            .saturating_duration_since(Instant::now());
        let seconds_left =
            to_boundary.as_secs() + balance.max(0) as u64 * self.config.period.as_secs();
        shared.tell_broadcaster(&StreamEvent::Credits {
            balance,
            seconds_left,
            period_secs: self.config.period.as_secs(),
        });
    }
}
