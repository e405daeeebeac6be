//! What viewers do to a stream besides watching: the streamer's switches
//! (comments, style requests, auto-approve), the queue of style requests and
//! the history of styles shown. Lives in [`StreamShared`](super::StreamShared)
//! so it survives actor restarts; the web tier persists requests and
//! decisions, the actor applies queued requests in auto-approve mode.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::style::{ProcessorKind, StyleSource};

/// The streamer's switches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommunitySettings {
    pub comments: bool,
    pub requests: bool,
    pub auto_approve: bool,
    /// Auto-approve keeps each style at least this long.
    pub dwell_secs: u64,
}

impl Default for CommunitySettings {
    fn default() -> Self {
        Self {
            comments: true,
            requests: true,
            auto_approve: false,
            dwell_secs: 30,
        }
    }
}

/// Where a style request stands (`style_requests.status`, and the
/// `request_decided` event's `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestStatus {
    /// Waiting for the streamer.
    Pending,
    /// Applied: it became the live style.
    Approved,
    /// Dropped by the streamer, or no longer valid when its turn came.
    Rejected,
}

impl RequestStatus {
    /// The word stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
        }
    }
}

/// A viewer's request for a style, waiting for the streamer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StyleRequest {
    /// The database id.
    pub id: i64,
    /// Who asked.
    pub by: String,
    /// What it is, for people ("Starry Swirl", "a picture", "“sunset”").
    pub label: String,
    #[serde(skip)]
    pub source: StyleSource,
    /// The processor it runs on once approved (a prompt goes to diffusion when
    /// the cluster had a diffusion worker at request time).
    #[serde(skip)]
    pub processor: ProcessorKind,
    pub created_ms: u64,
}

/// One entry of the style history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StyleUse {
    pub style: String,
    pub by: Option<String>,
    pub at_ms: u64,
}

/// Longest queue and history kept.
pub const MAX_QUEUE: usize = 50;
const MAX_HISTORY: usize = 50;

#[derive(Default)]
pub struct Community {
    settings: Mutex<CommunitySettings>,
    queue: Mutex<VecDeque<StyleRequest>>,
    history: Mutex<VecDeque<StyleUse>>,
    last_change: Mutex<Option<Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Community {
    pub fn settings(&self) -> CommunitySettings {
        lock(&self.settings).clone()
    }

    pub fn set_settings(&self, s: CommunitySettings) {
        *lock(&self.settings) = s;
    }

    /// Queues a request; false when the queue is full.
    pub fn push(&self, r: StyleRequest) -> bool {
        let mut q = lock(&self.queue);
        if q.len() >= MAX_QUEUE {
            return false;
        }
        q.push_back(r);
        true
    }

    /// Whether one more request fits in the queue.
    pub fn has_room(&self) -> bool {
        lock(&self.queue).len() < MAX_QUEUE
    }

    /// Takes the request `id` out of the queue.
    pub fn take(&self, id: i64) -> Option<StyleRequest> {
        let mut q = lock(&self.queue);
        let pos = q.iter().position(|r| r.id == id)?;
        q.remove(pos)
    }

    pub fn queue(&self) -> Vec<StyleRequest> {
        lock(&self.queue).iter().cloned().collect()
    }

    /// Records a style change (for the history and the dwell time).
    pub fn record_change(&self, style: String, by: Option<String>) {
        *lock(&self.last_change) = Some(Instant::now());
        let mut h = lock(&self.history);
        if h.len() >= MAX_HISTORY {
            h.pop_front();
        }
        h.push_back(StyleUse {
            style,
            by,
            at_ms: crate::frame::unix_ms(),
        });
    }

    /// Who requested the style shown now (`None`: the streamer's own).
    pub fn last_by(&self) -> Option<String> {
        lock(&self.history).back().and_then(|u| u.by.clone())
    }

    pub fn history(&self) -> Vec<StyleUse> {
        lock(&self.history).iter().cloned().collect()
    }

    /// In auto-approve mode, the next request once the current style has
    /// been shown for the dwell time.
    pub fn due_for_auto_approve(&self) -> Option<StyleRequest> {
        let s = self.settings();
        if !s.auto_approve {
            return None;
        }
        let dwell = Duration::from_secs(s.dwell_secs);
        if lock(&self.last_change).is_some_and(|t| t.elapsed() < dwell) {
            return None;
        }
        lock(&self.queue).pop_front()
    }
}
