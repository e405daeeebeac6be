//! Rate limits (fixed windows): in Redis when `REDIS_URL` is set, so every
//! control node shares them, or in memory (the embedded default's twin).
//! Keys are namespaced `{redis_prefix}rl:` (`ds:rl:` by default).
//!
//! Every Redis call has a deadline ([`REDIS_TIMEOUT`], set on the shared
//! connection by [`redis_config`], which also reconnects within a second of
//! Redis coming back) and fails instead of waiting: the login and sign-up
//! routes refuse when they cannot count (fail closed, 503), while viewing
//! never waits for Redis (audience events are fire-and-forget).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

/// How long any Redis call may take.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// The shared Redis connection's settings: answers within [`REDIS_TIMEOUT`],
/// connecting within it too, and reconnect attempts at most 500 ms apart.
pub fn redis_config() -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(REDIS_TIMEOUT)
        .set_connection_timeout(REDIS_TIMEOUT)
        .set_number_of_retries(3)
        .set_factor(50)
        .set_max_delay(500)
}

/// The shared Redis connection (`REDIS_URL`), with [`redis_config`]'s
/// deadlines: what the rate limits, the audience numbers and `admin stats`
/// use.
pub async fn connect_redis(
    url: &secrecy::SecretString,
) -> anyhow::Result<redis::aio::ConnectionManager> {
    use anyhow::Context;
    use secrecy::ExposeSecret;
    redis::Client::open(url.expose_secret())
        .context("REDIS_URL is not a valid Redis URL")?
        .get_connection_manager_with_config(redis_config())
        .await
        .context("failed to connect to REDIS_URL")
}

/// `call`, or an error after [`REDIS_TIMEOUT`].
async fn deadline<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(REDIS_TIMEOUT, call).await {
        Ok(r) => Ok(r?),
        Err(_) => anyhow::bail!("Redis did not answer within {REDIS_TIMEOUT:?}"),
    }
}

/// The answer to one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub allowed: bool,
    /// Attempts counted in the current window, this one included.
    pub count: u64,
    /// When the window ends.
    pub retry_after: Duration,
}

#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts an attempt against `key`: allowed while at most `limit` attempts
    /// fell in the current `window`.
    async fn hit(&self, key: &str, limit: u32, window: Duration) -> anyhow::Result<Hit>;

    /// Blocks `key` for `duration` (e.g. a user muted after flooding).
    async fn block(&self, key: &str, duration: Duration) -> anyhow::Result<()>;

    /// How long `key` stays blocked, if it is.
    async fn blocked_for(&self, key: &str) -> anyhow::Result<Option<Duration>>;
}

#[derive(Default)]
pub struct MemoryLimiter {
    windows: Mutex<HashMap<String, (Instant, u64)>>,
    blocks: Mutex<HashMap<String, Instant>>,
}

#[async_trait]
impl RateLimiter for MemoryLimiter {
    async fn hit(&self, key: &str, limit: u32, window: Duration) -> anyhow::Result<Hit> {
        let now = Instant::now();
        let mut map = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, (end, _)| *end > now);
        }
        let entry = map.entry(key.to_string()).or_insert((now + window, 0));
        if entry.0 <= now {
            *entry = (now + window, 0);
        }
        entry.1 += 1;
        Ok(Hit {
            allowed: entry.1 <= limit as u64,
            count: entry.1,
            retry_after: entry.0 - now,
        })
    }

    async fn block(&self, key: &str, duration: Duration) -> anyhow::Result<()> {
        let now = Instant::now();
        let mut map = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, until| *until > now);
        map.insert(key.to_string(), now + duration);
        Ok(())
    }

    async fn blocked_for(&self, key: &str) -> anyhow::Result<Option<Duration>> {
        let now = Instant::now();
        let map = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
        Ok(map.get(key).filter(|u| **u > now).map(|u| *u - now))
    }
}

pub struct RedisLimiter {
    conn: redis::aio::ConnectionManager,
    /// Namespace of this installation's keys (`Settings::redis_prefix`).
    prefix: String,
}

impl RedisLimiter {
    pub fn new(conn: redis::aio::ConnectionManager, prefix: &str) -> Self {
        Self {
            conn,
            prefix: prefix.to_string(),
        }
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn hit(&self, key: &str, limit: u32, window: Duration) -> anyhow::Result<Hit> {
        let key = format!("{}rl:{key}", self.prefix);
        let ms = window.as_millis().max(1) as u64;
        // One round trip, atomically: start the window if there is none,
        // count, and read how long the window still runs.
        let mut conn = self.conn.clone();
        let (_, count, ttl): (Option<String>, u64, i64) = deadline(
            redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(&key)
                .arg(0)
                .arg("PX")
                .arg(ms)
                .arg("NX")
                .cmd("INCR")
                .arg(&key)
                .cmd("PTTL")
                .arg(&key)
                .query_async(&mut conn),
        )
        .await?;
        Ok(Hit {
            allowed: count <= limit as u64,
            count,
            retry_after: Duration::from_millis(ttl.max(0) as u64),
        })
    }

    async fn block(&self, key: &str, duration: Duration) -> anyhow::Result<()> {
        let key = format!("{}block:{key}", self.prefix);
        let ms = duration.as_millis().max(1) as u64;
        let mut conn = self.conn.clone();
        let _: () = deadline(
            redis::cmd("SET")
                .arg(&key)
                .arg(1)
                .arg("PX")
                .arg(ms)
                .query_async(&mut conn),
        )
        .await?;
        Ok(())
    }

    async fn blocked_for(&self, key: &str) -> anyhow::Result<Option<Duration>> {
        let key = format!("{}block:{key}", self.prefix);
        let mut conn = self.conn.clone();
        let ttl: i64 = deadline(redis::cmd("PTTL").arg(&key).query_async(&mut conn)).await?;
        Ok((ttl > 0).then(|| Duration::from_millis(ttl as u64)))
    }
}
