//! The broker: one thread that owns every room and every member of this node, and the history
//! store (SQLite) or the link to the rooms shared through Redis.
//!
//! Connections talk to it through a bounded channel of [`Command`]s and get their outgoing
//! frames through their own bounded queue. Doing all room work on one thread gives the
//! guarantees the protocol promises without any lock:
//! - sequence numbers are assigned in one place (here, or in Redis by one script), so they
//!   have no gaps or duplicates;
//! - a message is stored before anyone is offered it;
//! - a joining member's history replay and its live messages never overlap or leave a gap:
//!   on one node nothing is delivered between reading the history and adding the member; with
//!   Redis, what arrives while the join is on its way is held for the joiner, and each member
//!   keeps the last number its replay had, below which it is offered nothing.
//!
//! On one node, consecutive `Send`s that are already waiting are stored in one transaction
//! and delivered after its commit, so the storage cost per message falls as load rises. With
//! Redis they go out as one pipeline instead ([`crate::cluster`]), and come back, numbered,
//! on the room's channel, which is where every node delivers from, this one included.
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

use crate::close::{CLOSE_TOO_SLOW, CLOSE_TRY_AGAIN};
use crate::cluster::{self, ClusterEvent, JoinReply, Link, Reading, Refused, ReplyTo};
use crate::config::HubConfig;
use crate::error::{HubError, Result};
use crate::feed::{resume_after, Replay, RoomEvent, Snapshot};
use crate::listing::{self, Cursor, Page, PageBuilder};
use crate::metrics::Metrics;
use crate::outbox::{OutboxSender, Refused as QueueRefused};
use crate::protocol::{
    clean_name, valid_room, ChatMessage, PresenceEvent, RoomInfo, ServerMessage, ROOMS_PER_PAGE,
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
/// Events of a room held for members whose join is on its way to Redis, at most; past this,
/// those joins fail with `busy` (Redis is far behind) rather than hold more.
const MAX_HELD_FOR_JOINERS: usize = 4096;

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
    /// The token's subject: connections of one subject are one member in presence.
    pub(crate) subject: Option<String>,
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
        /// The epoch the client saw `since` in.
        epoch: Option<String>,
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
    /// Send the connection a page of the room list.
    Rooms { id: ConnId, cursor: Cursor },
    /// The connection closed. `done` fires once the broker has handled it, and so every
    /// command the connection sent before it: their replies are in its outbox by then.
    Disconnect {
        id: ConnId,
        done: oneshot::Sender<()>,
    },
    /// What Redis answered or sent (multi-node hubs only).
    Cluster(ClusterEvent),
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
    /// A page of the room list, as `{"type":"rooms"}` lists it; the reply is dropped when
    /// the list cannot be read.
    ApiRooms {
        cursor: Cursor,
        reply: oneshot::Sender<Page>,
    },
}

impl From<ClusterEvent> for Command {
    fn from(event: ClusterEvent) -> Command {
        Command::Cluster(event)
    }
}

/// The connections' side of the broker.
#[derive(Debug, Clone)]
pub(crate) struct Broker {
    tx: mpsc::Sender<Command>,
}

/// The broker thread, and with Redis, the health of the link and the task that ends once the
/// thread is gone and what it asked of Redis is done.
#[derive(Debug)]
pub(crate) struct Started {
    pub(crate) broker: Broker,
    pub(crate) thread: JoinHandle<Result<()>>,
    pub(crate) redis: Option<(cluster::Health, tokio::task::JoinHandle<()>)>,
}

