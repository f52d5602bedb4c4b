//! Prometheus metrics: the loop's counters, the workers' numbers, and `GET /metrics`
//! on a listener of its own (`--metrics-listen`), in the text exposition format 0.0.4.
//!
//! Where the numbers live:
//!
//! - [`Counters`]: a plain struct owned by the loop, incremented with `+= 1` where
//!   things happen (no atomics, no locks: the loop is the only thread that touches
//!   it). The connection machines reach it through their `Env`.
//! - [`WorkerStats`]: what the worker threads measure (job and commit times, batch
//!   sizes, jobs taken off the queues), in atomics: the workers write them, the loop
//!   reads them only when `/metrics` is served.
//! - [`DbGauges`]: users, groups, messages, sessions and the database size, read by a
//!   thread of their own every [`DB_POLL`] (the loop never queries the database) and
//!   kept in atomics until the next read.
//! - Connections by state are counted from the connection table when `/metrics` is
//!   served; the resident memory is read from procfs then.
//!
//! A scrape connection is a tiny HTTP/1.1 exchange on the same `mio` loop: the request
//! head is read into a buffer of at most [`MAX_HEAD`] bytes within [`SCRAPE_TIMEOUT`],
//! answered (`GET /metrics` 200, another path 404, another method 405), and closed.
//! At most [`MAX_SCRAPES`] are open at once; more are closed on accept.
//!
//! The text is written by hand (a few lines per type): the `prometheus` crate keeps
//! its metrics in a global registry behind locks, which the loop's hot path must not
//! take, and the format itself is a handful of line shapes.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use slab::Slab;

use super::Server;
use super::conn::Endpoint;
use super::lifecycle::State;
use super::workers::{self, Class};
use crate::http::{self, HeadError, Status};
use crate::store::Db;
use crate::ws::CloseCode;

/// The metrics listener's poll token.
pub const LISTENER: Token = Token(usize::MAX - 4);

/// Most scrape connections open at once.
pub const MAX_SCRAPES: usize = 16;

/// Scrape connections use the tokens just below the listener's (far above any
/// connection's slab key).
const FIRST_SCRAPE: usize = usize::MAX - 4 - MAX_SCRAPES;

/// Largest request head a scrape may send.
pub const MAX_HEAD: usize = 4096;

/// How long a scrape connection may take from accept to the last byte of its answer.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the database's counts are read.
pub const DB_POLL: Duration = Duration::from_secs(10);

/// `Content-Type` of the exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether `token` is a scrape connection's.
pub fn is_scrape(token: Token) -> bool {
    (FIRST_SCRAPE..LISTENER.0).contains(&token.0)
}

// ---- labels ----

/// Why a connection or request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// `--max-connections` reached (503 on accept).
    ConnectionCap,
    /// `--max-unauthenticated-per-address` reached (503 on accept).
    PerAddressCap,
    /// A login or registration limit (429).
    RateLimit,
    /// A worker queue was full (503).
    WorkerQueueFull,
    /// Another budget: no worker answer in time, upload slots, memory (503).
    Busy,
    /// A `/chat` upgrade from a foreign `Origin` (403).
    Origin,
    /// An unknown or expired session token (401).
    AuthFailed,
}

impl Refused {
    const ALL: [Refused; 7] = [
        Refused::ConnectionCap,
        Refused::PerAddressCap,
        Refused::RateLimit,
        Refused::WorkerQueueFull,
        Refused::Busy,
        Refused::Origin,
        Refused::AuthFailed,
    ];

    fn label(self) -> &'static str {
        match self {
            Refused::ConnectionCap => "connection_cap",
            Refused::PerAddressCap => "per_address_cap",
            Refused::RateLimit => "rate_limit",
            Refused::WorkerQueueFull => "worker_queue_full",
            Refused::Busy => "busy",
            Refused::Origin => "origin",
            Refused::AuthFailed => "auth_failed",
        }
    }
}

/// The WebSocket endpoints, as label and index.
const ENDPOINTS: [&str; N_ENDPOINTS] = ["echo", "chat", "inspector"];

/// How many WebSocket endpoints are counted apart.
const N_ENDPOINTS: usize = 3;

/// `/echo`'s index in the per-endpoint counters.
pub const ECHO: usize = 0;
/// `/chat`'s index in the per-endpoint counters.
pub const CHAT: usize = 1;
/// The frame inspector's feed's index.
pub const INSPECTOR: usize = 2;

