//! Typed settings: the embedded `cluster.toml`, then an optional file, then
//! `DREAMSTREAM_*` environment variables, then command-line flags. Secrets come
//! from the environment only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use dreamstream_actors::style::{PresetMix, StyleParams};
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The repository's `cluster.toml`, compiled in as the defaults.
pub const DEFAULT_CONFIG: &str = include_str!("../cluster.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub local_workers: usize,
    pub log_format: crate::telemetry::LogFormat,
    /// Where GPU nodes connect (no cluster when unset).
    #[serde(default)]
    pub cluster_listen: Option<SocketAddr>,
    pub cluster: crate::cluster::ClusterSettings,
    pub worker: WorkerSettings,
    pub stream: StreamSettings,
    pub supervisor: SupervisorSettings,
    /// The address browsers use (OAuth callbacks, Stripe return pages).
    #[serde(default)]
    pub public_url: Option<String>,
    /// Reverse proxies whose Forwarded / X-Forwarded-For is believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Connection hygiene (body deadline, connections per IP).
    #[serde(default)]
    pub http: HttpSettings,
    /// The programmatic API (`/v1`).
    #[serde(default)]
    pub api: ApiSettings,
    pub accounts: AccountSettings,
    pub credits: CreditSettings,
    /// WebRTC: WHIP ingest and WHEP playback (`[media]`).
    #[serde(default)]
    pub media: crate::media::MediaSettings,
    /// The admin dashboard's audience numbers (distinct IPs, peaks).
    #[serde(default)]
    pub audience: crate::stats::AudienceSettings,
    /// OAuth providers by name (`github`, `google` presets, or generic).
    #[serde(default)]
    pub oauth: std::collections::BTreeMap<String, crate::accounts::oauth::OAuthProviderSettings>,
    /// `DATABASE_URL` (PostgreSQL); unset = the SQLite file in `data_dir`.
    #[serde(skip)]
    pub database_url: Option<SecretString>,
    /// `REDIS_URL`; unset = the in-memory twins.
    #[serde(skip)]
    pub redis_url: Option<SecretString>,
    /// Namespace of every Redis key this node writes for rate limits and
    /// sessions (`{prefix}rl:…`, `{prefix}session:…`), so that several
    /// installations (or test runs) can share one Redis without counting
    /// each other's sign-ups. The audience numbers have their own
    /// `audience.redis_prefix`.
    #[serde(default = "default_redis_prefix")]
    pub redis_prefix: String,
    /// `STRIPE_SECRET_KEY`, `STRIPE_WEBHOOK_SECRET`, `STRIPE_API_BASE`.
    #[serde(skip)]
    pub stripe: crate::payments::StripeSecrets,
    /// `DREAMSTREAM_SESSION_KEY` (base64 or hex, ≥ 64 bytes).
    #[serde(skip)]
    pub session_key: Option<SecretString>,
    /// Who may read `/metrics`, `/api/cluster`, `/api/server`,
    /// `/api/scheduler` besides administrators (`web::ops`).
    #[serde(default)]
    pub ops: OpsSettings,
    /// `DREAMSTREAM_METRICS_TOKEN`: sent as `Authorization: Bearer`, it opens
    /// the operational endpoints (Prometheus, `cluster status`, `bench live`).
    #[serde(skip)]
    pub metrics_token: Option<SecretString>,
}

fn default_redis_prefix() -> String {
    "ds:".into()
}

/// The operational endpoints' allow-list.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct OpsSettings {
    /// Client addresses or CIDR ranges (the client as `trusted_proxies`
    /// resolves it) that may read operational data without logging in.
    pub allow: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HttpSettings {
    /// A request body must have arrived this long after its handler
    /// started reading it (408 and the connection closed otherwise).
    pub body_timeout_secs: u64,
    /// Open connections one client address may hold (trusted proxies are
    /// exempt); more get 429 and are closed.
    pub max_connections_per_ip: u32,
    /// Viewer sockets one client network (IPv4 address, IPv6 /64) may hold
    /// on one stream; more are refused (429) so one address cannot inflate
    /// a viewer count.
    pub max_viewers_per_ip: u32,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            body_timeout_secs: 30,
            max_connections_per_ip: 256,
            max_viewers_per_ip: 100,
        }
    }
}

