//! Independent read and write halves of a [`WebSocket`](crate::WebSocket).
//!
//! Each half owns its direction of the protocol engine outright: the reader holds the
//! [`Receiver`] and the read side of the transport, the writer the [`Sender`] and the write
//! side. No lock is shared between them. What the reader learns that the writer must act on
//! (a ping to answer, a close to echo, a protocol violation to report with a close code) travels
//! over a lock-free channel and is written the next time the writer is used.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use duplex_proto::frame::OpCode;
use duplex_proto::recv::Receiver;
use duplex_proto::send::Sender;
use duplex_proto::{CloseCode, CloseFrame, Message, Role};
use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

use crate::io::{poll_read_message, poll_write_queue, ReadOutcome};
use crate::{Config, Error, PreparedMessage, Result, WebSocket};

/// What the reader hands over to the writer.
#[derive(Debug)]
enum Control {
    /// A received ping or close, which obliges an answer.
    React(Message),
    /// The peer broke the protocol: send the close frame for this error.
    Fail(duplex_proto::Error),
}

pub(crate) fn split<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    rx: Receiver,
    tx: Sender,
    read_buf: BytesMut,
    config: Config,
    role: Role,
    protocol: Option<String>,
) -> (WebSocketReader<S>, WebSocketWriter<S>) {
    let (read_io, write_io) = tokio::io::split(io);
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    (
        WebSocketReader {
            io: read_io,
            rx,
            read_buf,
            control: control_tx,
            terminated: false,
            protocol: protocol.clone(),
        },
        WebSocketWriter {
            io: write_io,
            tx,
            control: control_rx,
            config,
            role,
            protocol,
            peer_closed: false,
            shut_down: false,
        },
    )
}

/// The reading half of a split [`WebSocket`]: a [`Stream`] of messages.
///
/// Pings and close frames it receives are answered by the [`WebSocketWriter`] the next time
/// that half sends or flushes, so keep the writer in use (or call
/// [`WebSocketWriter::flush`]) while reading.
///
/// # Cancel safety
///
/// [`WebSocketReader::recv`] is cancel safe: a dropped call loses no bytes and no partial frame.
#[derive(Debug)]
pub struct WebSocketReader<S> {
    io: ReadHalf<S>,
    rx: Receiver,
    read_buf: BytesMut,
    control: mpsc::UnboundedSender<Control>,
    terminated: bool,
    protocol: Option<String>,
}

/// The writing half of a split [`WebSocket`]: a [`Sink`] of messages.
///
/// It also writes the pongs and close replies the reader asks for.
#[derive(Debug)]
pub struct WebSocketWriter<S> {
    io: WriteHalf<S>,
    tx: Sender,
    control: mpsc::UnboundedReceiver<Control>,
    config: Config,
    role: Role,
    protocol: Option<String>,
    peer_closed: bool,
    shut_down: bool,
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
        let outcome = ready!(poll_read_message(
            &mut this.io,
            &mut this.rx,
            &mut this.read_buf,
            cx
        ));
        // A send error means the writer is gone; nobody is left to answer, which is fine.
        Poll::Ready(match outcome {
            ReadOutcome::Message(msg) => {
                if matches!(msg, Message::Ping(_) | Message::Close(_)) {
                    let _ = this.control.send(Control::React(msg.clone()));
                }
                Some(Ok(msg))
            }
            ReadOutcome::Protocol(e) => {
                this.terminated = true;
                let _ = this.control.send(Control::Fail(e.clone()));
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
        self.tx.send_raw(msg.frame())?;
        self.flush().await
    }

    /// Sends one fragment of a message sent in pieces; see [`WebSocket::send_fragment`].
    pub async fn send_fragment(&mut self, opcode: OpCode, payload: Bytes, fin: bool) -> Result<()> {
        poll_fn(|cx| Pin::new(&mut *self).poll_ready(cx)).await?;
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

    fn drain_control(&mut self) {
        while let Ok(c) = self.control.try_recv() {
            match c {
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
    }

    fn poll_write_all(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.drain_control();
        ready!(poll_write_queue(&mut self.io, self.tx.queue(), 0, cx))?;
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
        let keep = this.config.write_buffer_size.saturating_sub(1);
        ready!(poll_write_queue(&mut this.io, this.tx.queue(), keep, cx))?;
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, msg: Message) -> Result<()> {
        self.get_mut().tx.send(msg)?;
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
