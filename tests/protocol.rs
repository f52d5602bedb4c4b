//! RFC 6455 rules on the wire: a raw TCP client sends each violation and checks the
//! close code and that the server closes the TCP connection; handshake errors and
//! their statuses; timeouts; slots freed by vanished peers; graceful shutdown.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{RawClient, Server, masked_frame, upgrade_request};

/// Each violation after a valid handshake, and the close code it must get.
#[test]
fn every_violation_gets_its_close_code_and_the_tcp_close() {
    let server = Server::start(&[]);
    let mut unmasked = vec![0x81, 0x02];
    unmasked.extend_from_slice(b"hi");
    let with_bits = |bits: u8| {
        let mut f = masked_frame(true, 0x1, b"x");
        f[0] |= bits;
        f
    };
    let mut top_bit = vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0];
    top_bit.extend_from_slice(&common::MASK);
    let mut too_big = vec![0x82, 0xff];
    too_big.extend_from_slice(&((16u64 << 20) + 1).to_be_bytes());
    too_big.extend_from_slice(&common::MASK);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked frame", unmasked, 1002),
        ("RSV1 without extension", with_bits(0x40), 1002),
        ("RSV2", with_bits(0x20), 1002),
        ("RSV3", with_bits(0x10), 1002),
        (
            "reserved data opcode 0x3",
            {
                let mut f = masked_frame(true, 0x3, b"");
                f[0] = 0x83;
                f
            },
            1002,
        ),
        (
            "reserved control opcode 0xB",
            {
                let mut f = masked_frame(true, 0xB, b"");
                f[0] = 0x8B;
                f
            },
            1002,
        ),
        (
            "control frame over 125 bytes",
            masked_frame(true, 0x9, &[0; 126]),
            1002,
        ),
        ("fragmented ping", masked_frame(false, 0x9, b"x"), 1002),
        (
            "continuation without a message",
            masked_frame(true, 0x0, b"x"),
            1002,
        ),
        (
            "text frame inside a fragmented message",
            [
                masked_frame(false, 0x1, b"a"),
                masked_frame(true, 0x1, b"b"),
            ]
            .concat(),
            1002,
        ),
        ("64-bit length with the top bit set", top_bit, 1002),
        (
            "invalid UTF-8 text",
            masked_frame(true, 0x1, b"\xce\xba\xe1\xbd\xb9\xed\xa0\x80"),
            1007,
        ),
        (
            "invalid UTF-8 across fragments",
            [
                masked_frame(false, 0x1, b"\xf4"),
                masked_frame(true, 0x0, b"\x90\x80\x80"),
            ]
            .concat(),
            1007,
        ),
        (
            "invalid UTF-8 close reason",
            masked_frame(true, 0x8, b"\x03\xe8\xff\xfe"),
            1007,
        ),
        (
            "one-byte close payload",
            masked_frame(true, 0x8, b"\x03"),
            1002,
        ),
        (
            "close code 999",
            masked_frame(true, 0x8, &999u16.to_be_bytes()),
            1002,
        ),
        (
            "close code 1005",
            masked_frame(true, 0x8, &1005u16.to_be_bytes()),
            1002,
        ),
        (
            "close code 1015",
            masked_frame(true, 0x8, &1015u16.to_be_bytes()),
            1002,
        ),
        (
            "close code 2000",
            masked_frame(true, 0x8, &2000u16.to_be_bytes()),
            1002,
        ),
        (
            "close code 5000",
            masked_frame(true, 0x8, &5000u16.to_be_bytes()),
            1002,
        ),
        ("frame over the 16 MiB limit", too_big, 1009),
    ];
    for (name, bytes, code) in cases {
        let mut client = RawClient::connect(server.addr, "/echo");
        client.send(&bytes);
        assert_eq!(client.expect_close(), Some(code), "{name}");
        assert!(client.sees_tcp_close(), "{name}: TCP connection left open");
    }
}

