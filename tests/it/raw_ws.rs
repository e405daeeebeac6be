//! A hand-written WebSocket client on a plain, blocking TCP stream: what the
//! server writes is checked byte for byte, and the client can send frames no
//! library would.
//!
//! **Use it off the test's thread** (`spawn_blocking`, or a thread of its
//! own). The test's runtime is single-threaded and drives tasks the server
//! depends on: sqlx returns a pooled connection to its pool from a task
//! spawned where the connection was dropped, so test code that queried the
//! database and then blocks in a read can starve the server of connections
//! until the read times out.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub struct RawWs {
    pub s: TcpStream,
    /// Bytes read but not parsed yet.
    pub rest: Vec<u8>,
}

impl RawWs {
    /// Wraps a connected stream; reads and writes time out after `wait`.
    pub fn new(s: TcpStream, wait: Duration) -> Self {
        s.set_read_timeout(Some(wait)).expect("read timeout");
        s.set_write_timeout(Some(wait)).expect("write timeout");
        Self {
            s,
            rest: Vec::new(),
        }
    }

    /// Reads more; false at the end of the stream, a reset or the timeout.
    pub fn fill(&mut self) -> bool {
        let mut buf = [0u8; 65536];
        match self.s.read(&mut buf) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.rest.extend_from_slice(&buf[..n]);
                true
            }
        }
    }

    /// Sends the upgrade request for `path` (RFC 6455's example key); returns
    /// the response head, lowercased.
    pub fn upgrade(&mut self, host: &str, path: &str) -> String {
        write!(
            self.s,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .expect("the upgrade request is written");
        let end = loop {
            if let Some(i) = self.rest.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(self.fill(), "closed (or silent) during the handshake");
        };
        let head: Vec<u8> = self.rest.drain(..end).collect();
        String::from_utf8_lossy(&head).to_lowercase()
    }

    /// The next whole server frame: (first byte, payload); None when the
    /// connection ends (or stays silent) first.
    pub fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            let r = &self.rest;
            if r.len() >= 2 {
                assert_eq!(r[1] & 0x80, 0, "server frames are not masked");
                let (len, head) = match r[1] {
                    126 if r.len() >= 4 => (u16::from_be_bytes([r[2], r[3]]) as usize, 4),
                    127 if r.len() >= 10 => (
                        u64::from_be_bytes(r[2..10].try_into().expect("8 bytes")) as usize,
                        10,
                    ),
                    n if n < 126 => (n as usize, 2),
                    _ => (usize::MAX, 0),
                };
                if len != usize::MAX && r.len() >= head + len {
                    let op = r[0];
                    let payload = r[head..head + len].to_vec();
                    self.rest.drain(..head + len);
                    return Some((op, payload));
                }
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// The close code the server sends next (skipping other frames), or None
    /// when the connection ends without one.
    pub fn close_code(&mut self) -> Option<u16> {
        loop {
            let (op, payload) = self.frame()?;
            if op & 0x0f == 0x8 {
                return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
    }
}

/// A client frame (masked, RFC 6455 §5.3) of a binary message.
pub fn masked_binary(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x82];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Runs blocking client code off the test's thread (see the module doc).
pub async fn off_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
