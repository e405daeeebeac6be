//! A viewer's socket, written directly: the fan-out's one write per viewer.
//!
//! Why: fan-out is the platform's hottest loop (viewers × fps). Through an
//! actix session actor every delivered frame costs a mailbox hop to the
//! connection's worker thread, a wakeup, a copy of the frame into the session's
//! write buffer, then the write. Here the stream's fan-out writes each frame to
//! every viewer's socket itself: one `send` per viewer of one buffer, the
//! complete WebSocket message built once per frame and shared by all viewers
//! (`OutputFrame::framed`) — no copy, no allocation, no hop.
//!
//! How it lives beside actix: after the `101 Switching Protocols` response
//! actix writes nothing more to the connection as long as the response body
//! stays pending ([`handshake_body`]); it still reads the socket and hands the
//! client's bytes to the session as its payload. We write through our own
//! descriptor of the same socket (a `dup` made when the connection was
//! accepted, [`ConnSocket`]), so actix closing its descriptor can never leave
//! us writing to a reused descriptor number of another connection.
//!
//! When the kernel's send buffer is full, the rest of a message waits in the
//! [`Outbox`] and the session task flushes it once the socket is writable;
//! while anything waits, frames beyond the viewer's limit are dropped for this
//! viewer only, and control messages (events, pongs, close) always queue, up
//! to [`MAX_QUEUED_BYTES`] (a viewer that never reads is then disconnected).
//! **Invariant:** every write happens under the outbox lock and only when
//! nothing is queued before it, so messages never interleave on the wire and a
//! frame is either sent whole or not at all.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use dreamstream_actors::sink::Delivery;
use tokio::sync::Notify;

/// Bytes that may wait for one viewer (besides the kernel's send buffer)
/// before it is considered gone: a few frames plus events.
pub const MAX_QUEUED_BYTES: usize = 8 << 20;

/// Messages gathered into one `sendmsg` when flushing a backlog.
const FLUSH_BATCH: usize = 16;

/// WebSocket opcodes (RFC 6455 §5.2) the server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OpCode {
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

