//! The audience numbers in Redis (`REDIS_URL`), shared by every control node
//! that uses the same Redis. Keys (prefix `audience.redis_prefix`, default
//! `ds:aud:`):
//!
//! | key | type | expiry |
//! |---|---|---|
//! | `all:ips` | HyperLogLog of keyed IP hashes | none |
//! | `day:{YYYYMMDD}:ips` | HyperLogLog | 8 days |
//! | `stream:{id}:ips` | HyperLogLog | 7 days from the last join; 1 day after the end |
//! | `stream:{id}` | hash `now`, `peak`, `peak_at` | as above |
//! | `peak` | hash `viewers`, `at` (the platform's most at once) | none |
//! | `live` | hash node instance → its viewers now | entries of dead nodes are dropped |
//! | `nodes` | sorted set node instance → heartbeat deadline (ms) | |
//! | `tune_ins`, `day:{YYYYMMDD}:tune_ins` | counters | none / 8 days |
//!
//! Each join, leave or heartbeat is one run of [`SCRIPT`], atomically: the
//! node writes its own viewer count (it knows it exactly: its streams live on
//! it), drops the counts of nodes whose heartbeat stopped (a crashed node's
//! viewers do not stay counted forever), sums the platform's viewers and
//! raises the peaks if that is more — no lost update, however many viewers
//! come and go at once, on however many nodes. A background task sends the
//! events in the order they happened, batched into pipelines; `joined`/`left`
//! never wait for Redis. A batch Redis refuses is logged and dropped: the
//! next event or heartbeat writes absolute counts again, so only that batch's
//! sketch additions are lost.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use dreamstream_actors::StreamId;
use redis::aio::ConnectionManager;
use redis::{ErrorKind, Value};
use tokio::sync::{mpsc, oneshot};

use super::{History, KEEP_DAYS, last_days, lock};
use crate::audience::{AudienceReport, Peak, StreamAudience};

/// How often a node says it is alive, and how long its count stays without that.
const HEARTBEAT: Duration = Duration::from_secs(10);
const NODE_DEADLINE_MS: i64 = 30_000;
const DAY_TTL_SECS: i64 = KEEP_DAYS * 86_400;
const STREAM_TTL_SECS: i64 = 7 * 86_400;
const ENDED_STREAM_TTL_SECS: i64 = 86_400;
/// Events per pipeline at most.
const BATCH: usize = 256;
/// How long a caller waits for the writer to catch up.
const FLUSH_WAIT: Duration = Duration::from_secs(5);

