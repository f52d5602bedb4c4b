//! The `chat` mode: fastim's `/chat` under load, end to end.
//!
//! Setup over the HTTP API (users, one group or pairs of friends), then one
//! WebSocket per user. Senders keep W messages unacknowledged in flight; every
//! delivery is checked (right sender, each message exactly once, increasing ids)
//! and timed from the moment the message's first byte left the sender.
//!
//! - `group`: N users in one group, one of them sends (`cmd 11`); the other N − 1
//!   receive every message.
//! - `single`: P pairs of friends; in each pair one sends (`cmd 10`), the other
//!   receives.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::mem;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::{Events, Poll};

use fastim::im::cmd::code::{
    ACK, ERROR, GROUP as CMD_GROUP, HEARTBEAT, SINGLE as CMD_SINGLE, SYNC_DONE,
};
use fastim::ws::OpCode;
use fastim::ws::frame::{decode_header, write_masked_frame};

use crate::hist::Histogram;
use crate::net::{self, Link, MASK_KEY, Phase, Schedule, Target, open_connections_with};
use crate::setup::{self, Http, User};
use crate::tls::Stream;
use crate::{Json, Snapshot};

/// The shared receive buffer.
const READ_BUFFER: usize = 1024 * 1024;
/// How long acks and deliveries may take to come in after the measurement.
const DRAIN_TIME: Duration = Duration::from_secs(10);
/// The password of every load user.
const PASSWORD: &str = "fastim-load-pw";

/// Who sends to whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChatMode {
    /// One group of every client; one sender.
    Group,
    /// Pairs of friends; one sender per pair.
    Single,
}

/// What to run.
pub struct ChatArgs {
    /// The server's `host:port`, as a WebSocket target whose path is `/chat`.
    pub target: Target,
    pub mode: ChatMode,
    /// Users (and WebSockets): the group's size, or twice the pairs.
    pub clients: usize,
    pub in_flight: usize,
    /// Characters of `content` per message.
    pub size: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub server_pid: Option<u32>,
    /// HTTP connections used in parallel during the setup.
    pub parallel: usize,
    /// Handshakes in progress at once.
    pub batch: usize,
    /// Mobile number of user 0; user i has this plus i.
    pub mobile_base: u64,
    pub deadline: Instant,
}

/// A sending connection's messages; sequence numbers count from 0.
struct Sender {
    conn: usize,
    user: i64,
    /// `"cmd":11,"dstid":G` or `"cmd":10,"dstid":U`, for the frames.
    to: String,
    /// What every `ref` of this run holds after the time it was made at, before the
    /// sequence number: `<ms>.<start>.<pid>-<seq>`. Time first, as a real client's
    /// refs are (the web client's start with the time in milliseconds), so the
    /// server's reference index sees what it sees from them. The server stores a
    /// (sender, ref) once: refs must not repeat what an earlier run sent as the same
    /// user.
    ref_prefix: String,
    /// Messages built and queued on the socket.
    issued: u64,
    /// Messages acknowledged or refused.
    finished: u64,
    acked: u64,
    /// Send time of each message (ns since the start; 0 until its first byte is written).
    sent_at: Vec<u64>,
    /// Server id of each message, from its ack (0 until acknowledged or when refused).
    ids: Vec<i64>,
    /// Messages finished (acknowledged or refused), by sequence number.
    done: Vec<bool>,
}

/// A receiving connection's bookkeeping.
struct Receiver {
    /// The sender it hears from.
    from: usize,
    /// Sequence numbers received (a bit set).
    seen: Vec<u64>,
    distinct: u64,
    duplicates: u64,
    out_of_order: u64,
    last_id: i64,
}

struct Conn {
    socket: Stream,
    /// Frames to write; `out[..out_pos]` is written.
    out: Vec<u8>,
    out_pos: usize,
    /// Bytes of this connection's stream before `out[0]`.
    out_base: u64,
    /// Stream offset and sequence number of messages whose first byte is not written yet.
    unstamped: VecDeque<(u64, u64)>,
    /// The incomplete frame at the end of the last read.
    carry: Vec<u8>,
    sender: Option<usize>,
    receiver: Option<usize>,
    queued: bool,
    open: bool,
}

impl Link for Conn {
    fn parts(&mut self) -> (&mut Stream, &mut bool) {
        (&mut self.socket, &mut self.open)
    }
    fn all_written(&self) -> bool {
        self.out_pos == self.out.len()
    }
}

