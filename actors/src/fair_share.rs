//! Processing time per stream, for the scheduler's fairness: each finished
//! job adds the worker time it cost to its stream's account, which decays
//! exponentially (time constant [`TAU`]), so the account is "worker seconds
//! used lately". The scheduler serves the ready stream that used the workers
//! least lately first (then the one that waited longest), and it keeps a
//! free worker from a stream that used far more than another stream which
//! is between two frames right now (it announced a frame less than [`HOLD`]
//! ago and has none in flight) for at most [`HOLD`]: without that pause a
//! stream of expensive frames would take the worker every time the cheap
//! stream's next frame is a few milliseconds away, and get nearly all of
//! it. So active streams get about equal worker time (max-min fairness): one
//! cannot starve the rest. Streams that cost the same take turns and are
//! never held for each other ([`MARGIN`]).

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::ids::StreamId;
use crate::worker::{Capabilities, Requirement};

/// How fast an account forgets: after `TAU` a cost counts 1/e.
pub const TAU: Duration = Duration::from_secs(2);

/// How long a free worker may be kept for a stream between two frames.
pub const HOLD: Duration = Duration::from_millis(100);

/// Worker seconds (decayed) by which a stream must have used more than
/// another before it is held for it: more than one ordinary job, so that
/// streams alike never wait for each other.
pub const MARGIN: f64 = 0.25;

#[derive(Debug, Clone, Copy)]
struct Account {
    /// Decayed worker seconds, as of `at`.
    seconds: f64,
    at: Instant,
    /// Worker time in total (never decays): what the dashboard shows.
    total: Duration,
}

impl Account {
    fn seconds_at(&self, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.seconds * (-dt / TAU.as_secs_f64()).exp()
    }
}

#[derive(Debug, Default)]
pub struct FairShare {
    accounts: HashMap<StreamId, Account>,
    /// When each stream last announced a frame, and what it needed.
    last_ready: HashMap<StreamId, (Instant, Requirement)>,
}

impl FairShare {
    /// `stream` used a worker for `cost`.
    pub fn charge(&mut self, stream: StreamId, cost: Duration, now: Instant) {
        let account = self.accounts.entry(stream).or_insert(Account {
            seconds: 0.0,
            at: now,
            total: Duration::ZERO,
        });
        account.seconds = account.seconds_at(now) + cost.as_secs_f64();
        account.at = now;
        account.total += cost;
    }

    /// `stream` announced a frame that needs `needs`.
    pub fn saw_ready(&mut self, stream: StreamId, needs: Requirement, now: Instant) {
        self.last_ready.insert(stream, (now, needs));
    }

    /// Whether a worker (able to run `worker`) that could serve
    /// `candidate` should rather wait (at most [`HOLD`]) for one of
    /// `between_frames` — streams that are not ready and have no job in
    /// flight — that announced a frame this worker can run less than `HOLD`
    /// ago and used the workers at least [`MARGIN`] less lately.
    pub fn hold_for_another(
        &self,
        candidate: StreamId,
        between_frames: impl IntoIterator<Item = StreamId>,
        worker: &Capabilities,
        now: Instant,
    ) -> bool {
        let used = self.recent(candidate, now);
        between_frames.into_iter().any(|other| {
            other != candidate
                && self.last_ready.get(&other).is_some_and(|(at, needs)| {
                    now.saturating_duration_since(*at) < HOLD && needs.satisfied_by(worker)
                })
                && self.recent(other, now) + MARGIN < used
        })
    }

    /// Worker seconds `stream` used lately (decayed).
    pub fn recent(&self, stream: StreamId, now: Instant) -> f64 {
        self.accounts
            .get(&stream)
            .map_or(0.0, |a| a.seconds_at(now))
    }

    /// Worker time `stream` used since it started.
    pub fn total(&self, stream: StreamId) -> Duration {
        self.accounts
            .get(&stream)
            .map_or(Duration::ZERO, |a| a.total)
    }

    /// The streams with an account.
    pub fn streams(&self) -> impl Iterator<Item = StreamId> + '_ {
        self.accounts.keys().copied()
    }

    pub fn forget(&mut self, stream: StreamId) {
        self.accounts.remove(&stream);
        self.last_ready.remove(&stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn recent_use_decays_and_totals_do_not() {
        let mut f = FairShare::default();
        let s = StreamId(1);
        let t0 = Instant::now();
        f.charge(s, Duration::from_millis(500), t0);
        f.charge(s, Duration::from_millis(500), t0);
        assert!((f.recent(s, t0) - 1.0).abs() < 1e-9);
        let later = t0 + TAU;
        assert!((f.recent(s, later) - (-1.0f64).exp()).abs() < 1e-9);
        assert_eq!(f.total(s), Duration::from_secs(1));
        assert_eq!(f.recent(StreamId(2), later), 0.0);
        f.forget(s);
        assert_eq!(f.total(s), Duration::ZERO);
    }

    fn neural_style() -> Requirement {
        Requirement {
            processor: crate::style::ProcessorKind::NeuralStyle,
            model: None,
        }
    }

    fn worker(processor: crate::style::ProcessorKind) -> Capabilities {
        Capabilities {
            processor,
            models: vec![],
            device: "cpu".into(),
            prompts: false,
            style_images: true,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_heavy_user_is_held_only_for_a_much_lighter_stream_between_frames() {
        use crate::style::ProcessorKind::{Diffusion, NeuralStyle};
        let w = worker(NeuralStyle);
        let mut f = FairShare::default();
        let (cheap, dear, alike) = (StreamId(1), StreamId(2), StreamId(3));
        let now = Instant::now();
        f.charge(cheap, Duration::from_millis(50), now);
        f.charge(dear, Duration::from_millis(900), now);
        f.charge(alike, Duration::from_millis(800), now);
        // The cheap stream has not announced a frame yet: nobody waits.
        assert!(!f.hold_for_another(dear, [cheap], &w, now));
        f.saw_ready(cheap, neural_style(), now);
        f.saw_ready(alike, neural_style(), now);
        assert!(f.hold_for_another(dear, [cheap], &w, now));
        // Not on a worker that cannot run the cheap stream's frames.
        assert!(!f.hold_for_another(dear, [cheap], &worker(Diffusion), now));
        // Never for a stream that used about as much, nor for oneself.
        assert!(!f.hold_for_another(dear, [alike], &w, now));
        assert!(!f.hold_for_another(cheap, [cheap], &w, now));
        // Only shortly after its last frame.
        assert!(!f.hold_for_another(dear, [cheap], &w, now + HOLD));
    }
}
