//! [`Hub`]: listening sockets, the accept loops, and the graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use duplex::auth::ConnectionLimit;
use duplex::MaybeTlsStream;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::auth::Access;
use crate::broker::Broker;
use crate::config::HubConfig;
use crate::echo;
use crate::error::{HubError, Result};
use crate::metrics::Metrics;
use crate::parking::{self, Entrance, Parking};
use crate::routes::{self, Shared};
use crate::store::Store;

/// The chat server: bound to its addresses, with its history open, ready to [`Hub::run`].
///
/// ```no_run
/// use duplex_hub::{Hub, HubConfig};
/// # async fn run() -> Result<(), duplex_hub::HubError> {
/// let addr = "127.0.0.1:8080".parse().unwrap();
/// let hub = Hub::bind(&[addr], HubConfig::new("./data")).await?;
/// println!("open http://{}/", hub.local_addr());
/// // Serve until `stop` is used or dropped (a CLI waits for SIGINT/SIGTERM instead).
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// hub.run(async {
///     let _ = stopped.await;
/// })
/// .await?;
/// # drop(stop);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Hub {
    listeners: Vec<TcpListener>,
    /// The addresses of `listeners`, with their real ports; never empty.
    addrs: Vec<SocketAddr>,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    broker_thread: JoinHandle<Result<()>>,
    /// The Redis side of a multi-node hub, which ends after the broker thread.
    redis_engine: Option<tokio::task::JoinHandle<()>>,
    /// Where parked echo connections enter the lot, which `run` starts.
    lot_entrance: Option<Entrance>,
    /// The listener of [`HubConfig::admin_addr`], if set.
    admin: Option<TcpListener>,
}

impl Hub {
    /// Listens on every address in `addrs` and opens the history in
    /// [`HubConfig::data_dir`]. With port 0, the first address gets a free port and the
    /// others the same one, so that `localhost:0` means one port on IPv4 and IPv6 alike.
    /// An address that cannot be bound is skipped with a warning; none at all is an error.
    pub async fn bind(addrs: &[SocketAddr], config: HubConfig) -> Result<Hub> {
        let mut listeners: Vec<TcpListener> = Vec::new();
        for addr in addrs {
            let mut addr = *addr;
            if addr.port() == 0 {
                if let Some(first) = listeners.first() {
                    addr.set_port(first.local_addr()?.port());
                }
            }
            match TcpListener::bind(addr).await {
                Ok(listener) => listeners.push(listener),
                Err(e) => warn!(%addr, "cannot listen: {e}"),
            }
        }
        if listeners.is_empty() {
            let wanted: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            return Err(HubError::NoListener(wanted.join(", ")));
        }
        let addrs = listeners
            .iter()
            .map(TcpListener::local_addr)
            .collect::<std::io::Result<Vec<_>>>()?;
        // Keys first: a hub with a JWT key it cannot use must not start (and open no store).
        let access = Access::new(&config)?;
        let admin = match config.admin_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| HubError::NoListener(format!("{addr} (admin: {e})")))?,
            ),
            None => None,
        };
        // With Redis, the history is there and nothing is kept in the data directory.
        let store = match config.redis {
            None => Some(Store::open(&config.data_dir, config.history_limit)?),
            Some(_) => None,
        };
        let metrics = Arc::new(Metrics::default());
        let started = Broker::start(store, &config, metrics.clone())?;
        let (redis_health, redis_engine) = started.redis.unzip();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (parking, lot_entrance) = match config.park_after {
            Some(after) => {
                let (lot, entrance) = parking::lot();
                (Some(Parking { lot, after }), Some(entrance))
            }
            None => (None, None),
        };
        let config_per_ip = config.max_connections_per_ip.map(crate::net::PerIp::new);
        // One TLS port for HTTP/1.1 and HTTP/2, by ALPN.
        let mut config = config;
        config.tls = config.tls.take().map(duplex::tls::offer_http2);
        let shared = Arc::new(Shared {
            access,
            limit: ConnectionLimit::new(config.max_connections),
            config,
            metrics,
            broker: started.broker,
            redis: redis_health,
            shutdown: shutdown_rx,
            next_id: AtomicU64::new(1),
            parking,
            per_ip: config_per_ip,
        });
        Ok(Hub {
            listeners,
            addrs,
            shared,
            shutdown,
            broker_thread: started.thread,
            redis_engine,
            lot_entrance,
            admin,
        })
    }

    /// The address of the admin listener (`/metrics`, `/healthz`), if
    /// [`HubConfig::admin_addr`] is set (with the real port when bound to port 0).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The first address listened on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Every address listened on.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }

    /// The hub's counters (also served at `/metrics`).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// Serves until `shutdown` completes, then shuts down gracefully: stops accepting,
    /// closes every WebSocket with 1001 (waiting up to [`HubConfig::shutdown_timeout`]),
    /// commits and closes the history, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let Hub {
            listeners,
            addrs: _,
            shared,
            shutdown: stop,
            broker_thread,
            redis_engine,
            lot_entrance,
            admin,
        } = self;
        let lot = lot_entrance.map(|entrance| {
            let shared = shared.clone();
            // Parked connections with keepalive on are looked at once a second for pings due.
            let sweep = shared
                .config
                .echo_ws()
                .ping_interval
                .map(|_| Duration::from_secs(1));
            tokio::spawn(parking::run(
                entrance,
                shared.shutdown.clone(),
                sweep,
                move |conn| {
                    let session = echo::run(conn, shared.shutdown.clone(), shared.parking.clone());
                    tokio::spawn(session);
                },
            ))
        });
        let mut accepting = JoinSet::new();
        for listener in listeners {
            if let Ok(addr) = listener.local_addr() {
                info!(%addr, "listening");
            }
            accepting.spawn(accept_loop(listener, shared.clone()));
        }
        if let Some(admin) = admin {
            if let Ok(addr) = admin.local_addr() {
                info!(%addr, "admin listening (/metrics, /healthz)");
            }
            accepting.spawn(admin_loop(admin, shared.clone()));
        }
        shutdown.await;

        info!("shutting down: closing connections");
        // Dropping the accept loops closes the listening sockets: new clients are refused by
        // the OS from here on.
        accepting.shutdown().await;
        let _ = stop.send(true);
        // The lot hands every parked connection back to a session, which closes it.
        if let Some(lot) = lot {
            let _ = lot.await;
        }
        let grace = shared.config.shutdown_timeout;
        if tokio::time::timeout(grace, all_closed(&shared.limit))
            .await
            .is_err()
        {
            warn!("connections still open after {grace:?}; leaving them behind");
        }
        // The broker thread ends when the last handle to it is gone; connections left behind
        // may still hold one, so it is told to stop explicitly.
        shared.broker.stop().await;
        drop(shared);
        let joined = tokio::task::spawn_blocking(move || broker_thread.join()).await;
        match joined {
            Ok(Ok(result)) => result?,
            _ => return Err(HubError::BrokerGone),
        }
        if let Some(engine) = redis_engine {
            // Members still registered leave presence now instead of expiring later.
            if tokio::time::timeout(REDIS_GOODBYE, engine).await.is_err() {
                warn!("Redis did not take the last leaves within {REDIS_GOODBYE:?}");
            }
        }
        info!("history flushed; stopped");
        Ok(())
    }
}

