//! Secrets in one place: the key-file loader behind the session key and the
//! audience key, and the one comparison of secrets. The secrets themselves
//! travel as `secrecy` types (`SecretString`, `SecretSlice`), which print as
//! `[REDACTED]`; where each comes from is `Settings::load` (environment only,
//! never a file of the repository).

use std::path::Path;

use anyhow::Context;
use base64::Engine;
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use sha2::{Digest, Sha256};

/// Where one random key comes from: an environment variable (hex or base64),
/// else a file in the data directory, made with a fresh random key on first
/// use so that restarts keep it.
#[derive(Debug, Clone, Copy)]
pub struct KeySource {
    /// The variable an operator sets (named in errors).
    pub env: &'static str,
    /// The file in `data_dir` (mode 0600).
    pub file: &'static str,
    /// The shortest key accepted, in bytes; a new key has this length.
    pub min_bytes: usize,
}

/// The key `configured` (the value of `source.env`), else the one in
/// `data_dir/source.file`, else a new one written there. A configured key
/// that is not hex or base64, or too short, is an error; a file that is
/// unreadable or too short is replaced.
pub fn load_key(
    source: KeySource,
    configured: Option<&SecretString>,
    data_dir: &Path,
) -> anyhow::Result<SecretSlice<u8>> {
    let KeySource {
        env,
        file,
        min_bytes,
    } = source;
    if let Some(value) = configured {
        let bytes = decode(value.expose_secret())
            .with_context(|| format!("{env} is neither hex nor base64"))?;
        anyhow::ensure!(
            bytes.len() >= min_bytes,
            "{env} must hold at least {min_bytes} bytes (got {})",
            bytes.len()
        );
        return Ok(bytes.into());
    }
    let path = data_dir.join(file);
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Some(bytes) = decode(&text).filter(|b| b.len() >= min_bytes)
    {
        return Ok(bytes.into());
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("failed to create {}", data_dir.display()))?;
    let bytes: Vec<u8> = (0..min_bytes).map(|_| rand::random::<u8>()).collect();
    write_private(&path, &hex::encode(&bytes))
        .with_context(|| format!("failed to write {}", path.display()))?;
    Ok(bytes.into())
}

fn decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    hex::decode(text)
        .ok()
        .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())
}

/// Writes `text` to a file only its owner can read.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(text.as_bytes())
}

/// Whether `given` equals `secret`, in time that depends on neither where
/// they differ nor their lengths (both are hashed first).
pub fn same_secret(given: &[u8], secret: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(given), Sha256::digest(secret));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: KeySource = KeySource {
        env: "TEST_KEY",
        file: "test.key",
        min_bytes: 32,
    };

    #[test]
    fn a_key_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_key(SOURCE, None, dir.path()).unwrap();
        let again = load_key(SOURCE, None, dir.path()).unwrap();
        assert_eq!(first.expose_secret().len(), 32);
        assert_eq!(first.expose_secret(), again.expose_secret());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("test.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_configured_key_wins_and_must_be_long_enough() {
        let dir = tempfile::tempdir().unwrap();
        let hex_key = SecretString::from("ab".repeat(32));
        let key = load_key(SOURCE, Some(&hex_key), dir.path()).unwrap();
        assert_eq!(key.expose_secret(), &[0xab; 32][..]);
        let short = SecretString::from("abcd".to_string());
        let e = load_key(SOURCE, Some(&short), dir.path()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "TEST_KEY must hold at least 32 bytes (got 2)"
        );
        let garbage = SecretString::from("not a key!".to_string());
        let e = load_key(SOURCE, Some(&garbage), dir.path()).unwrap_err();
        assert_eq!(e.to_string(), "TEST_KEY is neither hex nor base64");
    }

    #[test]
    fn secrets_compare_by_content() {
        assert!(same_secret(b"token-123", b"token-123"));
        assert!(!same_secret(b"token-123", b"token-124"));
        assert!(!same_secret(b"token", b"token-123"));
    }
}
