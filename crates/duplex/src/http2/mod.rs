//! WebSockets over HTTP/2 (RFC 8441), in both roles (cargo feature `http2`, on by default).
//!
//! An HTTP/2 connection carries many streams; with `SETTINGS_ENABLE_CONNECT_PROTOCOL` (RFC 8441
//! section 3) the server lets a client open a WebSocket as one of them, with an *extended
//! CONNECT* request (`:method CONNECT`, `:protocol websocket`) answered `200` (section 5). The
//! WebSocket then runs on the stream, an [`H2Stream`] carried by
//! [`MaybeTlsStream::H2`](crate::MaybeTlsStream::H2): frames, permessage-deflate, limits,
//! keepalive and close are the same code as over TCP, and so is everything that takes a
//! `WebSocket<MaybeTlsStream>`.
//!
//! - Servers: [`accept`] an HTTP/2 connection (over TLS with ALPN `h2`, or cleartext with prior
//!   knowledge, h2c: [`peek_preface`] tells one from HTTP/1.1 on a shared port), then take its
//!   requests with [`H2Connection::next`]: [`H2Request::upgrade`] makes a WebSocket with the
//!   same callback, subprotocol choice, deflate negotiation and [`Rejection`](crate::Rejection)s
//!   as the HTTP/1.1 [`Handshake`](crate::Handshake); [`H2Request::respond`] answers anything
//!   else (a page, metrics). [`tls::offer_http2`](crate::tls::offer_http2) makes a TLS server
//!   configuration offer ALPN `h2` and `http/1.1`.
//! - Clients: [`ClientBuilder::http2`](crate::ClientBuilder::http2) opens a WebSocket over
//!   HTTP/2 when the server allows it and over HTTP/1.1 otherwise; [`Client`] opens several
//!   over one connection.
//!
//! # Flow control and limits
//!
//! Received data goes back to the peer's window as the WebSocket reads it, so a WebSocket whose
//! application does not read stalls its own stream and no other: the connection window
//! defaults to [`Settings::max_concurrent_streams`] times [`Settings::initial_window_size`],
//! enough for every stream to fill its window without taking the others' share. Writes wait for
//! capacity, so a peer that does not read makes its stream's writes wait (and
//! [`Config::write_timeout`](crate::Config::write_timeout) applies as over TCP). A stream reset
//! by the peer ends only its WebSocket (with an [`io::ErrorKind::ConnectionReset`] error); a
//! connection error or `GOAWAY` ends all of them.
//!
//! The connection itself (frames, settings, pings, window updates) is driven by a task
//! [`tokio::spawn`]ed by [`accept`] and [`Client::connect`]; it ends when the connection does,
//! so a runtime is needed and nothing else has to poll it.
//!
//! ```no_run
//! # async fn run() -> duplex::Result<()> {
//! use duplex::{http2, Config};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let (tcp, _) = listener.accept().await?;
//! if http2::peek_preface(&tcp, Config::default().handshake_timeout).await? {
//!     let mut conn = http2::accept(tcp, Config::default()).await?;
//!     while let Some(request) = conn.next().await {
//!         let request = request?;
//!         tokio::spawn(async move {
//!             if request.is_websocket() {
//!                 let mut ws = request.upgrade(|_| Ok(())).await?;
//!                 while let Some(msg) = ws.recv().await {
//!                     let msg = msg?;
//!                     if msg.is_text() || msg.is_binary() {
//!                         ws.send(msg).await?;
//!                     }
//!                 }
//!             } else {
//!                 request.respond(http::Response::new("hello over HTTP/2\n")).await?;
//!             }
//!             Ok::<_, duplex::Error>(())
//!         });
//!     }
//! }
//! # Ok(()) }
//! ```

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

pub(crate) mod client;
mod server;
mod stream;

pub use client::Client;
pub(crate) use server::is_websocket_connect;
pub use server::{accept, accept_with_settings, H2Connection, H2Request};
pub use stream::H2Stream;

/// The HTTP/2 implementation underneath, for its types (`h2::Reason`, `h2::Error`).
pub use h2;

/// The client connection preface (RFC 9113 section 3.4): what an HTTP/2 connection with prior
/// knowledge starts with.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The ALPN protocol identifier of HTTP/2 over TLS.
pub const ALPN_H2: &[u8] = b"h2";

