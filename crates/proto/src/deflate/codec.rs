//! Compressing and decompressing message payloads (RFC 7692 section 7.2).
//!
//! A compressed message is the DEFLATE stream of its payload flushed with a sync flush, minus
//! the four bytes `00 00 ff ff` that end every sync flush; the receiver appends them back.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::DeflateParams;
use crate::error::Error;

/// The tail of a sync flush, removed by the sender and restored by the receiver.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Output grows by at most this much per step, so a decompression bomb is caught within one
/// step of the limit and the full inflated size is never allocated.
const STEP: usize = 64 * 1024;

/// Idle zlib states kept per thread for connections without context takeover.
const POOL: usize = 8;

thread_local! {
    /// Without context takeover a codec's state means nothing between messages, so connections
    /// borrow one from here for the length of a message instead of each keeping ~200 KiB
    /// (the shared-compressor idea of uWebSockets).
    static COMPRESSORS: RefCell<Vec<(u32, u8, Compress)>> = const { RefCell::new(Vec::new()) };
    static DECOMPRESSORS: RefCell<Vec<(u8, Decompress)>> = const { RefCell::new(Vec::new()) };
}

fn borrow_compressor(level: u32, bits: u8) -> Compress {
    COMPRESSORS
        .with(|pool| {
            let mut pool = pool.borrow_mut();
            let i = pool
                .iter()
                .position(|(l, b, _)| (*l, *b) == (level, bits))?;
            Some(pool.swap_remove(i).2)
        })
        .unwrap_or_else(|| Compress::new_with_window_bits(Compression::new(level), false, bits))
}

fn return_compressor(level: u32, bits: u8, mut c: Compress) {
    c.reset();
    COMPRESSORS.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL {
            pool.push((level, bits, c));
        }
    });
}

fn borrow_decompressor(bits: u8) -> Decompress {
    DECOMPRESSORS
        .with(|pool| {
            let mut pool = pool.borrow_mut();
            let i = pool.iter().position(|(b, _)| *b == bits)?;
            Some(pool.swap_remove(i).1)
        })
        .unwrap_or_else(|| Decompress::new_with_window_bits(false, bits))
}

fn return_decompressor(bits: u8, mut d: Decompress) {
    d.reset(false);
    DECOMPRESSORS.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL {
            pool.push((bits, d));
        }
    });
}

/// Compresses outgoing messages for one connection.
///
/// With context takeover the zlib state (200-350 KiB) is allocated on the first compressed
/// message and kept; without it, a state is borrowed from a per-thread pool for each message,
/// so an idle connection holds none.
///
/// ```
/// use duplex_proto::deflate::codec::Deflater;
/// use duplex_proto::deflate::{negotiate, DeflateConfig};
/// let params = negotiate::params_for_test(DeflateConfig::default());
/// let mut deflater = Deflater::new(&params);
/// // RFC 7692 section 7.2.3.1: "Hello" compressed.
/// assert_eq!(deflater.compress(b"Hello").unwrap(), [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
/// ```
pub struct Deflater {
    state: Option<Compress>,
    level: u32,
    window_bits: u8,
    reset: bool,
    threshold: usize,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater")
            .field("allocated", &self.state.is_some())
            .field("window_bits", &self.window_bits)
            .field("reset", &self.reset)
            .finish()
    }
}

impl Deflater {
    /// A compressor for the agreed parameters.
    pub fn new(params: &DeflateParams) -> Self {
        Deflater {
            state: None,
            level: params.level,
            window_bits: params.compress_window_bits,
            reset: params.compress_reset,
            threshold: params.threshold,
        }
    }

    /// Whether a payload of `len` bytes is worth compressing.
    pub fn wants(&self, len: usize) -> bool {
        len >= self.threshold
    }

    /// Compresses one whole message payload.
    pub fn compress(&mut self, data: &[u8]) -> Result<Vec<u8>, Error> {
        if let Some(shared) = self.shareable() {
            return shared.compress(data);
        }
        let (level, bits) = (self.level, self.window_bits);
        let c = self.state.get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::new(level), false, bits)
        });
        compress_with(c, data)
    }

    /// How this compressor works when it keeps no history between messages (no context
    /// takeover), `None` when it does. Then its output depends on the message alone, so every
    /// connection with an equal [`Shareable`] would send the same bytes: a broadcast can
    /// compress once for all of them.
    pub fn shareable(&self) -> Option<Shareable> {
        self.reset.then_some(Shareable {
            level: self.level,
            window_bits: self.window_bits,
            threshold: self.threshold,
        })
    }
}

