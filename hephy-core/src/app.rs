//! App names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The error returned by [`AppName::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid app name {input:?}: {problem}; an app name is 1 to 63 lowercase letters, digits and '-', starting with a letter and not ending with '-' (like my-app)")]
pub struct AppNameError {
    input: String,
    problem: &'static str,
}

impl AppNameError {
    /// The rejected text.
    pub fn input(&self) -> &str {
        &self.input
    }
}

/// The name of an app: a DNS-1123 label that starts with a letter, so it is safe as a
/// directory name, a Kubernetes object name, a repository path and a host name.
///
/// ```
/// use hephy_core::AppName;
/// let app: AppName = "hello-world".parse()?;
/// assert_eq!(app.as_str(), "hello-world");
/// assert!("../etc".parse::<AppName>().is_err());
/// assert!("Hello".parse::<AppName>().is_err());
/// assert!("a".repeat(64).parse::<AppName>().is_err());
/// # Ok::<(), hephy_core::AppNameError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppName(String);

impl AppName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for AppName {
    type Err = AppNameError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |problem| AppNameError {
            input: input.to_owned(),
            problem,
        };
        if input.is_empty() {
            return Err(err("it is empty"));
        }
        if input.len() > 63 {
            return Err(err("it is longer than 63 characters"));
        }
        if input.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(err("it has uppercase letters"));
        }
        if !input
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(err("it has characters other than a-z, 0-9 and '-'"));
        }
        if !input.as_bytes()[0].is_ascii_lowercase() {
            return Err(err("it does not start with a letter"));
        }
        if input.ends_with('-') {
            return Err(err("it ends with '-'"));
        }
        Ok(AppName(input.to_owned()))
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for AppName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for AppName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AppName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
