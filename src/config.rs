//! Every limit and timeout of the server, in one place, with its default.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::ws::Limits;

/// Longest HTTP request head (request line and headers); longer ones get 431.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Largest body of an API request; larger ones get 413 before they are read.
pub const MAX_API_BODY: usize = 64 * 1024;

/// Largest uploaded file (`--max-upload-mib`); larger ones get 413.
pub const MAX_UPLOAD: usize = 10 * 1024 * 1024;

/// Room for the multipart framing around an upload's file.
pub const UPLOAD_FRAMING: usize = 64 * 1024;

/// The loop-wide receive buffer that every connection reads into.
pub const READ_BUFFER: usize = 256 * 1024;

/// Output a connection's input may make before it is written, while the rest of
/// the input waits: replies leave as they are made, 16 KiB at a time, not all at
/// the end of a long read.
pub const CORK_BYTES: usize = 16 * 1024;

/// Reads from one connection per readiness event before the loop serves others.
pub const MAX_READS_PER_TURN: usize = 16;

/// Message limits of the echo endpoint: a 16 MiB message is accepted, one byte more is not.
pub const ECHO_LIMITS: Limits = Limits {
    max_frame: 16 * 1024 * 1024,
    max_message: 16 * 1024 * 1024,
};

/// Message limits of the chat endpoint: JSON messages are small.
pub const CHAT_LIMITS: Limits = Limits {
    max_frame: 64 * 1024,
    max_message: 64 * 1024,
};

/// Messages shorter than this go out uncompressed even when permessage-deflate
/// was negotiated (`--deflate-min-bytes`): compressing a short message costs more
/// CPU than the bytes it saves.
pub const DEFLATE_MIN_BYTES: usize = 1024;

/// A chat connection quiet for this long is pinged; one quiet for
/// [`IDLE_PINGS`] times as long is dropped.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);

/// Ping intervals of silence after which a chat connection is dropped (75 s by default).
pub const IDLE_PINGS: f64 = 2.5;

/// How long a client may take to send its upgrade request.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the peer may take to end the TCP connection once our close frame is queued.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a graceful shutdown waits for clients to finish the closing handshake.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Pending connections the kernel may queue before `accept` (the standard library
/// asks for 128, which a burst of clients overruns: dropped SYNs cost them a 1 s retry).
pub const LISTEN_BACKLOG: i32 = 4096;

/// Default cap on simultaneous connections.
pub const MAX_CONNECTIONS: usize = 100_000;

/// Default cap on connections from one client address that are not authenticated
/// chat sockets (HTTP requests and `/echo`); 0 means no cap.
pub const MAX_UNAUTHENTICATED_PER_ADDRESS: usize = 256;

/// Chat messages a connection may have sent that are not acknowledged yet; at the
/// cap its socket is not read until an ack goes out.
pub const MAX_IN_FLIGHT: usize = 256;

/// Chat messages waiting for the writer across all connections; beyond it a
/// message is refused at once with a 503 error (the client sends it again).
pub const MAX_WRITER_BACKLOG: usize = 16 * 1024;

/// Read marks given to the chat writer and not yet stored, across all connections;
/// beyond it new marks wait in the chat index, one per user and conversation (the
/// largest id), until the writer catches up.
pub const MAX_READS_IN_FLIGHT: usize = 4 * 1024;

/// How long an `/echo` socket may stay silent before it is closed with 1001.
pub const ECHO_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a started frame or fragmented message may go without new bytes.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(20);

/// The slowest an upload body may arrive on average: a body of `n` bytes must be
/// complete within the handshake timeout plus `n / MIN_BODY_RATE` seconds.
pub const MIN_BODY_RATE: u64 = 4 * 1024;

/// Uploads whose bodies may be read at once; the next one gets 503.
pub const MAX_CONCURRENT_UPLOADS: usize = 32;

/// Response bytes that may wait for a client before its next pipelined request is
/// read: beyond it the connection is not read until the client takes its replies.
pub const HTTP_OUTPUT_BUDGET: usize = 64 * 1024;

/// Jobs that may wait for the API workers (API calls, files, token checks, sync).
pub const API_QUEUE: usize = 256;

/// Jobs that may wait for the password-hashing worker (login, register).
pub const HASH_QUEUE: usize = 32;

/// How long after sending it a sender may recall a message (`--recall-window-secs`).
pub const RECALL_WINDOW_SECS: u32 = 120;

/// How long after sending it a sender may edit a text message (`--edit-window-secs`).
pub const EDIT_WINDOW_SECS: u32 = 900;

/// How often messages older than `--history-days` are removed.
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

/// Seconds a client is told to wait in `Retry-After` when the server is busy.
pub const BUSY_RETRY_AFTER_SECS: u64 = 1;

/// Presence announcements are at least this far apart: a change after a quiet window
/// goes out at once, later ones are collected until the window ends and sent
/// together. A connection gets at most one presence frame per window, however many
/// of its contacts come and go (a whole group connecting at once costs each member a
/// frame per window, not one per member). Also the most a change waits.
pub const PRESENCE_WINDOW: Duration = Duration::from_millis(50);

/// Bytes that may wait in one connection's outbound queue before the reader is
/// considered stuck and disconnected: two of the largest messages, plus slack.
/// Only messages from others (fan-out) can reach it: a connection's own replies
/// stop being read at [`pause_reading_above`].
pub fn max_outbound(limits: Limits) -> usize {
    // Reading stops above `pause_reading_above`, checked before each frame: one more
    // reply (the largest message and its frame header) may follow it.
    2 * limits.max_message as usize + 1024 * 1024 + REPLY_SLACK
}