/// The parameters that decide a compressor's output when it resets after every message (see
/// [`Deflater::shareable`]): connections with equal values can share one compressed copy of
/// a message.
///
/// ```
/// use duplex_proto::deflate::codec::Deflater;
/// use duplex_proto::deflate::{negotiate, DeflateConfig};
/// let params = negotiate::params_for_test(DeflateConfig::default().no_context_takeover(true));
/// let shared = Deflater::new(&params).shareable().unwrap();
/// let mut own = Deflater::new(&params);
/// let text = b"the same bytes for every member of the room";
/// assert_eq!(shared.compress(text).unwrap(), own.compress(text).unwrap());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shareable {
    /// Compression level (0-9).
    pub level: u32,
    /// The LZ77 window in bits.
    pub window_bits: u8,
    /// Payloads smaller than this go uncompressed.
    pub threshold: usize,
}

impl Shareable {
    /// Whether a payload of `len` bytes is worth compressing.
    pub fn wants(&self, len: usize) -> bool {
        len >= self.threshold
    }

    /// Compresses one whole message payload with a compressor borrowed from this thread's
    /// pool.
    pub fn compress(&self, data: &[u8]) -> Result<Vec<u8>, Error> {
        let (level, bits) = (self.level, self.window_bits);
        let mut c = borrow_compressor(level, bits);
        let out = compress_with(&mut c, data);
        return_compressor(level, bits, c);
        out
    }
}

/// DEFLATE `data` with a sync flush and drop the flush's `00 00 ff ff` tail.
fn compress_with(c: &mut Compress, data: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    let start = c.total_in();
    loop {
        let consumed = (c.total_in() - start) as usize;
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(64));
        }
        c.compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
            .map_err(|e| Error::Compression(e.to_string()))?;
        // Done once all input is in and the flush did not run out of room.
        if (c.total_in() - start) as usize == data.len() && out.len() < out.capacity() {
            break;
        }
    }
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
    if out.is_empty() {
        // zlib emits nothing for a sync flush right after another one (an empty message after
        // any message, with context takeover). An empty payload is not valid (the receiver
        // would read the appended tail as a block header): send the single 0x00 of an empty
        // stored block instead, as RFC 7692 section 7.2.3.6 shows.
        out.push(0x00);
    }
    Ok(out)
}

/// Decompresses incoming messages for one connection, never producing more than the message
/// size limit.
///
/// ```
/// use duplex_proto::deflate::codec::Inflater;
/// use duplex_proto::deflate::{negotiate, DeflateConfig};
/// let params = negotiate::params_for_test(DeflateConfig::default());
/// let mut inflater = Inflater::new(&params);
/// let mut out = Vec::new();
/// inflater.inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], &mut out, 1024).unwrap();
/// inflater.finish(&mut out, 1024).unwrap();
/// assert_eq!(out, b"Hello");
/// ```
pub struct Inflater {
    state: Option<Decompress>,
    window_bits: u8,
    reset: bool,
    /// The peer's DEFLATE stream ended (a block with BFINAL set) inside the current message.
    ended: bool,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("allocated", &self.state.is_some())
            .field("window_bits", &self.window_bits)
            .finish()
    }
}

impl Inflater {
    /// A decompressor for the agreed parameters.
    pub fn new(params: &DeflateParams) -> Self {
        Inflater {
            state: None,
            window_bits: params.decompress_window_bits,
            reset: params.decompress_reset,
            ended: false,
        }
    }

