//! ClusterWatcher: discovers GPU-node workers through the workers' process
//! group, registers them with the scheduler, and keeps its own heartbeat.
//!
//! Who sends to it: ractor (process-group changes, as supervision events), the
//! node server's event subscription (`NodeDown`), its timer (`Heartbeat`) and
//! its ping tasks (`Pong`), the root (`Reannounce` after a scheduler
//! restart). Supervised by the control node's root (`src/control/root.rs`),
//! which restarts it with the node server; a restart re-reads the group's
//! members.
//!
//! Each heartbeat also re-asks a worker's `Info`: when its capabilities changed
//! (a diffusion model loaded later, a new capacity) the scheduler gets a
//! repeated `WorkerUp` for the same worker, which updates the description and
//! keeps the worker's jobs in flight.
//!
//! A worker that does not answer pings for `lost_after` is declared lost: the
//! scheduler forgets it (its jobs fail, the streams go on) and the node's
//! session is stopped, so a frozen process cannot hold jobs. When the node
//! comes back it reconnects and is discovered again.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use dreamstream_actors::scheduler::{SchedulerHandle, SchedulerMsg};
use dreamstream_actors::worker::{WORKER_GROUP, WorkerInfo, WorkerMsg};
use ractor::pg::GroupChangeMessage;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent, call_t,
};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeServerMessage};
use ractor_cluster_derive::RactorMessage;
use serde::Serialize;
use tokio::time::Instant;

pub struct WatcherArgs {
    pub scheduler: SchedulerHandle,
    pub node_server: ActorRef<NodeServerMessage>,
    pub heartbeat: Duration,
    pub lost_after: Duration,
}

#[derive(RactorMessage)]
pub enum WatcherMsg {
    Discovered {
        cell: ActorCell,
        info: WorkerInfo,
    },
    Heartbeat,
    Pong(ActorId),
    /// A worker's current description, read with the heartbeat.
    Refreshed(ActorId, WorkerInfo),
    PingFailed(ActorId),
    NodeDown(u64),
    Snapshot(RpcReplyPort<Vec<RemoteWorker>>),
    /// The scheduler was restarted: register every known worker again.
    Reannounce,
}

/// A remote worker as `cluster status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteWorker {
    pub id: String,
    pub node: String,
    pub node_id: u64,
    pub last_heartbeat_ms: f64,
}

struct Remote {
    info: WorkerInfo,
    actor: ActorRef<WorkerMsg>,
    last_ok: Instant,
    pinging: bool,
}

pub struct WatcherState {
    args: WatcherArgs,
    remotes: HashMap<ActorId, Remote>,
    pending: HashSet<ActorId>,
}

pub struct ClusterWatcher;

/// Forwards node-session events to the watcher.
struct NodeEvents(ActorRef<WatcherMsg>);

impl NodeEventSubscription for NodeEvents {
    fn node_session_opened(&self, _: NodeServerSessionInformation) {}
    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.cast(WatcherMsg::NodeDown(ses.node_id));
    }
    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        tracing::info!(node_id = ses.node_id, peer = %ses.peer_addr, "a node authenticated");
    }
}

impl ClusterWatcher {
    fn discover(myself: &ActorRef<WatcherMsg>, st: &mut WatcherState, cells: Vec<ActorCell>) {
        for cell in cells {
            let id = cell.get_id();
            if id.is_local() || st.remotes.contains_key(&id) || !st.pending.insert(id) {
                continue;
            }
            let me = myself.clone();
            let worker: ActorRef<WorkerMsg> = cell.clone().into();
            tokio::spawn(async move {
                match call_t!(worker, WorkerMsg::Info, 2_000) {
                    Ok(info) => {
                        let _ = me.cast(WatcherMsg::Discovered { cell, info });
                    }
                    Err(e) => {
                        tracing::warn!(actor = %id, error = %e, "a remote worker did not describe itself");
                        let _ = me.cast(WatcherMsg::PingFailed(id));
                    }
                }
            });
        }
    }

    fn lose(st: &mut WatcherState, id: ActorId, why: &str) {
        if let Some(r) = st.remotes.remove(&id) {
            tracing::warn!(worker = %r.info.id, node = %r.info.node, why, "remote worker lost");
            st.args.scheduler.cast(SchedulerMsg::WorkerDown(r.info.id));
        }
    }

    /// Stops our session with a node (a silent peer would otherwise keep it open).
    fn cut(st: &WatcherState, node_id: u64) {
        let server = st.args.node_server.clone();
        tokio::spawn(async move {
            if let Ok(sessions) = call_t!(server, NodeServerMessage::GetSessions, 2_000)
                && let Some(s) = sessions.get(&node_id)
            {
                tracing::warn!(node_id, peer = %s.peer_addr, "cutting the session of a silent node");
                s.actor.stop(Some("heartbeat lost".into()));
            }
        });
    }
}

