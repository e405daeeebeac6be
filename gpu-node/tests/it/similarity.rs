//! The similar-frame filter: near-identical frames of a stream reuse the last
//! output (at most max_skip in a row); other streams and changed frames run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use dreamstream_actors::style::{PresetMix, StyleParams};
use gpu_node::image_io::{self, RgbImage};
use gpu_node::processor::{Capabilities, ProcessError, ProcessedFrame, Processor};
use gpu_node::similarity::SimilarityFilter;

/// Counts calls; returns the input.
struct Counting(AtomicU32);

impl Processor for Counting {
    fn capabilities(&self) -> Capabilities {
        gpu_node::passthrough::Passthrough.capabilities()
    }
    fn warm_up(&self) -> Result<(), ProcessError> {
        Ok(())
    }
    fn process(&self, frame: &[u8], params: &StyleParams) -> Result<ProcessedFrame, ProcessError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        gpu_node::passthrough::Passthrough.process(frame, params)
    }
}

fn jpeg(shade: u8) -> Vec<u8> {
    let data = (0..64 * 48 * 3)
        .map(|i| shade.wrapping_add((i % 64) as u8))
        .collect();
    image_io::encode_jpeg(&RgbImage::new(64, 48, data), 90).unwrap()
}

#[test]
fn skips_similar_frames_up_to_max_skip_per_stream() {
    let inner = Arc::new(Counting(AtomicU32::new(0)));
    let f = SimilarityFilter::new(inner.clone(), 0.98, 2);
    let params = StyleParams::preset(PresetMix::single(0).unwrap());
    let calls = || inner.0.load(Ordering::SeqCst);
    f.process_for_stream("1", &jpeg(10), &params).unwrap();
    assert_eq!(calls(), 1);
    // Nearly the same frame twice: skipped; the third in a row runs (max_skip = 2).
    f.process_for_stream("1", &jpeg(11), &params).unwrap();
    f.process_for_stream("1", &jpeg(10), &params).unwrap();
    assert_eq!(calls(), 1);
    f.process_for_stream("1", &jpeg(10), &params).unwrap();
    assert_eq!(calls(), 2);
    // Another stream has its own state.
    f.process_for_stream("2", &jpeg(10), &params).unwrap();
    assert_eq!(calls(), 3);
    // A different frame runs.
    f.process_for_stream("1", &jpeg(120), &params).unwrap();
    assert_eq!(calls(), 4);
    // Changed parameters run even on the same frame.
    let other = StyleParams::preset(PresetMix::single(3).unwrap());
    f.process_for_stream("1", &jpeg(120), &other).unwrap();
    assert_eq!(calls(), 5);
    // Plain `process` (no stream) never skips.
    f.process(&jpeg(120), &other).unwrap();
    assert_eq!(calls(), 6);
}

#[test]
fn similarity_of_identical_and_opposite_thumbnails() {
    assert_eq!(SimilarityFilter::similarity(&[5, 5], &[5, 5]), 1.0);
    assert_eq!(SimilarityFilter::similarity(&[0, 0], &[255, 255]), 0.0);
    assert_eq!(SimilarityFilter::similarity(&[0], &[0, 0]), 0.0);
}

/// A stream's own setting (Daydream's `enable_similar_image_filter` and
/// friends) turns the filter on or off for that stream, over the node's default.
#[test]
fn a_stream_turns_the_filter_on_or_off_for_itself() {
    use dreamstream_actors::style::SimilarImageFilter;
    let inner = Arc::new(Counting(AtomicU32::new(0)));
    let calls = || inner.0.load(Ordering::SeqCst);
    // Node default: off.
    let f = SimilarityFilter::per_stream(inner.clone(), None);
    let plain = StyleParams::preset(PresetMix::single(0).unwrap());
    for _ in 0..3 {
        f.process_for_stream("1", &jpeg(10), &plain).unwrap();
    }
    assert_eq!(calls(), 3, "off by default: every frame runs");
    let mut on = plain.clone();
    on.similar_image_filter = Some(SimilarImageFilter {
        enabled: true,
        threshold: 0.98,
        max_skip_frames: 1,
    });
    for _ in 0..4 {
        f.process_for_stream("2", &jpeg(10), &on).unwrap();
    }
    assert_eq!(calls(), 5, "on for stream 2: run, skip, run, skip");
    // Node default on; a stream turns it off.
    let f = SimilarityFilter::per_stream(inner.clone(), Some((0.98, 10)));
    let mut off = on.clone();
    off.similar_image_filter = Some(SimilarImageFilter {
        enabled: false,
        threshold: 0.98,
        max_skip_frames: 10,
    });
    for _ in 0..3 {
        f.process_for_stream("3", &jpeg(10), &off).unwrap();
    }
    assert_eq!(calls(), 8, "off for stream 3");
    for _ in 0..3 {
        f.process_for_stream("4", &jpeg(10), &plain).unwrap();
    }
    assert_eq!(calls(), 9, "the node's default for stream 4");
}
