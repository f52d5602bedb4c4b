//! Benchmarks of the WebSocket engine's hot paths, on their own (no sockets).
//!
//! ```text
//! cargo bench --bench ws                # everything, about a minute
//! cargo bench --bench ws -- unmask      # one group
//! ```
//!
//! Every benchmark reports bytes per second (`Throughput::Bytes`) of the input it
//! processes: header bytes, payload bytes or request bytes.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use fastim::config::ECHO_LIMITS;
use fastim::http::parse_head;
use fastim::ws::frame::{
    MAX_HEADER_LEN, decode_header, encode_header, write_frame, write_masked_frame,
};
use fastim::ws::mask::{apply_mask, apply_mask_scalar};
use fastim::ws::{Connection, Event, OpCode, Role, handshake};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Text with one-, two-, three- and four-byte characters, so fragment
/// boundaries fall inside characters.
const TEXT: &str = "héllo wörld, ça va? — 你好，世界 🎉🚀 plain ascii too. ";

fn header_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("header_decode");
    // Masked client headers of each length form: 7-bit, 16-bit and 64-bit lengths.
    for payload_len in [64u64, 4096, 1 << 20] {
        let mut header = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut header, true, OpCode::Binary, payload_len, Some(KEY));
        group.throughput(Throughput::Bytes(n as u64));
        group.bench_with_input(
            BenchmarkId::new(
                "decode_header",
                format!("{n}B header ({payload_len}B payload)"),
            ),
            &header[..n],
            |b, h| b.iter(|| decode_header(black_box(h))),
        );
    }
    group.finish();
}