/// A binary message of `len` bytes in 4 KiB fragments.
fn fragmented_binary(len: usize) -> Vec<u8> {
    let payload = vec![b'a'; len];
    let pieces: Vec<&[u8]> = payload.chunks(4096).collect();
    let mut stream = Vec::with_capacity(len + pieces.len() * 8);
    for (i, piece) in pieces.iter().enumerate() {
        stream.extend(masked_frame(
            i + 1 == pieces.len(),
            if i == 0 { 0x2 } else { 0x0 },
            piece,
        ));
    }
    stream
}

#[test]
fn the_echo_limit_admits_16_mib_and_not_one_byte_more() {
    let server = Server::start(&[]);
    // Exactly 16 MiB in 4096 fragments comes back whole.
    let mut client = RawClient::connect(server.addr, "/echo");
    client.send(&fragmented_binary(16 << 20));
    let (fin, opcode, payload) = client.read_frame().expect("echo");
    assert_eq!((fin, opcode, payload.len()), (true, 0x2, 16 << 20));
    // One byte more is closed with 1009 when the last fragment's header arrives.
    let mut client = RawClient::connect(server.addr, "/echo");
    client.send(&fragmented_binary((16 << 20) + 1));
    assert_eq!(client.expect_close(), Some(1009));
}

#[test]
fn close_handshake_variants() {
    let server = Server::start(&[]);
    // A code is echoed; the server then closes TCP first.
    let mut c = RawClient::connect(server.addr, "/echo");
    c.send_frame(true, 0x8, &[0x0f, 0xa0, b'b', b'y', b'e']); // 4000
    assert_eq!(c.expect_close(), Some(4000));
    assert!(c.sees_tcp_close());
    // An empty close is answered with an empty close.
    let mut c = RawClient::connect(server.addr, "/echo");
    c.send_frame(true, 0x8, &[]);
    assert_eq!(c.expect_close(), None);
    // A close between the fragments of a message is answered; the message is dropped.
    let mut c = RawClient::connect(server.addr, "/echo");
    c.send_frame(false, 0x1, b"half a ");
    c.send_frame(true, 0x8, &1000u16.to_be_bytes());
    c.send_frame(true, 0x0, b"message");
    assert_eq!(c.read_frame().map(|f| f.1), Some(0x8));
    assert!(c.sees_tcp_close());
    // A ping between fragments is answered at once.
    let mut c = RawClient::connect(server.addr, "/echo");
    c.send_frame(false, 0x1, b"frag");
    c.send_frame(true, 0x9, b"ping!");
    assert_eq!(c.read_frame(), Some((true, 0xA, b"ping!".to_vec())));
    c.send_frame(true, 0x0, b"ment");
    assert_eq!(c.read_frame(), Some((true, 0x1, b"fragment".to_vec())));
    // Unsolicited pongs are ignored.
    c.send_frame(true, 0xA, b"pong");
    c.send_frame(true, 0x1, b"after");
    assert_eq!(c.read_frame(), Some((true, 0x1, b"after".to_vec())));
}

#[test]
fn handshake_errors_get_their_statuses() {
    let server = Server::start(&[]);
    let good = upgrade_request("/echo");
    let cases: Vec<(&str, String, &str)> = vec![
        ("POST", good.replace("GET", "POST"), "400"),
        ("HTTP/1.0", good.replace("HTTP/1.1", "HTTP/1.0"), "400"),
        (
            "no Upgrade",
            good.replace("Upgrade: websocket\r\n", ""),
            "400",
        ),
        (
            "no Connection",
            good.replace("Connection: Upgrade\r\n", ""),
            "400",
        ),
        (
            "short key",
            good.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="),
            "400",
        ),
        (
            "no key",
            good.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
            "400",
        ),
        (
            "version 8",
            good.replace("Version: 13", "Version: 8"),
            "426",
        ),
        ("unknown path", upgrade_request("/nowhere"), "404"),
        (
            "plain GET /echo",
            "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            "400",
        ),
        (
            "garbage",
            "\x16\x03\x01\x02\x00\x01\x00\x01\x7c\x03\x03\r\n\r\n".into(),
            "400",
        ),
        (
            "head over 8 KiB",
            good.replace("Host:", &format!("X-Pad: {}\r\nHost:", "p".repeat(9000))),
            "431",
        ),
    ];
    for (name, request, status) in cases {
        let (mut c, head) = RawClient::request(server.addr, &request);
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{name}: {head}"
        );
        if status == "426" {
            assert!(
                head.contains("Sec-WebSocket-Version: 13\r\n"),
                "{name}: {head}"
            );
        }
        assert!(c.sees_tcp_close(), "{name}: connection left open");
    }
    // Mixed-case names and a Connection list, as Firefox sends.
    let firefox = good
        .replace("Connection: Upgrade", "connection: keep-alive, Upgrade")
        .replace("Upgrade: websocket", "upgrade: WebSocket");
    let (_, head) = RawClient::request(server.addr, &firefox);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );
}