    /// Decompresses the payload of one frame of a compressed message, appending to `out`.
    ///
    /// Fails with [`Error::MessageTooLarge`] as soon as `out` would pass `max` bytes, and with
    /// [`Error::Compression`] on data that is not DEFLATE.
    ///
    /// A peer may end a message with a DEFLATE block that has BFINAL set, padded with a byte
    /// (RFC 7692 section 7.2.3.4): what follows the final block in the message is ignored.
    pub fn inflate(&mut self, input: &[u8], out: &mut Vec<u8>, max: usize) -> Result<(), Error> {
        if self.ended {
            return Ok(());
        }
        let bits = self.window_bits.max(9);
        let reset = self.reset;
        let d = self.state.get_or_insert_with(|| {
            if reset {
                borrow_decompressor(bits)
            } else {
                Decompress::new_with_window_bits(false, bits)
            }
        });
        let start = d.total_in();
        loop {
            let consumed = (d.total_in() - start) as usize;
            if out.len() == out.capacity() {
                if out.len() > max {
                    return Err(Error::MessageTooLarge {
                        size: out.len() as u64,
                        max,
                    });
                }
                // Room for at most one step past the limit, so the limit is detected without
                // ever allocating what a bomb would expand to.
                let room = (max + 1 - out.len()).clamp(1, STEP);
                out.reserve_exact(room);
            }
            let (in_before, out_before) = (d.total_in(), out.len());
            let status = d.decompress_vec(&input[consumed..], out, FlushDecompress::Sync);
            // Output past the limit counts first, even when bad data follows it in the same
            // call, so the close code does not depend on how the bytes were split into reads.
            if out.len() > max {
                return Err(Error::MessageTooLarge {
                    size: out.len() as u64,
                    max,
                });
            }
            let status = status.map_err(|e| Error::Compression(e.to_string()))?;
            let all_in = (d.total_in() - start) as usize == input.len();
            match status {
                // A final block: the peer's stream ended; the rest of the message is padding.
                Status::StreamEnd => {
                    self.ended = true;
                    return Ok(());
                }
                _ if all_in && out.len() < out.capacity() => return Ok(()),
                _ if d.total_in() == in_before
                    && out.len() == out_before
                    && out.len() < out.capacity() =>
                {
                    return Err(Error::Compression("decompressor made no progress".into()))
                }
                _ => {}
            }
        }
    }

    /// Ends a compressed message: feeds the removed sync-flush tail, then resets the state if
    /// the peer does not keep context, or if its stream ended (its next message starts a new
    /// one).
    pub fn finish(&mut self, out: &mut Vec<u8>, max: usize) -> Result<(), Error> {
        let result = self.inflate(&TAIL, out, max);
        if std::mem::take(&mut self.ended) && !self.reset {
            if let Some(d) = self.state.as_mut() {
                d.reset(false);
            }
        }
        if self.reset {
            if let Some(d) = self.state.take() {
                if result.is_ok() {
                    return_decompressor(self.window_bits.max(9), d);
                }
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deflate::negotiate::params_for_test;
    use crate::deflate::DeflateConfig;

    fn roundtrip(config: DeflateConfig, messages: &[&[u8]]) -> Vec<Vec<u8>> {
        let params = params_for_test(config);
        let mut d = Deflater::new(&params);
        let mut i = Inflater::new(&params);
        messages
            .iter()
            .map(|m| {
                let packed = d.compress(m).unwrap();
                let mut out = Vec::new();
                i.inflate(&packed, &mut out, 1 << 20).unwrap();
                i.finish(&mut out, 1 << 20).unwrap();
                out
            })
            .collect()
    }

    /// zlib's own defaults, which produced the RFC's examples.
    fn zlib_default() -> DeflateConfig {
        DeflateConfig::default().level(6).window_bits(15)
    }

    #[test]
    fn rfc_7692_hello_with_context_takeover() {
        // Section 7.2.3.2: the second "Hello" refers back to the first.
        let params = params_for_test(zlib_default());
        let mut d = Deflater::new(&params);
        assert_eq!(
            d.compress(b"Hello").unwrap(),
            [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]
        );
        assert_eq!(
            d.compress(b"Hello").unwrap(),
            [0xf2, 0x00, 0x11, 0x00, 0x00]
        );
    }

    #[test]
    fn rfc_7692_hello_without_context_takeover() {
        let params = params_for_test(zlib_default().no_context_takeover(true));
        let mut d = Deflater::new(&params);
        for _ in 0..2 {
            assert_eq!(
                d.compress(b"Hello").unwrap(),
                [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]
            );
        }
    }

    #[test]
    fn rfc_7692_decodes_its_examples() {
        let params = params_for_test(DeflateConfig::default());
        let mut i = Inflater::new(&params);
        // 7.2.3.3: a non-compressed block.
        let mut out = Vec::new();
        i.inflate(
            &[
                0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
            ],
            &mut out,
            100,
        )
        .unwrap();
        i.finish(&mut out, 100).unwrap();
        assert_eq!(out, b"Hello");
        // 7.2.3.5: two deflate blocks in one message.
        let mut i = Inflater::new(&params);
        let mut out = Vec::new();
        i.inflate(
            &[
                0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
            ],
            &mut out,
            100,
        )
        .unwrap();
        i.finish(&mut out, 100).unwrap();
        assert_eq!(out, b"Hello");
    }

    #[test]
    fn rfc_7692_bfinal_block() {
        // 7.2.3.4: "Hello" in a block with BFINAL set, padded with one byte. Found while seeding
        // the `inflate` fuzz target: it failed with "data after the end of the stream" (1007).
        for config in [
            DeflateConfig::default(),
            DeflateConfig::default().no_context_takeover(true),
        ] {
            let mut i = Inflater::new(&params_for_test(config));
            for payload in [
                &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00][..],
                // Without the padding byte, and split after the final block.
                &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00][..],
                // The next message is a new stream: a sync-flushed one works after it.
                &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00][..],
            ] {
                let mut out = Vec::new();
                let (a, b) = payload.split_at(payload.len().min(7));
                i.inflate(a, &mut out, 100).unwrap();
                i.inflate(b, &mut out, 100).unwrap();
                i.finish(&mut out, 100).unwrap();
                assert_eq!(out, b"Hello");
            }
        }
    }

