//! permessage-deflate (RFC 7692): compression of each message's payload with DEFLATE.
//!
//! - [`negotiate`]: the `Sec-WebSocket-Extensions` offer and answer, in both roles.
//! - [`codec`]: the per-direction compressor and decompressor.
//!
//! The codec uses `flate2` on its `zlib-rs` backend: a pure-Rust port of zlib, so the build needs
//! no C toolchain, and unlike `miniz_oxide` it supports the window sizes (9-15 bits) that the
//! `*_max_window_bits` parameters negotiate. A window of 8 bits cannot be honoured by zlib's
//! compressor: offers that require it are declined (server) or refused (client).

pub mod codec;
pub mod negotiate;

/// The extension token.
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// How this endpoint wants to compress, before negotiation.
///
/// ```
/// use duplex_proto::deflate::DeflateConfig;
/// let config = DeflateConfig::default().window_bits(12).threshold(256);
/// assert_eq!(config.window_bits, 12);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// Compression level, 0 (none) to 9 (best). Default 1: on chat-like JSON it compresses as
    /// well as level 6 at about half the CPU (measured by `examples/deflate_cost.rs`).
    pub level: u32,
    /// The LZ77 window, in bits (9-15), that this side compresses with; a server also asks a
    /// client that allows it to compress with no more. Default 12 (4 KiB): a third less
    /// memory than 15 for about 15% less ratio; 9 costs the same memory and compresses far
    /// worse.
    pub window_bits: u8,
    /// Reset this side's compressor after every message instead of keeping the history. Costs
    /// ratio on small similar messages, but the compressor is then borrowed from a per-thread
    /// pool for each message, so an idle connection holds no compression memory. Default off.
    pub no_context_takeover: bool,
    /// Ask the peer to reset its compressor after every message. Default off.
    pub peer_no_context_takeover: bool,
    /// Messages smaller than this many bytes are sent uncompressed: DEFLATE's block overhead
    /// makes tiny payloads bigger. Default 32.
    pub threshold: usize,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            level: 1,
            window_bits: 12,
            no_context_takeover: false,
            peer_no_context_takeover: false,
            threshold: 32,
        }
    }
}

impl DeflateConfig {
    /// Sets [`DeflateConfig::level`] (clamped to 0-9).
    pub fn level(mut self, level: u32) -> Self {
        self.level = level.min(9);
        self
    }

    /// Sets [`DeflateConfig::window_bits`] (clamped to 9-15).
    pub fn window_bits(mut self, bits: u8) -> Self {
        self.window_bits = bits.clamp(9, 15);
        self
    }

    /// Sets [`DeflateConfig::no_context_takeover`].
    pub fn no_context_takeover(mut self, on: bool) -> Self {
        self.no_context_takeover = on;
        self
    }

    /// Sets [`DeflateConfig::peer_no_context_takeover`].
    pub fn peer_no_context_takeover(mut self, on: bool) -> Self {
        self.peer_no_context_takeover = on;
        self
    }

    /// Sets [`DeflateConfig::threshold`].
    pub fn threshold(mut self, bytes: usize) -> Self {
        self.threshold = bytes;
        self
    }
}

/// What was agreed for one connection, seen from this endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// Window this side compresses with.
    pub compress_window_bits: u8,
    /// Reset this side's compressor after every message.
    pub compress_reset: bool,
    /// Window the peer compresses with (this side decompresses with it).
    pub decompress_window_bits: u8,
    /// The peer resets its compressor after every message, so ours can too.
    pub decompress_reset: bool,
    /// Compression level.
    pub level: u32,
    /// Smallest message compressed.
    pub threshold: usize,
}
