//! The task that carries out the broker's requests against Redis, in the order they were
//! made, and keeps this node's members present.
//!
//! Consecutive publishes that are already waiting go to Redis as one pipeline: one round trip
//! for many messages as load rises, and Redis runs them in the order sent, which is the order
//! each sender said them in.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use redis::{Cmd, ErrorKind, RedisResult, ServerErrorKind, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;
use tracing::{debug, warn};

use super::keys::{Keys, RoomKeys};
use super::scripts::Scripts;
use super::subscriber::{SubRequest, Tracks};
use super::wire::{self, BadReply};
use super::{member_id, ClusterEvent, ConnId, Join, Publish, ReplyTo, Request, Settings};
use crate::feed::{new_epoch, Replay};
use crate::listing::{Cursor, Page, PageBuilder};
use crate::protocol::{valid_room, RoomInfo, ROOMS_PER_PAGE};

/// Publishes sent as one pipeline, at most.
const MAX_BATCH: usize = 256;
/// Reads (each of a page's worth of rooms) one page of the room list may take, at most: rooms
/// skipped (one run's rooms met in the other's index, or gone from it) make a page take more
/// than one, and past this bound the page comes back short, with a `next` to go on from.
const MAX_LIST_ROUNDS: usize = 4;

/// What the engine and the subscriber both use.
#[derive(Debug)]
pub(crate) struct Shared<T> {
    pub(crate) conn: ConnectionManager,
    pub(crate) keys: Keys,
    pub(crate) node: Arc<str>,
    pub(crate) tracks: Tracks,
    pub(crate) to_broker: mpsc::Sender<T>,
    pub(crate) settings: Settings,
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared {
            conn: self.conn.clone(),
            keys: self.keys.clone(),
            node: self.node.clone(),
            tracks: self.tracks.clone(),
            to_broker: self.to_broker.clone(),
            settings: self.settings.clone(),
        }
    }
}

impl<T: From<ClusterEvent> + Send> Shared<T> {
    /// Hands an event to the broker, waiting while its queue is full.
    pub(crate) async fn tell(&self, event: ClusterEvent) {
        let _ = self.to_broker.send(T::from(event)).await;
    }

    /// Runs `cmds` as one pipeline and returns each one's result. Commands whose script Redis
    /// does not know (it restarted) are run again after loading the scripts; a lost connection
    /// fails every command.
    pub(crate) async fn run(&self, scripts: &Scripts, cmds: Vec<Cmd>) -> Vec<RedisResult<Value>> {
        let mut results = self.pipeline(&cmds).await;
        let unknown: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r, Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)))
            .map(|(i, _)| i)
            .collect();
        if !unknown.is_empty() {
            debug!("loading the scripts into Redis");
            let load: Vec<Cmd> = scripts
                .all()
                .iter()
                .map(|s| redis::cmd("SCRIPT").arg("LOAD").arg(s.source).clone())
                .collect();
            let loaded = self.pipeline(&load).await;
            if loaded.iter().all(Result::is_ok) {
                let again: Vec<Cmd> = unknown.iter().map(|&i| cmds[i].clone()).collect();
                for (i, result) in unknown.into_iter().zip(self.pipeline(&again).await) {
                    results[i] = result;
                }
            }
        }
        results
    }

    async fn pipeline(&self, cmds: &[Cmd]) -> Vec<RedisResult<Value>> {
        let metrics = &self.settings.metrics.redis;
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for cmd in cmds {
            pipe.add_command(cmd.clone());
        }
        let started = Instant::now();
        let mut conn = self.conn.clone();
        metrics.requests.fetch_add(1, Ordering::Relaxed);
        let outcome: RedisResult<Vec<RedisResult<Value>>> = pipe.query_async(&mut conn).await;
        metrics.round_trip.record(started.elapsed());
        match outcome {
            Ok(results) if results.len() == cmds.len() => {
                if results.iter().any(Result::is_err) {
                    metrics.errors.fetch_add(1, Ordering::Relaxed);
                }
                results
            }
            Ok(_) => {
                metrics.errors.fetch_add(1, Ordering::Relaxed);
                cmds.iter()
                    .map(|_| Err(bad("a pipeline reply of the wrong length")))
                    .collect()
            }
            Err(e) => {
                metrics.errors.fetch_add(1, Ordering::Relaxed);
                debug!("Redis round trip failed: {e}");
                cmds.iter().map(|_| Err(e.clone())).collect()
            }
        }
    }
}

