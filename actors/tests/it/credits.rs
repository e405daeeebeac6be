//! The credit meter with paused time: one credit as each 10-minute period
//! begins, a warning a minute before a boundary that cannot be paid, the end
//! at that boundary, and no double charge across actor restarts.

use std::sync::Arc;
use std::time::Duration;

use dreamstream_actors::store::EndReason;
use dreamstream_actors::stream::StreamMsg;
use dreamstream_actors::supervisor::{RestartPolicy, StartError};
use tokio::time::Instant;

use crate::harness::{LedgerStore, Plane, Recorder, RecorderSink, settle};

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn twenty_five_minutes_live_cost_three_credits() {
    let store = LedgerStore::with_balance(10);
    let plane = Plane::with_store(RestartPolicy::default(), store.clone()).await;
    let t0 = Instant::now();
    let stream = plane.start("meter").await;
    let rec = Arc::new(Recorder::default());
    stream.set_broadcaster(1, Some(Box::new(RecorderSink(rec.clone()))));
    settle(25 * MINUTE).await;
    assert_eq!(
        store.references(),
        ["stream:1:0", "stream:1:1", "stream:1:2"]
    );
    assert_eq!(*store.balance.lock().unwrap(), 7);
    // Each charge as its period begins (within a second of the boundary).
    let times: Vec<Duration> = store
        .charges
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.1 - t0)
        .collect();
    for (i, t) in times.iter().enumerate() {
        let boundary = 10 * MINUTE * i as u32;
        assert!(
            *t >= boundary && *t < boundary + Duration::from_secs(1),
            "{times:?}"
        );
    }
    assert_eq!(stream.snapshot().restarts, 0);
    // The streamer was told the balance after each metered charge.
    let credits: Vec<String> = rec
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.contains(r#""type":"credits""#))
        .cloned()
        .collect();
    assert!(
        credits.iter().any(|e| e.contains(r#""balance":7"#)),
        "{credits:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn out_of_credits_ends_the_stream_at_the_boundary_after_a_warning() {
    let store = LedgerStore::with_balance(2);
    let plane = Plane::with_store(RestartPolicy::default(), store.clone()).await;
    let t0 = Instant::now();
    let stream = plane.start("broke").await;
    let rec = Arc::new(Recorder::default());
    stream.set_broadcaster(1, Some(Box::new(RecorderSink(rec.clone()))));
    let viewer = Arc::new(Recorder::default());
    stream.add_viewer(Box::new(RecorderSink(viewer.clone())));

    // Paid for two periods: still live just before the 20-minute boundary.
    settle(19 * MINUTE + Duration::from_secs(30)).await;
    assert!(stream.end_reason().is_none());
    let warned = rec
        .events
        .lock()
        .unwrap()
        .iter()
        .any(|e| e.contains(r#""type":"credits_low""#));
    assert!(warned, "warned a minute before the boundary");
    let warning = rec
        .events
        .lock()
        .unwrap()
        .iter()
        .find(|e| e.contains("credits_low"))
        .cloned()
        .unwrap();
    assert!(warning.contains(r#""seconds_left":60"#), "{warning}");

    // Ends at the boundary, with the reason.
    let mut ended_at = None;
    for _ in 0..120 {
        settle(Duration::from_millis(500)).await;
        if stream.end_reason().is_some() && stream.actor().is_none() {
            ended_at = Some(Instant::now() - t0);
            break;
        }
    }
    let ended_at = ended_at.expect("the stream ended");
    assert!(
        ended_at >= 20 * MINUTE && ended_at <= 20 * MINUTE + Duration::from_secs(1),
        "{ended_at:?}"
    );
    assert_eq!(stream.end_reason(), Some(EndReason::OutOfCredits));
    assert_eq!(store.references(), ["stream:1:0", "stream:1:1"]);
    assert_eq!(*store.balance.lock().unwrap(), 0);
    assert!(
        viewer
            .events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.contains(r#""reason":"out_of_credits""#)),
        "viewers learn why"
    );
    // With nothing left, a new start is refused before it begins.
    assert!(matches!(
        plane.try_start("broke").await,
        Err(StartError::NoCredits(10))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_restart_mid_period_charges_nothing_extra() {
    let store = LedgerStore::with_balance(10);
    let plane = Plane::with_store(RestartPolicy::default(), store.clone()).await;
    let stream = plane.start("phoenix").await;
    settle(5 * MINUTE).await;
    stream.cast(StreamMsg::Crash);
    settle(MINUTE).await;
    assert!(stream.actor().is_some(), "restarted");
    assert_eq!(stream.snapshot().restarts, 1);
    assert_eq!(
        store.references(),
        ["stream:1:0"],
        "no charge for the restart"
    );
    // A crash right after a boundary's charge: the period is not charged again.
    settle(4 * MINUTE + Duration::from_millis(200)).await;
    stream.cast(StreamMsg::Crash);
    settle(MINUTE).await;
    assert_eq!(stream.snapshot().restarts, 2);
    settle(3 * MINUTE).await;
    assert_eq!(store.references(), ["stream:1:0", "stream:1:1"]);
    assert_eq!(*store.balance.lock().unwrap(), 8);
}
