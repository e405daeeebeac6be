//! The platform's numbers for the admin dashboard and `dreamstream admin
//! stats`: who tunes in ([`Stats`], the real [`Audience`]), what the database
//! knows ([`summary`]), and the dashboard's chart ([`chart`]).
//!
//! [`Stats`] keeps, per day, per stream and for all time, a HyperLogLog sketch
//! of the keyed hashes of viewer IPs ([`ipkey`]; never the address), the most
//! concurrent viewers (global and per stream, with when) and the tune-ins. With
//! `REDIS_URL` the numbers live in Redis (`PFADD`/`PFCOUNT`, and one Lua script
//! per event for the peaks: see `redis_store.rs`) and every control node sharing that
//! Redis adds to them; without it an in-memory twin (`memory.rs`) keeps them and
//! saves them to the database every `audience.flush_secs`, so a restart keeps
//! them. Both sit behind one trait, `AudienceBackend`: [`Stats`] keeps this
//! node's live counts and tells the backend each change. Either way a stream's
//! final numbers go to its row in `streams` when it ends
//! ([`store::AudienceStore`]) and, while it is live, at every flush.
//!
//! Invariants: `joined`/`left` never block or fail (Redis work happens on a
//! background task that applies events in the order they happened); a stream
//! contributes nothing once it has ended (late joins and leaves are ignored);
//! stored peaks and counts only ever go up.

pub mod chart;
pub mod hll;
pub mod ipkey;
mod memory;
mod rates;
mod redis_store;
pub mod store;
pub mod summary;
mod tables;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dreamstream_actors::StreamId;
use sea_orm::DatabaseConnection;
use serde::Deserialize;

use crate::audience::{Audience, AudienceReport, Peak, Sample, StreamAudience, StreamRates};
use crate::control::ControlPlane;
use ipkey::IpKey;

pub use tables::{PEAK_AT, UNIQUE_VIEWERS};

/// `[audience]` in cluster.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AudienceSettings {
    /// Prefix of every Redis key (under the platform's `ds:` namespace).
    pub redis_prefix: String,
    /// How often live numbers are saved (the in-memory twin's sketches and
    /// counters; live streams' rows), seconds.
    pub flush_secs: u64,
    /// `DREAMSTREAM_AUDIENCE_KEY` (environment only): the key of the viewer
    /// IP hash; unset = a key kept in the data directory ([`ipkey`]).
    #[serde(skip)]
    pub key: Option<secrecy::SecretString>,
}

impl Default for AudienceSettings {
    fn default() -> Self {
        Self {
            redis_prefix: "ds:aud:".into(),
            flush_secs: 5,
            key: None,
        }
    }
}

impl AudienceSettings {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.redis_prefix.starts_with("ds:") && self.redis_prefix.len() <= 64,
            "audience.redis_prefix must start with \"ds:\" (at most 64 characters)"
        );
        anyhow::ensure!(
            self.flush_secs >= 1,
            "audience.flush_secs must be at least 1"
        );
        Ok(())
    }
}

/// Days the per-day sketches are kept (the dashboard shows 7).
const KEEP_DAYS: i64 = 8;
/// Ended streams remembered, so their late joins and leaves are ignored.
const REMEMBER_ENDED: usize = 4096;

pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

