//! ControlRoot: the root of the control node's supervision tree.
//!
//! ```text
//! ControlRoot
//! ├── Scheduler          restarted on any exit; streams and workers re-announce
//! ├── StreamSupervisor   restarted after a panic (streams survive in the registry);
//! │   └── StreamActor…   a kill or repeated failures → the process exits non-zero
//! ├── WorkerPool         (in-process workers) restarted; it restarts its workers
//! │   └── WorkerActor…
//! ├── NodeServer         (with a cluster) restarted together with the watcher
//! └── ClusterWatcher     restarted; re-reads the workers' process group
//! ```
//!
//! Who sends to it: ractor's supervision events from its children, and the
//! control plane (`Shutdown`, before it stops the children on purpose).
//! Who supervises it: nobody in-process; its failure (and any child it gives
//! up on) is reported through the `fatal` channel, and the application exits
//! non-zero so that systemd restarts the whole process.
//!
//! Each child may fail `policy.max_restarts` times within `policy.window`;
//! one more and the root gives up (fatal).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dreamstream_actors::current::Current;
use dreamstream_actors::registry::StreamRegistry;
use dreamstream_actors::scheduler::{Scheduler, SchedulerConfig, SchedulerHandle, SchedulerMsg};
use dreamstream_actors::store::Stores;
use dreamstream_actors::stream::StreamConfig;
use dreamstream_actors::supervisor::{
    RestartPolicy, StreamSupervisor, SupervisorArgs, SupervisorMsg,
};
use dreamstream_actors::worker::WorkerInfo;
use gpu_node::pool::{Announce, PoolArgs, PoolMsg, WorkerPool};
use gpu_node::processor::Processor;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster_derive::RactorMessage;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cluster::{ClusterSettings, WatcherMsg};

/// What the root needs to (re)build its children.
pub struct RootArgs {
    pub scheduler_config: SchedulerConfig,
    pub store: Stores,
    pub stream_config: StreamConfig,
    /// For stream actors (by the supervisor) and for the root's own children.
    pub policy: RestartPolicy,
    pub registry: Arc<StreamRegistry>,
    pub workers: Vec<(WorkerInfo, Arc<dyn Processor>)>,
    pub cluster: Option<(SocketAddr, ClusterSettings)>,
    /// Set once, with the reason, when the root gives up.
    pub fatal: watch::Sender<Option<String>>,
}

/// The children as the rest of the control node reaches them.
#[derive(Clone)]
pub struct Handles {
    pub scheduler: SchedulerHandle,
    pub supervisor: Current<SupervisorMsg>,
    pub pool: Current<PoolMsg>,
    pub watcher: Option<Current<WatcherMsg>>,
}

#[derive(RactorMessage)]
pub enum RootMsg {
    /// The children's handles (asked once, at start).
    Handles(ractor::RpcReplyPort<Handles>),
    /// The control plane is shutting down: children that stop now are not
    /// restarted.
    Shutdown,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Child {
    Scheduler,
    Supervisor,
    Pool,
    NodeServer,
    Watcher,
}

impl Child {
    fn name(self) -> &'static str {
        match self {
            Child::Scheduler => "scheduler",
            Child::Supervisor => "stream supervisor",
            Child::Pool => "worker pool",
            Child::NodeServer => "cluster node server",
            Child::Watcher => "cluster watcher",
        }
    }
}

pub struct RootState {
    args: RootArgs,
    handles: Handles,
    node_server: Option<ActorCell>,
    failures: Vec<(Child, VecDeque<Instant>)>,
    shutting_down: bool,
}

pub struct ControlRoot;

impl ControlRoot {
    async fn spawn_scheduler(
        myself: &ActorRef<RootMsg>,
        args: &RootArgs,
    ) -> Result<ActorRef<SchedulerMsg>, ActorProcessingErr> {
        let (s, _) =
            Actor::spawn_linked(None, Scheduler, args.scheduler_config, myself.get_cell()).await?;
        Ok(s)
    }

    async fn spawn_supervisor(
        myself: &ActorRef<RootMsg>,
        args: &RootArgs,
        scheduler: &SchedulerHandle,
    ) -> Result<ActorRef<SupervisorMsg>, ActorProcessingErr> {
        let (s, _) = Actor::spawn_linked(
            None,
            StreamSupervisor,
            SupervisorArgs {
                store: args.store.clone(),
                scheduler: scheduler.clone(),
                config: args.stream_config.clone(),
                policy: args.policy,
                registry: args.registry.clone(),
            },
            myself.get_cell(),
        )
        .await?;
        Ok(s)
    }

    async fn spawn_pool(
        myself: &ActorRef<RootMsg>,
        args: &RootArgs,
        scheduler: &SchedulerHandle,
    ) -> Result<ActorRef<PoolMsg>, ActorProcessingErr> {
        let (p, _) = Actor::spawn_linked(
            None,
            WorkerPool,
            PoolArgs {
                workers: args.workers.clone(),
                announce: Announce::Scheduler(scheduler.clone()),
                policy: args.policy,
            },
            myself.get_cell(),
        )
        .await?;
        Ok(p)
    }

