//! One WebSocket connection after the handshake: frames in, events out (RFC 6455 §5-7).
//!
//! [`Connection`] is sans-IO. The caller reads bytes from wherever it likes and
//! hands them to [`Connection::handle_bytes`], which decodes at most one frame (or
//! one piece of a long payload) per call and says how many bytes it consumed and
//! which [`Event`] it produced. Bytes that were not consumed must be offered again,
//! followed by newer ones. Output (pongs, close frames) is appended to a `Vec<u8>`
//! the caller owns and sends.
//!
//! Payloads are unmasked in place. A complete, unfragmented data frame is handed
//! out as a slice of the caller's buffer without a copy; only fragmented messages
//! and frames that arrive in pieces are gathered in the connection's own buffer.
//! That buffer is reused from message to message and released by
//! [`Connection::release_idle_buffer`] when the caller sees the connection go idle.

use std::mem;

use super::close::{CloseCode, CloseFrame, parse_close_payload};
use super::deflate::{Inflater, PerMessageDeflate};
use super::error::ProtocolError;
use super::frame::{
    FrameHeader, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, OpCode, decode_header, encode_header,
    write_frame,
};
use super::mask::{apply_mask, rotate_key};
use super::utf8::Utf8Validator;

/// Which end of the connection this is; it decides the masking rule (§5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Receives masked frames, sends unmasked ones.
    Server,
    /// Receives unmasked frames (sending masked ones is the caller's business).
    Client,
}

/// Size limits of one endpoint, checked against a frame's header before any payload is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload of a single frame.
    pub max_frame: u32,
    /// Largest message, all fragments together (inclusive). 32 bits keep an idle
    /// connection small; no endpoint takes messages of gigabytes.
    pub max_message: u32,
}

/// A complete data message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message, already validated as UTF-8.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

/// What one call of [`Connection::handle_bytes`] produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A data message; fragments are already joined.
    Message(Message<'a>),
    /// A ping: answer it with [`Connection::send_pong`] and the same payload.
    Ping(&'a [u8]),
    /// A pong (solicited or not; nothing to do).
    Pong(&'a [u8]),
    /// The peer's close frame: answer it with [`Connection::send_close`] unless we
    /// started the closing handshake ourselves, then close the TCP connection.
    Close(CloseFrame<'a>),
}

/// Where the closing handshake stands (§7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Messages flow both ways.
    Open,
    /// We sent a close frame and wait for the peer's; incoming data is dropped.
    CloseSent,
    /// The peer sent a close frame that we have not answered yet.
    CloseReceived,
    /// Both close frames have been sent; only the TCP close is left.
    Closed,
}

/// Why a message or frame could not be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// Our close frame is out: §5.5.1 allows nothing after it.
    Closed,
    /// A control frame's payload is at most 125 bytes (§5.5).
    ControlTooLong,
    /// A header for a data message was asked with a control opcode.
    NotData,
    /// This connection plays the client, whose frames need a mask key (§5.3).
    ClientRole,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SendError::Closed => "our close frame was sent: nothing may follow it",
            SendError::ControlTooLong => "a control frame carries at most 125 bytes",
            SendError::NotData => "a message header needs a data opcode",
            SendError::ClientRole => "a client connection cannot send without a mask key",
        })
    }
}

impl std::error::Error for SendError {}

/// The sending side of a connection at one moment: what encoding a frame needs
/// (who we are, whether our close frame is out), as a copy, so a reply can be
/// encoded while the message it answers still borrows the connection. It sends
/// unmasked frames only: a server's (§5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sender {
    role: Role,
    phase: Phase,
}

impl Sender {
    /// A server's sending side bound to no connection: for frames encoded once and
    /// shared by many connections (a group delivery, a sync reply), each of which
    /// checks [`Connection::may_send`] when it takes the frame.
    pub const SHARED: Sender = Sender {
        role: Role::Server,
        phase: Phase::Open,
    };

    /// See [`Connection::may_send`].
    pub fn may_send(&self) -> Result<(), SendError> {
        if self.role == Role::Client {
            // A client masks every frame with an unpredictable key (§5.3); this
            // crate sends only as a server.
            return Err(SendError::ClientRole);
        }
        match self.phase {
            Phase::Open | Phase::CloseReceived => Ok(()),
            Phase::CloseSent | Phase::Closed => Err(SendError::Closed),
        }
    }

    /// Appends a text message as one frame.
    pub fn send_text(&self, text: &str, out: &mut Vec<u8>) -> Result<(), SendError> {
        self.send(OpCode::Text, text.as_bytes(), out)
    }

    /// Appends a binary message as one frame.
    pub fn send_binary(&self, data: &[u8], out: &mut Vec<u8>) -> Result<(), SendError> {
        self.send(OpCode::Binary, data, out)
    }

    /// Appends a message as one frame, keeping its type.
    pub fn send_message(&self, message: Message<'_>, out: &mut Vec<u8>) -> Result<(), SendError> {
        match message {
            Message::Text(text) => self.send_text(text, out),
            Message::Binary(data) => self.send_binary(data, out),
        }
    }

    /// Appends a one-frame data message of type `opcode` (text already known to
    /// be UTF-8, e.g. an echo of a checked message).
    pub fn send_data(
        &self,
        opcode: OpCode,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SendError> {
        if opcode.is_control() {
            return Err(SendError::NotData);
        }
        self.send(opcode, payload, out)
    }

    /// See [`Connection::send_header`].
    pub fn send_header(
        &self,
        opcode: OpCode,
        len: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), SendError> {
        if opcode.is_control() {
            return Err(SendError::NotData);
        }
        self.may_send()?;
        let mut header = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut header, true, opcode, len as u64, None);
        out.extend_from_slice(&header[..n]);
        Ok(())
    }

    /// Appends a message as fragments of `size` payload bytes (§5.4): the first
    /// frame with the message's opcode and FIN clear, then continuation frames,
    /// the last with FIN set; an empty message is one frame. At most
    /// `max_fragments` frames: a longer message gets larger fragments. (The frame
    /// inspector's fragmented echo: this server sends whole messages otherwise.)
    pub fn send_fragmented(
        &self,
        message: Message<'_>,
        size: usize,
        max_fragments: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), SendError> {
        self.may_send()?;
        let (opcode, payload) = match message {
            Message::Text(text) => (OpCode::Text, text.as_bytes()),
            Message::Binary(data) => (OpCode::Binary, data),
        };
        if payload.is_empty() {
            write_frame(out, opcode, &[]);
            return Ok(());
        }
        let size = size
            .max(1)
            .max(payload.len().div_ceil(max_fragments.max(1)));
        let mut chunks = payload.chunks(size).peekable();
        let mut op = opcode;
        while let Some(chunk) = chunks.next() {
            let mut header = [0u8; MAX_HEADER_LEN];
            let fin = chunks.peek().is_none();
            let n = encode_header(&mut header, fin, op, chunk.len() as u64, None);
            out.extend_from_slice(&header[..n]);
            out.extend_from_slice(chunk);
            op = OpCode::Continuation;
        }
        Ok(())
    }

    fn send(&self, opcode: OpCode, payload: &[u8], out: &mut Vec<u8>) -> Result<(), SendError> {
        self.may_send()?;
        if opcode.is_control() && payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(SendError::ControlTooLong);
        }
        write_frame(out, opcode, payload);
        Ok(())
    }
}

