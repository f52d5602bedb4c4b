//! The `live` mode: presence and typing under a connection storm.
//!
//! `seed` writes N users, a session each and one group of all of them straight
//! into a database the server has not opened yet (no Argon2, no API), and a file
//! of `id token` lines. `live` then connects every user within `--connect-over`
//! seconds, each asking for live events (`{"cmd":24}`) as soon as it is open, and
//! counts what the server sends: presence frames and entries, and the latency from
//! a user's upgrade (the 101 read) to each earlier user seeing them online. Then
//! `--typers` users send a group typing notice (`cmd 13`) every 1.1 s for
//! `--duration` seconds; every other member should see each one, timed from its
//! send. With `--server-pid`, the server's CPU time in each phase.
//!
//! ```text
//! fastim-load live-seed --data-dir /tmp/live --users 1000
//! fastim --data-dir /tmp/live --listen 127.0.0.1:8080 &
//! fastim-load live --url ws://127.0.0.1:8080/chat --tokens /tmp/live/live-tokens.txt \
//!     --connect-over 3 --typers 10 --duration 5 --server-pid $!
//! ```

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use fastim::im::cmd::code::{PRESENCE, TYPING_GROUP};
use fastim::store::{Db, NewGroup, NewUser};
use fastim::ws::OpCode;
use fastim::ws::frame::{decode_header, write_masked_frame};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde_json::Value;

use crate::hist::Histogram;
use crate::net::{MASK_KEY, Target};
use crate::procfs;

/// What `live-seed` needs.
pub struct SeedArgs {
    /// The server's data directory (created if missing; must hold no database).
    pub data_dir: PathBuf,
    /// Users to create, all in one group.
    pub users: usize,
}

/// Writes the users, their sessions and the group, and `live-tokens.txt`.
pub fn seed(args: &SeedArgs) -> Result<bool, String> {
    std::fs::create_dir_all(&args.data_dir).map_err(|e| format!("data dir: {e}"))?;
    let path = args.data_dir.join("fastim.db");
    if path.exists() {
        return Err(format!("{} exists: seed a fresh directory", path.display()));
    }
    let mut db = Db::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut out = String::new();
    let mut group = None;
    for i in 0..args.users {
        let user = db
            .create_user(
                NewUser {
                    mobile: format!("{}", 1_800_000_000 + i),
                    password_hash: "unused: sessions are seeded".into(),
                    nickname: format!("live {i}"),
                    avatar: String::new(),
                    sex: "U".into(),
                    memo: String::new(),
                },
                1,
            )
            .map_err(|e| format!("user {i}: {e}"))?;
        let token = fastim::secret::new_token();
        db.create_session(user.id, fastim::secret::token_digest(&token), i64::MAX / 2)
            .map_err(|e| format!("session {i}: {e}"))?;
        match group {
            None => {
                let g = NewGroup {
                    name: "live".into(),
                    ..NewGroup::default()
                };
                group = Some(
                    db.create_group(user.id, g, 5, 1)
                        .map_err(|e| format!("group: {e}"))?
                        .id,
                );
            }
            Some(g) => db
                .join_group(user.id, g, 1)
                .map_err(|e| format!("join {i}: {e}"))?,
        }
        let _ = writeln!(out, "{} {token}", user.id);
    }
    let tokens = args.data_dir.join("live-tokens.txt");
    let group = group.unwrap_or(0);
    std::fs::write(&tokens, format!("group {group}\n{out}"))
        .map_err(|e| format!("{}: {e}", tokens.display()))?;
    println!(
        "{} users in group {group}; tokens in {}",
        args.users,
        tokens.display()
    );
    Ok(true)
}

/// What `live` needs.
pub struct LiveArgs {
    /// `ws://host:port/chat`.
    pub target: Target,
    /// The file `live-seed` wrote.
    pub tokens: PathBuf,
    /// Every user connects within this time, evenly spread.
    pub connect_over: Duration,
    /// Users that send group typing notices.
    pub typers: usize,
    /// Seconds of typing.
    pub duration: Duration,
    /// The server's process id, for its CPU time.
    pub server_pid: Option<u32>,
    /// The whole run must end by then.
    pub deadline: Instant,
}

