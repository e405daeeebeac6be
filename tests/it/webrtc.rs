//! WHIP ingest and WHEP playback (issue 19): FFmpeg's WHIP muxer as the
//! outside publisher, str0m peers (`dreamstream::media::client`) as WHEP
//! viewers and as a publisher whose packets we control; every refusal.

use std::sync::atomic::Ordering;
use std::time::Duration;

use dreamstream::media::client::{
    ClientError, Peer, PeerEvent, PeerOptions, VideoSink, VideoSource,
};
use dreamstream::settings::LocalProcessor;
use dreamstream_actors::Username;
use gpu_node::image_io::{self, RgbImage};

use crate::helpers::*;

fn user(name: &str) -> Username {
    Username::parse(name).unwrap()
}

/// The test camera: the photos as RGB, 320x240.
fn camera() -> Vec<RgbImage> {
    photos()
        .iter()
        .map(|jpeg| image_io::decode(jpeg).expect("photo decodes"))
        .collect()
}

async fn passthrough_app(change: impl FnOnce(&mut dreamstream::settings::Settings)) -> TestApp {
    spawn_app_with(|s| {
        s.worker.processor = LocalProcessor::Passthrough;
        change(s);
    })
    .await
}

/// Polls `cond` every 50 ms for up to `secs`.
async fn eventually(secs: u64, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A str0m publisher sending the camera at ~15 fps until dropped; answers
/// keyframe requests with an IDR. Returns the task and a counter of the
/// keyframe requests it got.
struct Publisher {
    task: tokio::task::JoinHandle<Peer>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub keyframe_requests: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub location: String,
    pub headers: Vec<(String, String)>,
}

impl Publisher {
    async fn start(url: &str, options: PeerOptions) -> Result<Publisher, ClientError> {
        let mut peer = Peer::publish(url, options).await?;
        let location = peer.location.clone();
        let headers = peer.headers.clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let keyframe_requests = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (s, k) = (stop.clone(), keyframe_requests.clone());
        let task = tokio::spawn(async move {
            let frames = camera();
            let mut source = VideoSource::new(300_000).expect("encoder");
            let mut i = 0usize;
            let mut idr = true;
            let mut ticker = tokio::time::interval(Duration::from_millis(66));
            while !s.load(Ordering::Relaxed) {
                ticker.tick().await;
                while let Ok(e) = peer.events.try_recv() {
                    if matches!(e, PeerEvent::KeyframeRequest) {
                        k.fetch_add(1, Ordering::Relaxed);
                        idr = true;
                    }
                }
                let f = &frames[(i / 15) % frames.len()];
                let (au, t) = source
                    .encode(&f.data, f.width, f.height, idr)
                    .expect("encode");
                idr = false;
                peer.send_video(au, t);
                // A fake Opus packet (passed through untouched): TOC + payload.
                peer.send_audio(vec![0xfc, 0xff, 0xfe, i as u8], (i as u64) * 960 * 4);
                i += 1;
            }
            peer
        });
        Ok(Publisher {
            task,
            stop,
            keyframe_requests,
            location,
            headers,
        })
    }

    async fn finish(self) -> Peer {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("publisher task")
    }
}

/// A WHIP publisher on `name`'s stream (a new streamer with 10 credits),
/// once the stream has frames.
async fn live_whip(app: &TestApp, name: &str) -> Publisher {
    let key = app.streamer(name, 10).await;
    let publisher = Publisher::start(
        &format!("{}/whip/{name}", app.address),
        PeerOptions {
            token: Some(key),
            ..Default::default()
        },
    )
    .await
    .expect("publish");
    assert!(eventually(20, async || frames_in(app, name).await > 0).await);
    publisher
}

async fn frames_in(app: &TestApp, name: &str) -> u64 {
    match app.state.control.get(&user(name)).await {
        Some(s) => s.counters.frames_in.load(Ordering::Relaxed),
        None => 0,
    }
}

/// Receives until a decoded picture arrives (within `secs`), counting audio packets.
async fn next_picture(
    peer: &mut Peer,
    sink: &mut VideoSink,
    secs: u64,
    audio: &mut u64,
) -> Option<RgbImage> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        match peer.next_event(left).await? {
            PeerEvent::Video { data, .. } => {
                if let Some(p) = sink.decode(&data) {
                    return Some(p);
                }
            }
            PeerEvent::Audio(_) => *audio += 1,
            PeerEvent::Closed => return None,
            _ => {}
        }
    }
}

fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
    let b = if (a.width, a.height) == (b.width, b.height) {
        b.clone()
    } else {
        image_io::resize(b, a.width, a.height, image_io::ResizeQuality::Best)
    };
    a.data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (*x as i32 - *y as i32).abs() as f64)
        .sum::<f64>()
        / a.data.len() as f64
}

async fn post_sdp(url: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut req = awc::Client::new()
        .post(url)
        .insert_header(("content-type", "application/sdp"));
    if let Some(t) = token {
        req = req.insert_header(("authorization", format!("Bearer {t}")));
    }
    let mut resp = req.send_body(body.to_string()).await.expect("POST");
    let body = resp.body().await.expect("body");
    (
        resp.status().as_u16(),
        String::from_utf8_lossy(&body).to_string(),
    )
}

/// An offer as a browser set to AV1 (or HEVC) would make it.
fn offer_with_video_codec(codec: &str) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
         a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 45\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
         a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=setup:actpass\r\na=rtcp-mux\r\n\
         a=rtpmap:45 {codec}/90000\r\n"
    )
}

#[actix_web::test]
async fn whip_refuses_bad_input_with_clear_errors() {
    let app = passthrough_app(|_| {}).await;
    let key = app.streamer("whipbad", 10).await;
    let url = format!("{}/whip/whipbad", app.address);
    let h264 = offer_with_video_codec("H264");
    // No token, a wrong token.
    let (status, _) = post_sdp(&url, None, &h264).await;
    assert_eq!(status, 401);
    let (status, _) = post_sdp(&url, Some("not-the-key"), &h264).await;
    assert_eq!(status, 401);
    // Garbage, and no SDP content type.
    let (status, body) = post_sdp(&url, Some(&key), "hello, I am not SDP").await;
    assert_eq!(status, 400, "{body}");
    let resp = awc::Client::new()
        .post(&url)
        .insert_header(("authorization", format!("Bearer {key}")))
        .insert_header(("content-type", "application/json"))
        .send_body(h264.clone())
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    // OBS set to AV1 / HEVC: the answer names what is accepted.
    for codec in ["AV1", "H265"] {
        let (status, body) = post_sdp(&url, Some(&key), &offer_with_video_codec(codec)).await;
        assert_eq!(status, 415, "{body}");
        assert!(
            body.contains(codec) && body.contains("H.264") && body.contains("Opus"),
            "{body}"
        );
    }
    // Nothing started, nothing charged.
    assert!(app.state.control.get(&user("whipbad")).await.is_none());
    // WHEP of a stream that is not live.
    let (status, _) = post_sdp(&format!("{}/whep/whipbad", app.address), None, &h264).await;
    assert_eq!(status, 404);
    // No trickle ICE.
    let resp = awc::Client::new()
        .patch(format!("{url}/{:032x}", 7))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
}