/// KEYS: live, nodes, peak [, stream hash [, tune-ins, today's tune-ins
/// [, all-time sketch, today's sketch, the stream's sketch]]].
/// ARGV: instance, node viewers, now ms, node deadline ms, stream viewers,
/// stream ttl, day ttl, keyed IP hash.
pub const SCRIPT: &str = r"
local live, nodes, peak = KEYS[1], KEYS[2], KEYS[3]
local now = ARGV[3]
redis.call('HSET', live, ARGV[1], ARGV[2])
redis.call('ZADD', nodes, ARGV[4], ARGV[1])
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', nodes, '-inf', '(' .. now)) do
  redis.call('HDEL', live, dead)
  redis.call('ZREM', nodes, dead)
end
local total = 0
for _, v in ipairs(redis.call('HVALS', live)) do total = total + tonumber(v) end
local function raise(key, value, field, at_field)
  if value > tonumber(redis.call('HGET', key, field) or '0') then
    redis.call('HSET', key, field, value, at_field, now)
  end
end
raise(peak, total, 'viewers', 'at')
if #KEYS >= 4 then
  local viewers = tonumber(ARGV[5])
  redis.call('HSET', KEYS[4], 'now', viewers)
  raise(KEYS[4], viewers, 'peak', 'peak_at')
  redis.call('EXPIRE', KEYS[4], ARGV[6])
end
if #KEYS >= 6 then
  redis.call('INCR', KEYS[5])
  redis.call('INCR', KEYS[6])
  redis.call('EXPIRE', KEYS[6], ARGV[7])
end
if #KEYS >= 9 then
  redis.call('PFADD', KEYS[7], ARGV[8])
  redis.call('PFADD', KEYS[8], ARGV[8])
  redis.call('EXPIRE', KEYS[8], ARGV[7])
  redis.call('PFADD', KEYS[9], ARGV[8])
  redis.call('EXPIRE', KEYS[9], ARGV[6])
end
return total
";

/// What the writer task is told, in order.
pub enum Op {
    /// A viewer joined (`join: Some(ip hash if known)`) or left a stream.
    Event {
        stream: i64,
        stream_now: u64,
        total: u64,
        at: i64,
        join: Option<Option<u64>>,
    },
    /// This node's viewer count changed without an event (a stream ended).
    Sync { total: u64 },
    /// Answered once everything sent before it is applied.
    Flush(oneshot::Sender<()>),
}

/// Key names.
#[derive(Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }
    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }
    pub fn live(&self) -> String {
        self.key("live")
    }
    pub fn nodes(&self) -> String {
        self.key("nodes")
    }
    pub fn peak(&self) -> String {
        self.key("peak")
    }
    pub fn all_ips(&self) -> String {
        self.key("all:ips")
    }
    pub fn day_ips(&self, day: &str) -> String {
        self.key(&format!("day:{day}:ips"))
    }
    pub fn tune_ins(&self) -> String {
        self.key("tune_ins")
    }
    pub fn day_tune_ins(&self, day: &str) -> String {
        self.key(&format!("day:{day}:tune_ins"))
    }
    pub fn stream(&self, id: i64) -> String {
        self.key(&format!("stream:{id}"))
    }
    pub fn stream_ips(&self, id: i64) -> String {
        self.key(&format!("stream:{id}:ips"))
    }
}

pub struct RedisStore {
    conn: ConnectionManager,
    keys: Keys,
    /// The writer (absent when only reading).
    tx: Option<mpsc::UnboundedSender<Op>>,
    /// The platform's viewers as the last script run saw them.
    total: Arc<AtomicU64>,
}

