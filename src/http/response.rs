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
    /// 409: the request conflicts with what exists (a taken name).
    Conflict,
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
            Status::Conflict => 409,
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
            Status::Conflict => "Conflict",
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

/// The body `{"code":..,"msg":".."}`: the one place the JSON envelope of a refusal or
/// of a plain API answer is serialized.
pub fn envelope(code: i32, msg: &str) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Envelope<'a> {
        code: i32,
        msg: &'a str,
    }
    // A struct of a number and a string always serializes.
    serde_json::to_vec(&Envelope { code, msg }).unwrap_or_default()
}

/// A request refused with a status and a sentence for a person: what every
/// refusal of the transport layer becomes on the wire (RFC 9110 status, the JSON
/// envelope, `Connection`, and `Retry-After` when waiting helps).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The status.
    pub status: Status,
    /// Why, for a person.
    pub msg: std::borrow::Cow<'static, str>,
    /// Whether the connection stays open for the next request.
    pub keep_alive: bool,
    /// Seconds after which trying again may succeed (429, 503).
    pub retry_after: Option<u64>,
    /// One more header the status calls for (`Allow` with 405,
    /// `Sec-WebSocket-Version` with 426).
    pub header: Option<(&'static str, &'static str)>,
    /// The answer to a `HEAD`: the same head, no body (RFC 9110 §9.3.2), so that a
    /// kept-alive connection does not read the body as the next response.
    pub head_only: bool,
}

impl Refusal {
    /// A refusal that closes the connection.
    pub fn new(status: Status, msg: impl Into<std::borrow::Cow<'static, str>>) -> Refusal {
        Refusal {
            status,
            msg: msg.into(),
            keep_alive: false,
            retry_after: None,
            header: None,
            head_only: false,
        }
    }

    /// The same, as the answer to a `HEAD` if `head_only`.
    #[must_use]
    pub fn for_head(mut self, head_only: bool) -> Refusal {
        self.head_only = head_only;
        self
    }

    /// The same, keeping the connection if `keep_alive`.
    #[must_use]
    pub fn keep_alive(mut self, keep_alive: bool) -> Refusal {
        self.keep_alive = keep_alive;
        self
    }

    /// The same, with `Retry-After: secs`.
    #[must_use]
    pub fn retry_after(mut self, secs: u64) -> Refusal {
        self.retry_after = Some(secs);
        self
    }

    /// The same, with one more header.
    #[must_use]
    pub fn with_header(mut self, name: &'static str, value: &'static str) -> Refusal {
        self.header = Some((name, value));
        self
    }

    /// Appends the response to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        let body = envelope(i32::from(self.status.code()), &self.msg);
        let retry = self.retry_after.map(|s| s.to_string());
        let mut headers = vec![
            ("Content-Type", "application/json; charset=utf-8"),
            ("Cache-Control", "no-store"),
            (
                "Connection",
                if self.keep_alive {
                    "keep-alive"
                } else {
                    "close"
                },
            ),
        ];
        if let Some(retry) = &retry {
            headers.push(("Retry-After", retry));
        }
        if let Some(header) = self.header {
            headers.push(header);
        }
        if self.head_only {
            write_response_head(out, self.status, &headers, Some(body.len()));
        } else {
            write_response(out, self.status, &headers, &body);
        }
    }

    /// The response as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
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
