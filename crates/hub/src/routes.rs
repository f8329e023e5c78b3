//! One TCP connection from request to end: read the request head, then answer it as plain
//! HTTP (page, health, metrics) or upgrade it to the echo or a chat endpoint after the
//! auth checks.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use duplex::auth::{ConnectionLimit, ConnectionPermit};
use duplex::is_upgrade_request;
use duplex::{Handshake, Rejection as Refusal};
use duplex::{MaybeTlsStream, WebSocket};
use http::header::{HeaderValue, CACHE_CONTROL, CONNECTION, CONTENT_TYPE};
use http::{Method, Response, StatusCode};
use tokio::sync::watch;
use tracing::{debug, info};

use crate::auth::Access;
use crate::broker::{Broker, Mode};
use crate::config::HubConfig;
use crate::identity::Identity;
use crate::metrics::{Metrics, Rejection};
use crate::net::{client_ip, PerIp};
use crate::open::OpenSession;
use crate::page;
use crate::parking::{EchoConnection, Parking};
use crate::protocol::{clean_name, valid_room, SUBPROTOCOL};
use crate::session::Session;

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: HubConfig,
    /// Who may open a WebSocket.
    pub(crate) access: Access,
    /// Open TCP connections, pages and WebSockets together, up to
    /// [`HubConfig::max_connections`].
    pub(crate) limit: ConnectionLimit,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) broker: Broker,
    /// With Redis: whether this node can reach it (`/healthz` says 503 while it cannot).
    pub(crate) redis: Option<crate::cluster::Health>,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) next_id: AtomicU64,
    /// Where idle echo connections are parked (`None`: they keep their tasks).
    pub(crate) parking: Option<Parking>,
    /// Open connections per client address (`None`: not limited).
    pub(crate) per_ip: Option<PerIp>,
}

/// What a client refused at the connection limit is told to wait before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The WebSocket endpoints.
pub(crate) enum Endpoint {
    Echo,
    Chat(String),
}

/// A WebSocket session, ready to run once its handshake is done. Boxed so that a connection's
/// task holds only the step it is in: the handshake's state is freed before the session starts,
/// and an idle session keeps only its own (see docs/BENCHMARKS.md, memory per idle connection).
pub(crate) type SessionFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where a request goes, by its path and whether it asks for a WebSocket; the same over
/// HTTP/1.1 and HTTP/2.
pub(crate) enum Route {
    Api,
    WebSocket(Endpoint),
    Page,
    NotFound,
}

pub(crate) fn route(path: &str, upgrade: bool) -> Route {
    if path == "/api" || path.starts_with("/api/") {
        return Route::Api;
    }
    match (path, upgrade) {
        ("/echo", _) => Route::WebSocket(Endpoint::Echo),
        ("/", true) => Route::WebSocket(Endpoint::Chat("general".to_owned())),
        (p, true) => match p.strip_prefix("/rooms/") {
            Some(room) if valid_room(room) => Route::WebSocket(Endpoint::Chat(room.to_owned())),
            _ => Route::NotFound,
        },
        (_, false) => Route::Page,
    }
}

/// Answers one connection's request (TLS already terminated, if any): plain HTTP routes are
/// served here; an upgrade returns the WebSocket session to run. `permit` is `None` when the
/// hub is at its connection limit: the request is then read and answered with 503, so the
/// client learns why.
pub(crate) async fn handle(
    stream: MaybeTlsStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    permit: Option<ConnectionPermit>,
) -> Option<SessionFuture> {
    let config = &shared.config;
    let mut handshake = match Box::pin(Handshake::read(stream, config.chat_ws())).await {
        Ok(h) => h,
        Err(e) => {
            // Malformed or oversized heads were answered (400/431) by the library.
            if matches!(e, duplex::Error::Handshake(_)) {
                shared.metrics.reject(Rejection::BadRequest);
            }
            debug!(%peer, "request not read: {e}");
            return None;
        }
    };
    let request = handshake.request();
    let path = request.uri().path().to_owned();
    let Some(permit) = permit else {
        shared.metrics.reject(Rejection::Capacity);
        info!(%peer, %path, "refused: at the connection limit");
        let refusal = duplex::Rejection::unavailable("server at capacity, try later", RETRY_AFTER);
        let _ = Box::pin(handshake.respond(refusal.into_response())).await;
        return None;
    };
    let client = client_ip(peer, request.headers(), &config.trusted_proxies);
    let ip_permit = match &shared.per_ip {
        None => None,
        Some(per_ip) => match per_ip.try_acquire(client) {
            Some(permit) => Some(permit),
            None => {
                shared.metrics.reject(Rejection::Capacity);
                info!(%peer, %client, %path, "refused: too many connections from this address");
                let refusal = Refusal::unavailable(
                    "too many connections from your address, try later",
                    RETRY_AFTER,
                );
                let _ = Box::pin(handshake.respond(refusal.into_response())).await;
                return None;
            }
        },
    };
    let endpoint = match route(&path, is_upgrade_request(request)) {
        Route::Api => {
            Box::pin(crate::api::serve(handshake, &shared, peer)).await;
            return None;
        }
        Route::WebSocket(endpoint) => endpoint,
        Route::NotFound => {
            Box::pin(not_found(handshake, &shared, peer)).await;
            return None;
        }
        Route::Page => {
            Box::pin(serve_page(handshake, &shared, peer)).await;
            return None;
        }
    };
    if matches!(endpoint, Endpoint::Echo) {
        handshake.set_config(config.echo_ws());
    }
    let mut who = Who::default();
    let upgraded = Box::pin(
        handshake.upgrade(|incoming| check_upgrade(incoming, &endpoint, &shared, &mut who)),
    )
    .await;
    let ws = match upgraded {
        Ok(ws) => ws,
        Err(duplex::Error::Rejected(status)) => {
            info!(%peer, %path, %status, "upgrade refused");
            return None;
        }
        Err(e) => {
            shared.metrics.reject(Rejection::BadRequest);
            debug!(%peer, %path, "upgrade failed: {e}");
            return None;
        }
    };
    let open = OpenSession::new(&shared.metrics, permit).with_ip(ip_permit);
    start_session(ws, endpoint, peer, shared, open, who)
}