impl RedisStore {
    /// Starts the writer task (and its heartbeat).
    pub async fn start(
        conn: ConnectionManager,
        prefix: String,
        history: Arc<Mutex<History>>,
    ) -> anyhow::Result<Self> {
        let keys = Keys::new(prefix);
        // Loaded up front (a broken server shows at start); runs by its SHA1.
        let sha = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(SCRIPT)
            .query_async::<String>(&mut conn.clone())
            .await
            .context("failed to load the audience script into Redis")?;
        let (tx, rx) = mpsc::unbounded_channel();
        let total = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            conn: conn.clone(),
            keys: keys.clone(),
            sha,
            instance: hex::encode(rand::random::<[u8; 8]>()),
            node_total: 0,
            total: total.clone(),
            history,
        };
        tokio::spawn(writer.run(rx));
        Ok(Self {
            conn,
            keys,
            tx: Some(tx),
            total,
        })
    }

    pub fn reader(conn: ConnectionManager, prefix: String) -> Self {
        Self {
            conn,
            keys: Keys::new(prefix),
            tx: None,
            total: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn send(&self, op: Op) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(op);
        }
    }

    pub fn last_total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Waits (a while at most) until the writer applied everything sent so far.
    pub async fn flush(&self) {
        let Some(tx) = &self.tx else {
            return;
        };
        let (done, wait) = oneshot::channel();
        if tx.send(Op::Flush(done)).is_ok() {
            let _ = tokio::time::timeout(FLUSH_WAIT, wait).await;
        }
    }

    pub async fn report(
        &self,
        streams: &[StreamId],
        now_ms: i64,
    ) -> anyhow::Result<AudienceReport> {
        let k = &self.keys;
        let days = last_days(now_ms, 7);
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(k.live());
        pipe.cmd("ZRANGEBYSCORE")
            .arg(k.nodes())
            .arg(now_ms)
            .arg("+inf");
        pipe.cmd("HMGET").arg(k.peak()).arg("viewers").arg("at");
        pipe.cmd("PFCOUNT").arg(k.day_ips(&days[0]));
        pipe.cmd("PFCOUNT")
            .arg(days.iter().map(|d| k.day_ips(d)).collect::<Vec<_>>());
        pipe.cmd("PFCOUNT").arg(k.all_ips());
        pipe.cmd("GET").arg(k.tune_ins());
        pipe.cmd("GET").arg(k.day_tune_ins(&days[0]));
        for s in streams {
            pipe.cmd("HMGET")
                .arg(k.stream(s.0))
                .arg("now")
                .arg("peak")
                .arg("peak_at");
            pipe.cmd("PFCOUNT").arg(k.stream_ips(s.0));
        }
        let values: Vec<Value> = pipe
            .query_async(&mut self.conn.clone())
            .await
            .context("failed to read the audience numbers from Redis")?;
        let mut v = values.into_iter();
        let mut next = || v.next().unwrap_or(Value::Nil);
        let live: std::collections::HashMap<String, u64> =
            redis::from_redis_value(&next()).unwrap_or_default();
        let alive: Vec<String> = redis::from_redis_value(&next()).unwrap_or_default();
        let viewers_now = alive.iter().filter_map(|n| live.get(n)).sum();
        let peak = peak_of(&next());
        let mut report = AudienceReport {
            backend: "redis".into(),
            viewers_now,
            peak,
            unique_ips_today: int(&next()),
            unique_ips_7d: int(&next()),
            unique_ips_all: int(&next()),
            tune_ins_all: int(&next()),
            tune_ins_today: int(&next()),
            streams: Vec::new(),
        };
        for s in streams {
            let fields: Vec<Option<i64>> = redis::from_redis_value(&next()).unwrap_or_default();
            let field = |i: usize| fields.get(i).copied().flatten();
            report.streams.push(StreamAudience {
                stream_id: s.0,
                viewers: field(0).unwrap_or(0).max(0) as u64,
                peak: Peak {
                    viewers: field(1).unwrap_or(0).max(0) as u64,
                    at_ms: field(2),
                },
                unique_ips: int(&next()),
            });
        }
        Ok(report)
    }

    /// A stream's final numbers, once its events are applied; its keys then
    /// expire after a day.
    pub async fn stream_ended(&self, stream: StreamId) -> anyhow::Result<StreamAudience> {
        self.flush().await;
        let mut report = self.report(&[stream], super::now_ms()).await?;
        let mut pipe = redis::pipe();
        pipe.cmd("EXPIRE")
            .arg(self.keys.stream(stream.0))
            .arg(ENDED_STREAM_TTL_SECS)
            .ignore();
        pipe.cmd("EXPIRE")
            .arg(self.keys.stream_ips(stream.0))
            .arg(ENDED_STREAM_TTL_SECS)
            .ignore();
        pipe.query_async::<()>(&mut self.conn.clone())
            .await
            .context("failed to expire an ended stream's keys")?;
        let mut s = report.streams.pop().unwrap_or_default();
        s.viewers = 0;
        Ok(s)
    }
}

fn int(v: &Value) -> u64 {
    redis::from_redis_value::<Option<i64>>(v)
        .ok()
        .flatten()
        .unwrap_or(0)
        .max(0) as u64
}

fn peak_of(v: &Value) -> Peak {
    let fields: Vec<Option<i64>> = redis::from_redis_value(v).unwrap_or_default();
    Peak {
        viewers: fields.first().copied().flatten().unwrap_or(0).max(0) as u64,
        at_ms: fields.get(1).copied().flatten(),
    }
}

