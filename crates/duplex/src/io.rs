//! The I/O steps shared by [`crate::WebSocket`] and its split halves: reading until the engine
//! yields a message, and writing the send queue with vectored writes.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use duplex_proto::recv::Receiver;
use duplex_proto::send::SendQueue;
use duplex_proto::Message;
use tokio::io::{AsyncRead, AsyncWrite};

/// Smallest read: enough for a burst of small frames in one system call.
const READ_CHUNK: usize = 4 * 1024;
/// Largest single reservation for a frame still arriving, so a header that announces a huge
/// payload does not make us commit that memory before the bytes come.
const MAX_READ_CHUNK: usize = 1 << 20;

/// What one attempt to read a message gave.
pub(crate) enum ReadOutcome {
    /// A whole message (or control frame).
    Message(Message),
    /// The peer broke the protocol.
    Protocol(duplex_proto::Error),
    /// The transport ended.
    Eof,
    /// The receiver finished (close received or failed): nothing more will be decoded.
    Finished,
    /// The transport failed.
    Io(io::Error),
}

/// Decodes the next message, reading from `io` as needed.
///
/// Cancel safe: every byte read is in `buf` and every bit of decoding progress in `rx`
/// before this returns `Pending`.
pub(crate) fn poll_read_message<R: AsyncRead + Unpin>(
    io: &mut R,
    rx: &mut Receiver,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<ReadOutcome> {
    loop {
        match rx.receive(buf) {
            Ok(Some(msg)) => return Poll::Ready(ReadOutcome::Message(msg)),
            Err(e) => return Poll::Ready(ReadOutcome::Protocol(e)),
            Ok(None) if rx.is_finished() => return Poll::Ready(ReadOutcome::Finished),
            Ok(None) => {}
        }
        match ready!(poll_read_more(io, rx.read_hint(), buf, cx)) {
            Ok(0) => return Poll::Ready(ReadOutcome::Eof),
            Ok(_) => {}
            Err(e) => return Poll::Ready(ReadOutcome::Io(e)),
        }
    }
}

/// One read into `buf`, with room for `hint` more bytes (bounded).
pub(crate) fn poll_read_more<R: AsyncRead + Unpin>(
    io: &mut R,
    hint: usize,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.is_empty() && buf.capacity() > 4 * MAX_READ_CHUNK {
        // Give back the memory of a large message once it has been handed out.
        *buf = BytesMut::new();
    }
    let want = hint.clamp(READ_CHUNK, MAX_READ_CHUNK);
    if buf.capacity() - buf.len() < want {
        buf.reserve(want);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// Writes from the queue until at most `keep` bytes remain, then (when it is empty) flushes.
///
/// Cancel safe: written bytes are removed from the queue as they go.
pub(crate) fn poll_write_queue<W: AsyncWrite + Unpin>(
    io: &mut W,
    queue: &mut SendQueue,
    keep: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while queue.len() > keep {
        let n = ready!(tokio_util::io::poll_write_buf(
            Pin::new(&mut *io),
            cx,
            queue
        ))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
    }
    if queue.is_empty() {
        ready!(Pin::new(io).poll_flush(cx))?;
    }
    Poll::Ready(Ok(()))
}

/// Reads and discards until the peer closes the transport (a client waiting for the server
/// to close the TCP connection after the closing handshake, RFC 6455 section 7.1.1).
pub(crate) fn poll_drain_to_eof<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    loop {
        buf.clear();
        if ready!(poll_read_more(io, 0, buf, cx))? == 0 {
            return Poll::Ready(Ok(()));
        }
    }
}