/// One user's connection.
struct Conn {
    socket: TcpStream,
    user: i64,
    input: Vec<u8>,
    /// When its 101 was read, ns since the start.
    opened: u64,
}

/// What the clients saw, and what they need to time it.
struct Seen {
    /// Per user id: when their 101 was read, ns since the start (`u64::MAX`: not yet).
    opened_at: Vec<u64>,
    /// Per user id: when their last typing notice left.
    typed_at: Vec<u64>,
    presence_frames: u64,
    presence_entries: u64,
    /// Entries telling of someone who connected after the receiver.
    announcements: u64,
    typing: u64,
    other: u64,
    presence_latency: Histogram,
    typing_latency: Histogram,
}

/// Connects everyone, then types; prints the counts, the latencies and the CPU.
pub fn run(args: &LiveArgs) -> Result<bool, String> {
    let (group, users) = read_tokens(&args.tokens)?;
    let n = users.len();
    let start = Instant::now();
    let ns = |at: Instant| u64::try_from(at.duration_since(start).as_nanos()).unwrap_or(u64::MAX);
    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let mut events = Events::with_capacity(1024);
    let mut conns: Vec<Conn> = Vec::with_capacity(n);
    let max_id = users.iter().map(|(id, _)| *id).max().unwrap_or(0);
    let slot = |id: i64| usize::try_from(id).unwrap_or(0);
    let mut seen = Seen {
        opened_at: vec![u64::MAX; slot(max_id) + 1],
        typed_at: vec![u64::MAX; slot(max_id) + 1],
        presence_frames: 0,
        presence_entries: 0,
        announcements: 0,
        typing: 0,
        other: 0,
        presence_latency: Histogram::new(),
        typing_latency: Histogram::new(),
    };
    let mut buf = vec![0u8; 256 * 1024];
    let watch = masked_text(&format!("{{\"cmd\":{PRESENCE}}}"));
    let cpu = |pid: Option<u32>| pid.and_then(|p| procfs::cpu_seconds(&p.to_string()).ok());

    let cpu_before = cpu(args.server_pid);
    for (i, (user, token)) in users.iter().enumerate() {
        let due = start + args.connect_over.mul_f64(i as f64 / n.max(1) as f64);
        // Read what has arrived even when behind schedule: the connected clients'
        // frames must not wait for the handshakes (that would time the tool).
        pump(
            &mut poll,
            &mut events,
            Duration::ZERO,
            &mut conns,
            &mut buf,
            &mut seen,
            ns,
        )?;
        while Instant::now() < due {
            let wait = due.saturating_duration_since(Instant::now());
            pump(
                &mut poll,
                &mut events,
                wait,
                &mut conns,
                &mut buf,
                &mut seen,
                ns,
            )?;
        }
        if Instant::now() > args.deadline {
            return Err("out of time while connecting".into());
        }
        let mut socket = handshake(&args.target, token).map_err(|e| format!("user {user}: {e}"))?;
        let opened = ns(Instant::now());
        seen.opened_at[slot(*user)] = opened;
        socket
            .write_all(&watch)
            .map_err(|e| format!("user {user}: {e}"))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| format!("nonblocking: {e}"))?;
        let mut socket = TcpStream::from_std(socket);
        poll.registry()
            .register(&mut socket, Token(conns.len()), Interest::READABLE)
            .map_err(|e| format!("register: {e}"))?;
        conns.push(Conn {
            socket,
            user: *user,
            input: Vec::new(),
            opened,
        });
    }
    let connected = Instant::now();
    // Let the last announcements arrive.
    let settle = connected + Duration::from_secs(2);
    while Instant::now() < settle {
        let wait = settle.saturating_duration_since(Instant::now());
        pump(
            &mut poll,
            &mut events,
            wait,
            &mut conns,
            &mut buf,
            &mut seen,
            ns,
        )?;
    }
    let cpu_connected = cpu(args.server_pid);
    let connect_secs = connected.duration_since(start).as_secs_f64();
    let presence_seen = (
        seen.presence_frames,
        seen.presence_entries,
        seen.announcements,
    );

    // Typing: the first `typers` users, every 1.1 s (the limit is one a second).
    let typing = masked_text(&format!("{{\"cmd\":{TYPING_GROUP},\"dstid\":{group}}}"));
    let typers = args.typers.min(n);
    let end = Instant::now() + args.duration;
    let mut next = Instant::now();
    let mut sent = 0u64;
    while Instant::now() < end {
        if Instant::now() >= next {
            for c in conns.iter_mut().take(typers) {
                seen.typed_at[slot(c.user)] = ns(Instant::now());
                c.socket
                    .write_all(&typing)
                    .map_err(|e| format!("typing: {e}"))?;
                sent += 1;
            }
            next += Duration::from_millis(1100);
        }
        let wait = next.min(end).saturating_duration_since(Instant::now());
        pump(
            &mut poll,
            &mut events,
            wait,
            &mut conns,
            &mut buf,
            &mut seen,
            ns,
        )?;
    }
    let drain = Instant::now() + Duration::from_secs(1);
    while Instant::now() < drain {
        let wait = drain.saturating_duration_since(Instant::now());
        pump(
            &mut poll,
            &mut events,
            wait,
            &mut conns,
            &mut buf,
            &mut seen,
            ns,
        )?;
    }
    let cpu_typed = cpu(args.server_pid);

    let expected_announcements = (n as u64) * (n as u64).saturating_sub(1) / 2;
    let expected_typing = sent * (n as u64).saturating_sub(1);
    let ms = |h: &Histogram, q: f64| h.quantile(q) as f64 / 1e6;
    println!(
        "connect: {n} users in {connect_secs:.2} s; presence frames received {}, entries {} \
         ({} announcements of a later user, {expected_announcements} expected); \
         presence latency p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
        presence_seen.0,
        presence_seen.1,
        presence_seen.2,
        ms(&seen.presence_latency, 0.5),
        ms(&seen.presence_latency, 0.99),
        seen.presence_latency.max() as f64 / 1e6,
    );
    println!(
        "typing: {sent} notices from {typers} users, {} received ({expected_typing} expected); \
         latency p50 {:.2} ms p99 {:.2} ms max {:.2} ms; other frames {}",
        seen.typing,
        ms(&seen.typing_latency, 0.5),
        ms(&seen.typing_latency, 0.99),
        seen.typing_latency.max() as f64 / 1e6,
        seen.other,
    );
    let cpu_connect = cpu_before.zip(cpu_connected).map(|(a, b)| b - a);
    let cpu_typing = cpu_connected.zip(cpu_typed).map(|(a, b)| b - a);
    if let (Some(c), Some(t)) = (cpu_connect, cpu_typing) {
        println!(
            "server CPU: {c:.2} s for the connections (incl. 2 s settle), {t:.2} s for {:.1} s of typing",
            args.duration.as_secs_f64() + 1.0
        );
    }
    println!(
        "RESULT {{\"users\":{n},\"presence_frames\":{},\"presence_entries\":{},\"announcements\":{},\
         \"presence_p50_ms\":{:.3},\"presence_p99_ms\":{:.3},\"typing_sent\":{sent},\"typing_received\":{},\
         \"typing_p50_ms\":{:.3},\"typing_p99_ms\":{:.3},\"server_cpu_connect_s\":{},\"server_cpu_typing_s\":{}}}",
        presence_seen.0,
        presence_seen.1,
        presence_seen.2,
        ms(&seen.presence_latency, 0.5),
        ms(&seen.presence_latency, 0.99),
        seen.typing,
        ms(&seen.typing_latency, 0.5),
        ms(&seen.typing_latency, 0.99),
        cpu_connect.map_or("null".into(), |c| format!("{c:.3}")),
        cpu_typing.map_or("null".into(), |c| format!("{c:.3}")),
    );
    Ok(presence_seen.2 == expected_announcements && seen.typing == expected_typing)
}

