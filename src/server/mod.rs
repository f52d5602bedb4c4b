//! The single-threaded `mio` event loop: the only code that touches sockets and the clock.
//!
//! One thread owns the listener and every connection. Connections live in a
//! `slab`; a slot's key is its poll token. All connections read into one
//! loop-wide buffer and are parsed there in place; a connection keeps bytes of
//! its own only when a read ends inside a request head or frame header. Output
//! for a connection is queued during the turn and written once at the end of it.
//! Blocking work (SQLite, password hashing) goes to [`workers`] and comes back
//! through a `mio::Waker`.

mod chat;
mod conn;
mod echo;
mod outbound;
mod request;
mod workers;

use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::api::{ApiReply, Effect, Upload};
use crate::config::{self, Config};
use crate::http::{self, HeadError, Status};
use crate::im::commit::Outcome;
use crate::im::index::ChatIndex;
use crate::im::wire::{CMD_ACK, Reply, WireError};
use crate::resource::ResourceDir;
use crate::store::{Db, Peer};
use crate::ws::{self, CloseCode, Event, OpCode, Phase, Role, handshake};
use chat::ChatTurn;
use conn::{Conn, Endpoint, State};
use outbound::{Flushed, Outbound};
use request::Routed;
use workers::{Completion, ConnRef, Job, PendingChat, Workers};

const LISTENER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
const WAKER: Token = Token(usize::MAX - 3);

/// How often deadlines, idle buffers and chat pings are checked.
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

/// How often expired sessions are deleted from the database.
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// The server: bind it, then [`Server::run`] it until SIGINT or SIGTERM.
pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    signals: Signals,
    workers: Workers,
    conns: Slab<Conn>,
    next_serial: u64,
    config: Config,
    /// Online chat connections by user and by group.
    index: ChatIndex,
    /// Chat messages received this turn, stored together at its end.
    chat_batch: Vec<PendingChat>,
    /// The loop-wide receive buffer.
    read_buf: Vec<u8>,
    /// Connections with output queued this turn.
    to_flush: Vec<usize>,
    /// Connections whose input was not drained this turn (fairness cap), or that
    /// may have input waiting after a job finished.
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

/// The parts of the server that handling one connection's input may use.
struct Ctx<'a> {
    key: usize,
    config: &'a Config,
    workers: &'a Workers,
    chat_batch: &'a mut Vec<PendingChat>,
    index: &'a mut ChatIndex,
}

