//! Strict HTTP/1.1 request framing (RFC 9112 §6.3 and §2.2) against the real server:
//! every request-smuggling shape gets one refusal, and the connection is closed
//! after it, so nothing the client sent after the head is ever read as a request.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::Server;

/// One response read off the wire.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: String,
}

/// Sends `request` in one write, then reads until the server closes the
/// connection. Panics if it does not close within the 5 s read timeout.
fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<Reply> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream.write_all(request).expect("send");
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            // A reset after the replies is a close too; the replies are checked below.
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "the connection was not closed ({e}) after: {}",
                String::from_utf8_lossy(&received)
            ),
        }
    }
    split_responses(&received)
}

/// Splits what arrived into responses by their `Content-Length` (the server's
/// error replies always carry a body; these tests send no HEAD).
fn split_responses(mut bytes: &[u8]) -> Vec<Reply> {
    let mut replies = Vec::new();
    while !bytes.is_empty() {
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("a partial head: {}", String::from_utf8_lossy(bytes)));
        let head = std::str::from_utf8(&bytes[..end]).expect("an ASCII head");
        assert!(head.starts_with("HTTP/1.1 "), "{head}");
        let status = head[9..12].parse().expect("a status");
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().expect("a length"))
            })
            .unwrap_or(0);
        let body = &bytes[end + 4..end + 4 + len];
        replies.push(Reply {
            status,
            body: String::from_utf8_lossy(body).into_owned(),
        });
        bytes = &bytes[end + 4 + len..];
    }
    replies
}

/// Asserts exactly one reply, with `status` and `msg` in its JSON envelope.
fn refused_once(addr: SocketAddr, request: &str, status: u16, msg: &str) {
    let replies = exchange(addr, request.as_bytes());
    assert_eq!(replies.len(), 1, "{request:?}: {replies:?}");
    assert_eq!(replies[0].status, status, "{request:?}: {replies:?}");
    let json: serde_json::Value = serde_json::from_str(&replies[0].body).expect("a JSON envelope");
    assert_eq!(
        (json["code"].as_u64(), json["msg"].as_str()),
        (Some(u64::from(status)), Some(msg)),
        "{request:?}"
    );
}

const UPGRADE: &str = "Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/// What a smuggler hides after the head, hoping it is read as a second request.
const SMUGGLED: &str = "GET /x HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
fn pipelined_requests_are_still_answered_in_order() {
    // The control for the tests below: two honest requests get two replies.
    let server = Server::start(&[]);
    let replies = exchange(
        server.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n\
          GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 404]);
}

#[test]
fn a_body_to_a_route_without_one_is_not_the_next_request() {
    let server = Server::start(&[]);
    let no_body = "this route takes no request body";
    for target in ["/", "/index.html", "/nowhere", "/resource/x.png"] {
        let n = SMUGGLED.len();
        refused_once(
            server.addr,
            &format!("GET {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\n\r\n{SMUGGLED}"),
            400,
            no_body,
        );
    }
    // Upgrades: the declared body would otherwise be read as WebSocket frames.
    for target in ["/echo", "/chat?token=abc"] {
        refused_once(
            server.addr,
            &format!("GET {target} HTTP/1.1\r\n{UPGRADE}Content-Length: 5\r\n\r\nhello"),
            400,
            no_body,
        );
    }
}

#[test]
fn content_length_must_be_one_number() {
    let server = Server::start(&[]);
    let invalid = "invalid Content-Length";
    let conflicting = "conflicting Content-Length values";
    let login = "POST /user/login HTTP/1.1\r\nHost: x\r\n\
        Content-Type: application/x-www-form-urlencoded\r\n";
    for (lengths, msg) in [
        ("Content-Length: +2\r\n", invalid),
        ("Content-Length:  -1\r\n", invalid),
        ("Content-Length: 1 2\r\n", invalid),
        ("Content-Length: 0x10\r\n", invalid),
        ("Content-Length:\r\n", invalid),
        ("Content-Length: 99999999999999999999999\r\n", invalid),
        ("Content-Length: 5, 6\r\n", conflicting),
        ("Content-Length: 5\r\nContent-Length: 6\r\n", conflicting),
        ("Content-Length: 6\r\nContent-Length: 5\r\n", conflicting),
    ] {
        refused_once(
            server.addr,
            &format!("{login}{lengths}\r\na=b&c{SMUGGLED}"),
            400,
            msg,
        );
    }
    // The same static route too.
    refused_once(
        server.addr,
        &format!("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: +0\r\n\r\n{SMUGGLED}"),
        400,
        invalid,
    );
    // Identical values are one length: the 5-byte body is read, then the request
    // after it is answered.
    for lengths in [
        "Content-Length: 5\r\nContent-Length: 5\r\n",
        "Content-Length: 5, 5\r\n",
    ] {
        let replies = exchange(
            server.addr,
            format!(
                "{login}{lengths}\r\na=b&cGET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
        let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200, 404], "{lengths:?}: {replies:?}");
    }
}

#[test]
fn transfer_encoding_is_refused_on_every_route() {
    let server = Server::start(&[]);
    let te = "send the body with a Content-Length";
    let chunked = "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    for request in [
        format!("GET / HTTP/1.1\r\nHost: x\r\n{chunked}{SMUGGLED}"),
        format!("GET /resource/x.png HTTP/1.1\r\nHost: x\r\n{chunked}{SMUGGLED}"),
        format!("GET /echo HTTP/1.1\r\n{UPGRADE}{chunked}"),
        format!("GET /chat?token=abc HTTP/1.1\r\n{UPGRADE}{chunked}"),
        format!("POST /user/login HTTP/1.1\r\nHost: x\r\n{chunked}{SMUGGLED}"),
        // CL.TE and TE.CL: both headers, in either order.
        format!("POST /user/login HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n{chunked}{SMUGGLED}"),
        "POST /user/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
         Content-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n"
            .to_owned(),
        format!(
            "POST /attach/upload HTTP/1.1\r\nHost: x\r\nCookie: fastim_token=abc\r\n\
             Content-Type: multipart/form-data; boundary=b\r\n{chunked}"
        ),
    ] {
        refused_once(server.addr, &request, 411, te);
    }
}

#[test]
fn lines_must_end_in_crlf() {
    let server = Server::start(&[]);
    let malformed = "malformed request";
    for request in [
        // Bare LF in the request line, between headers, and as the blank line.
        "GET / HTTP/1.1\nHost: x\r\n\r\n".to_owned(),
        "GET / HTTP/1.1\r\nHost: x\nContent-Length: 19\r\n\r\nGET /x HTTP/1.1\r\n\r\n".to_owned(),
        format!("GET / HTTP/1.1\r\nHost: x\r\n\n{SMUGGLED}"),
        // obs-fold.
        "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n Content-Length: 19\r\n\r\n".to_owned(),
        // A lone CR and a NUL.
        "GET / HTTP/1.1\r\nHost: x\rContent-Length: 1\r\n\r\n".to_owned(),
        "GET / HTTP/1.1\r\nHost: x\0y\r\n\r\n".to_owned(),
    ] {
        refused_once(server.addr, &request, 400, malformed);
    }
}
