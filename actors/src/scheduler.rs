//! Scheduler: matches streams that have a fresh frame with workers that have free
//! capacity. It never carries frame bytes: it tells a stream which worker to use
//! (`Assign`) and the stream sends the job itself.
//!
//! Who sends to it: stream actors (`Ready`, `Declined`), job tasks
//! (`JobFinished`), worker registration (`WorkerUp`/`WorkerDown`, local or from
//! the cluster), pages (`Snapshot`). Supervised by the control node's root
//! (`src/control/root.rs`); a restart rebuilds its view: the root asks the
//! worker pool, the cluster watcher and every stream to announce themselves
//! again, and streams also re-announce when the `SchedulerHandle`'s
//! generation changed since they last told it.
//!
//! Rules (DESIGN §4): a worker never holds a queue — capacity is the only
//! buffer; a freed worker goes, among the ready streams whose style it can
//! run, to the one that used the workers least lately ([`FairShare`]: equal
//! worker time, so expensive frames cannot starve cheap streams), then to the
//! one that has waited longest, then to the one with fewest jobs in flight;
//! several workers may serve one stream at once.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster_derive::RactorMessage;
use serde::Serialize;
use tokio::time::Instant;

use crate::fair_share::FairShare;
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
    /// Size of the waiting frame (back-pressure per node).
    pub frame_bytes: u64,
}

/// Limits of the scheduler.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerConfig {
    /// Bytes of frames in flight to one node at most (ractor_cluster has no
    /// back-pressure of its own).
    pub max_bytes_in_flight_per_node: u64,
    /// A job neither finished nor declined after this is taken back: its
    /// `Assign` reached a stream actor that stopped or restarted before
    /// handling it (a stream's own job tasks always report within their
    /// deadline, so this is longer than the job deadline).
    pub job_lease: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_bytes_in_flight_per_node: 64 * 1024 * 1024,
            job_lease: Duration::from_secs(20),
        }
    }
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
        /// Round trip as the stream saw it.
        elapsed: Duration,
        /// Processing time the worker reported (0 when it failed).
        process_us: u32,
        ok: bool,
    },
    /// The stream had nothing to send when assigned (its frame was taken).
    Declined {
        worker_id: WorkerId,
        job_id: JobId,
    },
    Snapshot(RpcReplyPort<SchedulerSnapshot>),
    /// Fault injection for the supervision tests: panics the scheduler.
    Crash,
    /// Its timer after keeping a worker free for a stream between frames
    /// (see `fair_share`): match again.
    Redispatch,
    /// Its timer: take back jobs whose lease ran out.
    Reap,
}

/// The scheduler as everyone else holds it: the root swaps a restarted
/// scheduler in, so no stream, job or watcher keeps talking to a dead one. A
/// message sent during the restart is lost; the restart asks streams and
/// workers to announce themselves again.
pub type SchedulerHandle = crate::current::Current<SchedulerMsg>;

/// What a worker is doing, as the dashboard and `/metrics` show it.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Registered, no job in flight.
    #[default]
    Idle,
    /// At least one job in flight.
    Busy,
    /// Gone from the cluster a moment ago (the dashboard remembers it a
    /// while; the scheduler never reports it).
    Lost,
}

impl WorkerState {
    pub const ALL: [WorkerState; 3] = [WorkerState::Busy, WorkerState::Idle, WorkerState::Lost];

    /// The word shown and used as the `state` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Busy => "busy",
            Self::Lost => "lost",
        }
    }
}

