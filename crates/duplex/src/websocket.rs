//! [`WebSocket`]: a connection over any `AsyncRead + AsyncWrite`, as a `Stream` of messages and
//! a `Sink` of messages.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use duplex_proto::deflate::DeflateParams;
use duplex_proto::frame::OpCode;
use duplex_proto::recv::Receiver;
use duplex_proto::send::Sender;
use duplex_proto::{CloseCode, CloseFrame, Message, Role};
use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;

use crate::io::{
    make_room, poll_drain_to_eof, poll_read_message, poll_write_queue, receive_buffered,
    ReadOutcome,
};
use crate::keepalive::{Due, Keepalive, Tracked, WriteStall};
use crate::split::{self, WebSocketReader, WebSocketWriter};
use crate::{Config, Error, ParkedWebSocket, PreparedMessage, Result};

/// A WebSocket connection over a transport `S` (a `TcpStream`, a TLS stream, anything that
/// implements `AsyncRead + AsyncWrite + Unpin`).
///
/// Read with [`WebSocket::recv`] (or as a [`Stream`]), write with [`WebSocket::send`] (or as a
/// [`Sink`]). Pings are answered and close frames echoed as part of reading.
///
/// # Cancel safety
///
/// Every read is cancel safe: bytes already read and partial frames stay in the connection, so
/// a `recv()` dropped by `tokio::select!` loses nothing and the next call continues where it
/// stopped. A `send()` that is dropped may have queued its message (if it got past waiting for
/// buffer space); a queued message goes out with the next send or flush, never twice or half.
///
/// ```no_run
/// # async fn run() -> duplex::Result<()> {
/// let (mut ws, _response) = duplex::connect("ws://127.0.0.1:8080/echo").await?;
/// ws.send(duplex::Message::text("hello")).await?;
/// while let Some(msg) = ws.recv().await {
///     println!("{:?}", msg?);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct WebSocket<S> {
    io: S,
    rx: Receiver,
    tx: Sender,
    read_buf: BytesMut,
    /// Shared with every connection made with the same settings ([`crate::config::shared`]).
    config: Arc<Config>,
    role: Role,
    protocol: Option<String>,
    deflate: Option<DeflateParams>,
    /// A message held back until the frames it caused (pong, close reply) are written. Boxed:
    /// it is rarely there, and an idle connection should not carry room for it.
    held: Option<Box<Result<Message>>>,
    /// Started when this side sends a close frame: bounds the wait for the peer's answer.
    close_timer: Option<Pin<Box<Sleep>>>,
    /// The stream has ended.
    terminated: bool,
    /// The transport's write side was shut down.
    shut_down: bool,
    /// Keepalive pings and the round-trip time ([`Config::ping_interval`]).
    keepalive: Keepalive,
    /// Cut-off for a peer that stops reading ([`Config::write_timeout`]).
    stall: WriteStall,
    /// The connection was dropped for a peer that does not read or answer: nothing more can be
    /// sent.
    broken: bool,
}

impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Wraps a transport on which the opening handshake already happened (for instance one
    /// handed over by hyper's upgrade mechanism). `leftover` holds bytes read past the
    /// handshake, which belong to the first frames.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use duplex::{Message, Role, WebSocket};
    /// let (a, b) = tokio::io::duplex(1024);
    /// let mut client = WebSocket::from_raw(a, Role::Client, Default::default(), Default::default());
    /// let mut server = WebSocket::from_raw(b, Role::Server, Default::default(), Default::default());
    /// client.send(Message::text("hi")).await.unwrap();
    /// assert_eq!(server.recv().await.unwrap().unwrap(), Message::text("hi"));
    /// # });
    /// ```
    pub fn from_raw(io: S, role: Role, config: Config, leftover: BytesMut) -> Self {
        WebSocket {
            io,
            rx: Receiver::new(role, config.proto()),
            tx: Sender::new(role),
            read_buf: leftover,
            config: crate::config::shared(config),
            role,
            protocol: None,
            deflate: None,
            held: None,
            close_timer: None,
            terminated: false,
            shut_down: false,
            keepalive: Keepalive::new(&config),
            stall: WriteStall::default(),
            broken: false,
        }
    }

    pub(crate) fn with_protocol(mut self, protocol: Option<String>) -> Self {
        self.protocol = protocol;
        self
    }

    /// Turns on permessage-deflate with parameters agreed during a handshake made elsewhere
    /// (see [`duplex_proto::deflate::negotiate`]); [`crate::accept`] and [`crate::connect`]
    /// do this themselves.
    pub fn with_deflate(mut self, params: Option<DeflateParams>) -> Self {
        self.rx.set_deflate(params.as_ref());
        self.tx.set_deflate(params.as_ref());
        self.deflate = params;
        self
    }

    /// The permessage-deflate parameters in force, if it was negotiated.
    pub fn deflate(&self) -> Option<&DeflateParams> {
        self.deflate.as_ref()
    }

    /// Receives the next message; `None` once the connection is closed.
    ///
    /// A [`Message::Close`] is returned when the peer closes (its answer is already sent);
    /// the next call returns `None`. Pings are returned for information after their pong is
    /// written.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; see the [type docs](WebSocket#cancel-safety).
    pub async fn recv(&mut self) -> Option<Result<Message>> {
        poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// Sends a message and flushes it to the transport.
    ///
    /// Waits while more than [`Config::write_buffer_size`] bytes are queued.
    ///
    /// # Cancel safety
    ///
    /// If dropped before completion, the message may be queued; it is then written by the next
    /// send or flush.
    pub async fn send(&mut self, msg: Message) -> Result<()> {
        poll_fn(|cx| Pin::new(&mut *self).poll_ready(cx)).await?;
        Pin::new(&mut *self).start_send(msg)?;
        poll_fn(|cx| Pin::new(&mut *self).poll_flush(cx)).await
    }

    /// Sends a message encoded once for many connections (see [`PreparedMessage`]) and flushes
    /// it. Only servers can send prepared messages; a client gets [`Error::Protocol`].
    ///
    /// # Cancel safety
    ///
    /// As for [`WebSocket::send`].
    pub async fn send_prepared(&mut self, msg: &PreparedMessage) -> Result<()> {
        poll_fn(|cx| Pin::new(&mut *self).poll_ready(cx)).await?;
        self.queue_prepared(msg)?;
        poll_fn(|cx| Pin::new(&mut *self).poll_flush(cx)).await
    }

    /// Queues a prepared message without flushing; [`Sink::poll_flush`] (or the next send)
    /// writes it. Lets a fan-out loop batch several messages into one write.
    ///
    /// Fails with [`Error::WriteBufferFull`] (and drops the connection) once more than
    /// [`Config::max_write_buffer_size`] bytes are queued: call [`WebSocket::buffered`] to
    /// apply a policy of your own before that.
    pub fn queue_prepared(&mut self, msg: &PreparedMessage) -> Result<()> {
        crate::prepared::check_role(self.role)?;
        self.check_queue()?;
        self.tx.send_raw(msg.frame())?;
        Ok(())
    }

    /// Sends one fragment of a message sent in pieces (see
    /// [`duplex_proto::send::Sender::send_fragment`]): the first with `OpCode::Text` or
    /// `OpCode::Binary`, the rest with `OpCode::Continuation`, the last with `fin` set.
    pub async fn send_fragment(&mut self, opcode: OpCode, payload: Bytes, fin: bool) -> Result<()> {
        poll_fn(|cx| Pin::new(&mut *self).poll_ready(cx)).await?;
        self.check_queue()?;
        self.tx.send_fragment(opcode, payload, fin)?;
        poll_fn(|cx| Pin::new(&mut *self).poll_flush(cx)).await
    }

    /// Closes the connection: sends a close frame (`None` for one without a code), waits for
    /// the peer's close frame for at most [`Config::close_timeout`], then ends the transport.
    ///
    /// Data messages that arrive while waiting are discarded; to read them, send a
    /// [`Message::Close`] instead and keep calling [`WebSocket::recv`] until it returns `None`.
    ///
    /// A server shutting down closes with 1001 (going away), which tells clients to reconnect
    /// elsewhere or later:
    ///
    /// ```no_run
    /// # async fn run(mut ws: duplex::WebSocket<tokio::net::TcpStream>) -> duplex::Result<()> {
    /// use duplex::{CloseCode, CloseFrame};
    /// ws.close(Some(CloseFrame::new(CloseCode::GOING_AWAY, "server shutting down"))).await?;
    /// # Ok(()) }
    /// ```
    pub async fn close(&mut self, frame: Option<CloseFrame>) -> Result<()> {
        if !self.tx.is_close_sent() && !self.terminated {
            self.tx.close(frame)?;
        }
        while let Some(item) = self.recv().await {
            match item {
                Ok(_) => {}
                Err(Error::Protocol(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The subprotocol agreed during the handshake.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Whether this is the client or the server end.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The transport.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The transport, mutably. Reading or writing it directly corrupts the connection.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Bytes queued and not yet written to the transport.
    pub fn buffered(&self) -> usize {
        self.tx.buffered()
    }

    /// Whether nothing is in progress: no received bytes waiting to be decoded, no message
    /// half received or half sent, nothing queued to write, no closing handshake, no
    /// keepalive ping awaiting its pong. The connection's next event can then only come from
    /// the transport, or from the keepalive when its next ping is due
    /// ([`WebSocket::next_keepalive_ping`]).
    ///
    /// A server with many quiet connections can use this to keep one without a task of its
    /// own: [`WebSocket::into_parked`] it, wait for the transport to become readable (for a TCP
    /// stream, [`tokio::net::TcpStream::poll_read_ready`]) or for the next keepalive ping,
    /// then go on reading it. `duplex serve` parks idle `/echo` connections this way.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use duplex::{Message, Role, WebSocket};
    /// use futures_util::SinkExt;
    /// let (a, b) = tokio::io::duplex(1024);
    /// let mut client = WebSocket::from_raw(a, Role::Client, Default::default(), Default::default());
    /// let server = WebSocket::from_raw(b, Role::Server, Default::default(), Default::default());
    /// assert!(server.is_idle() && client.is_idle());
    /// client.feed(Message::text("queued")).await.unwrap();
    /// assert!(!client.is_idle()); // a frame waits to be written
    /// # });
    /// ```
    pub fn is_idle(&self) -> bool {
        self.read_buf.is_empty()
            && self.rx.is_between_messages()
            && self.tx.buffered() == 0
            && !self.tx.is_fragmenting()
            && !self.tx.is_close_sent()
            && self.held.is_none()
            && self.close_timer.is_none()
            && self.keepalive.is_quiet()
            && !self.terminated
            && !self.shut_down
            && !self.broken
    }

    /// The connection in its smallest form, for setting it aside while idle without a task
    /// (see [`ParkedWebSocket`]); `Err(self)`, unchanged, when it is not
    /// [idle](WebSocket::is_idle). Its buffers go back to a per-thread pool and its timers are
    /// freed; [`ParkedWebSocket::resume`] gives the connection back where it stopped.
    // The connection itself comes back, unchanged, when it cannot be parked; boxing it would
    // cost an allocation on that path and make callers unbox it.
    #[allow(clippy::result_large_err)]
    pub fn into_parked(mut self) -> std::result::Result<ParkedWebSocket<S>, Self> {
        if !self.is_idle() {
            return Err(self);
        }
        let rx = match self.rx.into_idle() {
            Ok(rx) => rx,
            Err(rx) => {
                self.rx = rx;
                return Err(self);
            }
        };
        let tx = match self.tx.into_idle() {
            Ok(tx) => tx,
            Err(tx) => {
                self.rx = rx.resume();
                self.tx = tx;
                return Err(self);
            }
        };
        crate::io::recycle(std::mem::take(&mut self.read_buf));
        self.keepalive.release_timer();
        Ok(ParkedWebSocket {
            io: self.io,
            rx,
            tx,
            config: self.config,
            role: self.role,
            protocol: self.protocol,
            deflate: self.deflate,
            keepalive: self.keepalive,
        })
    }

    pub(crate) fn from_parked(parked: ParkedWebSocket<S>) -> Self {
        let mut ws = WebSocket::from_halves(
            parked.io,
            parked.rx.resume(),
            parked.tx.resume(),
            BytesMut::new(),
            parked.config,
            parked.role,
            parked.protocol,
            parked.keepalive,
        );
        ws.deflate = parked.deflate;
        ws
    }

    /// When the keepalive sends its next ping if nothing arrives before: a connection set
    /// aside (see [`WebSocket::into_parked`]) must be read again by then. `None` when keepalive is
    /// off or a ping awaits its pong.
    pub fn next_keepalive_ping(&self) -> Option<std::time::Instant> {
        self.keepalive.next_ping().map(|at| at.into_std())
    }

    /// The round-trip time measured by the last keepalive ping that was answered, `None`
    /// before the first one (see [`Config::ping_interval`]). Pings are sent only after the
    /// connection has been idle, and only while the application reads (`recv` or the
    /// `Stream`), which drives them.
    ///
    /// ```no_run
    /// # async fn run(ws: duplex::WebSocket<tokio::net::TcpStream>) {
    /// if let Some(rtt) = ws.rtt() {
    ///     println!("round trip: {} ms", rtt.as_millis());
    /// }
    /// # }
    /// ```
    pub fn rtt(&self) -> Option<std::time::Duration> {
        self.keepalive.rtt()
    }

    /// Splits into a reading and a writing half that can move to different tasks; see
    /// [`WebSocketReader`] and [`WebSocketWriter`]. [`WebSocketReader::reunite`] puts them
    /// back together.
    pub fn split(self) -> (WebSocketReader<S>, WebSocketWriter<S>) {
        split::split(
            self.io,
            self.rx,
            self.tx,
            self.read_buf,
            self.config,
            self.role,
            self.protocol,
            self.keepalive,
        )
    }

    // The parts of a connection moving between its whole and split forms; a struct for them
    // would exist only to be taken apart again.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_halves(
        io: S,
        rx: Receiver,
        tx: Sender,
        read_buf: BytesMut,
        config: Arc<Config>,
        role: Role,
        protocol: Option<String>,
        keepalive: Keepalive,
    ) -> Self {
        WebSocket {
            io,
            rx,
            tx,
            read_buf,
            config,
            role,
            protocol,
            deflate: None,
            held: None,
            close_timer: None,
            terminated: false,
            shut_down: false,
            keepalive,
            stall: WriteStall::default(),
            broken: false,
        }
    }

    /// Ends the transport after the closing handshake: a server closes it first (RFC 6455
    /// section 7.1.1), a client waits for the server to do so, within the close timeout.
    ///
    /// The closing handshake is complete by then, so a peer that resets the transport instead
    /// of closing it politely is not an error.
    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.role == Role::Client {
            self.start_close_timer();
            let timed_out = match &mut self.close_timer {
                Some(t) => t.as_mut().poll(cx).is_ready(),
                None => false,
            };
            if !timed_out {
                let _ = ready!(poll_drain_to_eof(&mut self.io, &mut self.read_buf, cx));
            }
        }
        self.poll_shutdown_once(cx)
    }

    /// Shuts the transport's write side down, once; errors are moot at this point.
    fn poll_shutdown_once(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.shut_down {
            let _ = ready!(Pin::new(&mut self.io).poll_shutdown(cx));
            self.shut_down = true;
        }
        Poll::Ready(())
    }

    fn start_close_timer(&mut self) {
        if self.close_timer.is_none() {
            self.close_timer = Some(Box::pin(tokio::time::sleep(self.config.close_timeout)));
        }
    }
}

impl<S> Stream for WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            // A message already in the read buffer is handed out before queued frames are
            // written: an application that answers each message with `feed` then writes a
            // whole batch of answers at once, when the buffer runs dry (below). Nothing waits
            // long: the queue is written before any read from the transport.
            let buffered = if this.tx.buffered() > 0
                && this.held.is_none()
                && !this.terminated
                && !this.rx.is_finished()
            {
                ready!(receive_buffered(&mut this.rx, &mut this.read_buf, cx))
            } else {
                None
            };
            let outcome = match buffered {
                Some(outcome) => outcome,
                None => match ready!(this.poll_io(cx)) {
                    Ok(outcome) => outcome,
                    Err(item) => return Poll::Ready(item),
                },
            };
            match outcome {
                ReadOutcome::Message(msg) => {
                    if let Message::Pong(payload) = &msg {
                        this.keepalive.pong(payload);
                    }
                    let before = this.tx.buffered();
                    this.tx.react(&msg);
                    // Hold the message back only if it caused a frame (pong, close reply) that
                    // must be written before the application hears of it.
                    if this.tx.buffered() == before {
                        return Poll::Ready(Some(Ok(msg)));
                    }
                    this.held = Some(Box::new(Ok(msg)));
                }
                ReadOutcome::Protocol(e) => {
                    this.tx.fail(&e);
                    this.held = Some(Box::new(Err(e.into())));
                }
                ReadOutcome::Finished => {}
                ReadOutcome::Eof => {
                    this.terminated = true;
                    return Poll::Ready(Some(Err(Error::AbnormalClosure)));
                }
                ReadOutcome::Io(e) => {
                    this.terminated = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }
}

impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// The I/O step of [`Stream::poll_next`]: writes what is queued, hands out a held message,
    /// ends the stream when the connection is over, runs the keepalive, and reads: `Ok` is what
    /// was read, `Err` the item [`Stream::poll_next`] returns as it is.
    #[allow(clippy::type_complexity)]
    fn poll_io(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<std::result::Result<ReadOutcome, Option<Result<Message>>>> {
        let this = self;
        loop {
            if this.tx.buffered() > 0 {
                let mut io = Tracked::new(&mut this.io);
                let written = poll_write_queue(&mut io, this.tx.queue(), 0, cx);
                let progressed = io.wrote;
                match written {
                    Poll::Ready(Ok(())) => this.stall.clear(),
                    Poll::Ready(Err(e)) => {
                        this.terminated = true;
                        if this.rx.is_finished() {
                            // The peer closed first and may already have dropped the
                            // transport; what it said (the held close frame) is what counts.
                            return Poll::Ready(Err(this.held.take().map(|held| *held)));
                        }
                        this.held = None;
                        return Poll::Ready(Err(Some(Err(e.into()))));
                    }
                    // A close reply or a failure's close frame must be out before the
                    // application hears of it; a pong may wait while reading continues.
                    Poll::Pending if this.held.is_some() || this.tx.is_close_sent() => {
                        if this
                            .stall
                            .stalled(progressed, this.config.write_timeout, cx)
                        {
                            return Poll::Ready(Err(Some(Err(this.fail_stalled(cx)))));
                        }
                        if !this.poll_close_timer(cx) {
                            return Poll::Pending;
                        }
                        this.terminated = true;
                        return Poll::Ready(Err(Some(Err(Error::Timeout("close handshake")))));
                    }
                    Poll::Pending => {
                        if this
                            .stall
                            .stalled(progressed, this.config.write_timeout, cx)
                        {
                            return Poll::Ready(Err(Some(Err(this.fail_stalled(cx)))));
                        }
                    }
                }
            }
            if let Some(item) = this.held.take() {
                if this.role == Role::Server && this.rx.is_finished() && this.tx.is_close_sent() {
                    // The closing handshake is complete: a server closes the TCP connection
                    // right away (RFC 6455 section 7.1.1) rather than when the application
                    // next polls or drops the socket, so the client is not left waiting.
                    if this.poll_shutdown_once(cx).is_pending() {
                        this.held = Some(item);
                        return Poll::Pending;
                    }
                }
                return Poll::Ready(Err(Some(*item)));
            }
            if this.terminated {
                return Poll::Ready(Err(None));
            }
            if this.rx.is_finished() {
                // Both close frames exchanged (or the peer failed the connection).
                ready!(this.poll_finish(cx));
                this.terminated = true;
                return Poll::Ready(Err(None));
            }
            if this.tx.is_close_sent() && this.poll_close_timer(cx) {
                this.terminated = true;
                return Poll::Ready(Err(Some(Err(Error::Timeout("close handshake")))));
            }
            let mut io = Tracked::new(&mut this.io);
            let outcome = poll_read_message(&mut io, &mut this.rx, &mut this.read_buf, cx);
            if io.read {
                this.keepalive.activity();
            }
            if let Poll::Ready(outcome) = outcome {
                return Poll::Ready(Ok(outcome));
            }
            // The keepalive matters only while there is nothing to read (a peer whose bytes
            // keep coming is alive), so a busy connection does not look at it per message.
            if !this.tx.is_close_sent() {
                match this.keepalive.poll(cx) {
                    Poll::Ready(Due::Ping(id, payload)) => {
                        if this.tx.send(Message::Ping(payload)).is_ok() {
                            this.keepalive.mark_sent(id);
                        }
                        // Back to the top, which writes it.
                        continue;
                    }
                    Poll::Ready(Due::TimedOut(after)) => {
                        return Poll::Ready(Err(Some(Err(this.fail_keepalive(after, cx)))));
                    }
                    Poll::Pending => {}
                }
            }
            return Poll::Pending;
        }
    }
}

impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
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
                if self
                    .stall
                    .stalled(progressed, self.config.write_timeout, cx)
                {
                    Poll::Ready(Err(self.fail_stalled(cx)))
                } else {
                    Poll::Pending
                }
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

    /// Gives up on a peer that does not read: frees the queue (nothing more will be written,
    /// not even a close frame, for which there is no room) and ends the stream.
    fn break_off(&mut self) {
        self.broken = true;
        self.terminated = true;
        self.held = None;
        self.tx.queue().discard();
    }

    fn fail_stalled(&mut self, cx: &mut Context<'_>) -> Error {
        self.break_off();
        // Best effort: the peer is not reading, but a FIN may still reach its kernel.
        let _ = self.poll_shutdown_once(cx);
        Error::WriteBufferFull("nothing could be written for write_timeout")
    }

    /// Fails the connection after a keepalive ping went unanswered (RFC 6455 section 7.1.7):
    /// the close frame (1011, as python-websockets sends) goes out if the transport takes it
    /// right away, without waiting for a peer that is presumably gone.
    fn fail_keepalive(&mut self, after: std::time::Duration, cx: &mut Context<'_>) -> Error {
        let frame = CloseFrame::new(CloseCode::INTERNAL, "keepalive ping timeout");
        if self.tx.close(Some(frame)).is_ok() {
            let _ = poll_write_queue(&mut self.io, self.tx.queue(), 0, cx);
        }
        let _ = self.poll_shutdown_once(cx);
        self.broken = true;
        self.terminated = true;
        Error::KeepaliveTimeout(after)
    }

    /// Whether the close timer (running once a close frame was sent) has expired.
    fn poll_close_timer(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.tx.is_close_sent() {
            return false;
        }
        self.start_close_timer();
        match &mut self.close_timer {
            Some(t) => t.as_mut().poll(cx).is_ready(),
            None => false,
        }
    }
}

impl<S> Sink<Message> for WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        if this.tx.is_close_sent() || this.broken {
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
        let this = self.get_mut();
        if this.broken {
            return Poll::Ready(Err(Error::Closed));
        }
        this.poll_write_until(0, cx)
    }

    /// Sends a normal close frame (1000) if none was sent and flushes it. The peer's answer
    /// is then read from the stream side.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        if this.broken {
            // Dropped for a peer that does not read: there is no room for a close frame.
            return Poll::Ready(Err(Error::Closed));
        }
        if !this.tx.is_close_sent() {
            this.tx
                .close(Some(CloseFrame::new(CloseCode::NORMAL, "")))?;
        }
        this.poll_write_until(0, cx)
    }
}
