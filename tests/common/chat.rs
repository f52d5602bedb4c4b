//! A `/chat` client for the chat tests: a seeded account's socket, JSON frames in
//! and out, with read deadlines.

use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use fastim::store::Db;

use serde_json::Value;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use super::Server;

/// A new database in `data_dir` (created if missing) with an account for each of
/// `mobiles` ([`super::seed_account`]: no Argon2), in order; the database stays open
/// for the test's friendships and groups.
pub fn seed_accounts<const N: usize>(data_dir: &Path, mobiles: [&str; N]) -> (Db, [Account; N]) {
    std::fs::create_dir_all(data_dir).expect("data dir");
    let mut db = Db::open(&data_dir.join("fastim.db")).expect("open db");
    let accounts = mobiles.map(|mobile| {
        let (id, token) = super::seed_account(&mut db, mobile);
        Account { id, token }
    });
    (db, accounts)
}

/// A `/chat` socket.
pub type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

/// A seeded user: id and a live session token.
#[derive(Clone, Debug)]
pub struct Account {
    pub id: i64,
    pub token: String,
}

impl Account {
    /// Makes this account and `other` friends by request and acceptance
    /// ([`super::befriend`]).
    pub fn befriend(&self, server: &Server, other: &Account) {
        super::befriend(
            server.addr,
            (self.id, &self.token),
            (other.id, &other.token),
        );
    }
}

/// How long a read waits unless a test says otherwise.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// `who`'s chat socket, upgraded (101), reads bounded by 10 s.
pub fn connect(server: &Server, who: &Account) -> Ws {
    let url = server.url(&format!("/chat?id={}&token={}", who.id, who.token));
    let (ws, response) = tungstenite::connect(url).expect("chat upgrade");
    assert_eq!(response.status(), 101);
    set_timeout(&ws, READ_TIMEOUT);
    ws
}

/// Bounds the socket's reads.
pub fn set_timeout(ws: &Ws, wait: Duration) {
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(wait)).expect("timeout");
    }
}

/// Sends `value` as a text frame.
pub fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string())).expect("send");
}

/// The next JSON text frame (pings and pongs are skipped).
pub fn recv(ws: &mut Ws) -> Value {
    loop {
        match ws.read().expect("read") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The next JSON text frame within `wait`, if any.
pub fn within(ws: &mut Ws, wait: Duration) -> Option<Value> {
    within_skipping(ws, wait, |_| false)
}

/// The next JSON text frame within `wait` for which `skip` is false, if any.
pub fn within_skipping(
    ws: &mut Ws,
    wait: Duration,
    skip: impl Fn(&Value) -> bool,
) -> Option<Value> {
    set_timeout(ws, wait);
    let got = loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
                if !skip(&v) {
                    break Some(v);
                }
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break None;
            }
            Err(e) => panic!("read: {e}"),
        }
    };
    set_timeout(ws, READ_TIMEOUT);
    got
}
