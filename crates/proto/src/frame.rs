//! Frame headers (RFC 6455 section 5.2): decode and encode.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! ```

use crate::error::Error;

/// The longest possible frame header: 2 bytes, 8 of extended length, 4 of mask key.
pub const MAX_HEADER_LEN: usize = 14;

/// A frame's opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: the first frame of a text message.
    Text,
    /// 0x2: the first frame of a binary message.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// Decodes the low four bits of a frame's first byte; reserved opcodes fail with 1002.
    ///
    /// ```
    /// use duplex_proto::frame::OpCode;
    /// assert_eq!(OpCode::from_u8(0x9), Ok(OpCode::Ping));
    /// assert!(OpCode::from_u8(0x3).is_err());
    /// ```
    pub fn from_u8(bits: u8) -> Result<OpCode, Error> {
        Ok(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            other => return Err(Error::ReservedOpcode(other)),
        })
    }

    /// The wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Close, ping and pong are control frames: at most 125 bytes, never fragmented.
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A decoded frame header.
///
/// ```
/// use duplex_proto::frame::{FrameHeader, OpCode};
/// // RFC 6455 section 5.7: a single-frame unmasked text message "Hello".
/// let wire = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
/// let (head, len) = FrameHeader::parse(&wire).unwrap().unwrap();
/// assert_eq!((head.fin, head.opcode, head.payload_len, len), (true, OpCode::Text, 5, 2));
/// assert_eq!(head.encode().as_slice(), &wire[..2]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Final fragment of a message.
    pub fin: bool,
    /// RSV1 (used by permessage-deflate).
    pub rsv1: bool,
    /// RSV2 (no defined use).
    pub rsv2: bool,
    /// RSV3 (no defined use).
    pub rsv3: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, present on every frame a client sends.
    pub mask: Option<[u8; 4]>,
    /// The payload length.
    pub payload_len: u64,
}

/// An encoded header: a small inline buffer, so encoding never allocates.
#[derive(Clone, Copy)]
pub struct EncodedHeader {
    buf: [u8; MAX_HEADER_LEN],
    len: u8,
}

impl EncodedHeader {
    /// The header bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for EncodedHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02x?}", self.as_slice())
    }
}

impl FrameHeader {
    /// A header for a final, unmasked frame without RSV bits.
    pub fn new(opcode: OpCode, payload_len: u64) -> Self {
        FrameHeader {
            fin: true,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode,
            mask: None,
            payload_len,
        }
    }

