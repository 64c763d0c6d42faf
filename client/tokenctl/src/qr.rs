//! A QR code of a device login's verification URI, drawn with Unicode half blocks so that a
//! phone can scan it off the terminal: two rows of modules per line of text.
//!
//! The code is drawn with its light modules (and the quiet zone around it) as blocks in the
//! terminal's text colour, which is right on the dark background most terminals have; phone
//! scanners also read the inverse, which a light background gives.

use qrcode::render::unicode::Dense1x2;
use qrcode::{EcLevel, QrCode};

/// The QR code of `text` as lines of text, or `None` if it is too long for a QR code.
pub(crate) fn render(text: &str) -> Option<String> {
    // The lowest error correction gives the smallest code; a screen is not a worn label.
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::L).ok()?;
    Some(code.render::<Dense1x2>().dark_color(Dense1x2::Light).light_color(Dense1x2::Dark).quiet_zone(true).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verification_uri_becomes_a_square_of_half_blocks() {
        let qr = render("https://as.example/device?user_code=WDJB-MJHT").unwrap();
        let lines: Vec<&str> = qr.lines().collect();
        let width = lines[0].chars().count();
        // Version 3 (29 modules) plus a quiet zone of 4 on each side, two module rows a line.
        assert_eq!(width, 37);
        assert_eq!(lines.len(), 37usize.div_ceil(2));
        assert!(lines.iter().all(|l| l.chars().count() == width));
        assert!(qr.chars().all(|c| matches!(c, ' ' | '\u{2580}' | '\u{2584}' | '\u{2588}' | '\n')));
        // The quiet zone is light, so drawn as full blocks.
        assert!(lines[0].chars().all(|c| c == '\u{2588}'));
    }

    #[test]
    fn text_too_long_for_a_qr_code_gives_none() {
        assert_eq!(render(&"x".repeat(5000)), None);
    }
}