impl Server {
    /// Opens the database (creating it on first start), starts the worker threads,
    /// binds the listener and installs the signal handlers.
    pub fn bind(config: Config) -> io::Result<Server> {
        let db_path = database_path(&config);
        let memberships = Db::open(&db_path)
            .and_then(|db| db.all_memberships())
            .map_err(|e| io::Error::other(format!("database {}: {e}", db_path.display())))?;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let resources = ResourceDir::open(&config.resource_dir).map_err(|e| {
            io::Error::other(format!(
                "resource directory {}: {e}",
                config.resource_dir.display()
            ))
        })?;
        let workers = Workers::start(db_path, resources, waker)?;
        let mut listener = listen(config.listen)?;
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
            workers,
            conns: Slab::new(),
            next_serial: 0,
            config,
            index: ChatIndex::new(memberships),
            chat_batch: Vec::new(),
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
        let mut next_purge = Instant::now();
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
                    WAKER => self.on_completions(),
                    Token(key) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.on_readable(key, event.is_read_closed() || event.is_error());
                        }
                        if event.is_writable() || event.is_write_closed() {
                            self.flush(key);
                        }
                    }
                }
            }
            for key in std::mem::take(&mut self.to_read) {
                self.on_readable(key, false);
            }
            if !self.chat_batch.is_empty() {
                self.workers
                    .submit_chat(std::mem::take(&mut self.chat_batch));
            }
            for key in std::mem::take(&mut self.to_flush) {
                self.flush(key);
            }
            let now = Instant::now();
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP_INTERVAL;
            }
            if now >= next_purge {
                self.workers.submit(Job::PurgeSessions);
                next_purge = now + PURGE_INTERVAL;
            }
            if let Some(deadline) = self.shutdown_deadline {
                if self.conns.is_empty() || now >= deadline {
                    info!("stopped ({} connections left open)", self.conns.len());
                    self.workers.stop();
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
                    let now = Instant::now();
                    self.next_serial += 1;
                    let deadline = now + self.config.handshake_timeout;
                    entry.insert(Conn::new(socket, self.next_serial, now, deadline));
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
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            match &mut conn.state {
                State::WebSocket { ws, .. } => {
                    ws.send_close(
                        Some(CloseCode::GOING_AWAY),
                        "server shutting down",
                        conn.out.tail(),
                    );
                    self.begin_closing(key, now + config::SHUTDOWN_GRACE);
                }
                State::Request
                | State::Body { .. }
                | State::Waiting { .. }
                | State::Upgrading { .. } => self.remove(key),
                State::Closing | State::Lingering => {}
            }
        }
    }

    /// Reads what the socket has (up to the fairness cap) and handles it.
    ///
    /// A read that returns less than the buffer's room drained the socket, so the
    /// next arrival will raise a new edge: no need for the extra read that would
    /// only say `WouldBlock`. Except when the peer has closed (`to_eof`): then read
    /// on until the end is seen.
    fn on_readable(&mut self, key: usize, to_eof: bool) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.paused {
            // Resumed (and read) once the queue drains.
            return;
        }
        let buf = &mut self.read_buf;
        let mut ctx = Ctx {
            key,
            config: &self.config,
            workers: &self.workers,
            chat_batch: &mut self.chat_batch,
            index: &mut self.index,
        };
        let mut filled = conn.pending_input.len();
        buf[..filled].copy_from_slice(&conn.pending_input);
        conn.pending_input = Vec::new();
        // Input that waited for a job to finish is handled before reading more.
        if filled > 0 {
            let consumed = process_input(conn, &mut buf[..filled], &mut ctx);
            buf.copy_within(consumed..filled, 0);
            filled -= consumed;
        }
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
                    let drained = n < buf.len() - filled && !to_eof;
                    filled += n;
                    conn.last_input = Instant::now();
                    let consumed = process_input(conn, &mut buf[..filled], &mut ctx);
                    buf.copy_within(consumed..filled, 0);
                    filled -= consumed;
                    if filled == buf.len() {
                        // Unreachable with sane limits: leftovers are at most one request.
                        warn!("#{key}: unparseable input fills the read buffer");
                        break Fate::Drop;
                    }
                    if drained {
                        break Fate::Keep;
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
        self.after_output(key);
    }

    /// Schedules a flush of what a connection has queued, or drops it if its
    /// reader has fallen too far behind.
    fn after_output(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let State::WebSocket { ws, .. } = &conn.state {
            let queued = conn.out.len();
            let bound = config::max_outbound(ws.limits());
            if queued > bound {
                warn!("#{key}: not reading ({queued} bytes queued, bound {bound}): disconnecting");
                self.remove(key);
                return;
            }
            if queued > config::pause_reading_above(ws.limits()) && !conn.paused {
                conn.paused = true;
                conn.deadline = Some(Instant::now() + self.config.close_timeout);
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
        let before = conn.out.len();
        let flushed = match conn.out.flush_to(&mut conn.socket) {
            Ok(f) => f,
            Err(e) => {
                debug!("#{key}: write: {e}");
                self.remove(key);
                return;
            }
        };
        if conn.paused {
            if let State::WebSocket { ws, .. } = &conn.state {
                if conn.out.len() <= config::pause_reading_above(ws.limits()) / 2 {
                    conn.paused = false;
                    conn.deadline = None;
                    // Input may have waited in the socket meanwhile.
                    self.to_read.push(key);
                } else if conn.out.len() < before {
                    // Slow but reading: the stall clock starts again.
                    conn.deadline = Some(Instant::now() + self.config.close_timeout);
                }
            }
        }
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

    /// Handles everything the worker threads have finished.
    fn on_completions(&mut self) {
        while let Some(completion) = self.workers.try_completion() {
            match completion {
                Completion::Api { conn, reply } => self.finish_api(conn, reply),
                Completion::Response { conn, bytes } => self.finish_response(conn, &bytes),
                Completion::Authenticated {
                    conn,
                    user,
                    session,
                } => self.finish_upgrade(conn, user, session),
                Completion::Synced { conn, frames } => {
                    if let Some(c) = self.live(conn) {
                        c.out.tail().extend_from_slice(&frames);
                        self.after_output(conn.key);
                    }
                }
                Completion::Committed(results) => {
                    for c in results {
                        self.deliver(c);
                    }
                }
            }
        }
    }

    /// The connection a job was for, if it is still there.
    fn live(&mut self, conn: ConnRef) -> Option<&mut Conn> {
        self.conns
            .get_mut(conn.key)
            .filter(|c| c.serial == conn.serial)
    }

    /// Sends the 101 for a `/chat` upgrade whose token checked out, or refuses it.
    fn finish_upgrade(&mut self, conn_ref: ConnRef, user: Option<i64>, session: u64) {
        let key = conn_ref.key;
        let close_timeout = self.config.close_timeout;
        let Some(conn) = self.live(conn_ref) else {
            return;
        };
        let State::Upgrading {
            accept,
            claimed_user,
        } = &conn.state
        else {
            return;
        };
        match user.filter(|u| claimed_user.is_none_or(|claimed| claimed == *u)) {
            Some(user) => {
                handshake::write_accept(conn.out.tail(), accept);
                conn.state = State::WebSocket {
                    ws: ws::Connection::new(Role::Server, config::CHAT_LIMITS),
                    endpoint: Endpoint::Chat { user, session },
                };
                conn.deadline = None;
                conn.last_input = Instant::now();
                self.index.connect(user, key);
                debug!("#{key}: chat open for user {user}");
                // Frames may have arrived right behind the request.
                self.to_read.push(key);
            }
            None => {
                let response = request::error_response(
                    Status::Unauthorized,
                    "invalid or expired session token",
                );
                conn.out.tail().extend_from_slice(&response);
                conn.state = State::Closing;
                conn.deadline = Some(Instant::now() + close_timeout);
            }
        }
        self.after_output(key);
    }

    /// Writes an API reply and applies its effect to the chat index.
    fn finish_api(&mut self, conn_ref: ConnRef, reply: ApiReply) {
        if let Some(effect) = reply.effect {
            self.apply(effect);
        }
        let Some(State::Waiting { keep_alive }) = self.live(conn_ref).map(|c| &c.state) else {
            return;
        };
        let mut headers = vec![
            ("Content-Type", "application/json; charset=utf-8"),
            ("Cache-Control", "no-store"),
            (
                "Connection",
                if *keep_alive { "keep-alive" } else { "close" },
            ),
        ];
        if let Some(cookie) = &reply.set_cookie {
            headers.push(("Set-Cookie", cookie));
        }
        let mut response = Vec::new();
        http::write_response(&mut response, reply.status, &headers, &reply.body);
        self.finish_response(conn_ref, &response);
    }

    /// Writes the response a worker produced for a waiting connection, then reads
    /// the next request or closes.
    fn finish_response(&mut self, conn_ref: ConnRef, response: &[u8]) {
        let key = conn_ref.key;
        let (keepalive, close_timeout) = (self.config.handshake_timeout, self.config.close_timeout);
        let Some(conn) = self.live(conn_ref) else {
            return;
        };
        let State::Waiting { keep_alive } = conn.state else {
            return;
        };
        conn.out.tail().extend_from_slice(response);
        let now = Instant::now();
        if keep_alive {
            conn.state = State::Request;
            conn.deadline = Some(now + keepalive);
            // The next request may already be waiting.
            self.to_read.push(key);
        } else {
            conn.state = State::Closing;
            conn.deadline = Some(now + close_timeout);
        }
        self.after_output(key);
    }

    /// Keeps the chat index in step with what the API changed.
    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::Joined { user, group } => self.index.joined(user, group),
            Effect::Left { user, group } => self.index.left(user, group),
            Effect::GroupDeleted { group } => self.index.group_deleted(group),
            Effect::Befriended { .. } => {}
            Effect::LoggedOut { user, token_digest } => {
                // Sockets opened with the ended session close with it.
                let ended = workers::session_id(&token_digest);
                let doomed: Vec<usize> = self
                    .index
                    .conns_of(user)
                    .iter()
                    .copied()
                    .filter(|&key| {
                        self.conns.get(key).is_some_and(|c| {
                            matches!(c.state, State::WebSocket { endpoint: Endpoint::Chat { session, .. }, .. } if session == ended)
                        })
                    })
                    .collect();
                let deadline = Instant::now() + self.config.close_timeout;
                for key in doomed {
                    if let Some(conn) = self.conns.get_mut(key) {
                        if let State::WebSocket { ws, .. } = &mut conn.state {
                            ws.send_close(
                                Some(CloseCode::POLICY_VIOLATION),
                                "logged out",
                                conn.out.tail(),
                            );
                        }
                    }
                    self.begin_closing(key, deadline);
                }
            }
        }
    }

    /// Acks (or refuses) a stored chat message to its sender and fans it out.
    fn deliver(&mut self, c: workers::Committed) {
        match &c.outcome {
            Outcome::Saved(saved) => {
                let ack = Reply::Ack {
                    cmd: CMD_ACK,
                    client_ref: c.client_ref.as_deref(),
                    id: saved.id,
                    createat: saved.created_at,
                };
                self.send_text(c.conn, &ack.to_json());
            }
            Outcome::Refused { code, msg } => {
                if let Some(conn) = self.live(c.conn) {
                    let e = WireError {
                        client_ref: c.client_ref.clone(),
                        code: *code,
                        msg: msg.clone(),
                    };
                    chat::reply_error(&e, &mut conn.out);
                    self.after_output(c.conn.key);
                }
            }
        }
        let Some((to, frame)) = c.delivery else {
            return;
        };
        // Encoded once, shared by every recipient's queue.
        let frame: Rc<[u8]> = Rc::from(frame);
        let recipients: Vec<usize> = match to {
            Peer::User(peer) => {
                let mut r = self.index.conns_of(peer).to_vec();
                // The sender's other devices see what it sent (once, if it wrote to itself).
                if peer != c.sender {
                    r.extend_from_slice(self.index.conns_of(c.sender));
                }
                r
            }
            // The index holds each member connection once.
            Peer::Group(group) => self.index.group_conns(group).to_vec(),
        };
        for key in recipients {
            if key == c.conn.key {
                continue;
            }
            if let Some(conn) = self.conns.get_mut(key) {
                conn.out.push_shared(frame.clone());
                self.after_output(key);
            }
        }
    }

    fn send_text(&mut self, conn: ConnRef, text: &str) {
        if let Some(c) = self.live(conn) {
            ws::frame::write_frame(c.out.tail(), OpCode::Text, text.as_bytes());
            self.after_output(conn.key);
        }
    }

    /// Deadlines, idle buffers, and keeping chat connections alive.
    fn sweep(&mut self, now: Instant) {
        let ping = self.config.ping_interval;
        let idle = ping.mul_f64(config::IDLE_PINGS);
        let mut expired = Vec::new();
        let mut pinged = Vec::new();
        for (key, conn) in self.conns.iter_mut() {
            if conn.deadline.is_some_and(|d| d <= now) {
                debug!("#{key}: timed out while {}", conn.state.name());
                expired.push(key);
                continue;
            }
            let quiet = now.saturating_duration_since(conn.last_input);
            let State::WebSocket { ws, endpoint } = &mut conn.state else {
                continue;
            };
            if quiet >= SWEEP_INTERVAL {
                // Busy connections reuse their buffers; quiet ones give them back.
                ws.release_idle_buffer();
            }
            if !matches!(endpoint, Endpoint::Chat { .. }) {
                continue;
            }
            if quiet >= idle {
                debug!("#{key}: silent for {quiet:?}: closing");
                ws.send_close(Some(CloseCode::GOING_AWAY), "idle timeout", conn.out.tail());
                pinged.push(key);
            } else if quiet >= ping && quiet - ping < SWEEP_INTERVAL {
                // Once per quiet spell; browsers answer pings by themselves.
                ws::frame::write_frame(conn.out.tail(), OpCode::Ping, b"");
                pinged.push(key);
            }
        }
        for key in expired {
            self.remove(key);
        }
        for key in pinged {
            let closing = self.conns.get(key).is_some_and(
                |c| matches!(&c.state, State::WebSocket { ws, .. } if ws.phase() != Phase::Open),
            );
            if closing {
                self.begin_closing(key, now + self.config.close_timeout);
            }
            self.after_output(key);
        }
    }

    /// Moves a connection whose final frame is queued to `Closing` and flushes it.
    fn begin_closing(&mut self, key: usize, deadline: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        begin_closing(conn, key, &mut self.index, deadline);
        if !conn.flush_queued {
            conn.flush_queued = true;
            self.to_flush.push(key);
        }
    }

    fn remove(&mut self, key: usize) {
        if let Some(mut conn) = self.conns.try_remove(key) {
            if let State::WebSocket {
                endpoint: Endpoint::Chat { user, .. },
                ..
            } = conn.state
            {
                self.index.disconnect(user, key);
            }
            let _ = self.poll.registry().deregister(&mut conn.socket);
        }
    }
}

