//! permessage-deflate (RFC 7692), server side: negotiation, and the codecs the
//! caller lends to a connection.
//!
//! The DEFLATE itself comes from `flate2` (zlib-rs backend); the negotiation, the
//! framing rules and the context handling are ours, and free of I/O like the rest
//! of [`crate::ws`].
//!
//! The server always answers `server_no_context_takeover; client_no_context_takeover`
//! (§7.1.1.1, §7.1.1.2): every message is compressed and decompressed on its own,
//! so a connection keeps no zlib state. A decompressor ([`Inflater`]) and a
//! compressor ([`Deflater`]) are owned by whoever drives many connections (the
//! event loop, a worker thread), reset before each message and lent to the call
//! that needs them. A zlib context costs tens to hundreds of KiB; one per idle
//! connection would cost more than everything else the connection holds.

use std::borrow::Cow;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::error::ProtocolError;
use super::frame::{MAX_HEADER_LEN, OpCode, encode_header, write_frame};

/// The extension's name in `Sec-WebSocket-Extensions` (§5).
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// §7.2.1: the four octets that end a sync flush; the sender removes them, the
/// receiver puts them back (§7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Inflated bytes produced per step: a decompression bomb is stopped after at
/// most this much past the limit, whatever the ratio.
const INFLATE_STEP: usize = 64 * 1024;

/// Above this, a codec's scratch buffer is freed after use.
const KEEP_SCRATCH: usize = 256 * 1024;

/// What one connection agreed to, in the two bytes it costs to remember.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerMessageDeflate {
    /// The LZ77 window our compressor may use: the offer's `server_max_window_bits`,
    /// or 15 (§7.1.2.1). zlib cannot write raw DEFLATE with an 8-bit window (it
    /// would use 9), so with 8 this server sends every message uncompressed,
    /// which §6 allows for any message.
    pub server_window_bits: u8,
}

impl PerMessageDeflate {
    /// Whether our messages may be compressed at all (see `server_window_bits`).
    pub fn compresses(self) -> bool {
        self.server_window_bits >= 9
    }
}

/// An accepted offer: the parameters and the response header's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agreement {
    /// What the connection must honour.
    pub params: PerMessageDeflate,
    /// The `Sec-WebSocket-Extensions` value of the 101 response.
    pub response: String,
}

/// One parameter of an offer: its name, and its value if it had one, quoted-string
/// escapes removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param<'a> {
    /// The name as sent (compared ignoring ASCII case).
    pub name: &'a [u8],
    /// The value, if `name=value` was sent.
    pub value: Option<Cow<'a, [u8]>>,
}

/// One offer of an extension list (RFC 6455 §9.1): a name and its parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer<'a> {
    /// The extension token.
    pub name: &'a [u8],
    /// Its parameters, in order.
    pub params: Vec<Param<'a>>,
}

/// Picks the first acceptable permessage-deflate offer among every
/// `Sec-WebSocket-Extensions` header value, in order (§5.1: the server accepts one
/// offer or none; offers are listed in the client's preference).
pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<Agreement> {
    for value in values {
        let mut offers = Vec::new();
        // A syntax error ends the value; the offers before it still count.
        let _ = parse_offers(value, &mut offers);
        if let Some(agreement) = offers.iter().find_map(accept) {
            return Some(agreement);
        }
    }
    None
}

/// The syntax of a header value is not RFC 6455 §9.1's `extension-list`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed;

/// Parses an `extension-list` (RFC 6455 §9.1), appending each complete offer to
/// `out`. Empty list elements and optional whitespace are skipped (RFC 9110 §5.6.1).
///
/// ```text
/// extension-list = 1#extension
/// extension = extension-token *( ";" extension-param )
/// extension-param = token [ "=" (token | quoted-string) ]
/// ```
pub fn parse_offers<'a>(value: &'a [u8], out: &mut Vec<Offer<'a>>) -> Result<(), Malformed> {
    let mut p = Cursor { s: value, i: 0 };
    loop {
        p.skip_ows();
        match p.peek() {
            None => return Ok(()),
            Some(b',') => {
                p.i += 1;
                continue;
            }
            Some(_) => {}
        }
        let name = p.token().ok_or(Malformed)?;
        let mut params = Vec::new();
        loop {
            p.skip_ows();
            match p.peek() {
                None | Some(b',') => break,
                Some(b';') => p.i += 1,
                Some(_) => return Err(Malformed),
            }
            p.skip_ows();
            let name = p.token().ok_or(Malformed)?;
            p.skip_ows();
            let value = if p.peek() == Some(b'=') {
                p.i += 1;
                p.skip_ows();
                Some(p.token_or_quoted().ok_or(Malformed)?)
            } else {
                None
            };
            params.push(Param { name, value });
        }
        out.push(Offer { name, params });
    }
}

