//! The frame inspector and `--trace-frames`: what a connection's bytes look like
//! frame by frame, in the log and on the inspector page (`/inspector/`).
//!
//! A watched connection carries a [`Traced`] beside its socket, created at accept
//! when either flag is on. The driver hands it the bytes it reads, before the
//! connection unmasks them, and the bytes the socket took, as it writes them
//! ([`flush_out`]); its [`Tap`] turns them into the handshake heads and frame
//! records ([`crate::ws::inspect`]). With `--trace-frames` each becomes a log line
//! at once. For the inspector, an `/echo?trace=TOKEN` connection's records are
//! queued as JSON (bounded) and moved to the observer's feed
//! (`/inspector/feed`) after the read turn or flush that produced them. A
//! connection neither flag wants to watch drops its `Traced` after its first
//! request head; a connection without one pays one branch per read and per flush.
//!
//! The [`Hub`] pairs feeds and traced echoes: a feed gets a short-lived,
//! single-use token; the echo that presents it is watched by that feed alone; a
//! feed watches one echo at a time. Commands from the page (a server ping, the
//! next echo in fragments) reach the loop through [`Services::inspector`] and run
//! here, on the same thread as both connections.
//!
//! [`Services::inspector`]: super::lifecycle::Services::inspector

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use log::info;
use serde_json::json;

use super::Server;
use super::conn::Conn;
use super::lifecycle::Verdict;
use super::outbound::Flushed;
use super::workers::ConnRef;
use crate::ws::inspect::{self, Direction, FrameRecord, Seen, Tap};
use crate::ws::{CloseCode, Limits, Message, Spares};

/// Payload bytes a feed record shows of a data frame (a control frame's are all shown).
pub const FEED_PREFIX: usize = inspect::MAX_PREFIX;

/// Feeds open at once; one more is closed with 1013.
pub const MAX_FEEDS: usize = 32;

/// How long a feed's token may wait for its echo connection.
pub const TOKEN_TTL: Duration = Duration::from_secs(30);

/// Records a traced connection keeps for its feed between two deliveries.
pub const MAX_QUEUED: usize = 256;

/// Bytes a feed may have waiting for its page before records are dropped (and
/// the page told how many).
pub const FEED_BACKLOG: usize = 256 * 1024;

/// Most fragments the inspector's fragmented echo is split into: a message
/// longer than this many fragments of the asked size gets larger fragments.
pub const MAX_FRAGMENTS: usize = 1024;

/// Largest fragment size a page may ask for.
pub const MAX_FRAGMENT_SIZE: u32 = 1 << 20;

/// The feed's messages are small JSON commands.
pub const FEED_LIMITS: Limits = Limits {
    max_frame: 4096,
    max_message: 4096,
};

/// What an inspector page asks of the server, or the loop's own notice that a
/// feed opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// A feed connection has just opened (sent by the connection itself).
    Open,
    /// `{"cmd":"token"}`: a new token, for a new echo connection.
    Token,
    /// `{"cmd":"ping","payload":"…"}`: the server pings the traced echo.
    Ping(Vec<u8>),
    /// `{"cmd":"fragment","size":N}`: the next echo goes out in fragments of N bytes.
    Fragment(u32),
    /// `{"cmd":"keepalive"}`: nothing; keeps an idle feed open.
    Keepalive,
}

impl Command {
    /// A command from a feed message, or the reason it is refused.
    pub fn parse(message: Message<'_>) -> Result<Command, String> {
        let Message::Text(text) = message else {
            return Err("commands are JSON text messages".to_owned());
        };
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        match v.get("cmd").and_then(|c| c.as_str()) {
            Some("token") => Ok(Command::Token),
            Some("keepalive") => Ok(Command::Keepalive),
            Some("ping") => {
                let payload = match v.get("payload") {
                    None | Some(serde_json::Value::Null) => "",
                    Some(p) => p.as_str().ok_or("payload must be a string")?,
                };
                if payload.len() > crate::ws::frame::MAX_CONTROL_PAYLOAD {
                    return Err(
                        "a ping carries at most 125 bytes (RFC 6455 §5.5): shorten the payload"
                            .to_owned(),
                    );
                }
                Ok(Command::Ping(payload.as_bytes().to_vec()))
            }
            Some("fragment") => match v.get("size").and_then(|s| s.as_u64()) {
                Some(n) if n >= 1 && n <= u64::from(MAX_FRAGMENT_SIZE) => {
                    Ok(Command::Fragment(n as u32))
                }
                _ => Err(format!(
                    "size must be a number of bytes from 1 to {MAX_FRAGMENT_SIZE}"
                )),
            },
            Some(other) => Err(format!(
                "unknown cmd {other:?}: use token, ping, fragment or keepalive"
            )),
            None => Err("a command needs a \"cmd\" string".to_owned()),
        }
    }
}

