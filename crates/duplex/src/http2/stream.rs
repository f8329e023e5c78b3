//! [`H2Stream`]: one HTTP/2 stream as a byte stream, what a WebSocket over HTTP/2 (RFC 8441)
//! runs on.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use h2::{Reason, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most one write asks the connection to send at once: a few DATA frames of the default
/// size. A larger write is cut (writes may be partial) so that one stream's big message does
/// not reserve the whole connection window ahead of the others.
const MAX_WRITE: usize = 64 * 1024;

/// One HTTP/2 stream (the request and response bodies of an extended CONNECT) as an
/// `AsyncRead + AsyncWrite`, carried by [`MaybeTlsStream::H2`](crate::MaybeTlsStream::H2).
///
/// - **Reads** hand out DATA frames in order and give their bytes back to the peer's flow
///   control window as they are read, not when they arrive: a WebSocket whose application does
///   not read stalls its own stream (once its window is full) and no other. The end of the
///   peer's stream (`END_STREAM`) reads as the end of file.
/// - **Writes** wait for send capacity (the stream's and the connection's windows) and queue
///   at most that much, so a peer that does not read makes writes wait instead of buffering
///   without bound; a write may be partial. Flushing is the connection task's job: `flush`
///   returns at once.
/// - **Shutdown** ends the stream in this direction (`END_STREAM`); dropping the stream before
///   both directions have ended resets it (`RST_STREAM` with `CANCEL`).
/// - A reset by the peer reads and writes as [`io::ErrorKind::ConnectionReset`], a `GOAWAY`
///   with an error as [`io::ErrorKind::ConnectionAborted`]; the other streams of the
///   connection go on.
///
/// ```no_run
/// # async fn run() -> duplex::Result<()> {
/// use duplex::MaybeTlsStream;
/// let client = duplex::http2::Client::connect(duplex::ClientBuilder::new("wss://example.com/")?).await?;
/// let (mut ws, _) = client.websocket("/chat").await?;
/// if let MaybeTlsStream::H2(stream) = ws.get_mut() {
///     println!("HTTP/2 stream {}", stream.stream_id());
/// }
/// # Ok(()) }
/// ```
pub struct H2Stream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received and not read yet (the rest of the last DATA frame).
    pending: Bytes,
    /// The peer ended its side of the stream.
    eof: bool,
    /// This side ended its side of the stream.
    ended: bool,
    tls: bool,
}

impl fmt::Debug for H2Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H2Stream")
            .field("stream_id", &self.stream_id())
            .field("pending", &self.pending.len())
            .field("eof", &self.eof)
            .field("ended", &self.ended)
            .field("tls", &self.tls)
            .finish()
    }
}

impl H2Stream {
    pub(crate) fn new(send: SendStream<Bytes>, recv: RecvStream, tls: bool) -> Self {
        H2Stream {
            send,
            recv,
            pending: Bytes::new(),
            eof: false,
            ended: false,
            tls,
        }
    }

    /// The stream's identifier on its connection (odd: opened by the client).
    pub fn stream_id(&self) -> u32 {
        self.send.stream_id().as_u32()
    }

    /// Whether the HTTP/2 connection is encrypted. On the server side this is what the
    /// request's `:scheme` said (`https`), which the client chose for the connection it made.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Resets the stream with an HTTP/2 error code (`0x8` CANCEL, `0x2` INTERNAL_ERROR, ...):
    /// the peer's reads and writes on it fail, the connection and its other streams go on.
    /// Reading and writing here fail afterwards too.
    pub fn reset(&mut self, error_code: u32) {
        self.send.send_reset(Reason::from(error_code));
    }

    /// Why the stream cannot be written to: the peer's reset, the connection's error, or the
    /// stream already ended here.
    fn closed_error(&mut self, cx: &mut Context<'_>) -> io::Error {
        match self.send.poll_reset(cx) {
            Poll::Ready(Ok(reason)) => reset_error(reason),
            Poll::Ready(Err(e)) => io_error(e),
            Poll::Pending => io::Error::new(io::ErrorKind::BrokenPipe, "HTTP/2 stream closed"),
        }
    }

    /// Waits for send capacity for (up to) `want` bytes and returns how much is available.
    fn poll_capacity(&mut self, want: usize, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.ended {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "HTTP/2 stream already ended",
            )));
        }
        loop {
            let available = self.send.capacity();
            if available > 0 {
                return Poll::Ready(Ok(available.min(want)));
            }
            self.send.reserve_capacity(want);
            match ready!(self.send.poll_capacity(cx)) {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                None => return Poll::Ready(Err(self.closed_error(cx))),
            }
        }
    }

    fn send(&mut self, data: Bytes, cx: &mut Context<'_>) -> io::Result<()> {
        match self.send.send_data(data, false) {
            Ok(()) => Ok(()),
            Err(e) if e.is_library() || e.is_io() => Err(io_error(e)),
            Err(_) => Err(self.closed_error(cx)),
        }
    }
}

/// The I/O error for an HTTP/2 error: a reset stream is `ConnectionReset`, a `GOAWAY` is
/// `ConnectionAborted`, a transport error is itself.
pub(crate) fn io_error(e: h2::Error) -> io::Error {
    if e.is_io() {
        return e
            .into_io()
            .unwrap_or_else(|| io::Error::other("HTTP/2 transport error"));
    }
    let by = if e.is_remote() { " by the peer" } else { "" };
    match e.reason() {
        Some(reason) if e.is_go_away() => io::Error::new(
            io::ErrorKind::ConnectionAborted,
            format!("HTTP/2 connection closed{by} with GOAWAY {reason:?} ({e})"),
        ),
        Some(reason) if e.is_reset() => io::Error::new(
            io::ErrorKind::ConnectionReset,
            format!("HTTP/2 stream reset{by} with {reason:?} ({e})"),
        ),
        _ => io::Error::other(e),
    }
}

fn reset_error(reason: Reason) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        format!("HTTP/2 stream reset by the peer with {reason:?}"),
    )
}

impl AsyncRead for H2Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                // The bytes are the reader's now: let the peer send as many more. An error
                // means the stream is gone, which the next read reports.
                let _ = this.recv.flow_control().release_capacity(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => this.pending = data,
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                None => this.eof = true,
            }
        }
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = ready!(this.poll_capacity(buf.len().min(MAX_WRITE), cx))?;
        this.send(Bytes::copy_from_slice(&buf[..n]), cx)?;
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        let n = ready!(this.poll_capacity(total.min(MAX_WRITE), cx))?;
        // A frame's header and its payload go out in one DATA frame.
        let mut data = BytesMut::with_capacity(n);
        for b in bufs {
            let take = b.len().min(n - data.len());
            data.extend_from_slice(&b[..take]);
            if data.len() == n {
                break;
            }
        }
        this.send(data.freeze(), cx)?;
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Queued DATA frames are written by the task that drives the connection.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(Ok(()));
        }
        match this.send.send_data(Bytes::new(), true) {
            Ok(()) => {
                this.ended = true;
                Poll::Ready(Ok(()))
            }
            Err(_) => match this.send.poll_reset(cx) {
                // The stream is over already (the peer reset it politely, or both sides
                // ended): there is nothing left to end.
                Poll::Ready(Ok(Reason::NO_ERROR)) | Poll::Pending => {
                    this.ended = true;
                    Poll::Ready(Ok(()))
                }
                Poll::Ready(Ok(reason)) => Poll::Ready(Err(reset_error(reason))),
                Poll::Ready(Err(e)) => Poll::Ready(Err(io_error(e))),
            },
        }
    }
}
