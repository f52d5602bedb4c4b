//! Incremental UTF-8 validation of a text message that arrives in pieces (RFC 6455 §8.1).
//!
//! A text message may be split anywhere, even inside a character, across fragments
//! and across TCP reads. The validator remembers how much of the growing message is
//! known good and re-checks only from there, so a sequence cut at a boundary is
//! finished by the next piece. It fails at the first byte that can no longer start
//! or continue a valid sequence (an overlong form, a surrogate, a code point above
//! U+10FFFF), without waiting for the rest of the message.

/// The message bytes are not UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidUtf8;

/// Tracks the validated prefix of a message buffer that only ever grows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Utf8Validator {
    /// 32 bits, as message limits are ([`super::Limits`]): an idle connection stays small.
    valid_up_to: u32,
}

impl Utf8Validator {
    /// A validator for an empty message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the bytes of `message` added since the last call.
    ///
    /// A character cut off at the end of `message` is accepted for now, as long
    /// as the bytes present can still begin a valid character.
    pub fn advance(&mut self, message: &[u8]) -> Result<(), InvalidUtf8> {
        let start = self.valid_up_to as usize;
        let valid = match simdutf8::compat::from_utf8(&message[start..]) {
            Ok(_) => message.len(),
            // `error_len() == None`: the input ended inside a sequence that is valid so far.
            Err(e) if e.error_len().is_none() => start + e.valid_up_to(),
            Err(_) => return Err(InvalidUtf8),
        };
        self.valid_up_to = u32::try_from(valid).map_err(|_| InvalidUtf8)?;
        Ok(())
    }

    /// Checks that a complete message does not end inside a character.
    pub fn finish(&self, message: &[u8]) -> Result<(), InvalidUtf8> {
        if self.valid_up_to as usize == message.len() {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `bytes` in pieces of `step` and returns where validation failed
    /// (the length fed when it failed), or `None` if the whole message is valid.
    fn feed(bytes: &[u8], step: usize) -> Result<(), usize> {
        let mut v = Utf8Validator::new();
        let mut end = 0;
        while end < bytes.len() {
            end = (end + step).min(bytes.len());
            v.advance(&bytes[..end]).map_err(|_| end)?;
        }
        v.finish(bytes).map_err(|_| bytes.len())
    }

    #[test]
    fn valid_text_in_every_split() {
        let text = "κόσμε Hello-µ@ßöäüàá-UTF-8!! 𝄞 \u{10FFFF}".as_bytes();
        for step in 1..=text.len() {
            assert_eq!(feed(text, step), Ok(()), "step {step}");
        }
    }

    #[test]
    fn edge_cases() {
        let invalid: &[&[u8]] = &[
            &[0xc0, 0xaf],             // overlong '/'
            &[0xe0, 0x80, 0xaf],       // overlong, 3 bytes
            &[0xf0, 0x80, 0x80, 0xaf], // overlong, 4 bytes
            &[0xed, 0xa0, 0x80],       // high surrogate U+D800
            &[0xed, 0xbf, 0xbf],       // low surrogate U+DFFF
            &[0xf4, 0x90, 0x80, 0x80], // U+110000
            &[0xf5, 0x80, 0x80, 0x80], // lead byte beyond U+10FFFF
            &[0xff],                   // never valid
            &[0x80],                   // lone continuation
            &[0xce, 0xba, 0xe1, 0xbd], // ends inside a character
        ];
        for bytes in invalid {
            for step in 1..=bytes.len() {
                assert!(feed(bytes, step).is_err(), "{bytes:x?} step {step}");
            }
        }
        let valid: &[&[u8]] = &[
            &[0xed, 0x9f, 0xbf],       // U+D7FF, just below the surrogates
            &[0xee, 0x80, 0x80],       // U+E000, just above
            &[0xf4, 0x8f, 0xbf, 0xbf], // U+10FFFF
            &[0xef, 0xbf, 0xbf],       // U+FFFF
        ];
        for bytes in valid {
            assert_eq!(feed(bytes, 1), Ok(()), "{bytes:x?}");
        }
    }

    #[test]
    fn fails_fast_inside_a_sequence() {
        // U+110000 is impossible after its second byte: no need to see the last two.
        let mut v = Utf8Validator::new();
        assert_eq!(v.advance(&[0xf4]), Ok(()));
        assert_eq!(v.advance(&[0xf4, 0x90]), Err(InvalidUtf8));
        // A surrogate is impossible after its second byte too.
        let mut v = Utf8Validator::new();
        assert_eq!(v.advance(b"ok \xed"), Ok(()));
        assert_eq!(v.advance(b"ok \xed\xa0"), Err(InvalidUtf8));
    }

    proptest! {
        #[test]
        fn agrees_with_std(bytes in proptest::collection::vec(any::<u8>(), 0..64), step in 1usize..9) {
            prop_assert_eq!(feed(&bytes, step).is_ok(), std::str::from_utf8(&bytes).is_ok());
        }

        #[test]
        fn valid_strings_pass_any_split(s in ".{0,40}", step in 1usize..9) {
            prop_assert_eq!(feed(s.as_bytes(), step), Ok(()));
        }
    }
}
