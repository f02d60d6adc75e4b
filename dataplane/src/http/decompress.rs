//! Endpoint answers decompressed on the way through, as Gravitee's HTTP client does with its
//! endpoint's `useCompression` (Vert.x `setDecompressionSupported`, over Netty's
//! `HttpContentDecompressor`): the endpoint is offered `Accept-Encoding: deflate, gzip`, and a
//! `Content-Encoding: gzip` (or `x-gzip`) or `deflate` (or `x-deflate`; zlib-wrapped or raw) answer
//! reaches the client decoded, without its `Content-Encoding` and `Content-Length`. Any other coding,
//! or a list of codings, passes through untouched.
//!
//! Decoding streams: a frame is decoded only when the client asks for the next one, and one step of
//! the decoder yields at most [`STEP_OUTPUT`] bytes, so a small compressed body that expands hugely
//! (a "zip bomb") never sits in memory: it flows to the client at the client's pace, like any large
//! body.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use flate2::write::{DeflateDecoder, GzDecoder, ZlibDecoder};
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// What the gateway offers an endpoint with `useCompression` (Vert.x's value, in its order).
pub const OFFERED: HeaderValue = HeaderValue::from_static("deflate, gzip");

/// Most compressed input handed to the decoder in one step: its output then stays within about
/// `STEP_INPUT` × the format's maximum ratio (about 1000:1), and in practice within the decoder's
/// 32 KiB output buffer, which bounds each step anyway.
const STEP_INPUT: usize = 8 * 1024;
/// The decoder's output is taken after every step; this is the size it is allowed to grow to before
/// it is sent on (bytes).
pub const STEP_OUTPUT: usize = 64 * 1024;

/// A content coding the gateway decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    Deflate,
}

impl Coding {
    /// The coding of an answer with `headers`, if it is one the gateway decodes: exactly one
    /// `Content-Encoding` token, `gzip`/`x-gzip` or `deflate`/`x-deflate` in any case.
    pub fn of(headers: &HeaderMap) -> Option<Coding> {
        let mut values = headers.get_all(CONTENT_ENCODING).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return None;
        };
        let token = value.to_str().ok()?.trim();
        if token.eq_ignore_ascii_case("gzip") || token.eq_ignore_ascii_case("x-gzip") {
            Some(Coding::Gzip)
        } else if token.eq_ignore_ascii_case("deflate") || token.eq_ignore_ascii_case("x-deflate") {
            Some(Coding::Deflate)
        } else {
            None
        }
    }

    /// Removes what no longer describes the decoded body.
    pub fn strip_headers(headers: &mut HeaderMap) {
        headers.remove(CONTENT_ENCODING);
        headers.remove(CONTENT_LENGTH);
    }
}

/// An endpoint's response body: as it came, or decoded; or an answer the cache policy stored (the
/// endpoint is then not called), or the endpoint's body copied aside while it flows to be stored.
#[derive(Debug)]
pub enum UpstreamBody {
    Plain(Incoming),
    Decoded(Box<Decoded<Incoming>>),
    /// The whole body, sent as one frame (`None` once sent).
    Stored(Option<Bytes>),
    Copied(Box<Copied>),
}

/// What happens to a copied body once it has all flowed through.
pub type OnComplete = Box<dyn FnOnce(Bytes) + Send>;

/// A body relayed as it comes while a copy of it is kept, up to `limit` bytes: when the body ends
/// (and only then: a body cut short is not a body) the copy is handed to the completion, unless it
/// outgrew the limit, in which case the copy is dropped as soon as it does and nothing is handed on.
pub struct Copied {
    inner: UpstreamBody,
    copy: Option<bytes::BytesMut>,
    limit: usize,
    on_complete: Option<OnComplete>,
}

impl std::fmt::Debug for Copied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Copied").field("inner", &self.inner).field("limit", &self.limit).finish_non_exhaustive()
    }
}