/// `{"type":"error","msg":…}` for the page.
pub fn error_json(msg: &str) -> String {
    json!({"type": "error", "msg": msg}).to_string()
}

/// A frame record as the feed sends it.
pub fn frame_json(dir: Direction, r: &FrameRecord) -> String {
    let unmasked = r.unmasked();
    let close = r.close();
    json!({
        "type": "frame",
        "from": dir.sender(),
        "seq": r.seq,
        "header": inspect::hex(r.header_bytes()),
        "fin": r.fin,
        "rsv1": r.rsv1(),
        "rsv2": r.rsv2(),
        "rsv3": r.rsv3(),
        "opcode": r.opcode,
        "opcode_name": r.opcode_name(),
        "masked": r.mask.is_some(),
        "mask_key": r.mask.map(|k| inspect::hex(&k)),
        "payload_len": r.payload_len,
        "length_form": r.length_form.name(),
        "compressed": r.compressed,
        "shown": r.prefix.len(),
        "payload_masked": r.mask.map(|_| inspect::hex(&r.prefix)),
        "payload": inspect::hex(&unmasked),
        "text": if r.compressed { None } else { Some(inspect::preview_text(&unmasked)) },
        "close_code": close.as_ref().and_then(|c| c.0),
        "close_reason": close.map(|c| c.1),
    })
    .to_string()
}

/// What a watched connection's observations go to.
#[derive(Debug)]
struct Sink {
    /// The slab key, for log lines.
    key: usize,
    /// `--trace-frames`: every observation is logged.
    log: bool,
    /// `--inspector`: an `/echo?trace=` request may be watched by a feed.
    inspector: bool,
    /// The request presented this token; the loop looks it up after the turn.
    token: Option<String>,
    /// Records are queued for a feed (the request had a token).
    for_feed: bool,
    /// The feed that watches this connection.
    feed: Option<ConnRef>,
    /// JSON for the feed, oldest first.
    queue: VecDeque<String>,
    /// Records not shown because the page could not keep up.
    dropped: u64,
    /// The handshake completed (for the last log line).
    upgraded: bool,
    /// Something for the loop: a token to look up, records to move, the end.
    attention: bool,
}

impl Sink {
    fn seen(&mut self, seen: Seen) {
        let key = self.key;
        match &seen {
            Seen::Request { head, path, trace } => {
                // Whatever it is, the loop decides now whether to keep watching.
                self.attention = true;
                if self.log {
                    info!(
                        "#{key} handshake C→S request head ({} bytes):\n{}",
                        head.len(),
                        indent(head)
                    );
                }
                if self.inspector && path == "/echo" {
                    if let Some(token) = trace {
                        self.token = Some(token.clone());
                        self.for_feed = true;
                    }
                }
            }
            Seen::Response { head, status, .. } => {
                self.upgraded = *status == 101;
                if self.log {
                    info!(
                        "#{key} handshake S→C response head ({status}, {} bytes):\n{}",
                        head.len(),
                        indent(head)
                    );
                }
            }
            Seen::Frame(dir, record) => {
                if self.log {
                    info!("#{key} {} {record}", dir.arrow());
                }
            }
            Seen::Skipped(n) => {
                if self.log {
                    info!("#{key} C→S {n} frames sent before the response are not shown");
                }
            }
            Seen::Untraced => {
                self.attention = true;
            }
        }
        if self.for_feed {
            let json = match seen {
                Seen::Request { head, .. } => {
                    json!({"type": "handshake", "from": "client", "head": head}).to_string()
                }
                Seen::Response {
                    head,
                    status,
                    deflate,
                } => json!({
                    "type": "handshake", "from": "server", "head": head,
                    "status": status, "deflate": deflate,
                })
                .to_string(),
                Seen::Frame(dir, record) => frame_json(dir, &record),
                Seen::Skipped(n) => {
                    self.dropped += n;
                    return;
                }
                Seen::Untraced => return,
            };
            if self.queue.len() >= MAX_QUEUED {
                self.dropped += 1;
            } else {
                self.queue.push_back(json);
            }
            self.attention = true;
        }
    }
}

