//! `Authorization` header values, as the git and API servers read them.
#![no_main]

use hephy_git::auth::{parse_authorization, Credentials, MAX_AUTHORIZATION_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    match parse_authorization(value) {
        Ok(c) => {
            assert!(value.len() <= MAX_AUTHORIZATION_BYTES);
            // Debug does not depend on the secret: the same credentials with another secret
            // look the same. (A first version searched Debug for the secret and "found" the
            // token `"[redacted]"`, which is the placeholder itself.)
            let other = match &c {
                Credentials::Basic { user, password } => Credentials::Basic {
                    user: user.clone(),
                    password: format!("{password}x"),
                },
                Credentials::Bearer { token } => Credentials::Bearer {
                    token: format!("{token}x"),
                },
                _ => return,
            };
            assert_eq!(format!("{c:?}"), format!("{other:?}"));
            if let Credentials::Bearer { token } = &c {
                assert!(!token.is_empty() && !token.contains(char::is_whitespace));
            }
        }
        Err(e) => {
            // The message names the problem and never repeats a long header.
            let m = e.to_string();
            assert!(!m.is_empty() && m.len() < 400, "{m}");
        }
    }
});
