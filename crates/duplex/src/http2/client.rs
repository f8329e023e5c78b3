//! The client side: open an HTTP/2 connection (TLS with ALPN `h2`, or h2c with prior
//! knowledge), then WebSockets as extended CONNECT streams of it (RFC 8441 section 4).

use bytes::{Bytes, BytesMut};
use duplex_proto::deflate::negotiate;
use duplex_proto::handshake::extensions;
use duplex_proto::handshake::HandshakeError;
use duplex_proto::Role;
use h2::client::SendRequest;
use h2::RecvStream;
use http::header::{SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL};
use http::{Method, Request, Response, Uri, Version};
use tokio::time::{timeout, timeout_at, Instant};

use super::{strip_connection_headers, H2Error, H2Stream};
use crate::{ClientBuilder, Error, MaybeTlsStream, Result, WebSocket};

/// The most of a refused handshake's body kept for the error message.
const MAX_ERROR_BODY: usize = 4096;

/// An HTTP/2 connection to a server, on which any number of WebSockets (and plain requests)
/// are opened as streams: one TCP connection and one TLS handshake for all of them.
///
/// The connection takes its URL, subprotocols, headers, [`Config`](crate::Config), TLS and proxy
/// options from a [`ClientBuilder`]; each [`Client::websocket`] sends them with its own path.
/// The connection is driven by a task spawned by [`Client::connect`], and ends once the
/// `Client` (and its clones) and every WebSocket on it are dropped or closed. At most the
/// server's `SETTINGS_MAX_CONCURRENT_STREAMS` are open at once: a `websocket()` beyond it waits
/// for a stream to end.
///
/// ```no_run
/// # async fn run() -> duplex::Result<()> {
/// use duplex::{http2::Client, ClientBuilder, Message};
/// let client = Client::connect(ClientBuilder::new("wss://example.com/")?.protocol("chat")).await?;
/// let (mut a, _) = client.websocket("/rooms/a").await?;
/// let (mut b, _) = client.websocket("/rooms/b").await?;
/// a.send(Message::text("to a")).await?;
/// b.send(Message::text("to b")).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    send: SendRequest<Bytes>,
    builder: ClientBuilder,
    tls: bool,
}

impl Client {
    /// Opens the connection the builder describes: TCP (through the proxy if one is set), then
    /// for `wss://` TLS with ALPN `h2` (the server must choose it: otherwise
    /// [`H2Error::NotNegotiated`]), for `ws://` HTTP/2 with prior knowledge (h2c); then the
    /// HTTP/2 prefaces and the server's settings, within the builder's connect timeout and
    /// [`Config::handshake_timeout`](crate::Config::handshake_timeout).
    ///
    /// Whether the server allows WebSockets is known once this returns:
    /// [`Client::supports_websockets`].
    pub async fn connect(builder: ClientBuilder) -> Result<Client> {
        let io = timeout(builder.connect_timeout, builder.open(true))
            .await
            .map_err(|_| Error::Timeout("connect"))??;
        if io.is_tls() && io.alpn_protocol() != Some(super::ALPN_H2) {
            return Err(H2Error::NotNegotiated.into());
        }
        Client::handshake(builder, io).await
    }

    /// The HTTP/2 prefaces and settings over a transport that is to speak HTTP/2.
    async fn handshake(builder: ClientBuilder, io: MaybeTlsStream) -> Result<Client> {
        let deadline = Instant::now() + builder.config.handshake_timeout;
        let tls = io.is_tls();
        let settings = builder.http2_settings;
        let mut h2 = h2::client::Builder::new();
        h2.enable_push(false)
            .max_concurrent_streams(settings.max_concurrent_streams)
            .initial_window_size(settings.initial_window_size)
            .initial_connection_window_size(settings.connection_window())
            .max_frame_size(settings.max_frame_size)
            .max_header_list_size(u32::try_from(builder.config.max_head_size).unwrap_or(u32::MAX));
        let (send, mut conn) = timeout_at(deadline, h2.handshake::<_, Bytes>(io))
            .await
            .map_err(|_| Error::Timeout("opening handshake"))?
            .map_err(H2Error::Protocol)?;
        let ping = conn.ping_pong();
        tokio::spawn(async move {
            // Its end (or error) reaches every stream of it.
            let _ = conn.await;
        });
        // The server's SETTINGS (the first frame it sends) say whether extended CONNECT is
        // allowed. Frames are handled in order, so once a PING sent now is answered, they
        // have been applied.
        if let Some(mut ping) = ping {
            timeout_at(deadline, ping.ping(h2::Ping::opaque()))
                .await
                .map_err(|_| Error::Timeout("opening handshake"))?
                .map_err(H2Error::Protocol)?;
        }
        Ok(Client { send, builder, tls })
    }

