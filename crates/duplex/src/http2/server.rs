//! The server side: accept an HTTP/2 connection, take its requests, upgrade the extended
//! CONNECTs to WebSockets (RFC 8441 section 5) and answer the others.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use duplex_proto::handshake::server::{reject_error, UpgradeRequest};
use duplex_proto::handshake::HandshakeError;
use duplex_proto::Role;
use h2::server::SendResponse;
use h2::RecvStream;
use http::header::{ALLOW, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};
use tokio::time::{timeout_at, Instant};

use super::{strip_connection_headers, H2Error, H2Stream, Settings};
use crate::server::{decide, Accepted};
use crate::{Config, Error, Incoming, MaybeTlsStream, Rejection, Result, WebSocket};

/// Stands in for the `Sec-WebSocket-Key` that HTTP/2 does without (RFC 8441 section 5), so that
/// the request goes through the same validation as an HTTP/1.1 upgrade. Its accept value is
/// never sent.
const NO_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Accepts an HTTP/2 connection on `io` (TLS after ALPN chose `h2`, or cleartext after
/// [`peek_preface`](super::peek_preface)) with the default [`Settings`]; see
/// [`accept_with_settings`].
pub async fn accept<S>(io: S, config: Config) -> Result<H2Connection>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    accept_with_settings(io, config, Settings::default()).await
}

/// Accepts an HTTP/2 connection on `io`: exchanges the prefaces and settings within
/// [`Config::handshake_timeout`], then [`tokio::spawn`]s the task that drives the connection
/// and returns the [`H2Connection`] its requests come from.
///
/// `config` is what every WebSocket of the connection gets (change it per request with
/// [`H2Request::set_config`]); its [`Config::max_head_size`] also limits each request's header
/// list. With [`Settings::enable_connect_protocol`] off, clients cannot open WebSockets on the
/// connection (ours fall back to HTTP/1.1).
///
/// # Cancel safety
///
/// Not cancel safe: a cancelled accept leaves the transport unusable.
///
/// ```no_run
/// # async fn run(tcp: tokio::net::TcpStream) -> duplex::Result<()> {
/// use duplex::http2::{accept_with_settings, Settings};
/// let settings = Settings::default().max_concurrent_streams(500);
/// let mut conn = accept_with_settings(tcp, duplex::Config::default(), settings).await?;
/// # Ok(()) }
/// ```
pub async fn accept_with_settings<S>(
    io: S,
    config: Config,
    settings: Settings,
) -> Result<H2Connection>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(settings.max_concurrent_streams)
        .initial_window_size(settings.initial_window_size)
        .initial_connection_window_size(settings.connection_window())
        .max_frame_size(settings.max_frame_size)
        .max_header_list_size(u32::try_from(config.max_head_size).unwrap_or(u32::MAX));
    if settings.enable_connect_protocol {
        builder.enable_connect_protocol();
    }
    let conn = tokio::time::timeout(config.handshake_timeout, builder.handshake::<S, Bytes>(io))
        .await
        .map_err(|_| Error::Timeout("opening handshake"))?
        .map_err(H2Error::Protocol)?;
    let (requests, rx) = mpsc::unbounded_channel();
    let shutdown = Arc::new(Notify::new());
    tokio::spawn(drive(
        conn,
        requests,
        shutdown.clone(),
        config,
        settings.idle_timeout,
    ));
    Ok(H2Connection {
        requests: rx,
        shutdown,
    })
}

