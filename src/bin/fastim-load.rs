//! `fastim-load`: a load generator for WebSocket echo servers.
//!
//! A single-threaded `mio` client built on fastim's own frame codec. Two modes:
//!
//! - `echo`: C connections each keep W messages of S bytes outstanding for a
//!   fixed time; reports messages/s, MB/s, latency percentiles, its own CPU and,
//!   with `--server-pid`, the server's CPU per message. Every echo is checked
//!   against what was sent (byte for byte up to 4 KiB, sampled above).
//! - `idle`: opens N connections and reports how much the server's resident
//!   memory grew per connection.
//!
//! Frames are built and masked once per run and written straight from that
//! buffer; echoes are parsed in one large receive buffer: nothing is allocated
//! per message. The last line of output is `RESULT {json}` for scripts.
//!
//! ```text
//! fastim-load echo --url ws://127.0.0.1:8080/echo --connections 1000 --size 64 \
//!     --in-flight 8 --duration 5 --server-pid 1234
//! fastim-load idle --url ws://127.0.0.1:8080/echo --connections 10000 --server-pid 1234
//! ```

// A crate root looks for modules next to itself: point into the tool's own folder.
#[path = "fastim-load/echo.rs"]
mod echo;
#[path = "fastim-load/hist.rs"]
mod hist;
#[path = "fastim-load/idle.rs"]
mod idle;
#[path = "fastim-load/net.rs"]
mod net;
#[path = "fastim-load/procfs.rs"]
mod procfs;

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use net::Target;

/// Load generator for WebSocket echo servers (fastim and its peers).
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
        /// Server URL, e.g. ws://127.0.0.1:8080/echo.
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
        /// The server's process id, to report its CPU time.
        #[arg(long)]
        server_pid: Option<u32>,
        /// Handshakes in progress at once while connecting.
        #[arg(long, default_value_t = 256)]
        batch: usize,
    },
    /// Open idle connections and report the server's memory per connection.
    Idle {
        /// Server URL, e.g. ws://127.0.0.1:8080/echo.
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
    },
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
            server_pid,
            batch,
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
                server_pid,
                batch,
                deadline: deadline((duration + warmup).as_secs_f64()),
            })
        }
        Mode::Idle {
            url,
            connections,
            server_pid,
            hold,
            settle,
            batch,
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
