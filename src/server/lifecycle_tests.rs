//! The connection lifecycle on virtual time: every state, deadline and budget,
//! driven the way `server::mod` drives it, with fake worker pools and no socket.

use std::io::{self, Write};
use std::net::Ipv4Addr;

use super::*;
use crate::store::Peer;
use crate::throttle::ThrottleConfig;
use crate::ws::OpCode;
use crate::ws::frame::{decode_header, write_masked_frame};

// ---- harness ----

const CONN: ConnRef = ConnRef { key: 5, serial: 9 };
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

// Distinct values, so that a deadline tells which timeout it is.
const HANDSHAKE: u64 = 1_000;
const CLOSE: u64 = 1_500;
const FRAME: u64 = 2_000;
const PING: u64 = 4_000;
const ECHO_IDLE: u64 = 5_000;
const IN_FLIGHT: usize = 3;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn test_config() -> Config {
    Config {
        handshake_timeout: ms(HANDSHAKE),
        close_timeout: ms(CLOSE),
        frame_timeout: ms(FRAME),
        ping_interval: ms(PING),
        echo_idle_timeout: ms(ECHO_IDLE),
        max_in_flight: IN_FLIGHT,
        ..Config::default()
    }
}

/// Worker pools and the chat writer, recorded; each can be told to refuse.
struct FakeServices {
    jobs: Vec<Job>,
    chats: Vec<PendingChat>,
    fanouts: Vec<crate::im::cmd::Fanout>,
    refuse_jobs: bool,
    refuse_chats: bool,
    uploads: Rc<Cell<usize>>,
    max_uploads: usize,
}

impl Services for FakeServices {
    fn submit(&mut self, job: Job) -> Result<(), Busy> {
        if self.refuse_jobs {
            return Err(Busy);
        }
        self.jobs.push(job);
        Ok(())
    }

    fn submit_chat(&mut self, chat: PendingChat) -> Result<(), Busy> {
        if self.refuse_chats {
            return Err(Busy);
        }
        self.chats.push(chat);
        Ok(())
    }

    fn fan_out(&mut self, fanouts: Vec<crate::im::cmd::Fanout>) {
        self.fanouts.extend(fanouts);
    }

    fn upload_slot(&mut self) -> Option<UploadSlot> {
        UploadSlot::take(&self.uploads, self.max_uploads)
    }
}

/// One connection and everything around it, driven like the real loop: unconsumed
/// input is kept in the machine (`keep_pending`) and offered again first.
struct Harness {
    t0: Instant,
    config: Config,
    services: FakeServices,
    index: ChatIndex,
    throttle: Throttle,
    life: Lifecycle,
    codec: crate::ws::Codec,
    metrics: super::metrics::Counters,
}

/// Users 1 and 2 are friends and members of group 100; user 3 is a stranger.
fn harness() -> Harness {
    harness_with(test_config(), ThrottleConfig::default())
}

fn harness_with(config: Config, throttle: ThrottleConfig) -> Harness {
    let t0 = Instant::now();
    Harness {
        t0,
        life: Lifecycle::new(t0, &config),
        config,
        services: FakeServices {
            jobs: Vec::new(),
            chats: Vec::new(),
            fanouts: Vec::new(),
            refuse_jobs: false,
            refuse_chats: false,
            uploads: Rc::new(Cell::new(0)),
            max_uploads: 1,
        },
        index: ChatIndex::new([(100, 1), (100, 2), (200, 3)]).with_friends([(1, 2)]),
        throttle: Throttle::new(throttle),
        codec: crate::ws::Codec::default(),
        metrics: super::metrics::Counters::default(),
    }
}

impl Harness {
    fn at(&self, t: u64) -> Instant {
        self.t0 + ms(t)
    }

    /// The machine and an [`Env`] over the rest.
    fn parts(&mut self) -> (&mut Lifecycle, Env<'_>) {
        (
            &mut self.life,
            Env {
                conn: CONN,
                config: &self.config,
                services: &mut self.services,
                index: &mut self.index,
                throttle: &mut self.throttle,
                peer: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
                codec: &mut self.codec,
                metrics: &mut self.metrics,
            },
        )
    }

    /// Bytes arrive at `t`: kept input first, then `bytes`. Returns how many bytes
    /// are still kept unconsumed afterwards.
    fn feed(&mut self, t: u64, bytes: &[u8]) -> usize {
        let now = self.at(t);
        let (life, mut env) = self.parts();
        let mut buf = life.take_pending();
        buf.extend_from_slice(bytes);
        let mut consumed = life.handle_bytes(now, &mut buf, &mut env);
        // As the driver does: a corked call is offered the rest at once.
        while life.take_corked() {
            consumed += life.handle_bytes(now, &mut buf[consumed..], &mut env);
        }
        assert!(consumed <= buf.len());
        if consumed < buf.len() {
            life.keep_pending(&buf[consumed..]);
        }
        buf.len() - consumed
    }

    /// What the driver does once a budget frees: offer the kept input again.
    fn resume(&mut self, t: u64) -> usize {
        self.feed(t, &[])
    }

    fn kept(&mut self) -> usize {
        let pending = self.life.take_pending();
        let n = pending.len();
        self.life.keep_pending(&pending);
        n
    }

    fn timeout(&mut self, t: u64) -> Verdict {
        let now = self.at(t);
        let (life, mut env) = self.parts();
        life.handle_timeout(now, &mut env)
    }

    /// The next deadline, in ms after `t0`.
    fn deadline(&self) -> Option<u64> {
        self.life
            .poll_timeout(&self.config)
            .map(|d| d.duration_since(self.t0).as_millis() as u64)
    }

    /// Writes everything queued, as a driver whose socket takes it all.
    fn flush(&mut self, t: u64) -> (Vec<u8>, AfterFlush) {
        let mut written = Vec::new();
        let flushed = self
            .life
            .out
            .flush_to(&mut written, &mut crate::ws::Spares::default())
            .expect("a Vec takes all");
        assert_eq!(flushed, Flushed::All);
        let after = self
            .life
            .handle_flushed(self.at(t), flushed, !written.is_empty());
        (written, after)
    }

    fn wants_read(&self) -> bool {
        self.life.wants_read(&self.config)
    }

    fn take_resume(&mut self) -> bool {
        self.life.take_resume(&self.config)
    }

    fn close(&mut self, t: u64, code: CloseCode) -> Verdict {
        let now = self.at(t);
        let (life, mut env) = self.parts();
        life.close(now, code, "going away", &mut env)
    }

    fn finish_api(&mut self, t: u64, reply: ApiReply) {
        let now = self.at(t);
        let (life, mut env) = self.parts();
        life.finish_api(now, reply, &mut env);
    }

    fn finish_auth(&mut self, t: u64, user: Option<i64>) {
        let now = self.at(t);
        let (life, mut env) = self.parts();
        life.finish_auth(now, user, 7, &mut env);
    }

    /// A sync reply of `frames`, counted as the worker counts them.
    fn finish_sync(&mut self, frames: &[u8]) {
        let reply = SyncReply {
            messages: self::frames(frames).len() as u64,
            compressed: 0,
            frames: frames.to_vec(),
        };
        let (life, mut env) = self.parts();
        life.finish_sync(&reply, &mut env);
    }

    fn state(&self) -> &'static str {
        match self.life.state() {
            State::Request => "Request",
            State::Body { .. } => "Body",
            State::Waiting { .. } => "Waiting",
            State::Authorizing(_) => "Authorizing",
            State::WebSocket { .. } => "WebSocket",
            State::Closing => "Closing",
            State::Lingering => "Lingering",
        }
    }

    fn job(&self, i: usize) -> &Job {
        self.services.jobs.get(i).expect("a job was submitted")
    }

    /// An `/echo` socket opened at t = 0.
    fn open_echo(&mut self) {
        assert_eq!(self.feed(0, ECHO_UPGRADE.as_bytes()), 0);
        let (out, _) = self.flush(0);
        assert_eq!(status(&out), 101);
        assert_eq!(self.state(), "WebSocket");
    }

    /// A `/chat` socket of `user` opened at t = 0, its token checked by a worker.
    fn open_chat(&mut self, user: i64) {
        assert_eq!(self.feed(0, chat_upgrade("").as_bytes()), 0);
        assert!(matches!(self.job(0).work, Work::Authenticate { ref token } if token == "tok"));
        self.services.jobs.clear();
        self.finish_auth(0, Some(user));
        let (out, _) = self.flush(0);
        assert_eq!(status(&out), 101);
        assert_eq!(self.life.chat_user(), Some((user, 7)));
    }
}

