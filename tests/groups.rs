//! Group management (PROTOCOL.md "Routes", "Group notices", "Contact events"): the
//! owner's routes, the notices they leave in the conversation (live, in history and in
//! sync), and the group events on the socket, with `tungstenite` clients against a real
//! server process and a real SQLite file.

mod common;

use std::time::Duration;

use common::chat::{Account, Ws, connect as open, recv, seed_accounts, send, within};
use common::{Http, Server, fresh_data_dir};
use fastim::store::{NOTICE, NewGroup};
use serde_json::{Value, json};

/// Group "crew" owned by a, with members b, c and d (joined in that order); e is not a
/// member.
struct World {
    a: Account,
    b: Account,
    c: Account,
    d: Account,
    e: Account,
    group: i64,
}

fn start() -> (Server, World) {
    let dir = fresh_data_dir();
    let (mut db, [a, b, c, d, e]) = seed_accounts(&dir, ["3001", "3002", "3003", "3004", "3005"]);
    let group = NewGroup {
        name: "crew".into(),
        ..NewGroup::default()
    };
    let group = db.create_group(a.id, group, 5, 3).expect("group").id;
    for (m, at) in [(&b, 4), (&c, 5), (&d, 6)] {
        db.join_group(m.id, group, at).expect("join");
    }
    drop(db);
    let world = World {
        a,
        b,
        c,
        d,
        e,
        group,
    };
    (Server::start_in(dir, &[]), world)
}

/// POSTs JSON `body` to `path` as `who`; the status and the envelope.
fn api(server: &Server, who: &Account, path: &str, body: Value) -> (u16, Value) {
    let auth = format!("Bearer {}", who.token);
    let r = Http::new(server.addr).request(
        "POST",
        path,
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &auth),
        ],
        body.to_string().as_bytes(),
    );
    (r.status, r.json())
}

/// A `/chat` connection that asked for live events (`{"cmd":24}`), as the web client
/// does: group events (`cmd` 30) go only to those.
fn connect(server: &Server, who: &Account) -> Ws {
    let mut ws = open(server, who);
    send(&mut ws, json!({"cmd": 24}));
    ws
}

/// The next frame that is not presence (cmd 24) or a read marker.
fn next(ws: &mut Ws) -> Value {
    loop {
        let v = recv(ws);
        if v["cmd"] != 24 && v["cmd"] != 15 {
            return v;
        }
    }
}

/// The next frame, which must be a group notice; its content parsed.
fn notice(ws: &mut Ws, group: i64) -> (Value, Value) {
    let v = next(ws);
    assert_eq!(
        (v["cmd"].as_i64(), v["media"].as_i64()),
        (Some(11), Some(NOTICE)),
        "{v}"
    );
    assert_eq!(v["dstid"], group, "{v}");
    let content: Value =
        serde_json::from_str(v["content"].as_str().expect("content")).expect("json");
    (v, content)
}

/// The next frame, which must be a `cmd 30` event named `name`.
fn event(ws: &mut Ws, name: &str) -> Value {
    let v = next(ws);
    assert_eq!(
        (v["cmd"].as_i64(), v["event"].as_str()),
        (Some(30), Some(name)),
        "{v}"
    );
    v
}

/// Nothing more arrives (but presence) within half a second.
fn quiet(ws: &mut Ws) {
    let got = within(ws, Duration::from_millis(500));
    assert!(
        got.as_ref().is_none_or(|v| v["cmd"] == 24),
        "unexpected {got:?}"
    );
}

/// Every message a sync from 0 gives `ws`'s user (batched).
fn sync(ws: &mut Ws) -> Vec<Value> {
    send(ws, json!({"cmd": 20, "id": 0, "batch": true}));
    let v = next(ws);
    assert_eq!(v["cmd"], 25, "{v}");
    v["messages"].as_array().expect("list").clone()
}

fn notices_of(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m["media"] == NOTICE)
        .map(|m| {
            let c: Value = serde_json::from_str(m["content"].as_str().expect("s")).expect("json");
            c["notice"].as_str().expect("kind").to_owned()
        })
        .collect()
}

