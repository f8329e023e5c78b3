//! One chat connection: reads what the client says and hands it to the broker, writes what
//! the broker queues for it, and closes with the right code when either side ends.
//!
//! The connection is split into its two halves so that a client that stops reading can still
//! be read from (and its writer stopped), and a client that sends a lot does not delay what
//! it receives.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duplex::{CloseCode, CloseFrame, MaybeTlsStream, Message, PreparedMessage, WebSocket};
use duplex::{WebSocketReader, WebSocketWriter};
use tokio::sync::{oneshot, watch};
use tracing::info;

use crate::broker::{Broker, Command, ConnId, Mode, Registration};
use crate::close::{CLOSE_BINARY, CLOSE_RATE_LIMITED, CLOSE_SHUTDOWN};
use crate::identity::Identity;
use crate::listing::Cursor;
use crate::metrics::Metrics;
use crate::open::OpenSession;
use crate::outbox::{outbox, Outbox, OutboxSender};
use crate::protocol::{ClientMessage, ServerMessage};
use crate::rate::RateLimit;
use crate::shutdown::stopping;

/// Everything a chat connection needs besides its socket.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: ConnId,
    pub(crate) peer: SocketAddr,
    /// The room of the URL (`/` is `general`).
    pub(crate) room: String,
    pub(crate) mode: Mode,
    /// The plain client's name (`?name=` or `guest-<id>`, or the token's); JSON clients name
    /// themselves unless they have a token.
    pub(crate) name: String,
    /// With JWT on, who the token says the connection is: it speaks under the token's name,
    /// joins only the rooms the token allows, and sends only if the token allows it.
    pub(crate) identity: Option<Arc<Identity>>,
    pub(crate) broker: Broker,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) rate_limit: u32,
    pub(crate) send_queue: usize,
    pub(crate) close_timeout: Duration,
    /// Counts the connection as open while the session lives.
    pub(crate) _open: OpenSession,
}

/// How a connection ended, for the log line.
#[derive(Debug)]
enum End {
    /// The client sent a close frame.
    PeerClosed(Option<CloseFrame>),
    /// Reading failed: a protocol violation (already answered with its close code), a reset,
    /// or the end of the transport without a close frame.
    ReadFailed(duplex::Error),
    /// Writing failed.
    WriteFailed(duplex::Error),
    /// The hub closes: rate limit, binary data, slow reader, shutdown, broker gone.
    Closing(CloseFrame),
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::PeerClosed(Some(frame)) => write!(f, "closed by peer ({})", frame.code),
            End::PeerClosed(None) => write!(f, "closed by peer"),
            End::ReadFailed(e) => write!(f, "read failed: {e}"),
            End::WriteFailed(e) => write!(f, "write failed: {e}"),
            End::Closing(frame) => write!(f, "closed by server ({} {})", frame.code, frame.reason),
        }
    }
}

impl Session {
    /// Runs the connection to its end and logs how it ended.
    ///
    /// The setup happens here and the rest in an `async move` block that uses what it
    /// captures in place: an `async fn` would keep its arguments twice, and the WebSocket
    /// once more after `split` moved it, in every chat connection's state.
    // The point is the shape clippy would undo (see above).
    #[allow(clippy::manual_async_fn)]
    pub(crate) fn run(self, ws: WebSocket<MaybeTlsStream>) -> impl Future<Output = ()> + Send {
        let started = Instant::now();
        let (queue_tx, mut queue_rx) = outbox(self.send_queue);
        let (kick_tx, kick_rx) = oneshot::channel();
        let registration = Registration {
            id: self.id,
            name: if self.mode == Mode::Plain {
                self.name.clone()
            } else {
                String::new()
            },
            mode: self.mode,
            queue: queue_tx.clone(),
            kick: kick_tx,
            room: (self.mode == Mode::Plain).then(|| self.room.clone()),
            subject: self.identity.as_ref().map(|identity| identity.sub.clone()),
        };
        if let (Some(identity), Mode::Json) = (&self.identity, self.mode) {
            // The first frame, ahead of anything the broker queues after `Connect`: the client
            // learns the name it speaks under before it joins (the page then shows it and
            // asks for none).
            let _ = queue_tx.try_send(PreparedMessage::text(identity_message(identity).to_json()));
        }
        let (mut reader, mut writer) = ws.split();
        async move {
            let end = if self
                .broker
                .send(Command::Connect(registration))
                .await
                .is_err()
            {
                End::Closing(broker_gone())
            } else {
                let mut shutdown = self.shutdown.clone();
                let stop = async {
                    tokio::select! {
                        Ok(frame) = kick_rx => frame,
                        () = stopping(&mut shutdown) => {
                            CloseFrame::new(CloseCode(CLOSE_SHUTDOWN), "server shutting down")
                        }
                    }
                };
                tokio::select! {
                    end = self.read_loop(&mut reader, &queue_tx) => end,
                    e = write_loop(&mut writer, &mut queue_rx, &self.metrics) => {
                        End::WriteFailed(e)
                    }
                    frame = stop => End::Closing(frame),
                }
            };
            let (done, disconnected) = oneshot::channel();
            let _ = self
                .broker
                .send(Command::Disconnect { id: self.id, done })
                .await;
            let ending = Ending {
                end: &end,
                disconnected,
                close_timeout: self.close_timeout,
            };
            // Boxed: the closing handshake's state need not be room in every session.
            Box::pin(finish(&mut reader, &mut writer, &mut queue_rx, ending)).await;
            info!(
                conn = self.id,
                peer = %self.peer,
                room = %self.room,
                mode = ?self.mode,
                secs = started.elapsed().as_secs_f32(),
                reason = %end,
                "chat connection closed"
            );
        }
    }