// ---- requests ----

const GET_EMOJI: &str = "GET /emoji.js HTTP/1.1\r\nHost: a\r\n\r\n";

const ECHO_UPGRADE: &str = "GET /echo HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

fn chat_upgrade(query: &str) -> String {
    format!(
        "GET /chat?token=tok{query} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    )
}

fn post(path: &str, body: &str, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         {extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn upload_head(content_length: usize) -> String {
    format!(
        "POST /attach/upload HTTP/1.1\r\nHost: a\r\nCookie: fastim_token=tok\r\n\
         Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {content_length}\r\n\r\n"
    )
}

fn masked(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_masked_frame(&mut out, true, opcode, payload, KEY);
    out
}

fn masked_text(text: &str) -> Vec<u8> {
    masked(OpCode::Text, text.as_bytes())
}

fn reply(status: Status, body: &str, set_cookie: Option<&str>) -> ApiReply {
    ApiReply {
        status,
        body: body.as_bytes().to_vec(),
        set_cookie: set_cookie.map(str::to_owned),
        effects: Vec::new(),
    }
}

// ---- output ----

/// One HTTP response as written.
#[derive(Debug)]
struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.split("\r\n").skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// The HTTP responses at the start of `out`, and the WebSocket frames after a 101.
fn parse_output(out: &[u8]) -> (Vec<Response>, Vec<(OpCode, Vec<u8>)>) {
    let mut responses = Vec::new();
    let mut pos = 0;
    while out[pos..].starts_with(b"HTTP/1.1 ") {
        let end = out[pos..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a complete head")
            + pos
            + 4;
        let head = String::from_utf8(out[pos..end].to_vec()).expect("an ASCII head");
        let status = head[9..12].parse().expect("a status code");
        let mut response = Response {
            status,
            head,
            body: Vec::new(),
        };
        let len: usize = response
            .header("content-length")
            .map_or(0, |v| v.parse().expect("a length"));
        response.body = out[end..end + len].to_vec();
        pos = end + len;
        responses.push(response);
        if status == 101 {
            break;
        }
    }
    (responses, frames(&out[pos..]))
}

fn responses(out: &[u8]) -> Vec<Response> {
    let (responses, frames) = parse_output(out);
    assert!(frames.is_empty(), "no frames expected: {frames:?}");
    responses
}

fn response(out: &[u8]) -> Response {
    let mut all = responses(out);
    assert_eq!(all.len(), 1, "{}", String::from_utf8_lossy(out));
    all.remove(0)
}

fn status(out: &[u8]) -> u16 {
    parse_output(out).0.first().expect("a response").status
}

/// Server frames (unmasked), all complete.
fn frames(mut bytes: &[u8]) -> Vec<(OpCode, Vec<u8>)> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let (header, len) = decode_header(bytes)
            .expect("a valid header")
            .expect("a complete header");
        assert!(header.fin && header.mask.is_none());
        let end = len + header.payload_len as usize;
        frames.push((header.opcode, bytes[len..end].to_vec()));
        bytes = &bytes[end..];
    }
    frames
}

fn close_code(frame: &(OpCode, Vec<u8>)) -> u16 {
    assert_eq!(frame.0, OpCode::Close);
    u16::from_be_bytes([frame.1[0], frame.1[1]])
}

/// A chat reply frame as JSON.
fn json(frame: &(OpCode, Vec<u8>)) -> serde_json::Value {
    assert_eq!(frame.0, OpCode::Text);
    serde_json::from_slice(&frame.1).expect("a JSON frame")
}

/// A socket that takes `budget` bytes, then blocks.
struct Trickle {
    budget: usize,
}

impl Write for Trickle {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.budget == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.budget);
        self.budget -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// ---- Request ----

#[test]
fn a_request_head_must_arrive_before_the_handshake_deadline() {
    let mut h = harness();
    assert_eq!(h.deadline(), Some(HANDSHAKE));
    assert_eq!(h.feed(300, b"GET / HTTP/1.1\r\nHost"), 20);
    // A partial head does not move the deadline.
    assert_eq!(h.deadline(), Some(HANDSHAKE));
    assert_eq!(h.timeout(HANDSHAKE - 1), Verdict::Keep);
    assert_eq!(h.timeout(HANDSHAKE), Verdict::Drop);
    assert_eq!(h.timeout(HANDSHAKE + 1), Verdict::Drop);
    assert!(h.life.out.is_empty());
}

#[test]
fn a_stream_split_at_every_byte_gives_the_same_output_as_whole() {
    let mut stream = GET_EMOJI.as_bytes().to_vec();
    stream.extend_from_slice(ECHO_UPGRADE.as_bytes());
    stream.extend_from_slice(&masked_text("split anywhere"));
    stream.extend_from_slice(&masked(OpCode::Ping, b"p"));
    let mut whole = harness();
    assert_eq!(whole.feed(0, &stream), 0);
    let (expected, _) = whole.flush(0);
    let (responses, frames) = parse_output(&expected);
    assert_eq!(
        responses.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 101]
    );
    assert_eq!(
        frames,
        [
            (OpCode::Text, b"split anywhere".to_vec()),
            (OpCode::Pong, b"p".to_vec())
        ]
    );
    for cut in 0..=stream.len() {
        let mut h = harness();
        h.feed(0, &stream[..cut]);
        assert_eq!(h.feed(1, &stream[cut..]), 0, "cut at {cut}");
        assert_eq!(h.flush(1).0, expected, "cut at {cut}");
        assert_eq!(h.state(), "WebSocket", "cut at {cut}");
    }
}

#[test]
fn a_head_over_8_kib_gets_431_and_closes() {
    let mut h = harness();
    let mut head = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
    head.resize(config::MAX_REQUEST_HEAD + 10, b'a');
    // Refused as soon as the limit is reached, without waiting for the end of the head.
    assert_eq!(h.feed(10, &head), 0);
    assert_eq!(h.state(), "Closing");
    let r = response(&h.flush(10).0);
    assert_eq!(r.status, 431);
    assert_eq!(r.header("connection"), Some("close"));
}

#[test]
fn a_malformed_head_gets_400_and_closes() {
    let mut h = harness();
    assert_eq!(h.feed(10, b"GET / HTTP/1.1\nHost: a\n\n"), 0);
    assert_eq!(h.state(), "Closing");
    assert_eq!(response(&h.flush(10).0).status, 400);
}

#[test]
fn pipelined_gets_stop_at_the_output_budget_and_resume_once_drained() {
    let mut h = harness();
    let n = 100;
    let left = h.feed(10, GET_EMOJI.repeat(n).as_bytes());
    // Consumption stopped once the replies went over the budget.
    assert!(left > 0);
    assert!(h.life.out.len() > config::HTTP_OUTPUT_BUDGET);
    assert!(!h.wants_read());
    assert!(!h.take_resume());
    // Offered again while still over the budget, nothing more is taken.
    assert_eq!(h.resume(20), left);
    let mut out = Vec::new();
    let mut rounds = 0;
    while h.kept() > 0 {
        let (bytes, after) = h.flush(30);
        assert_eq!(after, AfterFlush::Nothing);
        out.extend_from_slice(&bytes);
        assert!(h.wants_read());
        assert!(h.take_resume(), "draining frees the budget");
        h.resume(30);
        rounds += 1;
        assert!(rounds < n);
    }
    out.extend_from_slice(&h.flush(30).0);
    let all = responses(&out);
    assert_eq!(all.len(), n);
    assert!(all.iter().all(|r| r.status == 200 && !r.body.is_empty()));
    assert_eq!(h.state(), "Request");
}

#[test]
fn keep_alive_resets_the_head_deadline() {
    let mut h = harness();
    assert_eq!(h.feed(600, GET_EMOJI.as_bytes()), 0);
    assert_eq!(h.state(), "Request");
    assert_eq!(h.deadline(), Some(600 + HANDSHAKE));
    assert_eq!(h.timeout(HANDSHAKE), Verdict::Keep);
    assert_eq!(h.timeout(600 + HANDSHAKE), Verdict::Drop);
}

#[test]
fn connection_close_answers_then_shuts_down_the_write_side_and_lingers() {
    let mut h = harness();
    let req =
        "GET /emoji.js HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n";
    // What follows the last request is discarded, not answered.
    assert_eq!(h.feed(100, req.as_bytes()), 0);
    assert_eq!(h.state(), "Closing");
    assert_eq!(h.deadline(), Some(100 + CLOSE));
    let (out, after) = h.flush(200);
    let r = response(&out);
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert_eq!(after, AfterFlush::ShutdownWrite);
    assert_eq!(h.state(), "Lingering");
    // Lingering reads and discards until the peer closes or the deadline passes.
    assert!(h.wants_read());
    assert_eq!(h.feed(300, b"more junk"), 0);
    assert!(h.life.out.is_empty());
    assert_eq!(h.deadline(), Some(100 + CLOSE));
    assert_eq!(h.timeout(100 + CLOSE - 1), Verdict::Keep);
    assert_eq!(h.timeout(100 + CLOSE), Verdict::Drop);
}

#[test]
fn closing_is_dropped_at_the_close_timeout_if_the_reply_never_leaves() {
    let mut h = harness();
    assert_eq!(h.feed(100, b"GET /\nbad\n\n"), 0);
    assert_eq!(h.state(), "Closing");
    assert_eq!(h.feed(200, b"ignored"), 0);
    assert_eq!(h.timeout(100 + CLOSE - 1), Verdict::Keep);
    assert_eq!(h.timeout(100 + CLOSE), Verdict::Drop);
    // A partial flush keeps it closing.
    let mut h = harness();
    h.feed(100, b"GET /\nbad\n\n");
    let flushed = h
        .life
        .out
        .flush_to(
            &mut Trickle { budget: 10 },
            &mut crate::ws::Spares::default(),
        )
        .expect("blocks");
    assert_eq!(flushed, Flushed::Blocked);
    let after = h.life.handle_flushed(h.at(150), flushed, true);
    assert_eq!((after, h.state()), (AfterFlush::Nothing, "Closing"));
}

#[test]
fn a_file_from_disk_is_read_by_a_worker_and_finish_response_writes_it() {
    let mut h = harness_with(
        Config {
            static_dir: Some("/nonexistent-static".into()),
            ..test_config()
        },
        ThrottleConfig::default(),
    );
    let left = h.feed(100, format!("{GET_EMOJI}{GET_EMOJI}").as_bytes());
    assert_eq!(left, GET_EMOJI.len());
    assert_eq!(h.state(), "Waiting");
    let Work::ReadFile(file) = &h.job(0).work else {
        panic!("{:?}", h.job(0).work);
    };
    assert!(file.path.ends_with("emoji.js") && file.keep_alive);
    assert_eq!(h.deadline(), Some(100 + HANDSHAKE));
    let response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    h.life.finish_response(h.at(400), response, &h.config);
    assert_eq!(h.state(), "Request");
    assert_eq!(h.deadline(), Some(400 + HANDSHAKE));
    assert!(h.take_resume(), "the pipelined request is read next");
    assert_eq!(h.resume(400), 0);
    assert_eq!(h.services.jobs.len(), 2);
    assert_eq!(h.flush(400).0, response);
}

// ---- API requests ----

#[test]
fn an_api_request_goes_to_a_worker_with_its_body_and_nothing_is_read_while_waiting() {
    let mut h = harness();
    let req = post("/user/me", "a=1&b=2", "Authorization: Bearer tok\r\n");
    let left = h.feed(100, format!("{req}{GET_EMOJI}").as_bytes());
    assert_eq!(left, GET_EMOJI.len(), "the next request waits");
    assert_eq!(h.state(), "Waiting");
    let job = h.job(0);
    assert_eq!(job.conn, CONN);
    let Work::Api(api) = &job.work else {
        panic!("{:?}", job.work);
    };
    assert_eq!(api.route, api::Route::Me);
    assert_eq!(api.body, b"a=1&b=2");
    assert_eq!(api.token.as_deref(), Some("tok"));
    assert!(!h.wants_read());
    assert_eq!(h.life.read_allowance(), 0);
    assert_eq!(h.resume(200), left);
    assert!(h.life.out.is_empty());
    assert_eq!(h.deadline(), Some(100 + HANDSHAKE));
}

#[test]
fn an_api_body_that_has_not_all_arrived_is_kept_within_the_input_allowance() {
    let mut h = harness();
    let req = post("/user/me", "0123456789", "");
    let split = req.len() - 4;
    assert_eq!(h.feed(100, &req.as_bytes()[..split]), split);
    assert!(h.services.jobs.is_empty());
    assert_eq!(h.state(), "Request");
    assert_eq!(
        h.life.read_allowance(),
        config::MAX_REQUEST_HEAD + config::MAX_API_BODY - split
    );
    assert_eq!(h.feed(200, &req.as_bytes()[split..]), 0);
    let Work::Api(api) = &h.job(0).work else {
        panic!("an API job");
    };
    assert_eq!(api.body, b"0123456789");
}

#[test]
fn a_worker_that_does_not_answer_in_time_gets_503_with_retry_after_and_its_job_cancelled() {
    let mut h = harness();
    h.feed(100, post("/user/me", "", "").as_bytes());
    let ticket = h.job(0).ticket.clone();
    assert_eq!(h.deadline(), Some(100 + HANDSHAKE));
    assert_eq!(h.timeout(100 + HANDSHAKE - 1), Verdict::Keep);
    assert!(!ticket.is_cancelled());
    assert_eq!(h.timeout(100 + HANDSHAKE), Verdict::Keep);
    assert!(ticket.is_cancelled());
    assert_eq!(h.state(), "Closing");
    let r = response(&h.flush(1200).0);
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.json()["code"], 503);
    // The answer that comes too late is ignored.
    h.finish_api(1300, reply(Status::Ok, "{}", None));
    assert!(h.life.out.is_empty());
}

