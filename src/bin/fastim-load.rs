//! `fastim-load`: a load generator for WebSocket echo servers.
//!
//! A single-threaded `mio` client built on fastim's own frame codec. Four modes:
//!
//! - `echo`: C connections each keep W messages of S bytes outstanding for a
//!   fixed time; reports messages/s, MB/s, latency percentiles, its own CPU and,
//!   with `--server-pid`, the server's CPU per message. Every echo is checked
//!   against what was sent (byte for byte up to 4 KiB, sampled above); with
//!   `--no-verify` (payloads of 64 KiB or more) only its type and length are,
//!   and its payload is discarded in the kernel unread.
//! - `idle`: opens N connections and reports how much the server's resident
//!   memory grew per connection.
//! - `chat`: fastim's own `/chat` end to end: registers users over the HTTP API,
//!   puts them in one group (`--mode group`: one sender, everyone else receives)
//!   or in pairs of friends (`--mode single`), keeps W messages unacknowledged per
//!   sender, and reports acknowledged messages/s, deliveries/s, send-to-delivery
//!   and send-to-ack latency, and the server's CPU per message; every delivery is
//!   checked (each message exactly once per receiver, in increasing id order).
//! - `live-seed` and `live`: presence and typing when N users of one group connect
//!   within a few seconds (users and sessions are written into the database before
//!   the server starts): presence frames and entries received, presence and typing
//!   latency, the server's CPU.
//! - `handshakes`: TLS connections per second (handshake, one request, close),
//!   full or resumed, and the server's CPU per connection (blocking threads,
//!   not the mio loop: each makes one connection at a time).
//!
//! `echo` and `idle` take `wss://` URLs too: TLS with rustls, whose certificate
//! check accepts any certificate (test-only: see `fastim-load/tls.rs`).
//!
//! Frames are built and masked once per run and written straight from that
//! buffer; echoes are parsed in one large receive buffer: nothing is allocated
//! per message. The last line of output is `RESULT {json}` for scripts.
//!
//! ```text
//! fastim-load echo --url ws://127.0.0.1:8080/echo --connections 1000 --size 64 \
//!     --in-flight 8 --duration 5 --server-pid 1234
//! fastim-load idle --url ws://127.0.0.1:8080/echo --connections 10000 --server-pid 1234
//! fastim-load chat --url http://127.0.0.1:8080 --mode group --clients 1000 --duration 10
//! fastim-load handshakes --url wss://127.0.0.1:8443/ --parallel 4 --duration 5 [--resume] --server-pid 1234
//! fastim-load chat --url http://127.0.0.1:8080 --mode single --pairs 10 --in-flight 8 --duration 10
//! fastim-load live-seed --data-dir /tmp/live --users 1000   # then start fastim on /tmp/live
//! fastim-load live --url ws://127.0.0.1:8080/chat --tokens /tmp/live/live-tokens.txt --server-pid 1234
//! ```

// A crate root looks for modules next to itself: point into the tool's own folder.
#[path = "fastim-load/chat.rs"]
mod chat;
#[path = "fastim-load/echo.rs"]
mod echo;
#[path = "fastim-load/handshakes.rs"]
mod handshakes;
#[path = "fastim-load/hist.rs"]
mod hist;
#[path = "fastim-load/idle.rs"]
mod idle;
#[path = "fastim-load/live.rs"]
mod live;
#[path = "fastim-load/net.rs"]
mod net;
#[path = "fastim-load/procfs.rs"]
mod procfs;
#[path = "fastim-load/setup.rs"]
mod setup;
#[path = "fastim-load/tls.rs"]
mod tls;

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use net::Target;

