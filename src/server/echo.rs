//! The `/echo` endpoint: every message goes back to its sender with its type.

use super::outbound::Outbound;
use crate::ws::frame::write_frame;
use crate::ws::{Message, OpCode};

/// Queues the echo of `message`.
pub fn reply(message: Message<'_>, out: &mut Outbound) {
    match message {
        Message::Text(text) => write_frame(out.tail(), OpCode::Text, text.as_bytes()),
        Message::Binary(data) => write_frame(out.tail(), OpCode::Binary, data),
    }
}