/// The checks of an upgrade, over HTTP/1.1 and HTTP/2 alike: the token or JWT (401), the
/// origin (403), the subprotocol, and for a chat connection who it is.
pub(crate) fn check_upgrade(
    incoming: &mut duplex::Incoming<'_>,
    endpoint: &Endpoint,
    shared: &Shared,
    who: &mut Who,
) -> Result<(), Refusal> {
    let identity = match shared.access.check(incoming.request()) {
        Ok(identity) => identity,
        Err(denied) => {
            shared.metrics.reject(denied.metric);
            return Err(denied.refusal);
        }
    };
    if let Endpoint::Chat(room) = endpoint {
        let json = incoming.select_protocol(&[SUBPROTOCOL]).is_some();
        // A plain client joins its room as it connects and cannot read a JSON error:
        // while Redis is away it gets 503 before the upgrade, not a close right after it.
        if !json && shared.redis.as_ref().is_some_and(|r| !r.is_up()) {
            shared.metrics.reject(Rejection::Capacity);
            return Err(Refusal::unavailable(
                "the chat's shared store is unreachable, try later",
                RETRY_AFTER,
            ));
        }
        match &identity {
            // A plain client's only room is the URL's: refused here, before the upgrade,
            // since it has no way to read a JSON error. JSON clients' joins are checked
            // by their session.
            Some(id) if !json && !id.may_join(room) => {
                shared.metrics.reject(Rejection::Forbidden);
                return Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    "this token does not allow this room",
                ));
            }
            // With a token, the name is the token's: `?name=` is ignored.
            Some(_) => {}
            None => who.plain_name = incoming.query_param("name").and_then(|n| clean_name(&n)),
        }
    }
    who.identity = identity.map(Arc::new);
    Ok(())
}

/// The session of an upgraded connection (or `None` when an echo connection went straight to
/// the parking lot).
pub(crate) fn start_session(
    ws: WebSocket<MaybeTlsStream>,
    endpoint: Endpoint,
    peer: SocketAddr,
    shared: Arc<Shared>,
    open: OpenSession,
    who: Who,
) -> Option<SessionFuture> {
    shared.metrics.websocket_opened(ws.get_ref().is_http2());
    Some(match endpoint {
        Endpoint::Echo => {
            shared.metrics.echo_connections_total.fetch_add(1, Relaxed);
            info!(%peer, "echo connection opened");
            let mut session = EchoConnection {
                ws,
                peer,
                open,
                opened: Instant::now(),
            };
            if let Some(parking) = &shared.parking {
                // Nothing to read yet (the usual case right after a handshake): straight to
                // the lot, before a session is set up. The lot starts one on the first byte.
                match parking.park(session) {
                    Ok(()) => return None,
                    Err(back) => session = back,
                }
            }
            let shutdown = shared.shutdown.clone();
            Box::pin(crate::echo::run(session, shutdown, shared.parking.clone()))
        }
        Endpoint::Chat(room) => Box::pin(chat(ws, peer, room, who, shared, open)),
    })
}

/// Who a chat connection says it is: a plain client's `?name=`, or a token's identity.
#[derive(Default)]
pub(crate) struct Who {
    plain_name: Option<String>,
    identity: Option<Arc<Identity>>,
}