/// Load generator for WebSocket echo servers (fastim and its peers) and fastim's chat.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Hard limit on the whole run in seconds; by default the run's own length plus 60.
    #[arg(long, global = true)]
    timeout: Option<f64>,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Keep messages in flight on every connection and measure the echoes.
    Echo {
        /// Server URL, e.g. ws://127.0.0.1:8080/echo, or wss://127.0.0.1:8443/echo (TLS;
        /// any certificate is accepted: for measuring, never for trusting a server).
        #[arg(long)]
        url: String,
        /// Connections to open.
        #[arg(long, default_value_t = 1)]
        connections: usize,
        /// Payload bytes per message; accepts K, KiB, M, MiB suffixes.
        #[arg(long, default_value = "64", value_parser = parse_size)]
        size: usize,
        /// Messages outstanding on each connection.
        #[arg(long, default_value_t = 1)]
        in_flight: usize,
        /// Seconds measured (after the warm-up).
        #[arg(long)]
        duration: f64,
        /// Seconds of traffic before the measurement starts.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Send binary messages instead of text.
        #[arg(long)]
        binary: bool,
        /// Do not compare echoed payloads (only for --size of 64 KiB or more): check
        /// each echo's type and length, and discard its payload in the kernel
        /// (Linux: `recv` with MSG_TRUNC) instead of copying it, so that the tool
        /// keeps up with a server that echoes bulk data faster than it can copy.
        #[arg(long)]
        no_verify: bool,
        /// The server's process id, to report its CPU time.
        #[arg(long)]
        server_pid: Option<u32>,
        /// Handshakes in progress at once while connecting.
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// Offer permessage-deflate in every handshake. Messages shorter than the
        /// server's --deflate-min-bytes still come back plain, which is what this
        /// measures (the cost of the extension where it does not compress); a
        /// compressed echo is not inflated here and stops the run as an error.
        #[arg(long)]
        offer_deflate: bool,
    },
    /// Open idle connections and report the server's memory per connection.
    Idle {
        /// Server URL, e.g. ws://127.0.0.1:8080/echo, or wss://127.0.0.1:8443/echo (TLS;
        /// any certificate is accepted: for measuring, never for trusting a server).
        #[arg(long)]
        url: String,
        /// Connections to open.
        #[arg(long)]
        connections: usize,
        /// The server's process id, whose VmRSS is read.
        #[arg(long)]
        server_pid: u32,
        /// Seconds to keep the connections open after measuring.
        #[arg(long, default_value_t = 0.0)]
        hold: f64,
        /// Seconds to wait after the last handshake before reading RSS.
        #[arg(long, default_value_t = 1.0)]
        settle: f64,
        /// Handshakes in progress at once while connecting.
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// Offer permessage-deflate in every handshake (the server keeps no
        /// per-connection zlib state, so the cost should not change).
        #[arg(long)]
        offer_deflate: bool,
    },
    /// TLS connections per second (handshake, one GET /healthz, close), and the
    /// server's CPU per connection.
    Handshakes {
        /// The server, e.g. wss://127.0.0.1:8443/ (only the address is used); ws://
        /// makes the same connections without TLS.
        #[arg(long)]
        url: String,
        /// Threads, each making one connection at a time.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// Seconds measured.
        #[arg(long)]
        duration: f64,
        /// Resume sessions (tickets) instead of making a full handshake each time.
        #[arg(long)]
        resume: bool,
        /// The server's process id, to report its CPU time per connection.
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// fastim's /chat end to end: a group with one sender, or pairs of friends.
    Chat {
        /// The server, e.g. http://127.0.0.1:8080 (the API and /chat are served there).
        #[arg(long)]
        url: String,
        /// `group`: one group of every client, one sender; `single`: pairs of friends.
        #[arg(long, value_enum)]
        mode: ChatModeArg,
        /// Group mode: users in the group (1 sender, the rest receive).
        #[arg(long, default_value_t = 10)]
        clients: usize,
        /// Single mode: pairs of friends (one sender, one receiver each).
        #[arg(long, default_value_t = 10)]
        pairs: usize,
        /// Messages sent and not yet acknowledged, per sender.
        #[arg(long, default_value_t = 8)]
        in_flight: usize,
        /// Characters of `content` per message.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Seconds measured (after the warm-up).
        #[arg(long)]
        duration: f64,
        /// Seconds of traffic before the measurement starts.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// The server's process id, to report its CPU time.
        #[arg(long)]
        server_pid: Option<u32>,
        /// HTTP connections used in parallel for the setup (registration is slow: Argon2).
        #[arg(long, default_value_t = 8)]
        parallel: usize,
        /// Mobile number of the first user; user i gets this plus i. An existing
        /// user (a server that saw an earlier run) is logged in instead (group
        /// mode: user 0 creates a group each run and may own at most 5).
        #[arg(long, default_value_t = 1_700_000_000)]
        mobile_base: u64,
        /// Handshakes in progress at once while connecting.
        #[arg(long, default_value_t = 256)]
        batch: usize,
    },
    /// Write N users with sessions, all in one group, into a new database.
    LiveSeed {
        /// The data directory the server will be started on.
        #[arg(long)]
        data_dir: std::path::PathBuf,
        /// Users to create.
        #[arg(long, default_value_t = 1000)]
        users: usize,
    },
    /// Presence and typing: connect every seeded user, then type in the group.
    Live(LiveOpts),
}

