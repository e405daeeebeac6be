//! Issue 14 at the actor level (paused time): the stream numbers its own
//! input, so broadcasters that reconnect (counting from 1 again) or send
//! absurd numbers never stall the output; viewers may wait for a channel; a
//! restarted scheduler is told about the streams and workers again.

use std::sync::Arc;
use std::time::Duration;

use dreamstream_actors::Username;
use dreamstream_actors::scheduler::{Scheduler, SchedulerConfig, SchedulerMsg};
use dreamstream_actors::supervisor::{RestartPolicy, SupervisorMsg};
use ractor::Actor;
use tokio::time::Instant;

use crate::harness::{Plane, Recorder, RecorderSink, frame, settle};

/// Sends frames numbered from `first` every 66 ms until the recorder gets a
/// new one; how long that took.
async fn until_output(
    stream: &dreamstream_actors::stream::StreamShared,
    rec: &Recorder,
    first: u64,
) -> Duration {
    let before = rec.seqs().len();
    let started = Instant::now();
    let mut seq = first;
    while rec.seqs().len() == before {
        stream.cast(frame(seq));
        seq = seq.saturating_add(1);
        settle(Duration::from_millis(66)).await;
        assert!(started.elapsed() < Duration::from_secs(10), "no output");
    }
    started.elapsed()
}

#[tokio::test(start_paused = true)]
async fn reconnects_that_count_from_one_again_keep_the_output_flowing() {
    let plane = Plane::new(RestartPolicy::default()).await;
    plane.add_worker("w", Duration::from_millis(30)).await;
    let stream = plane.start("phoenix").await;
    let rec = Arc::new(Recorder::default());
    stream.add_viewer(Box::new(RecorderSink(rec.clone())));
    for _ in 0..6 {
        // Each "connection" numbers its frames 1, 2, 3...
        let took = until_output(&stream, &rec, 1).await;
        assert!(took < Duration::from_secs(1), "{took:?}");
        for seq in 2..20 {
            stream.cast(frame(seq));
            settle(Duration::from_millis(66)).await;
        }
    }
    let seqs = rec.seqs();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing: {seqs:?}"
    );
    assert!(seqs.len() > 6 * 10, "frames kept flowing: {}", seqs.len());
}