/// Accepts one offer, or declines it (§7.1: an unknown parameter, a parameter
/// twice or an invalid value makes the offer one the server must decline).
fn accept(offer: &Offer<'_>) -> Option<Agreement> {
    if !offer.name.eq_ignore_ascii_case(EXTENSION_NAME.as_bytes()) {
        return None;
    }
    let mut seen = [false; 4];
    let mut server_bits = None;
    for param in &offer.params {
        let name = param.name.to_ascii_lowercase();
        let value = param.value.as_deref();
        let (slot, ok) = match name.as_slice() {
            // §7.1.1.1, §7.1.1.2: these have no value.
            b"server_no_context_takeover" => (0, value.is_none()),
            b"client_no_context_takeover" => (1, value.is_none()),
            // §7.1.2.1: a value is required.
            b"server_max_window_bits" => {
                server_bits = value.and_then(window_bits);
                (2, server_bits.is_some())
            }
            // §7.1.2.2: a value is optional. We inflate with a 15-bit window, which
            // reads any smaller one, so we never limit the client: the response
            // leaves it out, as §7.1.2.2 allows.
            b"client_max_window_bits" => (3, value.is_none_or(|v| window_bits(v).is_some())),
            _ => return None,
        };
        if !ok || seen[slot] {
            return None;
        }
        seen[slot] = true;
    }
    // §7.1.1.1 and §7.1.1.2: the server may add both no_context_takeover
    // parameters whatever the offer said. §7.1.2.1: accepting an offer with
    // server_max_window_bits means answering it, with the same or a smaller value.
    let mut response =
        format!("{EXTENSION_NAME}; server_no_context_takeover; client_no_context_takeover");
    if let Some(bits) = server_bits {
        response.push_str(&format!("; server_max_window_bits={bits}"));
    }
    Some(Agreement {
        params: PerMessageDeflate {
            server_window_bits: server_bits.unwrap_or(15),
        },
        response,
    })
}

/// §7.1.2.1: `1*DIGIT` of 8 to 15, without leading zeros
/// (`%x38-39 / "1" %x30-35` in the ABNF).
fn window_bits(value: &[u8]) -> Option<u8> {
    match value {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

/// A position in a header value.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    /// `token = 1*tchar` (RFC 9110 §5.6.2).
    fn token(&mut self) -> Option<&'a [u8]> {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        (self.i > start).then(|| &self.s[start..self.i])
    }

    /// A token, or a quoted-string whose unescaped content is a token
    /// (RFC 6455 §9.1: "the value after quoted-string unescaping MUST conform to
    /// the 'token' ABNF").
    fn token_or_quoted(&mut self) -> Option<Cow<'a, [u8]>> {
        if self.peek() != Some(b'"') {
            return self.token().map(Cow::Borrowed);
        }
        self.i += 1;
        let mut value = Vec::new();
        loop {
            let b = self.peek()?;
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    value.push(self.peek()?);
                    self.i += 1;
                }
                _ => value.push(b),
            }
        }
        (!value.is_empty() && value.iter().copied().all(is_tchar)).then_some(Cow::Owned(value))
    }
}

/// RFC 9110 §5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A decompressor lent to connections, one message at a time (§7.2.2).
///
/// Created empty; the zlib context is allocated on the first compressed message,
/// so a caller that never negotiates deflate pays nothing.
#[derive(Default)]
pub struct Inflater {
    inner: Option<Decompress>,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("allocated", &self.inner.is_some())
            .finish()
    }
}

impl Inflater {
    /// An inflater with no zlib context yet.
    pub fn new() -> Self {
        Inflater { inner: None }
    }

