//! H.264 in and out: reading a sequence parameter set (the picture size,
//! checked before anything is decoded), the publisher's decoder thread and a
//! stream's one encoder thread.
//!
//! - [`Decoder`] (one thread per WHIP publisher): decodes every access unit
//!   (H.264 needs them all), but converts and JPEG-encodes only the newest
//!   decoded picture — when more units wait, the older pictures are skipped —
//!   and casts it to the stream actor like a WebSocket broadcaster's frame.
//! - [`StreamEncoder`] (one thread per stream with WHEP viewers): a tap on the
//!   stream's output keeps only the newest restyled frame; the thread encodes
//!   it once (Constrained Baseline, an IDR when asked and every
//!   `keyframe_interval`) and hands the access unit to the UDP loop, which
//!   writes it to every viewer.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dreamstream_actors::frame::{InputFrame, OutputFrame, unix_ms};
use dreamstream_actors::sink::{Delivery, ViewerSink};
use dreamstream_actors::stream::{StreamMsg, StreamShared};
use gpu_node::image_io::{self, RgbImage};
use openh264::OpenH264API;
use openh264::decoder::{DecodeOptions, Decoder as H264Decoder, DecoderConfig};
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, Profile, RateControlMode, UsageType,
};
use openh264::formats::{RgbSliceU8, YUVBuffer, YUVSource};

/// NAL unit types we look at.
const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;

/// The NAL units of an Annex-B buffer (start codes of 3 or 4 bytes), without
/// their start codes; empty units are skipped.
pub fn nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|&s| {
            // The next unit's start code (3 bytes, or 4 with a leading zero).
            let mut e = s - 3;
            while e > 0 && data[e - 1] == 0 {
                e -= 1;
            }
            e
        })
        .chain(std::iter::once(data.len()))
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .filter(|(s, e)| s < e)
        .map(move |(s, e)| &data[s..e])
}

/// The type of a NAL unit (its first byte's low five bits).
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1f)
}

/// Whether an access unit holds an IDR slice.
pub fn is_idr(au: &[u8]) -> bool {
    nal_units(au).any(|n| nal_type(n) == Some(NAL_IDR))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SpsError {
    #[error("the sequence parameter set is truncated")]
    Truncated,
    #[error("the sequence parameter set has an out-of-range value")]
    Invalid,
}

/// Reads bits of an RBSP (emulation-prevention bytes already removed).
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Result<u32, SpsError> {
        let byte = *self.data.get(self.pos / 8).ok_or(SpsError::Truncated)?;
        let bit = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Ok(bit as u32)
    }

    fn bits(&mut self, n: u32) -> Result<u32, SpsError> {
        let mut v = 0;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Ok(v)
    }

    /// Unsigned Exp-Golomb (at most 31 leading zeros: a value fits in u32).
    fn ue(&mut self) -> Result<u32, SpsError> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return Err(SpsError::Invalid);
            }
        }
        let rest = self.bits(zeros)?;
        Ok(((1u64 << zeros) - 1 + rest as u64).min(u32::MAX as u64) as u32)
    }

    fn se(&mut self) -> Result<i64, SpsError> {
        let k = self.ue()? as i64;
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

/// A NAL unit's payload with the emulation-prevention bytes (00 00 03) removed.
fn rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// The displayed picture size an SPS NAL unit (with its header byte) declares.
pub fn sps_dimensions(nal: &[u8]) -> Result<(u32, u32), SpsError> {
    let data = rbsp(nal.get(1..).ok_or(SpsError::Truncated)?);
    let mut r = Bits {
        data: &data,
        pos: 0,
    };
    let profile_idc = r.bits(8)?;
    r.bits(16)?; // constraint flags, level_idc
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc > 3 {
            return Err(SpsError::Invalid);
        }
        if chroma_format_idc == 3 {
            separate_colour_plane = r.bit()? == 1;
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? == 1 {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i64, 8i64);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + r.se()? + 256) % 256;
                        }
                        if next != 0 {
                            last = next;
                        }
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            let n = r.ue()?;
            if n > 255 {
                return Err(SpsError::Invalid);
            }
            for _ in 0..n {
                r.se()?;
            }
        }
        2 => {}
        _ => return Err(SpsError::Invalid),
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = r.ue()? as u64 + 1;
    let height_units = r.ue()? as u64 + 1;
    let frame_mbs_only = r.bit()? as u64;
    if frame_mbs_only == 0 {
        r.bit()?; // mb_adaptive_frame_field_flag
    }
    r.bit()?; // direct_8x8_inference_flag
    let mut width = width_mbs * 16;
    let mut height = (2 - frame_mbs_only) * height_units * 16;
    if r.bit()? == 1 {
        let (left, right, top, bottom) = (
            r.ue()? as u64,
            r.ue()? as u64,
            r.ue()? as u64,
            r.ue()? as u64,
        );
        let (sub_w, sub_h) = match (chroma_format_idc, separate_colour_plane) {
            (0, _) | (3, true) => (1, 1),
            (1, _) => (2, 2),
            (2, _) => (2, 1),
            _ => (1, 1),
        };
        let crop_x = sub_w * (left + right);
        let crop_y = sub_h * (2 - frame_mbs_only) * (top + bottom);
        width = width.checked_sub(crop_x).ok_or(SpsError::Invalid)?;
        height = height.checked_sub(crop_y).ok_or(SpsError::Invalid)?;
    }
    if width == 0 || height == 0 || width > u32::MAX as u64 || height > u32::MAX as u64 {
        return Err(SpsError::Invalid);
    }
    Ok((width as u32, height as u32))
}