#[test]
fn a_busy_worker_pool_is_answered_with_503_at_once() {
    let mut h = harness();
    h.services.refuse_jobs = true;
    assert_eq!(h.feed(100, post("/user/me", "", "").as_bytes()), 0);
    assert_eq!(h.state(), "Closing");
    let r = response(&h.flush(100).0);
    assert_eq!((r.status, r.header("retry-after")), (503, Some("1")));
}

#[test]
fn finish_api_writes_the_reply_and_the_next_pipelined_request_is_read() {
    let mut h = harness();
    let req = post("/user/me", "", "");
    h.feed(100, format!("{req}{GET_EMOJI}").as_bytes());
    let ticket = h.job(0).ticket.clone();
    h.finish_api(300, reply(Status::Ok, r#"{"code":0}"#, None));
    assert_eq!(h.state(), "Request");
    assert_eq!(h.deadline(), Some(300 + HANDSHAKE));
    assert!(h.take_resume());
    assert_eq!(h.resume(300), 0);
    let all = responses(&h.flush(300).0);
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].status, 200);
    assert_eq!(all[0].body, br#"{"code":0}"#);
    assert_eq!(all[0].header("connection"), Some("keep-alive"));
    assert_eq!(all[0].header("cache-control"), Some("no-store"));
    assert_eq!(all[1].status, 200);
    // Answered: dropping the connection now cancels nothing.
    drop(h);
    assert!(!ticket.is_cancelled());
}

#[test]
fn dropping_the_connection_cancels_its_outstanding_job() {
    let mut h = harness();
    h.feed(100, post("/user/me", "", "").as_bytes());
    let ticket = h.job(0).ticket.clone();
    drop(h.life);
    assert!(ticket.is_cancelled());
}

// ---- login throttle ----

fn one_login_a_minute() -> ThrottleConfig {
    ThrottleConfig {
        login_per_address_per_minute: 1,
        ..ThrottleConfig::default()
    }
}

#[test]
fn a_second_login_within_the_minute_gets_429_with_retry_after_and_no_job() {
    let mut h = harness_with(test_config(), one_login_a_minute());
    let login = post("/user/login", "mobile=5550001&passwd=secret1", "");
    assert_eq!(h.feed(100, login.as_bytes()), 0);
    assert!(matches!(&h.job(0).work, Work::Api(r) if r.route == api::Route::Login));
    h.finish_api(
        200,
        reply(Status::Ok, r#"{"code":0}"#, Some("fastim_token=x")),
    );
    h.flush(200);
    assert_eq!(h.feed(300, login.as_bytes()), 0);
    assert_eq!(
        h.services.jobs.len(),
        1,
        "the refused login reaches no worker"
    );
    let r = response(&h.flush(300).0);
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("60"));
    assert_eq!(r.json()["code"], 429);
    // A throttled client keeps its connection.
    assert_eq!(h.state(), "Request");
    assert_eq!(r.header("connection"), Some("keep-alive"));
}

#[test]
fn a_failed_login_reply_is_recorded_and_a_successful_one_forgets_the_failures() {
    let mut h = harness();
    let login = post("/user/login", "mobile=5550002&passwd=wrong", "");
    h.feed(100, login.as_bytes());
    let before = h.throttle.tracked();
    // fastIM's wrong password: HTTP 200, code -1, no cookie.
    h.finish_api(200, reply(Status::Ok, r#"{"code":-1}"#, None));
    assert_eq!(h.throttle.tracked(), before + 1, "the account is failing");
    h.feed(300, login.as_bytes());
    h.finish_api(
        400,
        reply(Status::Ok, r#"{"code":0}"#, Some("fastim_token=x")),
    );
    assert_eq!(h.throttle.tracked(), before, "the failures are forgotten");
    // A reply that is neither (400: unparseable) records nothing.
    h.feed(500, login.as_bytes());
    h.finish_api(600, reply(Status::BadRequest, r#"{"code":400}"#, None));
    assert_eq!(h.throttle.tracked(), before);
}

// ---- uploads ----

#[test]
fn an_upload_head_asks_for_its_token_before_any_body_byte_is_read() {
    let mut h = harness();
    let left = h.feed(100, format!("{}0123456789", upload_head(10)).as_bytes());
    assert_eq!(left, 10, "no body byte is consumed");
    assert_eq!(h.state(), "Authorizing");
    assert!(matches!(&h.job(0).work, Work::Authenticate { token } if token == "tok"));
    assert!(!h.wants_read());
    assert_eq!(h.life.read_allowance(), 0);
    assert_eq!(h.resume(200), 10);
    assert_eq!(h.services.uploads.get(), 0, "no slot is held yet");
}

fn anonymous_upload_head(content_length: usize) -> String {
    format!(
        "POST /attach/upload HTTP/1.1\r\nHost: a\r\n\
         Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {content_length}\r\n\r\n"
    )
}

#[test]
fn an_upload_without_a_session_reads_its_body_at_once_with_the_small_limit() {
    let mut h = harness();
    h.feed(
        100,
        format!("{}01234", anonymous_upload_head(10)).as_bytes(),
    );
    // No token to check: the body behind the head is read at once.
    assert_eq!(h.state(), "Body");
    assert!(h.services.jobs.is_empty(), "no token check");
    assert_eq!(h.services.uploads.get(), 1, "a slot is held while reading");
    h.feed(200, b"56789");
    assert_eq!(h.state(), "Waiting");
    assert_eq!(h.services.jobs.len(), 1);
    let Work::Upload(upload) = &h.job(0).work else {
        panic!("{:?}", h.job(0).work);
    };
    assert_eq!(upload.token, None);
    assert_eq!(upload.body, b"0123456789");
    assert_eq!(upload.max_file, api::ANONYMOUS_UPLOAD_MAX);
}

#[test]
fn uploads_without_a_session_are_throttled_per_address_before_the_body() {
    let mut h = harness_with(
        test_config(),
        ThrottleConfig {
            register_per_address_per_hour: 1,
            ..ThrottleConfig::default()
        },
    );
    h.feed(100, anonymous_upload_head(0).as_bytes());
    assert_eq!(h.services.jobs.len(), 1, "the first goes to a worker");
    h.finish_api(200, reply(Status::Ok, r#"{"code":0}"#, None));
    h.flush(200);
    h.feed(
        300,
        format!("{}0123456789", anonymous_upload_head(10)).as_bytes(),
    );
    assert_eq!(h.services.jobs.len(), 1, "the second reaches no worker");
    assert_eq!(h.services.uploads.get(), 0, "and holds no slot");
    let r = response(&h.flush(300).0);
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("3600"));
    assert_eq!(
        r.header("connection"),
        Some("close"),
        "its body is not read"
    );
    // A declared body over the limit is refused first, costing no token.
    let mut h = harness();
    let big = api::ANONYMOUS_UPLOAD_MAX + crate::config::UPLOAD_FRAMING + 1;
    h.feed(100, anonymous_upload_head(big).as_bytes());
    let r = response(&h.flush(100).0);
    assert_eq!(r.status, 413);
    assert_eq!(
        r.json()["msg"],
        "without a session a picture may be at most 1 MiB; log in to upload up to 10 MiB"
    );
    assert_eq!(h.throttle.tracked(), 0);
}

#[test]
fn an_upload_with_a_bad_token_gets_401_and_closes() {
    let mut h = harness();
    h.feed(100, format!("{}0123456789", upload_head(10)).as_bytes());
    h.finish_auth(200, None);
    assert_eq!(h.state(), "Closing");
    let r = response(&h.flush(200).0);
    assert_eq!((r.status, r.header("connection")), (401, Some("close")));
}

#[test]
fn an_authorized_upload_reads_exactly_its_body_and_hands_it_to_a_worker() {
    let mut h = harness();
    h.feed(100, format!("{}01234", upload_head(10)).as_bytes());
    h.finish_auth(200, Some(1));
    assert_eq!(h.state(), "Body");
    assert_eq!(h.services.uploads.get(), 1, "a slot is held while reading");
    assert_eq!(h.deadline(), Some(200 + HANDSHAKE));
    assert!(h.take_resume(), "the bytes behind the head are read now");
    assert_eq!(h.resume(200), 0);
    // The rest of the body arrives with the next request behind it.
    let left = h.feed(300, format!("56789{GET_EMOJI}").as_bytes());
    assert_eq!(left, GET_EMOJI.len());
    assert_eq!(h.state(), "Waiting");
    assert_eq!(
        h.services.uploads.get(),
        0,
        "the slot frees once the body is in"
    );
    assert_eq!(h.services.jobs.len(), 2);
    let Work::Upload(upload) = &h.job(1).work else {
        panic!("{:?}", h.job(1).work);
    };
    assert_eq!(upload.body, b"0123456789");
    assert_eq!(upload.token.as_deref(), Some("tok"));
    assert_eq!(upload.content_type, "multipart/form-data; boundary=b");
    assert_eq!(upload.max_file, h.config.max_upload);
    h.finish_api(400, reply(Status::Ok, r#"{"code":0}"#, None));
    assert_eq!(h.state(), "Request");
    assert!(h.take_resume());
    assert_eq!(h.resume(400), 0);
    assert_eq!(responses(&h.flush(400).0).len(), 2);
}

#[test]
fn an_upload_body_must_keep_making_progress() {
    let mut h = harness();
    // 8 KiB: due in full 2 s after the handshake timeout, so only progress binds here.
    h.feed(
        0,
        upload_head(2 * config::MIN_BODY_RATE as usize).as_bytes(),
    );
    h.finish_auth(100, Some(1));
    assert_eq!(h.deadline(), Some(100 + HANDSHAKE));
    h.feed(900, &[b'x'; 10]);
    assert_eq!(h.deadline(), Some(900 + HANDSHAKE));
    assert_eq!(h.timeout(100 + HANDSHAKE), Verdict::Keep);
    assert_eq!(h.timeout(900 + HANDSHAKE - 1), Verdict::Keep);
    assert_eq!(h.timeout(900 + HANDSHAKE), Verdict::Drop);
    // Dropping it mid-body frees its slot.
    drop(h.life);
    assert_eq!(h.services.uploads.get(), 0);
}

#[test]
fn a_trickling_upload_is_still_dropped_at_its_overall_deadline() {
    let mut h = harness();
    let length = 2 * config::MIN_BODY_RATE as usize;
    h.feed(0, upload_head(length).as_bytes());
    h.finish_auth(0, Some(1));
    // The whole body is due within the handshake timeout plus 2 s at the minimum rate.
    let until = HANDSHAKE + 2_000;
    let mut t = 0;
    loop {
        t += 500;
        assert_eq!(h.timeout(t - 1), Verdict::Keep, "at {t}");
        h.feed(t, b"x");
        assert_eq!(h.deadline(), Some((t + HANDSHAKE).min(until)));
        if t + HANDSHAKE >= until {
            break;
        }
    }
    assert_eq!(h.state(), "Body");
    assert_eq!(h.timeout(until - 1), Verdict::Keep);
    assert_eq!(h.timeout(until), Verdict::Drop);
}

#[test]
fn an_upload_without_a_free_slot_gets_503() {
    let mut h = harness();
    let _taken = UploadSlot::take(&h.services.uploads, 1).expect("the only slot");
    h.feed(0, upload_head(10).as_bytes());
    h.finish_auth(100, Some(1));
    assert_eq!(h.state(), "Closing");
    let r = response(&h.flush(100).0);
    assert_eq!((r.status, r.header("retry-after")), (503, Some("1")));
}

#[test]
fn an_empty_upload_is_handed_over_at_once() {
    let mut h = harness();
    h.feed(0, upload_head(0).as_bytes());
    h.finish_auth(100, Some(1));
    assert_eq!(h.state(), "Waiting");
    assert!(matches!(&h.job(1).work, Work::Upload(u) if u.body.is_empty()));
}

#[test]
fn a_token_check_that_does_not_come_back_in_time_gets_503() {
    let mut h = harness();
    h.feed(100, chat_upgrade("").as_bytes());
    let ticket = h.job(0).ticket.clone();
    assert_eq!(h.state(), "Authorizing");
    assert_eq!(h.deadline(), Some(100 + HANDSHAKE));
    assert_eq!(h.timeout(100 + HANDSHAKE), Verdict::Keep);
    assert!(ticket.is_cancelled());
    assert_eq!(response(&h.flush(1100).0).status, 503);
    // A late answer does not open the socket.
    h.finish_auth(1200, Some(1));
    assert_eq!(h.state(), "Lingering");
    assert!(h.index.conns_of(1).is_empty());
}

// ---- /echo ----

#[test]
fn echo_upgrades_and_echoes_a_masked_text_frame() {
    let mut h = harness();
    let mut input = ECHO_UPGRADE.as_bytes().to_vec();
    input.extend_from_slice(&masked_text("hello"));
    assert_eq!(h.feed(100, &input), 0);
    let (responses, frames) = parse_output(&h.flush(100).0);
    assert_eq!(responses[0].status, 101);
    assert_eq!(
        responses[0].header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert_eq!(frames, [(OpCode::Text, b"hello".to_vec())]);
    assert_eq!(h.deadline(), Some(100 + ECHO_IDLE));
    assert!(h.wants_read());
    assert_eq!(h.life.read_allowance(), config::READ_BUFFER);
}

#[test]
fn large_echoes_come_back_intact_whole_or_in_pieces() {
    let mut h = harness();
    h.open_echo();
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
    let frame = masked(OpCode::Binary, &payload);
    // Whole: echoed from the input.
    assert_eq!(h.feed(100, &frame), 0);
    // In pieces: gathered in the connection's buffer and moved out.
    assert_eq!(h.feed(200, &frame[..30_000]), 0);
    assert_eq!(h.feed(300, &frame[30_000..]), 0);
    // Fragmented.
    let mut fragmented = Vec::new();
    write_masked_frame(
        &mut fragmented,
        false,
        OpCode::Binary,
        &payload[..50_000],
        KEY,
    );
    write_masked_frame(
        &mut fragmented,
        true,
        OpCode::Continuation,
        &payload[50_000..],
        KEY,
    );
    assert_eq!(h.feed(400, &fragmented), 0);
    let frames = frames(&h.flush(400).0);
    assert_eq!(frames.len(), 3);
    for frame in frames {
        assert_eq!(frame, (OpCode::Binary, payload.clone()));
    }
}

#[test]
fn many_small_echoes_leave_in_corks_of_16_kib_not_all_at_the_end() {
    let mut h = harness();
    h.open_echo();
    h.flush(50);
    let mut input = Vec::new();
    for i in 0..2_000u32 {
        input.extend_from_slice(&masked_text(&format!("message {i:>6} of a long window")));
    }
    let now = h.at(100);
    let (life, mut env) = h.parts();
    let mut consumed = 0;
    let mut corks = Vec::new();
    loop {
        consumed += life.handle_bytes(now, &mut input[consumed..], &mut env);
        let queued = life.out.len();
        if !life.take_corked() {
            break;
        }
        // The call stopped once 16 KiB were queued, within one reply of it.
        assert!(
            (config::CORK_BYTES..config::CORK_BYTES + 64).contains(&queued),
            "{queued}"
        );
        let mut written = Vec::new();
        life.out
            .flush_to(&mut written, &mut crate::ws::Spares::default())
            .expect("a Vec takes all");
        corks.push(written);
    }
    assert_eq!(consumed, input.len());
    assert!(!life.take_corked(), "asking clears it");
    let mut tail = Vec::new();
    life.out
        .flush_to(&mut tail, &mut crate::ws::Spares::default())
        .expect("a Vec takes all");
    corks.push(tail);
    assert!(corks.len() >= 4, "{} corks", corks.len());
    let echoed: Vec<_> = corks.iter().flat_map(|c| frames(c)).collect();
    assert_eq!(echoed.len(), 2_000);
    for (i, (opcode, payload)) in echoed.iter().enumerate() {
        assert_eq!(*opcode, OpCode::Text);
        assert_eq!(
            payload,
            format!("message {i:>6} of a long window").as_bytes()
        );
    }
}

#[test]
fn a_large_echo_buffer_is_kept_once_written_and_gathers_the_next_message() {
    let mut h = harness();
    h.open_echo();
    h.flush(50);
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i * 13) as u8).collect();
    let frame = masked(OpCode::Binary, &payload);
    let mut addresses = Vec::new();
    for round in 0..3u64 {
        for piece in frame.chunks(256 * 1024) {
            assert_eq!(h.feed(100 + round, piece), 0);
        }
        let mut written = Vec::new();
        let (life, env) = h.parts();
        life.out
            .flush_to(&mut written, &mut env.codec.spares)
            .expect("a Vec takes all");
        assert_eq!(frames(&written), [(OpCode::Binary, payload.clone())]);
        assert!(h.codec.spares.bytes() >= 1_000_000, "round {round}: kept");
        let spare = h.codec.spares.take_larger_than(0).expect("kept");
        addresses.push(spare.as_ptr());
        h.codec.spares.give(spare);
    }
    // From the second message on, every one is gathered in the same kept buffer.
    assert_eq!(addresses[1], addresses[2]);
    // Unused for two trims: freed.
    h.codec.spares.trim();
    h.codec.spares.trim();
    assert_eq!(h.codec.spares.bytes(), 0);
}

#[test]
fn an_idle_echo_socket_is_closed_with_1001_then_closing() {
    let mut h = harness();
    h.open_echo();
    h.feed(1_000, &masked_text("x"));
    h.flush(1_000);
    assert_eq!(h.deadline(), Some(1_000 + ECHO_IDLE));
    assert_eq!(h.timeout(1_000 + ECHO_IDLE - 1), Verdict::Keep);
    assert!(h.life.out.is_empty());
    assert_eq!(h.timeout(1_000 + ECHO_IDLE), Verdict::Keep);
    assert_eq!(h.state(), "Closing");
    let t = 1_000 + ECHO_IDLE;
    assert_eq!(h.deadline(), Some(t + CLOSE));
    let (out, after) = h.flush(t);
    assert_eq!(close_code(&frames(&out)[0]), 1001);
    assert_eq!((after, h.state()), (AfterFlush::ShutdownWrite, "Lingering"));
    assert_eq!(h.timeout(t + CLOSE), Verdict::Drop);
}

#[test]
fn a_stalled_partial_frame_is_closed_with_1008_but_progress_pushes_the_deadline() {
    let mut h = harness();
    h.open_echo();
    let frame = masked(OpCode::Binary, &vec![1u8; 1 << 20]);
    assert_eq!(h.feed(500, &frame[..1_000]), 0);
    assert_eq!(h.deadline(), Some(500 + FRAME));
    assert_eq!(h.feed(1_500, &frame[1_000..2_000]), 0);
    assert_eq!(h.deadline(), Some(1_500 + FRAME));
    assert_eq!(h.timeout(500 + FRAME), Verdict::Keep);
    assert_eq!(h.state(), "WebSocket");
    assert_eq!(h.timeout(1_500 + FRAME - 1), Verdict::Keep);
    assert!(h.life.out.is_empty());
    assert_eq!(h.timeout(1_500 + FRAME), Verdict::Keep);
    assert_eq!(h.state(), "Closing");
    let frames = frames(&h.flush(3_500).0);
    assert_eq!(frames.len(), 1);
    assert_eq!(close_code(&frames[0]), 1008);
}

#[test]
fn pings_in_the_middle_of_a_message_are_not_progress() {
    let mut h = harness();
    h.open_echo();
    let mut first = Vec::new();
    write_masked_frame(&mut first, false, OpCode::Text, b"half", KEY);
    h.feed(100, &first);
    assert_eq!(h.deadline(), Some(100 + FRAME));
    for t in [900, 1_700] {
        h.feed(t, &masked(OpCode::Ping, b""));
    }
    // Pings keep the socket from being idle, not the message from stalling.
    assert_eq!(h.deadline(), Some(100 + FRAME));
    assert_eq!(h.timeout(100 + FRAME), Verdict::Keep);
    let frames = frames(&h.flush(2_100).0);
    assert_eq!(frames[0].0, OpCode::Pong);
    assert_eq!(close_code(&frames[2]), 1008);
}

#[test]
fn a_protocol_error_is_closed_with_its_code() {
    let mut h = harness();
    h.open_echo();
    // An unmasked client frame: 1002.
    assert_eq!(h.feed(100, &[0x81, 0x01, b'x', 0x81]), 0);
    assert_eq!(h.state(), "Closing");
    assert_eq!(close_code(&frames(&h.flush(100).0)[0]), 1002);
}

/// Fills the outbound queue to `len` bytes with one frame from "other connections".
fn fill(h: &mut Harness, len: usize) -> usize {
    h.life.send_shared(Rc::from(vec![0u8; len]));
    assert_eq!(h.life.out.len(), len);
    len
}

#[test]
fn pings_beyond_the_pause_threshold_are_held_not_lost() {
    let mut h = harness();
    h.open_echo();
    let threshold = config::pause_reading_above(config::ECHO_LIMITS);
    let filler = fill(&mut h, threshold - 1_000);
    let pings: Vec<Vec<u8>> = (0..200)
        .map(|i| format!("ping-{i:05}").into_bytes())
        .collect();
    let input: Vec<u8> = pings.iter().flat_map(|p| masked(OpCode::Ping, p)).collect();
    let left = h.feed(100, &input);
    assert!(left > 0, "reading stops above the threshold");
    assert!(h.life.out.len() > threshold);
    assert!(!h.wants_read());
    assert!(!h.life.over_hard_bound());
    h.life.note_output(h.at(100));
    assert_eq!(h.resume(150), left, "nothing more while over the threshold");
    let (out, _) = h.flush(200);
    assert!(h.take_resume(), "drained below half: read again");
    assert_eq!(h.resume(200), 0);
    let mut pongs = frames(&out[filler..]);
    pongs.extend(frames(&h.flush(200).0));
    assert_eq!(pongs.len(), pings.len());
    for (pong, ping) in pongs.iter().zip(&pings) {
        assert_eq!(pong, &(OpCode::Pong, ping.clone()));
    }
}

#[test]
fn a_paused_writer_resumes_at_half_and_is_dropped_after_the_close_timeout_without_progress() {
    let mut h = harness();
    h.open_echo();
    let threshold = config::pause_reading_above(config::ECHO_LIMITS);
    fill(&mut h, threshold + 1);
    h.life.note_output(h.at(100));
    assert!(!h.wants_read());
    assert_eq!(h.deadline(), Some(100 + CLOSE));
    // Some bytes leave: the stall deadline moves, reading stays paused above half.
    let f = h
        .life
        .out
        .flush_to(
            &mut Trickle { budget: 1_000 },
            &mut crate::ws::Spares::default(),
        )
        .expect("blocks");
    assert_eq!(
        h.life.handle_flushed(h.at(1_000), f, true),
        AfterFlush::Nothing
    );
    assert!(!h.wants_read());
    assert!(!h.take_resume());
    assert_eq!(h.deadline(), Some(1_000 + CLOSE));
    // A writable event that writes nothing is no progress.
    h.life.handle_flushed(h.at(2_000), Flushed::Blocked, false);
    assert_eq!(h.timeout(1_000 + CLOSE - 1), Verdict::Keep);
    assert_eq!(h.timeout(1_000 + CLOSE), Verdict::Drop);

    // The same, draining to half: reading resumes.
    let mut h = harness();
    h.open_echo();
    fill(&mut h, threshold + 1);
    h.life.note_output(h.at(100));
    h.feed(200, &masked_text("held"));
    let budget = threshold + 1 - threshold / 2;
    let f = h
        .life
        .out
        .flush_to(&mut Trickle { budget }, &mut crate::ws::Spares::default())
        .expect("blocks");
    h.life.handle_flushed(h.at(300), f, true);
    assert!(h.wants_read());
    assert!(h.take_resume());
    assert_eq!(h.resume(300), 0);
    // The held frame arrived at 200; offering it again is not new activity.
    assert_eq!(h.deadline(), Some(200 + ECHO_IDLE));
}

#[test]
fn only_fan_out_crosses_the_hard_bound() {
    let mut h = harness();
    h.open_chat(1);
    let threshold = config::pause_reading_above(config::CHAT_LIMITS);
    fill(&mut h, threshold - 100);
    // Pipelined heartbeats stop at the threshold, well under the hard bound.
    let input = masked_text(r#"{"cmd":0}"#).repeat(1_000);
    assert!(h.feed(100, &input) > 0);
    assert!(h.life.out.len() > threshold);
    assert!(!h.life.over_hard_bound());
    let room = config::max_outbound(config::CHAT_LIMITS) - h.life.out.len();
    h.life.send_shared(Rc::from(vec![0u8; room]));
    assert!(!h.life.over_hard_bound());
    h.life.send_shared(Rc::from(&b"x"[..]));
    assert!(h.life.over_hard_bound());
    // HTTP connections have no such bound.
    let mut http = harness();
    http.life.out.tail().resize(64 << 20, 0);
    assert!(!http.life.over_hard_bound());
}

#[test]
fn a_maximal_echo_read_at_the_pause_threshold_stays_under_the_hard_bound() {
    let mut h = harness();
    h.open_echo();
    fill(&mut h, config::pause_reading_above(config::ECHO_LIMITS));
    let payload = vec![7u8; config::ECHO_LIMITS.max_message as usize];
    assert_eq!(h.feed(100, &masked(OpCode::Binary, &payload)), 0);
    assert!(
        !h.life.over_hard_bound(),
        "{} queued, bound {}",
        h.life.out.len(),
        config::max_outbound(config::ECHO_LIMITS)
    );
}

#[test]
fn close_sends_a_close_frame_once_and_ends_other_states() {
    let mut h = harness();
    h.open_echo();
    assert_eq!(h.close(100, CloseCode::GOING_AWAY), Verdict::Keep);
    assert_eq!(h.close(200, CloseCode::GOING_AWAY), Verdict::Keep);
    let frames = frames(&h.flush(200).0);
    assert_eq!(frames.len(), 1);
    assert_eq!(close_code(&frames[0]), 1001);
    assert_eq!(&frames[0].1[2..], b"going away");
    let mut http = harness();
    assert_eq!(http.close(100, CloseCode::GOING_AWAY), Verdict::Drop);
}

// ---- /chat ----

#[test]
fn a_chat_upgrade_checks_its_token_then_opens_and_joins_the_index() {
    let mut h = harness();
    let mut input = chat_upgrade("&id=1").into_bytes();
    input.extend_from_slice(&masked_text(r#"{"cmd":0}"#));
    let left = h.feed(100, &input);
    assert!(left > 0, "frames behind the head wait for the token check");
    assert_eq!(h.state(), "Authorizing");
    assert!(h.life.out.is_empty());
    assert!(!h.wants_read());
    assert!(matches!(&h.job(0).work, Work::Authenticate { token } if token == "tok"));
    h.finish_auth(300, Some(1));
    assert_eq!(h.state(), "WebSocket");
    assert_eq!(h.index.conns_of(1), [CONN.key]);
    assert_eq!(h.index.group_conns(100), [CONN.key]);
    assert_eq!(h.life.chat_user(), Some((1, 7)));
    assert_eq!(h.deadline(), Some(300 + PING));
    assert!(h.take_resume());
    assert_eq!(h.resume(300), 0);
    let (responses, frames) = parse_output(&h.flush(300).0);
    assert_eq!(responses[0].status, 101);
    assert_eq!(json(&frames[0])["cmd"], 0);
}

#[test]
fn a_chat_token_of_another_user_than_claimed_gets_401() {
    let mut h = harness();
    h.feed(100, chat_upgrade("&id=2").as_bytes());
    h.finish_auth(200, Some(1));
    assert_eq!(h.state(), "Closing");
    assert!(h.index.conns_of(1).is_empty());
    assert_eq!(response(&h.flush(200).0).status, 401);
    // And an unknown token.
    let mut h = harness();
    h.feed(100, chat_upgrade("").as_bytes());
    h.finish_auth(200, None);
    assert_eq!(response(&h.flush(200).0).status, 401);
}

fn to_user(to: i64, reference: &str) -> Vec<u8> {
    masked_text(&format!(
        r#"{{"cmd":10,"dstid":{to},"media":1,"content":"hi","ref":"{reference}"}}"#
    ))
}

#[test]
fn a_message_to_a_friend_goes_to_the_writer_and_one_to_a_stranger_gets_403() {
    let mut h = harness();
    h.open_chat(1);
    h.feed(100, &to_user(2, "a"));
    assert_eq!(h.services.chats.len(), 1);
    let chat = &h.services.chats[0];
    assert_eq!(chat.conn, CONN);
    let crate::server::workers::ChatWrite::Send(message) = &chat.write else {
        panic!("a message");
    };
    assert_eq!(message.sender_id, 1);
    assert_eq!(message.to, Peer::User(2));
    assert_eq!(message.client_ref.as_deref(), Some("a"));
    assert!(h.life.out.is_empty(), "the ack comes from the writer");
    h.feed(200, &to_user(3, "b"));
    assert_eq!(h.services.chats.len(), 1, "refused on the loop");
    let frames = frames(&h.flush(200).0);
    let error = json(&frames[0]);
    assert_eq!(
        (error["cmd"].as_i64(), error["code"].as_i64()),
        (Some(22), Some(403))
    );
    assert_eq!(error["ref"], "b");
    assert_eq!(h.state(), "WebSocket");
}

#[test]
fn recalls_and_edits_go_to_the_writer_and_count_as_messages_in_flight() {
    let mut h = harness();
    h.open_chat(1);
    let recall = |i: usize| masked_text(&format!(r#"{{"cmd":16,"id":{},"ref":"{i}"}}"#, i + 1));
    let input: Vec<u8> = (0..IN_FLIGHT)
        .flat_map(recall)
        .chain(masked_text(
            r#"{"cmd":17,"id":9,"content":"new","ref":"e"}"#,
        ))
        .collect();
    h.feed(100, &input);
    assert_eq!(
        h.services.chats.len(),
        IN_FLIGHT,
        "the edit waits for an ack"
    );
    let crate::server::workers::ChatWrite::Change(change) = &h.services.chats[0].write else {
        panic!("a change");
    };
    assert_eq!(
        (change.user, change.id, change.client_ref.as_deref()),
        (1, 1, Some("0"))
    );
    assert!(h.life.out.is_empty(), "the acks come from the writer");
    h.life.finish_chat();
    h.life.send_text(r#"{"cmd":21}"#);
    assert!(h.take_resume());
    h.resume(200);
    let crate::server::workers::ChatWrite::Change(edit) = &h.services.chats[IN_FLIGHT].write else {
        panic!("a change");
    };
    assert_eq!(edit.edit, crate::store::Edit::Content("new".into()));
}

#[test]
fn at_max_in_flight_the_next_frame_waits_for_an_ack() {
    let mut h = harness();
    h.open_chat(1);
    let input: Vec<u8> = (0..IN_FLIGHT + 2)
        .flat_map(|i| to_user(2, &i.to_string()))
        .collect();
    let one = to_user(2, "0").len();
    assert_eq!(h.feed(100, &input), 2 * one);
    assert_eq!(h.services.chats.len(), IN_FLIGHT);
    assert!(!h.wants_read());
    assert!(!h.take_resume());
    h.life.finish_chat();
    h.life.send_text(r#"{"cmd":21}"#);
    assert!(h.take_resume());
    assert_eq!(h.resume(200), one);
    assert_eq!(h.services.chats.len(), IN_FLIGHT + 1);
    h.life.finish_chat();
    h.life.finish_chat();
    assert!(h.take_resume());
    assert_eq!(h.resume(300), 0);
    assert_eq!(h.services.chats.len(), IN_FLIGHT + 2);
    assert!(h.wants_read());
}

#[test]
fn a_busy_writer_is_answered_with_a_503_error_frame() {
    let mut h = harness();
    h.open_chat(1);
    h.services.refuse_chats = true;
    assert_eq!(h.feed(100, &to_user(2, "r")), 0);
    let error = json(&frames(&h.flush(100).0)[0]);
    assert_eq!(
        (error["cmd"].as_i64(), error["code"].as_i64()),
        (Some(22), Some(503))
    );
    assert_eq!(error["ref"], "r");
    // A refused message is not in flight.
    h.services.refuse_chats = false;
    let input = to_user(2, "s").repeat(IN_FLIGHT);
    assert_eq!(h.feed(200, &input), 0);
}

fn sync(after: i64) -> Vec<u8> {
    masked_text(&format!(r#"{{"cmd":20,"id":{after}}}"#))
}

fn sync_job(job: &Job) -> i64 {
    match job.work {
        Work::Sync { user: 1, after, .. } => after,
        ref other => panic!("{other:?}"),
    }
}

#[test]
fn one_sync_runs_one_waits_and_a_third_is_not_read() {
    let mut h = harness();
    h.open_chat(1);
    let input = [sync(0), sync(5), sync(9)].concat();
    assert_eq!(h.feed(100, &input), sync(9).len());
    assert_eq!(h.services.jobs.len(), 1);
    assert_eq!(sync_job(h.job(0)), 0);
    assert!(!h.wants_read());
    let mut done = Vec::new();
    crate::ws::frame::write_frame(&mut done, OpCode::Text, br#"{"cmd":23,"id":5}"#);
    h.finish_sync(&done);
    // The queued one starts; the third is read and waits.
    assert_eq!(sync_job(h.job(1)), 5);
    assert!(h.take_resume());
    assert_eq!(h.resume(200), 0);
    assert_eq!(h.services.jobs.len(), 2);
    assert!(!h.wants_read());
    h.finish_sync(&done);
    assert_eq!(sync_job(h.job(2)), 9);
    h.finish_sync(&done);
    assert_eq!(h.services.jobs.len(), 3);
    assert!(h.wants_read());
    let frames = frames(&h.flush(300).0);
    assert_eq!(frames.len(), 3);
    assert!(frames.iter().all(|f| json(f)["cmd"] == 23));
    // A sync a busy pool refuses is answered at once and leaves room for the next.
    h.services.refuse_jobs = true;
    h.feed(400, &sync(9));
    assert_eq!(json(&frames_of(&mut h)[0])["code"], 503);
    h.services.refuse_jobs = false;
    h.feed(500, &sync(9));
    assert_eq!(h.services.jobs.len(), 4);
}

#[test]
fn a_waiting_sync_keeps_its_batch_and_change_cursor() {
    let mut h = harness();
    h.open_chat(1);
    let input = [
        sync(0),
        masked_text(r#"{"cmd":20,"id":5,"batch":true,"changes":12}"#),
    ]
    .concat();
    h.feed(100, &input);
    let mut done = Vec::new();
    crate::ws::frame::write_frame(&mut done, OpCode::Text, br#"{"cmd":23,"id":5}"#);
    h.finish_sync(&done);
    match h.job(1).work {
        Work::Sync {
            user: 1,
            after: 5,
            batch: true,
            changes: Some(12),
            ..
        } => {}
        ref other => panic!("{other:?}"),
    }
    match h.job(0).work {
        Work::Sync { changes: None, .. } => {}
        ref other => panic!("{other:?}"),
    }
}

fn frames_of(h: &mut Harness) -> Vec<(OpCode, Vec<u8>)> {
    frames(&h.flush(0).0)
}

#[test]
fn dropping_a_chat_connection_cancels_its_running_sync() {
    let mut h = harness();
    h.open_chat(1);
    h.feed(100, &sync(0));
    let ticket = h.job(0).ticket.clone();
    drop(h.life);
    assert!(ticket.is_cancelled());
}

#[test]
fn a_quiet_chat_is_pinged_after_the_ping_interval_then_closed_with_1001() {
    let mut h = harness();
    h.open_chat(1);
    assert_eq!(h.deadline(), Some(PING));
    assert_eq!(h.timeout(PING - 1), Verdict::Keep);
    assert!(h.life.out.is_empty());
    assert_eq!(h.timeout(PING), Verdict::Keep);
    assert_eq!(frames_of(&mut h), [(OpCode::Ping, Vec::new())]);
    // One ping per quiet spell.
    let idle = (PING as f64 * config::IDLE_PINGS) as u64;
    assert_eq!(h.deadline(), Some(idle));
    assert_eq!(h.timeout(idle - 1), Verdict::Keep);
    assert!(h.life.out.is_empty());
    // Any input ends the spell: the pong.
    h.feed(5_000, &masked(OpCode::Pong, b""));
    assert_eq!(h.deadline(), Some(5_000 + PING));
    h.timeout(5_000 + PING);
    assert_eq!(frames_of(&mut h)[0].0, OpCode::Ping);
    assert_eq!(h.timeout(5_000 + idle - 1), Verdict::Keep);
    assert_eq!(h.timeout(5_000 + idle), Verdict::Keep);
    assert_eq!(h.state(), "Closing");
    assert!(h.index.conns_of(1).is_empty());
    assert_eq!(close_code(&frames_of(&mut h)[0]), 1001);
}

#[test]
fn nothing_is_sent_after_our_close_frame() {
    let mut h = harness();
    h.open_chat(1);
    h.close(100, CloseCode::POLICY_VIOLATION);
    assert!(h.index.conns_of(1).is_empty());
    let len = h.life.out.len();
    h.life.send_text(r#"{"cmd":21}"#);
    h.life.send_shared(Rc::from(&b"\x81\x01x"[..]));
    h.finish_sync(b"\x81\x01x");
    assert_eq!(h.life.out.len(), len);
    let frames = frames_of(&mut h);
    assert_eq!(frames.len(), 1);
    assert_eq!(close_code(&frames[0]), 1008);
}

#[test]
fn a_client_close_is_echoed_and_the_connection_leaves_the_index() {
    let mut h = harness();
    h.open_chat(1);
    let mut input = masked(OpCode::Close, b"\x03\xe8bye");
    input.extend_from_slice(&to_user(2, "after"));
    assert_eq!(h.feed(100, &input), 0);
    assert_eq!(h.state(), "Closing");
    assert!(h.index.conns_of(1).is_empty());
    assert!(h.index.group_conns(100).is_empty());
    assert!(
        h.services.chats.is_empty(),
        "nothing after the close is read"
    );
    let (out, after) = h.flush(100);
    assert_eq!(frames(&out), [(OpCode::Close, b"\x03\xe8".to_vec())]);
    assert_eq!(after, AfterFlush::ShutdownWrite);
    // An empty close is answered empty.
    let mut h = harness();
    h.open_chat(1);
    h.feed(100, &masked(OpCode::Close, b""));
    assert_eq!(frames_of(&mut h), [(OpCode::Close, Vec::new())]);
}

#[test]
fn a_long_sync_reply_does_not_put_the_connection_over_the_hard_bound() {
    let mut h = harness();
    h.open_chat(1);
    h.feed(100, &sync(0));
    // The worker stops a reply at SYNC_MAX_BYTES (and says `more`); this is the
    // longest it can be: the cap plus one message of the longest content.
    let content = "x".repeat(4_000);
    let mut frames = Vec::new();
    for id in 0..500 {
        if frames.len() >= super::super::workers::SYNC_MAX_BYTES {
            break;
        }
        let delivery = format!(
            r#"{{"id":{id},"userid":2,"cmd":10,"dstid":1,"media":1,"content":"{content}","pic":"","url":"","memo":"","amount":0,"createat":9}}"#
        );
        crate::ws::frame::write_frame(&mut frames, OpCode::Text, delivery.as_bytes());
    }
    h.finish_sync(&frames);
    assert!(
        !h.life.over_hard_bound(),
        "{} queued after a sync the client asked for, bound {}",
        h.life.out.len(),
        config::max_outbound(config::CHAT_LIMITS)
    );
}

// ---- waiting for more input ----

#[test]
fn incomplete_input_does_not_ask_to_be_read_again() {
    let mut h = harness();
    h.feed(100, b"GET / HTTP/1.1\r\nHost");
    assert!(h.wants_read());
    assert!(!h.take_resume(), "nothing frees until more bytes arrive");
    // What the driver does next if told to resume: the same again.
    h.resume(100);
    assert!(!h.take_resume());
    let mut h = harness();
    h.open_echo();
    h.feed(100, &masked_text("x")[..1]);
    assert!(!h.take_resume());
}

#[test]
fn kept_input_offered_again_is_not_fresh_activity() {
    let mut h = harness();
    h.open_echo();
    h.feed(100, &masked_text("x")[..1]);
    assert_eq!(h.deadline(), Some(100 + ECHO_IDLE));
    h.resume(3_000);
    assert_eq!(h.deadline(), Some(100 + ECHO_IDLE));
}

#[test]
fn a_connection_open_for_weeks_keeps_exact_deadlines() {
    let mut h = harness();
    h.open_echo();
    let day = 24 * 60 * 60 * 1_000;
    for d in 1..=30 {
        let t = d * day;
        assert_eq!(h.feed(t, &masked(OpCode::Ping, b"")), 0);
        assert_eq!(h.deadline(), Some(t + ECHO_IDLE), "day {d}");
        assert_eq!(h.timeout(t + ECHO_IDLE - 1), Verdict::Keep);
        assert_eq!(frames_of(&mut h), [(OpCode::Pong, Vec::new())]);
    }
    let t = 30 * day;
    h.feed(t, &masked(OpCode::Binary, &[0; 100])[..50]);
    assert_eq!(h.deadline(), Some(t + FRAME));
    h.timeout(t + FRAME);
    assert_eq!(close_code(&frames_of(&mut h)[0]), 1008);
}
