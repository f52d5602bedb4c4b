//! Watching a connection's bytes frame by frame, for people: the frame inspector
//! and `--trace-frames`. Sans-IO, and an observer only: the real
//! [`Connection`](super::Connection) does the protocol, this only describes what
//! went by.
//!
//! - [`FrameWalker`] is fed the raw bytes of one direction, in pieces of any size,
//!   and returns a [`FrameRecord`] for every frame: the header's fields as sent
//!   (§5.2), the masking key (§5.3), which length form was used, and the first
//!   bytes of the payload, masked and unmasked. It keeps at most a header's worth
//!   of bytes and that bounded prefix, and skips the rest of a payload without
//!   looking at it, so watching a 16 MiB frame costs what watching a short one does.
//!   It never refuses anything: a reserved opcode or a fragmented ping is shown as
//!   it is (the connection itself closes with 1002).
//! - [`Tap`] watches both directions of one TCP connection from its first byte:
//!   the opening handshake's request head (§4.1) and response head (§4.2.2), then
//!   the frames both ways. A connection whose first request is not a WebSocket
//!   upgrade, or whose upgrade is refused, is no longer watched
//!   ([`Seen::Untraced`]): every browser and WebSocket library opens a fresh
//!   connection for a WebSocket.

use std::fmt::{self, Write as _};

use super::frame::{MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, OpCode};
use super::handshake;
use super::mask::apply_mask;
use crate::http;

/// Most payload bytes a record keeps: a whole control frame (§5.5), and the start
/// of a data frame.
pub const MAX_PREFIX: usize = MAX_CONTROL_PAYLOAD;

/// Which of the three encodings of the payload length a header used (§5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LengthForm {
    /// 0-125 in the 7 bits of the second byte.
    Bits7,
    /// 126, then a 16-bit length (126-65535).
    Bits16,
    /// 127, then a 64-bit length (65536 and up; the top bit must be 0).
    Bits64,
}

impl LengthForm {
    /// For people: `7-bit`, `16-bit`, `64-bit`.
    pub fn name(self) -> &'static str {
        match self {
            LengthForm::Bits7 => "7-bit",
            LengthForm::Bits16 => "16-bit",
            LengthForm::Bits64 => "64-bit",
        }
    }

    /// Whether this is the shortest form for `len`, as §5.2 requires.
    pub fn is_minimal(self, len: u64) -> bool {
        self == match len {
            0..=125 => LengthForm::Bits7,
            126..=0xffff => LengthForm::Bits16,
            _ => LengthForm::Bits64,
        }
    }
}

/// Who sent a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client to server: what the server read.
    FromClient,
    /// Server to client: what the server wrote.
    FromServer,
}

impl Direction {
    /// `client` or `server`: who sent it.
    pub fn sender(self) -> &'static str {
        match self {
            Direction::FromClient => "client",
            Direction::FromServer => "server",
        }
    }

    /// An arrow for log lines: `C→S` or `S→C`.
    pub fn arrow(self) -> &'static str {
        match self {
            Direction::FromClient => "C→S",
            Direction::FromServer => "S→C",
        }
    }
}

/// One frame as it went by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameRecord {
    /// 1 for the first frame in this direction.
    pub seq: u64,
    /// The header's bytes as sent (the first [`FrameRecord::header_len`] of them).
    pub header: [u8; MAX_HEADER_LEN],
    /// 2 to 14.
    pub header_len: u8,
    /// The final fragment of its message.
    pub fin: bool,
    /// RSV1, RSV2, RSV3 as bits 2, 1, 0.
    pub rsv: u8,
    /// The 4-bit opcode, reserved values included.
    pub opcode: u8,
    /// The masking key, when the MASK bit is set.
    pub mask: Option<[u8; 4]>,
    /// The payload length the header announced.
    pub payload_len: u64,
    /// How it was encoded.
    pub length_form: LengthForm,
    /// RSV1 on a message's first frame with permessage-deflate negotiated
    /// (RFC 7692 §6): the message's payload is compressed; continuation frames
    /// carry the flag of their message.
    pub compressed: bool,
    /// The first payload bytes as they were on the wire (masked if masked): at
    /// most the walker's prefix length, all of it for a control frame.
    pub prefix: Vec<u8>,
}

impl FrameRecord {
    /// RSV1 (RFC 7692 uses it for "compressed").
    pub fn rsv1(&self) -> bool {
        self.rsv & 0b100 != 0
    }

    /// RSV2.
    pub fn rsv2(&self) -> bool {
        self.rsv & 0b010 != 0
    }

    /// RSV3.
    pub fn rsv3(&self) -> bool {
        self.rsv & 0b001 != 0
    }

