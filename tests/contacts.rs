//! Friendship by consent, removal and blocks (PROTOCOL.md "Routes", "Contact events"),
//! with `tungstenite` clients against a real server process: every change is checked
//! on the API and live on the sockets of the users concerned (`cmd` 30).

mod common;

use std::path::Path;
use std::time::Duration;

use common::chat::{
    Account, Ws, connect as open, recv, seed_accounts, send, within, within_skipping,
};
use common::{Http, Server, fresh_data_dir, post_as};
use fastim::store::{Db, NewGroup};
use serde_json::{Value, json};

/// Four strangers, mobile numbers 3001 to 3004; a, b and c share group "club".
struct World {
    a: Account,
    b: Account,
    c: Account,
    d: Account,
    group: i64,
}

fn seed(data_dir: &Path) -> World {
    let (mut db, [a, b, c, d]) = seed_accounts(data_dir, ["3001", "3002", "3003", "3004"]);
    let club = NewGroup {
        name: "club".into(),
        icon: String::new(),
        cate: 0,
        memo: String::new(),
    };
    let group = db.create_group(a.id, club, 5, 3).expect("group").id;
    db.join_group(b.id, group, 4).expect("join");
    db.join_group(c.id, group, 4).expect("join");
    World { a, b, c, d, group }
}

fn start(extra: &[&str]) -> (Server, World) {
    let dir = fresh_data_dir();
    let world = seed(&dir);
    (Server::start_in(dir, extra), world)
}

fn post(server: &Server, who: &Account, path: &str, body: &str) -> Value {
    post_as(server.addr, &who.token, path, body)
}

fn get(server: &Server, who: &Account, path: &str) -> Value {
    let bearer = format!("Bearer {}", who.token);
    Http::new(server.addr)
        .request("GET", path, &[("Authorization", &bearer)], b"")
        .json()
}

/// A `/chat` connection that asked for live events (`{"cmd":24}`), as the web client
/// does: contact events go only to those.
fn connect(server: &Server, who: &Account) -> Ws {
    let mut ws = open(server, who);
    send(&mut ws, json!({"cmd": 24}));
    ws
}

/// The next `cmd 30` frame, skipping presence (cmd 24).
fn event(ws: &mut Ws) -> Value {
    let v = within_skipping(ws, Duration::from_secs(5), |v| v["cmd"] == 24)
        .expect("a contact event within 5 s");
    assert_eq!(v["cmd"], 30, "{v}");
    v
}

/// No `cmd 30` frame within a moment (other frames are skipped).
fn no_event(ws: &mut Ws) {
    let got = within_skipping(ws, Duration::from_millis(400), |v| v["cmd"] != 30);
    assert_eq!(got, None);
}

/// Sends a one-to-one text; the server's answer (ack 21 or error 22).
fn say(ws: &mut Ws, to: i64, text: &str, r: &str) -> Value {
    send(
        ws,
        json!({"cmd": 10, "dstid": to, "media": 1, "content": text, "ref": r}),
    );
    within_skipping(ws, Duration::from_secs(5), |v| {
        v["cmd"] != 21 && v["cmd"] != 22
    })
    .expect("an answer")
}

fn friend_ids(server: &Server, who: &Account) -> Vec<i64> {
    let v = get(server, who, "/contact/loadfriend");
    v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["id"].as_i64().expect("id"))
        .collect()
}