impl std::fmt::Display for WorkerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the dashboard and `cluster status` show of one worker.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerSnapshot {
    pub id: String,
    pub node: String,
    pub processor: String,
    pub device: String,
    /// Models the worker has loaded (diffusion model ids, or the neural-style network).
    pub models: Vec<String>,
    /// Text prompts run natively (diffusion) rather than mapped to a preset.
    pub prompts: bool,
    pub capacity: u32,
    pub in_flight: u32,
    pub state: WorkerState,
    pub jobs_done: u64,
    pub jobs_failed: u64,
    pub job_p50_ms: f64,
    /// Fraction of the time since it joined that it had a job.
    pub busy_fraction: f64,
    /// Time with a job in flight since it joined, ms (for utilisation over a window).
    pub busy_ms_total: f64,
    pub seconds_since_join: f64,
    /// Job round trip minus processing over the last jobs: the cost of the hop
    /// to the worker (local channel or cluster link), ms.
    pub overhead_p50_ms: f64,
    pub overhead_p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReadySnapshot {
    pub stream_id: i64,
    pub waiting_ms: f64,
    pub needs: String,
}

/// Worker time one stream used.
#[derive(Debug, Clone, Serialize)]
pub struct StreamUsageSnapshot {
    pub stream_id: i64,
    /// Worker seconds used lately (decaying over a few seconds).
    pub recent_worker_secs: f64,
    /// Worker seconds since the stream started.
    pub total_worker_secs: f64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct SchedulerSnapshot {
    pub workers: Vec<WorkerSnapshot>,
    pub ready: Vec<ReadySnapshot>,
    /// Worker time per stream, most used first.
    pub streams: Vec<StreamUsageSnapshot>,
    pub jobs_dispatched: u64,
    /// Bytes of frames in flight, per node.
    pub node_bytes_in_flight: Vec<(String, u64)>,
}

/// A job the scheduler assigned and has not heard the end of.
struct Job {
    bytes: u64,
    stream: StreamId,
    assigned: Instant,
}

struct WorkerEntry {
    info: WorkerInfo,
    actor: ActorRef<WorkerMsg>,
    /// Jobs in flight.
    jobs: HashMap<JobId, Job>,
    joined: Instant,
    /// When it last got a job (idle workers take turns).
    last_assigned: Option<Instant>,
    /// Start of the current busy period (some job in flight).
    busy_since: Option<Instant>,
    busy_total: Duration,
    done: u64,
    failed: u64,
    recent_ms: VecDeque<f64>,
    recent_overhead_us: VecDeque<u32>,
}

impl WorkerEntry {
    fn free(&self) -> bool {
        (self.jobs.len() as u32) < self.info.capacity
    }

    fn busy_time(&self, now: Instant) -> Duration {
        self.busy_total + self.busy_since.map_or(Duration::ZERO, |s| now - s)
    }

    fn busy_fraction(&self, now: Instant) -> f64 {
        let total = now.duration_since(self.joined).as_secs_f64();
        if total <= 0.0 {
            0.0
        } else {
            (self.busy_time(now).as_secs_f64() / total).min(1.0)
        }
    }
}

pub struct SchedulerState {
    config: SchedulerConfig,
    workers: HashMap<WorkerId, WorkerEntry>,
    ready: Vec<ReadyStream>,
    /// Bytes in flight per node.
    node_bytes: HashMap<String, u64>,
    /// Worker time per stream (fair order of the ready streams).
    usage: FairShare,
    /// A `Redispatch` is on its way.
    redispatch_pending: bool,
    next_job: u64,
    dispatched: u64,
}

pub struct Scheduler;

impl Actor for Scheduler {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = SchedulerConfig;