    /// The opcode's name (§5.2, §11.8), or `reserved`.
    pub fn opcode_name(&self) -> &'static str {
        match OpCode::from_bits(self.opcode) {
            Some(OpCode::Continuation) => "continuation",
            Some(OpCode::Text) => "text",
            Some(OpCode::Binary) => "binary",
            Some(OpCode::Close) => "close",
            Some(OpCode::Ping) => "ping",
            Some(OpCode::Pong) => "pong",
            None if self.opcode & 0x8 != 0 => "reserved control",
            None => "reserved data",
        }
    }

    /// Whether this is a control frame (opcode 0x8-0xF, §5.5).
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }

    /// The header bytes.
    pub fn header_bytes(&self) -> &[u8] {
        &self.header[..usize::from(self.header_len)]
    }

    /// The kept payload bytes unmasked (§5.3): what the application sees.
    pub fn unmasked(&self) -> Vec<u8> {
        let mut bytes = self.prefix.clone();
        if let Some(key) = self.mask {
            apply_mask(&mut bytes, key);
        }
        bytes
    }

    /// Whether the payload is longer than what was kept.
    pub fn truncated(&self) -> bool {
        self.payload_len > self.prefix.len() as u64
    }

    /// A close frame's status code and reason (§5.5.1): `None` when this is no
    /// close frame; a code of `None` for an empty payload. A 1-byte payload (a
    /// protocol error) has no code either, and its byte shows in the payload.
    pub fn close(&self) -> Option<(Option<u16>, String)> {
        if OpCode::from_bits(self.opcode) != Some(OpCode::Close) {
            return None;
        }
        let payload = self.unmasked();
        match payload.as_slice() {
            [hi, lo, reason @ ..] => Some((
                Some(u16::from_be_bytes([*hi, *lo])),
                String::from_utf8_lossy(reason).into_owned(),
            )),
            _ => Some((None, String::new())),
        }
    }

    /// The kept payload as text for people (unmasked). A character cut at the end
    /// of the prefix is left out; bytes that are not UTF-8 show as U+FFFD.
    pub fn text(&self) -> String {
        preview_text(&self.unmasked())
    }
}

/// `bytes` as text: a character cut at the end is left out, bytes that are not
/// UTF-8 show as U+FFFD.
pub fn preview_text(bytes: &[u8]) -> String {
    let end = match std::str::from_utf8(bytes) {
        Ok(_) => bytes.len(),
        // Incomplete at the very end: a character the prefix cut.
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => bytes.len(),
    };
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Lower-case hex, no separators.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// How many payload bytes a log line shows.
pub const LOG_PREFIX: usize = 16;

/// One line for the log: every header field, the key, and the first
/// [`LOG_PREFIX`] payload bytes in hex and as text.
impl fmt::Display for FrameRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frame {}: FIN={} RSV1={} RSV2={} RSV3={} opcode=0x{:x} ({}) MASK={}",
            self.seq,
            u8::from(self.fin),
            u8::from(self.rsv1()),
            u8::from(self.rsv2()),
            u8::from(self.rsv3()),
            self.opcode,
            self.opcode_name(),
            u8::from(self.mask.is_some()),
        )?;
        if let Some(key) = self.mask {
            write!(f, " key={}", hex(&key))?;
        }
        write!(f, " len={} ({})", self.payload_len, self.length_form.name())?;
        if self.compressed {
            f.write_str(" compressed")?;
        }
        if let Some((code, reason)) = self.close() {
            match code {
                Some(code) => write!(f, " close code={code} reason={reason:?}")?,
                None => f.write_str(" close without a code")?,
            }
        }
        if self.payload_len > 0 {
            let shown = self.prefix.len().min(LOG_PREFIX);
            let more = if self.payload_len > shown as u64 {
                "…"
            } else {
                ""
            };
            let unmasked = self.unmasked();
            if self.mask.is_some() {
                write!(f, " masked={}{more}", hex(&self.prefix[..shown]))?;
            }
            let text = if self.compressed {
                "(compressed)".to_owned()
            } else if self.close().is_some() {
                String::new()
            } else {
                format!("{:?}", preview_text(&unmasked[..shown]))
            };
            write!(f, " payload={}{more}", hex(&unmasked[..shown]))?;
            if !text.is_empty() {
                write!(f, " {text}")?;
            }
        }
        Ok(())
    }
}

/// Where the walker is in its stream.
#[derive(Debug)]
enum Walk {
    /// Gathering a header: `have` bytes of it are in `head`.
    Header,
    /// Keeping the payload's first bytes into `current.prefix`; `remaining`
    /// counts the whole payload left.
    Prefix { current: Box<FrameRecord> },
    /// Passing over the rest of a payload.
    Skip,
}

/// An incremental frame walker for one direction of a connection.
#[derive(Debug)]
pub struct FrameWalker {
    walk: Walk,
    head: [u8; MAX_HEADER_LEN],
    have: u8,
    /// Payload bytes left in the current frame.
    remaining: u64,
    /// Data-frame payload bytes kept per record.
    prefix: usize,
    /// permessage-deflate was negotiated: RSV1 means compressed.
    deflate: bool,
    /// The message in progress was compressed (its first frame had RSV1).
    message_compressed: bool,
    frames: u64,
}

