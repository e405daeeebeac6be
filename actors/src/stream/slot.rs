//! The one-slot mailbox: holds at most one unprocessed input frame; a new frame
//! replaces the old one.

use crate::frame::InputFrame;

#[derive(Debug, Default)]
pub struct FrameSlot {
    frame: Option<InputFrame>,
}

impl FrameSlot {
    /// Stores the freshest frame; returns the one it replaced (a dropped frame).
    pub fn put(&mut self, frame: InputFrame) -> Option<InputFrame> {
        self.frame.replace(frame)
    }

    /// Takes the frame for dispatch.
    pub fn take(&mut self) -> Option<InputFrame> {
        self.frame.take()
    }

    /// The waiting frame, left in place.
    pub fn peek(&self) -> Option<&InputFrame> {
        self.frame.as_ref()
    }

    pub fn is_empty(&self) -> bool {
        self.frame.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio::time::Instant;

    fn frame(seq: u64) -> InputFrame {
        InputFrame {
            seq,
            captured_ms: seq,
            received_at: Instant::now(),
            jpeg: Bytes::new(),
        }
    }

    #[test]
    fn newest_frame_wins() {
        let mut slot = FrameSlot::default();
        assert!(slot.put(frame(1)).is_none());
        assert_eq!(slot.put(frame(2)).map(|f| f.seq), Some(1));
        assert_eq!(slot.take().map(|f| f.seq), Some(2));
        assert!(slot.is_empty());
        assert!(slot.take().is_none());
    }
}