/// What the first bytes of a cleartext connection say it speaks, as far as they go.
///
/// ```
/// use duplex::http2::{is_preface, PREFACE};
/// assert_eq!(is_preface(PREFACE), Some(true));
/// assert_eq!(is_preface(b"PRI * HT"), None); // could still be either: read more
/// assert_eq!(is_preface(b"GET / HTTP/1.1\r\n"), Some(false));
/// assert_eq!(is_preface(b""), None);
/// ```
///
/// `Some(true)`: the HTTP/2 preface, hand the connection to [`accept`]. `Some(false)`:
/// something else (HTTP/1.1), hand it to [`Handshake::read`](crate::Handshake::read). `None`:
/// a prefix of the preface, too short to tell.
pub fn is_preface(bytes: &[u8]) -> Option<bool> {
    let n = bytes.len().min(PREFACE.len());
    if bytes[..n] != PREFACE[..n] {
        Some(false)
    } else if n == PREFACE.len() {
        Some(true)
    } else {
        None
    }
}

/// Whether a cleartext connection starts with the HTTP/2 preface (h2c with prior knowledge),
/// looking at its first bytes without consuming them, so that one port serves HTTP/1.1 and
/// h2c: `true` means [`accept`], `false` means [`Handshake::read`](crate::Handshake::read).
///
/// Waits at most `timeout` for enough bytes to tell (pass
/// [`Config::handshake_timeout`](crate::Config::handshake_timeout)); a connection that sends
/// nothing in that time is a [`Error::Timeout`](crate::Error::Timeout), one that closes first
/// reads as `false` (the HTTP/1.1 side then reports it).
///
/// # Cancel safety
///
/// Cancel safe: nothing is consumed.
///
/// ```no_run
/// # async fn run(tcp: tokio::net::TcpStream) -> duplex::Result<()> {
/// let config = duplex::Config::default();
/// if duplex::http2::peek_preface(&tcp, config.handshake_timeout).await? {
///     let conn = duplex::http2::accept(tcp, config).await?;
/// } else {
///     let handshake = duplex::Handshake::read(tcp, config).await?;
/// }
/// # Ok(()) }
/// ```
pub async fn peek_preface(tcp: &TcpStream, timeout: Duration) -> crate::Result<bool> {
    let work = async {
        let mut buf = [0u8; PREFACE.len()];
        loop {
            let n = tcp.peek(&mut buf).await?;
            if n == 0 {
                return Ok::<_, io::Error>(false);
            }
            if let Some(answer) = is_preface(&buf[..n]) {
                return Ok(answer);
            }
            // Part of the preface is here and the rest is not: peeking again at once would
            // see the same bytes. Clients send the 24 bytes in one segment; this is rare.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Err(_) => Err(crate::Error::Timeout("opening handshake")),
        Ok(result) => Ok(result?),
    }
}

/// HTTP/2 settings and limits of a connection, for both roles (the server's
/// [`accept_with_settings`], the client's
/// [`ClientBuilder::http2_settings`](crate::ClientBuilder::http2_settings)).
///
/// The header list is limited by [`Config::max_head_size`](crate::Config::max_head_size), as
/// HTTP/1.1 heads are.
///
/// ```
/// let settings = duplex::http2::Settings::default()
///     .max_concurrent_streams(1000)
///     .initial_window_size(256 * 1024);
/// assert_eq!(settings.connection_window(), 1000 * 256 * 1024);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// Server: advertise `SETTINGS_ENABLE_CONNECT_PROTOCOL`, which lets clients open
    /// WebSockets (default `true`; `false` makes clients fall back to HTTP/1.1).
    pub enable_connect_protocol: bool,
    /// The streams the peer may have open at once on the connection (default 100, the least
    /// RFC 9113 section 6.5.2 recommends): WebSockets plus requests in progress. A server
    /// refuses streams beyond it; a client's [`Client::websocket`] waits for one to end.
    pub max_concurrent_streams: u32,
    /// How many bytes the peer may send on a stream before this side has read them (default
    /// 65,535, the protocol's initial value). Larger windows let one WebSocket go faster over
    /// long round trips; the memory a connection may hold grows with it.
    pub initial_window_size: u32,
    /// The same for the whole connection; `None` (the default) means
    /// [`Settings::connection_window`]: `max_concurrent_streams × initial_window_size`, so that
    /// stalled streams cannot take the window of the others.
    pub initial_connection_window_size: Option<u32>,
    /// The largest DATA frame the peer may send (default 16,384, the protocol's minimum).
    pub max_frame_size: u32,
    /// Server: how long a connection may stay without any stream before it is shut down
    /// gracefully (`GOAWAY`; default 120 s; `None` never). Checked every `idle_timeout`, so a
    /// connection goes between one and two of them after its last stream. WebSockets are
    /// streams: a connection carrying one is never idle.
    pub idle_timeout: Option<Duration>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enable_connect_protocol: true,
            max_concurrent_streams: 100,
            initial_window_size: 65_535,
            initial_connection_window_size: None,
            max_frame_size: 16_384,
            idle_timeout: Some(Duration::from_secs(120)),
        }
    }
}

