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
use serde::Deserialize;

/// The repository's `cluster.toml`, compiled in as the defaults.
pub const DEFAULT_CONFIG: &str = include_str!("../cluster.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub local_workers: usize,
    pub log_format: LogFormat,
    /// Where GPU nodes connect (no cluster when unset).
    #[serde(default)]
    pub cluster_listen: Option<SocketAddr>,
    pub cluster: crate::cluster::ClusterSettings,
    pub worker: WorkerSettings,
    pub stream: StreamSettings,
    pub supervisor: SupervisorSettings,
    /// `DATABASE_URL` (PostgreSQL); unset = the SQLite file in `data_dir`.
    #[serde(skip)]
    pub database_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
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
        s.database_url = std::env::var("DATABASE_URL").ok().filter(|v| !v.is_empty());
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.default_style()?;
        if self.stream.max_frame_bytes < 1024 {
            anyhow::bail!("stream.max_frame_bytes must be at least 1024");
        }
        if self.stream.viewer_buffer == 0 {
            anyhow::bail!("stream.viewer_buffer must be at least 1");
        }
        if self.worker.capacity == 0 {
            anyhow::bail!("worker.capacity must be at least 1");
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

    pub fn stream_config(&self) -> dreamstream_actors::stream::StreamConfig {
        dreamstream_actors::stream::StreamConfig {
            job_deadline: Duration::from_millis(self.stream.job_deadline_ms),
            stats_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(self.stream.idle_timeout_secs),
            link_frame_limit: self.cluster.max_frame_bytes,
        }
    }

    pub fn restart_policy(&self) -> dreamstream_actors::supervisor::RestartPolicy {
        dreamstream_actors::supervisor::RestartPolicy {
            max_restarts: self.supervisor.max_restarts,
            window: Duration::from_secs(self.supervisor.window_secs),
        }
    }

    /// The SQLite file when no `DATABASE_URL` is set.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("dreamstream.db")
    }
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
