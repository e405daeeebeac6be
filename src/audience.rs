//! Who tunes in: the hook viewer sessions report to when they join and leave
//! a live stream, and what the admin dashboard reads back — distinct IPs
//! (today, 7 days, all time, per stream), the most concurrent viewers (global
//! and per stream, with when) and the viewers now.
//!
//! The implementation is [`crate::stats::Stats`] (Redis or its in-memory
//! twin); [`NoAudience`] counts nothing.

use std::net::IpAddr;

use async_trait::async_trait;
use dreamstream_actors::StreamId;
use serde::{Deserialize, Serialize};

/// The most viewers at once, and when (Unix ms; `None` while nobody watched).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peak {
    pub viewers: u64,
    pub at_ms: Option<i64>,
}

impl Peak {
    /// Raises the peak to `viewers` at `at_ms` if that is more.
    pub fn raise(&mut self, viewers: u64, at_ms: i64) -> bool {
        if viewers > self.viewers {
            *self = Peak {
                viewers,
                at_ms: Some(at_ms),
            };
            true
        } else {
            false
        }
    }
}

/// One stream's audience.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamAudience {
    pub stream_id: i64,
    /// Viewers connected now.
    pub viewers: u64,
    pub peak: Peak,
    /// Distinct viewer IPs (estimated: HyperLogLog, 0.81 % standard error).
    pub unique_ips: u64,
}

/// The platform's audience now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudienceReport {
    /// `redis`, `memory` or `none`.
    pub backend: String,
    pub viewers_now: u64,
    /// The most viewers at once on the whole platform, ever.
    pub peak: Peak,
    pub unique_ips_today: u64,
    pub unique_ips_7d: u64,
    pub unique_ips_all: u64,
    /// Viewer connections (a viewer who reconnects counts again).
    pub tune_ins_today: u64,
    pub tune_ins_all: u64,
    /// The streams asked about.
    pub streams: Vec<StreamAudience>,
}

/// Frame rates and latency of a live stream over the last seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamRates {
    pub fps_in: f64,
    pub fps_out: f64,
    /// Arrival at the server to delivery, median of recent frames, ms.
    pub latency_p50_ms: Option<f64>,
}

/// One point of the viewers-over-time series: the most viewers at once
/// within the bucket starting at `at_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    pub at_ms: i64,
    pub viewers: u64,
}

/// Told about every viewer connection of a live stream. `joined`/`left` never
/// block (an implementation that talks to Redis does it in the background,
/// in order).
#[async_trait]
pub trait Audience: Send + Sync + 'static {
    fn joined(&self, stream: StreamId, username: &str, ip: Option<IpAddr>);
    fn left(&self, stream: StreamId, username: &str);

    /// The numbers now, with `live`'s per-stream numbers.
    async fn report(&self, live: &[StreamId]) -> anyhow::Result<AudienceReport> {
        Ok(AudienceReport {
            backend: "none".into(),
            streams: live
                .iter()
                .map(|id| StreamAudience {
                    stream_id: id.0,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    /// A stream ended: its final numbers (which the caller keeps in the
    /// streams table); its live state may be forgotten.
    async fn stream_ended(&self, _stream: StreamId) -> anyhow::Result<Option<StreamAudience>> {
        Ok(None)
    }

    /// Waits until everything reported so far is applied and stored.
    async fn flush(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Counts nothing.
pub struct NoAudience;

#[async_trait]
impl Audience for NoAudience {
    fn joined(&self, _: StreamId, _: &str, _: Option<IpAddr>) {}
    fn left(&self, _: StreamId, _: &str) {}
}

/// One viewer in a stream's audience for as long as it is held: it joins
/// when taken and leaves when dropped (a WHEP session holds one for its
/// whole life, however it ends).
pub struct AudienceSeat {
    audience: std::sync::Arc<dyn Audience>,
    stream: StreamId,
    username: String,
}

impl AudienceSeat {
    pub fn take(
        audience: std::sync::Arc<dyn Audience>,
        stream: StreamId,
        username: &str,
        ip: Option<IpAddr>,
    ) -> Self {
        audience.joined(stream, username, ip);
        Self {
            audience,
            stream,
            username: username.to_string(),
        }
    }
}

impl Drop for AudienceSeat {
    fn drop(&mut self) {
        self.audience.left(self.stream, &self.username);
    }
}
