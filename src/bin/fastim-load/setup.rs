//! Setting up a chat run over fastim's HTTP API: users, a group, friendships.
//!
//! Plain HTTP/1.1 over blocking `std` sockets, kept alive; a few threads make
//! requests in parallel (registration hashes a password on the server, tens of
//! milliseconds each, so a thousand users take a while).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest response accepted (the API's replies here are a few hundred bytes).
const MAX_RESPONSE: usize = 1024 * 1024;
/// Longest wait for one reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// A logged-in user.
#[derive(Clone, Debug)]
pub struct User {
    pub id: i64,
    pub token: String,
}

/// One kept-alive HTTP/1.1 connection to the server.
pub struct Http {
    addr: SocketAddr,
    authority: String,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

/// An API reply: the HTTP status and the JSON body.
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    /// The envelope's `code` (0 for success).
    fn code(&self) -> i64 {
        self.body
            .get("code")
            .and_then(Value::as_i64)
            .unwrap_or(-999)
    }

    fn msg(&self) -> &str {
        self.body.get("msg").and_then(Value::as_str).unwrap_or("")
    }

    fn describe(&self) -> String {
        format!("HTTP {} {}", self.status, self.body)
    }
}

impl Http {
    pub fn new(addr: SocketAddr, authority: &str) -> Http {
        Http {
            addr,
            authority: authority.to_string(),
            stream: None,
            buf: Vec::new(),
        }
    }

    /// `POST path` with a form body; retried once on a fresh connection when the
    /// kept-alive one turns out to be closed.
    pub fn post(&mut self, path: &str, token: Option<&str>, form: &str) -> Result<Reply, String> {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            self.authority,
            form.len()
        );
        if let Some(token) = token {
            request.push_str("Authorization: Bearer ");
            request.push_str(token);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        request.push_str(form);
        let reused = self.stream.is_some();
        match self.exchange(request.as_bytes()) {
            Ok(reply) => Ok(reply),
            Err(e) if reused && e.kind() != io::ErrorKind::InvalidData => {
                self.stream = None;
                self.exchange(request.as_bytes())
                    .map_err(|e| format!("POST {path}: {e}"))
            }
            Err(e) => Err(format!("POST {path}: {e}")),
        }
    }