/// One complete, unmasked, final server frame (RFC 6455 §5.2): header and
/// payload in one buffer, so it goes out with one `send`.
pub fn message(op: OpCode, payload: &[u8]) -> Bytes {
    let len = payload.len();
    let mut out = Vec::with_capacity(len + 10);
    out.push(0x80 | op as u8);
    if len < 126 {
        out.push(len as u8);
    } else if len <= u16::MAX as usize {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// The accepted connection's own descriptor, `dup`ed in `on_connect`. A
/// WebSocket handler takes it; on other connections it closes with the
/// connection.
pub struct ConnSocket(std::cell::RefCell<Option<OwnedFd>>);

impl ConnSocket {
    pub fn new(fd: OwnedFd) -> Self {
        Self(std::cell::RefCell::new(Some(fd)))
    }

    /// The descriptor, once.
    pub fn take(&self) -> Option<OwnedFd> {
        self.0.borrow_mut().take()
    }
}

/// One message waiting to be written, `sent` bytes of it already are.
struct Queued {
    message: Bytes,
    sent: usize,
    /// A frame (may be dropped for a slow viewer), not a control message.
    frame: bool,
}

#[derive(Default)]
struct Outbox {
    /// The handshake is on the wire: we may write.
    open: bool,
    queue: VecDeque<Queued>,
    queued_frames: usize,
    queued_bytes: usize,
    /// A close frame is queued: nothing more is accepted.
    closing: bool,
    /// Writing failed (the peer is gone) or the session ended.
    broken: bool,
}

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Nothing waits.
    All,
    /// The handshake is not on the wire yet: [`DirectSocket::woken`] tells when.
    NotOpen,
    /// The kernel's buffer is full: wait until the socket is writable.
    Blocked,
    /// The connection is gone.
    Broken,
}

/// A viewer's socket as a message writer, shared by the stream's fan-out
/// (any thread) and the viewer's session task.
pub struct DirectSocket {
    /// Our descriptor of the connection, registered with the reactor of the
    /// worker that accepted it (for write readiness); written from any thread.
    tcp: tokio::net::TcpStream,
    outbox: Mutex<Outbox>,
    /// Tells the session there is something to flush or that it should close.
    wake: Notify,
    /// Tells the response body (and so actix) that the connection is done.
    done: Notify,
}

impl DirectSocket {
    /// Takes the connection's descriptor; must run on a tokio runtime (the
    /// accepting worker's), whose reactor then reports write readiness.
    pub fn new(fd: OwnedFd) -> io::Result<Arc<Self>> {
        let std = std::net::TcpStream::from(fd);
        std.set_nonblocking(true)?;
        Ok(Arc::new(Self {
            tcp: tokio::net::TcpStream::from_std(std)?,
            outbox: Mutex::new(Outbox::default()),
            wake: Notify::new(),
            done: Notify::new(),
        }))
    }

    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a frame's complete message (shared by every viewer), or queues
    /// it behind what waits; with `limit` frames already waiting it is dropped
    /// for this viewer.
    pub fn send_frame(&self, message: &Bytes, limit: usize) -> Delivery {
        self.send(message, Some(limit))
    }

    /// Sends a control message or event; it is never dropped while the
    /// connection lives.
    pub fn send_control(&self, op: OpCode, payload: &[u8]) -> Delivery {
        self.send(&message(op, payload), None)
    }

    fn send(&self, message: &Bytes, frame_limit: Option<usize>) -> Delivery {
        let frame = frame_limit.is_some();
        let mut out = self.outbox();
        if out.broken || out.closing {
            return Delivery::Closed;
        }
        if !out.open || !out.queue.is_empty() {
            if frame_limit.is_some_and(|limit| out.queued_frames >= limit) {
                return Delivery::Dropped;
            }
            return self.enqueue(&mut out, message.clone(), 0, frame);
        }
        match self.send_now(message) {
            Ok(n) if n == message.len() => Delivery::Sent,
            Ok(n) => {
                let delivery = self.enqueue(&mut out, message.clone(), n, frame);
                self.wake.notify_one();
                delivery
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let delivery = self.enqueue(&mut out, message.clone(), 0, frame);
                self.wake.notify_one();
                delivery
            }
            Err(e) => {
                tracing::debug!(error = %e, "viewer socket write failed");
                out.broken = true;
                self.wake.notify_one();
                Delivery::Closed
            }
        }
    }

    fn enqueue(&self, out: &mut Outbox, message: Bytes, sent: usize, frame: bool) -> Delivery {
        let size = message.len() - sent;
        if out.queued_bytes + size > MAX_QUEUED_BYTES {
            if frame && sent == 0 {
                return Delivery::Dropped;
            }
            // A viewer that reads nothing while megabytes wait is gone.
            out.broken = true;
            self.wake.notify_one();
            return Delivery::Closed;
        }
        out.queued_bytes += size;
        out.queued_frames += usize::from(frame);
        out.queue.push_back(Queued {
            message,
            sent,
            frame,
        });
        Delivery::Sent
    }

    /// The fast path's one `send(2)` of one buffer, straight to the socket
    /// (the cheapest call the kernel has for it; `writev` through tokio costs
    /// more). It bypasses tokio's readiness, so after a `WouldBlock` here
    /// tokio may still think the socket writable: the flush then gets its own
    /// `WouldBlock` through tokio, which resets the readiness properly.
    fn send_now(&self, buf: &[u8]) -> io::Result<usize> {
        let socket = socket2::SockRef::from(&self.tcp);
        loop {
            match socket.send_with_flags(buf, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    /// One non-blocking `writev`, retried when a signal interrupts it. A
    /// write that would block clears tokio's readiness, so [`Self::writable`]
    /// waits for the kernel to free room. (Rust programs ignore SIGPIPE: a
    /// peer that is gone is an error here, not a signal.)
    fn write(&self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        loop {
            match self.tcp.try_write_vectored(iov) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    /// Waits until the socket may take more bytes (after [`Flushed::Blocked`]).
    pub async fn writable(&self) -> io::Result<()> {
        self.tcp.writable().await
    }

    /// Writes what waits, as far as the kernel takes it.
    pub fn flush(&self) -> Flushed {
        let mut out = self.outbox();
        loop {
            if out.broken {
                return Flushed::Broken;
            }
            if !out.open {
                return Flushed::NotOpen;
            }
            if out.queue.is_empty() {
                return Flushed::All;
            }
            let iov: Vec<IoSlice<'_>> = out
                .queue
                .iter()
                .take(FLUSH_BATCH)
                .map(|item| IoSlice::new(&item.message[item.sent..]))
                .collect();
            let result = self.write(&iov);
            drop(iov);
            match result {
                Ok(n) => out.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flushed::Blocked,
                Err(e) => {
                    tracing::debug!(error = %e, "viewer socket flush failed");
                    out.broken = true;
                    return Flushed::Broken;
                }
            }
        }
    }

    /// The handshake response is on the wire: what queued before can go.
    pub fn open(&self) {
        self.outbox().open = true;
        self.wake.notify_one();
    }

    /// Queues a close frame; nothing is accepted after it. The session
    /// flushes it and ends the connection.
    pub fn close(&self, code: u16, reason: &str) {
        let mut body = Vec::with_capacity(2 + reason.len().min(123));
        body.extend_from_slice(&code.to_be_bytes());
        // A close frame's payload is at most 125 bytes (RFC 6455 §5.5).
        body.extend_from_slice(truncate_utf8(reason, 123).as_bytes());
        self.send_control(OpCode::Close, &body);
        self.outbox().closing = true;
        self.wake.notify_one();
    }

    pub fn is_closing(&self) -> bool {
        let out = self.outbox();
        out.closing || out.broken
    }

    /// Waits until [`Self::open`], [`Self::close`] or a blocked write asks the
    /// session to act.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// The session is over: the response body ends, so actix shuts the
    /// connection down; later writes are refused.
    pub fn finish(&self) {
        let mut out = self.outbox();
        out.broken = true;
        out.queue.clear();
        drop(out);
        self.done.notify_one();
    }

    async fn finished(&self) {
        self.done.notified().await;
    }
}

impl Outbox {
    /// `n` more bytes of the queue's front are written.
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            let left = front.message.len() - front.sent;
            let step = left.min(n);
            front.sent += step;
            self.queued_bytes -= step;
            n -= step;
            if front.sent == front.message.len() {
                let done = self.queue.pop_front().expect("front exists");
                self.queued_frames -= usize::from(done.frame);
            }
        }
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The body of the `101` response: it yields nothing and ends when the
/// session finishes (then actix shuts the connection down).
///
/// actix's HTTP/1 dispatcher polls the body for the first time right after it
/// has put the response head into its write buffer, and writes that buffer
/// out before it polls again; yielding once therefore means that at the second
/// poll the handshake has been handed to the kernel, and our writes may start.
///
/// That holds whenever the kernel takes the whole buffer, which it does
/// unless the client left more than the socket's send buffer
/// (`stream.socket_send_buffer`, doubled by the kernel) of earlier responses
/// on this connection unread *and* pipelined the upgrade behind them. Browsers
/// and proxies never pipeline (nginx sends the upgrade on a kept-alive
/// upstream connection only after the previous response has arrived), and a
/// client that does it garbles only its own connection.
pub fn handshake_body(
    socket: Arc<DirectSocket>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + 'static {
    futures_util::stream::unfold(Some(socket), |socket| async move {
        let socket = socket?;
        tokio::task::yield_now().await;
        socket.open();
        socket.finished().await;
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    /// A loopback connection: our end as an open DirectSocket whose
    /// readiness is known, the peer as a blocking stream.
    async fn pair() -> (Arc<DirectSocket>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        let socket = DirectSocket::new(OwnedFd::from(ours)).unwrap();
        socket.writable().await.unwrap();
        (socket, peer)
    }

    fn read_exact(peer: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        peer.read_exact(&mut buf).unwrap();
        buf
    }

    async fn flush_all(socket: &DirectSocket) {
        loop {
            match socket.flush() {
                Flushed::Blocked => socket.writable().await.unwrap(),
                other => return assert_eq!(other, Flushed::All),
            }
        }
    }

    #[test]
    fn headers_follow_rfc6455_lengths() {
        assert_eq!(&message(OpCode::Text, b"hello")[..], b"\x81\x05hello");
        assert_eq!(
            &message(OpCode::Binary, &[0; 300])[..4],
            &[0x82, 126, 1, 44]
        );
        let big = message(OpCode::Binary, &[0; 70_000]);
        assert_eq!(&big[..10], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert_eq!(big.len(), 70_010);
    }

    #[tokio::test]
    async fn queues_until_open_then_writes_in_order() {
        let (socket, mut peer) = pair().await;
        assert_eq!(socket.send_control(OpCode::Text, b"hello"), Delivery::Sent);
        assert_eq!(
            socket.send_frame(&message(OpCode::Binary, b"ab"), 4),
            Delivery::Sent
        );
        assert_eq!(
            socket.flush(),
            Flushed::NotOpen,
            "nothing before the handshake"
        );
        socket.open();
        flush_all(&socket).await;
        assert_eq!(
            read_exact(&mut peer, 11),
            b"\x81\x05hello\x82\x02ab".to_vec()
        );
        // Open and empty: written at once, no flush needed.
        socket.send_frame(&message(OpCode::Binary, b"c"), 4);
        assert_eq!(read_exact(&mut peer, 3), b"\x82\x01c".to_vec());
    }

    #[tokio::test]
    async fn a_full_kernel_buffer_queues_then_drops_frames_but_never_splits_one() {
        let (socket, mut peer) = pair().await;
        socket.open();
        let frame = message(OpCode::Binary, &[7u8; 100_000]);
        let mut sent = 0;
        let mut dropped = 0;
        for _ in 0..100 {
            match socket.send_frame(&frame, 2) {
                Delivery::Sent => sent += 1,
                Delivery::Dropped => dropped += 1,
                Delivery::Closed => panic!("closed"),
            }
        }
        assert!(dropped > 0, "the peer reads nothing: frames must drop");
        // An event still queues behind the frames.
        assert_eq!(socket.send_control(OpCode::Text, b"{}"), Delivery::Sent);
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            peer.read_to_end(&mut all).unwrap();
            all
        });
        flush_all(&socket).await;
        drop(socket);
        let all = reader.join().unwrap();
        // Whole frames, then the event: parse the stream back.
        let mut at = 0;
        let mut frames = 0;
        while at < all.len() {
            let (len, head) = match all[at + 1] {
                126 => (u16::from_be_bytes([all[at + 2], all[at + 3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(all[at + 2..at + 10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            let op = all[at];
            at += head + len;
            if op == 0x82 {
                assert_eq!(len, 100_000);
                frames += 1;
            } else {
                assert_eq!(op, 0x81);
                assert_eq!(at, all.len(), "the event comes last");
            }
        }
        assert_eq!(frames, sent);
    }

    #[tokio::test]
    async fn a_peer_that_is_gone_closes_the_sink() {
        let (socket, peer) = pair().await;
        socket.open();
        drop(peer);
        let body = message(OpCode::Binary, b"x");
        let mut attempts = 0;
        // The first write may still be accepted (the peer's reset is the answer).
        while socket.send_frame(&body, usize::MAX) != Delivery::Closed {
            attempts += 1;
            assert!(attempts < 1000, "a write to a closed peer must fail");
            if socket.flush() == Flushed::Blocked {
                socket.writable().await.unwrap();
            }
        }
        assert!(socket.is_closing());
    }

    #[tokio::test]
    async fn close_queues_a_close_frame_and_refuses_more() {
        let (socket, mut peer) = pair().await;
        socket.open();
        socket.close(1000, "bye");
        flush_all(&socket).await;
        assert_eq!(read_exact(&mut peer, 7), b"\x88\x05\x03\xe8bye".to_vec());
        assert_eq!(
            socket.send_frame(&message(OpCode::Binary, b"x"), 4),
            Delivery::Closed
        );
        let long = "é".repeat(100);
        assert!(truncate_utf8(&long, 123).len() <= 123);
    }
}
