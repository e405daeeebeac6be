//! Frames in and out: JPEG/PNG decoding with limits checked from the header
//! before any pixel is decoded, resizing, and JPEG/PNG encoding.
//!
//! Codecs: zune-jpeg decodes (pure Rust, SIMD, fuzzed, the fastest pure-Rust
//! decoder), jpeg-encoder encodes (pure Rust, AVX2). With the `turbojpeg`
//! feature libjpeg-turbo does both; it encodes ~3× faster (measured by
//! `bench/jpeg-codecs.sh`) but needs cmake and nasm to build, so it is opt-in for
//! GPU nodes where the network is fast enough for the codec to matter.

use fast_image_resize as fr;

/// Pixels above which a frame is refused from its header (40 megapixels).
pub const MAX_PIXELS: u64 = 40_000_000;
/// The smallest side the networks accept.
pub const MIN_SIDE: u32 = 16;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImageError {
    #[error("the frame is not a JPEG or PNG image ({len} bytes starting {head})")]
    NotAnImage { len: usize, head: String },
    #[error("corrupt {format} image: {reason}")]
    Corrupt {
        format: &'static str,
        reason: String,
    },
    #[error("the image is empty ({width}x{height})")]
    Empty { width: u32, height: u32 },
    #[error("the image is {width}x{height} ({} megapixels); the limit is {} megapixels", (*width as u64 * *height as u64) / 1_000_000, MAX_PIXELS / 1_000_000)]
    TooLarge { width: u32, height: u32 },
    #[error("the image is {width}x{height}; both sides need at least {MIN_SIDE} pixels")]
    TooSmall { width: u32, height: u32 },
    #[error("cannot encode the image: {0}")]
    Encode(String),
}

/// An 8-bit RGB image, rows top to bottom, pixels interleaved.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl RgbImage {
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Self {
        assert_eq!(data.len(), width as usize * height as usize * 3, "RGB size");
        Self {
            width,
            height,
            data,
        }
    }

    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
}

/// Recognises the format from the magic bytes.
pub fn sniff(bytes: &[u8]) -> Result<Format, ImageError> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Ok(Format::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Ok(Format::Png)
    } else {
        Err(ImageError::NotAnImage {
            len: bytes.len(),
            head: bytes.iter().take(8).map(|b| format!("{b:02x}")).collect(),
        })
    }
}

fn check_size(width: u32, height: u32) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::Empty { width, height });
    }
    if width as u64 * height as u64 > MAX_PIXELS {
        return Err(ImageError::TooLarge { width, height });
    }
    if width < MIN_SIDE || height < MIN_SIDE {
        return Err(ImageError::TooSmall { width, height });
    }
    Ok(())
}

/// Reads the dimensions from the header only (no decoder is involved, so a
/// hostile size is refused before any allocation).
pub fn dimensions(bytes: &[u8]) -> Result<(Format, u32, u32), ImageError> {
    let format = sniff(bytes)?;
    let (w, h) = match format {
        Format::Jpeg => jpeg_dimensions(bytes)?,
        Format::Png => {
            // The signature is followed by the IHDR chunk: length, "IHDR", width, height.
            if bytes.len() < 24 || &bytes[12..16] != b"IHDR" {
                return Err(ImageError::Corrupt {
                    format: "PNG",
                    reason: "missing IHDR header".into(),
                });
            }
            let be =
                |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
            (be(16), be(20))
        }
    };
    Ok((format, w, h))
}

/// Walks the JPEG markers up to the first start-of-frame and reads its size.
fn jpeg_dimensions(bytes: &[u8]) -> Result<(u32, u32), ImageError> {
    let corrupt = |reason: &str| ImageError::Corrupt {
        format: "JPEG",
        reason: reason.to_string(),
    };
    let mut i = 2; // after SOI
    loop {
        // Skip fill bytes before a marker.
        while i < bytes.len() && bytes[i] == 0xFF && bytes.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        if i + 4 > bytes.len() {
            return Err(corrupt("no frame header before the end of the data"));
        }
        if bytes[i] != 0xFF {
            return Err(corrupt("bad marker"));
        }
        let marker = bytes[i + 1];
        let len = u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]) as usize;
        if len < 2 {
            return Err(corrupt("bad segment length"));
        }
        let is_sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_sof {
            if i + 9 > bytes.len() {
                return Err(corrupt("truncated frame header"));
            }
            let h = u16::from_be_bytes([bytes[i + 5], bytes[i + 6]]) as u32;
            let w = u16::from_be_bytes([bytes[i + 7], bytes[i + 8]]) as u32;
            return Ok((w, h));
        }
        if marker == 0xDA || marker == 0xD9 {
            return Err(corrupt("no frame header before the image data"));
        }
        i += 2 + len;
    }
}

