//! The command line of the `fastim` binary, and the same settings from the
//! environment and from a TOML file.
//!
//! Every server flag has three other sources besides its built-in default, and the
//! first that has a value wins:
//!
//! ```text
//!   --max-connections 500            the flag
//!   FASTIM_MAX_CONNECTIONS=500       the environment: FASTIM_ + the flag's name, upper case, `_` for `-`
//!   max-connections = 500            the file of --config FILE (or FASTIM_CONFIG): keys are the flags' names
//!   100000                           the default
//! ```
//!
//! clap does the first two and the last: the file's values are put in as the
//! defaults of a second parse ([`parse_from`]), so one set of value parsers checks
//! all four sources, and `--help` shows the defaults that apply. The file itself is
//! read into [`Settings`], a typed struct that refuses unknown keys and values of
//! the wrong type, naming the key and the file. [`Settings::from_args`] turns the
//! result back into a file (`--print-config`).
//!
//! Boolean flags take an optional value in all sources: `--no-echo`,
//! `--no-echo=false`, `FASTIM_NO_ECHO=1`, `no-echo = true`. Lists (`--allow-origin`,
//! `--trust-proxy`) repeat on the command line or take commas there and in the
//! environment; in the file they are arrays. Relative paths are relative to the
//! working directory, wherever they come from.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};
use serde::{Deserialize, Serialize};

use crate::admin::Command;
use crate::config::{self, Config};
use crate::throttle::ThrottleConfig;

/// Prefix of the environment variable of each flag.
pub const ENV_PREFIX: &str = "FASTIM_";

/// Flags of the root command that are not settings: no environment variable, no key
/// in a file (`--config` has its variable, set by hand below).
/// (`retention-interval` is a hidden flag for tests: no key, no variable.)
const NOT_SETTINGS: [&str; 5] = [
    "help",
    "version",
    "print-config",
    "config",
    "retention-interval",
];