    async fn read_loop(
        &self,
        reader: &mut WebSocketReader<MaybeTlsStream>,
        local: &OutboxSender,
    ) -> End {
        let mut limit = RateLimit::new(self.rate_limit, Instant::now());
        loop {
            let msg = match reader.recv().await {
                None => return End::PeerClosed(None),
                Some(Err(e)) => return End::ReadFailed(e),
                Some(Ok(msg)) => msg,
            };
            let text = match msg {
                Message::Text(text) => text,
                Message::Binary(data) => {
                    self.metrics.received(data.len());
                    return End::Closing(CloseFrame::new(
                        CloseCode(CLOSE_BINARY),
                        "chat messages are text",
                    ));
                }
                // The writer echoes the close frame, and writes the pong of a ping
                // (`flush_control`, below).
                Message::Close(frame) => return End::PeerClosed(frame),
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            let now = Instant::now();
            self.metrics.received(text.len());
            if !limit.allow(now) {
                self.metrics
                    .rate_limited
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return End::Closing(CloseFrame::new(
                    CloseCode(CLOSE_RATE_LIMITED),
                    "rate limit exceeded",
                ));
            }
            let command = match self.mode {
                // A plain client cannot read an error: a read-only one that talks is closed
                // with 1008 (policy), its reason saying why.
                Mode::Plain if !self.may_publish() => {
                    return End::Closing(CloseFrame::new(
                        CloseCode::POLICY,
                        "read-only token: sending is not allowed",
                    ));
                }
                Mode::Plain => Command::Send {
                    id: self.id,
                    room: None,
                    text: text.as_str().to_owned(),
                    at: now,
                },
                Mode::Json => {
                    let command = serde_json::from_str::<ClientMessage>(text.as_str())
                        .map_err(|e| ServerMessage::error("bad_request", e.to_string()))
                        .and_then(|msg| self.command(msg, now));
                    match command {
                        Ok(command) => command,
                        Err(error) => {
                            // If the queue is full the broker is about to disconnect this
                            // client anyway; the error adds nothing then.
                            let _ = local.try_send(PreparedMessage::text(error.to_json()));
                            continue;
                        }
                    }
                }
            };
            if self.broker.send(command).await.is_err() {
                return End::Closing(broker_gone());
            }
        }
    }

    fn may_publish(&self) -> bool {
        self.identity.as_ref().is_none_or(|id| id.publish)
    }

    /// The broker command for a JSON request (rooms default to the URL's room), or the error
    /// that refuses it: with a token, a join under another name or into a room the token does
    /// not allow, and a send of a read-only token, are refused here, before the broker.
    fn command(&self, msg: ClientMessage, at: Instant) -> Result<Command, ServerMessage> {
        let id = self.id;
        Ok(match msg {
            ClientMessage::Join {
                room,
                name,
                since,
                epoch,
            } => {
                let room = room.unwrap_or_else(|| self.room.clone());
                let name = match &self.identity {
                    None => name,
                    Some(identity) => {
                        if name.is_some_and(|n| n.trim() != identity.name) {
                            return Err(ServerMessage::error(
                                "identity",
                                format!("this token speaks as {:?}", identity.name),
                            ));
                        }
                        if !identity.may_join(&room) {
                            return Err(ServerMessage::error(
                                "forbidden_room",
                                format!("this token does not allow room {room:?}"),
                            ));
                        }
                        Some(identity.name.clone())
                    }
                };
                Command::Join {
                    id,
                    room,
                    name,
                    since,
                    epoch,
                }
            }
            ClientMessage::Leave { room } => Command::Leave {
                id,
                room: room.unwrap_or_else(|| self.room.clone()),
            },
            ClientMessage::Send { .. } if !self.may_publish() => {
                return Err(ServerMessage::error(
                    "read_only",
                    "this token may read but not send",
                ));
            }
            ClientMessage::Send { room, text } => Command::Send { id, room, text, at },
            ClientMessage::Rooms { cursor } => Command::Rooms {
                id,
                cursor: Cursor::parse(cursor.as_deref())
                    .map_err(|e| ServerMessage::error("bad_cursor", e.to_string()))?,
            },
        })
    }
}

/// Frames queued for one write, at most (and the one that passes it).
const BATCH_BYTES: usize = 64 * 1024;

/// Writes queued frames until writing fails, and what the reader hands over: pongs, keepalive
/// pings and close replies. Only returns on error.
///
/// The reader needs no way to wake this loop: `flush_control` waits for what it hands over.
async fn write_loop(
    writer: &mut WebSocketWriter<MaybeTlsStream>,
    queue: &mut Outbox,
    metrics: &Metrics,
) -> duplex::Error {
    loop {
        tokio::select! {
            biased;
            // Pongs, keepalive pings and close replies, even while no chat traffic flows.
            done = writer.flush_control() => {
                if let Err(e) = done {
                    return e;
                }
            }
            frame = queue.recv() => {
                // Queue what else is already waiting too (up to a write's worth), then write
                // it all at once: one system call per burst, not per message.
                // The queue is empty here (the last flush wrote it all), so the burst's own
                // length is what is queued, counted without asking the writer.
                let mut next = Some(frame);
                let mut batch = 0;
                while let Some(frame) = next.take() {
                    if let Err(e) = writer.queue_prepared(&frame) {
                        return e;
                    }
                    metrics.sent(frame.frame_len());
                    batch += frame.frame_len();
                    if batch < BATCH_BYTES {
                        next = queue.try_recv();
                    }
                }
                if let Err(e) = writer.flush().await {
                    return e;
                }
            }
        }
    }
}

/// How a connection ends, for [`finish`].
struct Ending<'a> {
    end: &'a End,
    /// Fires once the broker has handled the connection's `Disconnect` (see
    /// [`Command::Disconnect`]).
    disconnected: oneshot::Receiver<()>,
    close_timeout: Duration,
}

