//! Recall (`cmd` 16), edit (`cmd` 17) and replies with a quote (PROTOCOL.md, "Recall,
//! edit and reply"), with `tungstenite` clients against a real server process and a
//! real SQLite file. Accounts, friendships, a group and one early group message are
//! seeded before the server starts.

mod common;

use std::path::Path;
use std::time::Duration;

use common::chat::{Account, Ws, connect, recv, seed_accounts, send, within};
use common::{Http, Server, fresh_data_dir};
use fastim::store::{Db, NewGroup, Peer};
use serde_json::{Value, json};

/// a is friends with b and c; group "crew" has a and b from the start, and c joined
/// after a's message `early`.
struct World {
    a: Account,
    b: Account,
    c: Account,
    group: i64,
    early: i64,
}

fn seed(data_dir: &Path) -> World {
    let (mut db, [a, b, c]) = seed_accounts(data_dir, ["5001", "5002", "5003"]);
    db.add_friend(a.id, b.id, 2).expect("friends");
    db.add_friend(a.id, c.id, 3).expect("friends");
    let group = NewGroup {
        name: "crew".into(),
        ..NewGroup::default()
    };
    let group = db.create_group(a.id, group, 5, 4).expect("group").id;
    db.join_group(b.id, group, 4).expect("join");
    let early = fastim::store::Message {
        content: "before c joined".into(),
        ..fastim::store::Message::new(a.id, Peer::Group(group))
    };
    let early = db.save_messages(&[early], 5).expect("early")[0].id;
    db.join_group(c.id, group, 6).expect("join");
    World {
        a,
        b,
        c,
        group,
        early,
    }
}

fn start(extra: &[&str]) -> (Server, World) {
    let dir = fresh_data_dir();
    let world = seed(&dir);
    (Server::start_in(dir, extra), world)
}

/// Sends `frame` with `"ref": r` and returns the answer to it (ack or error); frames
/// for this connection that come first are returned too, in order.
fn ask(ws: &mut Ws, mut frame: Value, r: &str) -> (Value, Vec<Value>) {
    frame["ref"] = json!(r);
    send(ws, frame);
    let mut before = Vec::new();
    loop {
        let v = recv(ws);
        if v["ref"] == r {
            return (v, before);
        }
        before.push(v);
    }
}

/// Sends a message and returns its id once acknowledged.
fn say(ws: &mut Ws, frame: Value, r: &str) -> i64 {
    let (ack, _) = ask(ws, frame, r);
    assert_eq!(ack["cmd"], 21, "{ack}");
    ack["id"].as_i64().expect("id")
}

fn text(cmd: i64, to: i64, content: &str) -> Value {
    json!({"cmd": cmd, "dstid": to, "media": 1, "content": content})
}

/// The next frame; panics after 10 s.
fn next(ws: &mut Ws) -> Value {
    within(ws, Duration::from_secs(10)).expect("a frame within 10 s")
}

/// `GET /message/history` as `who`: the raw JSON text and the rows.
fn history(server: &Server, who: &Account, cmd: i64, dstid: i64) -> (String, Vec<Value>) {
    let mut http = Http::new(server.addr);
    let auth = format!("Bearer {}", who.token);
    let r = http.request(
        "GET",
        &format!("/message/history?cmd={cmd}&dstid={dstid}"),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200);
    let raw = String::from_utf8_lossy(&r.body).into_owned();
    let v = r.json();
    assert_eq!(v["code"], 0, "{v}");
    (raw, v["rows"].as_array().expect("rows").clone())
}

fn row(rows: &[Value], id: i64) -> Value {
    rows.iter()
        .find(|r| r["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no message {id} in {rows:?}"))
}

/// A batched sync from 0 on a new connection of `who`: the raw text and the messages.
fn synced(server: &Server, who: &Account) -> (String, Vec<Value>) {
    let mut ws = connect(server, who);
    send(&mut ws, json!({"cmd": 20, "id": 0, "batch": true}));
    let raw = loop {
        match ws.read().expect("read") {
            tungstenite::Message::Text(t) if t.as_str().starts_with(r#"{"cmd":25"#) => {
                break t.as_str().to_owned();
            }
            _ => {}
        }
    };
    let v: Value = serde_json::from_str(&raw).expect("JSON");
    (raw, v["messages"].as_array().expect("messages").clone())
}

