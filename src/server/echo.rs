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
/// compressor, or plain if it is short or does not shrink; says which.
pub fn reply_compressed(
    message: Message<'_>,
    deflate: Option<PerMessageDeflate>,
    min_bytes: usize,
    deflater: &mut Deflater,
    out: &mut Outbound,
) -> bool {
    let (opcode, payload) = match message {
        Message::Text(text) => (OpCode::Text, text.as_bytes()),
        Message::Binary(data) => (OpCode::Binary, data),
    };
    let tail = out.tail();
    let at = tail.len();
    deflater.write_message(deflate, min_bytes, opcode, payload, tail);
    tail.get(at)
        .is_some_and(|b| b & crate::ws::deflate::RSV1 != 0)
}

/// Queues the echo of `message` in frames of `size` payload bytes (RFC 6455
/// §5.4), uncompressed: the frame inspector's fragmented echo. At most
/// `max_fragments` frames; a longer message gets larger fragments.
pub fn reply_fragmented(
    message: Message<'_>,
    sender: Sender,
    size: u32,
    max_fragments: usize,
    out: &mut Outbound,
) {
    // A message is only delivered while the connection is open: this never fails.
    let _ = sender.send_fragmented(message, size as usize, max_fragments, out.tail());
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::decode_header;

    fn frames(mut bytes: &[u8]) -> Vec<(bool, OpCode, Vec<u8>)> {
        let mut v = Vec::new();
        while !bytes.is_empty() {
            let (h, n) = decode_header(bytes).expect("valid").expect("complete");
            let end = n + h.payload_len as usize;
            v.push((h.fin, h.opcode, bytes[n..end].to_vec()));
            bytes = &bytes[end..];
        }
        v
    }

    fn fragmented(message: Message<'_>, size: u32, max: usize) -> Vec<(bool, OpCode, Vec<u8>)> {
        let mut out = Outbound::default();
        reply_fragmented(message, Sender::SHARED, size, max, &mut out);
        let mut sink = Vec::new();
        out.flush_to(&mut sink, &mut crate::ws::Spares::default())
            .expect("a Vec takes everything");
        frames(&sink)
    }

    #[test]
    fn fragmented_echoes_split_where_asked() {
        assert_eq!(
            fragmented(Message::Text("Hello"), 2, 1024),
            vec![
                (false, OpCode::Text, b"He".to_vec()),
                (false, OpCode::Continuation, b"ll".to_vec()),
                (true, OpCode::Continuation, b"o".to_vec()),
            ]
        );
        assert_eq!(
            fragmented(Message::Binary(b"abc"), 10, 1024),
            vec![(true, OpCode::Binary, b"abc".to_vec())]
        );
        assert_eq!(
            fragmented(Message::Text(""), 3, 1024),
            vec![(true, OpCode::Text, Vec::new())]
        );
        // At most `max` fragments: 10 bytes in at most 3 frames of 1 asked.
        let f = fragmented(Message::Binary(&[1; 10]), 1, 3);
        assert_eq!(f.iter().map(|f| f.2.len()).collect::<Vec<_>>(), [4, 4, 2]);
    }
}