#[test]
fn owner_renames_and_changes_the_icon_members_see_it_live_and_in_history() {
    let (server, w) = start();
    let mut b = connect(&server, &w.b);
    let mut c = connect(&server, &w.c);

    // A member may not.
    let (status, v) = api(
        &server,
        &w.b,
        "/contact/updatecommunity",
        json!({"dstid": w.group, "name": "mine"}),
    );
    assert_eq!(
        (status, v["code"].as_i64(), v["msg"].as_str()),
        (
            403,
            Some(403),
            Some("only the group's owner may change the group")
        )
    );
    // Nor a stranger.
    let (status, v) = api(
        &server,
        &w.e,
        "/contact/updatecommunity",
        json!({"dstid": w.group, "name": "mine"}),
    );
    assert_eq!(
        (status, v["msg"].as_str()),
        (403, Some("you are not a member of this group"))
    );

    let (status, v) = api(
        &server,
        &w.a,
        "/contact/updatecommunity",
        json!({"dstid": w.group, "name": "  Crew 2 ", "icon": "/resource/new.png", "memo": "hi"}),
    );
    assert_eq!((status, v["code"].as_i64()), (200, Some(0)), "{v}");
    assert_eq!(v["data"]["name"], "Crew 2");
    assert_eq!(v["data"]["icon"], "/resource/new.png");
    assert_eq!(v["data"]["memo"], "hi");

    for ws in [&mut b, &mut c] {
        let (m, n) = notice(ws, w.group);
        assert_eq!(m["userid"], w.a.id);
        assert_eq!(
            n,
            json!({"notice": "renamed", "name": "Crew 2", "old": "crew", "by": w.a.id, "bynickname": "user 3001"})
        );
        let (_, n) = notice(ws, w.group);
        assert_eq!(n["notice"], "icon");
        assert_eq!(n["icon"], "/resource/new.png");
        let e = event(ws, "group_updated");
        assert_eq!(e["group"]["id"], w.group);
        assert_eq!(e["group"]["name"], "Crew 2");
        assert_eq!(e["group"]["ownerid"], w.a.id);
    }

    // History has them, newest first; the group list has the new name.
    let r = Http::new(server.addr).request(
        "GET",
        &format!("/message/history?dstid={}&cmd=11", w.group),
        &[("Authorization", &format!("Bearer {}", w.c.token))],
        b"",
    );
    let rows = r.json()["rows"].as_array().expect("rows").clone();
    assert_eq!(notices_of(&rows), ["icon", "renamed"]);
    let (_, v) = api(&server, &w.c, "/contact/loadcommunity", json!({}));
    assert_eq!(v["rows"][0]["name"], "Crew 2");
    // The conversation list previews the notice as a sentence.
    let (_, v) = api(&server, &w.c, "/contact/conversations", json!({}));
    let row = v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["cmd"] == 11)
        .expect("group row")
        .clone();
    assert_eq!(row["preview"], "user 3001 changed the group icon");
}

#[test]
fn bad_input_gets_clear_statuses() {
    let (server, w) = start();
    let other = api(
        &server,
        &w.e,
        "/contact/createcommunity",
        json!({"name": "taken"}),
    );
    assert_eq!(other.1["code"], 0);
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "/contact/updatecommunity",
            json!({"name": "x"}),
            400,
            "dstid is required",
        ),
        (
            "/contact/updatecommunity",
            json!({"dstid": "seven", "name": "x"}),
            400,
            "dstid must be an integer",
        ),
        (
            "/contact/updatecommunity",
            json!({"dstid": w.group}),
            400,
            "nothing to change: give name, icon or memo",
        ),
        (
            "/contact/updatecommunity",
            json!({"dstid": w.group, "name": "   "}),
            400,
            "",
        ),
        (
            "/contact/updatecommunity",
            json!({"dstid": w.group, "name": "x".repeat(31)}),
            400,
            "",
        ),
        (
            "/contact/updatecommunity",
            json!({"dstid": w.group, "memo": "m".repeat(121)}),
            400,
            "",
        ),
        (
            "/contact/updatecommunity",
            json!({"dstid": w.group, "icon": "i".repeat(251)}),
            400,
            "",
        ),
        (
            "/contact/updatecommunity",
            json!({"dstid": w.group, "name": "taken"}),
            409,
            "a group with this name already exists; choose another name",
        ),
        (
            "/contact/updatecommunity",
            json!({"dstid": 9999, "name": "x"}),
            404,
            "no such group",
        ),
        (
            "/contact/removemember",
            json!({"dstid": w.group}),
            400,
            "memberid is required",
        ),
        (
            "/contact/removemember",
            json!({"dstid": w.group, "memberid": w.a.id}),
            400,
            "you cannot remove yourself; leave the group instead",
        ),
        (
            "/contact/removemember",
            json!({"dstid": w.group, "memberid": w.e.id}),
            404,
            "this user is not a member of the group",
        ),
        (
            "/contact/removemember",
            json!({"dstid": w.group, "memberid": 9999}),
            404,
            "this user is not a member of the group",
        ),
        (
            "/contact/removemember",
            json!({"dstid": 9999, "memberid": w.b.id}),
            404,
            "no such group",
        ),
        (
            "/contact/transfercommunity",
            json!({"dstid": w.group, "memberid": w.a.id}),
            400,
            "you own this group already",
        ),
        (
            "/contact/transfercommunity",
            json!({"dstid": w.group, "memberid": w.e.id}),
            404,
            "this user is not a member of the group",
        ),
    ];
    for (path, body, want, msg) in cases {
        let (status, v) = api(&server, &w.a, path, body.clone());
        assert_eq!(status, want, "{path} {body}: {v}");
        assert_eq!(v["code"].as_i64(), Some(i64::from(want)), "{v}");
        if !msg.is_empty() {
            assert_eq!(v["msg"], msg, "{path} {body}");
        } else {
            assert!(!v["msg"].as_str().unwrap_or("").is_empty(), "{v}");
        }
    }
    // No session: 401 before anything else.
    let r = Http::new(server.addr).form("/contact/removemember", "dstid=1&memberid=2");
    assert_eq!(r.status, 401);
    // Nothing changed.
    let (_, v) = api(&server, &w.a, "/contact/members", json!({"dstid": w.group}));
    assert_eq!(v["total"], 4);
    let (_, v) = api(&server, &w.a, "/contact/loadcommunity", json!({}));
    assert_eq!(v["rows"][0]["name"], "crew");
}

