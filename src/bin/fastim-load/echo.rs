//! The `echo` mode: keep W messages outstanding on each of C connections and
//! measure what comes back.

use std::io::{self, IoSlice, Read, Write};
use std::mem::{self, MaybeUninit};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Poll};
use socket2::SockRef;

use fastim::ws::OpCode;
use fastim::ws::frame::{MAX_HEADER_LEN, decode_header, write_masked_frame};

use crate::hist::Histogram;
use crate::net::{self, Link, MASK_KEY, Phase, Rng, Schedule, Target};
use crate::tls::Stream;
use crate::{Json, Snapshot};

/// Echoes up to this size are compared byte for byte; larger ones are sampled.
const FULL_CHECK: usize = 4096;
/// The smallest payload whose verification may be turned off (`--no-verify`).
pub const NO_VERIFY_MIN: usize = 64 * 1024;
/// The shared receive buffer.
const READ_BUFFER: usize = 1024 * 1024;
/// How long outstanding echoes may take to come back after the measurement.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// What to run.
pub struct EchoArgs {
    pub target: Target,
    pub connections: usize,
    pub size: usize,
    pub in_flight: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub binary: bool,
    /// Compare echoed payloads with what was sent; when off (payloads of at least
    /// [`NO_VERIFY_MIN`] bytes only), their bytes are discarded in the kernel.
    pub verify: bool,
    pub server_pid: Option<u32>,
    pub batch: usize,
    pub deadline: Instant,
    /// Offer permessage-deflate in every handshake.
    pub offer_deflate: bool,
}

/// The messages of a run, built and masked once: a ring of distinct frames sent
/// in turn (message `seq` is frame `seq % count`), kept back to back so that any
/// run of consecutive messages leaves in one or two slices of `wire`.
struct Frames {
    /// The masked frames, back to back.
    wire: Vec<u8>,
    /// Their payloads, unmasked: what the echoes must equal.
    plain: Vec<u8>,
    frame_len: usize,
    size: usize,
    count: usize,
    opcode: OpCode,
    /// Whether payloads are compared (else only headers are read).
    verify: bool,
}

impl Frames {
    fn new(size: usize, binary: bool, verify: bool) -> Frames {
        let opcode = if binary { OpCode::Binary } else { OpCode::Text };
        let mut probe = Vec::new();
        write_masked_frame(&mut probe, true, opcode, &vec![0; size], MASK_KEY);
        let frame_len = probe.len();
        // Enough distinct frames to catch a reordered or misdelivered echo, and a
        // ring of at least 256 KiB so that a batch is one or two slices.
        let count = if size >= 64 * 1024 {
            4
        } else {
            (256 * 1024usize).div_ceil(frame_len).max(4)
        };
        let mut wire = Vec::with_capacity(count * frame_len);
        let mut plain = Vec::with_capacity(count * size);
        let mut payload = vec![0u8; size];
        for v in 0..count {
            let mut rng = Rng::seeded(v as u64 + 1);
            for chunk in payload.chunks_mut(8) {
                let r = rng.next_u64().to_le_bytes();
                for (b, &x) in chunk.iter_mut().zip(r.iter()) {
                    // Text stays ASCII letters, so it is valid UTF-8.
                    *b = if binary { x } else { b'a' + x % 26 };
                }
            }
            plain.extend_from_slice(&payload);
            write_masked_frame(&mut wire, true, opcode, &payload, MASK_KEY);
        }
        Frames {
            wire,
            plain,
            frame_len,
            size,
            count,
            opcode,
            verify,
        }
    }

    /// Whether `chunk`, found at `offset` in the echo of message `seq`, is right.
    fn check(&self, seq: u64, offset: usize, chunk: &[u8]) -> bool {
        let v = (seq % self.count as u64) as usize;
        let expected = &self.plain[v * self.size + offset..v * self.size + offset + chunk.len()];
        if self.size <= FULL_CHECK {
            return chunk == expected;
        }
        // Sampled: the first and last 4 KiB, and 64 bytes every 64 KiB.
        let end = offset + chunk.len();
        let window = |lo: usize, hi: usize| {
            let (lo, hi) = (lo.max(offset), hi.min(end));
            lo >= hi || chunk[lo - offset..hi - offset] == expected[lo - offset..hi - offset]
        };
        if !window(0, FULL_CHECK) || !window(self.size - FULL_CHECK, self.size) {
            return false;
        }
        let mut k = offset / 65536 * 65536;
        while k < end {
            if !window(k, k + 64) {
                return false;
            }
            k += 65536;
        }
        true
    }
}