/// A watched connection: its tap and where the observations go.
#[derive(Debug)]
pub struct Traced {
    tap: Tap,
    sink: Sink,
}

impl Traced {
    /// A connection just accepted at `key`; `log` for `--trace-frames`,
    /// `inspector` for `--inspector`.
    pub fn new(key: usize, log: bool, inspector: bool) -> Box<Traced> {
        Box::new(Traced {
            tap: Tap::new(if inspector {
                FEED_PREFIX
            } else {
                inspect::LOG_PREFIX
            }),
            sink: Sink {
                key,
                log,
                inspector,
                token: None,
                for_feed: false,
                feed: None,
                queue: VecDeque::new(),
                dropped: 0,
                upgraded: false,
                attention: false,
            },
        })
    }

    /// Bytes just read from the client, before the connection handles them.
    pub fn input(&mut self, bytes: &[u8]) {
        let sink = &mut self.sink;
        self.tap.input(bytes, |s| sink.seen(s));
    }

    /// Bytes the socket just took.
    pub fn output(&mut self, bytes: &[u8]) {
        let sink = &mut self.sink;
        self.tap.output(bytes, |s| sink.seen(s));
    }

    /// Whether the loop has something to do for it.
    pub fn wants_attention(&self) -> bool {
        self.sink.attention
    }

    /// Whether it can go: nothing more to see, or nobody to show it to.
    fn idle(&self) -> bool {
        (self.tap.is_done() || !self.sink.log && !self.sink.for_feed)
            && self.sink.queue.is_empty()
            && self.sink.feed.is_none()
    }
}

fn indent(head: &str) -> String {
    head.trim_end()
        .split("\r\n")
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Writes a connection's queue to its socket, through its tap if it is watched;
/// `keep` keeps the queue's buffer (a lent queue, [`Outbound::flush_keeping`]).
///
/// [`Outbound::flush_keeping`]: super::outbound::Outbound::flush_keeping
pub fn flush_out(conn: &mut Conn, spares: &mut Spares, keep: bool) -> io::Result<Flushed> {
    let (mut transport, tap, life) = conn.flush_parts();
    match tap {
        None => transport.flush(&mut life.out, spares, keep),
        // What the connection sent, before any TLS: the frames themselves.
        Some(traced) => transport.flush_observed(&mut life.out, spares, keep, |b| traced.output(b)),
    }
}

/// One feed: its token and the echo it watches.
#[derive(Debug)]
struct Feed {
    conn: ConnRef,
    token: Option<(String, Instant)>,
    traced: Option<ConnRef>,
}

/// The open feeds and their tokens, plus the commands of this turn.
#[derive(Debug, Default)]
pub struct Hub {
    /// Commands queued by feed connections during a turn, run after it.
    pub commands: Vec<(ConnRef, Command)>,
    feeds: Vec<Feed>,
}

/// A token: 16 random bytes, base64url (22 characters).
fn new_token() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Hub {
    fn feed_mut(&mut self, conn: ConnRef) -> Option<&mut Feed> {
        self.feeds.iter_mut().find(|f| f.conn == conn)
    }

    /// Registers a feed and gives it a token, or refuses it when too many are open.
    fn open(&mut self, conn: ConnRef, now: Instant) -> Option<String> {
        if self.feeds.len() >= MAX_FEEDS {
            return None;
        }
        let token = new_token();
        self.feeds.push(Feed {
            conn,
            token: Some((token.clone(), now + TOKEN_TTL)),
            traced: None,
        });
        Some(token)
    }

    /// A fresh token for a feed that watches nothing.
    fn renew(&mut self, conn: ConnRef, now: Instant) -> Result<String, &'static str> {
        let feed = self.feed_mut(conn).ok_or("this is not an open feed")?;
        if feed.traced.is_some() {
            return Err("this feed already watches an echo connection: close it first");
        }
        let token = new_token();
        feed.token = Some((token.clone(), now + TOKEN_TTL));
        Ok(token)
    }

    /// The feed whose unexpired token this is; the token is used up.
    fn bind(&mut self, token: &str, traced: ConnRef, now: Instant) -> Option<ConnRef> {
        let feed = self.feeds.iter_mut().find(|f| {
            f.traced.is_none()
                && f.token
                    .as_ref()
                    .is_some_and(|(t, until)| t == token && now < *until)
        })?;
        feed.token = None;
        feed.traced = Some(traced);
        Some(feed.conn)
    }

    fn traced_by(&self, feed: ConnRef) -> Option<ConnRef> {
        self.feeds.iter().find(|f| f.conn == feed)?.traced
    }
}