#[test]
fn a_request_is_told_live_to_both_devices_and_accepting_befriends_both_sides_live() {
    let (server, w) = start(&[]);
    let mut a = connect(&server, &w.a);
    let mut b1 = connect(&server, &w.b);
    let mut b2 = connect(&server, &w.b);

    // Not friends yet: a may not write to b.
    assert_eq!(say(&mut a, w.b.id, "too soon", "s0")["code"], 403);

    let asked = post(&server, &w.a, "/contact/addfriend", "dstname=3002");
    assert_eq!(
        (&asked["code"], &asked["msg"], &asked["data"]["status"]),
        (&json!(0), &json!("request sent"), &json!("requested")),
        "{asked}"
    );
    assert_eq!(asked["data"]["user"]["id"], w.b.id);
    for ws in [&mut b1, &mut b2] {
        let e = event(ws);
        assert_eq!(e["event"], "friend_request", "{e}");
        assert_eq!(e["user"]["id"], w.a.id);
        assert_eq!(e["user"]["nickname"], "user 3001");
        assert!(e["user"].get("mobile").is_none(), "no mobile number: {e}");
        assert_eq!(e["createat"], asked["data"]["createat"]);
    }
    // The requester's own devices learn of it too, with b as the other one.
    let sent = event(&mut a);
    assert_eq!(
        (&sent["event"], &sent["user"]["id"], &sent["createat"]),
        (
            &json!("request_sent"),
            &json!(w.b.id),
            &asked["data"]["createat"]
        )
    );
    no_event(&mut a);
    assert!(
        friend_ids(&server, &w.b).is_empty(),
        "no friendship before consent"
    );
    assert_eq!(say(&mut a, w.b.id, "still too soon", "s1")["code"], 403);

    // Asking again: the same answer, nobody is told twice.
    let again = post(
        &server,
        &w.a,
        "/contact/addfriend",
        &format!("dstid={}", w.b.id),
    );
    assert_eq!(again["data"]["createat"], asked["data"]["createat"]);
    no_event(&mut b1);

    let listed = get(&server, &w.b, "/contact/requests");
    assert_eq!(listed["data"]["incoming"][0]["user"]["id"], w.a.id);
    assert_eq!(
        get(&server, &w.a, "/contact/requests")["data"]["outgoing"][0]["user"]["id"],
        w.b.id
    );

    let accepted = post(
        &server,
        &w.b,
        "/contact/accept",
        &format!("dstid={}", w.a.id),
    );
    assert_eq!(accepted["msg"], "you are now friends", "{accepted}");
    let e = event(&mut a);
    assert_eq!(
        (&e["event"], &e["user"]["id"]),
        (&json!("friend_added"), &json!(w.b.id))
    );
    for ws in [&mut b1, &mut b2] {
        let e = event(ws);
        assert_eq!(
            (&e["event"], &e["user"]["id"]),
            (&json!("friend_added"), &json!(w.a.id))
        );
    }
    assert_eq!(friend_ids(&server, &w.a), [w.b.id]);
    assert_eq!(friend_ids(&server, &w.b), [w.a.id]);
    assert_eq!(
        get(&server, &w.b, "/contact/requests")["data"],
        json!({"incoming": [], "outgoing": []})
    );

    // Now they talk.
    assert_eq!(say(&mut a, w.b.id, "hello b", "s2")["cmd"], 21);
    let got = within_skipping(&mut b1, Duration::from_secs(5), |v| v["cmd"] != 10).expect("msg");
    assert_eq!(got["content"], "hello b");
}

#[test]
fn a_declined_request_is_told_to_the_requester_who_may_ask_again() {
    let (server, w) = start(&[]);
    let mut c = connect(&server, &w.c);
    let mut d = connect(&server, &w.d);
    let ask = || {
        post(
            &server,
            &w.c,
            "/contact/addfriend",
            &format!("dstid={}", w.d.id),
        )
    };
    ask();
    assert_eq!(event(&mut d)["event"], "friend_request");
    assert_eq!(event(&mut c)["event"], "request_sent");
    let declined = post(
        &server,
        &w.d,
        "/contact/decline",
        &format!("dstid={}", w.c.id),
    );
    assert_eq!(declined, json!({"code": 0, "msg": "request declined"}));
    assert_eq!(
        event(&mut c),
        json!({"cmd": 30, "event": "request_declined", "userid": w.d.id})
    );
    assert_eq!(
        event(&mut d),
        json!({"cmd": 30, "event": "request_declined", "userid": w.c.id}),
        "the decliner's own devices drop it too"
    );
    no_event(&mut d);
    assert!(friend_ids(&server, &w.c).is_empty());
    assert_eq!(ask()["data"]["status"], "requested");
    assert_eq!(event(&mut d)["event"], "friend_request");
    assert_eq!(event(&mut c)["event"], "request_sent");
    // c withdraws it: both are told; d has nothing to accept.
    let withdrawn = post(
        &server,
        &w.c,
        "/contact/cancelrequest",
        &format!("dstid={}", w.d.id),
    );
    assert_eq!(withdrawn, json!({"code": 0, "msg": "request withdrawn"}));
    assert_eq!(
        event(&mut d),
        json!({"cmd": 30, "event": "request_withdrawn", "userid": w.c.id})
    );
    assert_eq!(
        event(&mut c),
        json!({"cmd": 30, "event": "request_withdrawn", "userid": w.d.id})
    );
    assert_eq!(
        post(
            &server,
            &w.d,
            "/contact/accept",
            &format!("dstid={}", w.c.id)
        )["msg"],
        "this user has no friend request waiting for you"
    );
}

