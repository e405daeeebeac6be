//! Browser → stream actor → scheduler → worker → viewers, with real sockets.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use dreamstream_actors::frame::FrameHeader;
use gpu_node::image_io::{self, ResizeQuality};

use crate::helpers::*;
use crate::raw_ws::{RawWs, off_thread};

const WAIT: Duration = Duration::from_secs(20);

fn jpeg_of(frame: Bytes) -> Bytes {
    let (header, jpeg) = FrameHeader::split(frame).expect("a frame");
    assert!(header.is_some(), "output frames carry the header");
    jpeg
}

#[actix_web::test]
async fn a_broadcaster_sends_photos_and_a_viewer_gets_them_restyled() {
    let app = spawn_app().await;
    let mut b = connect(&app.broadcast_url("alice").await).await;
    let hello = next_json(&mut b, "hello", WAIT).await.expect("hello");
    assert_eq!(hello["username"], "alice");
    let mut v = connect(&format!("{}/ws/watch/alice", app.ws)).await;
    assert_eq!(
        next_json(&mut v, "hello", WAIT).await.expect("hello")["live"],
        true
    );

    let photos = photos();
    let mut received = Vec::new();
    for photo in photos.iter().cycle().take(12) {
        send_binary(&mut b, photo.clone()).await;
        if let Some(frame) = next_binary(&mut v, Duration::from_millis(400)).await {
            received.push(jpeg_of(frame));
        }
    }
    while received.len() < 3 {
        let frame = next_binary(&mut v, WAIT)
            .await
            .expect("restyled frames arrive");
        received.push(jpeg_of(frame));
    }
    for out in &received {
        let decoded = gpu_node::image_io::decode(out).expect("outputs decode as JPEG");
        assert_eq!((decoded.width, decoded.height), (320, 240));
        for photo in &photos {
            let d = image_distance(out, photo);
            assert!(
                d > 10.0,
                "an output is too close to an input photo ({d:.1})"
            );
        }
    }
    // The home page's thumbnail is the newest output.
    let thumb = awc::Client::new()
        .get(format!("{}/s/alice/frame.jpg", app.address))
        .send()
        .await
        .unwrap()
        .body()
        .await
        .unwrap();
    assert!(gpu_node::image_io::decode(&thumb).is_ok());
    // Counters are visible.
    let snap = app
        .state
        .control
        .get(&"alice".parse_user())
        .await
        .unwrap()
        .snapshot();
    assert!(snap.frames_out >= 3 && snap.frames_in >= 12, "{snap:?}");
}

trait ParseUser {
    fn parse_user(&self) -> dreamstream_actors::Username;
}
impl ParseUser for &str {
    fn parse_user(&self) -> dreamstream_actors::Username {
        dreamstream_actors::Username::parse(self).unwrap()
    }
}

#[actix_web::test]
async fn the_seed_json_protocol_round_trips() {
    let app = spawn_app().await;
    let mut b = connect(&app.seed_broadcast_url("stream123").await).await;
    let mut v = connect(&format!("{}/ws/viewer/stream123", app.ws)).await;
    let photo = photos().remove(1);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&photo);
    let mut got = None;
    for i in 0..20 {
        // Both forms the seed clients send: a data URL and bare base64.
        let frame = if i % 2 == 0 {
            format!("data:image/jpeg;base64,{b64}")
        } else {
            b64.clone()
        };
        send_text(
            &mut b,
            &serde_json::json!({ "type": "frame", "frame": frame }).to_string(),
        )
        .await;
        if let Some(msg) = next_json(&mut v, "frame", Duration::from_millis(500)).await {
            got = Some(msg);
            break;
        }
    }
    let msg = match got {
        Some(m) => m,
        None => next_json(&mut v, "frame", WAIT)
            .await
            .expect("a JSON frame"),
    };
    let data = msg["frame"].as_str().unwrap();
    let b64_out = data
        .strip_prefix("data:image/jpeg;base64,")
        .expect("a data URL");
    let jpeg = base64::engine::general_purpose::STANDARD
        .decode(b64_out)
        .unwrap();
    assert!(image_distance(&jpeg, &photo) > 10.0, "restyled");
}

