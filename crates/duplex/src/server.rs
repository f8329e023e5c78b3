//! The server side of the opening handshake over a transport: read the request, let the
//! application look at it (path, auth, origin, subprotocol), answer 101 or a rejection.

use std::borrow::Cow;
use std::future::poll_fn;
use std::pin::Pin;

use bytes::BytesMut;
use duplex_proto::deflate::negotiate;
use duplex_proto::handshake::head::{parse_request, write_response};
use duplex_proto::handshake::server::{reject_error, UpgradeRequest};
use duplex_proto::handshake::HandshakeError;
use duplex_proto::Role;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};

use crate::{Config, Error, Result, WebSocket};

/// Growth step of the buffer a request head is read into.
const HEAD_CHUNK: usize = 1024;

/// An HTTP response that refuses an upgrade: the one way to say no, returned by an
/// [`accept_with`] callback, the [`crate::auth`] checks and the `duplex::hyper` helpers.
///
/// Boxed so that `Result<(), Rejection>` stays one word wide.
///
/// ```
/// use duplex::Rejection;
/// let r = Rejection::new(http::StatusCode::FORBIDDEN, "origin not allowed");
/// assert_eq!(r.status(), 403);
/// let busy = Rejection::unavailable("at capacity", std::time::Duration::from_secs(5));
/// assert_eq!(busy.into_response().headers()["retry-after"], "5");
/// assert!(Rejection::unauthorized("missing credentials").into_response().headers().contains_key("www-authenticate"));
/// ```
#[derive(Debug)]
pub struct Rejection(Box<Response<String>>);

impl Rejection {
    /// A refusal with `status` and a one-line plain-text reason as the body.
    pub fn new(status: StatusCode, reason: &str) -> Self {
        Rejection(Box::new(duplex_proto::handshake::server::reject(
            status, reason,
        )))
    }

    /// 401 Unauthorized with `WWW-Authenticate: Bearer` (RFC 6750 section 3), for a request
    /// without credentials or with wrong ones.
    pub fn unauthorized(reason: &str) -> Self {
        Rejection::new(StatusCode::UNAUTHORIZED, reason).with_header(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        )
    }

    /// 503 Service Unavailable with `Retry-After` (whole seconds, at least 1): the server is
    /// at capacity or shutting down.
    pub fn unavailable(reason: &str, retry_after: std::time::Duration) -> Self {
        let secs = retry_after.as_secs().max(1);
        Rejection::new(StatusCode::SERVICE_UNAVAILABLE, reason)
            .with_header(http::header::RETRY_AFTER, HeaderValue::from(secs))
    }

    /// The refusal for a request that is not a valid upgrade, with the status the error calls
    /// for (400, 426, ...).
    #[cfg(feature = "hyper")]
    pub(crate) fn for_error(err: &HandshakeError) -> Self {
        Rejection(Box::new(reject_error(err)))
    }

    /// The status the connection is refused with.
    pub fn status(&self) -> StatusCode {
        self.0.status()
    }

    /// Adds a header to the response (`WWW-Authenticate`, `Retry-After`, ...).
    pub fn with_header(mut self, name: http::HeaderName, value: HeaderValue) -> Self {
        self.0.headers_mut().append(name, value);
        self
    }

    /// The HTTP response.
    pub fn into_response(self) -> Response<String> {
        *self.0
    }
}

/// Whether the request asks for a WebSocket (`Upgrade: websocket`), to route it to
/// the WebSocket handshake and everything else to plain HTTP handlers (with hyper:
/// `duplex::hyper::upgrade`). `Upgrade` may list several protocols (`websocket, h2c`).
/// With the `http2` feature, an HTTP/2 extended CONNECT with `:protocol websocket` (as
/// [`crate::http2::H2Request::request`] gives it) is one too.
///
/// ```
/// let req = http::Request::get("/ws").header("upgrade", "WebSocket").body(())?;
/// assert!(duplex::is_upgrade_request(&req));
/// # Ok::<_, http::Error>(())
/// ```
pub fn is_upgrade_request<B>(request: &Request<B>) -> bool {
    #[cfg(feature = "http2")]
    if crate::http2::is_websocket_connect(request) {
        return true;
    }
    request
        .headers()
        .get_all(http::header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("websocket"))
}

