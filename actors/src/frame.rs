//! Frames and their binary wire header.
//!
//! A binary WebSocket frame is either a bare JPEG (the server numbers it and
//! stamps the arrival time) or a 32-byte header followed by the JPEG:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `DSF1` |
//! | 4..6 | header length, little endian (32; readers skip what they do not know) |
//! | 6..8 | flags (0) |
//! | 8..16 | sequence number |
//! | 16..24 | capture time, Unix ms, broadcaster's clock |
//! | 24..28 | processing time of the frame, µs (outputs) |
//! | 28..32 | server latency, arrival to delivery, µs (outputs) |
//!
//! Viewers get the same header on every output frame, so a page can show the
//! latency and a benchmark can measure it end to end.

use std::sync::OnceLock;

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use tokio::time::Instant;

pub const MAGIC: [u8; 4] = *b"DSF1";
pub const HEADER_LEN: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame header is truncated ({0} bytes)")]
    Truncated(usize),
    #[error("frame header length {0} is invalid")]
    HeaderLength(usize),
    #[error("the frame is empty")]
    Empty,
}

/// What a frame's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameHeader {
    pub seq: u64,
    pub captured_ms: u64,
    pub process_us: u32,
    pub latency_us: u32,
}

impl FrameHeader {
    pub fn write(&self, out: &mut BytesMut) {
        out.put_slice(&MAGIC);
        out.put_u16_le(HEADER_LEN as u16);
        out.put_u16_le(0);
        out.put_u64_le(self.seq);
        out.put_u64_le(self.captured_ms);
        out.put_u32_le(self.process_us);
        out.put_u32_le(self.latency_us);
    }

    /// Splits a binary message into its header (if it has one) and payload.
    pub fn split(msg: Bytes) -> Result<(Option<FrameHeader>, Bytes), FrameError> {
        if msg.is_empty() {
            return Err(FrameError::Empty);
        }
        if !msg.starts_with(&MAGIC) {
            return Ok((None, msg));
        }
        if msg.len() < 8 {
            return Err(FrameError::Truncated(msg.len()));
        }
        let len = u16::from_le_bytes([msg[4], msg[5]]) as usize;
        if len < HEADER_LEN {
            return Err(FrameError::HeaderLength(len));
        }
        if msg.len() < len {
            return Err(FrameError::Truncated(msg.len()));
        }
        let u64_at = |i: usize| u64::from_le_bytes(msg[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_le_bytes(msg[i..i + 4].try_into().expect("4 bytes"));
        let header = FrameHeader {
            seq: u64_at(8),
            captured_ms: u64_at(16),
            process_us: u32_at(24),
            latency_us: u32_at(28),
        };
        Ok((Some(header), msg.slice(len..)))
    }
}

/// A frame from the broadcaster, waiting in the stream's slot.
#[derive(Debug, Clone)]
pub struct InputFrame {
    pub seq: u64,
    pub captured_ms: u64,
    pub received_at: Instant,
    pub jpeg: Bytes,
}

/// The two forms a processed frame travels in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireForm {
    /// [`OutputFrame::binary`]
    Binary = 0,
    /// [`OutputFrame::seed_json`]
    SeedJson = 1,
}

/// A processed frame, shared by every viewer; its wire forms are built once.
#[derive(Debug)]
pub struct OutputFrame {
    pub seq: u64,
    pub captured_ms: u64,
    pub received_at: Instant,
    pub process_us: u32,
    pub latency_us: u32,
    pub jpeg: Bytes,
    binary: OnceLock<Bytes>,
    seed_json: OnceLock<Bytes>,
    /// Each wire form in a transport's framing (see [`OutputFrame::framed`]).
    framed: [OnceLock<Bytes>; 2],
}

impl OutputFrame {
    pub fn new(input: &InputFrame, jpeg: Bytes, process_us: u32, latency_us: u32) -> Self {
        Self {
            seq: input.seq,
            captured_ms: input.captured_ms,
            received_at: input.received_at,
            process_us,
            latency_us,
            jpeg,
            binary: OnceLock::new(),
            seed_json: OnceLock::new(),
            framed: Default::default(),
        }
    }