impl Actor for ClusterWatcher {
    type Msg = WatcherMsg;
    type State = WatcherState;
    type Arguments = WatcherArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<WatcherMsg>,
        args: WatcherArgs,
    ) -> Result<WatcherState, ActorProcessingErr> {
        ractor::pg::monitor(WORKER_GROUP.into(), myself.get_cell());
        args.node_server
            .cast(NodeServerMessage::SubscribeToEvents {
                id: "cluster-watcher".into(),
                subscription: Box::new(NodeEvents(myself.clone())),
            })?;
        myself.send_interval(args.heartbeat, || WatcherMsg::Heartbeat);
        let mut st = WatcherState {
            args,
            remotes: HashMap::new(),
            pending: HashSet::new(),
        };
        Self::discover(
            &myself,
            &mut st,
            ractor::pg::get_members(&WORKER_GROUP.into()),
        );
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<WatcherMsg>,
        msg: WatcherMsg,
        st: &mut WatcherState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WatcherMsg::Discovered { cell, info } => {
                let id = cell.get_id();
                st.pending.remove(&id);
                if info.capacity == 0 {
                    return Ok(()); // a malformed announcement
                }
                tracing::info!(worker = %info.id, node = %info.node, "remote worker joined");
                let actor: ActorRef<WorkerMsg> = cell.into();
                st.args
                    .scheduler
                    .cast(SchedulerMsg::WorkerUp(info.clone(), actor.clone()));
                st.remotes.insert(
                    id,
                    Remote {
                        info,
                        actor,
                        last_ok: Instant::now(),
                        pinging: false,
                    },
                );
            }
            WatcherMsg::Reannounce => {
                for r in st.remotes.values() {
                    st.args
                        .scheduler
                        .cast(SchedulerMsg::WorkerUp(r.info.clone(), r.actor.clone()));
                }
            }
            WatcherMsg::Heartbeat => {
                let now = Instant::now();
                let lost: Vec<ActorId> = st
                    .remotes
                    .iter()
                    .filter(|(_, r)| now.duration_since(r.last_ok) > st.args.lost_after)
                    .map(|(id, _)| *id)
                    .collect();
                for id in lost {
                    Self::lose(st, id, "no heartbeat");
                    Self::cut(st, id.node());
                }
                let timeout = st.args.heartbeat.max(Duration::from_millis(200)) * 2;
                for (id, r) in st.remotes.iter_mut().filter(|(_, r)| !r.pinging) {
                    r.pinging = true;
                    let (id, me, worker) = (*id, myself.clone(), r.actor.clone());
                    tokio::spawn(async move {
                        let ok = matches!(
                            worker.call(WorkerMsg::Ping, Some(timeout)).await,
                            Ok(ractor::rpc::CallResult::Success(_))
                        );
                        let _ = me.cast(if ok {
                            WatcherMsg::Pong(id)
                        } else {
                            WatcherMsg::PingFailed(id)
                        });
                        // Models loaded later show up here; a worker that does not
                        // answer is judged by the ping alone.
                        if ok
                            && let Ok(ractor::rpc::CallResult::Success(info)) =
                                worker.call(WorkerMsg::Info, Some(timeout)).await
                        {
                            let _ = me.cast(WatcherMsg::Refreshed(id, info));
                        }
                    });
                }
            }
            WatcherMsg::Pong(id) => {
                if let Some(r) = st.remotes.get_mut(&id) {
                    r.last_ok = Instant::now();
                    r.pinging = false;
                }
            }
            WatcherMsg::Refreshed(id, info) => {
                if let Some(r) = st.remotes.get_mut(&id)
                    && r.info != info
                    && info.capacity > 0
                    && info.id == r.info.id
                {
                    tracing::info!(
                        worker = %info.id,
                        models = ?info.capabilities.models,
                        "remote worker capabilities changed"
                    );
                    r.info = info.clone();
                    st.args
                        .scheduler
                        .cast(SchedulerMsg::WorkerUp(info, r.actor.clone()));
                }
            }
            WatcherMsg::PingFailed(id) => {
                st.pending.remove(&id);
                if let Some(r) = st.remotes.get_mut(&id) {
                    r.pinging = false;
                }
            }
            WatcherMsg::NodeDown(node_id) => {
                let gone: Vec<ActorId> = st
                    .remotes
                    .keys()
                    .filter(|id| id.node() == node_id)
                    .copied()
                    .collect();
                for id in gone {
                    Self::lose(st, id, "node disconnected");
                }
            }
            WatcherMsg::Snapshot(reply) => {
                let now = Instant::now();
                let mut list: Vec<RemoteWorker> = st
                    .remotes
                    .iter()
                    .map(|(id, r)| RemoteWorker {
                        id: r.info.id.to_string(),
                        node: r.info.node.clone(),
                        node_id: id.node(),
                        last_heartbeat_ms: now.duration_since(r.last_ok).as_secs_f64() * 1e3,
                    })
                    .collect();
                list.sort_by(|a, b| a.id.cmp(&b.id));
                let _ = reply.send(list);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<WatcherMsg>,
        event: SupervisionEvent,
        st: &mut WatcherState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ProcessGroupChanged(change) = event {
            match change {
                GroupChangeMessage::Join(_, group, cells) if group == WORKER_GROUP => {
                    Self::discover(&myself, st, cells)
                }
                GroupChangeMessage::Leave(_, group, cells) if group == WORKER_GROUP => {
                    for cell in cells {
                        Self::lose(st, cell.get_id(), "left the group");
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}
