//! The HTTP API on a real server, called the way fastIM's original web client calls
//! it (form bodies built with `encodeURI`, the cookie from login and nothing else),
//! and together with `/chat`.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::{Http, RawClient, Server, read_response};
use serde_json::{Value, json};
use tungstenite::Message;

/// Registers through the API, as the original register page does; returns the
/// logged-in client, the user id and the token.
fn register(server: &Server, mobile: &str, nickname: &str) -> (Http, i64, String) {
    let mut http = Http::new(server.addr);
    let body = format!(
        "mobile={mobile}&passwd=pass+word%201&passwdr=pass+word%201&nickname={nickname}&avatar=&sex=M&memo=hello"
    );
    let r = http.form("/user/register", &body);
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["code"], 0, "{v}");
    let id = v["data"]["id"].as_i64().expect("id");
    let token = v["data"]["token"].as_str().expect("token").to_owned();
    assert!(http.cookie.is_some(), "register sets the session cookie");
    (http, id, token)
}

type Ws = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

fn chat(server: &Server, id: i64, token: &str) -> Ws {
    let (ws, _) =
        tungstenite::connect(server.url(&format!("/chat?id={id}&token={token}"))).expect("chat");
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
    }
    ws
}

/// The next text frame, presence (`cmd` 24) skipped: a socket that asked for live
/// events (to be told of contact events) also gets its contacts' presence.
fn recv(ws: &mut Ws) -> Value {
    loop {
        if let Message::Text(t) = ws.read().expect("read") {
            let v: Value = serde_json::from_str(t.as_str()).expect("json");
            if v["cmd"] != 24 {
                return v;
            }
        }
    }
}

fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).expect("send");
}

#[test]
fn accounts_the_way_the_original_client_uses_them() {
    let server = Server::start(&[]);
    let (mut alice, alice_id, alice_token) = register(&server, "13800000001", "%E5%BC%A0%E4%B8%89");
    let me = alice.form("/user/me", "").json();
    assert_eq!(
        (me["data"]["id"].as_i64(), me["data"]["nickname"].as_str()),
        (Some(alice_id), Some("张三"))
    );

    // Login: `+` in an encodeURI body is a literal plus.
    let mut again = Http::new(server.addr);
    let ok = again
        .form("/user/login", "mobile=13800000001&passwd=pass+word%201")
        .json();
    assert_eq!(ok["code"], 0, "{ok}");
    let wrong = again
        .form("/user/login", "mobile=13800000001&passwd=pass%20word%201")
        .json();
    let unknown = again
        .form("/user/login", "mobile=13999999999&passwd=pass+word%201")
        .json();
    assert_eq!(wrong["code"], -1);
    assert_eq!(
        wrong, unknown,
        "no telling a wrong password from an unknown account"
    );

    let dup = Http::new(server.addr)
        .form(
            "/user/register",
            "mobile=13800000001&passwd=whatever1&nickname=x",
        )
        .json();
    assert_eq!(dup["code"], -1);
    assert!(
        dup["msg"].as_str().is_some_and(|m| m.contains("mobile")),
        "{dup}"
    );
    let bad = Http::new(server.addr)
        .form("/user/register", "mobile=12ab&passwd=whatever1&nickname=x")
        .json();
    assert!(
        bad["msg"].as_str().is_some_and(|m| m.contains("mobile")),
        "{bad}"
    );
    let long = format!(
        "mobile=13800000009&passwd=whatever1&nickname={}",
        "n".repeat(21)
    );
    let long = Http::new(server.addr).form("/user/register", &long).json();
    assert!(
        long["msg"].as_str().is_some_and(|m| m.contains("nickname")),
        "{long}"
    );

    // No cookie, no service; a spoofed userid buys nothing.
    let anonymous =
        Http::new(server.addr).form("/contact/loadfriend", &format!("userid={alice_id}"));
    assert_eq!(
        (anonymous.status, anonymous.json()["code"].as_i64()),
        (401, Some(401))
    );

    // Logout revokes that session's token on the server, and only that one.
    assert_eq!(alice.form("/user/logout", "").json()["code"], 0);
    let cookie = format!("fastim_token={alice_token}");
    let r = Http::new(server.addr).request("POST", "/user/me", &[("Cookie", &cookie)], b"");
    assert_eq!(r.status, 401);
    let bearer = format!("Bearer {alice_token}");
    let r = Http::new(server.addr).request("POST", "/user/me", &[("Authorization", &bearer)], b"");
    assert_eq!(r.status, 401);
    assert_eq!(
        again.form("/user/me", "").json()["data"]["id"].as_i64(),
        Some(alice_id)
    );
}

