//! Writing responses.

/// The statuses this server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// 101: the WebSocket handshake succeeded.
    SwitchingProtocols,
    /// 200.
    Ok,
    /// 304: the client's cached copy is current.
    NotModified,
    /// 400: the request is malformed.
    BadRequest,
    /// 401: no valid credentials.
    Unauthorized,
    /// 403: refused, e.g. a foreign `Origin`.
    Forbidden,
    /// 404: no such path.
    NotFound,
    /// 405: the path exists, the method does not.
    MethodNotAllowed,
    /// 411: a body without `Content-Length` (chunked bodies are not accepted).
    LengthRequired,
    /// 415: an upload that is not a supported image.
    UnsupportedMediaType,
    /// 413: the body is over the limit.
    PayloadTooLarge,
    /// 426: the client must switch to a supported WebSocket version.
    UpgradeRequired,
    /// 429: a rate limit (logins, registrations); `Retry-After` says when to try again.
    TooManyRequests,
    /// 431: the request head is over the limit.
    HeaderFieldsTooLarge,
    /// 500: the server failed (e.g. the database); the client did nothing wrong.
    InternalServerError,
    /// 503: the server is at a limit (connections, worker queues); `Retry-After` says
    /// when to try again.
    ServiceUnavailable,
}

impl Status {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            Status::SwitchingProtocols => 101,
            Status::Ok => 200,
            Status::NotModified => 304,
            Status::BadRequest => 400,
            Status::Unauthorized => 401,
            Status::Forbidden => 403,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::LengthRequired => 411,
            Status::PayloadTooLarge => 413,
            Status::UnsupportedMediaType => 415,
            Status::UpgradeRequired => 426,
            Status::TooManyRequests => 429,
            Status::HeaderFieldsTooLarge => 431,
            Status::InternalServerError => 500,
            Status::ServiceUnavailable => 503,
        }
    }

    /// The reason phrase.
    pub fn reason(self) -> &'static str {
        match self {
            Status::SwitchingProtocols => "Switching Protocols",
            Status::Ok => "OK",
            Status::NotModified => "Not Modified",
            Status::BadRequest => "Bad Request",
            Status::Unauthorized => "Unauthorized",
            Status::Forbidden => "Forbidden",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::LengthRequired => "Length Required",
            Status::PayloadTooLarge => "Payload Too Large",
            Status::UnsupportedMediaType => "Unsupported Media Type",
            Status::UpgradeRequired => "Upgrade Required",
            Status::TooManyRequests => "Too Many Requests",
            Status::HeaderFieldsTooLarge => "Request Header Fields Too Large",
            Status::InternalServerError => "Internal Server Error",
            Status::ServiceUnavailable => "Service Unavailable",
        }
    }
}

/// Appends a complete response to `out`. `Content-Length` is added when there is a body
/// or the status allows one.
pub fn write_response(out: &mut Vec<u8>, status: Status, headers: &[(&str, &str)], body: &[u8]) {
    use std::io::Write;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", status.code(), status.reason());
    for (name, value) in headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    if status != Status::SwitchingProtocols {
        let _ = write!(out, "Content-Length: {}\r\n", body.len());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// Appends a status line and headers only: for `HEAD` (with the length the body
/// would have) and for 304 (without a length).
pub fn write_response_head(
    out: &mut Vec<u8>,
    status: Status,
    headers: &[(&str, &str)],
    content_length: Option<usize>,
) {
    use std::io::Write;
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", status.code(), status.reason());
    for (name, value) in headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    if let Some(len) = content_length {
        let _ = write!(out, "Content-Length: {len}\r\n");
    }
    out.extend_from_slice(b"\r\n");
}
