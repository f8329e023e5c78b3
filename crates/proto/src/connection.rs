//! [`Connection`]: the whole protocol for one endpoint and its lifecycle: a [`Receiver`] and a
//! [`Sender`] tied together so that received pings are answered and received closes echoed,
//! with the rules of when a message reaches the application, when the transport may close,
//! and when a close timer runs.
//!
//! An I/O layer drives it and owns only the clock and the transport: `duplex` runs one
//! connection per socket, whole or split into halves, with the same code.

use bytes::{Bytes, BytesMut};

use crate::close::{CloseCode, CloseFrame};
use crate::deflate::DeflateParams;
use crate::error::Error;
use crate::message::Message;
use crate::recv::{IdleReceiver, Receiver};
use crate::send::{IdleSender, SendQueue, Sender};
use crate::{Config, Role};

/// Where a connection is in its life (RFC 6455 section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// This side sent a close frame and waits for the peer's.
    CloseSent,
    /// The peer sent a close frame this side has not answered yet (only seen when answers
    /// wait for a writer, [`Answers::ByWriter`]).
    CloseReceived,
    /// Both close frames were exchanged, or the connection failed: the transport should be
    /// closed once the send queue is written.
    Closed,
}

/// When the frames the protocol obliges this side to send (the pong for a ping, the echo of a
/// close) are queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Answers {
    /// As the message that calls for them is received; [`Connection::receive`] returns the
    /// message at once.
    #[default]
    Immediately,
    /// As the message is received, and the message itself is held back until the send queue
    /// holding its answer was written ([`Connection::take_held`]): an application never hears
    /// of a close whose echo is not on its way. For a driver that reads and writes in one
    /// place.
    BeforeDelivery,
    /// When the writing side next asks for them ([`Connection::answer_owed`]): what it queues
    /// until then goes first, so replies an application owed before the peer's close still
    /// reach the peer. For a driver whose reading and writing run in different tasks. Only the
    /// latest ping is answered (RFC 6455 section 5.5.3), so a peer that floods pings while the
    /// writer is idle costs one slot.
    ByWriter,
}

/// Answers owed to the peer and not queued yet ([`Answers::ByWriter`]).
#[derive(Debug, Default)]
struct Owed {
    pong: Option<Bytes>,
    close: Option<Message>,
    ping: Option<Bytes>,
}

/// One endpoint of a WebSocket connection, without I/O.
///
/// Feed received bytes to [`Connection::receive`], write what [`Connection::send_queue`]
/// holds. Pongs and close replies are queued automatically (see [`Answers`] for when).
///
/// ```
/// use bytes::{Buf, BytesMut};
/// use duplex_proto::{Connection, Message, Role, State};
/// let mut server = Connection::new(Role::Server, Default::default());
/// // A masked ping "Hello" from a client (RFC 6455 section 5.7).
/// let mut input = BytesMut::from(&b"\x89\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"[..]);
/// assert_eq!(server.receive(&mut input), Ok(Some(Message::Ping("Hello".into()))));
/// // The pong is already queued.
/// assert_eq!(server.send_queue().chunk(), b"\x8a\x05Hello");
/// assert_eq!(server.state(), State::Open);
/// ```
#[derive(Debug)]
pub struct Connection {
    receiver: Receiver,
    sender: Sender,
    role: Role,
    answers: Answers,
    /// The parameters in force, kept for whoever asks which were agreed.
    deflate: Option<DeflateParams>,
    /// A message held back until the frames it caused are written. Boxed: it is rarely
    /// there, and an idle connection should not carry room for it.
    held: Option<Box<Result<Message, Error>>>,
    /// Boxed for the same reason; only with [`Answers::ByWriter`].
    owed: Option<Box<Owed>>,
    /// Given up on a peer that does not read: nothing more is written.
    broken: bool,
    /// The I/O layer ended the connection (transport closed or failed, a timeout): nothing more
    /// is read.
    ended: bool,
}

/// What a [`Connection`] keeps between messages (see [`Connection::into_idle`]).
#[derive(Debug)]
pub struct IdleConnection {
    receiver: IdleReceiver,
    sender: IdleSender,
    answers: Answers,
    deflate: Option<DeflateParams>,
}

impl IdleConnection {
    /// The connection again, ready for the next message.
    pub fn resume(self) -> Connection {
        let receiver = self.receiver.resume();
        let role = receiver.role();
        Connection {
            receiver,
            sender: self.sender.resume(),
            role,
            answers: self.answers,
            deflate: self.deflate,
            held: None,
            owed: None,
            broken: false,
            ended: false,
        }
    }