impl Copied {
    pub fn wrap(inner: UpstreamBody, limit: usize, on_complete: OnComplete) -> UpstreamBody {
        // A body announced larger than the limit is not copied at all.
        let too_large = inner.size_hint().lower() > limit as u64;
        let mut copied = Copied {
            inner,
            copy: (!too_large).then(bytes::BytesMut::new),
            limit,
            on_complete: (!too_large).then_some(on_complete),
        };
        // A body that is over before it starts (a 204, an answer to HEAD) may never be polled.
        if copied.inner.is_end_stream() {
            copied.complete();
        }
        UpstreamBody::Copied(Box::new(copied))
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, UpstreamBodyError>>> {
        let polled = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &polled {
            Some(Ok(frame)) => {
                if let (Some(data), Some(copy)) = (frame.data_ref(), self.copy.as_mut()) {
                    if copy.len() + data.len() > self.limit {
                        self.copy = None;
                        self.on_complete = None;
                    } else {
                        copy.extend_from_slice(data);
                    }
                }
                // The last frame of a body of known length: the copy is complete now, before the
                // client has it all (a client's next request then finds it stored).
                if self.inner.is_end_stream() {
                    self.complete();
                }
            }
            Some(Err(_)) => {
                self.copy = None;
                self.on_complete = None;
            }
            None => self.complete(),
        }
        Poll::Ready(polled)
    }

    fn complete(&mut self) {
        if let (Some(copy), Some(done)) = (self.copy.take(), self.on_complete.take()) {
            done(copy.freeze());
        }
    }
}

impl UpstreamBody {
    /// `body`, decoded when `coding` says so.
    pub fn new(body: Incoming, coding: Option<Coding>) -> UpstreamBody {
        match coding {
            None => UpstreamBody::Plain(body),
            Some(coding) => UpstreamBody::Decoded(Box::new(Decoded::new(body, coding))),
        }
    }
}

/// Why a body could not be relayed: the endpoint's connection failed, or its content could not be
/// decoded.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamBodyError {
    #[error(transparent)]
    Connection(Box<dyn std::error::Error + Send + Sync>),
    #[error("the endpoint's compressed body is invalid: {0}")]
    Decode(std::io::Error),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = UpstreamBodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, UpstreamBodyError>>> {
        match self.get_mut() {
            UpstreamBody::Plain(body) => {
                Pin::new(body).poll_frame(cx).map_err(|e| UpstreamBodyError::Connection(e.into()))
            }
            UpstreamBody::Decoded(decoded) => decoded.poll(cx),
            UpstreamBody::Stored(content) => Poll::Ready(content.take().map(|c| Ok(Frame::data(c)))),
            UpstreamBody::Copied(copied) => copied.poll(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Plain(body) => body.is_end_stream(),
            UpstreamBody::Decoded(decoded) => decoded.done,
            UpstreamBody::Stored(content) => content.is_none(),
            UpstreamBody::Copied(copied) => copied.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Plain(body) => body.size_hint(),
            // The decoded length is unknown until the end.
            UpstreamBody::Decoded(_) => SizeHint::default(),
            UpstreamBody::Stored(content) => SizeHint::with_exact(content.as_ref().map_or(0, |c| c.len() as u64)),
            UpstreamBody::Copied(copied) => copied.inner.size_hint(),
        }
    }
}

/// The decoder, once the format is known (deflate is zlib-wrapped or raw, told by its first two bytes).
enum Decoder {
    Gzip(GzDecoder<Vec<u8>>),
    Zlib(ZlibDecoder<Vec<u8>>),
    Raw(DeflateDecoder<Vec<u8>>),
    /// Deflate whose first two bytes have not all arrived.
    UndecidedDeflate,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Decoder::Gzip(_) => "Gzip",
            Decoder::Zlib(_) => "Zlib",
            Decoder::Raw(_) => "Raw",
            Decoder::UndecidedDeflate => "UndecidedDeflate",
        })
    }
}

impl Decoder {
    fn output(&mut self) -> Option<&mut Vec<u8>> {
        match self {
            Decoder::Gzip(d) => Some(d.get_mut()),
            Decoder::Zlib(d) => Some(d.get_mut()),
            Decoder::Raw(d) => Some(d.get_mut()),
            Decoder::UndecidedDeflate => None,
        }
    }