/// Room in [`max_outbound`] for the header of the reply that may follow the pause
/// threshold, and a pong or an error frame besides.
const REPLY_SLACK: usize = 1024;

/// Above this many queued bytes the server stops reading from the connection until
/// the queue has drained to half of it; a connection that stays paused without any
/// write progress for the close timeout is dropped. One message plus slack, so that
/// what one turn of reading can add still fits under [`max_outbound`].
pub fn pause_reading_above(limits: Limits) -> usize {
    limits.max_message as usize + 1024 * 1024
}

/// How one server instance runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where persistent data lives; created if missing.
    pub data_dir: PathBuf,
    /// Serve the `/echo` endpoint.
    pub echo: bool,
    /// Accept permessage-deflate offers (RFC 7692); `--no-deflate` declines them.
    pub deflate: bool,
    /// See [`DEFLATE_MIN_BYTES`].
    pub deflate_min_bytes: usize,
    /// See [`HANDSHAKE_TIMEOUT`].
    pub handshake_timeout: Duration,
    /// See [`CLOSE_TIMEOUT`].
    pub close_timeout: Duration,
    /// See [`MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// See [`PING_INTERVAL`].
    pub ping_interval: Duration,
    /// Origins besides the server's own whose pages may open `/chat`.
    pub allowed_origins: Vec<String>,
    /// Serve the web client from this directory instead of the embedded copy.
    pub static_dir: Option<PathBuf>,
    /// Where uploaded images are stored; created if missing.
    pub resource_dir: PathBuf,
    /// See [`MAX_UPLOAD`].
    pub max_upload: usize,
    /// See [`MAX_UNAUTHENTICATED_PER_ADDRESS`].
    pub max_unauthenticated_per_address: usize,
    /// See [`MAX_IN_FLIGHT`].
    pub max_in_flight: usize,
    /// See [`ECHO_IDLE_TIMEOUT`].
    pub echo_idle_timeout: Duration,
    /// See [`FRAME_TIMEOUT`].
    pub frame_timeout: Duration,
    /// See [`API_QUEUE`].
    pub api_queue: usize,
    /// See [`HASH_QUEUE`].
    pub hash_queue: usize,
    /// Login and registration limits.
    pub throttle: crate::throttle::ThrottleConfig,
    /// Keep messages this many days (`--history-days`); `None` keeps everything.
    pub history_days: Option<u32>,
    /// See [`RETENTION_INTERVAL`].
    pub retention_interval: Duration,
    /// See [`RECALL_WINDOW_SECS`].
    pub recall_window_secs: u32,
    /// See [`EDIT_WINDOW_SECS`].
    pub edit_window_secs: u32,
    /// Reverse proxies (`--trust-proxy`) whose `X-Forwarded-For` and
    /// `X-Forwarded-Proto` are believed, and whose own connections are not capped
    /// per address (every client behind them shares their address).
    pub trusted_proxies: Vec<IpAddr>,
    /// `--trace-frames`: log every upgrade's handshake heads and every frame.
    pub trace_frames: bool,
    /// `--instant-friends`: `/contact/addfriend` befriends at once, as in fastIM.
    pub instant_friends: bool,
    /// `--inspector`: serve the frame inspector page and its feed.
    pub inspector: bool,
    /// Where `GET /metrics` is served (`--metrics-listen`); `None`: nowhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Serve every endpoint over TLS (`--tls-cert`/`--tls-key` or
    /// `--tls-self-signed`); `None` speaks plain HTTP.
    pub tls: Option<Tls>,
}

/// Where the TLS certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tls {
    /// A certificate chain and its private key, PEM files.
    Files {
        /// The certificate chain, the server's certificate first.
        cert: PathBuf,
        /// The private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
    /// A certificate made for trying, kept in the data directory.
    SelfSigned,
}

impl Config {
    /// The recall and edit windows, for the chat writer.
    pub fn change_windows(&self) -> crate::store::Windows {
        crate::store::Windows {
            recall_ms: i64::from(self.recall_window_secs) * 1000,
            edit_ms: i64::from(self.edit_window_secs) * 1000,
        }
    }

    /// Whether `ip` is one of [`Config::trusted_proxies`] (IPv4-mapped IPv6
    /// addresses count as the IPv4 address they carry).
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|t| t.to_canonical() == ip)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            echo: true,
            deflate: true,
            deflate_min_bytes: DEFLATE_MIN_BYTES,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            close_timeout: CLOSE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            ping_interval: PING_INTERVAL,
            allowed_origins: Vec::new(),
            static_dir: None,
            resource_dir: PathBuf::from("resource"),
            max_upload: MAX_UPLOAD,
            max_unauthenticated_per_address: MAX_UNAUTHENTICATED_PER_ADDRESS,
            max_in_flight: MAX_IN_FLIGHT,
            echo_idle_timeout: ECHO_IDLE_TIMEOUT,
            frame_timeout: FRAME_TIMEOUT,
            api_queue: API_QUEUE,
            hash_queue: HASH_QUEUE,
            throttle: crate::throttle::ThrottleConfig::default(),
            history_days: None,
            retention_interval: RETENTION_INTERVAL,
            recall_window_secs: RECALL_WINDOW_SECS,
            edit_window_secs: EDIT_WINDOW_SECS,
            trusted_proxies: Vec::new(),
            trace_frames: false,
            instant_friends: false,
            inspector: false,
            metrics_listen: None,
            tls: None,
        }
    }
}
