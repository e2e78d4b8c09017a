//! Decoding pictures someone else made (a received image, a QR code's
//! picture): PNG and JPEG only, under limits on size and memory, so that
//! a hostile file costs an error, not the window.

use eframe::egui;

/// The largest side of a thumbnail, in pixels.
pub const THUMBNAIL_SIDE: u32 = 160;

/// Memory a decoder may take for one picture.
const MAX_ALLOC: u64 = 256 * 1024 * 1024;

/// Decodes a PNG or JPEG picture of at most `max_side` pixels a side.
///
/// # Errors
/// Another format, a broken file, or one over the limits.
pub(crate) fn decode(
    bytes: &[u8],
    max_side: u32,
) -> Result<image::DynamicImage, image::ImageError> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format()?;
    if !matches!(
        reader.format(),
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg)
    ) {
        return Err(image::ImageError::Unsupported(
            image::error::UnsupportedError::from_format_and_kind(
                image::error::ImageFormatHint::Unknown,
                image::error::UnsupportedErrorKind::GenericFeature("PNG or JPEG only".into()),
            ),
        ));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(max_side);
    limits.max_image_height = Some(max_side);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    reader.decode()
}

/// A thumbnail of a PNG or JPEG picture: at most [`THUMBNAIL_SIDE`]
/// pixels a side, as egui draws it.
///
/// # Errors
/// As [`decode`].
pub(crate) fn thumbnail(bytes: &[u8]) -> Result<egui::ColorImage, image::ImageError> {
    let picture = decode(bytes, 16_384)?;
    let small = if picture.width() > THUMBNAIL_SIDE || picture.height() > THUMBNAIL_SIDE {
        picture.thumbnail(THUMBNAIL_SIDE, THUMBNAIL_SIDE)
    } else {
        picture
    };
    let rgba = small.to_rgba8();
    let size = [rgba.width() as usize, rgba.height() as usize];
    Ok(egui::ColorImage::from_rgba_unmultiplied(
        size,
        rgba.as_raw(),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_big_picture_becomes_a_small_thumbnail_and_garbage_an_error() {
        let big = image::RgbImage::from_pixel(400, 200, image::Rgb([10, 200, 30]));
        let mut png = Vec::new();
        big.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let small = thumbnail(&png).unwrap();
        assert_eq!(small.size, [160, 80]);
        let mut jpeg = Vec::new();
        big.write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
        assert_eq!(thumbnail(&jpeg).unwrap().size, [160, 80]);
        assert!(thumbnail(b"GIF89a not really").is_err());
        assert!(decode(&png, 100).is_err(), "over the side limit");
    }
}