/// Behind a trusted TLS-terminating proxy (`X-Forwarded-Proto: https`) the session
/// cookie, and the one that clears it, carry `Secure`; on plain HTTP they do not.
/// (tests/proxy.rs has the same header from a peer that is not trusted.)
#[test]
fn session_cookie_is_secure_behind_an_https_proxy() {
    let server = Server::start(&["--trust-proxy", "127.0.0.1"]);
    let https = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("X-Forwarded-Proto", "https"),
    ];
    let mut http = Http::new(server.addr);
    let r = http.request(
        "POST",
        "/user/register",
        &https,
        b"mobile=13800000001&passwd=secret-1&nickname=s",
    );
    assert_eq!(r.json()["code"], 0, "{}", r.json());
    let cookie = r.header("set-cookie").expect("cookie").to_owned();
    assert!(cookie.starts_with("fastim_token="), "{cookie}");
    assert!(cookie.ends_with("; Secure"), "{cookie}");

    let mut plain = Http::new(server.addr);
    let r = plain.form("/user/login", "mobile=13800000001&passwd=secret-1");
    assert_eq!(r.json()["code"], 0, "{}", r.json());
    let cookie = r.header("set-cookie").expect("cookie");
    assert!(!cookie.contains("Secure"), "{cookie}");

    let r = http.request(
        "POST",
        "/user/login",
        &https,
        b"mobile=13800000001&passwd=secret-1",
    );
    assert!(
        r.header("set-cookie")
            .is_some_and(|c| c.ends_with("; Secure")),
        "{}",
        r.head
    );
    let r = http.request(
        "POST",
        "/user/logout",
        &[("X-Forwarded-Proto", "HTTPS")],
        b"",
    );
    assert_eq!(r.json()["code"], 0, "{}", r.json());
    assert_eq!(
        r.header("set-cookie"),
        Some("fastim_token=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0; Secure")
    );
}