#[actix_web::test]
async fn a_20mb_message_closes_with_1009_and_the_stream_survives_a_reconnect() {
    let app = spawn_app().await;
    let mut b = connect(&app.broadcast_url("bigfoot").await).await;
    next_json(&mut b, "hello", WAIT).await.expect("hello");
    let mut v = connect(&format!("{}/ws/watch/bigfoot", app.ws)).await;
    next_json(&mut v, "hello", WAIT).await.expect("hello");

    send_binary(&mut b, Bytes::from(vec![0u8; 20 * 1024 * 1024])).await;
    let close = loop {
        match next(&mut b, WAIT).await {
            Some(In::Close(reason)) => break reason,
            Some(_) => continue,
            None => panic!("no close frame"),
        }
    };
    let reason = close.expect("a close reason");
    assert_eq!(u16::from(reason.code), 1009);
    assert!(reason.description.unwrap_or_default().contains("limit"));

    // The stream is still live; a new connection carries on.
    assert!(
        app.state
            .control
            .get(&"bigfoot".parse_user())
            .await
            .is_some()
    );
    let mut b2 = connect(&app.broadcast_url("bigfoot").await).await;
    next_json(&mut b2, "hello", WAIT)
        .await
        .expect("hello again");
    let photo = photos().remove(0);
    let mut got = None;
    for _ in 0..20 {
        send_binary(&mut b2, photo.clone()).await;
        if let Some(f) = next_binary(&mut v, Duration::from_millis(500)).await {
            got = Some(f);
            break;
        }
    }
    assert!(
        got.is_some(),
        "the viewer kept receiving after the reconnect"
    );
}

