//! The broker: one thread that owns every room, every member and the history store.
//!
//! Connections talk to it through a bounded channel of [`Command`]s and get their outgoing
//! frames through their own bounded queue. Doing all room work on one thread gives the
//! guarantees the protocol promises without any lock:
//! - sequence numbers are assigned in one place, so they have no gaps or duplicates;
//! - a message is committed to storage before anyone is offered it;
//! - a joining member's history replay and its live messages never overlap or leave a gap,
//!   because nothing is delivered between reading the history and adding the member.
//!
//! Consecutive `Send`s that are already waiting are stored in one transaction and delivered
//! after its commit, so the storage cost per message falls as load rises.
//!
//! Fan-out encodes each message once per form (JSON and plain text) as a
//! [`PreparedMessage`] whose bytes every recipient's queue shares. A recipient whose queue is
//! full is removed from its rooms and told to close with [`CLOSE_TOO_SLOW`]: it is never
//! skipped silently, and what waits for it stays bounded by the queue length.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use duplex::{CloseCode, CloseFrame, PreparedMessage};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, warn};

use crate::close::CLOSE_TOO_SLOW;
use crate::config::HubConfig;
use crate::error::{HubError, Result};
use crate::metrics::Metrics;
use crate::outbox::{OutboxSender, Refused};
use crate::protocol::{
    clean_name, valid_room, ChatMessage, PresenceEvent, RoomInfo, ServerMessage,
};
use crate::store::Store;

/// Identifies one connection for the broker.
pub(crate) type ConnId = u64;

/// Commands waiting for the broker; senders wait when it is this far behind.
const COMMAND_QUEUE: usize = 4096;
/// Commands handled before a commit, at most: bounds the latency a batch adds. A batch is also
/// kept to a quarter of [`HubConfig::send_queue`], since it is delivered as one burst and a
/// burst must not fill the queue of a recipient that keeps up.
const MAX_BATCH: usize = 256;
/// Messages per `history` frame, so that a long replay is several moderate frames.
const HISTORY_CHUNK: usize = 100;
/// Rooms one connection may be in at once.
const MAX_ROOMS_PER_CONNECTION: usize = 32;

/// How a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// No subprotocol: text lines in, text lines out.
    Plain,
    /// `duplex.v1`: JSON objects.
    Json,
}

/// A new connection, as the broker needs to know it.
#[derive(Debug)]
pub(crate) struct Registration {
    pub(crate) id: ConnId,
    /// Plain connections have a name from the start; JSON ones get it with their first join.
    pub(crate) name: String,
    pub(crate) mode: Mode,
    /// Frames for the connection's writer.
    pub(crate) queue: OutboxSender,
    /// Fired when the broker disconnects the connection.
    pub(crate) kick: oneshot::Sender<CloseFrame>,
    /// A room to join right away (plain connections, which cannot ask).
    pub(crate) room: Option<String>,
}

/// What connections ask the broker to do.
#[derive(Debug)]
pub(crate) enum Command {
    /// A connection opened.
    Connect(Registration),
    /// Enter a room, replaying history after `since` (or the last few messages).
    Join {
        id: ConnId,
        room: String,
        name: Option<String>,
        since: Option<u64>,
    },
    /// Leave a room.
    Leave { id: ConnId, room: String },
    /// Say something; `room` may be omitted by a connection in exactly one room.
    Send {
        id: ConnId,
        room: Option<String>,
        text: String,
        /// When the message arrived, for the fan-out latency histogram.
        at: Instant,
    },
    /// Send the connection the room list.
    Rooms { id: ConnId },
    /// The connection closed. `done` fires once the broker has handled it, and so every
    /// command the connection sent before it: their replies are in its outbox by then.
    Disconnect {
        id: ConnId,
        done: oneshot::Sender<()>,
    },
    /// Commit, close the store and end the thread (graceful shutdown).
    Shutdown,
    // ---- The backend API (`api.rs`): requests from no connection, each with its reply. ----
    /// Store and deliver a message from a backend, like a member's `Send`; the reply is the
    /// message's seq, sent once its batch is committed (or why it was refused).
    ApiPublish {
        room: String,
        from: String,
        text: String,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// Stored messages of a room after `since` (or the last `limit`), oldest first.
    ApiHistory {
        room: String,
        since: Option<u64>,
        limit: u64,
        reply: oneshot::Sender<Result<Vec<ChatMessage>, String>>,
    },
    /// The names of a room's members, in order of arrival.
    ApiPresence {
        room: String,
        reply: oneshot::Sender<Vec<String>>,
    },
    /// Every room with members or history, as `{"type":"rooms"}` lists them.
    ApiRooms {
        reply: oneshot::Sender<Vec<RoomInfo>>,
    },
}

/// The connections' side of the broker.
#[derive(Debug, Clone)]
pub(crate) struct Broker {
    tx: mpsc::Sender<Command>,
}

impl Broker {
    /// Starts the broker thread with `store`. The thread ends, closing the store, once every
    /// [`Broker`] clone is dropped and the commands before that are handled.
    pub(crate) fn start(
        store: Store,
        config: &HubConfig,
        metrics: Arc<Metrics>,
    ) -> Result<(Broker, JoinHandle<Result<()>>)> {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let state = State::new(store, config, metrics);
        let thread = std::thread::Builder::new()
            .name("duplex-broker".into())
            .spawn(move || state.run(rx))?;
        Ok((Broker { tx }, thread))
    }

    /// Hands a command to the broker, waiting while it is far behind.
    ///
    /// Waiting is rare and happens in a boxed future: the state of every chat connection's
    /// read loop then holds a pointer for it, not the channel's send future and a second copy
    /// of the command (as an `async fn` here would).
    pub(crate) fn send(&self, command: Command) -> impl Future<Output = Result<()>> + Send + '_ {
        let waiting = match self.tx.try_send(command) {
            Ok(()) => Ok(None),
            Err(mpsc::error::TrySendError::Full(command)) => {
                Ok(Some(Box::pin(self.tx.send(command))))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(HubError::BrokerGone),
        };
        async move {
            match waiting? {
                None => Ok(()),
                Some(send) => send.await.map_err(|_| HubError::BrokerGone),
            }
        }
    }

