//! Presence and typing on `/chat` (PROTOCOL.md, "Presence and typing"), with
//! `tungstenite` clients against a real server process and a real SQLite file.
//! Accounts, friendships and groups are seeded into the database before the server
//! starts.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::chat::{Account, Ws, connect, recv, seed_accounts, send, within};
use common::{Server, fresh_data_dir};
use fastim::store::{Db, NewGroup};
use serde_json::{Value, json};

/// a and b are friends; group "crew" has a, b and c; d is a stranger; e is a's
/// friend too.
struct World {
    a: Account,
    b: Account,
    c: Account,
    d: Account,
    e: Account,
    group: i64,
}

fn seed(data_dir: &Path) -> World {
    let (mut db, [a, b, c, d, e]) =
        seed_accounts(data_dir, ["2001", "2002", "2003", "2004", "2005"]);
    db.add_friend(a.id, b.id, 2).expect("friends");
    db.add_friend(a.id, e.id, 2).expect("friends");
    let group = NewGroup {
        name: "crew".into(),
        icon: String::new(),
        cate: 0,
        memo: String::new(),
    };
    let group = db.create_group(a.id, group, 5, 3).expect("group").id;
    db.join_group(b.id, group, 4).expect("join");
    db.join_group(c.id, group, 4).expect("join");
    World {
        a,
        b,
        c,
        d,
        e,
        group,
    }
}

fn start() -> (Server, World) {
    let dir = fresh_data_dir();
    let world = seed(&dir);
    (Server::start_in(dir, &[]), world)
}

/// Asks for live events and returns the contacts' states from the answer.
fn watch(ws: &mut Ws) -> Vec<Value> {
    send(ws, json!({"cmd": 24}));
    let v = recv(ws);
    assert_eq!(v["cmd"], 24, "{v}");
    v["presence"].as_array().expect("a list").clone()
}

/// The next presence frame's entries.
fn presence(ws: &mut Ws) -> Vec<Value> {
    let v = recv(ws);
    assert_eq!(v["cmd"], 24, "{v}");
    v["presence"].as_array().expect("a list").clone()
}

fn close(mut ws: Ws) {
    let _ = ws.close(None);
    // Read until the server's close frame, so that the close is complete.
    for _ in 0..10 {
        if ws.read().is_err() {
            break;
        }
    }
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    i64::try_from(since.as_millis()).expect("fits")
}

#[test]
fn only_the_first_device_connecting_and_the_last_leaving_are_announced() {
    let (server, w) = start();
    let mut a = connect(&server, &w.a);
    assert_eq!(
        watch(&mut a),
        [
            json!({"userid": w.b.id, "online": false, "lastseen": 0}),
            json!({"userid": w.e.id, "online": false, "lastseen": 0}),
        ],
        "every friend, offline and never seen; c is not a friend and is offline"
    );
    let before = now_ms();
    let b1 = connect(&server, &w.b);
    let on = presence(&mut a);
    assert_eq!(on.len(), 1, "{on:?}");
    assert_eq!(
        (on[0]["userid"].as_i64(), &on[0]["online"]),
        (Some(w.b.id), &json!(true))
    );
    assert!(on[0]["lastseen"].as_i64().is_some_and(|t| t >= before));

    let b2 = connect(&server, &w.b);
    assert_eq!(
        within(&mut a, Duration::from_millis(500)),
        None,
        "a second device"
    );
    close(b1);
    assert_eq!(
        within(&mut a, Duration::from_millis(500)),
        None,
        "one device left"
    );
    let left = now_ms();
    close(b2);
    let off = presence(&mut a);
    assert_eq!(
        (off[0]["userid"].as_i64(), &off[0]["online"]),
        (Some(w.b.id), &json!(false))
    );
    let seen = off[0]["lastseen"].as_i64().expect("lastseen");
    assert!(seen >= left - 50 && seen <= now_ms(), "{seen} vs {left}");
    // A connection that does not watch gets nothing, and its messages work as before.
    let mut plain = connect(&server, &w.a);
    let b3 = connect(&server, &w.b);
    assert_eq!(presence(&mut a)[0]["online"], true);
    assert_eq!(within(&mut plain, Duration::from_millis(300)), None);
    send(&mut plain, json!({"cmd": 0}));
    assert_eq!(recv(&mut plain), json!({"cmd": 0}));
    drop(b3);
}

