//! Password hashing with argon2id (OWASP's parameters: 19 MiB, 2 passes).
//! Hashing is slow on purpose, so it runs on the blocking pool.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Shortest and longest password accepted.
pub const MIN_LEN: usize = 8;
pub const MAX_LEN: usize = 128;

/// At most this many hashes at once: each takes 19 MiB and a core for a
/// while; a burst of logins or signups waits here instead of exhausting memory.
const CONCURRENT_HASHES: usize = 4;

fn permits() -> &'static tokio::sync::Semaphore {
    static SEMAPHORE: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SEMAPHORE.get_or_init(|| tokio::sync::Semaphore::new(CONCURRENT_HASHES))
}

fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Checks a new password's length; the message says what is wrong.
pub fn check_new(password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < MIN_LEN {
        return Err(format!("passwords need at least {MIN_LEN} characters"));
    }
    if password.len() > MAX_LEN {
        return Err(format!("passwords are at most {MAX_LEN} bytes"));
    }
    Ok(())
}

/// The PHC string of `password` with a fresh salt.
pub async fn hash(password: String) -> anyhow::Result<String> {
    let _permit = permits().acquire().await?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
            .map_err(|e| anyhow::anyhow!("salt: {e}"))?;
        hasher()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("failed to hash the password: {e}"))
    })
    .await?
}

/// Whether `password` matches `phc`. With `phc = None` (unknown user or an
/// OAuth-only account) a dummy hash is checked so timing does not tell.
pub async fn verify(password: String, phc: Option<String>) -> bool {
    let Ok(_permit) = permits().acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || {
        let phc = phc.unwrap_or_else(|| DUMMY.to_string());
        let Ok(parsed) = PasswordHash::new(&phc) else {
            return false;
        };
        let ok = hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        ok && phc != DUMMY
    })
    .await
    .unwrap_or(false)
}

/// argon2id of a random password nobody knows (same parameters as real hashes).
const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Jf3cZVnEugaFFVwdW0P4LrAWOxWxlzRjzsl1Vxx3ABo";

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_only_its_password() {
        let h = hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify("correct horse".into(), Some(h.clone())).await);
        assert!(!verify("wrong horse".into(), Some(h)).await);
        assert!(!verify("anything".into(), None).await);
        assert!(!verify("x".into(), Some("not a hash".into())).await);
    }

    #[test]
    fn short_and_huge_passwords_are_refused() {
        assert!(check_new("short").is_err());
        assert!(check_new(&"x".repeat(129)).is_err());
        assert!(check_new("long enough").is_ok());
    }
}