/// Accepts a WebSocket connection on `io` with the default [`Config`], whatever the path.
///
/// ```no_run
/// # async fn run() -> duplex::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// let (tcp, _) = listener.accept().await?;
/// let mut ws = duplex::accept(tcp).await?;
/// while let Some(Ok(msg)) = ws.recv().await {
///     if msg.is_text() || msg.is_binary() {
///         ws.send(msg).await?;
///     }
/// }
/// # Ok(()) }
/// ```
pub async fn accept<S>(io: S) -> Result<WebSocket<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    accept_with(io, Config::default(), |_| Ok(())).await
}

/// Accepts a WebSocket connection after `callback` has seen the request.
///
/// The callback may pick a subprotocol, add response headers, or refuse the upgrade with any
/// status (401 without credentials, 403 for a foreign `Origin`, 404 for an unknown path, 503
/// at capacity). Malformed handshakes are answered by the library itself: 405 for a method
/// other than GET, 400 for missing upgrade headers or key, 426 for a version other than 13,
/// 431 for a head over [`Config::max_head_size`]. The whole handshake must finish within
/// [`Config::handshake_timeout`].
///
/// ```no_run
/// use duplex::accept_with;
/// # async fn run(tcp: tokio::net::TcpStream) -> duplex::Result<()> {
/// let ws = accept_with(tcp, duplex::Config::default(), |incoming| {
///     if incoming.query_param("token").as_deref() != Some("secret") {
///         return Err(duplex::Rejection::unauthorized("missing or wrong token"));
///     }
///     incoming.select_protocol(&["chat.v1"]);
///     Ok(())
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub async fn accept_with<S, F>(io: S, config: Config, callback: F) -> Result<WebSocket<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&mut Incoming<'_>) -> Result<(), Rejection>,
{
    let deadline = Instant::now() + config.handshake_timeout;
    let handshake = Handshake::read_at(io, config, deadline).await?;
    handshake.upgrade_at(callback, deadline).await
}

/// An HTTP request read from a transport, not yet answered: upgrade it, or answer it as plain
/// HTTP. Lets one port serve both pages and WebSockets.
///
/// ```no_run
/// use duplex::Handshake;
/// # async fn run(tcp: tokio::net::TcpStream) -> duplex::Result<()> {
/// let handshake = Handshake::read(tcp, duplex::Config::default()).await?;
/// if handshake.request().uri().path() == "/healthz" {
///     handshake.respond(http::Response::new("ok\n".to_string())).await?;
/// } else {
///     let ws = handshake.upgrade(|_| Ok(())).await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Handshake<S> {
    io: S,
    buf: BytesMut,
    request: Request<()>,
    config: Config,
    deadline: Instant,
}