#[test]
fn requests_that_meet_make_friends_at_once() {
    let (server, w) = start(&[]);
    let mut c = connect(&server, &w.c);
    let mut d = connect(&server, &w.d);
    post(
        &server,
        &w.c,
        "/contact/addfriend",
        &format!("dstid={}", w.d.id),
    );
    assert_eq!(event(&mut d)["event"], "friend_request");
    assert_eq!(event(&mut c)["event"], "request_sent");
    let met = post(&server, &w.d, "/contact/addfriend", "dstname=3003");
    assert_eq!(met["data"]["status"], "friends", "{met}");
    assert_eq!(met["data"]["user"]["id"], w.c.id);
    let to_c = event(&mut c);
    assert_eq!(
        (&to_c["event"], &to_c["user"]["id"]),
        (&json!("friend_added"), &json!(w.d.id))
    );
    let to_d = event(&mut d);
    assert_eq!(
        (&to_d["event"], &to_d["user"]["id"]),
        (&json!("friend_added"), &json!(w.c.id))
    );
    assert_eq!(friend_ids(&server, &w.c), [w.d.id]);
    assert_eq!(say(&mut d, w.c.id, "hi", "m1")["cmd"], 21);
}

#[test]
fn a_removed_friend_can_no_longer_send() {
    let (server, w) = start(&[]);
    w.a.befriend(&server, &w.d);
    let mut a = connect(&server, &w.a);
    let mut d = connect(&server, &w.d);
    assert_eq!(say(&mut d, w.a.id, "while friends", "r0")["cmd"], 21);
    let removed = post(
        &server,
        &w.a,
        "/contact/removefriend",
        &format!("dstid={}", w.d.id),
    );
    assert_eq!(removed, json!({"code": 0, "msg": "friend removed"}));
    for (ws, other) in [(&mut a, w.d.id), (&mut d, w.a.id)] {
        // a may get d's message first.
        let e = within_skipping(ws, Duration::from_secs(5), |v| v["cmd"] != 30).expect("event");
        assert_eq!(
            e,
            json!({"cmd": 30, "event": "friend_removed", "userid": other})
        );
    }
    let refused = say(&mut d, w.a.id, "after", "r1");
    assert_eq!(
        (&refused["cmd"], &refused["code"], &refused["ref"]),
        (&json!(22), &json!(403), &json!("r1"))
    );
    assert_eq!(refused["msg"], "you can only message your friends");
    assert!(friend_ids(&server, &w.a).is_empty() && friend_ids(&server, &w.d).is_empty());
    assert_eq!(
        post(
            &server,
            &w.d,
            "/contact/removefriend",
            &format!("dstid={}", w.a.id)
        )["msg"],
        "this user is not your friend"
    );
}