#[tokio::test(start_paused = true)]
async fn a_client_sequence_of_u64_max_does_not_freeze_the_stream() {
    let plane = Plane::new(RestartPolicy::default()).await;
    plane.add_worker("w", Duration::from_millis(30)).await;
    let stream = plane.start("maxseq").await;
    let rec = Arc::new(Recorder::default());
    stream.add_viewer(Box::new(RecorderSink(rec.clone())));
    until_output(&stream, &rec, u64::MAX).await;
    let took = until_output(&stream, &rec, 1).await;
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_viewer_waiting_for_a_channel_receives_its_stream_and_waits_again() {
    let plane = Plane::new(RestartPolicy::default()).await;
    plane.add_worker("w", Duration::from_millis(30)).await;
    let rec = Arc::new(Recorder::default());
    let channel = Username::parse("early").unwrap();
    let ticket = plane
        .registry
        .watch(&channel, Arc::new(RecorderSink(rec.clone())), None, None)
        .expect("room to wait");
    assert_eq!(plane.registry.waiting(&channel), 1);
    let stream = plane.start("early").await;
    assert_eq!(plane.registry.waiting(&channel), 0);
    assert_eq!(stream.viewer_count(), 1);
    until_output(&stream, &rec, 1).await;
    plane
        .supervisor
        .cast(SupervisorMsg::Stop(
            channel.clone(),
            dreamstream_actors::store::EndReason::Stopped,
        ))
        .unwrap();
    settle(Duration::from_millis(100)).await;
    assert!(
        rec.events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.contains(r#""type":"ended""#))
    );
    assert_eq!(plane.registry.waiting(&channel), 1, "waits again");
    // The next stream of the channel reaches the same viewer.
    let again = plane.start("early").await;
    until_output(&again, &rec, 1).await;
    plane.registry.leave(&channel, ticket);
    assert_eq!(again.viewer_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_restarted_scheduler_learns_the_streams_and_workers_again() {
    let plane = Plane::new(RestartPolicy::default()).await;
    let (worker, info) = plane.add_worker_info("w", Duration::from_millis(30)).await;
    let stream = plane.start("sched").await;
    let rec = Arc::new(Recorder::default());
    stream.add_viewer(Box::new(RecorderSink(rec.clone())));
    until_output(&stream, &rec, 1).await;
    // A frame waits while the scheduler dies.
    plane.scheduler.cast(SchedulerMsg::Crash);
    settle(Duration::from_millis(10)).await;
    stream.cast(frame(500));
    let (fresh, _) = Actor::spawn(None, Scheduler, SchedulerConfig::default())
        .await
        .unwrap();
    plane.scheduler.replace(fresh);
    let restarted = Instant::now();
    // What the root does after a restart.
    assert!(plane.scheduler.cast(SchedulerMsg::WorkerUp(info, worker)));
    plane.supervisor.cast(SupervisorMsg::Reannounce).unwrap();
    let before = rec.seqs().len();
    while rec.seqs().len() == before {
        settle(Duration::from_millis(10)).await;
        assert!(
            restarted.elapsed() < Duration::from_secs(1),
            "the waiting frame was not processed"
        );
    }
    let took = until_output(&stream, &rec, 1).await;
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_join_and_leave_storm_is_announced_at_most_once_per_tick() {
    let plane = Plane::new(RestartPolicy::default()).await;
    plane.add_worker("w", Duration::from_millis(30)).await;
    let stream = plane.start("raided").await;
    let steady = Arc::new(Recorder::default());
    stream.add_viewer(Box::new(RecorderSink(steady.clone())));
    settle(Duration::from_millis(1500)).await;
    let count_events = || {
        steady
            .events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.contains(r#""type":"viewer_count""#))
            .count()
    };
    let before = count_events();
    // 2 000 connect-abort cycles within 2 s (a raid, or an abuse loop).
    for i in 0..2000 {
        let id = stream.add_viewer(Box::new(RecorderSink(Arc::new(Recorder::default()))));
        stream.remove_viewer(id);
        if i % 100 == 0 {
            settle(Duration::from_millis(100)).await;
        }
    }
    settle(Duration::from_millis(1500)).await;
    let announced = count_events() - before;
    // 2 s of storm + the last tick: a handful of announcements, not 4 000.
    assert!(
        (1..=5).contains(&announced),
        "{announced} viewer_count events for 4000 joins and leaves"
    );
    let last = steady
        .events
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|e| e.contains("viewer_count"))
        .cloned();
    assert!(
        last.is_some_and(|e| e.contains(r#""count":1"#)),
        "the last count is right"
    );
}

/// A stream actor that never handles what it is sent (one that stopped or
/// restarted with an `Assign` in its mailbox).
struct DeafStream;

impl Actor for DeafStream {
    type Msg = dreamstream_actors::stream::StreamMsg;
    type State = ();
    type Arguments = ();
    async fn pre_start(
        &self,
        _: ractor::ActorRef<Self::Msg>,
        _: (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        Ok(())
    }
}

async fn assign_to_a_deaf_stream(plane: &Plane, id: i64) {
    let (deaf, _) = Actor::spawn(None, DeafStream, ()).await.unwrap();
    plane.scheduler.cast(SchedulerMsg::Ready(
        dreamstream_actors::scheduler::ReadyStream {
            stream_id: dreamstream_actors::StreamId(id),
            stream: deaf,
            since: Instant::now(),
            needs: dreamstream_actors::worker::Requirement::of(
                &dreamstream_actors::StyleParams::preset(
                    dreamstream_actors::PresetMix::single(0).unwrap(),
                ),
            ),
            in_flight: 0,
            frame_bytes: 1000,
        },
    ));
    settle(Duration::from_millis(10)).await;
    assert_eq!(plane.snapshot().await.workers[0].in_flight, 1, "assigned");
}

#[tokio::test(start_paused = true)]
async fn a_job_assigned_to_a_stream_that_never_takes_it_does_not_hold_the_worker() {
    let plane = Plane::new(RestartPolicy::default()).await;
    plane.add_worker("w", Duration::from_millis(30)).await;
    // The stream ends: its unanswered jobs are taken back at once.
    assign_to_a_deaf_stream(&plane, 9001).await;
    plane
        .scheduler
        .cast(SchedulerMsg::StreamGone(dreamstream_actors::StreamId(9001)));
    settle(Duration::from_millis(10)).await;
    assert_eq!(plane.snapshot().await.workers[0].in_flight, 0);
    // Nobody says anything: the lease runs out.
    assign_to_a_deaf_stream(&plane, 9002).await;
    settle(Duration::from_secs(15)).await;
    assert_eq!(
        plane.snapshot().await.workers[0].in_flight,
        1,
        "within the lease"
    );
    settle(Duration::from_secs(7)).await;
    assert_eq!(plane.snapshot().await.workers[0].in_flight, 0, "taken back");
    // And the worker serves a real stream again.
    let stream = plane.start("after").await;
    let rec = Arc::new(Recorder::default());
    stream.add_viewer(Box::new(RecorderSink(rec.clone())));
    until_output(&stream, &rec, 1).await;
}