impl Broker {
    /// Starts the broker thread with `store`, or with rooms shared through Redis when the
    /// configuration says so (from within a tokio runtime, which runs the Redis side). The
    /// thread ends, closing the store, once every [`Broker`] clone is dropped and the commands
    /// before that are handled.
    pub(crate) fn start(
        store: Option<Store>,
        config: &HubConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Started> {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let (backend, redis) = match (&config.redis, store) {
            (Some(redis), _) => {
                let settings = cluster::Settings {
                    history_limit: config.history_limit,
                    presence_ttl: redis.presence_ttl,
                    metrics: metrics.clone(),
                };
                let running = cluster::start(redis, settings, tx.clone())?;
                (
                    Backend::Shared(running.link),
                    Some((running.health, running.engine)),
                )
            }
            (None, Some(store)) => (Backend::Local(store), None),
            (None, None) => return Err(HubError::BrokerGone),
        };
        let state = State::new(backend, config, metrics);
        let thread = std::thread::Builder::new()
            .name("duplex-broker".into())
            .spawn(move || state.run(rx))?;
        Ok(Started {
            broker: Broker { tx },
            thread,
            redis,
        })
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

/// Where the rooms' history and numbering live.
#[derive(Debug)]
enum Backend {
    /// This node alone, with SQLite.
    Local(Store),
    /// Shared with other nodes through Redis.
    Shared(Link),
}

/// A member of a room, and what it has already had from the room's history: messages up to
/// `after_seq` and presence events up to `after_pseq` came with its join, so it is not offered
/// them again when they arrive live.
#[derive(Debug, Clone, Copy)]
struct Seat {
    id: ConnId,
    after_seq: u64,
    after_pseq: u64,
}

/// A join on its way to Redis.
#[derive(Debug)]
struct Joining {
    id: ConnId,
    /// Tells this join's answer from an earlier one of the same connection and room.
    ticket: u64,
    replay: Replay,
    client_epoch: Option<String>,
    register: bool,
}

#[derive(Debug, Default)]
struct Room {
    last_seq: u64,
    /// Presence events so far (on one node; with Redis the count is kept there).
    pseq: u64,
    /// In order of arrival, which is the order of the presence member list.
    members: Vec<Seat>,
    /// How many of `members` are JSON clients (the only ones told about presence): a join to
    /// a room of plain clients then costs no look at every member, which for a room of N
    /// would make N joins cost N squared.
    json_members: usize,
    /// Connections per token subject among `members` (on one node; with Redis, there):
    /// presence counts a subject once, however many connections it has in the room.
    subjects: HashMap<String, usize>,
    /// Members without a subject, each a member of its own.
    anonymous: usize,
    joining: Vec<Joining>,
    /// What arrived while `joining` was not empty, for the joiners.
    held: Vec<RoomEvent>,
}

impl Room {
    fn is_empty(&self) -> bool {
        self.members.is_empty() && self.joining.is_empty()
    }

    /// Members as presence counts them.
    fn present(&self) -> usize {
        self.anonymous + self.subjects.len()
    }

    /// Counts a member in; true if it is new to presence (not another connection of a subject
    /// already here).
    fn arrive(&mut self, subject: Option<&str>) -> bool {
        match subject {
            None => {
                self.anonymous += 1;
                true
            }
            Some(sub) => {
                let n = self.subjects.entry(sub.to_owned()).or_insert(0);
                *n += 1;
                *n == 1
            }
        }
    }

    /// Counts a member out; true if it is gone from presence.
    fn depart(&mut self, subject: Option<&str>) -> bool {
        match subject {
            None => {
                self.anonymous = self.anonymous.saturating_sub(1);
                true
            }
            Some(sub) => match self.subjects.get_mut(sub) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    self.subjects.remove(sub);
                    true
                }
                None => false,
            },
        }
    }
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
    /// Rooms joined, or being joined through Redis.
    rooms: Vec<String>,
    subject: Option<String>,
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

/// The two forms of one event, each encoded once for all its recipients.
struct Frames {
    json: Option<PreparedMessage>,
    plain: Option<PreparedMessage>,
}

/// The sender of a backend's message: no connection has id 0 (ids count from 1), so no
/// member is skipped as its sender and no error goes to a connection.
const API_SENDER: ConnId = 0;

#[derive(Debug)]
struct State {
    backend: Backend,
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
    next_ticket: u64,
}

impl State {
    fn new(backend: Backend, config: &HubConfig, metrics: Arc<Metrics>) -> State {
        State {
            backend,
            history_limit: config.history_limit,
            history_on_join: config.history_on_join,
            batch: (config.send_queue / 4).clamp(1, MAX_BATCH),
            metrics,
            rooms: HashMap::new(),
            conns: ConnMap::default(),
            pending: Vec::new(),
            to_kick: Vec::new(),
            next_ticket: 0,
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
        match self.backend {
            Backend::Local(store) => {
                debug!("broker stopping; closing the history store");
                store.close()
            }
            // Dropping the link lets the Redis side finish what is queued and end.
            Backend::Shared(_) => Ok(()),
        }
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
                epoch,
            } => {
                let replay = match since {
                    Some(since) => Replay::After(since),
                    None => Replay::Recent(self.history_on_join),
                };
                self.join(id, room, name, replay, epoch);
            }
            Command::Leave { id, room } => {
                if let Some(conn) = self.conns.get_mut(&id) {
                    if let Some(i) = conn.rooms.iter().position(|r| *r == room) {
                        conn.rooms.remove(i);
                        let (name, mode, subject) =
                            (conn.name.clone(), conn.mode, conn.subject.clone());
                        self.remove_member(&room, id, (&name, mode, subject.as_deref()));
                    }
                }
            }
            Command::Rooms { id, cursor } => self.list_rooms(id, cursor),
            Command::Disconnect { id, done } => {
                if let Some(conn) = self.conns.remove(&id) {
                    for room in &conn.rooms {
                        self.remove_member(
                            room,
                            id,
                            (&conn.name, conn.mode, conn.subject.as_deref()),
                        );
                    }
                }
                self.settle();
                let _ = done.send(());
                return;
            }
            Command::Cluster(event) => self.cluster_event(event),
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
            Command::ApiRooms { cursor, reply } => self.api_rooms(cursor, reply),
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
                subject: reg.subject,
            },
        );
        if let Some(room) = reg.room {
            // Plain clients cannot resume, so they get no replay: only what is said from now.
            self.join(reg.id, room, None, Replay::None, None);
        }
    }

