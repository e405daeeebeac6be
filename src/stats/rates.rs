//! Frame rates and latency of live streams, from a sample of their counters
//! and newest output frame once a second (the dashboard's live table).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use dreamstream_actors::StreamId;
use dreamstream_actors::stream::StreamShared;

use crate::audience::StreamRates;

/// Samples the rates are computed over (one a second).
const RATE_SAMPLES: usize = 6;
/// Latencies the median is taken over.
const LATENCY_SAMPLES: usize = 30;

#[derive(Default)]
struct Tracker {
    /// (when, frames in, frames out).
    counts: VecDeque<(Instant, u64, u64)>,
    latencies_us: VecDeque<u32>,
    last_seq: Option<u64>,
}

#[derive(Default)]
pub struct Rates {
    streams: HashMap<StreamId, Tracker>,
}

impl Rates {
    /// Records the live streams' counters; forgets streams no longer live.
    pub fn sample(&mut self, live: &[Arc<StreamShared>]) {
        let now = Instant::now();
        self.streams
            .retain(|id, _| live.iter().any(|s| s.id == *id));
        for s in live {
            let t = self.streams.entry(s.id).or_default();
            t.counts.push_back((
                now,
                s.counters.frames_in.load(Ordering::Relaxed),
                s.counters.frames_out.load(Ordering::Relaxed),
            ));
            while t.counts.len() > RATE_SAMPLES {
                t.counts.pop_front();
            }
            if let Some(frame) = s.last_output()
                && t.last_seq != Some(frame.seq)
            {
                t.last_seq = Some(frame.seq);
                t.latencies_us.push_back(frame.latency_us);
                while t.latencies_us.len() > LATENCY_SAMPLES {
                    t.latencies_us.pop_front();
                }
            }
        }
    }

    pub fn forget(&mut self, id: StreamId) {
        self.streams.remove(&id);
    }

    pub fn get(&self, id: StreamId) -> Option<StreamRates> {
        let t = self.streams.get(&id)?;
        let (first, last) = (t.counts.front()?, t.counts.back()?);
        let secs = last.0.duration_since(first.0).as_secs_f64();
        let rate = |a: u64, b: u64| {
            if secs > 0.0 {
                b.saturating_sub(a) as f64 / secs
            } else {
                0.0
            }
        };
        let latency_p50_ms = if t.latencies_us.is_empty() {
            None
        } else {
            let mut v: Vec<u32> = t.latencies_us.iter().copied().collect();
            v.sort_unstable();
            Some(v[v.len() / 2] as f64 / 1000.0)
        };
        Some(StreamRates {
            fps_in: rate(first.1, last.1),
            fps_out: rate(first.2, last.2),
            latency_p50_ms,
        })
    }
}
