#![no_main]
//! Any bytes as a client stream, fed in chunks and whole: same events, same error.
//!
//! Input: byte 0 gives the plan length k (1..=8), the next k bytes the chunk sizes
//! (cycled), the rest is the stream.

use fastim::ws::{Limits, Role};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use common::Feeder;

const LIMITS: Limits = Limits {
    max_frame: 1 << 20,
    max_message: 1 << 20,
};

/// 1..=64, 4..=256, 16..=1024 or 64..=4096 bytes, by the top two bits.
fn chunk_size(b: u8) -> usize {
    (1 + usize::from(b & 0x3f)) << (2 * (b >> 6))
}

fuzz_target!(|data: &[u8]| {
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let k = (usize::from(k) % 8 + 1).min(rest.len());
    let (plan, stream) = rest.split_at(k);
    if plan.is_empty() {
        return;
    }

    let mut chunked = Feeder::new(Role::Server, LIMITS);
    let (mut pos, mut i) = (0, 0);
    while pos < stream.len() && chunked.error.is_none() {
        let end = (pos + chunk_size(plan[i % plan.len()])).min(stream.len());
        chunked.push(&stream[pos..end]);
        pos = end;
        i += 1;
    }

    let mut whole = Feeder::new(Role::Server, LIMITS);
    whole.push(stream);

    assert_eq!(chunked.events, whole.events);
    assert_eq!(chunked.error, whole.error);
    assert_eq!(chunked.pongs, whole.pongs);
    assert_eq!(chunked.conn.phase(), whole.conn.phase());
    if whole.error.is_none() {
        assert_eq!(chunked.buf.len(), whole.buf.len(), "unconsumed bytes");
    }
});
