//! Auto-approve with paused time: queued style requests are applied in order,
//! each shown at least the dwell time.

use std::sync::Arc;
use std::time::Duration;

use dreamstream_actors::PresetMix;
use dreamstream_actors::stream::community::{CommunitySettings, StyleRequest};
use dreamstream_actors::style::StyleSource;
use dreamstream_actors::supervisor::RestartPolicy;
use tokio::time::Instant;

use crate::harness::{Plane, Recorder, RecorderSink, settle};

fn request(id: i64, preset: usize) -> StyleRequest {
    StyleRequest {
        id,
        by: format!("viewer{id}"),
        label: format!("style {preset}"),
        source: StyleSource::Preset {
            mix: PresetMix::single(preset).unwrap(),
        },
        processor: dreamstream_actors::style::ProcessorKind::NeuralStyle,
        created_ms: 0,
    }
}

#[tokio::test(start_paused = true)]
async fn auto_approve_applies_requests_in_order_after_the_dwell_time() {
    let plane = Plane::new(RestartPolicy::default()).await;
    let stream = plane.start("dj_night").await;
    let viewer = Arc::new(Recorder::default());
    stream.add_viewer(Box::new(RecorderSink(viewer.clone())));
    // Requests wait while auto-approve is off.
    for (id, preset) in [(1, 3), (2, 7), (3, 12)] {
        assert!(stream.community.push(request(id, preset)));
    }
    settle(Duration::from_secs(5)).await;
    assert_eq!(stream.community.queue().len(), 3);

    let t0 = Instant::now();
    stream.community.set_settings(CommunitySettings {
        auto_approve: true,
        dwell_secs: 30,
        ..Default::default()
    });
    let mut applied = Vec::new();
    while applied.len() < 3 && t0.elapsed() < Duration::from_secs(300) {
        settle(Duration::from_millis(250)).await;
        let history = stream.community.history();
        if history.len() > applied.len() {
            applied.push((history.last().unwrap().style.clone(), t0.elapsed()));
        }
    }
    let styles: Vec<&str> = applied.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(styles, ["style 3", "style 7", "style 12"], "in order");
    for pair in applied.windows(2) {
        let gap = pair[1].1 - pair[0].1;
        assert!(
            gap >= Duration::from_secs(30) && gap <= Duration::from_secs(32),
            "each style stays the dwell time: {applied:?}"
        );
    }
    assert!(stream.community.queue().is_empty());
    // Viewers saw who asked for each.
    let events = viewer.events.lock().unwrap().clone();
    let by: Vec<_> = events
        .iter()
        .filter(|e| e.contains(r#""type":"style_changed""#))
        .collect();
    assert_eq!(by.len(), 3);
    assert!(by[0].contains(r#""by":"viewer1""#), "{by:?}");
    assert_eq!(
        events
            .iter()
            .filter(|e| e.contains(r#""type":"request_decided""#) && e.contains("approved"))
            .count(),
        3
    );
}

/// Tweaks of the live style (strength, colours) change neither the history
/// nor what viewers are told; a change of style, or a style credited to a
/// requester, is recorded once.
#[tokio::test(start_paused = true)]
async fn the_history_records_changes_of_style_not_tweaks() {
    let plane = Plane::new(RestartPolicy::default()).await;
    let stream = plane.start("tweaker").await;
    let viewer = Arc::new(Recorder::default());
    stream.add_viewer(Box::new(RecorderSink(viewer.clone())));
    let changed = |viewer: &Recorder| {
        viewer
            .events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.contains(r#""type":"style_changed""#))
            .count()
    };
    let mut params = stream.settings();
    for strength in [0.9, 0.8, 0.7] {
        params.strength = strength;
        stream.set_settings(params.clone(), "Starry Swirl".into(), None);
    }
    params.preserve_color = true;
    stream.set_settings(params.clone(), "Starry Swirl".into(), None);
    assert!(
        stream.community.history().is_empty(),
        "tweaks are not changes of style"
    );
    assert_eq!(changed(&viewer), 0);

    params.source = StyleSource::Preset {
        mix: PresetMix::single(3).unwrap(),
    };
    stream.set_settings(params.clone(), "style 3".into(), Some("walt".into()));
    params.strength = 0.5;
    stream.set_settings(params.clone(), "style 3".into(), None);
    let history = stream.community.history();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].by.as_deref(), Some("walt"), "still walt's style");
    assert_eq!(changed(&viewer), 1);

    // The same style, now requested by someone else: credited, once.
    stream.set_settings(params.clone(), "style 3".into(), Some("xena".into()));
    stream.set_settings(params.clone(), "style 3".into(), Some("xena".into()));
    assert_eq!(stream.community.history().len(), 2);
    assert_eq!(changed(&viewer), 2);
    settle(Duration::from_millis(10)).await;
}
