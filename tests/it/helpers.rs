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

pub struct TestApp {
    pub address: String,
    pub ws: String,
    pub state: web::Data<AppState>,
    _dir: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(change: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = Settings::load(None).expect("settings");
    settings.listen = "127.0.0.1:0".parse().unwrap();
    settings.data_dir = dir.path().to_path_buf();
    settings.local_workers = 1;
    settings.database_url = None;
    change(&mut settings);
    let app = Application::build(settings).await.expect("the app builds");
    let port = app.port();
    let state = app.spawn();
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        ws: format!("ws://127.0.0.1:{port}"),
        state,
        _dir: dir,
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