    /// Inflates one message's payload (the frames' payloads joined) into `out`,
    /// which is cleared first.
    ///
    /// The size is checked as it grows: a message that inflates past `max` bytes
    /// is refused once one byte past the limit is out, before the rest is inflated. Invalid DEFLATE data is [`ProtocolError::BadCompression`].
    pub fn inflate(
        &mut self,
        payload: &[u8],
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), ProtocolError> {
        out.clear();
        // §7.2.2: no context takeover from the client, so every message starts
        // from an empty window.
        let d = self.inner.get_or_insert_with(|| Decompress::new(false));
        d.reset(false);
        let total = payload.len() + TAIL.len();
        let start_in = d.total_in();
        loop {
            let used = (d.total_in() - start_in) as usize;
            let input: &[u8] = if used < payload.len() {
                &payload[used..]
            } else {
                &TAIL[used - payload.len()..]
            };
            if out.len() > max {
                return Err(ProtocolError::MessageTooLarge);
            }
            // Grown by doubling, but never past one byte over the limit (to see
            // it crossed): a bomb costs at most the limit in memory and work.
            if out.capacity() == out.len() {
                let target = (out.len() * 2).max(out.len() + INFLATE_STEP).min(max + 1);
                out.try_reserve_exact(target - out.len())
                    .map_err(|_| ProtocolError::NoMemory)?;
            }
            let before = (d.total_in(), d.total_out());
            let status = d
                .decompress_vec(input, out, FlushDecompress::Sync)
                .map_err(|_| ProtocolError::BadCompression)?;
            let progressed = (d.total_in(), d.total_out()) != before;
            let all_in = (d.total_in() - start_in) as usize >= total;
            if status == Status::StreamEnd {
                // A final block: whatever follows it is not DEFLATE data (§7.2.2
                // allows BFINAL; trailing bytes would be garbage).
                return if (d.total_in() - start_in) as usize >= payload.len() {
                    Ok(())
                } else {
                    Err(ProtocolError::BadCompression)
                };
            }
            if out.len() > max {
                return Err(ProtocolError::MessageTooLarge);
            }
            if all_in && out.len() < out.capacity() {
                return Ok(());
            }
            if !progressed && out.len() < out.capacity() {
                // Input left that produces nothing: a truncated or broken stream.
                return Err(ProtocolError::BadCompression);
            }
        }
    }
}

/// A compressor lent to the code that sends, reset before each message
/// (`server_no_context_takeover`, §7.1.1.1).
///
/// One zlib context per window size in use (most clients never ask for less than
/// 15), made on first use.
#[derive(Default)]
pub struct Deflater {
    by_bits: [Option<Box<Compress>>; 7],
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sizes: Vec<usize> = (9..=15)
            .filter(|&b| self.by_bits[b - 9].is_some())
            .collect();
        f.debug_struct("Deflater").field("windows", &sizes).finish()
    }
}

impl Deflater {
    /// A compressor with no zlib context yet.
    pub fn new() -> Self {
        Deflater::default()
    }

    /// Appends `payload` as one message to `out`: compressed, with RSV1 set, when
    /// `deflate` was negotiated and allows it and the payload has at least
    /// `min_bytes` (and compressing makes it smaller); otherwise a plain frame.
    pub fn write_message(
        &mut self,
        deflate: Option<PerMessageDeflate>,
        min_bytes: usize,
        opcode: OpCode,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) {
        match deflate {
            Some(d) if d.compresses() && payload.len() >= min_bytes => {
                self.write_compressed(d.server_window_bits, opcode, payload, out);
            }
            _ => write_frame(out, opcode, payload),
        }
    }

