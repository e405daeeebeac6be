//! What a black-box attacker found (issue 15): each defence, from outside.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};


use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(20);

/// A hand-written WebSocket client on a plain TCP stream, for frames no
/// library would send.
struct Raw {
    s: TcpStream,
    rest: Vec<u8>,
}

impl Raw {
    /// Connects to `app` and upgrades `path`; panics unless the answer is 101.
    fn upgrade(app: &TestApp, path: &str) -> Self {
        let addr = app.address.trim_start_matches("http://");
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.set_write_timeout(Some(WAIT)).unwrap();
        let mut raw = Self {
            s,
            rest: Vec::new(),
        };
        write!(
            raw.s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let end = loop {
            if let Some(i) = raw.rest.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(raw.fill(), "closed during the handshake");
        };
        let head: Vec<u8> = raw.rest.drain(..end).collect();
        let head = String::from_utf8_lossy(&head).to_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        raw
    }

    /// Reads more; false at the end of the stream (or a reset).
    fn fill(&mut self) -> bool {
        let mut buf = [0u8; 65536];
        match self.s.read(&mut buf) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.rest.extend_from_slice(&buf[..n]);
                true
            }
        }
    }

    /// The close code the server sends next (skipping other frames), or None
    /// when the connection ends without one.
    fn close_code(&mut self) -> Option<u16> {
        loop {
            let r = &self.rest;
            if r.len() >= 2 {
                let (len, head) = match r[1] & 0x7f {
                    126 if r.len() >= 4 => (u16::from_be_bytes([r[2], r[3]]) as usize, 4),
                    127 if r.len() >= 10 => (
                        u64::from_be_bytes(r[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    n if n < 126 => (n as usize, 2),
                    _ => (usize::MAX, 0),
                };
                if len != usize::MAX && r.len() >= head + len {
                    let op = r[0] & 0x0f;
                    let payload = r[head..head + len].to_vec();
                    self.rest.drain(..head + len);
                    if op == 0x8 {
                        return (payload.len() >= 2)
                            .then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    }
                    continue;
                }
            }
            if !self.fill() {
                return None;
            }
        }
    }
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
fn oversized_message_is_refused(raw: &mut Raw, limit: usize) {
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
    let mut raw = Raw::upgrade(&app, "/ws/watch/hugeview");
    tokio::task::spawn_blocking(move || oversized_message_is_refused(&mut raw, 64 * 1024))
        .await
        .unwrap();
    // The stream is unharmed.
    let mut v = connect(&format!("{}/ws/watch/hugeview", app.ws)).await;
    next_json(&mut v, "hello", WAIT).await.unwrap();
}

#[actix_web::test]
async fn a_broadcaster_declaring_a_huge_message_is_closed_from_the_header() {
    let app = spawn_app().await;
    let url = app.broadcast_url("hugecast").await;
    let path = format!("/ws/{}", url.split_once("/ws/").unwrap().1);
    let limit = app.state.settings.stream.max_frame_bytes;
    let mut raw = Raw::upgrade(&app, &path);
    tokio::task::spawn_blocking(move || oversized_message_is_refused(&mut raw, limit))
        .await
        .unwrap();
}