impl FrameWalker {
    /// A walker keeping up to `prefix` payload bytes of each data frame (at most
    /// [`MAX_PREFIX`]; control frames are kept whole).
    pub fn new(prefix: usize) -> Self {
        FrameWalker {
            walk: Walk::Header,
            head: [0; MAX_HEADER_LEN],
            have: 0,
            remaining: 0,
            prefix: prefix.min(MAX_PREFIX),
            deflate: false,
            message_compressed: false,
            frames: 0,
        }
    }

    /// Says whether permessage-deflate was negotiated (RFC 7692), which makes
    /// RSV1 mean "compressed".
    pub fn set_deflate(&mut self, deflate: bool) {
        self.deflate = deflate;
    }

    /// Frames seen so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Walks `bytes`, the next bytes of the stream; calls `on_frame` for every
    /// frame whose header and kept prefix are complete, in order.
    pub fn feed(&mut self, mut bytes: &[u8], mut on_frame: impl FnMut(FrameRecord)) {
        while !bytes.is_empty() {
            match &mut self.walk {
                Walk::Skip => {
                    let n = usize::try_from(self.remaining)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len());
                    bytes = &bytes[n..];
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.walk = Walk::Header;
                    }
                }
                Walk::Prefix { current } => {
                    let want = prefix_for(self.prefix, current) - current.prefix.len();
                    let n = want.min(bytes.len());
                    current.prefix.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    self.remaining -= n as u64;
                    if n == want {
                        let Walk::Prefix { current } =
                            std::mem::replace(&mut self.walk, Walk::Skip)
                        else {
                            unreachable!("matched above")
                        };
                        if self.remaining == 0 {
                            self.walk = Walk::Header;
                        }
                        on_frame(*current);
                    }
                }
                Walk::Header => {
                    let need = header_len(&self.head[..usize::from(self.have)]);
                    let have = usize::from(self.have);
                    if have < need {
                        let n = (need - have).min(bytes.len());
                        self.head[have..have + n].copy_from_slice(&bytes[..n]);
                        self.have += n as u8;
                        bytes = &bytes[n..];
                        continue;
                    }
                    // `need` grows as the length byte arrives; once it stops, the
                    // header is complete.
                    if let Some(record) = self.start_frame() {
                        on_frame(record);
                    }
                }
            }
        }
        // A header whose last byte ended the input is complete now.
        if matches!(self.walk, Walk::Header)
            && self.have > 0
            && usize::from(self.have) == header_len(&self.head[..usize::from(self.have)])
        {
            if let Some(record) = self.start_frame() {
                on_frame(record);
            }
        }
    }

    /// The header in `head` is complete: a record, returned at once when there
    /// is no prefix to wait for.
    fn start_frame(&mut self) -> Option<FrameRecord> {
        let len = usize::from(self.have);
        let b0 = self.head[0];
        let b1 = self.head[1];
        let (payload_len, length_form, ext) = match b1 & 0x7f {
            126 => (
                u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
                LengthForm::Bits16,
                2,
            ),
            127 => {
                let mut be = [0u8; 8];
                be.copy_from_slice(&self.head[2..10]);
                (u64::from_be_bytes(be), LengthForm::Bits64, 8)
            }
            n => (u64::from(n), LengthForm::Bits7, 0),
        };
        let mask = (b1 & 0x80 != 0).then(|| {
            let k = &self.head[2 + ext..6 + ext];
            [k[0], k[1], k[2], k[3]]
        });
        let opcode = b0 & 0x0f;
        let rsv = (b0 >> 4) & 0x7;
        let rsv1 = rsv & 0b100 != 0;
        let compressed = match opcode {
            0x1 | 0x2 => {
                self.message_compressed = self.deflate && rsv1;
                self.message_compressed
            }
            0x0 => self.message_compressed,
            _ => false,
        };
        self.frames += 1;
        let record = FrameRecord {
            seq: self.frames,
            header: self.head,
            header_len: len as u8,
            fin: b0 & 0x80 != 0,
            rsv,
            opcode,
            mask,
            payload_len,
            length_form,
            compressed,
            prefix: Vec::new(),
        };
        self.have = 0;
        self.head = [0; MAX_HEADER_LEN];
        self.remaining = payload_len;
        if prefix_for(self.prefix, &record) > 0 {
            self.walk = Walk::Prefix {
                current: Box::new(record),
            };
            return None;
        }
        self.walk = if payload_len == 0 {
            Walk::Header
        } else {
            Walk::Skip
        };
        Some(record)
    }
}

/// Payload bytes to keep of a frame: `prefix` of a data frame, all of a control frame.
fn prefix_for(prefix: usize, record: &FrameRecord) -> usize {
    let cap = if record.is_control() {
        MAX_PREFIX
    } else {
        prefix
    };
    usize::try_from(record.payload_len)
        .unwrap_or(usize::MAX)
        .min(cap)
}

/// The length of the header that starts with `have` (as far as it is known:
/// at least 2, and the real length once the second byte is there).
fn header_len(have: &[u8]) -> usize {
    let Some(&b1) = have.get(1) else {
        return 2;
    };
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
}