pub fn ms_to_time(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

/// The UTC day of `ms` as `YYYYMMDD`.
pub fn day_of(ms: i64) -> String {
    ms_to_time(ms)
        .unwrap_or_default()
        .format("%Y%m%d")
        .to_string()
}

/// The `n` days up to and including the day of `ms`, newest first.
pub fn last_days(ms: i64, n: i64) -> Vec<String> {
    (0..n).map(|d| day_of(ms - d * 86_400_000)).collect()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// This node's viewers, by stream.
#[derive(Default)]
struct Live {
    total: u64,
    streams: HashMap<i64, LiveStream>,
    ended: VecDeque<i64>,
    ended_set: HashSet<i64>,
    /// Streams whose numbers changed since the last flush.
    dirty: HashSet<i64>,
}

#[derive(Default, Clone, Copy)]
struct LiveStream {
    now: u64,
    peak: Peak,
}

/// Viewers over the last hour in 30-second buckets (the most at once).
#[derive(Default)]
struct History {
    /// (bucket start, most viewers in it, viewers at its last observation).
    buckets: VecDeque<(i64, u64, u64)>,
}

const BUCKET_MS: i64 = 30_000;
const WINDOW_MS: i64 = 3_600_000;

impl History {
    fn observe(&mut self, viewers: u64, at: i64) {
        let start = at - at.rem_euclid(BUCKET_MS);
        match self.buckets.back_mut() {
            Some(b) if b.0 == start => {
                b.1 = b.1.max(viewers);
                b.2 = viewers;
            }
            Some(b) if b.0 > start => {
                // An event stamped just before the bucket turned: it still counts.
                if let Some(old) = self.buckets.iter_mut().rev().find(|b| b.0 == start) {
                    old.1 = old.1.max(viewers);
                }
            }
            _ => self.buckets.push_back((start, viewers, viewers)),
        }
        while self
            .buckets
            .front()
            .is_some_and(|b| b.0 < at - WINDOW_MS - BUCKET_MS)
        {
            self.buckets.pop_front();
        }
    }

    /// One sample per bucket of the hour before `now`, gaps filled with the
    /// last count seen before them.
    fn series(&self, now: i64) -> Vec<Sample> {
        let end = now - now.rem_euclid(BUCKET_MS);
        let mut start = end - WINDOW_MS + BUCKET_MS;
        let mut out = Vec::new();
        let mut carried = self
            .buckets
            .iter()
            .take_while(|b| b.0 < start)
            .last()
            .map_or(0, |b| b.2);
        let first = start;
        let mut it = self
            .buckets
            .iter()
            .skip_while(move |b| b.0 < first)
            .peekable();
        while start <= end {
            let viewers = match it.peek() {
                Some(b) if b.0 == start => {
                    carried = b.2;
                    let v = b.1;
                    it.next();
                    v
                }
                _ => carried,
            };
            out.push(Sample {
                at_ms: start,
                viewers,
            });
            start += BUCKET_MS;
        }
        out
    }
}

/// A change of a stream's viewer count, as the backend is told it.
struct Change {
    stream: StreamId,
    /// The stream's viewers after the change.
    stream_now: u64,
    /// This node's viewers after the change.
    total: u64,
    at: i64,
    /// A join (with the viewer's IP hash if known), or `None` for a leave.
    join: Option<Option<u64>>,
}

/// Where the audience numbers live: Redis (shared by every control node) or
/// the in-memory twin saved to the database. [`Stats`] keeps this node's live
/// counts and tells its backend every change, under its lock, so changes
/// arrive in the order they happened.
#[async_trait]
trait AudienceBackend: Send + Sync {
    /// `"memory"` or `"redis"` (reports and `/metrics` name it).
    fn name(&self) -> &'static str;
    /// Viewers now, given this node's count: the twin answers it; Redis
    /// answers the platform's, as its writer last read it.
    fn viewers_now(&self, node_total: u64) -> u64;
    /// True when this node's viewers chart follows its own count at each
    /// change (the twin); Redis's writer feeds it the platform's totals.
    fn charts_node_count(&self) -> bool;
    /// A viewer joined or left (never blocks or fails).
    fn changed(&self, change: Change);
    /// This node's count changed without an event (a stream ended).
    fn resync(&self, total: u64);
    /// The numbers of `live` streams; `counted` are this node's counts of
    /// the same streams and `node_total` its viewers.
    async fn report(
        &self,
        live: &[StreamId],
        counted: Vec<StreamAudience>,
        node_total: u64,
    ) -> anyhow::Result<AudienceReport>;
    /// A stream's final numbers (`peak` as this node counted it).
    async fn stream_ended(&self, stream: StreamId, peak: Peak) -> anyhow::Result<StreamAudience>;
    /// Before a save: everything sent so far is applied.
    async fn drain(&self);
    /// After a save, and after a stream ended: state kept here goes to the
    /// database.
    async fn persist(&self) -> anyhow::Result<()>;
}

#[async_trait]
impl AudienceBackend for memory::MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn viewers_now(&self, node_total: u64) -> u64 {
        node_total
    }

    fn charts_node_count(&self) -> bool {
        true
    }

    fn changed(&self, c: Change) {
        if let Some(hash) = c.join {
            self.joined(c.stream, hash, c.total, c.at);
        }
    }

    fn resync(&self, _total: u64) {}

    async fn report(
        &self,
        _live: &[StreamId],
        counted: Vec<StreamAudience>,
        node_total: u64,
    ) -> anyhow::Result<AudienceReport> {
        Ok(memory::MemoryStore::report(
            self,
            node_total,
            counted,
            now_ms(),
        ))
    }

    async fn stream_ended(&self, stream: StreamId, peak: Peak) -> anyhow::Result<StreamAudience> {
        Ok(StreamAudience {
            stream_id: stream.0,
            viewers: 0,
            peak,
            unique_ips: memory::MemoryStore::stream_ended(self, stream),
        })
    }

    async fn drain(&self) {}

    async fn persist(&self) -> anyhow::Result<()> {
        self.save().await
    }
}

#[async_trait]
impl AudienceBackend for redis_store::RedisStore {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn viewers_now(&self, _node_total: u64) -> u64 {
        self.last_total()
    }

    fn charts_node_count(&self) -> bool {
        false
    }

    fn changed(&self, c: Change) {
        self.send(redis_store::Op::Event {
            stream: c.stream.0,
            stream_now: c.stream_now,
            total: c.total,
            at: c.at,
            join: c.join,
        });
    }

    fn resync(&self, total: u64) {
        self.send(redis_store::Op::Sync { total });
    }

    async fn report(
        &self,
        live: &[StreamId],
        _counted: Vec<StreamAudience>,
        _node_total: u64,
    ) -> anyhow::Result<AudienceReport> {
        redis_store::RedisStore::report(self, live, now_ms()).await
    }

    async fn stream_ended(&self, stream: StreamId, _peak: Peak) -> anyhow::Result<StreamAudience> {
        redis_store::RedisStore::stream_ended(self, stream).await
    }

    async fn drain(&self) {
        self.flush().await;
    }

    async fn persist(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The audience numbers: Redis or the in-memory twin (see the module docs).
pub struct Stats {
    /// The keyed hash of viewer IPs (`None` when only reading).
    key: Option<IpKey>,
    db: DatabaseConnection,
    backend: Box<dyn AudienceBackend>,
    live: Mutex<Live>,
    history: Arc<Mutex<History>>,
    rates: Mutex<rates::Rates>,
    cluster: Mutex<summary::ClusterMemory>,
    /// One flush at a time, so an older snapshot never lands after a newer one.
    flush_lock: tokio::sync::Mutex<()>,
}

impl Stats {
    /// The numbers a serving control node keeps: loads the twin's saved state
    /// or starts the Redis writer, and saves every `audience.flush_secs`.
    pub async fn start(
        settings: &AudienceSettings,
        data_dir: &std::path::Path,
        db: DatabaseConnection,
        redis: Option<redis::aio::ConnectionManager>,
    ) -> anyhow::Result<Arc<Self>> {
        let stats = Arc::new(Self::build(settings, data_dir, db, redis, true).await?);
        let weak = Arc::downgrade(&stats);
        let every = Duration::from_secs(settings.flush_secs.max(1));
        tokio::spawn(flush_every(weak, every));
        Ok(stats)
    }

    /// The numbers as stored, for reading only (`dreamstream admin stats`).
    pub async fn open(
        settings: &AudienceSettings,
        data_dir: &std::path::Path,
        db: DatabaseConnection,
        redis: Option<redis::aio::ConnectionManager>,
    ) -> anyhow::Result<Self> {
        Self::build(settings, data_dir, db, redis, false).await
    }

    async fn build(
        settings: &AudienceSettings,
        data_dir: &std::path::Path,
        db: DatabaseConnection,
        redis: Option<redis::aio::ConnectionManager>,
        serving: bool,
    ) -> anyhow::Result<Self> {
        settings.validate()?;
        let key = if serving {
            Some(IpKey::load(settings.key.as_ref(), data_dir)?)
        } else {
            None
        };
        let history = Arc::new(Mutex::new(History::default()));
        let backend: Box<dyn AudienceBackend> = match redis {
            Some(conn) => {
                let prefix = settings.redis_prefix.clone();
                Box::new(if serving {
                    redis_store::RedisStore::start(conn, prefix, history.clone()).await?
                } else {
                    redis_store::RedisStore::reader(conn, prefix)
                })
            }
            None => Box::new(
                memory::MemoryStore::load(db.clone(), serving)
                    .await
                    .context("failed to load the saved audience numbers")?,
            ),
        };
        Ok(Self {
            key,
            db,
            backend,
            live: Mutex::new(Live::default()),
            history,
            rates: Mutex::new(rates::Rates::default()),
            cluster: Mutex::new(summary::ClusterMemory::default()),
            flush_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Samples the live streams and workers every second (frame rates,
    /// latency, lost workers, the viewers chart) while `self` and the control
    /// plane exist.
    pub fn watch(self: &Arc<Self>, control: &Arc<ControlPlane>) {
        let (stats, control) = (Arc::downgrade(self), Arc::downgrade(control));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(control) = control.upgrade() else {
                    return;
                };
                let streams = control.list().await;
                let snap = control.scheduler_snapshot().await;
                drop(control);
                let Some(stats) = stats.upgrade() else {
                    return;
                };
                lock(&stats.rates).sample(&streams);
                // Unknown is not empty: a control plane that did not answer
                // must not make every worker look lost.
                if let Ok(snap) = &snap {
                    lock(&stats.cluster).note(snap, now_ms());
                }
                let viewers = stats.viewers_now();
                lock(&stats.history).observe(viewers, now_ms());
            }
        });
    }

    /// Viewers over the last hour, oldest first.
    pub fn history(&self) -> Vec<Sample> {
        lock(&self.history).series(now_ms())
    }

    /// Recent frame rates and latency of a live stream.
    pub fn rates(&self, stream: StreamId) -> Option<StreamRates> {
        lock(&self.rates).get(stream)
    }

    /// The workers now, plus the ones lost in the last minutes (as the
    /// sampler last saw them; reading records nothing).
    pub fn workers(
        &self,
        snap: &dreamstream_actors::scheduler::SchedulerSnapshot,
        remote: &[crate::cluster::watcher::RemoteWorker],
        now: i64,
    ) -> Vec<summary::WorkerView> {
        lock(&self.cluster).view(snap, remote, now)
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Viewers now as this node last knew (the platform's, with Redis).
    fn viewers_now(&self) -> u64 {
        let node_total = lock(&self.live).total;
        self.backend.viewers_now(node_total)
    }

    /// Saves what changed: the twin's state, and live streams' rows.
    async fn save(&self) -> anyhow::Result<()> {
        let _one = self.flush_lock.lock().await;
        self.backend.drain().await;
        let dirty: Vec<StreamId> = lock(&self.live).dirty.drain().map(StreamId).collect();
        if !dirty.is_empty() {
            let report = self.report(&dirty).await?;
            for s in &report.streams {
                tables::save_stream(&self.db, s)
                    .await
                    .context("failed to save a stream's audience")?;
            }
        }
        self.backend.persist().await
    }
}

async fn flush_every(stats: Weak<Stats>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(stats) = stats.upgrade() else {
            return;
        };
        if let Err(e) = stats.save().await {
            tracing::warn!(
                error = format!("{e:#}"),
                "failed to save the audience numbers"
            );
        }
    }
}

#[async_trait]
impl Audience for Stats {
    fn joined(&self, stream: StreamId, _username: &str, ip: Option<IpAddr>) {
        let at = now_ms();
        let hash = ip.zip(self.key.as_ref()).map(|(ip, key)| key.hash(ip));
        metrics::counter!("dreamstream_viewer_tune_ins_total").increment(1);
        let total = {
            let mut live = lock(&self.live);
            if live.ended_set.contains(&stream.0) {
                return;
            }
            live.total += 1;
            let total = live.total;
            let s = live.streams.entry(stream.0).or_default();
            s.now += 1;
            s.peak.raise(s.now, at);
            let s = *s;
            live.dirty.insert(stream.0);
            // Still under the lock: events reach the backend in the order
            // the counts changed.
            self.backend.changed(Change {
                stream,
                stream_now: s.now,
                total,
                at,
                join: Some(hash),
            });
            total
        };
        if self.backend.charts_node_count() {
            lock(&self.history).observe(total, at);
        }
    }

    fn left(&self, stream: StreamId, _username: &str) {
        let at = now_ms();
        let total = {
            let mut live = lock(&self.live);
            let Some(s) = live.streams.get_mut(&stream.0).filter(|s| s.now > 0) else {
                return;
            };
            s.now -= 1;
            let stream_now = s.now;
            live.total = live.total.saturating_sub(1);
            live.dirty.insert(stream.0);
            self.backend.changed(Change {
                stream,
                stream_now,
                total: live.total,
                at,
                join: None,
            });
            live.total
        };
        if self.backend.charts_node_count() {
            lock(&self.history).observe(total, at);
        }
    }

    async fn report(&self, live: &[StreamId]) -> anyhow::Result<AudienceReport> {
        let (counted, node_total) = {
            let l = lock(&self.live);
            let counted = live
                .iter()
                .map(|id| {
                    let s = l.streams.get(&id.0).copied().unwrap_or_default();
                    StreamAudience {
                        stream_id: id.0,
                        viewers: s.now,
                        peak: s.peak,
                        unique_ips: 0,
                    }
                })
                .collect();
            (counted, l.total)
        };
        let mut report = self.backend.report(live, counted, node_total).await?;
        report.backend = self.backend_name().into();
        Ok(report)
    }

    async fn stream_ended(&self, stream: StreamId) -> anyhow::Result<Option<StreamAudience>> {
        let (s, total) = {
            let mut live = lock(&self.live);
            let s = live.streams.remove(&stream.0).unwrap_or_default();
            live.total = live.total.saturating_sub(s.now);
            live.dirty.remove(&stream.0);
            if live.ended_set.insert(stream.0) {
                live.ended.push_back(stream.0);
            }
            while live.ended.len() > REMEMBER_ENDED {
                if let Some(old) = live.ended.pop_front() {
                    live.ended_set.remove(&old);
                }
            }
            self.backend.resync(live.total);
            (s, live.total)
        };
        lock(&self.rates).forget(stream);
        if self.backend.charts_node_count() {
            lock(&self.history).observe(total, now_ms());
        }
        let ended = self.backend.stream_ended(stream, s.peak).await?;
        {
            let _one = self.flush_lock.lock().await;
            self.backend.persist().await?;
        }
        Ok(Some(ended))
    }

    async fn flush(&self) -> anyhow::Result<()> {
        self.save().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_history_keeps_the_most_per_bucket_and_fills_gaps() {
        let mut h = History::default();
        let t0 = 1_700_000_000_000 - 1_700_000_000_000 % BUCKET_MS;
        h.observe(3, t0);
        h.observe(9, t0 + 1_000);
        h.observe(2, t0 + 2_000);
        h.observe(5, t0 + 3 * BUCKET_MS);
        let s = h.series(t0 + 3 * BUCKET_MS + 10);
        assert_eq!(s.len(), (WINDOW_MS / BUCKET_MS) as usize);
        let tail: Vec<u64> = s.iter().rev().take(4).map(|x| x.viewers).collect();
        assert_eq!(tail, vec![5, 2, 2, 9], "the gap carries the last count");
        assert!(s.iter().rev().skip(4).all(|x| x.viewers == 0));
    }

    #[test]
    fn stats_days_are_utc_dates() {
        assert_eq!(day_of(0), "19700101");
        assert_eq!(
            last_days(86_400_000 * 2, 3),
            vec!["19700103", "19700102", "19700101"]
        );
    }
}
