//! An axum application serving a page and a WebSocket route on the same port, through duplex's
//! hyper integration:
//!
//! ```sh
//! cargo run -p duplex --features hyper --example axum            # http://127.0.0.1:3000/
//! cargo run -p duplex --features hyper --example axum -- 0.0.0.0:8080
//! ```
//!
//! `GET /` is the page; `GET /ws` upgrades (only from this server's own pages: the `Origin`
//! check keeps other sites' scripts out) and echoes every message.

use axum::body::Body;
use axum::extract::Request;
use axum::response::{Html, Response};
use axum::routing::get;
use axum::Router;
use duplex::hyper::HyperWebSocket;
use duplex::Message;

const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>duplex + axum</title>
<h1>duplex + axum</h1>
<form id="f"><input id="m" autocomplete="off" placeholder="say something"> <button>send</button></form>
<pre id="log"></pre>
<script>
  const log = (line) => document.getElementById("log").textContent += line + "\n";
  const ws = new WebSocket(`ws://${location.host}/ws`);
  ws.onopen = () => log("connected");
  ws.onmessage = (e) => log("echo: " + e.data);
  ws.onclose = (e) => log(`closed: ${e.code} ${e.reason}`);
  document.getElementById("f").onsubmit = (e) => {
    e.preventDefault();
    const m = document.getElementById("m");
    ws.send(m.value);
    m.value = "";
  };
</script>
"#;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/ws", get(websocket));
    println!("listening on http://{local}/ (WebSocket at ws://{local}/ws)");
    axum::serve(listener, app).await
}

/// Upgrades `GET /ws` with duplex, whose limits, timeouts and keepalive apply as configured.
async fn websocket(mut request: Request) -> Response {
    let config = duplex::Config::default();
    let upgrade = duplex::hyper::upgrade_with(&mut request, config, |incoming| {
        // The page is served from here, so its Origin is this server's own address.
        let host = incoming.header(http::header::HOST).unwrap_or_default();
        let own = [format!("http://{host}"), format!("https://{host}")];
        duplex::auth::OriginPolicy::new(own).check(incoming.request())
    });
    match upgrade {
        Ok((response, pending)) => {
            tokio::spawn(async move {
                let result = match pending.await {
                    Ok(ws) => echo(ws).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    eprintln!("connection ended: {e}");
                }
            });
            response.map(Body::from)
        }
        Err(rejection) => rejection.into_response().map(Body::from),
    }
}

async fn echo(mut ws: HyperWebSocket) -> duplex::Result<()> {
    while let Some(msg) = ws.recv().await {
        if let msg @ (Message::Text(_) | Message::Binary(_)) = msg? {
            ws.send(msg).await?;
        }
    }
    Ok(())
}