    /// Whether the server allows WebSockets over this connection (it sent
    /// `SETTINGS_ENABLE_CONNECT_PROTOCOL`, RFC 8441 section 3).
    pub fn supports_websockets(&self) -> bool {
        self.send.is_extended_connect_protocol_enabled()
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Opens a WebSocket on a new stream: an extended CONNECT to `path_and_query` (`/chat`,
    /// `/rooms/a?since=10`) with the builder's subprotocols, permessage-deflate offer and
    /// headers, answered `200` by the server (RFC 8441 sections 4 and 5). The response is
    /// returned with the WebSocket, as by [`ClientBuilder::connect`]; its version is
    /// `HTTP_2`.
    ///
    /// Fails with [`H2Error::ExtendedConnectDisabled`] if the server does not allow WebSockets
    /// here, with [`Error::Handshake`] if it refuses this one (a non-2xx status, with the
    /// start of the body) or answers with a subprotocol or extension that was not offered.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a cancelled call may leave a stream open until its WebSocket would have
    /// been dropped (h2 resets it then).
    pub async fn websocket(
        &self,
        path_and_query: &str,
    ) -> Result<(WebSocket<MaybeTlsStream>, Response<()>)> {
        self.open(Some(path_and_query)).await
    }

    /// [`Client::websocket`] to the builder's own path and query.
    pub(crate) async fn open(
        &self,
        path_and_query: Option<&str>,
    ) -> Result<(WebSocket<MaybeTlsStream>, Response<()>)> {
        if !self.supports_websockets() {
            return Err(H2Error::ExtendedConnectDisabled.into());
        }
        let config = self.builder.config;
        let deadline = Instant::now() + config.handshake_timeout;
        let request = self.connect_request(path_and_query)?;
        let offered: Vec<String> = request
            .headers()
            .get_all(SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        let (response, stream) = timeout_at(deadline, self.exchange(request, false))
            .await
            .map_err(|_| Error::Timeout("opening handshake"))??;
        let (parts, mut body) = response.into_parts();
        if !parts.status.is_success() {
            let text = read_text(&mut body, deadline).await;
            return Err(HandshakeError::Status {
                status: parts.status,
                body: text,
            }
            .into());
        }
        let protocol = chosen_protocol(&parts.headers, &offered)?;
        let answered = extensions::parse_all(&parts.headers)?;
        let deflate = match (&config.deflate, answered.as_slice()) {
            (_, []) => None,
            (Some(cfg), [answer]) if answer.name == "permessage-deflate" => {
                Some(negotiate::client_accept(answer, cfg)?)
            }
            (Some(_), [answer]) | (None, [answer, ..]) => {
                return Err(HandshakeError::Extension(answer.name.clone()).into())
            }
            (_, _) => {
                return Err(HandshakeError::Extension(
                    "more than one extension in the answer".into(),
                )
                .into())
            }
        };
        let io = MaybeTlsStream::H2(Box::new(H2Stream::new(stream, body, self.tls)));
        let ws = WebSocket::from_raw(io, Role::Client, config, BytesMut::new())
            .with_protocol(protocol)
            .with_deflate(deflate);
        Ok((ws, Response::from_parts(parts, ())))
    }

    /// Sends an ordinary request on a new stream (a page, `/metrics`, an API call) and reads
    /// the whole response, refusing a body over
    /// [`Config::max_message_size`](crate::Config::max_message_size) with
    /// [`H2Error::BodyTooLarge`]; all within
    /// [`Config::handshake_timeout`](crate::Config::handshake_timeout). A relative URI
    /// (`/healthz`) is sent to the connection's server.
    ///
    /// ```no_run
    /// # async fn run(client: duplex::http2::Client) -> duplex::Result<()> {
    /// let mut request = http::Request::new(bytes::Bytes::new());
    /// *request.uri_mut() = http::Uri::from_static("/healthz");
    /// let response = client.request(request).await?;
    /// assert_eq!(response.status(), 200);
    /// # Ok(()) }
    /// ```
    pub async fn request(&self, request: Request<Bytes>) -> Result<Response<Bytes>> {
        let config = self.builder.config;
        let deadline = Instant::now() + config.handshake_timeout;
        let (mut parts, body) = request.into_parts();
        parts.uri = self.absolute(
            parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            &parts.uri,
        )?;
        parts.version = Version::HTTP_2;
        strip_connection_headers(&mut parts.headers);
        let limit = config.max_message_size;
        let work = async {
            let end = body.is_empty();
            let (response, mut stream) = self.exchange(Request::from_parts(parts, ()), end).await?;
            if !end {
                stream.send_data(body, true).map_err(H2Error::Protocol)?;
            }
            let (parts, mut recv) = response.into_parts();
            let mut out = BytesMut::new();
            while let Some(chunk) = recv.data().await {
                let chunk = chunk.map_err(H2Error::Protocol)?;
                let _ = recv.flow_control().release_capacity(chunk.len());
                if out.len() + chunk.len() > limit {
                    return Err(H2Error::BodyTooLarge { limit }.into());
                }
                out.extend_from_slice(&chunk);
            }
            Ok::<_, Error>(Response::from_parts(parts, out.freeze()))
        };
        timeout_at(deadline, work)
            .await
            .map_err(|_| Error::Timeout("opening handshake"))?
    }

    /// Waits for a stream slot, sends the head, waits for the response head.
    async fn exchange(
        &self,
        request: Request<()>,
        end_of_stream: bool,
    ) -> Result<(Response<RecvStream>, h2::SendStream<Bytes>)> {
        let mut send = self.send.clone().ready().await.map_err(H2Error::Protocol)?;
        let (response, stream) = send
            .send_request(request, end_of_stream)
            .map_err(H2Error::Protocol)?;
        let response = response.await.map_err(H2Error::Protocol)?;
        Ok((response, stream))
    }

    /// The URI of a request to this server: scheme, the authority the `Host` header would
    /// carry, and `path_and_query` (or `uri`'s own scheme and authority, if it has them).
    fn absolute(&self, path_and_query: &str, uri: &Uri) -> Result<Uri> {
        let scheme = uri
            .scheme_str()
            .unwrap_or(if self.tls { "https" } else { "http" })
            .to_owned();
        let authority = match uri.authority() {
            Some(a) => a.as_str().to_owned(),
            None => self.authority(),
        };
        Uri::builder()
            .scheme(scheme.as_str())
            .authority(authority.as_str())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| Error::Url(format!("{path_and_query}: {e}")))
    }

    /// `host[:port]` as the HTTP/1.1 request's `Host` header has it (no user info, no
    /// default port).
    fn authority(&self) -> String {
        let request = self.builder.request();
        request
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| self.builder.uri.host().map(str::to_owned))
            .unwrap_or_default()
    }

    /// The extended CONNECT: the HTTP/1.1 upgrade request's headers without those HTTP/2 does
    /// without (RFC 8441 section 5: no `Upgrade`, `Connection`, key), `:protocol websocket`.
    fn connect_request(&self, path_and_query: Option<&str>) -> Result<Request<()>> {
        let h1 = self.builder.offer().request();
        let path = path_and_query.map(str::to_owned).unwrap_or_else(|| {
            h1.uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned()
        });
        let uri = self.absolute(&path, &Uri::default())?;
        let (mut parts, ()) = h1.into_parts();
        parts.method = Method::CONNECT;
        parts.uri = uri;
        parts.version = Version::HTTP_2;
        parts.headers.remove(SEC_WEBSOCKET_KEY);
        strip_connection_headers(&mut parts.headers);
        parts
            .extensions
            .insert(h2::ext::Protocol::from_static("websocket"));
        Ok(Request::from_parts(parts, ()))
    }
}

/// The subprotocol the server chose, which must be one offered.
fn chosen_protocol(
    headers: &http::HeaderMap,
    offered: &[String],
) -> std::result::Result<Option<String>, HandshakeError> {
    let mut chosen = headers.get_all(SEC_WEBSOCKET_PROTOCOL).iter();
    match (chosen.next(), chosen.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => {
            let p = v.to_str().unwrap_or("").trim();
            if offered.iter().any(|o| o == p) {
                Ok(Some(p.to_owned()))
            } else {
                Err(HandshakeError::Protocol(p.to_owned()))
            }
        }
        (Some(_), Some(_)) => Err(HandshakeError::Protocol("several".to_owned())),
    }
}

/// The start of a refusal's body, for the error message; best effort before the deadline.
async fn read_text(body: &mut RecvStream, deadline: Instant) -> String {
    let mut out = Vec::new();
    let _ = timeout_at(deadline, async {
        while out.len() < MAX_ERROR_BODY {
            match body.data().await {
                Some(Ok(chunk)) => {
                    let _ = body.flow_control().release_capacity(chunk.len());
                    out.extend_from_slice(&chunk);
                }
                _ => break,
            }
        }
    })
    .await;
    out.truncate(MAX_ERROR_BODY);
    String::from_utf8_lossy(&out).trim_end().to_owned()
}

/// [`ClientBuilder::connect`] with [`ClientBuilder::http2`]: HTTP/2 if the server allows
/// WebSockets over it, HTTP/1.1 otherwise.
pub(crate) async fn connect_or_fall_back(
    builder: ClientBuilder,
) -> Result<(WebSocket<MaybeTlsStream>, Response<()>)> {
    let io = timeout(builder.connect_timeout, builder.open(true))
        .await
        .map_err(|_| Error::Timeout("connect"))??;
    if io.is_tls() && io.alpn_protocol() != Some(super::ALPN_H2) {
        // The server chose HTTP/1.1 (or nothing): go on with it on this connection.
        return builder.handshake_on(io).await;
    }
    let secure = io.is_tls();
    match Client::handshake(builder.clone(), io).await {
        Ok(client) if client.supports_websockets() => return client.open(None).await,
        Ok(_) => tracing::debug!("the server's HTTP/2 settings do not allow WebSockets"),
        // TLS said h2: the server speaks it, and its failing is an error. In cleartext the
        // server may simply not know HTTP/2 (an HTTP/1.1 server answers the preface with 400
        // or closes).
        Err(e) if secure => return Err(e),
        Err(e) => tracing::debug!("h2c prior knowledge failed ({e}); falling back to HTTP/1.1"),
    }
    let io = timeout(builder.connect_timeout, builder.open(false))
        .await
        .map_err(|_| Error::Timeout("connect"))??;
    builder.handshake_on(io).await
}

/// HTTP/2 options of a client.
impl ClientBuilder {
    /// Tries HTTP/2 first (default off): [`ClientBuilder::connect`] then opens the WebSocket as
    /// a stream of an HTTP/2 connection (RFC 8441) when the server allows it, and falls back to
    /// HTTP/1.1 when it does not. For several WebSockets over one connection, use
    /// [`Client`].
    ///
    /// - `wss://`: TLS offers ALPN `h2, http/1.1`. If the server chooses `http/1.1`, the
    ///   upgrade goes on over the same connection; if it chooses `h2` but its settings lack
    ///   `SETTINGS_ENABLE_CONNECT_PROTOCOL`, over a new connection offering `http/1.1` only.
    /// - `ws://`: HTTP/2 with prior knowledge (h2c: the connection starts with the HTTP/2
    ///   preface, RFC 9113 section 3.3). If the server does not speak it, or does not allow
    ///   WebSockets, over a new connection with HTTP/1.1.
    ///
    /// Which one was used: the returned response's [`version`](Response::version)
    /// (`HTTP_2` or `HTTP_11`), or [`MaybeTlsStream::is_http2`].
    ///
    /// ```no_run
    /// # async fn run() -> duplex::Result<()> {
    /// let (ws, response) = duplex::ClientBuilder::new("wss://example.com/chat")?
    ///     .http2(true)
    ///     .connect()
    ///     .await?;
    /// println!("over {:?}", response.version());
    /// # Ok(()) }
    /// ```
    pub fn http2(mut self, enable: bool) -> Self {
        self.http2 = enable;
        self
    }

    /// The HTTP/2 settings of connections this builder opens (windows, streams, frame size;
    /// see [`Settings`](super::Settings)).
    ///
    /// ```
    /// let builder = duplex::ClientBuilder::new("wss://example.com/")?
    ///     .http2(true)
    ///     .http2_settings(duplex::http2::Settings::default().initial_window_size(1 << 20));
    /// # Ok::<_, duplex::Error>(())
    /// ```
    pub fn http2_settings(mut self, settings: super::Settings) -> Self {
        self.http2_settings = settings;
        self
    }
}
