//! Target URLs, the client side of the opening handshake, opening many
//! connections at once, in batches, so a burst stays within the server's listen
//! backlog, and the connection handling the echo and chat modes share: the
//! timed run's phases, waiting for readiness, reading a connection for a turn,
//! giving up on one, and the closing handshakes.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use fastim::ws::frame::write_masked_frame;
use fastim::ws::handshake::accept_key;
use fastim::ws::{CloseCode, OpCode};

use crate::tls::{self, Stream};

/// Longest handshake response we wait for.
const MAX_RESPONSE: usize = 8 * 1024;

/// Where to connect, from a `ws://host:port/path` or `wss://…` URL.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// The `host[:port]` part, for the `Host` header.
    pub authority: String,
    pub path: String,
    /// `wss://`: TLS, with the test-only certificate check of [`tls`].
    pub tls: bool,
}

impl Target {
    /// The URL again, for reports.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}{}", self.authority, self.path)
    }

    /// The host, for TLS's server name.
    pub fn host(&self) -> &str {
        match self.authority.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
                host.trim_start_matches('[').trim_end_matches(']')
            }
            _ => &self.authority,
        }
    }

    pub fn parse(url: &str) -> Result<Target, String> {
        let (rest, tls) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => return Err(format!("{url}: only ws:// and wss:// URLs are supported")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let port = if tls { 443 } else { 80 };
        // With an explicit port, or else port 80 (443 for wss).
        let addr = authority
            .to_socket_addrs()
            .or_else(|_| format!("{authority}:{port}").to_socket_addrs())
            .map_err(|e| format!("{authority}: {e}"))?
            .next()
            .ok_or_else(|| format!("{authority}: no address"))?;
        Ok(Target {
            addr,
            authority: authority.to_string(),
            path: path.to_string(),
            tls,
        })
    }
}

/// SplitMix64: handshake keys need to be unpredictable to caches, not to attackers.
pub struct Rng(u64);

