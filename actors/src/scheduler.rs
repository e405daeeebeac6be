//! Scheduler: matches streams that have a fresh frame with workers that have free
//! capacity. It never carries frame bytes: it tells a stream which worker to use
//! (`Assign`) and the stream sends the job itself.
//!
//! Who sends to it: stream actors (`Ready`, `Declined`), job tasks
//! (`JobFinished`), worker registration (`WorkerUp`/`WorkerDown`, local or from
//! the cluster), pages (`Snapshot`). Supervised by the control node's root; a
//! restart rebuilds its view from re-announcements.
//!
//! Rules (DESIGN §4): a worker never holds a queue — capacity is the only
//! buffer; a freed worker goes to the ready stream that has waited longest
//! (ties: fewest jobs in flight) among the streams whose style it can run;
//! several workers may serve one stream at once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster_derive::RactorMessage;
use serde::Serialize;
use tokio::time::Instant;

use crate::ids::{JobId, StreamId, WorkerId};
use crate::stream::StreamMsg;
use crate::worker::{Requirement, WorkerInfo, WorkerMsg};

/// A stream with a fresh frame, waiting for a worker.
#[derive(Clone)]
pub struct ReadyStream {
    pub stream_id: StreamId,
    pub stream: ActorRef<StreamMsg>,
    /// When its waiting frame arrived.
    pub since: Instant,
    pub needs: Requirement,
    pub in_flight: u32,
}

#[derive(RactorMessage)]
pub enum SchedulerMsg {
    Ready(ReadyStream),
    StreamGone(StreamId),
    WorkerUp(WorkerInfo, ActorRef<WorkerMsg>),
    WorkerDown(WorkerId),
    JobFinished {
        worker_id: WorkerId,
        job_id: JobId,
        elapsed: Duration,
        ok: bool,
    },
    /// The stream had nothing to send when assigned (its frame was taken).
    Declined {
        worker_id: WorkerId,
        job_id: JobId,
    },
    Snapshot(RpcReplyPort<SchedulerSnapshot>),
}

