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
//! and frames that arrive in pieces are gathered in the connection's own buffer,
//! which is released again when the connection goes idle.

use std::mem;

use super::close::{CloseCode, CloseFrame, parse_close_payload};
use super::error::ProtocolError;
use super::frame::{FrameHeader, OpCode, decode_header, write_frame};
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
    pub max_frame: u64,
    /// Largest message, all fragments together (inclusive).
    pub max_message: u64,
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
    /// A message was handed out from the buffer; clear it before the next frame.
    Delivered,
}

/// Server buffers larger than this are freed after the message instead of reused.
const KEEP_BUFFER_CAPACITY: usize = 64 * 1024;

/// The receiving side and closing handshake of one WebSocket connection.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    limits: Limits,
    phase: Phase,
    reading: Reading,
    assembly: Assembly,
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
            message: Vec::new(),
        }
    }

    /// Where the closing handshake stands.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The endpoint limits this connection enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Consumes bytes from the start of `input`, which the call may unmask in place.
    ///
    /// Returns the number of bytes consumed and at most one event. `(0, None)`
    /// means the input holds no complete unit yet: call again once more bytes have
    /// arrived, with the unconsumed bytes first. Any error is fatal: answer it with
    /// [`Connection::send_close`] and the error's [`ProtocolError::close_code`].
    pub fn handle_bytes<'a>(
        &'a mut self,
        input: &'a mut [u8],
    ) -> Result<(usize, Option<Event<'a>>), ProtocolError> {
        if self.assembly == Assembly::Delivered {
            self.message.clear();
            if self.message.capacity() > KEEP_BUFFER_CAPACITY {
                self.message = Vec::new();
            }
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
            } => self.continue_payload(input, remaining, key, fin),
            Reading::Header => self.start_frame(input),
        }
    }

    /// Appends a pong answering a ping's `payload` to `out` (§5.5.3), while open.
    pub fn send_pong(&self, payload: &[u8], out: &mut Vec<u8>) {
        if self.phase == Phase::Open {
            write_frame(out, OpCode::Pong, payload);
        }
    }

    /// Appends a close frame to `out` and advances the closing handshake.
    ///
    /// With no code the payload is empty. Does nothing once our close frame is sent:
    /// §5.5.1 allows one close frame per direction. Returns whether a frame was written.
    pub fn send_close(&mut self, code: Option<CloseCode>, reason: &str, out: &mut Vec<u8>) -> bool {
        let next = match self.phase {
            Phase::Open => Phase::CloseSent,
            Phase::CloseReceived => Phase::Closed,
            Phase::CloseSent | Phase::Closed => return false,
        };
        match code {
            Some(code) => {
                let mut payload = Vec::with_capacity(2 + reason.len());
                payload.extend_from_slice(&code.0.to_be_bytes());
                // A reason never makes a close frame a fragmented control frame.
                let mut end = reason.len().min(123);
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                payload.extend_from_slice(&reason.as_bytes()[..end]);
                write_frame(out, OpCode::Close, &payload);
            }
            None => write_frame(out, OpCode::Close, &[]),
        }
        self.phase = next;
        true
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
        input: &'a mut [u8],
    ) -> Result<(usize, Option<Event<'a>>), ProtocolError> {
        let Some((header, header_len)) = decode_header(input)? else {
            return Ok((0, None));
        };
        self.check_header(&header)?;
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
            return Ok((end, self.control_event(header.opcode, payload)?));
        }

        if header.fin && self.assembly == Assembly::Idle && available >= header.payload_len {
            // The common case: a whole message in one frame, already in the caller's buffer.
            let end = header_len + header.payload_len as usize;
            if self.phase != Phase::Open {
                return Ok((end, None));
            }
            let payload = &mut input[header_len..end];
            apply_mask(payload, key);
            let message = if header.opcode == OpCode::Text {
                Message::Text(std::str::from_utf8(payload).map_err(|_| ProtocolError::InvalidUtf8)?)
            } else {
                Message::Binary(payload)
            };
            return Ok((end, Some(Event::Message(message))));
        }

        match header.opcode {
            OpCode::Text => self.assembly = Assembly::Text(Utf8Validator::new()),
            OpCode::Binary => self.assembly = Assembly::Binary,
            _ => {}
        }
        let (consumed, event) = self.continue_payload(
            &mut input[header_len..],
            header.payload_len,
            key,
            header.fin,
        )?;
        Ok((header_len + consumed, event))
    }

    /// Streams payload bytes of the current data frame into the message buffer.
    fn continue_payload<'a>(
        &'a mut self,
        input: &'a mut [u8],
        remaining: u64,
        key: [u8; 4],
        fin: bool,
    ) -> Result<(usize, Option<Event<'a>>), ProtocolError> {
        let n = remaining.min(input.len() as u64) as usize;
        let start = self.message.len();
        self.message.extend_from_slice(&input[..n]);
        apply_mask(&mut self.message[start..], key);
        if let Assembly::Text(validator) = &mut self.assembly {
            // Fail on the first bad byte even if the frame is far from complete (§8.1).
            validator
                .advance(&self.message)
                .map_err(|_| ProtocolError::InvalidUtf8)?;
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
        let message = match mem::replace(&mut self.assembly, Assembly::Delivered) {
            Assembly::Text(validator) => {
                validator
                    .finish(&self.message)
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
                let text =
                    std::str::from_utf8(&self.message).map_err(|_| ProtocolError::InvalidUtf8)?;
                Message::Text(text)
            }
            _ => Message::Binary(&self.message),
        };
        if self.phase != Phase::Open {
            return Ok((n, None));
        }
        Ok((n, Some(Event::Message(message))))
    }

    /// Validates a header against the role, the fragmentation state and the limits,
    /// before any of its payload is stored.
    fn check_header(&self, header: &FrameHeader) -> Result<(), ProtocolError> {
        if header.rsv != 0 {
            // No extension is ever negotiated, so no RSV bit has a meaning (§5.2).
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
        let in_message = matches!(self.assembly, Assembly::Text(_) | Assembly::Binary);
        match (header.opcode, in_message) {
            (OpCode::Continuation, false) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, true) => {
                return Err(ProtocolError::ExpectedContinuation);
            }
            _ => {}
        }
        if header.payload_len > self.limits.max_frame {
            return Err(ProtocolError::FrameTooLarge);
        }
        let gathered = if in_message {
            self.message.len() as u64
        } else {
            0
        };
        if header.payload_len > self.limits.max_message.saturating_sub(gathered) {
            return Err(ProtocolError::MessageTooLarge);
        }
        Ok(())
    }

    fn control_event<'a>(
        &mut self,
        opcode: OpCode,
        payload: &'a [u8],
    ) -> Result<Option<Event<'a>>, ProtocolError> {
        match opcode {
            OpCode::Close => {
                let frame = parse_close_payload(payload)?;
                self.phase = match self.phase {
                    Phase::Open => Phase::CloseReceived,
                    _ => Phase::Closed,
                };
                Ok(Some(Event::Close(frame)))
            }
            // Once our close frame is out, §5.5.1 says we send nothing more: no pongs.
            _ if self.phase != Phase::Open => Ok(None),
            OpCode::Ping => Ok(Some(Event::Ping(payload))),
            _ => Ok(Some(Event::Pong(payload))),
        }
    }
}
