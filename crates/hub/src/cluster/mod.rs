//! Several hub nodes sharing rooms through Redis.
//!
//! The broker of each node still owns its own connections and their room memberships; what
//! the nodes share lives in Redis, changed only by the Lua scripts of [`scripts`]:
//! - a message is numbered (`INCR`), stored in the room's stream (trimmed to the history
//!   limit) and published on the room's channel in one script, so numbers are the same on
//!   every node and nothing is delivered that is not stored;
//! - every node subscribes only to the channels of rooms its clients are in
//!   ([`subscriber`]), and delivers what arrives there, its own members' messages included:
//!   a sender learns its message's number the way everyone else does;
//! - presence is a sorted set of members scored by expiry, refreshed by their node and swept
//!   by any node once expired, so that a killed node's members leave within the ttl.
//!
//! The broker talks to this module through a [`Link`] that never blocks it: requests go into
//! a queue bounded by a count of what is in flight (leaves are always taken: there is one per
//! member at most), and results come back as [`ClusterEvent`]s on the broker's own queue.

mod engine;
mod keys;
mod scripts;
mod subscriber;
mod wire;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::RedisConfig;
use crate::error::{HubError, Result};
use crate::feed::{Replay, RoomEvent};
use crate::listing::{Cursor, Page};
use crate::metrics::Metrics;
use crate::protocol::ChatMessage;

pub(crate) use wire::JoinReply;

/// One connection of this node, as the broker numbers them.
pub(crate) type ConnId = u64;

/// Time Redis has to answer one round trip before the node counts it as failed.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Time a connection to Redis has to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Time data sent to Redis may stay unacknowledged by its host before the kernel gives up
/// on the connection (`TCP_USER_TIMEOUT`); below [`RESPONSE_TIMEOUT`], see [`abort_unacked`].
const UNACKED_TIMEOUT: Duration = Duration::from_millis(1500);

/// Why a request was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Redis is unreachable (the node is reconnecting).
    Unavailable,
    /// Too many requests are waiting for Redis already.
    Busy,
}

/// What the broker asks of Redis.
#[derive(Debug)]
pub(crate) enum Request {
    Publish(Publish),
    Join(Join),
    /// `id` left `room` (or disconnected): take it out of the room's presence.
    Leave {
        id: ConnId,
        room: String,
    },
    /// A page of the room list ([`crate::listing`]).
    Rooms {
        cursor: Cursor,
        to: ReplyTo<Page>,
    },
    /// Read a room without joining it (the backend API's history and presence).
    Read(Read),
    /// No member of this node is in `room` any more: stop receiving its events.
    Unsubscribe {
        room: String,
    },
}

/// A message to number, store and publish.
#[derive(Debug)]
pub(crate) struct Publish {
    pub(crate) id: ConnId,
    pub(crate) room: String,
    pub(crate) from: String,
    pub(crate) text: String,
    pub(crate) plain: bool,
    /// For the backend API: the message's number once stored (a connection learns it when
    /// the message comes back on the room's channel).
    pub(crate) stored: Option<oneshot::Sender<std::result::Result<u64, String>>>,
}

/// Where an answer goes: a connection (through the broker) or the backend API.
#[derive(Debug)]
pub(crate) enum ReplyTo<T> {
    Conn(ConnId),
    Api(oneshot::Sender<T>),
}

/// A look at a room's history or members; a reply dropped unanswered means Redis could not
/// be asked.
#[derive(Debug)]
pub(crate) struct Read {
    pub(crate) room: String,
    pub(crate) what: Reading,
}

#[derive(Debug)]
pub(crate) enum Reading {
    History {
        replay: Replay,
        /// At most this many messages (the oldest ones after `since`).
        limit: u64,
        reply: oneshot::Sender<std::result::Result<Vec<ChatMessage>, String>>,
    },
    Presence {
        reply: oneshot::Sender<Vec<String>>,
    },
}

