//! The chat service over `/chat`, with `tungstenite` as the client: a real server
//! process, a real SQLite file. Accounts, friendships and groups are seeded straight
//! into the database before the server starts (the HTTP API has tests of its own).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::chat::{Account, Ws, connect, recv, seed_accounts, send, set_timeout};
use common::{
    RawClient, Server, deflate_message, fresh_data_dir, inflate_message, masked_frame,
    upgrade_request_offering,
};
use fastim::store::NewGroup;
use serde_json::{Value, json};
use tungstenite::Message;
use tungstenite::client::IntoClientRequest;

/// Users a, b, c, d; a and b are friends; a owns group "crew" with b and c; d is a stranger.
struct World {
    a: Account,
    b: Account,
    c: Account,
    d: Account,
    group: i64,
}

fn seed(data_dir: &Path) -> World {
    let (mut db, [a, b, c, d]) = seed_accounts(data_dir, ["1001", "1002", "1003", "1004"]);
    db.add_friend(a.id, b.id, 2).expect("friends");
    let group = NewGroup {
        name: "crew".into(),
        icon: String::new(),
        cate: 0,
        memo: String::new(),
    };
    let group = db.create_group(a.id, group, 5, 3).expect("group").id;
    db.join_group(b.id, group, 4).expect("join");
    db.join_group(c.id, group, 4).expect("join");
    World { a, b, c, d, group }
}

fn start() -> (Server, World) {
    let dir = fresh_data_dir();
    let world = seed(&dir);
    (Server::start_in(dir, &[]), world)
}

/// Nothing arrives within `wait`.
fn silent(ws: &mut Ws, wait: Duration) -> bool {
    set_timeout(ws, wait);
    let quiet = match ws.read() {
        Err(tungstenite::Error::Io(e)) => matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        _ => false,
    };
    set_timeout(ws, Duration::from_secs(10));
    quiet
}

fn text(to: i64, content: &str, r: &str) -> Value {
    json!({"cmd": 10, "dstid": to, "media": 1, "content": content, "ref": r})
}

/// Syncs from `after` and returns the messages and the sync-done frame.
fn sync(ws: &mut Ws, after: i64) -> (Vec<Value>, Value) {
    send(ws, json!({"cmd": 20, "id": after}));
    let mut messages = Vec::new();
    loop {
        let v = recv(ws);
        if v["cmd"] == 23 {
            return (messages, v);
        }
        messages.push(v);
    }
}

#[test]
fn two_friends_chat_both_ways_and_history_keeps_the_order() {
    let (server, w) = start();
    let mut a = connect(&server, &w.a);
    let mut b = connect(&server, &w.b);
    // fastIM's exact frame, with a spoofed sender.
    send(
        &mut a,
        json!({"id":0,"userid": w.d.id,"cmd":10,"dstid": w.b.id,"media":1,"content":"hello b","pic":"","url":"","memo":"","amount":0,"ref":"a1"}),
    );
    let ack = recv(&mut a);
    assert_eq!(
        (ack["cmd"].as_i64(), ack["ref"].as_str()),
        (Some(21), Some("a1")),
        "{ack}"
    );
    let got = recv(&mut b);
    assert_eq!(got["content"], "hello b");
    assert_eq!(
        got["userid"].as_i64(),
        Some(w.a.id),
        "the sender is who the token says, not who the frame says"
    );
    assert_eq!(got["id"], ack["id"]);
    assert!(
        got["createat"]
            .as_i64()
            .is_some_and(|t| t > 1_600_000_000_000)
    );

    send(&mut b, text(w.a.id, "hello a 😀", "b1"));
    let ack_b = recv(&mut b);
    assert_eq!(ack_b["ref"], "b1");
    let got = recv(&mut a);
    assert_eq!(
        (got["content"].as_str(), got["userid"].as_i64()),
        (Some("hello a 😀"), Some(w.b.id))
    );
    assert!(ack_b["id"].as_i64() > ack["id"].as_i64());

    let (history, done) = sync(&mut a, 0);
    let contents: Vec<&str> = history
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(contents, ["hello b", "hello a 😀"]);
    assert_eq!(
        (done["id"].clone(), done["more"].clone()),
        (ack_b["id"].clone(), json!(false))
    );
    assert_eq!(
        done["oldest"], 1,
        "without --history-days nothing is removed"
    );
}

