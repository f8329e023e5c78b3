//! A small chat on axum: one router serves the page and the WebSocket on the same port, with
//! duplex's extractor (`duplex::axum::WebSocketUpgrade`, cargo feature `axum`):
//!
//! ```sh
//! cargo run -p duplex --features axum --example axum            # http://127.0.0.1:3000/
//! cargo run -p duplex --features axum --example axum -- 0.0.0.0:8080
//! ```
//!
//! `GET /` is the page; `GET /ws` upgrades (only from this server's own pages: the `Origin`
//! check keeps other sites' scripts out), speaking the `chat.v1` subprotocol when the client
//! offers it and permessage-deflate when it offers that, and relays every text message to
//! everyone connected.

use axum::extract::State;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use duplex::axum::{HyperWebSocket, WebSocketUpgrade};
use duplex::{Config, DeflateConfig, Message};
use tokio::sync::broadcast;

const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>duplex + axum</title>
<h1>duplex + axum</h1>
<form id="f"><input id="m" autocomplete="off" placeholder="say something"> <button>send</button></form>
<pre id="log"></pre>
<script>
  const log = (line) => document.getElementById("log").textContent += line + "\n";
  const ws = new WebSocket(`ws://${location.host}/ws`, ["chat.v1"]);
  ws.onopen = () => log(`connected (${ws.protocol}, ${ws.extensions || "no compression"})`);
  ws.onmessage = (e) => log(e.data);
  ws.onclose = (e) => log(`closed: ${e.code} ${e.reason}`);
  document.getElementById("f").onsubmit = (e) => {
    e.preventDefault();
    const m = document.getElementById("m");
    ws.send(m.value);
    m.value = "";
  };
</script>
"#;

/// Every line said, to every connection.
#[derive(Clone)]
struct Room(broadcast::Sender<String>);

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/ws", get(websocket))
        .with_state(Room(broadcast::channel(64).0));
    println!("listening on http://{local}/ (WebSocket at ws://{local}/ws)");
    axum::serve(listener, app).await
}

/// Upgrades `GET /ws` with duplex, whose limits, timeouts and keepalive apply as configured.
async fn websocket(ws: WebSocketUpgrade, State(room): State<Room>) -> impl IntoResponse {
    let config = Config::default()
        .max_message_size(4096)
        .deflate(Some(DeflateConfig::default()));
    ws.config(config)
        .protocols(["chat.v1"])
        .check(|incoming| {
            // The page is served from here, so its Origin is this server's own address.
            let host = incoming.header(http::header::HOST).unwrap_or_default();
            let own = [format!("http://{host}"), format!("https://{host}")];
            duplex::auth::OriginPolicy::new(own).check(incoming.request())
        })
        .on_upgrade(|socket| async move {
            if let Err(e) = chat(socket, room).await {
                eprintln!("connection ended: {e}");
            }
        })
}

/// Relays what this connection says to the room and what the room says to it.
async fn chat(mut ws: HyperWebSocket, room: Room) -> duplex::Result<()> {
    let mut heard = room.0.subscribe();
    loop {
        tokio::select! {
            // `recv` is cancel safe: losing the race loses nothing.
            msg = ws.recv() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let _ = room.0.send(text.as_str().to_owned());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
            line = heard.recv() => match line {
                Ok(line) => ws.send(Message::text(line)).await?,
                // Fell behind by more than the channel holds: skip what was missed.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
        }
    }
}