/// One connection's counters; all sequence numbers count messages from 0.
struct Conn {
    socket: Stream,
    /// Messages handed to the write side.
    issued: u64,
    /// Messages whose first byte has been written (and whose send time is known).
    stamped: u64,
    /// Bytes of the frame stream written.
    written: u64,
    /// Echoes received completely.
    received: u64,
    /// Send time (ns since the start) of message `seq`, at `seq % in_flight`.
    sent_at: Box<[u64]>,
    /// A frame header cut by the end of a read.
    header: [u8; MAX_HEADER_LEN],
    header_len: usize,
    /// The echo being received: bytes still to come, bytes seen.
    payload: Option<(usize, usize)>,
    /// On the flush list of this turn.
    queued: bool,
    open: bool,
    /// Bytes of the frame stream issued: `issued` frames.
    issued_bytes: u64,
}

impl Link for Conn {
    fn parts(&mut self) -> (&mut Stream, &mut bool) {
        (&mut self.socket, &mut self.open)
    }
    fn all_written(&self) -> bool {
        self.written == self.issued_bytes
    }
}

/// Counters of the measured interval.
struct Counters {
    measuring: bool,
    messages: u64,
    hist: Histogram,
    errors: u64,
    failed: u64,
}

impl Counters {
    fn error(&mut self, what: impl FnOnce() -> String) {
        self.errors += 1;
        if self.errors <= 5 {
            eprintln!("verification error: {}", what());
        }
    }
}

/// What one read of a connection works with.
struct Reader<'a> {
    conn: &'a mut Conn,
    /// Where frames are read and parsed.
    buf: &'a mut [u8],
    /// Room for payload bytes discarded in the kernel: never written.
    skip: &'a mut [MaybeUninit<u8>],
}

/// Reads and checks everything a connection has (up to the fairness cap);
/// returns whether to read it again this turn.
///
/// Unverified payloads are not read: a read asks for at most a frame header
/// (and the first payload bytes behind it), then [`discard`] drops the rest of
/// the payload in the kernel.
fn read_conn(
    conn: &mut Conn,
    buf: &mut [u8],
    skip: &mut [MaybeUninit<u8>],
    frames: &Frames,
    counters: &mut Counters,
    t0: Instant,
) -> Result<bool, String> {
    // Bytes of the payload being received, when they are to be discarded unread.
    let skipping = |conn: &Conn| match conn.payload {
        Some((remaining, _)) if !frames.verify => Some(remaining),
        _ => None,
    };
    let mut cx = Reader { conn, buf, skip };
    net::read_turn(
        &mut cx,
        |cx| {
            if let Some(remaining) = skipping(cx.conn) {
                let asked = remaining.min(cx.skip.len());
                return Ok((discard(cx.conn.socket.tcp(), &mut cx.skip[..asked])?, asked));
            }
            let kept = cx.conn.header_len;
            cx.buf[..kept].copy_from_slice(&cx.conn.header[..kept]);
            let end = if frames.verify {
                cx.buf.len()
            } else {
                MAX_HEADER_LEN
            };
            Ok((cx.conn.socket.read(&mut cx.buf[kept..end])?, end - kept))
        },
        |cx, n| {
            let now = t0.elapsed().as_nanos() as u64;
            if skipping(cx.conn).is_some() {
                return payload(cx.conn, n, None, frames, counters, now);
            }
            let kept = mem::take(&mut cx.conn.header_len);
            parse(cx.conn, &cx.buf[..kept + n], frames, counters, now)
        },
    )
}

/// Drops up to `room.len()` bytes of the socket's input and returns how many. On
/// Linux, `recv` with `MSG_TRUNC` on a TCP socket discards the bytes in the kernel
/// instead of copying them (tcp(7)): `room` is never written, it only bounds the
/// count.
#[cfg(target_os = "linux")]
fn discard(socket: &TcpStream, room: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
    SockRef::from(socket).recv_with_flags(room, libc::MSG_TRUNC)
}

/// Elsewhere `MSG_TRUNC` means something else on TCP: read the bytes and drop them.
#[cfg(not(target_os = "linux"))]
fn discard(socket: &TcpStream, room: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
    SockRef::from(socket).recv(room)
}