#[derive(clap::Args, Debug)]
struct LiveOpts {
    /// The chat endpoint, e.g. ws://127.0.0.1:8080/chat.
    #[arg(long)]
    url: String,
    /// The file `live-seed` wrote (`live-tokens.txt` in its data directory).
    #[arg(long)]
    tokens: std::path::PathBuf,
    /// Seconds over which every user connects, evenly spread.
    #[arg(long, default_value_t = 3.0)]
    connect_over: f64,
    /// Users that send a group typing notice every 1.1 s.
    #[arg(long, default_value_t = 10)]
    typers: usize,
    /// Seconds of typing.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// The server's process id, to report its CPU time.
    #[arg(long)]
    server_pid: Option<u32>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ChatModeArg {
    Group,
    Single,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("fastim-load: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<bool, String> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => {
            let wanted = match &args.mode {
                Mode::Echo { connections, .. } | Mode::Idle { connections, .. } => *connections,
                Mode::Chat {
                    mode: ChatModeArg::Group,
                    clients,
                    ..
                } => *clients,
                Mode::Chat { pairs, .. } => pairs.saturating_mul(2),
                Mode::LiveSeed { .. } => 0,
                // The tokens file has a line per user.
                Mode::Live(LiveOpts { tokens, .. }) => {
                    std::fs::read_to_string(tokens).map_or(0, |t| t.lines().count())
                }
                Mode::Handshakes { parallel, .. } => *parallel,
            };
            if (n as usize) < wanted + 16 {
                return Err(format!(
                    "the open-file limit is {n}, too low for {wanted} connections"
                ));
            }
        }
        Err(e) => eprintln!("cannot raise the open-file limit: {e}"),
    }
    let started = Instant::now();
    let deadline = |run_secs: f64| {
        started + seconds(args.timeout.unwrap_or(run_secs + 60.0)).unwrap_or(Duration::ZERO)
    };
    match args.mode {
        Mode::Echo {
            url,
            connections,
            size,
            in_flight,
            duration,
            warmup,
            binary,
            no_verify,
            server_pid,
            batch,
            offer_deflate,
        } => {
            let duration =
                seconds(duration).ok_or("--duration must be a positive number of seconds")?;
            let warmup = Duration::try_from_secs_f64(warmup)
                .map_err(|_| "--warmup must be a number of seconds")?;
            if connections == 0 || in_flight == 0 {
                return Err("--connections and --in-flight must be at least 1".into());
            }
            echo::run(echo::EchoArgs {
                target: Target::parse(&url)?,
                connections,
                size,
                in_flight,
                duration,
                warmup,
                binary,
                verify: !no_verify,
                server_pid,
                batch,
                deadline: deadline((duration + warmup).as_secs_f64()),
                offer_deflate,
            })
        }
        Mode::Idle {
            url,
            connections,
            server_pid,
            hold,
            settle,
            batch,
            offer_deflate,
        } => {
            let hold = Duration::try_from_secs_f64(hold)
                .map_err(|_| "--hold must be a number of seconds")?;
            let settle = Duration::try_from_secs_f64(settle)
                .map_err(|_| "--settle must be a number of seconds")?;
            idle::run(idle::IdleArgs {
                target: Target::parse(&url)?,
                connections,
                server_pid,
                hold,
                settle,
                batch,
                deadline: deadline((hold + settle).as_secs_f64()),
                offer_deflate,
            })
        }
        Mode::Handshakes {
            url,
            parallel,
            duration,
            resume,
            server_pid,
        } => {
            let duration =
                seconds(duration).ok_or("--duration must be a positive number of seconds")?;
            let url = url.replacen("https://", "wss://", 1);
            handshakes::run(handshakes::HandshakeArgs {
                target: Target::parse(&url)?,
                parallel,
                duration,
                resume,
                server_pid,
            })
        }
        Mode::Chat {
            url,
            mode,
            clients,
            pairs,
            in_flight,
            size,
            duration,
            warmup,
            server_pid,
            parallel,
            mobile_base,
            batch,
        } => {
            let duration =
                seconds(duration).ok_or("--duration must be a positive number of seconds")?;
            let warmup = Duration::try_from_secs_f64(warmup)
                .map_err(|_| "--warmup must be a number of seconds")?;
            let (mode, clients) = match mode {
                ChatModeArg::Group if clients >= 2 => (chat::ChatMode::Group, clients),
                ChatModeArg::Group => return Err("--clients must be at least 2".into()),
                ChatModeArg::Single if pairs >= 1 => (chat::ChatMode::Single, pairs * 2),
                ChatModeArg::Single => return Err("--pairs must be at least 1".into()),
            };
            if in_flight == 0 {
                return Err("--in-flight must be at least 1".into());
            }
            let ws = match url.strip_prefix("http://") {
                Some(rest) => format!("ws://{}", rest.split('/').next().unwrap_or(rest)),
                None => return Err(format!("{url}: only http:// URLs are supported")),
            };
            let mut target = Target::parse(&ws)?;
            target.path = "/chat".into();
            // Registration hashes a password (tens of ms each on the server): allow for it.
            let setup_allowance = 30.0 + 0.2 * clients as f64;
            chat::run(chat::ChatArgs {
                target,
                mode,
                clients,
                in_flight,
                size,
                duration,
                warmup,
                server_pid,
                parallel,
                batch,
                mobile_base,
                deadline: deadline(setup_allowance + (duration + warmup).as_secs_f64()),
            })
        }
        Mode::LiveSeed { data_dir, users } => live::seed(&live::SeedArgs { data_dir, users }),
        Mode::Live(o) => {
            let connect_over = seconds(o.connect_over)
                .ok_or("--connect-over must be a positive number of seconds")?;
            let duration =
                seconds(o.duration).ok_or("--duration must be a positive number of seconds")?;
            live::run(&live::LiveArgs {
                target: Target::parse(&o.url)?,
                tokens: o.tokens,
                connect_over,
                typers: o.typers,
                duration,
                server_pid: o.server_pid,
                deadline: deadline(connect_over.as_secs_f64() + duration.as_secs_f64() + 5.0),
            })
        }
    }
}