    fn write(&mut self, input: &[u8]) -> std::io::Result<usize> {
        match self {
            Decoder::Gzip(d) => d.write(input),
            Decoder::Zlib(d) => d.write(input),
            Decoder::Raw(d) => d.write(input),
            Decoder::UndecidedDeflate => Ok(0),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Decoder::Gzip(d) => d.flush(),
            Decoder::Zlib(d) => d.flush(),
            Decoder::Raw(d) => d.flush(),
            Decoder::UndecidedDeflate => Ok(()),
        }
    }

    fn finish(&mut self) -> std::io::Result<()> {
        match self {
            Decoder::Gzip(d) => d.try_finish(),
            Decoder::Zlib(d) => d.try_finish(),
            Decoder::Raw(d) => d.try_finish(),
            Decoder::UndecidedDeflate => Ok(()),
        }
    }
}

/// A compressed body decoded frame by frame.
#[derive(Debug)]
pub struct Decoded<B> {
    body: B,
    decoder: Decoder,
    /// Compressed bytes received and not yet given to the decoder.
    input: Bytes,
    /// The first bytes of a deflate body, until there are two to tell zlib from raw.
    sniffed: Vec<u8>,
    /// The endpoint's body has ended.
    ended: bool,
    /// Everything was sent.
    done: bool,
    /// Trailers from the endpoint, sent after the last data.
    trailers: Option<HeaderMap>,
}

