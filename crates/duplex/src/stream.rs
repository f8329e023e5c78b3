//! [`MaybeTlsStream`]: the transport of a connection: plain TCP for `ws://`, TLS for `wss://`,
//! or a stream of an HTTP/2 connection (RFC 8441).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP connection, with TLS on top when the URL was `wss://` (client) or the server
/// terminates TLS itself; or one stream of an HTTP/2 connection (cargo feature `http2`).
///
/// What [`ClientBuilder::connect`](crate::ClientBuilder::connect) returns the WebSocket over
/// (when a proxy was used, the TCP connection is the tunnel through it), and what a server
/// that accepts both `ws://` and `wss://` can serve over.
///
/// ```no_run
/// # async fn run() -> duplex::Result<()> {
/// use duplex::MaybeTlsStream;
/// let (ws, _) = duplex::connect("wss://example.com/socket").await?;
/// assert!(matches!(ws.get_ref(), MaybeTlsStream::Tls(_)));
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum MaybeTlsStream {
    /// Plain TCP (`ws://`).
    Plain(TcpStream),
    /// TLS over TCP (`wss://`). Boxed: the TLS state is large and this keeps the plain case
    /// small.
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// TLS over TCP, server side (see [`crate::tls::handshake`]).
    #[cfg(feature = "tls")]
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// A stream of an HTTP/2 connection (RFC 8441; see [`crate::http2`]), over TLS or h2c. The
    /// connection's transport belongs to the task that drives it. Boxed like TLS.
    #[cfg(feature = "http2")]
    H2(Box<crate::http2::H2Stream>),
}

impl MaybeTlsStream {
    /// The TCP connection underneath (to a proxy, when one is used); `None` for an HTTP/2
    /// stream, whose connection is shared and owned by the task that drives it.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            MaybeTlsStream::Plain(tcp) => Some(tcp),
            #[cfg(feature = "tls")]
            MaybeTlsStream::Tls(tls) => Some(tls.get_ref().0),
            #[cfg(feature = "tls")]
            MaybeTlsStream::ServerTls(tls) => Some(tls.get_ref().0),
            #[cfg(feature = "http2")]
            MaybeTlsStream::H2(_) => None,
        }
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        match self {
            MaybeTlsStream::Plain(_) => false,
            #[cfg(feature = "http2")]
            MaybeTlsStream::H2(h2) => h2.is_tls(),
            #[cfg(feature = "tls")]
            _ => true,
        }
    }

    /// Whether this is a stream of an HTTP/2 connection (RFC 8441) rather than a connection of
    /// its own.
    ///
    /// ```
    /// # async fn run(ws: duplex::WebSocket<duplex::MaybeTlsStream>) {
    /// let version = if ws.get_ref().is_http2() { "HTTP/2" } else { "HTTP/1.1" };
    /// # }
    /// ```
    pub fn is_http2(&self) -> bool {
        #[cfg(feature = "http2")]
        if let MaybeTlsStream::H2(_) = self {
            return true;
        }
        false
    }

    /// The application protocol TLS negotiated (ALPN: `b"h2"`, `b"http/1.1"`), if any: what a
    /// server offering both ([`crate::tls::offer_http2`]) looks at to choose between
    /// [`crate::http2::accept`] and [`crate::Handshake::read`].
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        match self {
            #[cfg(feature = "tls")]
            MaybeTlsStream::Tls(tls) => tls.get_ref().1.alpn_protocol(),
            #[cfg(feature = "tls")]
            MaybeTlsStream::ServerTls(tls) => tls.get_ref().1.alpn_protocol(),
            _ => None,
        }
    }
}

impl AsyncRead for MaybeTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "tls")]
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            #[cfg(feature = "tls")]
            MaybeTlsStream::ServerTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            #[cfg(feature = "http2")]
            MaybeTlsStream::H2(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "tls")]
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            #[cfg(feature = "tls")]
            MaybeTlsStream::ServerTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            #[cfg(feature = "http2")]
            MaybeTlsStream::H2(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            #[cfg(feature = "tls")]
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            #[cfg(feature = "tls")]
            MaybeTlsStream::ServerTls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            #[cfg(feature = "http2")]
            MaybeTlsStream::H2(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTlsStream::Plain(s) => s.is_write_vectored(),
            #[cfg(feature = "tls")]
            MaybeTlsStream::Tls(s) => s.is_write_vectored(),
            #[cfg(feature = "tls")]
            MaybeTlsStream::ServerTls(s) => s.is_write_vectored(),
            #[cfg(feature = "http2")]
            MaybeTlsStream::H2(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "tls")]
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            #[cfg(feature = "tls")]
            MaybeTlsStream::ServerTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            #[cfg(feature = "http2")]
            MaybeTlsStream::H2(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(feature = "tls")]
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            #[cfg(feature = "tls")]
            MaybeTlsStream::ServerTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            #[cfg(feature = "http2")]
            MaybeTlsStream::H2(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
