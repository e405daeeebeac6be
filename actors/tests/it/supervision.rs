//! A crashing stream actor is restarted with its viewers; a crash loop ends the
//! stream.

use std::sync::Arc;
use std::time::Duration;

use dreamstream_actors::Username;
use dreamstream_actors::stream::StreamMsg;
use dreamstream_actors::supervisor::{RestartPolicy, SupervisorMsg};
use ractor::call_t;

use crate::harness::{Plane, Recorder, RecorderSink, frame, settle};

#[tokio::test(start_paused = true)]
async fn a_panicking_stream_actor_is_restarted_and_viewers_keep_receiving() {
    let plane = Plane::new(RestartPolicy::default()).await;
    plane.add_worker("w", Duration::from_millis(20)).await;
    let stream = plane.start("phoenix").await;
    let rec = Arc::new(Recorder::default());
    stream.add_viewer(Box::new(RecorderSink(rec.clone())));

    for seq in 1..=10 {
        stream.cast(frame(seq));
        settle(Duration::from_millis(50)).await;
    }
    let before = stream.actor().unwrap().get_id();
    stream.cast(StreamMsg::Crash);
    settle(Duration::from_millis(50)).await;
    let after = stream.actor().expect("restarted").get_id();
    assert_ne!(before, after, "a new actor runs the stream");
    for seq in 11..=20 {
        stream.cast(frame(seq));
        settle(Duration::from_millis(50)).await;
    }
    let seqs = rec.seqs();
    assert!(seqs.contains(&10) && seqs.contains(&20), "{seqs:?}");
    assert_eq!(stream.snapshot().restarts, 1);
    assert_eq!(stream.viewer_count(), 1, "the viewer survived the restart");
    // Still registered under its name.
    let found = call_t!(
        plane.supervisor,
        |r| SupervisorMsg::Get(Username::parse("phoenix").unwrap(), r),
        1000
    )
    .unwrap();
    assert!(found.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_ends_the_stream() {
    let plane = Plane::new(RestartPolicy {
        max_restarts: 2,
        window: Duration::from_secs(60),
    })
    .await;
    plane.add_worker("w", Duration::from_millis(20)).await;
    let stream = plane.start("crashy").await;
    let rec = Arc::new(Recorder::default());
    stream.add_viewer(Box::new(RecorderSink(rec.clone())));
    for _ in 0..3 {
        stream.cast(StreamMsg::Crash);
        settle(Duration::from_millis(50)).await;
    }
    let found = call_t!(
        plane.supervisor,
        |r| SupervisorMsg::Get(Username::parse("crashy").unwrap(), r),
        1000
    )
    .unwrap();
    assert!(found.is_none(), "the supervisor gave up");
    let events = rec.events.lock().unwrap().clone();
    assert!(
        events
            .iter()
            .any(|e| e.contains(r#""type":"ended""#) && e.contains("crashed")),
        "{events:?}"
    );
}
