//! The admin dashboard and the audience numbers on a real server, each with
//! real Redis and with the in-memory twin: distinct IPs (HyperLogLog) over
//! 1 000 addresses and 3 streams, one address 100 times, peak concurrency
//! with 200 viewers coming and going at once, the numbers after a restart of
//! the control node (and `dreamstream admin stats` reading them), who may see
//! `/admin`, `/metrics` / `/healthz` / `/readyz`, request ids in JSON logs,
//! and a screenshot of the dashboard in headless Chromium (`test-output/`).
//!
//! Viewers come from distinct addresses through `X-Forwarded-For`, which the
//! server believes because 127.0.0.1 is configured as a trusted proxy.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use actix_web::web;
use dreamstream::app::Application;
use dreamstream::client::ApiSession;
use dreamstream::settings::{LocalProcessor, Settings};
use dreamstream::web::AppState;
use futures_util::future::join_all;
use serde_json::Value;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Memory,
    Redis,
}

/// A control node (its data dir is the caller's, so a second one on the same
/// dir, database and Redis prefix is the first one restarted).
struct Node {
    address: String,
    ws: String,
    state: web::Data<AppState>,
}

/// A Redis key prefix of the test's own (tests share the server).
fn test_prefix() -> String {
    format!("ds:test:{:08x}:", rand::random::<u32>())
}

fn node_settings(dir: &Path, db_url: Option<&str>, redis_prefix: Option<&str>) -> Settings {
    let mut s = Settings::for_tests(dir);
    s.worker.processor = LocalProcessor::Passthrough;
    s.database_url = db_url.map(|u| String::from(u).into());
    if let Some(p) = redis_prefix {
        use_redis(&mut s);
        s.audience.redis_prefix = p.to_string();
    }
    s.trusted_proxies = vec!["127.0.0.1".into()];
    s
}

async fn start(settings: Settings) -> Node {
    let app = Application::build(settings).await.expect("the app builds");
    let port = app.port();
    Node {
        address: format!("http://127.0.0.1:{port}"),
        ws: format!("ws://127.0.0.1:{port}"),
        state: app.spawn(),
    }
}

/// Deletes the test's Redis keys.
async fn drop_keys(prefix: &str) {
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
    }
}

/// A logged-in administrator (registered on first use).
async fn admin_session(node: &Node, name: &str) -> ApiSession {
    let mut s = ApiSession::open(&node.address).await.expect("a session");
    s.register_or_login(name, "administrator password")
        .await
        .expect("log in");
    node.state
        .accounts
        .set_admin(name, true)
        .await
        .expect("make admin");
    s
}

async fn get(node: &Node, cookie: Option<&str>, path: &str) -> (u16, Option<String>, String) {
    let mut req = awc::Client::builder()
        .disable_redirects()
        .finish()
        .get(format!("{}{path}", node.address));
    if let Some(c) = cookie {
        req = req.insert_header(("Cookie", c.to_string()));
    }
    let mut resp = req.send().await.expect("request");
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = resp.body().limit(16 << 20).await.unwrap_or_default();
    (
        resp.status().as_u16(),
        location,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

async fn overview(node: &Node, admin: &ApiSession) -> Value {
    let (code, _, body) = get(node, Some(admin.cookie()), "/admin/api/overview").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("overview JSON")
}

/// Polls the overview until `ready` holds.
async fn overview_when(
    node: &Node,
    admin: &ApiSession,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let o = overview(node, admin).await;
        if ready(&o) {
            return o;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {}",
            o["audience"]
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `name` goes live (an account with credits, a stream key, a broadcaster).
async fn go_live(node: &Node, name: &str) -> Conn {
    let accounts = &node.state.accounts;
    let user = match accounts
        .find(&dreamstream_actors::Username::parse(name).unwrap())
        .await
        .unwrap()
    {
        Some(u) => u,
        None => accounts.register(name, "streamer password").await.unwrap(),
    };
    accounts.grant(user.id, 10).await.unwrap();
    let key = dreamstream::accounts::keys::rotate(accounts.db(), user.id)
        .await
        .unwrap();
    connect(&format!("{}/ws/broadcast/{name}?key={key}", node.ws)).await
}

/// A viewer of `name` from `ip` (as the trusted proxy reports it).
async fn viewer(node: &Node, name: &str, ip: IpAddr) -> Conn {
    let url = format!("{}/ws/watch/{name}", node.ws);
    // A client each: one client pools at most 100 connections.
    let (_, conn) = awc::Client::new()
        .ws(&url)
        .header("X-Forwarded-For", ip.to_string())
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    conn
}

/// Address number `i` (distinct for distinct `i`).
fn ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0xC612_0000 + i)) // 198.18.0.0/15, for tests
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// The live row of `name`.
fn live_row<'a>(o: &'a Value, name: &str) -> &'a Value {
    o["live"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["username"] == name)
        .unwrap_or_else(|| panic!("{name} is not in the live table: {}", o["live"]))
}

