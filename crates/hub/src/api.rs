//! The backend HTTP API under `/api/`, on the hub's own port: servers publish into rooms and
//! read history, presence and the room list without opening a WebSocket.
//!
//! - `POST /api/rooms/{room}/messages` with `{"text": "...", "from": "..."}`: stored and
//!   delivered like a member's message (the next seq of the room); 201 `{"seq": N}`.
//! - `GET /api/rooms/{room}/messages?since=N&limit=M`: stored messages after `since` (or the
//!   last `limit`), oldest first; `limit` defaults to 100 and is at most [`MAX_LIMIT`].
//! - `GET /api/rooms/{room}/presence`: `{"room", "count", "members"}`.
//! - `GET /api/rooms?cursor=C`: one page of the room list, `{"rooms": [{"name", "members",
//!   "last_seq"}], "next": C}`, as `{"type":"rooms"}` gives it ([`crate::listing`]): at most
//!   [`ROOMS_PER_PAGE`](crate::protocol::ROOMS_PER_PAGE) rooms, those with members first;
//!   `next` is absent on the last page.
//!
//! Every request needs `Authorization: Bearer KEY` with the hub's API key, compared in
//! constant time (401 otherwise). Errors are JSON, `{"type":"error","code","message"}`, as
//! on the WebSocket: 400 bad JSON or room name, 404 unknown route, 405 wrong method, 411 no
//! `Content-Length`, 413 a body above the hub's largest message.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use duplex::{Handshake, MaybeTlsStream};
use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tracing::{debug, info};

use crate::auth::constant_time_eq;
use crate::broker::Command;
use crate::listing::Cursor;
use crate::protocol::valid_room;
use crate::routes::Shared;

/// The most messages one history request returns.
pub(crate) const MAX_LIMIT: u64 = 1000;
/// Messages a history request returns without `limit`.
const DEFAULT_LIMIT: u64 = 100;
/// The name a message gets without `from`.
const DEFAULT_FROM: &str = "api";

/// The body of `POST /api/rooms/{room}/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Publish {
    text: String,
    from: Option<String>,
}

/// An API answer: a status and a JSON body.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    body: Value,
    allow: Option<&'static str>,
}

impl Answer {
    fn ok(status: StatusCode, body: Value) -> Answer {
        Answer {
            status,
            body,
            allow: None,
        }
    }

    fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Answer {
        let body = json!({"type": "error", "code": code, "message": message.into()});
        Answer::ok(status, body)
    }