#[test]
fn group_delivery_offline_catch_up_and_refusals() {
    let (server, w) = start();
    let mut a = connect(&server, &w.a);
    let mut b = connect(&server, &w.b);
    let mut c = connect(&server, &w.c);
    let group = |content: &str, r: &str| json!({"cmd": 11, "dstid": w.group, "media": 1, "content": content, "ref": r});

    send(&mut a, group("first", "g1"));
    let first_id = recv(&mut a)["id"].clone();
    assert_eq!(recv(&mut b)["content"], "first");
    assert_eq!(recv(&mut c)["content"], "first");
    drop(c); // c goes offline having seen "first"

    for (i, r) in ["g2", "g3"].iter().enumerate() {
        send(&mut a, group(&format!("missed {i}"), r));
        assert_eq!(
            recv(&mut a)["cmd"],
            21,
            "acked, not echoed to the sending connection"
        );
        assert_eq!(recv(&mut b)["content"], format!("missed {i}"));
    }
    assert!(
        silent(&mut a, Duration::from_millis(300)),
        "no echo of group messages to the sender"
    );

    let mut c = connect(&server, &w.c);
    let (missed, done) = sync(&mut c, first_id.as_i64().expect("id"));
    let contents: Vec<&str> = missed
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(contents, ["missed 0", "missed 1"]);
    assert_eq!(done["more"], false);

    // A non-member's group message and a non-friend's direct message are refused.
    let mut d = connect(&server, &w.d);
    send(&mut d, group("let me in", "d1"));
    let refused = recv(&mut d);
    assert_eq!(
        (
            refused["cmd"].as_i64(),
            refused["code"].as_i64(),
            refused["ref"].as_str()
        ),
        (Some(22), Some(403), Some("d1"))
    );
    send(&mut d, text(w.a.id, "hi stranger", "d2"));
    assert_eq!(recv(&mut d)["code"], 403);
    send(&mut c, text(w.a.id, "c and a are not friends", "c1"));
    assert_eq!(recv(&mut c)["code"], 403);
    assert!(
        silent(&mut a, Duration::from_millis(300)),
        "refused messages are not delivered"
    );
}

#[test]
fn a_retry_with_the_same_ref_is_acked_with_the_same_id_and_stored_once() {
    let (server, w) = start();
    let mut a = connect(&server, &w.a);
    let mut b = connect(&server, &w.b);
    send(&mut a, text(w.b.id, "once", "same-ref"));
    let first = recv(&mut a);
    send(&mut a, text(w.b.id, "once", "same-ref"));
    let second = recv(&mut a);
    assert_eq!(
        (first["id"].clone(), second["ref"].clone()),
        (second["id"].clone(), json!("same-ref"))
    );
    assert_eq!(recv(&mut b)["content"], "once");
    assert!(
        silent(&mut b, Duration::from_millis(300)),
        "the retry is not delivered twice"
    );
    assert_eq!(sync(&mut b, 0).0.len(), 1);
}

/// fastIM's own client sends no `ref` and takes every frame it gets for a chat message
/// (an ack made it look a user up by a `NaN` id and clear the input box): a message
/// without one is stored and delivered, and answered with nothing; a refusal still is.
#[test]
fn a_message_without_a_ref_is_delivered_and_gets_no_ack() {
    let (server, w) = start();
    let mut a = connect(&server, &w.a);
    let mut b = connect(&server, &w.b);
    send(
        &mut a,
        json!({"cmd": 10, "dstid": w.b.id, "media": 1, "content": "no ref"}),
    );
    let got = recv(&mut b);
    assert_eq!(
        (got["cmd"].as_i64(), got["content"].as_str()),
        (Some(10), Some("no ref"))
    );
    // a's next frame answers its next message: nothing came in between.
    send(&mut a, text(w.b.id, "with a ref", "r2"));
    let ack = recv(&mut a);
    assert_eq!(
        (ack["cmd"].as_i64(), ack["ref"].as_str()),
        (Some(21), Some("r2"))
    );
    send(
        &mut a,
        json!({"cmd": 10, "dstid": w.d.id, "media": 1, "content": "stranger"}),
    );
    let refused = recv(&mut a);
    assert_eq!(
        (refused["cmd"].as_i64(), refused["code"].as_i64()),
        (Some(22), Some(403))
    );
    assert_eq!(recv(&mut b)["content"], "with a ref");
}