/// Takes the next `n` bytes of the echo being received (`data`, checked against
/// what was sent, or `None`: discarded unread) and completes it at its end.
fn payload(
    conn: &mut Conn,
    n: usize,
    data: Option<&[u8]>,
    frames: &Frames,
    counters: &mut Counters,
    now: u64,
) -> Result<(), String> {
    let Some((remaining, offset)) = conn.payload else {
        return Err("payload bytes outside a frame".into());
    };
    if let Some(data) = data.filter(|_| frames.verify) {
        if !frames.check(conn.received, offset, data) {
            let seq = conn.received;
            counters.error(|| format!("echo of message {seq} differs from it"));
        }
    }
    if remaining == n {
        conn.payload = None;
        complete(conn, counters, now)
    } else {
        conn.payload = Some((remaining - n, offset + n));
        Ok(())
    }
}

/// Walks the server's frames in `data`, checking each echo against what was sent.
fn parse(
    conn: &mut Conn,
    data: &[u8],
    frames: &Frames,
    counters: &mut Counters,
    now: u64,
) -> Result<(), String> {
    let mut pos = 0;
    while pos < data.len() {
        if let Some((remaining, _)) = conn.payload {
            let n = remaining.min(data.len() - pos);
            payload(conn, n, Some(&data[pos..pos + n]), frames, counters, now)?;
            pos += n;
            continue;
        }
        let (header, header_len) = match decode_header(&data[pos..]) {
            Ok(Some(h)) => h,
            Ok(None) => {
                let rest = &data[pos..];
                conn.header[..rest.len()].copy_from_slice(rest);
                conn.header_len = rest.len();
                return Ok(());
            }
            Err(e) => return Err(format!("bad frame from the server: {e}")),
        };
        pos += header_len;
        match header.opcode {
            OpCode::Close => return Err("server sent a close frame".into()),
            OpCode::Text | OpCode::Binary if header.fin => {}
            op => {
                return Err(format!(
                    "unexpected {op:?} frame (fin {}) from the server",
                    header.fin
                ));
            }
        }
        if header.mask.is_some() || header.rsv != 0 {
            return Err("server frame is masked or has RSV bits".into());
        }
        if header.payload_len != frames.size as u64 {
            return Err(format!(
                "echo of {} bytes, {} were sent",
                header.payload_len, frames.size
            ));
        }
        if header.opcode != frames.opcode {
            let op = header.opcode;
            counters.error(|| format!("echo is {op:?}, {:?} was sent", frames.opcode));
        }
        if frames.size == 0 {
            complete(conn, counters, now)?;
        } else {
            conn.payload = Some((frames.size, 0));
        }
    }
    Ok(())
}

fn complete(conn: &mut Conn, counters: &mut Counters, now: u64) -> Result<(), String> {
    let seq = conn.received;
    if seq >= conn.stamped {
        return Err(format!("echo of message {seq}, which was not sent yet"));
    }
    conn.received += 1;
    if counters.measuring {
        let w = conn.sent_at.len() as u64;
        counters.messages += 1;
        counters
            .hist
            .record(now.saturating_sub(conn.sent_at[(seq % w) as usize]));
    }
    Ok(())
}

