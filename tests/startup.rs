//! Starting the server when something is wrong: it must say what, and never run
//! while unable to serve.

mod common;

use std::time::Duration;

use common::{RawClient, Server, fresh_data_dir, masked_frame, upgrade_request};

/// A database file that is not SQLite is named as the problem (not "cannot listen").
#[test]
fn a_database_that_cannot_be_opened_is_named_at_start() {
    let dir = fresh_data_dir();
    std::fs::create_dir_all(&dir).expect("data dir");
    std::fs::write(dir.join("fastim.db"), vec![0x5a; 8192]).expect("garbage database");
    let err = match Server::try_start_in(&[], dir.clone(), &[]) {
        Ok(_) => panic!("started on a garbage database"),
        Err(e) => e,
    };
    let _ = std::fs::remove_dir_all(&dir);
    assert!(err.contains("cannot start: database"), "{err}");
    assert!(err.contains("fastim.db"), "{err}");
    assert!(!err.contains("cannot listen"), "{err}");
}

/// Below 64 open files the server would run and serve nobody: it refuses to start
/// and says how to fix it. At 64 it starts and serves.
#[test]
fn too_few_open_files_refuse_to_start_and_enough_serve() {
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("prlimit is not installed: skipped");
        return;
    }
    let err =
        match Server::try_start_in(&["prlimit", "--nofile=40:40", "--"], fresh_data_dir(), &[]) {
            Ok(_) => panic!("started with 40 open files"),
            Err(e) => e,
        };
    assert!(err.contains("open-file limit is 40"), "{err}");
    assert!(err.contains("ulimit -n"), "{err}");

    let server = Server::try_start_in(&["prlimit", "--nofile=64:64", "--"], fresh_data_dir(), &[])
        .expect("starts with 64 open files");
    let mut clients: Vec<RawClient> = (0..8)
        .map(|_| RawClient::connect(server.addr, "/echo"))
        .collect();
    for client in &mut clients {
        client.send_frame(true, 0x1, b"still here");
        assert_eq!(
            client.read_frame(),
            Some((true, 0x1, b"still here".to_vec()))
        );
    }
}

/// A message that only ever gets empty fragments never gets closer to its end: after
/// 64 in a row the connection is closed with 1008. A few are fine (RFC 6455 §5.4).
#[test]
fn a_stream_of_empty_fragments_is_closed_with_1008() {
    let server = Server::start(&[]);
    let mut ok = RawClient::connect(server.addr, "/echo");
    ok.send_frame(false, 0x1, b"he");
    for _ in 0..10 {
        ok.send_frame(false, 0x0, b"");
    }
    ok.send_frame(true, 0x0, b"llo");
    assert_eq!(ok.read_frame(), Some((true, 0x1, b"hello".to_vec())));

    let (mut raw, head) = RawClient::request(server.addr, &upgrade_request("/echo"));
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    raw.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut stream = masked_frame(false, 0x1, b"a");
    for _ in 0..200 {
        stream.extend(masked_frame(false, 0x0, b""));
    }
    // One write: the server may close before it has read them all.
    raw.send(&stream);
    assert_eq!(raw.expect_close(), Some(1008));
    assert!(raw.sees_tcp_close());
}
