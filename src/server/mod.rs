//! The single-threaded `mio` event loop: the only code that touches sockets and the clock.
//!
//! One thread owns the listener and every connection. Connections live in a
//! `slab`; a slot's key is its poll token. Each connection's states, deadlines and
//! budgets are its [`lifecycle::Lifecycle`], a sans-IO machine: this driver only
//! moves bytes between sockets and machines, reads the clock, and keeps the timers.
//! All connections read into one loop-wide buffer, parsed there in place; a
//! connection keeps bytes of its own only when a read ends inside a request head or
//! frame header, or arrives while it is over a budget. Output for a connection is
//! queued during the turn and written once at the end of it; so are the frames chat
//! commands make for other connections without storage (typing, presence), encoded
//! once and shared like committed messages (`end_turn`). Blocking work (SQLite,
//! password hashing) goes to [`workers`] and comes back through a `mio::Waker`.

mod chat;
mod conn;
mod echo;
mod inspector;
pub mod lifecycle;
pub mod metrics;
mod outbound;
mod request;
pub mod tls;
mod workers;

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::api::Effect;
use crate::config::{self, Config};
use crate::http::{Refusal, Status};
use crate::im::cmd::code::ACK;
use crate::im::cmd::{self, Fanout};
use crate::im::commit::Outcome;
use crate::im::index::ChatIndex;
use crate::im::wire::{Reply, WireError};
use crate::resource::ResourceDir;
use crate::store::{Db, Peer};
use crate::throttle::Throttle;
use crate::ws::{self, CloseCode, Codec};
use conn::Conn;
use lifecycle::{AfterFlush, Env, Lifecycle, Services, State, UploadSlot, Verdict};
use metrics::{Metrics, Refused};
use outbound::{Flushed, Outbound};
use workers::{Busy, Completion, ConnRef, Job, PendingChat, Workers};

const LISTENER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
const WAKER: Token = Token(usize::MAX - 3);

/// Most connection slots reserved at start (more grow the slab as needed).
const MAX_RESERVED_SLOTS: usize = 1 << 20;

/// How often deadlines, idle buffers and chat pings are checked.
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

/// How often expired sessions are deleted from the database.
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// How often refused connections are summed up in the log (never once per refusal).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Refused connections kept for a moment so that their 503 is read before the close
/// (closing at once, with their request unread, would reset them).
const MAX_REFUSED_LINGERING: usize = 1024;

/// How long a refused connection lingers.
const REFUSED_LINGER: Duration = Duration::from_secs(1);

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
    /// Online chat connections, memberships and friendships.
    index: ChatIndex,
    /// Login and registration limits.
    throttle: Throttle,
    /// Chat messages received this turn, stored together at its end.
    chat_batch: Vec<PendingChat>,
    /// Chat messages given to the writer and not yet answered.
    writer_backlog: usize,
    /// Read marks given to the writer and not yet stored.
    reads_in_flight: usize,
    /// Frames for other connections made this turn (typing, presence), delivered at
    /// its end.
    fanouts: Vec<Fanout>,
    /// The earliest time of the next presence announcement: one window
    /// ([`config::PRESENCE_WINDOW`]) after the last.
    presence_next: Instant,
    /// Set while changes wait for `presence_next`: when the loop must wake for them.
    presence_due: Option<Instant>,
    /// Upload bodies being read.
    uploads: Rc<Cell<usize>>,
    /// Unauthenticated connections per client address.
    per_address: HashMap<IpAddr, u32>,
    /// Refused connections waiting to close, with their deadline.
    refused: VecDeque<(TcpStream, Instant)>,
    /// Connections refused since the last log line, by reason.
    refusals: HashMap<&'static str, u64>,
    /// The loop-wide receive buffer.
    read_buf: Vec<u8>,
    /// The loop-wide permessage-deflate codecs, reset for every message.
    codec: Codec,
    /// A warm outbound queue, lent to each connection that has nothing queued for
    /// its read turn and taken back once its replies are written: a busy socket
    /// makes its replies without allocating. Only a partial write leaves the
    /// connection with the buffer (and the loop makes a new one).
    spare_out: Outbound,
    /// Connections with output queued this turn.
    to_flush: Vec<usize>,
    /// Connections whose input was not drained this turn (fairness cap), or that
    /// may have input waiting after a budget freed.
    to_read: Vec<usize>,
    /// Set once a shutdown signal arrived: when the loop gives up waiting.
    shutdown_deadline: Option<Instant>,
    /// The time of this loop turn, read once when the poll returns: the clock is
    /// not read again for every connection and every delivery.
    now: Instant,
    /// `--trace-frames` or `--inspector`: connections are watched frame by frame.
    inspecting: bool,
    /// The frame inspector's feeds and tokens.
    inspector: inspector::Hub,
    /// Counters, and the `/metrics` listener if there is one.
    metrics: Metrics,
    /// With TLS on, every connection's rustls configuration.
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// The shared budgets and queues a connection's machine may draw on.
struct Shared<'a> {
    workers: &'a Workers,
    chat_batch: &'a mut Vec<PendingChat>,
    writer_backlog: &'a mut usize,
    fanouts: &'a mut Vec<Fanout>,
    uploads: &'a Rc<Cell<usize>>,
    inspector: &'a mut Vec<(ConnRef, inspector::Command)>,
}

