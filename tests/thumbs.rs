//! Thumbnails of uploads against a real server: every accepted type gets one of at most
//! 320 px on the long side, named by its content; small pictures are not enlarged; the
//! original is stored untouched; decompression bombs are refused from their header, with
//! the JSON envelope, nothing stored, the server alive and its memory flat.

mod common;

use std::io::Cursor;
use std::time::Instant;

use common::{Http, Server};
use image::codecs::gif::{GifEncoder, Repeat};
use image::{DynamicImage, Frame, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use sha2::{Digest, Sha256};

fn start() -> Server {
    Server::start(&[])
}

fn logged_in(server: &Server) -> Http {
    let mut http = Http::new(server.addr);
    let r = http
        .form(
            "/user/register",
            "mobile=13900000002&passwd=secret-1&nickname=pics",
        )
        .json();
    assert_eq!(r["code"], 0, "{r}");
    http
}

fn upload(http: &mut Http, bytes: &[u8]) -> common::Response {
    let boundary = "----fastimThumbBoundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let content_type = format!("multipart/form-data; boundary={boundary}");
    http.request(
        "POST",
        "/attach/upload",
        &[("Content-Type", &content_type)],
        &body,
    )
}

fn stored(server: &Server) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(server.data_dir.join("resource"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn encode(picture: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    picture
        .write_to(&mut Cursor::new(&mut out), format)
        .expect("encode");
    out
}

/// A photo-like picture: smooth light with grain, as a camera makes (compresses as a
/// photo does, not as flat colour or pure noise).
fn photo(width: u32, height: u32) -> RgbImage {
    let mut seed = 0x9e37_79b9_u32;
    RgbImage::from_fn(width, height, |x, y| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let grain = (seed % 24) as u8;
        let fx = x * 200 / width;
        let fy = y * 200 / height;
        Rgb([
            (fx as u8).saturating_add(grain),
            (fy as u8).saturating_add(grain),
            ((fx + fy) / 2) as u8 + grain / 2,
        ])
    })
}

/// An animated GIF whose frames differ: the thumbnail is the first.
fn animated_gif(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut out);
        encoder.set_repeat(Repeat::Infinite).expect("repeat");
        for colour in [[250, 20, 20, 255], [20, 20, 250, 255]] {
            let frame = RgbaImage::from_fn(width, height, |x, _| {
                if x < width / 2 {
                    Rgba(colour)
                } else {
                    Rgba([240, 240, 240, 255])
                }
            });
            encoder.encode_frame(Frame::new(frame)).expect("frame");
        }
    }
    out
}

/// What an upload answered, checked: the original stored as sent, the thumbnail named
/// by the SHA-256 of its bytes, served with its type, and of the size the reply says.
struct Uploaded {
    data: String,
    thumb: String,
    thumb_image: DynamicImage,
}

