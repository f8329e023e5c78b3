//! Independent read and write halves of a [`WebSocket`].
//!
//! Both halves drive the one connection they share, with the same code as the whole socket
//! (`driver.rs`), each under a lock held for one poll, never across an await. The reader only
//! reads the transport and the writer only writes it, so each direction has one task to wake.
//! What the reader learns that calls for an answer (a ping, a close, a keepalive ping due) is
//! left owed in the connection, and the writer queues it on its next flush, after what the
//! application queued first: replies owed before the peer's close still go out before its echo.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use duplex_proto::frame::OpCode;
use duplex_proto::{CloseFrame, Message};
use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{Error, PreparedMessage, Result, WebSocket};

/// The connection both halves drive.
#[derive(Debug)]
struct Shared<S> {
    ws: Mutex<Inner<S>>,
}

#[derive(Debug)]
struct Inner<S> {
    ws: WebSocket<S>,
    /// The reader was dropped: nothing more will be owed.
    reader_gone: bool,
    /// The writer waiting in [`WebSocketWriter::flush_control`] for something to write.
    writer_waiting: Option<Waker>,
}

impl<S> Inner<S> {
    fn wake_writer(&mut self) {
        if let Some(waker) = self.writer_waiting.take() {
            waker.wake();
        }
    }
}

impl<S> Shared<S> {
    fn lock(&self) -> MutexGuard<'_, Inner<S>> {
        // A poisoned lock means a panic in another half mid-poll; the connection's state is
        // still consistent at every point a poll can panic from (it only moves forward).
        self.ws.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) fn split<S>(ws: WebSocket<S>) -> (WebSocketReader<S>, WebSocketWriter<S>) {
    let protocol = ws.protocol.clone();
    let shared = Arc::new(Shared {
        ws: Mutex::new(Inner {
            ws,
            reader_gone: false,
            writer_waiting: None,
        }),
    });
    (
        WebSocketReader {
            shared: shared.clone(),
            protocol,
        },
        WebSocketWriter { shared },
    )
}

/// The reading half of a split [`WebSocket`]: a [`Stream`] of messages.
///
/// Pings and close frames it receives are answered by the [`WebSocketWriter`] the next time
/// that half flushes (a `send` flushes), so keep the writer in use, or waiting in
/// [`WebSocketWriter::flush_control`], while reading. The same goes for keepalive pings
/// ([`crate::Config::ping_interval`]): the reader decides when one is due, the writer sends
/// it, and the pong deadline starts only once it is queued, so an idle writer delays keepalive
/// but never makes the reader fail the connection.
///
/// # Cancel safety
///
/// [`WebSocketReader::recv`] is cancel safe: a dropped call loses no bytes and no partial frame.
#[derive(Debug)]
pub struct WebSocketReader<S> {
    shared: Arc<Shared<S>>,
    /// A copy, so that [`WebSocketReader::protocol`] can lend it without the lock.
    protocol: Option<String>,
}

