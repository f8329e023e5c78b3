//! An open WebSocket's place among the hub's connections: its permit of the connection limit
//! and its count in the `duplex_connections_open` gauge, both held while it lives (also while
//! it is parked).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use duplex::auth::ConnectionPermit;

use crate::metrics::Metrics;
use crate::net::IpPermit;

/// Counts a WebSocket as open until dropped.
#[derive(Debug)]
pub(crate) struct OpenSession {
    metrics: Arc<Metrics>,
    _permit: ConnectionPermit,
    /// Its place among its client address's connections (boxed: most hubs set no limit per
    /// address, and every idle connection would pay for the room).
    _ip: Option<Box<IpPermit>>,
}

impl OpenSession {
    pub(crate) fn new(metrics: &Arc<Metrics>, permit: ConnectionPermit) -> Self {
        metrics.connections_open.fetch_add(1, Relaxed);
        OpenSession {
            metrics: metrics.clone(),
            _permit: permit,
            _ip: None,
        }
    }

    /// Holds `ip` (the connection's place in its address's count) while the session lives.
    pub(crate) fn with_ip(mut self, ip: Option<IpPermit>) -> Self {
        self._ip = ip.map(Box::new);
        self
    }

    /// The hub's counters.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.metrics.connections_open.fetch_sub(1, Relaxed);
    }
}

/// A server-side WebSocket over a loopback connection (never read from), and its place among
/// the open connections: what a session starts from (for the unit tests of their sizes).
#[cfg(test)]
pub(crate) async fn test_connection(
    metrics: &Arc<Metrics>,
) -> (duplex::WebSocket<duplex::MaybeTlsStream>, OpenSession) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let ws = duplex::WebSocket::from_raw(
        duplex::MaybeTlsStream::Plain(tcp),
        duplex::Role::Server,
        Default::default(),
        Default::default(),
    );
    let permit = duplex::auth::ConnectionLimit::new(1)
        .try_acquire()
        .expect("a free place");
    (ws, OpenSession::new(metrics, permit))
}