fn seconds(s: f64) -> Option<Duration> {
    (s.is_finite() && s > 0.0).then(|| Duration::from_secs_f64(s))
}

/// `64`, `4K`, `4KiB`, `1M`, `1MiB` (K and M are binary, as message sizes usually are).
fn parse_size(s: &str) -> Result<usize, String> {
    let lower = s.trim().to_ascii_lowercase();
    let (digits, unit) = match lower.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => lower.split_at(i),
        None => (lower.as_str(), ""),
    };
    let n: usize = digits.parse().map_err(|_| format!("bad size {s:?}"))?;
    let unit = match unit.trim() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1024,
        "m" | "mib" | "mb" => 1024 * 1024,
        _ => return Err(format!("bad size unit in {s:?}")),
    };
    n.checked_mul(unit)
        .ok_or_else(|| format!("size {s:?} too large"))
}

/// CPU counters at one instant of the run.
pub(crate) struct Snapshot {
    pub(crate) at: Instant,
    pub(crate) own_cpu: f64,
    pub(crate) server_cpu: Option<f64>,
    /// Busy CPU seconds of the whole machine, to tell how much else was running.
    pub(crate) machine_cpu: f64,
}

impl Snapshot {
    pub(crate) fn take(server_pid: Option<&str>) -> Result<Snapshot, String> {
        let server_cpu = match server_pid {
            Some(pid) => {
                Some(procfs::cpu_seconds(pid).map_err(|e| format!("server process {pid}: {e}"))?)
            }
            None => None,
        };
        Ok(Snapshot {
            machine_cpu: procfs::machine_busy_seconds().map_err(|e| format!("/proc/stat: {e}"))?,
            at: Instant::now(),
            own_cpu: procfs::cpu_seconds("self").map_err(|e| format!("/proc/self: {e}"))?,
            server_cpu,
        })
    }
}

/// A flat JSON object, built by hand (no serde for one line of output).
pub(crate) struct Json(String);

impl Json {
    pub(crate) fn new() -> Json {
        Json(String::from("{"))
    }

    fn key(mut self, key: &str) -> Json {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        let _ = write!(self.0, "\"{key}\":");
        self
    }

    pub(crate) fn str(self, key: &str, value: &str) -> Json {
        let mut j = self.key(key);
        j.0.push('"');
        for c in value.chars() {
            match c {
                '"' => j.0.push_str("\\\""),
                '\\' => j.0.push_str("\\\\"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(j.0, "\\u{:04x}", c as u32);
                }
                c => j.0.push(c),
            }
        }
        j.0.push('"');
        j
    }

    pub(crate) fn int(self, key: &str, value: u64) -> Json {
        let mut j = self.key(key);
        let _ = write!(j.0, "{value}");
        j
    }

    pub(crate) fn num(self, key: &str, value: f64) -> Json {
        let mut j = self.key(key);
        if value.is_finite() {
            let _ = write!(j.0, "{value:.3}");
        } else {
            j.0.push_str("null");
        }
        j
    }

    pub(crate) fn opt(self, key: &str, value: Option<f64>) -> Json {
        match value {
            Some(v) => self.num(key, v),
            None => {
                let mut j = self.key(key);
                j.0.push_str("null");
                j
            }
        }
    }

    pub(crate) fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}
