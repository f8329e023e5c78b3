//! WebSockets inside hyper 1.x servers, and so inside axum (cargo feature `hyper`).
//!
//! hyper owns the HTTP connection; [`upgrade`] validates a request it parsed, builds the
//! `101 Switching Protocols` response for the handler to return, and gives a
//! [`PendingUpgrade`] future that resolves, once hyper has sent that response, to a
//! [`WebSocket`] over the upgraded connection. Spawn the future: it completes only after the
//! handler has returned the response.
//!
//! ```no_run
//! use std::convert::Infallible;
//! use hyper::{Request, Response, body::Incoming};
//!
//! async fn handle(mut req: Request<Incoming>) -> Result<Response<String>, Infallible> {
//!     if !duplex::is_upgrade_request(&req) {
//!         return Ok(Response::new("hello, plain HTTP\n".into()));
//!     }
//!     match duplex::hyper::upgrade(&mut req, duplex::Config::default()) {
//!         Ok((response, pending)) => {
//!             tokio::spawn(async move {
//!                 let mut ws = pending.await?;
//!                 while let Some(msg) = ws.recv().await {
//!                     let msg = msg?;
//!                     if msg.is_text() || msg.is_binary() {
//!                         ws.send(msg).await?;
//!                     }
//!                 }
//!                 Ok::<_, duplex::Error>(())
//!             });
//!             Ok(response)
//!         }
//!         Err(rejection) => Ok(rejection.into_response()),
//!     }
//! }
//! ```
//!
//! Serve it with `hyper::server::conn::http1::Builder::new().serve_connection(io,
//! service_fn(handle)).with_upgrades()`: without `with_upgrades` hyper never hands the
//! connection over. axum's `serve` enables upgrades itself; see `examples/axum.rs`.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use duplex_proto::deflate::DeflateParams;
use duplex_proto::handshake::server::UpgradeRequest;
use duplex_proto::Role;
use http::{Request, Response, StatusCode};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;

use crate::server::{decide, Accepted};
use crate::{Config, Error, Result, WebSocket};
use crate::{Incoming, Rejection};

/// A WebSocket over a connection hyper upgraded.
pub type HyperWebSocket = WebSocket<TokioIo<Upgraded>>;

/// Accepts the upgrade with `config`, whatever the request's path and headers; see
/// [`upgrade_with`].
pub fn upgrade<B>(
    request: &mut Request<B>,
    config: Config,
) -> Result<(Response<String>, PendingUpgrade), Rejection> {
    upgrade_with(request, config, |_| Ok(()))
}

/// Validates the upgrade request, lets `callback` decide as in
/// [`accept_with`](crate::server::accept_with) (subprotocol, extra headers, rejection with any
/// status; see [`crate::auth`]), and returns the 101 response with the future of the
/// connection.
///
/// A request that is not a valid upgrade is refused with the same statuses as
/// [`accept_with`](crate::server::accept_with): 405 for a method other than GET, 400 for
/// missing or malformed upgrade headers, 426 (with `Sec-WebSocket-Version: 13`) for another
/// version. Return the [`Rejection`]'s [`into_response`](Rejection::into_response).
/// permessage-deflate is negotiated as [`Config::deflate`] says. Request heads are hyper's to
/// limit (`http1::Builder::max_buf_size`); [`Config::handshake_timeout`] does not apply
/// either: use hyper's `header_read_timeout`.
pub fn upgrade_with<B, F>(
    request: &mut Request<B>,
    config: Config,
    callback: F,
) -> Result<(Response<String>, PendingUpgrade), Rejection>
where
    F: FnOnce(&mut Incoming<'_>) -> Result<(), Rejection>,
{
    // The validation and the callback work on the head alone.
    let mut head = Request::new(());
    *head.method_mut() = request.method().clone();
    *head.uri_mut() = request.uri().clone();
    *head.version_mut() = request.version();
    *head.headers_mut() = request.headers().clone();
    let upgrade = UpgradeRequest::validate(&head).map_err(|e| Rejection::for_error(&e))?;
    if request.extensions().get::<OnUpgrade>().is_none() {
        // Only hyper's HTTP/1 server puts it there; anything else cannot hand the connection
        // over, and accepting would leave the client waiting forever.
        return Err(Rejection::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "this connection cannot be upgraded",
        ));
    }
    let Accepted {
        response,
        protocol,
        deflate,
    } = decide(&head, &upgrade, &config, callback)?;
    let pending = PendingUpgrade {
        on_upgrade: hyper::upgrade::on(request),
        config,
        protocol,
        deflate,
    };
    Ok((response.map(|()| String::new()), pending))
}

/// The connection of an accepted upgrade: resolves to the [`WebSocket`] once hyper has sent
/// the 101 response and handed the connection over.
#[derive(Debug)]
#[must_use = "the WebSocket exists only once this future is awaited (spawn it)"]
pub struct PendingUpgrade {
    on_upgrade: OnUpgrade,
    config: Config,
    protocol: Option<String>,
    deflate: Option<DeflateParams>,
}

impl PendingUpgrade {
    /// The subprotocol chosen by the callback.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }
}

impl Future for PendingUpgrade {
    type Output = Result<HyperWebSocket>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let upgraded = ready!(Pin::new(&mut this.on_upgrade).poll(cx))
            .map_err(|e| Error::Io(std::io::Error::other(e)))?;
        // hyper keeps bytes it read past the request inside `Upgraded` and replays them, so
        // nothing is left over here.
        let ws = WebSocket::from_raw(
            TokioIo::new(upgraded),
            Role::Server,
            this.config,
            BytesMut::new(),
        )
        .with_protocol(this.protocol.take())
        .with_deflate(this.deflate.take());
        Poll::Ready(Ok(ws))
    }
}
