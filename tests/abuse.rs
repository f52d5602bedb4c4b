//! The server under hostile clients: floods, pipelines, stalled frames and bodies,
//! connection and password-guessing bursts. Each test attacks one way and asserts a
//! bound (memory growth, another user's latency, a refusal), never an exact number.
//!
//! The tests take a lock so that they run one at a time whatever `--test-threads` says:
//! they measure latency and memory, and a neighbour's flood would blur both. All
//! traffic goes to a server on 127.0.0.1, and every loop has a deadline.
//!
//! Strict HTTP parsing (request smuggling and the like) is covered in `tests/http_strict.rs`.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{Http, RawClient, Response, Server, fresh_data_dir, masked_frame};
use fastim::store::{Db, Message as ChatMessage, Peer};
use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

const MIB: u64 = 1 << 20;

/// Debug builds are slower: some latency bounds are relaxed for them.
fn bound(release_ms: u64, debug_ms: u64) -> Duration {
    Duration::from_millis(if cfg!(debug_assertions) {
        debug_ms
    } else {
        release_ms
    })
}

/// One test at a time (see the module comment).
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts a server on `dir`; a refusal (such as an unknown flag) fails with its log.
fn start_in(dir: std::path::PathBuf, flags: &[&str]) -> Server {
    Server::try_start_in(&[], dir, flags).unwrap_or_else(|e| panic!("{e}"))
}

fn start(flags: &[&str]) -> Server {
    start_in(fresh_data_dir(), flags)
}

/// Failed bounds of one test, reported together so one run shows all of them.
#[derive(Default)]
struct Verdict(Vec<String>);

impl Verdict {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    fn finish(self) {
        assert!(
            self.0.is_empty(),
            "{} bound(s) failed:\n  - {}",
            self.0.len(),
            self.0.join("\n  - ")
        );
    }
}

// ---------------------------------------------------------------------------
// Seeded accounts

/// A seeded user: id and a live session token.
#[derive(Clone, Debug)]
struct Account {
    id: i64,
    token: String,
}

impl Account {
    fn cookie(&self) -> String {
        format!("fastim_token={}", self.token)
    }
}

/// a (the attacker) and b are friends; c and d (bystanders) are friends.
struct World {
    a: Account,
    b: Account,
    c: Account,
    d: Account,
}

/// Seeds the four users, and `history` messages from b to a.
fn seed(data_dir: &Path, history: usize) -> World {
    std::fs::create_dir_all(data_dir).expect("data dir");
    let mut db = Db::open(&data_dir.join("fastim.db")).expect("open db");
    let mut account = |mobile: &str| {
        let (id, token) = common::seed_account(&mut db, mobile);
        Account { id, token }
    };
    let (a, b, c, d) = (
        account("1001"),
        account("1002"),
        account("1003"),
        account("1004"),
    );
    db.add_friend(a.id, b.id, 2).expect("friends");
    db.add_friend(c.id, d.id, 2).expect("friends");
    let messages: Vec<ChatMessage> = (0..history)
        .map(|i| ChatMessage {
            sender_id: b.id,
            to: Peer::User(a.id),
            media: 1,
            content: format!("history {i} {}", "h".repeat(100)),
            pic: String::new(),
            url: String::new(),
            memo: String::new(),
            amount: 0,
            client_ref: None,
            id: 0,
            created_at: 0,
            ..ChatMessage::new(0, Peer::User(0))
        })
        .collect();
    if !messages.is_empty() {
        db.save_messages(&messages, 3).expect("history");
    }
    World { a, b, c, d }
}

fn start_world(flags: &[&str], history: usize) -> (Server, World) {
    let dir = fresh_data_dir();
    let world = seed(&dir, history);
    (start_in(dir, flags), world)
}

// ---------------------------------------------------------------------------
// Clients

fn chat_path(who: &Account) -> String {
    format!("/chat?id={}&token={}", who.id, who.token)
}

/// A well-behaved chat client (tungstenite).
fn connect(server: &Server, who: &Account) -> Ws {
    let (ws, response) = tungstenite::connect(server.url(&chat_path(who))).expect("chat upgrade");
    assert_eq!(response.status(), 101);
    set_ws_timeout(&ws, Duration::from_secs(10));
    ws
}

fn set_ws_timeout(ws: &Ws, timeout: Duration) {
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .expect("timeout");
    }
}

fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string())).expect("send");
}

fn text(to: i64, content: &str, r: &str) -> Value {
    json!({"cmd": 10, "dstid": to, "media": 1, "content": content, "ref": r})
}

/// Reads until the ack (cmd 21) of `r`; `None` if it does not come within `limit`.
fn ack_within(ws: &mut Ws, r: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    loop {
        let left = limit.checked_sub(start.elapsed())?;
        set_ws_timeout(ws, left);
        match ws.read() {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(t.as_str()).expect("JSON from the server");
                if v["cmd"] == 21 && v["ref"] == r {
                    return Some(start.elapsed());
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("waiting for the ack of {r}: {e}"),
        }
    }
}

/// Whether nothing but pings arrives within `wait`.
fn silent(ws: &mut Ws, wait: Duration) -> bool {
    let start = Instant::now();
    loop {
        let Some(left) = wait.checked_sub(start.elapsed()) else {
            return true;
        };
        set_ws_timeout(ws, left);
        match ws.read() {
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(_) => return false,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return true;
            }
            Err(_) => return false,
        }
    }
}

/// A raw `/chat` client (it can pipeline and refuse to read).
fn raw_chat(server: &Server, who: &Account) -> RawClient {
    RawClient::connect(server.addr, &chat_path(who))
}

