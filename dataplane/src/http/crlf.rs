//! CRLF-only HTTP/1 framing: a request head (request line, header fields, the empty line) or a
//! chunked body's framing line (chunk sizes, trailers) that ends a line with a bare LF is refused.
//!
//! RFC 9112 §2.2 lets a recipient accept a bare LF; hyper's parser does, and so would a backend that
//! read the bytes themselves. Refusing it closes a class of parser disagreements (a proxy in front of
//! hgw that splits lines only at CRLF sees one request where hgw would see two) and is what Gravitee
//! users get from Netty's strict decoder. hyper has no switch for it, so this reader sits between the
//! socket and hyper: it follows the message framing (Content-Length, chunked, upgrades) just far
//! enough to know which bytes are framing, and turns a bare LF there into a NUL byte, which hyper's
//! parser refuses: a 400 for a head, a malformed body (400 `REQUEST_BODY_INVALID`) for a chunk line.
//! Body bytes are skipped by count, never looked at.
//!
//! A request that asks for an upgrade holds the connection's later bytes back until its answer is
//! known ([`UpgradeGate`]): after a `101` they are the upgraded protocol's and pass untouched; after
//! any other answer they are the next request's and are checked.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, ready};

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A line longer than this (a header block is at most `--max-header-size`, which hyper enforces) is
/// not remembered past this prefix: enough for the field names and values framing depends on.
const LINE_MEMORY: usize = 1024;

/// What follows a refused line ending: whatever the client sent next is dropped.
const REFUSED_TAIL: &[u8] = b"\r\n\r\n";

/// Whether the request holding the connection (one that asked for an upgrade) was switched.
#[derive(Debug, Default)]
pub struct UpgradeGate {
    state: AtomicU8,
    waker: AtomicWaker,
}

const GATE_OPEN: u8 = 0;
const GATE_SWITCHED: u8 = 1;
const GATE_NOT_SWITCHED: u8 = 2;

impl UpgradeGate {
    /// The answer to the request that asked for an upgrade went out: `switched` with a `101`.
    pub fn answered(&self, switched: bool) {
        let state = if switched { GATE_SWITCHED } else { GATE_NOT_SWITCHED };
        if self.state.compare_exchange(GATE_OPEN, state, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.waker.wake();
        }
    }

    fn poll_answer(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let decided = |state: u8| match state {
            GATE_OPEN => None,
            state => Some(state == GATE_SWITCHED),
        };
        if let Some(switched) = decided(self.state.load(Ordering::Acquire)) {
            return Poll::Ready(switched);
        }
        self.waker.register(cx.waker());
        match decided(self.state.load(Ordering::Acquire)) {
            Some(switched) => Poll::Ready(switched),
            None => Poll::Pending,
        }
    }

    fn reopen(&self) {
        self.state.store(GATE_OPEN, Ordering::Release);
    }
}

/// Where the reader is in the connection's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Request line and header fields, up to the empty line.
    Head,
    /// `n` more bytes of a Content-Length body, or of a chunk's data.
    Body { left: u64, chunked: bool },
    /// The CRLF after a chunk's data.
    ChunkEnd { seen: u8 },
    /// A chunk-size line.
    ChunkSize,
    /// Trailer fields after the last chunk, up to the empty line.
    Trailers,
    /// Waiting for the answer to an upgrade request; later bytes are held back.
    Upgrading,
    /// Not HTTP/1 framing any more (switched protocols, an HTTP/2 preface, or a refused line that
    /// hyper will close the connection over).
    Done,
}

/// What the head read so far says about the body that follows.
#[derive(Debug, Default)]
struct Framing {
    request_line_seen: bool,
    content_length: Option<u64>,
    chunked: bool,
    upgrade: bool,
}

/// The framing scanner, separate from the I/O so it can be tested on byte strings.
#[derive(Debug)]
struct Scanner {
    part: Part,
    framing: Framing,
    /// The current line's bytes when it spans reads (up to [`LINE_MEMORY`]).
    line: Vec<u8>,
    /// The previous byte of the current line was a CR.
    cr: bool,
}

