//! Settings from flags, `FASTIM_*` variables and a `--config` TOML file: which one
//! wins (flag > environment > file > default), what a bad file says, and that
//! `--print-config` prints a file that reads back as the same configuration. Each
//! run is the real binary with an environment of its own; servers listen on
//! 127.0.0.x port 0 and are killed when dropped.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{RawClient, Server, fresh_data_dir, upgrade_request};

/// The binary with `args` and exactly the `FASTIM_*` variables in `env` (any the test
/// runner has are removed), run from `cwd`.
fn fastim(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fastim"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("FASTIM_") {
            cmd.env_remove(name);
        }
    }
    cmd.args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .current_dir(cwd)
        .stdin(Stdio::null());
    cmd
}

/// Runs to the end (killed after 30 s): exit status, stdout, stderr.
fn run(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> (ExitStatus, String, String) {
    let mut child = fastim(args, env, cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fastim");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("fastim {args:?} still running after 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status,
        out.join().expect("stdout reader"),
        err.join().expect("stderr reader"),
    )
}

/// A directory of its own for one test: data, files, the working directory.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        let dir = fresh_data_dir();
        std::fs::create_dir_all(&dir).expect("test dir");
        Dir(dir)
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write file");
        path.to_str().expect("utf-8 path").to_owned()
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().expect("utf-8 path").to_owned()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `--print-config` as a TOML table.
fn printed(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> toml::Table {
    let mut all = args.to_vec();
    all.push("--print-config");
    let (status, out, err) = run(&all, env, cwd);
    assert!(status.success(), "{all:?} {env:?}: {status}\n{err}");
    out.parse().unwrap_or_else(|e| panic!("{e}\n{out}"))
}

/// Starts the server (from `cwd`, with its data under it unless the settings say
/// otherwise) and waits for the address it listens on.
fn serve(args: &[&str], env: &[(&str, &str)], dir: &Dir) -> Server {
    let child: Child = fastim(args, env, &dir.0)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fastim");
    // The test's Dir removes the data.
    Server::try_attach(child, dir.0.join("unused"))
        .unwrap_or_else(|e| panic!("fastim {args:?} {env:?}: {e}"))
}

/// Whether `/echo` upgrades (it does not with `no-echo`).
fn echo_served(server: &Server) -> bool {
    let (_client, head) = RawClient::request(server.addr, &upgrade_request("/echo"));
    head.starts_with("HTTP/1.1 101")
}

const FILE: &str = r#"
listen = "127.0.0.3:0"
max-connections = 1000
api-queue = 100
hash-queue = 10
no-echo = true
allow-origin = ["https://file.example"]
"#;

#[test]
fn a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default() {
    let dir = Dir::new();
    let file = dir.file("fastim.toml", FILE);
    let env = [
        ("FASTIM_CONFIG", file.as_str()),
        ("FASTIM_API_QUEUE", "200"),
        ("FASTIM_HASH_QUEUE", "20"),
        ("FASTIM_NO_ECHO", "false"),
    ];
    let t = printed(&["--hash-queue", "30", "--no-echo"], &env, &dir.0);
    assert_eq!(t["listen"].as_str(), Some("127.0.0.3:0"), "file");
    assert_eq!(t["max-connections"].as_integer(), Some(1000), "file");
    assert_eq!(
        t["api-queue"].as_integer(),
        Some(200),
        "environment over file"
    );
    assert_eq!(
        t["hash-queue"].as_integer(),
        Some(30),
        "flag over environment"
    );
    assert_eq!(t["no-echo"].as_bool(), Some(true), "flag over environment");
    assert_eq!(t["ping-interval"].as_float(), Some(30.0), "default");
    assert_eq!(t["data-dir"].as_str(), Some("data"), "default");
    assert_eq!(
        t["allow-origin"].as_array().map(Vec::len),
        Some(1),
        "file list"
    );
    // The environment's false beats the file's true; a flag's =false beats both.
    let t = printed(&[], &env, &dir.0);
    assert_eq!(t["no-echo"].as_bool(), Some(false));
    let t = printed(&["--no-echo=false"], &[("FASTIM_NO_ECHO", "1")], &dir.0);
    assert_eq!(t["no-echo"].as_bool(), Some(false));
    // Lists from the environment, comma-separated.
    let t = printed(
        &[],
        &[
            ("FASTIM_TRUST_PROXY", "10.0.0.1,::1"),
            ("FASTIM_NO_DEFLATE", "yes"),
        ],
        &dir.0,
    );
    let proxies: Vec<&str> = t["trust-proxy"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(proxies, ["10.0.0.1", "::1"]);
    assert_eq!(t["no-deflate"].as_bool(), Some(true));
    // Nothing set: the built-in defaults.
    let t = printed(&[], &[], &dir.0);
    assert_eq!(t["listen"].as_str(), Some("127.0.0.1:8080"));
    assert_eq!(t["max-connections"].as_integer(), Some(100_000));
    assert_eq!(t["no-echo"].as_bool(), Some(false));
}

/// The address actually listened on, and /echo served or not, follow the same order.
#[test]
fn the_server_runs_with_what_wins() {
    let dir = Dir::new();
    let file = dir.file("fastim.toml", FILE);
    let from_file = serve(&["--config", &file], &[], &dir);
    assert_eq!(from_file.addr.ip().to_string(), "127.0.0.3");
    assert!(!echo_served(&from_file), "no-echo from the file");
    drop(from_file);

    let env = [
        ("FASTIM_LISTEN", "127.0.0.4:0"),
        ("FASTIM_NO_ECHO", "false"),
        ("FASTIM_CONFIG", file.as_str()),
    ];
    let from_env = serve(&[], &env, &dir);
    assert_eq!(from_env.addr.ip().to_string(), "127.0.0.4");
    assert!(echo_served(&from_env), "the environment's no-echo=false");
    drop(from_env);

    let from_flag = serve(&["--listen", "127.0.0.5:0", "--no-echo"], &env, &dir);
    assert_eq!(from_flag.addr.ip().to_string(), "127.0.0.5");
    assert!(!echo_served(&from_flag), "the flag's --no-echo");
}

#[test]
fn printed_configuration_reads_back_the_same() {
    let dir = Dir::new();
    let file = dir.file("fastim.toml", FILE);
    let args = [
        "--config",
        &file,
        "--static-dir",
        "web",
        "--trust-proxy",
        "127.0.0.1",
        "--ping-interval",
        "12.5",
        "--no-deflate",
    ];
    let env = [("FASTIM_LOGIN_PER_MINUTE", "7")];
    let (status, first, err) = run(&[&args[..], &["--print-config"]].concat(), &env, &dir.0);
    assert!(status.success(), "{err}");
    let again = dir.file("printed.toml", &first);
    let (status, second, err) = run(&["--config", &again, "--print-config"], &[], &dir.0);
    assert!(status.success(), "{err}");
    assert_eq!(first, second);
    // Every key is there (static-dir because it was set; not tls-cert and tls-key).
    let table: toml::Table = first.parse().expect("TOML");
    assert_eq!(table.len(), 29, "{first}");
    assert_eq!(table["tls-self-signed"].as_bool(), Some(false));
    assert_eq!(table["login-per-minute"].as_integer(), Some(7));
    assert_eq!(table["static-dir"].as_str(), Some("web"));
}

/// What is wrong with a file is named, with the file; nothing starts.
#[test]
fn a_bad_file_is_named_with_what_is_wrong() {
    let dir = Dir::new();
    let cases = [
        (
            "listen = \"127.0.0.1:0\"\nmax-conections = 5\n",
            &["unknown field `max-conections`", "line 2"][..],
        ),
        (
            "max-connections = \"lots\"\n",
            &["max-connections", "invalid type: string \"lots\""][..],
        ),
        (
            "no-echo = \"yes\"\n",
            &["no-echo", "expected a boolean"][..],
        ),
        (
            "listen = \"nowhere\"\n",
            &["listen", "invalid socket address"][..],
        ),
        (
            "trust-proxy = \"10.0.0.1\"\n",
            &["trust-proxy", "expected a sequence"][..],
        ),
        ("max-connections = \n", &["line 1"][..]),
    ];
    for (i, (text, wanted)) in cases.iter().enumerate() {
        let file = dir.file(&format!("bad-{i}.toml"), text);
        let (status, out, err) = run(&["--config", &file], &[], &dir.0);
        assert_eq!(status.code(), Some(2), "{text}: {err}");
        assert!(out.is_empty(), "{out}");
        assert!(err.contains(&format!("config file {file}")), "{err}");
        for w in *wanted {
            assert!(err.contains(w), "{text}: no {w:?} in\n{err}");
        }
        assert!(!err.contains("listening"), "{err}");
    }
    let missing = dir.path("missing.toml");
    let (status, _, err) = run(&["check"], &[("FASTIM_CONFIG", &missing)], &dir.0);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("cannot read config file {missing}")),
        "{err}"
    );
    // A bad value in the environment is clap's error, naming the flag.
    let (status, _, err) = run(
        &["--print-config"],
        &[("FASTIM_MAX_CONNECTIONS", "lots")],
        &dir.0,
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("--max-connections"), "{err}");
}

/// The subcommands take the data directory from the same file, with `--config`
/// before or after their own arguments, and the environment beats the file there too.
#[test]
fn subcommands_take_the_same_config() {
    let dir = Dir::new();
    let data = dir.path("elsewhere");
    let file = dir.file(
        "fastim.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\ndata-dir = \"{data}\"\nresource-dir = \"{}\"\n",
            dir.path("resource")
        ),
    );
    let mut server = serve(&["--config", &file], &[], &dir);
    assert!(server.terminate().is_some_and(|s| s.success()));
    let db = format!("{data}/fastim.db");
    assert!(Path::new(&db).is_file(), "the server made {db}");

    for args in [
        &["--config", &file, "check"][..],
        &["check", "--config", &file],
        &["admin", "user", "list", "--config", &file],
        &["admin", "--config", &file, "stats", "--json"],
    ] {
        let (status, out, err) = run(args, &[], &dir.0);
        assert!(status.success(), "{args:?}: {err}");
        if args[0] == "check" || args[1] == "check" {
            assert!(out.contains(&db), "{args:?}: {out}");
        }
    }
    let (status, out, err) = run(&["check"], &[("FASTIM_CONFIG", &file)], &dir.0);
    assert!(status.success() && out.contains(&db), "{out}{err}");

    let other = dir.path("nowhere");
    let (status, _, err) = run(
        &["check", "--config", &file],
        &[("FASTIM_DATA_DIR", &other)],
        &dir.0,
    );
    assert!(!status.success());
    assert!(
        err.contains(&format!("no database at {other}/fastim.db")),
        "{err}"
    );
    let (status, _, err) = run(
        &["check", "--config", &file, "--data-dir", &other],
        &[],
        &dir.0,
    );
    assert!(!status.success());
    assert!(
        err.contains(&format!("no database at {other}/fastim.db")),
        "{err}"
    );
    // --print-config is the server's: refused with a subcommand.
    let (status, out, err) = run(&["--print-config", "check", "--config", &file], &[], &dir.0);
    assert_eq!(status.code(), Some(2), "{out}{err}");
    assert!(err.contains("not with a subcommand"), "{err}");
    // With no file, the default ./data of the working directory.
    let (status, _, err) = run(&["check"], &[], &dir.0);
    assert!(!status.success());
    assert!(err.contains("no database at data/fastim.db"), "{err}");
}