    /// Decodes a header from the start of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold the whole header (nothing is consumed;
    /// call again with more bytes), or the header and its length in bytes. Fails on a reserved
    /// opcode or a 64-bit length with the top bit set; the rules that depend on the connection
    /// (masking, RSV bits, control frame limits) are checked by the connection.
    pub fn parse(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, Error> {
        let [b0, b1, ..] = *buf else {
            return Ok(None);
        };
        let opcode = OpCode::from_u8(b0 & 0x0f)?;
        let masked = b1 & 0x80 != 0;
        let (payload_len, mut pos) = match b1 & 0x7f {
            126 => {
                let Some(ext) = buf.get(2..4) else {
                    return Ok(None);
                };
                (u64::from(u16::from_be_bytes([ext[0], ext[1]])), 4)
            }
            127 => {
                let Some(ext) = buf.get(2..10) else {
                    return Ok(None);
                };
                let mut b = [0u8; 8];
                b.copy_from_slice(ext);
                let len = u64::from_be_bytes(b);
                if len >> 63 != 0 {
                    return Err(Error::InvalidLength);
                }
                (len, 10)
            }
            n => (u64::from(n), 2),
        };
        let mask = if masked {
            let Some(key) = buf.get(pos..pos + 4) else {
                return Ok(None);
            };
            pos += 4;
            Some([key[0], key[1], key[2], key[3]])
        } else {
            None
        };
        Ok(Some((
            FrameHeader {
                fin: b0 & 0x80 != 0,
                rsv1: b0 & 0x40 != 0,
                rsv2: b0 & 0x20 != 0,
                rsv3: b0 & 0x10 != 0,
                opcode,
                mask,
                payload_len,
            },
            pos,
        )))
    }

    /// Encodes the header, with the payload length in its shortest form.
    pub fn encode(&self) -> EncodedHeader {
        let mut buf = [0u8; MAX_HEADER_LEN];
        buf[0] = (u8::from(self.fin) << 7)
            | (u8::from(self.rsv1) << 6)
            | (u8::from(self.rsv2) << 5)
            | (u8::from(self.rsv3) << 4)
            | self.opcode.as_u8();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut pos = match self.payload_len {
            n @ 0..=125 => {
                buf[1] = mask_bit | n as u8;
                2
            }
            n @ 126..=0xffff => {
                buf[1] = mask_bit | 126;
                buf[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                4
            }
            n => {
                buf[1] = mask_bit | 127;
                buf[2..10].copy_from_slice(&n.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            buf[pos..pos + 4].copy_from_slice(&key);
            pos += 4;
        }
        EncodedHeader {
            buf,
            len: pos as u8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(wire: &[u8], expect: FrameHeader) {
        let (head, len) = FrameHeader::parse(wire).unwrap().unwrap();
        assert_eq!(head, expect);
        assert_eq!(head.encode().as_slice(), &wire[..len]);
        // Every proper prefix is "need more bytes", never an error or a wrong header.
        for cut in 0..len {
            assert_eq!(FrameHeader::parse(&wire[..cut]), Ok(None), "prefix {cut}");
        }
    }

    // RFC 6455 section 5.7 examples.
    #[test]
    fn rfc_unmasked_hello() {
        roundtrip(
            &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f],
            FrameHeader::new(OpCode::Text, 5),
        );
    }

    #[test]
    fn rfc_masked_hello() {
        let mut h = FrameHeader::new(OpCode::Text, 5);
        h.mask = Some([0x37, 0xfa, 0x21, 0x3d]);
        roundtrip(
            &[
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
            ],
            h,
        );
    }

    #[test]
    fn rfc_fragmented_hello() {
        let mut first = FrameHeader::new(OpCode::Text, 3);
        first.fin = false;
        roundtrip(&[0x01, 0x03, 0x48, 0x65, 0x6c], first);
        roundtrip(
            &[0x80, 0x02, 0x6c, 0x6f],
            FrameHeader::new(OpCode::Continuation, 2),
        );
    }

    #[test]
    fn rfc_ping_and_pong() {
        roundtrip(
            &[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f],
            FrameHeader::new(OpCode::Ping, 5),
        );
        let mut pong = FrameHeader::new(OpCode::Pong, 5);
        pong.mask = Some([0x37, 0xfa, 0x21, 0x3d]);
        roundtrip(
            &[
                0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
            ],
            pong,
        );
    }

    #[test]
    fn rfc_256_byte_binary() {
        roundtrip(
            &[0x82, 0x7e, 0x01, 0x00],
            FrameHeader::new(OpCode::Binary, 256),
        );
    }

    #[test]
    fn rfc_64k_binary() {
        roundtrip(
            &[0x82, 0x7f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00],
            FrameHeader::new(OpCode::Binary, 65536),
        );
    }

    #[test]
    fn length_boundaries_use_minimal_form() {
        for (len, header_len) in [
            (125, 2),
            (126, 4),
            (65535, 4),
            (65536, 10),
            (u64::MAX >> 1, 10),
        ] {
            let h = FrameHeader::new(OpCode::Binary, len);
            let enc = h.encode();
            assert_eq!(enc.as_slice().len(), header_len, "{len}");
            assert_eq!(
                FrameHeader::parse(enc.as_slice()),
                Ok(Some((h, header_len)))
            );
        }
    }

    #[test]
    fn rejects_reserved_opcodes_and_huge_lengths() {
        for op in [3u8, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            assert_eq!(
                FrameHeader::parse(&[0x80 | op, 0]),
                Err(Error::ReservedOpcode(op))
            );
        }
        assert_eq!(
            FrameHeader::parse(&[0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(Error::InvalidLength)
        );
    }

    #[test]
    fn rsv_bits_are_reported() {
        let (h, _) = FrameHeader::parse(&[0xf1, 0x00]).unwrap().unwrap();
        assert!(h.rsv1 && h.rsv2 && h.rsv3);
    }
}
