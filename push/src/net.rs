//! What the push and pull clients share on the network side: the server's
//! addresses, WebSocket connections, how a refusal is read (stop, retry, or
//! fall back to the WebSocket) and the reconnect backoff.

use std::time::Duration;

use actix_codec::Framed;
use awc::BoxedSocket;
use awc::error::WsClientError;
use awc::ws;

/// A WebSocket connection made by awc.
pub type Conn = Framed<BoxedSocket, ws::Codec>;

/// The largest message a client reads (a frame, with room to spare).
pub const MAX_MESSAGE: usize = 64 << 20;

/// Why a connection could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The server will not take this key for this stream (or the stream
    /// cannot go live): trying again cannot help.
    #[error("{0}")]
    Fatal(String),
    /// The server is away, busy, or still holds the previous connection.
    #[error("{0}")]
    Retry(String),
    /// The server does not take WHIP (WebRTC is off, or no such endpoint).
    #[error("{0}")]
    NoWhip(String),
}

/// The meaning of a refused handshake's status, for the stream `name`.
pub fn classify(status: u16, name: &str, body: &str, whip: bool) -> Refusal {
    let detail = if body.trim().is_empty() {
        format!("{status}")
    } else {
        format!("{status}: {}", body.trim())
    };
    match status {
        401 => Refusal::Fatal(format!(
            "the server refused the stream key for {name} ({detail}): it is wrong, or it was rotated or revoked"
        )),
        403 => Refusal::Fatal(format!(
            "the server refused the stream key for {name} ({detail}): it belongs to another stream"
        )),
        402 => Refusal::Fatal(format!("{name} has no credits left to go live ({detail})")),
        404 | 405 | 415 | 501 if whip => {
            Refusal::NoWhip(format!("the server has no WHIP ingest ({detail})"))
        }
        503 if whip && body.contains("WebRTC") => {
            Refusal::NoWhip(format!("the server has no WHIP ingest ({detail})"))
        }
        400 | 404 => Refusal::Fatal(format!("the server refused {name} ({detail})")),
        _ => Refusal::Retry(format!("the server answered {detail}")),
    }
}

/// The server's address, checked: `http://` only (this client has no TLS
/// yet; behind a TLS proxy, reach the server directly).
pub fn check_server(server: &str) -> anyhow::Result<()> {
    let url = url::Url::parse(server)
        .map_err(|e| anyhow::anyhow!("--server {server:?} is not a URL: {e}"))?;
    match url.scheme() {
        "http" if url.host_str().is_some() => Ok(()),
        "https" => anyhow::bail!(
            "--server {server}: this client speaks plain http:// only (no TLS yet); \
             reach the server directly, not through its TLS proxy"
        ),
        _ => anyhow::bail!("--server must look like http://host:port, not {server:?}"),
    }
}

/// `ws://…` (or `wss://…`) for `http://…` (or `https://…`) and a path.
pub fn ws_url(server: &str, path: &str) -> String {
    let base = server.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    };
    format!("{base}{path}")
}

/// Opens a WebSocket to `url`, with the stream key as a bearer token when
/// given (never in the URL: addresses end up in proxies' logs).
pub async fn connect_ws(url: &str, key: Option<&str>, name: &str) -> Result<Conn, Refusal> {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let mut request = client.ws(url).max_frame_size(MAX_MESSAGE);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    match request.connect().await {
        Ok((_, conn)) => Ok(conn),
        Err(WsClientError::InvalidResponseStatus(status)) => {
            Err(classify(status.as_u16(), name, "", false))
        }
        Err(e) => Err(Refusal::Retry(format!("cannot reach {url}: {e}"))),
    }
}

/// Waits before the next attempt: 0.5 s, doubling to 8 s, with ±20 % jitter
/// so that many devices do not come back in step.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(8);

    pub fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// The wait before the next attempt (and doubles the one after).
    pub fn fail(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        base.mul_f64(rand::random_range(0.8..1.2))
    }

    /// A connection worked: the next failure waits the shortest time again.
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// A flag that turns true when SIGINT or SIGTERM arrives (then stop cleanly).
pub fn shutdown_signal() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    actix_rt::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        let _ = tx.send(true);
    });
    rx
}

/// Prints a progress line to stderr: rewritten in place on a terminal, one
/// line a second otherwise (logs, tests).
pub fn progress(line: &str) {
    use std::io::{IsTerminal, Write};
    let mut err = std::io::stderr().lock();
    if err.is_terminal() {
        let _ = write!(err, "\r\x1b[K{line}");
    } else {
        let _ = writeln!(err, "{line}");
    }
    let _ = err.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_whether_to_stop_retry_or_fall_back() {
        assert!(
            matches!(classify(401, "a", "", false), Refusal::Fatal(m) if m.contains("rotated or revoked"))
        );
        assert!(matches!(classify(403, "a", "", true), Refusal::Fatal(_)));
        assert!(matches!(classify(402, "a", "", false), Refusal::Fatal(_)));
        assert!(matches!(classify(409, "a", "", false), Refusal::Retry(_)));
        assert!(matches!(classify(502, "a", "", true), Refusal::Retry(_)));
        assert!(matches!(classify(404, "a", "", true), Refusal::NoWhip(_)));
        assert!(matches!(classify(404, "a", "", false), Refusal::Fatal(_)));
        assert!(matches!(
            classify(
                503,
                "a",
                r#"{"error":"WebRTC is not enabled on this server"}"#,
                true
            ),
            Refusal::NoWhip(_)
        ));
        assert!(matches!(
            classify(503, "a", "busy", true),
            Refusal::Retry(_)
        ));
    }

    #[test]
    fn only_plain_http_servers_are_taken() {
        assert!(check_server("http://10.0.0.1:8080").is_ok());
        let tls = check_server("https://dream.example")
            .unwrap_err()
            .to_string();
        assert!(tls.contains("no TLS"), "{tls}");
        assert!(check_server("10.0.0.1:8080").is_err());
        assert!(check_server("ftp://h").is_err());
    }

    #[test]
    fn websocket_urls_follow_the_servers_scheme() {
        assert_eq!(ws_url("http://h:8080/", "/ws/x"), "ws://h:8080/ws/x");
        assert_eq!(ws_url("https://h", "/ws/x"), "wss://h/ws/x");
    }

    #[test]
    fn backoff_doubles_to_a_ceiling_and_resets() {
        let mut b = Backoff::new();
        let waits: Vec<Duration> = (0..8).map(|_| b.fail()).collect();
        assert!(waits[0] >= Duration::from_millis(400) && waits[0] <= Duration::from_millis(600));
        assert!(waits[1] >= Duration::from_millis(800));
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(9600)));
        assert!(waits[7] >= Duration::from_millis(6400));
        b.reset();
        assert!(b.fail() <= Duration::from_millis(600));
    }
}