#[test]
fn a_removed_member_gets_its_notice_then_nothing_and_cannot_send() {
    let (server, w) = start();
    let mut b = connect(&server, &w.b);
    let mut c = connect(&server, &w.c);
    let mut c2 = connect(&server, &w.c); // a second device

    let (status, v) = api(
        &server,
        &w.b,
        "/contact/removemember",
        json!({"dstid": w.group, "memberid": w.c.id}),
    );
    assert_eq!(
        (status, v["msg"].as_str()),
        (403, Some("only the group's owner may remove members"))
    );

    let (status, v) = api(
        &server,
        &w.a,
        "/contact/removemember",
        json!({"dstid": w.group, "memberid": w.c.id}),
    );
    assert_eq!(
        (status, v),
        (200, json!({"code": 0, "msg": "member removed"}))
    );
    let want = json!({"notice": "removed", "userid": w.c.id, "nickname": "user 3003", "by": w.a.id, "bynickname": "user 3001"});
    for ws in [&mut b, &mut c, &mut c2] {
        let (_, n) = notice(ws, w.group);
        assert_eq!(n, want);
    }
    for ws in [&mut c, &mut c2] {
        let e = event(ws, "member_removed");
        assert_eq!(
            (e["groupid"].as_i64(), e["by"].as_i64()),
            (Some(w.group), Some(w.a.id))
        );
    }

    // Only the server writes notices: a client's media 100 is refused.
    send(
        &mut b,
        json!({"cmd": 11, "dstid": w.group, "media": NOTICE, "content": "{\"notice\":\"joined\"}", "ref": "fake"}),
    );
    let v = next(&mut b);
    assert_eq!(
        (v["cmd"].as_i64(), v["code"].as_i64()),
        (Some(22), Some(400)),
        "{v}"
    );
    // The group goes on without c.
    send(
        &mut b,
        json!({"cmd": 11, "dstid": w.group, "content": "still here", "ref": "b1"}),
    );
    assert_eq!(next(&mut b)["cmd"], 21);
    quiet(&mut c);
    quiet(&mut c2);
    send(
        &mut c,
        json!({"cmd": 11, "dstid": w.group, "content": "let me in", "ref": "c1"}),
    );
    let v = next(&mut c);
    assert_eq!(
        (
            v["cmd"].as_i64(),
            v["code"].as_i64(),
            v["ref"].as_str(),
            v["msg"].as_str()
        ),
        (
            Some(22),
            Some(403),
            Some("c1"),
            Some("you are not a member of this group")
        )
    );
    quiet(&mut b);
    // Sync shows c nothing of the group any more; its list no longer has it.
    let all = sync(&mut c);
    assert!(all.iter().all(|m| m["cmd"] != 11), "{all:?}");
    let (_, v) = api(&server, &w.c, "/contact/loadcommunity", json!({}));
    assert_eq!(v["total"], 0);
    let (_, v) = api(&server, &w.a, "/contact/members", json!({"dstid": w.group}));
    assert_eq!(v["total"], 3);
}

