//! What we check in an SDP offer before str0m answers it: that it is SDP at
//! all, and that it carries the codecs we speak (H.264 video, optionally
//! Opus audio). A refusal says which codecs are accepted.

use str0m::change::SdpOffer;

/// The codecs DreamStream accepts, as said in refusals.
pub const ACCEPTED: &str = "H.264 video (packetization-mode 1, no B-frames) and Opus audio";

/// Why an offer is refused (each maps to a 4xx with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error("the body is not an SDP offer")]
    NotSdp,
    #[error("the offer has no video; DreamStream accepts {ACCEPTED}")]
    NoVideo,
    #[error("the offer's video is {0}; DreamStream accepts {ACCEPTED}")]
    NoH264(String),
    #[error("the offer's audio is {0}; DreamStream accepts {ACCEPTED}")]
    NoOpus(String),
}

/// What an acceptable offer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferSummary {
    pub has_audio: bool,
}

/// Codec names (`a=rtpmap:<pt> <name>/<clock>`) of each m-section, by kind.
fn sections(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(m) = line.strip_prefix("m=") {
            let kind = m.split_whitespace().next().unwrap_or("").to_string();
            out.push((kind, Vec::new()));
        } else if let Some(map) = line.strip_prefix("a=rtpmap:")
            && let Some((_, codec)) = map.split_once(' ')
            && let Some(last) = out.last_mut()
        {
            let name = codec.split('/').next().unwrap_or("").to_ascii_uppercase();
            if !last.1.contains(&name) {
                last.1.push(name);
            }
        }
    }
    out
}

/// Parses an offer and checks its codecs.
pub fn check_offer(text: &str) -> Result<(SdpOffer, OfferSummary), OfferError> {
    let offer = SdpOffer::from_sdp_string(text).map_err(|_| OfferError::NotSdp)?;
    let sections = sections(text);
    if sections.is_empty() {
        return Err(OfferError::NotSdp);
    }
    let media_codecs = |kind: &str| {
        sections
            .iter()
            .filter(|(k, _)| k == kind)
            .flat_map(|(_, c)| c.iter().cloned())
            .filter(|c| !matches!(c.as_str(), "RTX" | "RED" | "ULPFEC" | "FLEXFEC-03"))
            .collect::<Vec<_>>()
    };
    let video = media_codecs("video");
    if !sections.iter().any(|(k, _)| k == "video") {
        return Err(OfferError::NoVideo);
    }
    if !video.iter().any(|c| c == "H264") {
        let named = if video.is_empty() {
            "in no codec we know".to_string()
        } else {
            video.join(", ")
        };
        return Err(OfferError::NoH264(named));
    }
    let has_audio = sections.iter().any(|(k, _)| k == "audio");
    let audio = media_codecs("audio");
    if has_audio && !audio.iter().any(|c| c == "OPUS") {
        return Err(OfferError::NoOpus(audio.join(", ")));
    }
    Ok((offer, OfferSummary { has_audio }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(video: &str, audio: Option<&str>) -> String {
        let mut s = String::from(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
             a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n",
        );
        s.push_str(&format!(
            "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
             a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=setup:actpass\r\na=rtcp-mux\r\n\
             a=rtpmap:96 {video}/90000\r\n"
        ));
        if let Some(a) = audio {
            s.push_str(&format!(
                "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\n\
                 a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=setup:actpass\r\na=rtcp-mux\r\n\
                 a=rtpmap:111 {a}/48000/2\r\n"
            ));
        }
        s
    }

    #[test]
    fn h264_and_opus_pass() {
        let (_, summary) = check_offer(&offer("H264", Some("opus"))).unwrap();
        assert!(summary.has_audio);
        let (_, summary) = check_offer(&offer("H264", None)).unwrap();
        assert!(!summary.has_audio);
    }

    #[test]
    fn other_codecs_are_named_with_what_is_accepted() {
        let e = check_offer(&offer("AV1", Some("opus"))).unwrap_err();
        assert_eq!(e, OfferError::NoH264("AV1".into()));
        assert!(e.to_string().contains("H.264"), "{e}");
        let e = check_offer(&offer("H265", Some("opus"))).unwrap_err();
        assert!(e.to_string().contains("H265") && e.to_string().contains("Opus"));
        let e = check_offer(&offer("H264", Some("PCMU"))).unwrap_err();
        assert_eq!(e, OfferError::NoOpus("PCMU".into()));
    }

    #[test]
    fn garbage_is_not_sdp() {
        assert_eq!(check_offer("hello").unwrap_err(), OfferError::NotSdp);
        assert_eq!(check_offer("").unwrap_err(), OfferError::NotSdp);
        assert_eq!(
            check_offer("v=0\r\nm=video\u{0}\u{1}").unwrap_err(),
            OfferError::NotSdp
        );
    }
}