impl Services for Shared<'_> {
    fn submit(&mut self, job: Job) -> Result<(), Busy> {
        self.workers.submit(job)
    }

    fn submit_chat(&mut self, chat: PendingChat) -> Result<(), Busy> {
        if *self.writer_backlog >= config::MAX_WRITER_BACKLOG {
            return Err(Busy);
        }
        *self.writer_backlog += 1;
        self.chat_batch.push(chat);
        Ok(())
    }

    fn fan_out(&mut self, fanouts: Vec<Fanout>) {
        self.fanouts.extend(fanouts);
    }

    fn upload_slot(&mut self) -> Option<UploadSlot> {
        UploadSlot::take(self.uploads, config::MAX_CONCURRENT_UPLOADS)
    }

    fn inspector(&mut self, feed: ConnRef, command: inspector::Command) {
        self.inspector.push((feed, command));
    }
}

/// Runs `$body` with `$conn` (the connection at `$key`) and `$env` (its [`Env`]),
/// borrowing the server's fields one by one.
macro_rules! with_conn {
    ($server:expr, $key:expr, |$conn:ident, $env:ident| $body:expr) => {{
        let s = &mut *$server;
        match s.conns.get_mut($key) {
            None => None,
            Some($conn) => {
                let mut shared = Shared {
                    workers: &s.workers,
                    chat_batch: &mut s.chat_batch,
                    writer_backlog: &mut s.writer_backlog,
                    fanouts: &mut s.fanouts,
                    uploads: &s.uploads,
                    inspector: &mut s.inspector.commands,
                };
                let mut env_value = Env {
                    conn: ConnRef {
                        key: $key,
                        serial: $conn.serial,
                    },
                    config: &s.config,
                    services: &mut shared,
                    index: &mut s.index,
                    throttle: &mut s.throttle,
                    peer: $conn.peer,
                    codec: &mut s.codec,
                    metrics: &mut s.metrics.counters,
                };
                let $env = &mut env_value;
                Some($body)
            }
        }
    }};
}

