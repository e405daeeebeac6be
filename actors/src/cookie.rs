//! The cluster cookie: the shared secret a GPU node shows the control node
//! when it joins (ractor_cluster's handshake). One type for both binaries, so
//! the variable's name and the length rule cannot drift apart, and so the
//! cookie never reaches a log line (`Debug` prints `[REDACTED]`).

use secrecy::{ExposeSecret, SecretString};

/// The environment variable both binaries read the cookie from (it never sits
/// in a configuration file of the repository).
pub const COOKIE_ENV: &str = "DREAMSTREAM_CLUSTER_COOKIE";

/// The shortest cookie accepted: anything shorter is guessable.
pub const MIN_COOKIE_CHARS: usize = 16;

/// Why a cookie was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    #[error("the cluster needs a cookie in {COOKIE_ENV}")]
    Missing,
    #[error("the cluster cookie ({COOKIE_ENV}) must be at least {MIN_COOKIE_CHARS} characters")]
    TooShort,
}

/// A cookie that passed the length rule.
#[derive(Debug, Clone)]
pub struct ClusterCookie(SecretString);

impl ClusterCookie {
    /// `cookie`, if it is long enough.
    pub fn new(cookie: String) -> Result<Self, CookieError> {
        if cookie.chars().count() < MIN_COOKIE_CHARS {
            return Err(CookieError::TooShort);
        }
        Ok(Self(SecretString::from(cookie)))
    }

    /// From [`COOKIE_ENV`]; `Ok(None)` when it is unset or empty.
    pub fn from_env() -> Result<Option<Self>, CookieError> {
        match std::env::var(COOKIE_ENV) {
            Ok(v) if !v.is_empty() => Self::new(v).map(Some),
            _ => Ok(None),
        }
    }

    /// From [`COOKIE_ENV`], which must be set.
    pub fn required_from_env() -> Result<Self, CookieError> {
        Self::from_env()?.ok_or(CookieError::Missing)
    }

    /// The cookie's text, for the cluster handshake only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_cookies_are_refused_and_none_is_printed() {
        assert_eq!(
            ClusterCookie::new("fifteen-chars!!".into()).unwrap_err(),
            CookieError::TooShort
        );
        let cookie = ClusterCookie::new("sixteen-chars!!!".into()).unwrap();
        assert_eq!(cookie.expose(), "sixteen-chars!!!");
        assert!(!format!("{cookie:?}").contains("sixteen"));
    }
}