    fn method(allow: &'static str) -> Answer {
        Answer {
            allow: Some(allow),
            ..Answer::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method",
                format!("use {allow}"),
            )
        }
    }

    fn unavailable() -> Answer {
        Answer::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the server is shutting down or cannot store right now; try again",
        )
    }

    fn into_response(self) -> Response<String> {
        let mut response = Response::new(format!("{}\n", self.body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
        }
        if let Some(allow) = self.allow {
            headers.insert(ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

/// Whether `request` carries the API key (`Authorization: Bearer KEY`).
pub(crate) fn authorized<B>(request: &Request<B>, shared: &Shared) -> bool {
    let Some(key) = &shared.config.api_key else {
        return false;
    };
    duplex::auth::bearer_token(request)
        .is_some_and(|given| constant_time_eq(given.as_bytes(), key.expose().as_bytes()))
}

/// Answers one API request (its path starts with `/api/`).
pub(crate) async fn serve(
    mut handshake: Handshake<MaybeTlsStream>,
    shared: &Shared,
    peer: SocketAddr,
) {
    let answer = answer(&mut handshake, shared).await;
    let request = handshake.request();
    if answer.status.is_client_error() {
        info!(%peer, method = %request.method(), path = request.uri().path(), status = %answer.status, "API request refused");
    } else {
        debug!(%peer, method = %request.method(), path = request.uri().path(), status = %answer.status, "API request");
    }
    shared.metrics.http_requests_total.fetch_add(1, Relaxed);
    let _ = handshake.respond(answer.into_response()).await;
}

async fn answer(handshake: &mut Handshake<MaybeTlsStream>, shared: &Shared) -> Answer {
    let request = handshake.request();
    if shared.config.api_key.is_none() {
        return Answer::error(
            StatusCode::NOT_FOUND,
            "api_off",
            "the API is off: start the hub with an API key (--api-key-file)",
        );
    }
    if !authorized(request, shared) {
        return Answer::error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong API key (Authorization: Bearer KEY)",
        );
    }
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let segments: Vec<&str> = path
        .trim_start_matches("/api/")
        .trim_end_matches('/')
        .split('/')
        .collect();
    match segments.as_slice() {
        ["rooms"] if method == Method::GET => rooms(request, shared).await,
        ["rooms"] => Answer::method("GET"),
        ["rooms", room, rest @ ..] if !valid_room(room) && rest.len() <= 1 => Answer::error(
            StatusCode::BAD_REQUEST,
            "bad_room",
            "a room name is 1 to 64 letters, digits, '-', '_' or '.'",
        ),
        ["rooms", room, "messages"] if method == Method::POST => {
            let room = (*room).to_owned();
            publish(handshake, shared, room).await
        }
        ["rooms", room, "messages"] if method == Method::GET => {
            history(request, shared, room).await
        }
        ["rooms", _, "messages"] => Answer::method("GET, POST"),
        ["rooms", room, "presence"] if method == Method::GET => presence(shared, room).await,
        ["rooms", _, "presence"] => Answer::method("GET"),
        _ => Answer::error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such API route: /api/rooms, /api/rooms/{room}/messages, /api/rooms/{room}/presence",
        ),
    }
}

/// Hands `command` to the broker and waits for its reply; `None` if the broker is gone or
/// dropped the reply (a failed commit).
async fn ask<T>(shared: &Shared, command: Command, reply: oneshot::Receiver<T>) -> Option<T> {
    shared.broker.send(command).await.ok()?;
    reply.await.ok()
}

async fn publish(
    handshake: &mut Handshake<MaybeTlsStream>,
    shared: &Shared,
    room: String,
) -> Answer {
    let request = handshake.request();
    let max = shared.config.websocket.max_message_size;
    if request
        .headers()
        .contains_key(http::header::TRANSFER_ENCODING)
    {
        return Answer::error(
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "send the body with Content-Length (chunked bodies are not read)",
        );
    }
    let len = match request.headers().get(http::header::CONTENT_LENGTH) {
        None => {
            return Answer::error(
                StatusCode::LENGTH_REQUIRED,
                "length_required",
                "send the body with Content-Length",
            )
        }
        Some(v) => match v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) {
            Some(len) => len,
            None => {
                return Answer::error(StatusCode::BAD_REQUEST, "bad_request", "bad Content-Length")
            }
        },
    };
    // The body is JSON around the text: allow for the envelope and the `from`, so that a
    // text of the largest size a member may send is accepted from a backend too.
    let max_body = max.saturating_add(1024) as u64;
    if len > max_body {
        return too_large(max);
    }
    // Bounded just above, so the allocation is too.
    let body = match handshake.read_body(len as usize).await {
        Ok(body) => body,
        Err(e) => {
            return Answer::error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("body not read: {e}"),
            )
        }
    };
    let publish: Publish = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return Answer::error(
                StatusCode::BAD_REQUEST,
                "bad_json",
                format!("expected {{\"text\": \"...\", \"from\": \"...\"}}: {e}"),
            )
        }
    };
    if publish.text.len() > max {
        return too_large(max);
    }
    let (reply, replied) = oneshot::channel();
    let command = Command::ApiPublish {
        room,
        from: publish.from.unwrap_or_else(|| DEFAULT_FROM.to_owned()),
        text: publish.text,
        reply,
    };
    match ask(shared, command, replied).await {
        Some(Ok(seq)) => Answer::ok(StatusCode::CREATED, json!({"seq": seq})),
        Some(Err(why)) if why == "storage" => Answer::unavailable(),
        Some(Err(why)) => Answer::error(StatusCode::BAD_REQUEST, "bad_request", why),
        None => Answer::unavailable(),
    }
}

fn too_large(max: usize) -> Answer {
    Answer::error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("a message is at most {max} bytes"),
    )
}

async fn history<B>(request: &Request<B>, shared: &Shared, room: &str) -> Answer {
    let number = |name: &str| -> Result<Option<u64>, Answer> {
        match duplex::auth::query_param(request, name) {
            None => Ok(None),
            Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
                Answer::error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("{name} is a whole number"),
                )
            }),
        }
    };
    let (since, limit) = match (number("since"), number("limit")) {
        (Ok(since), Ok(limit)) => (since, limit),
        (Err(answer), _) | (_, Err(answer)) => return answer,
    };
    let limit = limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let (reply, replied) = oneshot::channel();
    let command = Command::ApiHistory {
        room: room.to_owned(),
        since,
        limit,
        reply,
    };
    match ask(shared, command, replied).await {
        Some(Ok(messages)) => {
            Answer::ok(StatusCode::OK, json!({"room": room, "messages": messages}))
        }
        Some(Err(_)) | None => Answer::unavailable(),
    }
}

async fn presence(shared: &Shared, room: &str) -> Answer {
    let (reply, replied) = oneshot::channel();
    let command = Command::ApiPresence {
        room: room.to_owned(),
        reply,
    };
    match ask(shared, command, replied).await {
        Some(members) => Answer::ok(
            StatusCode::OK,
            json!({"room": room, "count": members.len(), "members": members}),
        ),
        None => Answer::unavailable(),
    }
}

async fn rooms<B>(request: &Request<B>, shared: &Shared) -> Answer {
    // Cursors are made of URL-safe characters only: a client may put them in as they are.
    let cursor = duplex::auth::query_param(request, "cursor");
    let cursor = match Cursor::parse(cursor.as_deref()) {
        Ok(cursor) => cursor,
        Err(e) => return Answer::error(StatusCode::BAD_REQUEST, "bad_cursor", e.to_string()),
    };
    let (reply, replied) = oneshot::channel();
    match ask(shared, Command::ApiRooms { cursor, reply }, replied).await {
        Some(page) => {
            let mut body = json!({ "rooms": page.rooms });
            if let Some(next) = page.next {
                body["next"] = Value::String(next.encode());
            }
            Answer::ok(StatusCode::OK, body)
        }
        None => Answer::unavailable(),
    }
}