/// The result of scanning some bytes.
#[derive(Debug, PartialEq, Eq)]
enum Scanned {
    /// All of them.
    All,
    /// The first `n`: the rest follow an upgrade request and must wait for its answer.
    HoldAfter(usize),
    /// A bare LF at `n`, now a NUL: the bytes after it do not matter any more.
    Refused(usize),
}

impl Scanner {
    fn new() -> Scanner {
        Scanner { part: Part::Head, framing: Framing::default(), line: Vec::new(), cr: false }
    }

    /// Follows `bytes` (the next ones read), turning a bare LF in framing lines into a NUL.
    fn scan(&mut self, bytes: &mut [u8]) -> Scanned {
        let mut at = 0;
        while at < bytes.len() {
            match self.part {
                Part::Done => return Scanned::All,
                Part::Upgrading => return Scanned::HoldAfter(at),
                Part::Body { left, chunked } => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len() - at);
                    at += take;
                    let left = left - take as u64;
                    self.part = match (left, chunked) {
                        (0, true) => Part::ChunkEnd { seen: 0 },
                        (0, false) => Part::Head,
                        (left, chunked) => Part::Body { left, chunked },
                    };
                }
                Part::ChunkEnd { seen } => {
                    // Exactly CR LF; hyper refuses anything else but a bare LF.
                    let expected = if seen == 0 { b'\r' } else { b'\n' };
                    if bytes[at] == b'\n' && seen == 0 {
                        bytes[at] = 0;
                        self.part = Part::Done;
                        return Scanned::Refused(at);
                    }
                    if bytes[at] != expected {
                        self.part = Part::Done;
                        return Scanned::All;
                    }
                    at += 1;
                    self.part = if seen == 0 { Part::ChunkEnd { seen: 1 } } else { Part::ChunkSize };
                }
                Part::Head | Part::ChunkSize | Part::Trailers => {
                    let rest = &mut bytes[at..];
                    let Some(end) = memchr::memchr(b'\n', rest) else {
                        self.remember(rest);
                        return Scanned::All;
                    };
                    let crlf = if end == 0 { self.cr } else { rest[end - 1] == b'\r' };
                    if !crlf {
                        rest[end] = 0;
                        self.part = Part::Done;
                        return Scanned::Refused(at + end);
                    }
                    self.cr = false;
                    if self.line.is_empty() {
                        let line_end = end.saturating_sub(1);
                        at += end + 1;
                        self.line_ended(&rest[..line_end]);
                    } else {
                        // The line began in an earlier read: it ends here, its CR remembered or
                        // just before this LF.
                        self.remember(&rest[..end]);
                        if self.line.last() == Some(&b'\r') {
                            self.line.pop();
                        }
                        self.cr = false;
                        let line = std::mem::take(&mut self.line);
                        at += end + 1;
                        self.line_ended(&line);
                        self.line = line;
                        self.line.clear();
                    }
                }
            }
        }
        if self.part == Part::Upgrading { Scanned::HoldAfter(at) } else { Scanned::All }
    }

    /// Keeps (a prefix of) a line that continues in the next read.
    fn remember(&mut self, bytes: &[u8]) {
        if let Some(&last) = bytes.last() {
            self.cr = last == b'\r';
        }
        let room = LINE_MEMORY.saturating_sub(self.line.len());
        self.line.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if bytes.len() > room {
            // Keep the CR knowledge for a line cut short.
            self.line.truncate(LINE_MEMORY);
        }
    }

    fn line_ended(&mut self, line: &[u8]) {
        match self.part {
            Part::Head if line.is_empty() && !self.framing.request_line_seen => {
                // Empty lines before a request line are ignored (RFC 9112 §2.2), by hyper too.
            }
            Part::Head if line.is_empty() => {
                let framing = std::mem::take(&mut self.framing);
                self.part = if framing.upgrade {
                    Part::Upgrading
                } else if framing.chunked {
                    Part::ChunkSize
                } else {
                    match framing.content_length {
                        Some(left) if left > 0 => Part::Body { left, chunked: false },
                        _ => Part::Head,
                    }
                };
            }
            Part::Head if !self.framing.request_line_seen => {
                self.framing.request_line_seen = true;
                if line.starts_with(b"PRI * HTTP/2.0") {
                    self.part = Part::Done;
                }
            }
            Part::Head => self.header_field(line),
            Part::ChunkSize => {
                let size = line.split(|&b| b == b';').next().unwrap_or_default();
                let size = std::str::from_utf8(size).ok().and_then(|s| u64::from_str_radix(s.trim(), 16).ok());
                self.part = match size {
                    Some(0) => Part::Trailers,
                    Some(left) => Part::Body { left, chunked: true },
                    // hyper refuses the chunk and the connection with it.
                    None => Part::Done,
                };
            }
            Part::Trailers if line.is_empty() => self.part = Part::Head,
            Part::Trailers => {}
            Part::Body { .. } | Part::ChunkEnd { .. } | Part::Upgrading | Part::Done => {}
        }
    }

    fn header_field(&mut self, line: &[u8]) {
        let Some(colon) = memchr::memchr(b':', line) else {
            return;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            // hyper refuses differing lengths; the last one stands for equal ones.
            self.framing.content_length = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Chunked when it is the last coding (hyper's rule; chunked also wins over a length).
            let last = value.rsplit(|&b| b == b',').next().unwrap_or_default().trim_ascii();
            self.framing.chunked = last.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            self.framing.upgrade = true;
        }
    }
}