    fn exchange(&mut self, request: &[u8]) -> io::Result<Reply> {
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(10))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(REPLY_TIMEOUT))?;
            s.set_write_timeout(Some(REPLY_TIMEOUT))?;
            self.stream = Some(s);
        }
        let result = self.exchange_on_stream(request);
        if result.is_err() {
            if let Some(s) = self.stream.take() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        result
    }

    fn exchange_on_stream(&mut self, request: &[u8]) -> io::Result<Reply> {
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| io::Error::other("not connected"))?;
        stream.write_all(request)?;
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            let head_len = match response.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) if self.buf.len() < MAX_RESPONSE => continue,
                Ok(httparse::Status::Partial) => return Err(bad("response head too long".into())),
                Err(e) => return Err(bad(format!("bad response: {e}"))),
            };
            let header = |name: &str| {
                response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
            };
            let length: usize = header("content-length")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| bad("response without Content-Length".into()))?;
            let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
            let status = response.code.unwrap_or(0);
            if length > MAX_RESPONSE {
                return Err(bad("response body too long".into()));
            }
            while self.buf.len() < head_len + length {
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
            let body: Value = serde_json::from_slice(&self.buf[head_len..head_len + length])
                .map_err(|e| bad(format!("HTTP {status}: body is not JSON: {e}")))?;
            if close {
                self.stream = None;
            }
            return Ok(Reply { status, body });
        }
    }

    /// Registers `mobile` (or logs in when it is already registered, as on a server
    /// that has seen an earlier run).
    pub fn register_or_login(
        &mut self,
        mobile: &str,
        passwd: &str,
        nickname: &str,
    ) -> Result<User, String> {
        let reply = self.post(
            "/user/register",
            None,
            &format!("mobile={mobile}&passwd={passwd}&nickname={nickname}"),
        )?;
        let reply = if reply.status == 200
            && reply.code() != 0
            && reply.msg().contains("already registered")
        {
            self.post(
                "/user/login",
                None,
                &format!("mobile={mobile}&passwd={passwd}"),
            )?
        } else {
            reply
        };
        if reply.status != 200 || reply.code() != 0 {
            return Err(format!("registering {mobile}: {}", reply.describe()));
        }
        let data = reply.body.get("data");
        let id = data.and_then(|d| d.get("id")).and_then(Value::as_i64);
        let token = data.and_then(|d| d.get("token")).and_then(Value::as_str);
        match (id, token) {
            (Some(id), Some(token)) => Ok(User {
                id,
                token: token.to_string(),
            }),
            _ => Err(format!(
                "registering {mobile}: no id or token in {}",
                reply.body
            )),
        }
    }

    /// Creates a group owned by `user`; its id.
    pub fn create_group(&mut self, user: &User, name: &str) -> Result<i64, String> {
        let reply = self.post(
            "/contact/createcommunity",
            Some(&user.token),
            &format!("name={name}"),
        )?;
        if reply.status != 200 || reply.code() != 0 {
            return Err(format!("creating group {name}: {}", reply.describe()));
        }
        reply
            .body
            .get("data")
            .and_then(|d| d.get("id"))
            .and_then(Value::as_i64)
            .ok_or_else(|| format!("creating group {name}: no id in {}", reply.body))
    }

    /// `user` joins group `group` (already being a member is fine).
    pub fn join_group(&mut self, user: &User, group: i64) -> Result<(), String> {
        let reply = self.post(
            "/contact/joincommunity",
            Some(&user.token),
            &format!("dstid={group}"),
        )?;
        if reply.status == 200 && (reply.code() == 0 || reply.msg().contains("already a member")) {
            Ok(())
        } else {
            Err(format!(
                "user {} joining group {group}: {}",
                user.id,
                reply.describe()
            ))
        }
    }

    /// `user` and `friend` become friends (being friends already is fine): `user` asks
    /// and `friend` accepts, as people do (a server with `--instant-friends` makes them
    /// friends at the request).
    pub fn add_friend(&mut self, user: &User, friend: &User) -> Result<(), String> {
        let fail = |what: &str, reply: &Reply| {
            Err(format!(
                "user {} {what} {}: {}",
                user.id,
                friend.id,
                reply.describe()
            ))
        };
        let reply = self.post(
            "/contact/addfriend",
            Some(&user.token),
            &format!("dstid={}", friend.id),
        )?;
        if reply.status != 200 || reply.code() != 0 {
            if reply.msg().contains("already friends") {
                return Ok(());
            }
            return fail("asking", &reply);
        }
        let requested = reply
            .body
            .get("data")
            .and_then(|d| d.get("status"))
            .and_then(Value::as_str)
            == Some("requested");
        if !requested {
            return Ok(());
        }
        let reply = self.post(
            "/contact/accept",
            Some(&friend.token),
            &format!("dstid={}", user.id),
        )?;
        if reply.status == 200 && reply.code() == 0 {
            Ok(())
        } else {
            fail("being accepted by", &reply)
        }
    }
}

/// Runs `task(http, i)` for every `i` in `0..n` on `parallel` threads, each with
/// its own kept-alive connection; results in index order. Stops at the first
/// error or at `deadline`. `what` names the work in progress reports.
pub fn parallel<T: Send>(
    addr: SocketAddr,
    authority: &str,
    n: usize,
    parallel: usize,
    deadline: Instant,
    what: &str,
    task: impl Fn(&mut Http, usize) -> Result<T, String> + Sync,
) -> Result<Vec<T>, String> {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let failed: Mutex<Option<String>> = Mutex::new(None);
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..n).map(|_| None).collect());
    let started = Instant::now();
    thread::scope(|s| {
        for _ in 0..parallel.clamp(1, n.max(1)) {
            s.spawn(|| {
                let mut http = Http::new(addr, authority);
                loop {
                    if failed.lock().map_or(true, |f| f.is_some()) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let outcome = if Instant::now() >= deadline {
                        Err(format!("global timeout reached while {what}"))
                    } else {
                        task(&mut http, i)
                    };
                    match outcome {
                        Ok(v) => {
                            if let Ok(mut r) = results.lock() {
                                r[i] = Some(v);
                            }
                            let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                            if n >= 200 && d % (n / 5) == 0 {
                                eprintln!(
                                    "  {what}: {d} of {n} ({:.1} s)",
                                    started.elapsed().as_secs_f64()
                                );
                            }
                        }
                        Err(e) => {
                            if let Ok(mut f) = failed.lock() {
                                f.get_or_insert(e);
                            }
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().map_err(|_| "a setup thread panicked")? {
        return Err(e);
    }
    results
        .into_inner()
        .map_err(|_| "a setup thread panicked")?
        .into_iter()
        .collect::<Option<Vec<T>>>()
        .ok_or_else(|| format!("{what}: some requests were not made"))
}