/// A non-blocking listener with a backlog deep enough for bursts of clients.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    // Restarting right after a stop must not fail on connections in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(config::LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}

fn database_path(config: &Config) -> PathBuf {
    config.data_dir.join("fastim.db")
}

/// Handles the bytes at the start of `input` according to the connection's state
/// and returns how many it consumed.
fn process_input(conn: &mut Conn, input: &mut [u8], ctx: &mut Ctx<'_>) -> usize {
    match &mut conn.state {
        State::Request => process_request(conn, input, ctx),
        State::Body { .. } => process_body(conn, input, ctx),
        // The request is answered first; pipelined bytes wait.
        State::Waiting { .. } | State::Upgrading { .. } => 0,
        State::WebSocket { ws, endpoint } => {
            let consumed = process_frames(ws, *endpoint, input, &mut conn.out, ctx, conn.serial);
            if ws.phase() != Phase::Open {
                let deadline = Instant::now() + ctx.config.close_timeout;
                begin_closing(conn, ctx.key, ctx.index, deadline);
            }
            consumed
        }
        State::Closing | State::Lingering => input.len(),
    }
}

/// Our close frame is queued: the connection leaves the chat index (nothing more
/// may be sent after a close frame) and waits for the peer to end TCP.
fn begin_closing(conn: &mut Conn, key: usize, index: &mut ChatIndex, deadline: Instant) {
    if let State::WebSocket {
        endpoint: Endpoint::Chat { user, .. },
        ..
    } = conn.state
    {
        index.disconnect(user, key);
    }
    conn.state = State::Closing;
    conn.deadline = Some(deadline);
}

