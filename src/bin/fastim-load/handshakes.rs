//! The `handshakes` mode: TLS connections per second, and the server's CPU per
//! connection (with a `ws://` URL, the same over plain TCP, for comparison). Each of P threads connects, completes the TLS handshake, sends
//! `GET /healthz`, reads the answer (which also brings the session ticket) and
//! closes, over and over; with `--resume` the threads share rustls' client session
//! store, so every connection after a thread's first one resumes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, HandshakeKind, StreamOwned};

use crate::net::Target;
use crate::{Json, Snapshot};

/// What to run.
pub struct HandshakeArgs {
    pub target: Target,
    pub parallel: usize,
    pub duration: Duration,
    pub resume: bool,
    pub server_pid: Option<u32>,
}

/// One connection: handshake (with TLS), one request, its answer, close. Returns
/// whether the session was resumed.
fn one(target: &Target, config: Option<&Arc<rustls::ClientConfig>>) -> Result<bool, String> {
    let tcp = TcpStream::connect(target.addr).map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| format!("timeout: {e}"))?;
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        target.authority
    );
    let mut answer = Vec::new();
    let resumed = match config {
        None => {
            let mut tcp = tcp;
            tcp.write_all(request.as_bytes())
                .map_err(|e| format!("request: {e}"))?;
            tcp.read_to_end(&mut answer)
                .map_err(|e| format!("read: {e}"))?;
            false
        }
        Some(config) => {
            let name = ServerName::try_from(target.host().to_owned()).map_err(|e| e.to_string())?;
            let conn = ClientConnection::new(config.clone(), name).map_err(|e| e.to_string())?;
            let mut tls = StreamOwned::new(conn, tcp);
            tls.write_all(request.as_bytes())
                .map_err(|e| format!("TLS handshake or request: {e}"))?;
            match tls.read_to_end(&mut answer) {
                Ok(_) => {}
                // A peer that closes TCP right after close_notify: the answer is complete.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
                Err(e) => return Err(format!("read: {e}")),
            }
            tls.conn.handshake_kind() == Some(HandshakeKind::Resumed)
        }
    };
    if !answer.starts_with(b"HTTP/1.1 200 ") {
        return Err(format!(
            "unexpected answer: {}",
            String::from_utf8_lossy(&answer)
                .lines()
                .next()
                .unwrap_or("")
        ));
    }
    Ok(resumed)
}

/// Runs the loop and prints its report; `Ok(false)` if any connection failed.
pub fn run(args: HandshakeArgs) -> Result<bool, String> {
    let base = crate::tls::client_config();
    let config = match (args.target.tls, args.resume) {
        (false, _) => None,
        (true, true) => Some(base),
        (true, false) => {
            let mut c = (*base).clone();
            c.resumption = rustls::client::Resumption::disabled();
            Some(Arc::new(c))
        }
    };
    // One connection first: the server is up and the target right.
    one(&args.target, config.as_ref())?;
    let done = Arc::new(AtomicU64::new(0));
    let resumed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let pid = args.server_pid.map(|p| p.to_string());
    let start = Snapshot::take(pid.as_deref())?;
    let threads: Vec<_> = (0..args.parallel.max(1))
        .map(|_| {
            let (target, config) = (args.target.clone(), config.clone());
            let (done, resumed, failed, stop) =
                (done.clone(), resumed.clone(), failed.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match one(&target, config.as_ref()) {
                        Ok(r) => {
                            done.fetch_add(1, Ordering::Relaxed);
                            resumed.fetch_add(u64::from(r), Ordering::Relaxed);
                        }
                        Err(e) => {
                            if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                                eprintln!("connection failed: {e}");
                            }
                        }
                    }
                }
            })
        })
        .collect();
    let end = Instant::now() + args.duration;
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stop_snapshot = Snapshot::take(pid.as_deref())?;
    let counted = done.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let secs = stop_snapshot.at.duration_since(start.at).as_secs_f64();
    let rate = counted as f64 / secs;
    // Counted to the end (threads finish their last connection after the snapshot).
    let total = done.load(Ordering::Relaxed);
    let resumed = resumed.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    let server = match (start.server_cpu, stop_snapshot.server_cpu) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let per_conn_us = server.map(|s| s * 1e6 / counted.max(1) as f64);
    let other = (stop_snapshot.machine_cpu
        - start.machine_cpu
        - (stop_snapshot.own_cpu - start.own_cpu)
        - server.unwrap_or(0.0))
        / secs
        * 100.0;
    println!(
        "handshakes: {counted} {} connections in {secs:.2} s ({rate:.0}/s, {} threads); {resumed} of {total} resumed, {failed} failed",
        if args.target.tls { "TLS" } else { "plain" },
        args.parallel
    );
    if let (Some(s), Some(us)) = (server, per_conn_us) {
        println!(
            "  server CPU: {s:.2} s ({:.0} % of one core), {us:.0} us per connection",
            s / secs * 100.0
        );
    }
    println!("  other processes: {other:.0} % of one core");
    let json = Json::new()
        .str("mode", "handshakes")
        .str("url", &args.target.url())
        .int("parallel", args.parallel as u64)
        .int("connections", counted)
        .int("resumed", resumed)
        .int("total", total)
        .int("failed", failed)
        .num("seconds", secs)
        .num("per_s", rate)
        .opt("server_us_per_conn", per_conn_us)
        .num("other_cpu_pct", other);
    println!("RESULT {}", json.finish());
    Ok(failed == 0)
}
