//! The small image that rides inline in a file message (issue 21): a
//! JPEG at most [`THUMBNAIL_SIDE`] pixels on its long side and at most
//! [`MAX_THUMBNAIL`] bytes, made from PNG and JPEG images only. Anything
//! else, or an image that does not decode within the limits, gets none:
//! a thumbnail is a nicety, never a reason to refuse a file.

use std::io::{BufRead, Seek};

use image::{DynamicImage, ImageFormat, ImageReader, RgbImage};

use super::MAX_THUMBNAIL;

/// The long side of a thumbnail, in pixels.
pub const THUMBNAIL_SIDE: u32 = 160;
/// Decoding an image for its thumbnail allocates at most this much: a
/// larger image (a panorama, a decompression bomb) gets no thumbnail.
const MAX_DECODE_ALLOC: u64 = 128 * 1024 * 1024;
/// Qualities tried in turn until the JPEG fits [`MAX_THUMBNAIL`].
const QUALITIES: [u8; 5] = [80, 65, 50, 35, 20];

/// A JPEG thumbnail of the PNG or JPEG image `source` holds (its format
/// sniffed from its first bytes), or `None`.
pub fn thumbnail(source: impl BufRead + Seek) -> Option<Vec<u8>> {
    let mut reader = ImageReader::new(source).with_guessed_format().ok()?;
    if !matches!(reader.format(), Some(ImageFormat::Png | ImageFormat::Jpeg)) {
        return None;
    }
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    let image = reader.decode().ok()?;
    // Never enlarged: a small image is its own thumbnail.
    let mut side = THUMBNAIL_SIDE.min(image.width().max(image.height()));
    if side == 0 {
        return None;
    }
    loop {
        let small = flatten(&image.thumbnail(side, side));
        for quality in QUALITIES {
            let mut out = Vec::new();
            let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
            small.write_with_encoder(encoder).ok()?;
            if out.len() <= MAX_THUMBNAIL {
                return Some(out);
            }
        }
        if side <= 16 {
            return None;
        }
        side = (side / 2).max(16);
    }
}

/// RGB on white: JPEG has no transparency, and transparent pixels would
/// otherwise show whatever colour they happen to hold (often black).
fn flatten(image: &DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.to_rgb8();
    }
    let rgba = image.to_rgba8();
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        let over = |c: u8| ((u16::from(c) * u16::from(a) + 255 * (255 - u16::from(a))) / 255) as u8;
        image::Rgb([over(r), over(g), over(b)])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32, noisy: bool) -> Vec<u8> {
        let mut state = 0x1234_5678u32;
        let image = image::RgbaImage::from_fn(width, height, |x, y| {
            if noisy {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let [a, b, c, _] = state.to_le_bytes();
                image::Rgba([a, b, c, 255])
            } else {
                image::Rgba([(x % 256) as u8, (y % 256) as u8, 128, 200])
            }
        });
        let mut out = std::io::Cursor::new(Vec::new());
        image.write_to(&mut out, ImageFormat::Png).expect("encodes");
        out.into_inner()
    }

    fn dimensions(jpeg: &[u8]) -> (u32, u32) {
        let decoded = image::load_from_memory_with_format(jpeg, ImageFormat::Jpeg).expect("jpeg");
        (decoded.width(), decoded.height())
    }

    #[test]
    fn a_png_gets_a_small_jpeg_that_keeps_its_aspect() {
        let thumb = thumbnail(std::io::Cursor::new(png(640, 320, false))).expect("thumbnail");
        assert!(thumb.len() <= MAX_THUMBNAIL);
        assert_eq!(dimensions(&thumb), (160, 80));
        // And a JPEG, from the thumbnail itself: never enlarged.
        let again = thumbnail(std::io::Cursor::new(thumb)).expect("thumbnail");
        assert_eq!(dimensions(&again), (160, 80));
    }

    #[test]
    fn noise_is_squeezed_under_the_byte_limit() {
        let thumb = thumbnail(std::io::Cursor::new(png(400, 400, true))).expect("thumbnail");
        assert!(thumb.len() <= MAX_THUMBNAIL, "{}", thumb.len());
        let (w, h) = dimensions(&thumb);
        assert!(w <= THUMBNAIL_SIDE && h <= THUMBNAIL_SIDE);
    }

    #[test]
    fn anything_else_gets_none() {
        assert!(thumbnail(std::io::Cursor::new(b"not an image at all".to_vec())).is_none());
        // A PNG signature with garbage after it.
        let mut broken = png(32, 32, false);
        broken.truncate(40);
        assert!(thumbnail(std::io::Cursor::new(broken)).is_none());
        assert!(thumbnail(std::io::Cursor::new(Vec::new())).is_none());
    }
}
