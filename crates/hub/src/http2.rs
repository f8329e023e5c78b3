//! One HTTP/2 connection (TLS with ALPN `h2`, or cleartext with prior knowledge): every
//! stream is answered as the same request over HTTP/1.1 would be ([`crate::routes`]), and
//! WebSockets come as extended CONNECT streams (RFC 8441) through the same checks.
//!
//! Each WebSocket holds its own place in the connection limit, since it costs what a
//! WebSocket over its own TCP connection costs but the socket; the TCP connection holds one
//! too, as over HTTP/1.1.

use std::net::SocketAddr;
use std::sync::Arc;

use duplex::auth::ConnectionPermit;
use duplex::http2::H2Request;
use duplex::{MaybeTlsStream, Rejection as Refusal};
use http::StatusCode;
use tracing::{debug, info};

use crate::metrics::Rejection;
use crate::open::OpenSession;
use crate::routes::{
    check_upgrade, not_found_response, page_answer, route, start_session, Endpoint, Route,
    SessionFuture, Shared, Who,
};
use crate::shutdown::stopping;

/// Serves the streams of one HTTP/2 connection until the client closes it or the hub shuts
/// down (then gracefully: streams under way finish, new ones are refused).
pub(crate) async fn serve(
    stream: MaybeTlsStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    permit: ConnectionPermit,
) {
    let mut conn = match duplex::http2::accept(stream, shared.config.chat_ws()).await {
        Ok(conn) => conn,
        Err(e) => {
            debug!(%peer, "HTTP/2 connection not opened: {e}");
            return;
        }
    };
    let mut shutdown = shared.shutdown.clone();
    let mut closing = false;
    loop {
        let request = tokio::select! {
            next = conn.next() => match next {
                Some(Ok(request)) => request,
                Some(Err(e)) => {
                    debug!(%peer, "HTTP/2 connection failed: {e}");
                    break;
                }
                None => break,
            },
            () = stopping(&mut shutdown), if !closing => {
                closing = true;
                conn.graceful_shutdown();
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Some(session) = Box::pin(answer(request, peer, shared)).await {
                session.await;
            }
        });
    }
    drop(permit);
}

/// Answers one stream; an upgraded WebSocket returns its session to run.
async fn answer(
    mut request: H2Request,
    peer: SocketAddr,
    shared: Arc<Shared>,
) -> Option<SessionFuture> {
    let path = request.request().uri().path().to_owned();
    let endpoint = match route(&path, request.is_websocket()) {
        Route::Api => {
            // The API reads request bodies through the HTTP/1.1 handshake; clients of it
            // (curl, backends) speak HTTP/1.1 by default.
            shared.metrics.reject(Rejection::BadRequest);
            let refusal = Refusal::new(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "the backend API is served over HTTP/1.1",
            );
            let _ = request.respond(refusal.into_response()).await;
            return None;
        }
        Route::NotFound => {
            let response = not_found_response(&shared, peer, &path);
            let _ = request.respond(response).await;
            return None;
        }
        Route::Page => {
            let response = page_answer(request.request(), &shared, peer);
            let _ = request.respond(response).await;
            return None;
        }
        Route::WebSocket(endpoint) => endpoint,
    };
    let Ok(permit) = shared.limit.try_acquire() else {
        shared.metrics.reject(Rejection::Capacity);
        info!(%peer, %path, "refused: at the connection limit");
        let refusal = Refusal::unavailable(
            "server at capacity, try later",
            std::time::Duration::from_secs(5),
        );
        let _ = request.respond(refusal.into_response()).await;
        return None;
    };
    if matches!(endpoint, Endpoint::Echo) {
        request.set_config(shared.config.echo_ws());
    }
    let mut who = Who::default();
    let upgraded = request
        .upgrade(|incoming| check_upgrade(incoming, &endpoint, &shared, &mut who))
        .await;
    let ws = match upgraded {
        Ok(ws) => ws,
        Err(duplex::Error::Rejected(status)) => {
            info!(%peer, %path, %status, "HTTP/2 upgrade refused");
            return None;
        }
        Err(e) => {
            shared.metrics.reject(Rejection::BadRequest);
            debug!(%peer, %path, "HTTP/2 upgrade failed: {e}");
            return None;
        }
    };
    let open = OpenSession::new(&shared.metrics, permit);
    start_session(ws, endpoint, peer, shared, open, who)
}
