//! The node's subscription to the live channels of the rooms its members are in, and what
//! makes delivery from it exact: per room, every message is handed to the broker once and in
//! order, whatever Redis's pub/sub (which forgets what it could not deliver) did.
//!
//! - A message whose number is past the next one expected means some were missed (the
//!   connection dropped, or Redis cut a subscriber that fell behind): they are read from the
//!   room's stream and handed over first.
//! - A number already handed over is dropped.
//! - After a reconnection every room is caught up from its stream before the node counts as up.
//! - A message of another epoch means the room's history started over (Redis lost its data):
//!   the broker is told, so that its members learn of the gap, and numbering restarts.
//!
//! The connection is watched with a ping, so that a Redis that stops answering (a network
//! partition, where no reset ever arrives) is noticed within seconds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use redis::{Msg, Value};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::engine::Shared;
use super::scripts::Scripts;
use super::wire::{self, BadReply};
use super::{local_conn, ClusterEvent, CONNECT_TIMEOUT, RESPONSE_TIMEOUT};
use crate::feed::{RoomEvent, Snapshot};

/// How often the subscription connection is pinged.
const PING_EVERY: Duration = Duration::from_secs(1);
/// The first wait before reconnecting, doubled after each failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the engine asks of the subscriber.
#[derive(Debug)]
pub(crate) enum SubRequest {
    /// Follow `room`; `done` says whether the subscription is confirmed.
    Subscribe {
        room: String,
        done: oneshot::Sender<bool>,
    },
    Unsubscribe {
        room: String,
    },
}

/// Where each followed room's delivery stands.
#[derive(Debug, Default)]
struct Track {
    epoch: Option<String>,
    /// The last number handed to the broker (or read by a join, which replays up to it).
    last: Option<u64>,
}

/// The rooms this node follows, shared by the engine (which records what joins read) and the
/// subscriber.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tracks(Arc<Mutex<HashMap<String, Track>>>);

impl Tracks {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Track>> {
        // A panic while holding this lock cannot leave a track half-written (each update is
        // one assignment), so a poisoned lock is still usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn rooms(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Records what a join of `room` read. Returns true if it shows the room's history started
    /// over since this node last looked.
    ///
    /// Only a room with nothing handed over yet takes the join's last number: where messages
    /// are already flowing, the ones up to that number may still be on their way to members
    /// who are in the room, and the broker keeps the joiner from getting them twice.
    pub(crate) fn joined(&self, room: &str, snapshot: &Snapshot) -> bool {
        let mut tracks = self.lock();
        let Some(track) = tracks.get_mut(room) else {
            return false;
        };
        let reset = track
            .epoch
            .as_ref()
            .is_some_and(|epoch| *epoch != snapshot.epoch);
        if reset || track.epoch.is_none() {
            track.epoch = Some(snapshot.epoch.clone());
        }
        if reset || track.last.is_none() {
            track.last = Some(snapshot.last_seq);
        }
        reset
    }
}

/// What to do with a message that arrived on a channel.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Drop,
    Deliver,
    /// Read these numbers from the stream and deliver them first.
    FillThenDeliver(u64, u64),
}

impl Track {
    /// Decides about message `seq` of `epoch`; returns the step and whether the room's history
    /// started over.
    fn arrived(&mut self, seq: u64, epoch: Option<&str>) -> (Step, bool) {
        let mut reset = false;
        if let Some(epoch) = epoch {
            match &self.epoch {
                Some(known) if known != epoch => {
                    reset = true;
                    self.epoch = Some(epoch.to_owned());
                    self.last = Some(0);
                }
                Some(_) => {}
                None => self.epoch = Some(epoch.to_owned()),
            }
        }
        let step = match self.last {
            Some(last) if seq <= last => return (Step::Drop, reset),
            Some(last) if seq > last + 1 => Step::FillThenDeliver(last + 1, seq - 1),
            _ => Step::Deliver,
        };
        self.last = Some(seq);
        (step, reset)
    }
}

