//! Reading an invite or device-link code from a picture of its QR code
//! (a screenshot, or a photo of another device's screen), for the join
//! form. Pictures are decoded under size limits: a file is never trusted
//! to be small.

use std::path::Path;

/// Why no code came out of a picture.
#[derive(Debug, thiserror::Error)]
pub enum QrError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Not a PNG or JPEG picture, or too big to decode.
    #[error("that file is not a PNG or JPEG picture sotto can read ({0})")]
    Picture(String),
    /// A picture without a readable QR code.
    #[error(
        "no QR code was found in that picture; use a sharper or closer picture of the code, or paste the code instead"
    )]
    NoCode,
    /// A QR code that holds something other than text.
    #[error("the QR code in that picture holds no text")]
    NotText,
}

/// The largest picture decoded, in pixels per side.
const MAX_SIDE: u32 = 8192;

/// The text of the first QR code in the PNG or JPEG picture at `path`.
///
/// # Errors
/// The file cannot be read or decoded, or holds no QR code.
pub fn read_code_from_file(path: &Path) -> Result<String, QrError> {
    let bytes = std::fs::read(path).map_err(|error| QrError::Read {
        path: path.display().to_string(),
        reason: error.to_string(),
    })?;
    read_code(&bytes)
}

/// The text of the first QR code in a PNG or JPEG picture.
///
/// # Errors
/// The bytes are not a picture sotto reads, or it holds no QR code.
pub fn read_code(bytes: &[u8]) -> Result<String, QrError> {
    let image = crate::picture::decode(bytes, MAX_SIDE)
        .map_err(|error| QrError::Picture(error.to_string()))?;
    let luma = image.to_luma8();
    let (width, height) = luma.dimensions();
    let mut prepared =
        rqrr::PreparedImage::prepare_from_greyscale(width as usize, height as usize, |x, y| {
            // The closure is only called inside the picture's bounds.
            #[allow(clippy::cast_possible_truncation)]
            luma.get_pixel(x as u32, y as u32).0[0]
        });
    for grid in prepared.detect_grids() {
        let mut text = Vec::new();
        if grid.decode_to(&mut text).is_ok() {
            return String::from_utf8(text)
                .map(|text| text.trim().to_owned())
                .map_err(|_| QrError::NotText);
        }
    }
    Err(QrError::NoCode)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A PNG of `text`'s QR code, `scale` pixels a module, with a quiet
    /// zone of four modules.
    pub(crate) fn qr_png(text: &str, scale: u32) -> Vec<u8> {
        let code = qrcode::QrCode::new(text.as_bytes()).unwrap();
        let width = u32::try_from(code.width()).unwrap();
        let colors = code.to_colors();
        let side = (width + 8) * scale;
        let picture = image::GrayImage::from_fn(side, side, |x, y| {
            let (mx, my) = (x / scale, y / scale);
            let dark = (4..width + 4).contains(&mx)
                && (4..width + 4).contains(&my)
                && colors[((my - 4) * width + (mx - 4)) as usize] == qrcode::Color::Dark;
            image::Luma([if dark { 0 } else { 255 }])
        });
        let mut png = Vec::new();
        picture
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        png
    }

    #[test]
    fn a_rendered_invite_code_reads_back_from_its_picture() {
        let code = "sotto-invite:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
        assert_eq!(read_code(&qr_png(code, 4)).unwrap(), code);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("code.png");
        std::fs::write(&path, qr_png(code, 3)).unwrap();
        assert_eq!(read_code_from_file(&path).unwrap(), code);
    }

    #[test]
    fn a_picture_without_a_code_or_no_picture_says_so() {
        let blank = image::GrayImage::from_pixel(64, 64, image::Luma([255]));
        let mut png = Vec::new();
        blank
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        assert!(matches!(read_code(&png), Err(QrError::NoCode)));
        assert!(matches!(
            read_code(b"not a picture"),
            Err(QrError::Picture(_))
        ));
        assert!(matches!(
            read_code_from_file(Path::new("/nonexistent/code.png")),
            Err(QrError::Read { .. })
        ));
    }
}
