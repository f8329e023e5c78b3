//! What a hub allows and how it behaves: auth, limits, history, timeouts.

use std::path::PathBuf;
use std::time::Duration;

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
    /// Origins allowed to open WebSockets (`https://host:port`). Empty: any origin. Requests
    /// without an `Origin` header (non-browser clients) are always allowed, since the check
    /// exists to stop other web sites from using a visitor's browser.
    pub allowed_origins: Vec<String>,
    /// Open TCP connections (pages and WebSockets together) above which requests get 503
    /// (default 10 000).
    pub max_connections: usize,
    /// Largest chat message in bytes (default 64 KiB); larger closes with 1009.
    pub max_message_size: usize,
    /// Largest message on `/echo` (default 16 MiB, what the Autobahn|TestSuite sends).
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
    /// Time to read a request head (default 10 s).
    pub handshake_timeout: Duration,
    /// Time a peer has to take our close frame and answer it (default 5 s); also how long a
    /// disconnected slow recipient has to read what is already on its way.
    pub close_timeout: Duration,
    /// Time connections get to close during a graceful shutdown before they are dropped
    /// (default 10 s).
    pub shutdown_timeout: Duration,
    /// Quiet time after which an `/echo` connection over plain TCP is parked: it gives up its
    /// task until it has something to read, which takes an idle connection from about 1.9 to
    /// 0.9 KiB of server memory (default 1 s; `None`: never). Quiet is checked in periods of
    /// this length, so a connection is parked after one to two periods without traffic. A
    /// connection with nothing to read right after its handshake is parked at once.
    pub park_after: Option<Duration>,
    /// TLS for `https://` and `wss://` (see [`duplex::tls::server_config_from_pem`]); `None`
    /// serves plain HTTP and `ws://`.
    pub tls: Option<std::sync::Arc<duplex::tls::rustls::ServerConfig>>,
    /// The WebSocket settings every connection starts from (permessage-deflate, write
    /// buffer, head limits); message sizes and timeouts above override its own.
    pub websocket: duplex::Config,
}

impl HubConfig {
    /// The defaults, with history in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        HubConfig {
            data_dir: data_dir.into(),
            token: None,
            allowed_origins: Vec::new(),
            max_connections: 10_000,
            max_message_size: 64 * 1024,
            max_echo_message_size: 16 * 1024 * 1024,
            rate_limit: 20,
            history_limit: 1000,
            history_on_join: 50,
            send_queue: 256,
            handshake_timeout: Duration::from_secs(10),
            tls: None,
            close_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
            park_after: Some(Duration::from_secs(1)),
            websocket: duplex::Config::default(),
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

    /// Sets [`HubConfig::max_message_size`].
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
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

    /// Sets [`HubConfig::close_timeout`].
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
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

    /// Sets [`HubConfig::websocket`].
    pub fn websocket(mut self, config: duplex::Config) -> Self {
        self.websocket = config;
        self
    }

    /// The WebSocket configuration of a chat connection.
    pub(crate) fn chat_ws(&self) -> duplex::Config {
        self.ws(self.max_message_size)
    }

    /// The WebSocket configuration of an echo connection.
    pub(crate) fn echo_ws(&self) -> duplex::Config {
        self.ws(self.max_echo_message_size)
    }

    // `duplex::Config` is `Copy` today; cloning keeps this compiling if it grows a field
    // that is not.
    #[allow(clippy::clone_on_copy)]
    fn ws(&self, max_message: usize) -> duplex::Config {
        self.websocket
            .clone()
            .max_message_size(max_message)
            .max_frame_size(max_message)
            .handshake_timeout(self.handshake_timeout)
            .close_timeout(self.close_timeout)
    }
}
