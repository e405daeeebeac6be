//! Bad input gets a typed error with a clear message, and nothing is decoded
//! that the header already rules out.

use dreamstream_actors::style::{PresetMix, StyleError, StyleParams};
use gpu_node::image_io::{self, ImageError, RgbImage};
use gpu_node::{ProcessError, Processor};

use crate::net;

fn params() -> StyleParams {
    StyleParams::preset(PresetMix::single(3).unwrap())
}

fn photo_jpeg() -> Vec<u8> {
    let img = RgbImage::new(
        96,
        64,
        (0..96 * 64 * 3).map(|i| ((i * 7) % 256) as u8).collect(),
    );
    image_io::encode_jpeg(&img, 85).unwrap()
}

/// A PNG that is only a signature and an IHDR chunk claiming `w × h`.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    v.extend_from_slice(&13u32.to_be_bytes());
    v.extend_from_slice(b"IHDR");
    v.extend_from_slice(&w.to_be_bytes());
    v.extend_from_slice(&h.to_be_bytes());
    v.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    v.extend_from_slice(&[0, 0, 0, 0]); // CRC (never reached)
    v
}

/// A JPEG that is only SOI and a baseline frame header claiming `w × h`.
fn jpeg_header(w: u16, h: u16) -> Vec<u8> {
    let mut v = vec![0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08];
    v.extend_from_slice(&h.to_be_bytes());
    v.extend_from_slice(&w.to_be_bytes());
    v.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
    v
}

fn expect_image_error(frame: &[u8]) -> ImageError {
    match net().process(frame, &params()) {
        Err(ProcessError::Image(e)) => e,
        other => panic!("expected an image error, got {other:?}"),
    }
}

#[test]
fn non_image_bytes() {
    let e = expect_image_error(b"GET / HTTP/1.1\r\n\r\n");
    assert!(matches!(e, ImageError::NotAnImage { .. }));
    assert!(e.to_string().contains("not a JPEG or PNG"), "{e}");
}

#[test]
fn truncated_jpeg() {
    let jpg = photo_jpeg();
    let e = expect_image_error(&jpg[..jpg.len() * 2 / 3]);
    assert!(
        matches!(e, ImageError::Corrupt { format: "JPEG", .. }),
        "{e:?}"
    );
    // Cut inside the headers too.
    let e = expect_image_error(&jpg[..40]);
    assert!(
        matches!(e, ImageError::Corrupt { format: "JPEG", .. }),
        "{e:?}"
    );
}

#[test]
fn zero_by_zero_images() {
    for frame in [png_header(0, 0), jpeg_header(0, 0)] {
        let e = expect_image_error(&frame);
        assert_eq!(
            e,
            ImageError::Empty {
                width: 0,
                height: 0
            }
        );
        assert!(e.to_string().contains("empty"), "{e}");
    }
}

#[test]
fn huge_images_are_refused_from_the_header() {
    // The frames are headers without pixel data: a decoder would have failed
    // with "corrupt"; "too large" proves the header alone decided.
    for frame in [png_header(8000, 6000), jpeg_header(10_000, 5_000)] {
        let e = expect_image_error(&frame);
        assert!(matches!(e, ImageError::TooLarge { .. }), "{e:?}");
        assert!(e.to_string().contains("limit is 40 megapixels"), "{e}");
    }
    // Just under the limit the header passes and the missing data is what fails.
    let e = expect_image_error(&png_header(8000, 4999));
    assert!(
        matches!(e, ImageError::Corrupt { format: "PNG", .. }),
        "{e:?}"
    );
}

#[test]
fn tiny_images_are_refused() {
    let e = expect_image_error(&png_header(8, 8));
    assert!(
        matches!(
            e,
            ImageError::TooSmall {
                width: 8,
                height: 8
            }
        ),
        "{e:?}"
    );
}

#[test]
fn style_index_out_of_range() {
    assert_eq!(
        PresetMix::parse("26"),
        Err(StyleError::IndexOutOfRange { index: 26 })
    );
    // A job whose parameters were forged on the wire does not deserialise.
    let json = serde_json::to_string(&params())
        .unwrap()
        .replace("[[3,1.0]]", "[[26,1.0]]");
    let err = serde_json::from_str::<StyleParams>(&json).unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
}

#[test]
fn all_zero_weights() {
    assert_eq!(PresetMix::parse("3:0,7:0"), Err(StyleError::AllZeroWeights));
    assert_eq!(
        PresetMix::from_dense(&[0.0; 26]),
        Err(StyleError::AllZeroWeights)
    );
}

#[test]
fn negative_strength() {
    let p = StyleParams {
        strength: -0.5,
        ..params()
    };
    match net().process(&photo_jpeg(), &p) {
        Err(ProcessError::Style(StyleError::Strength(s))) => assert_eq!(s, -0.5),
        other => panic!("expected a strength error, got {other:?}"),
    }
}

#[test]
fn a_good_frame_after_bad_ones_is_processed() {
    let _ = net().process(b"garbage", &params());
    let out = net().process(&photo_jpeg(), &params()).unwrap();
    let img = image_io::decode(&out.jpeg).unwrap();
    assert_eq!((img.width, img.height), (96, 64));
}
