//! Joining the control node's cluster (ractor_cluster), and the TLS settings
//! both sides of a cluster link use.
//!
//! A GPU node runs a ractor `NodeServer` of its own (listening on loopback only:
//! it never accepts peers), spawns its workers, puts them in the workers'
//! process group (under a [`WorkerPool`](crate::pool) that restarts a
//! panicked worker) and connects out to the control node. ractor_cluster has no
//! automatic reconnect, so `run_node` reconnects with exponential backoff after
//! any disconnect; on shutdown it leaves the group (no new jobs), lets the jobs
//! in flight finish and exits.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use dreamstream_actors::supervisor::RestartPolicy;
use dreamstream_actors::worker::{WORKER_GROUP, WorkerInfo, WorkerMsg};
use ractor::Actor;
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::sync::mpsc;

use crate::pool::{Announce, PoolArgs, WorkerPool};
use crate::processor::Processor;

/// Default largest frame on a cluster link (both directions must agree).
pub const DEFAULT_LINK_FRAME_BYTES: u64 = 16 * 1024 * 1024;

/// rustls needs a process-wide crypto provider (ractor_cluster's TLS stack
/// pulls in two): ring, installed once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// PEM files of a node's TLS identity and the cluster's CA.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    fn load(
        &self,
    ) -> anyhow::Result<(
        rustls::RootCertStore,
        Vec<CertificateDer<'static>>,
        PrivateKeyDer<'static>,
    )> {
        install_crypto_provider();
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(&self.ca)
            .with_context(|| format!("cannot read the CA {}", self.ca.display()))?
        {
            roots
                .add(ca.context("bad CA certificate")?)
                .context("unusable CA certificate")?;
        }
        let certs = CertificateDer::pem_file_iter(&self.cert)
            .with_context(|| format!("cannot read the certificate {}", self.cert.display()))?
            .collect::<Result<Vec<_>, _>>()
            .context("bad certificate")?;
        if certs.is_empty() {
            bail!("no certificate in {}", self.cert.display());
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .with_context(|| format!("cannot read the private key {}", self.key.display()))?;
        Ok((roots, certs, key))
    }

    /// The accepting side: a certificate from the CA is required of every peer.
    pub fn acceptor(&self) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
        let (roots, certs, key) = self.load()?;
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .context("cannot build the client certificate verifier")?;
        let config = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .context("the certificate does not match the key")?;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }

    /// The connecting side: trusts only the CA, presents this node's certificate.
    pub fn connector(&self) -> anyhow::Result<tokio_rustls::TlsConnector> {
        let (roots, certs, key) = self.load()?;
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .context("the certificate does not match the key")?;
        Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }
}

/// Everything a GPU node needs to join.
pub struct NodeOptions {
    /// The control node's cluster address (`host:port`).
    pub control: String,
    pub name: String,
    pub cookie: dreamstream_actors::cookie::ClusterCookie,
    /// TLS connector and the name the control node's certificate carries.
    pub tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    pub max_link_frame_bytes: u64,
    pub workers: Vec<(WorkerInfo, Arc<dyn Processor>)>,
    /// How long shutdown waits for jobs in flight.
    pub drain_timeout: Duration,
}

#[derive(Debug)]
enum LinkEvent {
    Ready,
    Disconnected,
}

struct Events(mpsc::UnboundedSender<LinkEvent>);

impl NodeEventSubscription for Events {
    fn node_session_opened(&self, _: ractor_cluster::node::NodeServerSessionInformation) {}
    fn node_session_disconnected(&self, _: ractor_cluster::node::NodeServerSessionInformation) {
        let _ = self.0.send(LinkEvent::Disconnected);
    }
    fn node_session_authenticated(&self, _: ractor_cluster::node::NodeServerSessionInformation) {}
    fn node_session_ready(&self, _: ractor_cluster::node::NodeServerSessionInformation) {
        let _ = self.0.send(LinkEvent::Ready);
    }
}

/// Spawns the workers, joins the cluster and stays joined until `shutdown`.
pub async fn run_node(
    opts: NodeOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let server = NodeServer::new(
        0,
        opts.cookie.expose().to_string(),
        opts.name.clone(),
        hostname(),
        None,
        Some(NodeConnectionMode::Isolated),
    )
    .with_listen_addr(IpAddr::from([127, 0, 0, 1]))
    .with_max_inbound_frame_size(opts.max_link_frame_bytes);
    let (node, _) = Actor::spawn(None, server, ())
        .await
        .context("cannot start the node server")?;
    let (tx, mut events) = mpsc::unbounded_channel();
    node.cast(NodeServerMessage::SubscribeToEvents {
        id: "gpu-node".into(),
        subscription: Box::new(Events(tx)),
    })?;

    // The workers live under a pool that restarts a panicked one and puts it
    // back in the workers' group; a pool that gives up ends this node.
    let (pool, pool_handle) = Actor::spawn(
        None,
        WorkerPool,
        PoolArgs {
            workers: opts.workers,
            announce: Announce::ProcessGroup,
            policy: RestartPolicy::default(),
        },
    )
    .await
    .context("cannot start the workers")?;
    let shutdown = async move {
        tokio::select! {
            _ = shutdown => Ok(()),
            _ = pool_handle => Err(anyhow::anyhow!("the worker pool died: its workers kept failing")),
        }
    };
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(250);
    let outcome = 'link: loop {
        let connected = match &opts.tls {
            Some((connector, name)) => {
                ractor_cluster::client_connect_enc(
                    &node,
                    opts.control.as_str(),
                    connector.clone(),
                    name.clone(),
                )
                .await
            }
            None => ractor_cluster::client_connect(&node, opts.control.as_str()).await,
        };
        match &connected {
            Ok(()) => tracing::info!(control = %opts.control, "connecting to the control node"),
            Err(e) => {
                tracing::warn!(control = %opts.control, error = ?e, "cannot reach the control node")
            }
        }
        if connected.is_ok() {
            loop {
                tokio::select! {
                    r = &mut shutdown => break 'link r,
                    ev = events.recv() => match ev {
                        Some(LinkEvent::Ready) => {
                            tracing::info!("joined the cluster");
                            backoff = Duration::from_millis(250);
                        }
                        Some(LinkEvent::Disconnected) | None => {
                            tracing::warn!("the link to the control node is down; reconnecting");
                            break;
                        }
                    },
                }
            }
        }
        tokio::select! {
            r = &mut shutdown => break 'link r,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    };

    // Drain: leave the group (the scheduler stops sending), finish what is running.
    tracing::info!("draining");
    let workers = crate::pool::workers(&pool).await;
    ractor::pg::leave(
        WORKER_GROUP.into(),
        workers.iter().map(|w| w.get_cell()).collect(),
    );
    for w in &workers {
        let _ = w.cast(WorkerMsg::Drain);
    }
    let deadline = tokio::time::Instant::now() + opts.drain_timeout;
    for w in &workers {
        while crate::worker::in_flight(w).await > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    node.stop(None);
    pool.stop(None);
    outcome
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