#[test]
fn a_recall_is_seen_live_by_everyone_and_nothing_serves_what_was_said() {
    let (server, w) = start(&[]);
    let mut a1 = connect(&server, &w.a);
    let mut a2 = connect(&server, &w.a);
    let mut b = connect(&server, &w.b);
    let id = say(&mut a1, text(10, w.b.id, "the secret plan"), "s1");
    assert_eq!(next(&mut b)["content"], "the secret plan");
    assert_eq!(next(&mut a2)["content"], "the secret plan");
    let pic = say(
        &mut a1,
        json!({"cmd": 10, "dstid": w.b.id, "media": 4,
               "url": "/resource/abc.png", "pic": "/resource/abc_t.jpg#w=1&h=1"}),
        "s2",
    );
    next(&mut b);
    next(&mut a2);

    for (target, r) in [(id, "r1"), (pic, "r2")] {
        let (ack, _) = ask(&mut a1, json!({"cmd": 16, "id": target}), r);
        assert_eq!(
            (ack["cmd"].as_i64(), ack["id"].as_i64()),
            (Some(21), Some(target))
        );
        let on_b = next(&mut b);
        // Its place in the change log, for a client's sync cursor.
        assert!(on_b["seq"].as_i64() > Some(0), "{on_b}");
        let want = json!({"cmd": 16, "id": target, "userid": w.a.id, "chat": 10,
                          "dstid": w.b.id, "recalled": true, "seq": on_b["seq"]});
        assert_eq!(on_b, want, "the other side, live");
        assert_eq!(next(&mut a2), want, "the sender's other device, live");
        assert_eq!(next(&mut a1), want, "the recalling connection too");
    }

    // History of both sides, and the sync of a device that was offline.
    for who in [&w.a, &w.b] {
        let other = if who.id == w.a.id { w.b.id } else { w.a.id };
        let (raw, rows) = history(&server, who, 10, other);
        for target in [id, pic] {
            let m = row(&rows, target);
            assert_eq!(m["recalled"], true, "{m}");
            assert_eq!(
                (m["content"].as_str(), m["url"].as_str()),
                (Some(""), Some(""))
            );
            assert_eq!(m["pic"], "", "{m}");
        }
        assert!(!raw.contains("secret") && !raw.contains("abc"), "{raw}");
    }
    let (raw, messages) = synced(&server, &w.b);
    assert_eq!(row(&messages, id)["recalled"], true);
    assert!(!raw.contains("secret") && !raw.contains("abc"), "{raw}");
    // The list of conversations shows the last message as recalled, not what it said.
    let mut http = Http::new(server.addr);
    let auth = format!("Bearer {}", w.b.token);
    let v = http
        .request(
            "GET",
            "/contact/conversations",
            &[("Authorization", &auth)],
            b"",
        )
        .json();
    let rows = v["rows"].as_array().expect("rows");
    let with_a = rows
        .iter()
        .find(|r| r["cmd"] == 10 && r["dstid"] == w.a.id)
        .expect("the conversation with a");
    assert_eq!(
        (with_a["lastid"].as_i64(), with_a["preview"].as_str()),
        (Some(pic), Some("[recalled]")),
        "{with_a}"
    );
    // The ids stay: a later message still comes after them.
    let later = say(&mut a1, text(10, w.b.id, "later"), "s3");
    assert!(later > pic);
}