impl Server {
    /// After a read turn or a flush of `key`, with a flag on: runs the feeds'
    /// commands, then settles what the connection's tap saw.
    pub(super) fn inspector_turn(&mut self, key: usize) {
        if !self.inspector.commands.is_empty() {
            for (feed, command) in std::mem::take(&mut self.inspector.commands) {
                self.run_command(feed, command);
            }
        }
        let now = self.now;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let serial = conn.serial;
        let Some(traced) = conn.tap_mut() else {
            return;
        };
        if !traced.wants_attention() {
            return;
        }
        traced.sink.attention = false;
        if let Some(token) = traced.sink.token.take() {
            match self.inspector.bind(&token, ConnRef { key, serial }, now) {
                Some(feed) => traced.sink.feed = Some(feed),
                None => {
                    traced.sink.for_feed = false;
                    traced.sink.queue.clear();
                    self.close_with(
                        key,
                        CloseCode::POLICY_VIOLATION,
                        "unknown or expired trace token",
                    );
                }
            }
        }
        self.deliver_records(key);
        if let Some(conn) = self.conns.get_mut(key) {
            if conn.tap().is_some_and(|t| t.idle()) {
                conn.set_tap(None);
            }
        }
    }

    /// Moves a traced connection's queued records to its feed.
    fn deliver_records(&mut self, key: usize) {
        let Some(traced) = self.conns.get_mut(key).and_then(|c| c.tap_mut()) else {
            return;
        };
        let Some(feed) = traced.sink.feed else {
            return;
        };
        if traced.sink.queue.is_empty() && traced.sink.dropped == 0 {
            return;
        }
        let queue = std::mem::take(&mut traced.sink.queue);
        let mut dropped = std::mem::take(&mut traced.sink.dropped);
        let Some(out) = self
            .conns
            .get_mut(feed.key)
            .filter(|c| c.serial == feed.serial)
        else {
            return;
        };
        for json in queue {
            if out.life.out.len() > FEED_BACKLOG {
                dropped += 1;
                continue;
            }
            if dropped > 0 {
                out.life
                    .send_text(&json!({"type": "dropped", "frames": dropped}).to_string());
                dropped = 0;
            }
            out.life.send_text(&json);
        }
        if dropped > 0 && out.life.out.len() <= FEED_BACKLOG {
            // Said at once, not only before the next record.
            out.life
                .send_text(&json!({"type": "dropped", "frames": dropped}).to_string());
            dropped = 0;
        }
        if let Some(traced) = self.conns.get_mut(key).and_then(|c| c.tap_mut()) {
            traced.sink.dropped += dropped;
        }
        self.feed_out(feed.key);
    }

    /// Sends what was queued for a feed now: its page is watching.
    fn feed_out(&mut self, key: usize) {
        self.settle(key, Verdict::Keep);
        self.flush(key);
    }

    fn send_to_feed(&mut self, feed: ConnRef, json: &str) {
        if let Some(c) = self
            .conns
            .get_mut(feed.key)
            .filter(|c| c.serial == feed.serial)
        {
            c.life.send_text(json);
            self.feed_out(feed.key);
        }
    }