#[actix_web::test]
async fn garbage_gets_an_error_event_and_the_next_good_frame_is_processed() {
    let app = spawn_app().await;
    let mut b = connect(&app.broadcast_url("garbage").await).await;
    next_json(&mut b, "hello", WAIT).await.expect("hello");
    let mut v = connect(&format!("{}/ws/watch/garbage", app.ws)).await;
    next_json(&mut v, "hello", WAIT).await.expect("hello");

    send_binary(&mut b, Bytes::from_static(b"this is not a picture at all")).await;
    let err = next_json(&mut b, "error", WAIT)
        .await
        .expect("an error event");
    assert_eq!(err["code"], "bad_frame");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("not a JPEG or PNG")
    );

    // A JPEG whose header is fine but whose data is cut short fails in the worker.
    let photo = photos().remove(2);
    send_binary(&mut b, photo.slice(..photo.len() / 2)).await;
    let err = next_json(&mut b, "error", WAIT)
        .await
        .expect("an error event from the worker");
    assert_eq!(err["code"], "bad_frame");

    send_binary(&mut b, photo.clone()).await;
    let out = next_binary(&mut v, WAIT)
        .await
        .expect("the next good frame is processed");
    assert!(image_distance(&jpeg_of(out), &photo) > 10.0);

    // Malformed JSON and unknown message types get clear errors too.
    send_text(&mut b, "{not json").await;
    assert_eq!(
        next_json(&mut b, "error", WAIT).await.unwrap()["code"],
        "bad_json"
    );
    send_text(&mut b, r#"{"type":"dance"}"#).await;
    let e = next_json(&mut b, "error", WAIT).await.unwrap();
    assert_eq!(e["code"], "unknown_type");
    send_text(&mut b, r#"{"type":"style","style":"99"}"#).await;
    let e = next_json(&mut b, "error", WAIT).await.unwrap();
    assert_eq!(e["code"], "bad_style");
    assert!(e["message"].as_str().unwrap().contains("out of range"));
}

#[actix_web::test]
async fn a_style_change_reaches_viewers() {
    let app = spawn_app().await;
    let mut b = connect(&app.broadcast_url("styler").await).await;
    next_json(&mut b, "hello", WAIT).await.expect("hello");
    let mut v = connect(&format!("{}/ws/watch/styler", app.ws)).await;
    next_json(&mut v, "hello", WAIT).await.expect("hello");
    send_text(
        &mut b,
        r#"{"type":"style","style":"Mosaic","strength":0.8}"#,
    )
    .await;
    let ev = next_json(&mut v, "style_changed", WAIT)
        .await
        .expect("style_changed");
    assert_eq!(ev["style"], "Mosaic");
    let settings = app
        .state
        .control
        .get(&"styler".parse_user())
        .await
        .unwrap()
        .settings();
    assert_eq!(settings.strength, 0.8);
}

#[actix_web::test]
async fn viewer_counts_follow_connections() {
    let app = spawn_app().await;
    let mut b = connect(&app.broadcast_url("counted").await).await;
    next_json(&mut b, "hello", WAIT).await.unwrap();
    let mut v1 = connect(&format!("{}/ws/watch/counted", app.ws)).await;
    assert_eq!(
        next_json(&mut v1, "viewer_count", WAIT).await.unwrap()["count"],
        1
    );
    let mut v2 = connect(&format!("{}/ws/watch/counted", app.ws)).await;
    assert_eq!(
        next_json(&mut v2, "viewer_count", WAIT).await.unwrap()["count"],
        2
    );
    assert_eq!(
        next_json(&mut v1, "viewer_count", WAIT).await.unwrap()["count"],
        2
    );
    drop(v2);
    assert_eq!(
        next_json(&mut v1, "viewer_count", WAIT).await.unwrap()["count"],
        1
    );
}

#[actix_web::test]
async fn a_stream_that_is_not_live_tells_the_viewer() {
    let app = spawn_app().await;
    app.streamer("nobody", 1).await;
    let mut v = connect(&format!("{}/ws/watch/nobody", app.ws)).await;
    let m = next_json(&mut v, "offline", WAIT).await.expect("offline");
    assert_eq!(m["username"], "nobody");
}

#[actix_web::test]
async fn a_slow_viewer_does_not_slow_the_stream_or_other_viewers() {
    let app = spawn_app().await;
    let mut b = connect(&app.broadcast_url("slowpoke").await).await;
    next_json(&mut b, "hello", WAIT).await.unwrap();
    let mut fast = connect(&format!("{}/ws/watch/slowpoke", app.ws)).await;
    next_json(&mut fast, "hello", WAIT).await.unwrap();

    // A viewer that completes the handshake and then never reads, with a tiny
    // receive buffer so the server's writes back up quickly.
    let addr: std::net::SocketAddr = app.address.trim_start_matches("http://").parse().unwrap();
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    let mut slow = RawWs::new(sock.into(), WAIT);
    let (slow, head) = off_thread(move || {
        let head = slow.upgrade(&addr.to_string(), "/ws/watch/slowpoke");
        (slow, head)
    })
    .await;
    assert!(head.starts_with("http/1.1 101"), "{head}");

    let photos = photos();
    let mut fast_got = 0;
    for photo in photos.iter().cycle().take(60) {
        send_binary(&mut b, photo.clone()).await;
        while let Some(In::Binary(_)) = next(&mut fast, Duration::from_millis(120)).await {
            fast_got += 1;
        }
    }
    let snap = app
        .state
        .control
        .get(&"slowpoke".parse_user())
        .await
        .unwrap()
        .snapshot();
    assert!(
        snap.viewer_drops > 0,
        "the slow viewer missed frames: {snap:?}"
    );
    assert!(
        fast_got as u64 + 3 >= snap.frames_out,
        "the fast viewer got {fast_got} of {} frames",
        snap.frames_out
    );
    drop(slow);
}

/// `jpeg` with its frame header (SOF) claiming `width`×`height`.
fn claiming_size(jpeg: &Bytes, width: u16, height: u16) -> Bytes {
    let mut b = jpeg.to_vec();
    let mut i = 2;
    while i + 9 < b.len() {
        assert_eq!(b[i], 0xFF, "a marker");
        let marker = b[i + 1];
        let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        if (0xC0..=0xC2).contains(&marker) {
            b[i + 5..i + 7].copy_from_slice(&height.to_be_bytes());
            b[i + 7..i + 9].copy_from_slice(&width.to_be_bytes());
            return Bytes::from(b);
        }
        i += 2 + len;
    }
    panic!("no frame header");
}

/// Issue 15.12: a frame far larger than the stream's output needs is
/// refused from its header (no worker decodes 36 megapixels), with the limit
/// in words; 1080p is always accepted; the stream goes on.
#[actix_web::test]
async fn a_frame_larger_than_the_stream_needs_is_refused_from_its_header() {
    let app = spawn_app().await;
    let mut b = connect(&app.broadcast_url("huge").await).await;
    next_json(&mut b, "hello", WAIT).await.expect("hello");
    let mut v = connect(&format!("{}/ws/watch/huge", app.ws)).await;
    next_json(&mut v, "hello", WAIT).await.expect("hello");
    let photo = photos().remove(0);

    send_binary(&mut b, claiming_size(&photo, 6000, 6000)).await;
    let err = next_json(&mut b, "error", WAIT).await.expect("an error");
    assert_eq!(err["code"], "frame_too_large", "{err}");
    let message = err["message"].as_str().unwrap();
    let limit =
        dreamstream::web::ws::input_side_limit(app.state.config.default_style.clone().max_side);
    assert!(
        message.contains("6000×6000") && message.contains(&format!("at most {limit} pixels")),
        "{message}"
    );
    // The stream goes on, and a 1080p frame (a camera, OBS) is welcome.
    let img = image_io::decode(&photo).unwrap();
    let full_hd = image_io::resize(&img, 1920, 1080, ResizeQuality::Fast);
    let full_hd = Bytes::from(image_io::encode_jpeg(&full_hd, 80).unwrap());
    send_binary(&mut b, full_hd).await;
    let out = next_binary(&mut v, WAIT).await.expect("the stream goes on");
    assert!(!out.is_empty());
}