/// A join (or, with `register` false, a resume of a member already in the room).
#[derive(Debug)]
pub(crate) struct Join {
    pub(crate) id: ConnId,
    /// Echoed in [`ClusterEvent::Joined`], to tell this join from an earlier one.
    pub(crate) ticket: u64,
    pub(crate) room: String,
    pub(crate) name: String,
    /// The token's subject, when the connection has one: connections of one subject are one
    /// member of the room's presence.
    pub(crate) subject: Option<String>,
    pub(crate) replay: Replay,
    pub(crate) client_epoch: Option<String>,
    pub(crate) register: bool,
}

/// What Redis answered, or sent, for the broker.
#[derive(Debug)]
pub(crate) enum ClusterEvent {
    /// `id`'s message could not be stored.
    PublishFailed { id: ConnId, room: String },
    /// `id`'s join (or resume) of `room` is done, or failed (`None`).
    Joined {
        id: ConnId,
        ticket: u64,
        room: String,
        reply: Option<JoinReply>,
    },
    /// A page of the room list for `id` (`None`: Redis could not be asked).
    Rooms { id: ConnId, page: Option<Page> },
    /// Something happened in a room this node subscribes to, in the room's order.
    Live { room: String, event: RoomEvent },
    /// The room's history was lost (Redis restarted without its data): numbering started
    /// over under a new epoch, and what follows is numbered from 1.
    Reset { room: String, epoch: String },
}

/// The broker's handle on the shared rooms.
#[derive(Debug)]
pub(crate) struct Link {
    tx: mpsc::UnboundedSender<Request>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: usize,
    up: Arc<AtomicBool>,
}

impl Link {
    /// Whether the node is subscribed and caught up, which is when it takes requests.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub(crate) fn publish(&self, publish: Publish) -> std::result::Result<(), Refused> {
        self.counted(Request::Publish(publish))
    }

    pub(crate) fn join(&self, join: Join) -> std::result::Result<(), Refused> {
        self.counted(Request::Join(join))
    }

    pub(crate) fn rooms(
        &self,
        cursor: Cursor,
        to: ReplyTo<Page>,
    ) -> std::result::Result<(), Refused> {
        self.counted(Request::Rooms { cursor, to })
    }

    pub(crate) fn read(&self, read: Read) -> std::result::Result<(), Refused> {
        self.counted(Request::Read(read))
    }

    /// Always taken, even while Redis is away: a member left behind would stay present
    /// until its entry expired.
    pub(crate) fn leave(&self, id: ConnId, room: String) {
        let _ = self.tx.send(Request::Leave { id, room });
    }

    pub(crate) fn unsubscribe(&self, room: String) {
        let _ = self.tx.send(Request::Unsubscribe { room });
    }

    /// A link to no Redis, up, and what the broker asks of it (for the broker's tests).
    #[cfg(test)]
    pub(crate) fn detached() -> (Link, mpsc::UnboundedReceiver<Request>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let link = Link {
            tx,
            in_flight: Arc::new(AtomicUsize::new(0)),
            max_in_flight: 16,
            up: Arc::new(AtomicBool::new(true)),
        };
        (link, rx)
    }

    fn counted(&self, request: Request) -> std::result::Result<(), Refused> {
        if !self.is_up() {
            return Err(Refused::Unavailable);
        }
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= self.max_in_flight {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return Err(Refused::Busy);
        }
        self.tx.send(request).map_err(|_| {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            Refused::Unavailable
        })
    }
}

/// Whether the node can serve: its subscription to Redis is up (for `/healthz`).
#[derive(Debug, Clone)]
pub(crate) struct Health {
    up: Arc<AtomicBool>,
}

impl Health {
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }
}

/// The running tasks of a node's Redis side.
#[derive(Debug)]
pub(crate) struct Running {
    pub(crate) link: Link,
    pub(crate) health: Health,
    /// Ends once the link is dropped and what it queued is done.
    pub(crate) engine: JoinHandle<()>,
}

/// What the tasks need besides Redis.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) history_limit: u64,
    pub(crate) presence_ttl: Duration,
    pub(crate) metrics: Arc<Metrics>,
}