/// fastim: a small instant-messaging server with a hand-written WebSocket engine.
///
/// Every flag can also be set in the environment (FASTIM_LISTEN, FASTIM_NO_ECHO, …)
/// or in the TOML file of --config (listen = "127.0.0.1:8080", no-echo = true, …);
/// a flag beats the environment, which beats the file.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Args {
    /// Without a subcommand, the server runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Read settings from this TOML file (keys are the flags' names, e.g.
    /// `max-connections = 1000`); flags and FASTIM_* variables override it.
    #[arg(long, value_name = "FILE", env = "FASTIM_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Print the resulting configuration as TOML (which --config reads back) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory for persistent data; created if missing (by the server; the other
    /// subcommands need it to exist).
    #[arg(long, default_value = "data", global = true)]
    pub data_dir: PathBuf,
    /// Do not serve the /echo WebSocket endpoint.
    #[arg(
        long,
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
    )]
    pub no_echo: bool,
    /// Decline permessage-deflate (RFC 7692) offers: every message goes uncompressed.
    #[arg(
        long,
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
    )]
    pub no_deflate: bool,
    /// With permessage-deflate, messages shorter than this many bytes are sent
    /// uncompressed.
    #[arg(long, default_value_t = config::DEFLATE_MIN_BYTES)]
    pub deflate_min_bytes: usize,
    /// Seconds a client may take to complete the opening handshake.
    #[arg(long, default_value_t = config::HANDSHAKE_TIMEOUT.as_secs_f64())]
    pub handshake_timeout: f64,
    /// Seconds a client may take to end the connection after our close frame.
    #[arg(long, default_value_t = config::CLOSE_TIMEOUT.as_secs_f64())]
    pub close_timeout: f64,
    /// Most simultaneous connections.
    #[arg(long, default_value_t = config::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Seconds of silence after which a chat connection is pinged; after 2.5 times
    /// as long it is dropped.
    #[arg(long, default_value_t = config::PING_INTERVAL.as_secs_f64())]
    pub ping_interval: f64,
    /// An origin (e.g. `https://chat.example.com`) besides the server's own whose
    /// pages may open /chat; repeat for more, or separate them with commas.
    #[arg(long, value_name = "ORIGIN", value_delimiter = ',')]
    pub allow_origin: Vec<String>,
    /// A reverse proxy's IP address: its X-Forwarded-For names the client (for the
    /// login and registration limits), its X-Forwarded-Proto: https makes cookies
    /// Secure, and its connections are not capped per address. Repeat for more, or
    /// separate them with commas. From anyone else both headers are ignored.
    #[arg(long, value_name = "ADDR", value_delimiter = ',')]
    pub trust_proxy: Vec<IpAddr>,
    /// Serve the web client from this directory (for editing it) instead of the
    /// copy built into the binary.
    #[arg(long)]
    pub static_dir: Option<PathBuf>,
    /// Directory for uploaded images; created if missing.
    #[arg(long, default_value = "resource")]
    pub resource_dir: PathBuf,
    /// Largest upload, in MiB.
    #[arg(long, default_value_t = config::MAX_UPLOAD / (1024 * 1024))]
    pub max_upload_mib: usize,
    /// Most HTTP and /echo connections from one client address (0: no cap);
    /// authenticated /chat sockets and trusted proxies do not count.
    #[arg(long, default_value_t = config::MAX_UNAUTHENTICATED_PER_ADDRESS)]
    pub max_unauthenticated_per_address: usize,
    /// Chat messages one connection may have unacknowledged; at the cap the server
    /// stops reading from it until an ack goes out.
    #[arg(long, default_value_t = config::MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// Seconds an /echo socket may stay silent before it is closed with 1001.
    #[arg(long, default_value_t = config::ECHO_IDLE_TIMEOUT.as_secs_f64())]
    pub echo_idle_timeout: f64,
    /// Seconds a started frame or fragmented message may go without new bytes
    /// before the connection is closed with 1008.
    #[arg(long, default_value_t = config::FRAME_TIMEOUT.as_secs_f64())]
    pub frame_timeout: f64,
    /// Jobs that may wait for the API workers; beyond it requests get 503.
    #[arg(long, default_value_t = config::API_QUEUE)]
    pub api_queue: usize,
    /// Logins and registrations that may wait for password hashing; beyond it 503.
    #[arg(long, default_value_t = config::HASH_QUEUE)]
    pub hash_queue: usize,
    /// Logins per minute from one client address (0: no limit).
    #[arg(long, default_value_t = ThrottleConfig::default().login_per_address_per_minute)]
    pub login_per_minute: u32,
    /// Registrations per hour from one client address, and uploads without a session
    /// (0: no limit).
    #[arg(long, default_value_t = ThrottleConfig::default().register_per_address_per_hour)]
    pub register_per_hour: u32,
    /// Password checks per minute against an account that has failed logins
    /// (0: no limit); delays grow after three failures in a row.
    #[arg(long, default_value_t = ThrottleConfig::default().account_checks_per_minute)]
    pub account_checks_per_minute: u32,
    /// Seconds after sending it in which a sender may recall a message (0: never).
    #[arg(long, default_value_t = config::RECALL_WINDOW_SECS)]
    pub recall_window_secs: u32,
    /// Seconds after sending it in which a sender may edit a text message (0: never).
    #[arg(long, default_value_t = config::EDIT_WINDOW_SECS)]
    pub edit_window_secs: u32,
    /// Keep chat messages this many days: older ones are removed while the server
    /// runs, and sync and history say where history starts (default: keep everything).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub history_days: Option<u32>,
    /// Serve Prometheus metrics at http://ADDR/metrics on a listener of their own
    /// (e.g. 127.0.0.1:9100; port 0 picks one). Off unless given.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Serve HTTPS and wss:// with this certificate chain (PEM, the server's
    /// certificate first); needs --tls-key.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, RSA or EC; RSA, ECDSA or Ed25519).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Serve HTTPS with a self-signed certificate for localhost, 127.0.0.1 and the
    /// listen address, made once and kept in the data directory (for trying).
    #[arg(
        long,
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
    )]
    pub tls_self_signed: bool,
    /// Seconds between two removals of old messages (for tests; not in files).
    #[arg(long, hide = true, default_value_t = config::RETENTION_INTERVAL.as_secs_f64())]
    pub retention_interval: f64,
    /// Log every WebSocket upgrade's request and response heads and every frame
    /// both ways (header fields, masking key, length form, the first payload
    /// bytes), one line per frame. Costly: for studying, not for production.
    #[arg(
        long,
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
    )]
    pub trace_frames: bool,
    /// Serve the frame inspector at /inspector/: a page that shows each frame of
    /// its own /echo connection, fed by /inspector/feed.
    #[arg(
        long,
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
    )]
    pub inspector: bool,
    /// fastIM's friendship without consent: /contact/addfriend makes the two friends
    /// at once (for fastIM's original client); by default it sends a friend request.
    #[arg(
        long,
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
    )]
    pub instant_friends: bool,
}

