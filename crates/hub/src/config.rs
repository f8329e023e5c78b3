//! What a hub allows and how it behaves: auth, limits, history, timeouts.

use std::path::PathBuf;
use std::time::Duration;

use crate::identity::JwtConfig;
pub use crate::net::Cidr;

/// A secret (an API key) that `Debug` does not print, so that it stays out of logs.
///
/// ```
/// let key = duplex_hub::Secret::new("k3y");
/// assert_eq!(key.expose(), "k3y");
/// assert!(!format!("{key:?}").contains("k3y"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Configuration of a [`Hub`](crate::Hub). Every limit has a default that is safe for a
/// public chat server; the builder methods change one at a time.
///
/// ```
/// use std::time::Duration;
/// let config = duplex_hub::HubConfig::new("/tmp/duplex-data")
///     .token("s3cret")
///     .allowed_origin("https://chat.example.com")
///     .max_connections(500)
///     .rate_limit(10);
/// assert_eq!(config.max_connections, 500);
/// assert_eq!(config.token.as_deref(), Some("s3cret"));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HubConfig {
    /// Directory of the history database (`history.sqlite3`), created if missing.
    pub data_dir: PathBuf,
    /// Shared secret required on every WebSocket upgrade, as `Authorization: Bearer TOKEN` or
    /// `?token=TOKEN` (browsers cannot set headers on a WebSocket). `None`: no auth.
    pub token: Option<String>,
    /// Signed connection tokens (JWT): with this set, every WebSocket upgrade needs a valid
    /// token (instead of [`HubConfig::token`], which is then not consulted), and the token's
    /// `sub` is the connection's identity. See [`JwtConfig`].
    pub jwt: Option<JwtConfig>,
    /// The key backends present (`Authorization: Bearer KEY`) to use the HTTP API under
    /// `/api/` (see the README); `None`: the API is off (404). Also guards `/metrics` when
    /// [`HubConfig::admin_addr`] is not set.
    pub api_key: Option<Secret>,
    /// A separate address for `/metrics` and `/healthz` (say `127.0.0.1:9090`, reachable only
    /// from the host); the main port then no longer serves them.
    pub admin_addr: Option<std::net::SocketAddr>,
    /// Peers (reverse proxies) whose `X-Forwarded-For` or `Forwarded` header is believed for
    /// the client's address; from any other peer these headers are ignored, since anyone can
    /// send them.
    pub trusted_proxies: Vec<Cidr>,
    /// Connections one client address may hold open at once (pages and WebSockets); more get
    /// 503. `None`: no limit per address.
    pub max_connections_per_ip: Option<usize>,
    /// Origins allowed to open WebSockets (`https://host:port`). Empty: any origin. Requests
    /// without an `Origin` header (non-browser clients) are always allowed, since the check
    /// exists to stop other web sites from using a visitor's browser.
    pub allowed_origins: Vec<String>,
    /// Open TCP connections (pages and WebSockets together) above which requests get 503
    /// (default 10 000).
    pub max_connections: usize,
    /// Largest message (and frame) on `/echo` (default 16 MiB, what the Autobahn|TestSuite
    /// sends); chat connections take theirs from [`HubConfig::websocket`].
    pub max_echo_message_size: usize,
    /// Messages per second a chat connection may send, on average (default 20); bursts of up
    /// to twice as many are fine. More closes the connection with 1008. 0 disables the limit.
    pub rate_limit: u32,
    /// Messages kept per room (default 1000); older ones are deleted as new ones arrive.
    pub history_limit: u64,
    /// Messages replayed to a client that joins without a sequence number (default 50).
    pub history_on_join: u64,
    /// Messages that may wait for one recipient (default 256). A recipient that falls this far
    /// behind is disconnected with [`CLOSE_TOO_SLOW`](crate::CLOSE_TOO_SLOW).
    pub send_queue: usize,
    /// Time connections get to close during a graceful shutdown before they are dropped
    /// (default 10 s).
    pub shutdown_timeout: Duration,
    /// Quiet time after which an `/echo` connection over plain TCP is parked: it gives up its
    /// task until it has something to read, which leaves an idle connection only its socket
    /// and its `WebSocket` in server memory (default 1 s; `None`: never). Quiet is checked in periods of
    /// this length, so a connection is parked after one to two periods without traffic. A
    /// connection with nothing to read right after its handshake is parked at once.
    pub park_after: Option<Duration>,
    /// TLS for `https://` and `wss://` (see [`duplex::tls::server_config_from_pem`]); `None`
    /// serves plain HTTP and `ws://`.
    pub tls: Option<std::sync::Arc<duplex::tls::rustls::ServerConfig>>,
    /// The WebSocket settings of every connection, and the only place the hub reads them
    /// from: chat connections use them as they are, echo connections with
    /// [`HubConfig::max_echo_message_size`] as their message and frame limits. The hub's
    /// defaults are the library's, except for chat messages and frames of at most 64 KiB
    /// (larger closes with 1009). Among them: the time to read a request head
    /// (`handshake_timeout`, also the TLS handshake's), and the time a peer has to answer our
    /// close frame (`close_timeout`), which is also how long a disconnected slow recipient has
    /// to read what is already on its way.
    pub websocket: duplex::Config,
    /// Rooms shared with other nodes through Redis; `None` (the default): this node alone,
    /// with its history in SQLite under [`HubConfig::data_dir`].
    pub redis: Option<RedisConfig>,
}

