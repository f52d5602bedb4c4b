//! The `fastim` server binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use log::{error, info, warn};

use fastim::config::{self, Config};
use fastim::server::Server;

/// fastim: a small instant-messaging server with a hand-written WebSocket engine.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory for persistent data; created if missing.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Do not serve the /echo WebSocket endpoint.
    #[arg(long)]
    no_echo: bool,
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
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let (Some(handshake_timeout), Some(close_timeout), Some(ping_interval)) = (
        seconds(args.handshake_timeout),
        seconds(args.close_timeout),
        seconds(args.ping_interval),
    ) else {
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
        Ok(limit) => {
            let fits = usize::try_from(limit)
                .unwrap_or(usize::MAX)
                .saturating_sub(64);
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
        handshake_timeout,
        close_timeout,
        max_connections,
        ping_interval,
        allowed_origins: args.allowed_origins,
        static_dir: args.static_dir,
        resource_dir: args.resource_dir,
        max_upload: args.max_upload_mib.saturating_mul(1024 * 1024),
    };
    let server = match Server::bind(config.clone()) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot listen on {}: {e}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = server.local_addr();
    info!("fastim listening on {addr}");
    info!("database: {}", config.data_dir.join("fastim.db").display());
    if config.echo {
        info!("echo endpoint: ws://{addr}/echo");
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
