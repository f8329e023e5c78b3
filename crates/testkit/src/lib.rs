//! Test support shared by the duplex crates' tests.
//!
//! - [`frame`]: a raw WebSocket frame codec, written independently of `duplex-proto`: encode
//!   frames with any first byte, announced length and mask (broken ones included), decode
//!   frames from bytes or from a socket.
//! - [`http`]: handshake heads as text: the RFC 6455 sample request, a `101` answer, a
//!   response parser.
//! - [`net`] (feature `net`): raw-socket peers: the RFC 6455 sample handshake written by hand,
//!   response heads read byte by byte, a close frame and the end of the connection checked.
//! - [`alloc`]: a counting global allocator (allocations per thread, live and peak bytes).
//! - [`pki`] (feature `tls`): a private CA and a server certificate made with rcgen, as PEM
//!   files and as rustls configurations.
//! - [`redis`] (feature `redis`): a real `redis-server` on a free loopback port, killed and
//!   restarted at will.
//! - [`netns`] (feature `netns`): a network namespace joined to the root one by veth pairs,
//!   cut silently and healed, for partition tests.
//! - [`node`] (feature `node`): a Node.js script as an independent peer, run as a server or
//!   to its end.
#![deny(unsafe_code)]
#![deny(missing_docs, missing_debug_implementations)]

pub mod alloc;
pub mod frame;
pub mod http;
#[cfg(feature = "net")]
pub mod net;
#[cfg(feature = "netns")]
pub mod netns;
#[cfg(feature = "node")]
pub mod node;
#[cfg(feature = "tls")]
pub mod pki;
#[cfg(feature = "redis")]
pub mod redis;

pub use frame::{encode, masked, parse_frames, unmasked, Frame};

/// The `Sec-WebSocket-Key` of RFC 6455 section 1.3.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// The `Sec-WebSocket-Accept` for [`KEY`].
pub const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Takes everything queued in `q`, chunk by chunk as an I/O layer would (a sans-I/O engine's
/// send queue, say).
pub fn drain(q: &mut impl bytes::Buf) -> Vec<u8> {
    let mut out = Vec::with_capacity(q.remaining());
    while q.has_remaining() {
        let chunk = q.chunk();
        let n = chunk.len();
        out.extend_from_slice(chunk);
        q.advance(n);
    }
    out
}

/// `Sec-WebSocket-Accept` for a key: base64(SHA-1(key + GUID)), RFC 6455 section 4.2.2,
/// computed here so that tests need not trust the engine's own.
pub fn accept_key(key: &str) -> String {
    use base64::Engine;
    use sha1::{Digest, Sha1};
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_rfc_sample_accept_key() {
        assert_eq!(super::accept_key(super::KEY), super::ACCEPT);
    }
}