    /// `form` as one complete message of the transport, built once by
    /// `encode` (the web tier's WebSocket framing) and then shared by every
    /// connection: the fan-out writes one ready buffer per viewer and copies
    /// nothing. The first caller's `encode` wins, so one form must always be
    /// framed the same way.
    pub fn framed(&self, form: WireForm, encode: impl FnOnce(&[u8]) -> Bytes) -> &Bytes {
        self.framed[form as usize].get_or_init(|| {
            encode(match form {
                WireForm::Binary => self.binary(),
                WireForm::SeedJson => self.seed_json(),
            })
        })
    }

    /// Header + JPEG, for binary viewers (built once, shared by all of them).
    pub fn binary(&self) -> &Bytes {
        self.binary.get_or_init(|| {
            let mut b = BytesMut::with_capacity(HEADER_LEN + self.jpeg.len());
            FrameHeader {
                seq: self.seq,
                captured_ms: self.captured_ms,
                process_us: self.process_us,
                latency_us: self.latency_us,
            }
            .write(&mut b);
            b.put_slice(&self.jpeg);
            b.freeze()
        })
    }

    /// `{"type":"frame","frame":"data:image/jpeg;base64,…"}` for the seed
    /// protocol (UTF-8 text, built once).
    pub fn seed_json(&self) -> &Bytes {
        self.seed_json.get_or_init(|| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&self.jpeg);
            let mut s = String::with_capacity(b64.len() + 64);
            s.push_str(r#"{"type":"frame","seq":"#);
            s.push_str(&self.seq.to_string());
            s.push_str(r#","frame":"data:image/jpeg;base64,"#);
            s.push_str(&b64);
            s.push_str(r#""}"#);
            Bytes::from(s)
        })
    }
}

/// Milliseconds since the Unix epoch now.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_bare_jpeg() {
        let mut b = BytesMut::new();
        let h = FrameHeader {
            seq: 7,
            captured_ms: 1_700_000_000_123,
            process_us: 1234,
            latency_us: 99,
        };
        h.write(&mut b);
        b.put_slice(b"\xFF\xD8jpeg");
        let (got, payload) = FrameHeader::split(b.freeze()).unwrap();
        assert_eq!(got, Some(h));
        assert_eq!(&payload[..], b"\xFF\xD8jpeg");
        let (none, jpeg) = FrameHeader::split(Bytes::from_static(b"\xFF\xD8x")).unwrap();
        assert_eq!(none, None);
        assert_eq!(jpeg.len(), 3);
        assert_eq!(
            FrameHeader::split(Bytes::from_static(b"DSF1\x20\x00")),
            Err(FrameError::Truncated(6))
        );
        assert_eq!(FrameHeader::split(Bytes::new()), Err(FrameError::Empty));
    }

    #[test]
    fn output_wire_forms_are_cached() {
        let input = InputFrame {
            seq: 3,
            captured_ms: 10,
            received_at: Instant::now(),
            jpeg: Bytes::from_static(b"in"),
        };
        let out = OutputFrame::new(&input, Bytes::from_static(b"\xFF\xD8out"), 5, 6);
        let a = out.binary();
        let b = out.binary();
        assert_eq!(a.as_ptr(), b.as_ptr(), "built once");
        assert_eq!(a.len(), HEADER_LEN + 5);
        let framed = out.framed(WireForm::Binary, |b| Bytes::from([&b"<"[..], b].concat()));
        assert_eq!(&framed[1..], &a[..]);
        let again = out.framed(WireForm::Binary, |_| unreachable!("built once"));
        assert_eq!(framed.as_ptr(), again.as_ptr());
        let json = out.seed_json();
        let v: serde_json::Value = serde_json::from_slice(json).unwrap();
        assert_eq!(v["type"], "frame");
        assert!(
            v["frame"]
                .as_str()
                .unwrap()
                .starts_with("data:image/jpeg;base64,/9h")
        );
    }
}
