//! The client side: connect to a `ws://` URL and perform the opening handshake.

use std::time::Duration;

use bytes::BytesMut;
use duplex_proto::deflate::negotiate;
use duplex_proto::handshake::client::ClientHandshake;
use duplex_proto::handshake::head::{parse_response, write_request};
use duplex_proto::handshake::HandshakeError;
use duplex_proto::Role;
use http::{HeaderName, HeaderValue, Response, Uri};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};

use crate::proxy::ProxyChoice;
use crate::{Config, Error, MaybeTlsStream, Result, WebSocket};

/// Connects to a `ws://` or `wss://` URL with the default configuration (and the proxy the
/// environment names, if any; see [`crate::proxy`]).
///
/// Returns the connection and the server's 101 response.
///
/// ```no_run
/// # async fn run() -> duplex::Result<()> {
/// let (mut ws, response) = duplex::connect("ws://127.0.0.1:8080/echo").await?;
/// ws.send(duplex::Message::text("hello")).await?;
/// # Ok(()) }
/// ```
pub async fn connect(url: &str) -> Result<(WebSocket<MaybeTlsStream>, Response<()>)> {
    ClientBuilder::new(url)?.connect().await
}

/// Options for a client connection.
///
/// ```no_run
/// # async fn run() -> duplex::Result<()> {
/// let (ws, _) = duplex::ClientBuilder::new("ws://127.0.0.1:8080/chat")?
///     .protocol("duplex.v1")
///     .header(http::header::AUTHORIZATION, "Bearer secret".parse().unwrap())
///     .connect()
///     .await?;
/// assert_eq!(ws.protocol(), Some("duplex.v1"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    pub(crate) uri: Uri,
    handshake: ClientHandshake,
    pub(crate) config: Config,
    pub(crate) connect_timeout: Duration,
    /// TLS options for `wss://` (set in `tls.rs`).
    #[cfg(feature = "tls")]
    pub(crate) tls: crate::tls::ClientTls,
    /// Where the proxy comes from (set in `proxy.rs`).
    pub(crate) proxy: ProxyChoice,
    /// Try HTTP/2 first ([`ClientBuilder::http2`]).
    #[cfg(feature = "http2")]
    pub(crate) http2: bool,
    /// HTTP/2 settings ([`ClientBuilder::http2_settings`]).
    #[cfg(feature = "http2")]
    pub(crate) http2_settings: crate::http2::Settings,
}

impl ClientBuilder {
    /// Starts building a connection to `url` (`ws://host[:port]/path?query`).
    pub fn new(url: &str) -> Result<Self> {
        let uri: Uri = url.parse().map_err(|e| Error::Url(format!("{url}: {e}")))?;
        let handshake = ClientHandshake::new(&uri).map_err(|e| match e {
            HandshakeError::Url(why) => Error::Url(format!("{url}: {why}")),
            other => other.into(),
        })?;
        Ok(ClientBuilder {
            uri,
            handshake,
            config: Config::default(),
            connect_timeout: Duration::from_secs(10),
            #[cfg(feature = "tls")]
            tls: Default::default(),
            proxy: ProxyChoice::default(),
            #[cfg(feature = "http2")]
            http2: false,
            #[cfg(feature = "http2")]
            http2_settings: Default::default(),
        })
    }

