//! Issue 16, "what a streamer and a viewer hit in their first ten minutes",
//! in Chromium with a fake camera: one test per numbered point of the issue
//! (metering shown live and ended in words, the style viewers see, true
//! state, the frame size, mobile, accessibility with axe-core, operational
//! data). Screenshots go to `test-output/` (and `docs/screenshots/` with
//! `DREAMSTREAM_UPDATE_SCREENSHOTS=1`).

use std::time::Duration;

use awc::ws;
use dreamstream_actors::Username;
use fantoccini::Client;
use futures_util::SinkExt;

use crate::browser::*;
use crate::helpers::*;

const LONG: Duration = Duration::from_secs(60);

/// Runs JavaScript and returns its value (`return` is added).
async fn js(c: &Client, expr: &str) -> serde_json::Value {
    c.execute(&format!("return ({expr});"), vec![])
        .await
        .unwrap_or_else(|e| panic!("{expr}: {e}"))
}

async fn text(c: &Client, id: &str) -> String {
    js(c, &format!("document.getElementById('{id}').textContent"))
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// `1 min 05 s` → 65 (the studio's clock).
fn clock_secs(s: &str) -> u64 {
    let mut total = 0;
    let words: Vec<&str> = s.split_whitespace().collect();
    for pair in words.chunks(2) {
        if let [n, unit] = pair {
            let n: u64 = n.parse().unwrap_or(0);
            total += match *unit {
                "h" => n * 3600,
                "min" => n * 60,
                _ => n,
            };
        }
    }
    total
}

/// `GET url` as JSON (no session).
async fn get_json(url: &str) -> serde_json::Value {
    awc::Client::new()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn user_id(app: &TestApp, name: &str) -> i64 {
    app.state
        .accounts
        .find(&Username::parse(name).unwrap())
        .await
        .unwrap()
        .expect("the user")
        .id
}

/// A script broadcaster (stream key): sends the test photos at ~10 fps
/// until dropped.
struct ScriptCamera {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl ScriptCamera {
    async fn start(app: &TestApp, name: &str) -> ScriptCamera {
        let url = app.broadcast_url(name).await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let mut conn = connect(&url).await;
        next_json(&mut conn, "hello", Duration::from_secs(10))
            .await
            .expect("hello");
        actix_web::rt::spawn(async move {
            let photos = photos();
            let mut i = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if conn
                    .send(ws::Message::Binary(photos[i % photos.len()].clone()))
                    .await
                    .is_err()
                {
                    break;
                }
                i += 1;
                // Read (and drop) what comes back so the socket never backs up.
                let _ = next(&mut conn, Duration::from_millis(100)).await;
            }
            // Gone without a close frame: an outage, not a stop.
            drop(conn);
        });
        ScriptCamera { stop }
    }
}

impl Drop for ScriptCamera {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Item 1: credits and time left count down live, the low-credit warning
/// counts down, the end is said in words with the next step, Go live is
/// disabled with one message at 0 credits, a refusal is shown once, and the
/// credits page speaks words instead of references.
#[actix_web::test]
async fn credits_count_down_and_the_end_is_said_in_words() {
    let app = spawn_app_with(|s| {
        s.credits.period_minutes = 1;
        s.credits.warn_before_secs = 50;
    })
    .await;
    let base = app.address.clone();
    let driver = Chromedriver::start().await;
    let c = driver.browser().await;
    register(&c, &base, "cleo", "/credits").await;
    let id = user_id(&app, "cleo").await;
    // The signup bonus (3), taken away and one credit given back by an admin.
    app.state.accounts.grant(id, -3).await.unwrap();
    app.state.accounts.grant(id, 1).await.unwrap();

    c.goto(&format!("{base}/studio")).await.unwrap();
    wait_js(
        &c,
        "the account's time",
        "document.getElementById('time-left').textContent === '1 min 00 s'",
        LONG,
    )
    .await;
    click(&c, "#start").await;
    wait_js(
        &c,
        "LIVE",
        "document.getElementById('state').textContent === 'LIVE'",
        LONG,
    )
    .await;
    // The first period is charged: balance 0, and the time left counts down.
    wait_js(
        &c,
        "balance 0",
        "document.getElementById('balance').textContent === '0'",
        LONG,
    )
    .await;
    let t0 = clock_secs(&text(&c, "time-left").await);
    actix_web::rt::time::sleep(Duration::from_millis(2500)).await;
    let t1 = clock_secs(&text(&c, "time-left").await);
    assert!(
        t0 <= 60 && t1 < t0 && t1 + 5 >= t0,
        "time left counts down: {t0} then {t1}"
    );

    // The warning a minute (here 50 s) before the unpayable boundary counts down.
    wait_js(
        &c,
        "the low-credit warning",
        "document.getElementById('notice').textContent.includes('the stream ends in')",
        LONG,
    )
    .await;
    let w0 = clock_secs(
        text(&c, "notice")
            .await
            .split("ends in ")
            .nth(1)
            .unwrap_or(""),
    );
    actix_web::rt::time::sleep(Duration::from_millis(2200)).await;
    let w1 = clock_secs(
        text(&c, "notice")
            .await
            .split("ends in ")
            .nth(1)
            .unwrap_or(""),
    );
    assert!(w0 > 0 && w1 < w0, "the warning counts down: {w0} then {w1}");

    // At the boundary: the end in words, with the next step.
    wait_js(
        &c,
        "the end, in words",
        "document.getElementById('notice').textContent.includes('You ran out of credits')",
        Duration::from_secs(90),
    )
    .await;
    let link = js(&c, "document.querySelector('#notice a') && document.querySelector('#notice a').getAttribute('href')").await;
    assert_eq!(link, "/credits");
    assert!(
        !text(&c, "notice").await.contains("out_of_credits"),
        "no reason codes"
    );
    wait_js(
        &c,
        "offline",
        "document.getElementById('state').textContent === 'Offline'",
        LONG,
    )
    .await;
    assert_eq!(text(&c, "viewers").await, "0");
    assert_eq!(text(&c, "latency").await, "–");
    // Go live is disabled, and only one message says why.
    wait_js(
        &c,
        "Go live disabled",
        "document.getElementById('start').disabled",
        LONG,
    )
    .await;
    let errors = js(
        &c,
        "Array.from(document.querySelectorAll('.notice.error')).filter(e => !e.hidden).length",
    )
    .await;
    assert_eq!(errors, 1, "one message at a time");

    // A fresh page at 0 credits: Go live disabled with one message. If the
    // button is forced, the server refuses and says so once (no retry loop).
    c.goto(&format!("{base}/studio")).await.unwrap();
    wait_js(&c, "Go live disabled", "document.getElementById('start').disabled && !document.getElementById('no-credits').hidden", LONG).await;
    js(
        &c,
        "(document.getElementById('start').disabled = false, true)",
    )
    .await;
    click(&c, "#start").await;
    wait_js(
        &c,
        "the server's refusal",
        "!document.getElementById('notice').hidden",
        LONG,
    )
    .await;
    actix_web::rt::time::sleep(Duration::from_secs(3)).await;
    let errors = js(&c, "Array.from(document.querySelectorAll('.notice.error')).filter(e => !e.hidden).map(e => e.textContent)").await;
    assert_eq!(errors.as_array().map(Vec::len), Some(1), "{errors}");
    assert_eq!(
        text(&c, "state").await,
        "Offline",
        "no reconnect loop after a refusal"
    );

    // The credits page: entries in words, a streamer-facing note on payments.
    c.goto(&format!("{base}/credits")).await.unwrap();
    let page = js(&c, "document.querySelector('main').innerText").await;
    let page = page.as_str().unwrap_or_default();
    for words in [
        "Welcome bonus",
        "Removed by an administrator",
        "Added by an administrator",
        "Stream on ",
    ] {
        assert!(page.contains(words), "{words:?} in {page}");
    }
    let stream_line = page
        .lines()
        .find(|l| l.contains("Stream on "))
        .unwrap_or_default();
    assert!(
        stream_line.contains("(1 min") || stream_line.contains(" s)"),
        "the stream's length: {stream_line}"
    );
    for internal in [
        "stream:",
        "signup_bonus",
        "grant:",
        "admin_grant",
        "STRIPE_SECRET_KEY",
        "grant-credits",
    ] {
        assert!(!page.contains(internal), "{internal:?} shown: {page}");
    }
    assert!(page.contains("Buying credits is not available"), "{page}");
    screenshot(&c, "credits-out-of-credits.png").await;
    let _ = c.close().await;
}

/// Item 2: after approving a viewer's request, Strength and "Keep my
/// colours" edit that style; the history has one line per change of style,
/// per stream.
#[actix_web::test]
async fn the_style_viewers_see_is_the_style_the_studio_shows() {
    let app = spawn_app().await;
    let base = app.address.clone();
    let driver = Chromedriver::start().await;
    let studio = driver.browser().await;
    register(&studio, &base, "vera", "/studio").await;
    click(&studio, "#start").await;
    wait_js(
        &studio,
        "LIVE",
        "document.getElementById('state').textContent === 'LIVE'",
        LONG,
    )
    .await;
    let viewer = driver.browser().await;
    register(&viewer, &base, "walt", "/s/vera").await;
    wait_js(&viewer, "the request form", "document.getElementById('request-form') && !document.getElementById('request-panel').hidden", LONG).await;
    js(
        &viewer,
        "(document.getElementById('req-style').value = '0', true)",
    )
    .await;
    click(&viewer, "#request-form button").await;
    wait_js(
        &studio,
        "the request",
        "document.querySelector('#queue li button')",
        LONG,
    )
    .await;
    click(&studio, "#queue li button").await;
    wait_js(
        &viewer,
        "the requested style",
        "document.getElementById('style').textContent.includes('by @walt')",
        LONG,
    )
    .await;
    let requested = text(&viewer, "style").await;

    // The streamer moves Strength three steps and ticks "Keep my colours".
    for v in ["0.9", "0.8", "0.7"] {
        js(&studio, &format!("(() => {{ const s = document.getElementById('strength'); s.value = '{v}';
            s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change')); return true; }})()")).await;
    }
    click(&studio, "#preserve").await;
    actix_web::rt::time::sleep(Duration::from_secs(1)).await;
    let state: serde_json::Value = get_json(&format!("{base}/api/streams/vera")).await;
    let settings = &state["settings"];
    assert!(
        (settings["strength"].as_f64().unwrap() - 0.7).abs() < 1e-6,
        "{settings}"
    );
    assert_eq!(settings["preserve_color"], true, "{settings}");
    assert_eq!(
        text(&viewer, "style").await,
        requested,
        "still the requested style"
    );
    let audience: serde_json::Value = get_json(&format!("{base}/api/streams/vera/requests")).await;
    let history = audience["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "one change of style: {history:?}");
    assert_eq!(history[0]["by"], "walt");
    assert_eq!(
        js(&studio, "document.querySelectorAll('#history li').length").await,
        1
    );
    assert!(text(&studio, "current-style").await.contains("by @walt"));

    // The studio's tab is reloaded (a crash) and goes live again within the
    // idle timeout: the same stream, still the requested style.
    studio.refresh().await.unwrap();
    wait_js(
        &studio,
        "the studio",
        "!document.getElementById('start').disabled",
        LONG,
    )
    .await;
    click(&studio, "#start").await;
    wait_js(&studio, "LIVE again", "document.getElementById('state').textContent === 'LIVE' && document.getElementById('current-style').textContent.includes('@walt')", LONG).await;
    actix_web::rt::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        text(&viewer, "style").await,
        requested,
        "the resumed stream keeps its style"
    );
    let audience: serde_json::Value = get_json(&format!("{base}/api/streams/vera/requests")).await;
    assert_eq!(
        audience["history"].as_array().map(Vec::len),
        Some(1),
        "{audience}"
    );

    // A style of the streamer's own: a second line; then a new stream starts
    // with an empty history.
    js(&studio, "(() => { const s = document.getElementById('style'); s.value = '5'; s.dispatchEvent(new Event('change')); return true; })()").await;
    wait_js(
        &studio,
        "two lines",
        "document.querySelectorAll('#history li').length === 2",
        LONG,
    )
    .await;
    wait_js(
        &viewer,
        "the streamer's style",
        "!document.getElementById('style').textContent.includes('@walt')",
        LONG,
    )
    .await;
    click(&studio, "#stop").await;
    wait_js(&studio, "offline", "document.getElementById('state').textContent === 'Offline' && !document.getElementById('start').disabled", LONG).await;
    click(&studio, "#start").await;
    wait_js(
        &studio,
        "LIVE again",
        "document.getElementById('state').textContent === 'LIVE'",
        LONG,
    )
    .await;
    actix_web::rt::time::sleep(Duration::from_secs(1)).await;
    // The new stream's history is its own: at most the style it started with.
    let lines = js(
        &studio,
        "Array.from(document.querySelectorAll('#history li')).map(li => li.textContent)",
    )
    .await;
    let lines = lines.as_array().unwrap();
    assert!(
        lines.len() <= 1 && !lines.iter().any(|l| l.as_str().unwrap().contains("@walt")),
        "{lines:?}"
    );
    let _ = studio.close().await;
    let _ = viewer.close().await;
}

/// Item 3: pages say what is true — after Stop, during an outage, offline,
/// for unknown channels and addresses, on the home page, and in the header.
#[actix_web::test]
async fn state_is_true_after_stop_outage_and_offline() {
    let app = spawn_app().await;
    let base = app.address.clone();
    let driver = Chromedriver::start().await;
    let studio = driver.browser().await;
    let viewer = driver.browser().await;

    // Unknown channel and address: styled 404 pages with the site's header.
    viewer.goto(&format!("{base}/s/nobody_here")).await.unwrap();
    assert_eq!(
        js(&viewer, "document.querySelector('h1').textContent").await,
        "No such channel"
    );
    assert_eq!(
        js(&viewer, "!!document.querySelector('.topbar nav')").await,
        true
    );
    assert_eq!(
        js(&viewer, "document.getElementById('frame') === null").await,
        true,
        "not a player"
    );
    let code = viewer
        .execute_async(
            "fetch('/s/nobody_here').then(r => arguments[0](r.status))",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(code, 404);
    viewer.goto(&format!("{base}/no/such/page")).await.unwrap();
    assert_eq!(
        js(&viewer, "document.querySelector('h1').textContent").await,
        "Page not found"
    );
    let api = awc::Client::new()
        .get(format!("{base}/api/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status().as_u16(), 404, "API clients get JSON 404s");
    // A favicon.
    let icon = viewer.execute_async("fetch('/favicon.ico').then(r => arguments[0](r.status + ' ' + r.headers.get('content-type')))", vec![]).await.unwrap();
    assert_eq!(icon, "200 image/svg+xml");
    assert_eq!(
        js(&viewer, "!!document.querySelector('link[rel=icon]')").await,
        true
    );

    // /register while logged in: the logged-in header; /admin: a styled 403.
    register(&studio, &base, "nina", "/studio").await;
    studio.goto(&format!("{base}/register")).await.unwrap();
    let header = js(&studio, "document.querySelector('.topbar').textContent").await;
    assert!(
        header.as_str().unwrap().contains("@nina") && header.as_str().unwrap().contains("Log out"),
        "{header}"
    );
    assert!(text(&studio, "main").await.contains("You are logged in as"));
    studio.goto(&format!("{base}/admin")).await.unwrap();
    assert_eq!(
        js(&studio, "document.querySelector('h1').textContent").await,
        "For administrators only"
    );
    assert_eq!(
        js(&studio, "!!document.querySelector('.topbar nav')").await,
        true
    );

    // An offline channel: no broken picture, no chat box.
    register(&viewer, &base, "omar", "/s/nina").await;
    assert_eq!(
        js(
            &viewer,
            "getComputedStyle(document.getElementById('frame')).visibility"
        )
        .await,
        "hidden"
    );
    assert_eq!(
        js(&viewer, "document.getElementById('comment-form').hidden").await,
        true
    );
    assert!(
        text(&viewer, "chat-off")
            .await
            .contains("opens when nina is live")
    );

    // Live, then Stop: nothing left over on either page.
    studio.goto(&format!("{base}/studio")).await.unwrap();
    click(&studio, "#start").await;
    // A picture: a JPEG, or (the page plays WHEP as soon as it can) the video's.
    wait_js(&viewer, "LIVE", "document.getElementById('state').textContent === 'LIVE' && (document.getElementById('frame').naturalWidth > 0 || document.getElementById('webrtc-video').videoWidth > 0)", LONG).await;
    wait_js(
        &viewer,
        "the chat box",
        "!document.getElementById('comment-form').hidden",
        LONG,
    )
    .await;
    wait_js(&studio, "1 watching", "document.getElementById('viewers').textContent === '1' && document.getElementById('latency').textContent !== '–'", LONG).await;
    wait_js(
        &viewer,
        "latency",
        "document.getElementById('latency').textContent !== '–'",
        LONG,
    )
    .await;
    click(&studio, "#stop").await;
    wait_js(&studio, "reset after Stop", "document.getElementById('state').textContent === 'Offline' && document.getElementById('viewers').textContent === '0' && document.getElementById('latency').textContent === '–' && document.getElementById('fps-out').textContent === '–'", LONG).await;
    wait_js(&viewer, "reset after the end", "document.getElementById('state').textContent === 'Offline' && document.getElementById('viewers').textContent === '0' && document.getElementById('latency').textContent === '–' && document.getElementById('comment-form').hidden", LONG).await;

    // An outage of a script broadcaster: "reconnecting…", then LIVE again.
    let camera = ScriptCamera::start(&app, "nina").await;
    wait_js(&viewer, "LIVE", "document.getElementById('state').textContent === 'LIVE' && document.getElementById('overlay').hidden", LONG).await;
    drop(camera);
    wait_js(&viewer, "reconnecting", "document.getElementById('state').textContent === 'Reconnecting…' && !document.getElementById('overlay').hidden && document.getElementById('overlay-text').textContent.includes('reconnecting')", LONG).await;
    let camera = ScriptCamera::start(&app, "nina").await;
    wait_js(&viewer, "LIVE again", "document.getElementById('state').textContent === 'LIVE' && document.getElementById('overlay').hidden", LONG).await;

    // The home page's server-rendered card follows style changes.
    viewer.goto(&format!("{base}/")).await.unwrap();
    let before = js(
        &viewer,
        "document.querySelector('.card[data-user=nina] .style').textContent",
    )
    .await;
    let key = app.streamer("nina", 10).await;
    let resp = awc::Client::new()
        .put(format!("{base}/api/streams/nina/style"))
        .insert_header(("Authorization", format!("Bearer {key}")))
        .send_json(&serde_json::json!({ "style": "5" }))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    wait_js(
        &viewer,
        "the card's new style",
        &format!("document.querySelector('.card[data-user=nina] .style').textContent !== {before}"),
        LONG,
    )
    .await;
    drop(camera);
    let _ = studio.close().await;
    let _ = viewer.close().await;
}

/// Item 4: the studio starts with the size the server suggests from the
/// workers' measured job time, suggests a smaller one when the output falls
/// behind, and explains "dropped".
#[actix_web::test]
async fn the_frame_size_fits_the_worker() {
    let app = spawn_app().await;
    let base = app.address.clone();
    let driver = Chromedriver::start().await;
    let c = driver.browser().await;
    register(&c, &base, "fay", "/studio").await;
    // The frame-size controls set the JPEG WebSocket's capture; a WHIP
    // publisher sends the camera's own size (see the note in studio.js).
    c.goto(&format!("{base}/studio?transport=websocket"))
        .await
        .unwrap();
    let suggested = c
        .execute_async(
            "fetch('/api/frame-size?fps=15').then(r => r.json()).then(arguments[0])",
            vec![],
        )
        .await
        .unwrap();
    wait_js(
        &c,
        "the suggested size",
        &format!(
            "document.getElementById('size').value === {}",
            suggested["size"]
        ),
        LONG,
    )
    .await;
    assert!(!text(&c, "size-note").await.is_empty());
    assert!(
        text(&c, "dropped-help")
            .await
            .contains("skipped on purpose")
    );

    // Too large for the CPU worker: the studio suggests a smaller size.
    click(&c, "#start").await;
    wait_js(
        &c,
        "LIVE",
        "document.getElementById('state').textContent === 'LIVE'",
        LONG,
    )
    .await;
    js(&c, "(() => { for (const [id, v] of [['size', '640x480'], ['fps', '24']]) { const s = document.getElementById(id); s.value = v; s.dispatchEvent(new Event('change')); } return true; })()").await;
    wait_js(
        &c,
        "the advice",
        "!document.getElementById('size-advice').hidden",
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(text(&c, "size-advice-use").await, "Use 480 × 360");
    click(&c, "#size-advice-use").await;
    assert_eq!(
        js(&c, "document.getElementById('size').value").await,
        "480x360"
    );

    // Now measured: the server knows the workers' job time per pixel.
    let measured = c
        .execute_async(
            "fetch('/api/frame-size?fps=15').then(r => r.json()).then(arguments[0])",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(measured["basis"], "measured", "{measured}");
    assert!(measured["job_ms"].as_f64().unwrap() > 0.0, "{measured}");
    let _ = c.close().await;
}

/// Item 5: at 390×844 the logged-in header fits (a menu), the chat sits
/// right under a sticky player, and the player goes full screen.
#[actix_web::test]
async fn on_a_phone_the_header_is_a_menu_and_chat_sits_under_a_sticky_player() {
    let app = spawn_app().await;
    let base = app.address.clone();
    let driver = Chromedriver::start().await;
    let phone = driver.phone().await;
    register(&phone, &base, "pia", "/").await;
    assert_eq!(js(&phone, "window.innerWidth").await, 390);
    let widths = js(
        &phone,
        "[document.documentElement.scrollWidth, document.querySelector('.topbar').scrollWidth]",
    )
    .await;
    assert!(
        widths
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w.as_u64().unwrap() <= 390),
        "{widths}"
    );
    assert_eq!(
        js(
            &phone,
            "getComputedStyle(document.getElementById('main-nav')).display"
        )
        .await,
        "none"
    );
    click(&phone, ".menu-toggle").await;
    assert_eq!(
        js(
            &phone,
            "document.querySelector('.menu-toggle').getAttribute('aria-expanded')"
        )
        .await,
        "true"
    );
    for css in ["#main-nav form button", "#main-nav a[href='/studio']"] {
        let r = js(&phone, &format!("(() => {{ const r = document.querySelector(\"{css}\").getBoundingClientRect(); return [r.left, r.right, r.width]; }})()")).await;
        let r: Vec<f64> = r
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!(
            r[0] >= 0.0 && r[1] <= 390.0 && r[2] > 0.0,
            "{css} is on the screen: {r:?}"
        );
    }

    let camera = ScriptCamera::start(&app, "quin").await;
    phone.goto(&format!("{base}/s/quin")).await.unwrap();
    wait_js(
        &phone,
        "frames",
        "document.getElementById('frame').naturalWidth > 0",
        LONG,
    )
    .await;
    let gap = js(&phone, "document.querySelector('.chat').getBoundingClientRect().top - document.getElementById('player').getBoundingClientRect().bottom").await;
    let gap = gap.as_f64().unwrap();
    assert!(
        (0.0..=24.0).contains(&gap),
        "the chat right under the player: {gap} px"
    );
    let wide = js(&phone, "Array.from(document.querySelectorAll('main *')).filter(e => e.getBoundingClientRect().right > 391).map(e => e.tagName + '#' + e.id + '.' + e.className)").await;
    assert_eq!(
        wide.as_array().map(Vec::len),
        Some(0),
        "nothing wider than the screen: {wide}"
    );
    assert_eq!(
        js(&phone, "document.documentElement.scrollWidth").await,
        390
    );
    docs_screenshot(&phone, "viewer-mobile.png").await;
    js(&phone, "(window.scrollTo(0, 250), true)").await;
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let top = js(&phone, "[window.scrollY, document.getElementById('player').getBoundingClientRect().top, document.querySelector('.topbar').getBoundingClientRect().bottom]").await;
    let top: Vec<f64> = top
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(top[0] > 100.0, "the page scrolled: {top:?}");
    assert!(
        (top[1] - top[2]).abs() <= 12.0,
        "the player sticks under the header: {top:?}"
    );
    click(&phone, "#fullscreen").await;
    wait_js(
        &phone,
        "full screen",
        "document.fullscreenElement && document.fullscreenElement.id === 'player'",
        Duration::from_secs(10),
    )
    .await;
    drop(camera);
    let _ = phone.close().await;
}

/// axe-core (npm, tests/axe) on a page: the serious and critical violations.
async fn axe(c: &Client) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/axe/node_modules/axe-core/axe.min.js");
    let source = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: run .ci/run, or `npm ci --prefix tests/axe`",
            path.display()
        )
    });
    c.execute(&source, vec![]).await.expect("axe loads");
    let found = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, { resultTypes: ['violations'] }).then(r => done(r.violations
               .filter(v => v.impact === 'serious' || v.impact === 'critical')
               .map(v => v.impact + ' ' + v.id + ': ' + v.nodes.slice(0, 4).map(n => n.target.join(' ') + ' — ' + n.failureSummary).join(' | '))));",
            vec![],
        )
        .await
        .expect("axe runs");
    found
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect()
}

/// Item 6: WCAG 2.2 AA — axe-core finds no serious or critical violation on
/// home, watch, studio, login, credits and admin; a skip link comes first;
/// the numbers that tick are outside live regions.
#[actix_web::test]
async fn axe_core_finds_nothing_serious_on_the_pages() {
    let app = spawn_app().await;
    let base = app.address.clone();
    let driver = Chromedriver::start().await;
    // The studio's camera shows a test photo (the README's screenshot).
    let dir = tempfile::tempdir().unwrap();
    let photo = dir.path().join("camera.y4m");
    photo_camera(&photo, &["chelsea.png"], 15);
    let c = driver.browser_with_camera(Some(&photo)).await;
    let _camera = ScriptCamera::start(&app, "zed").await;
    let mut failures = Vec::new();
    c.goto(&format!("{base}/login")).await.unwrap();
    failures.extend(axe(&c).await.into_iter().map(|v| format!("login: {v}")));
    register(&c, &base, "ada", "/").await;
    app.state.accounts.set_admin("ada", true).await.unwrap();
    c.goto(&format!("{base}/")).await.unwrap();
    wait_js(
        &c,
        "the live card",
        "document.querySelector('.card[data-user=zed]')",
        LONG,
    )
    .await;
    failures.extend(axe(&c).await.into_iter().map(|v| format!("home: {v}")));
    // The skip link is the first thing the keyboard reaches.
    assert_eq!(
        js(&c, "document.querySelector('body > a').className").await,
        "skip-link"
    );
    c.goto(&format!("{base}/s/zed")).await.unwrap();
    wait_js(
        &c,
        "frames",
        "document.getElementById('frame').naturalWidth > 0",
        LONG,
    )
    .await;
    failures.extend(axe(&c).await.into_iter().map(|v| format!("watch: {v}")));
    assert_eq!(js(&c, "document.getElementById('latency').closest('[aria-live], [role=status], [role=alert]') === null").await, true, "latency is not announced");
    c.goto(&format!("{base}/studio")).await.unwrap();
    click(&c, "#start").await;
    wait_js(
        &c,
        "LIVE",
        "document.getElementById('state').textContent === 'LIVE'",
        LONG,
    )
    .await;
    failures.extend(axe(&c).await.into_iter().map(|v| format!("studio: {v}")));
    for id in ["latency", "fps-in", "fps-out", "dropped", "time-left"] {
        assert_eq!(js(&c, &format!("document.getElementById('{id}').closest('[aria-live], [role=status], [role=alert]') === null")).await, true, "{id} is not announced");
    }
    assert_eq!(
        js(
            &c,
            "document.getElementById('strength').getAttribute('aria-label')"
        )
        .await,
        "Strength"
    );
    wait_js(
        &c,
        "restyled frames",
        "Number(document.getElementById('fps-out').textContent) > 0",
        LONG,
    )
    .await;
    docs_screenshot(&c, "studio.png").await;
    click(&c, "#stop").await;
    wait_js(
        &c,
        "offline",
        "document.getElementById('state').textContent === 'Offline'",
        LONG,
    )
    .await;
    c.goto(&format!("{base}/credits")).await.unwrap();
    failures.extend(axe(&c).await.into_iter().map(|v| format!("credits: {v}")));
    assert!(text(&c, "main").await.contains("Stream on "));
    docs_screenshot(&c, "credits.png").await;
    c.goto(&format!("{base}/admin")).await.unwrap();
    wait_js(
        &c,
        "the dashboard",
        "document.getElementById('admin')",
        LONG,
    )
    .await;
    failures.extend(axe(&c).await.into_iter().map(|v| format!("admin: {v}")));
    assert!(failures.is_empty(), "axe-core:\n{}", failures.join("\n"));
    let _ = c.close().await;
}

/// The viewer page on a desktop, for the README.
#[actix_web::test]
async fn viewer_page_screenshot() {
    let app = spawn_app().await;
    let base = app.address.clone();
    let driver = Chromedriver::start().await;
    let c = driver.browser().await;
    let _camera = ScriptCamera::start(&app, "lumen").await;
    register(&c, &base, "iris", "/s/lumen").await;
    wait_js(&c, "frames", "document.getElementById('frame').naturalWidth > 0 && document.getElementById('overlay').hidden", LONG).await;
    fill(&c, "#comment-text", "the colours are unreal").await;
    click(&c, "#comment-form button").await;
    wait_js(
        &c,
        "the comment",
        "document.getElementById('comments').textContent.includes('unreal')",
        LONG,
    )
    .await;
    docs_screenshot(&c, "viewer.png").await;
    let _ = c.close().await;
}

/// Item 7: operational data in a browser: refused to a visitor, shown to an
/// administrator.
#[actix_web::test]
async fn operational_data_is_for_administrators_in_a_browser() {
    let app = spawn_app().await;
    let base = app.address.clone();
    let driver = Chromedriver::start().await;
    let c = driver.browser().await;
    for path in ["/api/cluster", "/api/server", "/api/scheduler", "/metrics"] {
        c.goto(&format!("{base}{path}")).await.unwrap();
        let body = js(&c, "document.body.innerText").await;
        let body = body.as_str().unwrap_or_default();
        assert!(
            body.contains("for administrators") && !body.contains("worker"),
            "{path}: {body}"
        );
    }
    register(&c, &base, "root_ops", "/").await;
    app.state
        .accounts
        .set_admin("root_ops", true)
        .await
        .unwrap();
    c.goto(&format!("{base}/api/cluster")).await.unwrap();
    let body = js(&c, "document.body.innerText").await;
    assert!(
        body.as_str().unwrap_or_default().contains("\"workers\""),
        "{body}"
    );
    let _ = c.close().await;
}
