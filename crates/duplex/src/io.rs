//! The I/O steps of the driver (`driver.rs`): reading until the engine
//! yields a message, and writing the send queue with vectored writes.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use duplex_proto::send::{SendQueue, Sender};
use duplex_proto::{Connection, Message};
use tokio::io::{AsyncRead, AsyncWrite};

/// Smallest read: enough for a burst of small frames, or a few mid-sized ones (four 16 KiB
/// messages in flight), in one system call. Only connections with bytes to read hold a buffer (see
/// [`poll_read_more`]), so this costs an idle connection nothing.
const READ_CHUNK: usize = 64 * 1024;
/// Largest single reservation for a frame still arriving, so a header that announces a huge
/// payload does not make us commit that memory before the bytes come.
const MAX_READ_CHUNK: usize = 1 << 20;

/// What one attempt to read a message gave.
pub(crate) enum ReadOutcome {
    /// A whole message (or control frame).
    Message(Message),
    /// A message (or protocol error) held until the answer it caused is written
    /// ([`duplex_proto::Connection::take_held`]).
    Held,
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
/// Each message counts against the task's cooperative budget (see [`receive_buffered`]).
///
/// Cancel safe: every byte read is in `buf` and every bit of decoding progress in `rx`
/// before this returns `Pending`.
pub(crate) fn poll_read_message<R: AsyncRead + Unpin>(
    io: &mut R,
    conn: &mut Connection,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<ReadOutcome> {
    loop {
        match ready!(receive_buffered(conn, buf, cx)) {
            Some(outcome) => return Poll::Ready(outcome),
            None if conn.receiver().is_finished() => return Poll::Ready(ReadOutcome::Finished),
            None => {}
        }
        match ready!(poll_read_more(io, conn.receiver().read_hint(), buf, cx)) {
            Ok(0) => return Poll::Ready(ReadOutcome::Eof),
            Ok(_) => {}
            Err(e) => return Poll::Ready(ReadOutcome::Io(e)),
        }
    }
}

/// The next message already in `buf` (`None`: more bytes are needed).
///
/// Counts against the task's cooperative budget (tokio's `coop`) like a read from a socket
/// does: one read can bring thousands of small frames, and handing them all out without
/// yielding would let one flooding peer keep a worker thread from every other connection on
/// it. After the budget (128 steps), the task yields once and carries on.
pub(crate) fn receive_buffered(
    conn: &mut Connection,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<Option<ReadOutcome>> {
    // Nothing buffered, nothing to hand out (even an empty frame is two bytes, and a frame
    // whose header the decoder has taken needs more of its payload): the look before every
    // read, three per echoed message, costs neither the budget check nor a decoder call.
    if buf.is_empty() {
        return Poll::Ready(None);
    }
    let coop = ready!(tokio::task::coop::poll_proceed(cx));
    Poll::Ready(match conn.receive(buf) {
        Ok(Some(msg)) => {
            coop.made_progress();
            Some(ReadOutcome::Message(msg))
        }
        Err(e) => Some(ReadOutcome::Protocol(e)),
        Ok(None) if conn.has_held() => Some(ReadOutcome::Held),
        Ok(None) => None,
    })
}

/// One read into `buf`, with room for `hint` more bytes (bounded).
///
/// An idle connection holds no read buffer: when a read finds nothing to read and `buf` holds
/// no partial frame, the buffer goes back to a small per-thread pool, and the next read takes
/// one from there. A busy connection keeps reusing pooled buffers, so this costs no allocation
/// per message, while ten thousand idle connections cost ten thousand buffers less.
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
    if buf.is_empty() && buf.capacity() == 0 {
        *buf = pool::take();
    }
    let want = hint.clamp(READ_CHUNK, MAX_READ_CHUNK);
    if buf.capacity() - buf.len() < want {
        buf.reserve(want);
    }
    let read = tokio_util::io::poll_read_buf(Pin::new(io), cx, buf);
    if read.is_pending() && buf.is_empty() {
        pool::give(std::mem::take(buf));
    }
    read
}

/// Buffers of idle connections, per thread, for the next connection that has bytes to read
/// or a message to write.
mod pool {
    use std::cell::RefCell;

    use bytes::BytesMut;

    /// Buffers kept per thread: enough for the connections one thread serves between two
    /// waits, few enough that the pool's own memory does not matter.
    const KEPT: usize = 32;
    /// Larger buffers are freed rather than pooled.
    const MAX_POOLED: usize = 128 * 1024;

    thread_local! {
        static POOL: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    }

    /// A buffer from the pool, or an empty one (which allocates on first use).
    pub(super) fn take() -> BytesMut {
        POOL.try_with(|p| p.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Returns an empty buffer to the pool (or frees it, when the pool is full).
    pub(super) fn give(buf: BytesMut) {
        if buf.capacity() == 0 || buf.capacity() > MAX_POOLED {
            return;
        }
        let _ = POOL.try_with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < KEPT {
                p.push(buf);
            }
        });
    }
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
        let n = if queue.chunk().len() == queue.len() {
            // One contiguous chunk (the common case: small frames coalesce): a plain write,
            // which costs the kernel less than a vectored write of one buffer.
            let n = ready!(Pin::new(&mut *io).poll_write(cx, queue.chunk()))?;
            queue.advance(n);
            n
        } else {
            ready!(tokio_util::io::poll_write_buf(
                Pin::new(&mut *io),
                cx,
                queue
            ))?
        };
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
    }
    if queue.is_empty() {
        ready!(Pin::new(io).poll_flush(cx))?;
        // Everything is out: the buffer goes back to the pool (see [`lend_write_buffer`]).
        if let Some(spare) = queue.take_spare() {
            pool::give(spare);
        }
    }
    Poll::Ready(Ok(()))
}

/// Returns an empty buffer to the per-thread pool (or frees it when the pool is full).
pub(crate) fn recycle(buf: BytesMut) {
    pool::give(buf);
}

/// Readies `tx` for one more frame: refuses once more than `max` bytes wait (the caller then
/// gives up on the peer), and lends the queue a buffer otherwise (see [`lend_write_buffer`]).
pub(crate) fn make_room(tx: &mut Sender, max: usize) -> crate::Result<()> {
    if tx.buffered() > max {
        return Err(crate::Error::WriteBufferFull);
    }
    lend_write_buffer(tx.queue());
    Ok(())
}

/// Gives `queue` a pooled buffer before a message is queued, if it has none. With
/// [`poll_write_queue`] handing it back once everything is written, a connection holds a
/// write buffer only while it has something to write, and a busy one allocates none per
/// message.
pub(crate) fn lend_write_buffer(queue: &mut SendQueue) {
    if !queue.has_buffer() {
        queue.provide(pool::take());
    }
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
