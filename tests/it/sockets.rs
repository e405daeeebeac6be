//! WebSocket connections written directly (src/web/ws/direct.rs, session.rs):
//! the protocol holds byte for byte, under load and at the edges.

use std::io::Write;
use std::time::Duration;

use awc::ws;
use bytes::Bytes;
use dreamstream_actors::frame::FrameHeader;
use futures_util::{SinkExt, StreamExt};

use crate::helpers::*;
use crate::raw_ws::{RawWs, masked_binary, off_thread};

const WAIT: Duration = Duration::from_secs(20);

/// The next frame of any kind (pings included), or None after `timeout`.
async fn raw_next(conn: &mut Conn, timeout: Duration) -> Option<ws::Frame> {
    tokio::time::timeout(timeout, conn.next())
        .await
        .ok()?
        .map(|f| f.expect("a valid WebSocket frame"))
}

/// The code of the close frame that comes next (skipping other frames).
async fn close_code(conn: &mut Conn) -> Option<ws::CloseCode> {
    loop {
        if let ws::Frame::Close(reason) = raw_next(conn, WAIT).await.expect("a close frame") {
            return reason.map(|r| r.code);
        }
    }
}

#[actix_web::test]
async fn the_handshake_is_followed_by_whole_websocket_frames() {
    let app = spawn_app().await;
    let mut b = connect(&app.broadcast_url("rawview").await).await;
    next_json(&mut b, "hello", WAIT).await.unwrap();
    send_binary(&mut b, photos()[0].clone()).await;

    // A hand-written client: the response head must end before the first
    // frame, with nothing of ours written into the middle of it. The
    // broadcaster keeps sending meanwhile.
    let addr = app.address.trim_start_matches("http://").to_string();
    let feeder = actix_web::rt::spawn(async move {
        for photo in photos().iter().cycle() {
            send_binary(&mut b, photo.clone()).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    off_thread(move || {
        let mut raw = RawWs::new(std::net::TcpStream::connect(&addr).unwrap(), WAIT);
        let head = raw.upgrade(&addr, "/ws/watch/rawview");
        assert!(head.starts_with("http/1.1 101"), "{head}");
        // RFC 6455's example key and its accept value.
        assert!(head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="));

        // Then: the hello (text), and the stream's frames (binary, DSF1 + JPEG).
        let (op, hello) = raw.frame().expect("the hello");
        assert_eq!(op, 0x81, "a final text frame");
        let hello: serde_json::Value = serde_json::from_slice(&hello).unwrap();
        assert_eq!(hello["type"], "hello");
        let mut binary = 0;
        while binary < 2 {
            let (op, payload) = raw.frame().expect("frames while the broadcaster sends");
            match op {
                0x81 => {
                    serde_json::from_slice::<serde_json::Value>(&payload).expect("JSON events");
                }
                0x82 => {
                    let (header, jpeg) = FrameHeader::split(Bytes::from(payload)).unwrap();
                    assert!(header.is_some());
                    assert_eq!(&jpeg[..2], b"\xFF\xD8", "a JPEG");
                    binary += 1;
                }
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    })
    .await;
    feeder.abort();
}

#[actix_web::test]
async fn pings_are_answered_and_messages_get_an_error_event() {
    let app = spawn_app().await;
    let mut b = connect(&app.broadcast_url("pinged").await).await;
    next_json(&mut b, "hello", WAIT).await.unwrap();
    let mut v = connect(&format!("{}/ws/watch/pinged", app.ws)).await;
    next_json(&mut v, "hello", WAIT).await.unwrap();

    v.send(ws::Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    loop {
        match raw_next(&mut v, WAIT).await.expect("a pong") {
            ws::Frame::Pong(p) => {
                assert_eq!(&p[..], b"are you there");
                break;
            }
            ws::Frame::Text(_) => {}
            other => panic!("expected a pong, got {other:?}"),
        }
    }
    send_text(&mut v, r#"{"type":"hi"}"#).await;
    let err = next_json(&mut v, "error", WAIT)
        .await
        .expect("an error event");
    assert_eq!(err["code"], "viewer_message");
    // The connection goes on: a frame still arrives.
    send_binary(&mut b, photos()[0].clone()).await;
    assert!(next_binary(&mut v, WAIT).await.is_some());
}

#[actix_web::test]
async fn a_viewer_close_is_answered_with_the_same_code() {
    let app = spawn_app().await;
    let mut b = connect(&app.broadcast_url("closer").await).await;
    next_json(&mut b, "hello", WAIT).await.unwrap();
    let mut v = connect(&format!("{}/ws/watch/closer", app.ws)).await;
    next_json(&mut v, "viewer_count", WAIT).await.unwrap();
    v.send(ws::Message::Close(Some(ws::CloseCode::Away.into())))
        .await
        .unwrap();
    assert_eq!(close_code(&mut v).await, Some(ws::CloseCode::Away));
    // The stream forgets the viewer: the broadcaster hears the count drop to 0.
    loop {
        let count = next_json(&mut b, "viewer_count", WAIT)
            .await
            .expect("count");
        if count["count"] == 0 {
            break;
        }
    }
}

#[actix_web::test]
async fn a_viewer_message_over_64k_closes_with_1009() {
    let app = spawn_app().await;
    let mut b = connect(&app.broadcast_url("chatty").await).await;
    next_json(&mut b, "hello", WAIT).await.unwrap();
    let mut v = connect(&format!("{}/ws/watch/chatty", app.ws)).await;
    next_json(&mut v, "hello", WAIT).await.unwrap();
    v.send(ws::Message::Binary(Bytes::from(vec![0u8; 100_000])))
        .await
        .unwrap();
    assert_eq!(close_code(&mut v).await, Some(ws::CloseCode::Size));
    // The stream is unharmed: a new viewer still gets frames.
    let mut v2 = connect(&format!("{}/ws/watch/chatty", app.ws)).await;
    send_binary(&mut b, photos()[0].clone()).await;
    assert!(next_binary(&mut v2, WAIT).await.is_some());
}

#[actix_web::test]
async fn when_the_stream_ends_viewers_hear_why_and_wait_and_the_broadcaster_is_closed_normally() {
    let app = spawn_app().await;
    let mut b = connect(&app.broadcast_url("ender").await).await;
    next_json(&mut b, "hello", WAIT).await.unwrap();
    let mut v = connect(&format!("{}/ws/watch/ender", app.ws)).await;
    next_json(&mut v, "hello", WAIT).await.unwrap();
    send_text(&mut b, r#"{"type":"stop"}"#).await;
    let ended = next_json(&mut v, "ended", WAIT).await.expect("ended");
    assert_eq!(ended["reason"], "stopped");
    // The broadcaster hears it too, and its connection is closed normally...
    assert_eq!(
        next_json(&mut b, "ended", WAIT).await.expect("ended")["reason"],
        "stopped"
    );
    assert_eq!(close_code(&mut b).await, Some(ws::CloseCode::Normal));
    assert!(raw_next(&mut b, WAIT).await.is_none());
    // ...while the viewer stays, waiting for the next stream of the channel.
    let user = dreamstream_actors::Username::parse("ender").unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while app.state.control.registry.waiting(&user) != 1 {
        assert!(std::time::Instant::now() < deadline, "the viewer waits");
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    let mut again = connect(&app.broadcast_url("ender").await).await;
    next_json(&mut again, "hello", WAIT).await.unwrap();
    assert_eq!(
        next_json(&mut v, "hello", WAIT).await.expect("hello")["live"],
        true
    );
}

#[actix_web::test]
async fn viewers_joining_while_frames_flow_get_whole_frames_in_order() {
    let app = spawn_app_with(|s| {
        // Frames unchanged: many frames per second, so joins race with fan-out.
        s.worker.processor = dreamstream::settings::LocalProcessor::Passthrough;
    })
    .await;
    let mut b = connect(&app.broadcast_url("crowd").await).await;
    next_json(&mut b, "hello", WAIT).await.unwrap();
    let photos = photos();
    let sender = actix_web::rt::spawn(async move {
        for (i, photo) in photos.iter().cycle().take(400).enumerate() {
            send_binary(&mut b, photo.clone()).await;
            if i % 4 == 0 {
                actix_web::rt::time::sleep(Duration::from_millis(5)).await;
            }
        }
        b
    });
    let mut viewers = Vec::new();
    for _ in 0..24 {
        let url = format!("{}/ws/watch/crowd", app.ws);
        viewers.push(actix_web::rt::spawn(async move {
            let mut v = connect(&url).await;
            let mut last = 0;
            let mut got = 0;
            while let Some(frame) = next_binary(&mut v, Duration::from_secs(3)).await {
                let (header, jpeg) = FrameHeader::split(frame).expect("a whole frame");
                let seq = header.expect("DSF1 header").seq;
                assert!(seq > last, "sequence numbers increase: {seq} after {last}");
                assert_eq!(&jpeg[..2], b"\xFF\xD8");
                assert_eq!(&jpeg[jpeg.len() - 2..], b"\xFF\xD9", "the JPEG is complete");
                last = seq;
                got += 1;
            }
            got
        }));
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    let all_done = async {
        let _b = sender.await.unwrap();
        let mut counts = Vec::new();
        for v in viewers {
            counts.push(v.await.unwrap());
        }
        counts
    };
    let counts = tokio::time::timeout(Duration::from_secs(120), all_done)
        .await
        .expect("the viewers finish (a corrupt stream would leave them waiting)");
    assert!(
        counts.iter().all(|&got| got > 0),
        "every viewer got frames: {counts:?}"
    );
}

#[actix_web::test]
async fn a_viewer_socket_on_a_kept_alive_connection_works() {
    // As behind nginx, which sends an upgrade on a kept-alive upstream
    // connection after earlier requests' responses have arrived.
    let app = spawn_app().await;
    let mut b = connect(&app.broadcast_url("reuser").await).await;
    next_json(&mut b, "hello", WAIT).await.unwrap();
    let addr = app.address.trim_start_matches("http://").to_string();
    off_thread(move || {
        let mut raw = RawWs::new(std::net::TcpStream::connect(&addr).unwrap(), WAIT);
        for _ in 0..2 {
            write!(raw.s, "GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
            while !String::from_utf8_lossy(&raw.rest).contains(r#""status""#) {
                assert!(raw.fill(), "closed after a kept-alive request");
            }
            raw.rest.clear();
        }
        let head = raw.upgrade(&addr, "/ws/watch/reuser");
        assert!(head.starts_with("http/1.1 101"), "{head}");
        let (op, hello) = raw.frame().expect("the hello");
        assert_eq!(op, 0x81, "a whole text frame right after the head");
        let hello: serde_json::Value = serde_json::from_slice(&hello).unwrap();
        assert_eq!(hello["type"], "hello");
    })
    .await;
}

#[actix_web::test]
async fn a_broadcaster_that_never_reads_does_not_stall_its_stream() {
    let app = spawn_app_with(|s| {
        s.worker.processor = dreamstream::settings::LocalProcessor::Passthrough;
    })
    .await;
    let url = app.broadcast_url("deafcaster").await;
    let path = url
        .split_once("/ws/")
        .map(|(_, p)| format!("/ws/{p}"))
        .unwrap();
    let addr: std::net::SocketAddr = app.address.trim_start_matches("http://").parse().unwrap();
    // A script that sends frames and never reads its acks, events or the
    // preview, with a tiny receive buffer so the server's writes back up fast.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    // A stalled server shows as a failed write, not a hung test.
    let mut raw = RawWs::new(sock.into(), Duration::from_secs(10));
    let head = off_thread(move || {
        let head = raw.upgrade(&addr.to_string(), &path);
        (raw, head)
    });
    let (raw, head) = head.await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    let mut b = raw.s;
    let mut v = connect(&format!("{}/ws/watch/deafcaster", app.ws)).await;
    next_json(&mut v, "hello", WAIT).await.unwrap();

    // Far more preview bytes than any buffer holds: 200 frames of ~17 KB.
    let frames: Vec<Vec<u8>> = photos().iter().map(|p| masked_binary(p)).collect();
    let writer = std::thread::spawn(move || {
        for frame in frames.iter().cycle().take(200) {
            b.write_all(frame)
                .expect("the server keeps reading the broadcaster");
            std::thread::sleep(Duration::from_millis(5));
        }
        b
    });
    let mut got = 0;
    while let Some(frame) = next_binary(&mut v, Duration::from_secs(5)).await {
        FrameHeader::split(frame).expect("a whole frame");
        got += 1;
    }
    let _b = writer.join().expect("the broadcaster was never stalled");
    let snap = app
        .state
        .control
        .get(&dreamstream_actors::Username::parse("deafcaster").unwrap())
        .await
        .expect("still live")
        .snapshot();
    assert_eq!(
        snap.frames_in, 200,
        "every frame reached the stream: {snap:?}"
    );
    // Outputs: fewer than inputs (a frame arriving while the worker is busy
    // replaces the waiting one), and the viewer got them all.
    assert!(snap.frames_out >= 20, "the stream kept producing: {snap:?}");
    assert!(
        got + 3 >= snap.frames_out,
        "the viewer kept receiving: {got} of {} frames",
        snap.frames_out
    );
}

/// `{"type":"frames","send":false}` stops a viewer's pictures but not its
/// events (and it stops counting); `send: true` brings them back with the
/// next frame; a malformed switch gets the usual error event.
#[actix_web::test]
async fn a_viewer_can_turn_the_pictures_off_and_on_and_keeps_the_events() {
    let app = spawn_app_with(|s| {
        s.worker.processor = dreamstream::settings::LocalProcessor::Passthrough;
    })
    .await;
    let mut b = connect(&app.broadcast_url("toggler").await).await;
    next_json(&mut b, "hello", WAIT).await.unwrap();
    let feeder = actix_web::rt::spawn(async move {
        for photo in photos().iter().cycle() {
            send_binary(&mut b, photo.clone()).await;
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let stream = app
        .state
        .control
        .get(&dreamstream_actors::Username::parse("toggler").unwrap())
        .await
        .expect("live");
    let mut v = connect(&format!("{}/ws/watch/toggler", app.ws)).await;
    next_json(&mut v, "hello", WAIT).await.unwrap();
    assert!(
        next_binary(&mut v, WAIT).await.is_some(),
        "pictures at first"
    );
    assert_eq!(stream.viewer_count(), 1);

    // Off: the count drops to 0 (the viewer hears it: events still come);
    // what was already on its way may arrive before that event, nothing after.
    send_text(&mut v, r#"{"type":"frames","send":false}"#).await;
    loop {
        match next(&mut v, WAIT).await.expect("the new count") {
            In::Json(m) if m["type"] == "viewer_count" && m["count"] == 0 => break,
            In::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
    assert_eq!(
        stream.viewer_count(),
        0,
        "a viewer without pictures is not counted"
    );
    // Another viewer joins (it gets pictures: frames do flow), and the first
    // one hears about it without getting a single picture.
    let mut w = connect(&format!("{}/ws/watch/toggler", app.ws)).await;
    next_json(&mut w, "hello", WAIT).await.unwrap();
    for _ in 0..5 {
        assert!(next_binary(&mut w, WAIT).await.is_some());
    }
    // A malformed switch: the error event; nothing changes.
    send_text(&mut v, r#"{"type":"frames","send":"no"}"#).await;
    let (mut counts, mut error) = (Vec::new(), None);
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    while let Some(got) = next(
        &mut v,
        until.saturating_duration_since(tokio::time::Instant::now()),
    )
    .await
    {
        match got {
            In::Binary(_) => panic!("a picture while the pictures are off"),
            In::Json(m) if m["type"] == "viewer_count" => counts.push(m["count"].clone()),
            In::Json(m) if m["type"] == "error" => error = Some(m),
            In::Json(_) => {}
            In::Close(c) => panic!("closed: {c:?}"),
        }
        if tokio::time::Instant::now() >= until {
            break;
        }
    }
    assert_eq!(counts.last(), Some(&serde_json::json!(1)), "{counts:?}");
    assert_eq!(error.expect("an error event")["code"], "viewer_message");

    // On: counted again, and pictures resume.
    send_text(&mut v, r#"{"type":"frames","send":true}"#).await;
    assert!(next_binary(&mut v, WAIT).await.is_some(), "pictures again");
    while next_json(&mut w, "viewer_count", WAIT)
        .await
        .expect("count")["count"]
        != 2
    {}
    assert_eq!(stream.viewer_count(), 2);
    feeder.abort();
}

/// The seed protocol's viewer turns its `frame` messages off and on the same
/// way; its other messages keep coming.
#[actix_web::test]
async fn a_seed_viewer_can_turn_its_frame_messages_off_and_on() {
    use base64::Engine;
    let app = spawn_app_with(|s| {
        s.worker.processor = dreamstream::settings::LocalProcessor::Passthrough;
    })
    .await;
    let mut b = connect(&app.seed_broadcast_url("seedoff").await).await;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&photos()[0]);
    let message = serde_json::json!({ "type": "frame", "frame": b64 }).to_string();
    let feeder = actix_web::rt::spawn(async move {
        loop {
            send_text(&mut b, &message).await;
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut v = connect(&format!("{}/ws/viewer/seedoff", app.ws)).await;
    assert!(next_json(&mut v, "frame", WAIT).await.is_some());
    send_text(&mut v, r#"{"type":"frames","send":false}"#).await;
    while next_json(&mut v, "viewer_count", WAIT)
        .await
        .expect("the count")["count"]
        != 0
    {}
    let mut w = connect(&format!("{}/ws/viewer/seedoff", app.ws)).await;
    assert!(
        next_json(&mut w, "frame", WAIT).await.is_some(),
        "frames flow"
    );
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    let mut events = 0;
    while let Some(got) = next(
        &mut v,
        until.saturating_duration_since(tokio::time::Instant::now()),
    )
    .await
    {
        match got {
            In::Json(m) if m["type"] == "frame" => panic!("a frame while the pictures are off"),
            In::Json(_) => events += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(events > 0, "events keep coming (the new viewer count)");
    send_text(&mut v, r#"{"type":"frames","send":true}"#).await;
    assert!(
        next_json(&mut v, "frame", WAIT).await.is_some(),
        "frames again"
    );
    feeder.abort();
}