/// Which frame part the next input bytes belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reading {
    /// The start of a frame header.
    Header,
    /// The rest of a data frame's payload, streamed into the message buffer.
    Payload {
        remaining: u64,
        /// Masking key rotated to the next byte's offset (zero key when unmasked).
        key: [u8; 4],
        fin: bool,
    },
}

/// The message being gathered in the connection's own buffer, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Assembly {
    /// No message in progress.
    Idle,
    /// A text message, validated up to the validator's mark.
    Text(Utf8Validator),
    /// A binary message.
    Binary,
    /// A compressed message (RFC 7692 §6): its payload as received, inflated and
    /// checked (UTF-8 if `text`) when the last frame is in.
    Compressed { text: bool },
    /// A message was handed out from the buffer; clear it before the next frame.
    Delivered,
}

/// RSV1 in [`FrameHeader::rsv`]: permessage-deflate's "Per-Message Compressed" bit.
const RSV1: u8 = 0x4;

/// Most buffer space reserved from a frame header's length before the payload
/// arrives. Beyond it the buffer grows as bytes actually arrive: a header alone,
/// which costs the peer 14 bytes, cannot make us hold more than this.
const MAX_RESERVE_AHEAD: u64 = 64 * 1024;

/// Payload bytes copied into the message buffer before they are unmasked there.
const UNMASK_PIECE: usize = 16 * 1024;

/// Empty non-final data frames in a row that a message may carry. Each costs the
/// peer two bytes and us a turn of parsing, and brings the message no closer to its
/// end; a handful is legal and harmless (§5.4), a stream of them is a stall.
pub const MAX_EMPTY_FRAGMENTS: u16 = 64;

/// The receiving side and closing handshake of one WebSocket connection.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    limits: Limits,
    phase: Phase,
    reading: Reading,
    assembly: Assembly,
    /// Empty non-final data frames since the last one that carried bytes.
    empty_fragments: u16,
    /// permessage-deflate, when the handshake negotiated it (RFC 7692).
    deflate: Option<PerMessageDeflate>,
    message: Vec<u8>,
}

impl Connection {
    /// A connection that has just completed its opening handshake.
    pub fn new(role: Role, limits: Limits) -> Self {
        Connection {
            role,
            limits,
            phase: Phase::Open,
            reading: Reading::Header,
            assembly: Assembly::Idle,
            empty_fragments: 0,
            deflate: None,
            message: Vec::new(),
        }
    }

    // ---- permessage-deflate (RFC 7692): negotiation result, lent inflater ----

    /// The same connection with permessage-deflate as the handshake negotiated it:
    /// RSV1 then marks a compressed message (§6).
    pub fn with_deflate(mut self, deflate: Option<PerMessageDeflate>) -> Self {
        self.deflate = deflate;
        self
    }

    /// What the handshake negotiated, for the code that sends (see
    /// [`super::deflate::Deflater::write_message`]).
    pub fn deflate(&self) -> Option<PerMessageDeflate> {
        self.deflate
    }