/// Follows the channels of the rooms in [`Tracks`] until the engine goes away, reconnecting
/// with backoff. `up` is true while subscribed and caught up.
pub(crate) async fn run<T: From<ClusterEvent> + Send>(
    client: redis::Client,
    shared: Shared<T>,
    mut requests: mpsc::UnboundedReceiver<SubRequest>,
    up: Arc<AtomicBool>,
) {
    let scripts = Scripts::new();
    let metrics = shared.settings.metrics.clone();
    let mut backoff = MIN_BACKOFF;
    let mut connected_before = false;
    // The first failure of an outage is a warning (a wrong URL, password or certificate shows
    // at once); the retries after it are debug lines.
    let mut failures = 0u32;
    loop {
        match connect(&client, &shared, &scripts).await {
            Ok((mut sink, mut stream)) => {
                if connected_before {
                    metrics.redis.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                connected_before = true;
                backoff = MIN_BACKOFF;
                failures = 0;
                up.store(true, Ordering::Relaxed);
                metrics.redis.up.store(1, Ordering::Relaxed);
                info!("subscribed to Redis");
                let mut ping = tokio::time::interval(PING_EVERY);
                let lost = loop {
                    tokio::select! {
                        msg = stream.next() => match msg {
                            Some(msg) => {
                                if let Err(e) = handle(&shared, &scripts, msg).await {
                                    warn!("{e}");
                                }
                            }
                            None => break "the connection closed",
                        },
                        request = requests.recv() => match request {
                            None => return,
                            Some(SubRequest::Subscribe { room, done }) => {
                                let known = shared.tracks.lock().contains_key(&room);
                                let ok = known
                                    || subscribe(&mut sink, &shared, &room).await.is_ok();
                                if ok {
                                    shared.tracks.lock().entry(room).or_default();
                                }
                                let _ = done.send(ok);
                                if !ok {
                                    break "a subscription failed";
                                }
                            }
                            Some(SubRequest::Unsubscribe { room }) => {
                                shared.tracks.lock().remove(&room);
                                let channel = shared.keys.room(&room).channel;
                                let unsubscribed =
                                    tokio::time::timeout(RESPONSE_TIMEOUT, sink.unsubscribe(channel));
                                if !matches!(unsubscribed.await, Ok(Ok(()))) {
                                    break "an unsubscription failed";
                                }
                            }
                        },
                        _ = ping.tick() => {
                            let pong = tokio::time::timeout(RESPONSE_TIMEOUT, sink.ping::<Value>());
                            if !matches!(pong.await, Ok(Ok(_))) {
                                break "Redis stopped answering";
                            }
                        }
                    }
                };
                up.store(false, Ordering::Relaxed);
                metrics.redis.up.store(0, Ordering::Relaxed);
                warn!("lost the Redis subscription ({lost}); reconnecting");
            }
            Err(e) => {
                metrics.redis.errors.fetch_add(1, Ordering::Relaxed);
                if failures == 0 {
                    warn!("cannot reach Redis (retrying with backoff): {e}");
                } else {
                    debug!("cannot reach Redis: {e}");
                }
                failures = failures.saturating_add(1);
            }
        }
        // Wait before the next attempt, answering the engine meanwhile: joins fail (the
        // broker refuses them while the node is down anyway), leaves of a room are recorded.
        let wait = tokio::time::sleep(backoff);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                () = &mut wait => break,
                request = requests.recv() => match request {
                    None => return,
                    Some(SubRequest::Subscribe { done, .. }) => {
                        let _ = done.send(false);
                    }
                    Some(SubRequest::Unsubscribe { room }) => {
                        shared.tracks.lock().remove(&room);
                    }
                },
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

type Sink = redis::aio::PubSubSink;
type Stream = redis::aio::PubSubStream;

/// Opens the subscription connection, subscribes to every followed room, and catches each up
/// from its stream.
async fn connect<T: From<ClusterEvent> + Send>(
    client: &redis::Client,
    shared: &Shared<T>,
    scripts: &Scripts,
) -> Result<(Sink, Stream), BadReply> {
    let pubsub = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| BadReply("connecting timed out".into()))?
        .map_err(|e| BadReply(e.to_string()))?;
    let (mut sink, stream) = pubsub.split();
    let rooms = shared.tracks.rooms();
    if !rooms.is_empty() {
        let channels: Vec<String> = rooms.iter().map(|r| shared.keys.room(r).channel).collect();
        tokio::time::timeout(RESPONSE_TIMEOUT, sink.subscribe(channels))
            .await
            .map_err(|_| BadReply("subscribing timed out".into()))?
            .map_err(|e| BadReply(e.to_string()))?;
    }
    for room in rooms {
        catch_up(shared, scripts, &room).await?;
    }
    Ok((sink, stream))
}

async fn subscribe<T>(sink: &mut Sink, shared: &Shared<T>, room: &str) -> Result<(), BadReply> {
    let channel = shared.keys.room(room).channel;
    tokio::time::timeout(RESPONSE_TIMEOUT, sink.subscribe(channel))
        .await
        .map_err(|_| BadReply("subscribing timed out".into()))?
        .map_err(|e| BadReply(e.to_string()))
}

/// Hands the broker what `room` got while this node was not listening.
async fn catch_up<T: From<ClusterEvent> + Send>(
    shared: &Shared<T>,
    scripts: &Scripts,
    room: &str,
) -> Result<(), BadReply> {
    let keys = shared.keys.room(room);
    let read = vec![
        redis::cmd("GET").arg(&keys.epoch).clone(),
        redis::cmd("GET").arg(&keys.seq).clone(),
    ];
    let mut results = shared.run(scripts, read).await.into_iter();
    let (Some(epoch), Some(seq)) = (results.next(), results.next()) else {
        return Err(BadReply("no reply".into()));
    };
    let epoch = epoch.map_err(|e| BadReply(e.to_string()))?;
    let current = wire::int(seq.map_err(|e| BadReply(e.to_string()))?)?;
    let epoch = match epoch {
        Value::Nil => None,
        value => Some(wire::string(value, "epoch")?),
    };
    let (from, reset) = {
        let mut tracks = shared.tracks.lock();
        let Some(track) = tracks.get_mut(room) else {
            return Ok(());
        };
        let reset = match (&track.epoch, &epoch) {
            (Some(known), Some(now)) => known != now,
            // Everything is gone, the epoch too: the next message makes a new one.
            (Some(_), None) => true,
            _ => false,
        };
        if reset {
            track.epoch = epoch.clone();
            track.last = Some(0);
        }
        (track.last.unwrap_or(current), reset)
    };
    if reset {
        shared
            .tell(ClusterEvent::Reset {
                room: room.to_owned(),
                epoch: epoch.unwrap_or_default(),
            })
            .await;
    }
    if from < current {
        fill(shared, scripts, room, from + 1, current).await?;
        let mut tracks = shared.tracks.lock();
        if let Some(track) = tracks.get_mut(room) {
            track.last = Some(track.last.unwrap_or(0).max(current));
        }
    }
    Ok(())
}

/// Reads messages `first..=last` of `room` from its stream and hands them to the broker.
async fn fill<T: From<ClusterEvent> + Send>(
    shared: &Shared<T>,
    scripts: &Scripts,
    room: &str,
    first: u64,
    last: u64,
) -> Result<(), BadReply> {
    let keys = shared.keys.room(room);
    let range = redis::cmd("XRANGE")
        .arg(&keys.log)
        .arg(format!("{first}-0"))
        .arg(format!("{last}-0"))
        .clone();
    let value = match shared.run(scripts, vec![range]).await.pop() {
        Some(Ok(value)) => value,
        Some(Err(e)) => return Err(BadReply(e.to_string())),
        None => return Err(BadReply("no reply".into())),
    };
    debug!(%room, first, last, "filling a gap from the stream");
    for entry in wire::entries(room, value)? {
        let sender = local_conn(&shared.node, &entry.origin);
        shared
            .tell(ClusterEvent::Live {
                room: room.to_owned(),
                event: RoomEvent::Message {
                    msg: entry.msg,
                    sender,
                    plain_sender: entry.plain_sender,
                },
            })
            .await;
    }
    Ok(())
}

async fn handle<T: From<ClusterEvent> + Send>(
    shared: &Shared<T>,
    scripts: &Scripts,
    msg: Msg,
) -> Result<(), BadReply> {
    let Some(room) = shared.keys.room_of_channel(msg.get_channel_name()) else {
        return Ok(());
    };
    let room = room.to_owned();
    let live = wire::live_event(&room, msg.get_payload_bytes(), |o| {
        local_conn(&shared.node, o)
    })?;
    let (step, reset) = match &live.event {
        RoomEvent::Message { msg, .. } => {
            let mut tracks = shared.tracks.lock();
            let Some(track) = tracks.get_mut(&room) else {
                // Unsubscribed meanwhile.
                return Ok(());
            };
            track.arrived(msg.seq, live.epoch.as_deref())
        }
        RoomEvent::Presence { .. } => (Step::Deliver, false),
    };
    if reset {
        shared
            .tell(ClusterEvent::Reset {
                room: room.clone(),
                epoch: live.epoch.clone().unwrap_or_default(),
            })
            .await;
    }
    match step {
        Step::Drop => return Ok(()),
        Step::Deliver => {}
        Step::FillThenDeliver(first, last) => {
            if let Err(e) = fill(shared, scripts, &room, first, last).await {
                // Delivered anyway: a gap a client can see and resume over is better than
                // holding back the room.
                warn!(%room, first, last, "cannot fill a gap: {e}");
            }
        }
    }
    shared
        .tell(ClusterEvent::Live {
            room,
            event: live.event,
        })
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_delivered_once_in_order_and_gaps_are_filled() {
        let mut track = Track::default();
        assert_eq!(track.arrived(5, Some("e1")), (Step::Deliver, false));
        assert_eq!(track.arrived(6, Some("e1")), (Step::Deliver, false));
        assert_eq!(
            track.arrived(6, Some("e1")),
            (Step::Drop, false),
            "a duplicate"
        );
        assert_eq!(
            track.arrived(4, Some("e1")),
            (Step::Drop, false),
            "already replayed"
        );
        assert_eq!(
            track.arrived(9, Some("e1")),
            (Step::FillThenDeliver(7, 8), false)
        );
        assert_eq!(track.last, Some(9));
    }

    #[test]
    fn a_message_of_another_epoch_restarts_the_numbering() {
        let mut track = Track {
            epoch: Some("e1".into()),
            last: Some(40),
        };
        assert_eq!(track.arrived(1, Some("e2")), (Step::Deliver, true));
        assert_eq!(
            track.arrived(3, Some("e2")),
            (Step::FillThenDeliver(2, 2), false)
        );
    }

    #[test]
    fn a_join_moves_the_track_to_what_it_read() {
        let tracks = Tracks::default();
        tracks.lock().insert("lobby".into(), Track::default());
        let snapshot = |epoch: &str, last| Snapshot {
            epoch: epoch.into(),
            last_seq: last,
            first_seq: 1,
            messages: Vec::new(),
        };
        assert!(!tracks.joined("lobby", &snapshot("e1", 10)));
        assert_eq!(tracks.lock()["lobby"].last, Some(10));
        // Where messages flow, the subscriber alone moves on: number 11 may still be on its
        // way to the members already in.
        assert!(!tracks.joined("lobby", &snapshot("e1", 11)));
        assert_eq!(tracks.lock()["lobby"].last, Some(10));
        assert!(tracks.joined("lobby", &snapshot("e2", 2)), "another epoch");
        assert_eq!(tracks.lock()["lobby"].last, Some(2));
        assert!(
            !tracks.joined("elsewhere", &snapshot("e1", 1)),
            "not followed"
        );
    }
}
