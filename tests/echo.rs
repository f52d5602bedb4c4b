//! The echo endpoint against independent clients: `tungstenite` (blocking and tokio)
//! and a raw TCP client, on a real server process.

mod common;

use std::time::{Duration, Instant};

use common::{RawClient, Server};
use futures_util::{SinkExt, StreamExt};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Bytes, Message};

fn client(
    server: &Server,
) -> tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let (ws, response) =
        tungstenite::client::connect_with_config(server.url("/echo"), Some(config), 3)
            .expect("handshake");
    assert_eq!(response.status(), 101);
    ws
}

#[test]
fn tungstenite_echoes_text_and_binary_of_every_size() {
    let server = Server::start(&[]);
    let mut ws = client(&server);
    for size in [
        0usize,
        1,
        125,
        126,
        127,
        65535,
        65536,
        65537,
        1 << 20,
        8 << 20,
    ] {
        // Text mixes one-, two- and four-byte characters so boundaries fall inside them.
        let text: String = "aé𝄞"
            .chars()
            .cycle()
            .scan(0, |len, c| {
                *len += c.len_utf8();
                (*len <= size).then_some(c)
            })
            .collect();
        ws.send(Message::text(text.clone())).expect("send text");
        match ws.read().expect("read text echo") {
            Message::Text(echo) => assert!(
                echo.as_str() == text,
                "text of {} bytes differs",
                text.len()
            ),
            other => panic!("expected text, got {other:?}"),
        }
        let binary: Vec<u8> = (0..size).map(|i| (i * 7 + i / 251) as u8).collect();
        ws.send(Message::binary(binary.clone()))
            .expect("send binary");
        match ws.read().expect("read binary echo") {
            Message::Binary(echo) => {
                assert!(echo[..] == binary[..], "binary of {size} bytes differs")
            }
            other => panic!("expected binary, got {other:?}"),
        }
    }
    ws.close(Some(tungstenite::protocol::CloseFrame {
        code: tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "done".into(),
    }))
    .expect("close");
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(1000));
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("close handshake: {e}"),
        }
    }
}

#[test]
fn tungstenite_ping_gets_pong_with_same_payload() {
    let server = Server::start(&[]);
    let mut ws = client(&server);
    ws.send(Message::Ping(Bytes::from_static(b"are you there?")))
        .expect("ping");
    ws.send(Message::text("after ping")).expect("text");
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(ws.read().expect("read"));
    }
    assert_eq!(got[0], Message::Pong(Bytes::from_static(b"are you there?")));
    assert_eq!(got[1], Message::text("after ping"));
}

#[test]
fn a_client_sending_one_byte_at_a_time_still_works() {
    let server = Server::start(&[]);
    let (mut raw, head) = {
        let stream = std::net::TcpStream::connect(server.addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut raw = RawClient {
            stream,
            buf: Vec::new(),
        };
        for b in common::upgrade_request("/echo").bytes() {
            raw.send(&[b]);
        }
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            std::io::Read::read_exact(&mut raw.stream, &mut byte).expect("response");
            head.push(byte[0]);
        }
        (raw, String::from_utf8(head).expect("ascii"))
    };
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // A fragmented text message with a ping in the middle, each byte its own write.
    let text = "κόσμε, one byte at a time";
    let (a, b) = text.as_bytes().split_at(3);
    let mut stream = common::masked_frame(false, 0x1, a);
    stream.extend(common::masked_frame(true, 0x9, b"p"));
    stream.extend(common::masked_frame(true, 0x0, b));
    stream.extend(common::masked_frame(true, 0x2, &[0u8; 300]));
    for byte in stream {
        raw.send(&[byte]);
    }
    assert_eq!(raw.read_frame(), Some((true, 0xA, b"p".to_vec())));
    assert_eq!(
        raw.read_frame(),
        Some((true, 0x1, text.as_bytes().to_vec()))
    );
    assert_eq!(raw.read_frame(), Some((true, 0x2, vec![0u8; 300])));
}

#[test]
fn a_thousand_concurrent_clients_each_get_their_own_echoes() {
    // All from 127.0.0.1: over the default cap of 256 unauthenticated sockets per address.
    let server = Server::start(&["--max-unauthenticated-per-address", "0"]);
    let url = server.url("/echo");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let ok = runtime.block_on(async move {
        let mut tasks = Vec::new();
        for id in 0..1000u32 {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let (mut ws, _) = tokio_tungstenite::connect_async(url)
                    .await
                    .expect("connect");
                for n in 0..5u32 {
                    let text = format!("client {id} message {n}");
                    ws.send(Message::text(text.clone())).await.expect("send");
                    let echo = ws.next().await.expect("echo").expect("frame");
                    assert_eq!(echo, Message::text(text));
                }
                ws.close(None).await.expect("close");
                true
            }));
        }
        let all = futures_util::future::join_all(tasks);
        let results = tokio::time::timeout(Duration::from_secs(60), all)
            .await
            .expect("within 60 s");
        results
            .into_iter()
            .filter(|r| matches!(r, Ok(true)))
            .count()
    });
    assert_eq!(ok, 1000);
    eprintln!("1000 clients x 5 echoes in {:?}", started.elapsed());
}

#[test]
fn a_client_that_stops_reading_is_disconnected_without_growing_memory() {
    // The server stops reading from it once its queue is full, and drops it after
    // the close timeout passes with no write progress.
    let server = Server::start(&["--close-timeout", "2"]);
    let before = server.rss();
    let mut raw = RawClient::connect(server.addr, "/echo");
    raw.stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let frame = common::masked_frame(true, 0x2, &vec![0xab; 1 << 20]);
    // Never read: the echoes pile up on the server until it gives up on us.
    let mut sent = 0;
    let disconnected = (0..400).any(|_| {
        let failed = std::io::Write::write_all(&mut raw.stream, &frame).is_err();
        sent += usize::from(!failed);
        failed
    });
    assert!(disconnected, "server kept accepting after {sent} MiB");
    let grown = server.rss().saturating_sub(before);
    eprintln!(
        "sent {sent} MiB before the disconnect; server RSS grew {} MiB",
        grown >> 20
    );
    assert!(grown < 128 << 20, "server RSS grew by {} MiB", grown >> 20);
    // And the server still serves others.
    let mut ws = client(&server);
    ws.send(Message::text("still here")).expect("send");
    assert_eq!(ws.read().expect("echo"), Message::text("still here"));
}

#[test]
fn a_reading_client_may_pipeline_several_largest_messages() {
    let server = Server::start(&[]);
    let mut raw = RawClient::connect(server.addr, "/echo");
    let mut writer = raw.stream.try_clone().expect("clone socket");
    let frame = common::masked_frame(true, 0x2, &vec![7u8; 16 << 20]);
    let sender = std::thread::spawn(move || {
        for _ in 0..3 {
            std::io::Write::write_all(&mut writer, &frame).expect("send 16 MiB");
        }
    });
    for i in 0..3 {
        let (fin, opcode, payload) = raw
            .read_frame()
            .unwrap_or_else(|| panic!("echo {i}: connection closed"));
        assert_eq!((fin, opcode, payload.len()), (true, 0x2, 16 << 20));
        assert!(payload.iter().all(|&b| b == 7));
    }
    sender.join().expect("sender");
}