#[test]
fn an_edit_is_seen_live_and_in_history_and_sync() {
    let (server, w) = start(&[]);
    let mut a1 = connect(&server, &w.a);
    let mut a2 = connect(&server, &w.a);
    let mut b = connect(&server, &w.b);
    let mut c = connect(&server, &w.c);
    let id = say(&mut a1, text(11, w.group, "meet at 5"), "g1");
    for ws in [&mut a2, &mut b, &mut c] {
        assert_eq!(next(ws)["content"], "meet at 5");
    }
    let (ack, _) = ask(
        &mut a1,
        json!({"cmd": 17, "id": id, "content": "meet at 6"}),
        "e1",
    );
    assert_eq!(ack["cmd"], 21, "{ack}");
    let event = next(&mut a1);
    let edited = event["edited"].as_i64().expect("edited ms");
    assert!(edited >= ack["createat"].as_i64().expect("createat"));
    let want = json!({"cmd": 17, "id": id, "userid": w.a.id, "chat": 11,
                      "dstid": w.group, "content": "meet at 6", "edited": edited,
                      "seq": event["seq"]});
    assert_eq!(event, want);
    for ws in [&mut a2, &mut b, &mut c] {
        assert_eq!(next(ws), want, "every member, live");
    }
    let (raw, rows) = history(&server, &w.c, 11, w.group);
    let m = row(&rows, id);
    assert_eq!(
        (m["content"].as_str(), m["edited"].as_i64()),
        (Some("meet at 6"), Some(edited))
    );
    assert!(m.get("recalled").is_none(), "{m}");
    assert!(!raw.contains("meet at 5"), "{raw}");
    let (_, messages) = synced(&server, &w.b);
    assert_eq!(row(&messages, id)["content"], "meet at 6");
    assert_eq!(row(&messages, id)["edited"], edited);

    // Recalled in the group: every member's connections are told, and history agrees.
    let (ack, _) = ask(&mut a1, json!({"cmd": 16, "id": id}), "g2");
    assert_eq!(ack["cmd"], 21, "{ack}");
    let event = next(&mut a1);
    let want = json!({"cmd": 16, "id": id, "userid": w.a.id, "chat": 11,
                      "dstid": w.group, "recalled": true, "seq": event["seq"]});
    assert_eq!(event, want);
    for ws in [&mut a2, &mut b, &mut c] {
        assert_eq!(next(ws), want, "every member, live");
    }
    let (raw, rows) = history(&server, &w.b, 11, w.group);
    assert_eq!(row(&rows, id)["recalled"], true);
    assert!(!raw.contains("meet at"), "{raw}");
}

#[test]
fn refusals_are_clear_and_change_nothing() {
    let (server, w) = start(&[]);
    let mut a = connect(&server, &w.a);
    let mut b = connect(&server, &w.b);
    let id = say(&mut a, text(10, w.b.id, "mine"), "m1");
    next(&mut b);
    let pic = say(
        &mut a,
        json!({"cmd": 10, "dstid": w.b.id, "media": 4, "url": "/resource/x.png"}),
        "m2",
    );
    next(&mut b);
    let error = |ws: &mut Ws, frame: Value, r: &str| -> (i64, String) {
        let (e, _) = ask(ws, frame, r);
        assert_eq!(e["cmd"], 22, "{e}");
        (
            e["code"].as_i64().expect("code"),
            e["msg"].as_str().expect("msg").to_owned(),
        )
    };
    let (code, msg) = error(&mut b, json!({"cmd": 16, "id": id}), "x1");
    assert_eq!((code, msg.as_str()), (403, "only its sender may recall it"));
    let (code, msg) = error(&mut b, json!({"cmd": 17, "id": id, "content": "hi"}), "x2");
    assert_eq!((code, msg.as_str()), (403, "only its sender may edit it"));
    let (code, msg) = error(&mut a, json!({"cmd": 16, "id": 999_999}), "x3");
    assert_eq!((code, msg.as_str()), (404, "no message has id 999999"));
    let (code, msg) = error(&mut a, json!({"cmd": 17, "id": pic, "content": "hi"}), "x4");
    assert_eq!(
        (code, msg.as_str()),
        (400, "only a text message (media 1) can be edited")
    );
    let (code, _) = error(
        &mut a,
        json!({"cmd": 17, "id": id, "content": "x".repeat(4001)}),
        "x5",
    );
    assert_eq!(code, 413);
    let (code, _) = error(&mut a, json!({"cmd": 17, "id": id, "content": " "}), "x6");
    assert_eq!(code, 400);
    let (code, _) = error(&mut a, json!({"cmd": 16}), "x7");
    assert_eq!(code, 400);
    // Nothing of that reached b, and the message is as it was.
    assert!(within(&mut b, Duration::from_millis(300)).is_none());
    let (_, rows) = history(&server, &w.b, 10, w.a.id);
    assert_eq!(row(&rows, id)["content"], "mine");
    assert!(row(&rows, id).get("edited").is_none());

    let (ack, _) = ask(&mut a, json!({"cmd": 16, "id": id}), "ok");
    assert_eq!(ack["cmd"], 21);
    next(&mut a);
    let (code, msg) = error(&mut a, json!({"cmd": 16, "id": id}), "x8");
    assert_eq!((code, msg.as_str()), (409, "the message has been recalled"));
    let (code, msg) = error(
        &mut a,
        json!({"cmd": 17, "id": id, "content": "back"}),
        "x9",
    );
    assert_eq!((code, msg.as_str()), (409, "the message has been recalled"));
}