#[actix_web::test]
async fn whip_publisher_reaches_whep_viewers_and_delete_ends_the_stream() {
    let app = passthrough_app(|_| {}).await;
    let key = app.streamer("whipper", 10).await;
    let url = format!("{}/whip/whipper", app.address);
    let publisher = Publisher::start(
        &url,
        PeerOptions {
            token: Some(key.clone()),
            ..Default::default()
        },
    )
    .await
    .expect("publish");
    assert!(
        publisher.location.contains("/whip/whipper/"),
        "{}",
        publisher.location
    );
    let link = publisher
        .headers
        .iter()
        .find(|(k, _)| k == "link")
        .map(|(_, v)| v.clone())
        .expect("a Link header");
    assert!(link.contains("/whep/whipper"), "{link}");
    assert!(
        eventually(20, async || frames_in(&app, "whipper").await >= 5).await,
        "decoded frames reach the stream"
    );
    // A WHEP viewer (no token) gets pictures and the publisher's audio, as sent.
    let mut viewer = Peer::play(
        &format!("{}/whep/whipper", app.address),
        PeerOptions::default(),
    )
    .await
    .expect("play");
    let mut sink = VideoSink::new().unwrap();
    let mut audio = 0;
    let picture = next_picture(&mut viewer, &mut sink, 20, &mut audio)
        .await
        .expect("a picture over WHEP");
    assert_eq!((picture.width, picture.height), (320, 240));
    let camera = camera();
    let best = camera
        .iter()
        .map(|c| mean_abs_diff(c, &picture))
        .fold(f64::MAX, f64::min);
    assert!(
        best < 20.0,
        "the passthrough picture is one of the photos (diff {best})"
    );
    for _ in 0..10 {
        next_picture(&mut viewer, &mut sink, 5, &mut audio).await;
    }
    assert!(audio > 0, "audio reaches the WHEP viewer");
    assert_eq!(
        app.state
            .control
            .get(&user("whipper"))
            .await
            .unwrap()
            .viewer_count(),
        1
    );
    // A second publisher while the first is live: 409.
    let second = Peer::publish(
        &url,
        PeerOptions {
            token: Some(key.clone()),
            ..Default::default()
        },
    )
    .await;
    assert!(
        matches!(second, Err(ClientError::Status { status: 409, .. })),
        "{:?}",
        second.err()
    );
    // The WebSocket viewer is fed from the same output.
    let mut ws = connect(&format!("{}/ws/watch/whipper", app.ws)).await;
    assert!(
        next_binary(&mut ws, Duration::from_secs(10))
            .await
            .is_some()
    );
    // DELETE ends the stream (and the viewers' sessions).
    let peer = publisher.finish().await;
    assert_eq!(peer.delete().await.unwrap(), 200);
    assert!(
        eventually(10, async || app
            .state
            .control
            .get(&user("whipper"))
            .await
            .is_none())
        .await,
        "the stream ended"
    );
    let media = app.state.media.clone().expect("media");
    assert!(
        eventually(10, async || media.counts() == (0, 0)).await,
        "{:?}",
        media.counts()
    );
}

#[actix_web::test]
async fn an_sps_over_the_frame_limit_is_refused_before_decoding() {
    let app = passthrough_app(|s| s.media.max_pixels = 320 * 240 - 1).await;
    let key = app.streamer("bigsps", 10).await;
    let publisher = Publisher::start(
        &format!("{}/whip/bigsps", app.address),
        PeerOptions {
            token: Some(key),
            ..Default::default()
        },
    )
    .await
    .expect("the offer itself is fine");
    let media = app.state.media.clone().unwrap();
    assert!(
        eventually(15, async || media.counts().0 == 0).await,
        "the publisher's session is ended"
    );
    assert_eq!(frames_in(&app, "bigsps").await, 0, "nothing was decoded");
    publisher.finish().await;
}

#[actix_web::test]
async fn five_percent_rtp_loss_recovers_through_keyframe_requests() {
    let app = passthrough_app(|_| {}).await;
    let key = app.streamer("lossy", 10).await;
    let publisher = Publisher::start(
        &format!("{}/whip/lossy", app.address),
        PeerOptions {
            token: Some(key),
            drop_rtp: 0.05,
            ..Default::default()
        },
    )
    .await
    .expect("publish");
    // The source sends an IDR only when asked: frames keep coming only if
    // the server's PLIs get answered.
    assert!(
        eventually(30, async || publisher
            .keyframe_requests
            .load(Ordering::Relaxed)
            >= 2)
        .await,
        "the server asks for keyframes after losses"
    );
    let before = frames_in(&app, "lossy").await;
    assert!(
        eventually(20, async || frames_in(&app, "lossy").await >= before + 10).await,
        "decoding goes on after the requested IDRs"
    );
    publisher.finish().await;
}