fn process_request(conn: &mut Conn, input: &mut [u8], ctx: &mut Ctx<'_>) -> usize {
    let (head_len, routed) = match http::parse_head(input, config::MAX_REQUEST_HEAD) {
        Ok(None) => return 0,
        Ok(Some(head)) => (head.len, request::route(&head, ctx.config)),
        Err(HeadError::TooLarge) => (
            input.len(),
            Routed::Respond(request::error_response(
                Status::HeaderFieldsTooLarge,
                "request head too large",
            )),
        ),
        Err(HeadError::Malformed) => (
            input.len(),
            Routed::Respond(request::error_response(
                Status::BadRequest,
                "malformed request",
            )),
        ),
    };
    match routed {
        Routed::Upgrade { endpoint, accept } => {
            handshake::write_accept(conn.out.tail(), &accept);
            let mut ws = ws::Connection::new(Role::Server, endpoint_limits(endpoint));
            conn.deadline = None;
            // Frames may follow the head in the same read.
            let consumed = process_frames(
                &mut ws,
                endpoint,
                &mut input[head_len..],
                &mut conn.out,
                ctx,
                conn.serial,
            );
            conn.state = if ws.phase() == Phase::Open {
                State::WebSocket { ws, endpoint }
            } else {
                conn.deadline = Some(Instant::now() + ctx.config.close_timeout);
                State::Closing
            };
            head_len + consumed
        }
        Routed::Api {
            mut request,
            content_length,
            keep_alive,
        } => {
            let end = head_len + content_length;
            let Some(body) = input.get(head_len..end) else {
                // The body has not all arrived: keep the request and wait for more.
                return 0;
            };
            request.body = body.to_vec();
            hand_off(conn, ctx, keep_alive, |conn| Job::Api { conn, request });
            end
        }
        Routed::Upload {
            token,
            content_type,
            content_length,
            keep_alive,
        } => {
            let mut body = Vec::new();
            body.reserve_exact(content_length);
            conn.state = State::Body {
                upload: Box::new(Upload {
                    token,
                    content_type,
                    body,
                    max_file: ctx.config.max_upload,
                    now_ms: 0,
                }),
                remaining: content_length,
                keep_alive,
            };
            head_len + process_body(conn, &mut input[head_len..], ctx)
        }
        Routed::ReadFile(file) => {
            hand_off(conn, ctx, file.keep_alive, |conn| Job::ReadFile {
                conn,
                file,
            });
            head_len
        }
        Routed::Reply {
            response,
            keep_alive,
        } => {
            conn.out.tail().extend_from_slice(&response);
            if !keep_alive {
                conn.state = State::Closing;
                conn.deadline = Some(Instant::now() + ctx.config.close_timeout);
                return input.len();
            }
            conn.deadline = Some(Instant::now() + ctx.config.handshake_timeout);
            // Pipelined requests are answered in order.
            head_len + process_request(conn, &mut input[head_len..], ctx)
        }
        Routed::Authenticate {
            accept,
            token,
            claimed_user,
        } => {
            ctx.workers.submit(Job::Authenticate {
                conn: ConnRef {
                    key: ctx.key,
                    serial: conn.serial,
                },
                token,
            });
            conn.state = State::Upgrading {
                accept: accept.into_boxed_str(),
                claimed_user,
            };
            head_len
        }
        Routed::Respond(response) => {
            conn.out.tail().extend_from_slice(&response);
            conn.state = State::Closing;
            conn.deadline = Some(Instant::now() + ctx.config.close_timeout);
            head_len.max(input.len())
        }
    }
}