#[test]
fn transfer_then_the_old_owner_is_a_member_and_offline_members_sync_the_notices() {
    let (server, w) = start();
    let mut a = connect(&server, &w.a);
    // d is offline throughout.

    let (status, v) = api(
        &server,
        &w.c,
        "/contact/transfercommunity",
        json!({"dstid": w.group, "memberid": w.c.id}),
    );
    assert_eq!(
        (status, v["msg"].as_str()),
        (403, Some("only the group's owner may transfer the group"))
    );

    let (status, v) = api(
        &server,
        &w.a,
        "/contact/transfercommunity",
        json!({"dstid": w.group, "memberid": w.b.id}),
    );
    assert_eq!(
        (status, v["data"]["ownerid"].as_i64()),
        (200, Some(w.b.id)),
        "{v}"
    );
    let (_, n) = notice(&mut a, w.group);
    assert_eq!(
        n,
        json!({"notice": "owner", "userid": w.b.id, "nickname": "user 3002", "by": w.a.id, "bynickname": "user 3001"})
    );
    let e = event(&mut a, "group_updated");
    assert_eq!(e["group"]["ownerid"], w.b.id);

    let (_, v) = api(&server, &w.a, "/contact/members", json!({"dstid": w.group}));
    let roles: Vec<(i64, String)> = v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["id"].as_i64().expect("id"),
                r["role"].as_str().expect("role").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            (w.a.id, "member".to_owned()),
            (w.b.id, "owner".to_owned()),
            (w.c.id, "member".to_owned()),
            (w.d.id, "member".to_owned())
        ]
    );
    // The old owner cannot manage any more; the new one can.
    let (status, _) = api(
        &server,
        &w.a,
        "/contact/removemember",
        json!({"dstid": w.group, "memberid": w.c.id}),
    );
    assert_eq!(status, 403);
    let (status, _) = api(
        &server,
        &w.b,
        "/contact/removemember",
        json!({"dstid": w.group, "memberid": w.c.id}),
    );
    assert_eq!(status, 200);
    let (_, n) = notice(&mut a, w.group);
    assert_eq!(
        (n["notice"].as_str(), n["by"].as_i64()),
        (Some("removed"), Some(w.b.id))
    );

    // d comes online and syncs both, in id order with the chat.
    let mut d = connect(&server, &w.d);
    let all = sync(&mut d);
    assert_eq!(notices_of(&all), ["owner", "removed"]);
    let ids: Vec<i64> = all.iter().map(|m| m["id"].as_i64().expect("id")).collect();
    assert!(ids.windows(2).all(|p| p[0] < p[1]), "{ids:?}");
}

#[test]
fn join_and_leave_leave_notices_and_the_owner_leaving_hands_over() {
    let (server, w) = start();
    let mut a = connect(&server, &w.a);
    let mut b = connect(&server, &w.b);
    let mut e = connect(&server, &w.e);

    let (status, v) = api(
        &server,
        &w.e,
        "/contact/joincommunity",
        json!({"dstid": w.group}),
    );
    assert_eq!((status, v["code"].as_i64()), (200, Some(0)));
    let ev = event(&mut e, "group_joined");
    assert_eq!(ev["group"]["id"], w.group);
    for ws in [&mut a, &mut b, &mut e] {
        let (m, n) = notice(ws, w.group);
        assert_eq!(m["userid"], w.e.id);
        assert_eq!(
            n,
            json!({"notice": "joined", "userid": w.e.id, "nickname": "user 3005"})
        );
    }

    // The owner leaves: the longest-standing member (b) owns the group.
    let (status, v) = api(
        &server,
        &w.a,
        "/contact/leavecommunity",
        json!({"dstid": w.group}),
    );
    assert_eq!(
        (status, v["msg"].as_str()),
        (
            200,
            Some("you left the group; the member who joined first now owns it")
        )
    );
    // The leaver's devices see the notices up to their leaving, then lose the group.
    let kinds: Vec<Value> = (0..2)
        .map(|_| notice(&mut a, w.group).1["notice"].clone())
        .collect();
    assert_eq!(kinds, ["left", "owner"]);
    let ev = event(&mut a, "group_left");
    assert_eq!(ev["groupid"], w.group);
    for ws in [&mut b, &mut e] {
        let (_, n) = notice(ws, w.group);
        assert_eq!(n["notice"], "left");
        assert_eq!(n["userid"], w.a.id);
        let (_, n) = notice(ws, w.group);
        assert_eq!(
            (n["notice"].as_str(), n["userid"].as_i64(), n["by"].as_i64()),
            (Some("owner"), Some(w.b.id), Some(w.a.id))
        );
        let ev = event(ws, "group_updated");
        assert_eq!(ev["group"]["ownerid"], w.b.id);
    }
    let (status, _) = api(
        &server,
        &w.b,
        "/contact/updatecommunity",
        json!({"dstid": w.group, "memo": "b's now"}),
    );
    assert_eq!(status, 200);
    // A memo change writes no notice, but members learn it; the one who left does not.
    let ev = event(&mut e, "group_updated");
    assert_eq!(ev["group"]["memo"], "b's now");
    quiet(&mut e);
    quiet(&mut a);
}
