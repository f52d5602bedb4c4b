#![no_main]
//! Structured client streams (valid opcodes, masked, payloads of at most 300 bytes),
//! checked against a small model of RFC 6455: same events (so a text message is the
//! concatenation of its fragments, and pings come back with their payload), same
//! error, UTF-8 decided like `std::str::from_utf8` on the concatenation.

use fastim::ws::frame::write_masked_frame;
use fastim::ws::{Limits, OpCode, ProtocolError, Role};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use common::{Feeder, Owned};

const MAX_PAYLOAD: usize = 300;

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
enum Op {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

#[derive(Arbitrary, Debug)]
enum Payload {
    Bytes(Vec<u8>),
    Text(String),
}

impl Payload {
    fn bytes(&self) -> &[u8] {
        let b = match self {
            Payload::Bytes(b) => b.as_slice(),
            Payload::Text(s) => s.as_bytes(),
        };
        &b[..b.len().min(MAX_PAYLOAD)]
    }
}

#[derive(Arbitrary, Debug)]
enum Item {
    /// Any one frame; `strict` keeps control frames legal (final, at most 125 bytes).
    Frame {
        op: Op,
        fin: bool,
        payload: Payload,
        key: [u8; 4],
        strict: bool,
    },
    /// A whole data message cut into fragments at `cuts` (even inside a character).
    Fragmented {
        text: bool,
        content: Payload,
        cuts: Vec<u16>,
        key: [u8; 4],
    },
    /// A close frame with a code and a UTF-8 reason.
    Close {
        code: u16,
        reason: String,
        key: [u8; 4],
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    items: Vec<Item>,
    /// Read size; 0 feeds the stream whole.
    chunk: u8,
    /// Small (max_frame, max_message) limits instead of 1 MiB.
    limits: Option<(u16, u16)>,
}

struct Frame {
    fin: bool,
    op: OpCode,
    payload: Vec<u8>,
    key: [u8; 4],
}

fn opcode(op: Op) -> OpCode {
    match op {
        Op::Continuation => OpCode::Continuation,
        Op::Text => OpCode::Text,
        Op::Binary => OpCode::Binary,
        Op::Close => OpCode::Close,
        Op::Ping => OpCode::Ping,
        Op::Pong => OpCode::Pong,
    }
}

fn frames(items: &[Item]) -> Vec<Frame> {
    let mut out = Vec::new();
    for item in items {
        match item {
            Item::Frame {
                op,
                fin,
                payload,
                key,
                strict,
            } => {
                let op = opcode(*op);
                let mut payload = payload.bytes().to_vec();
                let mut fin = *fin;
                if *strict && op.is_control() {
                    payload.truncate(125);
                    fin = true;
                }
                out.push(Frame {
                    fin,
                    op,
                    payload,
                    key: *key,
                });
            }
            Item::Fragmented {
                text,
                content,
                cuts,
                key,
            } => {
                let content = content.bytes();
                let mut cuts: Vec<usize> = cuts
                    .iter()
                    .map(|&c| usize::from(c) % (content.len() + 1))
                    .collect();
                cuts.sort_unstable();
                cuts.push(content.len());
                let mut start = 0;
                for (i, &end) in cuts.iter().enumerate() {
                    let op = match (i, text) {
                        (0, true) => OpCode::Text,
                        (0, false) => OpCode::Binary,
                        _ => OpCode::Continuation,
                    };
                    let k = key.map(|b| b.wrapping_add(i as u8));
                    out.push(Frame {
                        fin: i == cuts.len() - 1,
                        op,
                        payload: content[start..end].to_vec(),
                        key: k,
                    });
                    start = end;
                }
            }
            Item::Close { code, reason, key } => {
                let mut end = reason.len().min(123);
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                let mut payload = code.to_be_bytes().to_vec();
                payload.extend_from_slice(&reason.as_bytes()[..end]);
                out.push(Frame {
                    fin: true,
                    op: OpCode::Close,
                    payload,
                    key: *key,
                });
            }
        }
    }
    out
}

/// What RFC 6455 says a server makes of these frames, written independently of src/.
fn model(frames: &[Frame], limits: Limits) -> (Vec<Owned>, Option<ProtocolError>) {
    let mut events = Vec::new();
    // The message in progress: is it text, and its bytes so far.
    let mut message: Option<(bool, Vec<u8>)> = None;
    // Empty non-final data frames in a row: more than 64 are refused (a peer that
    // costs us a parse per two bytes and never makes progress; src/ws's own limit).
    let mut empty_in_a_row = 0u32;
    for f in frames {
        let len = f.payload.len() as u64;
        if f.op.is_control() {
            if !f.fin {
                return (events, Some(ProtocolError::FragmentedControlFrame));
            }
            if len > 125 {
                return (events, Some(ProtocolError::ControlFrameTooLong));
            }
            match f.op {
                OpCode::Ping => events.push(Owned::Ping(f.payload.clone())),
                OpCode::Pong => events.push(Owned::Pong(f.payload.clone())),
                _ => {
                    let close = match f.payload.as_slice() {
                        [] => Ok(Owned::Close(None, String::new())),
                        [_] => Err(ProtocolError::CloseTooShort),
                        [hi, lo, reason @ ..] => {
                            let code = u16::from_be_bytes([*hi, *lo]);
                            if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                                Err(ProtocolError::InvalidCloseCode(code))
                            } else {
                                match std::str::from_utf8(reason) {
                                    Ok(r) => Ok(Owned::Close(Some(code), r.to_owned())),
                                    Err(_) => Err(ProtocolError::InvalidUtf8),
                                }
                            }
                        }
                    };
                    // Whatever follows a close frame is ignored.
                    return match close {
                        Ok(c) => {
                            events.push(c);
                            (events, None)
                        }
                        Err(e) => (events, Some(e)),
                    };
                }
            }
            continue;
        }
        match (f.op, message.is_some()) {
            (OpCode::Continuation, false) => {
                return (events, Some(ProtocolError::UnexpectedContinuation));
            }
            (OpCode::Text | OpCode::Binary, true) => {
                return (events, Some(ProtocolError::ExpectedContinuation));
            }
            _ => {}
        }
        if len > u64::from(limits.max_frame) {
            return (events, Some(ProtocolError::FrameTooLarge));
        }
        let gathered = message.as_ref().map_or(0, |m| m.1.len() as u64);
        if len > u64::from(limits.max_message).saturating_sub(gathered) {
            return (events, Some(ProtocolError::MessageTooLarge));
        }
        if len == 0 && !f.fin {
            empty_in_a_row += 1;
            if empty_in_a_row > 64 {
                return (events, Some(ProtocolError::EmptyFragments));
            }
        } else {
            empty_in_a_row = 0;
        }
        let (text, bytes) = message.get_or_insert_with(|| (f.op == OpCode::Text, Vec::new()));
        bytes.extend_from_slice(&f.payload);
        if *text {
            match std::str::from_utf8(bytes) {
                Ok(_) => {}
                // Cut inside a character that may still be completed (§8.1 fail-fast
                // only applies to bytes that can no longer become valid).
                Err(e) if e.error_len().is_none() && !f.fin => {}
                Err(_) => return (events, Some(ProtocolError::InvalidUtf8)),
            }
        }
        if f.fin {
            let (text, bytes) = message.take().expect("message in progress");
            events.push(if text {
                Owned::Text(String::from_utf8(bytes).expect("checked above"))
            } else {
                Owned::Binary(bytes)
            });
        }
    }
    (events, None)
}

fuzz_target!(|input: Input| {
    let limits = match input.limits {
        Some((f, m)) => Limits {
            max_frame: u32::from(f),
            max_message: u32::from(m),
        },
        None => Limits {
            max_frame: 1 << 20,
            max_message: 1 << 20,
        },
    };
    let frames = frames(&input.items);
    let mut stream = Vec::new();
    for f in &frames {
        write_masked_frame(&mut stream, f.fin, f.op, &f.payload, f.key);
    }

    let mut server = Feeder::new(Role::Server, limits);
    if input.chunk == 0 {
        server.push(&stream);
    } else {
        for chunk in stream.chunks(usize::from(input.chunk)) {
            server.push(chunk);
        }
    }

    let (events, error) = model(&frames, limits);
    assert_eq!(server.events, events);
    assert_eq!(server.error, error);
    if error.is_none() {
        assert!(server.buf.is_empty(), "every frame was complete");
    }

    // The replies the connection wrote by itself, read back by a client: a pong per
    // ping with the same payload, and the close frames of the closing handshake.
    let mut client = Feeder::new(Role::Client, limits);
    client.push(&server.pongs);
    let pings: Vec<Owned> = events
        .iter()
        .filter_map(|e| match e {
            Owned::Ping(p) => Some(Owned::Pong(p.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(client.error, None);
    let pongs: Vec<Owned> = client
        .events
        .iter()
        .filter(|e| matches!(e, Owned::Pong(_)))
        .cloned()
        .collect();
    assert_eq!(pongs, pings);
});