/// What a [`Tap`] saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The client's upgrade request head (§4.1), with `Cookie`, `Authorization`
    /// and a `token` query parameter redacted.
    Request {
        /// The head as text, redacted, lines ending in CRLF.
        head: String,
        /// The request path, without the query.
        path: String,
        /// The `trace` query parameter, if any: the inspector's token.
        trace: Option<String>,
    },
    /// The server's response head (§4.2.2): `101` opens the connection, anything
    /// else refused it (and [`Seen::Untraced`] follows).
    Response {
        /// The head as text.
        head: String,
        /// Its status code.
        status: u16,
        /// Whether it accepted permessage-deflate.
        deflate: bool,
    },
    /// A frame, either way.
    Frame(Direction, FrameRecord),
    /// Frames the client sent before the response that were not kept.
    Skipped(u64),
    /// Nothing more will be seen: the first request was not an upgrade, or the
    /// upgrade was refused.
    Untraced,
}

/// Frames the client may send before the response head whose records are kept
/// until the response says whether the connection opened.
const MAX_EARLY_FRAMES: usize = 16;

/// One direction's progress.
#[derive(Debug)]
enum Side {
    /// Gathering an HTTP head (at most [`crate::config::MAX_REQUEST_HEAD`] bytes).
    Head(Vec<u8>),
    /// Frames.
    Frames(FrameWalker),
    /// Not watched any more.
    Done,
}

/// Watches one TCP connection: the handshake, then frames both ways.
#[derive(Debug)]
pub struct Tap {
    input: Side,
    output: Side,
    prefix: usize,
    /// The request offered permessage-deflate (taken as agreed until the
    /// response says otherwise, for frames the client sends before it).
    offered_deflate: bool,
    /// Client frames seen before the response, kept until it arrives.
    early: Vec<FrameRecord>,
    early_skipped: u64,
    upgraded: bool,
}

/// Longest head the tap gathers, as the server's own limit (§4.1 heads are small).
const MAX_HEAD: usize = crate::config::MAX_REQUEST_HEAD;

impl Tap {
    /// A tap for a connection just accepted; records keep up to `prefix` payload
    /// bytes of data frames.
    pub fn new(prefix: usize) -> Self {
        Tap {
            input: Side::Head(Vec::new()),
            output: Side::Head(Vec::new()),
            prefix,
            offered_deflate: false,
            early: Vec::new(),
            early_skipped: 0,
            upgraded: false,
        }
    }

    /// Whether nothing more will be seen.
    pub fn is_done(&self) -> bool {
        matches!(self.input, Side::Done) && matches!(self.output, Side::Done)
    }

    fn stop(&mut self, seen: &mut impl FnMut(Seen)) {
        if !self.is_done() {
            self.input = Side::Done;
            self.output = Side::Done;
            self.early = Vec::new();
            seen(Seen::Untraced);
        }
    }

    /// Bytes read from the client, before the server handles them (payloads are
    /// unmasked in place after that).
    pub fn input(&mut self, bytes: &[u8], mut seen: impl FnMut(Seen)) {
        match &mut self.input {
            Side::Done => {}
            Side::Frames(walker) => {
                if self.upgraded {
                    walker.feed(bytes, |r| seen(Seen::Frame(Direction::FromClient, r)));
                } else {
                    let (early, skipped) = (&mut self.early, &mut self.early_skipped);
                    walker.feed(bytes, |r| {
                        if early.len() < MAX_EARLY_FRAMES {
                            early.push(r);
                        } else {
                            *skipped += 1;
                        }
                    });
                }
            }
            Side::Head(buf) => {
                let before = buf.len();
                let room = (MAX_HEAD + 1).saturating_sub(before);
                buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
                let head = match http::parse_head(buf, MAX_HEAD) {
                    Ok(None) if buf.len() <= MAX_HEAD => return,
                    Ok(Some(head)) if handshake::is_upgrade(&head) => head,
                    _ => return self.stop(&mut seen),
                };
                let len = head.len;
                let path = head.path().to_owned();
                let trace = head
                    .query()
                    .and_then(|q| query_param(q, "trace"))
                    .map(str::to_owned);
                self.offered_deflate = head
                    .headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-extensions"))
                    .any(|(_, v)| contains_ignore_case(v, b"permessage-deflate"));
                let text = redact_request(&buf[..len]);
                // What follows the head in these bytes is frames (the head was not
                // complete before them, so it ends inside them).
                let rest = &bytes[(len - before).min(bytes.len())..];
                seen(Seen::Request {
                    head: text,
                    path,
                    trace,
                });
                let mut walker = FrameWalker::new(self.prefix);
                walker.set_deflate(self.offered_deflate);
                self.input = Side::Frames(walker);
                if !rest.is_empty() {
                    self.input(rest, seen);
                }
            }
        }
    }