/// The settings as a `--config` file holds them: one optional key per flag, named as
/// the flag. Unknown keys and values of the wrong type are errors.
#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[allow(missing_docs)] // Each field is the flag of the same name in [`Args`].
pub struct Settings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_echo: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_deflate: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deflate_min_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshake_timeout: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_timeout: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping_interval: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_origin: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust_proxy: Option<Vec<IpAddr>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub static_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_upload_mib: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_unauthenticated_per_address: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub echo_idle_timeout: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame_timeout: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_queue: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_queue: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_per_minute: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register_per_hour: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_checks_per_minute: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recall_window_secs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edit_window_secs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_frames: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instant_friends: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inspector: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_self_signed: Option<bool>,
}

impl Settings {
    /// Reads and checks a `--config` file.
    ///
    /// # Errors
    /// A sentence naming the file: it cannot be read, is not TOML, has a key that is
    /// no flag, or a value of the wrong type (with the key, line and column).
    pub fn load(path: &Path) -> Result<Settings, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        Settings::parse(&text).map_err(|e| format!("config file {}: {e}", path.display()))
    }

    /// Parses the text of a `--config` file.
    ///
    /// # Errors
    /// toml's description of the first problem, which names the key.
    pub fn parse(text: &str) -> Result<Settings, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// Every setting of `args`, as a file would hold it (`static-dir`, `history-days`,
    /// `metrics-listen`, `tls-cert` and `tls-key` only if set).
    pub fn from_args(args: &Args) -> Settings {
        Settings {
            listen: Some(args.listen),
            data_dir: Some(args.data_dir.clone()),
            no_echo: Some(args.no_echo),
            no_deflate: Some(args.no_deflate),
            deflate_min_bytes: Some(args.deflate_min_bytes),
            handshake_timeout: Some(args.handshake_timeout),
            close_timeout: Some(args.close_timeout),
            max_connections: Some(args.max_connections),
            ping_interval: Some(args.ping_interval),
            allow_origin: Some(args.allow_origin.clone()),
            trust_proxy: Some(args.trust_proxy.clone()),
            static_dir: args.static_dir.clone(),
            resource_dir: Some(args.resource_dir.clone()),
            max_upload_mib: Some(args.max_upload_mib),
            max_unauthenticated_per_address: Some(args.max_unauthenticated_per_address),
            max_in_flight: Some(args.max_in_flight),
            echo_idle_timeout: Some(args.echo_idle_timeout),
            frame_timeout: Some(args.frame_timeout),
            api_queue: Some(args.api_queue),
            hash_queue: Some(args.hash_queue),
            login_per_minute: Some(args.login_per_minute),
            register_per_hour: Some(args.register_per_hour),
            account_checks_per_minute: Some(args.account_checks_per_minute),
            recall_window_secs: Some(args.recall_window_secs),
            edit_window_secs: Some(args.edit_window_secs),
            history_days: args.history_days,
            trace_frames: Some(args.trace_frames),
            instant_friends: Some(args.instant_friends),
            inspector: Some(args.inspector),
            metrics_listen: args.metrics_listen,
            tls_cert: args.tls_cert.clone(),
            tls_key: args.tls_key.clone(),
            tls_self_signed: Some(args.tls_self_signed),
        }
    }

    /// The file's text (`--print-config`).
    ///
    /// # Errors
    /// A path that is not UTF-8, which TOML cannot hold.
    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string(self).map_err(|e| format!("cannot print the configuration: {e}"))
    }

    /// Each set key with its values as the command line would spell them.
    fn as_defaults(&self) -> Result<Vec<(String, Vec<String>)>, String> {
        let table = toml::Table::try_from(self)
            .map_err(|e| format!("cannot use the configuration: {e}"))?;
        Ok(table
            .into_iter()
            .map(|(key, value)| {
                let values = match value {
                    toml::Value::Array(items) => items.iter().map(spell).collect(),
                    scalar => vec![spell(&scalar)],
                };
                (key, values)
            })
            .collect())
    }
}

