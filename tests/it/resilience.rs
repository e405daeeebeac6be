//! The live path through ordinary faults (issue 14): broadcasters that
//! reconnect, viewers that come early, actors that crash or hang, a database
//! that fails. Real server, real sockets, the in-process worker.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use dreamstream::settings::LocalProcessor;
use dreamstream::web::AppState;
use dreamstream_actors::frame::FrameHeader;
use dreamstream_actors::scheduler::SchedulerMsg;
use dreamstream_actors::supervisor::SupervisorMsg;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(20);

/// A DSF1 frame with the client's own sequence number.
fn with_seq(seq: u64, jpeg: &Bytes) -> Bytes {
    let mut msg = BytesMut::new();
    FrameHeader {
        seq,
        captured_ms: dreamstream_actors::frame::unix_ms(),
        process_us: 0,
        latency_us: 0,
    }
    .write(&mut msg);
    msg.extend_from_slice(jpeg);
    msg.freeze()
}

/// The stream's sequence number of an output frame.
fn seq_of(frame: Bytes) -> u64 {
    let (header, _) = FrameHeader::split(frame).expect("a frame");
    header.expect("output frames carry the header").seq
}

/// Sends frames (client numbering from `first`) until the viewer receives
/// one; returns how long that took from the first frame sent.
async fn until_viewer_gets_a_frame(
    b: &mut Conn,
    v: &mut Conn,
    first: u64,
    photo: &Bytes,
) -> (Duration, u64) {
    let started = Instant::now();
    let mut seq = first;
    loop {
        send_binary(b, with_seq(seq, photo)).await;
        seq = seq.saturating_add(1);
        if let Some(frame) = next_binary(v, Duration::from_millis(70)).await {
            return (started.elapsed(), seq_of(frame));
        }
        assert!(started.elapsed() < WAIT, "no frame reached the viewer");
    }
}

/// A live stream `name` with a broadcaster and a viewer that has received
/// restyled frames, and nothing more on its way.
async fn live_with_a_viewer(app: &TestApp, name: &str, photo: &Bytes) -> (Conn, Conn) {
    let url = app.broadcast_url(name).await;
    let mut v = connect(&format!("{}/ws/watch/{name}", app.ws)).await;
    let mut b = connect(&url).await;
    next_json(&mut b, "hello", WAIT).await.expect("hello");
    until_viewer_gets_a_frame(&mut b, &mut v, 1, photo).await;
    while next_binary(&mut v, Duration::from_millis(300))
        .await
        .is_some()
    {}
    (b, v)
}

#[actix_web::test]
async fn five_broadcaster_reconnects_in_a_row_keep_frames_flowing() {
    let app = spawn_app().await;
    let url = app.broadcast_url("phoenix").await;
    let photo = photos()[1].clone();
    let mut v = connect(&format!("{}/ws/watch/phoenix", app.ws)).await;
    let mut last_seen = 0;
    for round in 0..6 {
        let mut b = connect(&url).await;
        next_json(&mut b, "hello", WAIT).await.expect("hello");
        // Every connection numbers its frames from 1 again, as clients do.
        let (took, seq) = until_viewer_gets_a_frame(&mut b, &mut v, 1, &photo).await;
        assert!(
            took < Duration::from_secs(1),
            "round {round}: the first restyled frame took {took:?}"
        );
        assert!(
            seq > last_seen,
            "output is strictly increasing ({seq} after {last_seen})"
        );
        last_seen = seq;
        // A few more frames, then the connection drops.
        for i in 0..5 {
            send_binary(&mut b, with_seq(100 + i, &photo)).await;
        }
        drop(b);
        // The server notices the broadcaster is gone before the next round.
        let stream = app.state.control.get(&user("phoenix")).await.expect("live");
        poll(|| !stream.broadcaster_connected()).await;
    }
}

#[actix_web::test]
async fn a_client_sequence_number_of_u64_max_freezes_nothing() {
    let app = spawn_app().await;
    let url = app.broadcast_url("maxseq").await;
    let photo = photos()[0].clone();
    let mut v = connect(&format!("{}/ws/watch/maxseq", app.ws)).await;
    let mut b = connect(&url).await;
    next_json(&mut b, "hello", WAIT).await.expect("hello");
    let (_, first) = until_viewer_gets_a_frame(&mut b, &mut v, u64::MAX, &photo).await;
    // The ack echoes the client's number.
    let (_, second) = until_viewer_gets_a_frame(&mut b, &mut v, 1, &photo).await;
    assert!(second > first, "{second} after {first}");
    let (_, third) = until_viewer_gets_a_frame(&mut b, &mut v, u64::MAX - 1, &photo).await;
    assert!(third > second, "{third} after {second}");
}