/// Counts one frame that connection `c` received at `now` (ns).
fn observe(seen: &mut Seen, c: &Conn, v: &Value, now: u64) {
    let at = |table: &[u64], id: Option<i64>| {
        id.and_then(|id| usize::try_from(id).ok())
            .and_then(|i| table.get(i).copied())
            .filter(|&t| t != u64::MAX)
    };
    match v["cmd"].as_i64() {
        Some(PRESENCE) => {
            seen.presence_frames += 1;
            for e in v["presence"].as_array().into_iter().flatten() {
                seen.presence_entries += 1;
                if e["online"] != Value::Bool(true) {
                    continue;
                }
                if let Some(opened) = at(&seen.opened_at, e["userid"].as_i64()) {
                    if opened > c.opened {
                        seen.announcements += 1;
                        seen.presence_latency.record(now.saturating_sub(opened));
                    }
                }
            }
        }
        Some(TYPING_GROUP) => {
            seen.typing += 1;
            if let Some(sent) = at(&seen.typed_at, v["userid"].as_i64()) {
                seen.typing_latency.record(now.saturating_sub(sent));
            }
        }
        _ => seen.other += 1,
    }
}

/// Waits up to `wait` for input and hands every complete text frame to `on_frame`.
fn pump(
    poll: &mut Poll,
    events: &mut Events,
    wait: Duration,
    conns: &mut [Conn],
    buf: &mut [u8],
    seen: &mut Seen,
    ns: impl Fn(Instant) -> u64,
) -> Result<(), String> {
    match poll.poll(events, Some(wait.min(Duration::from_millis(50)))) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
        Err(e) => return Err(format!("poll: {e}")),
    }
    for event in events.iter() {
        let Some(c) = conns.get_mut(event.token().0) else {
            continue;
        };
        loop {
            match c.socket.read(buf) {
                Ok(0) => return Err(format!("user {}: the server closed", c.user)),
                Ok(got) => c.input.extend_from_slice(&buf[..got]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("user {}: read: {e}", c.user)),
            }
        }
        let now = ns(Instant::now());
        let mut at = 0;
        while let Ok(Some((header, len))) = decode_header(&c.input[at..]) {
            let Ok(payload_len) = usize::try_from(header.payload_len) else {
                return Err("frame too long".into());
            };
            if c.input.len() - at < len + payload_len {
                break;
            }
            let payload = &c.input[at + len..at + len + payload_len];
            if header.opcode == OpCode::Text {
                let v: Value =
                    serde_json::from_slice(payload).map_err(|e| format!("user {}: {e}", c.user))?;
                observe(seen, c, &v, now);
            }
            at += len + payload_len;
        }
        c.input.drain(..at);
    }
    Ok(())
}