    async fn pre_start(
        &self,
        myself: ActorRef<SchedulerMsg>,
        config: SchedulerConfig,
    ) -> Result<SchedulerState, ActorProcessingErr> {
        myself.send_interval(Duration::from_secs(1), || SchedulerMsg::Reap);
        Ok(SchedulerState {
            config,
            workers: HashMap::new(),
            ready: Vec::new(),
            node_bytes: HashMap::new(),
            usage: FairShare::default(),
            redispatch_pending: false,
            next_job: 1,
            dispatched: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SchedulerMsg>,
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
                st.usage
                    .saw_ready(r.stream_id, r.needs.clone(), Instant::now());
                st.ready.retain(|e| e.stream_id != r.stream_id);
                st.ready.push(r);
            }
            SchedulerMsg::StreamGone(id) => {
                st.ready.retain(|e| e.stream_id != id);
                st.usage.forget(id);
                // An Assign it never handled would hold its worker forever; a
                // job it did send ends with a JobFinished that finds nothing.
                reclaim(st, |job| job.stream == id, "stream_gone");
            }
            SchedulerMsg::Reap => {
                let lease = st.config.job_lease;
                reclaim(st, |job| job.assigned.elapsed() > lease, "lease_expired");
            }
            SchedulerMsg::WorkerUp(info, actor) => {
                // The same worker again (the watcher re-reads `Info` so models loaded
                // later are advertised, or re-announces after a restart): take its new
                // description and keep its jobs in flight and its counters.
                if let Some(w) = st.workers.get_mut(&info.id)
                    && w.actor.get_id() == actor.get_id()
                {
                    if w.info != info {
                        tracing::info!(
                            worker = %info.id,
                            models = ?info.capabilities.models,
                            capacity = info.capacity,
                            "worker capabilities updated"
                        );
                        w.info = info;
                    }
                    dispatch(st);
                    return Ok(());
                }
                // A different actor under a known id (a restarted process): the old
                // one's jobs are lost, as with `WorkerDown`; free their bytes.
                if let Some(old) = st.workers.remove(&info.id) {
                    let freed: u64 = old.jobs.values().map(|j| j.bytes).sum();
                    if let Some(b) = st.node_bytes.get_mut(&old.info.node) {
                        *b = b.saturating_sub(freed);
                    }
                }
                tracing::info!(worker = %info.id, node = %info.node, capacity = info.capacity, "worker up");
                let now = Instant::now();
                st.workers.insert(
                    info.id.clone(),
                    WorkerEntry {
                        info,
                        actor,
                        jobs: HashMap::new(),
                        joined: now,
                        last_assigned: None,
                        busy_since: None,
                        busy_total: Duration::ZERO,
                        done: 0,
                        failed: 0,
                        recent_ms: VecDeque::new(),
                        recent_overhead_us: VecDeque::new(),
                    },
                );
                metrics::gauge!("dreamstream_workers").set(st.workers.len() as f64);
            }
            SchedulerMsg::WorkerDown(id) => {
                if let Some(w) = st.workers.remove(&id) {
                    tracing::warn!(worker = %id, "worker down; its jobs are lost, streams go on");
                    let freed: u64 = w.jobs.values().map(|j| j.bytes).sum();
                    if let Some(b) = st.node_bytes.get_mut(&w.info.node) {
                        *b = b.saturating_sub(freed);
                    }
                }
                metrics::gauge!("dreamstream_workers").set(st.workers.len() as f64);
            }
            SchedulerMsg::JobFinished {
                worker_id,
                job_id,
                elapsed,
                process_us,
                ok,
            } => {
                if let Some(w) = st.workers.get_mut(&worker_id) {
                    if let Some(job) = release(w, &mut st.node_bytes, job_id) {
                        // What the worker spent on it (a failed job: the round trip).
                        let cost = if process_us > 0 {
                            Duration::from_micros(process_us as u64)
                        } else {
                            elapsed
                        };
                        st.usage.charge(job.stream, cost, Instant::now());
                    }
                    if ok {
                        w.done += 1;
                    } else {
                        w.failed += 1;
                    }
                    w.recent_ms.push_back(elapsed.as_secs_f64() * 1e3);
                    if w.recent_ms.len() > 100 {
                        w.recent_ms.pop_front();
                    }
                    if ok {
                        let overhead =
                            (elapsed.as_micros() as u64).saturating_sub(process_us as u64);
                        w.recent_overhead_us
                            .push_back(overhead.min(u32::MAX as u64) as u32);
                        if w.recent_overhead_us.len() > 1000 {
                            w.recent_overhead_us.pop_front();
                        }
                    }
                }
            }
            SchedulerMsg::Declined { worker_id, job_id } => {
                if let Some(w) = st.workers.get_mut(&worker_id) {
                    release(w, &mut st.node_bytes, job_id);
                }
            }
            SchedulerMsg::Snapshot(reply) => {
                let _ = reply.send(snapshot(st));
                return Ok(());
            }
            SchedulerMsg::Crash => panic!("injected fault: scheduler crash"),
            SchedulerMsg::Redispatch => st.redispatch_pending = false,
        }
        if dispatch(st) && !st.redispatch_pending {
            st.redispatch_pending = true;
            myself.send_after(crate::fair_share::HOLD, || SchedulerMsg::Redispatch);
        }
        Ok(())
    }
}

/// Takes back the jobs `which` selects, from every worker.
fn reclaim(st: &mut SchedulerState, which: impl Fn(&Job) -> bool, why: &'static str) {
    for w in st.workers.values_mut() {
        let lost: Vec<JobId> = w
            .jobs
            .iter()
            .filter(|(_, j)| which(j))
            .map(|(id, _)| *id)
            .collect();
        for job in lost {
            tracing::debug!(worker = %w.info.id, job = %job, why, "job taken back");
            metrics::counter!("dreamstream_jobs_reclaimed_total", "why" => why).increment(1);
            release(w, &mut st.node_bytes, job);
        }
    }
}

/// Forgets a job of `w` and frees its bytes; the job, if it was known.
fn release(w: &mut WorkerEntry, node_bytes: &mut HashMap<String, u64>, job: JobId) -> Option<Job> {
    let removed = w.jobs.remove(&job)?;
    let bytes = removed.bytes;
    if let Some(b) = node_bytes.get_mut(&w.info.node) {
        *b = b.saturating_sub(bytes);
    }
    if w.jobs.is_empty()
        && let Some(since) = w.busy_since.take()
    {
        w.busy_total += since.elapsed();
    }
    Some(removed)
}

/// Pairs free workers with waiting streams until one side runs out, or
/// until the rest must wait for a stream between frames; true then (match
/// again a little later).
fn dispatch(st: &mut SchedulerState) -> bool {
    busy_gauge(st);
    loop {
        let (worker_id, stream_index) =
            match next_match(&st.workers, &st.ready, &st.node_bytes, &st.usage, st.config) {
                Match::Found(worker, stream) => (worker, stream),
                Match::Held => {
                    busy_gauge(st);
                    return true;
                }
                Match::None => break,
            };
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
            let now = Instant::now();
            if w.jobs.is_empty() {
                w.busy_since = Some(now);
            }
            w.last_assigned = Some(now);
            w.jobs.insert(
                job_id,
                Job {
                    bytes: ready.frame_bytes,
                    stream: ready.stream_id,
                    assigned: now,
                },
            );
            *st.node_bytes.entry(w.info.node.clone()).or_default() += ready.frame_bytes;
            st.dispatched += 1;
        }
    }
    busy_gauge(st);
    false
}

/// What [`next_match`] found.
enum Match {
    /// This worker for the ready stream at this index.
    Found(WorkerId, usize),
    /// A pair exists, but its stream used far more than one between frames:
    /// wait for that one a little.
    Held,
    None,
}

fn busy_gauge(st: &SchedulerState) {
    let busy = st.workers.values().filter(|w| !w.jobs.is_empty()).count();
    metrics::gauge!("dreamstream_workers_busy").set(busy as f64);
}

/// The next (worker, ready stream) pair: among workers with free capacity the
/// least loaded one (ties: the one that waited longest for work), and for it
/// the eligible stream that used the workers least lately
/// ([`FairShare::recent`]; ties: the one that waited longest, then the one
/// with fewest jobs in flight).
/// A stream is eligible if the worker can run its style and the worker's node
/// stays under its bytes-in-flight cap.
fn next_match(
    workers: &HashMap<WorkerId, WorkerEntry>,
    ready: &[ReadyStream],
    node_bytes: &HashMap<String, u64>,
    usage: &FairShare,
    config: SchedulerConfig,
) -> Match {
    let now = Instant::now();
    // Streams with a job in flight or a frame waiting are not between frames.
    let busy: std::collections::HashSet<StreamId> = workers
        .values()
        .flat_map(|w| w.jobs.values().map(|j| j.stream))
        .chain(ready.iter().map(|r| r.stream_id))
        .collect();
    let mut held = false;
    let recent = |r: &ReadyStream| usage.recent(r.stream_id, now);
    let mut free: Vec<&WorkerEntry> = workers.values().filter(|w| w.free()).collect();
    free.sort_by(|a, b| {
        a.jobs
            .len()
            .cmp(&b.jobs.len())
            .then_with(|| a.last_assigned.cmp(&b.last_assigned))
            .then_with(|| a.info.id.cmp(&b.info.id))
    });
    for w in free {
        let in_flight = node_bytes.get(&w.info.node).copied().unwrap_or(0);
        let best = ready
            .iter()
            .enumerate()
            .filter(|(_, r)| r.needs.satisfied_by(&w.info.capabilities))
            .filter(|(_, r)| in_flight + r.frame_bytes <= config.max_bytes_in_flight_per_node)
            .min_by(|(_, a), (_, b)| {
                recent(a)
                    .total_cmp(&recent(b))
                    .then(a.since.cmp(&b.since))
                    .then(a.in_flight.cmp(&b.in_flight))
            });
        if let Some((i, r)) = best {
            let between_frames = usage.streams().filter(|s| !busy.contains(s));
            if usage.hold_for_another(r.stream_id, between_frames, &w.info.capabilities, now) {
                held = true;
                continue;
            }
            return Match::Found(w.info.id.clone(), i);
        }
    }
    if held { Match::Held } else { Match::None }
}

fn snapshot(st: &SchedulerState) -> SchedulerSnapshot {
    let now = Instant::now();
    let mut workers: Vec<WorkerSnapshot> = st
        .workers
        .values()
        .map(|w| {
            let mut times: Vec<f64> = w.recent_ms.iter().copied().collect();
            times.sort_by(f64::total_cmp);
            let mut over: Vec<u32> = w.recent_overhead_us.iter().copied().collect();
            over.sort_unstable();
            let pct = |p: f64| -> f64 {
                if over.is_empty() {
                    0.0
                } else {
                    over[((over.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
                }
            };
            WorkerSnapshot {
                id: w.info.id.to_string(),
                node: w.info.node.clone(),
                processor: w.info.capabilities.processor.as_str().to_string(),
                device: w.info.capabilities.device.clone(),
                models: w.info.capabilities.models.clone(),
                prompts: w.info.capabilities.prompts,
                capacity: w.info.capacity,
                in_flight: w.jobs.len() as u32,
                state: if w.jobs.is_empty() {
                    WorkerState::Idle
                } else {
                    WorkerState::Busy
                },
                jobs_done: w.done,
                jobs_failed: w.failed,
                job_p50_ms: times.get(times.len() / 2).copied().unwrap_or(0.0),
                busy_fraction: w.busy_fraction(now),
                busy_ms_total: w.busy_time(now).as_secs_f64() * 1e3,
                seconds_since_join: now.duration_since(w.joined).as_secs_f64(),
                overhead_p50_ms: pct(0.5),
                overhead_p99_ms: pct(0.99),
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
        streams: {
            let mut v: Vec<StreamUsageSnapshot> = st
                .usage
                .streams()
                .map(|id| StreamUsageSnapshot {
                    stream_id: id.0,
                    recent_worker_secs: st.usage.recent(id, now),
                    total_worker_secs: st.usage.total(id).as_secs_f64(),
                })
                .collect();
            v.sort_by(|a, b| b.total_worker_secs.total_cmp(&a.total_worker_secs));
            v
        },
        jobs_dispatched: st.dispatched,
        node_bytes_in_flight: {
            let mut v: Vec<(String, u64)> =
                st.node_bytes.iter().map(|(n, b)| (n.clone(), *b)).collect();
            v.sort();
            v
        },
    }
}
