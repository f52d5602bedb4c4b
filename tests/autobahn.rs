//! RFC 6455 conformance: runs the Autobahn TestSuite fuzzing client (cases 1-7, 9, 10,
//! and 12, 13 for permessage-deflate, RFC 7692) against `/echo` and compares every
//! verdict with `tests/autobahn/expected.json` (see `tests/autobahn/run.py`).
//! The whole run takes about 8 minutes on a 2-core machine, 12 and 13 most of it.
//!
//! Needs the suite installed by `.ci/install-autobahn` (`target/autobahn/wstest`).
//! Without it the test is skipped locally and fails under CI (`CI=true`).
//! `AUTOBAHN_UPDATE=1` rewrites expected.json from the run instead of comparing
//! (refused by run.py if any case FAILED).

mod common;

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::Server;

/// Hard limit for run.py (which itself limits wstest to 1500 s).
const RUN_TIMEOUT: Duration = Duration::from_secs(1620);

/// Waits for `child` at most `limit`, killing it when the time is up.
fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for run.py") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("run.py did not finish within {limit:?}");
        }
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn autobahn_fuzzingclient() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let wstest = root.join("target/autobahn/wstest");
    if !wstest.exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{} is missing: run .ci/install-autobahn before the tests",
            wstest.display()
        );
        eprintln!(
            "SKIP autobahn_fuzzingclient: {} is missing (run .ci/install-autobahn)",
            wstest.display()
        );
        return;
    }

    let server = Server::start(&[]);
    let mut cmd = Command::new("python3");
    cmd.current_dir(root)
        .arg("tests/autobahn/run.py")
        .args(["--url", &server.url("/echo")])
        .args(["--out", "target/autobahn/report"])
        .args(["--expected", "tests/autobahn/expected.json"])
        .arg("--wstest")
        .arg(&wstest)
        .stdin(Stdio::null());
    if std::env::var("AUTOBAHN_UPDATE").as_deref() == Ok("1") {
        cmd.arg("--update");
    }
    let mut run = cmd.spawn().expect("spawn python3 tests/autobahn/run.py");
    let status = wait_bounded(&mut run, RUN_TIMEOUT);
    drop(server);
    assert!(
        status.success(),
        "Autobahn conformance failed ({status}); see the table above and target/autobahn/report/"
    );
}
