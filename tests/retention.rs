//! `--history-days`: a real server removes old messages while it runs, and sync and
//! history say where history starts. Messages get their age from the time they are
//! stored with, written straight into the database (the store takes `now` from its
//! caller).

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Http, Server, fresh_data_dir};
use fastim::store::{Db, Message as ChatMessage, NewGroup, Peer};
use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

const DAY_MS: i64 = 86_400_000;

fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970");
    i64::try_from(since.as_millis()).expect("fits")
}

fn message(from: i64, to: Peer, content: &str) -> ChatMessage {
    ChatMessage {
        sender_id: from,
        to,
        media: 1,
        content: content.into(),
        pic: String::new(),
        url: String::new(),
        memo: String::new(),
        amount: 0,
        client_ref: None,
        id: 0,
        created_at: 0,
        ..ChatMessage::new(0, Peer::User(0))
    }
}

/// Stores `m` as if it had arrived at `at`; returns its id.
fn store_at(db: &mut Db, m: ChatMessage, at: i64) -> i64 {
    db.save_messages(&[m], at).expect("save")[0].id
}

fn connect(server: &Server, id: i64, token: &str) -> Ws {
    let url = server.url(&format!("/chat?id={id}&token={token}"));
    let (ws, response) = tungstenite::connect(url).expect("chat upgrade");
    assert_eq!(response.status(), 101);
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
    }
    ws
}

