//! The one driver of a [`WebSocket`]: runs its [`duplex_proto::Connection`] against the
//! transport and the clock, for the whole socket and for its split halves alike.
//!
//! Reading ([`Stream`]) and writing ([`Sink`]) are the same code in both forms; what differs
//! is who writes the answers the protocol owes the peer. A whole socket writes them while
//! reading, before the message that caused them is handed out ([`Answers::BeforeDelivery`]).
//! Split halves read and write in different tasks, and only the writer touches the write side
//! of the transport: the reader leaves the answers owed ([`Answers::ByWriter`]) and wakes the
//! writer, which queues them on its next flush, after what the application queued first.
//!
//! [`Answers::BeforeDelivery`]: duplex_proto::Answers::BeforeDelivery
//! [`Answers::ByWriter`]: duplex_proto::Answers::ByWriter

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use duplex_proto::{Answers, CloseCode, CloseFrame, Message, Role};
use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::io::{
    make_room, poll_drain_to_eof, poll_read_message, poll_write_queue, receive_buffered,
    ReadOutcome,
};
use crate::keepalive::{Due, Tracked};
use crate::{Error, Result, WebSocket};

/// What one step of reading gave: a message (or error) for the application, the end of the
/// stream, or something read that needs another look.
enum Step {
    Item(Option<Result<Message>>),
    Read(ReadOutcome),
}

impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn writes_answers(&self) -> bool {
        self.conn.answers() != Answers::ByWriter
    }

    /// The next message; the body of [`Stream::poll_next`], for both forms.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message>>> {
        loop {
            // A message already in the read buffer is handed out before queued frames are
            // written: an application that answers each message with `feed` then writes a
            // whole batch of answers at once, when the buffer runs dry (below). Nothing waits
            // long: the queue is written before any read from the transport.
            let buffered = if self.writes_answers()
                && self.conn.buffered() > 0
                && !self.conn.has_held()
                && !self.conn.is_ended()
                && !self.conn.receiver().is_finished()
            {
                ready!(receive_buffered(&mut self.conn, &mut self.read_buf, cx))
            } else {
                None
            };
            let outcome = match buffered {
                Some(outcome) => outcome,
                None => match ready!(self.poll_step(cx)) {
                    Step::Read(outcome) => outcome,
                    Step::Item(item) => return Poll::Ready(item),
                },
            };
            match outcome {
                ReadOutcome::Message(msg) => {
                    if let Message::Pong(payload) = &msg {
                        self.keepalive.pong(payload);
                    }
                    return Poll::Ready(Some(Ok(msg)));
                }
                // Held until its close frame is written (whole), or its close frame queued
                // for the writer (split).
                ReadOutcome::Held => {}
                ReadOutcome::Protocol(e) => return Poll::Ready(Some(Err(e.into()))),
                ReadOutcome::Finished => {}
                ReadOutcome::Eof => {
                    self.conn.end();
                    if !self.writes_answers() && self.conn.receiver().is_finished() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(Error::AbnormalClosure)));
                }
                ReadOutcome::Io(e) => {
                    self.conn.end();
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    /// The I/O step of reading: writes what is queued (whole socket only), hands out a held
    /// message, ends the stream when the connection is over, runs the keepalive, and reads.
    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        loop {
            if self.writes_answers() && self.conn.buffered() > 0 {
                if let Some(step) = ready!(self.poll_write_answers(cx)) {
                    return Poll::Ready(step);
                }
            }
            if self.conn.has_held() {
                // The closing handshake is complete: a server closes the TCP connection right
                // away (RFC 6455 section 7.1.1) rather than when the application next polls or
                // drops the socket, so the client is not left waiting.
                if self.conn.closes_transport() {
                    ready!(self.poll_shutdown_once(cx));
                }
                let item = self.conn.take_held().map(|held| held.map_err(Error::from));
                return Poll::Ready(Step::Item(item));
            }
            if self.conn.is_ended() {
                return Poll::Ready(Step::Item(None));
            }
            if self.conn.receiver().is_finished() {
                // Both close frames exchanged (or the peer failed the connection); the writer
                // of split halves ends the transport.
                if self.writes_answers() {
                    ready!(self.poll_finish(cx));
                }
                self.conn.end();
                return Poll::Ready(Step::Item(None));
            }
            if self.poll_close_timer(cx) {
                self.conn.end();
                return Poll::Ready(Step::Item(Some(Err(Error::Timeout("close handshake")))));
            }
            let mut io = Tracked::new(&mut self.io);
            let outcome = poll_read_message(&mut io, &mut self.conn, &mut self.read_buf, cx);
            if io.read {
                self.keepalive.activity();
            }
            if let Poll::Ready(outcome) = outcome {
                return Poll::Ready(Step::Read(outcome));
            }
            // The keepalive matters only while there is nothing to read (a peer whose bytes
            // keep coming is alive), so a busy connection does not look at it per message.
            if self.conn.can_send() {
                match self.keepalive.poll(cx) {
                    Poll::Ready(Due::Ping(id, payload)) => {
                        // A writer half queues it later; the pong deadline starts then.
                        if self.conn.ping(payload).is_ok() && self.writes_answers() {
                            self.keepalive.mark_sent(id);
                        }
                        // Back to the top, which writes it.
                        continue;
                    }
                    Poll::Ready(Due::TimedOut(after)) => {
                        let error = self.fail_keepalive(after, cx);
                        return Poll::Ready(Step::Item(Some(Err(error))));
                    }
                    Poll::Pending => {}
                }
            }
            return Poll::Pending;
        }
    }

    /// Writes the queue while reading a whole socket. `Pending` when a close frame (a reply or
    /// a failure's) cannot be written yet: it must be out before the application hears of it;
    /// a pong may wait while reading continues (`Ready(None)`).
    fn poll_write_answers(&mut self, cx: &mut Context<'_>) -> Poll<Option<Step>> {
        let mut io = Tracked::new(&mut self.io);
        let written = poll_write_queue(&mut io, self.conn.send_queue(), 0, cx);
        let progressed = io.wrote;
        match written {
            Poll::Ready(Ok(())) => {
                self.stall.clear();
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => {
                let held = self.conn.take_held();
                self.conn.end();
                if self.conn.receiver().is_finished() {
                    // The peer closed first and may already have dropped the transport; what
                    // it said (the held close frame) is what counts.
                    return Poll::Ready(Some(Step::Item(held.map(|h| h.map_err(Error::from)))));
                }
                Poll::Ready(Some(Step::Item(Some(Err(e.into())))))
            }
            Poll::Pending => {
                if self
                    .stall
                    .stalled(progressed, self.config.write_timeout, cx)
                {
                    return Poll::Ready(Some(Step::Item(Some(Err(self.fail_stalled(cx))))));
                }
                if !self.conn.has_held() && self.conn.can_send() {
                    return Poll::Ready(None);
                }
                if !self.poll_close_timer(cx) {
                    return Poll::Pending;
                }
                self.conn.end();
                Poll::Ready(Some(Step::Item(Some(Err(Error::Timeout(
                    "close handshake",
                ))))))
            }
        }
    }

    /// Ends the transport after the closing handshake: a server closes it first (RFC 6455
    /// section 7.1.1), a client waits for the server to do so, within the close timeout.
    ///
    /// The closing handshake is complete by then, so a peer that resets the transport instead
    /// of closing it politely is not an error.
    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.conn.role() == Role::Client {
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

    /// Whether the close timer (running once a close frame was sent) has expired.
    fn poll_close_timer(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.conn.awaits_close() {
            return false;
        }
        self.start_close_timer();
        match &mut self.close_timer {
            Some(t) => t.as_mut().poll(cx).is_ready(),
            None => false,
        }
    }

    /// Writes until at most `keep` bytes are queued, dropping the connection if the peer
    /// reads nothing for [`crate::Config::write_timeout`].
    fn poll_write_until(&mut self, keep: usize, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let mut io = Tracked::new(&mut self.io);
        match poll_write_queue(&mut io, self.conn.send_queue(), keep, cx) {
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

    /// Writes everything: the answers owed first queued (split halves), then the whole queue;
    /// a server whose closing handshake is complete then closes the transport.
    pub(crate) fn poll_write_all(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.queue_owed();
        if self.conn.is_broken() {
            return Poll::Ready(Err(Error::Closed));
        }
        ready!(self.poll_write_until(0, cx))?;
        if self.conn.closes_transport() && !self.shut_down {
            ready!(Pin::new(&mut self.io).poll_shutdown(cx))?;
            self.shut_down = true;
        }
        Poll::Ready(Ok(()))
    }

    /// Queues what the reader left owed (nothing for a whole socket, which writes its answers
    /// as it reads); a keepalive ping's deadline starts now.
    pub(crate) fn queue_owed(&mut self) {
        if self.conn.answer_owed() {
            self.keepalive.queued();
        }
    }

    /// Refuses to queue more once [`crate::Config::max_write_buffer_size`] is passed;
    /// otherwise readies the queue for a frame (see [`make_room`]).
    pub(crate) fn check_queue(&mut self) -> Result<()> {
        if self.conn.is_broken() {
            return Err(Error::Closed);
        }
        let room = make_room(self.conn.sender(), self.config.max_write_buffer_size);
        if room.is_err() {
            self.conn.break_off();
        }
        room
    }

    fn fail_stalled(&mut self, cx: &mut Context<'_>) -> Error {
        self.conn.break_off();
        // Best effort: the peer is not reading, but a FIN may still reach its kernel.
        let _ = self.poll_shutdown_once(cx);
        Error::Timeout("write")
    }

    /// Fails the connection after a keepalive ping went unanswered (RFC 6455 section 7.1.7)
    /// with 1011, as python-websockets does. A whole socket writes the close frame if the
    /// transport takes it right away, without waiting for a peer that is presumably gone; split
    /// halves leave it to the writer.
    fn fail_keepalive(&mut self, after: std::time::Duration, cx: &mut Context<'_>) -> Error {
        let frame = CloseFrame::new(CloseCode::INTERNAL, "keepalive ping timeout");
        self.conn.fail_with(frame);
        if self.writes_answers() {
            let _ = poll_write_queue(&mut self.io, self.conn.send_queue(), 0, cx);
            let _ = self.poll_shutdown_once(cx);
            self.conn.break_off();
        }
        Error::KeepaliveTimeout(after)
    }

    /// Whether a writer half has something to write: answers owed, or frames queued.
    pub(crate) fn has_work_for_writer(&self) -> bool {
        self.conn.owes_answer() || self.conn.buffered() > 0
    }

    pub(crate) fn poll_ready_to_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        // Pongs before the message about to be queued; a close echo after it.
        if self.conn.answer_pings() {
            self.keepalive.queued();
        }
        if !self.conn.can_send() {
            if !self.writes_answers() {
                // The close may only just have been queued (the echo of the peer's close, or a
                // failure's close frame): write it before reporting the end, or a writer that
                // only ever sends would never answer and the peer would time out.
                let _ = ready!(self.poll_write_all(cx));
            }
            return Poll::Ready(Err(Error::Closed));
        }
        let keep = self.config.write_buffer_size.saturating_sub(1);
        self.poll_write_until(keep, cx)
    }

    pub(crate) fn queue_message(&mut self, msg: Message) -> Result<()> {
        self.check_queue()?;
        self.conn.send(msg)?;
        Ok(())
    }

    /// Sends a normal close frame (1000) unless one was sent, and writes everything.
    pub(crate) fn poll_close_sink(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.conn.is_broken() {
            // Dropped for a peer that does not read: there is no room for a close frame.
            return Poll::Ready(Err(Error::Closed));
        }
        self.queue_owed();
        if self.conn.can_send() {
            self.conn
                .sender()
                .close(Some(CloseFrame::new(CloseCode::NORMAL, "")))?;
        }
        self.poll_write_all(cx)
    }
}

impl<S> Stream for WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_recv(cx)
    }
}

impl<S> Sink<Message> for WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_ready_to_send(cx)
    }

    fn start_send(self: Pin<&mut Self>, msg: Message) -> Result<()> {
        self.get_mut().queue_message(msg)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_write_all(cx)
    }

    /// Sends a normal close frame (1000) if none was sent and flushes it. The peer's answer
    /// is then read from the stream side.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_close_sink(cx)
    }
}
