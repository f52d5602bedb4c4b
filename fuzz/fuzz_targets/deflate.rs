#![no_main]
//! Any bytes as a Sec-WebSocket-Extensions value, and as a compressed message:
//! negotiation never panics and answers only what RFC 7692 allows; inflation never
//! panics and never holds more than one byte past its limit.

use fastim::ws::deflate::{Inflater, negotiate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(agreement) = negotiate([data]) {
        assert!((8..=15).contains(&agreement.params.server_window_bits));
        assert!(agreement.response.starts_with(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        ));
    }
    let mut out = Vec::new();
    let max = 1 << 16;
    if Inflater::new().inflate(data, max, &mut out).is_ok() {
        assert!(out.len() <= max);
    }
    assert!(out.capacity() <= max + 1);
});
