//! `GET /metrics` on `--metrics-listen`: a real server, real sockets, and the numbers
//! read back from the exposition text after traffic. Every exposition is checked line
//! by line (HELP and TYPE for each family, valid names, `_total` on counters,
//! complete histograms), and by `promtool check metrics` where it is installed.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Http, RawClient, Server, fresh_data_dir, upgrade_request};
use fastim::store::Db;
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::stream::MaybeTlsStream;

fn start(extra: &[&str]) -> Server {
    let mut args = vec!["--metrics-listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn metrics_addr(server: &Server) -> SocketAddr {
    server.metrics.expect("the server logs its metrics address")
}

/// One request on the metrics port, read to the server's close: (status, head, body).
fn get(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics port");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("send");
    let mut bytes = Vec::new();
    stream
        .read_to_end(&mut bytes)
        .expect("the server answers and closes");
    let text = String::from_utf8(bytes).expect("UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, head.to_owned(), body.to_owned())
}

/// The samples of one scrape, by series (`name{labels}` as written), checked.
struct Scrape {
    text: String,
    samples: HashMap<String, f64>,
}

impl Scrape {
    /// A series' value; a series not written (a close code not yet seen) is 0.
    fn value(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }

    fn has(&self, series: &str) -> bool {
        self.samples.contains_key(series)
    }
}

fn scrape(server: &Server) -> Scrape {
    let (status, head, body) = get(
        metrics_addr(server),
        "GET /metrics HTTP/1.1\r\nHost: metrics\r\n\r\n",
    );
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let samples = check_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    Scrape {
        text: body,
        samples,
    }
}

/// Scrapes until `ready` holds (the loop counts a close a moment after the client
/// sees it), at most 5 s.
fn scrape_until(server: &Server, what: &str, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = scrape(server);
        if ready(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what}, never seen in:\n{}",
            s.text
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn snake_case(label: &str) -> bool {
    label.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && label
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The exposition rules this server keeps, line by line: every sample belongs to a
/// family announced with `# HELP` and `# TYPE` before it; names are valid and, but
/// for the `process_` ones, start with `fastim_`; counters end in `_total`;
/// label names are snake_case; values are numbers; a histogram's buckets rise to
/// `+Inf`, which equals its `_count`.
fn check_exposition(text: &str) -> Result<HashMap<String, f64>, String> {
    let mut help: HashMap<String, ()> = HashMap::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    let mut last_bucket: HashMap<String, f64> = HashMap::new();
    if !text.ends_with('\n') {
        return Err("the text does not end with a newline".into());
    }
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest.split_once(' ').ok_or(format!("bare HELP: {line}"))?;
            if doc.trim().is_empty() || help.insert(name.into(), ()).is_some() {
                return Err(format!("empty or repeated HELP: {line}"));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or(format!("bare TYPE: {line}"))?;
            if !help.contains_key(name) {
                return Err(format!("TYPE before HELP: {line}"));
            }
            if !["counter", "gauge", "histogram"].contains(&kind) {
                return Err(format!("unknown type: {line}"));
            }
            if kind == "counter" && !name.ends_with("_total") {
                return Err(format!("a counter without _total: {line}"));
            }
            if !valid_name(name) || !(name.starts_with("fastim_") || name.starts_with("process_")) {
                return Err(format!("bad family name: {line}"));
            }
            if types.insert(name.into(), kind.into()).is_some() {
                return Err(format!("repeated TYPE: {line}"));
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            return Err(format!("unexpected line: {line:?}"));
        }
        let (series, value) = line.rsplit_once(' ').ok_or(format!("no value: {line}"))?;
        let value: f64 = value
            .parse()
            .map_err(|_| format!("value not a number: {line}"))?;
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (
                name,
                labels
                    .strip_suffix('}')
                    .ok_or(format!("unclosed labels: {line}"))?,
            ),
            None => (series, ""),
        };
        if !valid_name(name) {
            return Err(format!("bad sample name: {line}"));
        }
        let mut le = None;
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or(format!("bad label: {line}"))?;
            let quoted = v.len() >= 2 && v.starts_with('"') && v.ends_with('"');
            if !snake_case(k) || !quoted {
                return Err(format!("bad label {pair}: {line}"));
            }
            if k == "le" {
                le = Some(v.trim_matches('"').to_owned());
            }
        }
        let family = match types.get(name) {
            Some(_) => name.to_owned(),
            None => {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|base| types.get(*base).is_some_and(|k| k == "histogram"))
                    .ok_or(format!("a sample of no announced family: {line}"))?;
                base.to_owned()
            }
        };
        if types[&family] == "histogram" {
            let key = format!(
                "{family}{{{}}}",
                labels
                    .split(',')
                    .filter(|p| !p.starts_with("le="))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            if name.ends_with("_bucket") {
                let le = le.ok_or(format!("a bucket without le: {line}"))?;
                let previous = last_bucket.insert(key.clone(), value).unwrap_or(0.0);
                if value < previous {
                    return Err(format!("buckets fall: {line}"));
                }
                if le == "+Inf" {
                    last_bucket.insert(format!("{key}+Inf"), value);
                }
            } else if name.ends_with("_count") {
                let inf = last_bucket
                    .get(&format!("{key}+Inf"))
                    .ok_or(format!("a histogram without +Inf: {line}"))?;
                if *inf != value {
                    return Err(format!("_count is not the +Inf bucket: {line}"));
                }
            }
        }
        if samples.insert(series.to_owned(), value).is_some() {
            return Err(format!("repeated series: {line}"));
        }
    }
    if help.len() != types.len() {
        return Err("a HELP without a TYPE".into());
    }
    Ok(samples)
}

/// `promtool check metrics` on the text, with the promtool of `.ci/install-promtool`
/// or one on PATH. Without one this check says so and is skipped; under CI
/// (`CI=true`) it is required.
fn promtool_passes(text: &str) {
    let installed = concat!(env!("CARGO_MANIFEST_DIR"), "/target/promtool/promtool");
    let program = if std::path::Path::new(installed).exists() {
        installed
    } else {
        "promtool"
    };
    let child = Command::new(program)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "promtool is required under CI: {e}"
            );
            eprintln!(
                "SKIPPED promtool check metrics: promtool not found ({e}); \
                 .ci/install-promtool installs it"
            );
            return;
        }
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("promtool") {
            let out = child.wait_with_output().expect("promtool output");
            assert!(
                status.success(),
                "promtool check metrics failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("promtool did not finish in 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn echo_traffic_and_a_normal_close_move_the_counters() {
    let server = start(&[]);
    let before = scrape(&server);
    let (mut ws, _) = tungstenite::connect(server.url("/echo")).expect("echo upgrade");
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
    }
    let open = scrape_until(&server, "an open echo connection", |s| {
        s.value("fastim_connections{state=\"echo\"}") == 1.0
    });
    let payload = "x".repeat(300);
    ws.send(Message::text(payload.clone())).expect("send");
    assert_eq!(ws.read().expect("echo"), Message::text(payload));
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .expect("close");
    // The server's close frame, then the end.
    loop {
        match ws.read() {
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("closing: {e}"),
        }
    }
    // Our end of TCP: the server lingers until it sees it.
    drop(ws);
    let after = scrape_until(&server, "the connection gone", |s| {
        s.value("fastim_connections{state=\"echo\"}") == 0.0
            && s.value("fastim_connections{state=\"closing\"}") == 0.0
    });
    let moved = |series: &str| after.value(series) - before.value(series);
    assert_eq!(moved("fastim_connections_accepted_total"), 1.0);
    assert_eq!(moved("fastim_ws_handshakes_total{endpoint=\"echo\"}"), 1.0);
    assert_eq!(
        moved("fastim_ws_messages_received_total{endpoint=\"echo\"}"),
        1.0
    );
    assert_eq!(
        moved("fastim_ws_messages_sent_total{endpoint=\"echo\"}"),
        1.0
    );
    // The handshake, a 300-byte masked message and a close frame in; the 101, the
    // echo and the close frame out.
    assert!(moved("fastim_received_bytes_total") > 300.0 + 100.0);
    assert!(moved("fastim_sent_bytes_total") > 300.0 + 100.0);
    assert_eq!(
        moved("fastim_ws_close_codes_received_total{code=\"1000\"}"),
        1.0
    );
    assert_eq!(
        moved("fastim_ws_close_codes_sent_total{code=\"1000\"}"),
        1.0
    );
    assert_eq!(
        after.value("fastim_ws_messages_sent_total{endpoint=\"chat\"}"),
        0.0
    );
    assert!(open.value("fastim_loop_turn_duration_seconds_count") > 0.0);
    assert!(after.value("process_resident_memory_bytes") > 1e6);
    assert!(after.value("process_start_time_seconds") > 1.6e9);
    promtool_passes(&after.text);
}

#[test]
fn a_protocol_error_is_counted_by_its_close_code() {
    let server = start(&[]);
    let mut client = RawClient::connect(server.addr, "/echo");
    // An unmasked frame from a client: 1002.
    client.send(&[0x81, 0x01, b'x']);
    assert_eq!(client.expect_close(), Some(1002));
    let s = scrape_until(&server, "the protocol error", |s| {
        s.value("fastim_ws_protocol_errors_total{code=\"1002\"}") == 1.0
    });
    assert_eq!(
        s.value("fastim_ws_close_codes_sent_total{code=\"1002\"}"),
        1.0
    );
    assert_eq!(
        s.value("fastim_ws_close_codes_received_total{code=\"1002\"}"),
        0.0
    );
}

#[test]
fn a_chat_message_moves_deliveries_acks_and_the_commit_histograms() {
    let dir = fresh_data_dir();
    std::fs::create_dir_all(&dir).expect("data dir");
    let (a, b) = {
        let mut db = Db::open(&dir.join("fastim.db")).expect("open db");
        let a = common::seed_account(&mut db, "2001");
        let b = common::seed_account(&mut db, "2002");
        db.add_friend(a.0, b.0, 2).expect("friends");
        (a, b)
    };
    let server = Server::start_in(dir, &["--metrics-listen", "127.0.0.1:0"]);
    // The database's counts are read by a thread of their own, at start.
    let before = scrape_until(&server, "the database's counts", |s| s.has("fastim_users"));
    assert_eq!(before.value("fastim_users"), 2.0);
    assert_eq!(before.value("fastim_sessions"), 2.0);
    assert_eq!(before.value("fastim_messages"), 0.0);
    assert!(before.value("fastim_database_size_bytes") > 0.0);
    let connect = |(id, token): &(i64, String)| {
        let url = server.url(&format!("/chat?id={id}&token={token}"));
        let (ws, _) = tungstenite::connect(url).expect("chat upgrade");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
        }
        ws
    };
    let (mut wa, mut wb) = (connect(&a), connect(&b));
    let text =
        serde_json::json!({"cmd": 10, "dstid": b.0, "media": 1, "content": "hi", "ref": "r1"});
    wa.send(Message::text(text.to_string())).expect("send");
    let read_json = |ws: &mut tungstenite::WebSocket<MaybeTlsStream<TcpStream>>| loop {
        if let Message::Text(t) = ws.read().expect("read") {
            return serde_json::from_str::<serde_json::Value>(t.as_str()).expect("JSON");
        }
    };
    let ack = read_json(&mut wa);
    assert_eq!(ack["ref"], "r1", "{ack}");
    let delivered = read_json(&mut wb);
    assert_eq!(delivered["content"], "hi", "{delivered}");
    let after = scrape(&server);
    let moved = |series: &str| after.value(series) - before.value(series);
    assert_eq!(moved("fastim_ws_handshakes_total{endpoint=\"chat\"}"), 2.0);
    assert_eq!(
        moved("fastim_ws_messages_received_total{endpoint=\"chat\"}"),
        1.0
    );
    assert_eq!(
        moved("fastim_ws_messages_sent_total{endpoint=\"chat\"}"),
        2.0
    );
    assert_eq!(moved("fastim_chat_deliveries_total"), 1.0);
    assert_eq!(moved("fastim_chat_acks_sent_total"), 1.0);
    assert_eq!(moved("fastim_chat_commit_batch_messages_count"), 1.0);
    assert_eq!(moved("fastim_chat_commit_batch_messages_sum"), 1.0);
    assert_eq!(
        moved("fastim_chat_commit_batch_messages_bucket{le=\"1\"}"),
        1.0
    );
    assert_eq!(moved("fastim_chat_commit_duration_seconds_count"), 1.0);
    // The row and its index entries, a few pages; not the whole WAL.
    assert_eq!(moved("fastim_chat_commit_wal_pages_count"), 1.0);
    let pages = moved("fastim_chat_commit_wal_pages_sum");
    assert!((3.0..=20.0).contains(&pages), "{pages} WAL pages");
    assert!(moved("fastim_chat_commit_duration_seconds_sum") > 0.0);
    assert_eq!(after.value("fastim_chat_writer_backlog"), 0.0);
    assert_eq!(after.value("fastim_connections{state=\"chat\"}"), 2.0);
    // Two token checks went through the API pool.
    assert!(moved("fastim_worker_job_duration_seconds_count{class=\"api\"}") >= 2.0);
    assert_eq!(after.value("fastim_worker_queue_depth{class=\"api\"}"), 0.0);
    promtool_passes(&after.text);
}

#[test]
fn refusals_are_counted_by_reason() {
    let server = start(&["--max-connections", "2", "--login-per-minute", "1"]);
    // The connection cap: two held, the third refused with 503.
    let held: Vec<RawClient> = (0..2)
        .map(|_| RawClient::connect(server.addr, "/echo"))
        .collect();
    let (_refused, head) = RawClient::request(server.addr, &upgrade_request("/echo"));
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    let s = scrape(&server);
    assert_eq!(
        s.value("fastim_connections_refused_total{reason=\"connection_cap\"}"),
        1.0
    );
    assert_eq!(
        s.value("fastim_connections_accepted_total"),
        2.0,
        "refused connections are not accepted ones"
    );
    drop(held);
    drop(_refused);
    scrape_until(&server, "the held connections gone", |s| {
        s.samples
            .iter()
            .filter(|(k, _)| k.starts_with("fastim_connections{"))
            .all(|(_, v)| *v == 0.0)
    });
    // A bad token: 401.
    let (_c, head) = RawClient::request(server.addr, &upgrade_request("/chat?token=nope"));
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    drop(_c);
    // A foreign page's origin: 403.
    let foreign = upgrade_request("/chat?token=nope")
        .replace("\r\n\r\n", "\r\nOrigin: http://evil.example\r\n\r\n");
    let (_c, head) = RawClient::request(server.addr, &foreign);
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    drop(_c);
    // The second login in a minute from one address: 429.
    let mut http = Http::new(server.addr);
    let first = http.form("/user/login", "mobile=13800000009&passwd=wrong-password");
    assert_ne!(first.status, 429);
    let second = http.form("/user/login", "mobile=13800000009&passwd=wrong-password");
    assert_eq!(second.status, 429, "{}", second.head);
    let s = scrape(&server);
    for (reason, n) in [
        ("connection_cap", 1.0),
        ("per_address_cap", 0.0),
        ("auth_failed", 1.0),
        ("origin", 1.0),
        ("rate_limit", 1.0),
        ("worker_queue_full", 0.0),
    ] {
        assert_eq!(
            s.value(&format!(
                "fastim_connections_refused_total{{reason=\"{reason}\"}}"
            )),
            n,
            "{reason}"
        );
    }
    assert!(s.value("fastim_worker_job_duration_seconds_count{class=\"hash\"}") >= 1.0);
}

#[test]
fn the_metrics_port_answers_only_get_metrics_and_closes() {
    let server = start(&[]);
    let addr = metrics_addr(&server);
    let (status, _, body) = get(addr, "GET /nope HTTP/1.1\r\nHost: m\r\n\r\n");
    assert_eq!(status, 404);
    assert!(body.contains("/metrics"), "{body}");
    let (status, head, _) = get(addr, "POST /metrics HTTP/1.1\r\nHost: m\r\n\r\n");
    assert_eq!(status, 405);
    assert!(head.contains("Allow: GET, HEAD"), "{head}");
    let (status, head, body) = get(addr, "HEAD /metrics HTTP/1.1\r\nHost: m\r\n\r\n");
    assert_eq!(status, 200);
    assert!(
        body.is_empty() && head.contains("Content-Length: "),
        "{head}"
    );
    // A query string is no other path.
    let (status, _, body) = get(addr, "GET /metrics?x=1 HTTP/1.1\r\nHost: m\r\n\r\n");
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE fastim_connections gauge"), "{body}");
    // A head that has not ended after the 4 KiB bound: 431, not a growing buffer.
    let long = format!(
        "GET /metrics HTTP/1.1\r\nHost: m\r\nX-Pad: {}",
        "a".repeat(5000)
    );
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(long.as_bytes()).expect("send");
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).expect("an answer");
    assert_eq!(&answer, b"HTTP/1.1 431");
    // Scrapes are not client connections: none was counted.
    let s = scrape(&server);
    assert_eq!(s.value("fastim_connections_accepted_total"), 0.0);
    assert_eq!(s.value("fastim_received_bytes_total"), 0.0);
}

