//! The `Authorization` header of HTTP requests, parsed once for the git and API servers.

use std::fmt;

use base64::Engine as _;

/// The longest `Authorization` value [`parse_authorization`] reads, in bytes. A user name and a
/// 64-character token take about 120; the cap stops a client from making the server decode
/// megabytes of base64 per request.
pub const MAX_AUTHORIZATION_BYTES: usize = 4096;

/// What an `Authorization` header carries, as read by [`parse_authorization`].
///
/// `Debug` shows the user name but never the password or token.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credentials {
    /// `Basic base64(user:password)`: git sends the hephy user name and an API token.
    Basic {
        /// The user name (may be empty: the API ignores it).
        user: String,
        /// The password: an API token.
        password: String,
    },
    /// `Bearer TOKEN`: an API token, as the `hephy` CLI sends it.
    Bearer {
        /// The token.
        token: String,
    },
}

impl Credentials {
    /// The secret presented: the password of `Basic`, the token of `Bearer`.
    pub fn token(&self) -> &str {
        match self {
            Credentials::Basic { password, .. } => password,
            Credentials::Bearer { token } => token,
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { user, .. } => f
                .debug_struct("Basic")
                .field("user", user)
                .field("password", &"[redacted]")
                .finish(),
            Credentials::Bearer { .. } => f
                .debug_struct("Bearer")
                .field("token", &"[redacted]")
                .finish(),
        }
    }
}

/// The error returned by [`parse_authorization`]: why an `Authorization` value was refused.
/// Messages never contain the credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthHeaderError {
    /// The value is longer than [`MAX_AUTHORIZATION_BYTES`].
    #[error("the Authorization header is {len} bytes long; the limit is {limit}: send `Basic` with your user name and an API token, or `Bearer` with the token")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// [`MAX_AUTHORIZATION_BYTES`].
        limit: usize,
    },
    /// The scheme is neither `Basic` nor `Bearer`.
    #[error("the Authorization scheme {scheme:?} is not supported: use `Basic` (user name and API token) or `Bearer` (API token)")]
    UnknownScheme {
        /// The scheme sent, cut to 32 characters.
        scheme: String,
    },
    /// Nothing follows the scheme.
    #[error("the Authorization header has no credentials after {scheme}: send `{scheme} ...` with your API token")]
    Empty {
        /// `Basic` or `Bearer`.
        scheme: &'static str,
    },
    /// The credentials contain spaces or control characters.
    #[error("the {scheme} credentials contain spaces or control characters: send one token after the scheme")]
    BadCharacters {
        /// `Basic` or `Bearer`.
        scheme: &'static str,
    },
    /// The `Basic` credentials are not base64.
    #[error(
        "the Basic credentials are not base64: send base64(USER:TOKEN), as git and curl -u do"
    )]
    NotBase64,
    /// The decoded `Basic` credentials are not UTF-8.
    #[error("the Basic credentials are not UTF-8 text: use a plain user name and an API token")]
    NotUtf8,
    /// The decoded `Basic` credentials have no `:` between user and password.
    #[error("the Basic credentials have no ':' between user name and password: send USER:TOKEN")]
    NoColon,
}

