//! permessage-deflate (RFC 7692) on `/echo` with a raw-socket client whose
//! compression is written here with flate2 (tungstenite has no deflate).

mod common;

use common::{
    RawClient, Server, deflate_message, inflate_message, masked_frame, upgrade_request_offering,
};

const ANSWER: &str = "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
                      client_no_context_takeover\r\n";

/// A client frame with RSV1 set: a compressed message's first frame.
fn compressed_frame(fin: bool, opcode: u8, compressed: &[u8]) -> Vec<u8> {
    let mut f = masked_frame(fin, opcode, compressed);
    f[0] |= 0x40;
    f
}

fn deflate_client(server: &Server, offer: &str) -> (RawClient, String) {
    RawClient::request(server.addr, &upgrade_request_offering("/echo", offer))
}

#[test]
fn echo_negotiates_and_answers_compressed() {
    let server = Server::start(&[]);
    let (mut client, head) = deflate_client(
        &server,
        "x-webkit-deflate-frame, permessage-deflate; client_max_window_bits",
    );
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(head.contains(ANSWER), "{head}");

    // A long compressed text in two fragments comes back compressed (RSV1).
    let text = "All work and no play makes Jack a dull boy. ".repeat(200);
    let z = deflate_message(text.as_bytes());
    client.send(&compressed_frame(false, 0x1, &z[..10]));
    client.send(&masked_frame(true, 0x0, &z[10..]));
    let (b0, payload) = client.read_frame_raw().expect("echo");
    assert_eq!(b0, 0x80 | 0x40 | 0x1, "final, compressed, text");
    assert!(payload.len() < text.len() / 10);
    assert_eq!(inflate_message(&payload, 15), text.as_bytes());

    // Short messages, compressed or not, come back plain (under --deflate-min-bytes).
    client.send(&compressed_frame(true, 0x2, &deflate_message(b"short")));
    assert_eq!(client.read_frame_raw(), Some((0x82, b"short".to_vec())));
    // A long plain message comes back compressed.
    let binary = vec![0x5a; 4000];
    client.send(&masked_frame(true, 0x2, &binary));
    let (b0, payload) = client.read_frame_raw().expect("echo");
    assert_eq!(b0, 0xc2);
    assert_eq!(inflate_message(&payload, 15), binary);

    // RSV1 on a continuation is a protocol error (§6.1).
    client.send(&masked_frame(false, 0x1, b"a"));
    client.send(&compressed_frame(true, 0x0, b"b"));
    assert_eq!(client.expect_close(), Some(1002));
}

#[test]
fn server_max_window_bits_is_answered_and_honoured() {
    let server = Server::start(&["--deflate-min-bytes", "100"]);
    for bits in [9u8, 12] {
        let offer = format!("permessage-deflate; server_max_window_bits=\"{bits}\"");
        let (mut client, head) = deflate_client(&server, &offer);
        assert!(
            head.contains(&format!(
                "{}; server_max_window_bits={bits}\r\n",
                ANSWER.trim_end()
            )),
            "{head}"
        );
        // Distances past a small window would break a client's small inflater.
        let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 101) as u8).collect();
        client.send(&masked_frame(true, 0x2, &data));
        let (b0, payload) = client.read_frame_raw().expect("echo");
        assert_eq!(b0, 0xc2);
        assert_eq!(inflate_message(&payload, bits), data);
    }
    // With 8 (which zlib cannot write) the offer is accepted and nothing is compressed.
    let (mut client, head) =
        deflate_client(&server, "permessage-deflate; server_max_window_bits=8");
    assert!(head.contains("server_max_window_bits=8\r\n"), "{head}");
    client.send(&masked_frame(true, 0x2, &[1; 500]));
    assert_eq!(client.read_frame_raw(), Some((0x82, vec![1; 500])));
}

#[test]
fn bad_offers_and_no_deflate_leave_the_header_out() {
    let server = Server::start(&[]);
    let (mut client, head) =
        deflate_client(&server, "permessage-deflate; server_max_window_bits=16");
    assert!(
        head.starts_with("HTTP/1.1 101 ") && !head.contains("Extensions"),
        "{head}"
    );
    // Without the extension RSV1 stays 1002.
    client.send(&compressed_frame(true, 0x1, &deflate_message(b"x")));
    assert_eq!(client.expect_close(), Some(1002));

    let server = Server::start(&["--no-deflate"]);
    let (_, head) = deflate_client(&server, "permessage-deflate");
    assert!(
        head.starts_with("HTTP/1.1 101 ") && !head.contains("Extensions"),
        "{head}"
    );
}

