//! The web client in a real browser: runs `tests/browser/run.mjs` (playwright-core driving
//! Debian's Chromium) against the server with its embedded client, as users run it.
//!
//! Needs `/usr/bin/chromium` and `tests/browser/node_modules` (`.ci/install-browser`
//! installs both). Without them the test is skipped, except under `CI=true`, where it fails.
//!
//! The restart scenario needs a server it can kill and start again on the same port and
//! data directory: the node script does that itself with the binary given by
//! `--server-bin` on the data directory given by `--data-dir`. The other scenarios use the
//! server started here. Screenshots go to `target/screenshots/`.
//!
//! A second run takes scenario 1 over https:// with `--tls-self-signed`
//! (screenshots in `target/screenshots/https/`).

mod common;

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{Server, fresh_data_dir};
use fastim::store::{Db, Message, NewUser, Peer};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

/// A user with 1,000 friends, each of whom has sent them one message (friend 999's is
/// the newest), for the list-rendering figure of scenario 8: their session token.
fn seed_many(data: &Path) -> String {
    std::fs::create_dir_all(data).expect("data dir");
    let mut db = Db::open(&data.join("fastim.db")).expect("open db");
    let (me, token) = common::seed_account(&mut db, "70000000");
    let mut messages = Vec::new();
    for i in 0..1_000 {
        let friend = db
            .create_user(
                NewUser {
                    mobile: format!("8{i:07}"),
                    password_hash: "unused".into(),
                    nickname: format!("friend {i}"),
                    avatar: String::new(),
                    sex: "U".into(),
                    memo: String::new(),
                },
                1,
            )
            .expect("user")
            .id;
        db.add_friend(me, friend, 2).expect("friends");
        messages.push(Message {
            content: format!("hello from friend {i}"),
            ..Message::new(friend, Peer::User(me))
        });
    }
    db.save_messages(&messages, 3).expect("messages");
    token
}

const TIME_LIMIT: Duration = Duration::from_secs(300);

/// One Chromium at a time: two at once on a small machine make both slow enough
/// to miss the scripts' waits.
static ONE_BROWSER: Mutex<()> = Mutex::new(());