/// The 99th percentile (the largest sample when there are fewer than 100).
fn p99(mut samples: Vec<Duration>) -> Duration {
    assert!(!samples.is_empty(), "no samples");
    samples.sort();
    samples[(samples.len() * 99).div_ceil(100) - 1]
}

/// How a read from the server ended, when it did not deliver what was asked.
#[derive(Debug, PartialEq)]
enum End {
    Eof,
    Reset,
    Timeout,
    Error(io::ErrorKind),
}

/// Buffered reading of server frames or responses from a socket; a timeout keeps what
/// was read, so the next call resumes.
struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
}

impl Reader {
    fn new(stream: TcpStream, read_timeout: Duration) -> Reader {
        stream
            .set_read_timeout(Some(read_timeout))
            .expect("timeout");
        Reader {
            stream,
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// A reader on a clone of `client`'s socket, starting with what it read past the handshake.
    fn from_client(client: &RawClient, read_timeout: Duration) -> Reader {
        let mut reader = Reader::new(client.stream.try_clone().expect("clone"), read_timeout);
        reader.buf = client.buf.clone();
        reader
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn fill(&mut self) -> Result<(), End> {
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(End::Eof),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) => Err(match e.kind() {
                io::ErrorKind::ConnectionReset => End::Reset,
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => End::Timeout,
                kind => End::Error(kind),
            }),
        }
    }

    /// The next server frame: (opcode, payload).
    fn frame(&mut self) -> Result<(u8, Vec<u8>), End> {
        loop {
            let p = self.pending();
            if p.len() >= 2 {
                let (len, start) = match p[1] & 0x7f {
                    126 if p.len() >= 4 => (u16::from_be_bytes([p[2], p[3]]) as usize, 4),
                    127 if p.len() >= 10 => {
                        let mut be = [0u8; 8];
                        be.copy_from_slice(&p[2..10]);
                        (u64::from_be_bytes(be) as usize, 10)
                    }
                    126 | 127 => (0, 0),
                    n => (n as usize, 2),
                };
                if start > 0 && p.len() >= start + len {
                    let frame = (p[0] & 0x0f, p[start..start + len].to_vec());
                    self.pos += start + len;
                    return Ok(frame);
                }
            }
            self.fill()?;
        }
    }

    /// The next HTTP response (a Content-Length body, none for 304).
    fn response(&mut self) -> Result<Response, End> {
        loop {
            let p = self.pending();
            if let Some(end) = p.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&p[..end + 4]).into_owned();
                let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                let len = if status == 304 { 0 } else { len };
                if p.len() >= end + 4 + len {
                    let body = p[end + 4..end + 4 + len].to_vec();
                    self.pos += end + 4 + len;
                    return Ok(Response { status, head, body });
                }
            }
            self.fill()?;
        }
    }

    /// Reads until EOF or reset; `Err` if the connection is still open after the timeout.
    fn closed(&mut self) -> Result<End, End> {
        loop {
            match self.fill() {
                Ok(()) => self.pos = self.buf.len(),
                Err(end @ (End::Eof | End::Reset)) => return Ok(end),
                Err(end) => return Err(end),
            }
        }
    }
}

/// Reads and counts frames on a thread until `stop`; returns the reader, the count and
/// how the connection ended, if it did.
fn drain(mut reader: Reader, stop: Arc<AtomicBool>) -> JoinHandle<(Reader, u64, Option<End>)> {
    thread::spawn(move || {
        let mut count = 0;
        while !stop.load(Ordering::Relaxed) {
            match reader.frame() {
                Ok(_) => count += 1,
                Err(End::Timeout) => {}
                Err(end) => return (reader, count, Some(end)),
            }
        }
        (reader, count, None)
    })
}

/// Reads raw chat frames until the ack (cmd 21) of `r`, within `limit`.
fn raw_ack_within(reader: &mut Reader, r: &str, limit: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    while start.elapsed() < limit {
        match reader.frame() {
            Ok((0x1, payload)) if payload.windows(r.len()).any(|w| w == r.as_bytes()) => {
                let v: Value = serde_json::from_slice(&payload).expect("JSON from the server");
                if v["cmd"] == 21 && v["ref"] == r {
                    return Ok(start.elapsed());
                }
            }
            Ok(_) | Err(End::Timeout) => {}
            Err(end) => return Err(format!("{end:?} before the ack")),
        }
    }
    Err(format!("no ack within {limit:?}"))
}

/// `Some(description)` if the server process has exited.
fn exited(server: &mut Server) -> Option<String> {
    let status = server.child.try_wait().expect("try_wait")?;
    Some(format!("the server exited during the attack: {status}"))
}

fn close_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

/// What a refused connection saw: the response, if one came, and whether the
/// connection then closed.
struct Refusal {
    response: Option<Response>,
    closed: bool,
}

/// Connects, waits a moment for a response sent at accept time, sends `GET /` if none
/// came, and reads what the server answers.
fn refused_connection(addr: SocketAddr) -> Refusal {
    let stream = TcpStream::connect(addr).expect("connect");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = Reader::new(stream, Duration::from_millis(1000));
    let mut response = reader.response();
    if matches!(response, Err(End::Timeout)) {
        let _ = writer.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        reader
            .stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        response = reader.response();
    }
    let closed = match &response {
        Ok(_) => reader.closed().is_ok(),
        Err(end) => matches!(end, End::Eof | End::Reset),
    };
    Refusal {
        response: response.ok(),
        closed,
    }
}