    /// A broker without a thread, and the receiving end of its commands (for tests).
    #[cfg(test)]
    pub(crate) fn detached() -> (Broker, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        (Broker { tx }, rx)
    }

    /// Asks the broker thread to commit, close the store and end. Commands sent after this
    /// fail with [`HubError::BrokerGone`].
    pub(crate) async fn stop(&self) {
        let _ = self.tx.send(Command::Shutdown).await;
    }
}

#[derive(Debug)]
struct Room {
    last_seq: u64,
    /// In order of arrival, which is the order of the presence member list.
    members: Vec<ConnId>,
    /// How many of `members` are JSON clients (the only ones told about presence): a join to
    /// a room of plain clients then costs no look at every member, which for a room of N
    /// would make N joins cost N squared.
    json_members: usize,
}

/// Connections by id. Ids come from a counter, so SipHash's protection against chosen keys
/// buys nothing here, and the broker looks a connection up once per recipient of every
/// message: a multiplicative hash is a few times cheaper.
type ConnMap = HashMap<ConnId, Conn, BuildHasherDefault<IdHasher>>;

/// Fibonacci hashing of a connection id (spreads sequential ids over the high bits, which the
/// table's probing uses).
#[derive(Debug, Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` ids are hashed (`write_u64`); anything else still gets a fair hash.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

#[derive(Debug)]
struct Conn {
    name: String,
    mode: Mode,
    queue: OutboxSender,
    kick: Option<oneshot::Sender<CloseFrame>>,
    rooms: Vec<String>,
}

/// A stored message waiting for its batch to commit.
#[derive(Debug)]
struct Pending {
    msg: ChatMessage,
    sender: ConnId,
    sender_mode: Mode,
    at: Instant,
    /// A backend's message ([`API_SENDER`]): told the seq once the batch is committed.
    reply: Option<oneshot::Sender<Result<u64, String>>>,
}

/// The sender of a backend's message: no connection has id 0 (ids count from 1), so no
/// member is skipped as its sender and no error goes to a connection.
const API_SENDER: ConnId = 0;

#[derive(Debug)]
struct State {
    store: Store,
    history_limit: u64,
    history_on_join: u64,
    /// Commands per commit.
    batch: usize,
    metrics: Arc<Metrics>,
    rooms: HashMap<String, Room>,
    conns: ConnMap,
    pending: Vec<Pending>,
    /// Connections whose queue overflowed, to disconnect once the current step is done. They
    /// get nothing more: a message after a dropped one would leave a gap that resuming from the
    /// last seen sequence number could not fill.
    to_kick: Vec<ConnId>,
}

impl State {
    fn new(store: Store, config: &HubConfig, metrics: Arc<Metrics>) -> State {
        State {
            store,
            history_limit: config.history_limit,
            history_on_join: config.history_on_join,
            batch: (config.send_queue / 4).clamp(1, MAX_BATCH),
            metrics,
            rooms: HashMap::new(),
            conns: ConnMap::default(),
            pending: Vec::new(),
            to_kick: Vec::new(),
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<Command>) -> Result<()> {
        'run: while let Some(command) = rx.blocking_recv() {
            let mut next = Some(command);
            let mut handled = 0;
            while let Some(command) = next.take() {
                if matches!(command, Command::Shutdown) {
                    break 'run;
                }
                self.handle(command);
                handled += 1;
                if handled < self.batch {
                    next = rx.try_recv().ok();
                }
            }
            self.flush();
        }
        self.flush();
        debug!("broker stopping; closing the history store");
        self.store.close()
    }

    fn handle(&mut self, command: Command) {
        if let Command::Send { id, room, text, at } = command {
            self.say(id, room, text, at);
            return;
        }
        // Everything else looks at or changes membership: deliver what is stored first, so
        // that a join's history replay and the live messages after it meet exactly.
        self.flush();
        match command {
            Command::Connect(reg) => self.connect(reg),
            Command::Join {
                id,
                room,
                name,
                since,
            } => self.join(id, room, name, Some(since)),
            Command::Leave { id, room } => {
                if let Some(conn) = self.conns.get_mut(&id) {
                    if let Some(i) = conn.rooms.iter().position(|r| *r == room) {
                        conn.rooms.remove(i);
                        let (name, mode) = (conn.name.clone(), conn.mode);
                        self.remove_member(&room, id, &name, mode);
                    }
                }
            }
            Command::Rooms { id } => self.list_rooms(id),
            Command::Disconnect { id, done } => {
                if let Some(conn) = self.conns.remove(&id) {
                    for room in &conn.rooms {
                        self.remove_member(room, id, &conn.name, conn.mode);
                    }
                }
                self.settle();
                let _ = done.send(());
                return;
            }
            Command::ApiPublish {
                room,
                from,
                text,
                reply,
            } => self.api_publish(room, from, text, reply),
            Command::ApiHistory {
                room,
                since,
                limit,
                reply,
            } => self.api_history(&room, since, limit, reply),
            Command::ApiPresence { room, reply } => self.api_presence(&room, reply),
            Command::ApiRooms { reply } => self.api_rooms(reply),
            Command::Send { .. } | Command::Shutdown => {}
        }
        self.settle();
    }

    fn connect(&mut self, reg: Registration) {
        self.conns.insert(
            reg.id,
            Conn {
                name: reg.name,
                mode: reg.mode,
                queue: reg.queue,
                kick: Some(reg.kick),
                rooms: Vec::new(),
            },
        );
        if let Some(room) = reg.room {
            // Plain clients cannot resume, so they get no replay: only what is said from now.
            self.join(reg.id, room, None, None);
        }
    }

