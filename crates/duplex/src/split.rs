//! Independent read and write halves of a [`WebSocket`].
//!
//! Each half owns its direction of the protocol engine outright: the reader holds the
//! [`Receiver`] and the read side of the transport, the writer the [`Sender`] and the write
//! side. What the reader learns that the writer must act on (a ping to answer, a close to echo,
//! a protocol violation to report with a close code) is handed over (`handover.rs`: a lock
//! taken only when there is something to hand over; the writer's hot path reads one flag) and
//! is written the next time the writer is used.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use duplex_proto::frame::OpCode;
use duplex_proto::recv::Receiver;
use duplex_proto::send::Sender;
use duplex_proto::{CloseCode, CloseFrame, Message, Role};
use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};

use crate::handover::{handover, Control, Handed, ReaderEnd, WriterEnd};
use crate::io::{make_room, poll_read_message, poll_write_queue, ReadOutcome};
use crate::keepalive::{Due, Keepalive, PingStamp, Tracked, WriteStall};
use crate::{Config, Error, PreparedMessage, Result, WebSocket};

// The parts of a connection moving between its whole and split forms; a struct for them
// would exist only to be taken apart again.
#[allow(clippy::too_many_arguments)]
pub(crate) fn split<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    rx: Receiver,
    tx: Sender,
    read_buf: BytesMut,
    config: Arc<Config>,
    role: Role,
    protocol: Option<String>,
    mut keepalive: Keepalive,
) -> (WebSocketReader<S>, WebSocketWriter<S>) {
    let (read_io, write_io) = tokio::io::split(io);
    let (reader_end, writer_end) = handover();
    let stamp = keepalive.share_stamp();
    (
        WebSocketReader {
            io: read_io,
            rx,
            read_buf,
            handover: reader_end,
            terminated: false,
            protocol: protocol.clone(),
            keepalive,
        },
        WebSocketWriter {
            io: write_io,
            tx,
            handover: writer_end,
            stall: WriteStall::default(),
            config,
            role,
            protocol,
            peer_closed: false,
            shut_down: false,
            stamp,
            broken: false,
        },
    )
}

/// The reading half of a split [`WebSocket`]: a [`Stream`] of messages.
///
/// Pings and close frames it receives are answered by the [`WebSocketWriter`] the next time
/// that half sends or flushes, so keep the writer in use (or call
/// [`WebSocketWriter::flush`]) while reading. The same goes for keepalive pings
/// ([`Config::ping_interval`]): the reader decides when one is due, the writer sends it, and the
/// pong deadline starts only once it is sent, so an idle writer delays keepalive but never
/// makes the reader fail the connection. A task that only reads can call
/// [`WebSocketWriter::flush`] on a timer.
///
/// # Cancel safety
///
/// [`WebSocketReader::recv`] is cancel safe: a dropped call loses no bytes and no partial frame.
#[derive(Debug)]
pub struct WebSocketReader<S> {
    io: ReadHalf<S>,
    rx: Receiver,
    read_buf: BytesMut,
    handover: ReaderEnd,
    terminated: bool,
    protocol: Option<String>,
    keepalive: Keepalive,
}