/// The 503 refusal envelope, or a description of what came instead.
fn is_503_envelope(refusal: &Refusal) -> Result<(), String> {
    let Some(r) = &refusal.response else {
        return Err(format!(
            "no HTTP response (connection {})",
            if refusal.closed {
                "closed"
            } else {
                "left open"
            }
        ));
    };
    let code = serde_json::from_slice::<Value>(&r.body)
        .ok()
        .and_then(|v| v["code"].as_i64());
    if r.status != 503 || code != Some(503) {
        let body = String::from_utf8_lossy(&r.body);
        return Err(format!(
            "got {} {}",
            r.status,
            body.chars().take(120).collect::<String>()
        ));
    }
    if !refusal.closed {
        return Err("503 but the connection stayed open".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Attack helpers

/// Writes `bytes` on a clone of `stream` for at most `limit`, as fast as the socket
/// takes them, without reading; stops at the first error other than a timeout.
/// Returns the number of bytes written.
fn flood(stream: &TcpStream, bytes: Vec<u8>, limit: Duration) -> (JoinHandle<usize>, Progress) {
    let mut stream = stream.try_clone().expect("clone");
    stream
        .set_write_timeout(Some(Duration::from_millis(100)))
        .expect("write timeout");
    let progress = Progress::default();
    let shared = progress.clone();
    let writer = thread::spawn(move || {
        let deadline = Instant::now() + limit;
        let mut sent = 0;
        while sent < bytes.len() && Instant::now() < deadline {
            match stream.write(&bytes[sent..]) {
                Ok(0) => break,
                Ok(n) => {
                    sent += n;
                    shared.0.store(sent, Ordering::Relaxed);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => break,
            }
        }
        shared.1.store(true, Ordering::Relaxed);
        sent
    });
    (writer, progress)
}

/// A flood's bytes written so far, and whether it has stopped.
#[derive(Clone, Default)]
struct Progress(Arc<AtomicUsize>, Arc<AtomicBool>);

impl Progress {
    fn sent(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    fn done(&self) -> bool {
        self.1.load(Ordering::Relaxed)
    }
}

/// `n` masked frames of `opcode` built by `payload(i)`, back to back.
fn frames(n: usize, opcode: u8, payload: impl Fn(usize) -> String) -> Vec<u8> {
    (0..n)
        .flat_map(|i| masked_frame(true, opcode, payload(i).as_bytes()))
        .collect()
}

/// The largest RSS of `server` seen every 20 ms until stopped.
struct RssWatch {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl RssWatch {
    fn start(server: &Server) -> RssWatch {
        let pid = server.child.id();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(rss_of(pid).unwrap_or(0));
                thread::sleep(Duration::from_millis(20));
            }
            peak.max(rss_of(pid).unwrap_or(0))
        });
        RssWatch { stop, thread }
    }

    /// The peak RSS in bytes.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("RSS watcher")
    }
}

fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// `count` timings of `request`, one every `every`.
fn timings(count: usize, every: Duration, mut request: impl FnMut()) -> Vec<Duration> {
    (0..count)
        .map(|_| {
            let start = Instant::now();
            request();
            let took = start.elapsed();
            thread::sleep(every.saturating_sub(took));
            took
        })
        .collect()
}

/// `GET /user/me` with `cookie` on a new connection, asserting a 200.
fn user_me(addr: SocketAddr, cookie: &str) {
    let r = Http::new(addr).request("GET", "/user/me", &[("Cookie", cookie)], b"");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// Registers `mobile` through the API; returns the response.
fn register(addr: SocketAddr, mobile: &str) -> Response {
    Http::new(addr).form(
        "/user/register",
        &format!("mobile={mobile}&passwd=right-password&nickname=n{mobile}"),
    )
}

/// One login attempt on a new connection.
fn login(addr: SocketAddr, mobile: &str, password: &str) -> Response {
    Http::new(addr).form("/user/login", &format!("mobile={mobile}&passwd={password}"))
}

/// A 429 with `Retry-After` in whole seconds and the envelope, or what is wrong with it.
fn is_429_envelope(r: &Response) -> Result<(), String> {
    let retry = r.header("retry-after");
    if retry.is_none_or(|v| v.parse::<u64>().is_err()) {
        return Err(format!("429 with Retry-After {retry:?}"));
    }
    let code = serde_json::from_slice::<Value>(&r.body)
        .ok()
        .and_then(|v| v["code"].as_i64());
    if code != Some(429) {
        return Err(format!("429 body {}", String::from_utf8_lossy(&r.body)));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// 1. Chat flood

/// Attack: a pipelines ~200,000 one-to-one messages to its friend b for 4 s and never
/// reads. Bounds: a bystander's message (c to d, every 100 ms) is acked with p99 ≤ 1 s
/// (1.5 s in debug), the server grows by ≤ 100 MiB, and afterwards b still chats (an
/// ack within 2 s). The cap on unacked messages (`--max-in-flight`, default 256) and
/// TCP backpressure are what should keep these.
#[test]
fn a_chat_flood_slows_neither_bystanders_nor_the_friend_and_memory_stays_bounded() {
    let _serial = serial();
    let (mut server, w) = start_world(&[], 0);
    let attacker = raw_chat(&server, &w.a);
    let b = raw_chat(&server, &w.b);
    let mut c = connect(&server, &w.c);
    let _d = connect(&server, &w.d);
    let b_id = w.b.id;
    let bytes = frames(200_000, 0x1, |i| {
        format!(r#"{{"cmd":10,"dstid":{b_id},"content":"x","ref":"{i}"}}"#)
    });

    // b reads what arrives, as fast as a raw client can, until told to stop.
    let stop_b = Arc::new(AtomicBool::new(false));
    let b_reader = drain(
        Reader::from_client(&b, Duration::from_millis(100)),
        stop_b.clone(),
    );

    let baseline = server.rss();
    let rss = RssWatch::start(&server);
    let (writer, progress) = flood(&attacker.stream, bytes, Duration::from_secs(4));
    let mut acks = Vec::new();
    let flood_started = Instant::now();
    while !progress.done() && flood_started.elapsed() < Duration::from_secs(5) {
        let r = format!("c{}", acks.len());
        let sent = Instant::now();
        send(&mut c, text(w.d.id, "hi d", &r));
        let limit = Duration::from_secs(5);
        acks.push(ack_within(&mut c, &r, limit).unwrap_or(limit));
        thread::sleep(Duration::from_millis(100).saturating_sub(sent.elapsed()));
    }
    let sent = writer.join().expect("flood writer");
    let peak = rss.stop();
    let _ = attacker.stream.shutdown(std::net::Shutdown::Both);
    drop(attacker);

    stop_b.store(true, Ordering::Relaxed);
    let (mut b_replies, b_received, b_ended) = b_reader.join().expect("b's reader");
    let b_after = match b_ended {
        Some(end) => Err(format!(
            "b's connection ended during the flood ({end:?}) after {b_received} messages"
        )),
        None => {
            let frame = masked_frame(
                true,
                0x1,
                text(w.a.id, "still here", "after-flood")
                    .to_string()
                    .as_bytes(),
            );
            let _ = (&b.stream).write_all(&frame);
            raw_ack_within(&mut b_replies, "after-flood", Duration::from_secs(2)).map_err(|e| {
                format!("b's message after the flood: {e} (b had received {b_received} messages)")
            })
        }
    };
    let died = exited(&mut server);

    let mut v = Verdict::default();
    let latency = p99(acks.clone());
    let limit = bound(1000, 1500);
    v.check(latency <= limit, || {
        format!(
            "bystander ack p99 {latency:?} > {limit:?} over {} messages",
            acks.len()
        )
    });
    let grown = peak.saturating_sub(baseline);
    v.check(grown <= 100 * MIB, || {
        format!("RSS grew by {} MiB (> 100 MiB)", grown / MIB)
    });
    v.check(died.is_none(), || format!("{died:?}"));
    if let Err(e) = b_after {
        v.check(false, || e);
    }
    eprintln!(
        "chat flood: {} KiB written, b received {b_received}, ack p99 {latency:?}, RSS +{} MiB",
        sent / 1024,
        grown / MIB
    );
    v.finish();
}

/// Attack: a pipelines 100,000 messages to c, who is not a friend, for up to 3 s and
/// reads the replies. Bounds: every reply is `{"cmd":22,"code":403}` with the ref, c gets
/// nothing, and the server grows by ≤ 100 MiB (refused before storage, on the loop).
#[test]
fn a_flood_to_a_stranger_is_refused_on_the_loop_at_bounded_cost() {
    let _serial = serial();
    let (server, w) = start_world(&[], 0);
    let attacker = raw_chat(&server, &w.a);
    let mut c = connect(&server, &w.c);
    let c_id = w.c.id;
    let bytes = frames(100_000, 0x1, |i| {
        format!(r#"{{"cmd":10,"dstid":{c_id},"content":"x","ref":"{i}"}}"#)
    });
    let baseline = server.rss();
    let rss = RssWatch::start(&server);
    let (writer, progress) = flood(&attacker.stream, bytes, Duration::from_secs(3));

    let mut replies = Reader::from_client(&attacker, Duration::from_millis(500));
    let (mut refused, mut other, mut ended) = (0usize, None, None);
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        match replies.frame() {
            Ok((0x1, payload)) => {
                // JSON-decode a sample only: the reader must keep up with the server.
                let has = |s: &str| payload.windows(s.len()).any(|w| w == s.as_bytes());
                let ok = if refused < 200 {
                    let v: Value = serde_json::from_slice(&payload).expect("JSON reply");
                    v["cmd"] == 22 && v["code"] == 403 && v["ref"].is_string()
                } else {
                    has(r#""cmd":22"#) && has(r#""code":403"#)
                };
                if ok {
                    refused += 1;
                } else if other.is_none() {
                    other = Some(String::from_utf8_lossy(&payload).into_owned());
                }
            }
            Ok(_) => {}
            Err(End::Timeout) if progress.done() => break,
            Err(End::Timeout) => {}
            Err(end) => {
                ended = Some(end);
                break;
            }
        }
    }
    let sent = writer.join().expect("flood writer");
    let peak = rss.stop();
    let c_untouched = silent(&mut c, Duration::from_millis(300));

    let mut v = Verdict::default();
    v.check(refused > 0, || "no 403 refusal came back".into());
    v.check(other.is_none(), || {
        format!("a reply that is not a 403 refusal: {other:?}")
    });
    v.check(ended.is_none(), || {
        format!("the sender's connection ended ({ended:?}) after {refused} refusals")
    });
    v.check(c_untouched, || "the stranger received a message".into());
    let grown = peak.saturating_sub(baseline);
    v.check(grown <= 100 * MIB, || {
        format!("RSS grew by {} MiB (> 100 MiB)", grown / MIB)
    });
    eprintln!(
        "stranger flood: {} KiB written, {refused} refusals, RSS +{} MiB",
        sent / 1024,
        grown / MIB
    );
    v.finish();
}

// ---------------------------------------------------------------------------
// 2. Pipelined GETs

/// Attack: one client pipelines 60,000 `GET /emoji.js` (a 1 KB file) for up to 5 s and
/// reads nothing. Bounds: RSS grows by ≤ 16 MiB, another client's `GET /` is answered
/// within 50 ms (200 ms in debug) while the attacker stalls, and once the attacker reads
/// it gets its 200s in order (a few thousand, within 10 s) and is never reset.
#[test]
fn pipelined_gets_from_a_client_that_does_not_read_are_bounded_and_then_served() {
    let _serial = serial();
    let mut server = start(&[]);
    let attacker = TcpStream::connect(server.addr).expect("connect");
    let bytes = b"GET /emoji.js HTTP/1.1\r\nHost: x\r\n\r\n".repeat(60_000);
    let baseline = server.rss();
    let rss = RssWatch::start(&server);
    let (writer, progress) = flood(&attacker, bytes, Duration::from_secs(5));

    // Wait for the attacker's writes to stall (or finish).
    let mut last = (progress.sent(), Instant::now());
    let give_up = Instant::now() + Duration::from_secs(5);
    while !progress.done() && Instant::now() < give_up {
        thread::sleep(Duration::from_millis(100));
        if progress.sent() != last.0 {
            last = (progress.sent(), Instant::now());
        } else if last.1.elapsed() > Duration::from_millis(500) {
            break;
        }
    }
    if let Some(died) = exited(&mut server) {
        panic!(
            "{died} ({} KiB of pipelined GETs written)",
            progress.sent() / 1024
        );
    }
    let mut other = Http::new(server.addr);
    let latencies = timings(10, Duration::from_millis(50), || {
        assert_eq!(other.request("GET", "/", &[], b"").status, 200);
    });
    let stalled_rss = rss.stop();

    // Now the attacker reads: its responses come, in order, without a reset.
    let mut reader = Reader::new(attacker.try_clone().expect("clone"), Duration::from_secs(2));
    let (mut ok, mut wrong, mut ended) = (0usize, None, None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ok < 3000 && Instant::now() < deadline {
        match reader.response() {
            Ok(r) if r.status == 200 && r.body.len() > 100 => ok += 1,
            Ok(r) => {
                wrong = Some(r.head);
                break;
            }
            Err(end) => {
                ended = Some(end);
                break;
            }
        }
    }
    drop(reader);
    let _ = attacker.shutdown(std::net::Shutdown::Both);
    let sent = writer.join().expect("writer");

    let mut v = Verdict::default();
    let grown = stalled_rss.saturating_sub(baseline);
    v.check(grown <= 16 * MIB, || {
        format!("RSS grew by {} MiB (> 16 MiB)", grown / MIB)
    });
    let slowest = p99(latencies);
    let limit = bound(50, 200);
    v.check(slowest <= limit, || {
        format!("another client's GET / took {slowest:?} (> {limit:?})")
    });
    v.check(wrong.is_none(), || {
        format!("after {ok} responses, one was not a 200 with the file: {wrong:?}")
    });
    v.check(ended.is_none() && ok >= 3000, || {
        format!("the reading attacker got {ok} responses, then {ended:?}")
    });
    eprintln!(
        "pipelined GETs: {} KiB written, {ok} responses read, RSS +{} MiB",
        sent / 1024,
        grown / MIB
    );
    v.finish();
}

// ---------------------------------------------------------------------------
// 3. Stalled frames, idle echo sockets, the connection cap

/// Attack: 10 /echo clients each send the header and all but the last byte of a 16 MiB
/// binary frame, then stay silent (`--frame-timeout 2`). Bounds: within the frame
/// timeout plus 3 s each sees close 1008 (or at least the TCP close), and the server's RSS comes
/// back within 64 MiB of where it started (the partial frames' buffers are freed).
#[test]
fn a_frame_that_stops_making_progress_is_closed_and_its_buffer_freed() {
    let _serial = serial();
    let server = start(&["--frame-timeout", "2"]);
    const LEN: usize = 16 << 20;
    let mut partial = vec![0x82, 0x80 | 127];
    partial.extend_from_slice(&(LEN as u64).to_be_bytes());
    partial.extend_from_slice(&common::MASK);
    // Zero bytes, masked, are the mask repeated.
    partial.extend(common::MASK.iter().copied().cycle().take(LEN - 1));

    let baseline = server.rss();
    let mut clients: Vec<RawClient> = (0..10)
        .map(|_| RawClient::connect(server.addr, "/echo"))
        .collect();
    for client in &mut clients {
        client.send(&partial);
    }
    let sent = Instant::now();
    let full = server.rss();

    let mut v = Verdict::default();
    for (i, client) in clients.iter().enumerate() {
        let left = (Duration::from_secs(5)).saturating_sub(sent.elapsed());
        let mut reader = Reader::from_client(client, left.max(Duration::from_millis(10)));
        let seen = loop {
            match reader.frame() {
                Ok((0x8, payload)) => break format!("close {:?}", close_code(&payload)),
                Ok(_) => {}
                Err(End::Eof | End::Reset) => break "TCP close".to_owned(),
                Err(end) => break format!("{end:?}"),
            }
        };
        v.check(seen == "close Some(1008)" || seen == "TCP close", || {
            format!(
                "client {i}: {seen} within {:?} of its stall",
                sent.elapsed()
            )
        });
    }
    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut after = server.rss();
    while after > baseline + 64 * MIB && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
        after = server.rss();
    }
    eprintln!(
        "partial frames: RSS +{} MiB with the frames buffered, +{} MiB after",
        full.saturating_sub(baseline) / MIB,
        after.saturating_sub(baseline) / MIB
    );
    v.check(after <= baseline + 64 * MIB, || {
        format!(
            "RSS stayed {} MiB above the start (it peaked at +{} MiB)",
            after.saturating_sub(baseline) / MIB,
            full.saturating_sub(baseline) / MIB
        )
    });
    v.finish();
}

/// Attack: an /echo socket that sends nothing (`--echo-idle-timeout 2`). Bound: close
/// 1001 within ~4 s, then the TCP close.
#[test]
fn an_idle_echo_socket_is_closed_with_1001() {
    let _serial = serial();
    let server = start(&["--echo-idle-timeout", "2"]);
    let client = RawClient::connect(server.addr, "/echo");
    let started = Instant::now();
    let mut reader = Reader::from_client(&client, Duration::from_secs(5));
    let seen = loop {
        match reader.frame() {
            Ok((0x8, payload)) => break Ok(close_code(&payload)),
            Ok(_) => {}
            Err(end) => break Err(end),
        }
    };
    let waited = started.elapsed();
    assert_eq!(
        seen,
        Ok(Some(1001)),
        "an idle /echo socket, after {waited:?}"
    );
    assert!(
        waited >= Duration::from_millis(1500) && waited <= Duration::from_millis(4500),
        "closed after {waited:?}"
    );
    reader
        .stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    assert!(reader.closed().is_ok(), "the TCP connection stays open");
}

/// Attack: one connection more than `--max-connections 5`. Bound: the 6th gets an
/// `HTTP/1.1 503` envelope and the close, not a silent reset.
#[test]
fn the_connection_over_the_cap_gets_a_503_not_a_reset() {
    let _serial = serial();
    let server = start(&["--max-connections", "5"]);
    let _held: Vec<RawClient> = (0..5)
        .map(|_| RawClient::connect(server.addr, "/echo"))
        .collect();
    let refusal = refused_connection(server.addr);
    if let Err(e) = is_503_envelope(&refusal) {
        panic!("the 6th connection: {e}");
    }
}

// ---------------------------------------------------------------------------
// 4. Uploads

/// An upload head of `length` bytes with `cookie`.
fn upload_head(cookie: &str, length: usize) -> String {
    format!(
        "POST /attach/upload HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\
         Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {length}\r\n\r\n"
    )
}

/// Attack: 60 clients announce 10 MB uploads with a bogus session (`fastim_token=nope`)
/// and trickle 1 byte/s. Bounds: each gets a 401 envelope within 2 s and the close (the
/// token is checked from the head, the body never buffered); RSS grows by < 32 MiB.
#[test]
fn an_upload_with_a_bogus_session_is_refused_from_its_head() {
    let _serial = serial();
    let server = start(&[]);
    let addr = server.addr;
    let baseline = server.rss();
    let rss = RssWatch::start(&server);
    let clients: Vec<JoinHandle<Result<Duration, String>>> = (0..60)
        .map(|_| {
            thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).expect("connect");
                let started = Instant::now();
                stream
                    .write_all(upload_head("fastim_token=nope", 10_000_000).as_bytes())
                    .expect("head");
                let mut reader = Reader::new(
                    stream.try_clone().expect("clone"),
                    Duration::from_millis(250),
                );
                let mut next_byte = started + Duration::from_secs(1);
                let response = loop {
                    if started.elapsed() > Duration::from_millis(2500) {
                        return Err("no response within 2.5 s".into());
                    }
                    if Instant::now() >= next_byte {
                        let _ = stream.write_all(b"-");
                        next_byte += Duration::from_secs(1);
                    }
                    match reader.response() {
                        Ok(r) => break r,
                        Err(End::Timeout) => {}
                        Err(end) => return Err(format!("{end:?} before a response")),
                    }
                };
                let took = started.elapsed();
                let code = serde_json::from_slice::<Value>(&response.body)
                    .ok()
                    .and_then(|v| v["code"].as_i64());
                if (response.status, code) != (401, Some(401)) {
                    return Err(format!(
                        "got {} {}",
                        response.status,
                        String::from_utf8_lossy(&response.body)
                    ));
                }
                if took > Duration::from_secs(2) {
                    return Err(format!("the 401 took {took:?}"));
                }
                reader
                    .stream
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .expect("timeout");
                reader
                    .closed()
                    .map(|_| took)
                    .map_err(|_| "the connection stayed open after the 401".into())
            })
        })
        .collect();
    let results: Vec<Result<Duration, String>> = clients
        .into_iter()
        .map(|c| c.join().expect("client thread"))
        .collect();
    let peak = rss.stop();

    let mut v = Verdict::default();
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    v.check(failures.is_empty(), || {
        format!(
            "{} of 60 clients: first: {}",
            failures.len(),
            failures.first().map(|s| s.as_str()).unwrap_or("")
        )
    });
    let grown = peak.saturating_sub(baseline);
    v.check(grown < 32 * MIB, || {
        format!("RSS grew by {} MiB (≥ 32 MiB)", grown / MIB)
    });
    v.finish();
}

/// Attack: under a 1 GiB address-space limit (`prlimit --as`), 150 logged-in clients
/// announce 10 MiB uploads and send no body. Bound: the server stays alive and serves
/// `GET /` (memory for a body grows with the bytes that arrive, never from the header).
#[test]
fn announced_upload_sizes_reserve_no_memory() {
    let _serial = serial();
    assert!(
        Path::new("/usr/bin/prlimit").exists() || Path::new("/bin/prlimit").exists(),
        "this test needs prlimit (util-linux)"
    );
    let dir = fresh_data_dir();
    let w = seed(&dir, 0);
    let mut server = Server::try_start_in(&["prlimit", "--as=1073741824", "--"], dir, &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let head = upload_head(&w.a.cookie(), 10_485_760);
    // Errors are ignored here: a server that dies is reported below.
    let _clients: Vec<TcpStream> = (0..150)
        .filter_map(|_| {
            let mut s = TcpStream::connect(server.addr).ok()?;
            let _ = s.write_all(head.as_bytes());
            Some(s)
        })
        .collect();
    thread::sleep(Duration::from_secs(1));
    if let Some(died) = exited(&mut server) {
        panic!("{died} (150 announced uploads of 10 MiB under a 1 GiB address space)");
    }
    let r = Http::new(server.addr).request("GET", "/", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(exited(&mut server), None);
}

// ---------------------------------------------------------------------------
// 5. Sync flood

/// Attack: a pipelines 20,000 `{"cmd":20,"id":0}` (sync from the start, 100 messages of
/// history each) and closes. Bound: another user's `GET /user/me`, measured 50 times
/// meanwhile, has p99 ≤ 200 ms (400 ms in debug): one job in flight per connection.
#[test]
fn a_sync_flood_does_not_delay_other_users_api_calls() {
    let _serial = serial();
    let (server, w) = start_world(&[], 100);
    let attacker = raw_chat(&server, &w.a);
    let bytes = frames(20_000, 0x1, |_| r#"{"cmd":20,"id":0}"#.to_owned());
    let (writer, _) = flood(&attacker.stream, bytes, Duration::from_secs(5));
    let cookie = w.c.cookie();
    let latencies = timings(50, Duration::from_millis(20), || {
        user_me(server.addr, &cookie)
    });
    writer.join().expect("writer");
    drop(attacker);
    let slowest = p99(latencies);
    let limit = bound(200, 400);
    assert!(
        slowest <= limit,
        "/user/me p99 {slowest:?} > {limit:?} during a sync flood"
    );
}

// ---------------------------------------------------------------------------
// 6. Login and registration bursts

/// Attack: 200 concurrent logins with a wrong password against one account. Bounds:
/// another user's `/user/me` keeps p99 ≤ 200 ms (400 ms in debug: hashing has its own
/// pool), and some attempts are refused with 429 + `Retry-After` (default limits).
#[test]
fn a_login_burst_is_rate_limited_and_does_not_delay_other_users() {
    let _serial = serial();
    let server = start(&[]);
    let addr = server.addr;
    let target = register(addr, "13900000001");
    assert_eq!(target.json()["code"], 0, "{:?}", target.json());
    let mut other = Http::new(addr);
    let r = other.form(
        "/user/register",
        "mobile=13900000002&passwd=right-password&nickname=other",
    );
    assert_eq!(r.json()["code"], 0);
    let cookie = other.cookie.clone().expect("session cookie");

    let attempts: Vec<JoinHandle<Response>> = (0..200)
        .map(|_| thread::spawn(move || login(addr, "13900000001", "wrong-password")))
        .collect();
    let latencies = timings(50, Duration::from_millis(20), || user_me(addr, &cookie));
    let answers: Vec<Response> = attempts
        .into_iter()
        .map(|t| t.join().expect("login thread"))
        .collect();

    let mut v = Verdict::default();
    let slowest = p99(latencies);
    let limit = bound(200, 400);
    v.check(slowest <= limit, || {
        format!("/user/me p99 {slowest:?} > {limit:?} during the login burst")
    });
    let limited: Vec<&Response> = answers.iter().filter(|r| r.status == 429).collect();
    v.check(!limited.is_empty(), || {
        format!(
            "no 429 among 200 failed logins (statuses: {:?})",
            answers
                .iter()
                .map(|r| r.status)
                .collect::<std::collections::BTreeSet<_>>()
        )
    });
    if let Some(Err(e)) = limited
        .iter()
        .map(|r| is_429_envelope(r))
        .find(Result::is_err)
    {
        v.check(false, || e);
    }
    v.finish();
}

/// Attack: failing logins against one account, one after another for ~8 s, with
/// `--account-checks-per-minute 5 --login-per-minute 0`. Bound: at most 5 (+3 slack)
/// answers are real password checks (not 429); every 429 carries `Retry-After`.
#[test]
fn password_checks_against_one_account_are_capped_per_minute() {
    let _serial = serial();
    let server = start(&[
        "--account-checks-per-minute",
        "5",
        "--login-per-minute",
        "0",
    ]);
    let addr = server.addr;
    assert_eq!(register(addr, "13900000003").json()["code"], 0);
    let started = Instant::now();
    let (mut checked, mut limited) = (0, 0);
    let mut bad_429 = None;
    while started.elapsed() < Duration::from_secs(8) {
        let r = login(addr, "13900000003", "wrong-password");
        if r.status == 429 {
            limited += 1;
            if let Err(e) = is_429_envelope(&r) {
                bad_429.get_or_insert(e);
            }
        } else {
            checked += 1;
        }
    }
    let mut v = Verdict::default();
    v.check(checked <= 8, || {
        format!("{checked} password checks ran in 8 s ({limited} refused); at most 5 (+3) may")
    });
    v.check(bad_429.is_none(), || format!("{bad_429:?}"));
    v.finish();
}

/// Attack: a fourth registration from one address with `--register-per-hour 3`.
/// Bound: it gets 429 with `Retry-After` and the envelope.
#[test]
fn registrations_per_address_are_capped() {
    let _serial = serial();
    let server = start(&["--register-per-hour", "3"]);
    for n in 0..3 {
        let r = register(server.addr, &format!("1390000010{n}"));
        assert_eq!(r.json()["code"], 0, "registration {n}");
    }
    let fourth = register(server.addr, "13900000109");
    assert_eq!(
        fourth.status,
        429,
        "{}",
        String::from_utf8_lossy(&fourth.body)
    );
    if let Err(e) = is_429_envelope(&fourth) {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------
// 7. Waiting connections do not read

/// Attack: 100 clients each send a login (`--login-per-minute 0`) followed by 250 KB of
/// garbage in the same write. Bound: RSS grows by ≤ 30 MiB (a connection whose request
/// waits for a worker is not read further) and the server still serves `GET /`.
#[test]
fn connections_waiting_for_a_worker_are_not_read_further() {
    let _serial = serial();
    let server = start(&["--login-per-minute", "0"]);
    let body = "mobile=13900000009&passwd=wrong-password";
    let mut bytes = format!(
        "POST /user/login HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    bytes.extend(std::iter::repeat_n(b'g', 250_000));
    let baseline = server.rss();
    let rss = RssWatch::start(&server);
    let clients: Vec<(TcpStream, JoinHandle<usize>)> = (0..100)
        .map(|_| {
            let s = TcpStream::connect(server.addr).expect("connect");
            let (writer, _) = flood(&s, bytes.clone(), Duration::from_secs(3));
            (s, writer)
        })
        .collect();
    thread::sleep(Duration::from_secs(3));
    let peak = rss.stop();
    let alive = Http::new(server.addr).request("GET", "/", &[], b"").status;
    for (s, writer) in clients {
        let _ = s.shutdown(std::net::Shutdown::Both);
        writer.join().expect("writer");
    }
    let grown = peak.saturating_sub(baseline);
    assert!(
        grown <= 30 * MIB,
        "RSS grew by {} MiB (> 30 MiB)",
        grown / MIB
    );
    assert_eq!(alive, 200);
}

// ---------------------------------------------------------------------------
// 9. Pipelined pings and heartbeats

/// Writes `bytes` on `client` while a reader counts the server's frames that `is_reply`
/// accepts, until `expected` or 20 s. Returns the count and how reading ended early.
fn pipelined_replies(
    client: &RawClient,
    bytes: Vec<u8>,
    expected: usize,
    is_reply: impl Fn(u8, &[u8]) -> bool,
) -> (usize, Option<End>) {
    let mut reader = Reader::from_client(client, Duration::from_secs(5));
    let (writer, _) = flood(&client.stream, bytes, Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut count = 0;
    let mut ended = None;
    while count < expected && Instant::now() < deadline {
        match reader.frame() {
            Ok((opcode, payload)) if is_reply(opcode, &payload) => count += 1,
            Ok((0x8, payload)) => {
                eprintln!("close {:?} after {count} replies", close_code(&payload));
                ended = Some(End::Eof);
                break;
            }
            Ok(_) => {}
            Err(end) => {
                ended = Some(end);
                break;
            }
        }
    }
    writer.join().expect("writer");
    (count, ended)
}

/// Attack: 100,000 pipelined empty pings on /echo, read concurrently. Bound: the
/// connection is never reset or closed, and exactly 100,000 pongs come back (within 20 s).
#[test]
fn pipelined_pings_from_a_reading_client_each_get_a_pong() {
    let _serial = serial();
    let server = start(&[]);
    let client = RawClient::connect(server.addr, "/echo");
    let pings = frames(100_000, 0x9, |_| String::new());
    let (pongs, ended) = pipelined_replies(&client, pings, 100_000, |op, payload| {
        op == 0xA && payload.is_empty()
    });
    assert!(
        ended.is_none() && pongs == 100_000,
        "{pongs} of 100000 pongs, then {ended:?}"
    );
}

/// Attack: 20,000 pipelined `{"cmd":0}` heartbeats on /chat, read concurrently. Bound:
/// never reset or closed, 20,000 heartbeat replies.
#[test]
fn pipelined_chat_heartbeats_from_a_reading_client_each_get_a_reply() {
    let _serial = serial();
    let (server, w) = start_world(&[], 0);
    let client = raw_chat(&server, &w.a);
    let beats = frames(20_000, 0x1, |_| r#"{"cmd":0}"#.to_owned());
    let (replies, ended) = pipelined_replies(&client, beats, 20_000, |op, payload| {
        op == 0x1 && serde_json::from_slice::<Value>(payload).ok() == Some(json!({"cmd": 0}))
    });
    assert!(
        ended.is_none() && replies == 20_000,
        "{replies} of 20000 heartbeat replies, then {ended:?}"
    );
}

// ---------------------------------------------------------------------------
// 10. Connections per address

/// Attack: a fourth concurrent connection from 127.0.0.1 with
/// `--max-unauthenticated-per-address 3`. Bounds: it gets HTTP 503 with the envelope and
/// the close; once one of the first three closes, a new connection is served.
#[test]
fn connections_per_address_are_capped_and_the_slot_comes_back() {
    let _serial = serial();
    let server = start(&["--max-unauthenticated-per-address", "3"]);
    let mut held: Vec<Http> = (0..3)
        .map(|_| {
            let mut http = Http::new(server.addr);
            assert_eq!(http.request("GET", "/", &[], b"").status, 200);
            http
        })
        .collect();
    let refusal = refused_connection(server.addr);
    if let Err(e) = is_503_envelope(&refusal) {
        panic!("the 4th connection from 127.0.0.1: {e}");
    }
    drop(held.pop());
    thread::sleep(Duration::from_millis(200));
    let r = Http::new(server.addr).request("GET", "/", &[], b"");
    assert_eq!(r.status, 200, "after one of the three closed");
}