/// What reaches the decoder thread from the UDP loop.
pub enum DecoderInput {
    /// One access unit (Annex B), as str0m depacketized it.
    Unit(Arc<[u8]>),
    /// Packets were lost before the next unit: wait for an IDR.
    Gap,
}

/// Why a decoder stopped taking a publisher's video.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The SPS declares more pixels than allowed (width, height).
    TooLarge(u32, u32),
    /// The SPS cannot be read.
    BadSps,
    /// The stream actor is gone.
    StreamGone,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::TooLarge(w, h) => write!(f, "the video is {w}x{h}, over the frame limit"),
            Refusal::BadSps => write!(f, "the video's sequence parameter set is unreadable"),
            Refusal::StreamGone => write!(f, "the stream ended"),
        }
    }
}

/// How a decoder talks back to the UDP loop.
pub trait DecoderEvents: Send + 'static {
    /// Ask the publisher for a keyframe (PLI).
    fn need_keyframe(&self);
    /// The video is refused; the publisher's session should end.
    fn refused(&self, why: Refusal);
}

/// A publisher's decoder thread.
pub struct Decoder;

impl Decoder {
    /// Starts the thread; it ends when `units`' sender is dropped or the
    /// video is refused.
    pub fn spawn(
        units: Receiver<DecoderInput>,
        stream: Arc<StreamShared>,
        max_pixels: u64,
        jpeg_quality: u8,
        events: impl DecoderEvents,
    ) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name(format!("h264-dec-{}", stream.username))
            .spawn(move || {
                if let Err(why) = decode_loop(units, &stream, max_pixels, jpeg_quality, &events) {
                    events.refused(why);
                }
            })
            .map(|_| ())
    }
}

fn decode_loop(
    units: Receiver<DecoderInput>,
    stream: &StreamShared,
    max_pixels: u64,
    jpeg_quality: u8,
    events: &impl DecoderEvents,
) -> Result<(), Refusal> {
    let mut decoder =
        match H264Decoder::with_api_config(OpenH264API::from_source(), DecoderConfig::new()) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot create an H.264 decoder");
                return Ok(());
            }
        };
    let mut waiting_for_idr = true;
    let mut next: Option<DecoderInput> = None;
    let mut seq = 0u64;
    loop {
        let input = match next.take() {
            Some(i) => i,
            None => match units.recv() {
                Ok(i) => i,
                Err(_) => return Ok(()),
            },
        };
        let au = match input {
            DecoderInput::Gap => {
                waiting_for_idr = true;
                events.need_keyframe();
                continue;
            }
            DecoderInput::Unit(au) => au,
        };
        // The picture size is judged from the SPS, before the decoder sees it.
        for nal in nal_units(&au) {
            if nal_type(nal) == Some(NAL_SPS) {
                let (w, h) = sps_dimensions(nal).map_err(|_| Refusal::BadSps)?;
                if w as u64 * h as u64 > max_pixels {
                    return Err(Refusal::TooLarge(w, h));
                }
            }
        }
        if waiting_for_idr {
            if !is_idr(&au) {
                continue;
            }
            waiting_for_idr = false;
        }
        let received = Instant::now();
        let decoded = decoder.decode_with_options(&au, DecodeOptions::new());
        let picture = match decoded {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "H.264 decode error; waiting for a keyframe");
                waiting_for_idr = true;
                events.need_keyframe();
                continue;
            }
        };
        // Only the newest picture is worth converting: decode the rest first.
        match units.try_recv() {
            Ok(more) => {
                next = Some(more);
                continue;
            }
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Disconnected) => return Ok(()),
        }
        let (w, h) = picture.dimensions();
        let mut rgb = vec![0u8; w * h * 3];
        picture.write_rgb8(&mut rgb);
        let image = RgbImage::new(w as u32, h as u32, rgb);
        let jpeg = match image_io::encode_jpeg(&image, jpeg_quality) {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode a decoded picture");
                continue;
            }
        };
        seq += 1;
        let sent = stream.cast(StreamMsg::Frame(InputFrame {
            seq,
            captured_ms: unix_ms(),
            received_at: tokio::time::Instant::from_std(received),
            jpeg: Bytes::from(jpeg),
        }));
        if !sent {
            return Err(Refusal::StreamGone);
        }
    }
}

