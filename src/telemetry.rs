//! Logs (tracing: text or JSON) and metrics (Prometheus text at `/metrics`).
//!
//! Every HTTP request gets a request id (the client's `X-Request-Id` when it
//! is a sane token, else a new one), answered in `X-Request-Id` and carried by
//! the `http` span that everything logged while handling the request is in;
//! its latency goes to the `dreamstream_http_request_duration_seconds`
//! histogram by method, route pattern (`/s/{username}`, never the raw path)
//! and status.

use std::sync::OnceLock;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::Instrument;

/// How log lines are written (`log_format` in the settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the log subscriber once per process (`RUST_LOG` filters; default info).
pub fn init_logs(format: LogFormat) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,sea_orm=warn"));
        let builder = tracing_subscriber::fmt().with_env_filter(filter);
        let _ = match format {
            LogFormat::Json => builder.json().try_init(),
            LogFormat::Text => builder.try_init(),
        };
    });
}

/// Latency buckets (seconds): 1 ms to 30 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];

/// The process-wide metrics recorder (installed on first use) and its handle.
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .expect("buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may exist when embedded in a test harness; the
            // handle then renders ours, which stays empty.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    /// The request id of the request being handled (error bodies carry it,
    /// so a user's report finds the log lines with the cause).
    static CURRENT_REQUEST_ID: String;
}

/// The id of the request this task is handling, if any.
pub fn current_request_id() -> Option<String> {
    CURRENT_REQUEST_ID.try_with(Clone::clone).ok()
}

/// The client's request id if it is a short token, else a new random one.
fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .map(String::from)
        .unwrap_or_else(|| hex::encode(rand::random::<[u8; 8]>()))
}

/// Routes that are polled all the time log at debug level only.
fn quiet(route: &str) -> bool {
    matches!(
        route,
        "/healthz" | "/readyz" | "/metrics" | "/static/{file}"
    ) || route.starts_with("/admin/api/")
}

/// Middleware: request id, span, latency histogram, one log line per request.
pub async fn observe_http(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = request_id(&req);
    let method = match req.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    };
    let span = tracing::info_span!("http", request_id = %id, method, path = %req.path());
    let started = Instant::now();
    let result = CURRENT_REQUEST_ID
        .scope(id.clone(), next.call(req).instrument(span.clone()))
        .await;
    let seconds = started.elapsed().as_secs_f64();
    let (status, route) = match &result {
        Ok(res) => (
            res.status(),
            res.request()
                .match_pattern()
                .unwrap_or_else(|| "unmatched".into()),
        ),
        Err(e) => (e.as_response_error().status_code(), "unmatched".into()),
    };
    metrics::histogram!(
        "dreamstream_http_request_duration_seconds",
        "method" => method,
        "route" => route.clone(),
        "status" => status.as_str().to_string(),
    )
    .record(seconds);
    span.in_scope(|| {
        let ms = seconds * 1e3;
        if quiet(&route) && !status.is_server_error() {
            tracing::debug!(status = status.as_u16(), route, ms, "request");
        } else {
            tracing::info!(status = status.as_u16(), route, ms, "request");
        }
    });
    let mut res = result?;
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID, v);
    }
    Ok(res)
}

/// This process's CPU time (user + system, seconds) and resident memory (bytes),
/// from /proc (Linux).
pub fn process_usage() -> Option<(f64, u64)> {
    usage_of("self")
}

/// [`process_usage`] of the process `pid` (`"self"` or a number).
pub fn usage_of(pid: &str) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = 100.0; // USER_HZ on Linux
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let rss_pages: u64 = fields.get(21)?.parse().ok()?;
    Some(((utime + stime) / ticks, rss_pages * 4096))
}
