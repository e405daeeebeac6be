//! A control plane with fake workers and recording viewers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dreamstream_actors::frame::{InputFrame, OutputFrame};
use dreamstream_actors::registry::StreamRegistry;
use dreamstream_actors::scheduler::{
    Scheduler, SchedulerConfig, SchedulerHandle, SchedulerMsg, SchedulerSnapshot,
};
use dreamstream_actors::sink::{Delivery, ViewerSink};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use dreamstream_actors::StreamId;
use dreamstream_actors::store::{
    Charge, EndReason, NoStore, StoreError, StreamStore, StreamTotals,
};
use dreamstream_actors::stream::meter::MeterConfig;
use dreamstream_actors::stream::{StreamConfig, StreamMsg, StreamShared};
use dreamstream_actors::style::{PresetMix, ProcessorKind, StyleParams};
use dreamstream_actors::supervisor::{
    RestartPolicy, StartError, StreamSupervisor, SupervisorArgs, SupervisorMsg,
};
use dreamstream_actors::worker::{Capabilities, JobReply, JobTimings, WorkerInfo, WorkerMsg};
use dreamstream_actors::{Username, WorkerId};
use ractor::{Actor, ActorProcessingErr, ActorRef, call_t};
use tokio::time::Instant;

/// A worker that takes `delay` per frame and returns the input bytes.
pub struct FakeWorker {
    pub delay: Duration,
}

impl Actor for FakeWorker {
    type Msg = WorkerMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<WorkerMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        if let WorkerMsg::Job(req, reply) = msg {
            let delay = self.delay;
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = reply.send(JobReply::Done {
                    jpeg: req.jpeg,
                    width: 1,
                    height: 1,
                    timings: JobTimings {
                        decode_us: 0,
                        infer_us: delay.as_micros() as u32,
                        encode_us: 0,
                    },
                    note: None,
                });
            });
        }
        Ok(())
    }
}

/// Records what a viewer receives, with the (paused-clock) time.
#[derive(Default)]
pub struct Recorder {
    pub frames: Mutex<Vec<(u64, Instant)>>,
    pub events: Mutex<Vec<String>>,
}

pub struct RecorderSink(pub Arc<Recorder>);

impl ViewerSink for RecorderSink {
    fn frame(&self, frame: &Arc<OutputFrame>) -> Delivery {
        self.0
            .frames
            .lock()
            .unwrap()
            .push((frame.seq, Instant::now()));
        Delivery::Sent
    }
    fn event(&self, json: &Arc<str>) -> Delivery {
        self.0.events.lock().unwrap().push(json.to_string());
        Delivery::Sent
    }
}

impl Recorder {
    pub fn seqs(&self) -> Vec<u64> {
        self.frames.lock().unwrap().iter().map(|f| f.0).collect()
    }
}

pub struct Plane {
    pub scheduler: SchedulerHandle,
    pub supervisor: ActorRef<SupervisorMsg>,
    pub registry: Arc<StreamRegistry>,
}

pub fn caps() -> Capabilities {
    Capabilities {
        processor: ProcessorKind::NeuralStyle,
        models: vec!["multistyle26".into()],
        device: "cpu".into(),
        prompts: false,
        style_images: true,
    }
}

/// A store with an in-memory credit ledger: balances per user and the
/// references already charged (idempotent like the database's).
pub struct LedgerStore {
    next: AtomicI64,
    pub balance: Mutex<i64>,
    /// (reference, clock time) of every charge taken.
    pub charges: Mutex<Vec<(String, Instant)>>,
    pub calls: AtomicU64,
}

impl LedgerStore {
    pub fn with_balance(balance: i64) -> Arc<Self> {
        Arc::new(Self {
            next: AtomicI64::new(1),
            balance: Mutex::new(balance),
            charges: Mutex::new(Vec::new()),
            calls: AtomicU64::new(0),
        })
    }

    pub fn references(&self) -> Vec<String> {
        self.charges
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.0.clone())
            .collect()
    }
}