/// One encoded access unit, shared by every viewer of a stream.
#[derive(Debug)]
pub struct EncodedFrame {
    pub data: Arc<[u8]>,
    pub keyframe: bool,
    /// 90 kHz RTP time.
    pub rtp_time: u64,
    /// The output frame's sequence number.
    pub seq: u64,
    pub width: u32,
    pub height: u32,
}

/// The UDP loop's handle on a stream's encoder.
#[derive(Default)]
pub struct EncoderControl {
    idr: AtomicBool,
    /// WHEP viewers of the stream; nothing is encoded without one.
    pub viewers: AtomicUsize,
    stop: AtomicBool,
    slot: Mutex<Option<Arc<OutputFrame>>>,
    wake: Condvar,
}

impl EncoderControl {
    /// The next encoded frame is an IDR (a viewer joined or lost pictures).
    pub fn request_idr(&self) {
        self.idr.store(true, Ordering::Release);
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake.notify_all();
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn offer(&self, frame: &Arc<OutputFrame>) {
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(frame.clone());
        self.wake.notify_one();
    }

    /// The newest output frame, waiting up to `timeout`.
    fn take(&self, timeout: Duration) -> Option<Arc<OutputFrame>> {
        let slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        let (mut slot, _) = self
            .wake
            .wait_timeout_while(slot, timeout, |s| s.is_none() && !self.stopped())
            .unwrap_or_else(|e| e.into_inner());
        slot.take()
    }
}

/// The stream's output, as the encoder sees it: a tap keeping the newest frame.
pub struct EncoderTap(pub Arc<EncoderControl>);

impl ViewerSink for EncoderTap {
    fn frame(&self, frame: &Arc<OutputFrame>) -> Delivery {
        if self.0.stopped() {
            return Delivery::Closed;
        }
        if self.0.viewers.load(Ordering::Relaxed) > 0 {
            self.0.offer(frame);
        }
        Delivery::Sent
    }

    fn event(&self, _json: &Arc<str>) -> Delivery {
        Delivery::Sent
    }

    fn close(&self, _reason: &str) {
        self.0.stop();
    }
}

/// Encoder settings.
#[derive(Debug, Clone, Copy)]
pub struct EncodeSettings {
    /// Periodic IDR.
    pub keyframe_interval: Duration,
    /// Bits per pixel per second at the nominal rate (bitrate = w·h·bpp·fps).
    pub bits_per_pixel: f32,
    pub nominal_fps: f32,
}

/// The target bitrate for a frame size, within [150 kbit/s, 8 Mbit/s].
pub fn bitrate_for(width: u32, height: u32, s: &EncodeSettings) -> u32 {
    let bps = width as f64 * height as f64 * s.bits_per_pixel as f64 * s.nominal_fps as f64;
    bps.clamp(150_000.0, 8_000_000.0) as u32
}

/// A stream's one H.264 encoder.
pub struct StreamEncoder;

impl StreamEncoder {
    /// Starts the encoder thread; `out` gets each encoded frame. The thread
    /// ends when `control` is stopped (the stream ended) or `out` says so,
    /// and then calls `on_exit`.
    pub fn spawn(
        name: String,
        control: Arc<EncoderControl>,
        settings: EncodeSettings,
        out: impl Fn(Arc<EncodedFrame>) -> bool + Send + 'static,
        on_exit: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name(format!("h264-enc-{name}"))
            .spawn(move || {
                encode_loop(&control, settings, out);
                control.stop();
                on_exit();
            })
            .map(|_| ())
    }
}

fn new_encoder(w: u32, h: u32, s: &EncodeSettings) -> Option<Encoder> {
    let config = EncoderConfig::new()
        .profile(Profile::Baseline)
        .usage_type(UsageType::CameraVideoRealTime)
        .rate_control_mode(RateControlMode::Bitrate)
        .bitrate(BitRate::from_bps(bitrate_for(w, h, s)))
        .max_frame_rate(FrameRate::from_hz(s.nominal_fps))
        .skip_frames(false)
        .num_threads(1);
    match Encoder::with_api_config(OpenH264API::from_source(), config) {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::error!(error = %e, "cannot create an H.264 encoder");
            None
        }
    }
}