impl Server {
    /// Opens the database (creating it on first start), starts the worker threads,
    /// binds the listener and installs the signal handlers.
    pub fn bind(config: Config) -> io::Result<Server> {
        let db_path = database_path(&config);
        let (memberships, friendships, blocks, last_seen) = Db::open(&db_path)
            .and_then(|db| {
                Ok((
                    db.all_memberships()?,
                    db.all_friendships()?,
                    db.all_blocks()?,
                    db.all_last_seen()?,
                ))
            })
            .map_err(|e| io::Error::other(format!("database {}: {e}", db_path.display())))?;
        let tls = match &config.tls {
            Some(setting) => Some(
                tls::server_config(setting, &config.data_dir, config.listen)
                    .map_err(io::Error::other)?,
            ),
            None => None,
        };
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let metrics = Metrics::new(config.metrics_listen, poll.registry(), db_path.clone())?;
        let resources = ResourceDir::open(&config.resource_dir).map_err(|e| {
            io::Error::other(format!(
                "resource directory {}: {e}",
                config.resource_dir.display()
            ))
        })?;
        let workers = Workers::start(
            db_path,
            resources,
            waker,
            config.api_queue,
            config.hash_queue,
            config.history_days.map(|days| workers::Retention {
                days,
                interval: config.retention_interval,
            }),
            metrics.workers.clone(),
        )?;
        let mut listener = listen(config.listen)
            .map_err(|e| io::Error::new(e.kind(), format!("listen on {}: {e}", config.listen)))?;
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let inspecting = config.trace_frames || config.inspector;
        Ok(Server {
            poll,
            listener: Some(listener),
            local_addr,
            signals,
            workers,
            // Reserved once for every connection allowed: untouched slots cost address
            // space, not memory, and the slab never grows by copying (a grown slab
            // leaves its old copies in the heap: about 40 bytes per connection).
            conns: Slab::with_capacity(config.max_connections.min(MAX_RESERVED_SLOTS)),
            next_serial: 0,
            throttle: Throttle::new(config.throttle.clone()),
            config,
            index: ChatIndex::new(memberships)
                .with_friends(friendships)
                .with_blocks(blocks)
                .with_last_seen(last_seen),
            chat_batch: Vec::new(),
            writer_backlog: 0,
            reads_in_flight: 0,
            fanouts: Vec::new(),
            presence_next: Instant::now(),
            presence_due: None,
            uploads: Rc::new(Cell::new(0)),
            per_address: HashMap::new(),
            refused: VecDeque::new(),
            refusals: HashMap::new(),
            read_buf: vec![0; config::READ_BUFFER],
            codec: Codec::default(),
            spare_out: Outbound::default(),
            to_flush: Vec::new(),
            to_read: Vec::new(),
            shutdown_deadline: None,
            now: Instant::now(),
            inspecting,
            inspector: inspector::Hub::default(),
            metrics,
            tls,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address `/metrics` is served on (`--metrics-listen`), if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.addr()
    }

    /// Serves until a shutdown signal, then closes every connection gracefully.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut next_sweep = Instant::now() + SWEEP_INTERVAL;
        let mut next_purge = Instant::now();
        let mut next_refusal_log = Instant::now() + REFUSAL_LOG_INTERVAL;
        loop {
            let now = Instant::now();
            let timeout = if self.to_read.is_empty() {
                let wake = self
                    .presence_due
                    .map_or(next_sweep, |due| due.min(next_sweep));
                wake.saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.now = Instant::now();
            let turn_started = self.now;
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    SIGNALS => self.on_signal(),
                    WAKER => self.on_completions(),
                    metrics::LISTENER => self.accept_scrapes(),
                    token if metrics::is_scrape(token) => self.on_scrape(token),
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
                self.workers.submit_chat(
                    std::mem::take(&mut self.chat_batch),
                    self.config.change_windows(),
                );
            }
            for key in std::mem::take(&mut self.to_flush) {
                self.flush(key);
            }
            let now = Instant::now();
            self.now = now;
            let turn = now.saturating_duration_since(turn_started);
            self.metrics.counters.turns.observe(turn.as_secs_f64());
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP_INTERVAL;
            }
            if now >= next_refusal_log {
                self.log_refusals();
                self.throttle.sweep(now);
                next_refusal_log = now + REFUSAL_LOG_INTERVAL;
            }
            if now >= next_purge {
                self.workers.purge_sessions();
                next_purge = now + PURGE_INTERVAL;
            }
            self.end_turn(false);
            if let Some(deadline) = self.shutdown_deadline {
                if self.conns.is_empty() || now >= deadline {
                    // Who went offline is stored before the writer stops.
                    self.end_turn(true);
                    info!("stopped ({} connections left open)", self.conns.len());
                    self.workers.stop();
                    return Ok(());
                }
            }
        }
    }