    /// Appends `payload` compressed as one final frame (§7.2.1), or plain if
    /// compression does not make it smaller or fails.
    pub fn write_compressed(
        &mut self,
        window_bits: u8,
        opcode: OpCode,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) {
        let bits = window_bits.clamp(9, 15);
        let c = self.by_bits[usize::from(bits - 9)].get_or_insert_with(|| {
            Box::new(Compress::new_with_window_bits(
                Compression::default(),
                false,
                bits,
            ))
        });
        c.reset();
        let scratch = &mut self.scratch;
        scratch.clear();
        let start_in = c.total_in();
        let mut ok = true;
        loop {
            if scratch.capacity() - scratch.len() < 1024 {
                scratch.reserve(1024.max(payload.len() / 2));
            }
            let used = (c.total_in() - start_in) as usize;
            // §7.2.1: compress the whole message and end it with a sync flush.
            if c.compress_vec(&payload[used..], scratch, FlushCompress::Sync)
                .is_err()
            {
                ok = false;
                break;
            }
            // zlib's rule: a flush is complete once it leaves output space unused.
            if (c.total_in() - start_in) as usize == payload.len()
                && scratch.len() < scratch.capacity()
            {
                break;
            }
        }
        // §7.2.1: "Remove 4 octets (that are 0x00 0x00 0xff 0xff) from the tail end".
        let compressed = match scratch.strip_suffix(&TAIL) {
            Some(c) if ok && c.len() < payload.len() => c,
            _ => {
                write_frame(out, opcode, payload);
                self.trim();
                return;
            }
        };
        let mut header = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut header, true, opcode, compressed.len() as u64, None);
        // §6: RSV1 is the "Per-Message Compressed" bit, on the first frame only.
        header[0] |= RSV1;
        out.reserve(n + compressed.len());
        out.extend_from_slice(&header[..n]);
        out.extend_from_slice(compressed);
        self.trim();
    }

    fn trim(&mut self) {
        if self.scratch.capacity() > KEEP_SCRATCH {
            self.scratch = Vec::new();
        }
    }
}

/// The codecs one driver lends to all its connections: what a connection would
/// otherwise keep per connection, kept once per loop or thread instead.
#[derive(Debug, Default)]
pub struct Codec {
    /// For compressed messages received.
    pub inflater: Inflater,
    /// For messages sent compressed.
    pub deflater: Deflater,
    /// Large message buffers between messages.
    pub spares: super::Spares,
}