/// An HTTP/1 client connection read through the [`Scanner`].
#[derive(Debug)]
pub struct CrlfOnly<S> {
    inner: S,
    scanner: Scanner,
    gate: Arc<UpgradeGate>,
    /// Bytes read after an upgrade request, held until its answer.
    held: Vec<u8>,
}

impl<S> CrlfOnly<S> {
    /// Reads `inner`; `gate` is told the answer to each upgrade request.
    pub fn new(inner: S, gate: Arc<UpgradeGate>) -> CrlfOnly<S> {
        CrlfOnly { inner, scanner: Scanner::new(), gate, held: Vec::new() }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CrlfOnly<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.scanner.part == Part::Upgrading {
            let switched = ready!(this.gate.poll_answer(cx));
            this.gate.reopen();
            this.scanner.part = if switched { Part::Done } else { Part::Head };
        }
        let start = buf.filled().len();
        if !this.held.is_empty() {
            let n = this.held.len().min(buf.remaining());
            buf.put_slice(&this.held[..n]);
            this.held.drain(..n);
        } else {
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        }
        let filled = buf.filled().len();
        match this.scanner.scan(&mut buf.filled_mut()[start..]) {
            Scanned::All => {}
            Scanned::HoldAfter(n) => {
                let keep = start + n;
                let later = buf.filled()[keep..filled].to_vec();
                this.held.splice(0..0, later);
                buf.set_filled(keep);
            }
            Scanned::Refused(n) => {
                // hyper's parser waits for more input after a NUL that ends what it has (at a
                // field name, or in a value): an end of head after it makes the refusal final.
                buf.set_filled(start + n + 1);
                this.held = REFUSED_TAIL.to_vec();
                let now = this.held.len().min(buf.remaining());
                buf.put_slice(&this.held[..now]);
                this.held.drain(..now);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CrlfOnly<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans `input` in reads of `step` bytes; returns what hyper would read.
    fn scan(input: &[u8], step: usize) -> Vec<u8> {
        let mut scanner = Scanner::new();
        let mut bytes = input.to_vec();
        for chunk in bytes.chunks_mut(step) {
            match scanner.scan(chunk) {
                Scanned::All => {}
                Scanned::Refused(at) => assert_eq!(chunk[at], 0),
                Scanned::HoldAfter(_) => panic!("no upgrade here"),
            }
        }
        bytes
    }

    fn refused(output: &[u8]) -> bool {
        output.contains(&0)
    }

    #[test]
    fn crlf_requests_pass_untouched_in_any_read_sizes() {
        let input: &[u8] = b"\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\na\nb\ncGET /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3;ext=1\r\n\n\n\n\r\n0\r\nX-T: 1\r\n\r\nGET /d HTTP/1.1\r\nhost: x\r\n\r\n";
        for step in [1, 2, 3, 7, input.len()] {
            assert_eq!(scan(input, step), input, "step {step}");
        }
    }

    #[test]
    fn a_bare_lf_in_a_head_is_refused_wherever_the_read_splits() {
        for input in [
            &b"GET / HTTP/1.1\nHost: x\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: x\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\n\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nokGET / HTTP/1.1\nHost: x\r\n\r\n",
        ] {
            for step in [1, 2, 5, input.len()] {
                assert!(refused(&scan(input, step)), "{input:?} in steps of {step}");
            }
        }
    }

    #[test]
    fn a_bare_lf_in_chunk_framing_is_refused_but_not_in_chunk_data() {
        let head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for body in
            [&b"3\n\r\nabc\r\n0\r\n\r\n"[..], b"3\r\nabc\n0\r\n\r\n", b"3\r\nabc\r\n0\n\r\n", b"0\r\nX: 1\n\r\n"]
        {
            let input = [&head[..], body].concat();
            for step in [1, 4, input.len()] {
                assert!(refused(&scan(&input, step)), "{body:?} in steps of {step}");
            }
        }
        let fine = [&head[..], b"3\r\n\n\n\n\r\n0\r\n\r\n"].concat();
        assert_eq!(scan(&fine, 3), fine);
    }

    #[test]
    fn an_http2_preface_is_left_alone() {
        let input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\n\x04\n\n";
        assert_eq!(scan(input, 5), input);
    }

    #[test]
    fn bytes_after_an_upgrade_request_wait_for_its_answer() {
        let mut scanner = Scanner::new();
        let mut bytes =
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\n\n".to_vec();
        let head = bytes.len() - 3;
        assert_eq!(scanner.scan(&mut bytes), Scanned::HoldAfter(head));
        // Switched: the frames are not HTTP.
        scanner.part = Part::Done;
        let mut frames = b"\x81\n\n".to_vec();
        assert_eq!(scanner.scan(&mut frames), Scanned::All);
        assert_eq!(frames, b"\x81\n\n");
        // Not switched: the next request is checked.
        let mut scanner = Scanner::new();
        let mut upgrade = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n".to_vec();
        assert_eq!(scanner.scan(&mut upgrade), Scanned::HoldAfter(upgrade.len()));
        scanner.part = Part::Head;
        let mut next = b"GET / HTTP/1.1\nHost: x\r\n\r\n".to_vec();
        assert_eq!(scanner.scan(&mut next), Scanned::Refused(14));
        assert!(refused(&next));
    }

    #[tokio::test]
    async fn the_reader_holds_bytes_back_until_the_upgrade_is_answered() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(1024);
        let gate = Arc::new(UpgradeGate::default());
        let mut reader = CrlfOnly::new(server, gate.clone());
        client
            .write_all(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\nGET / HTTP/1.1\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = reader.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n");
        let pending = tokio::time::timeout(std::time::Duration::from_millis(50), reader.read(&mut buf)).await;
        assert!(pending.is_err(), "held until the answer");
        gate.answered(false);
        let n = reader.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"GET / HTTP/1.1\x00\r\n\r\n", "refused: the rest is dropped for an end of head");
    }

    #[tokio::test]
    async fn hyper_answers_400_to_a_bare_lf_wherever_it_is() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let head = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n".to_vec();
        let cases = [
            b"GET / HTTP/1.1\nHost: localhost\r\n\r\n".to_vec(),
            b"GET / HTTP/1.1\r\nHost: localhost\nX: 1\r\n\r\n".to_vec(),
            [&head[..], b"\n"].concat(),
            b"GET / HTTP/1.1\r\nHost: localhost\n".to_vec(),
        ];
        for request in cases {
            let (mut client, server) = tokio::io::duplex(4096);
            let io = hyper_util::rt::TokioIo::new(CrlfOnly::new(server, Arc::new(UpgradeGate::default())));
            let service = hyper::service::service_fn(|_| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(String::from("served")))
            });
            let served = tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(io, service));
            client.write_all(&request).await.unwrap();
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.unwrap();
            let answer = String::from_utf8_lossy(&answer);
            assert!(answer.starts_with("HTTP/1.1 400 "), "{request:?}: {answer}");
            assert!(served.await.unwrap().is_err());
        }
    }
}