    fn accept(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((mut socket, peer)) => {
                    let ip = peer.ip();
                    if self.conns.len() >= self.config.max_connections {
                        self.metrics.counters.refused(Refused::ConnectionCap);
                        self.refuse_connection(socket, "connection limit reached");
                        continue;
                    }
                    // A trusted proxy carries every client behind it: not capped, not counted.
                    let proxy = self.config.is_trusted_proxy(ip);
                    let cap = self.config.max_unauthenticated_per_address;
                    if cap > 0
                        && !proxy
                        && self
                            .per_address
                            .get(&ip)
                            .is_some_and(|&n| n as usize >= cap)
                    {
                        self.metrics.counters.refused(Refused::PerAddressCap);
                        self.refuse_connection(socket, "too many connections from your address");
                        continue;
                    }
                    if let Err(e) = socket.set_nodelay(true) {
                        debug!("{peer}: set_nodelay: {e}");
                    }
                    let tls = match self.tls.as_ref().map(tls::Tls::new).transpose() {
                        Ok(tls) => tls,
                        Err(e) => {
                            warn!("{peer}: TLS: {e}");
                            continue;
                        }
                    };
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
                    self.metrics.counters.accepted += 1;
                    self.next_serial += 1;
                    let life = Lifecycle::new(self.now, &self.config);
                    let mut conn = Conn::new(socket, self.next_serial, ip, life);
                    conn.counted = !proxy;
                    if self.inspecting {
                        conn.set_tap(Some(inspector::Traced::new(
                            entry.key(),
                            self.config.trace_frames,
                            self.config.inspector,
                        )));
                    }
                    conn.set_tls(tls);
                    entry.insert(conn);
                    if !proxy {
                        *self.per_address.entry(ip).or_default() += 1;
                    }
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

    /// Answers a connection over a cap with 503 and lets it linger for a moment.
    fn refuse_connection(&mut self, mut socket: TcpStream, reason: &'static str) {
        *self.refusals.entry(reason).or_default() += 1;
        let response = Refusal::new(Status::ServiceUnavailable, reason)
            .retry_after(config::BUSY_RETRY_AFTER_SECS)
            .to_bytes();
        // A fresh socket's send buffer takes a few hundred bytes without blocking.
        if let Ok(n) = socket.write(&response) {
            self.metrics.counters.bytes_sent += n as u64;
        }
        let _ = socket.shutdown(Shutdown::Write);
        if self.refused.len() < MAX_REFUSED_LINGERING {
            self.refused.push_back((socket, self.now + REFUSED_LINGER));
        }
    }

    fn log_refusals(&mut self) {
        for (reason, n) in self.refusals.drain() {
            warn!("refused {n} connections in the last {REFUSAL_LOG_INTERVAL:?}: {reason}");
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
        let now = self.now;
        self.shutdown_deadline = Some(now + config::SHUTDOWN_GRACE);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let verdict = with_conn!(self, key, |conn, env| conn.life.close(
                now,
                CloseCode::GOING_AWAY,
                "server shutting down",
                env
            ));
            self.settle(key, verdict.unwrap_or(Verdict::Drop));
        }
    }

    /// Reads what the socket has for a connection that wants input (see
    /// [`read_turn`]); one over a budget is only marked to be read again later.
    fn on_readable(&mut self, key: usize, to_eof: bool) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !conn.life.wants_read(&self.config) {
            if to_eof && matches!(conn.life.state(), State::WebSocket { .. }) {
                // A WebSocket client that hung up while over a budget: what it left
                // unread is for nobody.
                debug!("#{key}: peer closed while paused");
                self.remove(key);
                return;
            }
            // Read again once the budget frees.
            conn.life.starve();
            return;
        }
        let lent = conn.life.out.is_empty();
        if lent {
            std::mem::swap(&mut conn.life.out, &mut self.spare_out);
        }
        // The loop-wide buffer is lent out for the call (a move of three words).
        let mut buf = std::mem::take(&mut self.read_buf);
        let now = self.now;
        let turn = with_conn!(self, key, |conn, env| read_turn(
            conn, env, &mut buf, now, to_eof
        ));
        self.read_buf = buf;
        let (verdict, again) = turn.unwrap_or((Verdict::Drop, false));
        if again {
            // The fairness cap: the rest waits for the next turn.
            self.to_read.push(key);
        }
        if lent && verdict == Verdict::Keep {
            self.return_lent(key);
        }
        self.settle(key, verdict);
        if self.inspecting {
            self.inspector_turn(key);
        }
    }

    /// Writes the replies a connection made in the loop's warm queue, and takes
    /// the queue back if they all left.
    fn return_lent(&mut self, key: usize) {
        self.flush_with(key, true);
        if let Some(conn) = self.conns.get_mut(key) {
            if conn.life.out.is_empty() {
                std::mem::swap(&mut conn.life.out, &mut self.spare_out);
            }
        }
    }

    /// After a connection's machine was called: drops it if asked, or if its reader
    /// has fallen too far behind; schedules its flush, and a read if a budget freed.
    fn settle(&mut self, key: usize, verdict: Verdict) {
        if verdict == Verdict::Drop {
            self.remove(key);
            return;
        }
        if !self.after_output(key) {
            return;
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.life.take_resume(&self.config) {
            self.to_read.push(key);
        }
        if conn.counted && conn.life.chat_user().is_some() {
            // An authenticated chat socket no longer counts against its address.
            conn.counted = false;
            uncount(&mut self.per_address, conn.peer);
        }
    }

    /// After output was queued for a connection: drops it if its reader is too far
    /// behind (returns false), pauses its reading at the high-water mark, and
    /// schedules the flush.
    fn after_output(&mut self, key: usize) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        if conn.life.over_hard_bound() {
            warn!(
                "#{key}: not reading ({} bytes queued): disconnecting",
                conn.life.out.len()
            );
            self.metrics.counters.slow_consumers_dropped += 1;
            self.remove(key);
            return false;
        }
        if conn.life.must_pause() {
            conn.life.note_output(self.now);
        }
        // TLS records (handshake messages, tickets) may wait with an empty queue.
        let tls_waits = conn.tls().is_some_and(|t| t.wants_write());
        if (!conn.life.out.is_empty() || tls_waits) && !conn.flush_queued {
            conn.flush_queued = true;
            self.to_flush.push(key);
        }
        true
    }

    /// Writes a connection's queue; shuts the write side once a final message is out.
    fn flush(&mut self, key: usize) {
        self.flush_with(key, false);
    }

    /// [`Server::flush`], keeping the queue's buffer if `keep` (a lent queue).
    fn flush_with(&mut self, key: usize, keep: bool) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.flush_queued = false;
        let before = conn.life.out.len();
        let flushed = match inspector::flush_out(conn, &mut self.codec.spares, keep) {
            Ok(f) => f,
            Err(e) => {
                debug!("#{key}: write: {e}");
                self.remove(key);
                return;
            }
        };
        let progressed = conn.life.out.len() < before;
        self.metrics.counters.bytes_sent += before.saturating_sub(conn.life.out.len()) as u64;
        let after = conn.life.handle_flushed(self.now, flushed, progressed);
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
        if after == AfterFlush::ShutdownWrite {
            conn.transport().shutdown_write(&mut self.codec.spares);
        }
        if conn.life.take_resume(&self.config) {
            self.to_read.push(key);
        }
        if self.inspecting {
            self.inspector_turn(key);
        }
    }

