//! The `/echo` endpoint: every message goes back to its sender with its type.

use super::outbound::Outbound;
use crate::ws::{Deflater, Message, OpCode, PerMessageDeflate, Sender};

/// Messages at least this long that were gathered in the connection's own buffer
/// are echoed by moving that buffer into the outbound queue instead of copying it.
pub const ZERO_COPY_MIN: usize = 64 * 1024;

/// The echo's opcode and the payload length.
pub fn shape(message: &Message<'_>) -> (OpCode, usize) {
    match message {
        Message::Text(text) => (OpCode::Text, text.len()),
        Message::Binary(data) => (OpCode::Binary, data.len()),
    }
}

/// Queues the echo of `message`, copying it, through the connection's sending
/// side as it was when the message arrived (the message still borrows it).
pub fn reply(message: Message<'_>, sender: Sender, out: &mut Outbound) {
    // A message is only delivered while the connection is open: this never fails.
    let _ = sender.send_message(message, out.tail());
}

/// Queues the echo of `message` compressed (RFC 7692 §7.2.1) by the loop's
/// compressor, or plain if it is short or does not shrink.
pub fn reply_compressed(
    message: Message<'_>,
    deflate: Option<PerMessageDeflate>,
    min_bytes: usize,
    deflater: &mut Deflater,
    out: &mut Outbound,
) {
    let (opcode, payload) = match message {
        Message::Text(text) => (OpCode::Text, text.as_bytes()),
        Message::Binary(data) => (OpCode::Binary, data),
    };
    deflater.write_message(deflate, min_bytes, opcode, payload, out.tail());
}
