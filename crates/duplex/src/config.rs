//! Limits and timeouts of a connection, with defaults chosen to be safe on the open internet.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

pub use duplex_proto::deflate::DeflateConfig;

/// Configuration of a WebSocket connection, for both roles.
///
/// ```
/// use std::time::Duration;
/// let config = duplex::Config::default()
///     .max_message_size(1 << 20)
///     .close_timeout(Duration::from_secs(2));
/// assert_eq!(config.max_message_size, 1 << 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Largest frame payload accepted (default 16 MiB); larger closes with 1009.
    pub max_frame_size: usize,
    /// Largest message accepted, all fragments together (default 64 MiB); larger closes with 1009.
    pub max_message_size: usize,
    /// Most frames of under 64 bytes one message may come in (default 1,024); one more closes
    /// with 1009. See [`duplex_proto::Config::max_fragments`].
    pub max_fragments: usize,
    /// Largest HTTP head accepted during the handshake (default 8 KiB); a server answers 431.
    pub max_head_size: usize,
    /// Most header lines accepted during the handshake (default 64); a server answers 431.
    pub max_headers: usize,
    /// Time allowed for the whole opening handshake (default 10 s), so a client that trickles
    /// its request a byte at a time cannot hold a connection open.
    pub handshake_timeout: Duration,
    /// Time the peer has to answer a close frame before the transport is dropped (default 5 s).
    pub close_timeout: Duration,
    /// Buffered outgoing bytes above which sending waits for the socket to drain (default
    /// 128 KiB): a peer that does not read slows the sender down instead of growing memory.
    pub write_buffer_size: usize,
    /// Queued outgoing bytes past which the connection is dropped (default 16 MiB). Sending
    /// with [`WebSocket::send`](crate::WebSocket::send) waits at [`Config::write_buffer_size`]
    /// and never gets here; this catches code that queues without waiting
    /// ([`WebSocket::queue_prepared`](crate::WebSocket::queue_prepared) in a fan-out loop,
    /// `start_send` without `poll_ready`), so memory never grows without bound when a peer
    /// does not read. The check is made before a message is queued: one message may take the
    /// queue past the limit, the next one fails with [`Error::WriteBufferFull`](crate::Error::WriteBufferFull).
    pub max_write_buffer_size: usize,
    /// Time a write may make no progress at all, because the peer does not read, before the
    /// connection is dropped with [`Error::WriteBufferFull`](crate::Error::WriteBufferFull)
    /// (default 30 s; `None` waits forever). Any byte written restarts it, so a slow but
    /// reading peer is never cut off.
    pub write_timeout: Option<Duration>,
    /// How long the connection may stay without receiving anything before a ping is sent to
    /// check that the peer is still there (default 30 s, below the 60 s idle timeout of common
    /// proxies and load balancers, so it also keeps them from dropping the connection; `None`
    /// sends no pings). Driven by reading: see [`WebSocket::rtt`](crate::WebSocket::rtt).
    pub ping_interval: Option<Duration>,
    /// How long a keepalive ping may wait for its pong before the connection is failed with
    /// close code 1011 and [`Error::KeepaliveTimeout`](crate::Error::KeepaliveTimeout)
    /// (default 30 s; `None` only measures the round-trip time and never gives up).
    pub ping_timeout: Option<Duration>,
    /// permessage-deflate (RFC 7692): `None` (the default) never negotiates it; `Some` offers
    /// it (client) or accepts a client's offer (server) with these settings. With context
    /// takeover each connection end holds about 230 KiB (12 window bits; 340 KiB at 15) from
    /// its first compressed message on; with `no_context_takeover` it holds none while idle.
    pub deflate: Option<DeflateConfig>,
}