/// How a node shares its rooms with others through Redis (see the README's deployment
/// section). Every node of one deployment uses the same Redis and prefix.
///
/// ```
/// use std::time::Duration;
/// let redis = duplex_hub::RedisConfig::new("redis://127.0.0.1:6379/0")
///     .presence_ttl(Duration::from_secs(10));
/// let config = duplex_hub::HubConfig::new("./data").redis(redis);
/// assert_eq!(config.redis.unwrap().prefix, "duplex");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://[user:pass@]host:port[/db]` or `rediss://` for TLS.
    pub url: String,
    /// The start of every key and channel name (default `duplex`), so that several
    /// deployments can share one Redis.
    pub prefix: String,
    /// How long a member stays present without its node refreshing it (default 30 s): a node
    /// killed or cut off from Redis has its members leave within this time and a third.
    pub presence_ttl: Duration,
    /// Requests (messages, joins, room lists) that may wait for Redis at once (default 4096);
    /// more are refused with a `busy` error rather than queued without bound.
    pub max_pending: usize,
    /// With `rediss://`: the CA certificates (PEM) that Redis's certificate must chain to,
    /// instead of the public roots (a private CA, as managed Redis services and self-run TLS
    /// use).
    pub ca_file: Option<PathBuf>,
}

impl RedisConfig {
    /// A configuration for the Redis at `url`, with the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            prefix: "duplex".to_owned(),
            presence_ttl: Duration::from_secs(30),
            max_pending: 4096,
            ca_file: None,
        }
    }

    /// Sets [`RedisConfig::ca_file`].
    pub fn ca_file(mut self, pem: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(pem.into());
        self
    }

    /// Sets [`RedisConfig::prefix`].
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets [`RedisConfig::presence_ttl`].
    pub fn presence_ttl(mut self, ttl: Duration) -> Self {
        self.presence_ttl = ttl;
        self
    }

    /// Sets [`RedisConfig::max_pending`].
    pub fn max_pending(mut self, n: usize) -> Self {
        self.max_pending = n.max(1);
        self
    }
}