/// Checks a frame's format and size from its header alone (cheap enough to run
/// on every incoming frame before it is queued).
pub fn check_header(bytes: &[u8]) -> Result<(Format, u32, u32), ImageError> {
    let (format, width, height) = dimensions(bytes)?;
    check_size(width, height)?;
    Ok((format, width, height))
}

/// Decodes a JPEG or PNG into RGB after checking its header against the limits.
pub fn decode(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    let (format, width, height) = check_header(bytes)?;
    let data = match format {
        Format::Jpeg => decode_jpeg(bytes)?,
        Format::Png => decode_png(bytes)?,
    };
    if data.len() != width as usize * height as usize * 3 {
        return Err(ImageError::Corrupt {
            format: if format == Format::Jpeg {
                "JPEG"
            } else {
                "PNG"
            },
            reason: "decoded size differs from the header".into(),
        });
    }
    Ok(RgbImage::new(width, height, data))
}

#[cfg(not(feature = "turbojpeg"))]
fn decode_jpeg(bytes: &[u8]) -> Result<Vec<u8>, ImageError> {
    let options = zune_core::options::DecoderOptions::default()
        .jpeg_set_out_colorspace(zune_core::colorspace::ColorSpace::RGB)
        .set_strict_mode(true);
    let mut d = zune_jpeg::JpegDecoder::new_with_options(
        zune_core::bytestream::ZCursor::new(bytes),
        options,
    );
    d.decode().map_err(|e| ImageError::Corrupt {
        format: "JPEG",
        reason: e.to_string(),
    })
}

#[cfg(feature = "turbojpeg")]
fn decode_jpeg(bytes: &[u8]) -> Result<Vec<u8>, ImageError> {
    let img = turbojpeg::decompress(bytes, turbojpeg::PixelFormat::RGB).map_err(|e| {
        ImageError::Corrupt {
            format: "JPEG",
            reason: e.to_string(),
        }
    })?;
    let mut out = Vec::with_capacity(img.width * img.height * 3);
    for row in img.pixels.chunks(img.pitch) {
        out.extend_from_slice(&row[..img.width * 3]);
    }
    Ok(out)
}

fn decode_png(bytes: &[u8]) -> Result<Vec<u8>, ImageError> {
    let corrupt = |e: png::DecodingError| ImageError::Corrupt {
        format: "PNG",
        reason: e.to_string(),
    };
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(corrupt)?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| ImageError::Corrupt {
            format: "PNG",
            reason: "image too large for memory".into(),
        })?;
    let mut buf = vec![0; size];
    let info = reader.next_frame(&mut buf).map_err(corrupt)?;
    buf.truncate(info.buffer_size());
    // Transparent pixels are composited on white, like a browser shows them.
    let over_white =
        |c: u8, a: u8| ((c as u16 * a as u16 + 255 * (255 - a as u16) + 127) / 255) as u8;
    Ok(match info.color_type {
        png::ColorType::Rgb => buf,
        png::ColorType::Rgba => buf
            .chunks_exact(4)
            .flat_map(|p| {
                [
                    over_white(p[0], p[3]),
                    over_white(p[1], p[3]),
                    over_white(p[2], p[3]),
                ]
            })
            .collect(),
        png::ColorType::Grayscale => buf.iter().flat_map(|&g| [g, g, g]).collect(),
        png::ColorType::GrayscaleAlpha => buf
            .chunks_exact(2)
            .flat_map(|p| {
                let g = over_white(p[0], p[1]);
                [g, g, g]
            })
            .collect(),
        png::ColorType::Indexed => {
            return Err(ImageError::Corrupt {
                format: "PNG",
                reason: "palette was not expanded".into(),
            });
        }
    })
}

/// Encodes RGB as baseline JPEG (4:2:0) at `quality` (1–100).
#[cfg(not(feature = "turbojpeg"))]
pub fn encode_jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::with_capacity(img.data.len() / 8);
    let (w, h) = (
        u16::try_from(img.width).map_err(|_| ImageError::Encode("wider than 65535".into()))?,
        u16::try_from(img.height).map_err(|_| ImageError::Encode("taller than 65535".into()))?,
    );
    jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100))
        .encode(&img.data, w, h, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| ImageError::Encode(e.to_string()))?;
    Ok(out)
}

