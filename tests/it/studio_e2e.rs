//! The whole product in a real browser: a streamer registers and goes live
//! from the studio with Chromium's fake camera; a viewer (another browser)
//! watches restyled frames, comments, requests a style that the streamer
//! approves, and the picture changes. Screenshots land in `test-output/`.

use std::time::Duration;

use fantoccini::Client;

use crate::browser::*;
use crate::helpers::*;

const LONG: Duration = Duration::from_secs(60);

/// Mean absolute difference (0–255) of two RGBA thumbnails.
fn distance(a: &serde_json::Value, b: &serde_json::Value) -> f64 {
    let (a, b) = (a.as_array().unwrap(), b.as_array().unwrap());
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x.as_f64().unwrap() - y.as_f64().unwrap()).abs())
        .sum::<f64>()
        / a.len() as f64
}

/// A 32×24 RGBA thumbnail of an `<img>` or `<video>` (alpha included, constant).
async fn thumb(c: &Client, css: &str) -> serde_json::Value {
    let script = format!(
        "const el = document.querySelector('{css}');
         const c = document.createElement('canvas'); c.width = 32; c.height = 24;
         const g = c.getContext('2d'); g.drawImage(el, 0, 0, 32, 24);
         return Array.from(g.getImageData(0, 0, 32, 24).data);"
    );
    c.execute(&script, vec![]).await.expect("thumbnail")
}

/// Counts the pictures an `<img>` (each change of its `src`) or a `<video>`
/// (each frame it presents) shows, in `window[counter]`.
async fn count_frames(c: &Client, css: &str, counter: &str) {
    let script = format!(
        "window.{counter} = 0;
         const el = document.querySelector('{css}');
         if (el.tagName === 'VIDEO') {{
           const tick = () => {{ window.{counter}++; el.requestVideoFrameCallback(tick); }};
           el.requestVideoFrameCallback(tick);
         }} else {{
           new MutationObserver(() => window.{counter}++)
             .observe(el, {{ attributes: true, attributeFilter: ['src'] }});
         }}"
    );
    c.execute(&script, vec![]).await.expect("observer");
}

async fn frames(c: &Client, counter: &str) -> u64 {
    c.execute(&format!("return window.{counter} || 0;"), vec![])
        .await
        .ok()
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
}