#[test]
fn the_windows_are_enforced() {
    let (server, w) = start(&["--recall-window-secs", "1", "--edit-window-secs", "1"]);
    let mut a = connect(&server, &w.a);
    let id = say(&mut a, text(10, w.b.id, "quick"), "q1");
    // Within the window: an edit goes through.
    let (ack, _) = ask(
        &mut a,
        json!({"cmd": 17, "id": id, "content": "quicker"}),
        "q2",
    );
    assert_eq!(ack["cmd"], 21, "{ack}");
    next(&mut a);
    std::thread::sleep(Duration::from_millis(1_300));
    let (e, _) = ask(&mut a, json!({"cmd": 16, "id": id}), "q3");
    assert_eq!(
        (e["code"].as_i64(), e["msg"].as_str()),
        (
            Some(403),
            Some("a message can only be recalled within 1 seconds of sending it")
        )
    );
    let (e, _) = ask(
        &mut a,
        json!({"cmd": 17, "id": id, "content": "late"}),
        "q4",
    );
    assert_eq!(
        (e["code"].as_i64(), e["msg"].as_str()),
        (
            Some(403),
            Some("a message can only be edited within 1 seconds of sending it")
        )
    );
    let (_, rows) = history(&server, &w.a, 10, w.b.id);
    assert_eq!(row(&rows, id)["content"], "quicker");
    assert!(row(&rows, id).get("recalled").is_none());
}

