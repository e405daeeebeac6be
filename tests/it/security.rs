//! What a black-box attacker found (issue 15): each defence, from outside.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::helpers::*;
use crate::raw_ws::{RawWs, off_thread};

const WAIT: Duration = Duration::from_secs(20);

/// Connects to `app` and upgrades `path` (off the test's thread); panics
/// unless the answer is 101.
async fn raw_upgrade(app: &TestApp, path: &str) -> RawWs {
    let addr = app.address.trim_start_matches("http://").to_string();
    let path = path.to_string();
    off_thread(move || {
        let mut raw = RawWs::new(TcpStream::connect(&addr).expect("connect"), WAIT);
        let head = raw.upgrade(&addr, &path);
        assert!(head.starts_with("http/1.1 101"), "{head}");
        raw
    })
    .await
}

/// The header of a masked client binary frame declaring `len` bytes.
fn declared_binary(len: u64) -> Vec<u8> {
    let mut out = vec![0x82, 0x80 | 127];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[0x37, 0xfa, 0x21, 0x3d]);
    out
}

/// Declares a 1 TiB message and sends `limit` + 16 KiB of it: the server
/// must close with 1009 from the header alone, never waiting for (or
/// keeping) the rest.
fn oversized_message_is_refused(raw: &mut RawWs, limit: usize) {
    raw.s.write_all(&declared_binary(1 << 40)).unwrap();
    let zeros = vec![0u8; 16 * 1024];
    let mut sent = 0;
    while sent < limit + zeros.len() {
        // The server may already have closed: stop writing then.
        if raw.s.write_all(&zeros).is_err() {
            break;
        }
        sent += zeros.len();
    }
    let started = Instant::now();
    assert_eq!(
        raw.close_code(),
        Some(1009),
        "close 1009 after {sent} bytes of a declared 1 TiB message"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[actix_web::test]
async fn a_viewer_declaring_a_huge_message_is_closed_from_the_header() {
    let app = spawn_app().await;
    let mut b = connect(&app.broadcast_url("hugeview").await).await;
    next_json(&mut b, "hello", WAIT).await.unwrap();
    let mut raw = raw_upgrade(&app, "/ws/watch/hugeview").await;
    off_thread(move || oversized_message_is_refused(&mut raw, 64 * 1024)).await;
    // The stream is unharmed.
    let mut v = connect(&format!("{}/ws/watch/hugeview", app.ws)).await;
    next_json(&mut v, "hello", WAIT).await.unwrap();
}

#[actix_web::test]
async fn a_broadcaster_declaring_a_huge_message_is_closed_from_the_header() {
    let app = spawn_app().await;
    let url = app.broadcast_url("hugecast").await;
    let path = format!("/ws/{}", url.split_once("/ws/").unwrap().1);
    let limit = app.state.config.stream.max_frame_bytes;
    let mut raw = raw_upgrade(&app, &path).await;
    off_thread(move || oversized_message_is_refused(&mut raw, limit)).await;
}

fn creds(name: &str, password: &str) -> serde_json::Value {
    serde_json::json!({ "username": name, "password": password })
}

#[actix_web::test]
async fn registration_is_limited_per_ip_through_every_route() {
    let app = spawn_app_with(|s| s.accounts.signups_per_ip_per_hour = 2).await;
    let mut a = Browser::open(&app).await;
    let (code, body) = a
        .post("/api/auth/register", creds("farm_1", "farm password"))
        .await;
    assert_eq!(code, 201, "{body}");
    let mut b = Browser::open(&app).await;
    assert_eq!(
        b.post_form(
            "/register",
            &[("username", "farm_2"), ("password", "farm password")]
        )
        .await,
        303
    );
    // The limit is the IP's, whichever route counted it.
    let mut c = Browser::open(&app).await;
    let (code, body) = c
        .post("/api/auth/register", creds("farm_3", "farm password"))
        .await;
    assert_eq!(code, 429, "{body}");
    assert_eq!(
        c.post_form(
            "/register",
            &[("username", "farm_4"), ("password", "farm password")]
        )
        .await,
        429
    );
    let farmed = dreamstream_actors::Username::parse("farm_3").unwrap();
    assert!(app.state.accounts.find(&farmed).await.unwrap().is_none());
}

/// Settings for login tests: 127.0.0.1 is a proxy, so each test client
/// chooses its IP with `X-Forwarded-For`.
fn behind_proxy(s: &mut dreamstream::settings::Settings) {
    s.trusted_proxies = vec!["127.0.0.1/32".into()];
    s.accounts.login_attempts_per_account = 5;
    s.accounts.login_attempts_per_ip = 8;
}

#[actix_web::test]
async fn wrong_passwords_from_elsewhere_do_not_lock_the_owner_out() {
    let app = spawn_app_with(behind_proxy).await;
    app.streamer("victim", 0).await;
    // An attacker tries the victim's name until refused, from three
    // addresses of one IPv6 /64 (one network, one count).
    let mut refused = 0;
    for i in 0..12 {
        let mut attacker =
            Browser::open_from(&app, Some(&format!("2001:db8:1:2::{}", i % 3 + 1))).await;
        let (code, _) = attacker
            .post("/api/auth/login", creds("victim", &format!("guess {i}")))
            .await;
        assert!(code == 401 || code == 429, "{code}");
        if code == 429 {
            refused += 1;
        }
    }
    assert!(
        refused >= 6,
        "the /64 is refused after 5 failures: {refused} refusals"
    );
    // Another address of that /64 is refused too, even with the password.
    let mut same_net = Browser::open_from(&app, Some("2001:db8:1:2::99")).await;
    let (code, _) = same_net
        .post("/api/auth/login", creds("victim", "streamer-password"))
        .await;
    assert_eq!(code, 429);
    // The owner, from their own address, logs in at once.
    let mut owner = Browser::open_from(&app, Some("198.51.100.20")).await;
    let started = Instant::now();
    let (code, body) = owner
        .post("/api/auth/login", creds("victim", "streamer-password"))
        .await;
    assert_eq!(code, 200, "the owner is not locked out: {body}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[actix_web::test]
async fn successful_logins_do_not_count_against_an_ip() {
    let app = spawn_app_with(behind_proxy).await;
    // A NAT: many people log in from one address, far more often than the
    // per-IP limit of failures.
    for i in 0..4 {
        app.streamer(&format!("natted_{i}"), 0).await;
    }
    for round in 0..3 {
        for i in 0..4 {
            let mut b = Browser::open_from(&app, Some("192.0.2.50")).await;
            let (code, body) = b
                .post(
                    "/api/auth/login",
                    creds(&format!("natted_{i}"), "streamer-password"),
                )
                .await;
            assert_eq!(code, 200, "round {round}, user {i}: {body}");
        }
    }
}

on_both_databases!(logout_ends_the_session_on_the_server, |db| async move {
    let app = spawn_app_on(db, |_| {}).await;
    let mut s = Browser::open(&app).await;
    let (code, body) = s
        .post("/api/auth/register", creds("leaver", "leaver password"))
        .await;
    assert_eq!(code, 201, "{body}");
    // Someone copies the cookie (a shared computer, a stolen laptop).
    let mut copy = Browser::open(&app).await;
    copy.cookies = s.cookies.clone();
    copy.csrf = s.csrf.clone();
    assert_eq!(copy.get("/api/me").await.0, 200);
    let (code, _) = s.post("/api/auth/logout", serde_json::json!({})).await;
    assert_eq!(code, 204);
    assert_eq!(
        copy.get("/api/me").await.0,
        401,
        "the copy is logged out too"
    );
    let (code, _) = copy.post("/api/me/stream-key", serde_json::json!({})).await;
    assert!(code == 401 || code == 403, "{code}");
});

on_both_databases!(
    log_out_everywhere_and_password_change_end_other_sessions,
    |db| async move {
        let app = spawn_app_on(db, |_| {}).await;
        app.streamer("roamer", 0).await;
        let login = |app: &TestApp| {
            let app_addr = app.address.clone();
            async move {
                let mut b = Browser {
                    base: app_addr,
                    client: awc::Client::builder()
                        .timeout(Duration::from_secs(60))
                        .disable_redirects()
                        .finish(),
                    cookies: Default::default(),
                    csrf: String::new(),
                    ip: None,
                };
                let (_, body) = b.get("/api/auth/csrf").await;
                b.csrf = body["csrf"].as_str().unwrap().to_string();
                let (code, body) = b
                    .post("/api/auth/login", creds("roamer", "streamer-password"))
                    .await;
                assert_eq!(code, 200, "{body}");
                b
            }
        };
        let mut phone = login(&app).await;
        let mut laptop = login(&app).await;
        let (code, _) = laptop
            .post("/api/auth/logout-everywhere", serde_json::json!({}))
            .await;
        assert_eq!(code, 204);
        assert_eq!(phone.get("/api/me").await.0, 401);
        assert_eq!(laptop.get("/api/me").await.0, 401);

        // A password change keeps the session that made it and ends the others.
        let mut phone = login(&app).await;
        let mut laptop = login(&app).await;
        let (code, body) = laptop
        .post(
            "/api/me/password",
            serde_json::json!({ "current": "streamer-password", "new": "a brand new password" }),
        )
        .await;
        assert_eq!(code, 204, "{body}");
        assert_eq!(laptop.get("/api/me").await.0, 200);
        assert_eq!(phone.get("/api/me").await.0, 401);
        let mut again = Browser::open(&app).await;
        let (code, _) = again
            .post("/api/auth/login", creds("roamer", "a brand new password"))
            .await;
        assert_eq!(code, 200);
    }
);

/// A `redis-server` of this test's own, on a free port, killed on drop.
struct RedisServer {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        let server = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + WAIT;
        while server.conn().await.is_none() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn conn(&self) -> Option<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.url()).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        let pong: String = redis::cmd("PING").query_async(&mut conn).await.ok()?;
        (pong == "PONG").then_some(conn)
    }

    async fn keys(&self) -> Vec<String> {
        let mut conn = self.conn().await.expect("redis answers");
        redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[actix_web::test]
async fn anonymous_visitors_store_nothing_in_redis() {
    let redis = RedisServer::start().await;
    let app = spawn_app_with(|s| s.redis_url = Some(redis.url().into())).await;
    // The audience statistics keep their own keys (ds:aud:), whoever asks.
    let before = redis.keys().await;
    let client = awc::Client::new();
    for _ in 0..20 {
        for path in ["/api/auth/csrf", "/login", "/register", "/", "/studio"] {
            let resp = client
                .get(format!("{}{path}", app.address))
                .send()
                .await
                .expect("GET");
            assert!(resp.status().as_u16() < 500, "{path}: {}", resp.status());
        }
    }
    let stored: Vec<String> = redis
        .keys()
        .await
        .into_iter()
        .filter(|k| !before.contains(k) && !k.starts_with("ds:aud:"))
        .collect();
    assert!(stored.is_empty(), "anonymous requests stored {stored:?}");
    // Logging in still works, with the token /api/auth/csrf gave, and then
    // there is one session.
    app.streamer("anon_then_known", 0).await;
    let mut b = Browser::open(&app).await;
    let (code, body) = b
        .post(
            "/api/auth/login",
            creds("anon_then_known", "streamer-password"),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(b.get("/api/me").await.0, 200);
    let sessions: Vec<String> = redis
        .keys()
        .await
        .into_iter()
        .filter(|k| k.starts_with("ds:session:"))
        .collect();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
}

#[actix_web::test]
async fn a_hung_redis_fails_logins_closed_and_viewing_open() {
    let redis = RedisServer::start().await;
    let app = spawn_app_with(|s| s.redis_url = Some(redis.url().into())).await;
    app.streamer("hangcast", 10).await;
    let mut b = connect(&app.broadcast_url("hangcast").await).await;
    next_json(&mut b, "hello", WAIT).await.unwrap();
    let mut user = Browser::open(&app).await;

    redis.signal("-STOP");
    // A login answers promptly, and refuses (the limiter cannot count it).
    let started = Instant::now();
    let (code, body) = user
        .post("/api/auth/login", creds("hangcast", "streamer-password"))
        .await;
    let took = started.elapsed();
    assert_eq!(code, 503, "{body}");
    assert!(took < Duration::from_secs(5), "the login took {took:?}");
    // Viewers still get in.
    let started = Instant::now();
    let mut v = connect(&format!("{}/ws/watch/hangcast", app.ws)).await;
    assert!(next_json(&mut v, "hello", WAIT).await.is_some());
    assert!(started.elapsed() < Duration::from_secs(5));

    // Redis is back: logins work at once.
    redis.signal("-CONT");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(5);
    loop {
        let (code, body) = user
            .post("/api/auth/login", creds("hangcast", "streamer-password"))
            .await;
        if code == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no login 5 s after Redis came back: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(user.get("/api/me").await.0, 200);
}

#[actix_web::test]
async fn one_broadcaster_wins_a_race_of_handshakes() {
    let app = spawn_app().await;
    let url = app.broadcast_url("racer").await;
    let attempts = (0..50).map(|_| {
        let url = url.clone();
        async move {
            match awc::Client::new().ws(url).connect().await {
                Ok((resp, conn)) => (resp.status().as_u16(), Some(conn)),
                Err(awc::error::WsClientError::InvalidResponseStatus(s)) => (s.as_u16(), None),
                Err(e) => panic!("handshake failed: {e}"),
            }
        }
    });
    let results = futures_util::future::join_all(attempts).await;
    let won = results.iter().filter(|(s, _)| *s == 101).count();
    let refused = results.iter().filter(|(s, _)| *s == 409).count();
    assert_eq!(
        (won, refused),
        (1, 49),
        "{:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    // When the winner leaves, the owner can broadcast again.
    drop(results);
    let deadline = Instant::now() + WAIT;
    loop {
        match awc::Client::new().ws(url.clone()).connect().await {
            Ok(_) => break,
            Err(awc::error::WsClientError::InvalidResponseStatus(s)) if s.as_u16() == 409 => {
                assert!(Instant::now() < deadline, "the slot was never released");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// The headers every answer carries, and `no-store` where it matters.
async fn headers_of(
    app: &TestApp,
    path: &str,
    cookie: Option<String>,
) -> awc::http::header::HeaderMap {
    let mut req = awc::Client::new().get(format!("{}{path}", app.address));
    if let Some(c) = cookie {
        req = req.insert_header(("Cookie", c));
    }
    let resp = req.send().await.expect("GET");
    resp.headers().clone()
}

#[actix_web::test]
async fn pages_carry_security_headers() {
    let app = spawn_app().await;
    let h = headers_of(&app, "/", None).await;
    let get = |h: &awc::http::header::HeaderMap, k: &str| {
        h.get(k)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
            .unwrap_or_default()
    };
    let csp = get(&h, "content-security-policy");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(get(&h, "x-frame-options"), "DENY");
    assert_eq!(get(&h, "x-content-type-options"), "nosniff");
    assert!(!get(&h, "referrer-policy").is_empty());
    assert!(
        h.get("strict-transport-security").is_none(),
        "no HSTS over http"
    );

    // Logged in: pages and JSON are not cached.
    let mut b = Browser::open(&app).await;
    let (code, _) = b
        .post("/api/auth/register", creds("headed", "headed password"))
        .await;
    assert_eq!(code, 201);
    for path in ["/studio", "/api/me", "/credits"] {
        let h = headers_of(&app, path, Some(b.cookie_header())).await;
        assert!(
            get(&h, "cache-control").contains("no-store"),
            "{path}: {h:?}"
        );
    }
    assert!(
        get(
            &headers_of(&app, "/api/streams", None).await,
            "cache-control"
        )
        .contains("no-store")
    );

    let https = spawn_app_with(|s| s.public_url = Some("https://dream.example".into())).await;
    let h = headers_of(&https, "/", None).await;
    assert!(
        get(&h, "strict-transport-security").contains("max-age="),
        "{h:?}"
    );
}

on_both_databases!(
    odd_text_is_treated_alike_on_both_databases,
    |db| async move {
        let app = spawn_app_on(db, |_| {}).await;
        let mut b = connect(&app.broadcast_url("oddhost").await).await;
        next_json(&mut b, "hello", WAIT).await.unwrap();
        let mut owner = Browser::open(&app).await;
        let (code, _) = owner
            .post("/api/auth/login", creds("oddhost", "streamer-password"))
            .await;
        assert_eq!(code, 200);
        let resp = owner
            .request(awc::http::Method::PUT, "/api/streams/oddhost/community")
            .send_json(&serde_json::json!({ "requests": true, "comments": true }))
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let mut fan = Browser::open(&app).await;
        let (code, _) = fan
            .post("/api/auth/register", creds("oddfan", "oddfan password"))
            .await;
        assert_eq!(code, 201);
        let (code, body) = fan
            .post(
                "/api/streams/oddhost/comments",
                serde_json::json!({ "text": "nul\u{0}here \u{202e}gnp.exe zero\u{200b}width" }),
            )
            .await;
        assert_eq!(code, 201, "{body}");
        assert_eq!(body["text"], "nulhere gnp.exe zerowidth");
        let (code, body) = fan
            .post(
                "/api/streams/oddhost/requests",
                serde_json::json!({ "prompt": "a\u{0}cat" }),
            )
            .await;
        assert_eq!(code, 201, "{body}");
        assert!(!body["label"].as_str().unwrap().contains('\u{0}'), "{body}");
        let long = vec!["mosaic"; 60].join("+");
        let (code, body) = fan
            .post(
                "/api/streams/oddhost/requests",
                serde_json::json!({ "style": long }),
            )
            .await;
        assert_eq!(code, 400, "{body}");
    }
);

/// Reads until the server closes the connection; false if it is still open
/// after `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> (bool, String) {
    s.set_read_timeout(Some(within)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let started = Instant::now();
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (true, String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (true, String::from_utf8_lossy(&got).into_owned());
            }
            Err(_) => return (false, String::from_utf8_lossy(&got).into_owned()),
        }
        if started.elapsed() > within {
            return (false, String::from_utf8_lossy(&got).into_owned());
        }
    }
}

#[actix_web::test]
async fn a_body_that_never_arrives_is_timed_out() {
    let app = spawn_app_with(|s| s.http.body_timeout_secs = 1).await;
    let addr = app.address.trim_start_matches("http://").to_string();
    off_thread(move || {
        let mut s = TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "POST /api/auth/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: 100\r\n\r\n{{\"user"
        )
        .unwrap();
        let started = Instant::now();
        let (closed, answer) = closed_within(&mut s, Duration::from_secs(10));
        assert!(closed, "still open after 10 s: {answer:?}");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    })
    .await;
}

#[actix_web::test]
async fn connections_per_ip_are_capped() {
    let app = spawn_app_with(|s| s.http.max_connections_per_ip = 4).await;
    let addr = app.address.trim_start_matches("http://").to_string();
    off_thread(move || {
        let get = |s: &mut TcpStream| {
            write!(s, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut buf = [0u8; 1024];
            s.set_read_timeout(Some(WAIT)).unwrap();
            let n = s.read(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        let mut held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(&addr).unwrap()).collect();
        for s in &mut held {
            assert!(get(s).starts_with("HTTP/1.1 200"));
        }
        let mut extra = TcpStream::connect(&addr).unwrap();
        let answer = get(&mut extra);
        assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
        let (closed, _) = closed_within(&mut extra, Duration::from_secs(5));
        assert!(closed, "the extra connection is closed");
        // One leaves: a new connection is served.
        drop(held.pop());
        let deadline = Instant::now() + WAIT;
        loop {
            let mut again = TcpStream::connect(&addr).unwrap();
            let answer = get(&mut again);
            if answer.starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(Instant::now() < deadline, "{answer}");
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await;
}

#[actix_web::test]
async fn one_address_cannot_inflate_a_viewer_count() {
    let app = spawn_app_with(|s| s.http.max_viewers_per_ip = 3).await;
    let mut b = connect(&app.broadcast_url("crowded").await).await;
    next_json(&mut b, "hello", WAIT).await.unwrap();
    let url = format!("{}/ws/watch/crowded", app.ws);
    let mut viewers = Vec::new();
    for _ in 0..3 {
        let mut v = connect(&url).await;
        next_json(&mut v, "hello", WAIT).await.unwrap();
        viewers.push(v);
    }
    match awc::Client::new().ws(url.as_str()).connect().await {
        Err(awc::error::WsClientError::InvalidResponseStatus(s)) => assert_eq!(s.as_u16(), 429),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a fourth viewer from one address was let in"),
    }
    let snap = app
        .state
        .control
        .get(&dreamstream_actors::Username::parse("crowded").unwrap())
        .await
        .unwrap()
        .snapshot();
    assert_eq!(snap.viewers, 3, "{snap:?}");
    // One leaves: another gets in.
    drop(viewers.pop());
    let deadline = Instant::now() + WAIT;
    loop {
        match awc::Client::new().ws(url.as_str()).connect().await {
            Ok(_) => break,
            Err(awc::error::WsClientError::InvalidResponseStatus(s)) if s.as_u16() == 429 => {
                assert!(Instant::now() < deadline, "the slot was never released");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[actix_web::test]
async fn unreadable_requests_get_our_words_not_a_librarys() {
    let app = spawn_app().await;
    let b = Browser::open(&app).await;
    for (body, content_type, want) in [
        (&b"{\"username\": 5"[..], "application/json", 400),
        (&b"{\"username\": \"x\"}"[..], "application/json", 400),
        (&b"username=x"[..], "text/plain", 415),
    ] {
        let mut resp = b
            .request(awc::http::Method::POST, "/api/auth/login")
            .insert_header(("Content-Type", content_type))
            .send_body(body.to_vec())
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), want);
        let text = String::from_utf8_lossy(&resp.body().await.unwrap()).into_owned();
        let json: serde_json::Value = serde_json::from_str(&text).expect("a JSON error");
        let error = json["error"].as_str().unwrap_or_default().to_lowercase();
        assert!(!error.is_empty(), "{text}");
        for leak in [
            "deserialize",
            "line 1",
            "column",
            "missing field",
            "content type error",
        ] {
            assert!(!error.contains(leak), "{text}");
        }
    }
}

#[actix_web::test]
async fn without_public_url_oauth_callbacks_never_come_from_a_foreign_host() {
    let app = spawn_app_with(|s| {
        s.public_url = None;
        s.oauth.insert(
            "github".into(),
            dreamstream::accounts::oauth::OAuthProviderSettings {
                client_id: "client-id".into(),
                client_secret: Some("client-secret".to_string().into()),
                ..Default::default()
            },
        );
    })
    .await;
    let client = awc::Client::builder().disable_redirects().finish();
    let local = client
        .get(format!("{}/auth/github", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(local.status().as_u16(), 303);
    let to = local.headers().get("location").unwrap().to_str().unwrap();
    assert!(to.contains("redirect_uri=http%3A%2F%2F127.0.0.1"), "{to}");
    let forged = client
        .get(format!("{}/auth/github", app.address))
        .insert_header(("Host", "evil.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 503);
    assert!(forged.headers().get("location").is_none());
}