    /// Adds `id` to `room`, replaying its history as `replay` asks.
    fn join(
        &mut self,
        id: ConnId,
        room: String,
        name: Option<String>,
        replay: Replay,
        client_epoch: Option<String>,
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
        if let Backend::Shared(link) = &self.backend {
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            let request = cluster::Join {
                id,
                ticket,
                room: room.clone(),
                name: conn.name.clone(),
                subject: conn.subject.clone(),
                replay,
                client_epoch: client_epoch.clone(),
                register: !already,
            };
            if let Err(refused) = link.join(request) {
                return self.refuse(id, refused);
            }
            if !already {
                conn.rooms.push(room.clone());
            }
            self.rooms.entry(room).or_default().joining.push(Joining {
                id,
                ticket,
                replay,
                client_epoch,
                register: !already,
            });
            return;
        }
        let snapshot = match self.local_snapshot(&room, replay, client_epoch.as_deref()) {
            Ok(snapshot) => snapshot,
            Err(e) => {
                error!(%room, "cannot read the room's history: {e}");
                return self.error(id, "storage", "the room's history cannot be read");
            }
        };
        self.replay(id, &room, &snapshot, replay, client_epoch.as_deref());
        if already {
            // A repeated join is a resume request: the replay above is all it needs.
            return;
        }
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.rooms.push(room.clone());
        }
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        let (name, json) = (conn.name.clone(), conn.mode == Mode::Json);
        let Some(r) = self.rooms.get_mut(&room) else {
            return;
        };
        r.members.push(Seat {
            id,
            after_seq: 0,
            after_pseq: 0,
        });
        r.json_members += usize::from(json);
        let new = r.arrive(conn.subject.as_deref());
        if new {
            r.pseq += 1;
        }
        let (count, pseq) = (r.present(), r.pseq);
        self.metrics.rooms.store(self.rooms.len() as i64, Relaxed);
        if json {
            let members = self.member_names(&room);
            self.tell_joiner(id, &room, name.clone(), count, members);
        }
        if !new {
            // Another connection of someone already here: nobody is told.
            return;
        }
        let joined = RoomEvent::Presence {
            event: PresenceEvent::Joined,
            name,
            count,
            subject: Some(id),
            pseq,
        };
        self.deliver(&room, &joined);
    }

    /// Reads `room`'s history from the local store for a join (making the room known first).
    fn local_snapshot(
        &mut self,
        room: &str,
        replay: Replay,
        client_epoch: Option<&str>,
    ) -> Result<Snapshot> {
        let Backend::Local(store) = &self.backend else {
            return Ok(Snapshot::default());
        };
        if !self.rooms.contains_key(room) {
            let last_seq = store.last_seq(room)?;
            self.rooms.insert(
                room.to_owned(),
                Room {
                    last_seq,
                    ..Room::default()
                },
            );
        }
        let last_seq = self.rooms.get(room).map_or(0, |r| r.last_seq);
        let epoch = store.epoch();
        let messages = match replay {
            Replay::None => Vec::new(),
            Replay::Recent(n) => store.recent(room, n)?,
            Replay::After(since) => {
                let after = resume_after(since, client_epoch, epoch, last_seq);
                store.since(room, after, self.history_limit)?
            }
        };
        Ok(Snapshot {
            epoch: epoch.to_owned(),
            last_seq,
            first_seq: store.first_seq(room)?.unwrap_or(last_seq + 1),
            messages,
        })
    }

    /// The names of `room`'s members, in order of arrival (a subject once, where its first
    /// connection arrived).
    fn member_names(&self, room: &str) -> Vec<String> {
        let Some(r) = self.rooms.get(room) else {
            return Vec::new();
        };
        let mut listed = std::collections::HashSet::new();
        r.members
            .iter()
            .filter_map(|s| self.conns.get(&s.id))
            .filter(|c| c.subject.as_ref().is_none_or(|sub| listed.insert(sub)))
            .map(|c| c.name.clone())
            .collect()
    }

    /// A JSON joiner's own `joined`, with the whole member list.
    fn tell_joiner(
        &mut self,
        id: ConnId,
        room: &str,
        name: String,
        count: usize,
        members: Vec<String>,
    ) {
        let whole = ServerMessage::Presence {
            room: room.to_owned(),
            event: PresenceEvent::Joined,
            name,
            count,
            members: Some(members),
        };
        self.offer(id, PreparedMessage::text(whole.to_json()));
    }

    /// Sends stored messages to `id` as one or more `history` frames (always at least one, so
    /// that the client knows the replay is complete); the first says whether there is a gap.
    fn replay(
        &mut self,
        id: ConnId,
        room: &str,
        snapshot: &Snapshot,
        replay: Replay,
        client_epoch: Option<&str>,
    ) {
        let gap = match replay {
            Replay::None => return,
            Replay::Recent(_) => false,
            Replay::After(since) => snapshot.gap(since, client_epoch),
        };
        let mut chunks: Vec<&[ChatMessage]> = snapshot.messages.chunks(HISTORY_CHUNK).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        for (i, messages) in chunks.into_iter().enumerate() {
            let lead = gap && i == 0;
            let frame = PreparedMessage::text(
                ServerMessage::History {
                    room: room.to_owned(),
                    messages: messages.to_vec(),
                    epoch: snapshot.epoch.clone(),
                    gap: lead,
                    first_seq: lead.then_some(snapshot.first_seq),
                }
                .to_json(),
            );
            self.offer(id, frame);
        }
    }

    /// Assigns the next sequence number and stores the message; it is delivered when the
    /// batch commits (or, with Redis, when it comes back on the room's channel).
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
        let store = match &mut self.backend {
            Backend::Local(store) => store,
            Backend::Shared(link) => {
                let publish = cluster::Publish {
                    id,
                    room,
                    from: conn.name.clone(),
                    text,
                    plain: conn.mode == Mode::Plain,
                    stored: None,
                };
                if let Err(refused) = link.publish(publish) {
                    self.refuse(id, refused);
                }
                return;
            }
        };
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
        match store.append(&msg) {
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
        let Backend::Local(store) = &mut self.backend else {
            return;
        };
        let pending = std::mem::take(&mut self.pending);
        if let Err(e) = store.commit() {
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
        for mut p in pending {
            if let Some(reply) = p.reply.take() {
                let _ = reply.send(Ok(p.msg.seq));
            }
            let room = p.msg.room.clone();
            let message = RoomEvent::Message {
                msg: p.msg,
                sender: Some(p.sender),
                plain_sender: p.sender_mode == Mode::Plain,
            };
            self.deliver(&room, &message);
            self.metrics.fanout(p.at.elapsed());
        }
        self.settle();
    }

    /// Offers `event` to every member of `room` that has not had it yet, in its form.
    fn deliver(&mut self, room: &str, event: &RoomEvent) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let Some(frames) = frames(room, event, r.json_members > 0) else {
            return;
        };
        for seat in &r.members {
            let Some(conn) = self.conns.get(&seat.id) else {
                continue;
            };
            if let Some(frame) = frame_for(event, &frames, seat, conn.mode) {
                offer_to(seat.id, conn, frame.clone(), &mut self.to_kick);
            }
        }
    }

    /// Removes `id` (called `name`, with token subject `subject`) from `room`'s members,
    /// tells the others, and forgets a room left empty. The connection's own room list is the
    /// caller's business.
    fn remove_member(
        &mut self,
        room: &str,
        id: ConnId,
        (name, mode, subject): (&str, Mode, Option<&str>),
    ) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let before = r.members.len();
        r.members.retain(|s| s.id != id);
        r.joining.retain(|j| j.id != id);
        let removed = r.members.len() < before;
        if mode == Mode::Json && removed {
            r.json_members -= 1;
        }
        let gone = removed && r.depart(subject);
        let empty = r.is_empty();
        let count = r.present();
        if let Backend::Shared(link) = &self.backend {
            // Redis announces the departure to every node, this one included.
            link.leave(id, room.to_owned());
            if empty {
                link.unsubscribe(room.to_owned());
            }
        } else if gone && !empty {
            r.pseq += 1;
            let left = RoomEvent::Presence {
                event: PresenceEvent::Left,
                name: name.to_owned(),
                count,
                subject: Some(id),
                pseq: r.pseq,
            };
            self.deliver(room, &left);
        }
        if empty {
            self.rooms.remove(room);
            self.metrics.rooms.store(self.rooms.len() as i64, Relaxed);
        }
    }

    fn list_rooms(&mut self, id: ConnId, cursor: Cursor) {
        if let Backend::Shared(link) = &self.backend {
            if let Err(refused) = link.rooms(cursor, ReplyTo::Conn(id)) {
                self.refuse(id, refused);
            }
            return;
        }
        match self.local_page(cursor) {
            Ok(page) => self.send_rooms(id, page),
            Err(e) => {
                error!("cannot list rooms: {e}");
                self.error(id, "storage", "the room list cannot be read");
            }
        }
    }

    /// One page of the room list on this node alone ([`crate::listing`]): the rooms with
    /// members from memory (a copy of their names per page, bounded by the connections),
    /// then the stored rooms by name, read a bounded page at a time.
    fn local_page(&self, cursor: Cursor) -> Result<Page> {
        let mut page = PageBuilder::default();
        let mut after = match cursor {
            Cursor::Idle(name) => name,
            Cursor::Active(position) => {
                let mut active: Vec<RoomInfo> = self
                    .rooms
                    .iter()
                    .filter(|(_, r)| !r.members.is_empty())
                    .map(|(name, r)| RoomInfo {
                        name: name.clone(),
                        members: r.members.len(),
                        last_seq: r.last_seq,
                    })
                    .collect();
                listing::by_activity(&mut active);
                let wanted = page.wanted();
                for (i, room) in active.into_iter().enumerate().skip(position).take(wanted) {
                    page.push(room, Cursor::Active(i + 1));
                }
                if page.full() {
                    return Ok(page.finish(false));
                }
                // Every room with members is listed: on to the others, from the first name.
                String::new()
            }
        };
        let Backend::Local(store) = &self.backend else {
            return Ok(page.finish(true));
        };
        // Each round lists or skips (a room with members, listed before) a page's worth of
        // stored rooms, so it ends within (rooms with members / a page) + 1 rounds.
        let chunk = ROOMS_PER_PAGE + 1;
        loop {
            let stored = store.rooms_after(&after, chunk)?;
            let exhausted = stored.len() < chunk;
            for (name, last_seq) in stored {
                after.clone_from(&name);
                if self.rooms.get(&name).is_some_and(|r| !r.members.is_empty()) {
                    page.skip(Cursor::Idle(name));
                    continue;
                }
                let room = RoomInfo {
                    name: name.clone(),
                    members: 0,
                    last_seq,
                };
                page.push(room, Cursor::Idle(name));
                if page.full() {
                    return Ok(page.finish(false));
                }
            }
            if exhausted {
                return Ok(page.finish(true));
            }
        }
    }

    fn send_rooms(&mut self, id: ConnId, page: Page) {
        let reply = ServerMessage::Rooms {
            rooms: page.rooms,
            next: page.next.as_ref().map(Cursor::encode),
        };
        self.offer(id, PreparedMessage::text(reply.to_json()));
    }

    /// What Redis answered or sent.
    fn cluster_event(&mut self, event: ClusterEvent) {
        match event {
            ClusterEvent::PublishFailed { id, room } => {
                debug!(conn = id, %room, "a message was not stored");
                self.refuse(id, Refused::Unavailable);
            }
            ClusterEvent::Joined {
                id,
                ticket,
                room,
                reply,
            } => self.joined(id, ticket, &room, reply),
            ClusterEvent::Rooms { id, page } => match page {
                Some(page) => self.send_rooms(id, page),
                None => self.refuse(id, Refused::Unavailable),
            },
            ClusterEvent::Live { room, event } => {
                let Some(r) = self.rooms.get_mut(&room) else {
                    return;
                };
                if let RoomEvent::Message { msg, .. } = &event {
                    r.last_seq = r.last_seq.max(msg.seq);
                }
                if !r.joining.is_empty() {
                    if r.held.len() >= MAX_HELD_FOR_JOINERS {
                        self.fail_joins(&room);
                    } else {
                        r.held.push(event.clone());
                    }
                }
                self.deliver(&room, &event);
            }
            ClusterEvent::Reset { room, epoch } => self.reset(&room, epoch),
        }
    }

    /// A join through Redis is done: replay, the member list, what arrived meanwhile, then the
    /// joiner is a member like the others.
    fn joined(&mut self, id: ConnId, ticket: u64, room: &str, reply: Option<JoinReply>) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let Some(i) = r
            .joining
            .iter()
            .position(|j| j.id == id && j.ticket == ticket)
        else {
            // Left or disconnected meanwhile; its leave followed the join to Redis.
            return;
        };
        let joining = r.joining.remove(i);
        let held = if r.joining.is_empty() {
            std::mem::take(&mut r.held)
        } else {
            r.held.clone()
        };
        let Some(reply) = reply else {
            if joining.register {
                if let Some(conn) = self.conns.get_mut(&id) {
                    conn.rooms.retain(|r| r != room);
                }
                self.forget_if_empty(room);
            }
            return self.refuse(id, Refused::Unavailable);
        };
        let client_epoch = joining.client_epoch.as_deref();
        self.replay(id, room, &reply.snapshot, joining.replay, client_epoch);
        if !joining.register {
            return;
        }
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        let (name, mode) = (conn.name.clone(), conn.mode);
        if mode == Mode::Json {
            self.tell_joiner(id, room, name, reply.count, reply.members);
        }
        let seat = Seat {
            id,
            after_seq: reply.snapshot.last_seq,
            after_pseq: reply.pseq,
        };
        for event in &held {
            let Some(frames) = frames(room, event, mode == Mode::Json) else {
                continue;
            };
            if let (Some(frame), Some(conn)) =
                (frame_for(event, &frames, &seat, mode), self.conns.get(&id))
            {
                offer_to(id, conn, frame.clone(), &mut self.to_kick);
            }
        }
        if let Some(r) = self.rooms.get_mut(room) {
            r.members.push(seat);
            r.json_members += usize::from(mode == Mode::Json);
            self.metrics.rooms.store(self.rooms.len() as i64, Relaxed);
        }
    }

    /// Redis has fallen so far behind that the events held for `room`'s joiners pass the
    /// bound: their joins fail (they may try again) instead of holding more.
    fn fail_joins(&mut self, room: &str) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        r.held.clear();
        let joiners = std::mem::take(&mut r.joining);
        for j in joiners {
            if j.register {
                if let Some(conn) = self.conns.get_mut(&j.id) {
                    conn.rooms.retain(|r| r != room);
                }
                if let Backend::Shared(link) = &self.backend {
                    link.leave(j.id, room.to_owned());
                }
            }
            self.refuse(j.id, Refused::Busy);
        }
        self.forget_if_empty(room);
    }

    fn forget_if_empty(&mut self, room: &str) {
        if self.rooms.get(room).is_some_and(Room::is_empty) {
            self.rooms.remove(room);
            if let Backend::Shared(link) = &self.backend {
                link.unsubscribe(room.to_owned());
            }
        }
    }

    /// `room`'s history was lost and numbering starts over: its JSON members are told with a
    /// `history` frame that has a gap, and the new epoch to resume with.
    fn reset(&mut self, room: &str, epoch: String) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        warn!(%room, %epoch, "the room's history was lost; numbering starts over");
        r.last_seq = 0;
        for seat in &mut r.members {
            seat.after_seq = 0;
        }
        let frame = PreparedMessage::text(
            ServerMessage::History {
                room: room.to_owned(),
                messages: Vec::new(),
                epoch,
                gap: true,
                first_seq: Some(1),
            }
            .to_json(),
        );
        for seat in &r.members {
            if let Some(conn) = self.conns.get(&seat.id) {
                if conn.mode == Mode::Json {
                    offer_to(seat.id, conn, frame.clone(), &mut self.to_kick);
                }
            }
        }
    }

    /// Tells `id` that Redis did not take its request: JSON clients get an error and may try
    /// again; plain-text clients, which cannot be told, are closed with 1013.
    fn refuse(&mut self, id: ConnId, refused: Refused) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        match conn.mode {
            Mode::Json => match refused {
                Refused::Unavailable => self.error(
                    id,
                    "unavailable",
                    "the chat's shared store is unreachable; try again shortly",
                ),
                Refused::Busy => self.error(id, "busy", "too many requests waiting; try again"),
            },
            Mode::Plain => {
                if let Some(kick) = conn.kick.take() {
                    let _ = kick.send(CloseFrame::new(
                        CloseCode(CLOSE_TRY_AGAIN),
                        "the chat's store is unreachable; try again later",
                    ));
                }
            }
        }
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
                self.remove_member(room, id, (&conn.name, conn.mode, conn.subject.as_deref()));
            }
        }
    }

    // ---- The backend API: the same numbering, store, commit and delivery as a member's. ----

    /// Numbers and stores a backend's message; `flush` delivers it and replies with its seq.
    /// A room nobody is in is not loaded: its number comes from the store (which sees the
    /// batch's own uncommitted messages), and there is nobody to deliver to. With Redis, the
    /// reply comes once Redis stored it, and delivery from the room's channel as for any
    /// message.
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
        let store = match &mut self.backend {
            Backend::Local(store) => store,
            Backend::Shared(link) => {
                // Refused: the reply is dropped, which the API answers with 503.
                let _ = link.publish(cluster::Publish {
                    id: API_SENDER,
                    room,
                    from,
                    text,
                    plain: false,
                    stored: Some(reply),
                });
                return;
            }
        };
        let last_seq = match self.rooms.get(&room) {
            Some(r) => r.last_seq,
            None => match store.last_seq(&room) {
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
        if let Err(e) = store.append(&msg) {
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
        let store = match &self.backend {
            Backend::Local(store) => store,
            Backend::Shared(link) => {
                let replay = since.map_or(Replay::Recent(limit), Replay::After);
                let _ = link.read(cluster::Read {
                    room: room.to_owned(),
                    what: Reading::History {
                        replay,
                        limit,
                        reply,
                    },
                });
                return;
            }
        };
        let stored = match since {
            Some(after) => store.since(room, after, limit),
            None => store.recent(room, limit),
        };
        let _ = reply.send(stored.map_err(|e| {
            error!(%room, "cannot read the room's history: {e}");
            "storage".to_owned()
        }));
    }

    fn api_presence(&mut self, room: &str, reply: oneshot::Sender<Vec<String>>) {
        if let Backend::Shared(link) = &self.backend {
            let _ = link.read(cluster::Read {
                room: room.to_owned(),
                what: Reading::Presence { reply },
            });
            return;
        }
        let _ = reply.send(self.member_names(room));
    }

    fn api_rooms(&mut self, cursor: Cursor, reply: oneshot::Sender<Page>) {
        if let Backend::Shared(link) = &self.backend {
            // Refused: the reply is dropped, which the API answers with 503.
            let _ = link.rooms(cursor, ReplyTo::Api(reply));
            return;
        }
        match self.local_page(cursor) {
            Ok(page) => {
                let _ = reply.send(page);
            }
            Err(e) => error!("cannot list rooms: {e}"),
        }
    }
}

/// Encodes `event` for `room`'s members: both forms of a message, the JSON form of a presence
/// event (`None` when no member would get it: presence goes to JSON members only).
fn frames(room: &str, event: &RoomEvent, any_json: bool) -> Option<Frames> {
    match event {
        RoomEvent::Message {
            msg, plain_sender, ..
        } => {
            // Plain clients get the text as the sender typed it when it comes from another
            // plain client (the seeds' clients put "name: " in front themselves), and
            // "name: text" when it comes from a JSON client, which sends the name separately.
            let plain = PreparedMessage::text(if *plain_sender {
                msg.text.clone()
            } else {
                format!("{}: {}", msg.from, msg.text)
            });
            let json = any_json
                .then(|| PreparedMessage::text(ServerMessage::Message(msg.clone()).to_json()));
            Some(Frames {
                json,
                plain: Some(plain),
            })
        }
        RoomEvent::Presence {
            event, name, count, ..
        } => any_json.then(|| Frames {
            json: Some(PreparedMessage::text(
                ServerMessage::Presence {
                    room: room.to_owned(),
                    event: *event,
                    name: name.clone(),
                    count: *count,
                    members: None,
                }
                .to_json(),
            )),
            plain: None,
        }),
    }
}

/// The frame of `event` that the member in `seat`, speaking `mode`, gets, if any: none for
/// what its join already gave it, its own plain-text message, or news of its own join.
fn frame_for<'a>(
    event: &RoomEvent,
    frames: &'a Frames,
    seat: &Seat,
    mode: Mode,
) -> Option<&'a PreparedMessage> {
    match event {
        RoomEvent::Message { msg, sender, .. } => {
            if msg.seq <= seat.after_seq {
                return None;
            }
            match mode {
                Mode::Json => frames.json.as_ref(),
                Mode::Plain if *sender == Some(seat.id) => None,
                Mode::Plain => frames.plain.as_ref(),
            }
        }
        RoomEvent::Presence { subject, pseq, .. } => {
            if *subject == Some(seat.id) || *pseq <= seat.after_pseq || mode != Mode::Json {
                return None;
            }
            frames.json.as_ref()
        }
    }
}