/// What is missing for the browser tests, if anything; under `CI=true` a missing
/// piece fails the test instead of skipping it.
fn missing_tools(test: &str) -> bool {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests/browser");
    let missing: Vec<&str> = [
        (!Path::new("/usr/bin/chromium").exists()).then_some("/usr/bin/chromium"),
        (!dir.join("node_modules/playwright-core").exists())
            .then_some("tests/browser/node_modules (playwright-core)"),
        Command::new("node")
            .arg("--version")
            .output()
            .is_err()
            .then_some("node"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if missing.is_empty() {
        return false;
    }
    let what = missing.join(", ");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("browser tests need {what}: run .ci/install-browser first");
    }
    println!("SKIP {test}: missing {what} (run .ci/install-browser)");
    true
}

#[test]
fn web_client_in_chromium() {
    if missing_tools("web_client_in_chromium") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = fresh_data_dir();
    let many_token = seed_many(&data);
    let resources = data.join("resource");
    let server = Server::start_in(
        data,
        &[
            "--resource-dir",
            resources.to_str().expect("utf-8 path"),
            "--inspector",
            "--metrics-listen",
            "127.0.0.1:0",
            // The scenarios register more users from 127.0.0.1 than one address may
            // in an hour (a burst of 5).
            "--register-per-hour",
            "0",
        ],
    );
    let restart_data = fresh_data_dir();
    let args: Vec<OsString> = vec![
        "--url".into(),
        format!("http://{}", server.addr).into(),
        "--server-bin".into(),
        env!("CARGO_BIN_EXE_fastim").into(),
        "--data-dir".into(),
        restart_data.clone().into(),
        "--screenshots".into(),
        root.join("target/screenshots").into(),
        "--many-token".into(),
        many_token.into(),
    ];
    let result = run_node(&args, &[]);
    // Scenario 3's second device synced the whole history in one message: the
    // server sent it compressed (Chromium's DevTools show frames inflated).
    let compressed = result
        .is_ok()
        .then(|| chat_messages_sent_compressed(&server));
    drop(server);
    let _ = std::fs::remove_dir_all(&restart_data);
    result.unwrap_or_else(|report| panic!("{report}"));
    assert!(
        compressed.is_some_and(|n| n >= 1.0),
        "no chat message went to Chromium compressed (fastim_ws_messages_sent_compressed_total)"
    );
}

/// Scenario 1 (register, befriend, text, emoji, a picture) over https:// and wss://
/// with the server's self-signed certificate, which Chromium is told to trust by its
/// public key alone (`--ignore-certificate-errors-spki-list`), as README says to try it.
#[test]
fn web_client_over_https_in_chromium() {
    if missing_tools("web_client_over_https_in_chromium") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = fresh_data_dir();
    let resources = data.join("resource");
    let server = Server::start_in(
        data.clone(),
        &[
            "--tls-self-signed",
            "--resource-dir",
            resources.to_str().expect("utf-8 path"),
        ],
    );
    let cert_file = data.join("tls-self-signed.crt");
    let pem = std::fs::read(&cert_file).expect("the kept certificate");
    let cert = CertificateDer::from_pem_slice(&pem).expect("PEM");
    let spki = webpki::EndEntityCert::try_from(&cert)
        .expect("a certificate")
        .subject_public_key_info();
    let spki = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(spki.as_ref()));
    let args: Vec<OsString> = vec![
        "--url".into(),
        format!("https://{}", server.addr).into(),
        "--only".into(),
        "1".into(),
        "--spki".into(),
        spki.into(),
        "--screenshots".into(),
        root.join("target/screenshots/https").into(),
    ];
    // The API calls the script makes from node (not from Chromium) trust the file.
    let result = run_node(&args, &[("NODE_EXTRA_CA_CERTS", cert_file.into())]);
    drop(server);
    result.unwrap_or_else(|report| panic!("{report}"));
}

/// Runs `tests/browser/run.mjs` with `args` (bounded by [`TIME_LIMIT`]); its output,
/// or a report of what went wrong.
fn run_node(args: &[OsString], env: &[(&str, OsString)]) -> Result<(), String> {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests/browser");
    // Its own process group, so that on a time-out the whole tree (node and the server it
    // may have started) is killed; Chromium exits when node's pipe to it closes.
    let mut child = Command::new("node")
        .arg(dir.join("run.mjs"))
        .args(args)
        .arg("--time-limit")
        .arg((TIME_LIMIT.as_secs() - 30).to_string())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("start node");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break Some(status);
        }
        if started.elapsed() > TIME_LIMIT {
            let _ = Command::new("kill")
                .args(["-KILL", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();

    let report = format!("--- run.mjs stdout ---\n{out}\n--- run.mjs stderr ---\n{err}");
    match status {
        None => Err(format!(
            "browser tests did not finish within {TIME_LIMIT:?}\n{report}"
        )),
        Some(s) if !s.success() => Err(format!("browser tests failed ({s})\n{report}")),
        Some(_) => {
            println!("{out}");
            Ok(())
        }
    }
}

/// `fastim_ws_messages_sent_compressed_total{endpoint="chat"}` from the server's metrics.
fn chat_messages_sent_compressed(server: &Server) -> f64 {
    use std::io::{Read, Write};
    let addr = server.metrics.expect("--metrics-listen was given");
    let mut s = std::net::TcpStream::connect(addr).expect("metrics port");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\n\r\n")
        .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text)
        .expect("the server answers and closes");
    text.lines()
        .find_map(|l| {
            l.strip_prefix(r#"fastim_ws_messages_sent_compressed_total{endpoint="chat"} "#)
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no compressed-messages series in:\n{text}"))
}