/// Tops the connection up to `in_flight` outstanding messages (while `issuing`)
/// and writes what is pending, in as few calls as the socket allows.
fn flush(conn: &mut Conn, frames: &Frames, t0: Instant, issuing: bool) -> io::Result<()> {
    let w = conn.sent_at.len() as u64;
    let frame_len = frames.frame_len as u64;
    if issuing {
        conn.issued = conn.received + w;
        conn.issued_bytes = conn.issued * frame_len;
    }
    if conn.socket.wants_write() {
        // TLS records the socket did not take last time.
        conn.socket.push()?;
    }
    let ring = frames.wire.len() as u64;
    let end = conn.issued_bytes;
    loop {
        if conn.written >= end {
            return Ok(());
        }
        let mut slices = [IoSlice::new(&[]); 8];
        let mut count = 0;
        let mut pos = conn.written;
        while pos < end && count < slices.len() {
            let off = (pos % ring) as usize;
            let len = (ring - off as u64).min(end - pos) as usize;
            slices[count] = IoSlice::new(&frames.wire[off..off + len]);
            count += 1;
            pos += len as u64;
        }
        let now = t0.elapsed().as_nanos() as u64;
        match conn.socket.write_vectored(&slices[..count]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                conn.written += n as u64;
                // A message's clock starts when its first byte is accepted.
                while conn.stamped < conn.issued && conn.stamped * frame_len < conn.written {
                    conn.sent_at[(conn.stamped % w) as usize] = now;
                    conn.stamped += 1;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Runs the echo load and prints its report; `Ok(false)` when echoes were wrong
/// or connections failed.
pub fn run(args: EchoArgs) -> Result<bool, String> {
    if !args.verify && args.target.tls {
        return Err("--no-verify discards payloads unread in the kernel: not with wss://, whose bytes must be decrypted".into());
    }
    if !args.verify && args.size < NO_VERIFY_MIN {
        return Err(format!(
            "--no-verify is for payloads of at least {NO_VERIFY_MIN} bytes; smaller ones are always compared"
        ));
    }
    let frames = Frames::new(args.size, args.binary, args.verify);
    let w = args.in_flight.max(1);
    let server_pid = args.server_pid.map(|p| p.to_string());
    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let offer = if args.offer_deflate {
        net::OFFER_DEFLATE
    } else {
        ""
    };
    let sockets = net::open_connections_with(
        &mut poll,
        &args.target,
        args.connections,
        args.batch,
        args.deadline,
        |_| offer.to_owned(),
    )?;
    eprintln!(
        "{} connections open; {} s warm-up, {} s measured",
        sockets.len(),
        args.warmup.as_secs_f64(),
        args.duration.as_secs_f64()
    );
    let mut conns: Vec<Conn> = sockets
        .into_iter()
        .map(|socket| {
            let _ = socket.tcp().set_nodelay(true);
            Conn {
                socket,
                issued: 0,
                stamped: 0,
                written: 0,
                received: 0,
                sent_at: vec![0; w].into_boxed_slice(),
                header: [0; MAX_HEADER_LEN],
                header_len: 0,
                payload: None,
                queued: true,
                open: true,
                issued_bytes: 0,
            }
        })
        .collect();
    let mut counters = Counters {
        measuring: false,
        messages: 0,
        hist: Histogram::new(),
        errors: 0,
        failed: 0,
    };
    let mut buf = vec![0u8; READ_BUFFER];
    let mut skip = vec![MaybeUninit::<u8>::uninit(); if args.verify { 0 } else { READ_BUFFER }];
    let mut events = Events::with_capacity(1024);
    let mut to_flush: Vec<usize> = (0..conns.len()).collect();
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
            if conn.open {
                if let Err(e) = flush(conn, &frames, t0, issuing) {
                    net::fail(conn, &poll, &mut counters.failed, &format!("write: {e}"));
                }
            }
        }
        let now = Instant::now();
        if phase == Phase::Warmup && now >= schedule.warm_end {
            counters.messages = 0;
            counters.hist.clear();
            counters.measuring = true;
            start = Some(Snapshot::take(server_pid.as_deref())?);
            phase = Phase::Measure;
        }
        if phase == Phase::Measure && now >= schedule.end {
            stop = Some(Snapshot::take(server_pid.as_deref())?);
            counters.measuring = false;
            phase = Phase::Drain;
        }
        if phase == Phase::Drain
            && (now >= schedule.drain_end
                || conns.iter().all(|c| !c.open || c.received == c.issued))
        {
            break;
        }
        if now >= args.deadline {
            return Err("global timeout reached".into());
        }
        if counters.failed as usize == conns.len() {
            return Err("every connection failed".into());
        }
        net::wait_ready(
            &mut poll,
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
            let before = conn.received;
            if readable {
                match read_conn(conn, &mut buf, &mut skip, &frames, &mut counters, t0) {
                    Ok(false) => {}
                    Ok(true) => to_read.push(key),
                    Err(e) => {
                        net::fail(conn, &poll, &mut counters.failed, &e);
                        continue;
                    }
                }
            }
            if (writable || conn.received != before) && !conn.queued {
                conn.queued = true;
                to_flush.push(key);
            }
        }
    }
    let outstanding: u64 = conns
        .iter()
        .filter(|c| c.open)
        .map(|c| c.issued - c.received)
        .sum();
    if outstanding > 0 {
        counters.error(|| format!("{outstanding} echoes still missing after the drain"));
    }
    net::close_all(&mut conns, &mut poll, &mut buf);
    let (Some(start), Some(stop)) = (start, stop) else {
        return Err("the run ended before the measurement".into());
    };
    report(&args, &frames, &counters, &start, &stop);
    Ok(counters.errors == 0 && counters.failed == 0)
}

fn report(
    args: &EchoArgs,
    frames: &Frames,
    counters: &Counters,
    start: &Snapshot,
    stop: &Snapshot,
) {
    let secs = stop.at.duration_since(start.at).as_secs_f64();
    let messages = counters.messages as f64;
    let rate = messages / secs;
    let mb_per_s = messages * frames.size as f64 / secs / 1e6;
    let us = |ns: u64| ns as f64 / 1000.0;
    let (p50, p99, p999, max) = (
        us(counters.hist.quantile(0.50)),
        us(counters.hist.quantile(0.99)),
        us(counters.hist.quantile(0.999)),
        us(counters.hist.max()),
    );
    let load_cpu = (stop.own_cpu - start.own_cpu) / secs * 100.0;
    let server_cpu = match (start.server_cpu, stop.server_cpu) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    // What else kept the machine busy: everything but us and the server.
    let other_cpu = ((stop.machine_cpu - start.machine_cpu)
        - (stop.own_cpu - start.own_cpu)
        - server_cpu.unwrap_or(0.0))
        / secs
        * 100.0;
    let kind = if args.binary { "binary" } else { "text" };
    println!(
        "echo: {} connections x {} in flight, {} B {kind} messages, {secs:.2} s measured",
        args.connections, args.in_flight, frames.size
    );
    println!("  throughput: {rate:.0} messages/s, {mb_per_s:.2} MB/s of echoed payload (one way)");
    println!(
        "  latency (send to echo received): p50 {p50:.1} us, p99 {p99:.1} us, p99.9 {p999:.1} us, max {max:.1} us ({} samples)",
        counters.hist.count()
    );
    println!("  load tool CPU: {load_cpu:.0} % of one core");
    if server_cpu.is_some() {
        println!("  other processes: {:.0} % of one core", other_cpu.max(0.0));
    }
    if let Some(cpu) = server_cpu {
        println!(
            "  server CPU: {cpu:.2} s ({:.0} % of one core), {:.3} us per message",
            cpu / secs * 100.0,
            cpu * 1e6 / messages.max(1.0)
        );
    }
    let checked = if frames.verify {
        "payloads compared"
    } else {
        "types and lengths only: payloads discarded unread (--no-verify)"
    };
    println!(
        "  verification: {} errors, {} connections failed ({checked})",
        counters.errors, counters.failed
    );
    if load_cpu > 90.0 {
        eprintln!(
            "warning: the load tool used {load_cpu:.0} % of a core: it may be the bottleneck"
        );
    }
    let json = Json::new()
        .str("mode", "echo")
        .str("url", &args.target.url())
        .int("connections", args.connections as u64)
        .int("size", frames.size as u64)
        .int("in_flight", args.in_flight as u64)
        .str("type", kind)
        .num("seconds", secs)
        .int("messages", counters.messages)
        .num("msgs_per_s", rate)
        .num("mb_per_s", mb_per_s)
        .num("p50_us", p50)
        .num("p99_us", p99)
        .num("p999_us", p999)
        .num("max_us", max)
        .num("load_cpu_pct", load_cpu)
        .opt("other_cpu_pct", server_cpu.map(|_| other_cpu.max(0.0)))
        .opt("server_cpu_s", server_cpu)
        .opt("server_cpu_pct", server_cpu.map(|c| c / secs * 100.0))
        .opt(
            "server_us_per_msg",
            server_cpu.map(|c| c * 1e6 / messages.max(1.0)),
        )
        .str(
            "payloads",
            if frames.verify {
                "compared"
            } else {
                "discarded"
            },
        )
        .int("errors", counters.errors)
        .int("failed_connections", counters.failed);
    println!("RESULT {}", json.finish());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `discard` drops exactly the bytes it reports, and the stream goes on right after them.
    #[test]
    fn discard_skips_bytes_in_order() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        let skipped_len = 200 * 1024;
        let mut sent: Vec<u8> = (0..skipped_len).map(|i| (i % 251) as u8).collect();
        sent.extend_from_slice(b"tail");
        let writer = std::thread::spawn(move || server.write_all(&sent));
        // Blocking: each call waits for data; none returns more than asked.
        let mut client = TcpStream::from_std(client);
        let mut room = vec![MaybeUninit::uninit(); 64 * 1024];
        let mut skipped = 0;
        while skipped < skipped_len {
            let asked = (skipped_len - skipped).min(room.len());
            let n = discard(&client, &mut room[..asked]).expect("discard");
            assert!(n > 0 && n <= asked, "discarded {n} of {asked}");
            skipped += n;
        }
        let mut tail = [0u8; 4];
        client.read_exact(&mut tail).expect("read the tail");
        assert_eq!(&tail, b"tail");
        writer.join().expect("writer").expect("write");
    }
}