/// Connects (lazily: a node starts while Redis is away, and reports itself degraded) and
/// starts the engine and the subscriber. `to_broker` receives every [`ClusterEvent`].
pub(crate) fn start<T>(
    config: &RedisConfig,
    settings: Settings,
    to_broker: mpsc::Sender<T>,
) -> Result<Running>
where
    T: From<ClusterEvent> + Send + 'static,
{
    let info = redis::IntoConnectionInfo::into_connection_info(config.url.as_str())
        .map_err(|e| HubError::Redis(e.to_string()))?;
    let info = abort_unacked(info);
    let client = match &config.ca_file {
        None => redis::Client::open(info),
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                HubError::Redis(format!("cannot read the CA file {}: {e}", path.display()))
            })?;
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            };
            redis::Client::build_with_tls(info, certificates)
        }
    }
    .map_err(|e| HubError::Redis(e.to_string()))?;
    let manager = ConnectionManager::new_lazy_with_config(
        client.clone(),
        ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1)),
    )
    .map_err(|e| HubError::Redis(e.to_string()))?;
    settings
        .metrics
        .redis
        .enabled
        .store(true, Ordering::Relaxed);
    // A node's members are told apart from other nodes' by this random id.
    let node: Arc<str> = crate::feed::new_epoch().into();
    let up = Arc::new(AtomicBool::new(false));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let keys = keys::Keys::new(&config.prefix);
    let tracks = subscriber::Tracks::default();
    let (sub_tx, sub_rx) = mpsc::unbounded_channel();
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = engine::Shared {
        conn: manager,
        keys,
        node,
        tracks,
        to_broker,
        settings,
    };
    tokio::spawn(subscriber::run(client, shared.clone(), sub_rx, up.clone()));
    let engine = tokio::spawn(engine::run(shared, rx, sub_tx, in_flight.clone()));
    Ok(Running {
        link: Link {
            tx,
            in_flight,
            max_in_flight: config.max_pending,
            up: up.clone(),
        },
        health: Health { up },
        engine,
    })
}

/// Makes every connection to Redis die once what it sent stays unacknowledged for
/// [`UNACKED_TIMEOUT`].
///
/// Without it, a silent partition (packets dropped, no reset: a cut link, a firewall, a host
/// gone) leaves the engine's connection open for the kernel's whole retransmission budget
/// (about 15 minutes): the connection manager does not reconnect on a response timeout, so
/// every round trip times out, and after the link heals it keeps doing so until the
/// connection's next retransmission, up to two minutes later (12 s after a 15 s cut, in
/// tests/partition.rs), the subscriber's catch-up with it: the node stayed 503. And the
/// commands still queued on it reached Redis then and ran: a message its sender had been
/// told was not stored ("unavailable") was stored and delivered after the heal. Aborted
/// before the response timeout, the connection takes what it had not delivered with it
/// (what Redis did receive may still have run: a reply lost in the cut is an unknown
/// outcome), and its error makes the manager reconnect at once.
fn abort_unacked(info: redis::ConnectionInfo) -> redis::ConnectionInfo {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let tcp = info
            .tcp_settings()
            .clone()
            .set_user_timeout(UNACKED_TIMEOUT);
        info.set_tcp_settings(tcp)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        info
    }
}

fn member_id(node: &str, id: ConnId) -> String {
    format!("{node}:{id}")
}

/// This node's connection behind a member id, if the member is one of this node's.
fn local_conn(node: &str, member: &str) -> Option<ConnId> {
    member.strip_prefix(node)?.strip_prefix(':')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_name_the_node_and_only_its_own_read_back() {
        assert_eq!(member_id("abc", 7), "abc:7");
        assert_eq!(local_conn("abc", "abc:7"), Some(7));
        assert_eq!(local_conn("abc", "abd:7"), None);
        assert_eq!(local_conn("abc", "abcd:7"), None);
        assert_eq!(local_conn("abc", "abc:x"), None);
    }
}