/// Gives a request to the workers; the connection waits for the reply (and reads
/// nothing meanwhile).
fn hand_off(conn: &mut Conn, ctx: &Ctx<'_>, keep_alive: bool, job: impl FnOnce(ConnRef) -> Job) {
    ctx.workers.submit(job(ConnRef {
        key: ctx.key,
        serial: conn.serial,
    }));
    conn.state = State::Waiting { keep_alive };
    conn.deadline = None;
}

/// Appends the arriving part of an upload's body; hands the upload to a worker
/// once it is complete. The loop never waits for a slow body.
fn process_body(conn: &mut Conn, input: &mut [u8], ctx: &mut Ctx<'_>) -> usize {
    let State::Body {
        upload,
        remaining,
        keep_alive,
    } = &mut conn.state
    else {
        return 0;
    };
    let n = input.len().min(*remaining);
    upload.body.extend_from_slice(&input[..n]);
    *remaining -= n;
    if n > 0 {
        // A large upload on a slow link may take long; only silence ends it.
        conn.deadline = Some(Instant::now() + ctx.config.handshake_timeout);
    }
    if *remaining == 0 {
        let keep_alive = *keep_alive;
        if let State::Body { upload, .. } = std::mem::replace(&mut conn.state, State::Request) {
            hand_off(conn, ctx, keep_alive, |conn| Job::Upload { conn, upload });
        }
    }
    n
}