#[actix_web::test]
async fn a_streamer_goes_live_and_a_viewer_comments_and_requests_a_style() {
    let app = spawn_app().await;
    let base = app.address.clone();
    let driver = Chromedriver::start().await;

    // The streamer registers and goes live from the studio; the camera shows
    // a test photo (held still, so a change in the picture is the style's).
    let dir = tempfile::tempdir().unwrap();
    let camera = dir.path().join("camera.y4m");
    photo_camera(&camera, &["chelsea.png"], 15);
    let studio = driver.browser_with_camera(Some(&camera)).await;
    register(&studio, &base, "vera", "/studio").await;
    click(&studio, "#start").await;
    wait_js(
        &studio,
        "LIVE",
        "document.getElementById('state').textContent === 'LIVE'",
        LONG,
    )
    .await;
    wait_js(
        &studio,
        "a restyled preview",
        "document.getElementById('output').naturalWidth > 0",
        LONG,
    )
    .await;
    // Output differs from the camera (it is restyled, not echoed).
    let restyled = distance(
        &thumb(&studio, "#camera").await,
        &thumb(&studio, "#output").await,
    );
    assert!(
        restyled > 10.0,
        "the output should not be the camera picture (distance {restyled:.1})"
    );

    // A viewer (another browser) logs in and watches.
    let viewer = driver.browser().await;
    register(&viewer, &base, "walt", "/s/vera").await;
    viewer.goto(&format!("{base}/s/vera")).await.unwrap();
    wait_js(
        &viewer,
        "frames",
        "document.getElementById('frame').naturalWidth > 0",
        LONG,
    )
    .await;
    // Both pages use WebRTC: the studio publishes by WHIP, the viewer plays
    // WHEP (pictures in its <video>, an audio track from the fake microphone).
    wait_js(
        &studio,
        "WHIP",
        "document.getElementById('transport').textContent === 'WebRTC (WHIP)'",
        LONG,
    )
    .await;
    wait_js(
        &viewer,
        "WHEP pictures",
        "document.getElementById('transport').textContent === 'WebRTC (WHEP)' \
         && document.getElementById('webrtc-video').videoWidth > 0 \
         && document.getElementById('webrtc-video').srcObject.getAudioTracks().length > 0",
        LONG,
    )
    .await;
    // The pictures come by WHEP now; the page turned its WebSocket's
    // pictures off (no JPEG twice), and the tab counts once.
    count_frames(&viewer, "#webrtc-video", "__frames").await;
    count_frames(&viewer, "#frame", "__jpegs").await;
    wait_js(&viewer, "more frames", "window.__frames >= 3", LONG).await;
    assert!(frames(&viewer, "__frames").await >= 3);
    wait_js(
        &viewer,
        "1 viewer",
        "document.getElementById('viewers').textContent === '1'",
        LONG,
    )
    .await;
    wait_js(
        &studio,
        "1 viewer in the studio",
        "document.getElementById('viewers').textContent === '1'",
        LONG,
    )
    .await;
    wait_js(&viewer, "more WHEP frames", "window.__frames >= 10", LONG).await;
    assert_eq!(
        frames(&viewer, "__jpegs").await,
        0,
        "no JPEGs over the WebSocket while WHEP plays"
    );

    // A second tab of the viewer: 2 viewers.
    let first_tab = viewer.window().await.unwrap();
    let tab = viewer.new_window(true).await.unwrap();
    viewer.switch_to_window(tab.handle).await.unwrap();
    viewer.goto(&format!("{base}/s/vera")).await.unwrap();
    wait_js(
        &viewer,
        "2 viewers",
        "document.getElementById('viewers').textContent === '2'",
        LONG,
    )
    .await;
    wait_js(
        &studio,
        "2 viewers in the studio",
        "document.getElementById('viewers').textContent === '2'",
        LONG,
    )
    .await;
    viewer.close_window().await.unwrap();
    viewer.switch_to_window(first_tab).await.unwrap();

    // The viewer comments; the studio sees it.
    fill(&viewer, "#comment-text", "love this look!").await;
    click(&viewer, "#comment-form button").await;
    wait_js(
        &studio,
        "the comment in the studio",
        "document.getElementById('comments').textContent.includes('love this look!')",
        LONG,
    )
    .await;

    // The viewer requests a preset; the streamer approves; the style changes.
    let before = thumb(&viewer, "#webrtc-video").await;
    viewer
        .execute("document.getElementById('req-style').value = '0';", vec![])
        .await
        .unwrap();
    click(&viewer, "#request-form button").await;
    wait_js(
        &studio,
        "the request in the queue",
        "document.querySelector('#queue li button')",
        LONG,
    )
    .await;
    click(&studio, "#queue li button").await; // Approve
    wait_js(
        &viewer,
        "the new style, credited",
        "document.getElementById('style').textContent.includes('by @walt')",
        LONG,
    )
    .await;
    // Frames in the new style arrive.
    let n = frames(&viewer, "__frames").await;
    wait_js(
        &viewer,
        "frames after the change",
        &format!("window.__frames >= {}", n + 4),
        LONG,
    )
    .await;
    let after = thumb(&viewer, "#webrtc-video").await;
    let change = distance(&before, &after);
    assert!(
        change > 8.0,
        "the picture should change style (distance {change:.1})"
    );

    let s = screenshot(&studio, "studio.png").await;
    let v = screenshot(&viewer, "viewer.png").await;
    assert!(std::fs::metadata(&s).unwrap().len() > 10_000);
    assert!(std::fs::metadata(&v).unwrap().len() > 10_000);
    let _ = studio.close().await;
    let _ = viewer.close().await;
}