#[test]
fn a_reply_carries_its_quote_and_only_within_what_the_sender_sees() {
    let (server, w) = start(&[]);
    let mut a = connect(&server, &w.a);
    let mut b = connect(&server, &w.b);
    let long = "é".repeat(150);
    let original = say(&mut a, text(10, w.b.id, &long), "o1");
    next(&mut b);
    let mut reply = text(10, w.a.id, "agreed");
    reply["reply"] = json!(original);
    let id = say(&mut b, reply, "p1");
    let got = next(&mut a);
    let quote = json!({"id": original, "userid": w.a.id, "content": "é".repeat(100), "media": 1});
    assert_eq!(
        (got["id"].as_i64(), &got["reply"]),
        (Some(id), &json!(original))
    );
    assert_eq!(got["quote"], quote, "{got}");
    let (_, rows) = history(&server, &w.a, 10, w.b.id);
    assert_eq!(row(&rows, id)["quote"], quote);
    let (_, messages) = synced(&server, &w.b);
    assert_eq!(row(&messages, id)["quote"], quote);

    // The original recalled: the quote says so and shows nothing of it.
    let (ack, _) = ask(&mut a, json!({"cmd": 16, "id": original}), "o2");
    assert_eq!(ack["cmd"], 21);
    let (raw, rows) = history(&server, &w.b, 10, w.a.id);
    assert_eq!(
        row(&rows, id)["quote"],
        json!({"id": original, "userid": w.a.id, "content": "", "media": 1, "recalled": true})
    );
    assert!(!raw.contains('é'), "{raw}");

    // A message of another conversation (a to c) cannot be quoted to a.
    let mut c = connect(&server, &w.c);
    let elsewhere = say(&mut a, text(10, w.c.id, "for c only"), "o3");
    next(&mut c);
    let mut bad = text(10, w.a.id, "peek");
    bad["reply"] = json!(elsewhere);
    let (e, _) = ask(&mut b, bad, "p2");
    assert_eq!(
        (e["cmd"].as_i64(), e["code"].as_i64(), e["msg"].as_str()),
        (
            Some(22),
            Some(404),
            Some("reply names no message of this conversation that you can see")
        )
    );
    let mut bad = text(10, w.a.id, "nothing");
    bad["reply"] = json!(0);
    let (e, _) = ask(&mut b, bad, "p3");
    assert_eq!(
        (e["code"].as_i64(), e["msg"].as_str()),
        (Some(400), Some("reply must be a positive message id"))
    );

    // In the group, c cannot quote what was said before c joined, but can what came after.
    let mut bad = text(11, w.group, "what was that?");
    bad["reply"] = json!(w.early);
    let (e, _) = ask(&mut c, bad, "p4");
    assert_eq!(e["code"], 404, "{e}");
    let mut ok = text(11, w.group, "quoting b");
    let after = say(&mut b, text(11, w.group, "hello crew"), "p5");
    ok["reply"] = json!(after);
    let quoted = say(&mut c, ok, "p6");
    let (_, rows) = history(&server, &w.a, 11, w.group);
    assert_eq!(row(&rows, quoted)["quote"]["content"], "hello crew");
    let texts: Vec<&str> = rows.iter().filter_map(|r| r["content"].as_str()).collect();
    assert!(
        !texts.contains(&"peek")
            && !texts.contains(&"what was that?")
            && !texts.contains(&"nothing"),
        "refused replies are not stored: {texts:?}"
    );
    let (_, rows) = history(&server, &w.a, 10, w.b.id);
    let texts: Vec<&str> = rows.iter().filter_map(|r| r["content"].as_str()).collect();
    assert!(
        !texts.contains(&"peek") && !texts.contains(&"nothing"),
        "{texts:?}"
    );
}

/// A sync of `ws` from message `id`, with `extra` fields: the frames up to and with
/// the closing one (`cmd` 23, or the one `cmd` 25 of a batch).
fn sync_reply(ws: &mut Ws, id: i64, extra: Value) -> Vec<Value> {
    let mut frame = json!({"cmd": 20, "id": id});
    for (k, v) in extra.as_object().expect("fields") {
        frame[k] = v.clone();
    }
    send(ws, frame);
    let mut got = Vec::new();
    loop {
        let v = next(ws);
        let end = v["cmd"] == 23 || v["cmd"] == 25;
        got.push(v);
        if end {
            return got;
        }
    }
}

/// The changes a sync reply carried, as (`cmd`, message id), frames or batch.
fn changes_in(reply: &[Value]) -> Vec<(i64, i64)> {
    let last = reply.last().expect("a closing frame");
    let events: Vec<Value> = if last["cmd"] == 25 {
        last["changed"].as_array().expect("changed").clone()
    } else {
        reply[..reply.len() - 1]
            .iter()
            .filter(|v| v["cmd"] == 16 || v["cmd"] == 17)
            .cloned()
            .collect()
    };
    events
        .iter()
        .map(|e| {
            assert!(e["seq"].as_i64().is_some_and(|s| s > 0), "{e}");
            (
                e["cmd"].as_i64().expect("cmd"),
                e["id"].as_i64().expect("id"),
            )
        })
        .collect()
}

