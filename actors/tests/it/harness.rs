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
use std::sync::atomic::{AtomicU64, Ordering};

use dreamstream_actors::StreamId;
use dreamstream_actors::store::{
    Billing, Charge, Credit, NoStore, StoreError, Stores, next_period_start,
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

/// A worker that takes `delay` per frame, plus `per_kib` for each KiB of it
/// (bigger frames cost more, as decoding does), and returns the input bytes.
pub struct FakeWorker {
    pub delay: Duration,
    pub per_kib: Duration,
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
            let delay = self.delay + self.per_kib * (req.jpeg.len() / 1024) as u32;
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

/// Billing with an in-memory credit ledger on the test's (paused) clock:
/// one balance, the end of the paid time, and the references charged (each
/// stream's n-th charge, as the database writes them).
pub struct LedgerStore {
    pub balance: Mutex<i64>,
    pub paid_until: Mutex<Option<Instant>>,
    charged_per_stream: Mutex<std::collections::HashMap<StreamId, u64>>,
    /// (reference, clock time) of every charge taken.
    pub charges: Mutex<Vec<(String, Instant)>>,
    pub calls: AtomicU64,
}

impl LedgerStore {
    pub fn with_balance(balance: i64) -> Arc<Self> {
        Arc::new(Self {
            balance: Mutex::new(balance),
            paid_until: Mutex::new(None),
            charged_per_stream: Mutex::new(Default::default()),
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
impl Billing for LedgerStore {
    async fn pay_for_now(
        &self,
        id: StreamId,
        _: &Username,
        period: Duration,
    ) -> Result<Charge, StoreError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut balance = self.balance.lock().unwrap();
        let mut paid_until = self.paid_until.lock().unwrap();
        if let Some(until) = paid_until.filter(|u| *u > now) {
            return Ok(Charge::AlreadyPaid(Credit {
                balance: *balance,
                paid_left: until - now,
            }));
        }
        if *balance < 1 {
            return Ok(Charge::Insufficient { balance: *balance });
        }
        *balance -= 1;
        let until = next_period_start(now, *paid_until, period) + period;
        *paid_until = Some(until);
        let mut per_stream = self.charged_per_stream.lock().unwrap();
        let n = per_stream.entry(id).or_default();
        self.charges
            .lock()
            .unwrap()
            .push((format!("stream:{id}:{n}"), now));
        *n += 1;
        Ok(Charge::Charged(Credit {
            balance: *balance,
            paid_left: until - now,
        }))
    }
    async fn credit(&self, _: &Username) -> Result<Credit, StoreError> {
        let now = Instant::now();
        let paid_left = self
            .paid_until
            .lock()
            .unwrap()
            .map_or(Duration::ZERO, |u| u.saturating_duration_since(now));
        Ok(Credit {
            balance: *self.balance.lock().unwrap(),
            paid_left,
        })
    }
}

impl Plane {
    pub async fn new(policy: RestartPolicy) -> Plane {
        Self::with_stores(policy, Stores::none()).await
    }

    /// A plane whose credits are `billing`'s (the rest keeps nothing).
    pub async fn with_store(policy: RestartPolicy, billing: Arc<dyn Billing>) -> Plane {
        let none = Arc::new(NoStore::default());
        let stores = Stores {
            log: none.clone(),
            billing,
            requests: none,
        };
        Self::with_stores(policy, stores).await
    }

    pub async fn with_stores(policy: RestartPolicy, store: Stores) -> Plane {
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
        self.add_fake_worker(
            name,
            FakeWorker {
                delay,
                per_kib: Duration::ZERO,
            },
        )
        .await
    }

    /// `worker`, registered; with its registration.
    pub async fn add_fake_worker(
        &self,
        name: &str,
        worker: FakeWorker,
    ) -> (ActorRef<WorkerMsg>, WorkerInfo) {
        let (w, _) = Actor::spawn(None, worker, ()).await.unwrap();
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
    frame_of_size(seq, 8)
}

/// A frame of `bytes` bytes (its first 8 are the sequence number).
pub fn frame_of_size(seq: u64, bytes: usize) -> StreamMsg {
    let mut jpeg = seq.to_le_bytes().to_vec();
    jpeg.resize(bytes.max(8), 0);
    StreamMsg::Frame(InputFrame {
        seq,
        captured_ms: seq,
        received_at: Instant::now(),
        jpeg: Bytes::from(jpeg),
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
