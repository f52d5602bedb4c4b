//! Read markers (`cmd` 14 and 15) and `/contact/conversations` (PROTOCOL.md, "Read
//! markers"), with `tungstenite` clients against a real server process and a real
//! SQLite file. Accounts, friendships and groups are seeded before the server starts.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::chat::{Account, Ws, connect, seed_accounts, send, within_skipping};
use common::{Http, Server, fresh_data_dir};
use fastim::store::{Db, Message as Stored, NewGroup, Peer};
use serde_json::{Value, json};
use tungstenite::Message;

/// a is friends with b and c; group "crew" has a, b and c; d is a stranger.
struct World {
    a: Account,
    b: Account,
    c: Account,
    d: Account,
    group: i64,
}

fn seed(data_dir: &Path) -> World {
    let (mut db, [a, b, c, d]) = seed_accounts(data_dir, ["3001", "3002", "3003", "3004"]);
    db.add_friend(a.id, b.id, 2).expect("friends");
    db.add_friend(a.id, c.id, 3).expect("friends");
    let group = NewGroup {
        name: "crew".into(),
        ..NewGroup::default()
    };
    let group = db.create_group(a.id, group, 5, 4).expect("group").id;
    db.join_group(b.id, group, 4).expect("join");
    db.join_group(c.id, group, 4).expect("join");
    World { a, b, c, d, group }
}

fn start() -> (Server, World) {
    let dir = fresh_data_dir();
    let world = seed(&dir);
    (Server::start_in(dir, &[]), world)
}