    /// Offers a subprotocol (call several times to offer several, in order of preference).
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.handshake = self.handshake.protocol(protocol);
        self
    }

    /// Adds a header to the upgrade request.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.handshake = self.handshake.header(name, value);
        self
    }

    /// Sets the connection's configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Sets the time allowed to establish the transport (default 10 s): the TCP connection,
    /// the tunnel through a proxy and the TLS handshake together. The HTTP upgrade that
    /// follows has [`Config::handshake_timeout`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Opens the connection (through a proxy and TLS as configured) and performs the
    /// handshake.
    ///
    /// With [`ClientBuilder::http2`] the WebSocket may be a stream of an HTTP/2 connection
    /// ([`MaybeTlsStream::H2`]); the response's [`version`](Response::version) says which
    /// (`HTTP_2` or `HTTP_11`).
    pub async fn connect(self) -> Result<(WebSocket<MaybeTlsStream>, Response<()>)> {
        #[cfg(feature = "http2")]
        if self.http2 {
            return crate::http2::client::connect_or_fall_back(self).await;
        }
        let io = timeout(self.connect_timeout, self.open(false))
            .await
            .map_err(|_| Error::Timeout("connect"))??;
        self.handshake_on(io).await
    }

    /// The transport: TCP to the server or to the proxy (then a tunnel), then TLS for `wss://`
    /// (offering ALPN `h2` before `http/1.1` if `offer_h2`).
    pub(crate) async fn open(&self, offer_h2: bool) -> Result<MaybeTlsStream> {
        let secure = matches!(self.uri.scheme_str(), Some("wss" | "https"));
        let host = self
            .uri
            .host()
            .ok_or_else(|| Error::Url("no host".into()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = self.uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        #[cfg(not(feature = "tls"))]
        if secure {
            return Err(Error::Url(
                "wss:// needs the `tls` feature of duplex, which this build was compiled without"
                    .into(),
            ));
        }
        let proxy = self.proxy.resolve(secure, host)?;
        let mut tcp = match &proxy {
            Some(p) => TcpStream::connect((p.host(), p.port()))
                .await
                .map_err(crate::proxy::ProxyError::Io)?,
            None => TcpStream::connect((host, port)).await?,
        };
        tcp.set_nodelay(true)?;
        if let Some(p) = &proxy {
            p.tunnel(&mut tcp, host, port).await?;
        }
        #[cfg(feature = "tls")]
        if secure {
            return self.tls.connect(host, tcp, offer_h2).await;
        }
        let _ = offer_h2;
        Ok(MaybeTlsStream::Plain(tcp))
    }

    /// The upgrade request [`ClientBuilder::connect`] sends: key, subprotocols, extension offer
    /// and headers, exactly as they go out (for logging, like a command-line client's `-v`).
    ///
    /// ```
    /// let builder = duplex::ClientBuilder::new("ws://127.0.0.1:8080/echo")?.protocol("chat");
    /// let request = builder.request();
    /// assert_eq!(request.headers()["sec-websocket-protocol"], "chat");
    /// # Ok::<(), duplex::Error>(())
    /// ```
    pub fn request(&self) -> http::Request<()> {
        self.offer().request()
    }

    /// The handshake with the permessage-deflate offer the configuration asks for.
    pub(crate) fn offer(&self) -> ClientHandshake {
        match &self.config.deflate {
            Some(cfg) => self
                .handshake
                .clone()
                .extension(negotiate::client_offer(cfg)),
            None => self.handshake.clone(),
        }
    }

    /// Performs the handshake on a transport that is already connected (a TLS stream, a
    /// tunnel through a proxy, an in-memory pipe).
    pub async fn handshake_on<S>(self, mut io: S) -> Result<(WebSocket<S>, Response<()>)>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let deadline = Instant::now() + self.config.handshake_timeout;
        let handshake = self.offer();
        let mut head = Vec::with_capacity(256);
        write_request(&handshake.request(), &mut head);
        let limits = self.config.head_limits();
        let exchange = async {
            io.write_all(&head).await?;
            let mut buf = BytesMut::with_capacity(1024);
            loop {
                if let Some((resp, len)) = parse_response(&buf, limits)? {
                    let _ = buf.split_to(len);
                    return Ok::<_, Error>((resp, buf));
                }
                if io.read_buf(&mut buf).await? == 0 {
                    return Err(HandshakeError::Malformed(
                        "connection closed before the response was complete".into(),
                    )
                    .into());
                }
            }
        };
        let (response, mut leftover) = timeout_at(deadline, exchange)
            .await
            .map_err(|_| Error::Timeout("opening handshake"))??;
        let negotiated = match handshake.validate(&response) {
            Ok(n) => n,
            Err(HandshakeError::Status { status, .. }) => {
                let body = read_body(&mut io, &response, &mut leftover, deadline).await;
                return Err(HandshakeError::Status { status, body }.into());
            }
            Err(e) => return Err(e.into()),
        };
        let deflate = match (&self.config.deflate, negotiated.extensions.as_slice()) {
            (_, []) => None,
            (Some(cfg), [answer]) => Some(negotiate::client_accept(answer, cfg)?),
            (_, _) => {
                return Err(HandshakeError::Extension(
                    "more than one extension in the answer".into(),
                )
                .into())
            }
        };
        let ws = WebSocket::from_raw(io, Role::Client, self.config, leftover)
            .with_protocol(negotiated.protocol)
            .with_deflate(deflate);
        Ok((ws, response))
    }
}

/// Reads (at most 4 KiB of) a rejection's body, for the error message. Best effort: whatever
/// arrived before the deadline.
async fn read_body<S: AsyncRead + Unpin>(
    io: &mut S,
    response: &Response<()>,
    buf: &mut BytesMut,
    deadline: Instant,
) -> String {
    const MAX: usize = 4096;
    let want = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .unwrap_or(MAX)
        .min(MAX);
    let _ = timeout_at(deadline, async {
        while buf.len() < want {
            match io.read_buf(buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    let end = buf.len().min(want);
    String::from_utf8_lossy(&buf[..end]).trim_end().to_owned()
}