/// HyperLogLog with Redis's parameters has a standard error of 0.81 %, and
/// the key (hence the estimate) is random per data directory: 3 % is 3.7
/// standard errors (2 % failed about one run in twenty).
const HLL_TOLERANCE: f64 = 0.03;

fn within(estimate: u64, truth: u64, tolerance: f64) -> bool {
    (estimate as f64 - truth as f64).abs() <= truth as f64 * tolerance
}

/// 1 000 distinct addresses over 3 streams with overlapping audiences, and
/// one more address 100 times on a fourth stream.
async fn distinct_ips(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let prefix = (backend == Backend::Redis).then(test_prefix);
    let node = start(node_settings(dir.path(), None, prefix.as_deref())).await;
    let admin = admin_session(&node, "boss").await;
    let mut broadcasters = Vec::new();
    for name in ["ann", "ben", "cat", "dan"] {
        broadcasters.push(go_live(&node, name).await);
    }
    // ann: 0..500, ben: 250..750, cat: 500..1000 and 0..100.
    let mut plan: Vec<(&str, u32)> = Vec::new();
    plan.extend((0..500).map(|i| ("ann", i)));
    plan.extend((250..750).map(|i| ("ben", i)));
    plan.extend((500..1000).chain(0..100).map(|i| ("cat", i)));
    plan.extend((0..100).map(|_| ("dan", 1000)));
    let started = Instant::now();
    for batch in plan.chunks(100) {
        let conns = join_all(batch.iter().map(|(name, i)| viewer(&node, name, ip(*i)))).await;
        drop(conns);
    }
    let joins = plan.len() as u64;
    let o = overview_when(&node, &admin, "every join and leave counted", |o| {
        o["audience"]["tune_ins_all"] == joins && o["audience"]["viewers_now"] == 0
    })
    .await;
    let elapsed = started.elapsed();
    let a = &o["audience"];
    assert_eq!(
        a["backend"],
        if prefix.is_some() { "redis" } else { "memory" }
    );
    let counts: Vec<(&str, u64, u64)> = [("ann", 500), ("ben", 500), ("cat", 600), ("dan", 1)]
        .iter()
        .map(|(n, truth)| (*n, u(&live_row(&o, n)["unique_ips"]), *truth))
        .collect();
    eprintln!(
        "{backend:?}: {joins} viewer connections in {elapsed:.1?}; distinct IPs per stream \
         (estimate, truth) {counts:?}; global today {} / 7 days {} / all {} (truth 1001)",
        a["unique_ips_today"], a["unique_ips_7d"], a["unique_ips_all"]
    );
    for (name, estimate, truth) in &counts {
        assert!(
            within(*estimate, *truth, HLL_TOLERANCE),
            "{name}: {estimate} distinct IPs, truly {truth}"
        );
    }
    assert_eq!(counts[3].1, 1, "the same address 100 times counts once");
    for window in ["unique_ips_today", "unique_ips_7d", "unique_ips_all"] {
        let n = u(&a[window]);
        assert!(within(n, 1001, HLL_TOLERANCE), "{window}: {n}, truly 1001");
        assert!(n < 1500, "{window} is the union, not the sum");
    }
    assert_eq!(u(&a["tune_ins_today"]), joins);
    drop(broadcasters);
    if let Some(p) = prefix {
        drop_keys(&p).await;
    }
}

#[actix_web::test]
async fn audience_distinct_ips_in_memory() {
    distinct_ips(Backend::Memory).await;
}

#[actix_web::test]
async fn audience_distinct_ips_in_redis() {
    distinct_ips(Backend::Redis).await;
}