    /// Bytes written to the client.
    pub fn output(&mut self, bytes: &[u8], mut seen: impl FnMut(Seen)) {
        match &mut self.output {
            Side::Done => {}
            Side::Frames(walker) => {
                walker.feed(bytes, |r| seen(Seen::Frame(Direction::FromServer, r)));
            }
            Side::Head(buf) => {
                let before = buf.len();
                let room = (MAX_HEAD + 1).saturating_sub(before);
                buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
                let Some(end) = find_head_end(buf) else {
                    if buf.len() > MAX_HEAD {
                        self.stop(&mut seen);
                    }
                    return;
                };
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let status = head
                    .get(9..12)
                    .and_then(|s| s.parse::<u16>().ok())
                    .unwrap_or(0);
                let deflate = head.lines().any(|line| {
                    line.split_once(':').is_some_and(|(name, value)| {
                        name.trim().eq_ignore_ascii_case("sec-websocket-extensions")
                            && contains_ignore_case(value.as_bytes(), b"permessage-deflate")
                    })
                });
                seen(Seen::Response {
                    head,
                    status,
                    deflate,
                });
                if status != 101 || !matches!(self.input, Side::Frames(_)) {
                    return self.stop(&mut seen);
                }
                self.upgraded = true;
                let mut walker = FrameWalker::new(self.prefix);
                walker.set_deflate(deflate);
                if let Side::Frames(input) = &mut self.input {
                    input.set_deflate(deflate);
                }
                for mut r in std::mem::take(&mut self.early) {
                    r.compressed &= deflate;
                    seen(Seen::Frame(Direction::FromClient, r));
                }
                if self.early_skipped > 0 {
                    seen(Seen::Skipped(std::mem::take(&mut self.early_skipped)));
                }
                self.output = Side::Frames(walker);
                let rest = &bytes[(end - before).min(bytes.len())..];
                if !rest.is_empty() {
                    self.output(rest, seen);
                }
            }
        }
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// The raw value of `name` in a query string.
fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// A request head as text for people, without its secrets: the values of
/// `Cookie` and `Authorization` and of a `token` query parameter (a session
/// token: a log or an inspector page must not learn it; the cookie is `HttpOnly`
/// precisely so that pages cannot read it).
pub fn redact_request(head: &[u8]) -> String {
    const HIDDEN: &str = "[redacted]";
    let text = String::from_utf8_lossy(head);
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive("\r\n").enumerate() {
        if i == 0 {
            // GET /chat?id=7&token=… HTTP/1.1
            let mut parts = line.splitn(3, ' ');
            let (method, target, rest) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            let target = match target.split_once('?') {
                Some((path, query)) => {
                    let query: Vec<String> = query
                        .split('&')
                        .map(|pair| match pair.split_once('=') {
                            Some(("token", _)) => format!("token={HIDDEN}"),
                            _ => pair.to_owned(),
                        })
                        .collect();
                    format!("{path}?{}", query.join("&"))
                }
                None => target.to_owned(),
            };
            let _ = write!(out, "{method} {target} {rest}");
            continue;
        }
        match line.split_once(':') {
            Some((name, _))
                if name.eq_ignore_ascii_case("cookie")
                    || name.eq_ignore_ascii_case("authorization") =>
            {
                let _ = write!(out, "{name}: {HIDDEN}\r\n");
            }
            _ => out.push_str(line),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::{encode_header, write_frame, write_masked_frame};

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn walk_all(bytes: &[u8], prefix: usize) -> Vec<FrameRecord> {
        let mut w = FrameWalker::new(prefix);
        let mut out = Vec::new();
        w.feed(bytes, |r| out.push(r));
        out
    }

    /// Every way of cutting `bytes` in two and in single bytes gives the same records.
    fn walk_split_everywhere(bytes: &[u8], prefix: usize) -> Vec<FrameRecord> {
        let whole = walk_all(bytes, prefix);
        for cut in 0..=bytes.len() {
            let mut w = FrameWalker::new(prefix);
            let mut out = Vec::new();
            w.feed(&bytes[..cut], |r| out.push(r));
            w.feed(&bytes[cut..], |r| out.push(r));
            assert_eq!(out, whole, "cut at {cut}");
        }
        let mut w = FrameWalker::new(prefix);
        let mut out = Vec::new();
        for b in bytes {
            w.feed(std::slice::from_ref(b), |r| out.push(r));
        }
        assert_eq!(out, whole, "byte by byte");
        whole
    }

    #[test]
    fn the_rfc_examples() {
        // §5.7: a masked "Hello" from a client.
        let bytes = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let r = walk_split_everywhere(&bytes, 16);
        assert_eq!(r.len(), 1);
        let r = &r[0];
        assert_eq!((r.seq, r.fin, r.rsv, r.opcode), (1, true, 0, 1));
        assert_eq!(r.opcode_name(), "text");
        assert_eq!(r.mask, Some(KEY));
        assert_eq!((r.payload_len, r.length_form), (5, LengthForm::Bits7));
        assert_eq!(r.header_bytes(), &bytes[..6]);
        assert_eq!(r.prefix, &bytes[6..]);
        assert_eq!(r.unmasked(), b"Hello");
        assert_eq!(r.text(), "Hello");
        assert!(!r.truncated() && !r.compressed);
        // An unmasked one from a server.
        let r = &walk_all(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f], 16)[0];
        assert_eq!((r.mask, r.unmasked().as_slice()), (None, &b"Hello"[..]));
    }

    #[test]
    fn every_length_form_masked_and_not() {
        for (len, form, header_len) in [
            (0usize, LengthForm::Bits7, 2),
            (1, LengthForm::Bits7, 2),
            (125, LengthForm::Bits7, 2),
            (126, LengthForm::Bits16, 4),
            (65535, LengthForm::Bits16, 4),
            (65536, LengthForm::Bits64, 10),
            (70_000, LengthForm::Bits64, 10),
        ] {
            let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            for masked in [false, true] {
                let mut bytes = Vec::new();
                if masked {
                    write_masked_frame(&mut bytes, true, OpCode::Binary, &payload, KEY);
                } else {
                    write_frame(&mut bytes, OpCode::Binary, &payload);
                }
                // A second frame right behind: the walker finds its start.
                write_frame(&mut bytes, OpCode::Pong, b"next");
                let records = walk_all(&bytes, 16);
                assert_eq!(records.len(), 2, "{len} masked={masked}");
                let r = &records[0];
                let extra = if masked { 4 } else { 0 };
                assert_eq!(usize::from(r.header_len), header_len + extra, "{len}");
                assert_eq!((r.payload_len, r.length_form), (len as u64, form));
                assert!(form.is_minimal(len as u64));
                assert_eq!(r.mask.is_some(), masked);
                assert_eq!(r.unmasked(), &payload[..len.min(16)]);
                assert_eq!(r.truncated(), len > 16);
                assert_eq!(records[1].unmasked(), b"next");
                assert_eq!(records[1].seq, 2);
            }
        }
    }

    #[test]
    fn split_at_every_byte_with_long_lengths() {
        let mut bytes = Vec::new();
        write_masked_frame(&mut bytes, true, OpCode::Text, &[b'x'; 300], KEY);
        write_masked_frame(&mut bytes, true, OpCode::Binary, &[7; 65536], [1, 2, 3, 4]);
        write_masked_frame(&mut bytes, true, OpCode::Ping, b"are you there", KEY);
        let r = walk_split_everywhere(&bytes, 16);
        assert_eq!(r.len(), 3);
        assert_eq!(
            (r[0].length_form, r[1].length_form, r[2].length_form),
            (LengthForm::Bits16, LengthForm::Bits64, LengthForm::Bits7)
        );
        assert_eq!(r[1].mask, Some([1, 2, 3, 4]));
        assert_eq!(r[1].unmasked(), [7; 16]);
        assert_eq!(r[2].text(), "are you there");
    }

    #[test]
    fn a_non_minimal_length_is_shown_as_sent() {
        // 5 bytes in the 16-bit form: §5.2 forbids it; the walker shows it.
        let mut bytes = vec![0x82, 0x7e, 0, 5];
        bytes.extend_from_slice(b"abcde");
        let r = &walk_all(&bytes, 16)[0];
        assert_eq!((r.payload_len, r.length_form), (5, LengthForm::Bits16));
        assert!(!r.length_form.is_minimal(5));
    }

    #[test]
    fn fragments_and_control_frames_between_them() {
        let mut bytes = Vec::new();
        write_masked_frame(&mut bytes, false, OpCode::Text, b"Hel", KEY);
        write_masked_frame(&mut bytes, true, OpCode::Ping, b"", KEY);
        write_masked_frame(&mut bytes, false, OpCode::Continuation, b"l", KEY);
        write_masked_frame(&mut bytes, true, OpCode::Continuation, b"o", KEY);
        let r = walk_split_everywhere(&bytes, 16);
        let shape: Vec<(bool, &str, Vec<u8>)> = r
            .iter()
            .map(|r| (r.fin, r.opcode_name(), r.unmasked()))
            .collect();
        assert_eq!(
            shape,
            vec![
                (false, "text", b"Hel".to_vec()),
                (true, "ping", Vec::new()),
                (false, "continuation", b"l".to_vec()),
                (true, "continuation", b"o".to_vec()),
            ]
        );
    }

    #[test]
    fn close_frames_show_code_and_reason() {
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice("bye ✓".as_bytes());
        let mut bytes = Vec::new();
        write_masked_frame(&mut bytes, true, OpCode::Close, &payload, KEY);
        write_frame(&mut bytes, OpCode::Close, &[]);
        write_frame(&mut bytes, OpCode::Close, &[3]);
        write_frame(&mut bytes, OpCode::Text, b"not a close");
        let r = walk_split_everywhere(&bytes, 4);
        assert_eq!(r[0].close(), Some((Some(1000), "bye ✓".to_owned())));
        // The whole control payload is kept, whatever the data prefix.
        assert_eq!(r[0].prefix.len(), payload.len());
        assert_eq!(r[1].close(), Some((None, String::new())));
        assert_eq!(r[2].close(), Some((None, String::new())));
        assert_eq!(r[3].close(), None);
        let line = r[0].to_string();
        assert!(
            line.contains("opcode=0x8 (close) MASK=1 key=37fa213d len=9 (7-bit)")
                && line.contains("close code=1000 reason=\"bye ✓\""),
            "{line}"
        );
    }

    #[test]
    fn reserved_bits_and_opcodes_are_shown_not_refused() {
        // RSV1+RSV3 on a reserved data opcode, then a fragmented ping.
        let bytes = [0xd3, 0x00, 0x09, 0x01, b'!'];
        let r = walk_split_everywhere(&bytes, 16);
        assert_eq!((r[0].rsv1(), r[0].rsv2(), r[0].rsv3()), (true, false, true));
        assert_eq!((r[0].opcode, r[0].opcode_name()), (3, "reserved data"));
        assert!(!r[0].compressed, "RSV1 means compressed only with deflate");
        assert_eq!((r[1].fin, r[1].opcode_name()), (false, "ping"));
        assert_eq!(r[1].unmasked(), b"!");
    }

    #[test]
    fn compression_is_rsv1_with_deflate_and_lasts_the_message() {
        let mut bytes = Vec::new();
        let mut h = [0u8; MAX_HEADER_LEN];
        // Compressed first fragment (RSV1), continuation, then a plain message.
        let n = encode_header(&mut h, false, OpCode::Text, 2, None);
        h[0] |= 0x40;
        bytes.extend_from_slice(&h[..n]);
        bytes.extend_from_slice(&[0xf2, 0x48]);
        write_frame(&mut bytes, OpCode::Continuation, &[0x01, 0x00]);
        write_frame(&mut bytes, OpCode::Text, b"plain");
        let mut w = FrameWalker::new(16);
        w.set_deflate(true);
        let mut r = Vec::new();
        w.feed(&bytes, |x| r.push(x));
        let flags: Vec<(bool, bool)> = r.iter().map(|r| (r.rsv1(), r.compressed)).collect();
        assert_eq!(flags, vec![(true, true), (false, true), (false, false)]);
        assert!(
            r[0].to_string()
                .contains(" compressed payload=f248 (compressed)")
        );
    }

    #[test]
    fn a_64_bit_length_is_skipped_without_being_held() {
        // A 1 TiB frame announced: the walker keeps its prefix and skips the rest.
        let mut h = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut h, true, OpCode::Binary, 1 << 40, None);
        let mut w = FrameWalker::new(8);
        let mut r = Vec::new();
        w.feed(&h[..n], |x| r.push(x));
        w.feed(&[9; 100_000], |x| r.push(x));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].prefix, [9; 8]);
        assert!(matches!(w.walk, Walk::Skip));
        assert_eq!(w.remaining, (1 << 40) - 100_000);
    }

