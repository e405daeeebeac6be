//! StreamActor: one per live stream.
//!
//! Who sends to it: the broadcaster's WebSocket session (`Frame`), the
//! [`Scheduler`](crate::scheduler) (`Assign`, `Unschedulable`), its own job
//! tasks (`JobDone`), its timers (`Tick`, `Meter`) and the supervisor (`Stop`,
//! `Reannounce` after a scheduler restart).
//! Who supervises it: the [`StreamSupervisor`](crate::supervisor), which restarts
//! it on panic with the same [`StreamShared`].
//!
//! The one-slot mailbox: a new frame replaces an unprocessed older one (counted
//! as dropped), so at most one input frame per stream waits anywhere. The
//! freshest frame is taken when a worker is assigned, not when it arrived.
//! The stream numbers its input frames itself (strictly increasing for the
//! stream's whole life, in `StreamShared`); results are delivered in that
//! order, and an older result than one already delivered is dropped. Viewer
//! count changes are announced on the tick, at most once per interval.
//! Nothing here blocks: a job runs in its own task that awaits the worker
//! with a deadline.

pub mod community;
pub mod meter;
mod shared;
pub mod slot;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef, rpc::CallResult};
use ractor_cluster_derive::RactorMessage;
use tokio::time::Instant;

use meter::{Meter, MeterConfig, Verdict};
pub use shared::{CreditState, StreamCounters, StreamShared, StreamSnapshot};
use slot::FrameSlot;

use crate::frame::{InputFrame, OutputFrame};
use crate::ids::{JobId, WorkerId};
use crate::scheduler::{ReadyStream, SchedulerHandle, SchedulerMsg};
use crate::sink::StreamEvent;
use crate::store::{EndReason, Stores};
use crate::worker::{JobReply, JobRequest, Requirement, WorkerMsg};

/// Settings of every stream actor.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// A job not answered within this is lost (the stream goes on).
    pub job_deadline: Duration,
    /// How often viewers get a latency event.
    pub stats_interval: Duration,
    /// A stream whose broadcaster has been gone this long ends.
    pub idle_timeout: Duration,
    /// Largest job sent to a remote worker (a bigger frame would drop the
    /// whole cluster link).
    pub link_frame_limit: u64,
    /// When credits are charged.
    pub meter: MeterConfig,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            job_deadline: Duration::from_secs(15),
            stats_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            link_frame_limit: 16 * 1024 * 1024,
            meter: MeterConfig::default(),
        }
    }
}

#[derive(RactorMessage)]
pub enum StreamMsg {
    /// A frame from the broadcaster (replaces an unprocessed one).
    Frame(InputFrame),
    /// From the scheduler: send the freshest frame to this worker now.
    Assign {
        worker: ActorRef<WorkerMsg>,
        worker_id: WorkerId,
        job_id: JobId,
    },
    /// From a job task.
    JobDone {
        job_id: JobId,
        outcome: JobOutcome,
    },
    /// From the scheduler: no worker can run the current style.
    Unschedulable(String),
    /// From the supervisor after the scheduler restarted: the new scheduler
    /// knows nothing, so a stream with a waiting frame announces it again.
    Reannounce,
    Tick,
    /// Time to look at the credit meter.
    Meter,
    Stop(EndReason),
    /// Fault injection for the supervision tests: panics the actor.
    Crash,
}

/// How a job ended, as seen by the stream.
#[derive(Debug)]
pub enum JobOutcome {
    Reply(JobReply),
    /// No answer within the deadline.
    Timeout,
    /// The worker is gone (stopped, disconnected node).
    WorkerGone(String),
}

struct InFlight {
    seq: u64,
    captured_ms: u64,
    received_at: Instant,
}

pub struct StreamArgs {
    pub shared: Arc<StreamShared>,
    pub scheduler: SchedulerHandle,
    pub store: Stores,
    pub config: StreamConfig,
}

pub struct StreamState {
    shared: Arc<StreamShared>,
    scheduler: SchedulerHandle,
    store: Stores,
    meter: Meter,
    config: StreamConfig,
    slot: FrameSlot,
    /// Whether the scheduler knows this stream is waiting: the generation of
    /// the scheduler that was told (a restarted one must be told again).
    announced: Option<u64>,
    /// What the stream said it needs when it last announced itself: a style
    /// change that needs another kind of worker (e.g. to diffusion while it
    /// waits for none) is announced again, or it would wait for the old kind.
    announced_needs: Option<Requirement>,
    in_flight: HashMap<JobId, InFlight>,
    /// The stream's number of the newest frame delivered (output is monotonic).
    last_delivered: Option<u64>,
    last_frame_at: Instant,
    /// (delivered at, server latency µs, processing µs) over the last interval.
    recent: VecDeque<(Instant, u32, u32)>,
    last_counts: (u64, u64, Instant),
    last_note: Option<String>,
    last_unschedulable: Option<String>,
}

