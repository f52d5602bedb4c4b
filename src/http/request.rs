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
pub fn parse_head(buf: &[u8], max_len: usize) -> Result<Option<RequestHead<'_>>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
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
        Ok(httparse::Status::Partial) if buf.len() >= max_len => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(_) => Err(HeadError::Malformed),
    }
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
}
