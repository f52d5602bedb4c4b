//! The `fastim` binary: the server, or with a subcommand the administration tools
//! ([`fastim::admin`]).

use std::process::ExitCode;

use log::{error, info, warn};

use fastim::cli::{self, Settings};
use fastim::server::Server;

/// File descriptors kept for everything but client sockets: the listener, the poll,
/// the waker and signals, logs, and each worker's database, WAL and shared-memory files.
const RESERVED_FDS: u64 = 48;

/// Below this many client sockets the server refuses to start rather than run
/// and serve nobody.
const MIN_CLIENT_FDS: u64 = 16;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = match cli::parse() {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("fastim: {msg}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        return match Settings::from_args(&args).to_toml() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(msg) => {
                eprintln!("fastim: {msg}");
                ExitCode::FAILURE
            }
        };
    }
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
    let mut config = match args.server_config() {
        Ok(config) => config,
        Err(msg) => {
            error!("{msg}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(file) = &args.config {
        info!("settings from {}", file.display());
    }
    if let Err(e) = std::fs::create_dir_all(&config.data_dir) {
        error!(
            "cannot create data directory {}: {e}",
            config.data_dir.display()
        );
        return ExitCode::FAILURE;
    }
    // Each connection is a file descriptor; keep a few for the listener, logs and data files.
    let asked = config.max_connections;
    config.max_connections = match rlimit::increase_nofile_limit(u64::MAX) {
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
            if fits < asked {
                info!("open-file limit {limit}: serving at most {fits} connections");
            }
            asked.min(fits)
        }
        Err(e) => {
            warn!("cannot raise the open-file limit: {e}");
            asked
        }
    };
    if !config.trusted_proxies.is_empty() {
        let proxies: Vec<String> = config
            .trusted_proxies
            .iter()
            .map(|p| p.to_string())
            .collect();
        info!("trusted proxies: {}", proxies.join(", "));
    }
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
    if let Some(metrics) = server.metrics_addr() {
        info!("metrics on http://{metrics}/metrics");
    }
    info!("database: {}", config.data_dir.join("fastim.db").display());
    let (http, ws) = if config.tls.is_some() {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    info!("web client: {http}://{addr}/");
    if config.echo {
        info!("echo endpoint: {ws}://{addr}/echo");
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