    /// The permessage-deflate parameters in force.
    pub fn deflate(&self) -> Option<&DeflateParams> {
        self.deflate.as_ref()
    }
}

impl Connection {
    /// A connection in the open state, right after the handshake.
    pub fn new(role: Role, config: Config) -> Self {
        Connection {
            receiver: Receiver::new(role, config),
            sender: Sender::new(role),
            role,
            answers: Answers::Immediately,
            deflate: None,
            held: None,
            owed: None,
            broken: false,
            ended: false,
        }
    }

    /// Turns on permessage-deflate in both directions with the parameters the handshake
    /// agreed (see [`crate::deflate::negotiate`]).
    pub fn set_deflate(&mut self, params: Option<DeflateParams>) {
        self.receiver.set_deflate(params.as_ref());
        self.sender.set_deflate(params.as_ref());
        self.deflate = params;
    }

    /// The permessage-deflate parameters in force, if it was negotiated.
    pub fn deflate(&self) -> Option<&DeflateParams> {
        self.deflate.as_ref()
    }

    /// Chooses when answers are queued. Owed answers are queued first when switching away
    /// from [`Answers::ByWriter`], so none is lost.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use duplex_proto::{Answers, Connection, Message, Role};
    /// let mut server = Connection::new(Role::Server, Default::default());
    /// server.set_answers(Answers::ByWriter);
    /// let mut ping = BytesMut::from(&b"\x89\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"[..]);
    /// assert!(server.receive(&mut ping).unwrap().is_some());
    /// assert_eq!(server.buffered(), 0); // the pong waits for the writer
    /// server.send(Message::text("reply")).unwrap();
    /// assert!(server.answer_owed());
    /// assert_eq!(server.buffered(), 7 + 7); // the reply, then the pong
    /// ```
    pub fn set_answers(&mut self, answers: Answers) {
        if self.answers == Answers::ByWriter && answers != Answers::ByWriter {
            self.answer_owed();
        }
        self.answers = answers;
    }

    /// When answers are queued.
    pub fn answers(&self) -> Answers {
        self.answers
    }

    /// Which end this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Decodes the next message from `buf` (see [`Receiver::receive`]) and queues or owes the
    /// answers the protocol requires (see [`Answers`]). `Ok(None)`: more bytes are needed, or
    /// (with [`Answers::BeforeDelivery`]) the message is held until the queue is written.
    ///
    /// On a protocol error a close frame with the error's code is queued and the error returned
    /// (or held); write the queue, then close the transport.
    pub fn receive(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, Error> {
        if self.held.is_some() || self.ended {
            return Ok(None);
        }
        let before = self.sender.buffered();
        let result = match self.receiver.receive(buf) {
            Ok(Some(msg)) => {
                self.react(&msg);
                Ok(msg)
            }
            Ok(None) => return Ok(None),
            Err(e) => {
                self.sender.fail(&e);
                Err(e)
            }
        };
        if self.answers == Answers::BeforeDelivery && self.sender.buffered() != before {
            self.held = Some(Box::new(result));
            return Ok(None);
        }
        result.map(Some)
    }

    fn react(&mut self, msg: &Message) {
        if self.answers != Answers::ByWriter {
            self.sender.react(msg);
            return;
        }
        match msg {
            Message::Ping(payload) => self.owed_mut().pong = Some(payload.clone()),
            Message::Close(_) => self.owed_mut().close = Some(msg.clone()),
            _ => {}
        }
    }

    fn owed_mut(&mut self) -> &mut Owed {
        self.owed.get_or_insert_with(Box::default)
    }

    /// The message (or error) held back by [`Answers::BeforeDelivery`]; take it once the send
    /// queue is written.
    pub fn take_held(&mut self) -> Option<Result<Message, Error>> {
        self.held.take().map(|held| *held)
    }

    /// Whether a message is held back.
    pub fn has_held(&self) -> bool {
        self.held.is_some()
    }

    /// Whether answers are owed ([`Answers::ByWriter`]): call [`Connection::answer_owed`].
    pub fn owes_answer(&self) -> bool {
        self.owed.is_some()
    }

    /// Asks for a ping to be sent with the next answers (a keepalive decided on by the reading
    /// side), or at once unless answers wait for a writer.
    pub fn ping(&mut self, payload: Bytes) -> Result<(), Error> {
        if self.answers == Answers::ByWriter {
            self.sender.check_open()?;
            self.owed_mut().ping = Some(payload);
            return Ok(());
        }
        self.sender.send(Message::Ping(payload))
    }

    /// Queues the answers owed so far (pong, then a keepalive ping, then the echo of the
    /// peer's close), after whatever the application queued before. Returns whether anything
    /// was owed.
    pub fn answer_owed(&mut self) -> bool {
        let Some(owed) = self.owed.take() else {
            return false;
        };
        if let Some(payload) = owed.pong {
            self.sender.react(&Message::Ping(payload));
        }
        if let Some(payload) = owed.ping {
            let _ = self.sender.send(Message::Ping(payload));
        }
        if let Some(close) = owed.close {
            self.sender.react(&close);
        }
        true
    }

    /// Queues the pings and pongs owed, not the echo of a close: a writer about to queue a
    /// message sends those first, and its message still goes before the close echo. Returns
    /// whether a ping or pong was owed.
    pub fn answer_pings(&mut self) -> bool {
        let Some(owed) = self.owed.as_deref_mut() else {
            return false;
        };
        let (pong, ping) = (owed.pong.take(), owed.ping.take());
        if owed.close.is_none() {
            self.owed = None;
        }
        let answered = pong.is_some() || ping.is_some();
        if let Some(payload) = pong {
            self.sender.react(&Message::Ping(payload));
        }
        if let Some(payload) = ping {
            let _ = self.sender.send(Message::Ping(payload));
        }
        answered
    }

    /// Queues a message (see [`Sender::send`]).
    pub fn send(&mut self, msg: Message) -> Result<(), Error> {
        self.sender.send(msg)
    }

    /// Starts the closing handshake with a code and reason.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.sender.close(Some(CloseFrame::new(code, reason)))
    }

