//! Parsing a request head from a possibly partial buffer, with `httparse`.

/// Most headers a request may carry; browsers send about 15.
const MAX_HEADERS: usize = 64;

/// A parsed request line and headers, borrowing the receive buffer.
#[derive(Debug)]
pub struct RequestHead<'b> {
    /// `GET`, `POST`, ...
    pub method: &'b str,
    /// The request target as sent: path and query.
    pub target: &'b str,
    /// The minor version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub minor_version: u8,
    /// Header names and raw values, in order.
    pub headers: Vec<(&'b str, &'b [u8])>,
    /// Length of the head including the blank line; the body starts here.
    pub len: usize,
}

/// Why a request head is refused before any routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1.x syntax.
    Malformed,
    /// The head did not end within the limit.
    TooLarge,
}

/// Why a request's body framing is refused (RFC 9112 §6.3). Each of these is a
/// shape in which two parsers could disagree on where the body ends, so the
/// connection must not be reused after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramingError {
    /// Several `Content-Length` values that are not all the same number.
    DuplicateLength,
    /// A `Content-Length` value that is not `1*DIGIT` fitting in a `usize`.
    InvalidLength,
    /// A `Transfer-Encoding` header: this server reads only `Content-Length` bodies.
    TransferEncoding,
}

impl<'b> RequestHead<'b> {
    /// The first value of a header, by case-insensitive name (RFC 9110 §5.1).
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, v)| v)
    }

    /// The path part of the target, without the query.
    pub fn path(&self) -> &'b str {
        self.target.split('?').next().unwrap_or(self.target)
    }

    /// The query part of the target, without the `?`.
    pub fn query(&self) -> Option<&'b str> {
        self.target.split_once('?').map(|(_, q)| q)
    }
}

/// Parses the head at the start of `buf`; `Ok(None)` means "need more bytes".
///
/// A head that has not ended after `max_len` bytes is [`HeadError::TooLarge`],
/// decided as soon as that many bytes have arrived.
///
/// Stricter than `httparse` alone: every line must end in CRLF. httparse also
/// accepts a bare LF (the leniency RFC 9112 §2.2 permits), but a proxy in front
/// that does not could see a different set of headers, so a bare LF is
/// [`HeadError::Malformed`]. httparse already refuses obs-fold, a CR not followed
/// by LF, NUL and other controls in requests.
pub fn parse_head(buf: &[u8], max_len: usize) -> Result<Option<RequestHead<'_>>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if has_bare_lf(&buf[..len]) => {
            Err(HeadError::Malformed)
        }
        Ok(httparse::Status::Complete(len)) if len <= max_len => {
            let (Some(method), Some(target), Some(minor_version)) =
                (req.method, req.path, req.version)
            else {
                return Err(HeadError::Malformed);
            };
            Ok(Some(RequestHead {
                method,
                target,
                minor_version,
                headers: req.headers.iter().map(|h| (h.name, h.value)).collect(),
                len,
            }))
        }
        Ok(httparse::Status::Complete(_)) => Err(HeadError::TooLarge),
        // An unfinished head holds only head bytes: a bare LF in it is already fatal.
        Ok(httparse::Status::Partial) if has_bare_lf(buf) => Err(HeadError::Malformed),
        Ok(httparse::Status::Partial) if buf.len() >= max_len => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(_) => Err(HeadError::Malformed),
    }
}

/// Whether some `\n` in `head` is not preceded by `\r` (RFC 9112 §2.2: the line
/// terminator is CRLF).
fn has_bare_lf(head: &[u8]) -> bool {
    head.iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
}

/// The body length a request declares, or why its framing is refused
/// (RFC 9112 §6.3). Without `Content-Length` (and `Transfer-Encoding`) a request
/// has no body: length 0.
///
/// - Any `Transfer-Encoding` is refused, with or without `Content-Length`: this
///   server does not decode chunked bodies, and a request carrying both is the
///   classic smuggling shape, which §6.3 item 3 says "ought to be handled as an
///   error".
/// - Each `Content-Length` value must be `1*DIGIT` (RFC 9110 §8.6): no sign, no
///   inner spaces, not empty, and it must fit in a `usize`.
/// - Several `Content-Length` headers, or a list such as `5, 5`, are accepted
///   only when every value is the same number (§6.3 item 5); otherwise the
///   length is unknowable and the request is refused. Once any of these fails
///   the caller must answer 400 (411 for `Transfer-Encoding`) and close.
pub fn body_framing(head: &RequestHead<'_>) -> Result<usize, FramingError> {
    if head
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
    {
        return Err(FramingError::TransferEncoding);
    }
    let mut length = None;
    for (_, value) in head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        // httparse has trimmed the value's surrounding OWS; list elements carry
        // their own around the commas.
        for element in value.split(|&b| b == b',') {
            let n = parse_digits(trim_ows(element)).ok_or(FramingError::InvalidLength)?;
            match length {
                Some(first) if first != n => return Err(FramingError::DuplicateLength),
                _ => length = Some(n),
            }
        }
    }
    Ok(length.unwrap_or(0))
}

