//! Errors of the WebSocket layer, grouped by who is at fault.

use std::fmt;

use super::close::CloseCode;

/// Something the peer sent that RFC 6455 or our limits forbid.
///
/// Every variant maps to exactly one close code through [`ProtocolError::close_code`]:
/// the server sends that code and then closes the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// §5.1: "a client MUST mask all frames that it sends to the server".
    UnmaskedFrame,
    /// §5.1: a server must not mask the frames it sends (client role only).
    MaskedFrame,
    /// §5.2: RSV1-3 "MUST be 0 unless an extension is negotiated".
    ReservedBits,
    /// §5.2: opcodes 0x3-0x7 and 0xB-0xF are reserved.
    ReservedOpcode(u8),
    /// §5.5: "All control frames MUST have a payload length of 125 bytes or less".
    ControlFrameTooLong,
    /// §5.5: "Control frames ... MUST NOT be fragmented".
    FragmentedControlFrame,
    /// §5.4: a continuation frame with no message in progress.
    UnexpectedContinuation,
    /// §5.4: a new text or binary frame while a fragmented message is in progress.
    ExpectedContinuation,
    /// §5.2: "the most significant bit MUST be 0" in a 64-bit length.
    LengthOverflow,
    /// §8.1: a text message or close reason that is not UTF-8.
    InvalidUtf8,
    /// §7.4: a close code that may not be sent.
    InvalidCloseCode(u16),
    /// §5.5.1: a close payload of one byte cannot hold a code.
    CloseTooShort,
    /// A frame longer than the endpoint's frame limit.
    FrameTooLarge,
    /// A message longer than the endpoint's message limit.
    MessageTooLarge,
    /// More than [`super::connection::MAX_EMPTY_FRAGMENTS`] empty non-final frames in
    /// a row: a message that never gets closer to its end (our policy, not §5.4's).
    EmptyFragments,
    /// RFC 7692 §7.2.2: a compressed message that is not valid DEFLATE data.
    BadCompression,
    /// Not the peer's fault: memory for its message could not be had. The connection
    /// is closed with 1011 instead of the process aborting.
    NoMemory,
}

impl ProtocolError {
    /// The close code that answers this error on the wire.
    pub fn close_code(self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8 | ProtocolError::BadCompression => {
                CloseCode::INVALID_PAYLOAD
            }
            ProtocolError::FrameTooLarge | ProtocolError::MessageTooLarge => {
                CloseCode::MESSAGE_TOO_BIG
            }
            ProtocolError::EmptyFragments => CloseCode::POLICY_VIOLATION,
            ProtocolError::NoMemory => CloseCode::INTERNAL_ERROR,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::UnmaskedFrame => f.write_str("unmasked frame from client"),
            ProtocolError::MaskedFrame => f.write_str("masked frame from server"),
            ProtocolError::ReservedBits => f.write_str("reserved bits set"),
            ProtocolError::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            ProtocolError::ControlFrameTooLong => f.write_str("control frame over 125 bytes"),
            ProtocolError::FragmentedControlFrame => f.write_str("fragmented control frame"),
            ProtocolError::UnexpectedContinuation => {
                f.write_str("continuation frame without a message")
            }
            ProtocolError::ExpectedContinuation => {
                f.write_str("new data frame inside a fragmented message")
            }
            ProtocolError::LengthOverflow => f.write_str("64-bit length with the top bit set"),
            ProtocolError::InvalidUtf8 => f.write_str("invalid UTF-8"),
            ProtocolError::InvalidCloseCode(c) => write!(f, "invalid close code {c}"),
            ProtocolError::CloseTooShort => f.write_str("one-byte close payload"),
            ProtocolError::FrameTooLarge => f.write_str("frame over the size limit"),
            ProtocolError::MessageTooLarge => f.write_str("message over the size limit"),
            ProtocolError::EmptyFragments => f.write_str("too many empty fragments in a row"),
            ProtocolError::BadCompression => f.write_str("invalid compressed data"),
            ProtocolError::NoMemory => f.write_str("server out of memory for this message"),
        }
    }
}

impl std::error::Error for ProtocolError {}
