//! The credit meter of a stream. A credit buys a period (10 minutes by
//! default) of the streamer's time, not of one stream: the meter pays for
//! "now" through [`Billing::pay_for_now`] whenever the owner's paid time
//! has run out, so a stream started inside a period already paid (a second
//! go, a tab that crashed, a control node that restarted) costs nothing, and
//! a retried or raced payment never takes a credit twice. The streamer is
//! warned `warn_before` an end that cannot be paid, and the stream ends
//! (`out_of_credits`) when it comes.
//!
//! The supervisor pays for the start before the stream exists (nothing
//! paid, no stream); the meter's first check finds that period running.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::StreamShared;
use super::shared::CreditState;
use crate::sink::StreamEvent;
use crate::store::{Billing, Charge};

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
    /// When the owner's paid time runs out, as last heard from the store.
    paid_until: Option<Instant>,
    /// Whether the streamer was warned about `paid_until`.
    warned: bool,
}

impl Meter {
    /// A meter; `paid_until` when the stream's paid time is already known
    /// (a restarted actor).
    pub fn new(config: MeterConfig, paid_until: Option<Instant>) -> Self {
        Self {
            config,
            paid_until,
            warned: false,
        }
    }

    /// Pays for the owner's time when the paid period has run out, warns
    /// before an end that cannot be paid, and says when to look again. A
    /// storage error is retried a second later (the stream goes on
    /// meanwhile; paying is idempotent).
    pub async fn check(&mut self, shared: &Arc<StreamShared>, store: &dyn Billing) -> Verdict {
        let retry = Duration::from_secs(1);
        let now = Instant::now();
        if self.paid_until.is_none_or(|until| until <= now) {
            match store
                .pay_for_now(shared.id, &shared.username, self.config.period)
                .await
            {
                Ok(Charge::Insufficient { .. }) => {
                    tracing::info!(stream_id = %shared.id, "out of credits");
                    return Verdict::OutOfCredits;
                }
                Ok(charge @ (Charge::Charged(credit) | Charge::AlreadyPaid(credit))) => {
                    if matches!(charge, Charge::Charged(_)) {
                        shared
                            .counters
                            .credits_charged
                            .fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("dreamstream_credits_charged_total").increment(1);
                    }
                    let state = CreditState::from_credit(credit, self.config.period);
                    if self.paid_until != Some(state.paid_until) {
                        self.warned = false;
                    }
                    self.paid_until = Some(state.paid_until);
                    shared.set_credit(state);
                }
                Err(e) => {
                    tracing::warn!(stream_id = %shared.id, error = %e, "paying for streaming time failed; retrying");
                    return Verdict::Continue(retry);
                }
            }
        }
        let Some(until) = self.paid_until.filter(|until| *until > now) else {
            // Paid, but for (almost) no time: look again shortly.
            return Verdict::Continue(Duration::from_millis(100));
        };
        let warn_at = until - self.config.warn_before.min(self.config.period);
        if now >= warn_at && !self.warned {
            match store.credit(&shared.username).await {
                Ok(credit) => {
                    self.warned = true;
                    if credit.balance < 1 {
                        let seconds_left = until.saturating_duration_since(now).as_secs();
                        shared.tell_broadcaster(&StreamEvent::CreditsLow { seconds_left });
                    }
                }
                Err(e) => {
                    tracing::warn!(stream_id = %shared.id, error = %e, "reading the balance failed; retrying");
                    return Verdict::Continue(retry);
                }
            }
        }
        let next = if now < warn_at { warn_at } else { until };
        Verdict::Continue(
            next.saturating_duration_since(now)
                .max(Duration::from_millis(1)),
        )
    }
}