#[test]
fn a_blocked_user_cannot_send_request_or_see_presence_but_groups_go_on() {
    let (server, w) = start(&[]);
    w.a.befriend(&server, &w.b);
    let mut a1 = open(&server, &w.a);
    let mut a2 = open(&server, &w.a);
    let mut b = open(&server, &w.b);
    for ws in [&mut a1, &mut a2, &mut b] {
        send(ws, json!({"cmd": 24}));
        assert_eq!(recv(ws)["cmd"], 24);
    }
    let blocked = post(
        &server,
        &w.a,
        "/contact/block",
        &format!("dstid={}", w.b.id),
    );
    assert_eq!(blocked["msg"], "user blocked", "{blocked}");
    // a's devices are told; b learns only that the friendship ended.
    for ws in [&mut a1, &mut a2] {
        let e = event(ws);
        assert_eq!(
            (&e["event"], &e["user"]["id"]),
            (&json!("blocked"), &json!(w.b.id))
        );
    }
    assert_eq!(
        event(&mut b),
        json!({"cmd": 30, "event": "friend_removed", "userid": w.a.id})
    );
    no_event(&mut b);

    // b cannot message a, nor a message b.
    let refused = say(&mut b, w.a.id, "let me in", "x1");
    assert_eq!(
        (&refused["cmd"], &refused["code"]),
        (&json!(22), &json!(403))
    );
    assert_eq!(
        refused["msg"],
        "you cannot message this user: one of you blocked the other"
    );
    assert_eq!(say(&mut a1, w.b.id, "nor you", "x2")["code"], 403);
    // Nor ask again, either way.
    for (who, other) in [(&w.b, w.a.id), (&w.a, w.b.id)] {
        let r = post(
            &server,
            who,
            "/contact/addfriend",
            &format!("dstid={other}"),
        );
        assert_eq!(
            (&r["code"], &r["msg"]),
            (
                &json!(-1),
                &json!("you cannot send a friend request to this user")
            )
        );
    }
    no_event(&mut a1);

    // Presence: a's comings and goings are hidden from b, even through the group.
    let mut c = open(&server, &w.c);
    send(&mut c, json!({"cmd": 24}));
    let _ = within(&mut c, Duration::from_secs(2));
    while within(&mut c, Duration::from_millis(300)).is_some() {}
    while within(&mut b, Duration::from_millis(300)).is_some() {}
    drop(a1);
    drop(a2);
    let to_c = within_skipping(&mut c, Duration::from_secs(5), |v| v["cmd"] != 24).expect("c told");
    assert_eq!(to_c["presence"][0]["userid"], w.a.id);
    assert_eq!(to_c["presence"][0]["online"], false);
    assert_eq!(
        within_skipping(&mut b, Duration::from_millis(1500), |v| v["cmd"] != 24),
        None,
        "b is not told of a"
    );
    let mut a = connect(&server, &w.a);
    let _ = within_skipping(&mut c, Duration::from_secs(5), |v| v["cmd"] != 24).expect("a back");
    send(&mut b, json!({"cmd": 24}));
    let states = within_skipping(&mut b, Duration::from_secs(5), |v| v["cmd"] != 24).expect("b's");
    let seen: Vec<i64> = states["presence"]
        .as_array()
        .expect("list")
        .iter()
        .map(|e| e["userid"].as_i64().expect("id"))
        .collect();
    assert!(
        seen.contains(&w.c.id) && !seen.contains(&w.a.id),
        "{states}"
    );

    // The group is unaffected: b's group message reaches a.
    send(
        &mut b,
        json!({"cmd": 11, "dstid": w.group, "media": 1, "content": "to the club", "ref": "g1"}),
    );
    let got = within_skipping(&mut a, Duration::from_secs(5), |v| v["cmd"] != 11).expect("group");
    assert_eq!(got["content"], "to the club");

    // Listed, then unblocked: still not friends, but b may ask again.
    let list = get(&server, &w.a, "/contact/blocked");
    assert_eq!(
        (
            list["total"].as_i64(),
            list["rows"][0]["user"]["id"].as_i64()
        ),
        (Some(1), Some(w.b.id))
    );
    let lifted = post(
        &server,
        &w.a,
        "/contact/unblock",
        &format!("dstid={}", w.b.id),
    );
    assert_eq!(lifted, json!({"code": 0, "msg": "user unblocked"}));
    assert_eq!(
        event(&mut a),
        json!({"cmd": 30, "event": "unblocked", "userid": w.b.id})
    );
    no_event(&mut b);
    assert_eq!(
        say(&mut b, w.a.id, "hm", "x3")["msg"],
        "you can only message your friends"
    );
    let r = post(
        &server,
        &w.b,
        "/contact/addfriend",
        &format!("dstid={}", w.a.id),
    );
    assert_eq!(r["data"]["status"], "requested", "{r}");
}