fn encode_loop(
    control: &EncoderControl,
    settings: EncodeSettings,
    out: impl Fn(Arc<EncodedFrame>) -> bool,
) {
    let started = Instant::now();
    let mut encoder: Option<(Encoder, u32, u32)> = None;
    let mut last_idr: Option<Instant> = None;
    let mut last_rtp = 0u64;
    while !control.stopped() {
        let Some(frame) = control.take(Duration::from_millis(500)) else {
            continue;
        };
        let image = match image_io::decode(&frame.jpeg) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "an output frame does not decode");
                continue;
            }
        };
        // 4:2:0 needs even sides: drop a last odd row or column.
        let (w, h) = (image.width & !1, image.height & !1);
        if w < 16 || h < 16 {
            continue;
        }
        let rgb = if (w, h) == (image.width, image.height) {
            image.data
        } else {
            let mut cropped = Vec::with_capacity(w as usize * h as usize * 3);
            for row in image
                .data
                .chunks_exact(image.width as usize * 3)
                .take(h as usize)
            {
                cropped.extend_from_slice(&row[..w as usize * 3]);
            }
            cropped
        };
        if encoder
            .as_ref()
            .is_none_or(|(_, ew, eh)| (*ew, *eh) != (w, h))
        {
            encoder = new_encoder(w, h, &settings).map(|e| (e, w, h));
            last_idr = None;
        }
        let Some((enc, _, _)) = encoder.as_mut() else {
            return;
        };
        let yuv = YUVBuffer::from_rgb8_source(RgbSliceU8::new(&rgb, (w as usize, h as usize)));
        let periodic = last_idr.is_none_or(|t| t.elapsed() >= settings.keyframe_interval);
        if control.idr.swap(false, Ordering::AcqRel) || periodic {
            enc.force_intra_frame();
        }
        let elapsed = started.elapsed();
        let bitstream = match enc.encode_at(
            &yuv,
            openh264::Timestamp::from_millis(elapsed.as_millis() as u64),
        ) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "H.264 encode failed");
                continue;
            }
        };
        let keyframe = matches!(bitstream.frame_type(), FrameType::IDR | FrameType::I);
        let data = bitstream.to_vec();
        if data.is_empty() {
            continue;
        }
        if keyframe {
            last_idr = Some(Instant::now());
        }
        let rtp_time = (elapsed.as_micros() as u64 * 9 / 100).max(last_rtp + 1);
        last_rtp = rtp_time;
        let encoded = Arc::new(EncodedFrame {
            data: Arc::from(data),
            keyframe,
            rtp_time,
            seq: frame.seq,
            width: w,
            height: h,
        });
        if !out(encoded) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes one `w`x`h` grey picture and returns the access unit.
    fn encode_one(w: usize, h: usize) -> Vec<u8> {
        let rgb = vec![128u8; w * h * 3];
        let mut enc = Encoder::with_api_config(
            OpenH264API::from_source(),
            EncoderConfig::new().profile(Profile::Baseline),
        )
        .unwrap();
        let yuv = YUVBuffer::from_rgb8_source(RgbSliceU8::new(&rgb, (w, h)));
        enc.encode(&yuv).unwrap().to_vec()
    }

    #[test]
    fn the_sps_tells_the_size_of_what_openh264_encodes() {
        for (w, h) in [(320, 240), (640, 360), (1920, 1080), (176, 144)] {
            let au = encode_one(w, h);
            assert!(is_idr(&au));
            let sps = nal_units(&au)
                .find(|n| nal_type(n) == Some(NAL_SPS))
                .expect("an SPS");
            assert_eq!(sps_dimensions(sps), Ok((w as u32, h as u32)));
        }
    }

    #[test]
    fn a_truncated_or_garbage_sps_is_an_error_not_a_panic() {
        let au = encode_one(320, 240);
        let sps = nal_units(&au)
            .find(|n| nal_type(n) == Some(NAL_SPS))
            .unwrap()
            .to_vec();
        for cut in 0..sps.len() - 1 {
            let _ = sps_dimensions(&sps[..cut]);
        }
        assert_eq!(sps_dimensions(&[0x67]), Err(SpsError::Truncated));
        assert!(sps_dimensions(&[0x67, 0x64, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn nal_units_split_on_three_and_four_byte_start_codes() {
        let data = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4,
        ];
        let units: Vec<&[u8]> = nal_units(&data).collect();
        assert_eq!(
            units,
            vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4][..]]
        );
        assert!(is_idr(&data));
        assert_eq!(nal_units(&[1, 2, 3]).count(), 0);
    }

    #[test]
    fn bitrate_follows_the_frame_size() {
        let s = EncodeSettings {
            keyframe_interval: Duration::from_secs(2),
            bits_per_pixel: 0.1,
            nominal_fps: 15.0,
        };
        assert_eq!(bitrate_for(640, 480, &s), 460_800);
        assert_eq!(bitrate_for(16, 16, &s), 150_000);
        assert_eq!(bitrate_for(7680, 4320, &s), 8_000_000);
    }
}