/// `1*DIGIT` as a `usize`; `None` for anything else (`+2`, `-1`, `0x10`, `1 2`,
/// empty) or a number too large.
fn parse_digits(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // All ASCII digits, so UTF-8 and without the sign `usize::from_str` allows.
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Strips optional whitespace (SP and HTAB, RFC 9110 §5.6.3) at both ends.
fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_then_complete() {
        let req = b"GET /echo?x=1 HTTP/1.1\r\nHost: a\r\nUPGRADE: websocket\r\n\r\nrest";
        for cut in 0..req.len() - 4 {
            assert!(
                matches!(parse_head(&req[..cut], 8192), Ok(None)),
                "cut {cut}"
            );
        }
        let head = parse_head(req, 8192).expect("valid").expect("complete");
        assert_eq!(
            (head.method, head.path(), head.query()),
            ("GET", "/echo", Some("x=1"))
        );
        assert_eq!(head.header("upgrade"), Some(&b"websocket"[..]));
        assert_eq!(head.len, req.len() - 4);
    }

    #[test]
    fn limits_and_garbage() {
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        assert_eq!(
            parse_head(long.as_bytes(), 8192).err(),
            Some(HeadError::TooLarge)
        );
        assert_eq!(
            parse_head(&long.as_bytes()[..8192], 8192).err(),
            Some(HeadError::TooLarge)
        );
        assert_eq!(
            parse_head(b"\x16\x03\x01\x00", 8192).err(),
            Some(HeadError::Malformed)
        );
        let many: String = (0..70).map(|i| format!("X-{i}: 1\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(
            parse_head(many.as_bytes(), 8192).err(),
            Some(HeadError::TooLarge)
        );
    }

    fn head(req: &[u8]) -> RequestHead<'_> {
        parse_head(req, 8192).expect("valid").expect("complete")
    }

    #[test]
    fn content_length_must_be_one_number() {
        use FramingError::*;
        let cases: &[(&[u8], Result<usize, FramingError>)] = &[
            (b"GET / HTTP/1.1\r\n\r\n", Ok(0)),
            (b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", Ok(0)),
            (b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", Ok(5)),
            (b"POST / HTTP/1.1\r\ncontent-length:\t 5 \t\r\n\r\n", Ok(5)),
            (b"POST / HTTP/1.1\r\nContent-Length: 007\r\n\r\n", Ok(7)),
            (
                b"POST / HTTP/1.1\r\nContent-Length: +2\r\n\r\n",
                Err(InvalidLength),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                Err(InvalidLength),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length:  -1\r\n\r\n",
                Err(InvalidLength),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n",
                Err(InvalidLength),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
                Err(InvalidLength),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n",
                Err(InvalidLength),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5.0\r\n\r\n",
                Err(InvalidLength),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
                Err(InvalidLength),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length:   \r\n\r\n",
                Err(InvalidLength),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: \xd9\xa5\r\n\r\n",
                Err(InvalidLength),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                Err(InvalidLength),
            ),
            (b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", Ok(5)),
            (b"POST / HTTP/1.1\r\nContent-Length: 5,5\r\n\r\n", Ok(5)),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n",
                Err(DuplicateLength),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5,\r\n\r\n",
                Err(InvalidLength),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: ,5\r\n\r\n",
                Err(InvalidLength),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                Ok(5),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\n",
                Err(DuplicateLength),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: +5\r\n\r\n",
                Err(InvalidLength),
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(TransferEncoding),
            ),
            (
                b"POST / HTTP/1.1\r\ntransfer-encoding: identity\r\n\r\n",
                Err(TransferEncoding),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(TransferEncoding),
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: +5\r\n\r\n",
                Err(TransferEncoding),
            ),
        ];
        for (req, expected) in cases {
            assert_eq!(
                body_framing(&head(req)),
                *expected,
                "{}",
                String::from_utf8_lossy(req)
            );
        }
    }

    #[test]
    fn lines_end_in_crlf_only() {
        let malformed: &[&[u8]] = &[
            // Bare LF in or after the request line (RFC 9112 §2.2).
            b"GET / HTTP/1.1\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\nContent-Length: 5\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\n",
            b"GET / HTTP/1.1\n\n",
            b"\nGET / HTTP/1.1\r\n\r\n",
            // A CR not followed by LF.
            b"GET / HTTP/1.1\rHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\r\n\r\n",
            // obs-fold (RFC 9112 §5.2): httparse refuses it in requests.
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\t2\r\n\r\n",
            b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
            // No whitespace between a field name and its colon (RFC 9112 §5.1).
            b"GET / HTTP/1.1\r\nContent-Length : 5\r\n\r\n",
            // NUL and other controls.
            b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHo\x00st: a\r\n\r\n",
            b"GET /\x00 HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\x7fb\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\x01b\r\n\r\n",
        ];
        for req in malformed {
            assert_eq!(
                parse_head(req, 8192).err(),
                Some(HeadError::Malformed),
                "{:?}",
                String::from_utf8_lossy(req)
            );
        }
        // Decided before the head is complete, as soon as the bare LF arrives.
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nHost: a\n", 8192).err(),
            Some(HeadError::Malformed)
        );
        // A body may hold any bytes: only the head is checked.
        let req = b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\na\nb";
        assert_eq!(head(req).len, req.len() - 3);
        // An empty line before the request line is ignored (RFC 9112 §2.2).
        assert_eq!(head(b"\r\nGET / HTTP/1.1\r\n\r\n").method, "GET");
    }
}
