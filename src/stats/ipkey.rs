//! The keyed hash that stands in for a viewer's IP address: HMAC-SHA256 under
//! a secret key, cut to 64 bits. Only this hash reaches a sketch, Redis or the
//! database — never the address — and without the key nobody can test which
//! addresses are in a sketch by hashing all 2^32 IPv4 addresses.
//!
//! The key comes from `DREAMSTREAM_AUDIENCE_KEY` (hex or base64, at least 32
//! bytes; set the same one on every control node that shares a Redis, or each
//! node counts an address once for itself), else a random key kept in
//! `<data_dir>/audience.key` (like the session key), so a restart keeps
//! counting the same address as the same viewer.

use std::net::IpAddr;
use std::path::Path;

use anyhow::Context;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const KEY_ENV: &str = "DREAMSTREAM_AUDIENCE_KEY";
const KEY_FILE: &str = "audience.key";
const MIN_KEY_BYTES: usize = 32;

#[derive(Clone)]
pub struct IpKey {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for IpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IpKey(<secret>)")
    }
}

impl IpKey {
    pub fn new(key: &[u8]) -> Self {
        Self {
            mac: Hmac::new_from_slice(key).expect("HMAC takes keys of any length"),
        }
    }

    /// The configured key (`configured` is the environment's value), else the
    /// one in `data_dir` (made on first use).
    pub fn load(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<Self> {
        let decode = |s: &str| -> Option<Vec<u8>> {
            let s = s.trim();
            hex::decode(s)
                .ok()
                .or_else(|| base64::engine::general_purpose::STANDARD.decode(s).ok())
        };
        if let Some(v) = configured {
            let bytes =
                decode(v).with_context(|| format!("{KEY_ENV} is neither hex nor base64"))?;
            anyhow::ensure!(
                bytes.len() >= MIN_KEY_BYTES,
                "{KEY_ENV} must hold at least {MIN_KEY_BYTES} bytes (got {})",
                bytes.len()
            );
            return Ok(Self::new(&bytes));
        }
        let path = data_dir.join(KEY_FILE);
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Some(bytes) = decode(&text).filter(|b| b.len() >= MIN_KEY_BYTES)
        {
            return Ok(Self::new(&bytes));
        }
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("failed to create {}", data_dir.display()))?;
        let bytes: [u8; MIN_KEY_BYTES] = rand::random();
        write_private(&path, &hex::encode(bytes))
            .with_context(|| format!("failed to write {}", path.display()))?;
        Ok(Self::new(&bytes))
    }

    /// From the environment or `data_dir`.
    pub fn from_env(data_dir: &Path) -> anyhow::Result<Self> {
        let configured = std::env::var(KEY_ENV).ok().filter(|v| !v.is_empty());
        Self::load(configured.as_deref(), data_dir)
    }

    /// The 64-bit keyed hash of `ip` (an IPv4-mapped IPv6 address is the IPv4
    /// address it carries).
    pub fn hash(&self, ip: IpAddr) -> u64 {
        let mut mac = self.mac.clone();
        match ip.to_canonical() {
            IpAddr::V4(v4) => mac.update(&v4.octets()),
            IpAddr::V6(v6) => mac.update(&v6.octets()),
        }
        let out = mac.finalize().into_bytes();
        let mut first = [0u8; 8];
        first.copy_from_slice(&out[..8]);
        u64::from_le_bytes(first)
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_ip_hash_is_keyed_stable_and_canonical() {
        let dir = tempfile::tempdir().unwrap();
        let a = IpKey::load(None, dir.path()).unwrap();
        let again = IpKey::load(None, dir.path()).unwrap();
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(a.hash(ip), again.hash(ip), "the key file is reused");
        let mapped: IpAddr = "::ffff:203.0.113.9".parse().unwrap();
        assert_eq!(a.hash(ip), a.hash(mapped));
        let other = IpKey::new(&[7; 32]);
        assert_ne!(a.hash(ip), other.hash(ip), "another key, another hash");
        assert!(IpKey::load(Some("abcd"), dir.path()).is_err(), "too short");
        let text = std::fs::read_to_string(dir.path().join(KEY_FILE)).unwrap();
        assert!(!text.contains("203.0.113.9"));
    }
}