    fn run_command(&mut self, feed: ConnRef, command: Command) {
        let now = self.now;
        let token_json = |token: &str| {
            json!({
                "type": "token", "token": token,
                "expires_in_ms": TOKEN_TTL.as_millis() as u64,
                "echo": format!("/echo?trace={token}"),
            })
            .to_string()
        };
        match command {
            Command::Open => match self.inspector.open(feed, now) {
                Some(token) => self.send_to_feed(feed, &token_json(&token)),
                None => self.close_with(
                    feed.key,
                    CloseCode(1013),
                    "too many inspectors are open; try again later",
                ),
            },
            Command::Token => match self.inspector.renew(feed, now) {
                Ok(token) => self.send_to_feed(feed, &token_json(&token)),
                Err(msg) => self.send_to_feed(feed, &error_json(msg)),
            },
            Command::Keepalive => {}
            Command::Ping(payload) => {
                let sent = self
                    .inspector
                    .traced_by(feed)
                    .ok_or("no echo connection is watched yet")
                    .and_then(|t| {
                        let c = self
                            .conns
                            .get_mut(t.key)
                            .filter(|c| c.serial == t.serial)
                            .ok_or("the echo connection is gone")?;
                        c.life.send_ping(&payload).map_err(
                            |_| "the echo connection is closing: nothing more may be sent",
                        )?;
                        Ok(t.key)
                    });
                match sent {
                    Ok(key) => {
                        self.settle(key, Verdict::Keep);
                        self.flush(key);
                    }
                    Err(msg) => self.send_to_feed(feed, &error_json(msg)),
                }
            }
            Command::Fragment(size) => {
                let set = self
                    .inspector
                    .traced_by(feed)
                    .ok_or("no echo connection is watched yet")
                    .and_then(|t| {
                        let c = self
                            .conns
                            .get_mut(t.key)
                            .filter(|c| c.serial == t.serial)
                            .ok_or("the echo connection is gone")?;
                        c.life.fragment_next_echo(size);
                        Ok(())
                    });
                let reply = match set {
                    Ok(()) => json!({
                        "type": "ok", "cmd": "fragment", "size": size,
                        "msg": format!("the next echo goes out in fragments of {size} bytes"),
                    })
                    .to_string(),
                    Err(msg) => error_json(msg),
                };
                self.send_to_feed(feed, &reply);
            }
        }
    }