/// A scalar TOML value as a flag's value.
fn spell(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The command with an environment variable for every setting.
fn command() -> clap::Command {
    Args::command().mut_args(|arg| match arg.get_long() {
        Some(long) if !NOT_SETTINGS.contains(&long) => {
            let name = format!("{ENV_PREFIX}{}", long.replace('-', "_").to_uppercase());
            arg.env(name)
        }
        _ => arg,
    })
}

/// Parses the process's command line with its environment and `--config` file.
///
/// # Errors
/// The `--config` file's problem; clap's own errors (and `--help`) exit the process
/// as clap does.
pub fn parse() -> Result<Args, String> {
    parse_from(std::env::args_os())
}

/// [`parse`] for the given command line (the program name first).
///
/// # Errors
/// As [`parse`].
pub fn parse_from(
    argv: impl IntoIterator<Item = impl Into<OsString> + Clone>,
) -> Result<Args, String> {
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    // The first parse finds --config (on the command line, before or after a
    // subcommand, or in FASTIM_CONFIG) and checks everything else.
    let first = command()
        .try_get_matches_from(&argv)
        .unwrap_or_else(|e| e.exit());
    let Some(file) = first.get_one::<PathBuf>("config").cloned() else {
        return args_of(&first);
    };
    let settings = Settings::load(&file)?;
    // The second: the file's values are the defaults, under flags and environment.
    let mut cmd = command();
    for (key, values) in settings.as_defaults()? {
        let id = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()))
            .map(|a| a.get_id().clone())
            .ok_or_else(|| format!("config file {}: no flag for {key}", file.display()))?;
        cmd = cmd.mut_arg(id, |arg| arg.default_values(values));
    }
    let matches = cmd.try_get_matches_from(&argv).unwrap_or_else(|e| e.exit());
    args_of(&matches)
}

fn args_of(matches: &clap::ArgMatches) -> Result<Args, String> {
    let args = Args::from_arg_matches(matches).map_err(|e| e.to_string())?;
    if args.print_config && args.command.is_some() {
        return Err(
            "--print-config prints the server's configuration: not with a subcommand".into(),
        );
    }
    Ok(args)
}

