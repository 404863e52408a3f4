//! Content digests such as `sha256:9f86d0…`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The error returned by [`Digest::from_str`] and [`Digest::sha256`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DigestError {
    /// There is no `algorithm:` prefix.
    #[error("invalid digest {input:?}: write it as ALGORITHM:HEX, like sha256:<64 hex digits>")]
    Syntax {
        /// The text that was given.
        input: String,
    },
    /// The algorithm is not sha256 or sha512.
    #[error("unsupported digest algorithm {algorithm:?} in {input:?}: use sha256 or sha512")]
    Algorithm {
        /// The text that was given.
        input: String,
        /// The algorithm part.
        algorithm: String,
    },
    /// The hex part has the wrong length or is not lowercase hex.
    #[error("invalid {algorithm} digest {input:?}: expected {expected} lowercase hex digits")]
    Encoded {
        /// The text that was given.
        input: String,
        /// The algorithm part.
        algorithm: String,
        /// How many hex digits the algorithm needs.
        expected: usize,
    },
}

/// A content-addressed digest of a blob, manifest or index, as OCI writes it.
///
/// ```
/// use hephy_core::Digest;
/// let d: Digest = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824".parse()?;
/// assert_eq!(d.algorithm(), "sha256");
/// assert_eq!(&d.encoded()[..6], "2cf24d");
/// # Ok::<(), hephy_core::DigestError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: String,
    encoded: String,
}

impl Digest {
    /// A sha256 digest from its 64 lowercase hex digits.
    pub fn sha256(hex: impl Into<String>) -> Result<Self, DigestError> {
        let hex = hex.into();
        format!("sha256:{hex}").parse()
    }

    /// The algorithm, `sha256` or `sha512`.
    pub fn algorithm(&self) -> &str {
        &self.algorithm
    }

    /// The hex-encoded hash.
    pub fn encoded(&self) -> &str {
        &self.encoded
    }

    /// The first 12 hex digits, for humans.
    pub fn short(&self) -> &str {
        &self.encoded[..12]
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let Some((algorithm, encoded)) = input.split_once(':') else {
            return Err(DigestError::Syntax {
                input: input.to_owned(),
            });
        };
        let expected = match algorithm {
            "sha256" => 64,
            "sha512" => 128,
            _ => {
                return Err(DigestError::Algorithm {
                    input: input.to_owned(),
                    algorithm: algorithm.to_owned(),
                })
            }
        };
        if encoded.len() != expected
            || !encoded
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(DigestError::Encoded {
                input: input.to_owned(),
                algorithm: algorithm.to_owned(),
                expected,
            });
        }
        Ok(Digest {
            algorithm: algorithm.to_owned(),
            encoded: encoded.to_owned(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.encoded)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