/// The largest flow-control window HTTP/2 allows.
const MAX_WINDOW: u32 = (1 << 31) - 1;

impl Settings {
    /// Sets [`Settings::enable_connect_protocol`].
    pub fn enable_connect_protocol(mut self, enable: bool) -> Self {
        self.enable_connect_protocol = enable;
        self
    }

    /// Sets [`Settings::max_concurrent_streams`].
    pub fn max_concurrent_streams(mut self, streams: u32) -> Self {
        self.max_concurrent_streams = streams;
        self
    }

    /// Sets [`Settings::initial_window_size`] (at most 2^31 - 1).
    pub fn initial_window_size(mut self, bytes: u32) -> Self {
        self.initial_window_size = bytes.min(MAX_WINDOW);
        self
    }

    /// Sets [`Settings::initial_connection_window_size`] (at most 2^31 - 1).
    pub fn initial_connection_window_size(mut self, bytes: u32) -> Self {
        self.initial_connection_window_size = Some(bytes.min(MAX_WINDOW));
        self
    }

    /// Sets [`Settings::idle_timeout`].
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`Settings::max_frame_size`] (16,384 to 16,777,215; clamped).
    pub fn max_frame_size(mut self, bytes: u32) -> Self {
        self.max_frame_size = bytes.clamp(16_384, 16_777_215);
        self
    }

    /// The connection window in force: the one set, or `max_concurrent_streams ×
    /// initial_window_size` (at most 2^31 - 1, at least the stream window).
    ///
    /// ```
    /// assert_eq!(duplex::http2::Settings::default().connection_window(), 6_553_500);
    /// ```
    pub fn connection_window(&self) -> u32 {
        self.initial_connection_window_size.unwrap_or_else(|| {
            let product =
                u64::from(self.max_concurrent_streams.max(1)) * u64::from(self.initial_window_size);
            u32::try_from(product.min(u64::from(MAX_WINDOW))).unwrap_or(MAX_WINDOW)
        })
    }
}

/// What went wrong with an HTTP/2 connection or request, beyond the WebSocket handshake
/// itself (those are [`Error::Handshake`](crate::Error::Handshake), as over HTTP/1.1).
///
/// ```
/// use duplex::http2::H2Error;
/// assert_eq!(H2Error::BodyTooLarge { limit: 10 }.status(), Some(http::StatusCode::PAYLOAD_TOO_LARGE));
/// assert_eq!(H2Error::ExtendedConnectDisabled.status(), None);
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum H2Error {
    /// The HTTP/2 connection or stream failed: a protocol error, a `GOAWAY` or reset from the
    /// peer, the transport.
    #[error("HTTP/2: {0}")]
    Protocol(#[from] h2::Error),
    /// The server did not choose HTTP/2 (TLS ALPN `h2`) when it had to ([`Client::connect`]).
    #[error("the server did not choose HTTP/2 (ALPN h2)")]
    NotNegotiated,
    /// The server does not allow WebSockets over HTTP/2: its settings lack
    /// `SETTINGS_ENABLE_CONNECT_PROTOCOL` (RFC 8441 section 3).
    #[error(
        "the server does not accept WebSockets over HTTP/2 (no SETTINGS_ENABLE_CONNECT_PROTOCOL)"
    )]
    ExtendedConnectDisabled,
    /// A request body was larger than the limit [`H2Request::read_body`] was given.
    #[error("request body over {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
}

impl H2Error {
    /// The HTTP status a server answers this error with, if it is about one request.
    pub fn status(&self) -> Option<http::StatusCode> {
        match self {
            H2Error::BodyTooLarge { .. } => Some(http::StatusCode::PAYLOAD_TOO_LARGE),
            _ => None,
        }
    }

    /// The HTTP/2 error code the peer reset the stream or closed the connection with, if that
    /// is what happened.
    pub fn reason(&self) -> Option<h2::Reason> {
        match self {
            H2Error::Protocol(e) => e.reason(),
            _ => None,
        }
    }
}

/// Headers that mean something only to one HTTP/1.1 connection and must not appear in HTTP/2
/// (RFC 9113 section 8.2.2); `h2` refuses to send them.
pub(crate) fn strip_connection_headers(headers: &mut http::HeaderMap) {
    use http::header::{CONNECTION, HOST, TE, TRANSFER_ENCODING, UPGRADE};
    for name in [CONNECTION, UPGRADE, TRANSFER_ENCODING, TE, HOST] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}