#[cfg(feature = "turbojpeg")]
pub fn encode_jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>, ImageError> {
    let image = turbojpeg::Image {
        pixels: img.data.as_slice(),
        width: img.width as usize,
        pitch: img.width as usize * 3,
        height: img.height as usize,
        format: turbojpeg::PixelFormat::RGB,
    };
    let mut c = turbojpeg::Compressor::new().map_err(|e| ImageError::Encode(e.to_string()))?;
    c.set_quality(i32::from(quality.clamp(1, 100)))
        .and_then(|_| c.set_subsamp(turbojpeg::Subsamp::Sub2x2))
        .map_err(|e| ImageError::Encode(e.to_string()))?;
    c.compress_to_vec(image)
        .map_err(|e| ImageError::Encode(e.to_string()))
}

/// Encodes RGB as PNG (lossless).
pub fn encode_png(img: &RgbImage) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, img.width, img.height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc
            .write_header()
            .map_err(|e| ImageError::Encode(e.to_string()))?;
        w.write_image_data(&img.data)
            .map_err(|e| ImageError::Encode(e.to_string()))?;
    }
    Ok(out)
}

/// The size that fits `(w, h)` into `max_side` on the longer side (never larger).
pub fn fit(width: u32, height: u32, max_side: u32) -> (u32, u32) {
    let long = width.max(height);
    if long <= max_side {
        return (width, height);
    }
    let scale = max_side as f64 / long as f64;
    let w = ((width as f64 * scale).round() as u32).max(1);
    let h = ((height as f64 * scale).round() as u32).max(1);
    (w, h)
}

/// Resamples to exactly `width × height` (Catmull-Rom: sharp and fast; Lanczos
/// for one-off work such as style pictures).
pub fn resize(img: &RgbImage, width: u32, height: u32, quality: ResizeQuality) -> RgbImage {
    if img.width == width && img.height == height {
        return img.clone();
    }
    let src = fr::images::ImageRef::new(img.width, img.height, &img.data, fr::PixelType::U8x3)
        .expect("buffer size checked by RgbImage::new");
    let mut dst = fr::images::Image::new(width, height, fr::PixelType::U8x3);
    let filter = match quality {
        ResizeQuality::Fast => fr::FilterType::CatmullRom,
        ResizeQuality::Best => fr::FilterType::Lanczos3,
    };
    let options = fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(filter));
    fr::Resizer::new()
        .resize(&src, &mut dst, &options)
        .expect("same pixel type on both sides");
    RgbImage::new(width, height, dst.into_vec())
}

/// The centred square crop (style pictures).
pub fn center_square(img: &RgbImage) -> RgbImage {
    let side = img.width.min(img.height);
    let (x0, y0) = ((img.width - side) / 2, (img.height - side) / 2);
    let mut data = Vec::with_capacity(side as usize * side as usize * 3);
    for y in y0..y0 + side {
        let start = (y as usize * img.width as usize + x0 as usize) * 3;
        data.extend_from_slice(&img.data[start..start + side as usize * 3]);
    }
    RgbImage::new(side, side, data)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeQuality {
    Fast,
    Best,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        let data = (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| [(x * 255 / w) as u8, (y * 255 / h) as u8, 128]))
            .collect();
        RgbImage::new(w, h, data)
    }

    #[test]
    fn jpeg_and_png_round_trip() {
        let img = gradient(64, 48);
        let jpg = encode_jpeg(&img, 90).unwrap();
        assert_eq!(dimensions(&jpg).unwrap(), (Format::Jpeg, 64, 48));
        let back = decode(&jpg).unwrap();
        let err = back
            .data
            .iter()
            .zip(&img.data)
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap();
        assert!(err < 16, "JPEG error {err}");
        let png = encode_png(&img).unwrap();
        assert_eq!(decode(&png).unwrap(), img);
    }

    #[test]
    fn bad_bytes_are_typed_errors() {
        assert!(matches!(
            decode(b"hello world"),
            Err(ImageError::NotAnImage { .. })
        ));
        let jpg = encode_jpeg(&gradient(64, 48), 90).unwrap();
        assert!(matches!(
            decode(&jpg[..jpg.len() / 2]),
            Err(ImageError::Corrupt { format: "JPEG", .. })
        ));
        let png = encode_png(&gradient(64, 48)).unwrap();
        assert!(matches!(
            decode(&png[..png.len() - 20]),
            Err(ImageError::Corrupt { format: "PNG", .. })
        ));
    }

    #[test]
    fn fit_keeps_aspect() {
        assert_eq!(fit(640, 480, 512), (512, 384));
        assert_eq!(fit(300, 200, 512), (300, 200));
        assert_eq!(fit(100, 4000, 512), (13, 512));
    }
}