/// Figures of the measured interval and verification counts of the whole run.
struct Stats {
    measuring: bool,
    deliveries: u64,
    acks: u64,
    e2e: Histogram,
    ack_hist: Histogram,
    refused: u64,
    misdelivered: u64,
    id_mismatches: u64,
    errors: u64,
    failed: u64,
}

impl Stats {
    fn error(&mut self, what: impl FnOnce() -> String) {
        self.errors += 1;
        if self.errors <= 5 {
            eprintln!("verification error: {}", what());
        }
    }
}

/// Everything the frame handlers touch.
struct World {
    senders: Vec<Sender>,
    receivers: Vec<Receiver>,
    stats: Stats,
    size: usize,
    in_flight: u64,
}

/// Setup timings, for the report.
struct SetupTimes {
    register: f64,
    contacts: f64,
    connect: f64,
    group: Option<i64>,
}

/// Sets up, runs and reports; `Ok(false)` when anything was lost, duplicated,
/// misordered or refused, or a connection failed.
pub fn run(args: ChatArgs) -> Result<bool, String> {
    let n = args.clients;
    let addr = args.target.addr;
    let authority = args.target.authority.clone();
    let setup_start = Instant::now();
    eprintln!(
        "registering {n} users ({} HTTP connections in parallel)...",
        args.parallel
    );
    let base = args.mobile_base;
    let users: Vec<User> = setup::parallel(
        addr,
        &authority,
        n,
        args.parallel,
        args.deadline,
        "registering",
        |http, i| {
            let mobile = (base + i as u64).to_string();
            http.register_or_login(&mobile, PASSWORD, &format!("load{i}"))
        },
    )?;
    let register = setup_start.elapsed().as_secs_f64();
    let contacts_start = Instant::now();
    let mut group = None;
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let ref_prefix = format!(".{stamp:x}.{:x}-", std::process::id());
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    let mut role: Vec<(Option<usize>, Option<usize>)> = vec![(None, None); n];
    match args.mode {
        ChatMode::Group => {
            let name = format!("load-{}-{stamp}", std::process::id());
            let g = Http::new(addr, &authority).create_group(&users[0], &name)?;
            setup::parallel(
                addr,
                &authority,
                n - 1,
                args.parallel,
                args.deadline,
                "joining the group",
                |http, i| http.join_group(&users[i + 1], g),
            )?;
            group = Some(g);
            senders.push(new_sender(
                0,
                users[0].id,
                format!("\"cmd\":{CMD_GROUP},\"dstid\":{g}"),
                &ref_prefix,
            ));
            role[0].0 = Some(0);
            for r in role.iter_mut().skip(1) {
                r.1 = Some(receivers.len());
                receivers.push(new_receiver(0));
            }
        }
        ChatMode::Single => {
            setup::parallel(
                addr,
                &authority,
                n / 2,
                args.parallel,
                args.deadline,
                "adding friends",
                |http, p| http.add_friend(&users[2 * p], &users[2 * p + 1]),
            )?;
            for p in 0..n / 2 {
                let (a, b) = (2 * p, 2 * p + 1);
                role[a].0 = Some(senders.len());
                role[b].1 = Some(receivers.len());
                receivers.push(new_receiver(senders.len()));
                senders.push(new_sender(
                    a,
                    users[a].id,
                    format!("\"cmd\":{CMD_SINGLE},\"dstid\":{}", users[b].id),
                    &ref_prefix,
                ));
            }
        }
    }
    let contacts = contacts_start.elapsed().as_secs_f64();
    eprintln!(
        "setup: {n} users in {register:.1} s, {} in {contacts:.1} s; opening {n} /chat connections...",
        if group.is_some() {
            "group"
        } else {
            "friendships"
        }
    );
    let connect_start = Instant::now();
    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let sockets =
        open_connections_with(&mut poll, &args.target, n, args.batch, args.deadline, |i| {
            format!("Authorization: Bearer {}\r\n", users[i].token)
        })?;
    let times = SetupTimes {
        register,
        contacts,
        connect: connect_start.elapsed().as_secs_f64(),
        group,
    };
    let mut conns: Vec<Conn> = sockets
        .into_iter()
        .zip(role)
        .map(|(socket, (sender, receiver))| {
            let _ = socket.tcp().set_nodelay(true);
            Conn {
                socket,
                out: Vec::new(),
                out_pos: 0,
                out_base: 0,
                unstamped: VecDeque::new(),
                carry: Vec::new(),
                sender,
                receiver,
                queued: sender.is_some(),
                open: true,
            }
        })
        .collect();
    let mut world = World {
        senders,
        receivers,
        stats: Stats {
            measuring: false,
            deliveries: 0,
            acks: 0,
            e2e: Histogram::new(),
            ack_hist: Histogram::new(),
            refused: 0,
            misdelivered: 0,
            id_mismatches: 0,
            errors: 0,
            failed: 0,
        },
        size: args.size,
        in_flight: args.in_flight.max(1) as u64,
    };
    eprintln!(
        "{n} connections open in {:.1} s; {} s warm-up, {} s measured",
        times.connect,
        args.warmup.as_secs_f64(),
        args.duration.as_secs_f64()
    );
    let (start, stop) = traffic(&args, &mut poll, &mut conns, &mut world)?;
    let open = conns.iter().filter(|c| c.open).count();
    net::close_all(&mut conns, &mut poll, &mut vec![0u8; 64 * 1024]);
    report(&args, &times, &world, &start, &stop, open)
}

