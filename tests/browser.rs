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

mod common;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, fresh_data_dir};

const TIME_LIMIT: Duration = Duration::from_secs(300);

#[test]
fn web_client_in_chromium() {
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
    if !missing.is_empty() {
        let what = missing.join(", ");
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("browser tests need {what}: run .ci/install-browser first");
        }
        println!("SKIP web_client_in_chromium: missing {what} (run .ci/install-browser)");
        return;
    }

    let data = fresh_data_dir();
    let resources = data.join("resource");
    let server = Server::start_in(
        data,
        &[
            "--resource-dir",
            resources.to_str().expect("utf-8 path"),
            "--inspector",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let restart_data = fresh_data_dir();
    let screenshots = root.join("target/screenshots");

    // Its own process group, so that on a time-out the whole tree (node and the server it
    // may have started) is killed; Chromium exits when node's pipe to it closes.
    let mut child = Command::new("node")
        .arg(dir.join("run.mjs"))
        .arg("--url")
        .arg(format!("http://{}", server.addr))
        .arg("--server-bin")
        .arg(env!("CARGO_BIN_EXE_fastim"))
        .arg("--data-dir")
        .arg(&restart_data)
        .arg("--screenshots")
        .arg(&screenshots)
        .arg("--time-limit")
        .arg((TIME_LIMIT.as_secs() - 30).to_string())
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
    // Scenario 3's second device synced the whole history in one message: the
    // server sent it compressed (Chromium's DevTools show frames inflated).
    let compressed = status
        .filter(|s| s.success())
        .map(|_| chat_messages_sent_compressed(&server));
    drop(server);
    let _ = std::fs::remove_dir_all(&restart_data);

    let report = format!("--- run.mjs stdout ---\n{out}\n--- run.mjs stderr ---\n{err}");
    match status {
        None => panic!("browser tests did not finish within {TIME_LIMIT:?}\n{report}"),
        Some(s) if !s.success() => panic!("browser tests failed ({s})\n{report}"),
        Some(_) => println!("{out}"),
    }
    let compressed = compressed.expect("scraped after a successful run");
    assert!(
        compressed >= 1.0,
        "no chat message went to Chromium compressed (fastim_ws_messages_sent_compressed_total)"
    );
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
