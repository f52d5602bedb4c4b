//! The opening handshake, server side (RFC 6455 §4.2).
//!
//! The HTTP layer parses the request head; this module decides whether it is a
//! valid WebSocket upgrade and writes the `101 Switching Protocols` answer, whose
//! `Sec-WebSocket-Accept` proves the server read the client's key:
//! `base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};

use super::deflate::{self, Agreement};
use crate::http::{Refusal, RequestHead, Status, write_response};

/// The GUID of §1.3 that every accept key is hashed with.
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only protocol version this server speaks (§4.1).
pub const VERSION: &str = "13";

/// Why an upgrade request is refused; each maps to one HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// §4.1: "The method of the request MUST be GET".
    NotGet,
    /// §4.1: "the HTTP version MUST be at least 1.1".
    OldHttpVersion,
    /// §4.1: the request must carry a `Host` header.
    MissingHost,
    /// No `Upgrade` header with the `websocket` token.
    MissingUpgrade,
    /// No `Connection` header with the `Upgrade` token.
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Key` missing, or not the base64 of 16 bytes (§4.1).
    BadKey,
    /// `Sec-WebSocket-Version` missing or not 13 (§4.2.2: answer 426 with our version).
    UnsupportedVersion,
}

impl HandshakeError {
    /// The status that answers this error.
    pub fn status(self) -> Status {
        match self {
            HandshakeError::UnsupportedVersion => Status::UpgradeRequired,
            _ => Status::BadRequest,
        }
    }

    /// A short explanation for the response body.
    pub fn message(self) -> &'static str {
        match self {
            HandshakeError::NotGet => "a WebSocket upgrade must use GET",
            HandshakeError::OldHttpVersion => "a WebSocket upgrade needs HTTP/1.1",
            HandshakeError::MissingHost => "missing Host header",
            HandshakeError::MissingUpgrade => "missing 'Upgrade: websocket' header",
            HandshakeError::MissingConnectionUpgrade => "missing 'Connection: Upgrade' header",
            HandshakeError::BadKey => "Sec-WebSocket-Key must be the base64 of 16 bytes",
            HandshakeError::UnsupportedVersion => "only Sec-WebSocket-Version 13 is supported",
        }
    }
}

/// Whether the request asks for a WebSocket at all (has `Upgrade: websocket`).
pub fn is_upgrade(head: &RequestHead<'_>) -> bool {
    head.header("upgrade")
        .is_some_and(|v| has_token(v, "websocket"))
}

/// Checks a request head against §4.2.1 and returns the `Sec-WebSocket-Accept` value.
pub fn validate(head: &RequestHead<'_>) -> Result<String, HandshakeError> {
    if head.method != "GET" {
        return Err(HandshakeError::NotGet);
    }
    if head.minor_version < 1 {
        return Err(HandshakeError::OldHttpVersion);
    }
    if head.header("host").is_none() {
        return Err(HandshakeError::MissingHost);
    }
    if !is_upgrade(head) {
        return Err(HandshakeError::MissingUpgrade);
    }
    // Firefox sends "Connection: keep-alive, Upgrade".
    if !head
        .header("connection")
        .is_some_and(|v| has_token(v, "upgrade"))
    {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    let key = head
        .header("sec-websocket-key")
        .map(<[u8]>::trim_ascii)
        .ok_or(HandshakeError::BadKey)?;
    match BASE64.decode(key) {
        Ok(nonce) if nonce.len() == 16 => {}
        _ => return Err(HandshakeError::BadKey),
    }
    if head.header("sec-websocket-version").map(<[u8]>::trim_ascii) != Some(VERSION.as_bytes()) {
        return Err(HandshakeError::UnsupportedVersion);
    }
    Ok(accept_key(key))
}

/// `base64(SHA-1(key + GUID))`, the value of `Sec-WebSocket-Accept` (§4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// The permessage-deflate offer to accept, from every `Sec-WebSocket-Extensions`
/// header of the request (§9.1: the header may repeat; RFC 7692 §5.1).
pub fn negotiate_deflate(head: &RequestHead<'_>) -> Option<Agreement> {
    deflate::negotiate(
        head.headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-extensions"))
            .map(|&(_, value)| value),
    )
}

/// Appends the `101 Switching Protocols` response to `out`, with the accepted
/// extension's `Sec-WebSocket-Extensions` value if there is one.
///
/// No subprotocol is ever selected, and extensions other than the one accepted
/// are declined by leaving them out (§4.2.2, §9.1).
pub fn write_accept(out: &mut Vec<u8>, accept: &str, extensions: Option<&str>) {
    let mut headers = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept),
    ];
    if let Some(extensions) = extensions {
        headers.push(("Sec-WebSocket-Extensions", extensions));
    }
    write_response(out, Status::SwitchingProtocols, &headers, &[]);
}

/// The HTTP refusal of a handshake: its status and message, and for a version we
/// do not speak the `Sec-WebSocket-Version` we do (§4.4).
pub fn rejection(error: HandshakeError) -> Refusal {
    let refusal = Refusal::new(error.status(), error.message());
    if error == HandshakeError::UnsupportedVersion {
        refusal.with_header("Sec-WebSocket-Version", VERSION)
    } else {
        refusal
    }
}

/// Whether a comma-separated header value contains `token`, ignoring case.
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_head;

    const GOOD: &str = "GET /echo HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Origin: http://example.com\r\nSec-WebSocket-Version: 13\r\n\r\n";

    fn check(req: &str) -> Result<String, HandshakeError> {
        let head = parse_head(req.as_bytes(), 8192)
            .expect("parses")
            .expect("complete");
        validate(&head)
    }

    #[test]
    fn rfc_1_3_accept_key() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(check(GOOD).as_deref(), Ok("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    }

    #[test]
    fn names_and_tokens_ignore_case_and_lists() {
        let firefox = GOOD
            .replace("Connection: Upgrade", "connection: keep-alive, Upgrade")
            .replace("Upgrade: websocket", "UPGRADE: WebSocket");
        assert!(check(&firefox).is_ok());
    }

    #[test]
    fn each_violation_has_its_status() {
        let cases = [
            (GOOD.replace("GET", "POST"), HandshakeError::NotGet, 400),
            (
                GOOD.replace("HTTP/1.1", "HTTP/1.0"),
                HandshakeError::OldHttpVersion,
                400,
            ),
            (
                GOOD.replace("Host: server.example.com\r\n", ""),
                HandshakeError::MissingHost,
                400,
            ),
            (
                GOOD.replace("Upgrade: websocket\r\n", ""),
                HandshakeError::MissingUpgrade,
                400,
            ),
            (
                GOOD.replace("Upgrade: websocket", "Upgrade: h2c"),
                HandshakeError::MissingUpgrade,
                400,
            ),
            (
                GOOD.replace("Connection: Upgrade", "Connection: keep-alive"),
                HandshakeError::MissingConnectionUpgrade,
                400,
            ),
            (
                GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="),
                HandshakeError::BadKey,
                400,
            ),
            (
                GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "not base64!"),
                HandshakeError::BadKey,
                400,
            ),
            (
                GOOD.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
                HandshakeError::BadKey,
                400,
            ),
            (
                GOOD.replace("Version: 13", "Version: 8"),
                HandshakeError::UnsupportedVersion,
                426,
            ),
            (
                GOOD.replace("Sec-WebSocket-Version: 13\r\n", ""),
                HandshakeError::UnsupportedVersion,
                426,
            ),
        ];
        for (req, error, status) in cases {
            assert_eq!(check(&req), Err(error), "{req}");
            assert_eq!(error.status().code(), status);
        }
    }

    #[test]
    fn extension_headers_are_read_in_order() {
        let req = GOOD.replace(
            "Origin:",
            "Sec-WebSocket-Extensions: x-foo, permessage-deflate; bad\r\n\
             sec-websocket-extensions: permessage-deflate; server_max_window_bits=10\r\nOrigin:",
        );
        let head = parse_head(req.as_bytes(), 8192)
            .expect("parses")
            .expect("complete");
        let agreed = negotiate_deflate(&head).expect("second header's offer");
        assert_eq!(agreed.params.server_window_bits, 10);
        let head = parse_head(GOOD.as_bytes(), 8192)
            .expect("parses")
            .expect("complete");
        assert_eq!(negotiate_deflate(&head), None);
    }

    #[test]
    fn responses() {
        let mut out = Vec::new();
        write_accept(&mut out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", None);
        assert_eq!(
            String::from_utf8(out).expect("ascii"),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
        let mut out = Vec::new();
        write_accept(&mut out, "x", Some("permessage-deflate"));
        let text = String::from_utf8(out).expect("ascii");
        assert!(
            text.ends_with(
                "Sec-WebSocket-Accept: x\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
            ),
            "{text}"
        );
        let out = rejection(HandshakeError::UnsupportedVersion).to_bytes();
        let text = String::from_utf8(out).expect("ascii");
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(text.contains("Sec-WebSocket-Version: 13\r\n"));
        assert!(text.contains(r#"{"code":426,"msg":"#), "{text}");
    }
}
