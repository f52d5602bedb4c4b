//! `--trust-proxy`: `X-Forwarded-For` and `X-Forwarded-Proto` are believed from a
//! trusted proxy's address only. The proxy is 127.0.0.1; a client that is not is
//! played from 127.0.0.2 (Linux routes all of 127.0.0.0/8 to the loopback).

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use common::{Response, Server, read_response};

const PROXY: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A TCP connection to `server` from the local address `from`.
fn connect_from(from: IpAddr, server: SocketAddr) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::new(from, 0).into())
        .expect("bind the client's address");
    socket
        .connect_timeout(&server.into(), Duration::from_secs(5))
        .expect("connect");
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    stream
}

/// One request on a connection of its own from `from`.
fn post(
    from: IpAddr,
    server: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let mut stream = connect_from(from, server);
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {server}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).expect("send");
    read_response(&mut stream)
}

/// A login (to an account of its own, so that only the address limit applies) from
/// `from` with `X-Forwarded-For: forwarded` if given; its HTTP status.
fn login(server: &Server, from: IpAddr, forwarded: Option<&str>, n: u32) -> u16 {
    let headers: Vec<(&str, &str)> = forwarded
        .map(|f| ("X-Forwarded-For", f))
        .into_iter()
        .collect();
    let body = format!("mobile=1390000{n:04}&passwd=wrong-password");
    post(from, server.addr, "/user/login", &headers, &body).status
}

/// The login throttle counts the client a trusted proxy names (the right-most
/// address it did not append itself), and the TCP peer of anyone else. One login
/// per address at once (`--login-per-minute 2` has a burst of 1): a second from the
/// same counted address is 429.
#[test]
fn the_login_throttle_counts_the_forwarded_client_from_a_trusted_proxy_only() {
    let server = Server::start(&["--trust-proxy", "127.0.0.1", "--login-per-minute", "2"]);
    let from_proxy = |forwarded: Option<&str>, n| login(&server, PROXY, forwarded, n);
    assert_eq!(from_proxy(Some("203.0.113.1"), 1), 200);
    assert_eq!(
        from_proxy(Some("203.0.113.1"), 2),
        429,
        "the same client again"
    );
    assert_eq!(from_proxy(Some("203.0.113.2"), 3), 200, "another client");
    // What a client wrote in the header itself stands left of what the proxy appended.
    assert_eq!(from_proxy(Some("198.51.100.9, 203.0.113.2"), 4), 429);
    assert_eq!(from_proxy(Some("203.0.113.1, 198.51.100.9"), 5), 200);
    // Without the header a request is the proxy's own.
    assert_eq!(from_proxy(None, 6), 200);
    assert_eq!(from_proxy(None, 7), 429);

    // From an address that is not a trusted proxy the header is ignored: two
    // different forwarded clients are one, the peer.
    assert_eq!(login(&server, STRANGER, Some("203.0.113.3"), 8), 200);
    assert_eq!(login(&server, STRANGER, Some("203.0.113.4"), 9), 429);
}

/// Without `--trust-proxy` nobody is believed: 127.0.0.1 naming other clients is
/// still 127.0.0.1.
#[test]
fn without_trust_proxy_forwarded_addresses_are_ignored() {
    let server = Server::start(&["--login-per-minute", "2"]);
    assert_eq!(login(&server, PROXY, Some("203.0.113.1"), 1), 200);
    assert_eq!(login(&server, PROXY, Some("203.0.113.2"), 2), 429);
}

fn register(server: &Server, from: IpAddr, mobile: &str) -> String {
    let r = post(
        from,
        server.addr,
        "/user/register",
        &[("X-Forwarded-Proto", "https")],
        &format!("mobile={mobile}&passwd=secret-1&nickname=p"),
    );
    assert_eq!(r.json()["code"], 0, "{}", r.json());
    r.header("set-cookie").expect("a session cookie").to_owned()
}

/// `X-Forwarded-Proto: https` makes the cookie `Secure` from the trusted proxy, and
/// does nothing from anyone else.
#[test]
fn cookies_are_secure_by_the_word_of_a_trusted_proxy_only() {
    let server = Server::start(&["--trust-proxy", "127.0.0.1"]);
    let cookie = register(&server, PROXY, "13800000001");
    assert!(cookie.ends_with("; Secure"), "{cookie}");
    let cookie = register(&server, STRANGER, "13800000002");
    assert!(!cookie.contains("Secure"), "{cookie}");
}

/// Whether a fresh connection from `from` is served (a 200 for `/`) or refused
/// (503 "too many connections from your address").
fn served(from: IpAddr, server: SocketAddr) -> (TcpStream, u16) {
    let mut stream = connect_from(from, server);
    stream
        .write_all(format!("GET / HTTP/1.1\r\nHost: {server}\r\n\r\n").as_bytes())
        .expect("send");
    let r = read_response(&mut stream);
    if r.status == 503 {
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        assert!(
            String::from_utf8_lossy(&r.body).contains("too many connections from your address"),
            "{r:?}"
        );
    }
    (stream, r.status)
}

/// All clients come through the proxy: its connections are not capped per address,
/// anyone else's still are.
#[test]
fn a_trusted_proxy_is_not_capped_per_address() {
    let server = Server::start(&[
        "--trust-proxy",
        "127.0.0.1",
        "--max-unauthenticated-per-address",
        "2",
    ]);
    let mut held = Vec::new();
    for i in 0..5 {
        let (stream, status) = served(PROXY, server.addr);
        assert_eq!(status, 200, "proxy connection {i}");
        held.push(stream);
    }
    for i in 0..2 {
        let (stream, status) = served(STRANGER, server.addr);
        assert_eq!(status, 200, "stranger connection {i}");
        held.push(stream);
    }
    assert_eq!(served(STRANGER, server.addr).1, 503, "the stranger's third");
}