/// The writing half of a split [`WebSocket`]: a [`Sink`] of messages.
///
/// It also writes the pongs and close replies the reader asks for.
#[derive(Debug)]
pub struct WebSocketWriter<S> {
    io: WriteHalf<S>,
    tx: Sender,
    handover: WriterEnd,
    config: Arc<Config>,
    role: Role,
    protocol: Option<String>,
    peer_closed: bool,
    shut_down: bool,
    stamp: Arc<PingStamp>,
    stall: WriteStall,
    broken: bool,
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
        self.keepalive.rtt()
    }

    /// Puts the halves back together.
    ///
    /// Fails with [`Error::Reunite`] if they come from different connections.
    pub fn reunite(self, mut writer: WebSocketWriter<S>) -> Result<WebSocket<S>> {
        if !self.io.is_pair_of(&writer.io) {
            return Err(Error::Reunite);
        }
        writer.drain_control();
        let io = self.io.unsplit(writer.io);
        Ok(WebSocket::from_halves(
            io,
            self.rx,
            writer.tx,
            self.read_buf,
            writer.config,
            writer.role,
            writer.protocol,
            self.keepalive,
        ))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WebSocketReader<S> {
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.terminated {
            return Poll::Ready(None);
        }
        let mut io = Tracked::new(&mut this.io);
        let outcome = poll_read_message(&mut io, &mut this.rx, &mut this.read_buf, cx);
        if io.read {
            this.keepalive.activity();
        }
        let Poll::Ready(outcome) = outcome else {
            // Nothing to read: now the keepalive matters (as in `WebSocket`). Once the writer
            // is gone, what is handed over is dropped: nobody is left to send it.
            loop {
                match this.keepalive.poll(cx) {
                    Poll::Ready(Due::Ping(id, payload)) => {
                        this.handover.send(Control::Ping(id, payload));
                    }
                    Poll::Ready(Due::TimedOut(after)) => {
                        let frame = CloseFrame::new(CloseCode::INTERNAL, "keepalive ping timeout");
                        this.handover.send(Control::Close(frame));
                        this.terminated = true;
                        return Poll::Ready(Some(Err(Error::KeepaliveTimeout(after))));
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
        };
        Poll::Ready(match outcome {
            ReadOutcome::Message(msg) => {
                match &msg {
                    Message::Ping(payload) => this.handover.pong(payload.clone()),
                    Message::Pong(payload) => this.keepalive.pong(payload),
                    Message::Close(_) => {
                        this.handover.send(Control::React(msg.clone()));
                    }
                    _ => {}
                }
                Some(Ok(msg))
            }
            ReadOutcome::Protocol(e) => {
                this.terminated = true;
                this.handover.send(Control::Fail(e.clone()));
                Some(Err(e.into()))
            }
            ReadOutcome::Finished => {
                this.terminated = true;
                None
            }
            ReadOutcome::Eof => {
                this.terminated = true;
                if this.rx.is_finished() {
                    None
                } else {
                    Some(Err(Error::AbnormalClosure))
                }
            }
            ReadOutcome::Io(e) => {
                this.terminated = true;
                Some(Err(e.into()))
            }
        })
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
        crate::prepared::check_role(self.role)?;
        self.check_queue()?;
        self.tx.send_raw(msg.frame())?;
        self.flush().await
    }

    /// Queues a prepared message without flushing; see [`WebSocket::queue_prepared`]. A
    /// fan-out writer queues every message waiting for its connection, then calls
    /// [`WebSocketWriter::flush`] once: one write for the lot.
    pub fn queue_prepared(&mut self, msg: &PreparedMessage) -> Result<()> {
        crate::prepared::check_role(self.role)?;
        self.check_queue()?;
        self.tx.send_raw(msg.frame())?;
        Ok(())
    }

    /// Bytes queued and not yet written to the transport.
    pub fn buffered(&self) -> usize {
        self.tx.buffered()
    }

    /// Sends one fragment of a message sent in pieces; see [`WebSocket::send_fragment`].
    pub async fn send_fragment(&mut self, opcode: OpCode, payload: Bytes, fin: bool) -> Result<()> {
        poll_fn(|cx| Pin::new(&mut *self).poll_ready(cx)).await?;
        self.check_queue()?;
        self.tx.send_fragment(opcode, payload, fin)?;
        self.flush().await
    }

    /// Writes everything queued, including answers the reader asked for.
    pub async fn flush(&mut self) -> Result<()> {
        poll_fn(|cx| Pin::new(&mut *self).poll_flush(cx)).await
    }

    /// Sends a close frame (`None` for one without a code) and flushes it. The peer's answer
    /// arrives on the reader.
    pub async fn close(&mut self, frame: Option<CloseFrame>) -> Result<()> {
        self.drain_control();
        if !self.tx.is_close_sent() {
            self.tx.close(frame)?;
        }
        self.flush().await
    }

    /// Waits until the reader hands over something this half must write (the pong for a
    /// received ping, a keepalive ping that is due, the answer to a close) and writes it.
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
    /// Cancel safe: what was taken over is queued before any write, and queued frames go out
    /// with the next write or flush.
    pub async fn flush_control(&mut self) -> Result<()> {
        match poll_fn(|cx| self.handover.poll_take(cx)).await {
            Some(handed) => self.apply(handed),
            None => return Err(Error::Closed),
        }
        self.flush().await
    }

    fn drain_control(&mut self) {
        if let Some(handed) = self.handover.take() {
            self.apply(handed);
        }
    }

    fn apply(&mut self, handed: Handed) {
        // The pong first: a ping the reader saw came before any close it hands over.
        if let Some(payload) = handed.pong {
            self.tx.react(&Message::Ping(payload));
        }
        for c in handed.control {
            self.apply_control(c);
        }
    }

    fn apply_control(&mut self, c: Control) {
        match c {
            Control::Ping(id, payload) => {
                if self.tx.send(Message::Ping(payload)).is_ok() {
                    self.stamp.mark(id);
                }
            }
            Control::Close(frame) => {
                self.peer_closed = true;
                let _ = self.tx.close(Some(frame));
            }
            Control::React(msg) => {
                self.peer_closed |= msg.is_close();
                self.tx.react(&msg);
            }
            Control::Fail(e) => {
                self.peer_closed = true;
                self.tx.fail(&e);
            }
        }
    }

    /// Writes until at most `keep` bytes are queued, dropping the connection if the peer
    /// reads nothing for [`Config::write_timeout`].
    fn poll_write_until(&mut self, keep: usize, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let mut io = Tracked::new(&mut self.io);
        match poll_write_queue(&mut io, self.tx.queue(), keep, cx) {
            Poll::Ready(Ok(())) => {
                self.stall.clear();
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Pending => {
                let progressed = io.wrote;
                if !self
                    .stall
                    .stalled(progressed, self.config.write_timeout, cx)
                {
                    return Poll::Pending;
                }
                self.break_off();
                // Best effort: the peer is not reading, but a FIN may still reach its kernel.
                let _ = Pin::new(&mut self.io).poll_shutdown(cx);
                Poll::Ready(Err(Error::WriteBufferFull(
                    "nothing could be written for write_timeout",
                )))
            }
        }
    }

    /// Refuses to queue more once [`Config::max_write_buffer_size`] is passed; otherwise
    /// readies the queue for a frame (see [`make_room`]).
    fn check_queue(&mut self) -> Result<()> {
        if self.broken {
            return Err(Error::Closed);
        }
        let room = make_room(&mut self.tx, self.config.max_write_buffer_size);
        if room.is_err() {
            self.break_off();
        }
        room
    }

    /// Gives up on a peer that does not read: frees the queue; nothing more is written.
    fn break_off(&mut self) {
        self.broken = true;
        self.tx.queue().discard();
    }

    fn poll_write_all(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.drain_control();
        if self.broken {
            return Poll::Ready(Err(Error::Closed));
        }
        ready!(self.poll_write_until(0, cx))?;
        // A server closes the transport once both close frames are through.
        if self.role == Role::Server
            && self.peer_closed
            && self.tx.is_close_sent()
            && !self.shut_down
        {
            ready!(Pin::new(&mut self.io).poll_shutdown(cx))?;
            self.shut_down = true;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WebSocketWriter<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        this.drain_control();
        if this.tx.is_close_sent() {
            // The close may have just been queued by `drain_control` (the echo of the peer's
            // close, or a failure's close frame): write it out before reporting the end, or a
            // writer that only ever sends would never answer and the peer would time out.
            let _ = ready!(this.poll_write_all(cx));
            return Poll::Ready(Err(Error::Closed));
        }
        if this.broken {
            return Poll::Ready(Err(Error::Closed));
        }
        let keep = this.config.write_buffer_size.saturating_sub(1);
        this.poll_write_until(keep, cx)
    }

    fn start_send(self: Pin<&mut Self>, msg: Message) -> Result<()> {
        let this = self.get_mut();
        this.check_queue()?;
        this.tx.send(msg)?;
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_write_all(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        this.drain_control();
        if !this.tx.is_close_sent() {
            this.tx
                .close(Some(CloseFrame::new(CloseCode::NORMAL, "")))?;
        }
        this.poll_write_all(cx)
    }
}