    /// Fails the connection from this side (a keepalive ping went unanswered): the close frame
    /// is queued, and nothing more is read.
    pub fn fail_with(&mut self, frame: CloseFrame) {
        self.owed = None;
        let _ = self.sender.close(Some(frame));
        self.ended = true;
    }

    /// Gives up on a peer that does not read: frees the queue, drops what was held and owed;
    /// nothing more is written (not even a close frame, for which there is no room) or read.
    pub fn break_off(&mut self) {
        self.broken = true;
        self.ended = true;
        self.held = None;
        self.owed = None;
        self.sender.queue().discard();
    }

    /// Whether the connection was given up on ([`Connection::break_off`]).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Marks the connection as over for reading: the transport ended or failed, or a timeout
    /// expired. What was held is dropped.
    pub fn end(&mut self) {
        self.ended = true;
        self.held = None;
    }

    /// Whether nothing more will be read ([`Connection::end`], or the closing handshake is
    /// complete on the receiving side).
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Whether messages can still be queued: no close sent and not broken.
    pub fn can_send(&self) -> bool {
        !self.sender.is_close_sent() && !self.broken
    }

    /// Whether the close timer should run: this side sent its close and waits for the peer's
    /// (RFC 6455 section 7.1.1 bounds that wait; the I/O layer owns the clock).
    pub fn awaits_close(&self) -> bool {
        self.sender.is_close_sent() && !self.receiver.is_finished()
    }

    /// Whether this side closes the transport now: the closing handshake is complete and its
    /// frames written, and this is the server, which closes the TCP connection first (RFC 6455
    /// section 7.1.1); a client waits for the server to do so.
    pub fn closes_transport(&self) -> bool {
        self.role == Role::Server
            && self.receiver.is_finished()
            && self.sender.is_close_sent()
            && self.sender.buffered() == 0
    }

    /// Whether nothing is in progress: no message half received or half sent, nothing queued,
    /// held or owed, no closing handshake.
    pub fn is_idle(&self) -> bool {
        self.receiver.is_between_messages()
            && self.sender.buffered() == 0
            && !self.sender.is_fragmenting()
            && !self.sender.is_close_sent()
            && self.held.is_none()
            && self.owed.is_none()
            && !self.broken
            && !self.ended
    }

    /// The connection reduced to what it keeps between messages, for one set aside while idle;
    /// `Err(self)` unless [idle](Connection::is_idle).
    ///
    /// ```
    /// use duplex_proto::{Connection, Role};
    /// let conn = Connection::new(Role::Server, Default::default());
    /// let idle = conn.into_idle().unwrap();
    /// assert!(idle.resume().is_idle());
    /// ```
    // The connection comes back unchanged when it cannot be set aside; boxing it would cost an
    // allocation on that path.
    #[allow(clippy::result_large_err)]
    pub fn into_idle(self) -> Result<IdleConnection, Connection> {
        if !self.is_idle() {
            return Err(self);
        }
        let Connection {
            receiver,
            sender,
            role,
            answers,
            deflate,
            ..
        } = self;
        let receiver = match receiver.into_idle() {
            Ok(rx) => rx,
            Err(receiver) => {
                return Err(Connection::rebuild(
                    receiver, sender, role, answers, deflate,
                ))
            }
        };
        match sender.into_idle() {
            Ok(sender) => Ok(IdleConnection {
                receiver,
                sender,
                answers,
                deflate,
            }),
            Err(sender) => Err(Connection::rebuild(
                receiver.resume(),
                sender,
                role,
                answers,
                deflate,
            )),
        }
    }