#[test]
fn a_block_survives_a_restart() {
    let dir = fresh_data_dir();
    let w = seed(&dir);
    let mut server = Server::start_in(dir.clone(), &[]);
    w.c.befriend(&server, &w.d);
    assert_eq!(
        post(&server, &w.d, "/contact/block", "dstname=3003")["code"],
        0
    );
    server.keep_data = true;
    server.terminate();
    drop(server);
    let server = Server::start_in(dir, &[]);
    let mut c = connect(&server, &w.c);
    assert_eq!(
        say(&mut c, w.d.id, "after the restart", "z1")["msg"],
        "you cannot message this user: one of you blocked the other"
    );
}

#[test]
fn instant_friends_keeps_fastims_behaviour() {
    let (server, w) = start(&["--instant-friends"]);
    let mut d = connect(&server, &w.d);
    let added = post(&server, &w.c, "/contact/addfriend", "dstname=3004&userid=1");
    assert_eq!(added["msg"], "friend added", "{added}");
    assert_eq!(added["data"]["id"], w.d.id);
    assert!(
        added["data"].get("status").is_none(),
        "fastIM's shape: {added}"
    );
    let e = event(&mut d);
    assert_eq!(
        (&e["event"], &e["user"]["id"]),
        (&json!("friend_added"), &json!(w.c.id))
    );
    assert_eq!(friend_ids(&server, &w.d), [w.c.id]);
    assert_eq!(say(&mut d, w.c.id, "at once", "i1")["cmd"], 21);
    assert_eq!(
        post(&server, &w.c, "/contact/addfriend", "dstname=3004")["msg"],
        "you are already friends"
    );
}

/// fastIM's own client never sends `{"cmd":24}` and takes every frame it gets for a
/// chat message: it gets no contact events, only its messages.
#[test]
fn a_client_that_never_asks_for_live_events_gets_no_contact_events() {
    let (server, w) = start(&["--instant-friends"]);
    let mut old = open(&server, &w.d);
    let mut web = connect(&server, &w.d);
    post(&server, &w.c, "/contact/addfriend", "dstname=3004");
    assert_eq!(event(&mut web)["event"], "friend_added");
    let mut c = open(&server, &w.c);
    assert_eq!(say(&mut c, w.d.id, "hello", "h1")["cmd"], 21);
    let first = within(&mut old, Duration::from_secs(5)).expect("the message");
    assert_eq!(
        (first["cmd"].as_i64(), first["content"].as_str()),
        (Some(10), Some("hello"))
    );
    assert_eq!(within(&mut old, Duration::from_millis(400)), None);
}