    /// Closes an open WebSocket with `code` and settles it.
    fn close_with(&mut self, key: usize, code: CloseCode, reason: &str) {
        let now = self.now;
        let v = with_conn!(self, key, |c, env| c.life.close(now, code, reason, env));
        self.settle(key, v.unwrap_or(Verdict::Drop));
    }

    /// Handles everything the worker threads have finished.
    fn on_completions(&mut self) {
        let now = self.now;
        while let Some(completion) = self.workers.try_completion() {
            match completion {
                Completion::Api { conn, mut reply } => {
                    for effect in std::mem::take(&mut reply.effects) {
                        self.apply(effect);
                    }
                    let r = self.live(conn, |c, env| c.life.finish_api(now, reply, env));
                    self.settle_live(conn, r);
                }
                Completion::Response { conn, bytes } => {
                    let r = self.live(conn, |c, env| {
                        c.life.finish_response(now, &bytes, env.config);
                    });
                    self.settle_live(conn, r);
                }
                Completion::Authenticated {
                    conn,
                    user,
                    session,
                } => {
                    let r = self.live(conn, |c, env| c.life.finish_auth(now, user, session, env));
                    self.settle_live(conn, r);
                }
                Completion::Synced { conn, reply } => {
                    let r = self.live(conn, |c, env| c.life.finish_sync(&reply, env));
                    self.settle_live(conn, r);
                }
                Completion::Committed(results) => {
                    for c in results {
                        self.writer_backlog = self.writer_backlog.saturating_sub(1);
                        self.deliver(c);
                    }
                }
                Completion::Revoked(revoked) => {
                    for r in revoked {
                        self.revoke(r);
                    }
                }
                Completion::Read { stored, moved } => {
                    self.reads_in_flight = self.reads_in_flight.saturating_sub(stored);
                    let index = &self.index;
                    let told = moved.into_iter().filter_map(|m| cmd::read_fanout(index, m));
                    self.fanouts.extend(told);
                }
            }
        }
    }