#[test]
fn silent_peers_are_dropped_after_the_timeouts() {
    let server = Server::start(&[
        "--handshake-timeout",
        "1",
        "--close-timeout",
        "1",
        "--max-connections",
        "2",
    ]);
    // Never finishes its request head.
    let mut stuck = TcpStream::connect(server.addr).expect("connect");
    stuck
        .write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        .expect("send");
    stuck
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let started = Instant::now();
    let mut stuck = RawClient {
        stream: stuck,
        buf: Vec::new(),
    };
    assert!(stuck.sees_tcp_close(), "handshake never timed out");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_secs(4),
        "{waited:?}"
    );

    // Two clients start the close handshake and then never close their side.
    let mut lingering: Vec<RawClient> = (0..2)
        .map(|_| RawClient::connect(server.addr, "/echo"))
        .collect();
    for c in &mut lingering {
        c.send_frame(true, 0x8, &1000u16.to_be_bytes());
        assert_eq!(c.expect_close(), Some(1000));
    }
    // Both slots are taken until the close timeout frees them.
    let mut refused = TcpStream::connect(server.addr).expect("connect");
    refused
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    refused
        .write_all(upgrade_request("/echo").as_bytes())
        .expect("send");
    let mut refused = RawClient {
        stream: refused,
        buf: Vec::new(),
    };
    assert!(
        refused.sees_tcp_close(),
        "a third connection was served while both slots were taken"
    );
    sleep(Duration::from_millis(1600));
    let mut fresh = RawClient::connect(server.addr, "/echo");
    fresh.send_frame(true, 0x1, b"slot freed");
    assert_eq!(
        fresh.read_frame(),
        Some((true, 0x1, b"slot freed".to_vec()))
    );
}

#[test]
fn vanished_peers_free_their_slots_at_once() {
    let server = Server::start(&["--max-connections", "3"]);
    for round in 0..3 {
        let clients: Vec<RawClient> = (0..3)
            .map(|_| RawClient::connect(server.addr, "/echo"))
            .collect();
        for (i, c) in clients.into_iter().enumerate() {
            if (i + round) % 2 == 0 {
                // Reset: linger 0 makes close() send RST.
                let sock = socket2::Socket::from(c.stream);
                sock.set_linger(Some(Duration::ZERO)).expect("linger");
                drop(sock);
            } else {
                // Half-close, then go away.
                c.stream
                    .shutdown(std::net::Shutdown::Write)
                    .expect("shutdown");
            }
        }
        // The server must notice before the next round fills the slots again.
        sleep(Duration::from_millis(200));
    }
    let mut c = RawClient::connect(server.addr, "/echo");
    c.send_frame(true, 0x1, b"ok");
    assert_eq!(c.read_frame(), Some((true, 0x1, b"ok".to_vec())));
}

#[test]
fn shutdown_closes_clients_with_1001_and_exits_cleanly() {
    let mut server = Server::start(&[]);
    let mut a = RawClient::connect(server.addr, "/echo");
    let mut b = RawClient::connect(server.addr, "/echo");
    b.send_frame(false, 0x1, b"in the middle of a message");
    sleep(Duration::from_millis(100));
    let _ = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status();
    assert_eq!(a.expect_close(), Some(1001));
    assert_eq!(b.expect_close(), Some(1001));
    a.send_frame(true, 0x8, &1001u16.to_be_bytes());
    let status = server.terminate().expect("server exited");
    assert!(status.success(), "{status:?}");
}