pub struct StreamActor;

impl Actor for StreamActor {
    type Msg = StreamMsg;
    type State = StreamState;
    type Arguments = StreamArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<StreamMsg>,
        args: StreamArgs,
    ) -> Result<StreamState, ActorProcessingErr> {
        args.shared.set_actor(Some(myself.clone()));
        myself.send_interval(args.config.stats_interval, || StreamMsg::Tick);
        myself.cast(StreamMsg::Meter)?;
        let now = Instant::now();
        // A restarted actor goes on from what viewers already have.
        let last_delivered = args.shared.last_output().map(|f| f.seq);
        // And from the paid time already known.
        let meter = Meter::new(
            args.config.meter,
            args.shared.credit().map(|c| c.paid_until),
        );
        Ok(StreamState {
            shared: args.shared,
            scheduler: args.scheduler,
            store: args.store,
            meter,
            config: args.config,
            slot: FrameSlot::default(),
            announced: None,
            announced_needs: None,
            in_flight: HashMap::new(),
            last_delivered,
            last_frame_at: now,
            recent: VecDeque::new(),
            last_counts: (0, 0, now),
            last_note: None,
            last_unschedulable: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<StreamMsg>,
        msg: StreamMsg,
        st: &mut StreamState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            StreamMsg::Frame(mut frame) => {
                // The client's number was only for its acks: the stream numbers
                // its input itself, so a reconnecting broadcaster (counting from 1
                // again) or a client sending u64::MAX cannot stall the output.
                frame.seq = st.shared.number_input();
                st.last_frame_at = Instant::now();
                st.shared.counters.frames_in.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("dreamstream_frames_in_total").increment(1);
                let since = frame.received_at;
                let frame_bytes = frame.jpeg.len() as u64;
                if st.slot.put(frame).is_some() {
                    st.shared
                        .counters
                        .dropped_replaced
                        .fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("dreamstream_frames_dropped_total", "reason" => "replaced")
                        .increment(1);
                }
                if st.announced != Some(st.scheduler.generation())
                    || st.announced_needs.as_ref() != Some(&st.shared.requirement())
                {
                    self.announce(&myself, st, since, frame_bytes)?;
                }
            }
            StreamMsg::Assign {
                worker,
                worker_id,
                job_id,
            } => {
                st.announced = None;
                let Some(frame) = st.slot.take() else {
                    st.scheduler
                        .cast(SchedulerMsg::Declined { worker_id, job_id });
                    return Ok(());
                };
                st.last_unschedulable = None;
                // Room for the parameters and the message framing.
                let job_bytes = frame.jpeg.len() as u64 + 64 * 1024;
                if !worker.get_id().is_local() && job_bytes > st.config.link_frame_limit {
                    st.shared
                        .counters
                        .dropped_failed
                        .fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("dreamstream_frames_dropped_total", "reason" => "too_big_for_link")
                        .increment(1);
                    st.shared.tell_broadcaster(&StreamEvent::Error {
                        code: "frame_too_big".into(),
                        message: format!(
                            "frame {} ({} bytes) is larger than the cluster link allows ({} bytes)",
                            frame.seq,
                            frame.jpeg.len(),
                            st.config.link_frame_limit
                        ),
                    });
                    st.scheduler.cast(SchedulerMsg::JobFinished {
                        worker_id,
                        job_id,
                        elapsed: Duration::ZERO,
                        process_us: 0,
                        ok: false,
                    });
                    return Ok(());
                }
                st.in_flight.insert(
                    job_id,
                    InFlight {
                        seq: frame.seq,
                        captured_ms: frame.captured_ms,
                        received_at: frame.received_at,
                    },
                );
                let request = JobRequest {
                    job_id,
                    stream_id: st.shared.id,
                    seq: frame.seq,
                    params: Ok(st.shared.settings()),
                    jpeg: frame.jpeg.to_vec(),
                };
                spawn_job(
                    myself,
                    st.scheduler.clone(),
                    worker,
                    worker_id,
                    request,
                    st.config.job_deadline,
                );
            }
            StreamMsg::JobDone { job_id, outcome } => {
                let Some(job) = st.in_flight.remove(&job_id) else {
                    return Ok(());
                };
                self.finish_job(st, job, outcome);
            }
            StreamMsg::Unschedulable(needs) => {
                if st.last_unschedulable.as_deref() != Some(&needs) {
                    st.shared.tell_broadcaster(&StreamEvent::Notice {
                        message: format!(
                            "no worker can run {needs} right now: viewers keep the last frame until one joins"
                        ),
                    });
                    st.last_unschedulable = Some(needs);
                }
                // The scheduler keeps the stream in its queue; nothing else to do.
            }
            StreamMsg::Reannounce => {
                st.announced = None;
                if let Some(frame) = st.slot.peek() {
                    let (since, frame_bytes) = (frame.received_at, frame.jpeg.len() as u64);
                    self.announce(&myself, st, since, frame_bytes)?;
                }
            }
            StreamMsg::Tick => {
                self.tick(&myself, st);
                self.auto_approve(st).await;
            }
            StreamMsg::Meter => match st.meter.check(&st.shared, st.store.billing.as_ref()).await {
                Verdict::Continue(after) => {
                    myself.send_after(after, || StreamMsg::Meter);
                }
                Verdict::OutOfCredits => {
                    st.shared.tell_broadcaster(&StreamEvent::Error {
                        code: "out_of_credits".into(),
                        message: "the stream ended: no credits left for the next period".into(),
                    });
                    st.shared.mark_ending(EndReason::OutOfCredits);
                    myself.stop(Some(EndReason::OutOfCredits.as_str().to_string()));
                }
            },
            StreamMsg::Stop(reason) => {
                st.shared.mark_ending(reason);
                myself.stop(Some(reason.as_str().to_string()));
            }
            StreamMsg::Crash => panic!("injected fault: stream actor crash"),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<StreamMsg>,
        st: &mut StreamState,
    ) -> Result<(), ActorProcessingErr> {
        // Only forget the actor if it is still us (a restart may have replaced it).
        if st
            .shared
            .actor()
            .is_some_and(|a| a.get_id() == myself.get_id())
        {
            st.shared.set_actor(None);
        }
        Ok(())
    }
}

impl StreamActor {
    /// Tells the scheduler this stream has a frame waiting.
    fn announce(
        &self,
        myself: &ActorRef<StreamMsg>,
        st: &mut StreamState,
        since: Instant,
        frame_bytes: u64,
    ) -> Result<(), ActorProcessingErr> {
        st.announced = Some(st.scheduler.generation());
        let needs = st.shared.requirement();
        st.announced_needs = Some(needs.clone());
        let ready = ReadyStream {
            stream_id: st.shared.id,
            stream: myself.clone(),
            since,
            needs,
            in_flight: st.in_flight.len() as u32,
            frame_bytes,
        };
        st.scheduler.cast(SchedulerMsg::Ready(ready));
        Ok(())
    }

    fn finish_job(&self, st: &mut StreamState, job: InFlight, outcome: JobOutcome) {
        let c = &st.shared.counters;
        let failed = |reason: &'static str| {
            c.dropped_failed.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("dreamstream_frames_dropped_total", "reason" => reason).increment(1);
        };
        match outcome {
            JobOutcome::Reply(JobReply::Done {
                jpeg,
                timings,
                note,
                ..
            }) => {
                if st.last_delivered.is_some_and(|last| job.seq <= last) {
                    c.dropped_late.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("dreamstream_frames_dropped_total", "reason" => "late")
                        .increment(1);
                    return;
                }
                st.last_delivered = Some(job.seq);
                let latency = job.received_at.elapsed();
                let latency_us = latency.as_micros().min(u32::MAX as u128) as u32;
                let process_us = timings.total_us();
                let input = InputFrame {
                    seq: job.seq,
                    captured_ms: job.captured_ms,
                    received_at: job.received_at,
                    jpeg: Bytes::new(),
                };
                let out = Arc::new(OutputFrame::new(
                    &input,
                    Bytes::from(jpeg),
                    process_us,
                    latency_us,
                ));
                c.frames_out.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("dreamstream_frames_out_total").increment(1);
                metrics::histogram!("dreamstream_frame_latency_seconds")
                    .record(latency.as_secs_f64());
                st.recent
                    .push_back((Instant::now(), latency_us, process_us));
                st.shared.deliver(out);
                if let Some(note) = note
                    && st.last_note.as_ref() != Some(&note)
                {
                    st.shared.tell_broadcaster(&StreamEvent::Notice {
                        message: note.clone(),
                    });
                    st.last_note = Some(note);
                }
            }
            JobOutcome::Reply(JobReply::Failed {
                reason,
                input_error,
            }) => {
                if input_error {
                    failed("bad_frame");
                    st.shared.tell_broadcaster(&StreamEvent::Error {
                        code: "bad_frame".into(),
                        message: format!("frame {} was not processed: {reason}", job.seq),
                    });
                } else {
                    failed("worker_error");
                    tracing::warn!(stream_id = %st.shared.id, seq = job.seq, %reason, "worker failed a job");
                }
            }
            JobOutcome::Timeout => {
                failed("deadline");
                tracing::warn!(stream_id = %st.shared.id, seq = job.seq, "job missed its deadline");
            }
            JobOutcome::WorkerGone(why) => {
                failed("worker_lost");
                tracing::warn!(stream_id = %st.shared.id, seq = job.seq, %why, "worker lost with a job");
            }
        }
    }

    /// Auto-approve mode: applies the next queued style request once the
    /// current style has had its dwell time.
    async fn auto_approve(&self, st: &mut StreamState) {
        let Some(request) = st.shared.community.due_for_auto_approve() else {
            return;
        };
        let status = st.shared.decide_request(&request, true);
        if let Err(e) = st
            .store
            .requests
            .style_request_decided(request.id, status)
            .await
        {
            tracing::warn!(stream_id = %st.shared.id, request = request.id, error = %e, "recording a style request decision failed");
        }
    }

    fn tick(&self, myself: &ActorRef<StreamMsg>, st: &mut StreamState) {
        let now = Instant::now();
        if let Some(count) = st.shared.take_presence_change() {
            st.shared.broadcast(&StreamEvent::ViewerCount { count });
        }
        if !st.shared.broadcaster_connected()
            && now.duration_since(st.last_frame_at) > st.config.idle_timeout
        {
            st.shared.mark_ending(EndReason::BroadcasterGone);
            myself.stop(Some(EndReason::BroadcasterGone.as_str().to_string()));
            return;
        }
        let window = st.config.stats_interval.max(Duration::from_millis(100));
        while st
            .recent
            .front()
            .is_some_and(|(t, _, _)| now.duration_since(*t) > window)
        {
            st.recent.pop_front();
        }
        let c = &st.shared.counters;
        let (fin, fout) = (
            c.frames_in.load(Ordering::Relaxed),
            c.frames_out.load(Ordering::Relaxed),
        );
        let (pin, pout, pt) = st.last_counts;
        let secs = now.duration_since(pt).as_secs_f64().max(1e-3);
        st.last_counts = (fin, fout, now);
        if fin == pin && st.recent.is_empty() {
            return; // nothing is flowing; say nothing
        }
        let median = |f: fn(&(Instant, u32, u32)) -> u32| -> f64 {
            let mut v: Vec<u32> = st.recent.iter().map(f).collect();
            if v.is_empty() {
                return 0.0;
            }
            v.sort_unstable();
            v[v.len() / 2] as f64 / 1000.0
        };
        st.shared.broadcast(&StreamEvent::Latency {
            p50_ms: median(|r| r.1),
            process_p50_ms: median(|r| r.2),
            fps_in: (fin - pin) as f64 / secs,
            fps_out: (fout - pout) as f64 / secs,
            dropped: c.dropped(),
        });
    }
}

