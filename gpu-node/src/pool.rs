//! WorkerPool: supervises a process's worker actors and keeps them announced.
//!
//! Who sends to it: its owner (the control node's root, or `gpu-node serve`):
//! `Workers` (the actors now), `Reannounce` (after the scheduler restarted),
//! `Drain`; and ractor's supervision events from its workers.
//! Who supervises it: the control node's root, or `run_node` on a GPU node
//! (which exits non-zero when the pool dies, so systemd restarts the node).
//!
//! A worker that panics is restarted with the same processor and identity and
//! announced again: to the scheduler directly (in-process workers), or by
//! joining the workers' process group (a GPU node; the control node's watcher
//! sees the new member). Its jobs in flight are lost; the streams go on. More
//! than `policy.max_restarts` failures of one worker within `policy.window`
//! and the pool gives up: it fails, and its own supervisor decides.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use dreamstream_actors::scheduler::{SchedulerHandle, SchedulerMsg};
use dreamstream_actors::supervisor::RestartPolicy;
use dreamstream_actors::worker::{WORKER_GROUP, WorkerInfo, WorkerMsg};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use ractor_cluster_derive::RactorMessage;
use tokio::time::Instant;

use crate::processor::Processor;
use crate::worker::{WorkerActor, WorkerArgs};

/// How the pool's workers make themselves known.
#[derive(Clone)]
pub enum Announce {
    /// In-process workers: `WorkerUp` to the scheduler.
    Scheduler(SchedulerHandle),
    /// A GPU node's workers: the cluster's workers process group.
    ProcessGroup,
}

pub struct PoolArgs {
    pub workers: Vec<(WorkerInfo, Arc<dyn Processor>)>,
    pub announce: Announce,
    pub policy: RestartPolicy,
}

#[derive(RactorMessage)]
pub enum PoolMsg {
    /// The worker actors now.
    Workers(RpcReplyPort<Vec<ActorRef<WorkerMsg>>>),
    /// Announce every worker again (the scheduler was restarted).
    Reannounce,
    /// Fault injection for the supervision tests: panics worker `i`.
    CrashWorker(usize),
}

struct Slot {
    info: WorkerInfo,
    processor: Arc<dyn Processor>,
    actor: ActorRef<WorkerMsg>,
    failures: VecDeque<Instant>,
}

pub struct PoolState {
    slots: Vec<Slot>,
    by_actor: HashMap<ActorId, usize>,
    announce: Announce,
    policy: RestartPolicy,
}

pub struct WorkerPool;

impl WorkerPool {
    async fn spawn(
        myself: &ActorRef<PoolMsg>,
        info: &WorkerInfo,
        processor: &Arc<dyn Processor>,
        announce: &Announce,
    ) -> Result<ActorRef<WorkerMsg>, ActorProcessingErr> {
        let (actor, _) = Actor::spawn_linked(
            None,
            WorkerActor,
            WorkerArgs {
                info: info.clone(),
                processor: processor.clone(),
            },
            myself.get_cell(),
        )
        .await?;
        Self::announce(announce, info, &actor);
        Ok(actor)
    }

    fn announce(announce: &Announce, info: &WorkerInfo, actor: &ActorRef<WorkerMsg>) {
        match announce {
            Announce::Scheduler(scheduler) => {
                scheduler.cast(SchedulerMsg::WorkerUp(info.clone(), actor.clone()));
            }
            Announce::ProcessGroup => {
                ractor::pg::join(WORKER_GROUP.into(), vec![actor.get_cell()]);
            }
        }
    }
}

impl Actor for WorkerPool {
    type Msg = PoolMsg;
    type State = PoolState;
    type Arguments = PoolArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<PoolMsg>,
        args: PoolArgs,
    ) -> Result<PoolState, ActorProcessingErr> {
        let mut slots = Vec::new();
        let mut by_actor = HashMap::new();
        for (info, processor) in args.workers {
            let actor = Self::spawn(&myself, &info, &processor, &args.announce).await?;
            by_actor.insert(actor.get_id(), slots.len());
            slots.push(Slot {
                info,
                processor,
                actor,
                failures: VecDeque::new(),
            });
        }
        Ok(PoolState {
            slots,
            by_actor,
            announce: args.announce,
            policy: args.policy,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<PoolMsg>,
        msg: PoolMsg,
        st: &mut PoolState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PoolMsg::Workers(reply) => {
                let _ = reply.send(st.slots.iter().map(|s| s.actor.clone()).collect());
            }
            PoolMsg::Reannounce => {
                for s in &st.slots {
                    Self::announce(&st.announce, &s.info, &s.actor);
                }
            }
            PoolMsg::CrashWorker(i) => {
                if let Some(s) = st.slots.get(i) {
                    s.actor.get_cell().kill();
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<PoolMsg>,
        event: SupervisionEvent,
        st: &mut PoolState,
    ) -> Result<(), ActorProcessingErr> {
        let dead = match &event {
            SupervisionEvent::ActorFailed(cell, _)
            | SupervisionEvent::ActorTerminated(cell, ..) => cell.get_id(),
            _ => return Ok(()),
        };
        let Some(i) = st.by_actor.remove(&dead) else {
            return Ok(());
        };
        let policy = st.policy;
        let slot = &mut st.slots[i];
        if let Announce::Scheduler(scheduler) = &st.announce {
            scheduler.cast(SchedulerMsg::WorkerDown(slot.info.id.clone()));
        }
        if !policy.allow(&mut slot.failures, Instant::now()) {
            return Err(format!(
                "worker {} failed more than {} times in {:?}; giving up",
                slot.info.id, policy.max_restarts, policy.window
            )
            .into());
        }
        tracing::error!(worker = %slot.info.id, event = ?event_text(&event), "worker died; restarting it");
        metrics::counter!("dreamstream_worker_restarts_total").increment(1);
        let actor = Self::spawn(&myself, &slot.info, &slot.processor, &st.announce).await?;
        st.by_actor.insert(actor.get_id(), i);
        st.slots[i].actor = actor;
        Ok(())
    }
}

fn event_text(event: &SupervisionEvent) -> String {
    match event {
        SupervisionEvent::ActorFailed(_, e) => format!("failed: {e}"),
        SupervisionEvent::ActorTerminated(_, _, reason) => {
            format!("terminated: {}", reason.as_deref().unwrap_or("no reason"))
        }
        _ => String::new(),
    }
}

/// The pool's workers now (empty if the pool does not answer).
pub async fn workers(pool: &ActorRef<PoolMsg>) -> Vec<ActorRef<WorkerMsg>> {
    ractor::call_t!(pool, PoolMsg::Workers, 2_000).unwrap_or_default()
}
