//! Shared helpers for integration tests: a real server process on 127.0.0.1 and a
//! raw WebSocket client for what a well-behaved library will not send.
#![allow(dead_code)] // Each test binary uses a different subset.

pub mod chat;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A server's log, every line kept as it arrives.
#[derive(Clone, Debug, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, line: String) {
        self.0.lock().expect("log lock").push(line);
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        self.0.lock().expect("log lock").join("\n")
    }

    /// Waits (bounded) until the log holds `needle`; returns the whole log.
    pub fn wait_for(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let text = self.text();
            if text.contains(needle) {
                return text;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no {needle:?} in the log:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A `fastim` process, killed when dropped.
pub struct Server {
    pub addr: SocketAddr,
    /// Where `/metrics` is served, if the server logged one (`--metrics-listen`).
    pub metrics: Option<SocketAddr>,
    /// What it has logged.
    pub log: Log,
    pub child: Child,
    pub data_dir: PathBuf,
    /// Leave the data directory behind when dropped (for a restart on the same data).
    pub keep_data: bool,
}

impl Server {
    /// Starts the server binary with `extra` arguments and waits until it listens.
    pub fn start(extra: &[&str]) -> Server {
        Server::start_in(fresh_data_dir(), extra)
    }

    /// Starts the server on an existing data directory (e.g. after a restart).
    pub fn start_in(data_dir: PathBuf, extra: &[&str]) -> Server {
        // Uploads stay inside the test's data directory, never in the repository.
        let resources: Vec<std::ffi::OsString> = if extra.contains(&"--resource-dir") {
            Vec::new()
        } else {
            vec![
                "--resource-dir".into(),
                data_dir.join("resource").into_os_string(),
            ]
        };
        let child = Command::new(env!("CARGO_BIN_EXE_fastim"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .args(resources)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start fastim");
        Server::attach(child, data_dir)
    }

    /// A server process just spawned with its stderr piped: waits until it listens.
    pub fn attach(child: Child, data_dir: PathBuf) -> Server {
        Server::try_attach(child, data_dir).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Server::attach`], or what the process logged if it exited before listening.
    /// The metrics address, if any, is logged before the database line; the log is
    /// kept from then on (`FASTIM_TEST_LOG=1` also shows it).
    pub fn try_attach(mut child: Child, data_dir: PathBuf) -> Result<Server, String> {
        let stderr = child.stderr.take().expect("stderr piped");
        let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
        let log = Log::default();
        let (mut addr, mut metrics) = (None, None);
        for line in lines.by_ref() {
            if let Some(rest) = line.split("listening on ").nth(1) {
                addr = Some(rest.trim().parse().expect("address in log line"));
            }
            if let Some(rest) = line.split("metrics on http://").nth(1) {
                let at = rest.trim().trim_end_matches("/metrics");
                metrics = Some(at.parse().expect("metrics address in log line"));
            }
            let done = addr.is_some() && line.contains("database: ");
            log.push(line);
            if done {
                break;
            }
        }
        let Some(addr) = addr else {
            let _ = child.kill();
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            return Err(format!(
                "fastim exited before listening ({status}):\n{}",
                log.text()
            ));
        };
        // Keep draining the log so the server never blocks on a full pipe.
        let show = std::env::var_os("FASTIM_TEST_LOG").is_some();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines {
                if show {
                    eprintln!("server: {line}");
                }
                sink.push(line);
            }
        });
        Ok(Server {
            addr,
            metrics,
            log,
            child,
            data_dir,
            keep_data: false,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// The server's resident memory in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("server alive");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS line");
        kib * 1024
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// A data directory path unique to this test process and call.
pub fn fresh_data_dir() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "fastim-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

impl Server {
    /// SIGKILL, as a crash would: returns the data directory, kept.
    pub fn crash(mut self) -> PathBuf {
        self.keep_data = true;
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.data_dir.clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep_data {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// A raw TCP WebSocket client that can send anything, valid or not.
pub struct RawClient {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

pub const MASK: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

impl RawClient {
    /// Connects and sends `request` verbatim; returns the client and the response head.
    pub fn request(addr: SocketAddr, request: &str) -> (RawClient, String) {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        let mut client = RawClient {
            stream,
            buf: Vec::new(),
        };
        client
            .stream
            .write_all(request.as_bytes())
            .expect("send request");
        let head = client.read_head();
        (client, head)
    }

    /// Connects and completes a valid handshake on `path`.
    pub fn connect(addr: SocketAddr, path: &str) -> RawClient {
        let (client, head) = RawClient::request(addr, &upgrade_request(path));
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        client
    }

    fn read_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end + 4]).into_owned();
                self.buf.drain(..end + 4);
                return head;
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).expect("read response head");
            assert!(n > 0, "connection closed before a response head");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Sends a masked frame.
    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.send(&masked_frame(fin, opcode, payload));
    }

    /// Reads one server frame: (fin, opcode, payload). `None` on EOF.
    pub fn read_frame(&mut self) -> Option<(bool, u8, Vec<u8>)> {
        let (b0, payload) = self.read_frame_raw()?;
        Some((b0 & 0x80 != 0, b0 & 0x0f, payload))
    }

    /// Reads one server frame: its first byte (FIN, RSV, opcode) and payload.
    pub fn read_frame_raw(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                let b1 = self.buf[1];
                assert_eq!(b1 & 0x80, 0, "server frames are never masked");
                let (len, start) = match b1 & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => {
                        let mut be = [0u8; 8];
                        be.copy_from_slice(&self.buf[2..10]);
                        (u64::from_be_bytes(be) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if start > 0 && self.buf.len() >= start + len {
                    let b0 = self.buf[0];
                    let payload = self.buf[start..start + len].to_vec();
                    self.buf.drain(..start + len);
                    return Some((b0, payload));
                }
            }
            let mut chunk = vec![0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read frame: {e}"),
            }
        }
    }

    /// Reads frames until a close frame; returns its code (None for an empty payload).
    pub fn expect_close(&mut self) -> Option<u16> {
        loop {
            let (_, opcode, payload) = self.read_frame().expect("a close frame before EOF");
            if opcode == 0x8 {
                return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
    }

    /// Whether the server closes the TCP connection (EOF or reset) within the read timeout.
    pub fn sees_tcp_close(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

pub fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A client frame, masked with [`MASK`], encoded independently of the server's codec.
pub fn masked_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// A response read by [`Http`].
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// A plain HTTP/1.1 client on one keep-alive connection, with a cookie jar of one
/// cookie, as a browser running the original web client would behave.
pub struct Http {
    pub addr: SocketAddr,
    pub stream: Option<TcpStream>,
    pub cookie: Option<String>,
}

impl Http {
    pub fn new(addr: SocketAddr) -> Http {
        Http {
            addr,
            stream: None,
            cookie: None,
        }
    }

    /// POSTs a form body the way fastIM's client builds it (`encodeURI`).
    pub fn form(&mut self, path: &str, body: &str) -> Response {
        self.request(
            "POST",
            path,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
        )
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(c) = &self.cookie {
            req.push_str(&format!("Cookie: {c}\r\n"));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        let stream = self.stream.get_or_insert_with(|| {
            let s = TcpStream::connect(self.addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            s
        });
        stream.write_all(&bytes).expect("send request");
        let response = read_response_to(stream, method == "HEAD");
        if let Some(set) = response.header("set-cookie") {
            let pair = set.split(';').next().unwrap_or("").to_owned();
            self.cookie = (!pair.ends_with('=')).then_some(pair);
        }
        if response.header("connection") == Some("close") {
            self.stream = None;
        }
        response
    }
}

/// Reads one response with a Content-Length body (from a TCP or a TLS stream).
pub fn read_response(stream: &mut impl Read) -> Response {
    read_response_to(stream, false)
}

/// Reads one response; after `HEAD`, and for 304, there is no body whatever the length says.
pub fn read_response_to(stream: &mut impl Read, head_request: bool) -> Response {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).expect("read response");
        assert!(
            n > 0,
            "connection closed mid-response: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).expect("ascii head");
    let status = head[9..12].parse().expect("status");
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().expect("length"))
        })
        .unwrap_or(0);
    let len = if head_request || status == 304 {
        0
    } else {
        len
    };
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).expect("read body");
    Response { status, head, body }
}

impl Server {
    /// Starts the server on `data_dir` with `extra` arguments, run through `wrapper`
    /// (e.g. `["prlimit", "--as=1073741824", "--"]`) unless it is empty. If the process
    /// exits before it listens, the error holds what it logged (e.g. an unknown flag).
    pub fn try_start_in(
        wrapper: &[&str],
        data_dir: PathBuf,
        extra: &[&str],
    ) -> Result<Server, String> {
        let binary = env!("CARGO_BIN_EXE_fastim");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        command
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .arg("--resource-dir")
            .arg(data_dir.join("resource"))
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = command.spawn().map_err(|e| format!("spawn: {e}"))?;
        Server::try_attach(child, data_dir.clone()).map_err(|e| {
            let _ = std::fs::remove_dir_all(&data_dir);
            format!("{extra:?}: {e}")
        })
    }
}

/// A user created straight in the database, with a session that does not expire:
/// `(id, token)`. For tests that seed their world before the server starts.
pub fn seed_account(db: &mut fastim::store::Db, mobile: &str) -> (i64, String) {
    let user = db
        .create_user(
            fastim::store::NewUser {
                mobile: mobile.into(),
                password_hash: "unused".into(),
                nickname: format!("user {mobile}"),
                avatar: String::new(),
                sex: "U".into(),
                memo: String::new(),
            },
            1,
        )
        .expect("user");
    let token = fastim::secret::new_token();
    db.create_session(user.id, fastim::secret::token_digest(&token), i64::MAX / 2)
        .expect("session");
    (user.id, token)
}

/// An upgrade request on `path` that offers `extensions` (a Sec-WebSocket-Extensions value).
pub fn upgrade_request_offering(path: &str, extensions: &str) -> String {
    upgrade_request(path).replace(
        "\r\n\r\n",
        &format!("\r\nSec-WebSocket-Extensions: {extensions}\r\n\r\n"),
    )
}

/// A client's permessage-deflate compression of one message, written with flate2
/// directly (RFC 7692 §7.2.1): raw DEFLATE, sync flush, the 4-byte tail removed.
pub fn deflate_message(data: &[u8]) -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    loop {
        let used = c.total_in() as usize;
        c.compress_vec(&data[used..], &mut out, FlushCompress::Sync)
            .expect("compress");
        if c.total_in() as usize == data.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity().max(64));
    }
    assert!(out.ends_with(&[0x00, 0x00, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// Inflates a server's compressed message (§7.2.2: the tail put back) with a
/// decompressor of `window_bits`.
pub fn inflate_message(payload: &[u8], window_bits: u8) -> Vec<u8> {
    use flate2::{Decompress, FlushDecompress};
    let mut d = Decompress::new_with_window_bits(false, window_bits);
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
    let mut out = Vec::with_capacity(input.len() * 4 + 64);
    loop {
        let used = d.total_in() as usize;
        d.decompress_vec(&input[used..], &mut out, FlushDecompress::Sync)
            .expect("the server's compressed data inflates");
        if d.total_in() as usize == input.len() && out.len() < out.capacity() {
            return out;
        }
        out.reserve(out.capacity());
    }
}

/// A form POST with a bearer token on a connection of its own; the reply's JSON.
pub fn post_as(addr: SocketAddr, token: &str, path: &str, body: &str) -> serde_json::Value {
    let bearer = format!("Bearer {token}");
    Http::new(addr)
        .request(
            "POST",
            path,
            &[
                ("Authorization", &bearer),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            body.as_bytes(),
        )
        .json()
}

/// Makes `a` and `b` friends as people do: `a` asks `b` (`/contact/addfriend`, by id),
/// `b` accepts (`/contact/accept`). Each is `(id, token)`; panics unless both succeed.
pub fn befriend(addr: SocketAddr, a: (i64, &str), b: (i64, &str)) {
    let asked = post_as(addr, a.1, "/contact/addfriend", &format!("dstid={}", b.0));
    assert_eq!(
        (&asked["code"], &asked["data"]["status"]),
        (&0.into(), &"requested".into()),
        "{asked}"
    );
    let accepted = post_as(addr, b.1, "/contact/accept", &format!("dstid={}", a.0));
    assert_eq!(accepted["code"], 0, "{accepted}");
}
