//! `spawn_app()` and WebSocket helpers.

use std::path::PathBuf;
use std::time::Duration;

use actix_web::web;
use awc::ws;
use bytes::Bytes;
use dreamstream::app::Application;
use dreamstream::settings::Settings;
use dreamstream::web::AppState;
use futures_util::{SinkExt, StreamExt};
use gpu_node::image_io::{self, ResizeQuality};

/// Runs an async test body once on SQLite and once on PostgreSQL (two tests,
/// `<name>::sqlite` and `<name>::postgres`).
macro_rules! on_both_databases {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[actix_web::test]
            async fn sqlite() {
                ($body)(Db::Sqlite).await
            }
            #[actix_web::test]
            async fn postgres() {
                ($body)(Db::Postgres).await
            }
        }
    };
}

/// A binary built beside this test (`dreamstream`, `gpu-node`).
pub fn bin(name: &str) -> PathBuf {
    let path = std::path::Path::new(env!("CARGO_BIN_EXE_dreamstream")).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace (`cargo nextest run --workspace` does)",
        path.display()
    );
    path
}

pub struct TestApp {
    pub address: String,
    pub ws: String,
    pub state: web::Data<AppState>,
    _db: Option<PgDatabase>,
    _dir: tempfile::TempDir,
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server the tests use (a fresh database per test is made on it).
pub fn pg_url() -> String {
    std::env::var("DATABASE_URL_PG_TEST")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// The Redis server the tests use.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL_TEST").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Points `settings` at the shared test Redis under a key namespace of its
/// own, and returns that namespace. Tests (and earlier runs of the suite)
/// share one server: without their own namespace their sign-ups and login
/// failures would count against each other's rate limits (all come from
/// 127.0.0.1).
pub fn use_redis(settings: &mut Settings) -> String {
    let prefix = format!("ds:test:{:08x}:", rand::random::<u32>());
    settings.redis_url = Some(redis_url().into());
    settings.redis_prefix = prefix.clone();
    prefix
}

/// A database of its own on the test PostgreSQL server, dropped afterwards.
pub struct PgDatabase {
    pub url: String,
    name: String,
}

impl PgDatabase {
    pub async fn create() -> Self {
        use sea_orm::ConnectionTrait;
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "ds_test_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            rand::random::<u32>()
        );
        let admin = sea_orm::Database::connect(pg_url()).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {} is not reachable ({e}): run .ci/run, or start PostgreSQL and set DATABASE_URL_PG_TEST",
                pg_url()
            )
        });
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a test database");
        let _ = admin.close().await;
        let base = pg_url();
        let (prefix, _) = base.rsplit_once('/').expect("a database URL");
        Self {
            url: format!("{prefix}/{name}"),
            name,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside a runtime: do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                use sea_orm::ConnectionTrait;
                if let Ok(admin) = sea_orm::Database::connect(pg_url()).await {
                    let _ = admin
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            })
        })
        .join();
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(change: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_on(Db::Sqlite, change).await
}

/// The embedded defaults with port 0, data in `dir`, one local worker, no
/// database URL, Redis or Stripe; nothing read from the environment.
pub fn test_settings(dir: &std::path::Path) -> Settings {
    Settings::for_tests(dir)
}

pub async fn spawn_app_on(db: Db, change: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = test_settings(dir.path());
    let pg = match db {
        Db::Sqlite => None,
        Db::Postgres => Some(PgDatabase::create().await),
    };
    settings.database_url = pg.as_ref().map(|p| p.url.clone().into());
    change(&mut settings);
    let app = Application::build(settings).await.expect("the app builds");
    let port = app.port();
    let state = app.spawn();
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        ws: format!("ws://127.0.0.1:{port}"),
        state,
        _db: pg,
        _dir: dir,
    }
}