#[test]
fn several_connections_of_one_user_each_get_every_message() {
    let (server, w) = start();
    let mut a = connect(&server, &w.a);
    let mut b_phone = connect(&server, &w.b);
    let mut b_laptop = connect(&server, &w.b);
    let mut a_tab = connect(&server, &w.a);
    send(&mut a, text(w.b.id, "to all of b", "r"));
    recv(&mut a);
    assert_eq!(recv(&mut b_phone)["content"], "to all of b");
    assert_eq!(recv(&mut b_laptop)["content"], "to all of b");
    assert_eq!(
        recv(&mut a_tab)["content"],
        "to all of b",
        "the sender's other tab sees it too"
    );
}

#[test]
fn bad_frames_get_an_error_reply_and_the_connection_keeps_working() {
    let (server, w) = start();
    let mut a = connect(&server, &w.a);
    let cases: Vec<(Message, i64)> = vec![
        (Message::text("{not json"), 400),
        (Message::text(r#"{"cmd":77,"ref":"x"}"#), 400),
        (
            Message::text(
                json!({"cmd":10,"dstid":w.b.id,"content":"é".repeat(4001),"ref":"big"}).to_string(),
            ),
            413,
        ),
        (
            Message::text(r#"{"cmd":10,"content":"no destination"}"#),
            400,
        ),
        (Message::binary(vec![1, 2, 3]), 400),
    ];
    for (frame, code) in cases {
        a.send(frame.clone()).expect("send");
        let reply = recv(&mut a);
        assert_eq!(
            (reply["cmd"].as_i64(), reply["code"].as_i64()),
            (Some(22), Some(code)),
            "{frame:?}: {reply}"
        );
    }
    send(&mut a, json!({"cmd": 0}));
    assert_eq!(recv(&mut a), json!({"cmd": 0}));
}

#[test]
fn the_upgrade_is_authenticated_before_the_101() {
    let (server, w) = start();
    let status = |url: String, origin: Option<&str>| {
        let mut request = url.into_client_request().expect("request");
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("Origin", origin.parse().expect("header"));
        }
        match tungstenite::connect(request) {
            Ok((_, response)) => response.status().as_u16(),
            Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(status(server.url("/chat"), None), 401);
    assert_eq!(status(server.url("/chat?id=1&token=forged"), None), 401);
    let wrong_id = format!("/chat?id={}&token={}", w.b.id, w.a.token);
    assert_eq!(status(server.url(&wrong_id), None), 401);
    let good = format!("/chat?id={}&token={}", w.a.id, w.a.token);
    assert_eq!(status(server.url(&good), Some("http://evil.example")), 403);
    assert_eq!(
        status(server.url(&good), Some(&format!("http://{}", server.addr))),
        101
    );
    // The token in a cookie or an Authorization header works as well.
    for (name, value) in [
        ("Cookie", format!("fastim_token={}", w.a.token)),
        ("Authorization", format!("Bearer {}", w.a.token)),
    ] {
        let mut request = server.url("/chat").into_client_request().expect("request");
        request
            .headers_mut()
            .insert(name, value.parse().expect("header"));
        let (_, response) = tungstenite::connect(request).expect(name);
        assert_eq!(response.status(), 101);
    }
}

#[test]
fn acknowledged_messages_survive_a_crash() {
    let dir = fresh_data_dir();
    let w = seed(&dir);
    let server = Server::start_in(dir, &[]);
    let mut a = connect(&server, &w.a);
    let mut acked = Vec::new();
    for i in 0..50 {
        send(&mut a, text(w.b.id, &format!("m{i}"), &format!("r{i}")));
    }
    for _ in 0..50 {
        acked.push(recv(&mut a)["id"].as_i64().expect("id"));
    }
    let dir = server.crash();
    let server = Server::start_in(dir, &[]);
    let mut b = connect(&server, &w.b);
    let (messages, _) = sync(&mut b, 0);
    let ids: Vec<i64> = messages.iter().filter_map(|m| m["id"].as_i64()).collect();
    assert_eq!(ids, acked);
}

#[test]
fn silent_chat_connections_are_pinged_then_dropped() {
    let dir = fresh_data_dir();
    let w = seed(&dir);
    let server = Server::start_in(dir, &["--ping-interval", "1"]);
    let request = format!(
        "GET /chat?token={} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        w.a.token
    );
    let (mut raw, head) = RawClient::request(server.addr, &request);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let started = Instant::now();
    // A raw client never answers pings: it gets one, then the close.
    assert_eq!(raw.read_frame().map(|f| f.1), Some(0x9));
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(raw.expect_close(), Some(1001));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(2000) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert!(raw.sees_tcp_close());
}

#[test]
fn a_member_that_does_not_read_is_disconnected_without_stalling_the_group() {
    let (server, w) = start();
    let mut a = connect(&server, &w.a);
    let mut c = connect(&server, &w.c);
    // b joins the group chat but never reads a byte.
    let request = format!(
        "GET /chat?token={} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        w.b.token
    );
    let (mut stalled, head) = RawClient::request(server.addr, &request);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let before = server.rss();
    let content = "x".repeat(4000);
    let total = 4000;
    // c reads as a live client does, while a sends.
    let reader = std::thread::spawn(move || {
        for n in 0..total {
            let got = recv(&mut c);
            assert_eq!(
                got["content"].as_str().map(str::len),
                Some(4000),
                "message {n} to the reading member"
            );
        }
    });
    for chunk in 0..total / 100 {
        for i in 0..100 {
            let n = chunk * 100 + i;
            send(
                &mut a,
                json!({"cmd": 11, "dstid": w.group, "content": content, "ref": n.to_string()}),
            );
        }
        for _ in 0..100 {
            assert_eq!(recv(&mut a)["cmd"], 21);
        }
    }
    reader.join().expect("the reading member got every message");
    let grown = server.rss().saturating_sub(before);
    assert!(grown < 64 << 20, "server grew by {} MiB", grown >> 20);
    // The stalled member's queue passed its bound: it was cut off (16 MB were sent its way).
    stalled
        .stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    assert!(
        stalled.sees_tcp_close(),
        "the non-reading member is still connected"
    );
}

/// A raw `/chat` connection that negotiated permessage-deflate (RFC 7692).
fn connect_deflate(server: &Server, who: &Account) -> RawClient {
    let path = format!("/chat?id={}&token={}", who.id, who.token);
    let (client, head) = RawClient::request(
        server.addr,
        &upgrade_request_offering(&path, "permessage-deflate"),
    );
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        head.contains("Sec-WebSocket-Extensions: permessage-deflate;"),
        "{head}"
    );
    client
}

/// The next text frame of a raw client as JSON, inflated if RSV1 is set; and
/// whether it was compressed.
fn recv_raw(client: &mut RawClient) -> (Value, bool) {
    loop {
        let (b0, payload) = client.read_frame_raw().expect("a frame");
        match b0 & 0x0f {
            0x1 => {
                let compressed = b0 & 0x40 != 0;
                let text = if compressed {
                    inflate_message(&payload, 15)
                } else {
                    payload
                };
                return (serde_json::from_slice(&text).expect("JSON"), compressed);
            }
            0x9 | 0xa => {}
            other => panic!("unexpected opcode {other}"),
        }
    }
}

#[test]
fn long_deliveries_and_sync_replies_go_compressed_to_clients_with_deflate() {
    let (server, w) = start();
    let mut a = connect_deflate(&server, &w.a);
    let mut b = connect_deflate(&server, &w.b);
    let mut c = connect(&server, &w.c);
    let long = "deflate me ".repeat(300);
    let msg = json!({"cmd": 11, "dstid": w.group, "media": 1, "content": long, "ref": "z1"});
    // The sender compresses too; the ack is short and plain.
    a.send(&{
        let mut f = masked_frame(true, 0x1, &deflate_message(msg.to_string().as_bytes()));
        f[0] |= 0x40;
        f
    });
    let (ack, compressed) = recv_raw(&mut a);
    assert_eq!((ack["cmd"].as_i64(), compressed), (Some(21), false));
    // b negotiated deflate: compressed; c did not: plain, same message.
    let (got, compressed) = recv_raw(&mut b);
    assert_eq!(
        (got["content"].as_str(), compressed),
        (Some(long.as_str()), true)
    );
    assert_eq!(recv(&mut c)["content"], long.as_str());
    // A short one goes plain to everyone.
    a.send_frame(true, 0x1, text(w.b.id, "hi", "z2").to_string().as_bytes());
    assert_eq!(recv_raw(&mut a).0["cmd"], 21);
    let (got, compressed) = recv_raw(&mut b);
    assert_eq!((got["content"].as_str(), compressed), (Some("hi"), false));
    // A sync reply: the long delivery compressed, the short one and sync-done plain.
    b.send_frame(
        true,
        0x1,
        json!({"cmd": 20, "id": 0}).to_string().as_bytes(),
    );
    let mut seen = Vec::new();
    loop {
        let (v, compressed) = recv_raw(&mut b);
        if v["cmd"] == 23 {
            assert!(!compressed);
            break;
        }
        seen.push((v["content"].as_str().map(str::len), compressed));
    }
    assert_eq!(seen, [(Some(long.len()), true), (Some(2), false)]);
}