    /// Runs `f` on the connection a job was for, if it is still there.
    fn live<R>(
        &mut self,
        conn: ConnRef,
        f: impl FnOnce(&mut Conn, &mut Env<'_>) -> R,
    ) -> Option<R> {
        let serial_ok = self
            .conns
            .get(conn.key)
            .is_some_and(|c| c.serial == conn.serial);
        if !serial_ok {
            return None;
        }
        with_conn!(self, conn.key, |c, env| f(c, env))
    }

    fn settle_live<R>(&mut self, conn: ConnRef, ran: Option<R>) {
        if ran.is_some() {
            self.settle(conn.key, Verdict::Keep);
        }
    }

    /// Keeps the chat index in step with what the API changed.
    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::Joined { user, group } => self.index.joined(user, group),
            Effect::Group(change) => self.group_changed(*change),
            Effect::Befriended { user, friend } => self.index.befriended(user, friend),
            Effect::Unfriended { a, b } => self.index.unfriended(a, b),
            Effect::Blocked {
                blocker,
                blocked,
                on,
            } => self.index.set_blocked(blocker, blocked, on),
            Effect::Notify { users, event } => {
                // Out at the end of the turn with the other live frames.
                if let Some(f) = crate::im::events::notify(&self.index, &users, &event) {
                    self.fanouts.push(f);
                }
            }
            Effect::NotifyContacts { user, event } => {
                if let Some(f) = crate::im::events::notify_contacts(&self.index, user, &event) {
                    self.fanouts.push(f);
                }
            }
            Effect::LoggedOut { user, token_digest } => {
                // Sockets opened with the ended session close with it.
                let ended = workers::session_id(&token_digest);
                self.close_chats(Some(user), Some(ended), "logged out");
            }
        }
    }

    /// A group changed: memberships gained first, then the stored notices are
    /// addressed to the group's online connections (a group delivery's frame, out at
    /// the end of the turn in effect order with the `cmd 30` events, encoded once and
    /// shared), then memberships lost (a removed member gets the notice of its
    /// removal, and nothing after it).
    fn group_changed(&mut self, change: crate::api::GroupChange) {
        let group = change.group;
        if let Some(user) = change.joined {
            self.index.joined(user, group);
        }
        for notice in &change.notices {
            let to = self.index.group_conns(group).to_vec();
            if !to.is_empty() {
                self.fanouts.push(Fanout {
                    to,
                    text: crate::im::wire::delivery_json(notice),
                });
            }
        }
        if let Some(user) = change.left {
            self.index.left(user, group);
        }
        if change.deleted {
            self.index.group_deleted(group);
        }
    }

    /// Closes the chat sockets an administrator's change ended, and forgets a
    /// deleted user.
    fn revoke(&mut self, r: workers::Revoked) {
        let n = self.close_chats(r.user, r.session, r.reason.close_reason());
        if let (crate::store::Reason::Deleted, Some(user)) = (r.reason, r.user) {
            self.index.forget_user(user);
        }
        let whom = r
            .user
            .map_or("every user".to_owned(), |u| format!("user {u}"));
        info!(
            "{}: closed {n} chat sockets of {whom}",
            r.reason.close_reason()
        );
    }

    /// Closes with 1008 and `reason` the chat sockets of `user` (of everyone if
    /// `None`) opened with `session` (with any if `None`); returns how many.
    fn close_chats(&mut self, user: Option<i64>, session: Option<u32>, reason: &str) -> usize {
        let doomed: Vec<usize> = match user {
            Some(user) => self.index.conns_of(user).to_vec(),
            None => self.conns.iter().map(|(key, _)| key).collect(),
        };
        let doomed: Vec<usize> = doomed
            .into_iter()
            .filter(|&key| {
                self.conns
                    .get(key)
                    .and_then(|c| c.life.chat_user())
                    .is_some_and(|(_, s)| session.is_none_or(|ended| s == ended))
            })
            .collect();
        let now = self.now;
        for &key in &doomed {
            let v = with_conn!(self, key, |c, env| c.life.close(
                now,
                CloseCode::POLICY_VIOLATION,
                reason,
                env
            ));
            self.settle(key, v.unwrap_or(Verdict::Drop));
        }
        doomed.len()
    }

    /// Acks (or refuses) a stored chat message to its sender and fans it out.
    ///
    /// A stored message without a `ref` gets no ack: nothing could match it, and
    /// fastIM's own client (which never sends one) takes every frame for a chat message.
    fn deliver(&mut self, c: workers::Committed) {
        let reply = match &c.outcome {
            Outcome::Saved(_) if c.client_ref.is_none() => None,
            Outcome::Saved(saved) => Some(
                Reply::Ack {
                    cmd: ACK,
                    client_ref: c.client_ref.as_deref(),
                    id: saved.id,
                    createat: saved.created_at,
                }
                .to_json(),
            ),
            Outcome::Refused { code, msg } => Some(
                WireError {
                    client_ref: c.client_ref.clone(),
                    code: *code,
                    msg: msg.clone(),
                }
                .to_json(),
            ),
        };
        let sender = c.conn;
        let acked = matches!(c.outcome, Outcome::Saved(_));
        let r = self.live(sender, |conn, env| {
            conn.life.finish_chat();
            let Some(reply) = &reply else { return };
            if conn.life.send_text(reply) {
                env.metrics.messages_sent[metrics::CHAT] += 1;
                env.metrics.acks_sent += u64::from(acked);
            }
        });
        self.settle_live(sender, r);
        let Some((to, frame)) = c.delivery else {
            return;
        };
        let own = self.index.conns_of(c.sender);
        let mut recipients: Vec<usize> = match to {
            // The sender's other devices see what it sent (once, if it wrote to itself).
            Peer::User(peer) if peer == c.sender => Vec::new(),
            Peer::User(peer) => self.index.conns_of(peer).to_vec(),
            // The index holds each member connection once.
            Peer::Group(group) => self
                .index
                .group_conns(group)
                .iter()
                .copied()
                .filter(|key| !own.contains(key))
                .collect(),
        };
        let skip = (!c.echo).then_some(sender.key);
        // The sender's own connections get the copy with its `ref`; nobody else. Most
        // senders have no other connection than the one acked (`skip`): nothing to send.
        let own_others = own.iter().any(|&key| Some(key) != skip);
        match c.own_delivery {
            Some(own_frame) if own_others => {
                let own = own.to_vec();
                self.send_to_all(frame, &recipients, skip);
                self.send_to_all(own_frame, &own, skip);
            }
            Some(_) => self.send_to_all(frame, &recipients, skip),
            None => {
                recipients.extend_from_slice(own);
                self.send_to_all(frame, &recipients, skip);
            }
        }
    }

    /// Queues one frame for many connections (all but `skip`): encoded once, shared
    /// by every recipient's queue; and compressed once for the recipients with
    /// permessage-deflate (RFC 7692), with the smallest window any of them allows
    /// (§7.1.2.1).
    fn send_to_all(&mut self, frame: Vec<u8>, recipients: &[usize], skip: Option<usize>) {
        let compressed = self.compress_delivery(&frame, recipients, skip);
        let frame: Rc<[u8]> = Rc::from(frame);
        for &key in recipients {
            if Some(key) == skip {
                continue;
            }
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            let (shared, zipped) = match (&compressed, conn.life.deflate()) {
                (Some(compressed), Some(d)) if d.compresses() => (compressed.clone(), true),
                _ => (frame.clone(), false),
            };
            if conn.life.send_shared(shared) {
                self.metrics.counters.chat_deliveries += 1;
                self.metrics.counters.messages_sent[metrics::CHAT] += 1;
                self.metrics.counters.messages_sent_compressed[metrics::CHAT] += u64::from(zipped);
            }
            // A delivery frees no budget and changes no state: only the bounds and
            // the flush matter here (this runs once per recipient).
            self.after_output(key);
        }
    }

    /// The end of a loop turn: the frames commands made for other connections go out
    /// (no database round trip); so do the presence changes, at once after a quiet
    /// window, else when the window since the last announcement ends (or at once if
    /// `now`), and the writer is told who went offline.
    fn end_turn(&mut self, now: bool) {
        let presence = if self.index.presence_pending() {
            if now || self.now >= self.presence_next {
                self.presence_due = None;
                self.presence_next = self.now + config::PRESENCE_WINDOW;
                self.index.presence_turn(workers::now_ms())
            } else {
                self.presence_due = Some(self.presence_next);
                Default::default()
            }
        } else {
            Default::default()
        };
        if !presence.offline.is_empty() {
            self.workers.submit_last_seen(presence.offline);
        }
        if self.reads_in_flight < config::MAX_READS_IN_FLIGHT {
            let reads = self.index.take_reads(self.now);
            if !reads.is_empty() {
                self.reads_in_flight += reads.len();
                self.workers.submit_reads(reads);
            }
        } else {
            self.index.compact_reads();
        }
        let mut fanouts = std::mem::take(&mut self.fanouts);
        fanouts.extend(presence.fanouts);
        if fanouts.is_empty() {
            return;
        }
        for f in fanouts {
            let mut frame = Vec::with_capacity(f.text.len() + 4);
            let _ = ws::Sender::SHARED.send_text(&f.text, &mut frame);
            self.send_to_all(frame, &f.to, None);
        }
        for key in std::mem::take(&mut self.to_flush) {
            self.flush(key);
        }
    }

    /// The compressed form of a delivery frame, if any recipient negotiated
    /// permessage-deflate and the payload reaches the threshold.
    fn compress_delivery(
        &mut self,
        frame: &[u8],
        recipients: &[usize],
        skip: Option<usize>,
    ) -> Option<Rc<[u8]>> {
        let Ok(Some((header, n))) = ws::frame::decode_header(frame) else {
            return None;
        };
        let payload = &frame[n..];
        if payload.len() < self.config.deflate_min_bytes {
            return None;
        }
        let bits = recipients
            .iter()
            .filter(|&&key| Some(key) != skip)
            .filter_map(|&key| self.conns.get(key)?.life.deflate())
            .filter(|d| d.compresses())
            .map(|d| d.server_window_bits)
            .min()?;
        let mut out = Vec::new();
        self.codec
            .deflater
            .write_compressed(bits, header.opcode, payload, &mut out);
        Some(Rc::from(out))
    }

    /// Deadlines, idle buffers, keeping chat connections alive, refused sockets.
    fn sweep(&mut self, now: Instant) {
        self.codec.spares.trim();
        let due: Vec<usize> = self
            .conns
            .iter_mut()
            .filter_map(|(key, conn)| {
                // Busy connections reuse their buffers; quiet ones give them back.
                conn.life.release_idle(now, SWEEP_INTERVAL);
                conn.life
                    .poll_timeout(&self.config)
                    .is_some_and(|t| t <= now)
                    .then_some(key)
            })
            .collect();
        for key in due {
            let v = with_conn!(self, key, |c, env| c.life.handle_timeout(now, env));
            self.settle(key, v.unwrap_or(Verdict::Drop));
        }
        self.sweep_scrapes(now);
        let mut buf = [0u8; 4096];
        let mut kept = VecDeque::with_capacity(self.refused.len());
        while let Some((mut socket, until)) = self.refused.pop_front() {
            // Read what the refused client sent, so that closing does not reset it.
            let open = loop {
                match socket.read(&mut buf) {
                    Ok(0) => break false,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break e.kind() == io::ErrorKind::WouldBlock,
                }
            };
            if open && now < until {
                kept.push_back((socket, until));
            }
        }
        self.refused = kept;
    }

    fn remove(&mut self, key: usize) {
        if let Some(mut conn) = self.conns.try_remove(key) {
            if let Some((user, _)) = conn.life.chat_user() {
                self.index.disconnect(user, key);
            }
            if conn.counted {
                uncount(&mut self.per_address, conn.peer);
            }
            let _ = self.poll.registry().deregister(&mut conn.socket);
            if self.inspecting {
                self.inspector_removed(key, &mut conn);
            }
        }
    }
}

