//! The administration subcommands, run as the real binary against a temp data
//! directory, beside a running server where the commands promise to be safe with one.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Http, Server, fresh_data_dir};
use fastim::store::{Db, Peer};
use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// What one run of the binary did.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

/// Runs `fastim ARGS` with `stdin` as its standard input; killed after 60 s.
fn fastim(args: &[&str], data_dir: &Path, stdin: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fastim"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run fastim");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("fastim {args:?} did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        ok: status.success(),
        stdout: out.join().expect("stdout thread"),
        stderr: err.join().expect("stderr thread"),
    }
}

/// Like [`fastim`], and the run must succeed.
fn ok(args: &[&str], data_dir: &Path, stdin: &str) -> Run {
    let run = fastim(args, data_dir, stdin);
    assert!(
        run.ok,
        "fastim {args:?} failed: {}{}",
        run.stdout, run.stderr
    );
    run
}

/// Like [`fastim`], and the run must fail with a message containing `msg`.
fn fails(args: &[&str], data_dir: &Path, stdin: &str, msg: &str) {
    let run = fastim(args, data_dir, stdin);
    assert!(!run.ok, "fastim {args:?} should fail: {}", run.stdout);
    assert!(
        run.stderr.contains(msg),
        "{args:?}: {:?} lacks {msg:?}",
        run.stderr
    );
}

fn login(server: &Server, mobile: &str, passwd: &str) -> (Http, Value) {
    let mut http = Http::new(server.addr);
    let v = http
        .form("/user/login", &format!("mobile={mobile}&passwd={passwd}"))
        .json();
    (http, v)
}

/// Servers here allow every login: the tests log in more often than a person does.
const NO_THROTTLE: &[&str] = &[
    "--login-per-minute",
    "0",
    "--account-checks-per-minute",
    "0",
];