#[async_trait::async_trait]
impl StreamStore for LedgerStore {
    async fn stream_started(&self, _: &Username, _: &StyleParams) -> Result<StreamId, StoreError> {
        Ok(StreamId(self.next.fetch_add(1, Ordering::Relaxed)))
    }
    async fn stream_ended(
        &self,
        _: StreamId,
        _: EndReason,
        _: &StreamTotals,
    ) -> Result<(), StoreError> {
        Ok(())
    }
    async fn charge_period(
        &self,
        id: StreamId,
        _: &Username,
        period: u64,
    ) -> Result<Charge, StoreError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let reference = format!("stream:{id}:{period}");
        let mut balance = self.balance.lock().unwrap();
        let mut charges = self.charges.lock().unwrap();
        if charges.iter().any(|c| c.0 == reference) {
            return Ok(Charge::AlreadyPaid { balance: *balance });
        }
        if *balance < 1 {
            return Ok(Charge::Insufficient { balance: *balance });
        }
        *balance -= 1;
        charges.push((reference, Instant::now()));
        Ok(Charge::Charged { balance: *balance })
    }
    async fn balance(&self, _: &Username) -> Result<i64, StoreError> {
        Ok(*self.balance.lock().unwrap())
    }
}

impl Plane {
    pub async fn new(policy: RestartPolicy) -> Plane {
        Self::with_store(policy, Arc::new(NoStore::default())).await
    }

    pub async fn with_store(policy: RestartPolicy, store: Arc<dyn StreamStore>) -> Plane {
        let (scheduler, _) = Actor::spawn(None, Scheduler, SchedulerConfig::default())
            .await
            .unwrap();
        let scheduler = SchedulerHandle::new(scheduler);
        let registry = Arc::new(StreamRegistry::default());
        let (supervisor, _) = Actor::spawn(
            None,
            StreamSupervisor,
            SupervisorArgs {
                store,
                scheduler: scheduler.clone(),
                config: StreamConfig {
                    job_deadline: Duration::from_secs(30),
                    stats_interval: Duration::from_secs(1),
                    idle_timeout: Duration::from_secs(3600),
                    link_frame_limit: 16 << 20,
                    meter: MeterConfig::default(),
                },
                policy,
                registry: registry.clone(),
            },
        )
        .await
        .unwrap();
        Plane {
            scheduler,
            supervisor,
            registry,
        }
    }

    pub async fn add_worker(&self, name: &str, delay: Duration) -> ActorRef<WorkerMsg> {
        self.add_worker_info(name, delay).await.0
    }

    /// A fake worker, registered; with its registration (to register it again).
    pub async fn add_worker_info(
        &self,
        name: &str,
        delay: Duration,
    ) -> (ActorRef<WorkerMsg>, WorkerInfo) {
        let (w, _) = Actor::spawn(None, FakeWorker { delay }, ()).await.unwrap();
        let info = WorkerInfo {
            id: WorkerId(format!("test/{name}")),
            node: "test".into(),
            capacity: 1,
            capabilities: caps(),
        };
        assert!(
            self.scheduler
                .cast(SchedulerMsg::WorkerUp(info.clone(), w.clone()))
        );
        (w, info)
    }

    pub async fn start(&self, name: &str) -> Arc<StreamShared> {
        self.try_start(name).await.unwrap()
    }

    pub async fn try_start(&self, name: &str) -> Result<Arc<StreamShared>, StartError> {
        let username = Username::parse(name).unwrap();
        let settings = StyleParams::preset(PresetMix::single(0).unwrap());
        call_t!(
            self.supervisor,
            |reply| SupervisorMsg::Start {
                username,
                settings,
                reply
            },
            5_000
        )
        .unwrap()
    }

    pub async fn snapshot(&self) -> SchedulerSnapshot {
        call_t!(self.scheduler.get(), SchedulerMsg::Snapshot, 5_000).unwrap()
    }
}

pub fn frame(seq: u64) -> StreamMsg {
    StreamMsg::Frame(InputFrame {
        seq,
        captured_ms: seq,
        received_at: Instant::now(),
        jpeg: Bytes::from(seq.to_le_bytes().to_vec()),
    })
}

/// Sends `n` frames at `interval`, recording when each was sent.
pub async fn broadcast(shared: &StreamShared, n: u64, interval: Duration) -> Vec<Instant> {
    let mut sent = Vec::with_capacity(n as usize);
    let mut tick = tokio::time::interval(interval);
    for seq in 1..=n {
        tick.tick().await;
        sent.push(Instant::now());
        shared.cast(frame(seq));
    }
    sent
}

/// Lets queued messages and running jobs settle.
pub async fn settle(d: Duration) {
    tokio::time::sleep(d).await;
}