#[test]
fn a_silent_scrape_connection_does_not_stop_others() {
    let server = start(&[]);
    let addr = metrics_addr(&server);
    // Half a head, never finished, and idle connections: others are still answered.
    let mut half = TcpStream::connect(addr).expect("connect");
    half.write_all(b"GET /metr").expect("send");
    let _idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let s = scrape(&server);
    assert!(s.has("fastim_connections_accepted_total"));
}

#[test]
fn without_the_flag_no_metrics_are_served() {
    let server = Server::start(&[]);
    assert_eq!(server.metrics, None, "no metrics address logged");
    // The main port has no /metrics either.
    let mut http = Http::new(server.addr);
    let r = http.request("GET", "/metrics", &[], b"");
    assert_eq!(r.status, 404, "{}", r.head);
}

#[test]
fn the_line_checker_catches_what_it_is_for() {
    let ok = "# HELP fastim_x_total X.\n# TYPE fastim_x_total counter\nfastim_x_total 1\n";
    assert!(check_exposition(ok).is_ok());
    for bad in [
        // A sample with no family.
        "fastim_y 1\n",
        // A counter without _total.
        "# HELP fastim_x X.\n# TYPE fastim_x counter\nfastim_x 1\n",
        // TYPE without HELP.
        "# TYPE fastim_x gauge\nfastim_x 1\n",
        // A label in camelCase.
        "# HELP fastim_x X.\n# TYPE fastim_x gauge\nfastim_x{someLabel=\"a\"} 1\n",
        // Not a number.
        "# HELP fastim_x X.\n# TYPE fastim_x gauge\nfastim_x one\n",
        // A histogram whose count is not its +Inf bucket.
        "# HELP fastim_h H.\n# TYPE fastim_h histogram\nfastim_h_bucket{le=\"1\"} 1\n\
         fastim_h_bucket{le=\"+Inf\"} 2\nfastim_h_sum 3\nfastim_h_count 3\n",
    ] {
        assert!(check_exposition(bad).is_err(), "{bad}");
    }
}