/// Runs one job in its own task: awaits the worker (with the deadline), frees
/// the worker at the scheduler, then reports to the stream. The scheduler hears
/// even if the stream has died meanwhile.
fn spawn_job(
    stream: ActorRef<StreamMsg>,
    scheduler: SchedulerHandle,
    worker: ActorRef<WorkerMsg>,
    worker_id: WorkerId,
    request: JobRequest,
    deadline: Duration,
) {
    let job_id = request.job_id;
    tokio::spawn(async move {
        let started = Instant::now();
        let outcome = match worker
            .call(|reply| WorkerMsg::Job(request, reply), Some(deadline))
            .await
        {
            Ok(CallResult::Success(reply)) => JobOutcome::Reply(reply),
            Ok(CallResult::Timeout) => JobOutcome::Timeout,
            Ok(CallResult::SenderError) => {
                JobOutcome::WorkerGone("the worker dropped the job".into())
            }
            Err(e) => JobOutcome::WorkerGone(e.to_string()),
        };
        let elapsed = started.elapsed();
        metrics::histogram!("dreamstream_job_seconds").record(elapsed.as_secs_f64());
        let (ok, process_us) = match &outcome {
            JobOutcome::Reply(JobReply::Done { timings, .. }) => (true, timings.total_us()),
            _ => (false, 0),
        };
        if ok {
            let hop = elapsed.saturating_sub(Duration::from_micros(process_us as u64));
            metrics::histogram!("dreamstream_job_overhead_seconds").record(hop.as_secs_f64());
        }
        scheduler.cast(SchedulerMsg::JobFinished {
            worker_id,
            job_id,
            elapsed,
            process_us,
            ok,
        });
        let _ = stream.cast(StreamMsg::JobDone { job_id, outcome });
    });
}