/// The `/v1` API's limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ApiSettings {
    /// Requests one API key may make per minute; more get 429.
    pub requests_per_minute: u32,
    /// The largest request body accepted, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            requests_per_minute: 120,
            max_body_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct AccountSettings {
    pub login_attempts_per_account: u32,
    pub login_attempts_per_ip: u32,
    pub login_window_secs: u64,
    pub signups_per_ip_per_hour: u32,
    pub session_days: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CreditSettings {
    pub period_minutes: u64,
    pub warn_before_secs: u64,
    pub signup_bonus: i64,
    #[serde(default)]
    pub packs: Vec<crate::payments::CreditPack>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LocalProcessor {
    NeuralStyle,
    Passthrough,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WorkerSettings {
    pub processor: LocalProcessor,
    pub threads: usize,
    pub capacity: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamSettings {
    pub job_deadline_ms: u64,
    pub idle_timeout_secs: u64,
    pub max_frame_bytes: usize,
    pub viewer_buffer: usize,
    pub socket_send_buffer: usize,
    pub default_style: String,
    pub max_side: u32,
    pub jpeg_quality: u8,
    /// Viewer connections that may wait for one offline channel.
    pub max_waiting_per_channel: usize,
    /// Viewer connections that may wait (for any channel) from one address.
    pub max_waiting_per_address: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SupervisorSettings {
    pub max_restarts: usize,
    pub window_secs: u64,
}

impl Settings {
    /// Defaults + `file` (if given) + environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut fig = Figment::from(Toml::string(DEFAULT_CONFIG));
        if let Some(path) = file {
            if !path.exists() {
                anyhow::bail!("config file {} does not exist", path.display());
            }
            fig = fig.merge(Toml::file(path));
        }
        fig = fig.merge(Env::prefixed("DREAMSTREAM_").split("__"));
        let mut s: Settings = fig.extract().context("invalid configuration")?;
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        s.database_url = env("DATABASE_URL").map(SecretString::from);
        s.redis_url = env("REDIS_URL").map(SecretString::from);
        s.session_key = env("DREAMSTREAM_SESSION_KEY").map(SecretString::from);
        s.audience.key = env(crate::stats::ipkey::KEY_ENV).map(SecretString::from);
        s.metrics_token = env("DREAMSTREAM_METRICS_TOKEN").map(SecretString::from);
        s.cluster.cookie = dreamstream_actors::cookie::ClusterCookie::from_env()?;
        s.stripe = crate::payments::StripeSecrets {
            secret_key: env("STRIPE_SECRET_KEY").map(SecretString::from),
            webhook_secret: env("STRIPE_WEBHOOK_SECRET").map(SecretString::from),
            api_base: env("STRIPE_API_BASE"),
        };
        s.validate()?;
        Ok(s)
    }

    /// The embedded defaults alone (no file, no environment: a developer's
    /// `DREAMSTREAM_*` or `DATABASE_URL` cannot change a test), listening on
    /// an ephemeral port of 127.0.0.1 with one local worker and its data in
    /// `data_dir`. What the integration tests start from.
    pub fn for_tests(data_dir: &Path) -> Self {
        let mut s: Settings = Figment::from(Toml::string(DEFAULT_CONFIG))
            .extract()
            .expect("the embedded cluster.toml parses (tested below)");
        s.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        s.data_dir = data_dir.to_path_buf();
        s.local_workers = 1;
        s
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.default_style()?;
        if self.redis_prefix.is_empty() || self.redis_prefix.len() > 64 {
            anyhow::bail!("redis_prefix must be 1 to 64 characters");
        }
        if self.stream.max_frame_bytes < 1024 {
            anyhow::bail!("stream.max_frame_bytes must be at least 1024");
        }
        if self.stream.viewer_buffer == 0 {
            anyhow::bail!("stream.viewer_buffer must be at least 1");
        }
        // Viewers' direct writes start right after actix has handed the
        // handshake to the kernel, which needs room for it (web/ws/direct.rs).
        if self.stream.socket_send_buffer < 16 * 1024 {
            anyhow::bail!("stream.socket_send_buffer must be at least 16384 bytes");
        }
        if self.worker.capacity == 0 {
            anyhow::bail!("worker.capacity must be at least 1");
        }
        if self.credits.period_minutes == 0 {
            anyhow::bail!("credits.period_minutes must be at least 1");
        }
        if self.credits.signup_bonus < 0 {
            anyhow::bail!("credits.signup_bonus cannot be negative");
        }
        for (i, p) in self.credits.packs.iter().enumerate() {
            let priced = p.price_cents.is_some_and(|c| c > 0) && p.currency.is_some();
            if p.credits <= 0 || !(priced || p.price_id.is_some()) {
                anyhow::bail!(
                    "credits.packs[{i}] needs credits > 0 and either price_cents + currency or price_id"
                );
            }
        }
        self.trusted_nets()?;
        parse_nets(&self.ops.allow, "ops.allow")?;
        if self
            .metrics_token
            .as_ref()
            .is_some_and(|t| t.expose_secret().len() < 16)
        {
            anyhow::bail!("DREAMSTREAM_METRICS_TOKEN must be at least 16 characters");
        }
        self.audience.validate()?;
        if let Some(url) = &self.public_url {
            url::Url::parse(url).context("public_url is not a URL")?;
        }
        for (name, p) in &self.oauth {
            crate::accounts::oauth::ProviderConfig::resolve(name, p)?;
        }
        Ok(())
    }

    /// The style a new stream starts with.
    pub fn default_style(&self) -> anyhow::Result<StyleParams> {
        let mix = PresetMix::parse(&self.stream.default_style)
            .context("stream.default_style is not a valid style")?;
        let params = StyleParams {
            max_side: self.stream.max_side,
            jpeg_quality: self.stream.jpeg_quality,
            ..StyleParams::preset(mix)
        };
        params.validate().context("invalid stream settings")?;
        Ok(params)
    }

    /// What the control plane (actors, registry, cluster) is built from.
    pub fn control(&self) -> crate::control::ControlConfig {
        crate::control::ControlConfig {
            wait_limits: dreamstream_actors::registry::WaitLimits {
                per_channel: self.stream.max_waiting_per_channel,
                per_address: self.stream.max_waiting_per_address,
            },
            worker_capacity: self.worker.capacity,
            scheduler: dreamstream_actors::scheduler::SchedulerConfig {
                max_bytes_in_flight_per_node: self.cluster.max_bytes_in_flight_per_node,
                // A job's lease outlives its deadline, so the stream, not
                // the scheduler, is the one that gives up first.
                job_lease: Duration::from_millis(self.stream.job_deadline_ms)
                    + Duration::from_secs(5),
            },
            stream: self.stream_config(),
            policy: self.restart_policy(),
            cluster: self
                .cluster_listen
                .map(|listen| (listen, self.cluster.clone())),
        }
    }

    pub fn stream_config(&self) -> dreamstream_actors::stream::StreamConfig {
        dreamstream_actors::stream::StreamConfig {
            job_deadline: Duration::from_millis(self.stream.job_deadline_ms),
            stats_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(self.stream.idle_timeout_secs),
            link_frame_limit: self.cluster.max_frame_bytes,
            meter: self.meter(),
        }
    }

    pub fn meter(&self) -> dreamstream_actors::stream::meter::MeterConfig {
        dreamstream_actors::stream::meter::MeterConfig {
            period: Duration::from_secs(self.credits.period_minutes * 60),
            warn_before: Duration::from_secs(self.credits.warn_before_secs),
        }
    }

    /// What the payments subsystem needs: the packs, Stripe's secrets and
    /// where buyers come back to.
    pub fn payments(&self) -> crate::payments::PaymentsConfig {
        crate::payments::PaymentsConfig {
            packs: self.credits.packs.clone(),
            stripe: self.stripe.clone(),
            public_url: self.public_url(),
        }
    }

    /// `trusted_proxies` parsed: an address is a one-address network.
    pub fn trusted_nets(&self) -> anyhow::Result<Vec<ipnet::IpNet>> {
        parse_nets(&self.trusted_proxies, "trusted_proxies")
    }

    /// `[ops] allow` as networks (checked at load).
    pub fn ops_nets(&self) -> anyhow::Result<Vec<ipnet::IpNet>> {
        parse_nets(&self.ops.allow, "ops.allow")
    }

    /// Where browsers reach this server (no trailing slash).
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.listen),
        }
    }

    pub fn restart_policy(&self) -> dreamstream_actors::supervisor::RestartPolicy {
        dreamstream_actors::supervisor::RestartPolicy {
            max_restarts: self.supervisor.max_restarts,
            window: Duration::from_secs(self.supervisor.window_secs),
        }
    }

    /// Where the database is.
    pub fn db(&self) -> crate::db::DbConfig {
        crate::db::DbConfig {
            url: self.database_url.clone(),
            data_dir: self.data_dir.clone(),
        }
    }
}

/// Addresses and CIDR ranges; an address is a one-address network.
fn parse_nets(list: &[String], what: &str) -> anyhow::Result<Vec<ipnet::IpNet>> {
    list.iter()
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .with_context(|| format!("{what}: {s:?} is not an address or CIDR range"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_defaults_parse() {
        let s: Settings = Figment::from(Toml::string(DEFAULT_CONFIG))
            .extract()
            .unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.local_workers, 1);
        s.validate().unwrap();
    }
}