fn new_sender(conn: usize, user: i64, to: String, ref_prefix: &str) -> Sender {
    Sender {
        conn,
        user,
        to,
        ref_prefix: ref_prefix.to_string(),
        issued: 0,
        finished: 0,
        acked: 0,
        sent_at: Vec::new(),
        ids: Vec::new(),
        done: Vec::new(),
    }
}

fn new_receiver(from: usize) -> Receiver {
    Receiver {
        from,
        seen: Vec::new(),
        distinct: 0,
        duplicates: 0,
        out_of_order: 0,
        last_id: 0,
    }
}

/// The event loop of the measurement: warm-up, measured interval, drain.
fn traffic(
    args: &ChatArgs,
    poll: &mut Poll,
    conns: &mut [Conn],
    world: &mut World,
) -> Result<(Snapshot, Snapshot), String> {
    let server_pid = args.server_pid.map(|p| p.to_string());
    let mut buf = vec![0u8; READ_BUFFER];
    let mut scratch = String::new();
    let mut events = Events::with_capacity(1024);
    let mut to_flush: Vec<usize> = world.senders.iter().map(|s| s.conn).collect();
    let mut flushing: Vec<usize> = Vec::new();
    let mut to_read: Vec<usize> = Vec::new();
    let mut ready: Vec<(usize, bool, bool)> = Vec::new();
    let t0 = Instant::now();
    let schedule = Schedule::new(t0, args.warmup, args.duration, DRAIN_TIME);
    let mut phase = Phase::Warmup;
    let mut start: Option<Snapshot> = None;
    let mut stop: Option<Snapshot> = None;
    loop {
        let issuing = phase != Phase::Drain;
        mem::swap(&mut to_flush, &mut flushing);
        for key in flushing.drain(..) {
            let conn = &mut conns[key];
            conn.queued = false;
            if !conn.open {
                continue;
            }
            if issuing {
                if let Some(s) = conn.sender {
                    issue(
                        conn,
                        &mut world.senders[s],
                        world.size,
                        world.in_flight,
                        &mut scratch,
                    );
                }
            }
            if let Err(e) = flush(conn, &mut world.senders, t0) {
                net::fail(conn, poll, &mut world.stats.failed, &format!("write: {e}"));
            }
        }
        let now = Instant::now();
        if phase == Phase::Warmup && now >= schedule.warm_end {
            world.stats.deliveries = 0;
            world.stats.acks = 0;
            world.stats.e2e.clear();
            world.stats.ack_hist.clear();
            world.stats.measuring = true;
            start = Some(Snapshot::take(server_pid.as_deref())?);
            phase = Phase::Measure;
        }
        if phase == Phase::Measure && now >= schedule.end {
            stop = Some(Snapshot::take(server_pid.as_deref())?);
            world.stats.measuring = false;
            phase = Phase::Drain;
        }
        if phase == Phase::Drain && (now >= schedule.drain_end || settled(world, conns)) {
            break;
        }
        if now >= args.deadline {
            return Err("global timeout reached".into());
        }
        if world.senders.iter().all(|s| !conns[s.conn].open) {
            return Err("every sending connection failed".into());
        }
        net::wait_ready(
            poll,
            &mut events,
            &mut to_read,
            schedule.phase_end(phase),
            &mut ready,
        )?;
        for (key, readable, writable) in ready.drain(..) {
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            if !conn.open {
                continue;
            }
            let mut wake = writable;
            if readable {
                match read_conn(key, conn, &mut buf, world, t0) {
                    Ok((more, finished)) => {
                        if more {
                            to_read.push(key);
                        }
                        if let (true, Phase::Warmup | Phase::Measure, Some(s)) =
                            (finished, phase, conn.sender)
                        {
                            // Replace acknowledged messages at once rather than after
                            // this turn's other events (up to a thousand receivers).
                            let sender = &mut world.senders[s];
                            issue(conn, sender, world.size, world.in_flight, &mut scratch);
                            if let Err(e) = flush(conn, &mut world.senders, t0) {
                                net::fail(
                                    conn,
                                    poll,
                                    &mut world.stats.failed,
                                    &format!("write: {e}"),
                                );
                                continue;
                            }
                        }
                        wake |= conn.out_pos < conn.out.len();
                    }
                    Err(e) => {
                        net::fail(conn, poll, &mut world.stats.failed, &e);
                        continue;
                    }
                }
            }
            if wake && !conn.queued {
                conn.queued = true;
                to_flush.push(key);
            }
        }
    }
    match (start, stop) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err("the run ended before the measurement".into()),
    }
}