impl TestApp {
    /// A streamer account `name` with `credits` (made if missing) and its stream key.
    pub async fn streamer(&self, name: &str, credits: i64) -> String {
        let accounts = &self.state.accounts;
        let user = match accounts
            .find(&dreamstream_actors::Username::parse(name).unwrap())
            .await
            .unwrap()
        {
            Some(u) => u,
            None => accounts
                .register(name, "streamer-password")
                .await
                .expect("register"),
        };
        let balance = accounts.balance(user.id).await.unwrap();
        if balance != credits {
            accounts.grant(user.id, credits - balance).await.unwrap();
        }
        dreamstream::accounts::keys::rotate(accounts.db(), user.id)
            .await
            .expect("a stream key")
    }

    /// `/ws/broadcast/{name}?key=...` for a streamer with 10 credits.
    pub async fn broadcast_url(&self, name: &str) -> String {
        let key = self.streamer(name, 10).await;
        format!("{}/ws/broadcast/{name}?key={key}", self.ws)
    }

    /// The seed protocol's `/ws/broadcaster/{name}?key=...`.
    pub async fn seed_broadcast_url(&self, name: &str) -> String {
        let key = self.streamer(name, 10).await;
        format!("{}/ws/broadcaster/{name}?key={key}", self.ws)
    }
}

pub fn shared_dir() -> PathBuf {
    std::env::var_os("DREAMSTREAM_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"))
}

/// The test photos as 320x240 JPEGs (what a camera would send).
pub fn photos() -> Vec<Bytes> {
    ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"]
        .iter()
        .map(|name| {
            let bytes =
                std::fs::read(shared_dir().join("testdata/images").join(name)).expect("photo");
            let img = image_io::decode(&bytes).unwrap();
            let small = image_io::resize(&img, 320, 240, ResizeQuality::Best);
            Bytes::from(image_io::encode_jpeg(&small, 85).unwrap())
        })
        .collect()
}

pub type Conn = actix_codec::Framed<awc::BoxedSocket, ws::Codec>;

pub async fn connect(url: &str) -> Conn {
    let (_resp, conn) = awc::Client::new()
        .ws(url)
        .max_frame_size(64 * 1024 * 1024)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    conn
}

/// What came in, simplified.
#[derive(Debug)]
pub enum In {
    Json(serde_json::Value),
    Binary(Bytes),
    Close(Option<ws::CloseReason>),
}

/// The next data frame (answers pings), or None after `timeout`.
pub async fn next(conn: &mut Conn, timeout: Duration) -> Option<In> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let item = tokio::time::timeout_at(deadline, conn.next())
            .await
            .ok()??;
        match item.ok()? {
            ws::Frame::Text(t) => {
                return Some(In::Json(serde_json::from_slice(&t).expect("JSON text")));
            }
            ws::Frame::Binary(b) => return Some(In::Binary(b)),
            ws::Frame::Close(r) => return Some(In::Close(r)),
            ws::Frame::Ping(p) => {
                let _ = conn.send(ws::Message::Pong(p)).await;
            }
            _ => {}
        }
    }
}

/// Waits for a JSON message of `kind` (skipping others).
pub async fn next_json(
    conn: &mut Conn,
    kind: &str,
    timeout: Duration,
) -> Option<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next(conn, left).await? {
            In::Json(v) if v["type"] == kind => return Some(v),
            In::Close(_) => return None,
            _ => {}
        }
    }
}

/// Waits for the next binary frame (skipping JSON).
pub async fn next_binary(conn: &mut Conn, timeout: Duration) -> Option<Bytes> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next(conn, left).await? {
            In::Binary(b) => return Some(b),
            In::Close(_) => return None,
            _ => {}
        }
    }
}

pub async fn send_binary(conn: &mut Conn, b: Bytes) {
    conn.send(ws::Message::Binary(b)).await.expect("send");
}

pub async fn send_text(conn: &mut Conn, t: &str) {
    conn.send(ws::Message::Text(t.to_string().into()))
        .await
        .expect("send");
}

