//! Pictures on the pushing side: decoding a folder's JPEGs and PNGs,
//! resampling to the stream's frame size, and encoding JPEG for the
//! WebSocket transport (the codecs the gpu-node uses, without it).

use anyhow::{Context, bail};
use fast_image_resize as fr;

/// An RGB picture (3 bytes a pixel, rows top to bottom).
#[derive(Clone)]
pub struct Rgb {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

/// The largest picture a folder may hold (a 100-megapixel photo).
const MAX_PIXELS: u64 = 100_000_000;

/// Decodes a JPEG or PNG file's bytes to RGB.
pub fn decode(bytes: &[u8]) -> anyhow::Result<Rgb> {
    if bytes.starts_with(&[0xFF, 0xD8]) {
        let options = zune_core::options::DecoderOptions::default()
            .jpeg_set_out_colorspace(zune_core::colorspace::ColorSpace::RGB)
            .set_max_width(1 << 14)
            .set_max_height(1 << 14);
        let mut d = zune_jpeg::JpegDecoder::new_with_options(
            zune_core::bytestream::ZCursor::new(bytes),
            options,
        );
        let data = d.decode().map_err(|e| anyhow::anyhow!("bad JPEG: {e}"))?;
        let (w, h) = d.dimensions().context("bad JPEG: no size")?;
        check_len(w as u32, h as u32, data)
    } else if bytes.starts_with(b"\x89PNG") {
        decode_png(bytes)
    } else {
        bail!("neither JPEG nor PNG")
    }
}

fn check_len(width: u32, height: u32, data: Vec<u8>) -> anyhow::Result<Rgb> {
    if data.len() != width as usize * height as usize * 3 || width == 0 || height == 0 {
        bail!("decoded size differs from the header");
    }
    Ok(Rgb {
        width,
        height,
        data,
    })
}

fn decode_png(bytes: &[u8]) -> anyhow::Result<Rgb> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().context("bad PNG")?;
    let (w, h) = {
        let info = reader.info();
        (info.width, info.height)
    };
    if w as u64 * h as u64 > MAX_PIXELS {
        bail!("a {w}×{h} PNG is too large");
    }
    let size = reader.output_buffer_size().context("PNG too large")?;
    let mut buf = vec![0; size];
    let info = reader.next_frame(&mut buf).context("bad PNG")?;
    buf.truncate(info.buffer_size());
    // Transparent pixels over white, as a browser shows them.
    let over = |c: u8, a: u8| ((c as u16 * a as u16 + 255 * (255 - a as u16) + 127) / 255) as u8;
    let data = match info.color_type {
        png::ColorType::Rgb => buf,
        png::ColorType::Rgba => buf
            .chunks_exact(4)
            .flat_map(|p| [over(p[0], p[3]), over(p[1], p[3]), over(p[2], p[3])])
            .collect(),
        png::ColorType::Grayscale => buf.iter().flat_map(|&g| [g, g, g]).collect(),
        png::ColorType::GrayscaleAlpha => buf
            .chunks_exact(2)
            .flat_map(|p| {
                let g = over(p[0], p[1]);
                [g, g, g]
            })
            .collect(),
        png::ColorType::Indexed => bail!("bad PNG: palette not expanded"),
    };
    check_len(info.width, info.height, data)
}

/// `img` scaled to cover `width × height` and cropped to it (the centre).
pub fn fill(img: &Rgb, width: u32, height: u32) -> anyhow::Result<Rgb> {
    if img.width == width && img.height == height {
        return Ok(img.clone());
    }
    let src = fr::images::ImageRef::new(img.width, img.height, &img.data, fr::PixelType::U8x3)
        .map_err(|e| anyhow::anyhow!("resample: {e}"))?;
    let mut dst = fr::images::Image::new(width, height, fr::PixelType::U8x3);
    let options = fr::ResizeOptions::new()
        .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::CatmullRom))
        .fit_into_destination(Some((0.5, 0.5)));
    fr::Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| anyhow::anyhow!("resample: {e}"))?;
    Ok(Rgb {
        width,
        height,
        data: dst.into_vec(),
    })
}

/// Baseline JPEG at `quality` (1–100).
pub fn encode_jpeg(img: &Rgb, quality: u8) -> anyhow::Result<Vec<u8>> {
    let w = u16::try_from(img.width).context("wider than 65535")?;
    let h = u16::try_from(img.height).context("taller than 65535")?;
    let mut out = Vec::with_capacity(img.data.len() / 8);
    jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100))
        .encode(&img.data, w, h, jpeg_encoder::ColorType::Rgb)
        .context("JPEG encode")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_picture_is_filled_to_the_frame_and_survives_a_jpeg_round_trip() {
        // Left half red, right half blue, 40×20.
        let mut data = Vec::new();
        for _y in 0..20 {
            for x in 0..40 {
                data.extend_from_slice(if x < 20 { &[255, 0, 0] } else { &[0, 0, 255] });
            }
        }
        let img = Rgb {
            width: 40,
            height: 20,
            data,
        };
        let small = fill(&img, 16, 16).unwrap();
        assert_eq!((small.width, small.height, small.data.len()), (16, 16, 768));
        let jpeg = encode_jpeg(&small, 90).unwrap();
        let back = decode(&jpeg).unwrap();
        assert_eq!((back.width, back.height), (16, 16));
        // The left edge stays red, the right edge blue.
        assert!(
            back.data[0] > 200 && back.data[2] < 60,
            "{:?}",
            &back.data[..3]
        );
        let last = back.data.len() - 3;
        assert!(back.data[last + 2] > 200 && back.data[last] < 60);
        assert!(decode(b"GIF89a").is_err());
    }
}