#[test]
fn a_device_that_was_away_learns_recalls_and_edits_through_sync_once() {
    let (server, w) = start(&[]);
    let mut a = connect(&server, &w.a);
    let one = say(&mut a, text(10, w.b.id, "one"), "m1");
    let two = say(&mut a, text(10, w.b.id, "two"), "m2");
    let three = say(&mut a, text(11, w.group, "three"), "m3");
    // b's second device syncs everything, takes the change cursor, and goes away.
    let (cursor, last) = {
        let mut d2 = connect(&server, &w.b);
        let reply = sync_reply(&mut d2, 0, json!({"batch": true, "changes": 0}));
        let done = &reply[0];
        assert_eq!(done["changed"], json!([]), "{done}");
        (
            done["changes"].as_i64().expect("a seq"),
            done["id"].as_i64().expect("id"),
        )
    };
    assert_eq!(last, three);
    // While it is away: one recalled, two edited, three edited then recalled.
    let mut frames = Vec::new();
    for (frame, r) in [
        (json!({"cmd": 16, "id": one}), "c1"),
        (
            json!({"cmd": 17, "id": two, "content": "two, edited"}),
            "c2",
        ),
        (json!({"cmd": 17, "id": three, "content": "3"}), "c3"),
        (json!({"cmd": 16, "id": three}), "c4"),
    ] {
        let (ack, before) = ask(&mut a, frame, r);
        assert_eq!(ack["cmd"], 21, "{ack}");
        frames.extend(before);
    }
    while let Some(v) = within(&mut a, Duration::from_millis(500)) {
        frames.push(v);
    }
    // Live events carry their seq, growing.
    let live: Vec<i64> = frames
        .iter()
        .filter(|v| v["cmd"] == 16 || v["cmd"] == 17)
        .map(|v| v["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(live.len(), 4, "{live:?} {frames:?}");
    assert!(live.windows(2).all(|s| s[0] < s[1]), "{live:?}");
    // Back, with frames: exactly those changes, once, after the (no) messages.
    let mut d2 = connect(&server, &w.b);
    let reply = sync_reply(&mut d2, last, json!({"changes": cursor}));
    assert_eq!(changes_in(&reply), [(16, one), (17, two), (16, three)]);
    let edit = reply.iter().find(|v| v["id"] == two).expect("the edit");
    assert_eq!(edit["content"], "two, edited");
    assert_eq!(
        (edit["chat"].clone(), edit["dstid"].clone()),
        (json!(10), json!(w.b.id))
    );
    let done = reply.last().expect("done");
    assert_eq!(done["cmd"], 23);
    assert_eq!(done["more"], false);
    let next_cursor = done["changes"].as_i64().expect("seq");
    assert_eq!(next_cursor, *live.last().expect("a seq"));
    // With the cursor it now has: nothing again.
    let again = sync_reply(&mut d2, last, json!({"changes": next_cursor}));
    assert_eq!(changes_in(&again), []);
    assert_eq!(again.last().expect("done")["changes"], next_cursor);
    // The same from the old cursor as one batch.
    let batch = sync_reply(&mut d2, last, json!({"batch": true, "changes": cursor}));
    assert_eq!(batch.len(), 1);
    assert_eq!(changes_in(&batch), [(16, one), (17, two), (16, three)]);
    assert_eq!(batch[0]["changes"], next_cursor);
    // A client that does not ask for changes gets the replies it always got.
    let old = sync_reply(&mut d2, last, json!({}));
    assert_eq!(
        old,
        [json!({"cmd": 23, "id": last, "more": false, "oldest": 1})]
    );
    let old = sync_reply(&mut d2, last, json!({"batch": true}));
    assert_eq!(
        old,
        [json!({"cmd": 25, "messages": [], "id": last, "more": false, "oldest": 1})]
    );
}

#[test]
fn a_group_member_gets_changes_only_of_messages_after_joining() {
    // `early` was sent before c joined, at the seed's time 5: a recalls it then,
    // in the store, before the server starts.
    let dir = fresh_data_dir();
    let w = seed(&dir);
    {
        let mut db = Db::open(&dir.join("fastim.db")).expect("open db");
        let recall = fastim::store::Change {
            user: w.a.id,
            id: w.early,
            edit: fastim::store::Edit::Recall,
            client_ref: None,
        };
        let windows = fastim::store::Windows {
            recall_ms: 120_000,
            edit_ms: 900_000,
        };
        let done = db.change_messages(&[recall], 7, windows).expect("recall");
        assert!(done[0].is_ok(), "{done:?}");
    }
    let server = Server::start_in(dir, &[]);
    let mut a = connect(&server, &w.a);
    let later = say(&mut a, text(11, w.group, "after c joined"), "g1");
    let (ack, _) = ask(&mut a, json!({"cmd": 16, "id": later}), "r2");
    assert_eq!(ack["cmd"], 21, "{ack}");
    let mut c = connect(&server, &w.c);
    let reply = sync_reply(&mut c, later, json!({"changes": 0}));
    assert_eq!(changes_in(&reply), [(16, later)]);
    let mut b = connect(&server, &w.b);
    let reply = sync_reply(&mut b, later, json!({"batch": true, "changes": 0}));
    assert_eq!(changes_in(&reply), [(16, w.early), (16, later)]);
}

#[test]
fn many_changes_come_in_pages_with_more() {
    let (server, w) = start(&[]);
    let mut a = connect(&server, &w.a);
    // Long edits: the byte cap of a reply (about 256 KiB) pages them.
    let long = "e".repeat(4_000);
    let n = 80;
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(say(
            &mut a,
            text(10, w.b.id, &format!("m{i}")),
            &format!("m{i}"),
        ));
    }
    for (i, id) in ids.iter().enumerate() {
        let (ack, _) = ask(
            &mut a,
            json!({"cmd": 17, "id": id, "content": long}),
            &format!("e{i}"),
        );
        assert_eq!(ack["cmd"], 21, "{ack}");
    }
    let last = *ids.last().expect("ids");
    for extra in [json!({}), json!({"batch": true})] {
        let mut b = connect(&server, &w.b);
        let (mut cursor, mut seen, mut pages) = (0, Vec::new(), 0);
        loop {
            let mut ask = extra.clone();
            ask["changes"] = json!(cursor);
            let reply = sync_reply(&mut b, last, ask);
            let done = reply.last().expect("done").clone();
            seen.extend(changes_in(&reply).into_iter().map(|(_, id)| id));
            cursor = done["changes"].as_i64().expect("seq");
            pages += 1;
            if done["more"] == false {
                break;
            }
            assert!(pages < 10, "no progress");
        }
        assert!(pages >= 2, "{pages} pages");
        assert_eq!(seen, ids, "every change once, in order ({extra})");
    }
}

#[test]
fn own_messages_carry_their_ref_to_the_senders_other_devices_sync_and_history() {
    let (server, w) = start(&[]);
    let mut a1 = connect(&server, &w.a);
    let mut a2 = connect(&server, &w.a);
    let mut b = connect(&server, &w.b);
    let id = say(&mut a1, text(10, w.b.id, "hello"), "own-1");
    let on_a2 = next(&mut a2);
    assert_eq!(
        (on_a2["id"].as_i64(), on_a2["ref"].as_str()),
        (Some(id), Some("own-1"))
    );
    let on_b = next(&mut b);
    assert_eq!(on_b["id"], id);
    assert!(on_b.get("ref").is_none(), "{on_b}");
    // In a group: the same, every other member without it.
    let mut c = connect(&server, &w.c);
    let gid = say(&mut a1, text(11, w.group, "all"), "own-2");
    assert_eq!(next(&mut a2)["ref"], "own-2");
    for ws in [&mut b, &mut c] {
        let v = next(ws);
        assert_eq!(v["id"], gid);
        assert!(v.get("ref").is_none(), "{v}");
    }
    // b's own message to a: b's ref stays with b.
    let bid = say(&mut b, text(10, w.a.id, "back"), "b-1");
    for ws in [&mut a1, &mut a2] {
        let v = next(ws);
        assert_eq!(v["id"], bid);
        assert!(v.get("ref").is_none(), "{v}");
    }
    // Sync and history: own messages with their ref, others' without.
    for (who, mine, theirs) in [(&w.a, id, bid), (&w.b, bid, id)] {
        let (_, rows) = synced(&server, who);
        let (_, hist) = history(
            &server,
            who,
            10,
            if who.id == w.a.id { w.b.id } else { w.a.id },
        );
        for list in [&rows, &hist] {
            assert!(row(list, mine)["ref"].is_string(), "{list:?}");
            assert!(row(list, theirs).get("ref").is_none(), "{list:?}");
        }
    }
    let (_, rows) = synced(&server, &w.a);
    assert_eq!(row(&rows, gid)["ref"], "own-2");
    let (_, rows) = synced(&server, &w.c);
    assert!(row(&rows, gid).get("ref").is_none());
}