/// Mean absolute difference of two images after bringing `b` to `a`'s size.
pub fn image_distance(a: &[u8], b: &[u8]) -> f64 {
    let ia = image_io::decode(a).expect("decodes");
    let ib = image_io::decode(b).expect("decodes");
    let ib = image_io::resize(&ib, ia.width, ia.height, ResizeQuality::Best);
    ia.data
        .iter()
        .zip(&ib.data)
        .map(|(x, y)| (*x as i32 - *y as i32).abs() as f64)
        .sum::<f64>()
        / ia.data.len() as f64
}

/// A WebSocket handshake by hand; returns the server's whole answer (status
/// line, headers and body of a refusal).
pub async fn raw_upgrade(base: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(host).await.expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&answer).contains("}") {
            break;
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// A client that keeps its cookies and CSRF token, from a client IP of its
/// choosing (`X-Forwarded-For`, for apps that trust 127.0.0.1 as a proxy).
pub struct Browser {
    pub base: String,
    pub client: awc::Client,
    pub cookies: std::collections::BTreeMap<String, String>,
    pub csrf: String,
    pub ip: Option<String>,
}

impl Browser {
    pub async fn open(app: &TestApp) -> Self {
        Self::open_from(app, None).await
    }

    pub async fn open_from(app: &TestApp, ip: Option<&str>) -> Self {
        let mut b = Self {
            base: app.address.clone(),
            client: awc::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .disable_redirects()
                .finish(),
            cookies: Default::default(),
            csrf: String::new(),
            ip: ip.map(String::from),
        };
        let (code, body) = b.get("/api/auth/csrf").await;
        assert_eq!(code, 200, "{body}");
        b.csrf = body["csrf"].as_str().expect("a CSRF token").to_string();
        b
    }

    /// The `Cookie` header this browser sends.
    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep_cookies<S>(&mut self, resp: &awc::ClientResponse<S>) {
        for v in resp.headers().get_all("set-cookie") {
            let Ok(v) = v.to_str() else { continue };
            let pair = v.split(';').next().unwrap_or_default();
            if let Some((k, val)) = pair.split_once('=') {
                if val.is_empty() {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_string(), val.to_string());
                }
            }
        }
    }

    /// The CSRF token the server last gave.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// A request with the cookies, the CSRF header and the client IP.
    pub fn request(&self, method: awc::http::Method, path: &str) -> awc::ClientRequest {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .insert_header(("X-CSRF-Token", self.csrf.clone()));
        if !self.cookies.is_empty() {
            req = req.insert_header(("Cookie", self.cookie_header()));
        }
        if let Some(ip) = &self.ip {
            req = req.insert_header(("X-Forwarded-For", ip.clone()));
        }
        req
    }

    async fn finish<S>(&mut self, mut resp: awc::ClientResponse<S>) -> (u16, serde_json::Value)
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
    {
        self.keep_cookies(&resp);
        let bytes = resp.body().limit(1 << 22).await.unwrap_or_default();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        if let Some(t) = json["csrf"].as_str() {
            self.csrf = t.to_string();
        }
        (resp.status().as_u16(), json)
    }

    pub async fn get(&mut self, path: &str) -> (u16, serde_json::Value) {
        let resp = self
            .request(awc::http::Method::GET, path)
            .send()
            .await
            .expect("GET");
        self.finish(resp).await
    }

    pub async fn post(&mut self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let resp = self
            .request(awc::http::Method::POST, path)
            .send_json(&body)
            .await
            .expect("POST");
        self.finish(resp).await
    }

    pub async fn post_form(&mut self, path: &str, form: &[(&str, &str)]) -> u16 {
        let mut form: Vec<(&str, &str)> = form.to_vec();
        let csrf = self.csrf.clone();
        form.push(("csrf", &csrf));
        let resp = self
            .request(awc::http::Method::POST, path)
            .send_form(&form)
            .await
            .expect("POST form");
        self.finish(resp).await.0
    }
}