#[test]
fn fellow_members_are_told_and_strangers_never() {
    let (server, w) = start();
    let mut c = connect(&server, &w.c);
    assert_eq!(
        watch(&mut c),
        Vec::<Value>::new(),
        "no friends, nobody online"
    );
    let mut d = connect(&server, &w.d);
    assert_eq!(watch(&mut d), Vec::<Value>::new());
    // a is c's fellow member, and nothing to d.
    let a = connect(&server, &w.a);
    let on = presence(&mut c);
    assert_eq!(
        (on[0]["userid"].as_i64(), &on[0]["online"]),
        (Some(w.a.id), &json!(true))
    );
    // c asks again: too soon is refused, and the connection stays subscribed.
    send(&mut c, json!({"cmd": 24}));
    let refused = recv(&mut c);
    assert_eq!(
        (&refused["cmd"], &refused["code"]),
        (&json!(22), &json!(429))
    );
    // A second after the first time: a, online, is listed.
    std::thread::sleep(Duration::from_millis(1000));
    let again = watch(&mut c);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["userid"].as_i64(), Some(w.a.id));
    close(a);
    assert_eq!(presence(&mut c)[0]["online"], false);
    assert_eq!(
        within(&mut d, Duration::from_millis(500)),
        None,
        "a stranger"
    );
    // The stranger's own comings and goings are told to nobody.
    let d2 = connect(&server, &w.d);
    close(d2);
    assert_eq!(within(&mut c, Duration::from_millis(300)), None);
}

