//! An axum extractor for duplex WebSockets (cargo feature `axum`): the ergonomics of
//! `axum::extract::ws`, with duplex's [`Config`], subprotocol and permessage-deflate
//! negotiation, the [`crate::auth`] checks and [`Rejection`]s, and duplex's engine underneath.
//!
//! ```no_run
//! use axum::{response::IntoResponse, routing::get, Router};
//! use duplex::axum::WebSocketUpgrade;
//!
//! async fn websocket(ws: WebSocketUpgrade) -> impl IntoResponse {
//!     let config = duplex::Config::default().deflate(Some(duplex::DeflateConfig::default()));
//!     ws.protocols(["duplex.v1"])
//!         .config(config)
//!         .check(|incoming| {
//!             duplex::auth::OriginPolicy::new(["https://app.example"]).check(incoming.request())
//!         })
//!         .on_upgrade(|mut socket| async move {
//!             while let Some(Ok(msg)) = socket.recv().await {
//!                 if (msg.is_text() || msg.is_binary()) && socket.send(msg).await.is_err() {
//!                     break;
//!                 }
//!             }
//!         })
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let app: Router = Router::new().route("/ws", get(websocket));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! Extraction checks the upgrade headers and refuses a request that is not a valid upgrade
//! with the statuses of [`accept_with`](crate::accept_with): 405 for a method other than GET,
//! 400 for missing or malformed upgrade headers, 426 (with `Sec-WebSocket-Version: 13`) for
//! another version. Use `Option<WebSocketUpgrade>` to serve a page and the WebSocket on one
//! route: `None` for a request without `Upgrade: websocket`.
//!
//! [`WebSocketUpgrade::on_upgrade`] then makes the decision with the same code as
//! [`accept_with`](crate::accept_with) and [`crate::hyper::upgrade_with`] (which it calls):
//! the [`check`](WebSocketUpgrade::check) callbacks run in order and may refuse with any
//! status, a subprotocol is chosen, permessage-deflate is negotiated as [`Config::deflate`]
//! says. axum's `serve` enables hyper's upgrades; HTTP/1.1 upgrades only (an HTTP/2 extended
//! CONNECT is refused with 405).

use std::fmt;
use std::future::Future;

use axum::body::Body;
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use duplex_proto::handshake::server::UpgradeRequest;
use http::request::Parts;
use http::Request;
use hyper::upgrade::OnUpgrade;

pub use crate::hyper::HyperWebSocket;
use crate::{Config, Error, Incoming, Rejection};

/// A check that runs before the upgrade is accepted; see [`WebSocketUpgrade::check`].
type Check = Box<dyn FnOnce(&mut Incoming<'_>) -> Result<(), Rejection> + Send>;

/// What happens to the error of an upgrade that failed after the 101 response.
type OnFailed = Box<dyn FnOnce(Error) + Send>;

/// An extractor for WebSocket upgrades: configure it, then answer with
/// [`on_upgrade`](WebSocketUpgrade::on_upgrade). See the [module documentation](self).
///
/// ```no_run
/// use duplex::axum::WebSocketUpgrade;
///
/// async fn chat(ws: WebSocketUpgrade) -> axum::response::Response {
///     ws.protocols(["chat.v2", "chat.v1"])
///         .check(|incoming| {
///             duplex::auth::require_token(incoming.request(), "token", |t| t == "secret")
///         })
///         .on_upgrade(|socket| async move {
///             println!("speaking {:?}", socket.protocol());
///         })
/// }
/// ```
#[must_use = "answer the request with `on_upgrade`"]
pub struct WebSocketUpgrade {
    /// The request's head, with hyper's [`OnUpgrade`] in its extensions.
    head: Request<()>,
    config: Config,
    protocols: Vec<String>,
    checks: Vec<Check>,
    on_failed: Option<OnFailed>,
}

impl fmt::Debug for WebSocketUpgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocketUpgrade")
            .field("uri", self.head.uri())
            .field("config", &self.config)
            .field("protocols", &self.protocols)
            .field("checks", &self.checks.len())
            .finish_non_exhaustive()
    }
}