    /// A connection left the slab: its feed hears of it, or its traced echo is
    /// no longer watched.
    pub(super) fn inspector_removed(&mut self, key: usize, conn: &mut Conn) {
        if let Some(mut traced) = conn.take_tap() {
            if traced.sink.log && traced.sink.upgraded {
                info!("#{key} TCP connection closed");
            }
            if let Some(feed) = traced.sink.feed {
                traced.sink.queue.push_back(
                    json!({"type": "closed", "msg": "the TCP connection is closed"}).to_string(),
                );
                let queue = std::mem::take(&mut traced.sink.queue);
                if let Some(f) = self.inspector.feed_mut(feed) {
                    f.traced = None;
                }
                if let Some(out) = self
                    .conns
                    .get_mut(feed.key)
                    .filter(|c| c.serial == feed.serial)
                {
                    for json in queue {
                        out.life.send_text(&json);
                    }
                    self.feed_out(feed.key);
                }
            }
        }
        let me = ConnRef {
            key,
            serial: conn.serial,
        };
        let Some(i) = self.inspector.feeds.iter().position(|f| f.conn == me) else {
            return;
        };
        let feed = self.inspector.feeds.swap_remove(i);
        if let Some(t) = feed.traced {
            if let Some(c) = self.conns.get_mut(t.key).filter(|c| c.serial == t.serial) {
                let idle = c.tap_mut().is_some_and(|traced| {
                    traced.sink.feed = None;
                    traced.sink.for_feed = false;
                    traced.sink.queue.clear();
                    traced.idle()
                });
                if idle {
                    c.set_tap(None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_or_say_why_not() {
        let parse = |s: &str| Command::parse(Message::Text(s));
        assert_eq!(parse(r#"{"cmd":"token"}"#), Ok(Command::Token));
        assert_eq!(parse(r#"{"cmd":"keepalive"}"#), Ok(Command::Keepalive));
        assert_eq!(
            parse(r#"{"cmd":"ping","payload":"hi"}"#),
            Ok(Command::Ping(b"hi".to_vec()))
        );
        assert_eq!(parse(r#"{"cmd":"ping"}"#), Ok(Command::Ping(Vec::new())));
        assert_eq!(
            parse(r#"{"cmd":"fragment","size":3}"#),
            Ok(Command::Fragment(3))
        );
        for (bad, why) in [
            ("nope", "not JSON"),
            ("{}", "needs a \"cmd\""),
            (r#"{"cmd":"open"}"#, "unknown cmd"),
            (r#"{"cmd":"fragment","size":0}"#, "size must be"),
            (r#"{"cmd":"fragment","size":"3"}"#, "size must be"),
            (r#"{"cmd":"fragment","size":2000000}"#, "size must be"),
            (r#"{"cmd":"ping","payload":7}"#, "must be a string"),
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
        let long = format!(r#"{{"cmd":"ping","payload":"{}"}}"#, "x".repeat(126));
        assert!(parse(&long).expect_err("too long").contains("125 bytes"));
        assert!(Command::parse(Message::Binary(b"{}")).is_err());
    }

    #[test]
    fn tokens_are_single_use_short_lived_and_one_echo_per_feed() {
        let t0 = Instant::now();
        let mut hub = Hub::default();
        let feed = ConnRef { key: 1, serial: 1 };
        let echo = ConnRef { key: 2, serial: 2 };
        let token = hub.open(feed, t0).expect("room");
        assert_eq!(token.len(), 22);
        assert_eq!(hub.bind("wrong", echo, t0), None);
        assert_eq!(hub.bind(&token, echo, t0), Some(feed));
        assert_eq!(hub.bind(&token, echo, t0), None, "used up");
        assert_eq!(hub.traced_by(feed), Some(echo));
        assert!(hub.renew(feed, t0).is_err(), "one echo at a time");
        hub.feed_mut(feed).expect("open").traced = None;
        let late = hub.renew(feed, t0).expect("free again");
        assert_ne!(late, token);
        assert_eq!(hub.bind(&late, echo, t0 + TOKEN_TTL), None, "expired");
        for key in 0..MAX_FEEDS {
            let _ = hub.open(
                ConnRef {
                    key: 100 + key,
                    serial: 0,
                },
                t0,
            );
        }
        assert_eq!(hub.feeds.len(), MAX_FEEDS);
        assert_eq!(
            hub.open(
                ConnRef {
                    key: 999,
                    serial: 0
                },
                t0
            ),
            None
        );
    }

    fn upgrade(target: &str) -> String {
        format!(
            "GET {target} HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    }

    #[test]
    fn connections_nobody_watches_let_go_after_their_first_head() {
        // --inspector alone: an untraced echo, a chat, plain HTTP.
        for request in [
            upgrade("/echo"),
            upgrade("/chat?token=x"),
            upgrade("/inspector/feed"),
            "GET / HTTP/1.1\r\nHost: h\r\n\r\n".to_owned(),
        ] {
            let mut t = Traced::new(1, false, true);
            t.input(request.as_bytes());
            assert!(t.wants_attention() && t.idle(), "{request}");
        }
        // A traced echo is kept, and so is everything under --trace-frames but plain HTTP.
        let mut t = Traced::new(1, false, true);
        t.input(upgrade("/echo?trace=abc").as_bytes());
        assert!(t.wants_attention() && !t.idle());
        assert_eq!(t.sink.token.as_deref(), Some("abc"));
        assert_eq!(t.sink.queue.len(), 1, "the request head waits for the feed");
        let mut t = Traced::new(1, true, false);
        t.input(upgrade("/echo?trace=abc").as_bytes());
        assert!(!t.idle());
        assert_eq!(
            t.sink.token, None,
            "tokens mean nothing without --inspector"
        );
        let mut t = Traced::new(1, true, false);
        t.input(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(t.wants_attention() && t.idle());
    }

    #[test]
    fn frame_records_as_json() {
        let mut w = inspect::FrameWalker::new(FEED_PREFIX);
        let mut bytes = Vec::new();
        crate::ws::frame::write_masked_frame(
            &mut bytes,
            true,
            crate::ws::OpCode::Close,
            b"\x03\xe8bye",
            [1, 2, 3, 4],
        );
        let mut records = Vec::new();
        w.feed(&bytes, |r| records.push(r));
        let v: serde_json::Value =
            serde_json::from_str(&frame_json(Direction::FromClient, &records[0])).expect("json");
        assert_eq!(v["from"], "client");
        assert_eq!(v["opcode"], 8);
        assert_eq!(v["opcode_name"], "close");
        assert_eq!(v["mask_key"], "01020304");
        assert_eq!(v["length_form"], "7-bit");
        assert_eq!(v["payload"], "03e8627965");
        assert_eq!(v["close_code"], 1000);
        assert_eq!(v["close_reason"], "bye");
        assert_eq!(v["header"], "888501020304");
    }
}
