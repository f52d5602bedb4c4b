//! The single-threaded `mio` event loop: the only code that touches sockets and the clock.
//!
//! One thread owns the listener and every connection. Connections live in a
//! `slab`; a slot's key is its poll token. All connections read into one
//! loop-wide buffer and are parsed there in place; a connection keeps bytes of
//! its own only when a read ends inside a request head or frame header. Output
//! for a connection is queued during the turn and written once at the end of it.

mod conn;
mod echo;
mod outbound;

use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::config::{self, Config};
use crate::http::{self, HeadError, Status};
use crate::ws::{self, CloseCode, Event, Phase, Role, handshake};
use conn::{Conn, Endpoint, State};
use outbound::Flushed;

const LISTENER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);

/// How often deadlines are checked.
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

/// The server: bind it, then [`Server::run`] it until SIGINT or SIGTERM.
pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    signals: Signals,
    conns: Slab<Conn>,
    config: Config,
    /// The loop-wide receive buffer.
    read_buf: Vec<u8>,
    /// Connections with output queued this turn.
    to_flush: Vec<usize>,
    /// Connections whose input was not drained this turn (fairness cap).
    to_read: Vec<usize>,
    /// Set once a shutdown signal arrived: when the loop gives up waiting.
    shutdown_deadline: Option<Instant>,
}

/// Whether a connection survives what just happened to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Keep,
    Drop,
}