fn upload_ok(http: &mut Http, bytes: &[u8]) -> Uploaded {
    let r = upload(http, bytes);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let reply = r.json();
    assert_eq!(
        (reply["code"].as_i64(), reply["msg"].as_str()),
        (Some(0), Some(""))
    );
    let data = reply["data"].as_str().expect("data").to_owned();
    let thumb = reply["thumb"].as_str().expect("thumb").to_owned();
    let original = http.request("GET", &data, &[], b"");
    assert_eq!(original.status, 200);
    assert_eq!(original.body, bytes, "the original is stored untouched");
    let t = http.request("GET", &thumb, &[], b"");
    assert_eq!(t.status, 200, "{thumb}");
    let name = thumb.trim_start_matches("/resource/");
    let hash: String = Sha256::digest(&t.body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(&name[..64], hash, "the thumbnail is named by its content");
    let format = ImageFormat::from_extension(&name[65..]).expect("extension");
    assert_eq!(t.header("content-type"), Some(format.to_mime_type()));
    let thumb_image = image::load_from_memory_with_format(&t.body, format).expect("decodes");
    assert_eq!(
        (reply["thumbwidth"].as_u64(), reply["thumbheight"].as_u64()),
        (
            Some(u64::from(thumb_image.width())),
            Some(u64::from(thumb_image.height()))
        ),
        "the reply gives the thumbnail's size"
    );
    Uploaded {
        data,
        thumb,
        thumb_image,
    }
}

#[test]
fn every_type_gets_a_thumbnail_named_by_its_content() {
    let server = start();
    let mut http = logged_in(&server);

    let jpeg = encode(
        &DynamicImage::ImageRgb8(photo(1600, 1200)),
        ImageFormat::Jpeg,
    );
    let png = encode(&DynamicImage::ImageRgb8(photo(900, 1200)), ImageFormat::Png);
    let gif = animated_gif(640, 400);
    let webp = encode(&DynamicImage::ImageRgb8(photo(800, 800)), ImageFormat::WebP);
    for (what, bytes, ext, (w, h)) in [
        ("JPEG", &jpeg, ".jpg", (320, 240)),
        ("PNG", &png, ".png", (240, 320)),
        ("GIF", &gif, ".gif", (320, 200)),
        ("WebP", &webp, ".webp", (320, 320)),
    ] {
        let up = upload_ok(&mut http, bytes);
        assert!(up.data.ends_with(ext), "{what}: {}", up.data);
        assert_ne!(up.thumb, up.data, "{what}: a new, small file");
        let t = &up.thumb_image;
        assert!(t.width().max(t.height()) <= 320, "{what}");
        assert_eq!(
            (t.width(), t.height()),
            (w, h),
            "{what}: the aspect is kept"
        );
        assert!(up.thumb.ends_with(".jpg"), "{what}: opaque, so a JPEG");
    }
    // The GIF's thumbnail is its first frame: red on the left, not the second's blue.
    let up = upload_ok(&mut http, &gif);
    let left = up.thumb_image.to_rgb8().get_pixel(20, 100).0;
    assert!(left[0] > 200 && left[2] < 80, "the first frame: {left:?}");

    // The same picture again: the same names, nothing new stored.
    let before = stored(&server);
    assert_eq!(before.len(), 8, "4 originals and 4 thumbnails: {before:?}");
    let first = upload_ok(&mut http, &jpeg);
    let again = upload_ok(&mut http, &jpeg);
    assert_eq!((&first.data, &first.thumb), (&again.data, &again.thumb));
    assert_eq!(stored(&server), before);
}

#[test]
fn small_pictures_are_not_enlarged_and_transparency_stays() {
    let server = start();
    let mut http = logged_in(&server);

    // Small and light: its own thumbnail.
    let icon = encode(
        &DynamicImage::ImageRgb8(RgbImage::from_pixel(120, 80, Rgb([10, 120, 200]))),
        ImageFormat::Png,
    );
    let up = upload_ok(&mut http, &icon);
    assert_eq!(up.thumb, up.data, "no second file for a small picture");
    assert_eq!((up.thumb_image.width(), up.thumb_image.height()), (120, 80));

    // Small but heavy (grain does not compress): re-encoded at its own size, smaller.
    let heavy = encode(&DynamicImage::ImageRgb8(photo(300, 200)), ImageFormat::Png);
    assert!(heavy.len() > 64 * 1024, "{}", heavy.len());
    let up = upload_ok(&mut http, &heavy);
    assert_ne!(up.thumb, up.data);
    assert_eq!(
        (up.thumb_image.width(), up.thumb_image.height()),
        (300, 200)
    );

    // Transparent pixels: a PNG thumbnail, alpha kept.
    let sticker = RgbaImage::from_fn(600, 600, |x, y| {
        let inside = (x as i64 - 300).pow(2) + (y as i64 - 300).pow(2) < 250 * 250;
        Rgba([255, 180, (x % 256) as u8, if inside { 255 } else { 0 }])
    });
    let up = upload_ok(
        &mut http,
        &encode(&DynamicImage::ImageRgba8(sticker), ImageFormat::Png),
    );
    assert!(up.thumb.ends_with(".png"), "{}", up.thumb);
    let corner = up.thumb_image.to_rgba8().get_pixel(0, 0).0;
    assert_eq!(corner[3], 0, "the corner stays transparent");
    assert_eq!(
        (up.thumb_image.width(), up.thumb_image.height()),
        (320, 320)
    );
}

/// CRC-32 as PNG chunks use it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(data.len())
        .expect("chunk")
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(&[&kind[..], data].concat()).to_be_bytes());
    out
}