    /// Adds `id` to `room`. `history` is `None` for no replay, `Some(since)` for a replay
    /// after `since` (or of the last few messages).
    fn join(
        &mut self,
        id: ConnId,
        room: String,
        name: Option<String>,
        history: Option<Option<u64>>,
    ) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if let Some(name) = name {
            match clean_name(&name) {
                Some(name) => conn.name = name,
                None => {
                    return self.error(
                        id,
                        "bad_name",
                        "a name is 1 to 32 characters, no control characters",
                    )
                }
            }
        }
        if conn.name.is_empty() {
            return self.error(id, "bad_name", "say who you are: join with a name");
        }
        if !valid_room(&room) {
            return self.error(
                id,
                "bad_room",
                "a room name is 1 to 64 letters, digits, '-', '_' or '.'",
            );
        }
        let already = conn.rooms.contains(&room);
        if !already && conn.rooms.len() >= MAX_ROOMS_PER_CONNECTION {
            return self.error(id, "too_many_rooms", "leave a room before joining another");
        }
        if !self.rooms.contains_key(&room) {
            match self.store.last_seq(&room) {
                Ok(last_seq) => {
                    self.rooms.insert(
                        room.clone(),
                        Room {
                            last_seq,
                            members: Vec::new(),
                            json_members: 0,
                        },
                    );
                }
                Err(e) => {
                    error!(%room, "cannot read the room's history: {e}");
                    return self.error(id, "storage", "the room's history cannot be read");
                }
            }
        }
        if let Some(since) = history {
            let stored = match since {
                Some(after) => self.store.since(&room, after, self.history_limit),
                None => self.store.recent(&room, self.history_on_join),
            };
            match stored {
                Ok(messages) => self.replay(id, &room, messages),
                Err(e) => {
                    error!(%room, "cannot read the room's history: {e}");
                    return self.error(id, "storage", "the room's history cannot be read");
                }
            }
        }
        if already {
            // A repeated join is a resume request: the replay above is all it needs.
            return;
        }
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.rooms.push(room.clone());
        }
        let json = self.conns.get(&id).is_some_and(|c| c.mode == Mode::Json);
        if let Some(r) = self.rooms.get_mut(&room) {
            r.members.push(id);
            r.json_members += usize::from(json);
        }
        self.metrics.rooms.store(self.rooms.len() as i64, Relaxed);
        let name = self
            .conns
            .get(&id)
            .map(|c| c.name.clone())
            .unwrap_or_default();
        self.announce(&room, id, name, PresenceEvent::Joined);
    }

    /// Sends stored messages to `id` as one or more `history` frames (always at least one, so
    /// that the client knows the replay is complete).
    fn replay(&mut self, id: ConnId, room: &str, messages: Vec<ChatMessage>) {
        let mut chunks: Vec<Vec<ChatMessage>> = Vec::new();
        let mut it = messages.into_iter().peekable();
        while it.peek().is_some() {
            chunks.push(it.by_ref().take(HISTORY_CHUNK).collect());
        }
        if chunks.is_empty() {
            chunks.push(Vec::new());
        }
        for messages in chunks {
            let frame = PreparedMessage::text(
                ServerMessage::History {
                    room: room.to_owned(),
                    messages,
                }
                .to_json(),
            );
            self.offer(id, frame);
        }
    }

    /// Assigns the next sequence number and stores the message; it is delivered when the
    /// batch commits.
    fn say(&mut self, id: ConnId, room: Option<String>, text: String, at: Instant) {
        let Some(conn) = self.conns.get(&id) else {
            // Already disconnected (for instance kicked for being slow): nothing to do.
            return;
        };
        let room = match room {
            Some(room) => room,
            None if conn.rooms.len() == 1 => conn.rooms[0].clone(),
            None => return self.error(id, "not_joined", "say which room the message is for"),
        };
        if !conn.rooms.contains(&room) {
            return self.error(id, "not_joined", "join the room before sending to it");
        }
        let Some(r) = self.rooms.get_mut(&room) else {
            return;
        };
        let msg = ChatMessage {
            room,
            seq: r.last_seq + 1,
            from: conn.name.clone(),
            time: now_ms(),
            text,
        };
        let sender_mode = conn.mode;
        match self.store.append(&msg) {
            Ok(()) => {
                r.last_seq = msg.seq;
                self.metrics.stored_messages.fetch_add(1, Relaxed);
                self.pending.push(Pending {
                    msg,
                    sender: id,
                    sender_mode,
                    at,
                    reply: None,
                });
            }
            Err(e) => {
                error!(room = %msg.room, "cannot store a message: {e}");
                self.error(id, "storage", "the message could not be stored; try again");
            }
        }
    }

    /// Commits the stored batch and delivers it.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        if let Err(e) = self.store.commit() {
            error!("cannot commit {} messages: {e}", pending.len());
            for p in &pending {
                // The numbers were never made durable; hand them out again.
                if let Some(room) = self.rooms.get_mut(&p.msg.room) {
                    room.last_seq = room.last_seq.min(p.msg.seq - 1);
                }
                self.error(
                    p.sender,
                    "storage",
                    "the message could not be stored; try again",
                );
            }
            self.settle();
            return;
        }
        for p in pending {
            self.deliver(p);
        }
        self.settle();
    }

    fn deliver(&mut self, mut p: Pending) {
        if let Some(reply) = p.reply.take() {
            let _ = reply.send(Ok(p.msg.seq));
        }
        let Some(room) = self.rooms.get(&p.msg.room) else {
            return;
        };
        // Plain clients get the text as the sender typed it when it comes from another plain
        // client (the seeds' clients put "name: " in front themselves), and "name: text" when
        // it comes from a JSON client, which sends the name separately.
        let plain = PreparedMessage::text(match p.sender_mode {
            Mode::Plain => p.msg.text.clone(),
            Mode::Json => format!("{}: {}", p.msg.from, p.msg.text),
        });
        let json = PreparedMessage::text(ServerMessage::Message(p.msg).to_json());
        for &member in &room.members {
            let Some(conn) = self.conns.get(&member) else {
                continue;
            };
            let frame = match conn.mode {
                Mode::Json => &json,
                Mode::Plain if member == p.sender => continue,
                Mode::Plain => &plain,
            };
            offer_to(member, conn, frame.clone(), &mut self.to_kick);
        }
        self.metrics.fanout(p.at.elapsed());
    }

    /// Tells the JSON members of `room` that `name` arrived or left: the others by name and
    /// count, a JSON joiner (`who` on a join) with the whole member list as well.
    fn announce(&mut self, room: &str, who: ConnId, name: String, event: PresenceEvent) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        // Plain-text members get no presence: in a room without JSON members, even the small
        // frame would be work for nobody.
        if r.json_members == 0 {
            return;
        }
        let joiner = match event {
            PresenceEvent::Joined => self.conns.get(&who).filter(|c| c.mode == Mode::Json),
            PresenceEvent::Left => None,
        };
        if let Some(conn) = joiner {
            let members = r
                .members
                .iter()
                .filter_map(|m| self.conns.get(m).map(|c| c.name.clone()))
                .collect();
            let whole = ServerMessage::Presence {
                room: room.to_owned(),
                event,
                name: name.clone(),
                count: r.members.len(),
                members: Some(members),
            };
            offer_to(
                who,
                conn,
                PreparedMessage::text(whole.to_json()),
                &mut self.to_kick,
            );
        }
        if r.json_members == usize::from(joiner.is_some()) {
            return;
        }
        let frame = PreparedMessage::text(
            ServerMessage::Presence {
                room: room.to_owned(),
                event,
                name,
                count: r.members.len(),
                members: None,
            }
            .to_json(),
        );
        for &member in &r.members {
            if member == who {
                continue;
            }
            if let Some(conn) = self.conns.get(&member) {
                if conn.mode == Mode::Json {
                    offer_to(member, conn, frame.clone(), &mut self.to_kick);
                }
            }
        }
    }

    /// Removes `id` (called `name`) from `room`'s member list, tells the others, and forgets
    /// a room left empty. The connection's own room list is the caller's business.
    fn remove_member(&mut self, room: &str, id: ConnId, name: &str, mode: Mode) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let before = r.members.len();
        r.members.retain(|m| *m != id);
        if mode == Mode::Json && r.members.len() < before {
            r.json_members -= 1;
        }
        if r.members.is_empty() {
            self.rooms.remove(room);
            self.metrics.rooms.store(self.rooms.len() as i64, Relaxed);
        } else {
            self.announce(room, id, name.to_owned(), PresenceEvent::Left);
        }
    }

    fn list_rooms(&mut self, id: ConnId) {
        let stored = match self.store.rooms() {
            Ok(rooms) => rooms,
            Err(e) => {
                warn!("cannot list rooms: {e}");
                Vec::new()
            }
        };
        let mut rooms: Vec<RoomInfo> = stored
            .into_iter()
            .map(|(name, last_seq)| RoomInfo {
                members: self.rooms.get(&name).map_or(0, |r| r.members.len()),
                last_seq,
                name,
            })
            .collect();
        for (name, room) in &self.rooms {
            if !rooms.iter().any(|r| r.name == *name) {
                rooms.push(RoomInfo {
                    name: name.clone(),
                    members: room.members.len(),
                    last_seq: room.last_seq,
                });
            }
        }
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        let frame = PreparedMessage::text(ServerMessage::Rooms { rooms }.to_json());
        self.offer(id, frame);
    }

    /// Sends an error to a JSON connection (plain clients have no way to receive one).
    fn error(&mut self, id: ConnId, code: &str, message: &str) {
        if self.conns.get(&id).is_some_and(|c| c.mode == Mode::Json) {
            let frame = PreparedMessage::text(ServerMessage::error(code, message).to_json());
            self.offer(id, frame);
        }
    }

    fn offer(&mut self, id: ConnId, frame: PreparedMessage) {
        if let Some(conn) = self.conns.get(&id) {
            offer_to(id, conn, frame, &mut self.to_kick);
        }
    }

    /// Disconnects every connection whose queue overflowed. Telling the others that one left
    /// may overflow more queues, hence the loop.
    fn settle(&mut self) {
        while let Some(id) = self.to_kick.pop() {
            let Some(mut conn) = self.conns.remove(&id) else {
                continue;
            };
            self.metrics.slow_disconnects.fetch_add(1, Relaxed);
            warn!(conn = id, name = %conn.name, "send queue full: disconnecting a slow recipient");
            if let Some(kick) = conn.kick.take() {
                let _ = kick.send(CloseFrame::new(
                    CloseCode(CLOSE_TOO_SLOW),
                    "too slow: reconnect and resume from your last seq",
                ));
            }
            for room in &conn.rooms {
                self.remove_member(room, id, &conn.name, conn.mode);
            }
        }
    }

    // ---- The backend API: the same numbering, store, commit and delivery as a member's. ----

    /// Numbers and stores a backend's message; `flush` delivers it and replies with its seq.
    /// A room nobody is in is not loaded: its number comes from the store (which sees the
    /// batch's own uncommitted messages), and there is nobody to deliver to.
    fn api_publish(
        &mut self,
        room: String,
        from: String,
        text: String,
        reply: oneshot::Sender<Result<u64, String>>,
    ) {
        if !valid_room(&room) {
            let _ = reply.send(Err("bad room name".to_owned()));
            return;
        }
        let Some(from) = clean_name(&from) else {
            let _ = reply.send(Err(
                "from is 1 to 32 characters, no control characters".to_owned()
            ));
            return;
        };
        let last_seq = match self.rooms.get(&room) {
            Some(r) => r.last_seq,
            None => match self.store.last_seq(&room) {
                Ok(seq) => seq,
                Err(e) => {
                    error!(%room, "cannot read the room's history: {e}");
                    let _ = reply.send(Err("storage".to_owned()));
                    return;
                }
            },
        };
        let msg = ChatMessage {
            room,
            seq: last_seq + 1,
            from,
            time: now_ms(),
            text,
        };
        if let Err(e) = self.store.append(&msg) {
            error!(room = %msg.room, "cannot store a message: {e}");
            let _ = reply.send(Err("storage".to_owned()));
            return;
        }
        if let Some(r) = self.rooms.get_mut(&msg.room) {
            r.last_seq = msg.seq;
        }
        self.metrics.stored_messages.fetch_add(1, Relaxed);
        // A failed commit drops `reply`, which the API answers as a storage error.
        self.pending.push(Pending {
            msg,
            sender: API_SENDER,
            sender_mode: Mode::Json,
            at: Instant::now(),
            reply: Some(reply),
        });
    }

    fn api_history(
        &mut self,
        room: &str,
        since: Option<u64>,
        limit: u64,
        reply: oneshot::Sender<Result<Vec<ChatMessage>, String>>,
    ) {
        let stored = match since {
            Some(after) => self.store.since(room, after, limit),
            None => self.store.recent(room, limit),
        };
        let _ = reply.send(stored.map_err(|e| {
            error!(%room, "cannot read the room's history: {e}");
            "storage".to_owned()
        }));
    }

    fn api_presence(&mut self, room: &str, reply: oneshot::Sender<Vec<String>>) {
        let members = self.rooms.get(room).map_or_else(Vec::new, |r| {
            r.members
                .iter()
                .filter_map(|m| self.conns.get(m).map(|c| c.name.clone()))
                .collect()
        });
        let _ = reply.send(members);
    }

    fn api_rooms(&mut self, reply: oneshot::Sender<Vec<RoomInfo>>) {
        let stored = self.store.rooms().unwrap_or_else(|e| {
            warn!("cannot list rooms: {e}");
            Vec::new()
        });
        let mut rooms: Vec<RoomInfo> = stored
            .into_iter()
            .map(|(name, last_seq)| RoomInfo {
                members: self.rooms.get(&name).map_or(0, |r| r.members.len()),
                last_seq,
                name,
            })
            .collect();
        for (name, room) in &self.rooms {
            if !rooms.iter().any(|r| r.name == *name) {
                rooms.push(RoomInfo {
                    name: name.clone(),
                    members: room.members.len(),
                    last_seq: room.last_seq,
                });
            }
        }
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        let _ = reply.send(rooms);
    }
}

