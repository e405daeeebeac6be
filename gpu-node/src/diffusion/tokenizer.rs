//! CLIP's byte-level BPE tokenizer, read from a diffusers folder's
//! `tokenizer/vocab.json` + `merges.txt`.
//!
//! Written here rather than taking the `tokenizers` crate: CLIP's scheme is
//! small (lowercase, whitespace clean-up, a fixed word split, byte-to-unicode,
//! BPE with `</w>` word ends) and the crate would add minutes of compile time
//! on this project's 2-core builders. Checked against the reference token ids.

use std::collections::HashMap;
use std::path::Path;

use super::config::read_json;
use super::{DiffusionError, MAX_TOKENS, Result};

pub struct ClipTokenizer {
    vocab: HashMap<String, u32>,
    ranks: HashMap<(String, String), usize>,
    byte_chars: [char; 256],
    bos: u32,
    eos: u32,
    pad: u32,
}

/// Token ids padded to 77, and whether the prompt had to be cut.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    pub truncated: bool,
}

/// GPT-2's reversible byte -> printable char map.
fn bytes_to_unicode() -> [char; 256] {
    let mut out = ['\0'; 256];
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut n = 0u32;
    for b in 0..256u32 {
        out[b as usize] = if printable(b) {
            char::from_u32(b).unwrap_or('?')
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap_or('?')
        };
    }
    out
}

fn tok_err(path: &Path, what: impl std::fmt::Display) -> DiffusionError {
    DiffusionError::Tokenizer(format!("{}: {what}", path.display()))
}

impl ClipTokenizer {
    /// `dir` is a `tokenizer*/` folder. The pad token comes from its
    /// `tokenizer_config.json` ("!" for SD 2.x and SDXL's second tokenizer, else EOS).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let vocab_path = dir.join("vocab.json");
        let vocab: HashMap<String, u32> =
            serde_json::from_value(read_json(&vocab_path)?).map_err(|e| tok_err(&vocab_path, e))?;
        let merges_path = dir.join("merges.txt");
        let text = std::fs::read_to_string(&merges_path).map_err(|source| DiffusionError::Io {
            path: merges_path.clone(),
            source,
        })?;
        let mut ranks = HashMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
        {
            let mut it = line.split(' ');
            match (it.next(), it.next()) {
                (Some(a), Some(b)) => {
                    let r = ranks.len();
                    ranks.insert((a.to_string(), b.to_string()), r);
                }
                _ => return Err(tok_err(&merges_path, format!("bad merge line {line:?}"))),
            }
        }
        let id = |t: &str| {
            vocab
                .get(t)
                .copied()
                .ok_or_else(|| tok_err(&vocab_path, format!("no {t} token")))
        };
        let bos = id("<|startoftext|>")?;
        let eos = id("<|endoftext|>")?;
        let cfg_path = dir.join("tokenizer_config.json");
        let pad_token = if cfg_path.is_file() {
            read_json(&cfg_path)?
                .get("pad_token")
                .and_then(|v| {
                    v.as_str().map(str::to_string).or_else(|| {
                        v.get("content")
                            .and_then(|c| c.as_str())
                            .map(str::to_string)
                    })
                })
                .unwrap_or_else(|| "<|endoftext|>".to_string())
        } else {
            "<|endoftext|>".to_string()
        };
        let pad = id(&pad_token)?;
        Ok(Self {
            vocab,
            ranks,
            byte_chars: bytes_to_unicode(),
            bos,
            eos,
            pad,
        })
    }

    pub fn eos(&self) -> u32 {
        self.eos
    }

    /// CLIP's word split (its regex, by hand): special tokens, contractions,
    /// letter runs, single digits, runs of other non-space characters.
    fn words(text: &str) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        let starts = |i: usize, s: &str| {
            let n = s.chars().count();
            i + n <= chars.len() && chars[i..i + n].iter().copied().eq(s.chars())
        };
        while i < chars.len() {
            let c = chars[i];
            if c.is_whitespace() {
                i += 1;
                continue;
            }
            if let Some(s) = ["<|startoftext|>", "<|endoftext|>"]
                .into_iter()
                .find(|s| starts(i, s))
            {
                out.push(s.to_string());
                i += s.chars().count();
                continue;
            }
            if let Some(s) = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]
                .into_iter()
                .find(|s| starts(i, s))
            {
                out.push(s.to_string());
                i += s.chars().count();
                continue;
            }
            let start = i;
            if c.is_alphabetic() {
                while i < chars.len() && chars[i].is_alphabetic() {
                    i += 1;
                }
            } else if c.is_numeric() {
                i += 1;
            } else {
                while i < chars.len()
                    && !chars[i].is_whitespace()
                    && !chars[i].is_alphabetic()
                    && !chars[i].is_numeric()
                {
                    i += 1;
                }
            }
            out.push(chars[start..i].iter().collect());
        }
        out
    }

    fn bpe(&self, word: &str) -> Vec<u32> {
        if let Some(&id) = self.vocab.get(word).filter(|_| word.starts_with("<|")) {
            return vec![id];
        }
        let mut parts: Vec<String> = word
            .bytes()
            .map(|b| self.byte_chars[b as usize].to_string())
            .collect();
        if let Some(last) = parts.last_mut() {
            last.push_str("</w>");
        }
        loop {
            let best = parts
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| {
                    self.ranks
                        .get(&(w[0].clone(), w[1].clone()))
                        .map(|r| (*r, i))
                })
                .min();
            let Some((_, i)) = best else { break };
            let merged = format!("{}{}", parts[i], parts[i + 1]);
            parts[i] = merged;
            parts.remove(i + 1);
        }
        parts
            .iter()
            .map(|p| self.vocab.get(p).copied().unwrap_or(self.eos))
            .collect()
    }

    /// `<bos> tokens <eos> pad…` to exactly 77 ids; longer prompts are cut (EOS kept last).
    pub fn encode(&self, text: &str) -> Tokens {
        let clean = text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        let mut body: Vec<u32> = Self::words(&clean)
            .iter()
            .flat_map(|w| self.bpe(w))
            .collect();
        let truncated = body.len() > MAX_TOKENS - 2;
        body.truncate(MAX_TOKENS - 2);
        let mut ids = Vec::with_capacity(MAX_TOKENS);
        ids.push(self.bos);
        ids.extend(body);
        ids.push(self.eos);
        ids.resize(MAX_TOKENS, self.pad);
        Tokens { ids, truncated }
    }
}