    /// The node server and the watcher; binding may need a moment after a
    /// restart (the old listener closes asynchronously).
    async fn spawn_cluster(
        myself: &ActorRef<RootMsg>,
        args: &RootArgs,
        scheduler: &SchedulerHandle,
    ) -> Result<Option<crate::cluster::Cluster>, ActorProcessingErr> {
        let Some((listen, settings)) = &args.cluster else {
            return Ok(None);
        };
        let mut attempt = 0;
        loop {
            match crate::cluster::start(*listen, settings, scheduler.clone(), myself.get_cell())
                .await
            {
                Ok(c) => return Ok(Some(c)),
                Err(e) if attempt < 10 => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "starting the cluster failed; retrying"
                    );
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
                Err(e) => return Err(format!("{e:#}").into()),
            }
        }
    }

    fn which(st: &RootState, cell: &ActorCell) -> Option<Child> {
        let id = cell.get_id();
        let h = &st.handles;
        if h.scheduler.get().get_id() == id {
            Some(Child::Scheduler)
        } else if h.supervisor.get().get_id() == id {
            Some(Child::Supervisor)
        } else if h.pool.get().get_id() == id {
            Some(Child::Pool)
        } else if st.node_server.as_ref().is_some_and(|n| n.get_id() == id) {
            Some(Child::NodeServer)
        } else if h.watcher.as_ref().is_some_and(|w| w.get().get_id() == id) {
            Some(Child::Watcher)
        } else {
            None
        }
    }

    fn give_up(st: &RootState, why: String) -> ActorProcessingErr {
        tracing::error!(why, "the control plane cannot recover: exiting");
        st.args.fatal.send_replace(Some(why.clone()));
        why.into()
    }

    async fn restart(
        myself: &ActorRef<RootMsg>,
        st: &mut RootState,
        child: Child,
    ) -> Result<(), ActorProcessingErr> {
        metrics::counter!("dreamstream_actor_restarts_total", "actor" => child.name()).increment(1);
        match child {
            Child::Scheduler => {
                let s = Self::spawn_scheduler(myself, &st.args).await?;
                st.handles.scheduler.replace(s);
                // The new scheduler knows nothing: workers and streams announce again.
                st.handles.pool.cast(PoolMsg::Reannounce);
                if let Some(w) = &st.handles.watcher {
                    w.cast(WatcherMsg::Reannounce);
                }
                st.handles.supervisor.cast(SupervisorMsg::Reannounce);
            }
            Child::Supervisor => {
                let s = Self::spawn_supervisor(myself, &st.args, &st.handles.scheduler).await?;
                st.handles.supervisor.replace(s);
            }
            Child::Pool => {
                let p = Self::spawn_pool(myself, &st.args, &st.handles.scheduler).await?;
                st.handles.pool.replace(p);
            }
            Child::NodeServer | Child::Watcher => {
                // The watcher subscribes to the node server: restart them together.
                if let Some(w) = &st.handles.watcher {
                    w.get().stop(Some("restarting the cluster".into()));
                }
                if let Some(n) = st.node_server.take() {
                    n.stop(Some("restarting the cluster".into()));
                }
                if let Some(c) =
                    Self::spawn_cluster(myself, &st.args, &st.handles.scheduler).await?
                {
                    st.node_server = Some(c.node_server.get_cell());
                    match &st.handles.watcher {
                        Some(w) => w.replace(c.watcher),
                        None => st.handles.watcher = Some(Current::new(c.watcher)),
                    }
                }
            }
        }
        Ok(())
    }
}

impl Actor for ControlRoot {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = RootArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RootMsg>,
        args: RootArgs,
    ) -> Result<RootState, ActorProcessingErr> {
        let scheduler = Current::new(Self::spawn_scheduler(&myself, &args).await?);
        let supervisor = Current::new(Self::spawn_supervisor(&myself, &args, &scheduler).await?);
        let pool = Current::new(Self::spawn_pool(&myself, &args, &scheduler).await?);
        let cluster = Self::spawn_cluster(&myself, &args, &scheduler).await?;
        let (node_server, watcher) = match cluster {
            Some(c) => (
                Some(c.node_server.get_cell()),
                Some(Current::new(c.watcher)),
            ),
            None => (None, None),
        };
        Ok(RootState {
            args,
            handles: Handles {
                scheduler,
                supervisor,
                pool,
                watcher,
            },
            node_server,
            failures: Vec::new(),
            shutting_down: false,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<RootMsg>,
        msg: RootMsg,
        st: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RootMsg::Handles(reply) => {
                let _ = reply.send(st.handles.clone());
            }
            RootMsg::Shutdown => st.shutting_down = true,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RootMsg>,
        event: SupervisionEvent,
        st: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failed, why) = match &event {
            SupervisionEvent::ActorFailed(cell, e) => (cell, true, e.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell,
                false,
                reason.clone().unwrap_or_else(|| "stopped".into()),
            ),
            _ => return Ok(()),
        };
        let Some(child) = Self::which(st, cell) else {
            return Ok(()); // an old generation's child, already replaced
        };
        if st.shutting_down {
            return Ok(());
        }
        tracing::error!(
            actor = child.name(),
            failed,
            why,
            "a control-plane actor died"
        );
        // A killed supervisor took its stream actors with it and was stopped
        // from outside on purpose: nothing to restart it into.
        if child == Child::Supervisor && !failed {
            return Err(Self::give_up(
                st,
                format!("the stream supervisor was terminated ({why})"),
            ));
        }
        let policy = st.args.policy;
        let history = match st.failures.iter_mut().find(|(c, _)| *c == child) {
            Some((_, h)) => h,
            None => {
                st.failures.push((child, VecDeque::new()));
                &mut st.failures.last_mut().expect("just pushed").1
            }
        };
        if !policy.allow(history, Instant::now()) {
            return Err(Self::give_up(
                st,
                format!(
                    "the {} failed more than {} times in {:?} (last: {why})",
                    child.name(),
                    policy.max_restarts,
                    policy.window
                ),
            ));
        }
        if let Err(e) = Self::restart(&myself, st, child).await {
            return Err(Self::give_up(
                st,
                format!("the {} could not be restarted: {e}", child.name()),
            ));
        }
        tracing::warn!(actor = child.name(), "restarted");
        Ok(())
    }
}
