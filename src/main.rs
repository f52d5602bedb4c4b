//! The `fastim` binary: the server, or with a subcommand the administration tools
//! ([`fastim::admin`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use log::{error, info, warn};

use fastim::admin::Command;
use fastim::config::{self, Config};
use fastim::server::Server;
use fastim::throttle::ThrottleConfig;

/// fastim: a small instant-messaging server with a hand-written WebSocket engine.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Without a subcommand, the server runs.
    #[command(subcommand)]
    command: Option<Command>,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory for persistent data; created if missing (by the server; the other
    /// subcommands need it to exist).
    #[arg(long, default_value = "data", global = true)]
    data_dir: PathBuf,
    /// Do not serve the /echo WebSocket endpoint.
    #[arg(long)]
    no_echo: bool,
    /// Decline permessage-deflate (RFC 7692) offers: every message goes uncompressed.
    #[arg(long)]
    no_deflate: bool,
    /// With permessage-deflate, messages shorter than this many bytes are sent
    /// uncompressed.
    #[arg(long, default_value_t = config::DEFLATE_MIN_BYTES)]
    deflate_min_bytes: usize,
    /// Seconds a client may take to complete the opening handshake.
    #[arg(long, default_value_t = config::HANDSHAKE_TIMEOUT.as_secs_f64())]
    handshake_timeout: f64,
    /// Seconds a client may take to end the connection after our close frame.
    #[arg(long, default_value_t = config::CLOSE_TIMEOUT.as_secs_f64())]
    close_timeout: f64,
    /// Most simultaneous connections.
    #[arg(long, default_value_t = config::MAX_CONNECTIONS)]
    max_connections: usize,
    /// Seconds of silence after which a chat connection is pinged; after 2.5 times
    /// as long it is dropped.
    #[arg(long, default_value_t = config::PING_INTERVAL.as_secs_f64())]
    ping_interval: f64,
    /// An origin (e.g. `https://chat.example.com`) besides the server's own whose
    /// pages may open /chat; repeat for more.
    #[arg(long = "allow-origin")]
    allowed_origins: Vec<String>,
    /// Serve the web client from this directory (for editing it) instead of the
    /// copy built into the binary.
    #[arg(long)]
    static_dir: Option<PathBuf>,
    /// Directory for uploaded images; created if missing.
    #[arg(long, default_value = "resource")]
    resource_dir: PathBuf,
    /// Largest upload, in MiB.
    #[arg(long, default_value_t = config::MAX_UPLOAD / (1024 * 1024))]
    max_upload_mib: usize,
    /// Most HTTP and /echo connections from one client address (0: no cap);
    /// authenticated /chat sockets do not count.
    #[arg(long, default_value_t = config::MAX_UNAUTHENTICATED_PER_ADDRESS)]
    max_unauthenticated_per_address: usize,
    /// Chat messages one connection may have unacknowledged; at the cap the server
    /// stops reading from it until an ack goes out.
    #[arg(long, default_value_t = config::MAX_IN_FLIGHT)]
    max_in_flight: usize,
    /// Seconds an /echo socket may stay silent before it is closed with 1001.
    #[arg(long, default_value_t = config::ECHO_IDLE_TIMEOUT.as_secs_f64())]
    echo_idle_timeout: f64,
    /// Seconds a started frame or fragmented message may go without new bytes
    /// before the connection is closed with 1008.
    #[arg(long, default_value_t = config::FRAME_TIMEOUT.as_secs_f64())]
    frame_timeout: f64,
    /// Jobs that may wait for the API workers; beyond it requests get 503.
    #[arg(long, default_value_t = config::API_QUEUE)]
    api_queue: usize,
    /// Logins and registrations that may wait for password hashing; beyond it 503.
    #[arg(long, default_value_t = config::HASH_QUEUE)]
    hash_queue: usize,
    /// Logins per minute from one client address (0: no limit).
    #[arg(long, default_value_t = ThrottleConfig::default().login_per_address_per_minute)]
    login_per_minute: u32,
    /// Registrations per hour from one client address (0: no limit).
    #[arg(long, default_value_t = ThrottleConfig::default().register_per_address_per_hour)]
    register_per_hour: u32,
    /// Password checks per minute against an account that has failed logins
    /// (0: no limit); delays grow after three failures in a row.
    #[arg(long, default_value_t = ThrottleConfig::default().account_checks_per_minute)]
    account_checks_per_minute: u32,
    /// Log every WebSocket upgrade's request and response heads and every frame
    /// both ways (header fields, masking key, length form, the first payload
    /// bytes), one line per frame. Costly: for studying, not for production.
    #[arg(long)]
    trace_frames: bool,
    /// Serve the frame inspector at /inspector/: a page that shows each frame of
    /// its own /echo connection, fed by /inspector/feed.
    #[arg(long)]
    inspector: bool,
}