impl<B> Decoded<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new(body: B, coding: Coding) -> Decoded<B> {
        let decoder = match coding {
            Coding::Gzip => Decoder::Gzip(GzDecoder::new(Vec::new())),
            Coding::Deflate => Decoder::UndecidedDeflate,
        };
        Decoded { body, decoder, input: Bytes::new(), sniffed: Vec::new(), ended: false, done: false, trailers: None }
    }

    /// Chooses zlib or raw deflate once two bytes are known (what Netty's `ZLIB_OR_NONE` does): a
    /// zlib header has compression method 8 and a check value making the pair a multiple of 31.
    fn decide(&mut self) {
        if !matches!(self.decoder, Decoder::UndecidedDeflate) {
            return;
        }
        let wanted = 2usize.saturating_sub(self.sniffed.len()).min(self.input.len());
        self.sniffed.extend_from_slice(&self.input[..wanted]);
        self.input.advance(wanted);
        if self.sniffed.len() < 2 && !self.ended {
            return;
        }
        let zlib = self.sniffed.len() == 2
            && self.sniffed[0] & 0x0f == 8
            && (u16::from(self.sniffed[0]) << 8 | u16::from(self.sniffed[1])) % 31 == 0;
        let head = Bytes::from(std::mem::take(&mut self.sniffed));
        self.decoder = if zlib {
            Decoder::Zlib(ZlibDecoder::new(Vec::new()))
        } else {
            Decoder::Raw(DeflateDecoder::new(Vec::new()))
        };
        // The sniffed bytes go first.
        let rest = std::mem::take(&mut self.input);
        self.input = if rest.is_empty() { head } else { [head, rest].concat().into() };
    }

    /// The decoder's output so far, as a frame (`None` when it has none).
    fn take_output(&mut self) -> Option<Frame<Bytes>> {
        let output = self.decoder.output()?;
        if output.is_empty() {
            return None;
        }
        let data = std::mem::take(output);
        Some(Frame::data(Bytes::from(data)))
    }

    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, UpstreamBodyError>>> {
        loop {
            if self.done {
                return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            self.decide();
            if !self.input.is_empty() && !matches!(self.decoder, Decoder::UndecidedDeflate) {
                let step = self.input.len().min(STEP_INPUT);
                match self.decoder.write(&self.input[..step]) {
                    // Data after the end of the compressed stream is ignored.
                    Ok(0) => self.input.clear(),
                    Ok(consumed) => self.input.advance(consumed),
                    Err(error) => return self.fail(error),
                }
                if self.input.is_empty()
                    && let Err(error) = self.decoder.flush()
                {
                    return self.fail(error);
                }
                if let Some(frame) = self.take_output() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                continue;
            }
            if self.ended {
                if matches!(self.decoder, Decoder::UndecidedDeflate) {
                    // Fewer than two bytes in all: decide() chose raw deflate with what there was.
                    continue;
                }
                self.done = true;
                if let Err(error) = self.decoder.finish() {
                    return self.fail(error);
                }
                if let Some(frame) = self.take_output() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                continue;
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.input = data,
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.trailers = Some(trailers);
                        }
                    }
                },
                Some(Err(error)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(UpstreamBodyError::Connection(error.into()))));
                }
                None => self.ended = true,
            }
        }
    }

    fn fail(&mut self, error: std::io::Error) -> Poll<Option<Result<Frame<Bytes>, UpstreamBodyError>>> {
        self.done = true;
        self.trailers = None;
        Poll::Ready(Some(Err(UpstreamBodyError::Decode(error))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    type Chunks = StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>>>;

    fn chunks(content: &[u8], size: usize) -> Chunks {
        let frames: Vec<_> = content.chunks(size).map(|c| Ok(Frame::data(Bytes::copy_from_slice(c)))).collect();
        StreamBody::new(futures::stream::iter(frames))
    }

    /// Decodes `compressed` delivered in pieces of `size`; also answers the largest frame.
    async fn decode(compressed: &[u8], size: usize, coding: Coding) -> Result<(Vec<u8>, usize), UpstreamBodyError> {
        let mut decoded = Decoded::new(chunks(compressed, size), coding);
        let (mut out, mut largest) = (Vec::new(), 0);
        while let Some(frame) = std::future::poll_fn(|cx| decoded.poll(cx)).await {
            let data = frame?.into_data().unwrap();
            largest = largest.max(data.len());
            out.extend_from_slice(&data);
        }
        Ok((out, largest))
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[tokio::test]
    async fn gzip_zlib_and_raw_deflate_decode_in_any_pieces() {
        let text: Vec<u8> = (0..200_000u32).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(&text).unwrap();
        let zlib = zlib.finish().unwrap();
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(&text).unwrap();
        let raw = raw.finish().unwrap();
        for size in [1, 7, 4096, 1 << 20] {
            assert_eq!(decode(&gzip(&text), size, Coding::Gzip).await.unwrap().0, text, "gzip in {size}");
            assert_eq!(decode(&zlib, size, Coding::Deflate).await.unwrap().0, text, "zlib in {size}");
            assert_eq!(decode(&raw, size, Coding::Deflate).await.unwrap().0, text, "raw in {size}");
        }
    }

    #[tokio::test]
    async fn a_bomb_streams_in_bounded_frames() {
        // 64 MiB of zeros compress to about 64 KiB: every frame stays small.
        let bomb = gzip(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 128 * 1024);
        let (out, largest) = decode(&bomb, 1 << 20, Coding::Gzip).await.unwrap();
        assert_eq!(out.len(), 64 << 20);
        assert!(largest <= STEP_OUTPUT, "largest frame {largest}");
    }

    #[tokio::test]
    async fn corrupt_or_cut_bodies_fail() {
        let mut corrupt = gzip(b"hello world, hello world");
        let n = corrupt.len();
        corrupt[n - 6] ^= 0xff; // the CRC
        assert!(matches!(decode(&corrupt, 1024, Coding::Gzip).await, Err(UpstreamBodyError::Decode(_))));
        let cut = gzip(b"hello world, hello world");
        assert!(decode(&cut[..cut.len() - 4], 1024, Coding::Gzip).await.is_err());
        assert!(decode(b"not gzip at all", 1024, Coding::Gzip).await.is_err());
    }

    #[test]
    fn codings_gravitee_decodes() {
        let coding = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_ENCODING, HeaderValue::from_str(value).unwrap());
            Coding::of(&h)
        };
        assert_eq!(coding("gzip"), Some(Coding::Gzip));
        assert_eq!(coding(" X-GZIP "), Some(Coding::Gzip));
        assert_eq!(coding("deflate"), Some(Coding::Deflate));
        assert_eq!(coding("x-deflate"), Some(Coding::Deflate));
        assert_eq!(coding("br"), None);
        assert_eq!(coding("gzip, br"), None);
        assert_eq!(coding("identity"), None);
        assert_eq!(Coding::of(&HeaderMap::new()), None);
        let mut two = HeaderMap::new();
        two.append(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        two.append(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert_eq!(Coding::of(&two), None);
    }
}
