//! `gpu-node models pull REPO --to DIR`: fetches a model's diffusers-layout
//! files from the Hugging Face hub (or any server with the hub's URL layout,
//! `--endpoint`) with the `hf-hub` crate, into `DIR` ready for `[[gpu.models]]`.
//!
//! Only the files the family needs are fetched (fp32 `*.safetensors`, configs,
//! tokenizer files), not a repository's every variant (fp16 copies, `.bin`,
//! `.ckpt`), which for SD repos is several times the size. Downloads go to
//! hf-hub's cache under `DIR/.cache` (resumable, content-addressed) and are
//! hard-linked into place, so nothing is stored twice.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Repo, RepoType};

use super::config::{Family, check_family, check_files, required_files};
use super::{DiffusionError, Result};

/// Where and what to pull.
#[derive(Debug, Clone)]
pub struct PullRequest {
    /// `owner/name` on the hub, e.g. `stabilityai/sd-turbo`.
    pub repo: String,
    pub revision: String,
    pub family: Family,
    pub to: PathBuf,
    /// Hub URL (default `https://huggingface.co`, or `HF_ENDPOINT`).
    pub endpoint: Option<String>,
    pub token: Option<String>,
}

/// Files fetched when present, without failing when absent.
fn optional_files(family: Family) -> Vec<&'static str> {
    let mut v = vec!["tokenizer/tokenizer_config.json"];
    if family.arch() == super::config::Arch::Sdxl {
        v.push("tokenizer_2/tokenizer_config.json");
    }
    v
}

fn hub_error(what: &str, e: impl std::fmt::Display) -> DiffusionError {
    DiffusionError::Pull(format!("{what}: {e}"))
}

/// Pulls the family's files; returns the paths written (relative to `to`).
pub fn pull(req: &PullRequest) -> Result<Vec<String>> {
    let cache = req.to.join(".cache").join("huggingface");
    std::fs::create_dir_all(&cache).map_err(|source| DiffusionError::Io {
        path: cache.clone(),
        source,
    })?;
    let mut builder = ApiBuilder::new()
        .with_cache_dir(cache)
        .with_progress(false)
        .with_token(req.token.clone());
    if let Some(e) = &req.endpoint {
        builder = builder.with_endpoint(e.trim_end_matches('/').to_string());
    }
    let api = builder.build().map_err(|e| hub_error("hub client", e))?;
    let repo = api.repo(Repo::with_revision(
        req.repo.clone(),
        RepoType::Model,
        req.revision.clone(),
    ));
    let mut written = Vec::new();
    let mut failed = Vec::new();
    let wanted = required_files(req.family.arch())
        .into_iter()
        .map(|f| (f, true))
        .chain(optional_files(req.family).into_iter().map(|f| (f, false)));
    for (rel, required) in wanted {
        match repo.get(rel) {
            Ok(cached) => {
                place(&cached, &req.to.join(rel))?;
                written.push(rel.to_string());
            }
            Err(e) if required => failed.push(format!("{rel} ({e})")),
            Err(_) => {}
        }
    }
    if !failed.is_empty() {
        return Err(DiffusionError::Pull(format!(
            "{} at {}: could not fetch {}",
            req.repo,
            req.revision,
            failed.join(", ")
        )));
    }
    // The same checks a node runs at start, so a bad pull fails here, not on the node.
    check_family(&req.to, req.family)?;
    check_files(&req.to, req.family.arch())?;
    Ok(written)
}

/// Hard-links the cached blob to `dest` (copies across filesystems).
fn place(cached: &Path, dest: &Path) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DiffusionError::Io { path, source }
    };
    // hf-hub returns a symlink into its blob store; link the blob itself.
    let blob = std::fs::canonicalize(cached).map_err(io(cached))?;
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    if dest.exists() {
        std::fs::remove_file(dest).map_err(io(dest))?;
    }
    if std::fs::hard_link(&blob, dest).is_err() {
        std::fs::copy(&blob, dest).map_err(io(dest))?;
    }
    Ok(())
}
