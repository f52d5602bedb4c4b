#![no_main]
//! Any bytes as a request head: parse, validate the upgrade, write the answer.

use fastim::http::parse_head;
use fastim::ws::handshake::{rejection, validate, write_accept};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Some(head)) = parse_head(data, 8192) else {
        return;
    };
    assert!(head.len <= data.len() && head.len <= 8192);
    let _ = (head.path(), head.query());
    let _ = fastim::ws::handshake::negotiate_deflate(&head);
    let mut out = Vec::new();
    match validate(&head) {
        Ok(accept) => {
            assert_eq!(accept.len(), 28, "base64 of a SHA-1");
            write_accept(&mut out, &accept, None);
            assert!(out.starts_with(b"HTTP/1.1 101 "));
        }
        Err(e) => {
            rejection(e).write(&mut out);
            assert!(out.starts_with(b"HTTP/1.1 4"));
        }
    }
});