/// The background task that applies events in order.
struct Writer {
    conn: ConnectionManager,
    keys: Keys,
    sha: String,
    /// This process among the nodes sharing the Redis.
    instance: String,
    node_total: u64,
    total: Arc<AtomicU64>,
    history: Arc<Mutex<History>>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Op>) {
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let batch = tokio::select! {
                op = rx.recv() => match op {
                    Some(op) => {
                        let mut batch = vec![op];
                        while batch.len() < BATCH {
                            match rx.try_recv() {
                                Ok(op) => batch.push(op),
                                Err(_) => break,
                            }
                        }
                        batch
                    }
                    None => return,
                },
                _ = heartbeat.tick() => vec![Op::Sync { total: self.node_total }],
            };
            self.apply(batch).await;
        }
    }

    /// The script's arguments for one event, with its time.
    fn invocation(&mut self, op: &Op) -> Option<(redis::Cmd, i64)> {
        let k = &self.keys;
        let now = super::now_ms();
        let (total, at) = match op {
            Op::Event { total, at, .. } => (*total, *at),
            Op::Sync { total } => (*total, now),
            Op::Flush(_) => return None,
        };
        self.node_total = total;
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha);
        let mut keys = vec![k.live(), k.nodes(), k.peak()];
        let mut hash = None;
        if let Op::Event { stream, join, .. } = op {
            keys.push(k.stream(*stream));
            if let Some(ip) = join {
                let day = super::day_of(at);
                keys.push(k.tune_ins());
                keys.push(k.day_tune_ins(&day));
                if let Some(ip) = ip {
                    keys.push(k.all_ips());
                    keys.push(k.day_ips(&day));
                    keys.push(k.stream_ips(*stream));
                    hash = Some(ip.to_le_bytes());
                }
            }
        }
        let stream_now = match op {
            Op::Event { stream_now, .. } => *stream_now,
            _ => 0,
        };
        cmd.arg(keys.len()).arg(keys);
        cmd.arg(&self.instance)
            .arg(total)
            .arg(at)
            .arg(now + NODE_DEADLINE_MS)
            .arg(stream_now)
            .arg(STREAM_TTL_SECS)
            .arg(DAY_TTL_SECS);
        match hash {
            Some(h) => cmd.arg(&h[..]),
            None => cmd.arg(""),
        };
        Some((cmd, at))
    }

    async fn apply(&mut self, batch: Vec<Op>) {
        let mut pipe = redis::pipe();
        let mut times = Vec::with_capacity(batch.len());
        let mut waiting = Vec::new();
        for op in &batch {
            if let Some((cmd, at)) = self.invocation(op) {
                pipe.add_command(cmd);
                times.push(at);
            }
        }
        for op in batch {
            if let Op::Flush(done) = op {
                waiting.push(done);
            }
        }
        if !times.is_empty() {
            match self.query(&pipe).await {
                Ok(totals) => {
                    let mut history = lock(&self.history);
                    for (total, at) in totals.iter().zip(&times) {
                        history.observe((*total).max(0) as u64, *at);
                    }
                    if let Some(last) = totals.last() {
                        self.total.store((*last).max(0) as u64, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    metrics::counter!("dreamstream_audience_events_lost_total")
                        .increment(times.len() as u64);
                    tracing::warn!(error = %e, events = times.len(), "Redis refused audience events");
                }
            }
        }
        for done in waiting {
            let _ = done.send(());
        }
    }

    /// Runs the pipeline; reloads the script once if Redis lost it (a restart).
    async fn query(&self, pipe: &redis::Pipeline) -> redis::RedisResult<Vec<i64>> {
        let mut conn = self.conn.clone();
        match pipe.query_async(&mut conn).await {
            Err(e) if e.kind() == ErrorKind::NoScriptError => {
                redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(SCRIPT)
                    .query_async::<String>(&mut conn)
                    .await?;
                pipe.query_async(&mut conn).await
            }
            other => other,
        }
    }
}
