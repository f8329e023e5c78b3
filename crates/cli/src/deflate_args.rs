//! The permessage-deflate options shared by `duplex serve` and `duplex connect`, with their
//! `DUPLEX_DEFLATE*` environment variables (read by both commands).

use clap::Args;
use duplex::DeflateConfig;

/// permessage-deflate (RFC 7692) settings.
#[derive(Debug, Clone, Args)]
pub struct DeflateArgs {
    /// Negotiate permessage-deflate compression (off by default: each compressed connection
    /// end costs about 230 KiB of memory at 12 window bits, unless
    /// --deflate-no-context-takeover).
    #[arg(long, env = "DUPLEX_DEFLATE")]
    pub deflate: bool,
    /// LZ77 window in bits (9-15): smaller saves memory, larger compresses better.
    #[arg(long, default_value_t = DeflateConfig::default().window_bits, env = "DUPLEX_DEFLATE_WINDOW_BITS",
          value_parser = clap::value_parser!(u8).range(9..=15))]
    pub deflate_window_bits: u8,
    /// Compression level (0-9).
    #[arg(long, default_value_t = DeflateConfig::default().level, env = "DUPLEX_DEFLATE_LEVEL",
          value_parser = clap::value_parser!(u32).range(0..=9))]
    pub deflate_level: u32,
    /// Messages smaller than this many bytes are sent uncompressed.
    #[arg(long, default_value_t = DeflateConfig::default().threshold, env = "DUPLEX_DEFLATE_THRESHOLD")]
    pub deflate_threshold: usize,
    /// Reset the compressor after every message: less ratio on small similar messages, but no
    /// compression memory held per idle connection, and (serve) a chat message is compressed
    /// once for all the room's members instead of going to them uncompressed.
    #[arg(long, env = "DUPLEX_DEFLATE_NO_CONTEXT_TAKEOVER")]
    pub deflate_no_context_takeover: bool,
}

impl DeflateArgs {
    /// The library configuration, or `None` when compression is off.
    pub fn config(&self) -> Option<DeflateConfig> {
        self.deflate.then(|| {
            DeflateConfig::default()
                .window_bits(self.deflate_window_bits)
                .level(self.deflate_level)
                .threshold(self.deflate_threshold)
                .no_context_takeover(self.deflate_no_context_takeover)
        })
    }
}
