//! Incremental UTF-8 validation for text that arrives in pieces.
//!
//! A text message may be split across frames and each frame across reads, and a code point may
//! straddle any of those boundaries. The validator keeps the at most three bytes of an
//! unfinished code point between pieces and reports an error at the first byte that can never
//! be part of valid UTF-8, so a connection fails as soon as the bad byte arrives rather than when
//! the message ends (Autobahn 6.4.x).

/// Validates a byte stream as UTF-8, one piece at a time.
///
/// ```
/// use duplex_proto::utf8::Utf8Validator;
/// let euro = "€".as_bytes(); // three bytes
/// let mut v = Utf8Validator::default();
/// assert!(v.feed(&euro[..1]).is_ok());
/// assert!(v.feed(&euro[1..]).is_ok());
/// assert!(v.is_complete());
///
/// let mut v = Utf8Validator::default();
/// assert!(v.feed(&[0xce, 0xba, 0xe1]).is_ok()); // "κ" then an unfinished code point
/// assert!(!v.is_complete());
/// assert!(v.feed(&[0xff]).is_err());             // fails on this byte, not at the end
/// ```
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    pending: [u8; 4],
    pending_len: u8,
}

/// The bytes fed to a [`Utf8Validator`] are not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

impl Utf8Validator {
    /// Checks the next piece of the stream.
    ///
    /// Returns an error as soon as the bytes seen so far cannot be the start of valid UTF-8.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), InvalidUtf8> {
        if self.pending_len > 0 {
            let have = usize::from(self.pending_len);
            let width = sequence_width(self.pending[0]);
            let take = (width - have).min(data.len());
            self.pending[have..have + take].copy_from_slice(&data[..take]);
            let now = have + take;
            data = &data[take..];
            match std::str::from_utf8(&self.pending[..now]) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_none() => {
                    self.pending_len = now as u8;
                    return Ok(());
                }
                Err(_) => return Err(InvalidUtf8),
            }
        }
        // SIMD validation, about 10x std's speed on non-ASCII text and 2x on ASCII
        // (crates/proto/benches, utf8): `basic` for the common case (the whole piece is
        // valid), `compat`, a little slower, to find where a piece that is not stops being
        // valid (a read that ends inside a code point, every time, for streamed text).
        // Under one SIMD block simdutf8 hands over to std, whose general check costs four
        // times an ASCII test on a 20-byte chat line.
        let valid = if data.len() < 64 && data.is_ascii() {
            true
        } else {
            simdutf8::basic::from_utf8(data).is_ok()
        };
        if valid {
            return Ok(());
        }
        match simdutf8::compat::from_utf8(data) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = &data[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// Whether the stream so far ends on a code point boundary.
    pub fn is_complete(&self) -> bool {
        self.pending_len == 0
    }

    /// Forgets any unfinished code point, ready for a new stream.
    pub fn reset(&mut self) {
        self.pending_len = 0;
    }
}

/// Length of the sequence a lead byte starts. Only called on bytes that `from_utf8` accepted as
/// the start of an unfinished sequence, so they are always valid lead bytes.
fn sequence_width(lead: u8) -> usize {
    match lead {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split_validate(data: &[u8], cuts: &[usize]) -> Result<bool, InvalidUtf8> {
        let mut v = Utf8Validator::default();
        let mut last = 0;
        for &c in cuts {
            v.feed(&data[last..c])?;
            last = c;
        }
        v.feed(&data[last..])?;
        Ok(v.is_complete())
    }

    #[test]
    fn fails_fast_inside_a_code_point() {
        // U+10FFFF is F4 8F BF BF; F4 90 is past the last code point and can never be valid.
        let mut v = Utf8Validator::default();
        v.feed(&[0xf4]).unwrap();
        assert_eq!(v.feed(&[0x90]), Err(InvalidUtf8));
    }

    #[test]
    fn surrogates_are_invalid() {
        let mut v = Utf8Validator::default();
        assert_eq!(v.feed(&[0xed, 0xa0, 0x80]), Err(InvalidUtf8));
    }

    #[test]
    fn one_byte_at_a_time() {
        let text = "Hello-µ@ßöäüàá-UTF-8!! κόσμε €𝄞";
        let mut v = Utf8Validator::default();
        for b in text.as_bytes() {
            v.feed(std::slice::from_ref(b)).unwrap();
        }
        assert!(v.is_complete());
    }

    /// The validator fed `data` cut at `cuts` (clamped and sorted) says what std says of the
    /// whole.
    fn agree_in_pieces(data: &[u8], cuts: &mut [usize]) -> Result<(), TestCaseError> {
        cuts.iter_mut().for_each(|c| *c = (*c).min(data.len()));
        cuts.sort_unstable();
        let whole = std::str::from_utf8(data).is_ok();
        let pieces = split_validate(data, cuts).unwrap_or(false);
        prop_assert_eq!(whole, pieces);
        Ok(())
    }

    proptest! {
        #[test]
        fn agrees_with_std(data in proptest::collection::vec(any::<u8>(), 0..64),
                           mut cuts in proptest::collection::vec(0usize..64, 0..6)) {
            agree_in_pieces(&data, &mut cuts)?;
        }

        /// Long enough for the SIMD paths (64-byte blocks), with one byte anywhere replaced
        /// by anything: valid text, a bad byte, or a code point cut short.
        #[test]
        fn agrees_with_std_on_long_text(s in "\\PC{0,300}", at in any::<prop::sample::Index>(),
                                        bad in any::<u8>(),
                                        mut cuts in proptest::collection::vec(0usize..1200, 0..6)) {
            let mut data = s.into_bytes();
            if !data.is_empty() {
                let i = at.index(data.len());
                data[i] = bad;
            }
            agree_in_pieces(&data, &mut cuts)?;
        }

        #[test]
        fn valid_text_in_any_split(s in "\\PC{0,40}", mut cuts in proptest::collection::vec(0usize..200, 0..6)) {
            let data = s.as_bytes();
            cuts.iter_mut().for_each(|c| *c = (*c).min(data.len()));
            cuts.sort_unstable();
            prop_assert_eq!(split_validate(data, &cuts), Ok(true));
        }
    }
}