    /// [`Connection::handle_bytes`] with a decompressor lent for compressed
    /// messages: the connection keeps no zlib state of its own (the server
    /// answers `client_no_context_takeover`, RFC 7692 §7.1.1.2), so one
    /// [`Inflater`] serves every connection of its owner, one message at a time.
    pub fn handle_bytes_with<'a>(
        &'a mut self,
        inflater: &mut Inflater,
        input: &'a mut [u8],
        out: &mut Vec<u8>,
    ) -> Result<(usize, Option<Event<'a>>), ProtocolError> {
        if self.assembly == Assembly::Delivered {
            self.message.clear();
            self.assembly = Assembly::Idle;
        }
        if matches!(self.phase, Phase::CloseReceived | Phase::Closed) {
            // §5.5.1: after a close frame the peer sends nothing more; ignore what it does.
            return Ok((input.len(), None));
        }
        match self.reading {
            Reading::Payload {
                remaining,
                key,
                fin,
            } => self.continue_payload(inflater, input, remaining, key, fin, out),
            Reading::Header => self.start_frame(inflater, input, out),
        }
    }

    /// Inflates a complete compressed message from `payload` (RFC 7692 §7.2.2)
    /// into the message buffer and checks it as the uncompressed one would be.
    fn inflate_message<'a>(
        &'a mut self,
        inflater: &mut Inflater,
        payload: Option<&[u8]>,
        text: bool,
        out: &mut Vec<u8>,
    ) -> Result<Message<'a>, ProtocolError> {
        let max = self.limits.max_message as usize;
        let inflated = match payload {
            Some(payload) => inflater.inflate(payload, max, &mut self.message),
            None => {
                let mut inflated = Vec::new();
                let done = inflater.inflate(&self.message, max, &mut inflated);
                self.message = inflated;
                done
            }
        };
        if let Err(e) = inflated {
            return Err(self.fail(e, out));
        }
        self.assembly = Assembly::Delivered;
        if !text {
            return Ok(Message::Binary(&self.message));
        }
        if simdutf8::basic::from_utf8(&self.message).is_err() {
            return Err(self.fail(ProtocolError::InvalidUtf8, out));
        }
        // Checked once above; this second pass only yields the `&str` (the
        // failure needed `self` for its close frame while the first borrow lived).
        match simdutf8::basic::from_utf8(&self.message) {
            Ok(text) => Ok(Message::Text(text)),
            Err(_) => Err(ProtocolError::InvalidUtf8),
        }
    }

    // ---- end of permessage-deflate ----

    /// Where the closing handshake stands.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether a frame or a fragmented message has started and not ended: the
    /// caller holds the peer to a progress deadline meanwhile.
    pub fn mid_message(&self) -> bool {
        self.reading != Reading::Header
            || matches!(
                self.assembly,
                Assembly::Text(_) | Assembly::Binary | Assembly::Compressed { .. }
            )
    }

    /// How much of the message in progress has arrived: it grows with every payload
    /// byte, so a caller can tell a stalled message from a slow one.
    pub fn message_progress(&self) -> u64 {
        let remaining = match self.reading {
            Reading::Payload { remaining, .. } => remaining,
            Reading::Header => 0,
        };
        // Remaining bytes fall as payload arrives; gathered ones grow.
        (self.message.len() as u64).wrapping_sub(remaining)
    }

    /// The endpoint limits this connection enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Consumes bytes from the start of `input`, which the call may unmask in place,
    /// and appends to `out` what the protocol answers by itself.
    ///
    /// Returns the number of bytes consumed and at most one event. `(0, None)`
    /// means the input holds no complete unit yet: call again once more bytes have
    /// arrived, with the unconsumed bytes first.
    ///
    /// The connection owns the replies the protocol requires: a ping is answered
    /// with its pong (§5.5.2, §5.5.3) and a close frame with ours, echoing its code
    /// (§5.5.1), before the event is handed out; an error is answered with a close
    /// frame carrying [`ProtocolError::close_code`] and is fatal: feed nothing more.
    pub fn handle_bytes<'a>(
        &'a mut self,
        input: &'a mut [u8],
        out: &mut Vec<u8>,
    ) -> Result<(usize, Option<Event<'a>>), ProtocolError> {
        // Without deflate no message is compressed, and this one is never used.
        self.handle_bytes_with(&mut Inflater::new(), input, out)
    }

    /// Whether data and pings may still be sent: not after our close frame
    /// (RFC 6455 §5.5.1), and not by a client, whose frames need a mask key.
    pub fn may_send(&self) -> Result<(), SendError> {
        self.sender().may_send()
    }

    /// The sending side as it stands now, to encode a reply while a message of
    /// this connection is still borrowed (an echo of the message itself).
    pub fn sender(&self) -> Sender {
        Sender {
            role: self.role,
            phase: self.phase,
        }
    }

    /// Appends a text message as one frame.
    pub fn send_text(&self, text: &str, out: &mut Vec<u8>) -> Result<(), SendError> {
        self.sender().send_text(text, out)
    }

    /// Appends a binary message as one frame.
    pub fn send_binary(&self, data: &[u8], out: &mut Vec<u8>) -> Result<(), SendError> {
        self.sender().send_binary(data, out)
    }

    /// Appends a message as one frame, keeping its type.
    pub fn send_message(&self, message: Message<'_>, out: &mut Vec<u8>) -> Result<(), SendError> {
        self.sender().send_message(message, out)
    }

    /// Appends a one-frame data message of type `opcode`.
    pub fn send_data(
        &self,
        opcode: OpCode,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SendError> {
        self.sender().send_data(opcode, payload, out)
    }

    /// Appends only the header of a one-frame message of `len` bytes: the caller
    /// queues the payload right after it without copying it (a large echo).
    pub fn send_header(
        &self,
        opcode: OpCode,
        len: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), SendError> {
        self.sender().send_header(opcode, len, out)
    }

    /// Appends a ping (§5.5.2); its payload is at most 125 bytes.
    pub fn send_ping(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), SendError> {
        self.sender().send(OpCode::Ping, payload, out)
    }

    /// Appends a close frame to `out` and advances the closing handshake.
    ///
    /// With no code the payload is empty; a reason is cut to fit a control frame
    /// (at a character boundary). §5.5.1 allows one close frame per direction:
    /// once ours is sent this is [`SendError::Closed`].
    pub fn send_close(
        &mut self,
        code: Option<CloseCode>,
        reason: &str,
        out: &mut Vec<u8>,
    ) -> Result<(), SendError> {
        self.may_send()?;
        let next = match self.phase {
            Phase::Open => Phase::CloseSent,
            _ => Phase::Closed,
        };
        match code {
            Some(code) => {
                let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
                payload[..2].copy_from_slice(&code.0.to_be_bytes());
                // A reason never makes a close frame a fragmented control frame.
                let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
                write_frame(out, OpCode::Close, &payload[..2 + end]);
            }
            None => write_frame(out, OpCode::Close, &[]),
        }
        self.phase = next;
        Ok(())
    }

    /// Takes the buffer of the message just delivered, if it was gathered in the
    /// connection's own buffer (fragmented, or arrived in pieces), so the caller can
    /// keep it without a copy. `None` means it was handed out from the caller's
    /// input: then its payload is the last bytes the call consumed, unmasked.
    pub fn take_message(&mut self) -> Option<Vec<u8>> {
        if self.assembly != Assembly::Delivered {
            return None;
        }
        self.assembly = Assembly::Idle;
        Some(mem::take(&mut self.message))
    }

    /// Whether the payload being gathered will outgrow the message buffer: a
    /// larger buffer offered now with [`Connection::give_buffer`] saves the
    /// growth (and its copies).
    pub fn wants_buffer(&self) -> bool {
        match self.reading {
            Reading::Payload { remaining, .. } => {
                remaining > (self.message.capacity() - self.message.len()) as u64
            }
            Reading::Header => false,
        }
    }

    /// The capacity of the message buffer, to offer it only larger ones.
    pub fn buffer_capacity(&self) -> usize {
        self.message.capacity()
    }

    /// Offers a spare buffer: the connection gathers into it from now on if it is
    /// larger than its own (moving what it has gathered so far) and hands back the
    /// buffer it does not use, cleared.
    pub fn give_buffer(&mut self, mut spare: Vec<u8>) -> Vec<u8> {
        spare.clear();
        if spare.capacity() <= self.message.capacity() || spare.capacity() < self.message.len() {
            return spare;
        }
        spare.extend_from_slice(&self.message);
        let mut old = mem::replace(&mut self.message, spare);
        old.clear();
        old
    }

    /// Frees the message buffer if no message is in progress, so an idle
    /// connection holds no heap memory.
    pub fn release_idle_buffer(&mut self) {
        if matches!(self.assembly, Assembly::Idle | Assembly::Delivered)
            && self.reading == Reading::Header
        {
            self.message = Vec::new();
            self.assembly = Assembly::Idle;
        }
    }

    fn start_frame<'a>(
        &'a mut self,
        inflater: &mut Inflater,
        input: &'a mut [u8],
        out: &mut Vec<u8>,
    ) -> Result<(usize, Option<Event<'a>>), ProtocolError> {
        let Some((header, header_len)) = decode_header(input).map_err(|e| self.fail(e, out))?
        else {
            return Ok((0, None));
        };
        if let Err(e) = self.check_header(&header) {
            return Err(self.fail(e, out));
        }
        if !header.opcode.is_control() {
            if header.payload_len == 0 && !header.fin {
                self.empty_fragments += 1;
                if self.empty_fragments > MAX_EMPTY_FRAGMENTS {
                    return Err(self.fail(ProtocolError::EmptyFragments, out));
                }
            } else {
                self.empty_fragments = 0;
            }
        }
        let key = header.mask.unwrap_or([0; 4]);
        let available = (input.len() - header_len) as u64;

        if header.opcode.is_control() {
            // Control payloads are at most 125 bytes: wait for the whole frame.
            if available < header.payload_len {
                return Ok((0, None));
            }
            let end = header_len + header.payload_len as usize;
            let payload = &mut input[header_len..end];
            apply_mask(payload, key);
            return Ok((end, self.control_event(header.opcode, payload, out)?));
        }

        if header.fin && self.assembly == Assembly::Idle && available >= header.payload_len {
            // The common case: a whole message in one frame, already in the caller's buffer.
            let end = header_len + header.payload_len as usize;
            if self.phase != Phase::Open {
                return Ok((end, None));
            }
            let payload = &mut input[header_len..end];
            apply_mask(payload, key);
            if header.rsv & RSV1 != 0 {
                let text = header.opcode == OpCode::Text;
                let message = self.inflate_message(inflater, Some(payload), text, out)?;
                return Ok((end, Some(Event::Message(message))));
            }
            let message = if header.opcode == OpCode::Text {
                match simdutf8::basic::from_utf8(payload) {
                    Ok(text) => Message::Text(text),
                    Err(_) => return Err(self.fail(ProtocolError::InvalidUtf8, out)),
                }
            } else {
                Message::Binary(payload)
            };
            return Ok((end, Some(Event::Message(message))));
        }

        match header.opcode {
            OpCode::Text | OpCode::Binary if header.rsv & RSV1 != 0 => {
                self.assembly = Assembly::Compressed {
                    text: header.opcode == OpCode::Text,
                };
            }
            OpCode::Text => self.assembly = Assembly::Text(Utf8Validator::new()),
            OpCode::Binary => self.assembly = Assembly::Binary,
            _ => {}
        }
        let ahead = header.payload_len.min(MAX_RESERVE_AHEAD) as usize;
        if self.message.try_reserve(ahead).is_err() {
            return Err(self.fail(ProtocolError::NoMemory, out));
        }
        let (consumed, event) = self.continue_payload(
            inflater,
            &mut input[header_len..],
            header.payload_len,
            key,
            header.fin,
            out,
        )?;
        Ok((header_len + consumed, event))
    }

    /// Streams payload bytes of the current data frame into the message buffer.
    fn continue_payload<'a>(
        &'a mut self,
        inflater: &mut Inflater,
        input: &'a mut [u8],
        remaining: u64,
        key: [u8; 4],
        fin: bool,
        out: &mut Vec<u8>,
    ) -> Result<(usize, Option<Event<'a>>), ProtocolError> {
        let n = remaining.min(input.len() as u64) as usize;
        // Grown by what arrived, never by what was declared; a failed allocation
        // closes this connection instead of aborting the process.
        if self.message.try_reserve(n).is_err() {
            return Err(self.fail(ProtocolError::NoMemory, out));
        }
        // Copied and unmasked a piece at a time, so the second pass finds the
        // bytes still in the cache (pieces of a multiple of 4 keep the key aligned).
        for piece in input[..n].chunks(UNMASK_PIECE) {
            let at = self.message.len();
            self.message.extend_from_slice(piece);
            apply_mask(&mut self.message[at..], key);
        }
        // Fail on the first bad byte even if the frame is far from complete (§8.1).
        let valid = match &mut self.assembly {
            Assembly::Text(validator) => validator.advance(&self.message).is_ok(),
            _ => true,
        };
        if !valid {
            return Err(self.fail(ProtocolError::InvalidUtf8, out));
        }
        let remaining = remaining - n as u64;
        if remaining > 0 {
            self.reading = Reading::Payload {
                remaining,
                key: rotate_key(key, n as u64),
                fin,
            };
            return Ok((n, None));
        }
        self.reading = Reading::Header;
        if !fin {
            return Ok((n, None));
        }
        if let Assembly::Compressed { text } = self.assembly {
            if self.phase != Phase::Open {
                self.assembly = Assembly::Delivered;
                return Ok((n, None));
            }
            let message = self.inflate_message(inflater, None, text, out)?;
            return Ok((n, Some(Event::Message(message))));
        }
        let assembly = mem::replace(&mut self.assembly, Assembly::Delivered);
        if let Assembly::Text(validator) = assembly {
            // The incremental checks failed fast on bad bytes; this one rejects a
            // message that ends inside a character.
            if validator.finish(&self.message).is_err() {
                return Err(self.fail(ProtocolError::InvalidUtf8, out));
            }
        }
        let message = match assembly {
            // Valid by now; the conversion yields the &str.
            Assembly::Text(_) => match simdutf8::basic::from_utf8(&self.message) {
                Ok(text) => Message::Text(text),
                Err(_) => return Err(ProtocolError::InvalidUtf8),
            },
            _ => Message::Binary(&self.message),
        };
        if self.phase != Phase::Open {
            return Ok((n, None));
        }
        Ok((n, Some(Event::Message(message))))
    }

    /// Answers a protocol error with the close frame carrying its code (once: not
    /// after our close frame, §5.5.1) and hands the error back.
    fn fail(&mut self, e: ProtocolError, out: &mut Vec<u8>) -> ProtocolError {
        let _ = self.send_close(Some(e.close_code()), &e.to_string(), out);
        e
    }

    /// Validates a header against the role, the fragmentation state and the limits,
    /// before any of its payload is stored.
    fn check_header(&self, header: &FrameHeader) -> Result<(), ProtocolError> {
        // §5.2: RSV bits "MUST be 0 unless an extension is negotiated". RFC 7692 §6:
        // permessage-deflate gives RSV1 a meaning on the first frame of a data
        // message only; §6.1: not on control frames, nor on continuations.
        let rsv1_allowed =
            self.deflate.is_some() && matches!(header.opcode, OpCode::Text | OpCode::Binary);
        if header.rsv & !RSV1 != 0 || (header.rsv & RSV1 != 0 && !rsv1_allowed) {
            return Err(ProtocolError::ReservedBits);
        }
        match (self.role, header.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        if header.opcode.is_control() {
            return Ok(());
        }
        let in_message = matches!(
            self.assembly,
            Assembly::Text(_) | Assembly::Binary | Assembly::Compressed { .. }
        );
        match (header.opcode, in_message) {
            (OpCode::Continuation, false) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, true) => {
                return Err(ProtocolError::ExpectedContinuation);
            }
            _ => {}
        }
        if header.payload_len > u64::from(self.limits.max_frame) {
            return Err(ProtocolError::FrameTooLarge);
        }
        let gathered = if in_message {
            self.message.len() as u64
        } else {
            0
        };
        if header.payload_len > u64::from(self.limits.max_message).saturating_sub(gathered) {
            return Err(ProtocolError::MessageTooLarge);
        }
        Ok(())
    }

    fn control_event<'a>(
        &mut self,
        opcode: OpCode,
        payload: &'a [u8],
        out: &mut Vec<u8>,
    ) -> Result<Option<Event<'a>>, ProtocolError> {
        match opcode {
            OpCode::Close => {
                let frame = match parse_close_payload(payload) {
                    Ok(frame) => frame,
                    Err(e) => return Err(self.fail(e, out)),
                };
                match self.phase {
                    Phase::Open => {
                        self.phase = Phase::CloseReceived;
                        // §5.5.1: answer with a close frame, echoing the status code;
                        // an empty close is answered empty.
                        let _ = self.send_close(frame.code, "", out);
                    }
                    _ => self.phase = Phase::Closed,
                }
                Ok(Some(Event::Close(frame)))
            }
            // Once our close frame is out, §5.5.1 says we send nothing more: no pongs.
            _ if self.phase != Phase::Open => Ok(None),
            OpCode::Ping => {
                // §5.5.3: a pong with the ping's payload, as soon as practical.
                if self.role == Role::Server {
                    write_frame(out, OpCode::Pong, payload);
                }
                Ok(Some(Event::Ping(payload)))
            }
            _ => Ok(Some(Event::Pong(payload))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::write_masked_frame;
    use proptest::prelude::*;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    const LIMITS: Limits = Limits {
        max_frame: 1024,
        max_message: 4096,
    };

    /// An event with owned data, for comparing runs.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Got {
        Text(String),
        Binary(Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<u16>, String),
        Error(ProtocolError),
    }

    fn frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_masked_frame(&mut out, fin, opcode, payload, KEY);
        out
    }

    /// Feeds `stream` in chunks of `step` bytes the way the server does: unconsumed
    /// bytes stay at the front and the next chunk is appended.
    fn pump(stream: &[u8], step: usize) -> Vec<Got> {
        pump_conn(Connection::new(Role::Server, LIMITS), stream, step)
    }

    /// [`pump`] on a given connection, with one lent inflater for all its messages.
    fn pump_conn(mut conn: Connection, stream: &[u8], step: usize) -> Vec<Got> {
        let mut inflater = Inflater::new();
        let mut got = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for chunk in stream.chunks(step.max(1)) {
            pending.extend_from_slice(chunk);
            let mut pos = 0;
            loop {
                match conn.handle_bytes_with(&mut inflater, &mut pending[pos..], &mut Vec::new()) {
                    Ok((0, None)) => break,
                    Ok((n, event)) => {
                        pos += n;
                        if let Some(event) = event {
                            got.push(match event {
                                Event::Message(Message::Text(t)) => Got::Text(t.to_owned()),
                                Event::Message(Message::Binary(b)) => Got::Binary(b.to_vec()),
                                Event::Ping(p) => Got::Ping(p.to_vec()),
                                Event::Pong(p) => Got::Pong(p.to_vec()),
                                Event::Close(c) => {
                                    Got::Close(c.code.map(|c| c.0), c.reason.to_owned())
                                }
                            });
                        }
                    }
                    Err(e) => {
                        got.push(Got::Error(e));
                        return got;
                    }
                }
            }
            pending.drain(..pos);
        }
        got
    }

    fn pump_all_ways(stream: &[u8]) -> Vec<Got> {
        let whole = pump(stream, stream.len());
        for step in [1, 2, 3, 7, 64] {
            assert_eq!(pump(stream, step), whole, "step {step}");
        }
        whole
    }

    #[test]
    fn single_frames() {
        let mut s = frame(true, OpCode::Text, b"Hello");
        s.extend(frame(true, OpCode::Binary, &[0, 1, 2]));
        s.extend(frame(true, OpCode::Text, b""));
        assert_eq!(
            pump_all_ways(&s),
            [
                Got::Text("Hello".into()),
                Got::Binary(vec![0, 1, 2]),
                Got::Text(String::new())
            ]
        );
    }

    #[test]
    fn fragments_with_control_frames_between() {
        let mut s = frame(false, OpCode::Text, b"Hel");
        s.extend(frame(true, OpCode::Ping, b"p1"));
        s.extend(frame(false, OpCode::Continuation, b""));
        s.extend(frame(true, OpCode::Pong, b"unsolicited"));
        s.extend(frame(true, OpCode::Continuation, b"lo"));
        s.extend(frame(false, OpCode::Binary, &[1]));
        s.extend(frame(true, OpCode::Continuation, &[2]));
        assert_eq!(
            pump_all_ways(&s),
            [
                Got::Ping(b"p1".to_vec()),
                Got::Pong(b"unsolicited".to_vec()),
                Got::Text("Hello".into()),
                Got::Binary(vec![1, 2]),
            ]
        );
    }

    #[test]
    fn every_length_form() {
        let limits = Limits {
            max_frame: 1 << 20,
            max_message: 1 << 20,
        };
        for len in [0usize, 125, 126, 65535, 65536] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut s = frame(true, OpCode::Binary, &payload);
            let total = s.len();
            let mut conn = Connection::new(Role::Server, limits);
            match conn.handle_bytes(&mut s, &mut Vec::new()) {
                Ok((n, Some(Event::Message(Message::Binary(b))))) => {
                    assert_eq!(n, total);
                    assert_eq!(b, &payload[..]);
                }
                other => panic!("length {len}: {other:?}"),
            }
        }
    }

    #[test]
    fn protocol_violations_and_their_codes() {
        let unmasked = {
            let mut out = Vec::new();
            write_frame(&mut out, OpCode::Text, b"hi");
            out
        };
        let mut rsv = frame(true, OpCode::Text, b"x");
        rsv[0] |= 0x40;
        let mut reserved_op = frame(true, OpCode::Text, b"x");
        reserved_op[0] = 0x83;
        let mut top_bit = vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0];
        top_bit.extend_from_slice(&KEY);
        let cases: Vec<(Vec<u8>, ProtocolError, u16)> = vec![
            (unmasked, ProtocolError::UnmaskedFrame, 1002),
            (rsv, ProtocolError::ReservedBits, 1002),
            (reserved_op, ProtocolError::ReservedOpcode(3), 1002),
            (
                vec![0x89, 0xfe, 0, 126],
                ProtocolError::ControlFrameTooLong,
                1002,
            ),
            (
                frame(false, OpCode::Ping, b""),
                ProtocolError::FragmentedControlFrame,
                1002,
            ),
            (
                frame(true, OpCode::Continuation, b"x"),
                ProtocolError::UnexpectedContinuation,
                1002,
            ),
            (
                [
                    frame(false, OpCode::Text, b"a"),
                    frame(true, OpCode::Text, b"b"),
                ]
                .concat(),
                ProtocolError::ExpectedContinuation,
                1002,
            ),
            (top_bit, ProtocolError::LengthOverflow, 1002),
            (
                frame(true, OpCode::Text, &[0xff]),
                ProtocolError::InvalidUtf8,
                1007,
            ),
            (
                frame(true, OpCode::Close, &[0x03]),
                ProtocolError::CloseTooShort,
                1002,
            ),
            (
                frame(true, OpCode::Close, &[0x03, 0xed]),
                ProtocolError::InvalidCloseCode(1005),
                1002,
            ),
            (
                frame(true, OpCode::Close, &[0x03, 0xe8, 0xff]),
                ProtocolError::InvalidUtf8,
                1007,
            ),
            (
                frame(true, OpCode::Binary, &[0; 1025]),
                ProtocolError::FrameTooLarge,
                1009,
            ),
        ];
        for (stream, error, code) in cases {
            let got = pump_all_ways(&stream);
            assert_eq!(got.last(), Some(&Got::Error(error)), "{error}");
            assert_eq!(error.close_code().0, code, "{error}");
        }
    }

    #[test]
    fn message_limit_is_inclusive_across_fragments() {
        let exactly: Vec<u8> = [
            frame(false, OpCode::Binary, &[0; 1024]),
            frame(false, OpCode::Continuation, &[0; 1024]),
            frame(false, OpCode::Continuation, &[0; 1024]),
            frame(true, OpCode::Continuation, &[0; 1024]),
        ]
        .concat();
        assert_eq!(pump_all_ways(&exactly), [Got::Binary(vec![0; 4096])]);
        let too_big: Vec<u8> = [
            frame(false, OpCode::Binary, &[0; 1024]),
            frame(false, OpCode::Continuation, &[0; 1024]),
            frame(false, OpCode::Continuation, &[0; 1024]),
            frame(false, OpCode::Continuation, &[0; 1024]),
            frame(true, OpCode::Continuation, &[0]),
        ]
        .concat();
        assert_eq!(
            pump_all_ways(&too_big),
            [Got::Error(ProtocolError::MessageTooLarge)]
        );
    }

    #[test]
    fn invalid_utf8_fails_before_the_frame_ends() {
        // A 600-byte text frame whose 4th byte already rules it out: the first 10
        // bytes of payload must be enough to fail (Autobahn 6.4.3/6.4.4).
        let mut payload = b"ab\xf4\x90".to_vec();
        payload.resize(600, b'x');
        let stream = frame(true, OpCode::Text, &payload);
        let header_len = 2 + 2 + 4;
        let got = pump(&stream[..header_len + 10], header_len + 10);
        assert_eq!(got, [Got::Error(ProtocolError::InvalidUtf8)]);
        // Same across fragments: the second fragment's first bytes decide.
        let stream = [
            frame(false, OpCode::Text, b"ok \xed"),
            frame(false, OpCode::Continuation, &[0xa0; 100]),
        ]
        .concat();
        assert_eq!(
            pump(&stream[..stream.len() - 90], 1),
            [Got::Error(ProtocolError::InvalidUtf8)]
        );
        // A character split between fragments is fine.
        let s = "κόσμε".as_bytes();
        let stream = [
            frame(false, OpCode::Text, &s[..1]),
            frame(true, OpCode::Continuation, &s[1..]),
        ]
        .concat();
        assert_eq!(pump_all_ways(&stream), [Got::Text("κόσμε".into())]);
        // A message that ends inside a character is not.
        let stream = frame(true, OpCode::Text, &s[..s.len() - 1]);
        assert_eq!(
            pump_all_ways(&stream),
            [Got::Error(ProtocolError::InvalidUtf8)]
        );
    }

    #[test]
    fn close_handshake_client_first() {
        let mut conn = Connection::new(Role::Server, LIMITS);
        let mut s = [
            frame(true, OpCode::Close, &[0x03, 0xe8, b'o', b'k']),
            frame(true, OpCode::Text, b"late"),
        ]
        .concat();
        let mut out = Vec::new();
        let (n, event) = conn.handle_bytes(&mut s, &mut out).expect("valid close");
        assert_eq!(
            event,
            Some(Event::Close(CloseFrame {
                code: Some(CloseCode::NORMAL),
                reason: "ok"
            }))
        );
        // §5.5.1: the connection answered by itself, echoing the code.
        assert_eq!(out, [0x88, 0x02, 0x03, 0xe8]);
        assert_eq!(conn.phase(), Phase::Closed);
        // Data after the close frame is ignored, and nothing more may be sent.
        assert_eq!(
            conn.handle_bytes(&mut s[n..], &mut out)
                .map(|(_, e)| e.is_none()),
            Ok(true)
        );
        assert_eq!(
            conn.send_close(Some(CloseCode::NORMAL), "", &mut out),
            Err(SendError::Closed)
        );
        assert_eq!(conn.send_text("x", &mut out), Err(SendError::Closed));
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn close_handshake_server_first() {
        let mut conn = Connection::new(Role::Server, LIMITS);
        let mut out = Vec::new();
        assert_eq!(
            conn.send_close(Some(CloseCode::GOING_AWAY), "bye", &mut out),
            Ok(())
        );
        assert_eq!(out, [0x88, 0x05, 0x03, 0xe9, b'b', b'y', b'e']);
        assert_eq!(conn.phase(), Phase::CloseSent);
        // While waiting for the peer's close, its data and pings get no answer.
        let mut s = [
            frame(true, OpCode::Text, b"x"),
            frame(true, OpCode::Ping, b"p"),
            frame(true, OpCode::Close, &[]),
        ]
        .concat();
        let mut pos = 0;
        let mut events = Vec::new();
        while pos < s.len() {
            let (n, e) = conn
                .handle_bytes(&mut s[pos..], &mut Vec::new())
                .expect("valid");
            pos += n;
            events.push(e.map(|e| matches!(e, Event::Close(_))));
        }
        assert_eq!(events, [None, None, Some(true)]);
        assert_eq!(conn.phase(), Phase::Closed);
        assert_eq!(out.len(), 7, "no pong and no second close after ours");
    }

    #[test]
    fn the_connection_answers_pings_and_errors_itself() {
        let mut conn = Connection::new(Role::Server, LIMITS);
        let mut out = Vec::new();
        let mut s = frame(true, OpCode::Ping, b"hey");
        let (_, e) = conn.handle_bytes(&mut s, &mut out).expect("valid");
        assert_eq!(e, Some(Event::Ping(b"hey")));
        assert_eq!(out, [0x8a, 0x03, b'h', b'e', b'y']);
        out.clear();
        let mut bad = frame(true, OpCode::Text, &[0xff]);
        assert_eq!(
            conn.handle_bytes(&mut bad, &mut out).err(),
            Some(ProtocolError::InvalidUtf8)
        );
        // The close frame with the error's code (1007) and its reason.
        assert_eq!(&out[..4], [0x88, 2 + 13, 0x03, 0xef]);
        assert_eq!(&out[4..], b"invalid UTF-8");
        assert_eq!(conn.phase(), Phase::CloseSent);
        assert_eq!(conn.send_ping(b"", &mut out), Err(SendError::Closed));
    }

    #[test]
    fn sending_frames_and_refusals() {
        let mut conn = Connection::new(Role::Server, LIMITS);
        let mut out = Vec::new();
        conn.send_text("hi", &mut out).expect("open");
        conn.send_binary(&[1, 2], &mut out).expect("open");
        conn.send_header(OpCode::Binary, 300, &mut out)
            .expect("open");
        assert_eq!(
            out,
            [
                0x81, 0x02, b'h', b'i', 0x82, 0x02, 1, 2, 0x82, 0x7e, 0x01, 0x2c
            ]
        );
        assert_eq!(
            conn.send_ping(&[0; 126], &mut out),
            Err(SendError::ControlTooLong)
        );
        assert_eq!(
            conn.send_header(OpCode::Ping, 1, &mut out),
            Err(SendError::NotData)
        );
        assert_eq!(conn.may_send(), Ok(()));
        conn.send_close(None, "", &mut out).expect("first close");
        assert_eq!(conn.may_send(), Err(SendError::Closed));
        assert_eq!(conn.send_text("late", &mut out), Err(SendError::Closed));
        let client = Connection::new(Role::Client, LIMITS);
        assert_eq!(client.may_send(), Err(SendError::ClientRole));
    }

    #[test]
    fn a_sender_keeps_the_rules_of_the_moment_it_was_taken() {
        let mut conn = Connection::new(Role::Server, LIMITS);
        // An echo's sender is taken while the connection is open...
        let open = conn.sender();
        let mut s = frame(true, OpCode::Text, b"echo me");
        let (_, event) = conn.handle_bytes(&mut s, &mut Vec::new()).expect("valid");
        let Some(Event::Message(message)) = event else {
            panic!("a message")
        };
        let mut out = Vec::new();
        open.send_message(message, &mut out).expect("open");
        assert_eq!(out, frame_unmasked(OpCode::Text, b"echo me"));
        assert_eq!(
            open.send_data(OpCode::Pong, b"", &mut out),
            Err(SendError::NotData)
        );
        // ...one taken after our close frame refuses, as the connection does.
        conn.send_close(None, "", &mut Vec::new())
            .expect("first close");
        assert_eq!(
            conn.sender().send_text("late", &mut out),
            Err(SendError::Closed)
        );
        assert_eq!(
            conn.send_data(OpCode::Binary, b"x", &mut out),
            Err(SendError::Closed)
        );
        // Shared frames are a server's: unmasked, and refused by a closed connection
        // when it takes them (`may_send`).
        let mut shared = Vec::new();
        Sender::SHARED
            .send_text("to many", &mut shared)
            .expect("a server's");
        assert_eq!(shared, frame_unmasked(OpCode::Text, b"to many"));
        assert_eq!(conn.may_send(), Err(SendError::Closed));
    }

    fn frame_unmasked(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame(&mut out, opcode, payload);
        out
    }

    #[test]
    fn idle_connection_frees_its_buffer() {
        let mut conn = Connection::new(Role::Server, LIMITS);
        let mut s = frame(true, OpCode::Binary, &[7; 1000]);
        // Half a frame: streamed into the connection's buffer.
        let (n, e) = conn
            .handle_bytes(&mut s[..500], &mut Vec::new())
            .expect("valid");
        assert!(e.is_none() && n == 500);
        assert!(conn.message.capacity() > 0);
        conn.release_idle_buffer();
        assert!(conn.message.capacity() > 0, "kept mid-frame");
        let (_, e) = conn
            .handle_bytes(&mut s[500..], &mut Vec::new())
            .expect("valid");
        assert!(matches!(e, Some(Event::Message(Message::Binary(b))) if b.len() == 1000));
        conn.release_idle_buffer();
        assert_eq!(conn.message.capacity(), 0);
    }

    #[test]
    fn a_larger_spare_buffer_takes_over_a_payload_being_gathered() {
        let limits = Limits {
            max_frame: 1 << 20,
            max_message: 1 << 20,
        };
        let mut conn = Connection::new(Role::Server, limits);
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut s = frame(true, OpCode::Binary, &payload);
        assert!(!conn.wants_buffer(), "no payload in progress");
        let (first, _) = conn
            .handle_bytes(&mut s[..70_000], &mut Vec::new())
            .expect("valid");
        assert!(conn.wants_buffer(), "300 kB will not fit");
        // A smaller spare is handed back untouched.
        let back = conn.give_buffer(Vec::with_capacity(1000));
        assert_eq!(back.capacity(), 1000);
        let spare = Vec::with_capacity(1 << 20);
        let spare_at = spare.as_ptr();
        let old = conn.give_buffer(spare);
        assert!(
            old.is_empty() && old.capacity() > 0,
            "its own buffer comes back"
        );
        assert!(!conn.wants_buffer());
        // The rest arrives in odd pieces (the key stays aligned across them).
        let mut pos = first;
        while pos < s.len() {
            let end = (pos + 40_001).min(s.len());
            let (n, e) = conn
                .handle_bytes(&mut s[pos..end], &mut Vec::new())
                .expect("valid");
            pos += n;
            if let Some(Event::Message(Message::Binary(b))) = e {
                assert_eq!(b, &payload[..]);
                assert_eq!(pos, s.len());
            }
        }
        let taken = conn.take_message().expect("gathered in the buffer");
        assert_eq!(
            taken.as_ptr(),
            spare_at,
            "gathered in the spare, without growing"
        );
    }

    #[test]
    fn client_role_rejects_masked_frames() {
        let mut conn = Connection::new(Role::Client, LIMITS);
        let mut s = frame(true, OpCode::Text, b"x");
        assert_eq!(
            conn.handle_bytes(&mut s, &mut Vec::new()).err(),
            Some(ProtocolError::MaskedFrame)
        );
        let mut conn = Connection::new(Role::Client, LIMITS);
        let mut s = Vec::new();
        write_frame(&mut s, OpCode::Text, b"x");
        assert!(matches!(
            conn.handle_bytes(&mut s, &mut Vec::new()),
            Ok((3, Some(Event::Message(Message::Text("x")))))
        ));
    }

    // ---- permessage-deflate (RFC 7692) ----

    const DEFLATE: Option<PerMessageDeflate> = Some(PerMessageDeflate {
        server_window_bits: 15,
    });

    fn deflating(limits: Limits) -> Connection {
        Connection::new(Role::Server, limits).with_deflate(DEFLATE)
    }

    /// A client's compression of one message, written independently of ours:
    /// raw DEFLATE, sync flush, the 0x00 0x00 0xff 0xff tail removed (§7.2.1).
    fn deflate_raw(data: &[u8]) -> Vec<u8> {
        use flate2::{Compress, Compression, FlushCompress};
        let mut c = Compress::new(Compression::default(), false);
        let mut out = Vec::with_capacity(data.len() + 64);
        loop {
            let used = c.total_in() as usize;
            c.compress_vec(&data[used..], &mut out, FlushCompress::Sync)
                .expect("compresses");
            if c.total_in() as usize == data.len() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity());
        }
        assert_eq!(out.split_off(out.len() - 4), [0x00, 0x00, 0xff, 0xff]);
        out
    }

    /// A masked frame with RSV1 set.
    fn rsv1_frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut f = frame(fin, opcode, payload);
        f[0] |= 0x40;
        f
    }

    /// A message compressed and cut into fragments at `cuts` (of the compressed
    /// payload); RSV1 on the first only (§6.1).
    fn compressed_message(opcode: OpCode, data: &[u8], cuts: &[usize]) -> Vec<u8> {
        let z = deflate_raw(data);
        let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(z.len())).collect();
        cuts.push(z.len());
        cuts.sort_unstable();
        cuts.dedup();
        let mut stream = Vec::new();
        let mut start = 0;
        for (i, &end) in cuts.iter().enumerate() {
            let fin = end == z.len();
            stream.extend(if i == 0 {
                rsv1_frame(fin, opcode, &z[start..end])
            } else {
                frame(fin, OpCode::Continuation, &z[start..end])
            });
            start = end;
        }
        stream
    }

    #[test]
    fn rsv1_is_allowed_on_the_first_data_frame_only() {
        // Without the extension RSV1 stays a protocol error (RFC 6455 §5.2).
        assert_eq!(
            pump_all_ways(&rsv1_frame(true, OpCode::Text, b"x")),
            [Got::Error(ProtocolError::ReservedBits)]
        );
        let with = |stream: &[u8]| {
            let whole = pump_conn(deflating(LIMITS), stream, stream.len());
            for step in [1, 2, 7] {
                assert_eq!(pump_conn(deflating(LIMITS), stream, step), whole);
            }
            whole
        };
        let hello = compressed_message(OpCode::Text, b"Hello", &[]);
        assert_eq!(with(&hello), [Got::Text("Hello".into())]);
        // §6.1: not on control frames, nor on continuations.
        for bad in [
            rsv1_frame(true, OpCode::Ping, b""),
            rsv1_frame(true, OpCode::Close, &[0x03, 0xe8]),
            [
                frame(false, OpCode::Text, b"a"),
                rsv1_frame(true, OpCode::Continuation, b"b"),
            ]
            .concat(),
        ] {
            assert_eq!(with(&bad), [Got::Error(ProtocolError::ReservedBits)]);
        }
        // RSV2 and RSV3 have no meaning with permessage-deflate either.
        let mut rsv2 = frame(true, OpCode::Text, b"x");
        rsv2[0] |= 0x20;
        assert_eq!(with(&rsv2), [Got::Error(ProtocolError::ReservedBits)]);
        // Uncompressed messages still pass, between compressed ones.
        let mixed = [hello.clone(), frame(true, OpCode::Binary, &[1, 2]), hello].concat();
        assert_eq!(
            with(&mixed),
            [
                Got::Text("Hello".into()),
                Got::Binary(vec![1, 2]),
                Got::Text("Hello".into())
            ]
        );
    }

    #[test]
    fn rfc_7692_examples() {
        // §7.2.3.1: "Hello" compressed, in one frame and in two fragments.
        let z = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        let one = rsv1_frame(true, OpCode::Text, &z);
        let two = [
            rsv1_frame(false, OpCode::Text, &z[..3]),
            frame(true, OpCode::Continuation, &z[3..]),
        ]
        .concat();
        for s in [one, two] {
            assert_eq!(
                pump_conn(deflating(LIMITS), &s, 1),
                [Got::Text("Hello".into())]
            );
        }
        // §7.2.3.2: the same with context takeover is not ours to read, but
        // §7.2.3.3's uncompressed DEFLATE block is.
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, b'H', b'e', b'l', b'l', b'o', 0x00,
        ];
        let s = rsv1_frame(true, OpCode::Text, &stored);
        assert_eq!(
            pump_conn(deflating(LIMITS), &s, 3),
            [Got::Text("Hello".into())]
        );
        // §7.2.3.6: an empty message is a single 0x00.
        let s = rsv1_frame(true, OpCode::Binary, &[0x00]);
        assert_eq!(
            pump_conn(deflating(LIMITS), &s, 1),
            [Got::Binary(Vec::new())]
        );
    }

    #[test]
    fn bad_compressed_payloads_are_1007() {
        let garbage = rsv1_frame(true, OpCode::Binary, &[0xff, 0xff, 0xff, 0xff]);
        let not_utf8 = compressed_message(OpCode::Text, b"ok \xff", &[]);
        for (s, e) in [
            (garbage, ProtocolError::BadCompression),
            (not_utf8, ProtocolError::InvalidUtf8),
        ] {
            assert_eq!(pump_conn(deflating(LIMITS), &s, 2), [Got::Error(e)]);
            assert_eq!(e.close_code().0, 1007);
        }
    }

    #[test]
    fn a_decompression_bomb_is_stopped_at_the_limit() {
        // About 100 KiB of compressed zeros that would inflate to 100 MiB.
        let limits = Limits {
            max_frame: 1 << 20,
            max_message: 16 << 20,
        };
        let z = deflate_raw(&vec![0u8; 100 << 20]);
        assert!(z.len() < 128 << 10, "{}", z.len());
        for mut s in [
            rsv1_frame(true, OpCode::Binary, &z),
            [
                rsv1_frame(false, OpCode::Binary, &z[..1000]),
                frame(true, OpCode::Continuation, &z[1000..]),
            ]
            .concat(),
        ] {
            let mut conn = deflating(limits);
            let mut inflater = Inflater::new();
            let mut pos = 0;
            let error = loop {
                match conn.handle_bytes_with(&mut inflater, &mut s[pos..], &mut Vec::new()) {
                    Ok((n, None)) if n > 0 => pos += n,
                    Err(e) => break e,
                    other => panic!("{other:?}"),
                }
            };
            assert_eq!(error, ProtocolError::MessageTooLarge);
            assert_eq!(error.close_code().0, 1009);
            // Never more than one byte past the limit was held.
            assert!(
                conn.message.capacity() <= (16 << 20) + 1,
                "{}",
                conn.message.capacity()
            );
        }
        // The compressed size counts against the limits as it is received.
        let s = rsv1_frame(true, OpCode::Binary, &vec![0; 1025]);
        assert_eq!(
            pump_conn(deflating(LIMITS), &s, 100),
            [Got::Error(ProtocolError::FrameTooLarge)]
        );
        // Inflated, the limit is inclusive.
        let exactly = compressed_message(OpCode::Binary, &[7; 4096], &[3]);
        assert_eq!(
            pump_conn(deflating(LIMITS), &exactly, 5),
            [Got::Binary(vec![7; 4096])]
        );
        let over = compressed_message(OpCode::Binary, &[7; 4097], &[3]);
        assert_eq!(
            pump_conn(deflating(LIMITS), &over, 5),
            [Got::Error(ProtocolError::MessageTooLarge)]
        );
    }

    /// A frame description for the property tests.
    fn arb_frame() -> impl Strategy<Value = Vec<u8>> {
        let op = prop::sample::select(vec![
            OpCode::Continuation,
            OpCode::Text,
            OpCode::Binary,
            OpCode::Ping,
            OpCode::Pong,
            OpCode::Close,
        ]);
        (
            any::<bool>(),
            op,
            prop::collection::vec(any::<u8>(), 0..40),
            any::<[u8; 4]>(),
        )
            .prop_map(|(fin, op, payload, key)| {
                let mut out = Vec::new();
                let fin = fin || op.is_control();
                write_masked_frame(&mut out, fin, op, &payload, key);
                out
            })
    }

    proptest! {
        #[test]
        fn compressed_messages_survive_any_chunking(
            text in "(.{0,40}){0,30}",
            binary in prop::collection::vec(0u8..4, 0..1500),
            cuts in prop::collection::vec(0usize..400, 0..4),
            step in 1usize..60,
        ) {
            // Compressed as a client would, fragmented anywhere, a ping between the
            // messages, fed in chunks of any size: the messages come back.
            let mut stream = compressed_message(OpCode::Text, text.as_bytes(), &cuts);
            stream.extend(frame(true, OpCode::Ping, b"p"));
            stream.extend(compressed_message(OpCode::Binary, &binary, &cuts));
            let conn = Connection::new(Role::Server, Limits { max_frame: 1 << 16, max_message: 1 << 16 })
                .with_deflate(DEFLATE);
            prop_assert_eq!(
                pump_conn(conn, &stream, step),
                vec![Got::Text(text.clone()), Got::Ping(b"p".to_vec()), Got::Binary(binary.clone())]
            );
        }

        #[test]
        fn our_compressor_round_trips(data in prop::collection::vec(0u8..8, 0..5000), step in 1usize..100) {
            // What the server sends, masked as if a client had sent it, reads back.
            let mut out = Vec::new();
            crate::ws::Deflater::new().write_compressed(15, OpCode::Binary, &data, &mut out);
            let (header, n) = decode_header(&out).expect("valid").expect("whole");
            let mut masked = frame(true, OpCode::Binary, &out[n..]);
            masked[0] |= (header.rsv & RSV1) << 4;
            let conn = Connection::new(Role::Server, Limits { max_frame: 1 << 16, max_message: 1 << 16 })
                .with_deflate(DEFLATE);
            prop_assert_eq!(pump_conn(conn, &masked, step), vec![Got::Binary(data.clone())]);
        }

        #[test]
        fn chunking_never_changes_the_result(frames in prop::collection::vec(arb_frame(), 0..12), step in 1usize..50) {
            let stream = frames.concat();
            prop_assert_eq!(pump(&stream, step), pump(&stream, stream.len().max(1)));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300), step in 1usize..40) {
            prop_assert_eq!(pump(&bytes, step), pump(&bytes, bytes.len().max(1)));
        }

        #[test]
        fn text_round_trip(s in ".{0,200}", cuts in prop::collection::vec(0usize..200, 0..5)) {
            // Split a valid string into fragments at arbitrary byte offsets.
            let bytes = s.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            cuts.dedup();
            let mut stream = Vec::new();
            let mut start = 0;
            let mut first = true;
            for &end in cuts.iter().chain(std::iter::once(&bytes.len())) {
                let op = if first { OpCode::Text } else { OpCode::Continuation };
                stream.extend(frame(end == bytes.len(), op, &bytes[start..end]));
                first = false;
                start = end;
                if end == bytes.len() { break; }
            }
            prop_assert_eq!(pump(&stream, 5), vec![Got::Text(s.clone())]);
        }
    }
}