#[actix_web::test]
async fn a_viewer_that_comes_before_go_live_waits_and_gets_frames() {
    let app = spawn_app().await;
    let url = app.broadcast_url("early").await;
    for path in ["ws/watch", "ws/viewer"] {
        let mut v = connect(&format!("{}/{path}/early", app.ws)).await;
        let offline = next_json(&mut v, "offline", WAIT).await.expect("offline");
        assert_eq!(offline["waiting"], true);
        assert_eq!(app.state.control.registry.waiting(&user("early")), 1);

        let mut b = connect(&url).await;
        next_json(&mut b, "hello", WAIT)
            .await
            .expect("broadcaster hello");
        let hello = next_json(&mut v, "hello", WAIT)
            .await
            .expect("viewer hello on go-live");
        assert_eq!(hello["live"], true);
        let photo = photos()[2].clone();
        let mut got = false;
        for seq in 1..200 {
            send_binary(&mut b, with_seq(seq, &photo)).await;
            let frame = match path {
                "ws/watch" => next_binary(&mut v, Duration::from_millis(70))
                    .await
                    .is_some(),
                _ => next_json(&mut v, "frame", Duration::from_millis(70))
                    .await
                    .is_some(),
            };
            if frame {
                got = true;
                break;
            }
        }
        assert!(got, "{path}: the early viewer received frames");

        // The stream ends: `ended`, and the viewer waits again on the same socket.
        send_text(&mut b, r#"{"type":"stop"}"#).await;
        next_json(&mut v, "ended", WAIT).await.expect("ended");
        poll(|| app.state.control.registry.waiting(&user("early")) == 1).await;
        drop(v);
        poll(|| app.state.control.registry.waiting(&user("early")) == 0).await;
    }
}

#[actix_web::test]
async fn a_channel_that_does_not_exist_gets_an_error_and_a_close() {
    let app = spawn_app().await;
    let mut v = connect(&format!("{}/ws/watch/nosuchuser", app.ws)).await;
    let error = next_json(&mut v, "error", WAIT)
        .await
        .expect("an error event");
    assert_eq!(error["code"], "no_such_channel");
    match next(&mut v, WAIT).await {
        Some(In::Close(Some(reason))) => assert_eq!(u16::from(reason.code), 1000),
        other => panic!("expected a close, got {other:?}"),
    }
}

#[actix_web::test]
async fn waiting_viewers_are_bounded_per_channel_and_per_address() {
    let app = spawn_app_with(|s| {
        s.stream.max_waiting_per_channel = 2;
        s.stream.max_waiting_per_address = 3;
    })
    .await;
    app.streamer("busy", 1).await;
    app.streamer("other", 1).await;
    let refused = |path: &'static str| {
        let ws = app.ws.clone();
        async move {
            let mut v = connect(&format!("{ws}/ws/watch/{path}")).await;
            let error = next_json(&mut v, "error", WAIT).await.expect("an error");
            assert_eq!(error["code"], "too_many_waiting");
            match next(&mut v, WAIT).await {
                Some(In::Close(Some(reason))) => assert_eq!(u16::from(reason.code), 1013),
                other => panic!("expected close 1013, got {other:?}"),
            }
        }
    };
    let mut waiting = Vec::new();
    for channel in ["busy", "busy"] {
        let mut v = connect(&format!("{}/ws/watch/{channel}", app.ws)).await;
        next_json(&mut v, "offline", WAIT).await.expect("offline");
        waiting.push(v);
    }
    // The channel's room is full...
    refused("busy").await;
    // ...another channel still has room for this address, once.
    let mut v = connect(&format!("{}/ws/watch/other", app.ws)).await;
    next_json(&mut v, "offline", WAIT).await.expect("offline");
    waiting.push(v);
    refused("other").await;
    assert_eq!(app.state.control.registry.waiting(&user("busy")), 2);
    drop(waiting);
    poll(|| app.state.control.registry.counts().1 == 0).await;
}

/// Injected panics print their message only. With `RUST_BACKTRACE` set (as
/// nextest sets it), the default hook captures and symbolises a backtrace of
/// this debug binary while the panicking actor is still dying, which took up
/// to 20 s on a loaded CI machine and made the restart look slow; a service
/// without `RUST_BACKTRACE` pays nothing of the kind. Each test is a process
/// of its own under nextest, so the hook is this test's alone.
fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| eprintln!("{info}")));
}

