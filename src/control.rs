//! The control plane: the actors (scheduler, stream supervisor, in-process
//! workers) on a tokio runtime of their own, and the calls the web tier makes
//! into them (each with a timeout).
//!
//! Why a separate runtime: actix-web runs one single-threaded runtime per
//! worker thread; an actor spawned from a request handler would be pinned to
//! that thread. The actors get a multi-threaded runtime that lives as long as
//! the application.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use dreamstream_actors::scheduler::{Scheduler, SchedulerConfig, SchedulerMsg, SchedulerSnapshot};
use dreamstream_actors::store::{EndReason, StreamStore};
use dreamstream_actors::stream::StreamShared;
use dreamstream_actors::supervisor::{StartError, StreamSupervisor, SupervisorArgs, SupervisorMsg};
use dreamstream_actors::worker::{WorkerInfo, WorkerMsg};
use dreamstream_actors::{StyleParams, Username, WorkerId};
use gpu_node::processor::Processor;
use gpu_node::worker::{WorkerActor, WorkerArgs};
use ractor::{Actor, ActorRef, call_t};
use tokio::runtime::{Handle, Runtime};

use crate::settings::Settings;

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

pub struct ControlPlane {
    _runtime: ActorRuntime,
    handle: Handle,
    pub scheduler: ActorRef<SchedulerMsg>,
    pub supervisor: ActorRef<SupervisorMsg>,
    pub workers: Vec<ActorRef<WorkerMsg>>,
    pub cluster: Option<crate::cluster::Cluster>,
}

impl ControlPlane {
    /// Starts the actors; `processors` become in-process workers.
    pub async fn start(
        settings: &Settings,
        store: Arc<dyn StreamStore>,
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
        let (scheduler, supervisor, workers, cluster) = {
            let settings = settings.clone();
            handle
                .spawn(async move {
                    let config = SchedulerConfig {
                        max_bytes_in_flight_per_node: settings.cluster.max_bytes_in_flight_per_node,
                    };
                    let (scheduler, _) = Actor::spawn(None, Scheduler, config).await?;
                    // Unnamed: ractor's name registry is process-wide, and tests run
                    // several control planes in one process.
                    let (supervisor, _) = Actor::spawn(
                        None,
                        StreamSupervisor,
                        SupervisorArgs {
                            store,
                            scheduler: scheduler.clone(),
                            config: settings.stream_config(),
                            policy: settings.restart_policy(),
                        },
                    )
                    .await?;
                    let mut workers = Vec::new();
                    for (i, processor) in processors.into_iter().enumerate() {
                        let info = WorkerInfo {
                            id: WorkerId(format!("local/worker-{i}")),
                            node: "local".into(),
                            capacity: settings.worker.capacity,
                            capabilities: processor.capabilities(),
                        };
                        let (w, _) = Actor::spawn(
                            None,
                            WorkerActor,
                            WorkerArgs {
                                info: info.clone(),
                                processor,
                            },
                        )
                        .await?;
                        scheduler.cast(SchedulerMsg::WorkerUp(info, w.clone()))?;
                        workers.push(w);
                    }
                    let cluster = match settings.cluster_listen {
                        Some(listen) => Some(
                            crate::cluster::start(listen, &settings.cluster, scheduler.clone())
                                .await?,
                        ),
                        None => None,
                    };
                    anyhow::Ok((scheduler, supervisor, workers, cluster))
                })
                .await
                .context("the actor runtime stopped")??
        };
        Ok(Self {
            _runtime: runtime,
            handle,
            scheduler,
            supervisor,
            workers,
            cluster,
        })
    }

    /// The remote workers with their last heartbeat (empty without a cluster).
    pub async fn remote_workers(&self) -> Vec<crate::cluster::watcher::RemoteWorker> {
        match &self.cluster {
            Some(c) => call_t!(c.watcher, crate::cluster::WatcherMsg::Snapshot, CALL_MS)
                .unwrap_or_default(),
            None => Vec::new(),
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
            self.supervisor,
            |reply| SupervisorMsg::Start {
                username,
                settings,
                reply
            },
            CALL_MS
        )
        .map_err(|e| StartError::Failed(e.to_string()))?
    }

    /// The live stream of `username`, if any.
    pub async fn get(&self, username: &Username) -> Option<Arc<StreamShared>> {
        call_t!(
            self.supervisor,
            SupervisorMsg::Get,
            CALL_MS,
            username.clone()
        )
        .ok()
        .flatten()
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
            Err(StartError::AlreadyLive(_)) => self
                .get(username)
                .await
                .ok_or_else(|| StartError::Failed("the stream ended while starting".into())),
            other => other,
        }
    }

    pub async fn list(&self) -> Vec<Arc<StreamShared>> {
        call_t!(self.supervisor, SupervisorMsg::List, CALL_MS).unwrap_or_default()
    }

    pub fn stop(&self, username: &Username, reason: EndReason) {
        let _ = self
            .supervisor
            .cast(SupervisorMsg::Stop(username.clone(), reason));
    }

    pub async fn scheduler_snapshot(&self) -> SchedulerSnapshot {
        call_t!(self.scheduler, SchedulerMsg::Snapshot, CALL_MS).unwrap_or_default()
    }

    /// Ends every stream (viewers are told) and lets the in-process workers
    /// finish their jobs, up to `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        let _ = call_t!(
            self.supervisor,
            SupervisorMsg::StopAll,
            CALL_MS,
            EndReason::Shutdown
        );
        for w in &self.workers {
            let _ = w.cast(WorkerMsg::Drain);
        }
        let deadline = tokio::time::Instant::now() + grace;
        for w in &self.workers {
            while gpu_node::worker::in_flight(w).await > 0 && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