#[test]
fn last_seen_survives_a_crash_and_a_restart() {
    let dir = fresh_data_dir();
    let w = seed(&dir);
    let server = Server::start_in(dir.clone(), &[]);
    let mut a = connect(&server, &w.a);
    watch(&mut a);
    let b = connect(&server, &w.b);
    presence(&mut a);
    close(b);
    let seen = presence(&mut a)[0]["lastseen"].as_i64().expect("lastseen");
    // Written as b went offline, not at shutdown: it is in the file before the crash.
    let db = Db::open(&dir.join("fastim.db")).expect("open");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !db.all_last_seen().expect("read").contains(&(w.b.id, seen)) {
        assert!(Instant::now() < deadline, "last seen never stored");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(db);
    let dir = server.crash();
    let server = Server::start_in(dir, &[]);
    let mut a = connect(&server, &w.a);
    let states = watch(&mut a);
    assert_eq!(
        states[0],
        json!({"userid": w.b.id, "online": false, "lastseen": seen})
    );
}

#[test]
fn typing_reaches_the_other_side_and_the_other_members_only() {
    let (server, w) = start();
    let mut a = connect(&server, &w.a);
    let mut a2 = connect(&server, &w.a);
    let mut b = connect(&server, &w.b);
    let mut b_plain = connect(&server, &w.b);
    let mut c = connect(&server, &w.c);
    let mut d = connect(&server, &w.d);
    for ws in [&mut a, &mut a2, &mut b, &mut c, &mut d] {
        watch(ws);
    }
    // Everyone is online now: drain what the later connections caused.
    for ws in [&mut a, &mut a2, &mut b, &mut c] {
        while within(ws, Duration::from_millis(300)).is_some() {}
    }
    let sent = Instant::now();
    send(&mut a, json!({"cmd": 12, "dstid": w.b.id}));
    let got = recv(&mut b);
    let latency = sent.elapsed();
    assert_eq!(
        got,
        json!({"cmd": 12, "userid": w.a.id, "dstid": w.b.id, "ttl": 5000})
    );
    assert!(latency < Duration::from_secs(1), "{latency:?}");

    send(&mut a, json!({"cmd": 13, "dstid": w.group}));
    let group = json!({"cmd": 13, "userid": w.a.id, "dstid": w.group, "ttl": 5000});
    assert_eq!(recv(&mut b), group);
    assert_eq!(recv(&mut c), group);
    for (ws, who) in [
        (&mut a2, "the sender's other device"),
        (&mut b_plain, "a connection that does not watch"),
        (&mut d, "a stranger"),
        (&mut a, "the sender"),
    ] {
        assert_eq!(within(ws, Duration::from_millis(300)), None, "{who}");
    }
    // Rights are a message's.
    send(&mut d, json!({"cmd": 12, "dstid": w.a.id, "ref": "t1"}));
    let e = recv(&mut d);
    assert_eq!(
        (&e["cmd"], &e["code"], &e["ref"]),
        (&json!(22), &json!(403), &json!("t1"))
    );
    send(&mut d, json!({"cmd": 13, "dstid": w.group}));
    assert_eq!(recv(&mut d)["code"], 403);
    send(&mut d, json!({"cmd": 13, "dstid": 9999}));
    assert_eq!(recv(&mut d)["code"], 404);
    send(&mut d, json!({"cmd": 12}));
    assert_eq!(recv(&mut d)["code"], 400);
    assert_eq!(within(&mut a, Duration::from_millis(300)), None);
    // Nothing was stored.
    send(&mut b, json!({"cmd": 20, "id": 0}));
    assert_eq!(recv(&mut b)["cmd"], 23, "no messages before the sync's end");
}

#[test]
fn typing_is_forwarded_at_most_once_a_second_per_conversation() {
    let (server, w) = start();
    let mut a = connect(&server, &w.a);
    let mut b = connect(&server, &w.b);
    let mut e = connect(&server, &w.e);
    for ws in [&mut a, &mut b, &mut e] {
        watch(ws);
    }
    for ws in [&mut a, &mut b, &mut e] {
        while within(ws, Duration::from_millis(300)).is_some() {}
    }
    let first = Instant::now();
    for _ in 0..5 {
        send(&mut a, json!({"cmd": 12, "dstid": w.b.id}));
    }
    // Another conversation has its own allowance.
    send(&mut a, json!({"cmd": 12, "dstid": w.e.id}));
    assert_eq!(recv(&mut b)["userid"], w.a.id);
    assert_eq!(recv(&mut e)["userid"], w.a.id);
    assert_eq!(
        within(&mut b, Duration::from_millis(400)),
        None,
        "the excess is dropped, silently"
    );
    assert_eq!(
        within(&mut a, Duration::from_millis(10)),
        None,
        "no error either"
    );
    // A second after the first, the next one goes.
    std::thread::sleep(Duration::from_millis(1050).saturating_sub(first.elapsed()));
    send(&mut a, json!({"cmd": 12, "dstid": w.b.id}));
    assert_eq!(recv(&mut b)["cmd"], 12);
}

#[test]
fn the_web_client_gets_the_command_numbers_from_the_server() {
    let empty = fresh_data_dir();
    std::fs::create_dir_all(&empty).expect("dir");
    for extra in [vec![], vec!["--static-dir", empty.to_str().expect("path")]] {
        let server = Server::start(&extra);
        let mut http = common::Http::new(server.addr);
        let r = http.request("GET", "/commands.js", &[], b"");
        assert_eq!(r.status, 200, "{extra:?}");
        assert_eq!(
            r.header("content-type"),
            Some("text/javascript; charset=utf-8")
        );
        let js = String::from_utf8(r.body.clone()).expect("text");
        for line in [
            "  HEARTBEAT: 0,",
            "  SINGLE: 10,",
            "  GROUP: 11,",
            "  TYPING_SINGLE: 12,",
            "  TYPING_GROUP: 13,",
            "  READ_SINGLE: 14,",
            "  READ_GROUP: 15,",
            "  SYNC: 20,",
            "  ACK: 21,",
            "  ERROR: 22,",
            "  SYNC_DONE: 23,",
            "  PRESENCE: 24,",
            "export const TYPING_TTL_MS = 5000;",
        ] {
            assert!(js.contains(line), "{line} in {js}");
        }
        let etag = r.header("etag").expect("an etag").to_owned();
        let again = http.request("GET", "/commands.js", &[("If-None-Match", &etag)], b"");
        assert_eq!(again.status, 304);
    }
    let _ = std::fs::remove_dir_all(empty);
}

#[test]
fn new_friends_are_told_each_others_presence_at_once() {
    let (server, w) = start();
    let mut d = connect(&server, &w.d);
    assert_eq!(watch(&mut d), Vec::<Value>::new());
    let mut e = connect(&server, &w.e);
    watch(&mut e);
    let mut a = connect(&server, &w.a);
    watch(&mut a);
    // e and a are friends: what their arrivals told each other is not this test's.
    for ws in [&mut a, &mut e] {
        while within(ws, Duration::from_millis(300)).is_some() {}
    }
    w.d.befriend(&server, &w.a);
    // The request (to a, and to d's own socket), then the friendship (cmd 30), then
    // each other's presence.
    let asked = recv(&mut a);
    assert_eq!(
        (&asked["cmd"], &asked["event"]),
        (&json!(30), &json!("friend_request"))
    );
    assert_eq!(recv(&mut d)["event"], "request_sent");
    for (ws, other) in [(&mut a, w.d.id), (&mut d, w.a.id)] {
        let added = recv(ws);
        assert_eq!(added["event"], "friend_added", "{added}");
        assert_eq!(added["user"]["id"], other);
    }
    let of_a = presence(&mut d);
    assert_eq!(
        (of_a.len(), of_a[0]["userid"].as_i64(), &of_a[0]["online"]),
        (1, Some(w.a.id), &json!(true))
    );
    let of_d = presence(&mut a);
    assert_eq!(
        (of_d[0]["userid"].as_i64(), &of_d[0]["online"]),
        (Some(w.d.id), &json!(true))
    );
    assert_eq!(
        within(&mut e, Duration::from_millis(300)),
        None,
        "not e's business"
    );
}

#[test]
fn users_online_at_shutdown_are_stored_as_last_seen() {
    let dir = fresh_data_dir();
    let w = seed(&dir);
    let mut server = Server::start_in(dir.clone(), &[]);
    server.keep_data = true;
    let mut b = connect(&server, &w.b);
    watch(&mut b);
    let before = now_ms();
    assert!(server.terminate().is_some_and(|s| s.success()));
    let db = Db::open(&dir.join("fastim.db")).expect("open");
    let seen = db.all_last_seen().expect("read");
    assert!(
        seen.iter().any(|&(u, t)| u == w.b.id && t >= before),
        "{seen:?}"
    );
    drop(db);
    let _ = std::fs::remove_dir_all(dir);
}