fn endpoint_limits(endpoint: Endpoint) -> ws::Limits {
    match endpoint {
        Endpoint::Echo => config::ECHO_LIMITS,
        Endpoint::Chat { .. } => config::CHAT_LIMITS,
    }
}

/// Runs frames through the protocol state machine and the endpoint; returns the
/// bytes consumed. Protocol errors queue the matching close frame.
fn process_frames(
    ws: &mut ws::Connection,
    endpoint: Endpoint,
    input: &mut [u8],
    out: &mut Outbound,
    ctx: &mut Ctx<'_>,
    serial: u64,
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
                        Endpoint::Echo => {
                            let (opcode, len) = echo::shape(&message);
                            if len < echo::ZERO_COPY_MIN {
                                echo::reply(message, out);
                            } else {
                                match ws.take_message() {
                                    Some(payload) => echo::reply_owned(opcode, payload, out),
                                    // Delivered from the input: its payload ends where the call stopped.
                                    None => ws::frame::write_frame(
                                        out.tail(),
                                        opcode,
                                        &input[pos - len..pos],
                                    ),
                                }
                            }
                        }
                        Endpoint::Chat { user, .. } => {
                            let mut turn = ChatTurn {
                                conn: ConnRef {
                                    key: ctx.key,
                                    serial,
                                },
                                user,
                                batch: ctx.chat_batch,
                                workers: ctx.workers,
                            };
                            chat::on_message(message, &mut turn, out);
                        }
                    },
                    Event::Ping(payload) => {
                        ws::frame::write_frame(out.tail(), OpCode::Pong, payload)
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
                debug!("#{}: protocol error: {e}", ctx.key);
                ws.send_close(Some(e.close_code()), &e.to_string(), out.tail());
                return input.len();
            }
        }
    }
}
