//! Every limit and timeout of the server, in one place, with its default.

use std::net::SocketAddr;
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

/// Bytes that may wait in one connection's outbound queue before the reader is
/// considered stuck and disconnected: two of the largest messages, plus slack.
pub fn max_outbound(limits: Limits) -> usize {
    2 * limits.max_message as usize + 1024 * 1024
}

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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            echo: true,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            close_timeout: CLOSE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            ping_interval: PING_INTERVAL,
            allowed_origins: Vec::new(),
            static_dir: None,
            resource_dir: PathBuf::from("resource"),
            max_upload: MAX_UPLOAD,
        }
    }
}
