//! The control plane: the actors (under [`root::ControlRoot`]: scheduler,
//! stream supervisor, in-process workers, cluster) on a tokio runtime of their
//! own, and the calls the web tier makes into them. Every call has a timeout
//! and returns an error when the actors do not answer; nothing turns "not
//! answering" into an empty answer.
//!
//! Why a separate runtime: actix-web runs one single-threaded runtime per
//! worker thread; an actor spawned from a request handler would be pinned to
//! that thread. The actors get a multi-threaded runtime that lives as long as
//! the application.

pub mod root;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use dreamstream_actors::registry::{StreamRegistry, WaitLimits};
use dreamstream_actors::scheduler::{SchedulerConfig, SchedulerMsg, SchedulerSnapshot};
use dreamstream_actors::store::{EndReason, Stores};
use dreamstream_actors::stream::StreamShared;
use dreamstream_actors::supervisor::{StartError, SupervisorMsg};
use dreamstream_actors::worker::WorkerInfo;
use dreamstream_actors::{StyleParams, Username, WorkerId};
use gpu_node::processor::Processor;
use ractor::{Actor, ActorRef, call_t};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::watch;

use root::{ControlRoot, Handles, RootArgs, RootMsg};

/// What the control plane is built from (`Settings::control`).
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Viewers that may wait for offline channels.
    pub wait_limits: WaitLimits,
    /// Frames one in-process worker takes at a time.
    pub worker_capacity: u32,
    pub scheduler: SchedulerConfig,
    pub stream: dreamstream_actors::stream::StreamConfig,
    /// How often the supervisor restarts a failing stream.
    pub policy: dreamstream_actors::supervisor::RestartPolicy,
    /// The cluster listener and its settings, when GPU nodes may join.
    pub cluster: Option<(std::net::SocketAddr, crate::cluster::ClusterSettings)>,
}

/// Timeout of every call from the web tier into the actors.
const CALL_MS: u64 = 5_000;

/// Owns the actor runtime; dropping it from async code is allowed (background shutdown).
struct ActorRuntime(Option<Runtime>);

