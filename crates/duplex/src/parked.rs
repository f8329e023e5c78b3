//! [`ParkedWebSocket`]: an idle connection set aside in its smallest form, for servers that
//! keep many quiet connections without a task each.

use std::sync::Arc;

use duplex_proto::IdleConnection;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::keepalive::Keepalive;
use crate::{Config, WebSocket};

/// An idle [`WebSocket`] reduced to what it keeps between messages: the transport, the
/// negotiated parameters, the compression state (with context takeover) and the keepalive
/// state. No buffers, no timers, no decoder state: about a third of a `WebSocket`.
///
/// Made by [`WebSocket::into_parked`]; [`ParkedWebSocket::resume`] gives the connection back,
/// exactly where it stopped. While parked nothing reads the transport or runs the keepalive:
/// wait for the transport to become readable (for TCP,
/// [`tokio::net::TcpStream::poll_read_ready`] or `poll_peek`) and resume by
/// [`ParkedWebSocket::next_keepalive_ping`] at the latest.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use duplex::{Message, Role, WebSocket};
/// let (a, b) = tokio::io::duplex(1024);
/// let mut client = WebSocket::from_raw(a, Role::Client, Default::default(), Default::default());
/// let server = WebSocket::from_raw(b, Role::Server, Default::default(), Default::default());
/// let parked = server.into_parked().unwrap();
/// client.send(Message::text("wake up")).await.unwrap();
/// let mut server = parked.resume();
/// assert_eq!(server.recv().await.unwrap().unwrap(), Message::text("wake up"));
/// # });
/// ```
#[derive(Debug)]
pub struct ParkedWebSocket<S> {
    pub(crate) io: S,
    pub(crate) conn: IdleConnection,
    pub(crate) config: Arc<Config>,
    pub(crate) protocol: Option<String>,
    pub(crate) keepalive: Keepalive,
}

impl<S> ParkedWebSocket<S> {
    /// The transport (to wait for it to become readable).
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// When the keepalive sends its next ping if nothing arrives before: resume the
    /// connection by then. `None` when keepalive is off.
    pub fn next_keepalive_ping(&self) -> Option<std::time::Instant> {
        self.keepalive.next_ping().map(|at| at.into_std())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> ParkedWebSocket<S> {
    /// The connection again, where it stopped.
    pub fn resume(self) -> WebSocket<S> {
        WebSocket::from_parked(self)
    }
}