impl HubConfig {
    /// The defaults, with history in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        HubConfig {
            data_dir: data_dir.into(),
            token: None,
            jwt: None,
            api_key: None,
            admin_addr: None,
            trusted_proxies: Vec::new(),
            max_connections_per_ip: None,
            allowed_origins: Vec::new(),
            max_connections: 10_000,
            max_echo_message_size: 16 * 1024 * 1024,
            rate_limit: 20,
            history_limit: 1000,
            history_on_join: 50,
            send_queue: 256,
            tls: None,
            shutdown_timeout: Duration::from_secs(10),
            park_after: Some(Duration::from_secs(1)),
            websocket: duplex::Config::default()
                .max_message_size(64 * 1024)
                .max_frame_size(64 * 1024),
            redis: None,
        }
    }

    /// Serves `https://` and `wss://` with this TLS configuration.
    pub fn tls(mut self, tls: std::sync::Arc<duplex::tls::rustls::ServerConfig>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets [`HubConfig::token`].
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sets [`HubConfig::jwt`].
    pub fn jwt(mut self, jwt: JwtConfig) -> Self {
        self.jwt = Some(jwt);
        self
    }

    /// Sets [`HubConfig::api_key`].
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(Secret::new(key));
        self
    }

    /// Sets [`HubConfig::admin_addr`].
    pub fn admin_addr(mut self, addr: std::net::SocketAddr) -> Self {
        self.admin_addr = Some(addr);
        self
    }

    /// Adds a network to [`HubConfig::trusted_proxies`].
    pub fn trust_proxy(mut self, net: Cidr) -> Self {
        self.trusted_proxies.push(net);
        self
    }

    /// Sets [`HubConfig::max_connections_per_ip`].
    pub fn max_connections_per_ip(mut self, n: usize) -> Self {
        self.max_connections_per_ip = Some(n);
        self
    }

    /// Adds an origin to [`HubConfig::allowed_origins`].
    pub fn allowed_origin(mut self, origin: impl Into<String>) -> Self {
        self.allowed_origins.push(origin.into());
        self
    }

    /// Sets [`HubConfig::max_connections`].
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Sets the largest chat message and frame, in [`HubConfig::websocket`].
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.websocket = self.websocket.max_message_size(bytes).max_frame_size(bytes);
        self
    }

    /// Sets [`HubConfig::max_echo_message_size`].
    pub fn max_echo_message_size(mut self, bytes: usize) -> Self {
        self.max_echo_message_size = bytes;
        self
    }

    /// Sets [`HubConfig::rate_limit`].
    pub fn rate_limit(mut self, per_second: u32) -> Self {
        self.rate_limit = per_second;
        self
    }

    /// Sets [`HubConfig::history_limit`] (at least 1).
    pub fn history_limit(mut self, messages: u64) -> Self {
        self.history_limit = messages.max(1);
        self
    }

    /// Sets [`HubConfig::history_on_join`].
    pub fn history_on_join(mut self, messages: u64) -> Self {
        self.history_on_join = messages;
        self
    }

    /// Sets [`HubConfig::send_queue`] (at least 1).
    pub fn send_queue(mut self, messages: usize) -> Self {
        self.send_queue = messages.max(1);
        self
    }

    /// Sets the close timeout, in [`HubConfig::websocket`].
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.websocket = self.websocket.close_timeout(timeout);
        self
    }

    /// Sets the handshake timeout, in [`HubConfig::websocket`].
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.websocket = self.websocket.handshake_timeout(timeout);
        self
    }

    /// Sets [`HubConfig::shutdown_timeout`].
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Sets [`HubConfig::park_after`].
    pub fn park_after(mut self, after: Option<Duration>) -> Self {
        self.park_after = after;
        self
    }

    /// Sets [`HubConfig::redis`]: share rooms with other nodes.
    pub fn redis(mut self, redis: RedisConfig) -> Self {
        self.redis = Some(redis);
        self
    }

    /// Replaces [`HubConfig::websocket`] as a whole (its message size and timeouts included):
    /// call it before [`HubConfig::max_message_size`] and the other setters of its values.
    pub fn websocket(mut self, config: duplex::Config) -> Self {
        self.websocket = config;
        self
    }

    /// The WebSocket configuration of a chat connection.
    pub(crate) fn chat_ws(&self) -> duplex::Config {
        self.websocket_copy()
    }

    /// The WebSocket configuration of an echo connection.
    pub(crate) fn echo_ws(&self) -> duplex::Config {
        self.websocket_copy()
            .max_message_size(self.max_echo_message_size)
            .max_frame_size(self.max_echo_message_size)
    }

    // `duplex::Config` is `Copy` today; cloning keeps this compiling if it grows a field
    // that is not.
    #[allow(clippy::clone_on_copy)]
    fn websocket_copy(&self) -> duplex::Config {
        self.websocket.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::HubConfig;

    #[test]
    fn the_setters_change_the_one_websocket_config() {
        let config = HubConfig::new("unused")
            .max_message_size(1000)
            .close_timeout(Duration::from_millis(1500))
            .handshake_timeout(Duration::from_secs(3));
        assert_eq!(config.websocket.max_message_size, 1000);
        assert_eq!(config.websocket.max_frame_size, 1000);
        let chat = config.chat_ws();
        assert_eq!(chat.max_message_size, 1000);
        assert_eq!(chat.close_timeout, Duration::from_millis(1500));
        assert_eq!(chat.handshake_timeout, Duration::from_secs(3));
        let echo = config.echo_ws();
        assert_eq!(echo.max_message_size, config.max_echo_message_size);
        assert_eq!(echo.max_frame_size, config.max_echo_message_size);
        assert_eq!(echo.close_timeout, Duration::from_millis(1500));
    }

    #[test]
    fn chat_messages_default_to_64_kib() {
        let config = HubConfig::new("unused");
        assert_eq!(config.chat_ws().max_message_size, 64 * 1024);
        assert_eq!(config.chat_ws().max_frame_size, 64 * 1024);
        assert_eq!(config.echo_ws().max_message_size, 16 * 1024 * 1024);
    }
}
