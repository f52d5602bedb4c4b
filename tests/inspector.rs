//! The frame inspector and `--trace-frames` on a real server: the log lines of
//! every handshake and frame, the feed's records of a traced echo (the client's
//! mask key, the length forms, a fragmented echo, ping and pong, the closing
//! handshake), tokens, and 404 without `--inspector`.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::{Http, Log, MASK, RawClient, Server, fresh_data_dir, upgrade_request};
use serde_json::Value;
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

/// Starts the server with `extra`; its whole log is kept.
fn start_logged(data_dir: std::path::PathBuf, extra: &[&str]) -> (Server, Log) {
    let server = Server::start_in(data_dir, extra);
    let log = server.log.clone();
    (server, log)
}

/// The `C→S`/`S→C` frame lines of connection `#key`, in order.
fn frame_lines(log: &str, arrow: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(&format!(" {arrow} frame ")))
        .map(|l| {
            l.split_once(" frame ")
                .map(|(_, r)| r.to_owned())
                .unwrap_or_default()
        })
        .collect()
}

fn hex_of(line: &str, field: &str) -> Vec<u8> {
    let value = line
        .split(&format!(" {field}="))
        .nth(1)
        .and_then(|v| v.split([' ', '…']).next())
        .unwrap_or_else(|| panic!("no {field}= in {line}"));
    (0..value.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&value[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn trace_frames_logs_the_handshake_and_every_frame() {
    let (server, log) = start_logged(fresh_data_dir(), &["--trace-frames"]);
    let (mut ws, _) = tungstenite::connect(server.url("/echo")).expect("handshake");
    ws.send(Message::text("Hello")).expect("send");
    for size in [125usize, 126, 65536] {
        ws.send(Message::binary(vec![0xab; size])).expect("send");
    }
    ws.send(Message::Ping("are you there".into()))
        .expect("ping");
    let mut echoes = 0;
    while echoes < 4 {
        match ws.read().expect("read") {
            Message::Text(_) | Message::Binary(_) => echoes += 1,
            _ => {}
        }
    }
    ws.close(Some(CloseFrame {
        code: CloseCode::from(4000),
        reason: "done".into(),
    }))
    .expect("close");
    while ws.read().is_ok() {}
    drop(ws);

    let text = log.wait_for("TCP connection closed");
    // The heads as sent.
    assert!(
        text.contains("handshake C→S request head") && text.contains("    GET /echo HTTP/1.1"),
        "{text}"
    );
    assert!(text.contains("    Sec-WebSocket-Key: "), "{text}");
    assert!(
        text.contains("handshake S→C response head (101,")
            && text.contains("    HTTP/1.1 101 Switching Protocols")
            && text.contains("    Sec-WebSocket-Accept: "),
        "{text}"
    );
    let client = frame_lines(&text, "C→S");
    let server_lines = frame_lines(&text, "S→C");
    assert_eq!(client.len(), 6, "{client:#?}");
    // The client's text: masked with the key it chose, which the line names.
    let hello = &client[0];
    assert!(
        hello.starts_with("1: FIN=1 RSV1=0 RSV2=0 RSV3=0 opcode=0x1 (text) MASK=1 key="),
        "{hello}"
    );
    assert!(
        hello.contains(" len=5 (7-bit) ") && hello.ends_with("\"Hello\""),
        "{hello}"
    );
    let key = hex_of(hello, "key");
    let masked = hex_of(hello, "masked");
    let unmasked: Vec<u8> = masked
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ key[i % 4])
        .collect();
    assert_eq!(unmasked, b"Hello");
    assert_eq!(hex_of(hello, "payload"), b"Hello");
    // Every length form, both ways; the server's frames are not masked.
    for (i, (len, form)) in [(125, "7-bit"), (126, "16-bit"), (65536, "64-bit")]
        .into_iter()
        .enumerate()
    {
        let want = format!(" len={len} ({form}) ");
        assert!(client[i + 1].contains(&want), "{}", client[i + 1]);
        assert!(client[i + 1].contains("opcode=0x2 (binary) MASK=1"));
        assert!(
            server_lines[i + 1].contains(&want),
            "{}",
            server_lines[i + 1]
        );
        assert!(server_lines[i + 1].contains("opcode=0x2 (binary) MASK=0 len="));
        // 16 bytes shown, and a mark that there is more.
        assert!(server_lines[i + 1].contains(&format!("payload={}…", "ab".repeat(16))));
    }
    assert!(client[4].contains("opcode=0x9 (ping)") && client[4].ends_with("\"are you there\""));
    assert!(
        server_lines
            .iter()
            .any(|l| l.contains("opcode=0xa (pong)") && l.ends_with("\"are you there\""))
    );
    assert!(
        client[5].contains("opcode=0x8 (close)")
            && client[5].contains("close code=4000 reason=\"done\"")
    );
    assert!(
        server_lines
            .last()
            .expect("frames")
            .contains("close code=4000")
    );
    assert!(
        !text.contains("trace token"),
        "no inspector without --inspector"
    );
}

#[test]
fn trace_frames_marks_compressed_messages() {
    let (server, log) = start_logged(fresh_data_dir(), &["--trace-frames"]);
    let request = common::upgrade_request_offering("/echo", "permessage-deflate");
    let (mut client, head) = RawClient::request(server.addr, &request);
    assert!(head.contains("permessage-deflate"), "{head}");
    let text = "compress me ".repeat(200);
    let mut frame = common::masked_frame(true, 0x1, &common::deflate_message(text.as_bytes()));
    frame[0] |= 0x40;
    client.send(&frame);
    let (b0, payload) = client.read_frame_raw().expect("the echo");
    assert_eq!(b0, 0xc1, "final, compressed, text");
    assert_eq!(common::inflate_message(&payload, 15), text.as_bytes());
    let log = log.wait_for("S→C frame 1:");
    assert!(
        log.contains("    Sec-WebSocket-Extensions: permessage-deflate"),
        "{log}"
    );
    for arrow in ["C→S", "S→C"] {
        let line = &frame_lines(&log, arrow)[0];
        assert!(
            line.starts_with("1: FIN=1 RSV1=1 RSV2=0 RSV3=0 opcode=0x1 (text)")
                && line.contains(" (7-bit) compressed ")
                && line.ends_with(" (compressed)"),
            "{line}"
        );
    }
}

#[test]
fn trace_frames_shows_chat_upgrades_without_their_secrets() {
    let data = fresh_data_dir();
    std::fs::create_dir_all(&data).expect("data dir");
    let (_, token) = {
        let mut db = fastim::store::Db::open(&data.join("fastim.db")).expect("db");
        common::seed_account(&mut db, "13800000001")
    };
    let (server, log) = start_logged(data, &["--trace-frames"]);
    let (mut ws, _) =
        tungstenite::connect(server.url(&format!("/chat?token={token}"))).expect("chat");
    ws.send(Message::text(r#"{"cmd":0}"#)).expect("heartbeat");
    assert_eq!(
        ws.read().expect("reply").into_text().expect("text"),
        r#"{"cmd":0}"#
    );
    let text = log.wait_for("S→C frame 1:");
    assert!(
        text.contains("    GET /chat?token=[redacted] HTTP/1.1"),
        "{text}"
    );
    assert!(
        !text.contains(&token),
        "the session token is in the log:\n{text}"
    );
    assert!(text.contains("handshake S→C response head (101,"));
    assert!(text.contains(r#"C→S frame 1: FIN=1"#) && text.contains(r#""{\"cmd\":0}""#));
    // A plain HTTP request is not traced.
    let r = Http::new(server.addr).request("GET", "/", &[], b"");
    assert_eq!(r.status, 200);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!log.text().contains("GET / HTTP/1.1"));
}

// ---- the feed ----

type Ws = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

fn open_feed(server: &Server) -> (Ws, String) {
    let (mut feed, _) = tungstenite::connect(server.url("/inspector/feed")).expect("feed");
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = feed.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
    }
    let hello = next(&mut feed);
    assert_eq!(hello["type"], "token", "{hello}");
    let token = hello["token"].as_str().expect("token").to_owned();
    assert_eq!(hello["echo"], format!("/echo?trace={token}"));
    (feed, token)
}

fn next(feed: &mut Ws) -> Value {
    loop {
        match feed.read().expect("a feed message") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Feed records until `n` frame records (handshakes are kept too).
fn frames(feed: &mut Ws, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    while got.iter().filter(|v: &&Value| v["type"] == "frame").count() < n {
        let v = next(feed);
        assert_ne!(v["type"], "dropped", "{v}");
        got.push(v);
    }
    got
}

fn of<'a>(records: &'a [Value], from: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|v| v["type"] == "frame" && v["from"] == from)
        .collect()
}

#[test]
fn the_feed_shows_every_frame_of_a_traced_echo() {
    let server = Server::start(&["--inspector"]);
    let (mut feed, token) = open_feed(&server);
    let mut echo = RawClient::connect(server.addr, &format!("/echo?trace={token}"));

    let mut head = next(&mut feed);
    assert_eq!(head["from"], "client");
    assert!(
        head["head"]
            .as_str()
            .expect("head")
            .starts_with(&format!("GET /echo?trace={token} HTTP/1.1\r\n"))
    );
    head = next(&mut feed);
    assert_eq!(
        (head["from"].as_str(), head["status"].as_u64()),
        (Some("server"), Some(101))
    );
    assert!(
        head["head"]
            .as_str()
            .expect("head")
            .starts_with("HTTP/1.1 101 Switching Protocols\r\n")
    );

    // Text, then the three length forms.
    echo.send_frame(true, 0x1, b"Hello");
    for size in [125usize, 126, 65536] {
        echo.send_frame(true, 0x2, &vec![b'z'; size]);
    }
    for _ in 0..4 {
        echo.read_frame().expect("echo");
    }
    let records = frames(&mut feed, 8);
    let (client, from_server) = (of(&records, "client"), of(&records, "server"));
    let hello = client[0];
    assert_eq!(hello["mask_key"], common_hex(&MASK));
    assert_eq!(hello["masked"], true);
    assert_eq!(hello["text"], "Hello");
    assert_eq!(hello["payload"], common_hex(b"Hello"));
    let masked: Vec<u8> = b"Hello"
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ MASK[i % 4])
        .collect();
    assert_eq!(hello["payload_masked"], common_hex(&masked));
    assert_eq!(hello["header"], format!("8185{}", common_hex(&MASK)));
    assert_eq!(
        (hello["opcode"].as_u64(), hello["opcode_name"].as_str()),
        (Some(1), Some("text"))
    );
    assert_eq!(from_server[0]["text"], "Hello");
    assert_eq!(from_server[0]["masked"], false);
    assert_eq!(from_server[0]["mask_key"], Value::Null);
    for (i, (len, form, header)) in [
        (125u64, "7-bit", "827d".to_owned()),
        (126, "16-bit", "827e007e".to_owned()),
        (65536, "64-bit", "827f0000000000010000".to_owned()),
    ]
    .into_iter()
    .enumerate()
    {
        let c = client[i + 1];
        assert_eq!(
            (c["payload_len"].as_u64(), c["length_form"].as_str()),
            (Some(len), Some(form)),
            "{c}"
        );
        let s = from_server[i + 1];
        assert_eq!(
            (s["payload_len"].as_u64(), s["length_form"].as_str()),
            (Some(len), Some(form)),
            "{s}"
        );
        assert_eq!(s["header"], header);
        assert_eq!(s["shown"].as_u64(), Some(len.min(125)));
    }

    // The next echo in fragments of 4 bytes.
    feed.send(Message::text(r#"{"cmd":"fragment","size":4}"#))
        .expect("command");
    assert_eq!(next(&mut feed)["type"], "ok");
    echo.send_frame(true, 0x1, b"Hello world");
    let got: Vec<(bool, u8, Vec<u8>)> = (0..3)
        .map(|_| echo.read_frame().expect("fragment"))
        .collect();
    assert_eq!(
        got,
        vec![
            (false, 0x1, b"Hell".to_vec()),
            (false, 0x0, b"o wo".to_vec()),
            (true, 0x0, b"rld".to_vec())
        ]
    );
    let records = frames(&mut feed, 4);
    let shape: Vec<(bool, &str, &str)> = of(&records, "server")
        .iter()
        .map(|v| {
            (
                v["fin"].as_bool().expect("fin"),
                v["opcode_name"].as_str().expect("name"),
                v["text"].as_str().expect("text"),
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            (false, "text", "Hell"),
            (false, "continuation", "o wo"),
            (true, "continuation", "rld")
        ]
    );
    // Only the next one.
    echo.send_frame(true, 0x1, b"whole");
    assert_eq!(echo.read_frame(), Some((true, 0x1, b"whole".to_vec())));
    frames(&mut feed, 2);

    // The server pings; the client answers.
    feed.send(Message::text(r#"{"cmd":"ping","payload":"are you there"}"#))
        .expect("command");
    assert_eq!(
        echo.read_frame(),
        Some((true, 0x9, b"are you there".to_vec()))
    );
    echo.send_frame(true, 0xA, b"are you there");
    let records = frames(&mut feed, 2);
    let ping = of(&records, "server")[0];
    assert_eq!(
        (ping["opcode"].as_u64(), ping["text"].as_str()),
        (Some(9), Some("are you there"))
    );
    let pong = of(&records, "client")[0];
    assert_eq!(
        (pong["opcode"].as_u64(), pong["opcode_name"].as_str()),
        (Some(10), Some("pong"))
    );
    assert_eq!(pong["mask_key"], common_hex(&MASK));

    // The closing handshake, then the TCP close.
    let mut close = 4001u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    echo.send_frame(true, 0x8, &close);
    assert_eq!(echo.expect_close(), Some(4001));
    let records = frames(&mut feed, 2);
    let c = of(&records, "client")[0];
    assert_eq!(
        (c["close_code"].as_u64(), c["close_reason"].as_str()),
        (Some(4001), Some("bye"))
    );
    let s = of(&records, "server")[0];
    assert_eq!(
        (s["opcode_name"].as_str(), s["close_code"].as_u64()),
        (Some("close"), Some(4001))
    );
    assert!(echo.sees_tcp_close());
    drop(echo);
    assert_eq!(next(&mut feed)["type"], "closed");

    // A new token for a new echo; the old one is used up.
    feed.send(Message::text(r#"{"cmd":"token"}"#))
        .expect("command");
    let renewed = next(&mut feed);
    assert_eq!(renewed["type"], "token");
    assert_ne!(renewed["token"], token.as_str());
    let mut stale = RawClient::connect(server.addr, &format!("/echo?trace={token}"));
    assert_eq!(stale.expect_close(), Some(1008));
}

fn common_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_feed_that_cannot_keep_up_is_told_how_many_records_it_missed() {
    let server = Server::start(&["--inspector"]);
    let (mut feed, token) = open_feed(&server);
    let mut echo = RawClient::connect(server.addr, &format!("/echo?trace={token}"));
    // 5,000 empty messages in one write: far more records than one delivery may hold.
    const N: usize = 5000;
    let burst: Vec<u8> = (0..N)
        .flat_map(|_| common::masked_frame(true, 0x2, b""))
        .collect();
    echo.send(&burst);
    for _ in 0..N {
        echo.read_frame().expect("echo");
    }
    echo.send_frame(true, 0x1, b"end");
    assert_eq!(echo.read_frame(), Some((true, 0x1, b"end".to_vec())));
    let (mut frames, mut dropped, mut ends) = (0u64, 0u64, 0);
    while ends < 2 {
        let v = next(&mut feed);
        match v["type"].as_str() {
            Some("frame") => {
                frames += 1;
                if v["text"] == "end" {
                    ends += 1;
                }
            }
            Some("dropped") => dropped += v["frames"].as_u64().expect("count"),
            _ => {}
        }
    }
    assert!(dropped > 0, "nothing was dropped of {N} messages each way");
    // Every frame of both directions is either shown or counted.
    assert_eq!(
        frames + dropped,
        2 * N as u64 + 2,
        "{frames} shown, {dropped} dropped"
    );
}

#[test]
fn feed_errors_are_explained() {
    let server = Server::start(&["--inspector"]);
    let (mut feed, _) = open_feed(&server);
    for (command, why) in [
        (r#"{"cmd":"ping"}"#, "no echo connection"),
        (r#"{"cmd":"fragment","size":4}"#, "no echo connection"),
        (r#"{"cmd":"fragment","size":0}"#, "size must be"),
        (r#"{"cmd":"dance"}"#, "unknown cmd"),
        ("not json", "not JSON"),
    ] {
        feed.send(Message::text(command)).expect("send");
        let v = next(&mut feed);
        assert_eq!(v["type"], "error", "{command}: {v}");
        assert!(
            v["msg"].as_str().expect("msg").contains(why),
            "{command}: {v}"
        );
    }
    // A wrong token: the echo opens and is closed with 1008 and the reason.
    let mut bad = RawClient::connect(server.addr, "/echo?trace=not-a-token");
    let (_, opcode, payload) = bad.read_frame().expect("close");
    assert_eq!(opcode, 0x8);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1008);
    assert_eq!(&payload[2..], b"unknown or expired trace token");
    // The feed is still fine.
    feed.send(Message::text(r#"{"cmd":"keepalive"}"#))
        .expect("send");
    feed.send(Message::text(r#"{"cmd":"token"}"#))
        .expect("send");
    assert_eq!(next(&mut feed)["type"], "token");
}
#[test]
fn without_the_flag_the_inspector_routes_are_404() {
    let plain = Server::start(&[]);
    let on = Server::start(&["--inspector"]);
    for path in [
        "/inspector/",
        "/inspector/inspector.js",
        "/inspector/inspector.css",
        "/inspector/feed",
        "/inspector",
    ] {
        let r = Http::new(plain.addr).request("GET", path, &[], b"");
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.json()["code"], 404, "{path}");
    }
    let (_, head) = RawClient::request(plain.addr, &upgrade_request("/inspector/feed"));
    assert!(head.starts_with("HTTP/1.1 404 "), "{head}");
    // With it: the page, its files and the feed.
    for path in [
        "/inspector/",
        "/inspector/inspector.js",
        "/inspector/inspector.css",
    ] {
        let r = Http::new(on.addr).request("GET", path, &[], b"");
        assert_eq!(r.status, 200, "{path}");
    }
    let page = Http::new(on.addr).request("GET", "/inspector/", &[], b"");
    assert!(
        page.header("content-type")
            .is_some_and(|t| t.starts_with("text/html"))
    );
    assert!(String::from_utf8_lossy(&page.body).contains("/inspector/inspector.js"));
    let (_, head) = RawClient::request(on.addr, &upgrade_request("/inspector/feed"));
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let r = Http::new(on.addr).request("GET", "/inspector/feed", &[], b"");
    assert_eq!(r.status, 400);
    // An /echo with a trace parameter is a plain echo without the flag.
    let mut echo = RawClient::connect(plain.addr, "/echo?trace=whatever");
    echo.send_frame(true, 0x1, b"still an echo");
    assert_eq!(
        echo.read_frame(),
        Some((true, 0x1, b"still an echo".to_vec()))
    );
}