/// Runs the connection: reads frames, hands requests over, writes what the streams queue, until
/// the connection ends.
async fn drive<S>(
    mut conn: h2::server::Connection<S, Bytes>,
    requests: mpsc::UnboundedSender<Result<H2Request>>,
    shutdown: Arc<Notify>,
    config: Config,
    idle_timeout: Option<Duration>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut closing = false;
    // Checked on every tick: a connection without streams at two ticks in a row is idle.
    let mut tick =
        idle_timeout.map(|every| tokio::time::interval_at(Instant::now() + every, every));
    let mut idle_at_last_tick = false;
    loop {
        let idle_check = async {
            match tick.as_mut() {
                Some(tick) => {
                    tick.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = idle_check, if !closing => {
                let idle = !conn.has_streams();
                if idle && idle_at_last_tick {
                    closing = true;
                    conn.graceful_shutdown();
                }
                idle_at_last_tick = idle;
            }
            next = conn.accept() => match next {
                None => return,
                Some(Ok((request, respond))) => {
                    idle_at_last_tick = false;
                    let request = H2Request::new(request, respond, config);
                    // Nobody takes requests any more: refuse this one (dropping it resets the
                    // stream) and let the running streams finish.
                    if requests.send(Ok(request)).is_err() && !closing {
                        closing = true;
                        conn.graceful_shutdown();
                    }
                }
                Some(Err(e)) => {
                    let _ = requests.send(Err(H2Error::Protocol(e).into()));
                    return;
                }
            },
            () = shutdown.notified(), if !closing => {
                closing = true;
                conn.graceful_shutdown();
            }
        }
    }
}

/// An accepted HTTP/2 connection: the requests its streams bring.
///
/// Its frames are read and written by a task of its own (spawned by [`accept`]), so streams run
/// whether or not [`H2Connection::next`] is being awaited; the queue of requests not taken yet
/// is bounded by [`Settings::max_concurrent_streams`]. Dropping it stops taking requests: new
/// streams are refused, and those already taken (their WebSockets) go on until they end.
///
/// ```no_run
/// # async fn run(tls: duplex::tls::ServerTlsStream<tokio::net::TcpStream>) -> duplex::Result<()> {
/// let mut conn = duplex::http2::accept(tls, duplex::Config::default()).await?;
/// while let Some(request) = conn.next().await {
///     let request = request?;
///     tokio::spawn(async move {
///         if request.request().uri().path() == "/ws" {
///             let _ws = request.upgrade(|_| Ok(())).await?;
///         } else {
///             request.respond(http::Response::new("not here\n")).await?;
///         }
///         Ok::<_, duplex::Error>(())
///     });
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct H2Connection {
    requests: mpsc::UnboundedReceiver<Result<H2Request>>,
    shutdown: Arc<Notify>,
}

impl H2Connection {
    /// The next request; `None` once the connection is over. An error is the connection's
    /// (the peer broke the protocol, the transport failed) and the last item.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a request is either returned or stays queued.
    pub async fn next(&mut self) -> Option<Result<H2Request>> {
        self.requests.recv().await
    }

    /// Starts a graceful shutdown: a `GOAWAY` tells the client to open no more streams; the
    /// streams already open (WebSockets included) go on, and the connection ends with the last
    /// of them. Close the WebSockets too (with 1001) to end it sooner.
    pub fn graceful_shutdown(&self) {
        self.shutdown.notify_one();
    }
}

/// A request on a stream of an HTTP/2 connection, not answered yet: [`upgrade`](Self::upgrade)
/// it if it is a WebSocket's extended CONNECT, or [`respond`](Self::respond) to it. The HTTP/2
/// counterpart of the HTTP/1.1 [`Handshake`](crate::Handshake).
///
/// The request is as `h2` parsed it: the URI holds scheme, authority and path; there is no
/// `Host` header. Dropping it unanswered resets the stream.
///
/// ```no_run
/// # async fn run(request: duplex::http2::H2Request) -> duplex::Result<()> {
/// if request.is_websocket() {
///     let ws = request
///         .upgrade(|incoming| {
///             incoming.select_protocol(&["chat.v1"]);
///             Ok(())
///         })
///         .await?;
/// } else {
///     request.respond(http::Response::new("ok\n")).await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct H2Request {
    request: Request<()>,
    body: RecvStream,
    respond: SendResponse<Bytes>,
    config: Config,
    deadline: Instant,
}

impl H2Request {
    fn new(request: Request<RecvStream>, respond: SendResponse<Bytes>, config: Config) -> Self {
        let (parts, body) = request.into_parts();
        H2Request {
            request: Request::from_parts(parts, ()),
            body,
            respond,
            config,
            deadline: Instant::now() + config.handshake_timeout,
        }
    }

    /// The request (method, URI, headers; the `:protocol` of an extended CONNECT is its
    /// `h2::ext::Protocol` extension).
    pub fn request(&self) -> &Request<()> {
        &self.request
    }

    /// Whether this is a WebSocket's extended CONNECT (`:method CONNECT`, `:protocol
    /// websocket`), to route it to [`upgrade`](Self::upgrade) and the rest to plain handlers.
    pub fn is_websocket(&self) -> bool {
        is_websocket_connect(&self.request)
    }

    /// The stream the request came on.
    pub fn stream_id(&self) -> u32 {
        self.respond.stream_id().as_u32()
    }

    /// Replaces the configuration the WebSocket gets if upgraded.
    pub fn set_config(&mut self, config: Config) {
        self.config = config;
    }

    /// Reads the request body, refusing one over `limit` bytes with
    /// [`H2Error::BodyTooLarge`] (answer it with that error's
    /// [`status`](H2Error::status), 413), within what is left of
    /// [`Config::handshake_timeout`] since the request arrived.
    ///
    /// ```no_run
    /// # async fn run(mut request: duplex::http2::H2Request) -> duplex::Result<()> {
    /// let body = request.read_body(64 * 1024).await?;
    /// request.respond(http::Response::new(format!("{} bytes\n", body.len()))).await?;
    /// # Ok(()) }
    /// ```
    pub async fn read_body(&mut self, limit: usize) -> Result<Bytes> {
        let body = &mut self.body;
        let read = timeout_at(self.deadline, async {
            let mut out = BytesMut::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.map_err(H2Error::Protocol)?;
                let _ = body.flow_control().release_capacity(chunk.len());
                if out.len() + chunk.len() > limit {
                    return Err(H2Error::BodyTooLarge { limit }.into());
                }
                out.extend_from_slice(&chunk);
            }
            Ok(out.freeze())
        })
        .await;
        read.map_err(|_| Error::Timeout("opening handshake"))?
    }

    /// Answers with a plain HTTP response (a page, metrics, a JSON answer): the head, then the
    /// body as flow control lets it go, within what is left of [`Config::handshake_timeout`].
    /// Connection-specific headers (`Connection`, `Upgrade`, `Transfer-Encoding`, ...), which
    /// HTTP/2 forbids, are dropped. The connection stays open for other requests.
    pub async fn respond<B: Into<Bytes>>(self, response: Response<B>) -> Result<()> {
        let H2Request {
            request,
            body: recv,
            mut respond,
            deadline,
            ..
        } = self;
        let (mut parts, body) = response.into_parts();
        let body: Bytes = body.into();
        strip_connection_headers(&mut parts.headers);
        parts.version = Version::HTTP_2;
        let empty = body.is_empty();
        let send = respond
            .send_response(Response::from_parts(parts, ()), empty)
            .map_err(H2Error::Protocol)?;
        if empty {
            return Ok(());
        }
        let mut stream = H2Stream::new(send, recv, is_https(&request));
        timeout_at(deadline, async {
            stream.write_all(&body).await?;
            stream.shutdown().await
        })
        .await
        .map_err(|_| Error::Timeout("opening handshake"))??;
        Ok(())
    }

    /// Validates the request as a WebSocket's extended CONNECT (RFC 8441 sections 4 and 5),
    /// lets `callback` decide exactly as for an HTTP/1.1 upgrade (see
    /// [`accept_with`](crate::accept_with): subprotocol, extra headers, a [`Rejection`]), and
    /// answers `200` with the chosen subprotocol and permessage-deflate parameters, or the
    /// rejection.
    ///
    /// A request that is not an extended CONNECT is answered 405 (`Allow: CONNECT`), one whose
    /// `:protocol` is not `websocket` 400, a version other than 13 426, and the error
    /// returned is the same [`Error::Handshake`] as over HTTP/1.1; a rejection is
    /// [`Error::Rejected`]. The WebSocket runs on the stream, as [`MaybeTlsStream::H2`].
    pub async fn upgrade<F>(self, callback: F) -> Result<WebSocket<MaybeTlsStream>>
    where
        F: FnOnce(&mut Incoming<'_>) -> Result<(), Rejection>,
    {
        let upgrade = match validate(&self.request) {
            Ok(upgrade) => upgrade,
            Err(e) => {
                let mut answer = reject_error(&e);
                match &e {
                    HandshakeError::MethodNotAllowed(_) => {
                        answer = duplex_proto::handshake::server::reject(
                            StatusCode::METHOD_NOT_ALLOWED,
                            "a WebSocket over HTTP/2 is opened with an extended CONNECT",
                        );
                        answer
                            .headers_mut()
                            .insert(ALLOW, HeaderValue::from_static("CONNECT"));
                    }
                    HandshakeError::Upgrade => {
                        answer = duplex_proto::handshake::server::reject(
                            StatusCode::BAD_REQUEST,
                            "extended CONNECT with a :protocol other than websocket",
                        );
                    }
                    _ => {}
                }
                let _ = self.respond(answer).await;
                return Err(e.into());
            }
        };
        let accepted = match decide(&self.request, &upgrade, &self.config, callback) {
            Ok(accepted) => accepted,
            Err(rejection) => {
                let status = rejection.status();
                let _ = self.respond(rejection.into_response()).await;
                return Err(Error::Rejected(status));
            }
        };
        let Accepted {
            response,
            protocol,
            deflate,
        } = accepted;
        // RFC 8441 section 5: a 2xx answer, without the Upgrade handshake's headers.
        let (mut parts, ()) = response.into_parts();
        parts.status = StatusCode::OK;
        parts.version = Version::HTTP_2;
        parts.headers.remove(SEC_WEBSOCKET_ACCEPT);
        strip_connection_headers(&mut parts.headers);
        let H2Request {
            request,
            body,
            mut respond,
            config,
            ..
        } = self;
        let send = respond
            .send_response(Response::from_parts(parts, ()), false)
            .map_err(H2Error::Protocol)?;
        let stream = H2Stream::new(send, body, is_https(&request));
        Ok(WebSocket::from_raw(
            MaybeTlsStream::H2(Box::new(stream)),
            Role::Server,
            config,
            BytesMut::new(),
        )
        .with_protocol(protocol)
        .with_deflate(deflate))
    }
}

/// Whether a request is an extended CONNECT for a WebSocket (RFC 8441 section 4).
pub(crate) fn is_websocket_connect<B>(request: &Request<B>) -> bool {
    request.method() == Method::CONNECT
        && request
            .extensions()
            .get::<h2::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

fn is_https<B>(request: &Request<B>) -> bool {
    request.uri().scheme_str() == Some("https")
}

/// RFC 8441 section 5: the extended CONNECT carries the handshake of RFC 6455 without
/// `Upgrade`, `Connection` and the key; the rest (version, subprotocols, extensions) is checked
/// by the same code as an HTTP/1.1 upgrade, on an equivalent HTTP/1.1 request.
fn validate(request: &Request<()>) -> std::result::Result<UpgradeRequest, HandshakeError> {
    if request.method() != Method::CONNECT {
        return Err(HandshakeError::MethodNotAllowed(
            request.method().to_string(),
        ));
    }
    if !is_websocket_connect(request) {
        return Err(HandshakeError::Upgrade);
    }
    let mut equivalent = Request::new(());
    *equivalent.version_mut() = Version::HTTP_11;
    *equivalent.headers_mut() = request.headers().clone();
    let headers = equivalent.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(SEC_WEBSOCKET_KEY, HeaderValue::from_static(NO_KEY));
    UpgradeRequest::validate(&equivalent)
}