/// Parses an `Authorization` header value: `Basic` (base64 of `user:password`) or `Bearer`,
/// the scheme in any case, spaces around the credentials ignored. Values longer than
/// [`MAX_AUTHORIZATION_BYTES`] are refused before anything is decoded.
///
/// Parsing only: checking the token is the caller's (and is done in constant time by
/// [`Accounts::authenticate_token`](super::Accounts::authenticate_token)).
///
/// ```
/// use hephy_git::auth::{parse_authorization, Credentials};
/// // base64("alice:t0ken")
/// let c = parse_authorization("basic YWxpY2U6dDBrZW4=")?;
/// assert_eq!(c, Credentials::Basic { user: "alice".into(), password: "t0ken".into() });
/// assert_eq!(parse_authorization("Bearer t0ken")?.token(), "t0ken");
/// assert!(parse_authorization("Digest x").is_err());
/// # Ok::<(), hephy_git::auth::AuthHeaderError>(())
/// ```
pub fn parse_authorization(value: &str) -> Result<Credentials, AuthHeaderError> {
    if value.len() > MAX_AUTHORIZATION_BYTES {
        return Err(AuthHeaderError::TooLong {
            len: value.len(),
            limit: MAX_AUTHORIZATION_BYTES,
        });
    }
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    let (scheme, rest) = match value.find([' ', '\t']) {
        Some(i) => (&value[..i], &value[i..]),
        None => (value, ""),
    };
    let rest = rest.trim_matches(|c| c == ' ' || c == '\t');
    let name = if scheme.eq_ignore_ascii_case("basic") {
        "Basic"
    } else if scheme.eq_ignore_ascii_case("bearer") {
        "Bearer"
    } else {
        return Err(AuthHeaderError::UnknownScheme {
            scheme: scheme.chars().take(32).collect(),
        });
    };
    if rest.is_empty() {
        return Err(AuthHeaderError::Empty { scheme: name });
    }
    if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(AuthHeaderError::BadCharacters { scheme: name });
    }
    if name == "Bearer" {
        return Ok(Credentials::Bearer {
            token: rest.to_owned(),
        });
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .map_err(|_| AuthHeaderError::NotBase64)?;
    let text = String::from_utf8(raw).map_err(|_| AuthHeaderError::NotUtf8)?;
    let (user, password) = text.split_once(':').ok_or(AuthHeaderError::NoColon)?;
    Ok(Credentials::Basic {
        user: user.to_owned(),
        password: password.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn b64(s: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn basic_and_bearer_in_any_case_with_spaces() -> TestResult {
        let alice = Credentials::Basic {
            user: "alice".into(),
            password: "t0k:en".into(),
        };
        let enc = b64(b"alice:t0k:en");
        for v in [
            format!("Basic {enc}"),
            format!("BASIC {enc}"),
            format!("bAsIc \t {enc}  "),
            format!("  Basic {enc}"),
        ] {
            assert_eq!(parse_authorization(&v)?, alice, "{v:?}");
        }
        for v in ["Bearer abc", "bearer abc", "BEARER\tabc ", " Bearer   abc"] {
            assert_eq!(
                parse_authorization(v)?,
                Credentials::Bearer {
                    token: "abc".into()
                },
                "{v:?}"
            );
        }
        // An empty user name is read (the API ignores it; git's side compares it).
        let anon = parse_authorization(&format!("Basic {}", b64(b":tok")))?;
        assert_eq!(anon.token(), "tok");
        Ok(())
    }

    #[test]
    fn each_refused_form() -> TestResult {
        let long = format!("Bearer {}", "a".repeat(MAX_AUTHORIZATION_BYTES));
        let cases: Vec<(String, AuthHeaderError)> = vec![
            (
                long.clone(),
                AuthHeaderError::TooLong {
                    len: long.len(),
                    limit: MAX_AUTHORIZATION_BYTES,
                },
            ),
            (
                "Digest username=x".into(),
                AuthHeaderError::UnknownScheme {
                    scheme: "Digest".into(),
                },
            ),
            (
                // No space after the scheme: one unknown word.
                format!("Basic{}", b64(b"a:b")),
                AuthHeaderError::UnknownScheme {
                    scheme: format!("Basic{}", b64(b"a:b")),
                },
            ),
            (
                "".into(),
                AuthHeaderError::UnknownScheme {
                    scheme: String::new(),
                },
            ),
            ("Basic".into(), AuthHeaderError::Empty { scheme: "Basic" }),
            (
                "Bearer   ".into(),
                AuthHeaderError::Empty { scheme: "Bearer" },
            ),
            (
                "Bearer a b".into(),
                AuthHeaderError::BadCharacters { scheme: "Bearer" },
            ),
            (
                "Bearer a\u{7f}".into(),
                AuthHeaderError::BadCharacters { scheme: "Bearer" },
            ),
            (
                format!("Basic {} x", b64(b"a:b")),
                AuthHeaderError::BadCharacters { scheme: "Basic" },
            ),
            ("Basic !!!!".into(), AuthHeaderError::NotBase64),
            ("Basic YWJj=".into(), AuthHeaderError::NotBase64),
            (
                format!("Basic {}", b64(b"\xff\xfe:tok")),
                AuthHeaderError::NotUtf8,
            ),
            (
                format!("Basic {}", b64(b"justatoken")),
                AuthHeaderError::NoColon,
            ),
        ];
        for (value, want) in cases {
            assert_eq!(parse_authorization(&value), Err(want), "{value:?}");
        }
        Ok(())
    }

    #[test]
    fn unknown_scheme_is_cut_and_messages_hold_no_secret() {
        let long_scheme = "x".repeat(100);
        match parse_authorization(&long_scheme) {
            Err(AuthHeaderError::UnknownScheme { scheme }) => assert_eq!(scheme.len(), 32),
            other => panic!("expected UnknownScheme, got {other:?}"),
        }
        let secret = "s3cr3t-token-value";
        for v in [
            format!("Bearer {secret} x"),
            format!("Basic {}", b64(secret.as_bytes())),
        ] {
            let e = parse_authorization(&v).err().map(|e| e.to_string());
            let e = e.unwrap_or_default();
            assert!(!e.is_empty() && !e.contains(secret), "{e}");
        }
    }

    #[test]
    fn debug_redacts_the_secret() -> TestResult {
        let c = parse_authorization(&format!("Basic {}", b64(b"alice:hunter2")))?;
        let shown = format!("{c:?}");
        assert!(
            shown.contains("alice") && !shown.contains("hunter2"),
            "{shown}"
        );
        let shown = format!("{:?}", parse_authorization("Bearer hunter2")?);
        assert!(!shown.contains("hunter2"), "{shown}");
        // From the http_auth fuzz target: a token that is the placeholder itself parses, and
        // Debug is the same whatever the token.
        let placeholder = parse_authorization(" Bearer \"[redacted]\"")?;
        assert_eq!(placeholder.token(), "\"[redacted]\"");
        assert_eq!(format!("{placeholder:?}"), shown);
        Ok(())
    }
}