/// The index of an endpoint in the per-endpoint counters.
pub fn endpoint(e: Endpoint) -> usize {
    match e {
        Endpoint::Echo => ECHO,
        Endpoint::Chat { .. } => CHAT,
        Endpoint::Inspector => INSPECTOR,
    }
}

/// Close codes counted one by one; any other (3000-4999, the application's) is
/// `other`, and an empty close frame is `none`: a client cannot grow the label set.
const CLOSE_CODES: [u16; 12] = [
    1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
];
const CODE_SLOTS: usize = CLOSE_CODES.len() + 2;

fn code_slot(code: Option<CloseCode>) -> usize {
    match code {
        None => CLOSE_CODES.len(),
        Some(CloseCode(c)) => CLOSE_CODES
            .iter()
            .position(|&k| k == c)
            .unwrap_or(CLOSE_CODES.len() + 1),
    }
}

fn code_label(slot: usize) -> String {
    match CLOSE_CODES.get(slot) {
        Some(c) => c.to_string(),
        None if slot == CLOSE_CODES.len() => "none".into(),
        None => "other".into(),
    }
}

// ---- the loop's counters ----

/// Counters owned by the loop (module docs).
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections accepted on the main listener.
    pub accepted: u64,
    refused: [u64; Refused::ALL.len()],
    /// Completed WebSocket handshakes, by [`endpoint`].
    pub handshakes: [u64; N_ENDPOINTS],
    /// Complete data messages received, by [`endpoint`].
    pub messages_received: [u64; N_ENDPOINTS],
    /// Data messages queued for sending, by [`endpoint`].
    pub messages_sent: [u64; N_ENDPOINTS],
    /// Of those, the ones sent compressed (permessage-deflate, RSV1), by [`endpoint`].
    pub messages_sent_compressed: [u64; N_ENDPOINTS],
    /// Bytes read from client sockets.
    pub bytes_received: u64,
    /// Bytes written to client sockets.
    pub bytes_sent: u64,
    /// Chat messages queued for online recipients.
    pub chat_deliveries: u64,
    /// Acks queued for senders.
    pub acks_sent: u64,
    close_sent: [u64; CODE_SLOTS],
    close_received: [u64; CODE_SLOTS],
    protocol_errors: [u64; CODE_SLOTS],
    /// Connections dropped because their reader fell too far behind.
    pub slow_consumers_dropped: u64,
    /// How long each loop turn took.
    pub turns: Histogram,
}

impl Counters {
    /// A refusal.
    pub fn refused(&mut self, why: Refused) {
        self.refused[why as usize] += 1;
    }

    /// A close frame queued with `code`.
    pub fn close_sent(&mut self, code: Option<CloseCode>) {
        self.close_sent[code_slot(code)] += 1;
    }

    /// A close frame received with `code`.
    pub fn close_received(&mut self, code: Option<CloseCode>) {
        self.close_received[code_slot(code)] += 1;
    }

    /// A protocol error, by the close code it gets.
    pub fn protocol_error(&mut self, code: CloseCode) {
        self.protocol_errors[code_slot(Some(code))] += 1;
    }
}

/// Bucket bounds of the loop turn histogram, in seconds.
const TURN_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// Bucket bounds of worker job times, in seconds.
const JOB_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Bucket bounds of chat commit times, in seconds.
const COMMIT_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
/// Bucket bounds of what a chat commit holds: its messages, the WAL pages it wrote.
const COUNT_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
];

/// A histogram with fixed buckets, for one thread.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last is above every bound.
    counts: Box<[u64]>,
    sum: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new(TURN_BUCKETS)
    }
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1].into_boxed_slice(),
            sum: 0.0,
        }
    }

    /// Counts one observation.
    pub fn observe(&mut self, value: f64) {
        self.counts[bucket(self.bounds, value)] += 1;
        self.sum += value;
    }
}

fn bucket(bounds: &[f64], value: f64) -> usize {
    bounds.partition_point(|&b| b < value)
}

/// A histogram with fixed buckets that several threads observe into. The sum is
/// kept in whole `1/scale` units (nanoseconds for seconds, 1 for counts).
#[derive(Debug)]
pub struct AtomicHistogram {
    bounds: &'static [f64],
    counts: Box<[AtomicU64]>,
    sum_units: AtomicU64,
    scale: f64,
}