/// A connection that asked for live events (`cmd` 24), its presence answer read.
fn watching(server: &Server, who: &Account) -> Ws {
    let mut ws = connect(server, who);
    send(&mut ws, json!({"cmd": 24}));
    loop {
        match ws.read().expect("the presence answer") {
            Message::Text(t) if t.as_str().starts_with(r#"{"cmd":24"#) => return ws,
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The next JSON text frame that is not presence (pings, pongs and `cmd` 24 skipped).
fn recv(ws: &mut Ws) -> Value {
    within(ws, Duration::from_secs(10)).expect("a frame within 10 s")
}

/// The next frame within `wait` that is not presence, if any.
fn within(ws: &mut Ws, wait: Duration) -> Option<Value> {
    within_skipping(ws, wait, |v| v["cmd"] == 24 && v.get("presence").is_some())
}

/// Sends a text message and returns its id once acknowledged.
fn say(ws: &mut Ws, cmd: i64, to: i64, content: &str) -> i64 {
    let r: String = format!("r-{content}").chars().take(20).collect();
    send(
        ws,
        json!({"cmd": cmd, "dstid": to, "media": 1, "content": content, "ref": r}),
    );
    // Deliveries to this connection may come first.
    let ack = loop {
        let v = recv(ws);
        if v["ref"] == r {
            break v;
        }
    };
    assert_eq!(ack["cmd"], 21, "{ack}");
    ack["id"].as_i64().expect("id")
}

/// `GET /contact/conversations` as `who`: the rows.
fn conversations(server: &Server, who: &Account) -> Vec<Value> {
    let mut http = Http::new(server.addr);
    let auth = format!("Bearer {}", who.token);
    let r = http.request(
        "GET",
        "/contact/conversations",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["code"], 0, "{v}");
    v["rows"].as_array().expect("rows").clone()
}

/// The row of one conversation.
fn row(rows: &[Value], cmd: i64, dstid: i64) -> Value {
    rows.iter()
        .find(|r| r["cmd"] == cmd && r["dstid"] == dstid)
        .cloned()
        .unwrap_or_else(|| panic!("no {cmd}/{dstid} in {rows:?}"))
}

#[test]
fn a_read_clears_unread_on_every_device_and_the_sender_sees_it() {
    let (server, w) = start();
    let mut a1 = watching(&server, &w.a);
    let mut a2 = watching(&server, &w.a);
    let mut b = watching(&server, &w.b);
    let ids: Vec<i64> = ["one", "two", "three"]
        .iter()
        .map(|t| say(&mut b, 10, w.a.id, t))
        .collect();
    for ws in [&mut a1, &mut a2] {
        for id in &ids {
            assert_eq!(recv(ws)["id"], *id);
        }
    }
    let mut http = Http::new(server.addr);
    let auth = format!("Bearer {}", w.a.token);
    let friends = http.request(
        "GET",
        "/contact/loadfriend",
        &[("Authorization", &auth)],
        b"",
    );
    let unread: Vec<(i64, i64)> = friends.json()["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|f| {
            (
                f["id"].as_i64().unwrap_or(0),
                f["unread"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        unread,
        [(w.b.id, 3), (w.c.id, 0)],
        "loadfriend has the counts too"
    );
    let before = row(&conversations(&server, &w.a), 10, w.b.id);
    assert_eq!(
        (&before["unread"], &before["preview"], &before["lastid"]),
        (&json!(3), &json!("three"), &json!(ids[2]))
    );

    send(&mut a1, json!({"cmd": 14, "dstid": w.b.id, "id": ids[1]}));
    let told = json!({"cmd": 14, "userid": w.a.id, "dstid": w.b.id, "id": ids[1]});
    assert_eq!(recv(&mut a2), told, "the other device");
    assert_eq!(recv(&mut a1), told, "the reading device, as stored");
    assert_eq!(recv(&mut b), told, "the sender: seen up to ids[1]");
    let after = row(&conversations(&server, &w.a), 10, w.b.id);
    assert_eq!(
        (&after["unread"], &after["read"]),
        (&json!(1), &json!(ids[1]))
    );

    // Within the second: coalesced. Backwards moves nothing, so nothing is told;
    // then an id far beyond the latest is stored as the latest when the second ends.
    send(&mut a1, json!({"cmd": 14, "dstid": w.b.id, "id": ids[0]}));
    send(
        &mut a1,
        json!({"cmd": 14, "dstid": w.b.id, "id": 9_007_199_254_740_991_i64}),
    );
    let started = Instant::now();
    let clamped = json!({"cmd": 14, "userid": w.a.id, "dstid": w.b.id, "id": ids[2]});
    assert_eq!(recv(&mut a2), clamped);
    let waited = started.elapsed();
    assert!(
        waited > Duration::from_millis(300) && waited < Duration::from_secs(3),
        "coalesced to the end of the second: {waited:?}"
    );
    assert_eq!(recv(&mut b), clamped);
    assert_eq!(recv(&mut a1), clamped);
    let a_row = row(&conversations(&server, &w.a), 10, w.b.id);
    assert_eq!(
        (&a_row["unread"], &a_row["read"]),
        (&json!(0), &json!(ids[2]))
    );
    let b_row = row(&conversations(&server, &w.b), 10, w.a.id);
    assert_eq!(
        (&b_row["seen"], &b_row["unread"]),
        (&json!(ids[2]), &json!(0)),
        "b sees how far a has read; b's own messages are not unread"
    );

    // Marking again what is already read tells nobody.
    thread_sleep(Duration::from_millis(1100));
    send(&mut a1, json!({"cmd": 14, "dstid": w.b.id, "id": ids[2]}));
    assert_eq!(within(&mut a2, Duration::from_millis(700)), None);
    assert_eq!(within(&mut b, Duration::from_millis(100)), None);
}

fn thread_sleep(d: Duration) {
    std::thread::sleep(d);
}

#[test]
fn strangers_and_non_members_cannot_mark_or_learn_anything() {
    let (server, w) = start();
    let mut a = watching(&server, &w.a);
    let mut b = watching(&server, &w.b);
    let id = say(&mut b, 10, w.a.id, "hello");
    assert_eq!(recv(&mut a)["id"], id);
    let mut d = watching(&server, &w.d);
    let cases = [
        (
            json!({"cmd": 14, "dstid": w.a.id, "id": id, "ref": "x"}),
            403,
        ),
        (
            json!({"cmd": 15, "dstid": w.group, "id": id, "ref": "x"}),
            403,
        ),
        (
            json!({"cmd": 15, "dstid": 999_999, "id": id, "ref": "x"}),
            404,
        ),
        (json!({"cmd": 14, "dstid": 0, "id": id, "ref": "x"}), 400),
        (json!({"cmd": 14, "dstid": "me", "id": id, "ref": "x"}), 400),
        (json!({"cmd": 14, "dstid": w.a.id, "ref": "x"}), 400),
        (
            json!({"cmd": 14, "dstid": w.a.id, "id": -1, "ref": "x"}),
            400,
        ),
        (
            json!({"cmd": 14, "dstid": w.a.id, "id": 1e30, "ref": "x"}),
            400,
        ),
    ];
    for (frame, code) in cases {
        send(&mut d, frame.clone());
        let e = recv(&mut d);
        assert_eq!(
            (&e["cmd"], &e["code"]),
            (&json!(22), &json!(code)),
            "{frame}: {e}"
        );
        if code != 400 {
            assert_eq!(e["ref"], "x", "{e}");
        }
    }
    let e = {
        send(&mut d, json!({"cmd": 14, "dstid": w.a.id, "id": 0}));
        recv(&mut d)
    };
    assert_eq!(e["msg"], "id must be a positive message id", "{e}");
    assert_eq!(
        within(&mut a, Duration::from_millis(1500)),
        None,
        "a hears nothing"
    );
    assert_eq!(
        within(&mut b, Duration::from_millis(100)),
        None,
        "b hears nothing"
    );
    assert_eq!(conversations(&server, &w.d), Vec::<Value>::new());
    let still = row(&conversations(&server, &w.b), 10, w.a.id);
    assert_eq!(still["seen"], 0, "nobody read b's message");
    // The connection is still open and well.
    send(&mut d, json!({"cmd": 0}));
    assert_eq!(recv(&mut d), json!({"cmd": 0}));
}

#[test]
fn group_reads_reach_the_members_and_the_member_list_counts_them() {
    let (server, w) = start();
    let mut a = watching(&server, &w.a);
    let mut b = watching(&server, &w.b);
    let mut c = watching(&server, &w.c);
    let first = say(&mut c, 11, w.group, "first");
    let second = say(&mut c, 11, w.group, "second");
    for ws in [&mut a, &mut b] {
        assert_eq!(recv(ws)["id"], first);
        assert_eq!(recv(ws)["id"], second);
    }
    assert_eq!(row(&conversations(&server, &w.a), 11, w.group)["unread"], 2);
    assert_eq!(
        row(&conversations(&server, &w.c), 11, w.group)["unread"],
        0,
        "own messages"
    );
    send(&mut b, json!({"cmd": 15, "dstid": w.group, "id": second}));
    let told = json!({"cmd": 15, "userid": w.b.id, "dstid": w.group, "id": second});
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(recv(ws), told);
    }
    let mut http = Http::new(server.addr);
    let auth = format!("Bearer {}", w.c.token);
    let members = http
        .request(
            "GET",
            &format!("/contact/members?dstid={}", w.group),
            &[("Authorization", &auth)],
            b"",
        )
        .json();
    let read: Vec<(i64, i64)> = members["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|m| {
            (
                m["id"].as_i64().expect("id"),
                m["read"].as_i64().expect("read"),
            )
        })
        .collect();
    assert_eq!(read, [(w.a.id, 0), (w.b.id, second), (w.c.id, 0)]);
    assert_eq!(row(&conversations(&server, &w.b), 11, w.group)["unread"], 0);
    let auth = format!("Bearer {}", w.a.token);
    let groups = http.request(
        "GET",
        "/contact/loadcommunity",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(
        groups.json()["rows"][0]["unread"],
        2,
        "loadcommunity has the counts too"
    );
    assert_eq!(row(&conversations(&server, &w.a), 11, w.group)["unread"], 2);
}

#[test]
fn markers_only_move_forward_and_survive_a_restart() {
    let dir = fresh_data_dir();
    let w = seed(&dir);
    let mut server = Server::start_in(dir.clone(), &[]);
    let (one, two, three) = {
        let mut a = watching(&server, &w.a);
        let mut b = watching(&server, &w.b);
        let one = say(&mut b, 10, w.a.id, "one");
        let two = say(&mut b, 10, w.a.id, "two");
        let three = say(&mut b, 10, w.a.id, "three");
        send(&mut a, json!({"cmd": 14, "dstid": w.b.id, "id": two}));
        loop {
            if recv(&mut a)["cmd"] == 14 {
                break;
            }
        }
        // Within the second: coalesced, and stored when the connection closes.
        send(&mut a, json!({"cmd": 14, "dstid": w.b.id, "id": three}));
        let _ = a.close(None);
        let seen = json!({"cmd": 14, "userid": w.a.id, "dstid": w.b.id, "id": three});
        assert_eq!(recv(&mut b)["id"], two, "b was told of the first");
        assert_eq!(recv(&mut b), seen, "and of the second once it is stored");
        (one, two, three)
    };
    server.keep_data = true;
    assert!(server.terminate().is_some_and(|s| s.success()));
    drop(server);
    let server = Server::start_in(dir, &[]);
    let r = row(&conversations(&server, &w.a), 10, w.b.id);
    assert_eq!((&r["read"], &r["unread"]), (&json!(three), &json!(0)));
    let mut a = watching(&server, &w.a);
    for back in [one, two] {
        send(&mut a, json!({"cmd": 14, "dstid": w.b.id, "id": back}));
    }
    assert_eq!(
        within(&mut a, Duration::from_millis(1500)),
        None,
        "not backwards"
    );
    assert_eq!(
        row(&conversations(&server, &w.a), 10, w.b.id)["read"],
        three
    );
}

#[test]
fn conversations_are_ordered_by_activity_with_previews_and_unread_counts() {
    let (server, w) = start();
    let mut a = connect(&server, &w.a);
    let mut b = connect(&server, &w.b);
    let mut c = connect(&server, &w.c);
    let rows = conversations(&server, &w.a);
    let order = |rows: &[Value]| -> Vec<(i64, i64)> {
        rows.iter()
            .map(|r| {
                (
                    r["cmd"].as_i64().unwrap_or(0),
                    r["dstid"].as_i64().unwrap_or(0),
                )
            })
            .collect()
    };
    assert_eq!(
        order(&rows),
        [(11, w.group), (10, w.c.id), (10, w.b.id)],
        "no messages yet: the newest friendship or membership first"
    );
    assert_eq!(rows[0]["lastid"], 0);
    let long = "x".repeat(150);
    say(&mut b, 10, w.a.id, &long);
    say(&mut c, 11, w.group, "group news");
    send(
        &mut c,
        json!({"cmd": 10, "dstid": w.a.id, "media": 4, "url": "/resource/x.png", "ref": "pic"}),
    );
    assert_eq!(recv(&mut c)["cmd"], 21);
    let rows = conversations(&server, &w.a);
    assert_eq!(order(&rows), [(10, w.c.id), (11, w.group), (10, w.b.id)]);
    assert_eq!(
        (&rows[0]["preview"], &rows[0]["media"], &rows[0]["unread"]),
        (&json!("[picture]"), &json!(4), &json!(1))
    );
    assert_eq!(rows[1]["preview"], "group news");
    assert_eq!(rows[1]["userid"], w.c.id);
    assert_eq!(rows[2]["preview"], format!("{}…", "x".repeat(100)));
    for key in [
        "cmd", "dstid", "name", "avatar", "lastid", "userid", "media", "preview", "createat",
        "unread", "read",
    ] {
        assert!(rows.iter().all(|r| r.get(key).is_some()), "{key}: {rows:?}");
    }
    assert_eq!(rows[1]["name"], "crew");
    assert!(
        rows[1].get("seen").is_none(),
        "groups have no one-to-one seen"
    );
    // A new message moves its conversation to the top; one of a's own is not unread.
    say(&mut a, 10, w.b.id, "reply");
    let rows = conversations(&server, &w.a);
    assert_eq!(order(&rows)[0], (10, w.b.id));
    assert_eq!(
        (&rows[0]["preview"], &rows[0]["unread"]),
        (&json!("reply"), &json!(1))
    );
    // POST works as well, as on every read-only route.
    let mut http = Http::new(server.addr);
    let auth = format!("Bearer {}", w.a.token);
    let r = http.request(
        "POST",
        "/contact/conversations",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.json()["total"], 3);
    let r = Http::new(server.addr).request("GET", "/contact/conversations", &[], b"");
    assert_eq!(r.status, 401);
}

/// 1,000 conversations, each with a message: the route's time (the figure for
/// BENCHMARKS.md), and the per-connection bound on conversations marked per second.
#[test]
fn a_thousand_conversations_and_the_marking_bound() {
    let dir = fresh_data_dir();
    std::fs::create_dir_all(&dir).expect("data dir");
    let (me, friends) = {
        let mut db = Db::open(&dir.join("fastim.db")).expect("open db");
        let (id, token) = common::seed_account(&mut db, "4000");
        let mut friends = Vec::new();
        let mut messages = Vec::new();
        for i in 0..1_000 {
            let (friend, _) = common::seed_account(&mut db, &format!("5{i:04}"));
            db.add_friend(id, friend, 10 + i).expect("friends");
            messages.push(Stored {
                content: format!("message {i}"),
                ..Stored::new(friend, Peer::User(id))
            });
            friends.push(friend);
        }
        db.save_messages(&messages, 100).expect("messages");
        (Account { id, token }, friends)
    };
    let server = Server::start_in(dir, &[]);
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let rows = conversations(&server, &me);
        times.push(started.elapsed());
        assert_eq!(rows.len(), 1_000);
        assert!(rows.iter().all(|r| r["unread"] == 1));
    }
    times.sort();
    eprintln!(
        "/contact/conversations with 1,000 conversations: median {:?} (min {:?}, max {:?})",
        times[2], times[0], times[4]
    );
    assert!(times[2] < Duration::from_secs(2), "{times:?}");

    let mut ws = watching(&server, &me);
    for friend in &friends[..32] {
        send(&mut ws, json!({"cmd": 14, "dstid": friend, "id": 1}));
    }
    send(
        &mut ws,
        json!({"cmd": 14, "dstid": friends[32], "id": 1, "ref": "33"}),
    );
    let mut told = 0;
    let refused = loop {
        let v = recv(&mut ws);
        if v["cmd"] == 22 {
            break v;
        }
        told += 1;
    };
    assert_eq!(
        (&refused["code"], &refused["ref"]),
        (&json!(429), &json!("33"))
    );
    assert!(told <= 32);
}