/// The example in deploy/ is a valid file, with every key but `static-dir`,
/// `tls-cert` and `tls-key`.
#[test]
fn the_deployment_example_reads() {
    let dir = Dir::new();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/fastim.toml");
    let t = printed(&["--config", example], &[], &dir.0);
    assert_eq!(t.len(), 28, "{t:?}");
    assert_eq!(t["data-dir"].as_str(), Some("/var/lib/fastim/data"));
    let written: toml::Table = std::fs::read_to_string(example)
        .expect("the example")
        .parse()
        .expect("TOML");
    assert_eq!(written, t, "the example states every key as it results");
}

/// The systemd unit's command line is one this binary accepts, with the example file,
/// and keeps the data in the state directory; `systemd-analyze verify` passes where
/// it is installed.
#[test]
fn the_systemd_unit_runs_this_binary() {
    let root = env!("CARGO_MANIFEST_DIR");
    let unit = std::fs::read_to_string(format!("{root}/deploy/fastim.service")).expect("unit");
    let exec = unit
        .replace("\\\n", " ")
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line")
        .to_owned();
    let example = format!("{root}/deploy/fastim.toml");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(words[0], "/usr/local/bin/fastim", "{exec}");
    assert!(unit.contains("StateDirectory=fastim\n"), "{unit}");
    let args: Vec<&str> = words[1..]
        .iter()
        .map(|w| {
            if *w == "/etc/fastim/fastim.toml" {
                example.as_str()
            } else {
                w
            }
        })
        .collect();
    let dir = Dir::new();
    let t = printed(&args, &[], &dir.0);
    assert_eq!(t["data-dir"].as_str(), Some("/var/lib/fastim/data"));
    assert_eq!(t["resource-dir"].as_str(), Some("/var/lib/fastim/resource"));

    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed: the unit is not verified");
        return;
    };
    assert!(version.status.success());
    let local = dir.file(
        "fastim.service",
        &unit.replace("/usr/local/bin/fastim", env!("CARGO_BIN_EXE_fastim")),
    );
    let out = Command::new("timeout")
        .args(["60", "systemd-analyze", "verify", &local])
        .output()
        .expect("systemd-analyze verify");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "{err}");
}