/// Time the Redis side has, after the broker stopped, to take this node's members out of
/// presence.
const REDIS_GOODBYE: Duration = Duration::from_secs(3);

/// Waits until no connection holds a place in `limit`. Only a shutdown waits for this, so a
/// look every few milliseconds costs nothing while the hub serves.
async fn all_closed(limit: &ConnectionLimit) {
    while limit.in_use() > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning, keep serving.
                warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Over the limit, the request is still read, to be answered with 503.
        let permit = shared.limit.try_acquire().ok();
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let stream = match &shared.config.tls {
                None => MaybeTlsStream::Plain(tcp),
                Some(tls) => {
                    let acceptor = duplex::tls::TlsAcceptor::from(tls.clone());
                    // Boxed (as every step of `routes::handle` is): the task keeps only the
                    // current step's state, which makes an idle connection small.
                    let accepting = duplex::tls::handshake(
                        &acceptor,
                        tcp,
                        shared.config.websocket.handshake_timeout,
                    );
                    match Box::pin(accepting).await {
                        Ok(tls) => MaybeTlsStream::ServerTls(Box::new(tls)),
                        Err(e) => {
                            debug!(%peer, "TLS handshake failed: {e}");
                            return;
                        }
                    }
                }
            };
            // HTTP/2: chosen by ALPN over TLS, or by its preface over cleartext (prior
            // knowledge, as proxies that speak h2c send it).
            let h2 = match &stream {
                MaybeTlsStream::Plain(tcp) => {
                    let timeout = shared.config.websocket.handshake_timeout;
                    duplex::http2::peek_preface(tcp, timeout)
                        .await
                        .unwrap_or(false)
                }
                tls => tls.alpn_protocol() == Some(duplex::http2::ALPN_H2),
            };
            if h2 {
                if let Some(permit) = permit {
                    Box::pin(crate::http2::serve(stream, peer, shared, permit)).await;
                }
                return;
            }
            let session = Box::pin(routes::handle(stream, peer, shared, permit)).await;
            if let Some(session) = session {
                session.await;
            }
        });
    }
}

/// Serves `/metrics` and `/healthz` on the admin listener: plain HTTP, nothing else, no
/// WebSocket, no TLS (it is meant for the host or a private network only).
async fn admin_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                warn!("admin accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let stream = MaybeTlsStream::Plain(tcp);
            let Ok(handshake) = duplex::Handshake::read(stream, shared.config.chat_ws()).await
            else {
                return;
            };
            let request = handshake.request();
            let response = (request.method() == http::Method::GET)
                .then(|| routes::admin_response(request.uri().path(), &shared))
                .flatten()
                .unwrap_or_else(|| {
                    duplex::Rejection::new(
                        http::StatusCode::NOT_FOUND,
                        "the admin listener serves GET /metrics and GET /healthz",
                    )
                    .into_response()
                });
            debug!(%peer, path = request.uri().path(), "admin request");
            let _ = handshake.respond(response).await;
        });
    }
}