/// A PNG that claims `width` x `height` (colour type `colour`: 0 grey, 6 RGBA), with
/// `rows` rows of zeros really there: a few KB that inflate to whatever they claim.
fn png_bomb(width: u32, height: u32, colour: u8, rows: usize) -> Vec<u8> {
    let channels = if colour == 6 { 4 } else { 1 };
    let row = 1 + width as usize * channels;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; row];
    for _ in 0..rows {
        std::io::Write::write_all(&mut z, &zeros).expect("deflate");
    }
    let idat = z.finish().expect("deflate");
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, colour, 0, 0, 0]);
    [
        b"\x89PNG\r\n\x1a\n".to_vec(),
        png_chunk(b"IHDR", &ihdr),
        png_chunk(b"IDAT", &idat),
        png_chunk(b"IEND", b""),
    ]
    .concat()
}

/// A real small GIF whose logical screen claims `width` x `height`.
fn gif_bomb(width: u16, height: u16) -> Vec<u8> {
    let mut bytes = encode(
        &DynamicImage::ImageRgba8(RgbaImage::from_pixel(8, 8, Rgba([1, 2, 3, 255]))),
        ImageFormat::Gif,
    );
    bytes[6..8].copy_from_slice(&width.to_le_bytes());
    bytes[8..10].copy_from_slice(&height.to_le_bytes());
    bytes
}

/// A real small JPEG whose frame header (SOF0) claims `width` x `height`.
fn jpeg_bomb(width: u16, height: u16) -> Vec<u8> {
    let mut bytes = encode(
        &DynamicImage::ImageRgb8(RgbImage::from_pixel(16, 16, Rgb([9, 9, 9]))),
        ImageFormat::Jpeg,
    );
    let sof = bytes
        .windows(2)
        .position(|w| w == [0xff, 0xc0])
        .expect("SOF0");
    bytes[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    bytes
}

/// The server's peak resident memory (VmHWM), in bytes.
fn peak_rss(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id()))
        .expect("server alive");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM line");
    kib * 1024
}

const MIB: u64 = 1024 * 1024;

