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
