//! The worker protocol: what a stream sends a worker (local or on a GPU node)
//! and what comes back. These messages cross the cluster, so every field has a
//! byte encoding; decoding never panics (a malformed message becomes a failed
//! job, not a crashed session).

use ractor::{BytesConvertable, RpcReplyPort};
use ractor_cluster_derive::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use crate::ids::{JobId, StreamId, WorkerId};
use crate::style::{ProcessorKind, StyleParams};

/// Name of the process group every worker joins (local and remote).
pub const WORKER_GROUP: &str = "dreamstream.workers";

/// What a worker can run, advertised to the scheduler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    pub processor: ProcessorKind,
    /// Loaded model names (e.g. `multistyle26`, `sd-turbo`).
    pub models: Vec<String>,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// Text prompts understood natively (diffusion) rather than mapped to a preset.
    pub prompts: bool,
    /// Any picture can be the style.
    pub style_images: bool,
}

/// What a stream's current style needs from a worker.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Requirement {
    pub processor: ProcessorKind,
    pub model: Option<String>,
}

impl Requirement {
    pub fn of(params: &StyleParams) -> Self {
        Self {
            processor: params.processor,
            model: match params.processor {
                ProcessorKind::Diffusion => params.diffusion.model.clone(),
                ProcessorKind::NeuralStyle => None,
            },
        }
    }

    pub fn satisfied_by(&self, caps: &Capabilities) -> bool {
        caps.processor == self.processor
            && self
                .model
                .as_ref()
                .is_none_or(|m| caps.models.iter().any(|have| have == m))
    }

    pub fn describe(&self) -> String {
        match &self.model {
            Some(m) => format!("{} ({m})", self.processor.as_str()),
            None => self.processor.as_str().to_string(),
        }
    }
}

/// A worker as the scheduler knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub id: WorkerId,
    /// The node (process) the worker runs in.
    pub node: String,
    /// Jobs it runs at once; the only buffer a worker has.
    pub capacity: u32,
    pub capabilities: Capabilities,
}

impl BytesConvertable for WorkerInfo {
    fn into_bytes(self) -> Vec<u8> {
        serde_json::to_vec(&self).unwrap_or_default()
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        // A malformed announcement becomes a worker with no capacity, which the
        // scheduler never uses.
        serde_json::from_slice(&bytes).unwrap_or_else(|_| WorkerInfo {
            id: WorkerId("invalid".into()),
            node: "invalid".into(),
            capacity: 0,
            capabilities: Capabilities {
                processor: ProcessorKind::NeuralStyle,
                models: vec![],
                device: "none".into(),
                prompts: false,
                style_images: false,
            },
        })
    }
}

/// One frame for one worker.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRequest {
    pub job_id: JobId,
    pub stream_id: StreamId,
    pub seq: u64,
    /// `Err` when the parameters did not decode on the receiving side.
    pub params: Result<StyleParams, String>,
    pub jpeg: Vec<u8>,
}

/// Timings of the three stages, µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct JobTimings {
    pub decode_us: u32,
    pub infer_us: u32,
    pub encode_us: u32,
}

impl JobTimings {
    pub fn total_us(&self) -> u32 {
        self.decode_us
            .saturating_add(self.infer_us)
            .saturating_add(self.encode_us)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum JobReply {
    Done {
        jpeg: Vec<u8>,
        width: u32,
        height: u32,
        timings: JobTimings,
        /// Something the streamer should know (e.g. a prompt mapped to a preset).
        note: Option<String>,
    },
    Failed {
        reason: String,
        /// The frame or parameters were at fault (the stream goes on).
        input_error: bool,
    },
}

/// Messages a worker handles. Local workers and GPU-node workers are the same
/// actor type behind `ActorRef<WorkerMsg>`.
// `Job` carries its StyleParams by value: moving a few hundred bytes once per
// frame is nothing next to the frame's JPEG, and boxing would allocate per frame.
#[allow(clippy::large_enum_variant)]
#[derive(RactorClusterMessage)]
pub enum WorkerMsg {
    /// Process one frame (the reply carries the result).
    #[rpc]
    Job(JobRequest, RpcReplyPort<JobReply>),
    /// What the worker is and can do.
    #[rpc]
    Info(RpcReplyPort<WorkerInfo>),
    /// Heartbeat: answers with the number of jobs in flight.
    #[rpc]
    Ping(RpcReplyPort<u32>),
    /// Finish the jobs in flight, accept no new ones.
    Drain,
}

// --- byte encodings --------------------------------------------------------

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Some(head)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|s| u64::from_le_bytes(s.try_into().expect("8")))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|s| u32::from_le_bytes(s.try_into().expect("4")))
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn rest(self) -> &'a [u8] {
        self.b
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