impl Rng {
    pub fn from_time() -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Rng(nanos ^ (u64::from(std::process::id()) << 32))
    }

    pub fn seeded(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// One connection going through connect, request and response.
struct Opening {
    socket: Stream,
    request: Vec<u8>,
    written: usize,
    response: Vec<u8>,
    accept: String,
}

impl Opening {
    fn start(
        target: &Target,
        tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
        extra: &str,
        rng: &mut Rng,
    ) -> io::Result<Opening> {
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
        nonce[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
        let key = BASE64.encode(nonce);
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n",
            target.path, target.authority
        );
        let socket = TcpStream::connect(target.addr)?;
        let socket = Stream::new(socket, tls.map(|config| (config, target.host())))?;
        Ok(Opening {
            socket,
            request: request.into_bytes(),
            written: 0,
            response: Vec::new(),
            accept: accept_key(key.as_bytes()),
        })
    }

    /// Sends the request once the connection is up.
    fn on_writable(&mut self) -> io::Result<()> {
        if self.written == self.request.len() {
            // TLS handshake records may still wait.
            self.socket.push()?;
            return Ok(());
        }
        if let Some(e) = self.socket.tcp().take_error()? {
            return Err(e);
        }
        match self.socket.tcp().peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
            Err(e) => return Err(e),
        }
        while self.written < self.request.len() {
            match self.socket.write(&self.request[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads the response; `Ok(true)` once the upgrade is complete and checked.
    fn on_readable(&mut self) -> Result<bool, String> {
        let mut chunk = [0u8; 1024];
        loop {
            match self.socket.read(&mut chunk) {
                Ok(0) => return Err("server closed during the handshake".into()),
                Ok(n) => self.response.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
                Err(e) => return Err(format!("handshake read: {e}")),
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&self.response) {
            Ok(httparse::Status::Partial) if self.response.len() < MAX_RESPONSE => Ok(false),
            Ok(httparse::Status::Partial) => Err("handshake response too long".into()),
            Ok(httparse::Status::Complete(len)) => {
                if response.code != Some(101) {
                    return Err(format!(
                        "handshake refused: {}",
                        String::from_utf8_lossy(&self.response)
                            .lines()
                            .next()
                            .unwrap_or("")
                    ));
                }
                let accept = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
                    .map(|h| h.value.trim_ascii());
                if accept != Some(self.accept.as_bytes()) {
                    return Err("handshake: wrong Sec-WebSocket-Accept".into());
                }
                if len != self.response.len() {
                    return Err("server sent data right after the handshake".into());
                }
                Ok(true)
            }
            Err(e) => Err(format!("handshake response: {e}")),
        }
    }
}

/// The request header line offering permessage-deflate as a browser does.
pub const OFFER_DEFLATE: &str =
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";

/// Opens `n` WebSocket connections, at most `batch` handshakes at a time, with
/// extra request header lines for connection `i` (`headers(i)`: complete lines,
/// each ending in CRLF; empty for none), e.g. the `Authorization` of a `/chat`
/// client or a permessage-deflate offer.
///
/// The returned sockets are registered with `poll` under `Token(i)` for reading
/// and writing; the handshake response has been read completely.
pub fn open_connections_with(
    poll: &mut Poll,
    target: &Target,
    n: usize,
    batch: usize,
    deadline: Instant,
    headers: impl Fn(usize) -> String,
) -> Result<Vec<Stream>, String> {
    let mut rng = Rng::from_time();
    let tls = target.tls.then(tls::client_config);
    let mut opening: Vec<Option<Opening>> = (0..n).map(|_| None).collect();
    let mut open: Vec<Option<Stream>> = (0..n).map(|_| None).collect();
    let mut events = Events::with_capacity(1024);
    let (mut started, mut done, mut busy) = (0, 0, 0);
    while done < n {
        while busy < batch.max(1) && started < n {
            let mut o = Opening::start(target, tls.as_ref(), &headers(started), &mut rng)
                .map_err(|e| format!("connect to {}: {e}", target.addr))?;
            poll.registry()
                .register(
                    &mut o.socket,
                    Token(started),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map_err(|e| format!("register: {e}"))?;
            opening[started] = Some(o);
            started += 1;
            busy += 1;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "timed out opening connections ({done} of {n} open)"
            ));
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .map_err(|e| format!("poll: {e}"))?;
        for event in events.iter() {
            let i = event.token().0;
            let Some(o) = opening.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            if event.is_writable() {
                o.on_writable()
                    .map_err(|e| format!("connection {i}: connect: {e}"))?;
            }
            if (event.is_readable() || event.is_read_closed() || event.is_error())
                && o.on_readable()
                    .map_err(|e| format!("connection {i}: {e}"))?
            {
                if let Some(o) = opening[i].take() {
                    open[i] = Some(o.socket);
                }
                done += 1;
                busy -= 1;
            }
        }
    }
    Ok(open.into_iter().flatten().collect())
}

/// The stages of a timed run: warm up, measure, then let what is in flight drain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Load runs but is not counted.
    Warmup,
    /// Load runs and is counted.
    Measure,
    /// No new messages; waiting for the outstanding ones.
    Drain,
}

/// When each stage of a run ends.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// End of the warm-up, start of the measured interval.
    pub warm_end: Instant,
    /// End of the measured interval.
    pub end: Instant,
    /// Latest end of the drain.
    pub drain_end: Instant,
}

impl Schedule {
    /// A run starting at `start`.
    pub fn new(start: Instant, warmup: Duration, duration: Duration, drain: Duration) -> Self {
        let warm_end = start + warmup;
        let end = warm_end + duration;
        Schedule {
            warm_end,
            end,
            drain_end: end + drain,
        }
    }

    /// When `phase` ends.
    pub fn phase_end(&self, phase: Phase) -> Instant {
        match phase {
            Phase::Warmup => self.warm_end,
            Phase::Measure => self.end,
            Phase::Drain => self.drain_end,
        }
    }
}

/// Waits for readiness, at most until `until` and at most 100 ms, not at all while
/// reads are pending, and fills `ready` with `(key, readable, writable)`: the
/// connections the poll reported, then those in `to_read` (reads cut short last
/// turn, which edge-triggered polling will not report again). An interrupted poll
/// leaves `ready` empty and `to_read` as it was.
pub fn wait_ready(
    poll: &mut Poll,
    events: &mut Events,
    to_read: &mut Vec<usize>,
    until: Instant,
    ready: &mut Vec<(usize, bool, bool)>,
) -> Result<(), String> {
    ready.clear();
    let timeout = if to_read.is_empty() {
        until
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100))
    } else {
        Duration::ZERO
    };
    if let Err(e) = poll.poll(events, Some(timeout)) {
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(());
        }
        return Err(format!("poll: {e}"));
    }
    ready.extend(events.iter().map(|e| {
        let readable = e.is_readable() || e.is_read_closed() || e.is_error();
        let writable = e.is_writable() || e.is_write_closed();
        (e.token().0, readable, writable)
    }));
    ready.extend(to_read.drain(..).map(|key| (key, true, false)));
    Ok(())
}

