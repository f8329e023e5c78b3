//! [`WebSocket`]: a connection over any `AsyncRead + AsyncWrite`, as a `Stream` of messages and
//! a `Sink` of messages.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use duplex_proto::deflate::DeflateParams;
use duplex_proto::frame::OpCode;
use duplex_proto::{Answers, CloseFrame, Connection, Message, Role};
use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;

use crate::keepalive::{Keepalive, WriteStall};
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
    pub(crate) io: S,
    /// The protocol and its lifecycle (open, closing, held, broken): everything but the clock
    /// and the transport.
    pub(crate) conn: Connection,
    pub(crate) read_buf: BytesMut,
    /// Shared with every connection made with the same settings ([`crate::config::shared`]).
    pub(crate) config: Arc<Config>,
    pub(crate) protocol: Option<String>,
    /// Started when this side sends a close frame: bounds the wait for the peer's answer.
    pub(crate) close_timer: Option<Pin<Box<Sleep>>>,
    /// The transport's write side was shut down.
    pub(crate) shut_down: bool,
    /// Keepalive pings and the round-trip time ([`Config::ping_interval`]).
    pub(crate) keepalive: Keepalive,
    /// Cut-off for a peer that stops reading ([`Config::write_timeout`]).
    pub(crate) stall: WriteStall,
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
        let mut conn = Connection::new(role, config.proto());
        conn.set_answers(Answers::BeforeDelivery);
        WebSocket::from_parts(
            io,
            conn,
            leftover,
            crate::config::shared(config),
            None,
            Keepalive::new(&config),
        )
    }

    fn from_parts(
        io: S,
        conn: Connection,
        read_buf: BytesMut,
        config: Arc<Config>,
        protocol: Option<String>,
        keepalive: Keepalive,
    ) -> Self {
        WebSocket {
            io,
            conn,
            read_buf,
            config,
            protocol,
            close_timer: None,
            shut_down: false,
            keepalive,
            stall: WriteStall::default(),
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
        self.conn.set_deflate(params);
        self
    }

    /// The permessage-deflate parameters in force, if it was negotiated.
    pub fn deflate(&self) -> Option<&DeflateParams> {
        self.conn.deflate()
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
    /// it. Only servers can send prepared messages; a client gets [`Error::Usage`].
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
        crate::prepared::check_role(self.conn.role())?;
        self.check_queue()?;
        let sender = self.conn.sender();
        let frame = msg.frame_for(sender.shareable_deflate());
        sender.send_raw(frame)?;
        Ok(())
    }

    /// Sends one fragment of a message sent in pieces (see
    /// [`duplex_proto::send::Sender::send_fragment`]): the first with `OpCode::Text` or
    /// `OpCode::Binary`, the rest with `OpCode::Continuation`, the last with `fin` set.
    pub async fn send_fragment(&mut self, opcode: OpCode, payload: Bytes, fin: bool) -> Result<()> {
        poll_fn(|cx| Pin::new(&mut *self).poll_ready(cx)).await?;
        self.check_queue()?;
        self.conn.sender().send_fragment(opcode, payload, fin)?;
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
        if self.conn.can_send() && !self.conn.is_ended() {
            self.conn.sender().close(frame)?;
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
        self.conn.role()
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
        self.conn.buffered()
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
            && self.conn.is_idle()
            && self.close_timer.is_none()
            && self.keepalive.is_quiet()
            && !self.shut_down
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
        let conn = match self.conn.into_idle() {
            Ok(conn) => conn,
            Err(conn) => {
                self.conn = conn;
                return Err(self);
            }
        };
        crate::io::recycle(std::mem::take(&mut self.read_buf));
        self.keepalive.release_timer();
        Ok(ParkedWebSocket {
            io: self.io,
            conn,
            config: self.config,
            protocol: self.protocol,
            keepalive: self.keepalive,
        })
    }

    pub(crate) fn from_parked(parked: ParkedWebSocket<S>) -> Self {
        WebSocket::from_parts(
            parked.io,
            parked.conn.resume(),
            BytesMut::new(),
            parked.config,
            parked.protocol,
            parked.keepalive,
        )
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
    /// back together, with every piece of state (compression, timers, a close in progress).
    pub fn split(mut self) -> (WebSocketReader<S>, WebSocketWriter<S>) {
        self.conn.set_answers(Answers::ByWriter);
        split::split(self)
    }

    /// The connection back from its halves: answers are again written by the reading side.
    pub(crate) fn reunited(mut self) -> Self {
        self.conn.set_answers(Answers::BeforeDelivery);
        self
    }
}