/// 200 viewers arrive at once and leave at once, twice; the peaks are the
/// true maximum. Then the control node restarts on the same storage and the
/// numbers are still there — on the dashboard, in the streams' rows, and in
/// `dreamstream admin stats --json`.
async fn peak_and_restart(backend: Backend, db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let pg = match db {
        Db::Postgres => Some(PgDatabase::create().await),
        Db::Sqlite => None,
    };
    let prefix = (backend == Backend::Redis).then(test_prefix);
    let settings = node_settings(
        dir.path(),
        pg.as_ref().map(|p| p.url.as_str()),
        prefix.as_deref(),
    );
    let node = start(settings.clone()).await;
    let admin = admin_session(&node, "boss").await;
    let names = ["ann", "ben", "cat"];
    let mut broadcasters = Vec::new();
    for name in names {
        broadcasters.push(go_live(&node, name).await);
    }
    let per_stream = |n: usize| -> Vec<u64> {
        (0..3)
            .map(|s| ((0..n).filter(|i| i % 3 == s).count()) as u64)
            .collect()
    };
    // Wave 1: 200 at once (addresses 0..200); wave 2: 150 at once (0..150 again).
    for wave in [200usize, 150] {
        let conns = join_all((0..wave).map(|i| viewer(&node, names[i % 3], ip(i as u32)))).await;
        let o = overview_when(&node, &admin, "every viewer in", |o| {
            o["audience"]["viewers_now"] == wave as u64
        })
        .await;
        for (name, n) in names.iter().zip(per_stream(wave)) {
            assert_eq!(u(&live_row(&o, name)["viewers"]), n);
        }
        drop(conns); // all leave at once
        overview_when(&node, &admin, "every viewer out", |o| {
            o["audience"]["viewers_now"] == 0
        })
        .await;
    }
    let before = overview(&node, &admin).await;
    let a = &before["audience"];
    assert_eq!(u(&a["peak"]["viewers"]), 200, "the true maximum: {a}");
    assert!(a["peak"]["at_ms"].is_i64());
    for (name, n) in names.iter().zip(per_stream(200)) {
        assert_eq!(u(&live_row(&before, name)["peak"]["viewers"]), n, "{name}");
    }
    assert!(within(u(&a["unique_ips_today"]), 200, HLL_TOLERANCE), "{a}");
    // Per stream (67 addresses): an estimate is off by a register collision
    // or two at most.
    let unique_before: Vec<u64> = names
        .iter()
        .map(|n| u(&live_row(&before, n)["unique_ips"]))
        .collect();
    for (got, truth) in unique_before.iter().zip(per_stream(200)) {
        assert!(
            got.abs_diff(truth) <= 2,
            "{got} distinct IPs, truly {truth}"
        );
    }
    assert_eq!(u(&a["tune_ins_all"]), 350);
    eprintln!(
        "{backend:?}/{db:?}: peak {} at {}, per stream {:?}, distinct IPs {}",
        a["peak"]["viewers"],
        a["peak"]["at_ms"],
        names
            .iter()
            .map(|n| u(&live_row(&before, n)["peak"]["viewers"]))
            .collect::<Vec<_>>(),
        a["unique_ips_all"]
    );

    // Restart: the streams end (their numbers go to their rows), a new
    // control node starts on the same database, data dir and Redis.
    node.state.control.shutdown(Duration::from_secs(5)).await;
    drop(broadcasters);
    let node = start(settings.clone()).await;
    let admin = admin_session(&node, "boss").await;
    let after = overview(&node, &admin).await;
    let b = &after["audience"];
    for key in [
        "peak",
        "unique_ips_today",
        "unique_ips_7d",
        "unique_ips_all",
        "tune_ins_all",
    ] {
        assert_eq!(a[key], b[key], "{key} after the restart");
    }
    assert_eq!(u(&b["viewers_now"]), 0);
    assert_eq!(after["live"].as_array().unwrap().len(), 0);
    assert_eq!(u(&after["streams_created"]["all"]), 3);
    let top = after["top_streams"].as_array().unwrap();
    assert_eq!(top.len(), 3, "{top:?}");
    for ((name, n), unique) in names.iter().zip(per_stream(200)).zip(&unique_before) {
        let row = top.iter().find(|r| r["username"] == *name).unwrap();
        assert_eq!(u(&row["peak_viewers"]), n, "{row}");
        assert!(row["peak_at"].is_i64(), "{row}");
        assert_eq!(u(&row["unique_viewers"]), *unique, "{row}");
        assert_eq!(row["end_reason"], "shutdown");
    }

    // The command line reads the same numbers from the same storage.
    let stats = |json: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dreamstream"));
        cmd.args(["admin", "stats", "--data-dir"])
            .arg(dir.path())
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL");
        if json {
            cmd.arg("--json");
        }
        if let Some(p) = &pg {
            cmd.env("DATABASE_URL", &p.url);
        }
        if let Some(p) = &prefix {
            cmd.env("REDIS_URL", redis_url())
                .env("DREAMSTREAM_AUDIENCE__REDIS_PREFIX", p);
        }
        let out = cmd.output().expect("run dreamstream admin stats");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    let cli: Value = serde_json::from_str(&stats(true)).expect("JSON from admin stats");
    for key in ["peak", "unique_ips_today", "unique_ips_all", "tune_ins_all"] {
        assert_eq!(cli["audience"][key], b[key], "admin stats: {key}");
    }
    assert_eq!(cli["streams_created"], after["streams_created"]);
    assert_eq!(cli["top_streams"], after["top_streams"]);
    let text = stats(false);
    eprintln!("{text}");
    assert!(text.contains("most at once         200"), "{text}");
    assert!(text.contains("Most watched"), "{text}");
    if let Some(p) = prefix {
        drop_keys(&p).await;
    }
}