/// Completes the closing handshake as far as the way the connection ended allows, within
/// the close timeout.
async fn finish(
    reader: &mut WebSocketReader<MaybeTlsStream>,
    writer: &mut WebSocketWriter<MaybeTlsStream>,
    queue: &mut Outbox,
    ending: Ending<'_>,
) {
    let Ending {
        end,
        disconnected,
        close_timeout,
    } = ending;
    let closing = async {
        match end {
            // The client's requests read before its close frame are owed a reply (a room
            // list, a history, its own message) ahead of the answer to the close. Once the
            // broker has handled the disconnect it has handled them, and their replies are in
            // the outbox; queued now, they go out before the close reply, which the reader
            // handed over and the writer takes on at its next flush.
            End::PeerClosed(_) => {
                let _ = disconnected.await;
                while let Some(frame) = queue.try_recv() {
                    if writer.queue_prepared(&frame).is_err() {
                        break;
                    }
                }
                let _ = writer.flush().await;
            }
            // Write the close frame of the protocol error that ended the read (the reader
            // handed it over), if the transport still takes it.
            End::ReadFailed(_) => {
                let _ = writer.flush().await;
            }
            End::WriteFailed(_) => {}
            End::Closing(frame) => {
                // Queued after whatever part of a frame is still unwritten: a slow client that
                // starts reading again gets what was on its way, then this close frame.
                if writer.close(Some(frame.clone())).await.is_ok() {
                    while let Some(Ok(_)) = reader.recv().await {}
                    let _ = writer.flush().await;
                }
            }
        }
    };
    let _ = tokio::time::timeout(close_timeout, closing).await;
}

/// What a connection with a token is told first.
fn identity_message(identity: &Identity) -> ServerMessage {
    ServerMessage::Identity {
        sub: identity.sub.clone(),
        name: identity.name.clone(),
        rooms: identity.rooms.as_ref().map(|rooms| rooms.to_strings()),
        publish: identity.publish,
    }
}

fn broker_gone() -> CloseFrame {
    CloseFrame::new(CloseCode::INTERNAL, "server error")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::Session;
    use crate::broker::{Broker, Mode};
    use crate::metrics::Metrics;
    use crate::open::test_connection;

    /// An idle chat connection costs this future (boxed by the connection's task), both split
    /// halves inside it, plus its queues (docs/BENCHMARKS.md). It must not keep the WebSocket a
    /// second and third time (`async fn` arguments, and after `split`), the session twice, or
    /// the broker channel's send future with a copy of the command.
    #[tokio::test]
    async fn an_idle_chat_session_stays_small() {
        let metrics = Arc::new(Metrics::default());
        let (ws, open) = test_connection(&metrics).await;
        let (broker, _commands) = Broker::detached();
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let session = Session {
            id: 1,
            peer: "127.0.0.1:1".parse().unwrap(),
            room: "general".to_owned(),
            mode: Mode::Plain,
            name: "guest-1".to_owned(),
            identity: None,
            broker,
            metrics: metrics.clone(),
            shutdown,
            rate_limit: 0,
            send_queue: 256,
            close_timeout: Duration::from_secs(1),
            _open: open,
        };
        let run = session.run(ws);
        let size = std::mem::size_of_val(&run);
        assert!(size <= 1792, "chat session future is {size} bytes");
    }
}
