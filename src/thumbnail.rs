//! Thumbnails of uploaded pictures: bytes in, a small picture out, no I/O.
//!
//! Every upload is decoded once, on the API worker that stores it, to make the version
//! that chat shows: at most [`MAX_SIDE`] pixels on the long side, aspect kept, never
//! enlarged, turned upright by the EXIF orientation (browsers turn the original too), an
//! animation's first frame. It is a JPEG (quality [`JPEG_QUALITY`]) unless it has
//! transparent pixels, then a PNG. A picture that already fits and is at most
//! [`KEEP_BYTES`] is its own thumbnail (small stickers keep their animation).
//!
//! Decoding is where a small upload can cost a lot: a few KB of PNG may claim 50,000 ×
//! 50,000 pixels, 10 GB decoded. So the header is read first and the picture refused,
//! before anything is decoded or allocated, when a side is over [`MAX_DECODED_SIDE`] or
//! the decoded buffer would be over [`MAX_DECODED_BYTES`]; the same limits are given to
//! the decoders for what they allocate inside. That bounds a worker's memory (about the
//! decoded buffer plus the decoder's own, under 150 MB) and its time (a bounded number
//! of pixels: about 0.1 s for 12 megapixels in a release build).

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::metadata::Orientation;
use image::{ColorType, DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};

use crate::resource::ImageKind;

/// The long side of a thumbnail, in pixels, at most.
pub const MAX_SIDE: u32 = 320;

/// A picture that fits in [`MAX_SIDE`] and is at most this many bytes is its own thumbnail.
pub const KEEP_BYTES: usize = 64 * 1024;

/// The JPEG quality of thumbnails.
pub const JPEG_QUALITY: u8 = 80;

/// The widest and tallest picture that is decoded.
pub const MAX_DECODED_SIDE: u32 = 8192;

/// The largest decoded picture, in bytes (width × height × bytes per pixel): 16.7
/// megapixels with alpha, 22 without.
pub const MAX_DECODED_BYTES: u64 = 64 * 1024 * 1024;

/// A picture's thumbnail.
#[derive(Debug, PartialEq, Eq)]
pub struct Thumbnail {
    /// The thumbnail's bytes and type, or `None`: the picture is its own thumbnail.
    pub encoded: Option<(ImageKind, Vec<u8>)>,
    /// Width as shown (upright), in pixels.
    pub width: u32,
    /// Height as shown (upright), in pixels.
    pub height: u32,
}

/// Why no thumbnail can be made.
#[derive(Debug, PartialEq, Eq)]
pub enum ThumbError {
    /// Over [`MAX_DECODED_SIDE`] or [`MAX_DECODED_BYTES`], from the header alone.
    TooLarge {
        /// Claimed width.
        width: u32,
        /// Claimed height.
        height: u32,
    },
    /// Not a picture of its type after all: broken, truncated, unsupported variant.
    Undecodable(String),
}

/// The limits every decoder works under.
fn limits(sides: bool) -> Limits {
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    if sides {
        limits.max_image_width = Some(MAX_DECODED_SIDE);
        limits.max_image_height = Some(MAX_DECODED_SIDE);
    }
    limits
}

fn format(kind: ImageKind) -> ImageFormat {
    match kind {
        ImageKind::Png => ImageFormat::Png,
        ImageKind::Jpeg => ImageFormat::Jpeg,
        ImageKind::Gif => ImageFormat::Gif,
        ImageKind::Webp => ImageFormat::WebP,
    }
}

fn undecodable(e: ImageError) -> ThumbError {
    ThumbError::Undecodable(e.to_string())
}

/// Makes the thumbnail of `bytes`, a picture of type `kind` (sniffed from its bytes).
pub fn make(kind: ImageKind, bytes: &[u8]) -> Result<Thumbnail, ThumbError> {
    // The decoder reads the header only; the sides are checked here rather than by the
    // decoder, so that the refusal can say what the picture claims.
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format(kind));
    reader.limits(limits(false));
    let mut decoder = reader.into_decoder().map_err(undecodable)?;
    let (width, height) = decoder.dimensions();
    if width > MAX_DECODED_SIDE
        || height > MAX_DECODED_SIDE
        || decoder.total_bytes() > MAX_DECODED_BYTES
    {
        return Err(ThumbError::TooLarge { width, height });
    }
    if width == 0 || height == 0 {
        return Err(ThumbError::Undecodable("the picture has no pixels".into()));
    }
    decoder
        .set_limits(limits(true))
        .map_err(|_| ThumbError::TooLarge { width, height })?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let picture = DynamicImage::from_decoder(decoder).map_err(|e| match e {
        ImageError::Limits(_) => ThumbError::TooLarge { width, height },
        e => undecodable(e),
    })?;
    let fits = width.max(height) <= MAX_SIDE;
    if fits && bytes.len() <= KEEP_BYTES {
        let (width, height) = upright(width, height, orientation);
        return Ok(Thumbnail {
            encoded: None,
            width,
            height,
        });
    }
    // Resized first, turned after: turning the small picture is cheap, and the bound is
    // square, so the order does not change the result.
    let mut small = if fits {
        picture
    } else {
        picture.thumbnail(MAX_SIDE, MAX_SIDE)
    };
    small.apply_orientation(orientation);
    let encoded = encode(&small).map_err(undecodable)?;
    Ok(Thumbnail {
        encoded: Some(encoded),
        width: small.width(),
        height: small.height(),
    })
}