fn unmask(c: &mut Criterion) {
    let mut group = c.benchmark_group("unmask");
    for size in [64usize, 4096, 1 << 20] {
        let mut buf: Vec<u8> = (0..size).map(|i| i as u8).collect();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("apply_mask", size), |b| {
            b.iter(|| apply_mask(black_box(&mut buf), black_box(KEY)))
        });
        group.bench_function(BenchmarkId::new("apply_mask_scalar", size), |b| {
            b.iter(|| apply_mask_scalar(black_box(&mut buf), black_box(KEY)))
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for size in [64usize, 4096] {
        let payload = vec![b'x'; size];
        let mut out = Vec::with_capacity(size + MAX_HEADER_LEN);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("write_frame", size), |b| {
            b.iter(|| {
                out.clear();
                write_frame(&mut out, OpCode::Text, black_box(&payload));
                black_box(out.len())
            })
        });
        group.bench_function(BenchmarkId::new("write_masked_frame", size), |b| {
            b.iter(|| {
                out.clear();
                write_masked_frame(&mut out, true, OpCode::Text, black_box(&payload), KEY);
                black_box(out.len())
            })
        });
    }
    group.finish();
}

/// A masked text message of `total` bytes in fragments of `fragment` bytes (the
/// first a Text frame, the rest Continuation frames).
fn fragmented_text(total: usize, fragment: usize) -> Vec<u8> {
    let mut text = String::with_capacity(total + TEXT.len());
    while text.len() + TEXT.len() <= total {
        text.push_str(TEXT);
    }
    while text.len() < total {
        text.push('.');
    }
    let bytes = text.as_bytes();
    let mut wire = Vec::new();
    let count = bytes.len().div_ceil(fragment);
    for (i, part) in bytes.chunks(fragment).enumerate() {
        let opcode = if i == 0 {
            OpCode::Text
        } else {
            OpCode::Continuation
        };
        write_masked_frame(&mut wire, i + 1 == count, opcode, part, KEY);
    }
    wire
}

/// Feeds `input` (unmasked in place as it goes) to a fresh server connection
/// until the message comes out; returns its length.
fn receive_whole(input: &mut [u8]) -> usize {
    let mut conn = Connection::new(Role::Server, ECHO_LIMITS);
    let mut replies = Vec::new();
    let mut pos = 0;
    loop {
        match conn.handle_bytes(&mut input[pos..], &mut replies) {
            Ok((_, Some(Event::Message(m)))) => {
                return match m {
                    fastim::ws::Message::Text(t) => t.len(),
                    fastim::ws::Message::Binary(b) => b.len(),
                };
            }
            Ok((0, None)) => panic!("message incomplete"),
            Ok((n, _)) => pos += n,
            Err(e) => panic!("protocol error: {e}"),
        }
    }
}

/// The same, with the input arriving in `chunk`-byte reads into a receive buffer,
/// as the server sees it: unconsumed bytes move to the front before the next read.
fn receive_chunked(input: &[u8], chunk: usize, buf: &mut [u8]) -> usize {
    let mut conn = Connection::new(Role::Server, ECHO_LIMITS);
    let mut replies = Vec::new();
    let mut filled = 0;
    for read in input.chunks(chunk) {
        buf[filled..filled + read.len()].copy_from_slice(read);
        filled += read.len();
        let mut pos = 0;
        loop {
            match conn.handle_bytes(&mut buf[pos..filled], &mut replies) {
                Ok((_, Some(Event::Message(m)))) => {
                    return match m {
                        fastim::ws::Message::Text(t) => t.len(),
                        fastim::ws::Message::Binary(b) => b.len(),
                    };
                }
                Ok((0, None)) => break,
                Ok((n, _)) => pos += n,
                Err(e) => panic!("protocol error: {e}"),
            }
        }
        buf.copy_within(pos..filled, 0);
        filled -= pos;
    }
    panic!("message incomplete")
}

fn assembly(c: &mut Criterion) {
    let mut group = c.benchmark_group("assembly");
    const TOTAL: usize = 64 * 1024;
    const FRAGMENT: usize = 1024;
    let fragmented = fragmented_text(TOTAL, FRAGMENT);
    group.throughput(Throughput::Bytes(TOTAL as u64));
    group.bench_function("64KiB text in 1KiB fragments, one buffer", |b| {
        b.iter_batched_ref(
            || fragmented.clone(),
            |input| black_box(receive_whole(input)),
            BatchSize::LargeInput,
        )
    });
    let mut buf = vec![0u8; 4 * FRAGMENT];
    group.bench_function("64KiB text in 1KiB fragments, 1KiB reads", |b| {
        b.iter(|| black_box(receive_chunked(black_box(&fragmented), FRAGMENT, &mut buf)))
    });
    // The common case for comparison: one unfragmented frame, whole in the buffer.
    let single = fragmented_text(TOTAL, TOTAL);
    group.bench_function("64KiB text in one frame, one buffer", |b| {
        b.iter_batched_ref(
            || single.clone(),
            |input| black_box(receive_whole(input)),
            BatchSize::LargeInput,
        )
    });
    let small = fragmented_text(64, 64);
    group.throughput(Throughput::Bytes(64));
    group.bench_function("64B text in one frame, one buffer", |b| {
        b.iter_batched_ref(
            || small.clone(),
            |input| black_box(receive_whole(input)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// Chat deliveries as a sync reply carries them, about `len` bytes of JSON: what
/// permessage-deflate would compress.
fn deliveries(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 400);
    let mut id = 1000;
    while out.len() < len {
        let content = if id % 3 == 0 {
            "好的，明天见！我们在老地方吃饭"
        } else {
            "see you tomorrow at the usual place, 7pm?"
        };
        out.extend_from_slice(
            format!(
                r#"{{"id":{id},"userid":{},"cmd":10,"dstid":{},"media":1,"content":"{content}","pic":"","url":"","memo":"","amount":0,"createat":17950000{id:05}}}"#,
                2 + id % 2,
                3 - id % 2
            )
            .as_bytes(),
        );
        id += 1;
    }
    out.truncate(len);
    out
}

fn deflate(c: &mut Criterion) {
    let mut group = c.benchmark_group("deflate");
    let pmd = fastim::ws::PerMessageDeflate {
        server_window_bits: 15,
    };
    let mut deflater = fastim::ws::Deflater::new();
    let mut inflater = fastim::ws::Inflater::new();
    for len in [1024usize, 16 * 1024, 64 * 1024] {
        let payload = deliveries(len);
        group.throughput(Throughput::Bytes(len as u64));
        let mut out = Vec::with_capacity(2 * len);
        group.bench_function(BenchmarkId::new("compress_message", len), |b| {
            b.iter(|| {
                out.clear();
                deflater.write_message(Some(pmd), 0, OpCode::Binary, black_box(&payload), &mut out);
                black_box(out.len())
            })
        });
        // What a client sends: the compressed payload, masked, with RSV1 (RFC 7692 §6).
        out.clear();
        deflater.write_message(Some(pmd), 0, OpCode::Binary, &payload, &mut out);
        let (header, n) = decode_header(&out).expect("valid").expect("whole");
        let mut frame = Vec::new();
        write_masked_frame(&mut frame, true, OpCode::Binary, &out[n..], KEY);
        frame[0] |= 0x40;
        eprintln!(
            "deflate {len} B of chat JSON: {} B compressed ({:.0} %)",
            header.payload_len,
            100.0 * header.payload_len as f64 / len as f64
        );
        group.bench_function(BenchmarkId::new("receive_compressed", len), |b| {
            b.iter_batched_ref(
                || {
                    (
                        Connection::new(Role::Server, ECHO_LIMITS).with_deflate(Some(pmd)),
                        frame.clone(),
                    )
                },
                |(conn, input)| match conn.handle_bytes_with(&mut inflater, input, &mut Vec::new())
                {
                    Ok((_, Some(Event::Message(m)))) => {
                        black_box(matches!(m, fastim::ws::Message::Binary(b) if b.len() == len))
                    }
                    other => panic!("{other:?}"),
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    for (name, text) in [
        ("ascii_json", deliveries(4096)),
        (
            "chinese",
            "好的，明天见！我们在老地方吃饭".repeat(100).into_bytes(),
        ),
    ] {
        group.throughput(Throughput::Bytes(text.len() as u64));
        let text = String::from_utf8_lossy(&text).into_owned().into_bytes();
        group.bench_function(BenchmarkId::new("std", name), |b| {
            b.iter(|| black_box(std::str::from_utf8(black_box(&text)).is_ok()))
        });
        group.bench_function(BenchmarkId::new("simdutf8", name), |b| {
            b.iter(|| black_box(simdutf8::basic::from_utf8(black_box(&text)).is_ok()))
        });
    }
    group.finish();
}

fn handshake_accept(c: &mut Criterion) {
    let mut group = c.benchmark_group("handshake");
    // What a browser sends (Chrome's headers, trimmed of cookies).
    let request = "GET /echo HTTP/1.1\r\nHost: chat.example.com\r\nConnection: Upgrade\r\n\
        Pragma: no-cache\r\nCache-Control: no-cache\r\n\
        User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\n\
        Upgrade: websocket\r\nOrigin: https://chat.example.com\r\nSec-WebSocket-Version: 13\r\n\
        Accept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-US,en;q=0.9\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";
    let mut out = Vec::with_capacity(256);
    group.throughput(Throughput::Bytes(request.len() as u64));
    group.bench_function("parse_head + validate + write_accept", |b| {
        b.iter(|| {
            let head = parse_head(black_box(request.as_bytes()), 8192)
                .expect("valid head")
                .expect("complete head");
            let accept = handshake::validate(&head).expect("valid upgrade");
            out.clear();
            handshake::write_accept(&mut out, &accept, None);
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = header_decode, unmask, encode, assembly, deflate, utf8, handshake_accept
}
criterion_main!(benches);
