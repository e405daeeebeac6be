//! The control node's side of the GPU cluster: a ractor_cluster `NodeServer`
//! that GPU nodes connect to, and the [`watcher`] that turns the workers'
//! process group into scheduler registrations, with its own heartbeat.
//!
//! Designed around ractor_cluster 0.16's limits: peers authenticate with the
//! cookie (from the environment only) and, when configured, mutual TLS with the
//! cluster CA (required by `cluster.require_tls`, as production config sets);
//! the listener binds the configured address, not `[::]`; a frame over the
//! link limit would drop the whole link, so jobs are checked against it before
//! they are sent; there is no liveness timeout, so the watcher pings every
//! worker and cuts a silent node's session itself.

pub mod watcher;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use dreamstream_actors::scheduler::SchedulerHandle;
use gpu_node::cluster::TlsFiles;
use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{IncomingEncryptionMode, NodeServer, NodeServerMessage};
use serde::Deserialize;

pub use watcher::{ClusterWatcher, WatcherArgs, WatcherMsg};

/// `[cluster]` in cluster.toml.
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterSettings {
    /// Ping interval of every remote worker.
    pub heartbeat_ms: u64,
    /// Silence after which a worker is declared lost and its node's session cut.
    pub lost_after_ms: u64,
    /// Largest frame on a cluster link (GPU nodes use the same value).
    pub max_frame_bytes: u64,
    /// Back-pressure: bytes of frames in flight to one node at most.
    pub max_bytes_in_flight_per_node: u64,
    /// Refuse to start the cluster listener without TLS.
    pub require_tls: bool,
    pub tls: Option<TlsFiles>,
    /// The shared secret GPU nodes join with (`DREAMSTREAM_CLUSTER_COOKIE`,
    /// from the environment only; checked when the settings load).
    #[serde(skip)]
    pub cookie: Option<dreamstream_actors::cookie::ClusterCookie>,
}

pub use dreamstream_actors::cookie::COOKIE_ENV;

pub struct Cluster {
    pub node_server: ActorRef<NodeServerMessage>,
    pub watcher: ActorRef<WatcherMsg>,
}

/// Starts the node server on `listen` and the watcher, both linked to
/// `supervisor` (the control node's root, which restarts them together).
pub async fn start(
    listen: SocketAddr,
    settings: &ClusterSettings,
    scheduler: SchedulerHandle,
    supervisor: ractor::ActorCell,
) -> anyhow::Result<Cluster> {
    let cookie = settings
        .cookie
        .clone()
        .ok_or(dreamstream_actors::cookie::CookieError::Missing)?;
    let encryption = match &settings.tls {
        Some(files) => IncomingEncryptionMode::Tls(files.acceptor().context("cluster TLS")?),
        None if settings.require_tls => {
            bail!("cluster.require_tls is set but cluster.tls (ca, cert, key) is not configured")
        }
        None => {
            tracing::warn!("the cluster link is not encrypted (set cluster.tls for production)");
            IncomingEncryptionMode::Raw
        }
    };
    let server = NodeServer::new(
        listen.port(),
        cookie.expose().to_string(),
        "control".into(),
        listen.ip().to_string(),
        Some(encryption),
        Some(NodeConnectionMode::Isolated),
    )
    .with_listen_addr(listen.ip())
    .with_max_inbound_frame_size(settings.max_frame_bytes);
    let (node_server, _) = Actor::spawn_linked(None, server, (), supervisor.clone())
        .await
        .context("cannot start the cluster node server")?;
    let (watcher, _) = Actor::spawn_linked(
        None,
        ClusterWatcher,
        WatcherArgs {
            scheduler,
            node_server: node_server.clone(),
            heartbeat: Duration::from_millis(settings.heartbeat_ms),
            lost_after: Duration::from_millis(settings.lost_after_ms),
        },
        supervisor,
    )
    .await
    .context("cannot start the cluster watcher")?;
    tracing::info!(%listen, tls = settings.tls.is_some(), "cluster node server listening");
    Ok(Cluster {
        node_server,
        watcher,
    })
}