    proptest::proptest! {
        #[test]
        fn any_frames_cut_anywhere_give_the_same_records(
            frames in proptest::collection::vec(
                (proptest::prelude::any::<u8>(), 0usize..300, proptest::prelude::any::<Option<[u8; 4]>>()),
                1..8,
            ),
            cuts in proptest::collection::vec(0usize..2000, 0..6),
        ) {
            let mut bytes = Vec::new();
            let mut want = Vec::new();
            for (b0, len, mask) in &frames {
                let mut h = [0u8; MAX_HEADER_LEN];
                let n = encode_header(&mut h, true, OpCode::Binary, *len as u64, *mask);
                h[0] = *b0; // any FIN, RSV and opcode, reserved ones too
                bytes.extend_from_slice(&h[..n]);
                bytes.extend((0..*len).map(|i| i as u8));
                want.push((*b0 & 0x0f, *len as u64, *mask));
            }
            let mut w = FrameWalker::new(16);
            let mut got = Vec::new();
            let mut rest = &bytes[..];
            for cut in cuts {
                let (a, b) = rest.split_at(cut.min(rest.len()));
                w.feed(a, |r| got.push(r));
                rest = b;
            }
            w.feed(rest, |r| got.push(r));
            let shape: Vec<(u8, u64, Option<[u8; 4]>)> =
                got.iter().map(|r| (r.opcode, r.payload_len, r.mask)).collect();
            proptest::prop_assert_eq!(shape, want);
            for r in &got {
                let cap = if r.is_control() { MAX_PREFIX } else { 16 };
                proptest::prop_assert_eq!(r.prefix.len() as u64, r.payload_len.min(cap as u64));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40), 0..8),
        ) {
            let mut w = FrameWalker::new(16);
            let mut tap = Tap::new(16);
            for c in &chunks {
                w.feed(c, |_| {});
                tap.input(c, |_| {});
                tap.output(c, |_| {});
            }
        }
    }

    #[test]
    fn text_previews_cut_characters_cleanly() {
        assert_eq!(preview_text("é𝄞".as_bytes()), "é𝄞");
        assert_eq!(preview_text(&"é𝄞".as_bytes()[..4]), "é");
        assert_eq!(preview_text(&[b'a', 0xff, b'b']), "a\u{fffd}b");
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }

    #[test]
    fn log_lines_name_every_field() {
        let mut bytes = Vec::new();
        write_masked_frame(&mut bytes, true, OpCode::Text, &[b'z'; 200], KEY);
        let line = walk_all(&bytes, 16)[0].to_string();
        assert_eq!(
            line,
            format!(
                "frame 1: FIN=1 RSV1=0 RSV2=0 RSV3=0 opcode=0x1 (text) MASK=1 key=37fa213d \
                 len=200 (16-bit) masked={}… payload={}… \"zzzzzzzzzzzzzzzz\"",
                hex(&walk_all(&bytes, 16)[0].prefix),
                "7a".repeat(16)
            )
        );
    }

    const UPGRADE: &str = "GET /echo?trace=abc HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\nCookie: fastim_token=secret\r\n\r\n";
    const ACCEPT: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

    fn tap_run(input: &[&[u8]], output: &[&[u8]]) -> Vec<Seen> {
        let mut tap = Tap::new(16);
        let mut seen = Vec::new();
        for chunk in input {
            tap.input(chunk, |s| seen.push(s));
        }
        for chunk in output {
            tap.output(chunk, |s| seen.push(s));
        }
        seen
    }

    #[test]
    fn the_tap_sees_the_handshake_then_frames() {
        let mut client = UPGRADE.as_bytes().to_vec();
        write_masked_frame(&mut client, true, OpCode::Text, b"early", KEY);
        let mut server = ACCEPT.as_bytes().to_vec();
        write_frame(&mut server, OpCode::Text, b"early");
        for cut in [1, 40, UPGRADE.len(), UPGRADE.len() + 3, client.len()] {
            let (a, b) = client.split_at(cut);
            let (c, d) = server.split_at(cut.min(server.len()));
            let seen = tap_run(&[a, b], &[c, d]);
            let Seen::Request { head, path, trace } = &seen[0] else {
                panic!("{seen:?}")
            };
            assert_eq!((path.as_str(), trace.as_deref()), ("/echo", Some("abc")));
            assert!(head.contains("Cookie: [redacted]\r\n") && !head.contains("secret"));
            assert!(head.starts_with("GET /echo?trace=abc HTTP/1.1\r\nHost: h\r\n"));
            assert!(head.ends_with("\r\n\r\n"));
            assert!(matches!(
                &seen[1],
                Seen::Response { status: 101, deflate: false, head } if head == ACCEPT
            ));
            // The client's frame waited for the response.
            assert!(
                matches!(&seen[2], Seen::Frame(Direction::FromClient, r) if r.text() == "early")
            );
            assert!(
                matches!(&seen[3], Seen::Frame(Direction::FromServer, r) if r.text() == "early")
            );
            assert_eq!(seen.len(), 4, "cut {cut}: {seen:?}");
        }
    }

    #[test]
    fn the_tap_stops_for_plain_http_and_refusals() {
        let seen = tap_run(&[b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"], &[]);
        assert_eq!(seen, vec![Seen::Untraced]);
        let seen = tap_run(&[b"\x16\x03\x01 not http\r\n\r\n"], &[]);
        assert_eq!(seen, vec![Seen::Untraced]);
        let too_long = vec![b'a'; MAX_HEAD + 100];
        assert_eq!(tap_run(&[b"GET /", &too_long], &[]), vec![Seen::Untraced]);
        let mut client = UPGRADE.as_bytes().to_vec();
        write_masked_frame(&mut client, true, OpCode::Text, b"never opened", KEY);
        let seen = tap_run(
            &[&client],
            &[b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}"],
        );
        assert!(matches!(seen[1], Seen::Response { status: 404, .. }));
        assert_eq!(seen[2], Seen::Untraced);
        assert_eq!(seen.len(), 3, "{seen:?}");
    }

    #[test]
    fn the_tap_learns_deflate_from_the_response() {
        let offer = UPGRADE.replace(
            "\r\n\r\n",
            "\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
        );
        let mut client = offer.as_bytes().to_vec();
        // A compressed message sent before the response.
        let mut h = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut h, true, OpCode::Text, 0, Some(KEY));
        h[0] |= 0x40;
        client.extend_from_slice(&h[..n]);
        for (response, compressed) in [
            (
                ACCEPT.replace(
                    "\r\n\r\n",
                    "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
                ),
                true,
            ),
            (ACCEPT.to_owned(), false),
        ] {
            let seen = tap_run(&[&client], &[response.as_bytes()]);
            assert!(matches!(&seen[1], Seen::Response { deflate, .. } if *deflate == compressed));
            assert!(
                matches!(&seen[2], Seen::Frame(_, r) if r.compressed == compressed && r.rsv1())
            );
        }
    }

    #[test]
    fn secrets_are_redacted() {
        let head = "GET /chat?id=7&token=abc&x HTTP/1.1\r\nAuthorization: Bearer abc\r\n\
                    cookie: a=b\r\nHost: h\r\n\r\n";
        assert_eq!(
            redact_request(head.as_bytes()),
            "GET /chat?id=7&token=[redacted]&x HTTP/1.1\r\nAuthorization: [redacted]\r\n\
             cookie: [redacted]\r\nHost: h\r\n\r\n"
        );
    }
}