impl WebSocketUpgrade {
    /// The configuration of the connection (limits, timeouts, keepalive, permessage-deflate);
    /// [`Config::default`] otherwise.
    ///
    /// ```
    /// # fn f(ws: duplex::axum::WebSocketUpgrade) -> duplex::axum::WebSocketUpgrade {
    /// ws.config(duplex::Config::default().max_message_size(1 << 20))
    /// # }
    /// ```
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The subprotocols this server speaks, in its order of preference: the first the client
    /// offered is selected (none if it offered none of them), unless a
    /// [`check`](Self::check) selected one already.
    ///
    /// ```
    /// # fn f(ws: duplex::axum::WebSocketUpgrade) -> duplex::axum::WebSocketUpgrade {
    /// ws.protocols(["duplex.v1", "chat"])
    /// # }
    /// ```
    pub fn protocols<I>(mut self, protocols: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Adds a check run before the upgrade, as an [`accept_with`](crate::accept_with)
    /// callback: it sees the request ([`Incoming::request`], [`Incoming::query_param`], ...),
    /// may select a subprotocol or add response headers, and refuses with a [`Rejection`]
    /// (whose status and headers are the response). Checks run in the order they were added.
    ///
    /// ```
    /// # fn f(ws: duplex::axum::WebSocketUpgrade) -> duplex::axum::WebSocketUpgrade {
    /// ws.check(|incoming| {
    ///     duplex::auth::check_origin(incoming.request(), &["https://app.example"])
    /// })
    /// # }
    /// ```
    pub fn check<F>(mut self, check: F) -> Self
    where
        F: FnOnce(&mut Incoming<'_>) -> Result<(), Rejection> + Send + 'static,
    {
        self.checks.push(Box::new(check));
        self
    }

    /// Called with the error when the connection cannot be handed over after the 101
    /// response (the client went away); by default the error is logged at debug level.
    ///
    /// ```
    /// # fn f(ws: duplex::axum::WebSocketUpgrade) -> duplex::axum::WebSocketUpgrade {
    /// ws.on_failed_upgrade(|e| eprintln!("upgrade failed: {e}"))
    /// # }
    /// ```
    pub fn on_failed_upgrade<F>(mut self, callback: F) -> Self
    where
        F: FnOnce(Error) + Send + 'static,
    {
        self.on_failed = Some(Box::new(callback));
        self
    }

    /// The upgrade request's head: path, query, headers.
    pub fn request(&self) -> &Request<()> {
        &self.head
    }

    /// The subprotocols the client offered, in its order of preference.
    ///
    /// ```
    /// # fn f(ws: &duplex::axum::WebSocketUpgrade) {
    /// let offered: Vec<&str> = ws.requested_protocols().collect();
    /// # }
    /// ```
    pub fn requested_protocols(&self) -> impl Iterator<Item = &str> {
        self.head
            .headers()
            .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty())
    }

    /// Decides the upgrade and returns the response: `101 Switching Protocols` (then
    /// `callback` runs on a task of its own with the [`HyperWebSocket`], once hyper has sent
    /// the response and handed the connection over), or the refusal of a check.
    ///
    /// ```no_run
    /// # fn f(ws: duplex::axum::WebSocketUpgrade) -> axum::response::Response {
    /// ws.on_upgrade(|mut socket| async move {
    ///     let _ = socket.send(duplex::Message::text("hello")).await;
    /// })
    /// # }
    /// ```
    pub fn on_upgrade<C, Fut>(self, callback: C) -> Response
    where
        C: FnOnce(HyperWebSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let WebSocketUpgrade {
            mut head,
            config,
            protocols,
            checks,
            on_failed,
        } = self;
        let decided = crate::hyper::upgrade_with(&mut head, config, move |incoming| {
            for check in checks {
                check(incoming)?;
            }
            if incoming.protocol.is_none() && !protocols.is_empty() {
                let supported: Vec<&str> = protocols.iter().map(String::as_str).collect();
                incoming.select_protocol(&supported);
            }
            Ok(())
        });
        match decided {
            Ok((response, pending)) => {
                tokio::spawn(async move {
                    match pending.await {
                        Ok(socket) => callback(socket).await,
                        Err(e) => match on_failed {
                            Some(on_failed) => on_failed(e),
                            None => tracing::debug!("WebSocket upgrade failed: {e}"),
                        },
                    }
                });
                response.map(Body::from)
            }
            Err(rejection) => IntoResponse::into_response(rejection),
        }
    }

    /// Checks the upgrade headers and takes the connection's [`OnUpgrade`] out of `parts`.
    fn from_parts(parts: &mut Parts) -> Result<WebSocketUpgrade, Rejection> {
        let mut head = Request::new(());
        *head.method_mut() = parts.method.clone();
        *head.uri_mut() = parts.uri.clone();
        *head.version_mut() = parts.version;
        *head.headers_mut() = parts.headers.clone();
        UpgradeRequest::validate(&head).map_err(|e| Rejection::for_error(&e))?;
        // Without it (a server without upgrades) `upgrade_with` refuses in `on_upgrade`.
        if let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() {
            head.extensions_mut().insert(on_upgrade);
        }
        Ok(WebSocketUpgrade {
            head,
            config: Config::default(),
            protocols: Vec::new(),
            checks: Vec::new(),
            on_failed: None,
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        WebSocketUpgrade::from_parts(parts)
    }
}

/// `Option<WebSocketUpgrade>`: `None` for a request that does not ask for a WebSocket (no
/// `Upgrade: websocket`), so that one route serves a page and the WebSocket; a request that
/// asks for one but is not a valid upgrade is still refused.
///
/// ```no_run
/// use axum::response::{Html, IntoResponse, Response};
///
/// async fn page_or_socket(ws: Option<duplex::axum::WebSocketUpgrade>) -> Response {
///     match ws {
///         Some(ws) => ws.on_upgrade(|_socket| async {}),
///         None => Html("<h1>hello</h1>").into_response(),
///     }
/// }
/// ```
impl<S: Send + Sync> OptionalFromRequestParts<S> for WebSocketUpgrade {
    type Rejection = Rejection;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        let asks = parts
            .headers
            .get_all(http::header::UPGRADE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("websocket"));
        if !asks {
            return Ok(None);
        }
        WebSocketUpgrade::from_parts(parts).map(Some)
    }
}

/// A [`Rejection`] is an axum response: return it from a handler, as `Err` of a
/// `Result<Response, Rejection>`, or as an extractor's rejection. (Its inherent
/// [`Rejection::into_response`] gives an `http::Response<String>`; for axum's body type, call
/// the trait's: `IntoResponse::into_response(rejection)`.)
///
/// ```
/// use axum::response::{IntoResponse, Response};
/// use duplex::axum::WebSocketUpgrade;
///
/// async fn handler(ws: WebSocketUpgrade) -> Result<Response, duplex::Rejection> {
///     if ws.request().uri().query().is_none() {
///         return Err(duplex::Rejection::unauthorized("no token"));
///     }
///     Ok(ws.on_upgrade(|_socket| async {}))
/// }
///
/// let response = IntoResponse::into_response(duplex::Rejection::unauthorized("no token"));
/// assert_eq!(response.status(), 401);
/// ```
impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        Rejection::into_response(self).map(Body::from)
    }
}