impl<S> Handshake<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Reads a request head within [`Config::handshake_timeout`]. A head that is malformed or
    /// over the limits is answered (400 or 431) and reported as an error.
    pub async fn read(io: S, config: Config) -> Result<Self> {
        let deadline = Instant::now() + config.handshake_timeout;
        Self::read_at(io, config, deadline).await
    }

    async fn read_at(mut io: S, config: Config, deadline: Instant) -> Result<Self> {
        // A small buffer, grown 1 KiB at a time up to the head limit: heads are a few hundred
        // bytes, and a server accepting many connections at once should not hold a frame-sized
        // read buffer for each handshake in progress.
        let mut buf = BytesMut::with_capacity(HEAD_CHUNK);
        let parsed = timeout_at(deadline, async {
            loop {
                if let Some(done) = parse_request(&buf, config.head_limits())? {
                    return Ok(done);
                }
                if buf.len() == buf.capacity() {
                    buf.reserve(HEAD_CHUNK);
                }
                let n =
                    poll_fn(|cx| tokio_util::io::poll_read_buf(Pin::new(&mut io), cx, &mut buf))
                        .await?;
                if n == 0 {
                    return Err(Error::Handshake(HandshakeError::Malformed(
                        "connection closed before the request was complete".into(),
                    )));
                }
            }
        })
        .await;
        let (request, len) = match parsed {
            Err(_) => return Err(Error::Timeout("opening handshake")),
            Ok(Ok(done)) => done,
            Ok(Err(Error::Handshake(e))) => {
                let _ = timeout_at(deadline, send_response(&mut io, &reject_error(&e))).await;
                return Err(e.into());
            }
            Ok(Err(e)) => return Err(e),
        };
        let _ = buf.split_to(len);
        if buf.is_empty() {
            // No frame bytes came with the head: the connection takes a pooled read buffer
            // when it next reads, and holds none until then.
            buf = BytesMut::new();
        }
        Ok(Handshake {
            io,
            buf,
            request,
            config,
            deadline,
        })
    }

    /// The request.
    pub fn request(&self) -> &Request<()> {
        &self.request
    }

    /// Replaces the configuration the connection gets if upgraded, so that a server with
    /// several endpoints can choose limits by path after reading the request.
    pub fn set_config(&mut self, config: Config) {
        self.config = config;
    }

    /// Reads the `len` bytes of a request body that follow the head (those that came with
    /// the head first), within what is left of [`Config::handshake_timeout`], so that a plain
    /// HTTP route can take a small body (an API's JSON) before it [`respond`](Self::respond)s.
    ///
    /// The caller decides `len` (from `Content-Length`) and must bound it first: this
    /// allocates `len` bytes. A transport that ends before `len` bytes fails with
    /// [`Error::Handshake`]; the time running out, with [`Error::Timeout`].
    ///
    /// ```no_run
    /// # async fn run(tcp: tokio::net::TcpStream) -> duplex::Result<()> {
    /// let mut handshake = duplex::Handshake::read(tcp, duplex::Config::default()).await?;
    /// let len: usize = handshake.request().headers().get("content-length")
    ///     .and_then(|v| v.to_str().ok()?.parse().ok())
    ///     .unwrap_or(0);
    /// if len <= 64 * 1024 {
    ///     let body = handshake.read_body(len).await?;
    ///     handshake.respond(http::Response::new(format!("{} bytes\n", body.len()))).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn read_body(&mut self, len: usize) -> Result<bytes::Bytes> {
        use tokio::io::AsyncReadExt;
        let mut body = BytesMut::with_capacity(len);
        let early = self.buf.len().min(len);
        body.extend_from_slice(&self.buf.split_to(early));
        let io = &mut self.io;
        let read = timeout_at(self.deadline, async {
            while body.len() < len {
                // `read_buf` would fill the spare capacity; limit it to what is still owed,
                // so that bytes after the body stay in the transport.
                let mut chunk = (&mut *io).take((len - body.len()) as u64);
                if chunk.read_buf(&mut body).await? == 0 {
                    return Err(Error::Handshake(HandshakeError::Malformed(
                        "connection closed before the body was complete".into(),
                    )));
                }
            }
            Ok(())
        })
        .await;
        match read {
            Err(_) => Err(Error::Timeout("opening handshake")),
            Ok(result) => result.map(|()| body.freeze()),
        }
    }

    /// Answers with a plain HTTP response (the connection is then closed) and returns the
    /// transport.
    pub async fn respond(mut self, response: Response<String>) -> Result<S> {
        timeout_at(self.deadline, send_response(&mut self.io, &response))
            .await
            .map_err(|_| Error::Timeout("opening handshake"))??;
        Ok(self.io)
    }

    /// Validates the request as a WebSocket upgrade, lets `callback` decide, and answers.
    /// See [`accept_with`].
    pub async fn upgrade<F>(self, callback: F) -> Result<WebSocket<S>>
    where
        F: FnOnce(&mut Incoming<'_>) -> Result<(), Rejection>,
    {
        let deadline = self.deadline;
        self.upgrade_at(callback, deadline).await
    }

    async fn upgrade_at<F>(mut self, callback: F, deadline: Instant) -> Result<WebSocket<S>>
    where
        F: FnOnce(&mut Incoming<'_>) -> Result<(), Rejection>,
    {
        let upgrade = match UpgradeRequest::validate(&self.request) {
            Ok(u) => u,
            Err(e) => {
                let _ = timeout_at(deadline, send_response(&mut self.io, &reject_error(&e))).await;
                return Err(e.into());
            }
        };
        let accepted = match decide(&self.request, &upgrade, &self.config, callback) {
            Ok(accepted) => accepted,
            Err(rejection) => {
                let status = rejection.status();
                let _ = timeout_at(
                    deadline,
                    send_response(&mut self.io, &rejection.into_response()),
                )
                .await;
                return Err(Error::Rejected(status));
            }
        };
        let Accepted {
            response,
            protocol,
            deflate,
        } = accepted;
        let mut head = Vec::with_capacity(256);
        write_response(&response.map(|()| ""), &mut head);
        timeout_at(deadline, self.io.write_all(&head))
            .await
            .map_err(|_| Error::Timeout("opening handshake"))??;
        Ok(
            WebSocket::from_raw(self.io, Role::Server, self.config, self.buf)
                .with_protocol(protocol)
                .with_deflate(deflate),
        )
    }
}

/// The answer to a valid upgrade request that the application's callback agreed to: the 101
/// response with the chosen subprotocol, the callback's headers and the deflate answer.
pub(crate) struct Accepted {
    pub(crate) response: Response<()>,
    pub(crate) protocol: Option<String>,
    pub(crate) deflate: Option<duplex_proto::deflate::DeflateParams>,
}

/// Runs the application's `callback` on a valid upgrade request and builds the answer, the same
/// way over every transport that carries the handshake.
pub(crate) fn decide<F>(
    request: &Request<()>,
    upgrade: &UpgradeRequest,
    config: &Config,
    callback: F,
) -> std::result::Result<Accepted, Rejection>
where
    F: FnOnce(&mut Incoming<'_>) -> std::result::Result<(), Rejection>,
{
    let mut incoming = Incoming {
        request,
        upgrade,
        protocol: None,
        headers: HeaderMap::new(),
    };
    callback(&mut incoming)?;
    let Incoming {
        protocol, headers, ..
    } = incoming;
    let mut response = upgrade.accept(protocol.as_deref());
    response.headers_mut().extend(headers);
    let deflate = config
        .deflate
        .and_then(|cfg| negotiate::server_accept(upgrade.extensions(), &cfg));
    if let Some((answer, _)) = &deflate {
        if let Ok(value) = HeaderValue::from_str(&answer.to_string()) {
            response
                .headers_mut()
                .insert(http::header::SEC_WEBSOCKET_EXTENSIONS, value);
        }
    }
    Ok(Accepted {
        response,
        protocol,
        deflate: deflate.map(|(_, params)| params),
    })
}

async fn send_response<S: AsyncWrite + Unpin>(
    io: &mut S,
    response: &Response<String>,
) -> Result<()> {
    let mut out = Vec::with_capacity(256 + response.body().len());
    write_response(response, &mut out);
    io.write_all(&out).await?;
    io.shutdown().await?;
    Ok(())
}

/// What an [`accept_with`] callback sees: the request, and the answer being prepared.
#[derive(Debug)]
pub struct Incoming<'a> {
    pub(crate) request: &'a Request<()>,
    pub(crate) upgrade: &'a UpgradeRequest,
    pub(crate) protocol: Option<String>,
    pub(crate) headers: HeaderMap,
}

impl Incoming<'_> {
    /// The upgrade request: path, query, headers (`Authorization`, `Origin`, `Cookie`, ...).
    pub fn request(&self) -> &Request<()> {
        self.request
    }

    /// The request path.
    pub fn path(&self) -> &str {
        self.request.uri().path()
    }

    /// The value of a query-string parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<Cow<'_, str>> {
        let query = self.request.uri().query()?;
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The value of a header, if present and valid text.
    pub fn header(&self, name: impl http::header::AsHeaderName) -> Option<&str> {
        self.request.headers().get(name)?.to_str().ok()
    }

    /// The subprotocols the client offered, in its order of preference.
    pub fn protocols(&self) -> &[String] {
        self.upgrade.protocols()
    }

    /// Chooses the first of `supported` (in the server's order) that the client offered, and
    /// returns it.
    pub fn select_protocol(&mut self, supported: &[&str]) -> Option<&str> {
        self.protocol = self.upgrade.select_protocol(supported).map(str::to_owned);
        self.protocol.as_deref()
    }

    /// Adds a header to the 101 response (for instance `Set-Cookie`).
    pub fn add_header(&mut self, name: http::HeaderName, value: HeaderValue) {
        self.headers.append(name, value);
    }
}