#[actix_web::test]
async fn whep_viewers_are_capped_per_ip_and_reaped_when_they_vanish() {
    let app = passthrough_app(|s| {
        s.media.max_viewers_per_ip = 2;
        s.media.session_timeout_ms = 1500;
    })
    .await;
    let publisher = live_whip(&app, "reaped").await;
    let whep = format!("{}/whep/reaped", app.address);
    let mut a = Peer::play(&whep, PeerOptions::default())
        .await
        .expect("first");
    let b = Peer::play(&whep, PeerOptions::default())
        .await
        .expect("second");
    let third = Peer::play(&whep, PeerOptions::default()).await;
    assert!(
        matches!(third, Err(ClientError::Status { status: 429, .. })),
        "{:?}",
        third.err()
    );
    let mut sink = VideoSink::new().unwrap();
    let mut audio = 0;
    assert!(
        next_picture(&mut a, &mut sink, 20, &mut audio)
            .await
            .is_some()
    );
    let media = app.state.media.clone().unwrap();
    let stream = app.state.control.get(&user("reaped")).await.unwrap();
    assert_eq!(media.viewers_of(&user("reaped")), 2);
    // One leaves properly, one just goes away.
    assert_eq!(b.delete().await.unwrap(), 200);
    a.vanish();
    assert!(
        eventually(15, async || media.viewers_of(&user("reaped")) == 0
            && stream.viewer_count() == 0)
        .await,
        "the vanished viewer is reaped"
    );
    // Its slot is free again.
    let again = Peer::play(&whep, PeerOptions::default())
        .await
        .expect("a slot is free");
    again.vanish();
    publisher.finish().await;
}

/// FFmpeg 9's WHIP muxer (the static build in the `imageio-ffmpeg` wheel,
/// installed by .ci/run; `DREAMSTREAM_TEST_FFMPEG`) publishes a photo with a
/// tone; the stream restyles it; a WHEP viewer and a WebSocket viewer see
/// the restyled picture, the WHEP viewer hears the tone's Opus packets.
#[actix_web::test]
async fn ffmpeg_whip_publish_is_restyled_for_whep_and_websocket_viewers() {
    let ffmpeg = std::env::var("DREAMSTREAM_TEST_FFMPEG")
        .expect("DREAMSTREAM_TEST_FFMPEG names FFmpeg with the whip muxer (.ci/run installs it)");
    let app = spawn_app().await;
    let key = app.streamer("ffwhip", 10).await;
    let photo = shared_dir().join("testdata/images/chelsea.png");
    let spawned = std::process::Command::new(&ffmpeg)
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-re",
            "-loop",
            "1",
            "-framerate",
            "15",
            "-i",
        ])
        .arg(&photo)
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-vf",
            "scale=320:240,format=yuv420p",
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
            "-bf",
            "0",
            "-g",
            "30",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-c:a",
            "libopus",
            "-ar",
            "48000",
            "-ac",
            "2",
            "-t",
            "60",
            "-f",
            "whip",
            "-authorization",
        ])
        .arg(&key)
        .arg(format!("{}/whip/ffwhip", app.address))
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("ffmpeg starts");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Kill(spawned);
    assert!(
        eventually(30, async || frames_in(&app, "ffwhip").await >= 3).await,
        "FFmpeg's frames reach the stream"
    );
    let input = {
        let img = image_io::decode(&std::fs::read(&photo).unwrap()).unwrap();
        image_io::resize(&img, 320, 240, image_io::ResizeQuality::Best)
    };
    let mut viewer = Peer::play(
        &format!("{}/whep/ffwhip", app.address),
        PeerOptions::default(),
    )
    .await
    .expect("play");
    let mut sink = VideoSink::new().unwrap();
    let mut audio = 0;
    let picture = next_picture(&mut viewer, &mut sink, 30, &mut audio)
        .await
        .expect("a restyled picture over WHEP");
    let diff = mean_abs_diff(&input, &picture);
    assert!(diff > 15.0, "the WHEP picture is restyled (diff {diff})");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while audio == 0 && tokio::time::Instant::now() < deadline {
        next_picture(&mut viewer, &mut sink, 2, &mut audio).await;
    }
    assert!(audio > 0, "the tone's Opus packets reach the WHEP viewer");
    let mut ws = connect(&format!("{}/ws/watch/ffwhip", app.ws)).await;
    let frame = next_binary(&mut ws, Duration::from_secs(15))
        .await
        .expect("a WebSocket frame");
    let (_, jpeg) = dreamstream_actors::frame::FrameHeader::split(frame).unwrap();
    let ws_picture = image_io::decode(&jpeg).unwrap();
    let diff = mean_abs_diff(&input, &ws_picture);
    assert!(
        diff > 15.0,
        "the WebSocket picture is restyled (diff {diff})"
    );
    let _ = child.0.kill();
}