#[test]
fn user_add_list_login_passwd_block_unblock_delete() {
    let dir = fresh_data_dir();
    let server = Server::start_in(dir.clone(), NO_THROTTLE);
    let m = "13800000001";

    ok(
        &["admin", "user", "add", m, "--nickname", "Ann"],
        &dir,
        "first-pass-1\n",
    );
    fails(
        &["admin", "user", "add", m, "--nickname", "Ann"],
        &dir,
        "first-pass-1\n",
        "already registered",
    );
    fails(
        &["admin", "user", "add", "13800000002", "--nickname", "Bob"],
        &dir,
        "password\n",
        "most common passwords",
    );
    // --data-dir before the subcommand works as well as after it.
    let run = Command::new(env!("CARGO_BIN_EXE_fastim"))
        .arg("--data-dir")
        .arg(&dir)
        .args(["admin", "user", "list"])
        .output()
        .expect("list");
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success());
    let mut lines = text.lines();
    assert!(
        lines.next().is_some_and(|l| l.starts_with("ID  MOBILE")),
        "{text}"
    );
    let row = lines.next().expect("one user");
    assert!(
        row.contains(m) && row.contains("Ann") && row.contains(" no "),
        "{row}"
    );
    let list = ok(&["admin", "user", "list", "--json"], &dir, "").json();
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["mobile"], m);
    assert_eq!(list[0]["nickname"], "Ann");
    assert_eq!(list[0]["blocked"], false);
    let id = list[0]["id"].as_i64().expect("id");

    // The account works over HTTP.
    let (mut http, v) = login(&server, m, "first-pass-1");
    assert_eq!(v["code"], 0, "{v}");
    assert_eq!(
        http.request("GET", "/user/me", &[], b"").json()["data"]["id"],
        id
    );
    let show = ok(&["admin", "user", "show", m, "--json"], &dir, "").json();
    assert_eq!(show["sessions"], 1);
    let by_id = ok(&["admin", "user", "show", &id.to_string()], &dir, "");
    assert!(by_id.stdout.contains("sessions:"), "{}", by_id.stdout);

    // passwd: the rule of registration, then the new password works and the old not.
    fails(&["admin", "user", "passwd", m], &dir, "short\n", "8 to 128");
    fails(
        &["admin", "user", "passwd", m],
        &dir,
        &format!("{m}\n"),
        "your mobile number",
    );
    let run = ok(&["admin", "user", "passwd", m], &dir, "second-pass-2\n");
    assert!(run.stdout.contains("revoked 1 sessions"), "{}", run.stdout);
    assert_eq!(http.request("GET", "/user/me", &[], b"").status, 401);
    assert_eq!(
        login(&server, m, "first-pass-1").1["msg"],
        "wrong mobile number or password"
    );
    let (mut http, v) = login(&server, m, "second-pass-2");
    assert_eq!(v["code"], 0, "{v}");

    // block: the session dies at once, login says why.
    let run = ok(&["admin", "user", "block", m], &dir, "");
    assert!(run.stdout.contains("revoked 1 sessions"), "{}", run.stdout);
    assert_eq!(http.request("GET", "/user/me", &[], b"").status, 401);
    let v = login(&server, m, "second-pass-2").1;
    assert_eq!(v, json!({"code": -1, "msg": "this account is blocked"}));
    assert_eq!(
        ok(&["admin", "user", "show", m, "--json"], &dir, "").json()["blocked"],
        true
    );
    ok(&["admin", "user", "unblock", m], &dir, "");
    let (_, v) = login(&server, m, "second-pass-2");
    assert_eq!(v["code"], 0, "{v}");

    // session revoke, one user and everyone.
    let revoked = ok(&["admin", "session", "revoke", m, "--json"], &dir, "").json();
    assert_eq!(revoked["revoked"], 1);
    login(&server, m, "second-pass-2");
    let revoked = ok(&["admin", "session", "revoke", "--all", "--json"], &dir, "").json();
    assert_eq!(revoked["revoked"], 1);

    // delete.
    ok(&["admin", "user", "delete", m], &dir, "");
    fails(
        &["admin", "user", "show", m],
        &dir,
        "",
        &format!("no user with mobile {m}"),
    );
    fails(
        &["admin", "user", "block", "77"],
        &dir,
        "",
        "no user with id 77",
    );
    assert_eq!(
        login(&server, m, "second-pass-2").1["msg"],
        "wrong mobile number or password"
    );
    let list = ok(&["admin", "user", "list", "--json"], &dir, "").json();
    assert_eq!(list, json!([]));
    drop(server);

    let nowhere = fresh_data_dir();
    fails(&["admin", "stats"], &nowhere, "", "no database at");
    assert!(!nowhere.exists(), "nothing is created");
}

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

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

/// The ids of every message `user` receives in the database file `path`.
fn ids_for(path: &Path, user: i64) -> Vec<i64> {
    let db = Db::open_existing(path).expect("open");
    db.messages_for(user, 0, 100_000)
        .expect("messages")
        .into_iter()
        .map(|m| m.id)
        .collect()
}

