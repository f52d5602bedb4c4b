#![no_main]
//! Chat frames, as a client may send them on `/chat`, parsed and applied to a small
//! loop index: four users, two groups, two friendships, five connections.
//!
//! Frames are built from structured values (each field absent, a number, a numeric
//! string, a float, a bool, null, an object...) so that most reach the commands'
//! own checks, plus raw text for the JSON reader. Whatever comes in:
//! - parsing and applying never panic;
//! - a refusal is a `cmd 22` frame that is valid JSON, with a 4xx code;
//! - a message to store comes from the connection's user, within the limits, to a
//!   peer the index allows, and its delivery is valid JSON;
//! - a recall or an edit is asked by the connection's user, for a positive id;
//! - a fan-out goes only to open connections, each once, as valid JSON;
//! - every reply is valid JSON.

use std::time::{Duration, Instant};

use fastim::im::cmd::{Ctx, MAX_CONTENT_CHARS, MAX_MEMO_CHARS, MAX_URL_LEN, Produced, parse};
use fastim::im::index::ChatIndex;
use fastim::im::wire::delivery_json;
use fastim::store::{Peer, SendRight};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Number, Value};

/// A field's value, in the forms clients send.
#[derive(Arbitrary, Debug)]
enum Field {
    Small(i8),
    Int(i64),
    NumText(i32),
    Text(String),
    Float(f64),
    Bool(bool),
    Null,
    Object,
    Long(u16),
}

impl Field {
    fn json(&self) -> Value {
        match self {
            Field::Small(n) => Value::from(*n),
            Field::Int(n) => Value::from(*n),
            Field::NumText(n) => Value::from(n.to_string()),
            Field::Text(s) => Value::from(s.as_str()),
            Field::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Field::Bool(b) => Value::from(*b),
            Field::Null => Value::Null,
            Field::Object => serde_json::json!({"a": [1, "b"]}),
            Field::Long(n) => Value::from("é".repeat(usize::from(*n) % 5000)),
        }
    }
}

/// One frame from one of the connections, and what happens around it.
#[derive(Arbitrary, Debug)]
struct Frame {
    conn: u8,
    cmd: Option<Field>,
    fields: Vec<(u8, Field)>,
    raw: Option<String>,
    advance_ms: u16,
    reconnect: bool,
}

const NAMES: [&str; 12] = [
    "id", "dstid", "media", "content", "pic", "url", "memo", "amount", "ref", "batch", "userid",
    "reply",
];
/// Connection → user.
const CONNS: [(usize, i64); 5] = [(0, 1), (1, 1), (2, 2), (3, 3), (4, 4)];
/// The command numbers, so that most frames name one.
const CMDS: [i64; 12] = [0, 10, 11, 12, 13, 14, 15, 16, 17, 20, 24, 99];

fn index() -> ChatIndex {
    let mut index =
        ChatIndex::new([(1, 1), (1, 2), (1, 3), (2, 2), (2, 4)]).with_friends([(1, 2), (3, 4)]);
    for (conn, user) in CONNS {
        index.connect(user, conn);
    }
    index
}

fn text_of(frame: &Frame) -> String {
    if let Some(raw) = &frame.raw {
        return raw.clone();
    }
    let mut map = Map::new();
    if let Some(cmd) = &frame.cmd {
        let value = match cmd {
            Field::Small(n) => Value::from(CMDS[usize::from(n.unsigned_abs()) % CMDS.len()]),
            other => other.json(),
        };
        map.insert("cmd".to_owned(), value);
    }
    for (name, value) in frame.fields.iter().take(12) {
        let name = NAMES[usize::from(*name) % NAMES.len()];
        let value = match (name, value) {
            // Small ids, so that rights are granted as often as refused.
            ("dstid" | "id" | "reply", Field::Small(n)) => Value::from(i64::from(*n % 6)),
            _ => value.json(),
        };
        map.insert(name.to_owned(), value);
    }
    Value::Object(map).to_string()
}

fn valid_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fuzz_target!(|frames: Vec<Frame>| {
    let mut index = index();
    let mut now = Instant::now();
    for frame in frames.iter().take(32) {
        let (conn, user) = CONNS[usize::from(frame.conn) % CONNS.len()];
        now += Duration::from_millis(u64::from(frame.advance_ms));
        if frame.reconnect {
            index.disconnect(user, conn);
            index.connect(user, conn);
        }
        let text = text_of(frame);
        let command = match parse(&text) {
            Ok(command) => command,
            Err(e) => {
                assert!((400..500).contains(&e.code), "code {} for {text}", e.code);
                let reply = valid_json(&e.to_json());
                assert_eq!(reply["cmd"], 22, "{reply}");
                continue;
            }
        };
        let mut ctx = Ctx {
            conn,
            user,
            index: &mut index,
            now,
        };
        match command.apply(&mut ctx) {
            Produced::Nothing | Produced::Sync(_) => {}
            Produced::Change(change) => {
                assert_eq!(
                    change.user, user,
                    "a change is asked by the connection's user"
                );
                assert!(change.id > 0, "{text}");
            }
            Produced::Reply(text) => {
                valid_json(&text);
            }
            Produced::Store(m) => {
                assert_eq!(m.sender_id, user, "{text}");
                assert!(m.content.chars().count() <= MAX_CONTENT_CHARS);
                assert!(m.memo.chars().count() <= MAX_MEMO_CHARS);
                assert!(m.url.len() <= MAX_URL_LEN && m.pic.len() <= MAX_URL_LEN);
                assert!((1..=99).contains(&m.media), "media {}", m.media);
                assert!(matches!(m.to, Peer::User(id) | Peer::Group(id) if id > 0));
                assert_eq!(index.right(user, m.to), SendRight::Allowed, "{text}");
                valid_json(&delivery_json(&m));
            }
            Produced::FanOut(fanouts) => {
                for f in fanouts {
                    let mut to = f.to.clone();
                    to.sort_unstable();
                    to.dedup();
                    assert_eq!(to.len(), f.to.len(), "each recipient once: {text}");
                    for c in &f.to {
                        assert!(index.user_of(*c).is_some(), "to an open connection");
                    }
                    valid_json(&f.text);
                }
            }
        }
    }
});