#[test]
fn decompression_bombs_are_refused_from_their_header() {
    let server = start();
    let mut http = logged_in(&server);
    let baseline = peak_rss(&server);

    let bombs = [
        // Every row there: 244 MiB of pixels in 250 KB, which would decode in full.
        ("PNG 8,000 x 8,000 RGBA", png_bomb(8000, 8000, 6, 8000)),
        ("PNG 50,000 x 50,000 grey", png_bomb(50_000, 50_000, 0, 200)),
        ("PNG 8,193 x 1", png_bomb(8193, 1, 0, 1)),
        ("GIF 50,000 x 50,000", gif_bomb(50_000, 50_000)),
        ("JPEG 50,000 x 50,000", jpeg_bomb(50_000, 50_000)),
        ("JPEG 60,000 x 2", jpeg_bomb(60_000, 2)),
    ];
    for (what, bomb) in &bombs {
        assert!(
            bomb.len() < 512 * 1024,
            "{what}: a small file ({})",
            bomb.len()
        );
        let r = upload(&mut http, bomb);
        let peak = peak_rss(&server);
        assert!(
            peak < baseline + 32 * MIB,
            "{what}: memory did not spike: {} -> {} MiB",
            baseline / MIB,
            peak / MIB
        );
        let body = r.json();
        assert_eq!(
            (r.status, body["code"].as_i64()),
            (413, Some(413)),
            "{what}: {body}"
        );
        let msg = body["msg"].as_str().expect("msg");
        assert!(
            msg.starts_with("the picture is too large: ") && msg.contains("8192"),
            "{what}: {msg}"
        );
    }
    let msg = upload(&mut http, &bombs[1].1).json()["msg"].clone();
    assert_eq!(
        msg.as_str().map(|m| m.split(';').next()),
        Some(Some("the picture is too large: 50000 x 50000 pixels"))
    );
    assert_eq!(stored(&server), Vec::<String>::new(), "nothing stored");

    // A broken picture (the header says PNG, the data stops): 415, nothing stored.
    let whole = encode(&DynamicImage::ImageRgb8(photo(64, 64)), ImageFormat::Png);
    let r = upload(&mut http, &whole[..whole.len() / 2]);
    assert_eq!((r.status, r.json()["code"].as_i64()), (415, Some(415)));
    assert!(
        r.json()["msg"]
            .as_str()
            .is_some_and(|m| m.contains("cannot be read")),
        "{}",
        r.json()
    );
    assert_eq!(stored(&server), Vec::<String>::new(), "nothing stored");

    // Alive, and still making thumbnails.
    let up = upload_ok(&mut http, &whole);
    assert_eq!(
        stored(&server).len(),
        1,
        "its own thumbnail: {:?}",
        stored(&server)
    );
    assert_eq!(up.thumb, up.data);
    let peak = peak_rss(&server);
    eprintln!(
        "peak RSS: {} MiB at start, {} MiB after the bombs",
        baseline / MIB,
        peak / MIB
    );
    assert!(
        peak < baseline + 32 * MIB,
        "memory did not spike: {} -> {} MiB",
        baseline / MIB,
        peak / MIB
    );
}

/// The largest picture taken, decoded in full, and a 12-megapixel photo: the worker's
/// memory stays within the decoding bound, and the time is printed (not asserted).
#[test]
fn the_largest_accepted_pictures_stay_within_the_memory_bound() {
    let server = start();
    let mut http = logged_in(&server);
    let baseline = peak_rss(&server);

    // 4,000 x 4,000 RGBA: 61 MiB decoded, just under the 64 MiB bound; every row there.
    let big = png_bomb(4000, 4000, 6, 4000);
    let t0 = Instant::now();
    let up = upload_ok(&mut http, &big);
    eprintln!(
        "4000 x 4000 RGBA PNG ({} KB): uploaded and thumbnailed in {} ms",
        big.len() / 1000,
        t0.elapsed().as_millis()
    );
    assert_eq!(
        (up.thumb_image.width(), up.thumb_image.height()),
        (320, 320)
    );

    let jpeg = encode(
        &DynamicImage::ImageRgb8(photo(4000, 3000)),
        ImageFormat::Jpeg,
    );
    let t0 = Instant::now();
    let up = upload_ok(&mut http, &jpeg);
    let thumb_len = http.request("GET", &up.thumb, &[], b"").body.len();
    eprintln!(
        "4000 x 3000 JPEG ({} KB): uploaded and thumbnailed in {} ms; thumbnail {} KB",
        jpeg.len() / 1000,
        t0.elapsed().as_millis(),
        thumb_len / 1000
    );
    assert_eq!(
        (up.thumb_image.width(), up.thumb_image.height()),
        (320, 240)
    );
    let peak = peak_rss(&server);
    eprintln!(
        "peak RSS: {} MiB at start, {} MiB after",
        baseline / MIB,
        peak / MIB
    );
    assert!(
        peak < baseline + 160 * MIB,
        "one decode at a time stays near its 64 MiB bound: {} -> {} MiB",
        baseline / MIB,
        peak / MIB
    );
}
