//! # duplex
//!
//! Async WebSockets for tokio, built on the [`duplex_proto`] sans-I/O engine.
//!
//! - [`WebSocket`] over any `AsyncRead + AsyncWrite + Unpin`: a `Stream` and a `Sink` of
//!   [`Message`]s, with [`WebSocket::split`] into independent halves.
//! - Servers: [`accept`], [`accept_with`] (inspect the request, choose a subprotocol, refuse
//!   with a [`Rejection`]), [`Handshake`] (serve plain HTTP and WebSockets on one port).
//! - Clients: [`connect`] and [`ClientBuilder`], for `ws://` and `wss://`, directly or
//!   through an HTTP or SOCKS5 [`proxy`].
//! - TLS with rustls ([`tls`], cargo feature `tls`, on by default).
//! - Authentication and `Origin` checks before the upgrade ([`auth`]).
//! - WebSockets over HTTP/2 (RFC 8441), several on one connection, in both roles, over TLS
//!   or h2c ([`http2`], cargo feature `http2`, on by default).
//! - Upgrades inside hyper and axum servers (`duplex::hyper`, cargo feature `hyper`), and an
//!   axum extractor (`duplex::axum::WebSocketUpgrade`, cargo feature `axum`).
//! - Keepalive pings, timeouts and limits in [`Config`], with defaults safe on the open
//!   internet.
//!
//! An echo server:
//!
//! ```no_run
//! # async fn run() -> duplex::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! loop {
//!     let (tcp, _) = listener.accept().await?;
//!     tokio::spawn(async move {
//!         let mut ws = duplex::accept(tcp).await?;
//!         while let Some(msg) = ws.recv().await {
//!             let msg = msg?;
//!             if msg.is_text() || msg.is_binary() {
//!                 ws.send(msg).await?;
//!             }
//!         }
//!         Ok::<_, duplex::Error>(())
//!     });
//! }
//! # }
//! ```
#![deny(missing_docs, missing_debug_implementations)]
#![forbid(unsafe_code)]

pub mod auth;
#[cfg(feature = "axum")]
pub mod axum;
mod client;
mod config;
mod driver;
mod error;
#[cfg(feature = "http2")]
pub mod http2;
#[cfg(feature = "hyper")]
pub mod hyper;
mod io;
mod keepalive;
mod parked;
mod prepared;
pub mod proxy;
mod server;
mod split;
mod stream;
#[cfg(feature = "tls")]
pub mod tls;
mod websocket;

pub use client::{connect, ClientBuilder};
pub use config::{Config, DeflateConfig};
pub use duplex_proto::frame::OpCode;
pub use duplex_proto::{CloseCode, CloseFrame, Message, Role, Utf8Bytes};
pub use error::{Error, Result};
pub use parked::ParkedWebSocket;
pub use prepared::PreparedMessage;
pub use server::{accept, accept_with, is_upgrade_request, Handshake, Incoming, Rejection};
pub use split::{WebSocketReader, WebSocketWriter};
pub use stream::MaybeTlsStream;
pub use websocket::WebSocket;

/// The engine this library drives, for lower-level use.
pub use duplex_proto as proto;