/// What the dashboard and `cluster status` show of one worker.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerSnapshot {
    pub id: String,
    pub node: String,
    pub processor: String,
    pub device: String,
    pub capacity: u32,
    pub in_flight: u32,
    pub state: &'static str,
    pub jobs_done: u64,
    pub jobs_failed: u64,
    pub job_p50_ms: f64,
    /// Fraction of the time since it joined that it had a job.
    pub busy_fraction: f64,
    pub seconds_since_join: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReadySnapshot {
    pub stream_id: i64,
    pub waiting_ms: f64,
    pub needs: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct SchedulerSnapshot {
    pub workers: Vec<WorkerSnapshot>,
    pub ready: Vec<ReadySnapshot>,
    pub jobs_dispatched: u64,
}

struct WorkerEntry {
    info: WorkerInfo,
    actor: ActorRef<WorkerMsg>,
    jobs: HashSet<JobId>,
    joined: Instant,
    /// Start of the current busy period (some job in flight).
    busy_since: Option<Instant>,
    busy_total: Duration,
    done: u64,
    failed: u64,
    recent_ms: VecDeque<f64>,
}

impl WorkerEntry {
    fn free(&self) -> bool {
        (self.jobs.len() as u32) < self.info.capacity
    }

    fn busy_fraction(&self, now: Instant) -> f64 {
        let current = self.busy_since.map_or(Duration::ZERO, |s| now - s);
        let total = now.duration_since(self.joined).as_secs_f64();
        if total <= 0.0 {
            0.0
        } else {
            ((self.busy_total + current).as_secs_f64() / total).min(1.0)
        }
    }
}

pub struct SchedulerState {
    workers: HashMap<WorkerId, WorkerEntry>,
    ready: Vec<ReadyStream>,
    next_job: u64,
    dispatched: u64,
}

pub struct Scheduler;

impl Actor for Scheduler {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<SchedulerMsg>,
        _: (),
    ) -> Result<SchedulerState, ActorProcessingErr> {
        Ok(SchedulerState {
            workers: HashMap::new(),
            ready: Vec::new(),
            next_job: 1,
            dispatched: 0,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<SchedulerMsg>,
        msg: SchedulerMsg,
        st: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SchedulerMsg::Ready(r) => {
                if !st
                    .workers
                    .values()
                    .any(|w| r.needs.satisfied_by(&w.info.capabilities))
                {
                    let _ = r.stream.cast(StreamMsg::Unschedulable(r.needs.describe()));
                }
                st.ready.retain(|e| e.stream_id != r.stream_id);
                st.ready.push(r);
            }
            SchedulerMsg::StreamGone(id) => st.ready.retain(|e| e.stream_id != id),
            SchedulerMsg::WorkerUp(info, actor) => {
                tracing::info!(worker = %info.id, node = %info.node, capacity = info.capacity, "worker up");
                let now = Instant::now();
                st.workers.insert(
                    info.id.clone(),
                    WorkerEntry {
                        info,
                        actor,
                        jobs: HashSet::new(),
                        joined: now,
                        busy_since: None,
                        busy_total: Duration::ZERO,
                        done: 0,
                        failed: 0,
                        recent_ms: VecDeque::new(),
                    },
                );
                metrics::gauge!("dreamstream_workers").set(st.workers.len() as f64);
            }
            SchedulerMsg::WorkerDown(id) => {
                if st.workers.remove(&id).is_some() {
                    tracing::warn!(worker = %id, "worker down; its jobs are lost, streams go on");
                }
                metrics::gauge!("dreamstream_workers").set(st.workers.len() as f64);
            }
            SchedulerMsg::JobFinished {
                worker_id,
                job_id,
                elapsed,
                ok,
            } => {
                if let Some(w) = st.workers.get_mut(&worker_id) {
                    release(w, job_id);
                    if ok {
                        w.done += 1;
                    } else {
                        w.failed += 1;
                    }
                    w.recent_ms.push_back(elapsed.as_secs_f64() * 1e3);
                    if w.recent_ms.len() > 100 {
                        w.recent_ms.pop_front();
                    }
                }
            }
            SchedulerMsg::Declined { worker_id, job_id } => {
                if let Some(w) = st.workers.get_mut(&worker_id) {
                    release(w, job_id);
                }
            }
            SchedulerMsg::Snapshot(reply) => {
                let _ = reply.send(snapshot(st));
                return Ok(());
            }
        }
        dispatch(st);
        Ok(())
    }
}

fn release(w: &mut WorkerEntry, job: JobId) {
    if w.jobs.remove(&job)
        && w.jobs.is_empty()
        && let Some(since) = w.busy_since.take()
    {
        w.busy_total += since.elapsed();
    }
}

/// Pairs free workers with waiting streams until one side runs out.
fn dispatch(st: &mut SchedulerState) {
    busy_gauge(st);
    while let Some((worker_id, stream_index)) = next_match(&st.workers, &st.ready) {
        let ready = st.ready.swap_remove(stream_index);
        let job_id = JobId(st.next_job);
        st.next_job += 1;
        let w = st
            .workers
            .get_mut(&worker_id)
            .expect("next_match returns a known worker");
        let assigned = ready.stream.cast(StreamMsg::Assign {
            worker: w.actor.clone(),
            worker_id: worker_id.clone(),
            job_id,
        });
        if assigned.is_ok() {
            if w.jobs.is_empty() {
                w.busy_since = Some(Instant::now());
            }
            w.jobs.insert(job_id);
            st.dispatched += 1;
        }
    }
    busy_gauge(st);
}

fn busy_gauge(st: &SchedulerState) {
    let busy = st.workers.values().filter(|w| !w.jobs.is_empty()).count();
    metrics::gauge!("dreamstream_workers_busy").set(busy as f64);
}

/// The next (worker, ready stream) pair: among workers with free capacity the
/// least loaded one, and for it the eligible stream that has waited longest
/// (ties: fewest jobs in flight).
fn next_match(
    workers: &HashMap<WorkerId, WorkerEntry>,
    ready: &[ReadyStream],
) -> Option<(WorkerId, usize)> {
    let mut free: Vec<&WorkerEntry> = workers.values().filter(|w| w.free()).collect();
    free.sort_by(|a, b| {
        a.jobs
            .len()
            .cmp(&b.jobs.len())
            .then_with(|| a.info.id.cmp(&b.info.id))
    });
    for w in free {
        let best = ready
            .iter()
            .enumerate()
            .filter(|(_, r)| r.needs.satisfied_by(&w.info.capabilities))
            .min_by(|(_, a), (_, b)| a.since.cmp(&b.since).then(a.in_flight.cmp(&b.in_flight)));
        if let Some((i, _)) = best {
            return Some((w.info.id.clone(), i));
        }
    }
    None
}

fn snapshot(st: &SchedulerState) -> SchedulerSnapshot {
    let now = Instant::now();
    let mut workers: Vec<WorkerSnapshot> = st
        .workers
        .values()
        .map(|w| {
            let mut times: Vec<f64> = w.recent_ms.iter().copied().collect();
            times.sort_by(f64::total_cmp);
            WorkerSnapshot {
                id: w.info.id.to_string(),
                node: w.info.node.clone(),
                processor: w.info.capabilities.processor.as_str().to_string(),
                device: w.info.capabilities.device.clone(),
                capacity: w.info.capacity,
                in_flight: w.jobs.len() as u32,
                state: if w.jobs.is_empty() { "idle" } else { "busy" },
                jobs_done: w.done,
                jobs_failed: w.failed,
                job_p50_ms: times.get(times.len() / 2).copied().unwrap_or(0.0),
                busy_fraction: w.busy_fraction(now),
                seconds_since_join: now.duration_since(w.joined).as_secs_f64(),
            }
        })
        .collect();
    workers.sort_by(|a, b| a.id.cmp(&b.id));
    SchedulerSnapshot {
        workers,
        ready: st
            .ready
            .iter()
            .map(|r| ReadySnapshot {
                stream_id: r.stream_id.0,
                waiting_ms: now.duration_since(r.since).as_secs_f64() * 1e3,
                needs: r.needs.describe(),
            })
            .collect(),
        jobs_dispatched: st.dispatched,
    }
}