#[actix_web::test]
async fn a_panicking_scheduler_is_restarted_and_frames_flow_again_within_a_second() {
    quiet_panics();
    // Frames come back unchanged: on a loaded machine a neural-style job can
    // outlast the drain below, and its late frame would look like a restart.
    let app = spawn_app_with(|s| s.worker.processor = LocalProcessor::Passthrough).await;
    let photo = photos()[3].clone();
    let (mut b, mut v) = live_with_a_viewer(&app, "sched", &photo).await;
    let before = app.state.control.actors().scheduler.get().get_id();
    let cast = Instant::now();
    app.state
        .control
        .actors()
        .scheduler
        .cast(SchedulerMsg::Crash);
    // Measured from the restart (when the root has put a new scheduler in
    // place), not from the cast.
    let current = || app.state.control.actors().scheduler.get().get_id();
    while current() == before {
        assert!(cast.elapsed() < WAIT, "the scheduler never crashed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let restarted = Instant::now();
    until_viewer_gets_a_frame(&mut b, &mut v, 1000, &photo).await;
    let took = restarted.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "frames flowed again {took:?} after the restart (the crash was cast {:?} before it)",
        restarted - cast
    );
    // The new scheduler knows the worker again.
    let snap = app
        .state
        .control
        .scheduler_snapshot()
        .await
        .expect("answers");
    assert_eq!(snap.workers.len(), 1, "{snap:?}");
}

#[actix_web::test]
async fn a_panicking_stream_supervisor_is_restarted_with_its_streams() {
    quiet_panics();
    let app = spawn_app().await;
    let photo = photos()[0].clone();
    let (mut b, mut v) = live_with_a_viewer(&app, "supervised", &photo).await;
    let before = app.state.control.actors().supervisor.get().get_id();
    app.state
        .control
        .actors()
        .supervisor
        .cast(SupervisorMsg::Crash);
    poll(|| app.state.control.actors().supervisor.get().get_id() != before).await;
    // The same stream goes on, with a new actor, for the same viewer.
    while next_binary(&mut v, Duration::from_millis(50))
        .await
        .is_some()
    {}
    until_viewer_gets_a_frame(&mut b, &mut v, 1, &photo).await;
    let stream = app
        .state
        .control
        .get(&user("supervised"))
        .await
        .expect("still live");
    assert!(stream.snapshot().restarts >= 1);
    assert!(app.state.control.ping(Duration::from_secs(1)).await.is_ok());
}

#[actix_web::test]
async fn a_killed_stream_supervisor_makes_the_process_exit_non_zero() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = dreamstream::app::Application::build(test_settings(dir.path()))
        .await
        .expect("builds");
    let state: actix_web::web::Data<AppState> = app.state.clone();
    let run = actix_web::rt::spawn(app.run_until_stopped());
    state.control.actors().supervisor.get().kill();
    let outcome = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the server stops")
        .expect("no panic");
    let error = outcome.expect_err("an error, so main exits non-zero");
    assert!(
        format!("{error:#}").contains("stream supervisor"),
        "{error:#}"
    );
}

#[actix_web::test]
async fn readyz_is_503_naming_the_part_while_the_control_plane_is_stuck() {
    let app = spawn_app().await;
    let client = awc::Client::new();
    let ready = client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    // The supervisor is busy for longer than the probe waits.
    app.state
        .control
        .actors()
        .supervisor
        .cast(SupervisorMsg::Stall(Duration::from_secs(4)));
    let mut stuck = client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(stuck.status(), 503);
    let body: serde_json::Value = stuck.json().await.unwrap();
    assert_eq!(
        body["control_plane"],
        "the stream supervisor is not answering"
    );
    assert_eq!(body["ready"], false);
}

on_both_databases!(
    a_failing_database_on_stream_start_is_a_503_without_sql,
    |db| async move {
        use sea_orm::ConnectionTrait;
        let app = spawn_app_on(db, |_| {}).await;
        let url = app.broadcast_url("dbfail").await;
        // The stream log cannot be written any more.
        app.state
            .db
            .execute_unprepared("ALTER TABLE streams RENAME TO streams_gone")
            .await
            .expect("rename the table");
        // The handshake is refused: a generic message and a request id, no SQL.
        let (status, body) = raw_handshake(&url).await;
        assert_eq!(status, 503, "{body}");
        let message = body["error"].as_str().unwrap_or_default().to_lowercase();
        assert!(message.contains("try again"), "{body}");
        for leak in ["sql", "table", "streams", "relation", "no such"] {
            assert!(!message.contains(leak), "internal text leaked: {body}");
        }
        assert!(
            body["request_id"].as_str().is_some_and(|id| !id.is_empty()),
            "{body}"
        );
    }
);

/// A WebSocket handshake over a plain TCP socket: the status and JSON body
/// of a refusal.
async fn raw_handshake(url: &str) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("ws://").expect("a ws:// URL");
    let (host, path) = rest.split_once('/').expect("a path");
    let mut tcp = tokio::net::TcpStream::connect(host).await.expect("connect");
    let request = format!(
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
            if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&answer[..end]).to_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if answer.len() >= end + 4 + length {
                    break;
                }
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::String(body.into())),
    )
}

fn user(name: &str) -> dreamstream_actors::Username {
    dreamstream_actors::Username::parse(name).unwrap()
}

/// Polls `cond` every 10 ms for up to 10 s.
async fn poll(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "condition not reached in 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[actix_web::test]
async fn a_worker_that_dies_is_restarted_by_its_pool_and_frames_flow_again() {
    let app = spawn_app().await;
    let photo = photos()[1].clone();
    let (mut b, mut v) = live_with_a_viewer(&app, "pooled", &photo).await;
    app.state
        .control
        .actors()
        .pool
        .cast(gpu_node::pool::PoolMsg::CrashWorker(0));
    let (took, _) = until_viewer_gets_a_frame(&mut b, &mut v, 1, &photo).await;
    assert!(
        took < Duration::from_secs(2),
        "frames flowed again after {took:?}"
    );
    let snap = app
        .state
        .control
        .scheduler_snapshot()
        .await
        .expect("answers");
    assert_eq!(
        snap.workers.len(),
        1,
        "the restarted worker replaced the dead one: {snap:?}"
    );
}
