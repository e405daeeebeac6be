//! A processor that returns each frame unchanged (after the same header checks).
//! For measuring the platform without a network in the way (`bench live`
//! fan-out runs) and for nodes that only relay.

use std::time::Instant;

use dreamstream_actors::style::{ProcessorKind, StyleParams};

use crate::image_io;
use crate::processor::{Capabilities, ProcessError, ProcessedFrame, Processor, StageTimings};

pub struct Passthrough;

impl Processor for Passthrough {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            processor: ProcessorKind::NeuralStyle,
            models: vec!["passthrough".into()],
            device: "cpu".into(),
            prompts: false,
            style_images: false,
        }
    }

    fn warm_up(&self) -> Result<(), ProcessError> {
        Ok(())
    }

    fn process(&self, frame: &[u8], params: &StyleParams) -> Result<ProcessedFrame, ProcessError> {
        params.validate()?;
        let t = Instant::now();
        let (_, width, height) = image_io::check_header(frame)?;
        Ok(ProcessedFrame {
            jpeg: frame.to_vec(),
            width,
            height,
            timings: StageTimings {
                decode: t.elapsed(),
                ..Default::default()
            },
            note: None,
        })
    }
}
