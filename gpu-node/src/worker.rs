//! The worker actor: runs a processor for the scheduler's jobs.
//!
//! Who sends to it: stream actors' job tasks (`Job`), the scheduler (`Ping`,
//! `Info`), the node's shutdown (`Drain`). The same actor serves the control
//! node's in-process worker and a GPU node's workers (over the cluster).
//! Supervised by a [`WorkerPool`](crate::pool), which restarts it after a
//! panic (on the control node the pool is a child of the root).
//!
//! It never queues: the scheduler sends at most `capacity` jobs; a job beyond
//! that (a confused peer) is refused at once. Each job runs the processor on a
//! blocking thread, so the actor and the async runtime never wait on a network.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use dreamstream_actors::worker::{JobReply, JobRequest, JobTimings, WorkerInfo, WorkerMsg};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::processor::Processor;

pub struct WorkerArgs {
    pub info: WorkerInfo,
    pub processor: Arc<dyn Processor>,
}

pub struct WorkerState {
    info: WorkerInfo,
    processor: Arc<dyn Processor>,
    in_flight: Arc<AtomicU32>,
    draining: bool,
}

pub struct WorkerActor;

impl Actor for WorkerActor {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<WorkerMsg>,
        args: WorkerArgs,
    ) -> Result<WorkerState, ActorProcessingErr> {
        Ok(WorkerState {
            info: args.info,
            processor: args.processor,
            in_flight: Arc::new(AtomicU32::new(0)),
            draining: false,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        st: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Job(req, reply) => {
                let busy = st.in_flight.load(Ordering::Acquire);
                if st.draining || busy >= st.info.capacity {
                    let _ = reply.send(JobReply::Failed {
                        reason: if st.draining {
                            "the worker is draining".into()
                        } else {
                            format!("the worker is at its capacity of {}", st.info.capacity)
                        },
                        input_error: false,
                    });
                    return Ok(());
                }
                st.in_flight.fetch_add(1, Ordering::AcqRel);
                run_job(st.processor.clone(), st.in_flight.clone(), req, reply);
            }
            WorkerMsg::Info(reply) => {
                // Asked afresh each time: a diffusion processor's models change when one
                // is loaded in the background.
                st.info.capabilities = st.processor.capabilities();
                let _ = reply.send(st.info.clone());
            }
            WorkerMsg::Ping(reply) => {
                let _ = reply.send(st.in_flight.load(Ordering::Acquire));
            }
            WorkerMsg::Drain => st.draining = true,
        }
        Ok(())
    }
}

/// The jobs still running on a worker (for draining on shutdown).
pub async fn in_flight(worker: &ActorRef<WorkerMsg>) -> u32 {
    ractor::call_t!(worker, WorkerMsg::Ping, 2_000).unwrap_or(0)
}

fn run_job(
    processor: Arc<dyn Processor>,
    in_flight: Arc<AtomicU32>,
    req: JobRequest,
    reply: RpcReplyPort<JobReply>,
) {
    tokio::spawn(async move {
        let result = tokio::task::spawn_blocking(move || match &req.params {
            Err(e) => JobReply::Failed {
                reason: e.clone(),
                input_error: true,
            },
            Ok(params) => {
                match processor.process_for_stream(&req.stream_id.to_string(), &req.jpeg, params) {
                    Ok(frame) => JobReply::Done {
                        width: frame.width,
                        height: frame.height,
                        timings: JobTimings {
                            decode_us: micros(frame.timings.decode),
                            infer_us: micros(frame.timings.infer),
                            encode_us: micros(frame.timings.encode),
                        },
                        note: frame.note,
                        jpeg: frame.jpeg,
                    },
                    Err(e) => JobReply::Failed {
                        reason: e.to_string(),
                        input_error: e.is_input_error(),
                    },
                }
            }
        })
        .await
        .unwrap_or_else(|e| JobReply::Failed {
            reason: format!("the processor panicked: {e}"),
            input_error: false,
        });
        in_flight.fetch_sub(1, Ordering::AcqRel);
        let _ = reply.send(result);
    });
}

fn micros(d: std::time::Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}
