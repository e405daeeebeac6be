//! `gpu-node sheet`: every built-in style of one picture on one image, labelled
//! with its index and name, to choose styles (and to name them).

use dreamstream_actors::style::PRESET_COUNT;

use crate::image_io::{self, ResizeQuality, RgbImage};
use crate::neural_style::NeuralStyle;
use crate::processor::ProcessError;
use dreamstream_actors::presets;

const COLUMNS: u32 = 7;
const GAP: u32 = 8;
/// Text is the 8×8 font scaled by this factor.
const SCALE: u32 = 2;
const LABEL: u32 = 8 * SCALE + 6;

pub fn render(net: &NeuralStyle, img: &RgbImage, tile: u32) -> Result<RgbImage, ProcessError> {
    let (tw, th) = image_io::fit(img.width, img.height, tile);
    let small = image_io::resize(img, tw, th, ResizeQuality::Best);
    let mut tiles = vec![("original".to_string(), small.clone())];
    for i in 0..PRESET_COUNT {
        let mut w = [0f32; PRESET_COUNT];
        w[i] = 1.0;
        tiles.push((
            format!("{i} {}", presets::NAMES[i]),
            net.stylize_preset(&small, &w)?,
        ));
    }
    let rows = (tiles.len() as u32).div_ceil(COLUMNS);
    let (cw, ch) = (tw + GAP, th + LABEL + GAP);
    let (width, height) = (COLUMNS * cw + GAP, rows * ch + GAP);
    let mut sheet = RgbImage::new(width, height, vec![24; (width * height * 3) as usize]);
    for (n, (label, t)) in tiles.iter().enumerate() {
        let (x0, y0) = (
            GAP + (n as u32 % COLUMNS) * cw,
            GAP + (n as u32 / COLUMNS) * ch,
        );
        blit(&mut sheet, t, x0, y0);
        draw_text(&mut sheet, label, x0 + 2, y0 + th + 4, [235, 235, 235]);
    }
    Ok(sheet)
}

fn blit(dst: &mut RgbImage, src: &RgbImage, x0: u32, y0: u32) {
    for y in 0..src.height {
        let s = (y * src.width * 3) as usize;
        let d = (((y0 + y) * dst.width + x0) * 3) as usize;
        dst.data[d..d + (src.width * 3) as usize]
            .copy_from_slice(&src.data[s..s + (src.width * 3) as usize]);
    }
}

/// Draws ASCII text with the public-domain 8×8 font.
pub fn draw_text(img: &mut RgbImage, text: &str, x0: u32, y0: u32, color: [u8; 3]) {
    use font8x8::UnicodeFonts;
    for (i, ch) in text.chars().enumerate() {
        let Some(glyph) = font8x8::BASIC_FONTS.get(ch) else {
            continue;
        };
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8u32 {
                if bits & (1 << col) == 0 {
                    continue;
                }
                for dy in 0..SCALE {
                    for dx in 0..SCALE {
                        let x = x0 + (i as u32 * 8 + col) * SCALE + dx;
                        let y = y0 + row as u32 * SCALE + dy;
                        if x < img.width && y < img.height {
                            let p = ((y * img.width + x) * 3) as usize;
                            img.data[p..p + 3].copy_from_slice(&color);
                        }
                    }
                }
            }
        }
    }
}