/// The sides as shown once `orientation` is applied.
fn upright(width: u32, height: u32, orientation: Orientation) -> (u32, u32) {
    match orientation {
        Orientation::Rotate90
        | Orientation::Rotate270
        | Orientation::Rotate90FlipH
        | Orientation::Rotate270FlipH => (height, width),
        _ => (width, height),
    }
}

/// JPEG, or PNG when some pixel is not opaque (JPEG has no alpha).
fn encode(picture: &DynamicImage) -> Result<(ImageKind, Vec<u8>), ImageError> {
    let mut out = Vec::new();
    if picture.color().has_alpha() {
        let rgba = picture.to_rgba8();
        if rgba.pixels().any(|p| p.0[3] < u8::MAX) {
            let png =
                PngEncoder::new_with_quality(&mut out, CompressionType::Best, FilterType::Adaptive);
            rgba.write_with_encoder(png)?;
            return Ok((ImageKind::Png, out));
        }
    }
    let mut jpeg = JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY);
    match picture.color() {
        ColorType::L8 | ColorType::L16 | ColorType::La8 | ColorType::La16 => {
            jpeg.encode_image(&picture.to_luma8())?;
        }
        _ => jpeg.encode_image(&picture.to_rgb8())?,
    }
    Ok((ImageKind::Jpeg, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage, Rgba, RgbaImage};

    fn png(picture: &DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        picture
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .expect("encode");
        out
    }

    /// Noise: does not compress, so even a small picture is over [`KEEP_BYTES`].
    fn noise(width: u32, height: u32) -> RgbImage {
        let mut seed = 0x2545_f491_u32;
        RgbImage::from_fn(width, height, |_, _| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let [a, b, c, _] = seed.to_le_bytes();
            Rgb([a, b, c])
        })
    }

    fn decode(bytes: &[u8]) -> DynamicImage {
        image::load_from_memory(bytes).expect("the thumbnail decodes")
    }

    #[test]
    fn a_large_picture_shrinks_to_320_on_the_long_side_as_a_jpeg() {
        let original = png(&DynamicImage::ImageRgb8(noise(1000, 500)));
        let thumb = make(ImageKind::Png, &original).expect("thumbnail");
        assert_eq!((thumb.width, thumb.height), (320, 160));
        let (kind, bytes) = thumb.encoded.expect("a new file");
        assert_eq!(kind, ImageKind::Jpeg);
        assert_eq!(ImageKind::sniff(&bytes), Some(ImageKind::Jpeg));
        let back = decode(&bytes);
        assert_eq!((back.width(), back.height()), (320, 160));
        // Made twice, the same bytes: the same content-addressed name.
        assert_eq!(
            make(ImageKind::Png, &original).expect("again").encoded,
            Some((kind, bytes))
        );
    }

    #[test]
    fn transparency_is_kept_as_png() {
        let picture = RgbaImage::from_fn(400, 400, |x, _| Rgba([200, 10, 10, (x % 256) as u8]));
        let thumb = make(ImageKind::Png, &png(&DynamicImage::ImageRgba8(picture))).expect("thumb");
        let (kind, bytes) = thumb.encoded.expect("a new file");
        assert_eq!(
            (kind, thumb.width, thumb.height),
            (ImageKind::Png, 320, 320)
        );
        assert!(decode(&bytes).color().has_alpha());
        // Opaque pixels with an alpha channel still make a JPEG.
        let opaque = RgbaImage::from_pixel(400, 300, Rgba([1, 2, 3, 255]));
        let thumb = make(ImageKind::Png, &png(&DynamicImage::ImageRgba8(opaque))).expect("thumb");
        assert_eq!(thumb.encoded.map(|(k, _)| k), Some(ImageKind::Jpeg));
    }

    #[test]
    fn small_pictures_are_never_enlarged() {
        // Small and light: its own thumbnail.
        let tiny = png(&DynamicImage::ImageRgb8(RgbImage::from_pixel(
            100,
            40,
            Rgb([9, 9, 9]),
        )));
        assert_eq!(
            make(ImageKind::Png, &tiny),
            Ok(Thumbnail {
                encoded: None,
                width: 100,
                height: 40
            })
        );
        // Small but heavy: re-encoded at the same size.
        let heavy = png(&DynamicImage::ImageRgb8(noise(300, 200)));
        assert!(heavy.len() > KEEP_BYTES);
        let thumb = make(ImageKind::Png, &heavy).expect("thumb");
        assert_eq!((thumb.width, thumb.height), (300, 200));
        let (_, bytes) = thumb.encoded.expect("a new file");
        assert!(bytes.len() < heavy.len() / 2, "{} bytes", bytes.len());
    }

    #[test]
    fn tall_and_thin_pictures_keep_at_least_one_pixel() {
        let thin = png(&DynamicImage::ImageRgb8(noise(8000, 2)));
        let thumb = make(ImageKind::Png, &thin).expect("thumb");
        assert_eq!((thumb.width, thumb.height), (320, 1));
    }

    /// A JPEG of `picture` whose EXIF says: turn 90 degrees clockwise to show (as a phone
    /// held upright writes it).
    fn jpeg_turned(picture: RgbImage) -> Vec<u8> {
        use image::ImageEncoder;
        // TIFF header (big-endian), one IFD entry: Orientation (0x0112), SHORT, 1, value 6.
        let exif = vec![
            b'M', b'M', 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0,
            0,
        ];
        let mut out = Vec::new();
        let mut jpeg = JpegEncoder::new_with_quality(&mut out, 90);
        jpeg.set_exif_metadata(exif).expect("exif");
        jpeg.encode_image(&picture).expect("encode");
        out
    }

    #[test]
    fn the_exif_orientation_turns_the_thumbnail_upright() {
        let thumb = make(ImageKind::Jpeg, &jpeg_turned(noise(640, 320))).expect("thumb");
        assert_eq!((thumb.width, thumb.height), (160, 320));
        let (_, bytes) = thumb.encoded.expect("a new file");
        let back = decode(&bytes);
        assert_eq!((back.width(), back.height()), (160, 320));
        // Its own thumbnail: the sizes given are the upright ones, as a browser shows it.
        let small = jpeg_turned(RgbImage::from_pixel(100, 50, Rgb([0, 90, 0])));
        let thumb = make(ImageKind::Jpeg, &small).expect("thumb");
        assert_eq!((thumb.encoded, thumb.width, thumb.height), (None, 50, 100));
    }

    /// CRC-32 (ISO 3309, as PNG uses it), bit by bit.
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

    /// A small real PNG whose header claims `width` × `height`.
    fn claiming(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = png(&DynamicImage::ImageRgba8(RgbaImage::new(4, 4)));
        bytes[16..20].copy_from_slice(&width.to_be_bytes());
        bytes[20..24].copy_from_slice(&height.to_be_bytes());
        let crc = crc32(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    #[test]
    fn bombs_are_refused_from_the_header() {
        for (width, height) in [(50_000, 50_000), (8193, 10), (10, 8193), (8192, 8192)] {
            assert_eq!(
                make(ImageKind::Png, &claiming(width, height)),
                Err(ThumbError::TooLarge { width, height })
            );
        }
        // Within the sides and the bytes (4,000 x 4,000 x 4 = 61 MiB), but its data is not
        // there: decoded, found broken.
        assert!(matches!(
            make(ImageKind::Png, &claiming(4000, 4000)),
            Err(ThumbError::Undecodable(_))
        ));
    }

    #[test]
    fn broken_pictures_are_undecodable() {
        let good = png(&DynamicImage::ImageRgb8(noise(50, 50)));
        for bad in [
            &good[..40],
            &good[..good.len() / 2],
            b"\x89PNG\r\n\x1a\nrest",
        ] {
            assert!(
                matches!(make(ImageKind::Png, bad), Err(ThumbError::Undecodable(_))),
                "{} bytes",
                bad.len()
            );
        }
        assert!(matches!(
            make(ImageKind::Jpeg, b"\xff\xd8\xff\xe0 not really"),
            Err(ThumbError::Undecodable(_))
        ));
        assert!(matches!(
            make(ImageKind::Gif, b"GIF89a"),
            Err(ThumbError::Undecodable(_))
        ));
    }
}