/// One turn of reading for a connection that wants input: kept input first, then
/// reads (up to the fairness cap and its allowance) handed to its machine. Returns
/// the verdict and whether the cap left input for another turn.
///
/// A read that returns less than asked drained the socket, so the next arrival
/// will raise a new edge: no need for the extra read that would only say
/// `WouldBlock`. Except when the peer has closed (`to_eof`): then read on until
/// the end is seen.
fn read_turn(
    conn: &mut Conn,
    env: &mut Env<'_>,
    buf: &mut [u8],
    now: Instant,
    to_eof: bool,
) -> (Verdict, bool) {
    let key = env.conn.key;
    let pending = conn.life.take_pending();
    let mut filled = pending.len();
    buf[..filled].copy_from_slice(&pending);
    drop(pending);
    // Input that waited for a budget is handled before reading more.
    if filled > 0 {
        let consumed = conn.life.handle_bytes(now, &mut buf[..filled], env);
        buf.copy_within(consumed..filled, 0);
        filled -= consumed;
    }
    let mut reads = 0;
    let mut again = false;
    let verdict = loop {
        if !conn.life.wants_read(env.config) {
            conn.life.starve();
            break Verdict::Keep;
        }
        if reads == config::MAX_READS_PER_TURN {
            again = true;
            break Verdict::Keep;
        }
        let end = (filled + conn.life.read_allowance()).min(buf.len());
        if end <= filled {
            conn.life.starve();
            break Verdict::Keep;
        }
        let mut transport = conn.transport();
        match transport.read(&mut buf[filled..end], &mut env.codec.spares) {
            Ok(0) => {
                debug!("#{key}: peer closed");
                // A client may send its close frame and shut down at once: try to
                // answer before dropping.
                let before = conn.life.out.len();
                let _ = inspector::flush_out(conn, &mut env.codec.spares, false);
                env.metrics.bytes_sent += before.saturating_sub(conn.life.out.len()) as u64;
                break Verdict::Drop;
            }
            Ok(n) => {
                reads += 1;
                env.metrics.bytes_received += n as u64;
                if let Some(tap) = conn.tap_mut() {
                    // Before the connection unmasks the payloads in place.
                    tap.input(&buf[filled..filled + n]);
                }
                let drained = n < end - filled && !to_eof;
                filled += n;
                let mut consumed = conn.life.handle_bytes(now, &mut buf[..filled], env);
                while conn.life.take_corked() {
                    // Replies leave while the rest of the input is handled.
                    let before = conn.life.out.len();
                    match inspector::flush_out(conn, &mut env.codec.spares, true) {
                        Ok(flushed) => {
                            let progressed = conn.life.out.len() < before;
                            env.metrics.bytes_sent +=
                                before.saturating_sub(conn.life.out.len()) as u64;
                            conn.life.handle_flushed(now, flushed, progressed);
                        }
                        Err(e) => {
                            debug!("#{key}: write: {e}");
                            return (Verdict::Drop, false);
                        }
                    }
                    consumed += conn.life.handle_bytes(now, &mut buf[consumed..filled], env);
                }
                buf.copy_within(consumed..filled, 0);
                filled -= consumed;
                if filled == buf.len() {
                    // Unreachable with sane limits: leftovers are at most one request.
                    warn!("#{key}: unparseable input fills the read buffer");
                    break Verdict::Drop;
                }
                if drained {
                    break Verdict::Keep;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Verdict::Keep,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                debug!("#{key}: read: {e}");
                break Verdict::Drop;
            }
        }
    };
    if filled > 0 && verdict == Verdict::Keep {
        conn.life.keep_pending(&buf[..filled]);
    }
    (verdict, again)
}

fn uncount(per_address: &mut HashMap<IpAddr, u32>, ip: IpAddr) {
    if let Some(n) = per_address.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            per_address.remove(&ip);
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