#[test]
fn backup_while_a_client_sends_then_restore_holds_every_acknowledged_message() {
    let dir = fresh_data_dir();
    std::fs::create_dir_all(&dir).expect("dir");
    let (a, b) = {
        let mut db = Db::open(&dir.join("fastim.db")).expect("seed");
        let a = common::seed_account(&mut db, "1001");
        let b = common::seed_account(&mut db, "1002");
        db.add_friend(a.0, b.0, 1).expect("friends");
        (a, b)
    };
    let mut server = Server::start_in(dir.clone(), &[]);
    server.keep_data = true;
    let acked = Arc::new(Mutex::new(Vec::<i64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut ws = connect(&server, a.0, &a.1);
    let sender = {
        let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
        let to = b.0;
        std::thread::spawn(move || {
            let started = Instant::now();
            for i in 0..5_000 {
                if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(30) {
                    break;
                }
                let frame = json!({"cmd": 10, "dstid": to, "media": 1, "content": format!("m{i}"), "ref": format!("r{i}")});
                ws.send(Message::text(frame.to_string())).expect("send");
                let ack = loop {
                    match ws.read().expect("read") {
                        Message::Text(t) => {
                            break serde_json::from_str::<Value>(t.as_str()).expect("json");
                        }
                        _ => continue,
                    }
                };
                assert_eq!(ack["cmd"], 21, "{ack}");
                acked
                    .lock()
                    .expect("lock")
                    .push(ack["id"].as_i64().expect("id"));
            }
        })
    };
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while acked.lock().expect("lock").len() < n {
            assert!(Instant::now() < deadline, "the client stalled");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for(20);
    let work = tempfile::tempdir().expect("temp dir");
    let mid = work.path().join("mid.db");
    let before = acked.lock().expect("lock").clone();
    ok(&["backup", mid.to_str().expect("path")], &dir, "");
    let after = acked.lock().expect("lock").clone();
    wait_for(after.len() + 20);
    stop.store(true, Ordering::Relaxed);
    sender.join().expect("sender");
    let all = acked.lock().expect("lock").clone();

    // The copy taken mid-stream is one commit's state: everything acknowledged before
    // it began, then a gapless run of what followed, nothing out of order.
    let in_mid = ids_for(&mid, b.0);
    assert!(
        in_mid.len() >= before.len(),
        "{} < {}",
        in_mid.len(),
        before.len()
    );
    assert!(in_mid.len() <= after.len() + 1, "at most one in flight");
    assert_eq!(
        in_mid[..],
        all[..in_mid.len()],
        "a prefix of what was acknowledged"
    );

    // A final copy while the server still runs; restore refuses until it stops.
    let last = work.path().join("last.db");
    ok(&["backup", last.to_str().expect("path")], &dir, "");
    fails(
        &["restore", last.to_str().expect("path")],
        &dir,
        "",
        "in use",
    );
    assert!(server.terminate().is_some_and(|s| s.success()));
    // Messages after the backup, to show the restore really replaces the file.
    {
        let mut db = Db::open(&dir.join("fastim.db")).expect("open");
        let extra = fastim::store::Message {
            sender_id: a.0,
            to: Peer::User(b.0),
            media: 1,
            content: "after the backup".into(),
            pic: String::new(),
            url: String::new(),
            memo: String::new(),
            amount: 0,
            client_ref: None,
            id: 0,
            created_at: 0,
            ..fastim::store::Message::new(0, Peer::User(0))
        };
        db.save_messages(&[extra], 1).expect("save");
    }
    let run = ok(&["restore", last.to_str().expect("path")], &dir, "");
    assert!(run.stdout.contains("pre-restore"), "{}", run.stdout);
    assert_eq!(
        ids_for(&dir.join("fastim.db"), b.0),
        all,
        "every acknowledged message"
    );
    let check = ok(&["check", "--json"], &dir, "").json();
    assert_eq!(check["ok"], true, "{check}");
    // The server starts on the restored file and serves the history.
    let server = Server::start_in(dir, &[]);
    let mut ws = connect(&server, b.0, &b.1);
    ws.send(Message::text(
        json!({"cmd": 20, "id": all[all.len() - 2]}).to_string(),
    ))
    .expect("sync");
    let mut got = Vec::new();
    loop {
        if let Message::Text(t) = ws.read().expect("read") {
            let v: Value = serde_json::from_str(t.as_str()).expect("json");
            if v["cmd"] == 23 {
                break;
            }
            got.push(v["id"].as_i64().expect("id"));
        }
    }
    assert_eq!(got, [all[all.len() - 1]]);
}

#[test]
fn check_a_healthy_and_a_corrupted_database_and_stats_count() {
    let dir = fresh_data_dir();
    std::fs::create_dir_all(&dir).expect("dir");
    {
        let mut db = Db::open(&dir.join("fastim.db")).expect("seed");
        let a = common::seed_account(&mut db, "1001").0;
        let b = common::seed_account(&mut db, "1002").0;
        common::seed_account(&mut db, "1003");
        db.add_friend(a, b, 1).expect("friends");
        let group = fastim::store::NewGroup {
            name: "crew".into(),
            ..fastim::store::NewGroup::default()
        };
        let g = db.create_group(a, group, 5, 1).expect("group").id;
        let batch: Vec<_> = (0..400)
            .map(|i| fastim::store::Message {
                sender_id: a,
                to: if i % 2 == 0 {
                    Peer::User(b)
                } else {
                    Peer::Group(g)
                },
                media: 1,
                content: format!("message {i} {}", "x".repeat(200)),
                pic: String::new(),
                url: String::new(),
                memo: String::new(),
                amount: 0,
                client_ref: None,
                id: 0,
                created_at: 0,
                ..fastim::store::Message::new(0, Peer::User(0))
            })
            .collect();
        db.save_messages(&batch, 1).expect("save");
        db.set_blocked(b, true).expect("block");
    }
    let stats = ok(&["admin", "stats", "--json"], &dir, "").json();
    assert_eq!(stats["users"], 3);
    assert_eq!(stats["blocked_users"], 1);
    assert_eq!(stats["groups"], 1);
    assert_eq!(stats["messages"], 400);
    assert_eq!(stats["sessions"], 2, "one per seeded account, b's revoked");
    assert!(
        stats["database_bytes"]
            .as_i64()
            .is_some_and(|n| n > 100_000),
        "{stats}"
    );
    let text = ok(&["admin", "stats"], &dir, "").stdout;
    assert!(text.contains("messages:        400"), "{text}");
    let groups = ok(&["admin", "group", "list", "--json"], &dir, "").json();
    assert_eq!(groups[0]["members"], 1);
    assert_eq!(groups[0]["messages"], 200);

    let run = ok(&["check"], &dir, "");
    assert!(run.stdout.contains("integrity: ok"), "{}", run.stdout);
    let version = format!("schema version: {}", fastim::store::schema::LATEST);
    assert!(run.stdout.contains(&version), "{}", run.stdout);

    // A copy with a scribbled middle fails the check.
    let work = tempfile::tempdir().expect("temp dir");
    let copy = work.path().join("copy.db");
    ok(&["backup", copy.to_str().expect("path")], &dir, "");
    let broken: PathBuf = work.path().join("broken");
    std::fs::create_dir_all(&broken).expect("dir");
    let mut bytes = std::fs::read(&copy).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid..mid + 3000].fill(0x5a);
    std::fs::write(broken.join("fastim.db"), &bytes).expect("write");
    let run = fastim(&["check"], &broken, "");
    assert!(!run.ok, "{}", run.stdout);
    assert!(run.stderr.contains("fastim.db"), "{}", run.stderr);
    // And restore refuses it.
    fails(
        &["restore", broken.join("fastim.db").to_str().expect("path")],
        &dir,
        "",
        "restore from",
    );
    ok(
        &["admin", "group", "delete", &groups[0]["id"].to_string()],
        &dir,
        "",
    );
    assert_eq!(
        ok(&["admin", "stats", "--json"], &dir, "").json()["messages"],
        200
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits for the server's close frame on `ws` (the read timeout bounds it): its code
/// and reason, and how long it took.
fn closed_by_server(ws: &mut Ws) -> (u16, String, Duration) {
    let started = Instant::now();
    loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => {
                return (
                    u16::from(frame.code),
                    frame.reason.as_str().to_owned(),
                    started.elapsed(),
                );
            }
            Ok(Message::Close(None)) => panic!("a close frame without a code"),
            Ok(_) => {}
            Err(e) => panic!("no close frame within the read timeout: {e}"),
        }
    }
}

/// The socket is open: a heartbeat is answered.
fn answers(ws: &mut Ws) {
    ws.send(Message::text(r#"{"cmd":0}"#))
        .expect("send heartbeat");
    loop {
        match ws.read().expect("the socket is open") {
            Message::Text(t) => {
                assert_eq!(t.as_str(), r#"{"cmd":0}"#);
                return;
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected the heartbeat's answer, got {other:?}"),
        }
    }
}

/// The upgrade with this session is refused with 401.
fn refused(server: &Server, id: i64, token: &str) {
    let url = server.url(&format!("/chat?id={id}&token={token}"));
    match tungstenite::connect(url) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        Err(e) => panic!("expected 401, got {e}"),
        Ok(_) => panic!("the upgrade was accepted"),
    }
}

/// The close the server sends when an administrator ends a socket's right to exist.
fn assert_closed(ws: &mut Ws, reason: &str) {
    let (code, why, took) = closed_by_server(ws);
    assert_eq!((code, why.as_str()), (1008, reason));
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
}

#[test]
fn a_running_server_closes_the_sockets_of_blocked_deleted_and_revoked_users() {
    let dir = fresh_data_dir();
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("fastim.db");
    let mut db = Db::open(&path).expect("open");
    let (ann, phone) = common::seed_account(&mut db, "13800000001");
    let laptop = fastim::secret::new_token();
    db.create_session(ann, fastim::secret::token_digest(&laptop), i64::MAX / 2)
        .expect("second device");
    let (bob, bob_token) = common::seed_account(&mut db, "13800000002");
    let (carol, carol_token) = common::seed_account(&mut db, "13800000003");
    let (dave, dave_token) = common::seed_account(&mut db, "13800000004");
    let (erin, erin_token) = common::seed_account(&mut db, "13800000005");
    db.add_friend(ann, carol, 1).expect("friends");
    drop(db);
    let server = Server::start_in(dir.clone(), NO_THROTTLE);
    let mut ann_phone = connect(&server, ann, &phone);
    let mut ann_laptop = connect(&server, ann, &laptop);
    let mut bob_ws = connect(&server, bob, &bob_token);
    let mut carol_ws = connect(&server, carol, &carol_token);
    let mut dave_ws = connect(&server, dave, &dave_token);
    let mut erin_ws = connect(&server, erin, &erin_token);
    for ws in [&mut ann_phone, &mut ann_laptop, &mut bob_ws] {
        answers(ws);
    }

    // One session of ann's: that device closes, her other one stays.
    let name = fastim::store::admin::session_name(&fastim::secret::token_digest(&phone));
    let listed = ok(
        &["admin", "session", "list", "13800000001", "--json"],
        &dir,
        "",
    )
    .json();
    let ids: Vec<&str> = listed
        .as_array()
        .expect("sessions")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert!(ids.contains(&name.as_str()) && ids.len() == 2, "{listed}");
    fails(
        &[
            "admin",
            "session",
            "revoke",
            "13800000002",
            "--session",
            &name,
        ],
        &dir,
        "",
        "has no session",
    );
    ok(
        &[
            "admin",
            "session",
            "revoke",
            "13800000001",
            "--session",
            &name,
        ],
        &dir,
        "",
    );
    assert_closed(&mut ann_phone, "session revoked");
    answers(&mut ann_laptop);
    refused(&server, ann, &phone);
    connect(&server, ann, &laptop);

    // Blocked: closed, and cannot come back.
    ok(&["admin", "user", "block", "13800000002"], &dir, "");
    assert_closed(&mut bob_ws, "account blocked");
    refused(&server, bob, &bob_token);
    answers(&mut ann_laptop);

    // Deleted: closed, and forgotten (ann, a friend, can no longer write to carol).
    ok(&["admin", "user", "delete", "13800000003"], &dir, "");
    assert_closed(&mut carol_ws, "account deleted");
    refused(&server, carol, &carol_token);
    ann_laptop
        .send(Message::text(
            json!({"cmd": 10, "dstid": carol, "content": "still there?", "ref": "c1"}).to_string(),
        ))
        .expect("send");
    let reply: Value = match ann_laptop.read().expect("reply") {
        Message::Text(t) => serde_json::from_str(t.as_str()).expect("json"),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (reply["cmd"].clone(), reply["code"].clone()),
        (json!(22), json!(403)),
        "{reply}"
    );

    // A new password ends every session of the user.
    ok(
        &["admin", "user", "passwd", "13800000004"],
        &dir,
        "new-password-4\n",
    );
    assert_closed(&mut dave_ws, "password changed");
    answers(&mut erin_ws);

    // Everyone.
    ok(&["admin", "session", "revoke", "--all"], &dir, "");
    assert_closed(&mut ann_laptop, "session revoked");
    assert_closed(&mut erin_ws, "session revoked");
    refused(&server, erin, &erin_token);
}
