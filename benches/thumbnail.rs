//! The time to make an upload's thumbnail (decode, shrink to 320 px, encode), on the
//! worker's code path, without the server.
//!
//! ```text
//! cargo bench --bench thumbnail
//! FASTIM_BENCH_PHOTO=photo.jpg cargo bench --bench thumbnail   # also a photo of yours
//! ```
//!
//! The 4,000 x 3,000 JPEG is made here: smooth light with grain, at quality 90. Each case
//! prints the original's and the thumbnail's bytes once.

use std::hint::black_box;
use std::io::Cursor;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use image::codecs::jpeg::JpegEncoder;
use image::{Rgb, RgbImage};

use fastim::resource::ImageKind;
use fastim::thumbnail;

fn photo(width: u32, height: u32) -> Vec<u8> {
    let mut seed = 0x9e37_79b9_u32;
    let picture = RgbImage::from_fn(width, height, |x, y| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let grain = (seed % 24) as u8;
        let fx = (x * 200 / width) as u8;
        let fy = (y * 200 / height) as u8;
        Rgb([
            fx.saturating_add(grain),
            fy.saturating_add(grain),
            fx / 2 + fy / 2 + grain / 2,
        ])
    });
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(Cursor::new(&mut out), 90)
        .encode_image(&picture)
        .expect("encode");
    out
}

fn case(c: &mut Criterion, name: &str, bytes: &[u8]) {
    let kind = ImageKind::sniff(bytes).expect("a picture");
    let thumb = thumbnail::make(kind, bytes).expect("a thumbnail");
    let thumb_len = thumb.encoded.as_ref().map_or(bytes.len(), |(_, b)| b.len());
    println!(
        "{name}: {} bytes -> thumbnail {} x {}, {thumb_len} bytes ({:.1} % of the original)",
        bytes.len(),
        thumb.width,
        thumb.height,
        100.0 * thumb_len as f64 / bytes.len() as f64
    );
    c.bench_function(name, |b| {
        b.iter(|| thumbnail::make(kind, black_box(bytes)).expect("a thumbnail"))
    });
}

fn thumbnails(c: &mut Criterion) {
    case(c, "thumbnail/jpeg 4000x3000", &photo(4000, 3000));
    if let Ok(path) = std::env::var("FASTIM_BENCH_PHOTO") {
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        case(c, "thumbnail/FASTIM_BENCH_PHOTO", &bytes);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = thumbnails
}
criterion_main!(benches);
