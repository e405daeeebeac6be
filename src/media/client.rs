//! The WebRTC peer of tests and `bench webrtc`: the WHIP/WHEP peer and the
//! H.264 encoder live in `dreamstream-push` (the push client publishes with
//! them); [`VideoSink`] decodes what a WHEP viewer receives.

pub use dreamstream_push::whip::{ClientError, Peer, PeerEvent, PeerOptions, VideoSource};

/// Decodes a viewer's access units to RGB pictures.
pub struct VideoSink {
    decoder: openh264::decoder::Decoder,
}

impl VideoSink {
    pub fn new() -> Result<Self, ClientError> {
        let decoder = openh264::decoder::Decoder::with_api_config(
            openh264::OpenH264API::from_source(),
            openh264::decoder::DecoderConfig::new(),
        )
        .map_err(|e| ClientError::Other(e.to_string()))?;
        Ok(Self { decoder })
    }

    /// The picture an access unit completes, if any (errors are None).
    pub fn decode(&mut self, au: &[u8]) -> Option<gpu_node::image_io::RgbImage> {
        use openh264::formats::YUVSource;
        let picture = self.decoder.decode(au).ok()??;
        let (w, h) = picture.dimensions();
        let mut rgb = vec![0u8; w * h * 3];
        picture.write_rgb8(&mut rgb);
        Some(gpu_node::image_io::RgbImage::new(w as u32, h as u32, rgb))
    }
}