impl Server {
    /// Binds the listener and installs the signal handlers.
    pub fn bind(config: Config) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(config.listen)?;
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        Ok(Server {
            poll,
            listener: Some(listener),
            local_addr,
            signals,
            conns: Slab::new(),
            config,
            read_buf: vec![0; config::READ_BUFFER],
            to_flush: Vec::new(),
            to_read: Vec::new(),
            shutdown_deadline: None,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until a shutdown signal, then closes every connection gracefully.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut next_sweep = Instant::now() + SWEEP_INTERVAL;
        loop {
            let now = Instant::now();
            let timeout = if self.to_read.is_empty() {
                next_sweep.saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    SIGNALS => self.on_signal(),
                    Token(key) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.on_readable(key);
                        }
                        if event.is_writable() || event.is_write_closed() {
                            self.flush(key);
                        }
                    }
                }
            }
            for key in std::mem::take(&mut self.to_read) {
                self.on_readable(key);
            }
            for key in std::mem::take(&mut self.to_flush) {
                self.flush(key);
            }
            let now = Instant::now();
            if now >= next_sweep {
                self.expire(now);
                self.release_idle_buffers();
                next_sweep = now + SWEEP_INTERVAL;
            }
            if let Some(deadline) = self.shutdown_deadline {
                if self.conns.is_empty() || now >= deadline {
                    info!("stopped ({} connections left open)", self.conns.len());
                    return Ok(());
                }
            }
        }
    }

    fn accept(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((mut socket, peer)) => {
                    if self.conns.len() >= self.config.max_connections {
                        warn!(
                            "connection limit {} reached, refusing {peer}",
                            self.config.max_connections
                        );
                        continue;
                    }
                    if let Err(e) = socket.set_nodelay(true) {
                        debug!("{peer}: set_nodelay: {e}");
                    }
                    let entry = self.conns.vacant_entry();
                    if let Err(e) = self.poll.registry().register(
                        &mut socket,
                        Token(entry.key()),
                        Interest::READABLE,
                    ) {
                        warn!("{peer}: register: {e}");
                        continue;
                    }
                    debug!("{peer}: accepted as #{}", entry.key());
                    let deadline = Instant::now() + self.config.handshake_timeout;
                    entry.insert(Conn::new(socket, deadline));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: the pending connection waits for the next event.
                    warn!("accept: {e}");
                    return;
                }
            }
        }
    }

    fn on_signal(&mut self) {
        let signals: Vec<i32> = self.signals.pending().collect();
        if signals.is_empty() || self.shutdown_deadline.is_some() {
            return;
        }
        info!(
            "signal {:?}: shutting down, closing {} connections",
            signals,
            self.conns.len()
        );
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let now = Instant::now();
        self.shutdown_deadline = Some(now + config::SHUTDOWN_GRACE);
        let mut doomed = Vec::new();
        for (key, conn) in self.conns.iter_mut() {
            match &mut conn.state {
                State::WebSocket { ws, .. } => {
                    ws.send_close(
                        Some(CloseCode::GOING_AWAY),
                        "server shutting down",
                        conn.out.tail(),
                    );
                    conn.state = State::Closing;
                    conn.deadline = Some(now + config::SHUTDOWN_GRACE);
                    if !conn.flush_queued {
                        conn.flush_queued = true;
                        self.to_flush.push(key);
                    }
                }
                State::Handshake => doomed.push(key),
                State::Closing | State::Lingering => {}
            }
        }
        for key in doomed {
            self.remove(key);
        }
    }

    /// Reads everything the socket has (up to the fairness cap) and handles it.
    fn on_readable(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let buf = &mut self.read_buf;
        let mut filled = conn.pending_input.len();
        buf[..filled].copy_from_slice(&conn.pending_input);
        conn.pending_input = Vec::new();
        let mut reads = 0;
        let fate = loop {
            if reads == config::MAX_READS_PER_TURN {
                self.to_read.push(key);
                break Fate::Keep;
            }
            match conn.socket.read(&mut buf[filled..]) {
                Ok(0) => {
                    debug!("#{key}: peer closed");
                    // A client may send its close frame and shut down at once: try to
                    // answer before dropping.
                    let _ = conn.out.flush_to(&mut conn.socket);
                    break Fate::Drop;
                }
                Ok(n) => {
                    reads += 1;
                    filled += n;
                    let consumed = process_input(conn, &mut buf[..filled], &self.config);
                    buf.copy_within(consumed..filled, 0);
                    filled -= consumed;
                    if filled == buf.len() {
                        // Unreachable with sane limits: leftovers are at most one request head.
                        warn!("#{key}: unparseable input fills the read buffer");
                        break Fate::Drop;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Fate::Keep,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("#{key}: read: {e}");
                    break Fate::Drop;
                }
            }
        };
        if fate == Fate::Drop {
            self.remove(key);
            return;
        }
        if filled > 0 {
            conn.pending_input = buf[..filled].to_vec();
        }
        conn.active = true;
        if let State::WebSocket { endpoint, .. } = &conn.state {
            let bound = config::max_outbound(endpoint.limits());
            if conn.out.len() > bound {
                warn!(
                    "#{key}: not reading ({} bytes queued, bound {bound}): disconnecting",
                    conn.out.len()
                );
                self.remove(key);
                return;
            }
        }
        if !conn.out.is_empty() && !conn.flush_queued {
            conn.flush_queued = true;
            self.to_flush.push(key);
        }
    }

    /// Writes a connection's queue; shuts the write side once a final message is out.
    fn flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.flush_queued = false;
        let flushed = match conn.out.flush_to(&mut conn.socket) {
            Ok(f) => f,
            Err(e) => {
                debug!("#{key}: write: {e}");
                self.remove(key);
                return;
            }
        };
        let wants_write = flushed == Flushed::Blocked;
        if wants_write != conn.wants_write {
            let interest = if wants_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Err(e) = self
                .poll
                .registry()
                .reregister(&mut conn.socket, Token(key), interest)
            {
                debug!("#{key}: reregister: {e}");
                self.remove(key);
                return;
            }
            conn.wants_write = wants_write;
        }
        if flushed == Flushed::All && matches!(conn.state, State::Closing) {
            // The server closes the TCP connection first (RFC 6455 §7.1.1): send FIN,
            // then wait for the peer's.
            let _ = conn.socket.shutdown(Shutdown::Write);
            conn.state = State::Lingering;
        }
    }

    /// Drops every connection whose deadline has passed.
    fn expire(&mut self, now: Instant) {
        let expired: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(k, _)| k)
            .collect();
        for key in expired {
            if let Some(conn) = self.conns.get(key) {
                debug!("#{key}: timed out while {}", state_name(&conn.state));
            }
            self.remove(key);
        }
    }

    /// Frees the message buffers of connections that received nothing since the
    /// last sweep, so idle connections hold no heap memory while busy ones keep
    /// reusing theirs.
    fn release_idle_buffers(&mut self) {
        for (_, conn) in self.conns.iter_mut() {
            if !std::mem::replace(&mut conn.active, false) {
                if let State::WebSocket { ws, .. } = &mut conn.state {
                    ws.release_idle_buffer();
                }
            }
        }
    }

    fn remove(&mut self, key: usize) {
        if let Some(mut conn) = self.conns.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut conn.socket);
        }
    }
}

impl Endpoint {
    fn limits(self) -> ws::Limits {
        match self {
            Endpoint::Echo => config::ECHO_LIMITS,
        }
    }
}

