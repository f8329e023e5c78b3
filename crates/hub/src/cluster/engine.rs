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

use super::keys::Keys;
use super::scripts::Scripts;
use super::subscriber::{SubRequest, Tracks};
use super::wire::{self, BadReply};
use super::{member_id, ClusterEvent, ConnId, Join, Publish, Request, Settings};
use crate::feed::{new_epoch, Replay};
use crate::protocol::RoomInfo;

/// Publishes sent as one pipeline, at most.
const MAX_BATCH: usize = 256;
/// Rooms in one room list, at most (the first by name).
const MAX_ROOMS_LISTED: usize = 1000;

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
    joined_ms: u64,
}

struct Engine<T> {
    shared: Shared<T>,
    scripts: Scripts,
    subscriber: mpsc::UnboundedSender<SubRequest>,
    in_flight: Arc<AtomicUsize>,
    members: HashMap<(ConnId, String), Member>,
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
            Request::Rooms { id } => {
                engine.rooms(id).await;
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
        let mut cmds = Vec::with_capacity(batch.len() * 2);
        for p in &batch {
            let room = self.shared.keys.room(&p.room);
            let origin = member_id(&self.shared.node, p.id);
            let plain = if p.plain { "1" } else { "0" };
            let mut publish = self.scripts.publish.on(&room);
            publish.arg(&p.room).arg(&p.from).arg(&p.text).arg(limit);
            publish.arg(new_epoch()).arg(origin).arg(plain);
            cmds.push(publish);
            cmds.push(redis::cmd("SADD").arg(&index).arg(&p.room).clone());
        }
        let results = self.shared.run(&self.scripts, cmds).await;
        for (p, result) in batch.into_iter().zip(results.into_iter().step_by(2)) {
            match result {
                Ok(_) => {
                    self.shared
                        .settings
                        .metrics
                        .stored_messages
                        .fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    warn!(room = %p.room, "cannot store a message in Redis: {e}");
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

    async fn join(&mut self, join: Join) {
        let reply = self.try_join(&join).await;
        let reply = match reply {
            Ok(reply) => {
                if join.register {
                    self.members.insert(
                        (join.id, join.room.clone()),
                        Member {
                            name: join.name.clone(),
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
        self.shared
            .tell(ClusterEvent::Joined {
                id: join.id,
                ticket: join.ticket,
                room: join.room,
                reply,
            })
            .await;
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
        let settings = &self.shared.settings;
        let (mode, n) = match join.replay {
            Replay::None => ("none", 0),
            Replay::Recent(n) => ("recent", n),
            Replay::After(since) => ("after", since.min(i64::MAX as u64)),
        };
        let ttl = settings.presence_ttl.as_millis().max(1) as u64;
        let keys = self.shared.keys.room(&join.room);
        let mut cmd = self.scripts.join.on(&keys);
        cmd.arg(member_id(&self.shared.node, join.id))
            .arg(&join.name)
            .arg(ttl)
            .arg(new_epoch())
            .arg(mode)
            .arg(n)
            .arg(join.client_epoch.as_deref().unwrap_or(""))
            .arg(settings.history_limit.max(1))
            .arg(if join.register { "1" } else { "0" });
        let result = self.shared.run(&self.scripts, vec![cmd]).await.pop();
        let value = match result {
            Some(Ok(value)) => value,
            Some(Err(e)) => return Err(BadReply(e.to_string())),
            None => return Err(BadReply("no reply".into())),
        };
        let reply = wire::join_reply(&join.room, value, mode == "recent")?;
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

    async fn leave(&mut self, id: ConnId, room: String) {
        if self.members.remove(&(id, room.clone())).is_none() {
            return;
        }
        let keys = self.shared.keys.room(&room);
        let mut cmd = self.scripts.leave.on(&keys);
        cmd.arg(member_id(&self.shared.node, id));
        if let Some(Err(e)) = self.shared.run(&self.scripts, vec![cmd]).await.pop() {
            // Not refreshed any more, the entry expires and is swept by whichever node looks.
            warn!(%room, "cannot leave in Redis (the entry will expire): {e}");
        }
    }

    async fn leave_all(&mut self) {
        let members: Vec<(ConnId, String)> = self.members.keys().cloned().collect();
        for (id, room) in members {
            self.leave(id, room).await;
        }
    }

    async fn rooms(&mut self, id: ConnId) {
        let rooms = self.try_rooms().await;
        if let Err(e) = &rooms {
            warn!("cannot list rooms from Redis: {e}");
        }
        self.shared
            .tell(ClusterEvent::Rooms {
                id,
                rooms: rooms.ok(),
            })
            .await;
    }

    async fn try_rooms(&mut self) -> Result<Vec<RoomInfo>, BadReply> {
        let index = redis::cmd("SMEMBERS").arg(self.shared.keys.index()).clone();
        let names = match self.shared.run(&self.scripts, vec![index]).await.pop() {
            Some(Ok(Value::Array(names) | Value::Set(names))) => names,
            Some(Ok(other)) => return Err(BadReply(format!("room index: {other:?}"))),
            Some(Err(e)) => return Err(BadReply(e.to_string())),
            None => return Err(BadReply("no reply".into())),
        };
        let mut names: Vec<String> = names
            .into_iter()
            .filter_map(|n| wire::string(n, "room").ok())
            .filter(|n| crate::protocol::valid_room(n))
            .collect();
        names.sort();
        names.truncate(MAX_ROOMS_LISTED);
        let now = now_ms();
        let mut cmds = Vec::with_capacity(names.len() * 2);
        for name in &names {
            let keys = self.shared.keys.room(name);
            cmds.push(redis::cmd("GET").arg(&keys.seq).clone());
            cmds.push(
                redis::cmd("ZCOUNT")
                    .arg(&keys.members)
                    .arg(now)
                    .arg("+inf")
                    .clone(),
            );
        }
        let mut results = self.shared.run(&self.scripts, cmds).await.into_iter();
        let mut rooms = Vec::with_capacity(names.len());
        for name in names {
            let (Some(seq), Some(count)) = (results.next(), results.next()) else {
                break;
            };
            let seq = seq.map_err(|e| BadReply(e.to_string()))?;
            let count = count.map_err(|e| BadReply(e.to_string()))?;
            rooms.push(RoomInfo {
                name,
                members: wire::int(count)? as usize,
                last_seq: wire::int(seq)?,
            });
        }
        Ok(rooms)
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
                .arg(member.joined_ms);
            cmds.push(refresh);
        }
        for room in rooms {
            cmds.push(self.scripts.sweep.on(&self.shared.keys.room(&room)));
        }
        let failed = self
            .shared
            .run(&self.scripts, cmds)
            .await
            .into_iter()
            .filter(Result::is_err)
            .count();
        if failed > 0 {
            debug!("{failed} presence updates failed");
        }
    }
}

fn bad(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((ErrorKind::UnexpectedReturnType, what))
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
