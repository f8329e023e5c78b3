//! # duplex-hub
//!
//! The duplex server application: one port serves a browser chat page, `/healthz`,
//! `/metrics`, an echo WebSocket at `/echo`, and chat rooms at `/` (room `general`) and
//! `/rooms/<name>`.
//!
//! - **Two ways to chat.** Without a subprotocol, plain text: every text message goes to
//!   every other member of the room. With [`protocol::SUBPROTOCOL`] (`duplex.v1`), JSON:
//!   join, leave, send, message, presence, history, rooms, error (see [`protocol`]).
//! - **History and resume.** Every message gets a per-room sequence number and is stored in
//!   SQLite before anyone receives it; a client that joins with the last number it saw gets
//!   everything after it.
//! - **Fan-out** encodes a message once ([`duplex::PreparedMessage`]); a recipient that
//!   falls [`HubConfig::send_queue`] messages behind is closed with [`CLOSE_TOO_SLOW`].
//! - **Limits and auth** before the upgrade: token (401), `Origin` (403), connection count
//!   (503, also per client address); after it: message size (1009) and rate (1008).
//! - **Identity**: with [`HubConfig::jwt`], a signed token's `sub` is who a connection is,
//!   and its claims say which rooms it may join and whether it may send.
//! - **A backend API** under `/api/` with [`HubConfig::api_key`]: publish into a room, read
//!   history, presence and the room list over HTTP.
//!
//! ```no_run
//! use duplex_hub::{Hub, HubConfig};
//! # async fn run() -> Result<(), duplex_hub::HubError> {
//! let addr = "127.0.0.1:0".parse().unwrap();
//! let hub = Hub::bind(&[addr], HubConfig::new("./data").token("s3cret")).await?;
//! println!("chat at http://{}/?token=s3cret", hub.local_addr());
//! let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! hub.run(async { let _ = stopped.await; }).await
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs, missing_debug_implementations)]

mod api;
mod auth;
mod broker;
mod close;
mod cluster;
mod config;
mod echo;
mod error;
mod feed;
mod http2;
mod hub;
mod identity;
mod listing;
mod metrics;
mod net;
mod open;
mod outbox;
mod page;
mod parking;
pub mod protocol;
mod rate;
mod routes;
mod session;
mod shutdown;
mod store;

pub use close::{
    CLOSE_BINARY, CLOSE_RATE_LIMITED, CLOSE_SHUTDOWN, CLOSE_TOO_SLOW, CLOSE_TRY_AGAIN,
};
pub use config::{Cidr, HubConfig, RedisConfig, Secret};
pub use error::{HubError, Result};
pub use hub::Hub;
pub use identity::{JwtConfig, JwtKeyError, MIN_SECRET_BYTES};
pub use metrics::Metrics;
pub use store::DB_FILE;