/// The writing half of a split [`WebSocket`]: a [`Sink`] of messages.
///
/// It also writes the pongs and close replies the reader leaves owed.
#[derive(Debug)]
pub struct WebSocketWriter<S> {
    shared: Arc<Shared<S>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocketReader<S> {
    /// Receives the next message; `None` after a close frame or when the connection ended.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn recv(&mut self) -> Option<Result<Message>> {
        poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// The subprotocol agreed during the handshake.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The round-trip time measured by the last answered keepalive ping; see
    /// [`WebSocket::rtt`].
    pub fn rtt(&self) -> Option<std::time::Duration> {
        self.shared.lock().ws.rtt()
    }

    /// Puts the halves back together, with every piece of state the connection had
    /// (compression, a close in progress, timers, what the writer still owes).
    ///
    /// Fails with [`Error::Usage`] if they come from different connections.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use duplex::{Role, WebSocket};
    /// let (a, _b) = tokio::io::duplex(1024);
    /// let ws = WebSocket::from_raw(a, Role::Client, Default::default(), Default::default());
    /// let (reader, writer) = ws.split();
    /// let ws = reader.reunite(writer).unwrap();
    /// assert_eq!(ws.role(), Role::Client);
    /// # });
    /// ```
    pub fn reunite(self, writer: WebSocketWriter<S>) -> Result<WebSocket<S>> {
        if !Arc::ptr_eq(&self.shared, &writer.shared) {
            return Err(Error::Usage(
                "the halves do not belong to the same connection",
            ));
        }
        let shared = self.shared.clone();
        // The reader's `Drop` marks it gone in a state about to be discarded.
        drop(writer);
        drop(self);
        match Arc::try_unwrap(shared) {
            Ok(shared) => {
                let inner = shared.ws.into_inner().unwrap_or_else(|e| e.into_inner());
                Ok(inner.ws.reunited())
            }
            // Only the two halves hold the connection, and both are gone by now.
            Err(_) => Err(Error::Usage(
                "the halves do not belong to the same connection",
            )),
        }
    }
}

impl<S> Drop for WebSocketReader<S> {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        inner.reader_gone = true;
        inner.wake_writer();
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WebSocketReader<S> {
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut inner = self.shared.lock();
        let next = inner.ws.poll_recv(cx);
        if inner.ws.has_work_for_writer() {
            inner.wake_writer();
        }
        next
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocketWriter<S> {
    /// Sends a message and flushes it (with any pending pong or close reply).
    ///
    /// # Cancel safety
    ///
    /// If dropped before completion, the message may be queued; it then goes out with the
    /// next send or flush.
    pub async fn send(&mut self, msg: Message) -> Result<()> {
        poll_fn(|cx| Pin::new(&mut *self).poll_ready(cx)).await?;
        Pin::new(&mut *self).start_send(msg)?;
        self.flush().await
    }

    /// Sends a message encoded once for many connections; see [`WebSocket::send_prepared`].
    pub async fn send_prepared(&mut self, msg: &PreparedMessage) -> Result<()> {
        poll_fn(|cx| Pin::new(&mut *self).poll_ready(cx)).await?;
        self.queue_prepared(msg)?;
        self.flush().await
    }

    /// Queues a prepared message without flushing; see [`WebSocket::queue_prepared`]. A
    /// fan-out writer queues every message waiting for its connection, then calls
    /// [`WebSocketWriter::flush`] once: one write for the lot.
    pub fn queue_prepared(&mut self, msg: &PreparedMessage) -> Result<()> {
        self.shared.lock().ws.queue_prepared(msg)
    }

    /// Bytes queued and not yet written to the transport.
    pub fn buffered(&self) -> usize {
        self.shared.lock().ws.buffered()
    }

    /// Sends one fragment of a message sent in pieces; see [`WebSocket::send_fragment`].
    pub async fn send_fragment(&mut self, opcode: OpCode, payload: Bytes, fin: bool) -> Result<()> {
        poll_fn(|cx| Pin::new(&mut *self).poll_ready(cx)).await?;
        {
            let mut inner = self.shared.lock();
            inner.ws.check_queue()?;
            inner.ws.conn.sender().send_fragment(opcode, payload, fin)?;
        }
        self.flush().await
    }

    /// Writes everything queued, including answers the reader left owed.
    pub async fn flush(&mut self) -> Result<()> {
        poll_fn(|cx| Pin::new(&mut *self).poll_flush(cx)).await
    }

    /// Sends a close frame (`None` for one without a code) and flushes it, after the answers
    /// the reader left owed. The peer's answer arrives on the reader.
    pub async fn close(&mut self, frame: Option<CloseFrame>) -> Result<()> {
        {
            let mut inner = self.shared.lock();
            inner.ws.queue_owed();
            if inner.ws.conn.can_send() {
                inner.ws.conn.sender().close(frame)?;
            }
        }
        self.flush().await
    }

    /// Waits until the reader leaves something for this half to write (the pong for a
    /// received ping, a keepalive ping that is due, the answer to a close) and writes it,
    /// with whatever else is queued.
    ///
    /// A writer that only writes when the application has something to send would leave those
    /// waiting; put this in the writer task's `select!` beside the application's own source:
    ///
    /// ```no_run
    /// # async fn run(mut writer: duplex::WebSocketWriter<tokio::net::TcpStream>,
    /// #              mut outbox: tokio::sync::mpsc::Receiver<duplex::Message>) -> duplex::Result<()> {
    /// loop {
    ///     tokio::select! {
    ///         done = writer.flush_control() => done?,
    ///         msg = outbox.recv() => match msg {
    ///             Some(msg) => writer.send(msg).await?,
    ///             None => return writer.close(None).await,
    ///         },
    ///     }
    /// }
    /// # }
    /// ```
    ///
    /// Returns [`Error::Closed`] once the reader is gone and nothing more can arrive.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: what is owed stays owed until it is queued, and queued frames go out with
    /// the next write or flush.
    pub async fn flush_control(&mut self) -> Result<()> {
        poll_fn(|cx| {
            let mut inner = self.shared.lock();
            if inner.ws.has_work_for_writer() {
                return Poll::Ready(Ok(()));
            }
            if inner.reader_gone || inner.ws.conn.is_broken() {
                return Poll::Ready(Err(Error::Closed));
            }
            match &inner.writer_waiting {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => inner.writer_waiting = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await?;
        self.flush().await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WebSocketWriter<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.shared.lock().ws.poll_ready_to_send(cx)
    }

    fn start_send(self: Pin<&mut Self>, msg: Message) -> Result<()> {
        self.shared.lock().ws.queue_message(msg)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.shared.lock().ws.poll_write_all(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.shared.lock().ws.poll_close_sink(cx)
    }
}