#[test]
fn bad_input_gets_the_right_status_and_envelope() {
    let (server, w) = start(&[]);
    let cases: &[(&str, String, &str)] = &[
        (
            "/contact/addfriend",
            String::new(),
            "dstid (a user id) or dstname (a mobile number) is required",
        ),
        (
            "/contact/addfriend",
            "dstname=99999".into(),
            "no user has this mobile number",
        ),
        ("/contact/addfriend", "dstid=99999".into(), "no such user"),
        (
            "/contact/addfriend",
            format!("dstid={}", w.a.id),
            "you cannot add yourself as a friend",
        ),
        (
            "/contact/addfriend",
            "dstname=3001".into(),
            "you cannot add yourself as a friend",
        ),
        ("/contact/accept", String::new(), "dstid is required"),
        ("/contact/accept", "dstid=99999".into(), "no such user"),
        (
            "/contact/accept",
            format!("dstid={}", w.b.id),
            "this user has no friend request waiting for you",
        ),
        (
            "/contact/decline",
            format!("dstid={}", w.b.id),
            "this user has no friend request waiting for you",
        ),
        (
            "/contact/removefriend",
            format!("dstid={}", w.b.id),
            "this user is not your friend",
        ),
        (
            "/contact/block",
            format!("dstid={}", w.a.id),
            "you cannot block yourself",
        ),
        ("/contact/block", "dstid=99999".into(), "no such user"),
        (
            "/contact/unblock",
            format!("dstid={}", w.b.id),
            "this user is not blocked",
        ),
    ];
    for (path, body, msg) in cases {
        let r = post(&server, &w.a, path, body);
        assert_eq!(r, json!({"code": -1, "msg": msg}), "{path} {body}");
    }
    let bad = post(&server, &w.a, "/contact/accept", "dstid=x");
    assert_eq!(bad["msg"], "dstid must be an integer");
    // No session: 401; a GET on a changing route: 405.
    let r = Http::new(server.addr).form("/contact/requests", "");
    assert_eq!((r.status, r.json()["code"].as_i64()), (401, Some(401)));
    let bearer = format!("Bearer {}", w.a.token);
    let r = Http::new(server.addr).request(
        "GET",
        "/contact/accept",
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
}

#[test]
fn over_the_pending_cap_is_refused_with_429() {
    let dir = fresh_data_dir();
    std::fs::create_dir_all(&dir).expect("dir");
    let (me, others) = {
        let mut db = Db::open(&dir.join("fastim.db")).expect("db");
        let (id, token) = common::seed_account(&mut db, "4000");
        let others: Vec<i64> = (0..=fastim::api::MAX_PENDING_REQUESTS)
            .map(|i| common::seed_account(&mut db, &format!("41{i:04}")).0)
            .collect();
        (Account { id, token }, others)
    };
    let server = Server::start_in(dir, &[]);
    let mut http = Http::new(server.addr);
    let bearer = format!("Bearer {}", me.token);
    let mut ask = |to: i64| {
        http.request(
            "POST",
            "/contact/addfriend",
            &[
                ("Authorization", &bearer),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            format!("dstid={to}").as_bytes(),
        )
    };
    for &to in &others[..fastim::api::MAX_PENDING_REQUESTS] {
        let r = ask(to);
        assert_eq!(r.json()["data"]["status"], "requested");
    }
    let r = ask(*others.last().expect("one more"));
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["code"], 429);
    assert_eq!(
        r.json()["msg"],
        "you have 100 friend requests waiting for an answer; wait for some to be answered"
    );
    // An answer frees room.
    let first = others[0];
    let tok = {
        let mut db = Db::open(&server.data_dir.join("fastim.db")).expect("db");
        let token = fastim::secret::new_token();
        db.create_session(first, fastim::secret::token_digest(&token), i64::MAX / 2)
            .expect("session");
        token
    };
    assert_eq!(
        post_as(
            server.addr,
            &tok,
            "/contact/decline",
            &format!("dstid={}", me.id)
        )["code"],
        0
    );
    let r = ask(*others.last().expect("one more"));
    assert_eq!(r.json()["data"]["status"], "requested", "{:?}", r.json());
}

/// A profile change reaches the people who may see it, live: friends, fellow group
/// members and the user's own other devices; nobody else.
#[test]
fn a_profile_change_is_told_to_friends_fellow_members_and_own_devices() {
    let (server, w) = start(&[]);
    w.a.befriend(&server, &w.d);
    let mut a = connect(&server, &w.a);
    let mut b2 = connect(&server, &w.b);
    let mut c = connect(&server, &w.c);
    let mut d = connect(&server, &w.d);
    // What the connections told each other on arrival is not this test's.
    for ws in [&mut a, &mut b2, &mut c, &mut d] {
        while within(ws, Duration::from_millis(300)).is_some() {}
    }
    let changed = post(
        &server,
        &w.b,
        "/user/update",
        "nickname=Bea&memo=new%20here",
    );
    assert_eq!(changed["code"], 0, "{changed}");
    for ws in [&mut a, &mut c, &mut b2] {
        let e = event(ws);
        assert_eq!(
            (
                &e["event"],
                &e["user"]["id"],
                &e["user"]["nickname"],
                &e["user"]["memo"]
            ),
            (
                &json!("profile_updated"),
                &json!(w.b.id),
                &json!("Bea"),
                &json!("new here")
            ),
            "{e}"
        );
        assert!(e["user"].get("mobile").is_none(), "a public profile: {e}");
    }
    no_event(&mut d);
    // d's friend a is told of d's change; b and c (no tie to d) are not.
    assert_eq!(
        post(&server, &w.d, "/user/update", "nickname=Dee")["code"],
        0
    );
    let e = event(&mut a);
    assert_eq!(
        (&e["event"], &e["user"]["nickname"]),
        (&json!("profile_updated"), &json!("Dee"))
    );
    no_event(&mut c);
    no_event(&mut b2);
}