#[test]
fn a_decompression_bomb_is_closed_with_1009_and_memory_stays_bounded() {
    let server = Server::start(&[]);
    // About 100 KiB that would inflate to 100 MiB; /echo takes 16 MiB.
    let bomb = deflate_message(&vec![0u8; 100 << 20]);
    assert!(bomb.len() < 128 << 10, "{}", bomb.len());
    let before = server.rss();
    for _ in 0..4 {
        let (mut client, head) = deflate_client(&server, "permessage-deflate");
        assert!(head.contains(ANSWER), "{head}");
        client.send(&compressed_frame(true, 0x2, &bomb));
        assert_eq!(client.expect_close(), Some(1009));
    }
    // Bad DEFLATE data is 1007.
    let (mut client, _) = deflate_client(&server, "permessage-deflate");
    client.send(&compressed_frame(true, 0x2, &[0xff; 8]));
    assert_eq!(client.expect_close(), Some(1007));
    let grown = server.rss().saturating_sub(before);
    // At most one message's worth (16 MiB) was ever inflated at once.
    assert!(grown < 40 << 20, "RSS grew by {grown} bytes");
}

/// A sync asked with `"batch":true` is one message that goes compressed, with the
/// same deliveries as the plain reply, which goes as one small frame per message.
#[test]
fn a_batched_sync_reply_is_one_compressed_message_a_fraction_of_the_plain_reply() {
    use fastim::store::{Db, Message as ChatMessage, Peer};
    let dir = common::fresh_data_dir();
    std::fs::create_dir_all(&dir).expect("dir");
    let a = {
        let mut db = Db::open(&dir.join("fastim.db")).expect("seed");
        let a = common::seed_account(&mut db, "1001");
        let b = common::seed_account(&mut db, "1002");
        db.add_friend(a.0, b.0, 1).expect("friends");
        let texts = [
            "are we still on for dinner tonight?",
            "好的，明天见！我们在老地方吃饭",
            "running ten minutes late, sorry",
        ];
        let history: Vec<ChatMessage> = (0..400)
            .map(|i| ChatMessage {
                sender_id: if i % 2 == 0 { a.0 } else { b.0 },
                to: Peer::User(if i % 2 == 0 { b.0 } else { a.0 }),
                media: 1,
                content: format!("{} ({i})", texts[i % 3]),
                pic: String::new(),
                url: String::new(),
                memo: String::new(),
                amount: 0,
                client_ref: None,
                id: 0,
                created_at: 0,
                ..ChatMessage::new(0, Peer::User(0))
            })
            .collect();
        db.save_messages(&history, 1_795_000_000_000)
            .expect("history");
        a
    };
    let server = Server::start_in(dir, &[]);
    let chat = format!("/chat?token={}", a.1);
    let offer = "permessage-deflate; client_max_window_bits";

    // Plain: 400 deliveries and the closing cmd 23, each its own frame.
    let (mut plain, head) =
        RawClient::request(server.addr, &upgrade_request_offering(&chat, offer));
    assert!(
        head.starts_with("HTTP/1.1 101 ") && head.contains(ANSWER),
        "{head}"
    );
    plain.send(&masked_frame(true, 0x1, br#"{"cmd":20,"id":0}"#));
    let mut plain_bytes = 0;
    let mut deliveries = Vec::new();
    loop {
        let (b0, payload) = plain.read_frame_raw().expect("a sync frame");
        plain_bytes += payload.len() + 2 + if payload.len() > 125 { 2 } else { 0 };
        let payload = if b0 & 0x40 != 0 {
            inflate_message(&payload, 15)
        } else {
            payload
        };
        let v: serde_json::Value = serde_json::from_slice(&payload).expect("JSON");
        if v["cmd"] == 23 {
            break;
        }
        deliveries.push(v);
    }
    assert_eq!(deliveries.len(), 400);

    // Batched: one compressed message holding the same deliveries.
    let (mut batched, _) = RawClient::request(server.addr, &upgrade_request_offering(&chat, offer));
    batched.send(&masked_frame(
        true,
        0x1,
        br#"{"cmd":20,"id":0,"batch":true}"#,
    ));
    let (b0, z) = batched.read_frame_raw().expect("the batch");
    assert_eq!(b0, 0x80 | 0x40 | 0x1, "final, compressed, text");
    let reply: serde_json::Value = serde_json::from_slice(&inflate_message(&z, 15)).expect("JSON");
    assert_eq!(reply["cmd"], 25);
    assert_eq!(reply["more"], false);
    assert_eq!(reply["messages"].as_array().expect("array"), &deliveries);
    let batched_bytes = z.len() + 10;
    println!(
        "sync of 400 chat messages: {plain_bytes} bytes as frames, {batched_bytes} bytes as one compressed batch ({:.1} %)",
        100.0 * batched_bytes as f64 / plain_bytes as f64
    );
    assert!(
        batched_bytes * 5 < plain_bytes,
        "{batched_bytes} bytes batched against {plain_bytes} plain"
    );
}