/// The RSV1 bit in a frame's first byte: "Per-Message Compressed" (§6).
pub const RSV1: u8 = 0x40;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::decode_header;

    fn answer(values: &[&str]) -> Option<String> {
        negotiate(values.iter().map(|v| v.as_bytes())).map(|a| a.response)
    }

    const BASE: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    #[test]
    fn every_parameter_combination_is_accepted() {
        let with_bits = |n: u8| format!("{BASE}; server_max_window_bits={n}");
        let cases: Vec<(&str, String)> = vec![
            ("permessage-deflate", BASE.into()),
            ("permessage-deflate; client_max_window_bits", BASE.into()),
            ("permessage-deflate; client_max_window_bits=8", BASE.into()),
            ("permessage-deflate; client_max_window_bits=15", BASE.into()),
            (
                "permessage-deflate; server_no_context_takeover",
                BASE.into(),
            ),
            (
                "permessage-deflate; client_no_context_takeover",
                BASE.into(),
            ),
            (
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
                BASE.into(),
            ),
            ("permessage-deflate; server_max_window_bits=8", with_bits(8)),
            ("permessage-deflate; server_max_window_bits=9", with_bits(9)),
            (
                "permessage-deflate; server_max_window_bits=12",
                with_bits(12),
            ),
            (
                "permessage-deflate; server_max_window_bits=15",
                with_bits(15),
            ),
            (
                "permessage-deflate; client_no_context_takeover; client_max_window_bits; \
                 server_no_context_takeover; server_max_window_bits=10",
                with_bits(10),
            ),
            // Quoted values, names in any case, whitespace around everything.
            (
                "permessage-deflate; server_max_window_bits=\"10\"",
                with_bits(10),
            ),
            (
                "permessage-deflate;client_max_window_bits=\"1\\5\"",
                BASE.into(),
            ),
            (
                "PerMessage-Deflate ;\tSERVER_MAX_WINDOW_BITS = 11 ",
                with_bits(11),
            ),
            (" , permessage-deflate ,", BASE.into()),
        ];
        for (offer, want) in cases {
            assert_eq!(answer(&[offer]), Some(want), "{offer}");
        }
    }

    #[test]
    fn bad_offers_are_declined() {
        for offer in [
            "",
            "x-webkit-deflate-frame",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=9",
            "permessage-deflate; unknown",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=08",
            "permessage-deflate; server_max_window_bits=\"\"",
            "permessage-deflate; client_max_window_bits=0",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover=\"x\"",
            "permessage-deflate; server_max_window_bits=\"1 0\"",
            "permessage-deflate; server_max_window_bits=\"10",
            "permessage-deflate x",
            "permessage-deflate; =9",
        ] {
            assert_eq!(answer(&[offer]), None, "{offer}");
        }
    }

    #[test]
    fn the_first_acceptable_offer_wins() {
        // Within one header value, and across several header lines.
        assert_eq!(
            answer(&["permessage-deflate; server_max_window_bits=99, \
                 permessage-deflate; server_max_window_bits=12, permessage-deflate"]),
            Some(format!("{BASE}; server_max_window_bits=12"))
        );
        assert_eq!(
            answer(&[
                "foo; a=\"x,y;z\", permessage-deflate; bogus",
                "permessage-deflate; client_max_window_bits",
            ]),
            Some(BASE.into())
        );
        // A syntax error ends its value, not the offers already read.
        assert_eq!(answer(&["permessage-deflate, ;;;"]), Some(BASE.into()));
    }

    #[test]
    fn offers_parse_into_names_and_parameters() {
        let mut offers = Vec::new();
        assert_eq!(
            parse_offers(b"a; b; c=d, e; f=\"g\\h\"", &mut offers),
            Ok(())
        );
        assert_eq!(offers.len(), 2);
        assert_eq!(offers[0].name, b"a");
        assert_eq!(offers[0].params[0].value, None);
        assert_eq!(offers[0].params[1].value.as_deref(), Some(&b"d"[..]));
        // The quoted value is unescaped.
        assert_eq!(offers[1].params[0].value.as_deref(), Some(&b"gh"[..]));
        // Unescaped, it must still be a token.
        assert_eq!(parse_offers(b"a; b=\"c d\"", &mut offers), Err(Malformed));
    }

    #[test]
    fn window_of_8_is_answered_but_never_compressed() {
        let a = negotiate([&b"permessage-deflate; server_max_window_bits=8"[..]]).expect("ok");
        assert!(!a.params.compresses());
        let mut out = Vec::new();
        Deflater::new().write_message(Some(a.params), 0, OpCode::Text, &[b'a'; 2000], &mut out);
        assert_eq!(out[0], 0x81, "plain frame, RSV1 clear");
    }

    fn compress(bits: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Deflater::new().write_compressed(bits, OpCode::Binary, payload, &mut out);
        out
    }

    #[test]
    fn compressed_frames_inflate_back() {
        let text: Vec<u8> = b"Hello, hello, hello, world! ".repeat(200);
        for bits in 9..=15 {
            let frame = compress(bits, &text);
            assert_eq!(frame[0], 0x80 | RSV1 | 0x2);
            let (header, n) = decode_header(&frame).expect("valid").expect("whole");
            assert!(
                header.payload_len < text.len() as u64 / 10,
                "{bits}: {header:?}"
            );
            let mut out = Vec::new();
            Inflater::new()
                .inflate(&frame[n..], 1 << 20, &mut out)
                .expect("inflates");
            assert_eq!(out, text);
        }
        // Incompressible data goes out plain.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..3000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        assert_eq!(compress(15, &noise)[0], 0x82);
    }

    #[test]
    fn inflation_stops_at_the_limit() {
        let zeros = vec![0u8; 4 * 1024 * 1024];
        let frame = compress(15, &zeros);
        let payload = &frame[4..];
        let mut inflater = Inflater::new();
        let mut out = Vec::new();
        assert_eq!(
            inflater.inflate(payload, zeros.len() - 1, &mut out),
            Err(ProtocolError::MessageTooLarge)
        );
        assert!(
            out.capacity() <= zeros.len() + INFLATE_STEP,
            "{}",
            out.capacity()
        );
        // Inclusive limit; the inflater is reusable after an error.
        inflater
            .inflate(payload, zeros.len(), &mut out)
            .expect("fits");
        assert_eq!(out.len(), zeros.len());
        assert_eq!(
            inflater.inflate(&[0xff, 0xff, 0xff], 100, &mut out),
            Err(ProtocolError::BadCompression)
        );
        // The empty message: §7.2.3.6's single 0x00 block, or nothing at all.
        inflater.inflate(&[0x00], 100, &mut out).expect("empty");
        assert!(out.is_empty());
        inflater.inflate(&[], 100, &mut out).expect("empty");
        assert!(out.is_empty());
        // §7.2.3.1's example: "Hello" compressed.
        inflater
            .inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100, &mut out)
            .expect("hello");
        assert_eq!(out, b"Hello");
    }
}