/// Whether everything sent has been answered and every acknowledged message
/// has reached every receiver that is still connected.
fn settled(world: &World, conns: &[Conn]) -> bool {
    world
        .senders
        .iter()
        .all(|s| !conns[s.conn].open || s.finished == s.issued)
        && conns.iter().all(|c| {
            !c.open
                || c.receiver.is_none_or(|r| {
                    let r = &world.receivers[r];
                    r.distinct >= world.senders[r.from].acked
                })
        })
}

/// Hex digits of the time at the start of a ref (milliseconds since 1970: 11 until 2527).
const REF_TIME_DIGITS: usize = 11;

/// Queues new messages up to the in-flight limit.
fn issue(conn: &mut Conn, sender: &mut Sender, size: usize, in_flight: u64, scratch: &mut String) {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    while sender.issued - sender.finished < in_flight {
        let seq = sender.issued;
        scratch.clear();
        let _ = write!(scratch, "{{{},\"media\":1,\"content\":\"", sender.to);
        let content_start = scratch.len();
        // `0:SEQ:` then padding; receivers know their sender by their own bookkeeping
        // (the 0 is a placeholder that keeps the format open to several senders).
        let _ = write!(scratch, "0:{seq}:");
        while scratch.len() - content_start < size {
            scratch.push('x');
        }
        let _ = write!(
            scratch,
            "\",\"ref\":\"{ms:0w$x}{}{seq}\"}}",
            sender.ref_prefix,
            w = REF_TIME_DIGITS
        );
        let start = conn.out_base + conn.out.len() as u64;
        write_masked_frame(
            &mut conn.out,
            true,
            OpCode::Text,
            scratch.as_bytes(),
            MASK_KEY,
        );
        conn.unstamped.push_back((start, seq));
        sender.issued += 1;
        sender.sent_at.push(0);
        sender.ids.push(0);
        sender.done.push(false);
    }
}

