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

/// Stops `stream` the way the studio's Stop does and waits until it is gone.
async fn stop(plane: &Plane, stream: &dreamstream_actors::stream::StreamShared) {
    plane
        .supervisor
        .cast(dreamstream_actors::supervisor::SupervisorMsg::Stop(
            stream.username.clone(),
            EndReason::Stopped,
        ))
        .unwrap();
    for _ in 0..100 {
        settle(Duration::from_millis(50)).await;
        if stream.actor().is_none() {
            return;
        }
    }
    panic!("the stream did not stop");
}

#[tokio::test(start_paused = true)]
async fn going_live_again_inside_a_paid_period_costs_nothing() {
    let store = LedgerStore::with_balance(10);
    let plane = Plane::with_store(RestartPolicy::default(), store.clone()).await;
    // Three quick "does it work?" streams inside ten minutes: one credit.
    for _ in 0..3 {
        let stream = plane.start("tryer").await;
        settle(Duration::from_secs(20)).await;
        stop(&plane, &stream).await;
        settle(Duration::from_secs(30)).await;
    }
    assert_eq!(store.references(), ["stream:1:0"]);
    assert_eq!(*store.balance.lock().unwrap(), 9);
    // A stream that runs past the paid period pays the next one as it begins.
    let stream = plane.start("tryer").await;
    let rec = Arc::new(Recorder::default());
    stream.set_broadcaster(1, Some(Box::new(RecorderSink(rec.clone()))));
    settle(10 * MINUTE).await;
    assert_eq!(store.references(), ["stream:1:0", "stream:4:0"]);
    // The second credit was spent as the first period ran out.
    let charges = store.charges.lock().unwrap().clone();
    let apart = charges[1].1 - charges[0].1;
    assert!(
        apart >= 10 * MINUTE && apart < 10 * MINUTE + Duration::from_secs(1),
        "{apart:?}"
    );
    // The streamer was told the time left, counting the rest of the period.
    let credits = rec.events.lock().unwrap().clone();
    assert!(
        credits
            .iter()
            .any(|e| e.contains(r#""type":"credits""#) && e.contains(r#""balance":8"#)),
        "{credits:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_ended_at_zero_credits_resumes_inside_its_paid_period() {
    let store = LedgerStore::with_balance(1);
    let plane = Plane::with_store(RestartPolicy::default(), store.clone()).await;
    let t0 = Instant::now();
    let stream = plane.start("crashy").await;
    assert_eq!(*store.balance.lock().unwrap(), 0);
    settle(3 * MINUTE).await;
    // The tab crashed: the broadcaster is gone and the stream ended.
    stop(&plane, &stream).await;
    settle(MINUTE).await;
    // Balance 0, but the period is paid: going live again is allowed...
    let again = plane.try_start("crashy").await.expect("resumes");
    let rec = Arc::new(Recorder::default());
    again.set_broadcaster(1, Some(Box::new(RecorderSink(rec.clone()))));
    // ...the streamer sees the time left at once...
    let first = rec
        .events
        .lock()
        .unwrap()
        .first()
        .cloned()
        .unwrap_or_default();
    assert!(first.contains(r#""type":"credits""#), "{first}");
    assert!(first.contains(r#""balance":0"#), "{first}");
    // ...and the stream ends when the paid period does, as before.
    for _ in 0..(8 * 60 * 2) {
        settle(Duration::from_millis(500)).await;
        if again.end_reason().is_some() {
            break;
        }
    }
    let ended = Instant::now() - t0;
    assert_eq!(again.end_reason(), Some(EndReason::OutOfCredits));
    assert!(
        ended >= 10 * MINUTE && ended <= 10 * MINUTE + Duration::from_secs(1),
        "{ended:?}"
    );
    assert_eq!(store.references(), ["stream:1:0"], "nothing charged twice");
    // Now nothing is left: refused before it begins.
    assert!(matches!(
        plane.try_start("crashy").await,
        Err(StartError::NoCredits(10))
    ));
}