impl BytesConvertable for JobRequest {
    fn into_bytes(self) -> Vec<u8> {
        let params = match &self.params {
            Ok(p) => serde_json::to_vec(p).unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let mut out = Vec::with_capacity(32 + params.len() + self.jpeg.len());
        out.extend_from_slice(&self.job_id.0.to_le_bytes());
        out.extend_from_slice(&self.stream_id.0.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        put_bytes(&mut out, &params);
        out.extend_from_slice(&self.jpeg);
        out
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        let mut r = Reader { b: &bytes };
        let parsed = (|| {
            let job_id = r.u64()?;
            let stream_id = r.u64()? as i64;
            let seq = r.u64()?;
            let params = r.bytes()?;
            Some((job_id, stream_id, seq, params))
        })();
        match parsed {
            Some((job_id, stream_id, seq, params)) => JobRequest {
                job_id: JobId(job_id),
                stream_id: StreamId(stream_id),
                seq,
                params: serde_json::from_slice(params)
                    .map_err(|e| format!("style parameters do not decode: {e}")),
                jpeg: r.rest().to_vec(),
            },
            None => JobRequest {
                job_id: JobId(0),
                stream_id: StreamId(0),
                seq: 0,
                params: Err("malformed job message".into()),
                jpeg: Vec::new(),
            },
        }
    }
}

impl BytesConvertable for JobReply {
    fn into_bytes(self) -> Vec<u8> {
        match self {
            JobReply::Done {
                jpeg,
                width,
                height,
                timings,
                note,
            } => {
                let mut out = Vec::with_capacity(40 + jpeg.len());
                out.push(0);
                for v in [
                    width,
                    height,
                    timings.decode_us,
                    timings.infer_us,
                    timings.encode_us,
                ] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                put_bytes(&mut out, note.unwrap_or_default().as_bytes());
                out.extend_from_slice(&jpeg);
                out
            }
            JobReply::Failed {
                reason,
                input_error,
            } => {
                let mut out = vec![1, u8::from(input_error)];
                out.extend_from_slice(reason.as_bytes());
                out
            }
        }
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        let mut r = Reader { b: &bytes };
        let malformed = || JobReply::Failed {
            reason: "malformed reply from the worker".into(),
            input_error: false,
        };
        match r.u8() {
            Some(0) => {
                let fields = (|| {
                    let v = [r.u32()?, r.u32()?, r.u32()?, r.u32()?, r.u32()?];
                    let note = r.bytes()?;
                    Some((v, note))
                })();
                let Some((v, note)) = fields else {
                    return malformed();
                };
                let note = String::from_utf8_lossy(note).into_owned();
                JobReply::Done {
                    width: v[0],
                    height: v[1],
                    timings: JobTimings {
                        decode_us: v[2],
                        infer_us: v[3],
                        encode_us: v[4],
                    },
                    note: (!note.is_empty()).then_some(note),
                    jpeg: r.rest().to_vec(),
                }
            }
            Some(1) => match r.u8() {
                Some(flag) => JobReply::Failed {
                    input_error: flag != 0,
                    reason: String::from_utf8_lossy(r.rest()).into_owned(),
                },
                None => malformed(),
            },
            _ => malformed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::style::PresetMix;

    #[test]
    fn job_messages_round_trip_and_never_panic() {
        let req = JobRequest {
            job_id: JobId(9),
            stream_id: StreamId(4),
            seq: 77,
            params: Ok(StyleParams::preset(
                PresetMix::parse("3:0.5,12:0.5").unwrap(),
            )),
            jpeg: vec![0xFF, 0xD8, 1, 2, 3],
        };
        assert_eq!(JobRequest::from_bytes(req.clone().into_bytes()), req);
        let bad = JobRequest::from_bytes(vec![1, 2, 3]);
        assert!(bad.params.is_err());
        let mut forged = req.clone().into_bytes();
        forged[28] = b'x'; // inside the params JSON
        assert!(JobRequest::from_bytes(forged).params.is_err());

        let done = JobReply::Done {
            jpeg: vec![0xFF, 0xD8, 9],
            width: 320,
            height: 240,
            timings: JobTimings {
                decode_us: 1,
                infer_us: 2,
                encode_us: 3,
            },
            note: Some("mapped".into()),
        };
        assert_eq!(JobReply::from_bytes(done.clone().into_bytes()), done);
        let failed = JobReply::Failed {
            reason: "corrupt JPEG".into(),
            input_error: true,
        };
        assert_eq!(JobReply::from_bytes(failed.clone().into_bytes()), failed);
        assert!(matches!(
            JobReply::from_bytes(vec![0, 1]),
            JobReply::Failed {
                input_error: false,
                ..
            }
        ));
        assert_eq!(WorkerInfo::from_bytes(b"{".to_vec()).capacity, 0);
    }

    #[test]
    fn requirements_match_capabilities() {
        let caps = Capabilities {
            processor: ProcessorKind::Diffusion,
            models: vec!["sd-turbo".into()],
            device: "cuda:0".into(),
            prompts: true,
            style_images: false,
        };
        let any = Requirement {
            processor: ProcessorKind::Diffusion,
            model: None,
        };
        let turbo = Requirement {
            processor: ProcessorKind::Diffusion,
            model: Some("sd-turbo".into()),
        };
        let xl = Requirement {
            processor: ProcessorKind::Diffusion,
            model: Some("sdxl-turbo".into()),
        };
        assert!(any.satisfied_by(&caps) && turbo.satisfied_by(&caps));
        assert!(!xl.satisfied_by(&caps));
        let neural = Requirement {
            processor: ProcessorKind::NeuralStyle,
            model: None,
        };
        assert!(!neural.satisfied_by(&caps));
    }
}