/// Puts a frame in connection `id`'s queue. A full queue puts the connection on `to_kick`,
/// and a connection on `to_kick` gets nothing more. A closed queue means the connection is
/// already going away (its `Disconnect` is on the way): nothing to do.
fn offer_to(id: ConnId, conn: &Conn, frame: PreparedMessage, to_kick: &mut Vec<ConnId>) {
    if to_kick.contains(&id) {
        return;
    }
    if let Err(QueueRefused::Full) = conn.queue.try_send(frame) {
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
                state: State::new(Backend::Local(store), &config, Arc::new(Metrics::default())),
                send_queue: config.send_queue,
                _dir: dir,
            }
        }

        fn with_defaults() -> Rig {
            Rig::new(|config| config)
        }

        fn store(&self) -> &Store {
            match &self.state.backend {
                Backend::Local(store) => store,
                Backend::Shared(_) => panic!("the rig runs on SQLite"),
            }
        }

        fn run(&mut self, command: Command) {
            self.state.handle(command);
            self.state.flush();
        }

        /// Registers connection `id`; a plain one joins `room` at once.
        fn connect(&mut self, id: ConnId, mode: Mode, name: &str, room: Option<&str>) -> Client {
            self.connect_as(id, mode, name, room, None)
        }

        /// Registers connection `id` with a token's `subject`.
        fn connect_as(
            &mut self,
            id: ConnId,
            mode: Mode,
            name: &str,
            room: Option<&str>,
            subject: Option<&str>,
        ) -> Client {
            let (queue, outbox) = outbox(self.send_queue);
            let (kick, kicked) = oneshot::channel();
            self.run(Command::Connect(Registration {
                id,
                name: name.to_owned(),
                mode,
                queue,
                kick,
                room: room.map(str::to_owned),
                subject: subject.map(str::to_owned),
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
                epoch: None,
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
        let epoch = rig.store().epoch().to_owned();
        // Always a history frame, empty or not: the client knows the replay is complete.
        assert_eq!(
            received,
            [
                json!({"type": "history", "room": "lobby", "messages": [], "epoch": epoch}),
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
        rig.run(Command::Rooms {
            id: bob.id,
            cursor: Cursor::Active(0),
        });
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
        rig.run(Command::Rooms {
            id: ann.id,
            cursor: Cursor::Active(0),
        });
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
        rig.run(Command::Rooms {
            id: ann.id,
            cursor: Cursor::Active(0),
        });
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

    #[test]
    fn a_resume_older_than_the_history_held_says_there_is_a_gap() {
        let mut rig = Rig::new(|config| config.history_limit(5));
        rig.fill("lobby", 12);
        let mut ann = rig.connect(1, Mode::Json, "", None);
        rig.join(&ann, "lobby", Some("ann"), Some(3));
        let received = ann.received();
        assert_eq!(received[0]["gap"], true, "{received:?}");
        assert_eq!(received[0]["first_seq"], 8);
        assert_eq!(replayed(&received), [8, 9, 10, 11, 12]);
        // Inside what is held: no gap, and the field is left out.
        let mut bob = rig.connect(2, Mode::Json, "", None);
        rig.join(&bob, "lobby", Some("bob"), Some(7));
        let received = bob.received();
        assert!(received[0].get("gap").is_none(), "{received:?}");
        assert_eq!(replayed(&received), [8, 9, 10, 11, 12]);
    }

    #[test]
    fn a_resume_with_numbers_of_another_epoch_gets_everything_held_and_a_gap() {
        let mut rig = Rig::with_defaults();
        rig.fill("lobby", 4);
        let epoch = rig.store().epoch().to_owned();
        let mut ann = rig.connect(1, Mode::Json, "", None);
        rig.run(Command::Join {
            id: ann.id,
            room: "lobby".into(),
            name: Some("ann".into()),
            since: Some(3),
            epoch: Some("another-history".into()),
        });
        let received = ann.received();
        assert_eq!(received[0]["gap"], true);
        assert_eq!(received[0]["epoch"], epoch.as_str());
        assert_eq!(replayed(&received), [1, 2, 3, 4]);
        // Numbers past the end can only come from a history that started over.
        let mut bob = rig.connect(2, Mode::Json, "", None);
        rig.join(&bob, "lobby", Some("bob"), Some(40));
        let received = bob.received();
        assert_eq!(received[0]["gap"], true);
        assert_eq!(replayed(&received), [1, 2, 3, 4]);
        // The same epoch and a number inside: an ordinary resume.
        let mut carl = rig.connect(3, Mode::Json, "", None);
        rig.run(Command::Join {
            id: carl.id,
            room: "lobby".into(),
            name: Some("carl".into()),
            since: Some(3),
            epoch: Some(epoch),
        });
        let received = carl.received();
        assert!(received[0].get("gap").is_none());
        assert_eq!(replayed(&received), [4]);
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
        rig.run(Command::ApiRooms {
            cursor: Cursor::Active(0),
            reply,
        });
        let page = rooms.try_recv().unwrap();
        assert_eq!(page.rooms.len(), 1);
        assert_eq!((page.rooms[0].members, page.rooms[0].last_seq), (2, 5));
        assert_eq!(page.next, None);
    }

    /// Every page of the room list from `client`, following `next` to the end.
    fn all_pages(rig: &mut Rig, client: &mut Client) -> Vec<Value> {
        let mut pages = Vec::new();
        let mut cursor = Cursor::Active(0);
        loop {
            rig.run(Command::Rooms {
                id: client.id,
                cursor,
            });
            let page = client.received().pop().expect("a rooms reply");
            assert_eq!(page["type"], "rooms");
            assert!(page["rooms"].as_array().unwrap().len() <= ROOMS_PER_PAGE);
            let next = page["next"].as_str().map(str::to_owned);
            pages.push(page);
            match next {
                Some(next) => cursor = Cursor::parse(Some(&next)).expect("a cursor"),
                None => return pages,
            }
        }
    }

    fn names(page: &Value) -> Vec<String> {
        page["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn the_room_list_comes_in_pages_busiest_rooms_first_then_the_rest_by_name() {
        let mut rig = Rig::with_defaults();
        // 250 rooms with history and nobody in them, three with members (one of them also
        // with history), and one with members and no history.
        let mut store = |room: &str| {
            let msg = ChatMessage {
                room: room.to_owned(),
                seq: 1,
                from: "x".into(),
                time: 1,
                text: "x".into(),
            };
            match &mut rig.state.backend {
                Backend::Local(store) => store.append(&msg).unwrap(),
                Backend::Shared(_) => unreachable!(),
            }
        };
        for i in 0..250 {
            store(&format!("idle{i:03}"));
        }
        store("busy");
        let mut ann = rig.joined(1, "ann", "busy");
        let _bob = rig.connect(2, Mode::Plain, "bob", Some("busy"));
        let _carl = rig.connect(3, Mode::Plain, "carl", Some("two"));
        let _dan = rig.connect(4, Mode::Plain, "dan", Some("two"));
        let _eve = rig.connect(5, Mode::Plain, "eve", Some("aaa-one"));
        ann.received();

        let pages = all_pages(&mut rig, &mut ann);
        assert_eq!(pages.len(), 3, "254 rooms in pages of 100");
        assert_eq!(
            pages[0]["rooms"][0],
            json!({"name": "busy", "members": 2, "last_seq": 1}),
            "ties go by name, so busy comes before two"
        );
        let first = names(&pages[0]);
        assert_eq!(first[..4], ["busy", "two", "aaa-one", "idle000"]);
        assert_eq!(pages[0]["next"], "n.idle096");
        assert_eq!(pages[1]["next"], "n.idle196");
        assert!(pages[2].get("next").is_none(), "the last page has no next");
        let all: Vec<String> = pages.iter().flat_map(names).collect();
        let mut want = vec!["busy".to_owned(), "two".into(), "aaa-one".into()];
        want.extend((0..250).map(|i| format!("idle{i:03}")));
        assert_eq!(
            all, want,
            "every room once, busy ones not again among the rest"
        );
    }

    #[test]
    fn a_page_boundary_inside_the_busy_rooms_goes_on_from_there() {
        let mut rig = Rig::with_defaults();
        let mut ann = rig.joined(1000, "ann", "zz-watch");
        ann.received();
        // 150 rooms with one member each besides ann's, and ann's.
        let mut plain = Vec::new();
        for i in 0..150 {
            plain.push(rig.connect(i + 1, Mode::Plain, "p", Some(&format!("r{i:03}"))));
        }
        let pages = all_pages(&mut rig, &mut ann);
        assert_eq!(pages.len(), 2);
        assert_eq!(pages[0]["next"], "a.100");
        let all: Vec<String> = pages.iter().flat_map(names).collect();
        assert_eq!(all.len(), 151);
        assert_eq!(all[0], "r000");
        assert_eq!(all[150], "zz-watch");
        // A room that empties drops out of the busy run.
        assert!(rig.disconnect(&ann));
        let mut other = rig.joined(2000, "other", "r000");
        other.received();
        let pages = all_pages(&mut rig, &mut other);
        assert_eq!(pages[0]["rooms"][0]["name"], "r000", "two members now");
        let all: Vec<String> = pages.iter().flat_map(names).collect();
        assert!(
            !all.contains(&"zz-watch".to_owned()),
            "no members, no history"
        );
    }

    #[test]
    fn a_cursor_no_reply_gave_is_refused() {
        assert!(Cursor::parse(Some("n.no/such")).is_err());
        // Past the end: an empty last page, not an error.
        let mut rig = Rig::with_defaults();
        let mut ann = rig.joined(1, "ann", "lobby");
        ann.received();
        rig.run(Command::Rooms {
            id: ann.id,
            cursor: Cursor::Active(5000),
        });
        assert_eq!(ann.received(), [json!({"type": "rooms", "rooms": []})]);
        rig.run(Command::Rooms {
            id: ann.id,
            cursor: Cursor::Idle("zzz".into()),
        });
        assert_eq!(ann.received(), [json!({"type": "rooms", "rooms": []})]);
    }

    #[test]
    fn connections_of_one_token_subject_are_one_member() {
        let mut rig = Rig::with_defaults();
        let mut bob = rig.joined(1, "bob", "lobby");
        let mut phone = rig.connect_as(2, Mode::Json, "", None, Some("u-ann"));
        rig.join(&phone, "lobby", Some("Ann"), None);
        phone.received();
        assert_eq!(bob.received()[0]["count"], 2);
        // Ann's second connection: she is already here, so nobody is told, and she is listed
        // once.
        let mut laptop = rig.connect_as(3, Mode::Json, "", None, Some("u-ann"));
        rig.join(&laptop, "lobby", Some("Ann"), None);
        let own = laptop.received().pop().expect("its presence list");
        assert_eq!(own["members"], json!(["bob", "Ann"]));
        assert_eq!(own["count"], 2);
        assert!(bob.received().is_empty());
        // One of her connections leaving leaves her present; the last one, gone.
        assert!(rig.disconnect(&phone));
        assert!(bob.received().is_empty());
        assert!(rig.disconnect(&laptop));
        let left = bob.received();
        assert_eq!(left[0]["event"], "left");
        assert_eq!(left[0]["name"], "Ann");
        assert_eq!(left[0]["count"], 1);
    }

    // ---- Rooms shared through Redis, with the Redis side played by the test. ----

    /// The broker's state on a link whose requests the test reads and answers.
    struct SharedRig {
        rig: Rig,
        requests: tokio::sync::mpsc::UnboundedReceiver<cluster::Request>,
    }

    impl SharedRig {
        fn new() -> SharedRig {
            let mut rig = Rig::with_defaults();
            let (link, requests) = Link::detached();
            rig.state.backend = Backend::Shared(link);
            SharedRig { rig, requests }
        }

        /// The join the broker asked Redis for.
        fn join_request(&mut self) -> cluster::Join {
            loop {
                match self.requests.try_recv().expect("a request") {
                    cluster::Request::Join(join) => return join,
                    _ => continue,
                }
            }
        }

        /// Answers `join` as Redis would: the room's history up to `last`, members `names`.
        fn answer(&mut self, join: &cluster::Join, last: u64, pseq: u64, names: &[&str]) {
            let messages = (1..=last).map(|seq| message(seq, "bob")).collect();
            let reply = JoinReply {
                snapshot: Snapshot {
                    epoch: "e1".into(),
                    last_seq: last,
                    first_seq: 1,
                    messages,
                },
                count: names.len(),
                pseq,
                members: names.iter().map(|n| n.to_string()).collect(),
            };
            self.rig.run(Command::Cluster(ClusterEvent::Joined {
                id: join.id,
                ticket: join.ticket,
                room: join.room.clone(),
                reply: Some(reply),
            }));
        }

        /// A message of the room arriving from Redis.
        fn live(&mut self, seq: u64) {
            self.rig.run(Command::Cluster(ClusterEvent::Live {
                room: "lobby".into(),
                event: RoomEvent::Message {
                    msg: message(seq, "bob"),
                    sender: None,
                    plain_sender: false,
                },
            }));
        }
    }

    fn message(seq: u64, from: &str) -> ChatMessage {
        ChatMessage {
            room: "lobby".into(),
            seq,
            from: from.into(),
            time: seq,
            text: format!("m{seq}"),
        }
    }

    /// The sequence numbers of the `message` frames in `received`.
    fn live_seqs(received: &[Value]) -> Vec<u64> {
        received
            .iter()
            .filter(|m| m["type"] == "message")
            .map(|m| m["seq"].as_u64().expect("seq"))
            .collect()
    }

    #[test]
    fn a_join_through_redis_gets_its_replay_then_exactly_what_followed_it() {
        let mut shared = SharedRig::new();
        let mut ann = shared.rig.connect(1, Mode::Json, "", None);
        shared.rig.join(&ann, "lobby", Some("ann"), Some(0));
        let join = shared.join_request();
        assert!(join.register);
        // Messages 2 and 3 arrive before the join's answer: 2 is in its replay, 3 is not.
        shared.live(2);
        shared.live(3);
        assert!(ann.received().is_empty(), "nothing before the replay");
        shared.answer(&join, 2, 5, &["bob", "ann"]);
        let received = ann.received();
        assert_eq!(replayed(&received), [1, 2]);
        assert_eq!(received[1]["type"], "presence");
        assert_eq!(received[1]["members"], json!(["bob", "ann"]));
        assert_eq!(
            live_seqs(&received),
            [3],
            "what came after the replay, once"
        );
        // Later arrivals: a late copy of one it has is not offered again.
        shared.live(2);
        shared.live(4);
        assert_eq!(live_seqs(&ann.received()), [4]);
    }

    #[test]
    fn a_member_already_in_still_gets_what_a_joiners_replay_covers() {
        let mut shared = SharedRig::new();
        let mut bob = shared.rig.connect(1, Mode::Json, "", None);
        shared.rig.join(&bob, "lobby", Some("bob"), None);
        let first = shared.join_request();
        shared.answer(&first, 0, 1, &["bob"]);
        bob.received();
        let mut ann = shared.rig.connect(2, Mode::Json, "", None);
        shared.rig.join(&ann, "lobby", Some("ann"), None);
        let second = shared.join_request();
        // Ann's replay holds message 1, which is still on its way to Bob.
        shared.answer(&second, 1, 2, &["bob", "ann"]);
        shared.live(1);
        assert_eq!(live_seqs(&bob.received()), [1]);
        assert!(live_seqs(&ann.received()).is_empty());
    }

    #[test]
    fn an_answer_to_a_join_the_connection_gave_up_is_ignored() {
        let mut shared = SharedRig::new();
        let mut ann = shared.rig.connect(1, Mode::Json, "", None);
        shared.rig.join(&ann, "lobby", Some("ann"), None);
        let old = shared.join_request();
        shared.rig.leave(&ann, "lobby");
        shared.rig.join(&ann, "lobby", None, None);
        let new = shared.join_request();
        // The first join's answer comes first; only the second one's counts.
        shared.answer(&old, 7, 1, &["ann"]);
        assert!(ann.received().is_empty());
        shared.answer(&new, 9, 3, &["ann"]);
        assert_eq!(ann.received().len(), 2, "one history, one presence");
    }

    #[test]
    fn while_redis_is_away_a_plain_client_is_closed_with_1013_and_a_json_one_told() {
        let mut shared = SharedRig::new();
        let mut ann = shared.rig.connect(1, Mode::Json, "", None);
        shared.rig.join(&ann, "lobby", Some("ann"), None);
        let join = shared.join_request();
        shared.answer(&join, 0, 1, &["ann"]);
        ann.received();
        let mut plain = shared.rig.connect(2, Mode::Plain, "pat", Some("lobby"));
        let join = shared.join_request();
        shared.answer(&join, 0, 2, &["ann", "pat"]);
        // The message could not be stored.
        shared
            .rig
            .run(Command::Cluster(ClusterEvent::PublishFailed {
                id: ann.id,
                room: "lobby".into(),
            }));
        assert_eq!(ann.error_code(), "unavailable");
        shared
            .rig
            .run(Command::Cluster(ClusterEvent::PublishFailed {
                id: plain.id,
                room: "lobby".into(),
            }));
        let kick = plain.kick.try_recv().expect("closed");
        assert_eq!(kick.code, CloseCode(CLOSE_TRY_AGAIN));
    }
}