impl AtomicHistogram {
    fn new(bounds: &'static [f64], scale: f64) -> Self {
        AtomicHistogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_units: AtomicU64::new(0),
            scale,
        }
    }

    /// Counts one duration (a histogram of seconds).
    pub fn observe_duration(&self, d: Duration) {
        self.observe_units(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Counts one observation of `units / scale`.
    pub fn observe_units(&self, units: u64) {
        let value = units as f64 / self.scale;
        self.counts[bucket(self.bounds, value)].fetch_add(1, Ordering::Relaxed);
        self.sum_units.fetch_add(units, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Histogram {
        Histogram {
            bounds: self.bounds,
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            sum: self.sum_units.load(Ordering::Relaxed) as f64 / self.scale,
        }
    }
}

// ---- the workers' numbers ----

/// What the worker threads measure (module docs).
#[derive(Debug)]
pub struct WorkerStats {
    /// Jobs taken off each pool's queue, by [`class_index`].
    pub started: [AtomicU64; 2],
    /// From a job's submission to its completion being sent, by [`class_index`].
    pub job_seconds: [AtomicHistogram; 2],
    /// Messages per chat commit.
    pub commit_batch: AtomicHistogram,
    /// How long each chat commit took.
    pub commit_seconds: AtomicHistogram,
    /// WAL pages each chat commit wrote.
    pub commit_pages: AtomicHistogram,
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            started: [AtomicU64::new(0), AtomicU64::new(0)],
            job_seconds: [
                AtomicHistogram::new(JOB_BUCKETS, 1e9),
                AtomicHistogram::new(JOB_BUCKETS, 1e9),
            ],
            commit_batch: AtomicHistogram::new(COUNT_BUCKETS, 1.0),
            commit_seconds: AtomicHistogram::new(COMMIT_BUCKETS, 1e9),
            commit_pages: AtomicHistogram::new(COUNT_BUCKETS, 1.0),
        }
    }
}

/// The worker pools, as label and index.
const CLASSES: [&str; 2] = ["api", "hash"];

/// The index of a pool in the per-class numbers.
pub fn class_index(class: Class) -> usize {
    match class {
        Class::Api => 0,
        Class::Hash => 1,
    }
}

// ---- the database's counts ----

/// The database's counts as last read (module docs).
#[derive(Debug, Default)]
pub struct DbGauges {
    read: AtomicBool,
    users: AtomicI64,
    groups: AtomicI64,
    messages: AtomicI64,
    sessions: AtomicI64,
    database_bytes: AtomicI64,
}

/// The thread that reads [`DbGauges`]; stopped and joined when dropped.
struct DbPoller {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl DbPoller {
    fn start(db_path: PathBuf, gauges: Arc<DbGauges>) -> io::Result<DbPoller> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("metrics-db".into())
            .spawn(move || poll_db(&db_path, &gauges, &stopped))?;
        Ok(DbPoller {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for DbPoller {
    fn drop(&mut self) {
        self.stop = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn poll_db(path: &std::path::Path, gauges: &DbGauges, stop: &Receiver<()>) {
    let mut db = match Db::open(path) {
        Ok(db) => db,
        Err(e) => {
            warn!("metrics: cannot open {}: {e}", path.display());
            return;
        }
    };
    loop {
        match db.stats(workers::now_ms()) {
            Ok(s) => {
                gauges.users.store(s.users, Ordering::Relaxed);
                gauges.groups.store(s.groups, Ordering::Relaxed);
                gauges.messages.store(s.messages, Ordering::Relaxed);
                gauges.sessions.store(s.sessions, Ordering::Relaxed);
                gauges
                    .database_bytes
                    .store(s.database_bytes, Ordering::Relaxed);
                gauges.read.store(true, Ordering::Release);
            }
            Err(e) => warn!("metrics: cannot read the database's counts: {e}"),
        }
        if !matches!(stop.recv_timeout(DB_POLL), Err(RecvTimeoutError::Timeout)) {
            return;
        }
    }
}

// ---- the listener ----

/// One scrape connection.
struct Scrape {
    socket: TcpStream,
    head: Vec<u8>,
    /// The answer, once the head is in; `sent` bytes of it are written.
    answer: Option<Vec<u8>>,
    sent: usize,
    until: Instant,
}

/// Everything of the metrics besides the loop's counters.
pub struct Metrics {
    /// The loop's counters.
    pub counters: Counters,
    /// Shared with the worker threads.
    pub workers: Arc<WorkerStats>,
    port: Option<Port>,
    started_unix: f64,
}

/// The metrics listener and its connections.
struct Port {
    listener: TcpListener,
    addr: SocketAddr,
    scrapes: Slab<Scrape>,
    gauges: Arc<DbGauges>,
    _poller: DbPoller,
}

impl Metrics {
    /// The counters, and with `listen` the listener (registered with `registry`)
    /// and the thread that reads the database's counts from `db_path`.
    pub fn new(
        listen: Option<SocketAddr>,
        registry: &Registry,
        db_path: PathBuf,
    ) -> io::Result<Metrics> {
        let port = match listen {
            None => None,
            Some(addr) => {
                let mut listener = super::listen(addr).map_err(|e| {
                    io::Error::new(e.kind(), format!("metrics listen on {addr}: {e}"))
                })?;
                registry.register(&mut listener, LISTENER, Interest::READABLE)?;
                let gauges = Arc::new(DbGauges::default());
                Some(Port {
                    addr: listener.local_addr()?,
                    listener,
                    scrapes: Slab::with_capacity(MAX_SCRAPES),
                    _poller: DbPoller::start(db_path, gauges.clone())?,
                    gauges,
                })
            }
        };
        let started_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Ok(Metrics {
            counters: Counters::default(),
            workers: Arc::new(WorkerStats::default()),
            port,
            started_unix,
        })
    }

    /// The metrics listener's address, if there is one.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.port.as_ref().map(|p| p.addr)
    }
}

impl Server {
    /// Accepts scrape connections (closing those over [`MAX_SCRAPES`]).
    pub(super) fn accept_scrapes(&mut self) {
        let now = self.now;
        let Some(port) = &mut self.metrics.port else {
            return;
        };
        loop {
            match port.listener.accept() {
                Ok((mut socket, peer)) => {
                    if port.scrapes.len() >= MAX_SCRAPES {
                        debug!("metrics: {peer}: too many scrapes at once, closed");
                        continue;
                    }
                    let entry = port.scrapes.vacant_entry();
                    let token = Token(FIRST_SCRAPE + entry.key());
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut socket, token, Interest::READABLE)
                    {
                        warn!("metrics: {peer}: register: {e}");
                        continue;
                    }
                    entry.insert(Scrape {
                        socket,
                        head: Vec::new(),
                        answer: None,
                        sent: 0,
                        until: now + SCRAPE_TIMEOUT,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    warn!("metrics: accept: {e}");
                    return;
                }
            }
        }
    }

    /// Reads a scrape's request head, answers it, writes the answer, closes.
    pub(super) fn on_scrape(&mut self, token: Token) {
        let key = token.0 - FIRST_SCRAPE;
        let answer = {
            let Some(port) = &mut self.metrics.port else {
                return;
            };
            let Some(scrape) = port.scrapes.get_mut(key) else {
                return;
            };
            if scrape.answer.is_some() {
                None
            } else {
                match read_head(scrape) {
                    Err(()) => {
                        self.drop_scrape(key);
                        return;
                    }
                    Ok(None) => return,
                    Ok(Some(request)) => Some(request),
                }
            }
        };
        if let Some(request) = answer {
            let bytes = self.answer_scrape(request);
            if let Some(scrape) = self
                .metrics
                .port
                .as_mut()
                .and_then(|p| p.scrapes.get_mut(key))
            {
                scrape.answer = Some(bytes);
            }
        }
        self.write_scrape(key);
    }

    /// Writes what is left of a scrape's answer; closes it once all is out.
    fn write_scrape(&mut self, key: usize) {
        let Some(port) = &mut self.metrics.port else {
            return;
        };
        let Some(scrape) = port.scrapes.get_mut(key) else {
            return;
        };
        let Some(answer) = &scrape.answer else {
            return;
        };
        while scrape.sent < answer.len() {
            match scrape.socket.write(&answer[scrape.sent..]) {
                Ok(0) => break,
                Ok(n) => scrape.sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let token = Token(FIRST_SCRAPE + key);
                    if let Err(e) = self.poll.registry().reregister(
                        &mut scrape.socket,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        debug!("metrics: reregister: {e}");
                        break;
                    }
                    return;
                }
                Err(e) => {
                    debug!("metrics: write: {e}");
                    break;
                }
            }
        }
        let _ = scrape.socket.shutdown(Shutdown::Write);
        self.drop_scrape(key);
    }

    fn drop_scrape(&mut self, key: usize) {
        if let Some(port) = &mut self.metrics.port {
            if let Some(mut scrape) = port.scrapes.try_remove(key) {
                let _ = self.poll.registry().deregister(&mut scrape.socket);
            }
        }
    }

    /// Closes the scrape connections that have run out of time.
    pub(super) fn sweep_scrapes(&mut self, now: Instant) {
        let Some(port) = &self.metrics.port else {
            return;
        };
        let late: Vec<usize> = port
            .scrapes
            .iter()
            .filter(|(_, s)| s.until <= now)
            .map(|(k, _)| k)
            .collect();
        for key in late {
            debug!("metrics: scrape timed out");
            self.drop_scrape(key);
        }
    }

    /// The whole HTTP response to a scrape's request.
    fn answer_scrape(&self, request: Request) -> Vec<u8> {
        let mut out = Vec::new();
        let headers = |content_type| [("Content-Type", content_type), ("Connection", "close")];
        match request {
            Request::Metrics { head_only } => {
                let body = self.render();
                if head_only {
                    http::write_response_head(
                        &mut out,
                        Status::Ok,
                        &headers(CONTENT_TYPE),
                        Some(body.len()),
                    );
                } else {
                    http::write_response(
                        &mut out,
                        Status::Ok,
                        &headers(CONTENT_TYPE),
                        body.as_bytes(),
                    );
                }
            }
            Request::Refused(status, body) => {
                let mut h = headers("text/plain; charset=utf-8").to_vec();
                if status == Status::MethodNotAllowed {
                    h.push(("Allow", "GET, HEAD"));
                }
                http::write_response(&mut out, status, &h, body.as_bytes());
            }
        }
        out
    }

    /// The exposition text.
    pub(super) fn render(&self) -> String {
        let c = &self.metrics.counters;
        let w = &*self.metrics.workers;
        let mut t = Text(String::with_capacity(16 * 1024));

        let mut states = [0u64; 6];
        for (_, conn) in &self.conns {
            states[match conn.life.state() {
                State::Request | State::Body { .. } => 0,
                State::Waiting { .. } | State::Authorizing(_) => 1,
                State::WebSocket {
                    endpoint: Endpoint::Echo,
                    ..
                } => 2,
                State::WebSocket {
                    endpoint: Endpoint::Chat { .. },
                    ..
                } => 3,
                State::Closing | State::Lingering => 4,
                State::WebSocket {
                    endpoint: Endpoint::Inspector,
                    ..
                } => 5,
            }] += 1;
        }
        t.family(
            "fastim_connections",
            "gauge",
            "Open client connections by state: http (reading a request), waiting (for a worker), echo, chat, closing, inspector (frame inspector feeds).",
        );
        for (state, n) in ["http", "waiting", "echo", "chat", "closing", "inspector"]
            .iter()
            .zip(states)
        {
            t.sample("fastim_connections", &[("state", state)], n);
        }
        t.counter(
            "fastim_connections_accepted_total",
            "Connections accepted on the main listener.",
            c.accepted,
        );
        t.family(
            "fastim_connections_refused_total",
            "counter",
            "Connections and requests refused, by reason.",
        );
        for why in Refused::ALL {
            t.sample(
                "fastim_connections_refused_total",
                &[("reason", why.label())],
                c.refused[why as usize],
            );
        }
        t.by_endpoint(
            "fastim_ws_handshakes_total",
            "Completed WebSocket opening handshakes, by endpoint.",
            c.handshakes,
        );
        t.by_endpoint(
            "fastim_ws_messages_received_total",
            "WebSocket data messages received, by endpoint.",
            c.messages_received,
        );
        t.by_endpoint(
            "fastim_ws_messages_sent_total",
            "WebSocket data messages queued for sending, by endpoint.",
            c.messages_sent,
        );
        t.by_endpoint(
            "fastim_ws_messages_sent_compressed_total",
            "Of the messages sent, those compressed with permessage-deflate (RFC 7692), by endpoint.",
            c.messages_sent_compressed,
        );
        t.counter(
            "fastim_received_bytes_total",
            "Bytes read from client sockets.",
            c.bytes_received,
        );
        t.counter(
            "fastim_sent_bytes_total",
            "Bytes written to client sockets.",
            c.bytes_sent,
        );
        t.counter(
            "fastim_chat_deliveries_total",
            "Chat messages queued for online recipients.",
            c.chat_deliveries,
        );
        t.counter(
            "fastim_chat_acks_sent_total",
            "Acks of stored chat messages queued for their senders.",
            c.acks_sent,
        );
        t.by_code(
            "fastim_ws_close_codes_sent_total",
            "WebSocket close frames sent, by status code.",
            &c.close_sent,
        );
        t.by_code(
            "fastim_ws_close_codes_received_total",
            "WebSocket close frames received, by status code.",
            &c.close_received,
        );
        t.by_code(
            "fastim_ws_protocol_errors_total",
            "WebSocket protocol errors, by the close code they were answered with.",
            &c.protocol_errors,
        );
        t.counter(
            "fastim_slow_consumers_dropped_total",
            "Connections dropped because they did not read what was sent to them.",
            c.slow_consumers_dropped,
        );
        t.histogram(
            "fastim_loop_turn_duration_seconds",
            "Time the event loop spent on one turn (after the poll returned).",
            &[],
            &c.turns,
        );
        t.histogram(
            "fastim_chat_commit_batch_messages",
            "Chat messages stored per commit.",
            &[],
            &w.commit_batch.snapshot(),
        );
        t.histogram(
            "fastim_chat_commit_duration_seconds",
            "Time of one chat commit.",
            &[],
            &w.commit_seconds.snapshot(),
        );
        t.histogram(
            "fastim_chat_commit_wal_pages",
            "WAL pages (of 4 KiB) one chat commit wrote.",
            &[],
            &w.commit_pages.snapshot(),
        );
        t.gauge(
            "fastim_chat_writer_backlog",
            "Chat messages given to the writer and not yet stored.",
            self.writer_backlog,
        );
        t.family(
            "fastim_worker_queue_depth",
            "gauge",
            "Jobs waiting in a worker pool's queue, by pool.",
        );
        for (i, class) in CLASSES.iter().enumerate() {
            let started = w.started[i].load(Ordering::Relaxed);
            let depth = self.workers.submitted(i).saturating_sub(started);
            t.sample("fastim_worker_queue_depth", &[("class", class)], depth);
        }
        t.family(
            "fastim_worker_job_duration_seconds",
            "histogram",
            "Time from a job's submission to its answer, queue wait included, by pool.",
        );
        for (i, class) in CLASSES.iter().enumerate() {
            t.buckets(
                "fastim_worker_job_duration_seconds",
                &[("class", class)],
                &w.job_seconds[i].snapshot(),
            );
        }
        if let Some(g) = self.metrics.port.as_ref().map(|p| &*p.gauges) {
            if g.read.load(Ordering::Acquire) {
                let get = |a: &AtomicI64| a.load(Ordering::Relaxed);
                t.gauge("fastim_users", "Accounts.", get(&g.users));
                t.gauge("fastim_groups", "Groups.", get(&g.groups));
                t.gauge("fastim_messages", "Stored chat messages.", get(&g.messages));
                t.gauge(
                    "fastim_sessions",
                    "Sessions that have not expired.",
                    get(&g.sessions),
                );
                t.gauge(
                    "fastim_database_size_bytes",
                    "Size of the main database file (without the write-ahead log).",
                    get(&g.database_bytes),
                );
            }
        }
        if let Some(rss) = resident_bytes() {
            t.gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                rss,
            );
        }
        t.gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            self.metrics.started_unix,
        );
        t.0
    }
}

/// What a scrape asked for.
enum Request {
    Metrics { head_only: bool },
    Refused(Status, &'static str),
}

/// Reads into the scrape's head buffer; `Ok(Some)` once the head is complete,
/// `Err` if the peer went away before.
fn read_head(scrape: &mut Scrape) -> Result<Option<Request>, ()> {
    let mut buf = [0u8; 1024];
    loop {
        match scrape.socket.read(&mut buf) {
            Ok(0) => return Err(()),
            Ok(n) => {
                let room = MAX_HEAD + 1 - scrape.head.len().min(MAX_HEAD + 1);
                scrape.head.extend_from_slice(&buf[..n.min(room)]);
                match http::parse_head(&scrape.head, MAX_HEAD) {
                    Ok(None) => {}
                    Ok(Some(head)) => return Ok(Some(route(head.method, head.target))),
                    Err(HeadError::TooLarge) => {
                        return Ok(Some(Request::Refused(
                            Status::HeaderFieldsTooLarge,
                            "request head too large\n",
                        )));
                    }
                    Err(HeadError::Malformed) => {
                        return Ok(Some(Request::Refused(
                            Status::BadRequest,
                            "malformed request\n",
                        )));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                debug!("metrics: read: {e}");
                return Err(());
            }
        }
    }
}

fn route(method: &str, target: &str) -> Request {
    let path = target.split('?').next().unwrap_or(target);
    match (method, path) {
        ("GET", "/metrics") => Request::Metrics { head_only: false },
        ("HEAD", "/metrics") => Request::Metrics { head_only: true },
        (_, "/metrics") => Request::Refused(Status::MethodNotAllowed, "only GET /metrics\n"),
        _ => Request::Refused(
            Status::NotFound,
            "not found: this port serves GET /metrics\n",
        ),
    }
}

/// The process's resident memory: `VmRSS` of `/proc/self/status` (in kB; `statm`
/// counts pages, and the page size needs a libc call).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
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

/// The exposition text being written.
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                // Label values are this file's own words: nothing to escape.
                let _ = write!(self.0, "{k}=\"{v}\"");
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        self.sample(name, &[], value);
    }

    fn gauge(&mut self, name: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }

    fn by_endpoint(&mut self, name: &str, help: &str, values: [u64; N_ENDPOINTS]) {
        self.family(name, "counter", help);
        for (endpoint, n) in ENDPOINTS.iter().zip(values) {
            self.sample(name, &[("endpoint", endpoint)], n);
        }
    }

    /// Codes that were seen only (a series appears with its first count).
    fn by_code(&mut self, name: &str, help: &str, values: &[u64; CODE_SLOTS]) {
        self.family(name, "counter", help);
        for (slot, &n) in values.iter().enumerate() {
            if n > 0 {
                self.sample(name, &[("code", &code_label(slot))], n);
            }
        }
    }

    fn histogram(&mut self, name: &str, help: &str, labels: &[(&str, &str)], h: &Histogram) {
        self.family(name, "histogram", help);
        self.buckets(name, labels, h);
    }

    fn buckets(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, n) in h.counts.iter().enumerate() {
            cumulative += n;
            let le = h.bounds.get(i).map_or("+Inf".to_owned(), |b| b.to_string());
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&bucket, &l, cumulative);
        }
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, cumulative);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_put_a_value_in_the_first_bucket_at_or_above_it() {
        let mut h = Histogram::new(&[1.0, 2.0, 5.0]);
        for v in [0.5, 1.0, 1.5, 5.0, 7.0] {
            h.observe(v);
        }
        assert_eq!(&*h.counts, &[2, 1, 1, 1]);
        assert_eq!(h.sum, 15.0);
        let mut t = Text(String::new());
        t.histogram("x_seconds", "X.", &[], &h);
        assert!(t.0.contains("x_seconds_bucket{le=\"1\"} 2\n"), "{}", t.0);
        assert!(t.0.contains("x_seconds_bucket{le=\"5\"} 4\n"), "{}", t.0);
        assert!(t.0.contains("x_seconds_bucket{le=\"+Inf\"} 5\n"), "{}", t.0);
        assert!(t.0.contains("x_seconds_count 5\n"), "{}", t.0);
    }

    #[test]
    fn atomic_histograms_sum_in_units() {
        let h = AtomicHistogram::new(COMMIT_BUCKETS, 1e9);
        h.observe_duration(Duration::from_millis(3));
        h.observe_duration(Duration::from_secs(2));
        let s = h.snapshot();
        assert_eq!(s.counts.iter().sum::<u64>(), 2);
        assert_eq!(*s.counts.last().expect("overflow bucket"), 1);
        assert!((s.sum - 2.003).abs() < 1e-9);
    }

    #[test]
    fn close_codes_map_to_a_bounded_set_of_labels() {
        assert_eq!(code_label(code_slot(Some(CloseCode::NORMAL))), "1000");
        assert_eq!(code_label(code_slot(Some(CloseCode(4321)))), "other");
        assert_eq!(code_label(code_slot(None)), "none");
    }

    #[test]
    fn scrapes_route_by_method_and_path() {
        assert!(matches!(
            route("GET", "/metrics?x=1"),
            Request::Metrics { head_only: false }
        ));
        assert!(matches!(
            route("POST", "/metrics"),
            Request::Refused(Status::MethodNotAllowed, _)
        ));
        assert!(matches!(
            route("GET", "/"),
            Request::Refused(Status::NotFound, _)
        ));
    }
}