fn state_name(state: &State) -> &'static str {
    match state {
        State::Handshake => "handshaking",
        State::WebSocket { .. } => "open",
        State::Closing => "closing",
        State::Lingering => "waiting for the peer to close",
    }
}

/// Handles the bytes at the start of `input` according to the connection's state
/// and returns how many it consumed.
fn process_input(conn: &mut Conn, input: &mut [u8], config: &Config) -> usize {
    match &mut conn.state {
        State::Handshake => process_handshake(conn, input, config),
        State::WebSocket { ws, endpoint } => {
            let consumed = process_frames(ws, *endpoint, input, &mut conn.out);
            if ws.phase() != Phase::Open {
                conn.state = State::Closing;
                conn.deadline = Some(Instant::now() + config.close_timeout);
            }
            consumed
        }
        State::Closing | State::Lingering => input.len(),
    }
}

fn process_handshake(conn: &mut Conn, input: &mut [u8], config: &Config) -> usize {
    let (head_len, verdict) = match http::parse_head(input, config::MAX_REQUEST_HEAD) {
        Ok(None) => return 0,
        Ok(Some(head)) => (head.len, route(&head, config)),
        Err(HeadError::TooLarge) => (
            input.len(),
            Err(reject(
                Status::HeaderFieldsTooLarge,
                "request head too large",
            )),
        ),
        Err(HeadError::Malformed) => (
            input.len(),
            Err(reject(Status::BadRequest, "malformed request")),
        ),
    };
    match verdict {
        Ok((endpoint, accept)) => {
            handshake::write_accept(conn.out.tail(), &accept);
            let mut ws = ws::Connection::new(Role::Server, endpoint.limits());
            conn.deadline = None;
            // Frames may follow the head in the same read.
            let consumed = process_frames(&mut ws, endpoint, &mut input[head_len..], &mut conn.out);
            conn.state = if ws.phase() == Phase::Open {
                State::WebSocket { ws, endpoint }
            } else {
                conn.deadline = Some(Instant::now() + config.close_timeout);
                State::Closing
            };
            head_len + consumed
        }
        Err(response) => {
            conn.out.tail().extend_from_slice(&response);
            conn.state = State::Closing;
            conn.deadline = Some(Instant::now() + config.close_timeout);
            input.len()
        }
    }
}

/// Decides what a request head gets: an endpoint and its accept key, or a response.
fn route(head: &http::RequestHead<'_>, config: &Config) -> Result<(Endpoint, String), Vec<u8>> {
    let endpoint = match head.path() {
        "/echo" if config.echo => Endpoint::Echo,
        _ => return Err(reject(Status::NotFound, "not found")),
    };
    match handshake::validate(head) {
        Ok(accept) => Ok((endpoint, accept)),
        Err(e) => {
            let mut out = Vec::new();
            handshake::write_rejection(&mut out, e);
            Err(out)
        }
    }
}

fn reject(status: Status, message: &str) -> Vec<u8> {
    let mut out = Vec::new();
    http::write_response(
        &mut out,
        status,
        &[
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Connection", "close"),
        ],
        message.as_bytes(),
    );
    out
}

/// Runs frames through the protocol state machine and the endpoint; returns the
/// bytes consumed. Protocol errors queue the matching close frame.
fn process_frames(
    ws: &mut ws::Connection,
    endpoint: Endpoint,
    input: &mut [u8],
    out: &mut outbound::Outbound,
) -> usize {
    let mut pos = 0;
    loop {
        match ws.handle_bytes(&mut input[pos..]) {
            Ok((0, None)) => return pos,
            Ok((n, None)) => pos += n,
            Ok((n, Some(event))) => {
                pos += n;
                match event {
                    Event::Message(message) => match endpoint {
                        Endpoint::Echo => echo::reply(message, out),
                    },
                    Event::Ping(payload) => {
                        ws::frame::write_frame(out.tail(), ws::OpCode::Pong, payload)
                    }
                    Event::Pong(_) => {}
                    Event::Close(frame) => {
                        let code = frame.code;
                        // §5.5.1: echo the status code; an empty close is answered empty.
                        ws.send_close(code, "", out.tail());
                        return input.len();
                    }
                }
            }
            Err(e) => {
                debug!("protocol error: {e}");
                ws.send_close(Some(e.close_code()), &e.to_string(), out.tail());
                return input.len();
            }
        }
    }
}