#[actix_web::test]
async fn audience_peak_and_restart_in_memory_on_sqlite() {
    peak_and_restart(Backend::Memory, Db::Sqlite).await;
}

#[actix_web::test]
async fn audience_peak_and_restart_in_redis_on_postgres() {
    peak_and_restart(Backend::Redis, Db::Postgres).await;
}

/// Every route under /admin, including one that does not exist.
const ROUTES: &[&str] = &[
    "/admin",
    "/admin/",
    "/admin/api/overview",
    "/admin/chart.svg",
    "/admin/admin.js",
    "/admin/admin.css",
    "/admin/no-such-page",
];

#[actix_web::test]
async fn admin_routes_are_for_administrators_only() {
    let app = spawn_app().await;
    let node = Node {
        address: app.address.clone(),
        ws: app.ws.clone(),
        state: app.state.clone(),
    };
    // Logged out: the page sends you to log in; the rest is 401.
    for path in ROUTES {
        let (code, location, body) = get(&node, None, path).await;
        if path.trim_end_matches('/') == "/admin" {
            assert_eq!(code, 303, "{path}: {body}");
            assert_eq!(location.as_deref(), Some("/login?next=/admin"));
        } else {
            assert_eq!(code, 401, "{path}: {body}");
        }
    }
    // Logged in, not an administrator: 403 everywhere.
    let mut user = ApiSession::open(&node.address).await.unwrap();
    user.register_or_login("mallory", "not an admin at all")
        .await
        .unwrap();
    for path in ROUTES {
        let (code, _, body) = get(&node, Some(user.cookie()), path).await;
        assert_eq!(code, 403, "{path}: {body}");
        assert!(!body.contains("unique_ips"), "{path} leaked numbers");
    }
    // An administrator gets everything.
    let admin = admin_session(&node, "boss").await;
    let expect = [
        ("/admin", "Dashboard"),
        ("/admin/api/overview", "\"audience\""),
        ("/admin/chart.svg", "<svg"),
        ("/admin/admin.js", "/admin/api/overview"),
        ("/admin/admin.css", ".cards"),
    ];
    for (path, needle) in expect {
        let (code, _, body) = get(&node, Some(admin.cookie()), path).await;
        assert_eq!(code, 200, "{path}: {body}");
        assert!(body.contains(needle), "{path}: no {needle:?}");
    }
    assert_eq!(
        get(&node, Some(admin.cookie()), "/admin/no-such-page")
            .await
            .0,
        404
    );
    // The page links the dashboard for admins only.
    let (_, _, home) = get(&node, Some(admin.cookie()), "/").await;
    assert!(home.contains("href=\"/admin\""));
    let (_, _, home) = get(&node, Some(user.cookie()), "/").await;
    assert!(!home.contains("href=\"/admin\""));
}