/// Writes what is queued; stamps the send time of messages whose first byte went out.
fn flush(conn: &mut Conn, senders: &mut [Sender], t0: Instant) -> io::Result<()> {
    while conn.out_pos < conn.out.len() {
        match conn.socket.write(&conn.out[conn.out_pos..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                conn.out_pos += n;
                let now = t0.elapsed().as_nanos() as u64;
                let written = conn.out_base + conn.out_pos as u64;
                while let Some(&(start, seq)) = conn.unstamped.front() {
                    if start >= written {
                        break;
                    }
                    if let Some(s) = conn.sender {
                        senders[s].sent_at[seq as usize] = now;
                    }
                    conn.unstamped.pop_front();
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    conn.out_base += conn.out.len() as u64;
    conn.out.clear();
    conn.out_pos = 0;
    Ok(())
}

/// Reads and handles what a connection has (up to the fairness cap). Returns
/// whether to read again this turn, and whether messages of this connection
/// were acknowledged or refused (room for more).
fn read_conn(
    key: usize,
    conn: &mut Conn,
    buf: &mut [u8],
    world: &mut World,
    t0: Instant,
) -> Result<(bool, bool), String> {
    let mut finished = false;
    let more = net::read_turn(
        &mut (conn, buf),
        |(conn, buf)| {
            let kept = conn.carry.len();
            if kept >= buf.len() / 2 {
                return Err(io::Error::other(
                    "a frame from the server is larger than the read buffer",
                ));
            }
            buf[..kept].copy_from_slice(&conn.carry);
            Ok((conn.socket.read(&mut buf[kept..])?, buf.len() - kept))
        },
        |(conn, buf), n| {
            let now = t0.elapsed().as_nanos() as u64;
            let data = &buf[..conn.carry.len() + n];
            let used = frames(key, conn, data, world, now, &mut finished)?;
            conn.carry.clear();
            conn.carry.extend_from_slice(&data[used..]);
            Ok(())
        },
    )?;
    Ok((more, finished))
}

/// Handles the complete frames in `data`; returns how many bytes they took.
fn frames(
    key: usize,
    conn: &mut Conn,
    data: &[u8],
    world: &mut World,
    now: u64,
    finished: &mut bool,
) -> Result<usize, String> {
    let mut pos = 0;
    while pos < data.len() {
        let (header, header_len) = match decode_header(&data[pos..]) {
            Ok(Some(h)) => h,
            Ok(None) => break,
            Err(e) => return Err(format!("bad frame from the server: {e}")),
        };
        let len = usize::try_from(header.payload_len).map_err(|_| "frame too long")?;
        if data.len() - pos - header_len < len {
            break;
        }
        if header.mask.is_some() || header.rsv != 0 || !header.fin {
            return Err("server frame is masked, fragmented or has RSV bits".into());
        }
        let payload = &data[pos + header_len..pos + header_len + len];
        pos += header_len + len;
        match header.opcode {
            OpCode::Text => on_text(key, conn, payload, world, now, finished),
            OpCode::Ping => {
                write_masked_frame(&mut conn.out, true, OpCode::Pong, payload, MASK_KEY);
            }
            OpCode::Pong => {}
            OpCode::Close => {
                return Err(format!(
                    "server closed the WebSocket: {}",
                    String::from_utf8_lossy(payload)
                ));
            }
            op => return Err(format!("unexpected {op:?} frame from the server")),
        }
    }
    Ok(pos)
}

/// One chat frame from the server: a delivery, an ack, an error, a heartbeat.
fn on_text(
    key: usize,
    conn: &mut Conn,
    json: &[u8],
    world: &mut World,
    now: u64,
    finished: &mut bool,
) {
    let stats = &mut world.stats;
    let delivery = parse_delivery(json);
    let cmd = match delivery {
        Some(_) => Some(CMD_GROUP),
        None => int_field(json, b"\"cmd\":"),
    };
    match cmd {
        Some(CMD_SINGLE | CMD_GROUP) => {
            let Some(r) = conn.receiver else {
                return stats.error(|| format!("connection {key} (a sender) got a delivery"));
            };
            let Some((id, user, seq)) = delivery else {
                return stats
                    .error(|| format!("unreadable delivery: {}", String::from_utf8_lossy(json)));
            };
            let receiver = &mut world.receivers[r];
            let sender = &world.senders[receiver.from];
            if user != sender.user || seq >= sender.issued {
                stats.misdelivered += 1;
                return stats.error(|| {
                    format!(
                        "connection {key} got message {seq} of user {user}, which it does not expect"
                    )
                });
            }
            let acked_id = sender.ids[seq as usize];
            if acked_id != 0 && acked_id != id {
                stats.id_mismatches += 1;
                stats.error(|| format!("message {seq} delivered as id {id}, acked as {acked_id}"));
            }
            let word = (seq / 64) as usize;
            if receiver.seen.len() <= word {
                receiver.seen.resize(word + 1, 0);
            }
            let bit = 1u64 << (seq % 64);
            if receiver.seen[word] & bit != 0 {
                receiver.duplicates += 1;
            } else {
                receiver.seen[word] |= bit;
                receiver.distinct += 1;
            }
            if id <= receiver.last_id {
                receiver.out_of_order += 1;
            } else {
                receiver.last_id = id;
            }
            if stats.measuring {
                stats.deliveries += 1;
                let sent = sender.sent_at[seq as usize];
                stats.e2e.record(now.saturating_sub(sent));
            }
        }
        Some(cmd @ (ACK | ERROR)) => {
            let Some(s) = conn.sender else {
                return stats.error(|| format!("connection {key} (a receiver) got cmd {cmd}"));
            };
            let sender = &mut world.senders[s];
            let seq = str_field(json, b"\"ref\":\"")
                .and_then(|r| r.get(REF_TIME_DIGITS..))
                .and_then(|r| r.strip_prefix(sender.ref_prefix.as_bytes()))
                .and_then(|r| std::str::from_utf8(r).ok())
                .and_then(|r| r.parse::<u64>().ok())
                .filter(|&seq| seq < sender.issued && !sender.done[seq as usize]);
            let Some(seq) = seq else {
                return stats.error(|| {
                    format!(
                        "reply for no outstanding message: {}",
                        String::from_utf8_lossy(json)
                    )
                });
            };
            sender.done[seq as usize] = true;
            sender.finished += 1;
            *finished = true;
            if cmd == ERROR {
                stats.refused += 1;
                if stats.refused <= 5 {
                    eprintln!("refused: {}", String::from_utf8_lossy(json));
                }
                return;
            }
            let Some(id) = int_field(json, b"\"id\":").filter(|&id| id > 0) else {
                return stats
                    .error(|| format!("ack without id: {}", String::from_utf8_lossy(json)));
            };
            sender.ids[seq as usize] = id;
            sender.acked += 1;
            if stats.measuring {
                stats.acks += 1;
                stats
                    .ack_hist
                    .record(now.saturating_sub(sender.sent_at[seq as usize]));
            }
        }
        Some(HEARTBEAT | SYNC_DONE) => {}
        _ => stats.error(|| format!("unexpected frame: {}", String::from_utf8_lossy(json))),
    }
}

/// The id, sender and sequence number of a delivery; `None` if `json` is not one.
///
/// Fields are looked for from where the last one was found (then from the
/// start), so in fastim's order (`{"id":..,"userid":..,"cmd":..,..,"content":".."}`)
/// each is found at once.
fn parse_delivery(json: &[u8]) -> Option<(i64, i64, u64)> {
    let mut at = 0;
    let id = int_at(json, &mut at, b"\"id\":")?;
    let user = int_at(json, &mut at, b"\"userid\":")?;
    if !matches!(int_at(json, &mut at, b"\"cmd\":")?, CMD_SINGLE | CMD_GROUP) {
        return None;
    }
    // `0:SEQ:xxx`
    let content = str_at(json, &mut at, b"\"content\":\"")?;
    let seq = int_at(content.strip_prefix(b"0:")?, &mut 0, b"")?;
    Some((id, user, u64::try_from(seq).ok()?))
}

/// The integer after `key` (which includes the quotes and the colon).
fn int_field(json: &[u8], key: &[u8]) -> Option<i64> {
    int_at(json, &mut 0, key)
}

/// The integer after `key`, looked for from `*at` on (then from the start);
/// `*at` moves past it.
fn int_at(json: &[u8], at: &mut usize, key: &[u8]) -> Option<i64> {
    let start = seek(json, at, key)?;
    let rest = &json[start..];
    let (neg, digits) = match rest.first() {
        Some(b'-') => (true, &rest[1..]),
        _ => (false, rest),
    };
    let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    if len == 0 || len > 18 {
        return None;
    }
    let v = digits[..len]
        .iter()
        .fold(0i64, |v, &d| v * 10 + i64::from(d - b'0'));
    *at = start + usize::from(neg) + len;
    Some(if neg { -v } else { v })
}

/// The string after `key` (which ends with the opening quote), up to the next
/// quote: enough for the strings this tool writes, which have no escapes.
fn str_field<'a>(json: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    str_at(json, &mut 0, key)
}

/// [`str_field`] from `*at` on (then from the start); `*at` moves past it.
fn str_at<'a>(json: &'a [u8], at: &mut usize, key: &[u8]) -> Option<&'a [u8]> {
    let start = seek(json, at, key)?;
    let len = json[start..].iter().position(|&b| b == b'"')?;
    *at = start + len + 1;
    Some(&json[start..start + len])
}

/// Where the value after `key` starts: `key` is looked for from `*at`, then from 0.
fn seek(json: &[u8], at: &mut usize, key: &[u8]) -> Option<usize> {
    let from = (*at).min(json.len());
    let found = find(&json[from..], key)
        .map(|i| from + i)
        .or_else(|| find(&json[..from], key))?;
    Some(found + key.len())
}

/// The first occurrence of `needle`: a scan for its first byte, then a comparison.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let Some((&first, rest)) = needle.split_first() else {
        return Some(0);
    };
    let last_start = haystack.len().checked_sub(needle.len())?;
    let mut i = 0;
    while i <= last_start {
        i += haystack[i..=last_start].iter().position(|&b| b == first)?;
        // Keys are a few bytes: a loop beats a call to memcmp.
        if haystack[i + 1..i + needle.len()]
            .iter()
            .zip(rest)
            .all(|(a, b)| a == b)
        {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn report(
    args: &ChatArgs,
    times: &SetupTimes,
    world: &World,
    start: &Snapshot,
    stop: &Snapshot,
    open_at_end: usize,
) -> Result<bool, String> {
    let stats = &world.stats;
    let secs = stop.at.duration_since(start.at).as_secs_f64();
    let msgs_per_s = stats.acks as f64 / secs;
    let deliveries_per_s = stats.deliveries as f64 / secs;
    let us = |ns: u64| ns as f64 / 1000.0;
    let (p50, p99, p999, max) = (
        us(stats.e2e.quantile(0.50)),
        us(stats.e2e.quantile(0.99)),
        us(stats.e2e.quantile(0.999)),
        us(stats.e2e.max()),
    );
    let (ack_p50, ack_p99) = (
        us(stats.ack_hist.quantile(0.50)),
        us(stats.ack_hist.quantile(0.99)),
    );
    let load_cpu = (stop.own_cpu - start.own_cpu) / secs * 100.0;
    let server_cpu = match (start.server_cpu, stop.server_cpu) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let other_cpu = ((stop.machine_cpu - start.machine_cpu)
        - (stop.own_cpu - start.own_cpu)
        - server_cpu.unwrap_or(0.0))
        / secs
        * 100.0;
    // Verification over the whole run (warm-up and drain included).
    let sent: u64 = world.senders.iter().map(|s| s.issued).sum();
    let acked: u64 = world.senders.iter().map(|s| s.acked).sum();
    let unanswered: u64 = world.senders.iter().map(|s| s.issued - s.finished).sum();
    let expected: u64 = world
        .receivers
        .iter()
        .map(|r| world.senders[r.from].acked)
        .sum();
    let distinct: u64 = world.receivers.iter().map(|r| r.distinct).sum();
    let missing = expected.saturating_sub(distinct);
    let duplicates: u64 = world.receivers.iter().map(|r| r.duplicates).sum();
    let out_of_order: u64 = world.receivers.iter().map(|r| r.out_of_order).sum();
    let (what, shape) = match args.mode {
        ChatMode::Group => (
            "group",
            format!(
                "a group of {} (group id {}), 1 sender, {} receivers",
                args.clients,
                times.group.unwrap_or(0),
                args.clients - 1
            ),
        ),
        ChatMode::Single => (
            "single",
            format!("{} pairs of friends, 1 sender each", args.clients / 2),
        ),
    };
    println!(
        "chat {what}: {shape}; {} in flight per sender, {} characters of content, {secs:.2} s measured",
        args.in_flight, args.size
    );
    println!(
        "  setup: registration {:.1} s, {} {:.1} s, /chat connections {:.1} s",
        times.register,
        if args.mode == ChatMode::Group {
            "group"
        } else {
            "friendships"
        },
        times.contacts,
        times.connect
    );
    println!(
        "  throughput: {msgs_per_s:.0} messages/s acknowledged, {deliveries_per_s:.0} deliveries/s"
    );
    println!(
        "  latency (send to delivery): p50 {p50:.1} us, p99 {p99:.1} us, p99.9 {p999:.1} us, max {max:.1} us ({} samples)",
        stats.e2e.count()
    );
    println!(
        "  latency (send to ack): p50 {ack_p50:.1} us, p99 {ack_p99:.1} us ({} samples)",
        stats.ack_hist.count()
    );
    println!("  load tool CPU: {load_cpu:.0} % of one core");
    if let Some(cpu) = server_cpu {
        println!("  other processes: {:.0} % of one core", other_cpu.max(0.0));
        println!(
            "  server CPU: {cpu:.2} s ({:.0} % of one core), {:.2} us per message, {:.3} us per delivery",
            cpu / secs * 100.0,
            cpu * 1e6 / (stats.acks as f64).max(1.0),
            cpu * 1e6 / (stats.deliveries as f64).max(1.0)
        );
    }
    println!(
        "  verification: {sent} sent, {acked} acknowledged, {} refused, {unanswered} unanswered; \
         {distinct} of {expected} deliveries, {missing} missing, {duplicates} duplicated, \
         {out_of_order} out of order, {} misdelivered, {} id mismatches; {} errors, {} connections failed",
        stats.refused, stats.misdelivered, stats.id_mismatches, stats.errors, stats.failed
    );
    if load_cpu > 90.0 {
        eprintln!(
            "warning: the load tool used {load_cpu:.0} % of a core: it may be the bottleneck"
        );
    }
    let json = Json::new()
        .str("mode", "chat")
        .str("chat_mode", what)
        .str("url", &args.target.url())
        .int("clients", args.clients as u64)
        .int(
            "group_size",
            if args.mode == ChatMode::Group {
                args.clients as u64
            } else {
                0
            },
        )
        .int(
            "pairs",
            if args.mode == ChatMode::Single {
                (args.clients / 2) as u64
            } else {
                0
            },
        )
        .int("in_flight", args.in_flight as u64)
        .int("size", args.size as u64)
        .num("register_s", times.register)
        .num("contacts_s", times.contacts)
        .num("connect_s", times.connect)
        .num("seconds", secs)
        .int("acked_in_interval", stats.acks)
        .int("deliveries_in_interval", stats.deliveries)
        .num("msgs_per_s", msgs_per_s)
        .num("deliveries_per_s", deliveries_per_s)
        .num("p50_us", p50)
        .num("p99_us", p99)
        .num("p999_us", p999)
        .num("max_us", max)
        .num("ack_p50_us", ack_p50)
        .num("ack_p99_us", ack_p99)
        .num("load_cpu_pct", load_cpu)
        .opt("other_cpu_pct", server_cpu.map(|_| other_cpu.max(0.0)))
        .opt("server_cpu_s", server_cpu)
        .opt("server_cpu_pct", server_cpu.map(|c| c / secs * 100.0))
        .opt(
            "server_us_per_msg",
            server_cpu.map(|c| c * 1e6 / (stats.acks as f64).max(1.0)),
        )
        .opt(
            "server_us_per_delivery",
            server_cpu.map(|c| c * 1e6 / (stats.deliveries as f64).max(1.0)),
        )
        .int("sent", sent)
        .int("acked", acked)
        .int("refused", stats.refused)
        .int("unanswered", unanswered)
        .int("expected_deliveries", expected)
        .int("missing", missing)
        .int("duplicates", duplicates)
        .int("out_of_order", out_of_order)
        .int("misdelivered", stats.misdelivered)
        .int("id_mismatches", stats.id_mismatches)
        .int("errors", stats.errors)
        .int("failed_connections", stats.failed)
        .int("open_at_end", open_at_end as u64);
    println!("RESULT {}", json.finish());
    Ok(stats.errors == 0
        && stats.failed == 0
        && stats.refused == 0
        && unanswered == 0
        && missing == 0
        && duplicates == 0
        && out_of_order == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        let d =
            br#"{"id":58,"userid":2,"cmd":11,"dstid":3,"media":1,"content":"0:17:xx","pic":""}"#;
        assert_eq!(int_field(d, b"\"id\":"), Some(58));
        assert_eq!(int_field(d, b"\"userid\":"), Some(2));
        assert_eq!(int_field(d, b"\"cmd\":"), Some(11));
        assert_eq!(str_field(d, b"\"content\":\""), Some(&b"0:17:xx"[..]));
        assert_eq!(parse_delivery(d), Some((58, 2, 17)));
        let reordered = br#"{"cmd":10,"content":"0:3:","userid":4,"id":9}"#;
        assert_eq!(parse_delivery(reordered), Some((9, 4, 3)));
        let a = br#"{"cmd":21,"ref":"12","id":5,"createat":9}"#;
        assert_eq!(parse_delivery(a), None);
        assert_eq!(int_field(a, b"\"id\":"), Some(5));
        assert_eq!(str_field(a, b"\"ref\":\""), Some(&b"12"[..]));
        assert_eq!(int_field(b"{\"cmd\":-3}", b"\"cmd\":"), Some(-3));
        assert_eq!(int_field(b"{\"cmd\":}", b"\"cmd\":"), None);
        let mut at = 0;
        assert_eq!(int_at(d, &mut at, b"\"cmd\":"), Some(11));
        // Behind the cursor: found from the start.
        assert_eq!(int_at(d, &mut at, b"\"userid\":"), Some(2));
        assert_eq!(str_at(d, &mut at, b"\"content\":\""), Some(&b"0:17:xx"[..]));
        assert_eq!(find(b"abcabd", b"abd"), Some(3));
        assert_eq!(find(b"ab", b"abc"), None);
        assert_eq!(int_at(b"17:x", &mut 0, b""), Some(17));
    }
}