/// A member of this node, as kept present in Redis.
#[derive(Debug)]
struct Member {
    name: String,
    /// What presence counts this connection as (see [`ident`]).
    ident: String,
    joined_ms: u64,
}

/// The identity a connection is present as: its token's subject, or itself.
fn ident(node: &str, id: ConnId, subject: Option<&str>) -> String {
    match subject {
        Some(sub) => format!("sub:{sub}"),
        None => member_id(node, id),
    }
}

/// A connection a join makes present.
struct Registering<'a> {
    id: String,
    ident: String,
    name: &'a str,
}

struct Engine<T> {
    shared: Shared<T>,
    scripts: Scripts,
    subscriber: mpsc::UnboundedSender<SubRequest>,
    in_flight: Arc<AtomicUsize>,
    members: HashMap<(ConnId, String), Member>,
    /// Whether the rooms of the unordered index (from before the index by name) have been
    /// copied into the index by name since this node started.
    indexed_by_name: bool,
}

/// Carries out `requests` until the broker's [`Link`](super::Link) is dropped, then takes
/// this node's remaining members out of presence and ends.
pub(crate) async fn run<T: From<ClusterEvent> + Send>(
    shared: Shared<T>,
    mut requests: mpsc::UnboundedReceiver<Request>,
    subscriber: mpsc::UnboundedSender<SubRequest>,
    in_flight: Arc<AtomicUsize>,
) {
    let mut engine = Engine {
        shared,
        scripts: Scripts::new(),
        subscriber,
        in_flight,
        members: HashMap::new(),
        indexed_by_name: false,
    };
    let period = engine.shared.settings.presence_ttl / 3;
    let mut presence = tokio::time::interval(period.max(std::time::Duration::from_millis(100)));
    presence.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut next: Option<Request> = None;
    loop {
        let request = match next.take() {
            Some(request) => request,
            None => tokio::select! {
                request = requests.recv() => match request {
                    Some(request) => request,
                    None => break,
                },
                _ = presence.tick() => {
                    engine.keep_presence().await;
                    continue;
                }
            },
        };
        match request {
            Request::Publish(first) => {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match requests.try_recv() {
                        Ok(Request::Publish(p)) => batch.push(p),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let n = batch.len();
                engine.publish(batch).await;
                engine.done(n);
            }
            Request::Join(join) => {
                engine.join(join).await;
                engine.done(1);
            }
            Request::Rooms { cursor, to } => {
                engine.rooms(cursor, to).await;
                engine.done(1);
            }
            Request::Read(read) => {
                engine.read(read).await;
                engine.done(1);
            }
            Request::Leave { id, room } => engine.leave(id, room).await,
            Request::Unsubscribe { room } => {
                let _ = engine.subscriber.send(SubRequest::Unsubscribe { room });
            }
        }
    }
    engine.leave_all().await;
}

impl<T: From<ClusterEvent> + Send> Engine<T> {
    fn done(&self, n: usize) {
        self.in_flight.fetch_sub(n, Ordering::Relaxed);
    }

    async fn publish(&mut self, batch: Vec<Publish>) {
        let limit = self.shared.settings.history_limit.max(1);
        let index = self.shared.keys.index();
        let by_name = self.shared.keys.by_name();
        let mut cmds = Vec::with_capacity(batch.len() * 3);
        for p in &batch {
            let room = self.shared.keys.room(&p.room);
            let origin = member_id(&self.shared.node, p.id);
            let plain = if p.plain { "1" } else { "0" };
            let mut publish = self.scripts.publish.on(&room);
            publish.arg(&p.room).arg(&p.from).arg(&p.text).arg(limit);
            publish.arg(new_epoch()).arg(origin).arg(plain);
            cmds.push(publish);
            // Still kept, for the room list of nodes from before the index by name.
            cmds.push(redis::cmd("SADD").arg(&index).arg(&p.room).clone());
            cmds.push(redis::cmd("ZADD").arg(&by_name).arg(0).arg(&p.room).clone());
        }
        let results = self.shared.run(&self.scripts, cmds).await;
        for (p, result) in batch.into_iter().zip(results.into_iter().step_by(3)) {
            match result
                .map_err(|e| e.to_string())
                .and_then(|v| wire::int(v).map_err(|e| e.to_string()))
            {
                Ok(seq) => {
                    self.shared
                        .settings
                        .metrics
                        .stored_messages
                        .fetch_add(1, Ordering::Relaxed);
                    if let Some(stored) = p.stored {
                        let _ = stored.send(Ok(seq));
                    }
                }
                Err(e) => {
                    warn!(room = %p.room, "cannot store a message in Redis: {e}");
                    match p.stored {
                        Some(stored) => {
                            let _ = stored.send(Err("storage".to_owned()));
                        }
                        None => {
                            self.shared
                                .tell(ClusterEvent::PublishFailed {
                                    id: p.id,
                                    room: p.room,
                                })
                                .await;
                        }
                    }
                }
            }
        }
    }

    async fn join(&mut self, join: Join) {
        let reply = self.try_join(&join).await;
        let mut noted = None;
        let reply = match reply {
            Ok(reply) => {
                if join.register {
                    let ident = ident(&self.shared.node, join.id, join.subject.as_deref());
                    noted = Some(reply.count);
                    self.members.insert(
                        (join.id, join.room.clone()),
                        Member {
                            name: join.name.clone(),
                            ident,
                            joined_ms: now_ms(),
                        },
                    );
                }
                Some(reply)
            }
            Err(e) => {
                warn!(room = %join.room, "cannot join in Redis: {e}");
                None
            }
        };
        let room = join.room.clone();
        self.shared
            .tell(ClusterEvent::Joined {
                id: join.id,
                ticket: join.ticket,
                room: join.room,
                reply,
            })
            .await;
        // After the joiner has its answer: the room list can wait a round trip, it cannot.
        if let Some(count) = noted {
            self.note_active(&room, count).await;
        }
    }

    async fn try_join(&mut self, join: &Join) -> Result<wire::JoinReply, BadReply> {
        // Subscribed first, then read: whatever is published after the read arrives on the
        // channel, and whatever before it is in the reply.
        let (done, subscribed) = oneshot::channel();
        let _ = self.subscriber.send(SubRequest::Subscribe {
            room: join.room.clone(),
            done,
        });
        if !subscribed.await.unwrap_or(false) {
            return Err(BadReply("not subscribed".into()));
        }
        let member = join.register.then(|| Registering {
            id: member_id(&self.shared.node, join.id),
            ident: ident(&self.shared.node, join.id, join.subject.as_deref()),
            name: &join.name,
        });
        let reply = self
            .read_room(
                &join.room,
                join.replay,
                join.client_epoch.as_deref(),
                member,
            )
            .await?;
        let reset = self.shared.tracks.joined(&join.room, &reply.snapshot);
        if reset {
            self.shared
                .tell(ClusterEvent::Reset {
                    room: join.room.clone(),
                    epoch: reply.snapshot.epoch.clone(),
                })
                .await;
        }
        Ok(reply)
    }

    /// Runs the join script: registers `member` if given, and reads the room's members and,
    /// as `replay` asks, its history.
    async fn read_room(
        &mut self,
        room: &str,
        replay: Replay,
        client_epoch: Option<&str>,
        member: Option<Registering<'_>>,
    ) -> Result<wire::JoinReply, BadReply> {
        let settings = &self.shared.settings;
        let (mode, n) = match replay {
            Replay::None => ("none", 0),
            Replay::Recent(n) => ("recent", n),
            Replay::After(since) => ("after", since.min(i64::MAX as u64)),
        };
        let ttl = settings.presence_ttl.as_millis().max(1) as u64;
        let keys = self.shared.keys.room(room);
        let (id, ident, name, register) = match &member {
            Some(m) => (m.id.as_str(), m.ident.as_str(), m.name, "1"),
            None => ("", "", "", "0"),
        };
        let mut cmd = self.scripts.join.on(&keys);
        cmd.arg(id)
            .arg(name)
            .arg(ttl)
            .arg(new_epoch())
            .arg(mode)
            .arg(n)
            .arg(client_epoch.unwrap_or(""))
            .arg(settings.history_limit.max(1))
            .arg(register)
            .arg(ident);
        let value = match self.shared.run(&self.scripts, vec![cmd]).await.pop() {
            Some(Ok(value)) => value,
            Some(Err(e)) => return Err(BadReply(e.to_string())),
            None => return Err(BadReply("no reply".into())),
        };
        wire::join_reply(room, value, mode == "recent")
    }

    /// A backend's look at a room, answered directly (nothing of it goes through the broker).
    async fn read(&mut self, read: super::Read) {
        match read.what {
            super::Reading::History {
                replay,
                limit,
                reply,
            } => match self.read_room(&read.room, replay, None, None).await {
                Ok(room) => {
                    let mut messages = room.snapshot.messages;
                    messages.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
                    let _ = reply.send(Ok(messages));
                }
                Err(e) => warn!(room = %read.room, "cannot read history from Redis: {e}"),
            },
            super::Reading::Presence { reply } => {
                match self.read_room(&read.room, Replay::None, None, None).await {
                    Ok(room) => {
                        let _ = reply.send(room.members);
                    }
                    Err(e) => warn!(room = %read.room, "cannot read presence from Redis: {e}"),
                }
            }
        }
    }

    async fn leave(&mut self, id: ConnId, room: String) {
        if self.members.remove(&(id, room.clone())).is_none() {
            return;
        }
        let keys = self.shared.keys.room(&room);
        let mut cmd = self.scripts.leave.on(&keys);
        cmd.arg(member_id(&self.shared.node, id));
        // The count after the leave comes in the same round trip, for the room list.
        let count = present(&keys);
        let mut results = self.shared.run(&self.scripts, vec![cmd, count]).await;
        let count = results.pop();
        if let Some(Err(e)) = results.pop() {
            // Not refreshed any more, the entry expires and is swept by whichever node looks.
            warn!(%room, "cannot leave in Redis (the entry will expire): {e}");
            return;
        }
        if let Some(Ok(count)) = count {
            if let Ok(count) = wire::int(count) {
                self.note_active(&room, count as usize).await;
            }
        }
    }

    async fn leave_all(&mut self) {
        let members: Vec<(ConnId, String)> = self.members.keys().cloned().collect();
        for (id, room) in members {
            self.leave(id, room).await;
        }
    }

    async fn rooms(&mut self, cursor: Cursor, to: ReplyTo<Page>) {
        let page = self.try_rooms(cursor).await;
        if let Err(e) = &page {
            warn!("cannot list rooms from Redis: {e}");
        }
        match to {
            ReplyTo::Conn(id) => {
                self.shared
                    .tell(ClusterEvent::Rooms {
                        id,
                        page: page.ok(),
                    })
                    .await;
            }
            ReplyTo::Api(reply) => {
                if let Ok(page) = page {
                    let _ = reply.send(page);
                }
            }
        }
    }

    /// One page of the room list ([`crate::listing`]): the rooms with members by position in
    /// the active set ([`Keys::active`](super::keys::Keys::active)), then the rooms of the
    /// index by name after the cursor's name, each read a page's worth at a time and checked
    /// against the room's presence now. What the check finds wrong in the active set (a
    /// room left empty by a node that died, a count a lost note left behind) is put right on
    /// the way, so the set heals itself as it is read.
    async fn try_rooms(&mut self, cursor: Cursor) -> Result<Page, BadReply> {
        self.index_by_name().await;
        let mut page = PageBuilder::default();
        let mut fixes = Vec::new();
        let mut rounds = 0;
        let mut after = match cursor {
            Cursor::Idle(name) => Some(name),
            Cursor::Active(mut position) => loop {
                if rounds == MAX_LIST_ROUNDS {
                    break None;
                }
                rounds += 1;
                let wanted = ROOMS_PER_PAGE + 1;
                let range = redis::cmd("ZRANGE")
                    .arg(self.shared.keys.active())
                    .arg(position)
                    .arg(position + wanted - 1)
                    .clone();
                let names = self.names(range).await?;
                let exhausted = names.len() < wanted;
                for (name, last_seq, members) in self.counts(names).await? {
                    position += 1;
                    fixes.push(active_update(&self.shared.keys, &name, members));
                    if members == 0 {
                        page.skip(Cursor::Active(position));
                        continue;
                    }
                    let room = RoomInfo {
                        name,
                        members,
                        last_seq,
                    };
                    page.push(room, Cursor::Active(position));
                    if page.full() {
                        break;
                    }
                }
                if page.full() {
                    break None;
                }
                if exhausted {
                    // Every room with members is listed: on to the others, from the first.
                    break Some(String::new());
                }
            },
        };
        let mut exhausted = false;
        while let Some(from) = after.take() {
            if page.full() || rounds == MAX_LIST_ROUNDS {
                break;
            }
            rounds += 1;
            let wanted = ROOMS_PER_PAGE + 1;
            let min = if from.is_empty() {
                "-".to_owned()
            } else {
                format!("({from}")
            };
            let range = redis::cmd("ZRANGEBYLEX")
                .arg(self.shared.keys.by_name())
                .arg(min)
                .arg("+")
                .arg("LIMIT")
                .arg(0)
                .arg(wanted)
                .clone();
            let names = self.names(range).await?;
            let last = names.len() < wanted;
            let mut next = from;
            for (name, last_seq, members) in self.counts(names).await? {
                next.clone_from(&name);
                if members > 0 {
                    // Listed in the first run, if the active set knew of it; now it does.
                    fixes.push(active_update(&self.shared.keys, &name, members));
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
                    break;
                }
            }
            if last {
                exhausted = !page.full();
                break;
            }
            after = Some(next);
        }
        if !fixes.is_empty() {
            let failed = self
                .shared
                .run(&self.scripts, fixes)
                .await
                .into_iter()
                .filter(Result::is_err)
                .count();
            if failed > 0 {
                debug!("{failed} updates of the active room set failed");
            }
        }
        Ok(page.finish(exhausted))
    }

    /// The valid room names `cmd` answers with.
    async fn names(&mut self, cmd: Cmd) -> Result<Vec<String>, BadReply> {
        let names = match self.shared.run(&self.scripts, vec![cmd]).await.pop() {
            Some(Ok(Value::Array(names) | Value::Set(names))) => names,
            Some(Ok(other)) => return Err(BadReply(format!("room names: {other:?}"))),
            Some(Err(e)) => return Err(BadReply(e.to_string())),
            None => return Err(BadReply("no reply".into())),
        };
        Ok(names
            .into_iter()
            .filter_map(|n| wire::string(n, "room").ok())
            .filter(|n| valid_room(n))
            .collect())
    }

    /// Each room's last number and the members present now, in one round trip.
    async fn counts(&mut self, names: Vec<String>) -> Result<Vec<(String, u64, usize)>, BadReply> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmds = Vec::with_capacity(names.len() * 2);
        for name in &names {
            let keys = self.shared.keys.room(name);
            cmds.push(redis::cmd("GET").arg(&keys.seq).clone());
            cmds.push(present(&keys));
        }
        let mut results = self.shared.run(&self.scripts, cmds).await.into_iter();
        let mut rooms = Vec::with_capacity(names.len());
        for name in names {
            let (Some(seq), Some(count)) = (results.next(), results.next()) else {
                return Err(BadReply("a pipeline reply of the wrong length".into()));
            };
            let seq = seq.map_err(|e| BadReply(e.to_string()))?;
            let count = count.map_err(|e| BadReply(e.to_string()))?;
            rooms.push((name, wire::int(seq)?, wire::int(count)? as usize));
        }
        Ok(rooms)
    }

    /// Copies the unordered index of rooms into the index by name, once per node start: a
    /// deployment from before the index by name has its rooms only there. One `ZUNIONSTORE`
    /// (O(rooms) in Redis, once), with weight 0 so that every score stays 0. Tried again at
    /// the next listing if it fails.
    async fn index_by_name(&mut self) {
        if self.indexed_by_name {
            return;
        }
        let by_name = self.shared.keys.by_name();
        let copy = redis::cmd("ZUNIONSTORE")
            .arg(&by_name)
            .arg(2)
            .arg(&by_name)
            .arg(self.shared.keys.index())
            .arg("WEIGHTS")
            .arg(1)
            .arg(0)
            .clone();
        match self.shared.run(&self.scripts, vec![copy]).await.pop() {
            Some(Ok(_)) => self.indexed_by_name = true,
            Some(Err(e)) => debug!("cannot copy the room index into the index by name: {e}"),
            None => {}
        }
    }

    /// Records that `room` has `members` members now (0: none, which takes it out of the
    /// active set), for the first run of the room list. Called after each change to a
    /// room's presence whose count is known (a join's reply has it); see
    /// [`Engine::recount_active`] for the others.
    ///
    /// Not atomic with the change itself (the scripts stay as they are): two nodes noting
    /// one room at once may leave the older count, which the next note or listing of that
    /// room puts right. A failure is only logged: the list is a convenience, presence is
    /// what counts.
    pub(crate) async fn note_active(&mut self, room: &str, members: usize) {
        let cmd = active_update(&self.shared.keys, room, members);
        if let Some(Err(e)) = self.shared.run(&self.scripts, vec![cmd]).await.pop() {
            debug!(%room, "cannot note the room's member count: {e}");
        }
    }

    /// Reads the member counts of `rooms` and records them as [`Engine::note_active`] does,
    /// in two round trips for all: for changes that do not return a count (a sweep of
    /// expired members).
    pub(crate) async fn recount_active(&mut self, rooms: &[String]) {
        if rooms.is_empty() {
            return;
        }
        let cmds = rooms
            .iter()
            .map(|room| present(&self.shared.keys.room(room)))
            .collect();
        let counts = self.shared.run(&self.scripts, cmds).await;
        let updates: Vec<Cmd> = rooms
            .iter()
            .zip(counts)
            .filter_map(|(room, count)| {
                let count = wire::int(count.ok()?).ok()?;
                Some(active_update(&self.shared.keys, room, count as usize))
            })
            .collect();
        let failed = self
            .shared
            .run(&self.scripts, updates)
            .await
            .into_iter()
            .filter(Result::is_err)
            .count();
        if failed > 0 {
            debug!("{failed} updates of the active room set failed");
        }
    }

    /// Pushes every member's expiry forward and sweeps the expired members of every room this
    /// node follows (one pipeline for all).
    async fn keep_presence(&mut self) {
        let rooms = self.shared.tracks.rooms();
        if self.members.is_empty() && rooms.is_empty() {
            return;
        }
        let ttl = self.shared.settings.presence_ttl.as_millis().max(1) as u64;
        let mut cmds = Vec::with_capacity(self.members.len() + rooms.len());
        for ((id, room), member) in &self.members {
            let keys = self.shared.keys.room(room);
            let mut refresh = self.scripts.refresh.on(&keys);
            refresh
                .arg(member_id(&self.shared.node, *id))
                .arg(&member.name)
                .arg(ttl)
                .arg(member.joined_ms)
                .arg(&member.ident);
            cmds.push(refresh);
        }
        for room in &rooms {
            cmds.push(self.scripts.sweep.on(&self.shared.keys.room(room)));
        }
        let results = self.shared.run(&self.scripts, cmds).await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        if failed > 0 {
            debug!("{failed} presence updates failed");
        }
        // The sweeps are the last results, one per room: a room whose sweep removed someone
        // has a new member count for the room list.
        let sweeps = &results[results.len().saturating_sub(rooms.len())..];
        let swept: Vec<String> = rooms
            .iter()
            .zip(sweeps)
            .filter(|(_, r)| matches!(r, Ok(v) if wire::int(v.clone()).unwrap_or(0) > 0))
            .map(|(room, _)| room.clone())
            .collect();
        if !swept.is_empty() {
            self.recount_active(&swept).await;
        }
    }
}

/// Counts a room's members as presence does: identities, however many connections each has.
fn present(keys: &RoomKeys) -> Cmd {
    redis::cmd("HLEN").arg(&keys.idents).clone()
}

/// The command that records `room`'s member count in the active set, or takes it out.
fn active_update(keys: &Keys, room: &str, members: usize) -> Cmd {
    if members == 0 {
        return redis::cmd("ZREM").arg(keys.active()).arg(room).clone();
    }
    // Minus the count: ascending order is then busiest first, ties by name.
    let score = -(members.min(i64::MAX as usize) as i64);
    redis::cmd("ZADD")
        .arg(keys.active())
        .arg(score)
        .arg(room)
        .clone()
}

fn bad(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((ErrorKind::UnexpectedReturnType, what))
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
