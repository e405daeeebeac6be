//! Identifiers and the username newtype.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A stream's database id (one row per time a user goes live).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamId(pub i64);

/// A job (one frame sent to one worker), unique per control node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(pub u64);

/// A viewer connection of one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ViewerId(pub u64);

/// A worker: `node/name`, stable across reconnects of the same node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkerId(pub String);

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Names that would collide with the site's own paths or mislead viewers.
const RESERVED: &[&str] = &[
    "admin",
    "api",
    "static",
    "assets",
    "ws",
    "login",
    "logout",
    "register",
    "signup",
    "studio",
    "credits",
    "webhooks",
    "healthz",
    "readyz",
    "metrics",
    "oauth",
    "auth",
    "settings",
    "root",
    "system",
    "support",
    "help",
    "about",
    "dreamstream",
    "null",
    "undefined",
    "anonymous",
    "moderator",
    "staff",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    #[error("usernames are 3 to 24 characters, got {0}")]
    Length(usize),
    #[error("usernames use only letters a-z, digits and underscores (found {0:?})")]
    Character(char),
    #[error("the username {0:?} is reserved")]
    Reserved(String),
}

/// A username: lower-case `[a-z0-9_]{3,24}`, not reserved. It is also the
/// stream's URL: `/s/{username}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Username(String);

impl Username {
    /// Case-folds and checks a name as typed by a user.
    pub fn parse(raw: &str) -> Result<Self, UsernameError> {
        let name = raw.trim().to_ascii_lowercase();
        let n = name.chars().count();
        if !(3..=24).contains(&n) {
            return Err(UsernameError::Length(n));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
        {
            return Err(UsernameError::Character(c));
        }
        if RESERVED.contains(&name.as_str()) {
            return Err(UsernameError::Reserved(name));
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Username {
    type Error = UsernameError;
    fn try_from(s: String) -> Result<Self, UsernameError> {
        Self::parse(&s)
    }
}

impl From<Username> for String {
    fn from(u: Username) -> String {
        u.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_case_folded_and_checked() {
        assert_eq!(Username::parse(" Alice_01 ").unwrap().as_str(), "alice_01");
        assert_eq!(Username::parse("al"), Err(UsernameError::Length(2)));
        assert_eq!(
            Username::parse(&"a".repeat(25)),
            Err(UsernameError::Length(25))
        );
        assert_eq!(
            Username::parse("bob-smith"),
            Err(UsernameError::Character('-'))
        );
        assert_eq!(Username::parse("éva"), Err(UsernameError::Character('é')));
        assert_eq!(
            Username::parse("Admin"),
            Err(UsernameError::Reserved("admin".into()))
        );
    }
}