/// Sets up a chat connection and returns its session (not an `async fn` around it, which
/// would keep the WebSocket and the rest a second time in every chat connection's state).
fn chat(
    ws: WebSocket<MaybeTlsStream>,
    peer: SocketAddr,
    room: String,
    who: Who,
    shared: Arc<Shared>,
    open: OpenSession,
) -> impl Future<Output = ()> + Send {
    shared.metrics.chat_connections_total.fetch_add(1, Relaxed);
    let id = shared.next_id.fetch_add(1, Relaxed);
    let mode = if ws.protocol() == Some(SUBPROTOCOL) {
        Mode::Json
    } else {
        Mode::Plain
    };
    let name = match (&who.identity, who.plain_name) {
        (Some(identity), _) => identity.name.clone(),
        (None, Some(name)) => name,
        (None, None) => format!("guest-{id}"),
    };
    info!(conn = id, %peer, %room, ?mode, "chat connection opened");
    let config = &shared.config;
    let session = Session {
        id,
        peer,
        room,
        mode,
        name,
        identity: who.identity,
        broker: shared.broker.clone(),
        metrics: shared.metrics.clone(),
        shutdown: shared.shutdown.clone(),
        rate_limit: config.rate_limit,
        send_queue: config.send_queue,
        close_timeout: config.websocket.close_timeout,
        _open: open,
    };
    session.run(ws)
}

/// Answers the plain HTTP routes.
async fn serve_page(handshake: Handshake<MaybeTlsStream>, shared: &Shared, peer: SocketAddr) {
    let response = page_answer(handshake.request(), shared, peer);
    let _ = handshake.respond(response).await;
}

/// The answer to a plain HTTP request (not an upgrade, not the API), over HTTP/1.1 and
/// HTTP/2 alike: the page and its files, health and metrics, or a refusal.
pub(crate) fn page_answer<B>(
    request: &http::Request<B>,
    shared: &Shared,
    peer: SocketAddr,
) -> Response<String> {
    if request.method() != Method::GET {
        shared.metrics.reject(Rejection::BadRequest);
        return Refusal::new(StatusCode::METHOD_NOT_ALLOWED, "only GET is served")
            .with_header(http::header::ALLOW, HeaderValue::from_static("GET"))
            .into_response();
    }
    let path = request.uri().path();
    // With an admin listener, health and metrics are served there only.
    let admin_here = shared.config.admin_addr.is_none();
    if path == "/metrics"
        && admin_here
        && shared.config.api_key.is_some()
        && !crate::api::authorized(request, shared)
    {
        shared.metrics.reject(Rejection::Unauthorized);
        return Refusal::unauthorized("/metrics needs the API key (Authorization: Bearer)")
            .into_response();
    }
    let response = match path {
        "/healthz" | "/metrics" if !admin_here => None,
        "/healthz" | "/metrics" => admin_response(path, shared),
        "/" | "/index.html" => Some(page_response()),
        "/chat.js" => Some(ok(
            "text/javascript; charset=utf-8",
            page::CHAT_JS.to_owned(),
        )),
        "/chat.css" => Some(ok("text/css; charset=utf-8", page::CHAT_CSS.to_owned())),
        "/duplex-client.js" => Some(ok(
            "text/javascript; charset=utf-8",
            page::CLIENT_JS.to_owned(),
        )),
        p => match p.strip_prefix("/rooms/") {
            // The page itself opens the room named in its address.
            Some(room) if valid_room(room) => Some(page_response()),
            _ => None,
        },
    };
    match response {
        Some(response) => {
            shared.metrics.http_requests_total.fetch_add(1, Relaxed);
            debug!(%peer, path, "served");
            response
        }
        None => not_found_response(shared, peer, path),
    }
}

pub(crate) fn not_found_response(
    shared: &Shared,
    peer: SocketAddr,
    path: &str,
) -> Response<String> {
    shared.metrics.reject(Rejection::NotFound);
    debug!(%peer, path, "not found");
    Refusal::new(
        StatusCode::NOT_FOUND,
        "no such endpoint: try / (chat page or room general), /rooms/NAME, /echo, /healthz, /metrics",
    )
    .into_response()
}

async fn not_found(handshake: Handshake<MaybeTlsStream>, shared: &Shared, peer: SocketAddr) {
    let path = handshake.request().uri().path().to_owned();
    let response = not_found_response(shared, peer, &path);
    let _ = handshake.respond(response).await;
}

/// The answers of the admin routes (on the admin listener, or on the main port without one).
pub(crate) fn admin_response(path: &str, shared: &Shared) -> Option<Response<String>> {
    match path {
        "/healthz" => Some(match &shared.redis {
            Some(redis) if !redis.is_up() => {
                let mut degraded = ok(
                    "text/plain; charset=utf-8",
                    "degraded: Redis is unreachable; reconnecting\n".to_owned(),
                );
                *degraded.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                degraded
            }
            _ => ok("text/plain; charset=utf-8", "ok\n".to_owned()),
        }),
        "/metrics" => Some(ok(
            "text/plain; version=0.0.4; charset=utf-8",
            shared.metrics.render(),
        )),
        _ => None,
    }
}

/// What the page may load and run: its own script, style sheet and WebSocket, nothing else
/// (no inline script or style, no other origin, no framing by other sites). The favicon is an
/// empty `data:` URL.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// The chat page, with the headers that keep what it shows from being abused: a CSP, no
/// referrer (a `?token=` in its URL must not leak to other sites).
fn page_response() -> Response<String> {
    let mut response = ok("text/html; charset=utf-8", page::INDEX_HTML.to_owned());
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        http::header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn ok(content_type: &'static str, body: String) -> Response<String> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The page is embedded in the binary: a new binary may serve a new page at the same URL.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