    #[test]
    fn too_large_wins_over_bad_data_after_it() {
        // Output past the limit followed by invalid data is 1009 however the input is split
        // (the `inflate` fuzz target's case).
        let params = params_for_test(DeflateConfig::default().window_bits(14));
        let input = [0x3a, 0, 0, 0, 0, 0, 0x04, 0, 0];
        for cut in 0..=input.len() {
            let mut i = Inflater::new(&params);
            let mut out = Vec::new();
            let (a, b) = input.split_at(cut);
            let result = i
                .inflate(a, &mut out, 0)
                .and_then(|()| i.inflate(b, &mut out, 0))
                .and_then(|()| i.finish(&mut out, 0));
            assert!(
                matches!(result, Err(Error::MessageTooLarge { .. })),
                "cut at {cut}: {result:?}"
            );
        }
    }

    #[test]
    fn empty_and_large_messages_roundtrip() {
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let msgs: [&[u8]; 4] = [b"", b"a", &big, b"hello hello hello"];
        assert_eq!(
            roundtrip(DeflateConfig::default(), &msgs),
            msgs.map(<[u8]>::to_vec)
        );
        assert_eq!(
            roundtrip(
                DeflateConfig::default()
                    .window_bits(9)
                    .no_context_takeover(true),
                &msgs
            ),
            msgs.map(<[u8]>::to_vec)
        );
    }

    #[test]
    fn empty_messages_after_others_roundtrip() {
        // Found by the `extensions` fuzz target: with context takeover, the second empty
        // message compressed to no bytes at all, which no receiver can inflate.
        let msgs: [&[u8]; 4] = [b"", b"", b"Hello", b""];
        assert_eq!(
            roundtrip(DeflateConfig::default(), &msgs),
            msgs.map(<[u8]>::to_vec)
        );
        let params = params_for_test(DeflateConfig::default());
        let mut d = Deflater::new(&params);
        d.compress(b"Hello").unwrap();
        assert_eq!(d.compress(b"").unwrap(), [0x00]);
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let params = params_for_test(DeflateConfig::default().level(9));
        let zeros = vec![0u8; 8 << 20];
        let packed = Deflater::new(&params).compress(&zeros).unwrap();
        assert!(packed.len() < 16 * 1024, "{}", packed.len());
        let mut out = Vec::new();
        let err = Inflater::new(&params)
            .inflate(&packed, &mut out, 1 << 20)
            .unwrap_err();
        assert!(matches!(err, Error::MessageTooLarge { .. }), "{err}");
        assert!(
            out.capacity() <= (1 << 20) + STEP,
            "allocated {}",
            out.capacity()
        );
    }

    #[test]
    fn garbage_is_a_compression_error() {
        let params = params_for_test(DeflateConfig::default());
        let mut out = Vec::new();
        let err = Inflater::new(&params)
            .inflate(&[0xff, 0xff, 0xff, 0xff], &mut out, 100)
            .unwrap_err();
        assert!(matches!(err, Error::Compression(_)), "{err}");
    }
}
