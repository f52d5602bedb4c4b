//! The `idle` mode: what an open, silent connection costs the server in memory.

use std::io::{self, Read};
use std::thread::sleep;
use std::time::{Duration, Instant};

use mio::{Events, Poll};

use crate::Json;
use crate::net::{Target, open_connections_with};
use crate::procfs::rss_bytes;

/// What to run.
pub struct IdleArgs {
    pub target: Target,
    pub connections: usize,
    pub server_pid: u32,
    pub hold: Duration,
    pub settle: Duration,
    pub batch: usize,
    pub deadline: Instant,
    /// Offer permessage-deflate in every handshake.
    pub offer_deflate: bool,
}

/// Opens the connections, measures the server's RSS growth, holds, closes.
/// `Ok(false)` when the server dropped connections it should have kept.
pub fn run(args: IdleArgs) -> Result<bool, String> {
    let pid = args.server_pid.to_string();
    let rss = || rss_bytes(&pid).map_err(|e| format!("server {pid}: {e}"));
    let before = rss()?;
    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let opened = Instant::now();
    let offer = if args.offer_deflate {
        crate::net::OFFER_DEFLATE
    } else {
        ""
    };
    let mut sockets = open_connections_with(
        &mut poll,
        &args.target,
        args.connections,
        args.batch,
        args.deadline,
        |_| offer.to_owned(),
    )?;
    let open_secs = opened.elapsed().as_secs_f64();
    // Let the server finish whatever it does after a handshake, then wait for RSS to stop moving.
    sleep(args.settle);
    let mut after = rss()?;
    let settle_end = Instant::now() + Duration::from_secs(5);
    loop {
        sleep(Duration::from_millis(250));
        let now = rss()?;
        if now == after || Instant::now() >= settle_end {
            after = now;
            break;
        }
        after = now;
    }
    let n = args.connections.max(1) as f64;
    let per_conn = (after as f64 - before as f64) / n;
    println!(
        "idle: {} connections opened in {open_secs:.2} s",
        args.connections
    );
    println!(
        "  server RSS: {:.1} MiB before, {:.1} MiB after: {per_conn:.0} bytes per connection",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0
    );
    // Hold, noticing connections the server ends.
    let mut events = Events::with_capacity(1024);
    let mut buf = [0u8; 4096];
    let mut dropped = 0u64;
    let mut gone = vec![false; sockets.len()];
    let hold_end = Instant::now() + args.hold;
    loop {
        let now = Instant::now();
        if now >= hold_end || now >= args.deadline {
            break;
        }
        let wait = hold_end.min(args.deadline) - now;
        if poll
            .poll(&mut events, Some(wait.min(Duration::from_millis(500))))
            .is_err()
        {
            break;
        }
        for event in events.iter() {
            let i = event.token().0;
            let Some(socket) = sockets.get_mut(i) else {
                continue;
            };
            if gone[i] || !(event.is_readable() || event.is_read_closed()) {
                continue;
            }
            loop {
                match socket.read(&mut buf) {
                    Ok(0) => {
                        gone[i] = true;
                        dropped += 1;
                        break;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        gone[i] = true;
                        dropped += 1;
                        break;
                    }
                }
            }
        }
    }
    if args.hold > Duration::ZERO {
        println!(
            "  held {:.0} s: {dropped} connections ended by the server",
            args.hold.as_secs_f64()
        );
    }
    sockets.clear();
    let json = Json::new()
        .str("mode", "idle")
        .str("url", &args.target.url())
        .int("connections", args.connections as u64)
        .int("rss_before", before)
        .int("rss_after", after)
        .num("bytes_per_conn", per_conn)
        .num("open_seconds", open_secs)
        .int("dropped", dropped);
    println!("RESULT {}", json.finish());
    Ok(dropped == 0)
}
