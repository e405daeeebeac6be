//! Colour preservation and strength blending of a stylized frame with its original.

use crate::image_io::RgbImage;

/// Keeps the stylized brightness (luma) and takes the colour (chroma) from the
/// original, in JFIF YCbCr.
pub fn preserve_color(stylized: &mut RgbImage, original: &RgbImage) {
    assert_eq!(
        (stylized.width, stylized.height),
        (original.width, original.height),
        "same size"
    );
    for (s, o) in stylized
        .data
        .chunks_exact_mut(3)
        .zip(original.data.chunks_exact(3))
    {
        let (r, g, b) = (s[0] as f32, s[1] as f32, s[2] as f32);
        let y = 0.299 * r + 0.587 * g + 0.114 * b;
        let (or, og, ob) = (o[0] as f32, o[1] as f32, o[2] as f32);
        let cb = -0.168_736 * or - 0.331_264 * og + 0.5 * ob;
        let cr = 0.5 * or - 0.418_688 * og - 0.081_312 * ob;
        s[0] = to_u8(y + 1.402 * cr);
        s[1] = to_u8(y - 0.344_136 * cb - 0.714_136 * cr);
        s[2] = to_u8(y + 1.772 * cb);
    }
}

/// `strength * stylized + (1 - strength) * original`.
pub fn blend(stylized: &mut RgbImage, original: &RgbImage, strength: f32) {
    if strength >= 1.0 {
        return;
    }
    let s = strength.clamp(0.0, 1.0);
    for (a, &b) in stylized.data.iter_mut().zip(&original.data) {
        *a = to_u8(s * *a as f32 + (1.0 - s) * b as f32);
    }
}

fn to_u8(v: f32) -> u8 {
    (v + 0.5).clamp(0.0, 255.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grey_stylized_takes_the_original_colour() {
        let original = RgbImage::new(1, 1, vec![200, 40, 40]);
        let mut stylized = RgbImage::new(1, 1, vec![90, 90, 90]);
        preserve_color(&mut stylized, &original);
        let [r, g, b] = stylized.pixel(0, 0);
        assert!(r > g && r > b, "reddish: {r} {g} {b}");
        // the luma of the result is the stylized luma
        let y = 0.299 * r as f32 + 0.587 * g as f32 + 0.114 * b as f32;
        assert!((y - 90.0).abs() < 2.0, "luma {y}");
    }

    #[test]
    fn blend_endpoints() {
        let original = RgbImage::new(1, 1, vec![0, 100, 200]);
        let mut s = RgbImage::new(1, 1, vec![200, 100, 0]);
        blend(&mut s, &original, 0.0);
        assert_eq!(s, original);
        let mut s = RgbImage::new(1, 1, vec![200, 100, 0]);
        blend(&mut s, &original, 0.5);
        assert_eq!(s.data, vec![100, 100, 100]);
    }
}