impl Drop for ActorRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A part of the control plane that did not answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the {0} is not answering")]
pub struct NotAnswering(pub &'static str);

pub struct ControlPlane {
    _runtime: ActorRuntime,
    handle: Handle,
    root: ActorRef<RootMsg>,
    actors: Handles,
    /// Every channel's live stream and its waiting viewers.
    pub registry: Arc<StreamRegistry>,
    fatal: watch::Receiver<Option<String>>,
}

impl ControlPlane {
    /// Starts the actors; `processors` become in-process workers.
    pub async fn start(
        config: ControlConfig,
        store: Stores,
        processors: Vec<Arc<dyn Processor>>,
    ) -> anyhow::Result<Self> {
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .max(2);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("actors")
            .enable_all()
            .build()
            .context("failed to start the actor runtime")?;
        let handle = runtime.handle().clone();
        // Owned before anything can fail, so an error drops it without blocking.
        let runtime = ActorRuntime(Some(runtime));
        gpu_node::cluster::install_crypto_provider();
        let registry = Arc::new(StreamRegistry::new(config.wait_limits));
        let (fatal_tx, fatal) = watch::channel(None);
        let workers = processors
            .into_iter()
            .enumerate()
            .map(|(i, processor)| {
                let info = WorkerInfo {
                    id: WorkerId(format!("local/worker-{i}")),
                    node: "local".into(),
                    capacity: config.worker_capacity,
                    capabilities: processor.capabilities(),
                };
                (info, processor)
            })
            .collect();
        let args = RootArgs {
            scheduler_config: config.scheduler,
            store,
            stream_config: config.stream,
            policy: config.policy,
            registry: registry.clone(),
            workers,
            cluster: config.cluster,
            fatal: fatal_tx.clone(),
        };
        let (root, actors) = handle
            .spawn(async move {
                // Unnamed: ractor's name registry is process-wide, and tests run
                // several control planes in one process.
                let (root, joined) = Actor::spawn(None, ControlRoot, args).await?;
                let actors = call_t!(root, RootMsg::Handles, CALL_MS)?;
                // The root itself ending (not by our shutdown) is fatal too.
                tokio::spawn(async move {
                    let _ = joined.await;
                    fatal_tx.send_if_modified(|f| {
                        f.get_or_insert_with(|| "the control plane's root stopped".into());
                        true
                    });
                });
                anyhow::Ok((root, actors))
            })
            .await
            .context("the actor runtime stopped")??;
        Ok(Self {
            _runtime: runtime,
            handle,
            root,
            actors,
            registry,
            fatal,
        })
    }

    /// Resolves when the control plane cannot go on (a child the root could
    /// not restart): the process should exit non-zero. Never resolves
    /// otherwise.
    pub async fn failed(&self) -> String {
        let mut fatal = self.fatal.clone();
        match fatal.wait_for(Option::is_some).await {
            Ok(why) => why.clone().unwrap_or_default(),
            Err(_) => "the control plane's root is gone".into(),
        }
    }

    /// The actors now (tests inject faults through these).
    pub fn actors(&self) -> &Handles {
        &self.actors
    }

    /// Answers within `timeout` if the stream supervisor and the scheduler
    /// are processing messages; names the first one that is not.
    pub async fn ping(&self, timeout: Duration) -> Result<(), NotAnswering> {
        let ms = timeout.as_millis() as u64;
        call_t!(self.actors.supervisor.get(), SupervisorMsg::Ping, ms)
            .map_err(|_| NotAnswering("stream supervisor"))?;
        call_t!(self.actors.scheduler.get(), SchedulerMsg::Snapshot, ms)
            .map_err(|_| NotAnswering("scheduler"))?;
        Ok(())
    }

    /// The remote workers with their last heartbeat (empty without a cluster).
    pub async fn remote_workers(
        &self,
    ) -> Result<Vec<crate::cluster::watcher::RemoteWorker>, NotAnswering> {
        match &self.actors.watcher {
            Some(w) => call_t!(w.get(), crate::cluster::WatcherMsg::Snapshot, CALL_MS)
                .map_err(|_| NotAnswering("cluster watcher")),
            None => Ok(Vec::new()),
        }
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    pub async fn start_stream(
        &self,
        username: Username,
        settings: StyleParams,
    ) -> Result<Arc<StreamShared>, StartError> {
        call_t!(
            self.actors.supervisor.get(),
            |reply| SupervisorMsg::Start {
                username,
                settings,
                reply
            },
            CALL_MS
        )
        .map_err(|e| {
            tracing::error!(error = %e, "the stream supervisor did not answer a start");
            StartError::Unavailable
        })?
    }

    /// The live stream of `username`, if any (from the registry: no actor
    /// has to answer).
    pub async fn get(&self, username: &Username) -> Option<Arc<StreamShared>> {
        self.registry.get(username)
    }

    /// The live stream, started if it is not live yet.
    pub async fn get_or_start(
        &self,
        username: &Username,
        settings: StyleParams,
    ) -> Result<Arc<StreamShared>, StartError> {
        if let Some(s) = self.get(username).await {
            return Ok(s);
        }
        match self.start_stream(username.clone(), settings).await {
            // Two connections raced to start it: use the winner's.
            Err(StartError::AlreadyLive(_)) => {
                self.get(username).await.ok_or(StartError::Unavailable)
            }
            other => other,
        }
    }

    /// Every live stream, oldest first (from the registry).
    pub async fn list(&self) -> Vec<Arc<StreamShared>> {
        self.registry.list()
    }

    pub fn stop(&self, username: &Username, reason: EndReason) {
        self.actors
            .supervisor
            .cast(SupervisorMsg::Stop(username.clone(), reason));
    }

    pub async fn scheduler_snapshot(&self) -> Result<SchedulerSnapshot, NotAnswering> {
        call_t!(self.actors.scheduler.get(), SchedulerMsg::Snapshot, CALL_MS)
            .map_err(|_| NotAnswering("scheduler"))
    }

    /// Ends every stream (viewers are told) and lets the in-process workers
    /// finish their jobs, up to `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        let _ = self.root.cast(RootMsg::Shutdown);
        let _ = call_t!(
            self.actors.supervisor.get(),
            SupervisorMsg::StopAll,
            CALL_MS,
            EndReason::Shutdown
        );
        let workers = gpu_node::pool::workers(&self.actors.pool.get()).await;
        for w in &workers {
            let _ = w.cast(dreamstream_actors::worker::WorkerMsg::Drain);
        }
        let deadline = tokio::time::Instant::now() + grace;
        for w in &workers {
            while gpu_node::worker::in_flight(w).await > 0 && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