impl Args {
    /// The server's configuration. `max_connections` is as asked; the caller lowers
    /// it to what the open-file limit allows.
    ///
    /// # Errors
    /// A setting out of range, as a sentence.
    pub fn server_config(&self) -> Result<Config, String> {
        let (
            Some(handshake_timeout),
            Some(close_timeout),
            Some(ping_interval),
            Some(echo_idle_timeout),
            Some(frame_timeout),
        ) = (
            seconds(self.handshake_timeout),
            seconds(self.close_timeout),
            seconds(self.ping_interval),
            seconds(self.echo_idle_timeout),
            seconds(self.frame_timeout),
        )
        else {
            return Err("timeouts must be positive numbers of seconds".into());
        };
        let Some(retention_interval) = seconds(self.retention_interval) else {
            return Err("--retention-interval must be a positive number of seconds".into());
        };
        let tls = match (&self.tls_cert, &self.tls_key, self.tls_self_signed) {
            (None, None, false) => None,
            (None, None, true) => Some(config::Tls::SelfSigned),
            (Some(cert), Some(key), false) => Some(config::Tls::Files {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (Some(_), Some(_), true) => {
                return Err("--tls-self-signed or --tls-cert/--tls-key: not both".into());
            }
            _ => return Err("--tls-cert and --tls-key go together".into()),
        };
        Ok(Config {
            tls,
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            echo: !self.no_echo,
            deflate: !self.no_deflate,
            deflate_min_bytes: self.deflate_min_bytes,
            handshake_timeout,
            close_timeout,
            max_connections: self.max_connections,
            ping_interval,
            allowed_origins: self.allow_origin.clone(),
            static_dir: self.static_dir.clone(),
            resource_dir: self.resource_dir.clone(),
            max_upload: self.max_upload_mib.saturating_mul(1024 * 1024),
            max_unauthenticated_per_address: self.max_unauthenticated_per_address,
            max_in_flight: self.max_in_flight.clamp(1, usize::from(u16::MAX)),
            echo_idle_timeout,
            frame_timeout,
            api_queue: self.api_queue,
            hash_queue: self.hash_queue,
            throttle: ThrottleConfig {
                login_per_address_per_minute: self.login_per_minute,
                register_per_address_per_hour: self.register_per_hour,
                account_checks_per_minute: self.account_checks_per_minute,
                ..ThrottleConfig::default()
            },
            trusted_proxies: self.trust_proxy.iter().map(IpAddr::to_canonical).collect(),
            history_days: self.history_days,
            retention_interval,
            recall_window_secs: self.recall_window_secs,
            edit_window_secs: self.edit_window_secs,
            trace_frames: self.trace_frames,
            instant_friends: self.instant_friends,
            inspector: self.inspector,
            metrics_listen: self.metrics_listen,
        })
    }
}

fn seconds(s: f64) -> Option<Duration> {
    (s.is_finite() && s > 0.0).then(|| Duration::from_secs_f64(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        parse_from(std::iter::once("fastim").chain(args.iter().copied())).expect("parses")
    }

    /// Every setting flag has its environment variable and its key in a file, and
    /// every key is a flag: the two lists cannot drift apart.
    #[test]
    fn every_flag_is_a_key_and_a_variable() {
        let all = Settings::from_args(&parse(&[
            "--static-dir",
            "web",
            "--history-days",
            "30",
            "--metrics-listen",
            "127.0.0.1:9100",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ]));
        let keys: Vec<String> = toml::Table::try_from(&all)
            .expect("a table")
            .keys()
            .cloned()
            .collect();
        let cmd = command();
        let mut flags: Vec<String> = Vec::new();
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if NOT_SETTINGS.contains(&long) {
                continue;
            }
            let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or("");
            assert_eq!(
                env,
                format!("FASTIM_{}", long.replace('-', "_").to_uppercase())
            );
            flags.push(long.to_owned());
        }
        let mut keys_sorted = keys.clone();
        keys_sorted.sort();
        flags.sort();
        assert_eq!(keys_sorted, flags);
        assert_eq!(
            cmd.get_arguments()
                .find(|a| a.get_long() == Some("config"))
                .and_then(|a| a.get_env()),
            Some(std::ffi::OsStr::new("FASTIM_CONFIG"))
        );
    }

    #[test]
    fn files_name_the_key_that_is_wrong() {
        let err =
            Settings::parse("listen = \"127.0.0.1:1\"\nmax-conections = 5\n").expect_err("unknown");
        assert!(err.contains("max-conections"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        let err = Settings::parse("max-connections = \"lots\"\n").expect_err("a string");
        assert!(err.contains("max-connections"), "{err}");
        let err = Settings::parse("no-echo = \"yes\"\n").expect_err("a string");
        assert!(err.contains("no-echo"), "{err}");
        let err =
            Settings::parse("trust-proxy = [\"proxy.example\"]\n").expect_err("not an address");
        assert!(err.contains("trust-proxy"), "{err}");
        let err = Settings::parse("login-per-minute = -1\n").expect_err("negative");
        assert!(err.contains("login-per-minute"), "{err}");
        // The `_` spelling is not a key: one spelling, the flags'.
        assert!(Settings::parse("max_connections = 5\n").is_err());
        // Seconds may be written as integers.
        assert_eq!(
            Settings::parse("ping-interval = 5\n")
                .expect("an integer")
                .ping_interval,
            Some(5.0)
        );
    }

    #[test]
    fn printed_settings_read_back_the_same() {
        let args = parse(&[
            "--listen",
            "0.0.0.0:9000",
            "--no-deflate",
            "--allow-origin",
            "https://a.example,https://b.example",
            "--trust-proxy",
            "10.0.0.1",
            "--trust-proxy",
            "::1",
            "--ping-interval",
            "12.5",
        ]);
        let settings = Settings::from_args(&args);
        let text = settings.to_toml().expect("prints");
        assert_eq!(Settings::parse(&text).expect("reads back"), settings);
        assert!(text.contains("no-deflate = true\n"), "{text}");
        assert!(text.contains("ping-interval = 12.5\n"), "{text}");
        let config = args.server_config().expect("valid");
        assert!(!config.deflate && config.echo);
        assert_eq!(config.allowed_origins.len(), 2);
        assert_eq!(config.trusted_proxies.len(), 2);
        assert_eq!(config.ping_interval, Duration::from_millis(12_500));
    }

    #[test]
    fn booleans_take_an_optional_value() {
        assert!(parse(&["--no-echo"]).no_echo);
        assert!(parse(&["--no-echo=yes"]).no_echo);
        assert!(!parse(&["--no-echo=false"]).no_echo);
        assert!(!parse(&[]).no_echo);
        assert!(
            command()
                .try_get_matches_from(["fastim", "--no-echo=maybe"])
                .is_err()
        );
    }

    #[test]
    fn instant_friends_is_off_unless_asked_for() {
        let config = |args: &[&str]| parse(args).server_config().expect("valid");
        assert!(!config(&[]).instant_friends);
        assert!(config(&["--instant-friends"]).instant_friends);
        assert!(!config(&["--instant-friends=false"]).instant_friends);
        let file = Settings::parse("instant-friends = true\n").expect("a key of the file");
        assert_eq!(file.instant_friends, Some(true));
    }

    #[test]
    fn tls_takes_a_certificate_and_its_key_or_makes_one() {
        assert_eq!(parse(&[]).server_config().expect("valid").tls, None);
        assert_eq!(
            parse(&["--tls-self-signed"])
                .server_config()
                .expect("valid")
                .tls,
            Some(config::Tls::SelfSigned)
        );
        assert_eq!(
            parse(&["--tls-cert", "c.pem", "--tls-key", "k.pem"])
                .server_config()
                .expect("valid")
                .tls,
            Some(config::Tls::Files {
                cert: "c.pem".into(),
                key: "k.pem".into()
            })
        );
        let both = parse(&["--tls-cert", "c", "--tls-key", "k", "--tls-self-signed"]);
        assert!(both.server_config().is_err());
        assert!(parse(&["--tls-cert", "c.pem"]).server_config().is_err());
        assert!(parse(&["--tls-key", "k.pem"]).server_config().is_err());
        let settings =
            Settings::parse("tls-cert = \"c.pem\"\ntls-key = \"k.pem\"\n").expect("keys");
        assert_eq!(settings.tls_key, Some("k.pem".into()));
    }

    #[test]
    fn timeouts_must_be_positive() {
        assert!(parse(&["--frame-timeout", "0"]).server_config().is_err());
        assert!(parse(&["--close-timeout", "inf"]).server_config().is_err());
        assert!(parse(&["--close-timeout", "0.5"]).server_config().is_ok());
    }
}
