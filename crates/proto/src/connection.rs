//! [`Connection`]: the whole protocol for one endpoint, a [`Receiver`] and a [`Sender`] tied
//! together so that received pings are answered and received closes are echoed.

use bytes::BytesMut;

use crate::close::{CloseCode, CloseFrame};
use crate::error::Error;
use crate::message::Message;
use crate::recv::Receiver;
use crate::send::{SendQueue, Sender};
use crate::{Config, Role};

/// Where a connection is in its life (RFC 6455 section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// This side sent a close frame and waits for the peer's.
    CloseSent,
    /// The peer sent a close frame this side has not answered yet (only seen when the halves
    /// are driven separately).
    CloseReceived,
    /// Both close frames were exchanged, or the connection failed: the transport should be
    /// closed once the send queue is written.
    Closed,
}

/// One endpoint of a WebSocket connection, without I/O.
///
/// Feed received bytes to [`Connection::receive`], write what [`Connection::send_queue`]
/// holds. Pongs and close replies are queued automatically.
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
}

impl Connection {
    /// A connection in the open state, right after the handshake.
    pub fn new(role: Role, config: Config) -> Self {
        Connection {
            receiver: Receiver::new(role, config),
            sender: Sender::new(role),
        }
    }

    /// Turns on permessage-deflate in both directions with the parameters the handshake
    /// agreed (see [`crate::deflate::negotiate`]).
    pub fn set_deflate(&mut self, params: Option<&crate::deflate::DeflateParams>) {
        self.receiver.set_deflate(params);
        self.sender.set_deflate(params);
    }

    /// Rebuilds a connection from halves driven separately.
    pub fn from_parts(receiver: Receiver, sender: Sender) -> Self {
        Connection { receiver, sender }
    }

    /// Splits into the receiving and sending halves.
    pub fn into_parts(self) -> (Receiver, Sender) {
        (self.receiver, self.sender)
    }

    /// Decodes the next message from `buf` (see [`Receiver::receive`]) and queues the answers
    /// the protocol requires. On a protocol error a close frame with the error's code is queued
    /// and the error returned; write the queue, then close the transport.
    pub fn receive(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, Error> {
        match self.receiver.receive(buf) {
            Ok(Some(msg)) => {
                self.sender.react(&msg);
                Ok(Some(msg))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.sender.fail(&e);
                Err(e)
            }
        }
    }

    /// Queues a message (see [`Sender::send`]).
    pub fn send(&mut self, msg: Message) -> Result<(), Error> {
        self.sender.send(msg)
    }

    /// Starts the closing handshake with a code and reason.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.sender.close(Some(CloseFrame::new(code, reason)))
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

    /// The bytes waiting to be written; advance it by what was written.
    pub fn send_queue(&mut self) -> &mut SendQueue {
        self.sender.queue()
    }

    /// The receiving half.
    pub fn receiver(&mut self) -> &mut Receiver {
        &mut self.receiver
    }

    /// The sending half.
    pub fn sender(&mut self) -> &mut Sender {
        &mut self.sender
    }
}