#[test]
fn http_conditions_below_the_application_keep_real_statuses() {
    let server = Server::start(&[]);
    let mut http = Http::new(server.addr);
    let r = http.request("DELETE", "/user/login", &[], b"");
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    assert_eq!(r.json()["code"], 405);
    let r = Http::new(server.addr).request(
        "POST",
        "/user/register",
        &[("Content-Type", "application/json")],
        b"{not json",
    );
    assert_eq!((r.status, r.json()["code"].as_i64()), (400, Some(400)));
    let r = Http::new(server.addr).request("GET", "/nowhere", &[], b"");
    assert_eq!((r.status, r.json()["code"].as_i64()), (404, Some(404)));
    // 413 is decided from the header, before any of the body is read.
    let mut s = TcpStream::connect(server.addr).expect("connect");
    s.write_all(b"POST /user/register HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        .expect("send");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let r = read_response(&mut s);
    assert_eq!(
        (
            r.status,
            serde_json::from_slice::<Value>(&r.body).expect("json")["code"].as_i64()
        ),
        (413, Some(413))
    );
    let mut s = TcpStream::connect(server.addr).expect("connect");
    s.write_all(
        b"POST /user/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .expect("send");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert_eq!(read_response(&mut s).status, 411);
    // JSON bodies work too, and several requests share one connection.
    let mut http = Http::new(server.addr);
    let body =
        json!({"mobile": "13800000005", "passwd": "secret-1", "nickname": "json"}).to_string();
    let r = http.request(
        "POST",
        "/user/register",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(r.json()["code"], 0);
    let first = http.stream.as_ref().map(|s| s.local_addr().expect("addr"));
    assert_eq!(http.form("/user/me", "").json()["code"], 0);
    assert_eq!(
        http.stream.as_ref().map(|s| s.local_addr().expect("addr")),
        first,
        "kept alive"
    );
}

#[test]
fn friends_chat_and_read_their_history() {
    let server = Server::start(&[]);
    let (mut a, a_id, a_token) = register(&server, "13800000011", "a");
    let (mut b, b_id, b_token) = register(&server, "13800000012", "b");
    let added = a.form("/contact/addfriend", "dstname=13800000012").json();
    assert_eq!(
        (&added["code"], &added["msg"], &added["data"]["status"]),
        (&json!(0), &json!("request sent"), &json!("requested")),
        "{added}"
    );
    assert_eq!(
        b.form("/contact/loadfriend", "").json()["total"],
        0,
        "not before b accepts"
    );
    let accepted = b.form("/contact/accept", &format!("dstid={a_id}")).json();
    assert_eq!(accepted["code"], 0, "{accepted}");
    let friends = b.form("/contact/loadfriend", "").json();
    assert_eq!(
        (friends["total"].as_i64(), friends["rows"][0]["id"].as_i64()),
        (Some(1), Some(a_id)),
        "friendship is mutual"
    );
    assert!(
        friends.to_string().find("token").is_none()
            && friends.to_string().find("1380000001").is_none(),
        "{friends}"
    );
    assert_eq!(
        a.form("/contact/addfriend", "dstname=13800000012").json()["code"],
        -1
    );

    let mut wa = chat(&server, a_id, &a_token);
    let mut wb = chat(&server, b_id, &b_token);
    send(
        &mut wa,
        json!({"cmd":10,"dstid":b_id,"media":1,"content":"ping","ref":"1"}),
    );
    assert_eq!(recv(&mut wa)["cmd"], 21);
    assert_eq!(recv(&mut wb)["content"], "ping");
    send(
        &mut wb,
        json!({"cmd":10,"dstid":a_id,"media":4,"url":"/asset/plugins/doutu/emoj/1.gif","ref":"2"}),
    );
    assert_eq!(recv(&mut wb)["cmd"], 21);
    assert_eq!(recv(&mut wa)["url"], "/asset/plugins/doutu/emoj/1.gif");

    let history = a
        .form("/message/history", &format!("dstid={b_id}&cmd=10"))
        .json();
    let rows = history["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0]["media"].as_i64(), rows[1]["content"].as_str()),
        (Some(4), Some("ping")),
        "newest first"
    );
    let older = a
        .form(
            "/message/history",
            &format!("dstid={b_id}&cmd=10&before={}", rows[0]["id"]),
        )
        .json();
    assert_eq!(older["total"], 1);
}

#[test]
fn a_group_of_three_and_leaving_it_stops_delivery() {
    let server = Server::start(&[]);
    let (mut a, a_id, a_token) = register(&server, "13800000021", "a");
    let (mut b, b_id, b_token) = register(&server, "13800000022", "b");
    let (mut c, _, _) = register(&server, "13800000023", "c");
    let group = a
        .form(
            "/contact/createcommunity",
            "name=crew&icon=&cate=1&memo=ours",
        )
        .json();
    assert_eq!(group["code"], 0, "{group}");
    let gid = group["data"]["id"].as_i64().expect("group id");
    assert_eq!(
        b.form("/contact/joincommunity", "dstname=crew").json()["code"],
        0
    );
    assert_eq!(
        c.form("/contact/joincommunity", &format!("dstid={gid}"))
            .json()["code"],
        0
    );
    let members = b.form("/contact/members", &format!("dstid={gid}")).json();
    assert_eq!(members["total"], 3);
    assert_eq!(
        c.form("/contact/loadcommunity", "").json()["rows"][0]["name"],
        "crew"
    );

    let mut wa = chat(&server, a_id, &a_token);
    let mut wb = chat(&server, b_id, &b_token);
    // b asks for live events, as the web client does: the group_left event below.
    send(&mut wb, json!({"cmd":24}));
    send(
        &mut wa,
        json!({"cmd":11,"dstid":gid,"content":"hello crew","ref":"1"}),
    );
    assert_eq!(recv(&mut wa)["cmd"], 21);
    assert_eq!(recv(&mut wb)["content"], "hello crew");

    assert_eq!(
        b.form("/contact/leavecommunity", &format!("dstid={gid}"))
            .json()["code"],
        0
    );
    // The leaving is a notice in the group (media 100; PROTOCOL.md "Group notices"), the
    // last group message b gets; then b's devices are told the group is gone.
    for ws in [&mut wa, &mut wb] {
        let notice = recv(ws);
        assert_eq!(
            (notice["cmd"].as_i64(), notice["media"].as_i64()),
            (Some(11), Some(100)),
            "{notice}"
        );
        assert!(
            notice["content"]
                .as_str()
                .expect("content")
                .contains(r#""notice":"left""#),
            "{notice}"
        );
    }
    let gone = recv(&mut wb);
    assert_eq!(
        (gone["cmd"].as_i64(), gone["event"].as_str()),
        (Some(30), Some("group_left")),
        "{gone}"
    );
    send(
        &mut wa,
        json!({"cmd":11,"dstid":gid,"content":"b is gone","ref":"2"}),
    );
    assert_eq!(recv(&mut wa)["cmd"], 21);
    send(&mut wb, json!({"cmd":0}));
    assert_eq!(
        recv(&mut wb),
        json!({"cmd":0}),
        "b receives nothing from the group after leaving"
    );
    send(
        &mut wb,
        json!({"cmd":11,"dstid":gid,"content":"can I still post?","ref":"3"}),
    );
    assert_eq!(recv(&mut wb)["code"], 403);
}

#[test]
fn logging_out_closes_the_sessions_sockets() {
    let server = Server::start(&[]);
    let (mut a, a_id, a_token) = register(&server, "13800000031", "a");
    let request = format!(
        "GET /chat?id={a_id}&token={a_token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let (mut raw, head) = RawClient::request(server.addr, &request);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(a.form("/user/logout", "").json()["code"], 0);
    assert_eq!(raw.expect_close(), Some(1008));
    let (_, head) = RawClient::request(server.addr, &request);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
}

/// `GET /healthz` for load balancers: 200 while the loop, the workers and the
/// database answer; 503 with the envelope when the database cannot be written.
#[test]
fn health_says_whether_the_database_takes_writes() {
    let server = Server::start(&[]);
    let mut http = Http::new(server.addr);
    let ok = http.request("GET", "/healthz", &[], b"");
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json(), serde_json::json!({"code": 0, "msg": "ok"}));
    let head = http.request("HEAD", "/healthz", &[], b"");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(http.request("POST", "/healthz", &[], b"").status, 405);

    // Another process holds the write lock past the server's busy timeout.
    let db = rusqlite::Connection::open(server.data_dir.join("fastim.db")).expect("open");
    db.execute_batch("BEGIN IMMEDIATE").expect("write lock");
    let mut http = Http::new(server.addr);
    let busy = http.request("GET", "/healthz", &[], b"");
    assert_eq!(busy.status, 503, "{}", String::from_utf8_lossy(&busy.body));
    assert_eq!(busy.json()["code"], 503);
    assert!(busy.header("retry-after").is_some());
    db.execute_batch("ROLLBACK").expect("release");
    let mut http = Http::new(server.addr);
    assert_eq!(http.request("GET", "/healthz", &[], b"").status, 200);
}