#[actix_web::test]
async fn admin_metrics_health_and_request_ids() {
    let prefix = test_prefix();
    let app = spawn_app_with(|s| {
        use_redis(s);
        s.audience.redis_prefix = prefix.clone();
    })
    .await;
    let node = Node {
        address: app.address.clone(),
        ws: app.ws.clone(),
        state: app.state.clone(),
    };
    let admin = admin_session(&node, "boss").await;
    overview(&node, &admin).await;
    let (code, _, body) = get(&node, None, "/healthz").await;
    assert_eq!((code, body.contains("ok")), (200, true));
    let (code, _, body) = get(&node, None, "/readyz").await;
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(ready["database"], true);
    assert_eq!(ready["redis"], "ok");
    assert_eq!(ready["workers"], 1);
    // Request ids: ours is echoed, a missing or unsafe one is replaced.
    let resp = awc::Client::new()
        .get(format!("{}/healthz", node.address))
        .insert_header(("X-Request-Id", "test-req.42"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers().get("x-request-id").unwrap(), "test-req.42");
    let resp = awc::Client::new()
        .get(format!("{}/healthz", node.address))
        .insert_header(("X-Request-Id", "bad id <script>"))
        .send()
        .await
        .unwrap();
    let id = resp
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(id.len(), 16, "{id}");
    // Histograms by route pattern (never the raw path) with explicit buckets.
    get(&node, None, "/s/somebody").await;
    let (_, _, metrics) = get(&node, Some(admin.cookie()), "/metrics").await;
    let has = |needle: &str| metrics.lines().any(|l| l.contains(needle));
    assert!(
        has(
            r#"dreamstream_http_request_duration_seconds_bucket{method="GET",route="/admin/api/overview",status="200",le="0.005"}"#
        ),
        "{metrics}"
    );
    assert!(has(r#"route="/s/{username}""#), "by pattern");
    assert!(!has("route=\"/s/somebody\""));
    assert!(has("dreamstream_workers_by_state{state=\"idle\"}"));
    assert!(has("dreamstream_audience_unique_ips{window=\"today\"}"));
    assert!(has("dreamstream_audience_peak_viewers"));
    drop_keys(&prefix).await;
}

/// The real binary with `DREAMSTREAM_LOG_FORMAT=json`: every line is JSON, and
/// a request's lines carry its request id.
#[actix_web::test]
async fn admin_json_logs_carry_request_ids() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dreamstream"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--local-workers",
            "0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("DREAMSTREAM_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start dreamstream serve");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_line = || rx.recv_timeout(WAIT).expect("a log line");
    let address = loop {
        let line = next_line();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        if v["fields"]["message"] == "serving" {
            break v["fields"]["address"].as_str().unwrap().to_string();
        }
    };
    let resp = awc::Client::new()
        .get(format!("http://{address}/readyz"))
        .insert_header(("X-Request-Id", "json-logs-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503, "no worker: not ready");
    let line = loop {
        let line = next_line();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        if v["fields"]["message"] == "request" {
            break v;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(line["span"]["request_id"], "json-logs-1", "{line}");
    assert_eq!(line["fields"]["route"], "/readyz");
    assert_eq!(line["fields"]["status"], 503);
}

/// Photos to a broadcaster, ten a second, until the task is dropped.
fn keep_sending(mut conn: Conn) -> actix_web::rt::task::JoinHandle<()> {
    actix_web::rt::spawn(async move {
        let photos = photos();
        for photo in photos.iter().cycle() {
            send_binary(&mut conn, photo.clone()).await;
            // Read what came back (the preview), so nothing piles up.
            while next(&mut conn, Duration::from_millis(1)).await.is_some() {}
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// The dashboard with live data in a real browser: two streams with frames
/// flowing and viewers, two workers, an ended stream, a payment. The
/// screenshot is `test-output/admin-dashboard.png`.
#[actix_web::test]
async fn admin_dashboard_screenshot_in_chromium() {
    use dreamstream::db::entities::payment;
    use sea_orm::{ActiveModelTrait, ActiveValue::Set};

    use crate::browser::*;

    let dir = tempfile::tempdir().unwrap();
    let mut settings = node_settings(dir.path(), None, None);
    settings.local_workers = 2;
    let node = start(settings).await;
    let admin = admin_session(&node, "boss").await;
    // Yesterday's news: a stream that had five viewers and ended.
    let early = go_live(&node, "early_bird").await;
    let watchers = join_all((0..5).map(|i| viewer(&node, "early_bird", ip(5000 + i)))).await;
    overview_when(&node, &admin, "five viewers", |o| {
        o["audience"]["viewers_now"] == 5
    })
    .await;
    drop(watchers);
    node.state.control.stop(
        &dreamstream_actors::Username::parse("early_bird").unwrap(),
        dreamstream_actors::store::EndReason::Stopped,
    );
    drop(early);
    overview_when(&node, &admin, "the first stream in history", |o| {
        o["recent_streams"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    })
    .await;
    let buyer = node
        .state
        .accounts
        .find(&dreamstream_actors::Username::parse("early_bird").unwrap())
        .await
        .unwrap()
        .unwrap();
    payment::ActiveModel {
        user_id: Set(buyer.id),
        checkout_session: Set("cs_test_screenshot".into()),
        credits: Set(30),
        amount_cents: Set(2000),
        currency: Set("usd".into()),
        status: Set("paid".into()),
        created_at: Set(chrono::Utc::now()),
        ..Default::default()
    }
    .insert(&node.state.db)
    .await
    .unwrap();
    // Now: two live streams with frames and viewers.
    let senders = vec![
        keep_sending(go_live(&node, "ann_paints").await),
        keep_sending(go_live(&node, "ben_live").await),
    ];
    let mut viewers = join_all((0..7).map(|i| viewer(&node, "ann_paints", ip(6000 + i)))).await;
    viewers.extend(join_all((0..3).map(|i| viewer(&node, "ben_live", ip(6100 + i)))).await);

    let driver = Chromedriver::start().await;
    let c = driver.browser().await;
    c.set_window_size(1440, 2400).await.expect("window size");
    c.goto(&format!("{}/admin", node.address))
        .await
        .expect("/admin");
    wait_js(&c, "the login page", "location.pathname === '/login'", WAIT).await;
    fill(&c, "input[name=username]", "boss").await;
    fill(&c, "input[name=password]", "administrator password").await;
    click(&c, "form.stack button[type=submit]").await;
    wait_js(&c, "the dashboard", "location.pathname === '/admin'", WAIT).await;
    // Live numbers arrive by polling: two streams with frames going through.
    wait_js(
        &c,
        "live streams with frame rates and viewers",
        "Number(document.getElementById('admin').dataset.polls || 0) >= 2 \
         && document.querySelectorAll('#live tbody tr').length === 2 \
         && [...document.querySelectorAll('#live tbody tr')].every(r => \
              !r.cells[5].textContent.startsWith('0.0') && r.cells[7].textContent !== '–') \
         && document.querySelector('[data-card=viewers] .value').textContent === '10'",
        Duration::from_secs(60),
    )
    .await;
    let text: String = c
        .execute("return document.body.innerText;", vec![])
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    for needle in [
        "ann_paints",
        "ben_live",
        "local/worker-0",
        "local/worker-1",
        "early_bird",
        "$20.00",
    ] {
        assert!(
            text.contains(needle),
            "the dashboard shows {needle}:\n{text}"
        );
    }
    // The whole page in one picture: the window is the page's height plus
    // the browser's own frame.
    let size = c
        .execute(
            "return [Math.ceil(document.querySelector('.footer').getBoundingClientRect().bottom
                     + window.scrollY), window.outerHeight - window.innerHeight];",
            vec![],
        )
        .await
        .expect("page size");
    let (page, frame) = (
        size[0].as_u64().unwrap_or(2400),
        size[1].as_u64().unwrap_or(0),
    );
    c.set_window_size(1440, (page + frame) as u32)
        .await
        .expect("window size");
    let shot = screenshot(&c, "admin-dashboard.png").await;
    eprintln!("screenshot: {}", shot.display());
    assert!(std::fs::metadata(&shot).unwrap().len() > 50_000);
    let _ = c.close().await;
    for s in senders {
        s.abort();
    }
    drop(viewers);
}