fn recv(ws: &mut Ws) -> Value {
    loop {
        match ws.read().expect("read") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Syncs from `after`: the ids received and the `oldest` of the sync-done frame.
fn sync(ws: &mut Ws, after: i64) -> (Vec<i64>, i64) {
    ws.send(Message::text(json!({"cmd": 20, "id": after}).to_string()))
        .expect("send");
    let mut ids = Vec::new();
    loop {
        let v = recv(ws);
        if v["cmd"] == 23 {
            assert_eq!(v["more"], false);
            return (
                ids,
                v["oldest"].as_i64().expect("oldest in every sync reply"),
            );
        }
        ids.push(v["id"].as_i64().expect("id"));
    }
}

/// `/message/history` of `dstid` (`cmd` 10 or 11): the ids and `oldest`.
fn history(
    server: &Server,
    token: &str,
    cmd: i64,
    dstid: i64,
    before: Option<i64>,
) -> (Vec<i64>, i64) {
    let mut http = Http::new(server.addr);
    let mut query = format!("/message/history?cmd={cmd}&dstid={dstid}");
    if let Some(b) = before {
        query.push_str(&format!("&before={b}"));
    }
    let auth = format!("Bearer {token}");
    let v = http
        .request("GET", &query, &[("Authorization", &auth)], b"")
        .json();
    assert_eq!(v["code"], 0, "{v}");
    let ids = v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["id"].as_i64().expect("id"))
        .collect();
    (
        ids,
        v["oldest"].as_i64().expect("oldest in every history reply"),
    )
}

/// Syncs until `oldest` reaches `want`, for at most `within`.
fn wait_for_oldest(ws: &mut Ws, want: i64, within: Duration) -> (Vec<i64>, i64) {
    let deadline = Instant::now() + within;
    loop {
        let (ids, oldest) = sync(ws, 0);
        if oldest >= want || Instant::now() > deadline {
            return (ids, oldest);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn count_messages(path: &Path) -> usize {
    let db = Db::open(path).expect("open");
    // Everything anyone could still receive: the two users' catch-up, merged.
    let mut ids: Vec<i64> = [1, 2]
        .iter()
        .flat_map(|u| db.messages_for(*u, 0, 10_000).expect("messages"))
        .map(|m| m.id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}

#[test]
fn a_running_server_removes_messages_past_the_window_and_says_where_history_starts() {
    let dir = fresh_data_dir();
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("fastim.db");
    let mut db = Db::open(&path).expect("open");
    let (ann, ann_token) = common::seed_account(&mut db, "13800000001");
    let (bob, _) = common::seed_account(&mut db, "13800000002");
    db.add_friend(ann, bob, 1).expect("friends");
    let crew = NewGroup {
        name: "crew".into(),
        ..NewGroup::default()
    };
    let group = db.create_group(ann, crew, 5, 1).expect("group").id;
    db.join_group(bob, group, 1).expect("join");
    let now = now_ms();
    // Gone at the first run.
    let old_single = store_at(
        &mut db,
        message(bob, Peer::User(ann), "old"),
        now - 10 * DAY_MS,
    );
    let old_group = store_at(
        &mut db,
        message(bob, Peer::Group(group), "old"),
        now - 8 * DAY_MS,
    );
    // Past seven days 8 s from now: removed by a later run, while the server runs.
    let soon = now - 7 * DAY_MS + 8_000;
    let soon_single = store_at(&mut db, message(ann, Peer::User(bob), "soon"), soon);
    let soon_group = store_at(&mut db, message(ann, Peer::Group(group), "soon"), soon);
    // Kept.
    let kept_single = store_at(&mut db, message(bob, Peer::User(ann), "kept"), now - DAY_MS);
    let kept_group = store_at(
        &mut db,
        message(bob, Peer::Group(group), "kept"),
        now - DAY_MS,
    );
    drop(db);

    let server = Server::start_in(
        dir.clone(),
        &["--history-days", "7", "--retention-interval", "0.5"],
    );
    let mut ws = connect(&server, ann, &ann_token);

    // The first run, at start: the two old ones go, the rest stays.
    let (ids, oldest) = wait_for_oldest(&mut ws, old_group + 1, Duration::from_secs(5));
    assert_eq!(oldest, old_group + 1, "{ids:?}");
    assert_eq!(
        ids,
        [soon_single, soon_group, kept_single, kept_group],
        "only what is older than 7 days is removed"
    );

    // Later runs: the ones that have since grown older than 7 days go too.
    let (ids, oldest) = wait_for_oldest(&mut ws, soon_group + 1, Duration::from_secs(15));
    assert_eq!(oldest, soon_group + 1, "removed while running: {ids:?}");
    assert_eq!(ids, [kept_single, kept_group]);
    // A client syncing from an id older than the window is told where history starts
    // (its cursor + 1 is below `oldest`: it missed messages that are gone).
    let (ids, oldest) = sync(&mut ws, old_single);
    assert_eq!(
        (ids, oldest),
        (vec![kept_single, kept_group], soon_group + 1)
    );
    // History says the same, for one-to-one and group conversations, before or not.
    assert_eq!(
        history(&server, &ann_token, 10, bob, None),
        (vec![kept_single], soon_group + 1)
    );
    assert_eq!(
        history(&server, &ann_token, 11, group, None),
        (vec![kept_group], soon_group + 1)
    );
    assert_eq!(
        history(&server, &ann_token, 11, group, Some(kept_group)),
        (vec![], soon_group + 1)
    );
    assert_eq!(count_messages(&path), 2);

    // New messages are stored and kept as before.
    ws.send(Message::text(
        json!({"cmd": 10, "dstid": bob, "content": "new", "ref": "n1"}).to_string(),
    ))
    .expect("send");
    let ack = recv(&mut ws);
    assert_eq!(ack["cmd"], 21, "{ack}");
    std::thread::sleep(Duration::from_millis(1_200));
    let (ids, _) = sync(&mut ws, 0);
    assert_eq!(
        ids,
        [kept_single, kept_group, ack["id"].as_i64().expect("id")]
    );
}

#[test]
fn without_history_days_nothing_is_removed() {
    let dir = fresh_data_dir();
    std::fs::create_dir_all(&dir).expect("dir");
    let mut db = Db::open(&dir.join("fastim.db")).expect("open");
    let (ann, token) = common::seed_account(&mut db, "13800000001");
    let ancient = store_at(&mut db, message(ann, Peer::User(ann), "ancient"), 1);
    drop(db);
    let server = Server::start_in(dir, &["--retention-interval", "0.2"]);
    let mut ws = connect(&server, ann, &token);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(sync(&mut ws, 0), (vec![ancient], 1));
    assert_eq!(history(&server, &token, 10, ann, None), (vec![ancient], 1));
}

#[test]
fn history_days_must_be_a_positive_whole_number() {
    for bad in ["0", "-1", "1.5", "many"] {
        let err = Server::try_start_in(&[], fresh_data_dir(), &["--history-days", bad])
            .err()
            .unwrap_or_else(|| panic!("--history-days {bad} was accepted"));
        assert!(err.contains("history-days"), "{bad}: {err}");
    }
}