/// File descriptors kept for everything but client sockets: the listener, the poll,
/// the waker and signals, logs, and each worker's database, WAL and shared-memory files.
const RESERVED_FDS: u64 = 48;

/// Below this many client sockets the server refuses to start rather than run
/// and serve nobody.
const MIN_CLIENT_FDS: u64 = 16;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    if let Some(command) = args.command {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        let mut out = std::io::stdout().lock();
        return match fastim::admin::run(command, &args.data_dir, &mut input, &mut out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(msg) => {
                eprintln!("fastim: {msg}");
                ExitCode::FAILURE
            }
        };
    }
    let (
        Some(handshake_timeout),
        Some(close_timeout),
        Some(ping_interval),
        Some(echo_idle_timeout),
        Some(frame_timeout),
    ) = (
        seconds(args.handshake_timeout),
        seconds(args.close_timeout),
        seconds(args.ping_interval),
        seconds(args.echo_idle_timeout),
        seconds(args.frame_timeout),
    )
    else {
        error!("timeouts must be positive numbers of seconds");
        return ExitCode::FAILURE;
    };
    if let Err(e) = std::fs::create_dir_all(&args.data_dir) {
        error!(
            "cannot create data directory {}: {e}",
            args.data_dir.display()
        );
        return ExitCode::FAILURE;
    }
    // Each connection is a file descriptor; keep a few for the listener, logs and data files.
    let max_connections = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < RESERVED_FDS + MIN_CLIENT_FDS => {
            error!(
                "the open-file limit is {limit}: too low to serve anyone; raise it \
                 (ulimit -n) to at least {}",
                RESERVED_FDS + MIN_CLIENT_FDS
            );
            return ExitCode::FAILURE;
        }
        Ok(limit) => {
            let fits = usize::try_from(limit - RESERVED_FDS).unwrap_or(usize::MAX);
            if fits < args.max_connections {
                info!("open-file limit {limit}: serving at most {fits} connections");
            }
            args.max_connections.min(fits)
        }
        Err(e) => {
            warn!("cannot raise the open-file limit: {e}");
            args.max_connections
        }
    };
    let config = Config {
        listen: args.listen,
        data_dir: args.data_dir,
        echo: !args.no_echo,
        deflate: !args.no_deflate,
        deflate_min_bytes: args.deflate_min_bytes,
        handshake_timeout,
        close_timeout,
        max_connections,
        ping_interval,
        allowed_origins: args.allowed_origins,
        static_dir: args.static_dir,
        resource_dir: args.resource_dir,
        max_upload: args.max_upload_mib.saturating_mul(1024 * 1024),
        max_unauthenticated_per_address: args.max_unauthenticated_per_address,
        max_in_flight: args.max_in_flight.clamp(1, usize::from(u16::MAX)),
        echo_idle_timeout,
        frame_timeout,
        api_queue: args.api_queue,
        hash_queue: args.hash_queue,
        throttle: ThrottleConfig {
            login_per_address_per_minute: args.login_per_minute,
            register_per_address_per_hour: args.register_per_hour,
            account_checks_per_minute: args.account_checks_per_minute,
            ..ThrottleConfig::default()
        },
        trace_frames: args.trace_frames,
        inspector: args.inspector,
    };
    let server = match Server::bind(config.clone()) {
        Ok(s) => s,
        Err(e) => {
            // The error names what failed: the database, the resource directory or the listener.
            error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = server.local_addr();
    info!("fastim listening on {addr}");
    info!("database: {}", config.data_dir.join("fastim.db").display());
    if config.echo {
        info!("echo endpoint: ws://{addr}/echo");
    }
    if config.inspector {
        info!("frame inspector: http://{addr}/inspector/");
    }
    if config.trace_frames {
        info!("--trace-frames: logging every handshake and frame");
    }
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn seconds(s: f64) -> Option<Duration> {
    (s.is_finite() && s > 0.0).then(|| Duration::from_secs_f64(s))
}