/// Puts a frame in connection `id`'s queue. A full queue puts the connection on `to_kick`,
/// and a connection on `to_kick` gets nothing more. A closed queue means the connection is
/// already going away (its `Disconnect` is on the way): nothing to do.
fn offer_to(id: ConnId, conn: &Conn, frame: PreparedMessage, to_kick: &mut Vec<ConnId>) {
    if to_kick.contains(&id) {
        return;
    }
    if let Err(Refused::Full) = conn.queue.try_send(frame) {
        to_kick.push(id);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};
    use tempfile::TempDir;

    use super::*;
    use crate::outbox::{outbox, Outbox};

    /// The broker's state over a history in a temporary directory, driven as its thread
    /// drives it (a command, then the commit and delivery of its batch), with no thread,
    /// channel or socket.
    struct Rig {
        state: State,
        send_queue: usize,
        _dir: TempDir,
    }

    /// A connection as the broker sees it: its outbox and its kick.
    struct Client {
        id: ConnId,
        outbox: Outbox,
        kick: oneshot::Receiver<CloseFrame>,
    }

    impl Rig {
        fn new(config: impl FnOnce(HubConfig) -> HubConfig) -> Rig {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let config = config(HubConfig::new(dir.path()));
            let store = Store::open(&config.data_dir, config.history_limit).expect("the store");
            Rig {
                state: State::new(store, &config, Arc::new(Metrics::default())),
                send_queue: config.send_queue,
                _dir: dir,
            }
        }

        fn with_defaults() -> Rig {
            Rig::new(|config| config)
        }

        fn run(&mut self, command: Command) {
            self.state.handle(command);
            self.state.flush();
        }

        /// Registers connection `id`; a plain one joins `room` at once.
        fn connect(&mut self, id: ConnId, mode: Mode, name: &str, room: Option<&str>) -> Client {
            let (queue, outbox) = outbox(self.send_queue);
            let (kick, kicked) = oneshot::channel();
            self.run(Command::Connect(Registration {
                id,
                name: name.to_owned(),
                mode,
                queue,
                kick,
                room: room.map(str::to_owned),
            }));
            Client {
                id,
                outbox,
                kick: kicked,
            }
        }

        /// A JSON connection that joined `room` as `name`, with what the join sent it read.
        fn joined(&mut self, id: ConnId, name: &str, room: &str) -> Client {
            let mut client = self.connect(id, Mode::Json, "", None);
            self.join(&client, room, Some(name), None);
            let kinds: Vec<Value> = client
                .received()
                .iter()
                .map(|m| m["type"].clone())
                .collect();
            assert_eq!(kinds, [json!("history"), json!("presence")]);
            client
        }

        fn join(&mut self, client: &Client, room: &str, name: Option<&str>, since: Option<u64>) {
            self.run(Command::Join {
                id: client.id,
                room: room.to_owned(),
                name: name.map(str::to_owned),
                since,
            });
        }

        fn say(&mut self, client: &Client, room: Option<&str>, text: &str) {
            self.run(Command::Send {
                id: client.id,
                room: room.map(str::to_owned),
                text: text.to_owned(),
                at: Instant::now(),
            });
        }

        fn leave(&mut self, client: &Client, room: &str) {
            self.run(Command::Leave {
                id: client.id,
                room: room.to_owned(),
            });
        }

        /// Disconnects `client`; true if the broker said it was done.
        fn disconnect(&mut self, client: &Client) -> bool {
            let (done, mut disconnected) = oneshot::channel();
            self.run(Command::Disconnect {
                id: client.id,
                done,
            });
            disconnected.try_recv().is_ok()
        }

        /// Says `n` messages `m1`, `m2`, ... in `room` as a member that joined for it.
        fn fill(&mut self, room: &str, n: usize) {
            let talker = self.joined(999, "talker", room);
            for i in 1..=n {
                self.say(&talker, Some(room), &format!("m{i}"));
            }
            assert!(self.disconnect(&talker));
        }
    }

    impl Client {
        /// Everything queued for the connection so far, as text.
        fn texts(&mut self) -> Vec<String> {
            std::iter::from_fn(|| self.outbox.try_recv())
                .map(|frame| {
                    let message = frame.message();
                    message.as_text().expect("a text frame").to_owned()
                })
                .collect()
        }

        /// Everything queued for the connection so far, as JSON.
        fn received(&mut self) -> Vec<Value> {
            self.texts()
                .iter()
                .map(|t| serde_json::from_str(t).expect("JSON"))
                .collect()
        }

        /// The one message queued, which must be an error; its code.
        fn error_code(&mut self) -> String {
            let received = self.received();
            assert_eq!(received.len(), 1, "{received:?}");
            assert_eq!(received[0]["type"], "error", "{received:?}");
            received[0]["code"].as_str().expect("a code").to_owned()
        }
    }

    /// The `seq` of every message in every `history` frame of `received`.
    fn replayed(received: &[Value]) -> Vec<u64> {
        received
            .iter()
            .filter(|m| m["type"] == "history")
            .flat_map(|m| m["messages"].as_array().expect("messages").clone())
            .map(|m| m["seq"].as_u64().expect("a seq"))
            .collect()
    }

    #[test]
    fn a_join_replays_the_history_then_tells_the_joiner_who_is_there() {
        let mut rig = Rig::with_defaults();
        let mut ann = rig.connect(1, Mode::Json, "", None);
        rig.join(&ann, "lobby", Some("ann"), None);
        let received = ann.received();
        // Always a history frame, empty or not: the client knows the replay is complete.
        assert_eq!(
            received,
            [
                json!({"type": "history", "room": "lobby", "messages": []}),
                json!({"type": "presence", "room": "lobby", "event": "joined", "name": "ann",
                       "count": 1, "members": ["ann"]}),
            ]
        );
    }

    #[test]
    fn a_join_needs_a_name_and_a_valid_room() {
        let mut rig = Rig::with_defaults();
        let mut c = rig.connect(1, Mode::Json, "", None);
        rig.join(&c, "lobby", None, None);
        assert_eq!(c.error_code(), "bad_name");
        rig.join(&c, "lobby", Some("\u{7}bell"), None);
        assert_eq!(c.error_code(), "bad_name");
        rig.join(&c, "no spaces", Some("ann"), None);
        assert_eq!(c.error_code(), "bad_room");
        // None of these made it a member.
        rig.say(&c, Some("lobby"), "hello?");
        assert_eq!(c.error_code(), "not_joined");
    }

    #[test]
    fn messages_are_numbered_per_room_and_reach_every_member_in_its_form() {
        let mut rig = Rig::with_defaults();
        let mut ann = rig.joined(1, "ann", "lobby");
        let mut bob = rig.connect(2, Mode::Plain, "bob", Some("lobby"));
        let mut eve = rig.joined(3, "eve", "other");
        ann.received();
        rig.say(&ann, None, "hi");
        rig.say(&ann, Some("lobby"), "there");
        rig.say(&eve, None, "elsewhere");
        let to_ann = ann.received();
        let seqs: Vec<(&str, u64)> = to_ann
            .iter()
            .map(|m| (m["text"].as_str().unwrap(), m["seq"].as_u64().unwrap()))
            .collect();
        // The JSON sender gets its own messages back, to learn their numbers.
        assert_eq!(seqs, [("hi", 1), ("there", 2)]);
        assert_eq!(to_ann[0]["from"], "ann");
        assert_eq!(to_ann[0]["room"], "lobby");
        // Plain clients get JSON senders' messages as "name: text", and no presence.
        assert_eq!(bob.texts(), ["ann: hi", "ann: there"]);
        let elsewhere = eve.received();
        assert_eq!(elsewhere.len(), 1);
        assert_eq!(elsewhere[0]["seq"], 1, "numbering is per room");
        // A plain sender's text goes out as typed, and not back to it.
        rig.say(&bob, None, "bob: yo");
        assert_eq!(ann.received()[0]["text"], "bob: yo");
        assert!(bob.texts().is_empty());
    }

    #[test]
    fn a_member_of_several_rooms_says_which_one() {
        let mut rig = Rig::with_defaults();
        let mut ann = rig.joined(1, "ann", "a");
        rig.join(&ann, "b", None, None);
        ann.received();
        rig.say(&ann, None, "where?");
        assert_eq!(ann.error_code(), "not_joined");
        rig.say(&ann, Some("b"), "here");
        assert_eq!(ann.received()[0]["room"], "b");
    }

    #[test]
    fn a_join_without_since_replays_the_last_few_messages() {
        let mut rig = Rig::new(|config| config.history_on_join(3));
        rig.fill("lobby", 10);
        let mut ann = rig.connect(1, Mode::Json, "", None);
        rig.join(&ann, "lobby", Some("ann"), None);
        assert_eq!(replayed(&ann.received()), [8, 9, 10]);
    }

    #[test]
    fn a_join_with_since_replays_everything_after_it() {
        let mut rig = Rig::new(|config| config.history_on_join(3));
        rig.fill("lobby", 10);
        let mut ann = rig.connect(1, Mode::Json, "", None);
        rig.join(&ann, "lobby", Some("ann"), Some(4));
        assert_eq!(replayed(&ann.received()), (5..=10).collect::<Vec<_>>());
        // Up to date: an empty replay.
        let mut bob = rig.connect(2, Mode::Json, "", None);
        rig.join(&bob, "lobby", Some("bob"), Some(10));
        let received = bob.received();
        assert_eq!(received[0]["type"], "history");
        assert!(replayed(&received).is_empty());
    }

    #[test]
    fn history_keeps_only_the_retained_messages() {
        let mut rig = Rig::new(|config| config.history_limit(5));
        rig.fill("lobby", 12);
        let mut ann = rig.connect(1, Mode::Json, "", None);
        rig.join(&ann, "lobby", Some("ann"), Some(0));
        assert_eq!(replayed(&ann.received()), [8, 9, 10, 11, 12]);
        // Numbering goes on where it was, not from the oldest message kept.
        rig.say(&ann, None, "next");
        assert_eq!(ann.received()[0]["seq"], 13);
    }

    #[test]
    fn a_long_replay_comes_in_frames_of_a_hundred_messages() {
        let mut rig = Rig::with_defaults();
        rig.fill("lobby", 250);
        let mut ann = rig.connect(1, Mode::Json, "", None);
        rig.join(&ann, "lobby", Some("ann"), Some(0));
        let received = ann.received();
        let sizes: Vec<usize> = received
            .iter()
            .filter(|m| m["type"] == "history")
            .map(|m| m["messages"].as_array().unwrap().len())
            .collect();
        assert_eq!(sizes, [100, 100, 50]);
        assert_eq!(replayed(&received), (1..=250).collect::<Vec<_>>());
    }

    #[test]
    fn a_repeated_join_is_a_resume_not_a_second_member() {
        let mut rig = Rig::with_defaults();
        let mut ann = rig.joined(1, "ann", "lobby");
        let mut bob = rig.joined(2, "bob", "lobby");
        ann.received();
        rig.say(&bob, None, "one");
        rig.say(&bob, None, "two");
        ann.received();
        bob.received();
        rig.join(&ann, "lobby", None, Some(1));
        let received = ann.received();
        assert_eq!(received.len(), 1, "a replay and no presence: {received:?}");
        assert_eq!(replayed(&received), [2]);
        assert!(bob.received().is_empty(), "nobody is told of a resume");
        rig.run(Command::Rooms { id: bob.id });
        assert_eq!(bob.received()[0]["rooms"][0]["members"], 2);
    }

    #[test]
    fn members_learn_of_joins_and_leaves_as_deltas() {
        let mut rig = Rig::with_defaults();
        let mut ann = rig.joined(1, "ann", "lobby");
        let mut bob = rig.joined(2, "bob", "lobby");
        // The others get the name and the count, without the list.
        assert_eq!(
            ann.received(),
            [
                json!({"type": "presence", "room": "lobby", "event": "joined", "name": "bob",
                    "count": 2})
            ]
        );
        let _carl = rig.connect(3, Mode::Plain, "carl", Some("lobby"));
        assert_eq!(ann.received()[0]["count"], 3, "plain members count too");
        bob.received();
        rig.leave(&ann, "lobby");
        assert_eq!(
            bob.received(),
            [
                json!({"type": "presence", "room": "lobby", "event": "left", "name": "ann",
                    "count": 2})
            ]
        );
        assert!(ann.received().is_empty());
        // Gone from the room: nothing more reaches it from there, and it may not send there.
        rig.say(&bob, None, "still here?");
        assert!(ann.received().is_empty());
        rig.say(&ann, Some("lobby"), "back?");
        assert_eq!(ann.error_code(), "not_joined");
    }

    #[test]
    fn two_members_of_the_same_name_are_two_members() {
        let mut rig = Rig::with_defaults();
        let mut first = rig.joined(1, "ann", "lobby");
        let mut second = rig.connect(2, Mode::Json, "", None);
        rig.join(&second, "lobby", Some("ann"), None);
        let presence = second.received().pop().expect("own presence");
        assert_eq!(presence["members"], json!(["ann", "ann"]));
        assert_eq!(presence["count"], 2);
        assert_eq!(first.received()[0]["count"], 2);
        // One of them leaving leaves the other in the room.
        assert!(rig.disconnect(&second));
        let left = first.received();
        assert_eq!(left[0]["event"], "left");
        assert_eq!(left[0]["name"], "ann");
        assert_eq!(left[0]["count"], 1);
        rig.say(&first, None, "alone");
        assert_eq!(first.received()[0]["text"], "alone");
    }

    #[test]
    fn a_disconnect_leaves_every_room_and_says_when_it_is_done() {
        let mut rig = Rig::with_defaults();
        let mut ann = rig.joined(1, "ann", "a");
        rig.join(&ann, "b", None, None);
        let mut in_a = rig.joined(2, "bob", "a");
        let mut in_b = rig.joined(3, "carl", "b");
        ann.received();
        in_a.received();
        assert!(rig.disconnect(&ann));
        assert_eq!(in_a.received()[0]["event"], "left");
        assert_eq!(in_b.received()[0]["event"], "left");
        // A room left empty is forgotten, with its history kept.
        assert!(rig.disconnect(&in_a));
        assert!(!rig.state.rooms.contains_key("a"));
        // Commands of a connection that is gone do nothing.
        rig.say(&ann, Some("b"), "ghost");
        assert!(in_b.received().is_empty());
    }

    #[test]
    fn replies_to_commands_before_a_disconnect_are_queued_when_it_is_done() {
        let mut rig = Rig::with_defaults();
        let mut ann = rig.joined(1, "ann", "lobby");
        rig.say(&ann, None, "last words");
        rig.run(Command::Rooms { id: ann.id });
        assert!(rig.disconnect(&ann));
        let kinds: Vec<Value> = ann.received().iter().map(|m| m["type"].clone()).collect();
        assert_eq!(kinds, [json!("message"), json!("rooms")]);
    }

    #[test]
    fn the_room_list_has_members_and_last_numbers_in_name_order() {
        let mut rig = Rig::with_defaults();
        rig.fill("zeta", 2);
        let mut ann = rig.joined(1, "ann", "alpha");
        let _bob = rig.connect(2, Mode::Plain, "bob", Some("alpha"));
        ann.received();
        rig.run(Command::Rooms { id: ann.id });
        assert_eq!(
            ann.received(),
            [json!({"type": "rooms", "rooms": [
                {"name": "alpha", "members": 2, "last_seq": 0},
                {"name": "zeta", "members": 0, "last_seq": 2},
            ]})]
        );
    }

    #[test]
    fn a_connection_may_be_in_at_most_32_rooms() {
        let mut rig = Rig::with_defaults();
        let mut ann = rig.joined(1, "ann", "room0");
        for i in 1..MAX_ROOMS_PER_CONNECTION {
            rig.join(&ann, &format!("room{i}"), None, None);
        }
        ann.received();
        rig.join(&ann, "one-too-many", None, None);
        assert_eq!(ann.error_code(), "too_many_rooms");
        // A resume in a room it is in is still fine; after a leave, a new room is too.
        rig.join(&ann, "room5", None, None);
        assert_eq!(ann.received()[0]["type"], "history");
        rig.leave(&ann, "room5");
        rig.join(&ann, "one-too-many", None, None);
        assert_eq!(ann.received().last().unwrap()["event"], "joined");
    }

    #[test]
    fn a_recipient_whose_queue_is_full_is_disconnected_with_4000_and_gets_no_gap() {
        let mut rig = Rig::new(|config| config.send_queue(4));
        let mut slow = rig.joined(1, "slow", "lobby");
        let mut fast = rig.joined(2, "fast", "lobby");
        slow.received();
        fast.received();
        // The fast one reads as it goes; the slow one never does.
        let mut to_fast = Vec::new();
        for i in 1..=6 {
            rig.say(&fast, None, &format!("m{i}"));
            to_fast.extend(fast.received());
        }
        assert!(
            to_fast
                .iter()
                .any(|m| m["event"] == "left" && m["name"] == "slow"),
            "the others are told: {to_fast:?}"
        );
        let kick = slow.kick.try_recv().expect("a kick");
        assert_eq!(kick.code, CloseCode(CLOSE_TOO_SLOW));
        // It got a run without holes, from which it can resume, and nothing after.
        let seqs: Vec<u64> = slow
            .received()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
        rig.say(&fast, None, "later");
        assert!(slow.received().is_empty());
        assert_eq!(rig.state.metrics.slow_disconnects.load(Relaxed), 1);
    }

    // ---- The backend API. ----

    #[test]
    fn an_api_message_is_numbered_stored_and_delivered_like_a_members() {
        let mut rig = Rig::with_defaults();
        let mut ann = rig.joined(1, "ann", "lobby");
        let mut bob = rig.connect(2, Mode::Plain, "bob", Some("lobby"));
        ann.received();
        rig.say(&ann, None, "first");
        ann.received();
        bob.texts();
        let (reply, mut seq) = oneshot::channel();
        rig.state.handle(Command::ApiPublish {
            room: "lobby".into(),
            from: "backend".into(),
            text: "deploy done".into(),
            reply,
        });
        // Not before the commit.
        assert!(seq.try_recv().is_err());
        rig.state.flush();
        assert_eq!(seq.try_recv().unwrap(), Ok(2));
        let to_ann = ann.received();
        assert_eq!(to_ann[0]["seq"], 2);
        assert_eq!(to_ann[0]["from"], "backend");
        assert_eq!(bob.texts(), ["backend: deploy done"]);
    }

    #[test]
    fn an_api_message_to_an_empty_room_is_kept_for_its_next_joiner() {
        let mut rig = Rig::with_defaults();
        rig.fill("news", 2);
        for text in ["a", "b"] {
            let (reply, mut seq) = oneshot::channel();
            rig.run(Command::ApiPublish {
                room: "news".into(),
                from: "feed".into(),
                text: text.into(),
                reply,
            });
            assert!(seq.try_recv().unwrap().is_ok());
        }
        assert!(
            !rig.state.rooms.contains_key("news"),
            "not loaded for nobody"
        );
        let mut ann = rig.connect(1, Mode::Json, "", None);
        rig.join(&ann, "news", Some("ann"), Some(0));
        assert_eq!(replayed(&ann.received()), [1, 2, 3, 4]);
        let (reply, mut bad) = oneshot::channel();
        rig.run(Command::ApiPublish {
            room: "no spaces".into(),
            from: "feed".into(),
            text: "x".into(),
            reply,
        });
        assert!(bad.try_recv().unwrap().is_err());
    }

    #[test]
    fn the_api_reads_history_presence_and_rooms() {
        let mut rig = Rig::with_defaults();
        rig.fill("lobby", 5);
        let _ann = rig.joined(1, "ann", "lobby");
        let _bob = rig.connect(2, Mode::Plain, "bob", Some("lobby"));
        let (reply, mut history) = oneshot::channel();
        rig.run(Command::ApiHistory {
            room: "lobby".into(),
            since: Some(2),
            limit: 2,
            reply,
        });
        let seqs: Vec<u64> = history
            .try_recv()
            .unwrap()
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(seqs, [3, 4]);
        let (reply, mut presence) = oneshot::channel();
        rig.run(Command::ApiPresence {
            room: "lobby".into(),
            reply,
        });
        assert_eq!(presence.try_recv().unwrap(), ["ann", "bob"]);
        let (reply, mut rooms) = oneshot::channel();
        rig.run(Command::ApiRooms { reply });
        let rooms = rooms.try_recv().unwrap();
        assert_eq!(rooms.len(), 1);
        assert_eq!((rooms[0].members, rooms[0].last_seq), (2, 5));
    }
}