/// A blocking `/chat` upgrade with the user's token; the socket after the 101.
fn handshake(target: &Target, token: &str) -> Result<std::net::TcpStream, String> {
    let mut socket =
        std::net::TcpStream::connect(target.addr).map_err(|e| format!("connect: {e}"))?;
    socket.set_nodelay(true).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let key = BASE64.encode(
        fastim::secret::new_token()
            .as_bytes()
            .get(..16)
            .unwrap_or(b"0123456789abcdef"),
    );
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {token}\r\n\r\n",
        target.path, target.authority
    );
    socket
        .write_all(request.as_bytes())
        .map_err(|e| format!("request: {e}"))?;
    // Read byte by byte up to the blank line: frames may follow in the same segment.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match socket.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            Ok(_) => return Err("closed during the handshake".into()),
            Err(e) => return Err(format!("handshake: {e}")),
        }
        if head.len() > 4096 {
            return Err("handshake response too long".into());
        }
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(format!(
            "refused: {}",
            String::from_utf8_lossy(&head).lines().next().unwrap_or("")
        ));
    }
    Ok(socket)
}

fn masked_text(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    write_masked_frame(&mut out, true, OpCode::Text, text.as_bytes(), MASK_KEY);
    out
}

/// The group id and the `(id, token)` of every user.
fn read_tokens(path: &Path) -> Result<(i64, Vec<(i64, String)>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = text.lines();
    let group = lines
        .next()
        .and_then(|l| l.strip_prefix("group "))
        .and_then(|g| g.trim().parse().ok())
        .ok_or("the tokens file starts with `group G`")?;
    let users = lines
        .map(|l| {
            let (id, token) = l.split_once(' ').ok_or("a line of `id token`")?;
            Ok((id.parse().map_err(|_| "a numeric id")?, token.to_owned()))
        })
        .collect::<Result<Vec<_>, &str>>()?;
    Ok((group, users))
}