impl Default for Config {
    fn default() -> Self {
        let proto = duplex_proto::Config::default();
        Config {
            max_frame_size: proto.max_frame_size,
            max_message_size: proto.max_message_size,
            max_fragments: proto.max_fragments,
            max_head_size: 8 * 1024,
            max_headers: 64,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            write_buffer_size: 128 * 1024,
            max_write_buffer_size: 16 * 1024 * 1024,
            write_timeout: Some(Duration::from_secs(30)),
            ping_interval: Some(Duration::from_secs(30)),
            ping_timeout: Some(Duration::from_secs(30)),
            deflate: None,
        }
    }
}

impl Config {
    /// Sets [`Config::max_frame_size`].
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// Sets [`Config::max_message_size`].
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets [`Config::max_fragments`].
    pub fn max_fragments(mut self, frames: usize) -> Self {
        self.max_fragments = frames;
        self
    }

    /// Sets [`Config::max_headers`].
    ///
    /// ```
    /// let config = duplex::Config::default().max_headers(32);
    /// assert_eq!(config.max_headers, 32);
    /// ```
    pub fn max_headers(mut self, lines: usize) -> Self {
        self.max_headers = lines;
        self
    }

    /// Sets [`Config::max_head_size`].
    pub fn max_head_size(mut self, bytes: usize) -> Self {
        self.max_head_size = bytes;
        self
    }

    /// Sets [`Config::handshake_timeout`].
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets [`Config::close_timeout`].
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Sets [`Config::write_buffer_size`].
    pub fn write_buffer_size(mut self, bytes: usize) -> Self {
        self.write_buffer_size = bytes;
        self
    }

    /// Sets [`Config::max_write_buffer_size`].
    pub fn max_write_buffer_size(mut self, bytes: usize) -> Self {
        self.max_write_buffer_size = bytes;
        self
    }

    /// Sets [`Config::write_timeout`].
    pub fn write_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Sets [`Config::ping_interval`] and [`Config::ping_timeout`].
    ///
    /// ```
    /// use std::time::Duration;
    /// // Ping after 10 s of silence, give up 5 s later.
    /// let config = duplex::Config::default()
    ///     .keepalive(Some(Duration::from_secs(10)), Some(Duration::from_secs(5)));
    /// // No keepalive at all.
    /// let quiet = duplex::Config::default().keepalive(None, None);
    /// ```
    pub fn keepalive(mut self, interval: Option<Duration>, timeout: Option<Duration>) -> Self {
        self.ping_interval = interval;
        self.ping_timeout = timeout;
        self
    }

    /// Sets [`Config::deflate`].
    pub fn deflate(mut self, deflate: Option<DeflateConfig>) -> Self {
        self.deflate = deflate;
        self
    }

    pub(crate) fn proto(&self) -> duplex_proto::Config {
        duplex_proto::Config::default()
            .max_frame_size(self.max_frame_size)
            .max_message_size(self.max_message_size)
            .max_fragments(self.max_fragments)
    }

    pub(crate) fn head_limits(&self) -> duplex_proto::handshake::head::HeadLimits {
        duplex_proto::handshake::head::HeadLimits {
            max_bytes: self.max_head_size,
            max_headers: self.max_headers,
        }
    }
}

/// A shared copy of `config`. Connections made with equal settings (the usual case: a server
/// applies one configuration to every connection) share one allocation, so that an idle
/// connection carries a pointer instead of the whole configuration. Each thread remembers the
/// last few configurations it handed out.
pub(crate) fn shared(config: Config) -> Arc<Config> {
    const KEPT: usize = 4;
    thread_local! {
        static RECENT: RefCell<Vec<Arc<Config>>> = const { RefCell::new(Vec::new()) };
    }
    RECENT
        .try_with(|recent| {
            let mut recent = recent.borrow_mut();
            if let Some(found) = recent.iter().find(|c| ***c == config) {
                return found.clone();
            }
            let fresh = Arc::new(config);
            if recent.len() == KEPT {
                recent.remove(0);
            }
            recent.push(fresh.clone());
            fresh
        })
        .unwrap_or_else(|_| Arc::new(config))
}
