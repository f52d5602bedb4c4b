//! `application/x-www-form-urlencoded` bodies and query strings, as fastIM's web client
//! writes them.
//!
//! The client builds bodies with `name + "=" + encodeURI(value)` joined by `&`
//! (FASTIM.md §1.4). `encodeURI` leaves `+` alone and writes a space as `%20`, so unlike
//! the HTML form encoding (and the `form_urlencoded` crate) a `+` here is a literal plus
//! sign: a password `a+b` must arrive as `a+b`, not `a b`.
//!
//! Rules:
//! - pairs are separated by `&`; empty pairs (`a=1&&b=2`, a trailing `&`) are skipped;
//! - a pair splits at its first `=`; a pair without `=` is a name with an empty value;
//! - `%XX` (two hex digits, either case) decodes to the byte `XX`; a `%` not followed by
//!   two hex digits stays a literal `%` (as the WHATWG URL parser does);
//! - `+` is kept as `+`;
//! - after decoding, names and values must be UTF-8, otherwise the whole input is refused.

use std::fmt;

/// Why a form could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormError {
    /// A name or value is not UTF-8 after percent-decoding; the field name if it decoded.
    InvalidUtf8 {
        /// The field whose value is bad, when its name itself is valid.
        field: Option<String>,
    },
}

impl fmt::Display for FormError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormError::InvalidUtf8 { field: Some(name) } => {
                write!(f, "the value of {name} is not valid UTF-8")
            }
            FormError::InvalidUtf8 { field: None } => {
                f.write_str("a field name is not valid UTF-8")
            }
        }
    }
}

impl std::error::Error for FormError {}

/// Decodes a form body or query string into `(name, value)` pairs, in order, duplicates
/// kept.
///
/// # Errors
/// [`FormError::InvalidUtf8`] if a decoded name or value is not UTF-8.
pub fn parse_form(input: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    let mut pairs = Vec::new();
    for piece in input.split(|&b| b == b'&') {
        if piece.is_empty() {
            continue;
        }
        let (name, value) = match piece.iter().position(|&b| b == b'=') {
            Some(i) => (&piece[..i], &piece[i + 1..]),
            None => (piece, &[][..]),
        };
        let name = String::from_utf8(percent_decode(name))
            .map_err(|_| FormError::InvalidUtf8 { field: None })?;
        let value =
            String::from_utf8(percent_decode(value)).map_err(|_| FormError::InvalidUtf8 {
                field: Some(name.clone()),
            })?;
        pairs.push((name, value));
    }
    Ok(pairs)
}

/// Decodes `%XX` escapes; everything else, `+` included, is copied as it is.
pub fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        if b == b'%' {
            let hi = input.get(i + 1).and_then(|&c| hex_value(c));
            let lo = input.get(i + 2).and_then(|&c| hex_value(c));
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

/// The value of one hex digit.
fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(input: &str) -> Vec<(String, String)> {
        parse_form(input.as_bytes()).expect("valid form")
    }

    fn owned(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|&(n, v)| (n.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn body_as_the_original_client_sends_it() {
        // encodeURI("a+b c") = "a+b%20c"; encodeURI("张") = "%E5%BC%A0".
        assert_eq!(
            pairs("mobile=13800000000&passwd=a+b%20c&nickname=%E5%BC%A0"),
            owned(&[
                ("mobile", "13800000000"),
                ("passwd", "a+b c"),
                ("nickname", "张")
            ])
        );
    }

    #[test]
    fn plus_is_literal_and_escapes_decode_in_any_case() {
        assert_eq!(pairs("a=1+1%3d2%3D"), owned(&[("a", "1+1=2=")]));
        assert_eq!(pairs("a=%2B"), owned(&[("a", "+")]));
        assert_eq!(pairs("a%20b=c"), owned(&[("a b", "c")]));
    }

    #[test]
    fn empty_pairs_missing_values_and_duplicates() {
        assert_eq!(pairs(""), owned(&[]));
        assert_eq!(pairs("&&"), owned(&[]));
        assert_eq!(
            pairs("a=1&&b&c=&a=2&"),
            owned(&[("a", "1"), ("b", ""), ("c", ""), ("a", "2")])
        );
        assert_eq!(pairs("=x"), owned(&[("", "x")]));
        assert_eq!(pairs("a==b"), owned(&[("a", "=b")]));
    }

    #[test]
    fn malformed_escapes_stay_literal() {
        assert_eq!(
            pairs("a=100%&b=%zz&c=%4&d=%%41"),
            owned(&[("a", "100%"), ("b", "%zz"), ("c", "%4"), ("d", "%A")])
        );
    }

    #[test]
    fn invalid_utf8_after_decoding_is_refused_naming_the_field() {
        assert_eq!(
            parse_form(b"ok=1&nickname=%FF%FE"),
            Err(FormError::InvalidUtf8 {
                field: Some("nickname".to_owned())
            })
        );
        assert_eq!(
            parse_form(b"%C3=1"),
            Err(FormError::InvalidUtf8 { field: None })
        );
        // Raw non-UTF-8 bytes too, not only escaped ones.
        assert!(parse_form(b"a=\xff").is_err());
        let err = parse_form(b"memo=%E5%BC").expect_err("truncated");
        assert_eq!(err.to_string(), "the value of memo is not valid UTF-8");
    }

    #[test]
    fn any_bytes_never_panic() {
        for input in [&b"%"[..], b"%%", b"=", b"&=&", b"%f", b"a=%F0%9F%98%80"] {
            let _ = parse_form(input);
        }
        assert_eq!(pairs("a=%F0%9F%98%80"), owned(&[("a", "😀")]));
    }
}