/// A WHEP session is a viewer like a WebSocket one, for as long as it lives:
/// the stream's count and peak and the audience numbers go up with it and
/// back down after its DELETE. A session that names the viewer page's tab
/// (`?cid=`) takes over that tab's count from its socket (whose pictures go
/// off), so the browser is never counted twice, not even for a moment.
#[actix_web::test]
async fn a_whep_session_counts_as_a_viewer_until_its_delete() {
    let app = passthrough_app(|_| {}).await;
    let publisher = live_whip(&app, "counted").await;
    let stream = app.state.control.get(&user("counted")).await.unwrap();
    let audience = async || {
        let report = app.state.audience.report(&[stream.id]).await.unwrap();
        let s = report.streams[0];
        (s.viewers, s.peak.viewers)
    };
    assert_eq!(stream.viewer_count(), 0);
    let whep = format!("{}/whep/counted", app.address);

    // A plain WHEP session counts once, and stops counting after its DELETE.
    let mut a = Peer::play(&whep, PeerOptions::default())
        .await
        .expect("play");
    assert_eq!(stream.viewer_count(), 1);
    assert_eq!(audience().await, (1, 1));
    let mut sink = VideoSink::new().unwrap();
    let mut audio = 0;
    assert!(
        next_picture(&mut a, &mut sink, 20, &mut audio)
            .await
            .is_some()
    );
    assert_eq!(a.delete().await.unwrap(), 200);
    assert!(
        eventually(10, async || stream.viewer_count() == 0).await,
        "the count goes back down"
    );
    assert_eq!(audience().await, (0, 1));

    // The viewer page: its socket (tab `t1`) counts, then its WHEP session
    // (same tab) does instead; the socket gets events but no pictures.
    let mut ws = connect(&format!("{}/ws/watch/counted?cid=t1", app.ws)).await;
    next_json(&mut ws, "hello", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        next_binary(&mut ws, Duration::from_secs(10))
            .await
            .is_some()
    );
    assert_eq!(stream.viewer_count(), 1);
    let mut page = Peer::play(&format!("{whep}?cid=t1"), PeerOptions::default())
        .await
        .expect("play");
    assert_eq!(stream.viewer_count(), 1, "one browser, one viewer");
    assert_eq!(audience().await, (1, 1));
    assert!(
        next_picture(&mut page, &mut sink, 20, &mut audio)
            .await
            .is_some()
    );
    // Whatever was on its way before the switch, then no more pictures.
    let quiet = async {
        let mut last_binary = tokio::time::Instant::now();
        let end = last_binary + Duration::from_secs(3);
        while let Some(got) = next(
            &mut ws,
            end.saturating_duration_since(tokio::time::Instant::now()),
        )
        .await
        {
            if let In::Binary(_) = got {
                last_binary = tokio::time::Instant::now();
            }
        }
        end.saturating_duration_since(last_binary)
    };
    assert!(
        quiet.await >= Duration::from_secs(2),
        "the socket's pictures are off"
    );
    assert_eq!(stream.totals().peak_viewers, 1, "never counted twice");
    // The page falls back: DELETE, pictures on; the socket counts again.
    assert_eq!(page.delete().await.unwrap(), 200);
    assert!(eventually(10, async || stream.viewer_count() == 0).await);
    send_text(&mut ws, r#"{"type":"frames","send":true}"#).await;
    assert!(
        next_binary(&mut ws, Duration::from_secs(10))
            .await
            .is_some()
    );
    assert!(eventually(10, async || stream.viewer_count() == 1).await);
    assert!(eventually(10, async || audience().await == (1, 1)).await);
    publisher.finish().await;
}
