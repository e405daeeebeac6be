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

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

pub const KEY_ENV: &str = "DREAMSTREAM_AUDIENCE_KEY";

const KEY_SOURCE: crate::secrets::KeySource = crate::secrets::KeySource {
    env: KEY_ENV,
    file: "audience.key",
    min_bytes: 32,
};

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

    /// The configured key (`DREAMSTREAM_AUDIENCE_KEY`), else the one in
    /// `data_dir` (made on first use).
    pub fn load(configured: Option<&SecretString>, data_dir: &Path) -> anyhow::Result<Self> {
        let key = crate::secrets::load_key(KEY_SOURCE, configured, data_dir)?;
        Ok(Self::new(key.expose_secret()))
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
        let short = SecretString::from("abcd".to_string());
        assert!(IpKey::load(Some(&short), dir.path()).is_err(), "too short");
        let text = std::fs::read_to_string(dir.path().join(KEY_SOURCE.file)).unwrap();
        assert!(!text.contains("203.0.113.9"));
    }
}