    fn rebuild(
        receiver: Receiver,
        sender: Sender,
        role: Role,
        answers: Answers,
        deflate: Option<DeflateParams>,
    ) -> Self {
        Connection {
            receiver,
            sender,
            role,
            answers,
            deflate,
            held: None,
            owed: None,
            broken: false,
            ended: false,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        match (self.sender.is_close_sent(), self.receiver.is_finished()) {
            (false, false) => State::Open,
            (true, false) => State::CloseSent,
            (false, true) => State::CloseReceived,
            (true, true) => State::Closed,
        }
    }

    /// Bytes queued and not yet written.
    pub fn buffered(&self) -> usize {
        self.sender.buffered()
    }

    /// The bytes waiting to be written; advance it by what was written.
    pub fn send_queue(&mut self) -> &mut SendQueue {
        self.sender.queue()
    }

    /// The receiving half.
    pub fn receiver(&self) -> &Receiver {
        &self.receiver
    }

    /// The sending half, to queue frames of other kinds (fragments, prepared frames).
    pub fn sender(&mut self) -> &mut Sender {
        &mut self.sender
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked frame from a client.
    fn masked(opcode: u8, payload: &[u8]) -> BytesMut {
        let key = [1, 2, 3, 4];
        let mut out = BytesMut::from(&[0x80 | opcode, 0x80 | payload.len() as u8][..]);
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        out
    }

    /// A server answering as `answers` says, and a request followed by a close (1000) from its
    /// client, in one read.
    fn request_then_close(answers: Answers, request: &[u8]) -> (Connection, BytesMut) {
        let mut server = Connection::new(Role::Server, Config::default());
        server.set_answers(answers);
        let mut input = masked(0x1, request);
        input.extend_from_slice(&masked(0x8, &[0x03, 0xe8]));
        (server, input)
    }

    #[test]
    fn a_close_is_held_until_its_echo_is_written() {
        let (mut server, mut input) = request_then_close(Answers::BeforeDelivery, b"request");
        assert_eq!(
            server.receive(&mut input),
            Ok(Some(Message::text("request")))
        );
        assert_eq!(server.receive(&mut input), Ok(None));
        assert!(server.has_held());
        assert_eq!(server.buffered(), 4);
        assert!(matches!(server.take_held(), Some(Ok(Message::Close(_)))));
        server.send_queue().discard();
        assert!(server.closes_transport());
    }

    #[test]
    fn replies_queued_before_the_writer_answers_go_before_the_close_echo() {
        let (mut server, mut input) = request_then_close(Answers::ByWriter, b"rooms?");
        assert!(server.receive(&mut input).unwrap().is_some());
        assert!(server.receive(&mut input).unwrap().unwrap().is_close());
        assert_eq!(server.state(), State::CloseReceived);
        server.send(Message::text("rooms")).unwrap();
        assert!(server.answer_owed());
        let queue = server.send_queue();
        let mut wire = Vec::new();
        while !queue.is_empty() {
            let chunk = bytes::Buf::chunk(queue).to_vec();
            bytes::Buf::advance(queue, chunk.len());
            wire.extend(chunk);
        }
        assert_eq!(wire, b"\x81\x05rooms\x88\x02\x03\xe8");
        assert_eq!(server.state(), State::Closed);
        assert!(!server.can_send());
    }

    #[test]
    fn only_the_latest_ping_is_owed_an_answer() {
        let mut server = Connection::new(Role::Server, Config::default());
        server.set_answers(Answers::ByWriter);
        for payload in [&b"one"[..], b"two", b"three"] {
            let mut ping = masked(0x9, payload);
            assert!(server.receive(&mut ping).unwrap().is_some());
        }
        assert_eq!(server.buffered(), 0);
        server.answer_owed();
        assert_eq!(server.buffered(), 2 + 5);
        assert!(!server.answer_owed());
    }

    #[test]
    fn a_broken_connection_drops_its_queue_and_refuses_more() {
        let mut client = Connection::new(Role::Client, Config::default());
        client.send(Message::text("never read")).unwrap();
        client.break_off();
        assert_eq!(client.buffered(), 0);
        assert!(client.is_broken() && client.is_ended() && !client.can_send());
        assert!(client.into_idle().is_err());
    }
}
