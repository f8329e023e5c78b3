//! Raw frames (RFC 6455 section 5.2), byte by byte.
//!
//! Encoding takes the first byte whole (FIN, RSV1-3, opcode: `FIN | TEXT`, `RSV1 | BINARY`)
//! and, in [`encode`], an announced length that may differ from the payload's, so a test can
//! build any frame a broken or hostile peer might send. Decoding unmasks and reports every bit.

/// The FIN bit of the first byte.
pub const FIN: u8 = 0x80;
/// RSV1 (the permessage-deflate bit).
pub const RSV1: u8 = 0x40;
/// RSV2.
pub const RSV2: u8 = 0x20;
/// RSV3.
pub const RSV3: u8 = 0x10;

/// Opcode 0x0.
pub const CONTINUATION: u8 = 0x0;
/// Opcode 0x1.
pub const TEXT: u8 = 0x1;
/// Opcode 0x2.
pub const BINARY: u8 = 0x2;
/// Opcode 0x8.
pub const CLOSE: u8 = 0x8;
/// Opcode 0x9.
pub const PING: u8 = 0x9;
/// Opcode 0xA.
pub const PONG: u8 = 0xA;

/// The masking key of the RFC 6455 section 5.7 examples, used by [`masked`].
pub const MASK_KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Encodes a frame with first byte `b0`, a header announcing `len` payload bytes (which may
/// differ from `payload.len()`, for headers of frames that are not all there or that lie), and
/// `payload` masked with `mask` if given.
///
/// ```
/// use duplex_testkit::frame::{encode, FIN, TEXT};
/// // RFC 6455 section 5.7: a single-frame unmasked text message "Hello".
/// assert_eq!(encode(FIN | TEXT, 5, b"Hello", None), b"\x81\x05Hello");
/// ```
pub fn encode(b0: u8, len: u64, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut out = Vec::with_capacity(14 + payload.len());
    out.push(b0);
    match len {
        0..=125 => out.push(mask_bit | len as u8),
        126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A whole frame masked with [`MASK_KEY`], as a client sends it.
///
/// ```
/// use duplex_testkit::frame::{masked, FIN, TEXT};
/// // RFC 6455 section 5.7: a single-frame masked text message "Hello".
/// assert_eq!(masked(FIN | TEXT, b"Hello"), b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58");
/// ```
pub fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
    encode(b0, payload.len() as u64, payload, Some(MASK_KEY))
}

/// A whole unmasked frame, as a server sends it.
pub fn unmasked(b0: u8, payload: &[u8]) -> Vec<u8> {
    encode(b0, payload.len() as u64, payload, None)
}

/// The payload of a close frame: the code, then the reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut out = code.to_be_bytes().to_vec();
    out.extend_from_slice(reason.as_bytes());
    out
}

/// A decoded frame, its payload unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The FIN bit.
    pub fin: bool,
    /// RSV1-3 as the three low bits (RSV1 = 4).
    pub rsv: u8,
    /// The opcode.
    pub opcode: u8,
    /// Whether the frame was masked.
    pub masked: bool,
    /// The payload, unmasked.
    pub payload: Vec<u8>,
}

impl Frame {
    /// The status code of a close frame (its first two payload bytes), if it has one.
    pub fn close_code(&self) -> Option<u16> {
        let code = self.payload.get(..2)?;
        Some(u16::from_be_bytes([code[0], code[1]]))
    }

    /// The reason of a close frame (the payload after the code).
    pub fn close_reason(&self) -> &[u8] {
        self.payload.get(2..).unwrap_or_default()
    }
}

/// The header of a frame at the start of `buf`: (first byte, mask key, payload length, header
/// length), or `None` if the header is not all there.
pub fn decode_header(buf: &[u8]) -> Option<(u8, Option<[u8; 4]>, u64, usize)> {
    let (&b0, &b1) = (buf.first()?, buf.get(1)?);
    let (len, mut at) = match b1 & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?)),
            4,
        ),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    let key = if b1 & 0x80 != 0 {
        at += 4;
        Some(buf.get(at - 4..at)?.try_into().ok()?)
    } else {
        None
    };
    Some((b0, key, len, at))
}

/// Decodes the frame at the start of `buf`: the frame and the bytes it took, or `None` if it is
/// not all there (nothing is consumed: call again with more bytes).
pub fn decode(buf: &[u8]) -> Option<(Frame, usize)> {
    let (b0, key, len, at) = decode_header(buf)?;
    let end = at.checked_add(usize::try_from(len).ok()?)?;
    let mut payload = buf.get(at..end)?.to_vec();
    if let Some(key) = key {
        unmask(&mut payload, key);
    }
    Some((frame(b0, key.is_some(), payload), end))
}

/// Decodes every frame in `wire`; panics on a truncated one.
pub fn parse_frames(mut wire: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    while !wire.is_empty() {
        let (frame, used) = decode(wire).unwrap_or_else(|| panic!("a truncated frame: {wire:?}"));
        frames.push(frame);
        wire = &wire[used..];
    }
    frames
}

/// Takes one whole frame from the front of `buf`, if there is one.
pub fn take_frame(buf: &mut Vec<u8>) -> Option<Frame> {
    let (frame, used) = decode(buf)?;
    buf.drain(..used);
    Some(frame)
}

/// XORs `payload` with `key` (masking and unmasking are the same).
pub fn unmask(payload: &mut [u8], key: [u8; 4]) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

pub(crate) fn frame(b0: u8, masked: bool, payload: Vec<u8>) -> Frame {
    Frame {
        fin: b0 & FIN != 0,
        rsv: (b0 >> 4) & 0x7,
        opcode: b0 & 0x0f,
        masked,
        payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_length_form_decodes_back() {
        for len in [0usize, 1, 125, 126, 0xffff, 0x10000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            for mask in [None, Some(MASK_KEY)] {
                let wire = encode(RSV1 | BINARY, len as u64, &payload, mask);
                let (frame, used) = decode(&wire).unwrap();
                assert_eq!(used, wire.len());
                assert_eq!((frame.fin, frame.rsv, frame.opcode), (false, 4, BINARY));
                assert_eq!(frame.masked, mask.is_some());
                assert_eq!(frame.payload, payload);
                assert!(decode(&wire[..wire.len() - 1]).is_none());
            }
        }
    }

    #[test]
    fn close_frames() {
        let frames = parse_frames(&unmasked(FIN | CLOSE, &close_payload(1000, "bye")));
        assert_eq!(frames[0].close_code(), Some(1000));
        assert_eq!(frames[0].close_reason(), b"bye");
    }
}