/// The masking key of every frame the tool sends (RFC 6455 wants a fresh one per
/// frame; servers cannot tell and must not care).
pub const MASK_KEY: [u8; 4] = [0x5a, 0x17, 0xc3, 0x9e];
/// Reads from one connection before the loop serves the others.
pub const MAX_READS_PER_TURN: usize = 16;
/// How long the closing handshakes may take.
const CLOSE_TIME: Duration = Duration::from_secs(2);
/// Connection failures reported on stderr; the rest are only counted.
const FAILURES_SHOWN: u64 = 5;

/// What the shared connection handling needs of a mode's connection.
pub trait Link {
    /// The stream, and whether the connection is still in use.
    fn parts(&mut self) -> (&mut Stream, &mut bool);
    /// Whether everything queued has been written, so a close frame may follow.
    fn all_written(&self) -> bool;
}

/// Gives up on a connection: marks it closed, counts it in `failed`, says why
/// (for the first few), and stops polling it.
pub fn fail(link: &mut impl Link, poll: &Poll, failed: &mut u64, why: &str) {
    let (socket, open) = link.parts();
    *open = false;
    *failed += 1;
    if *failed <= FAILURES_SHOWN {
        eprintln!("connection failed: {why}");
    }
    let _ = poll.registry().deregister(socket);
}

/// Reads a connection until its socket is empty, at most [`MAX_READS_PER_TURN`]
/// times; returns whether to read it again this turn (the cap was hit).
///
/// `read(cx)` makes one read and returns the bytes it got and the most it asked
/// for; `handle(cx, n)` deals with the `n` bytes that read got. A read shorter
/// than asked emptied the socket: on Linux, data arriving from then on raises a
/// new edge, so the read that would say WouldBlock is skipped (as tokio does), a
/// third of the system calls with small batches.
pub fn read_turn<C>(
    cx: &mut C,
    mut read: impl FnMut(&mut C) -> io::Result<(usize, usize)>,
    mut handle: impl FnMut(&mut C, usize) -> Result<(), String>,
) -> Result<bool, String> {
    for _ in 0..MAX_READS_PER_TURN {
        match read(cx) {
            Ok((0, _)) => return Err("server closed the connection".into()),
            Ok((n, asked)) => {
                handle(cx, n)?;
                if n < asked {
                    return Ok(false);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    Ok(true)
}

/// Sends a close frame on every open connection whose output is all written and
/// waits (at most [`CLOSE_TIME`]) for the server to end them; what arrives
/// meanwhile is read into `buf` and dropped. The others are marked closed.
pub fn close_all<L: Link>(links: &mut [L], poll: &mut Poll, buf: &mut [u8]) {
    let mut close = Vec::new();
    write_masked_frame(
        &mut close,
        true,
        OpCode::Close,
        &CloseCode::NORMAL.0.to_be_bytes(),
        MASK_KEY,
    );
    let mut waiting = 0;
    for link in links.iter_mut() {
        let all_written = link.all_written();
        let (socket, open) = link.parts();
        if !*open {
            continue;
        }
        // Anything still unwritten would precede the close frame: give up on it.
        if all_written && socket.write(&close).is_ok_and(|n| n == close.len()) {
            waiting += 1;
        } else {
            *open = false;
        }
    }
    let deadline = Instant::now() + CLOSE_TIME;
    let mut events = Events::with_capacity(1024);
    while waiting > 0 && Instant::now() < deadline {
        if poll
            .poll(&mut events, Some(Duration::from_millis(50)))
            .is_err()
        {
            return;
        }
        for event in events.iter() {
            let Some((socket, open)) = links.get_mut(event.token().0).map(Link::parts) else {
                continue;
            };
            if !*open {
                continue;
            }
            loop {
                match socket.read(buf) {
                    Ok(0) => {}
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {}
                }
                // End of stream or an error: the server is done with it.
                *open = false;
                waiting -= 1;
                break;
            }
        }
    }
}
