//! Unit tests of `auth`: the account store, tokens and keys.

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

// Two public keys made with `ssh-keygen -t ed25519` (public halves only).
const KEY_A: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAZQ83yXoY05PEq1EWIEi69BsScIqXDqO1tmYQ3y7xRX alice@laptop";
const KEY_B: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC304YiZ1MOWJR88zDGvNkIP0dahLRVXI8HBAoI1pSD6 bob@desk";

fn app(name: &str) -> AppName {
    name.parse().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn users_tokens_and_grants_survive_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let accounts = Accounts::open(dir.path())?;
    accounts.add_user("alice", false)?;
    accounts.add_user("root", true)?;
    let token = accounts.create_token("alice")?;
    assert_eq!(token.len(), 64, "a token is 32 bytes in hex: {token}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    accounts.grant(&app("web"), "alice")?;

    let text = fs::read_to_string(dir.path().join(ACCOUNTS_FILE))?;
    assert!(
        !text.contains(&token),
        "the token itself must never be stored"
    );

    let reopened = Accounts::open(dir.path())?;
    let alice = reopened
        .authenticate_token(&token)
        .ok_or("token not accepted after reopen")?;
    assert_eq!(alice.name, "alice");
    assert!(!alice.admin);
    assert!(reopened.may_push(&alice, &app("web")));
    assert!(!reopened.may_push(&alice, &app("api")));
    let root = reopened.user("root").ok_or("root missing")?;
    assert!(
        reopened.may_push(&root, &app("api")),
        "admins push anywhere"
    );
    assert_eq!(reopened.users().len(), 2);
    Ok(())
}

#[test]
fn wrong_tokens_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let accounts = Accounts::open(dir.path())?;
    accounts.add_user("alice", false)?;
    let token = accounts.create_token("alice")?;
    let mut wrong = token.clone();
    wrong.replace_range(0..1, if token.starts_with('0') { "1" } else { "0" });
    assert_eq!(accounts.authenticate_token(&wrong), None);
    assert_eq!(accounts.authenticate_token(""), None);
    assert_eq!(accounts.authenticate_token(&token[..63]), None);
    accounts.revoke_tokens("alice")?;
    assert_eq!(accounts.authenticate_token(&token), None);
    Ok(())
}

#[test]
fn keys_are_parsed_fingerprinted_and_unique() -> TestResult {
    let dir = tempfile::tempdir()?;
    let accounts = Accounts::open(dir.path())?;
    accounts.add_user("alice", false)?;
    accounts.add_user("bob", false)?;
    let info = accounts.add_key("alice", &format!("  {KEY_A}\n"))?;
    assert!(info.fingerprint.starts_with("SHA256:"), "{info:?}");
    assert_eq!(info.comment, "alice@laptop");

    let key = PublicKey::from_openssh(KEY_A)?;
    assert_eq!(
        accounts.authenticate_key(&key).map(|u| u.name),
        Some("alice".to_owned())
    );
    let other = PublicKey::from_openssh(KEY_B)?;
    assert_eq!(accounts.authenticate_key(&other), None);

    // The same key (even with another comment) cannot belong to a second user.
    let same_key = KEY_A.replace("alice@laptop", "someone-else");
    let err = accounts
        .add_key("bob", &same_key)
        .err()
        .ok_or("duplicate accepted")?;
    assert!(
        matches!(&err, AuthError::DuplicateKey { user, .. } if user == "alice"),
        "{err}"
    );
    assert!(err.to_string().contains("ssh-keygen"), "{err}");

    accounts.add_key("bob", KEY_B)?;
    assert_eq!(accounts.keys("bob").len(), 1);
    accounts.remove_key("alice", &info.fingerprint)?;
    assert!(accounts.keys("alice").is_empty());
    assert_eq!(accounts.authenticate_key(&key), None);
    let err = accounts
        .remove_key("alice", &info.fingerprint)
        .err()
        .ok_or("removing twice succeeded")?;
    assert!(matches!(err, AuthError::UnknownKey { .. }), "{err}");

    let reopened = Accounts::open(dir.path())?;
    assert_eq!(
        reopened.authenticate_key(&other).map(|u| u.name),
        Some("bob".to_owned())
    );
    Ok(())
}

#[test]
fn invalid_key_lines_are_explained() -> TestResult {
    let dir = tempfile::tempdir()?;
    let accounts = Accounts::open(dir.path())?;
    accounts.add_user("alice", false)?;
    for bad in [
        "",
        "hello world",
        "ssh-ed25519 not-base64!!",
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        &format!("{KEY_A}\n{KEY_B}"),
    ] {
        let err = accounts
            .add_key("alice", bad)
            .err()
            .ok_or_else(|| format!("{bad:?} was accepted"))?;
        assert!(
            matches!(err, AuthError::InvalidKey { .. }),
            "{bad:?}: {err}"
        );
        assert!(err.to_string().contains("ssh-keygen"), "{err}");
    }
    assert!(accounts.keys("alice").is_empty());
    let err = accounts
        .add_key("nobody", KEY_A)
        .err()
        .ok_or("unknown user accepted")?;
    assert!(matches!(err, AuthError::UnknownUser(_)), "{err}");
    Ok(())
}

#[test]
fn user_names_are_checked() -> TestResult {
    let dir = tempfile::tempdir()?;
    let accounts = Accounts::open(dir.path())?;
    for bad in ["", "Alice", "../x", "-x", "a b", &"a".repeat(65)] {
        let err = accounts
            .add_user(bad, false)
            .err()
            .ok_or_else(|| format!("{bad:?} accepted"))?;
        assert!(matches!(err, AuthError::InvalidUserName { .. }), "{err}");
    }
    accounts.add_user("ci-bot.2", false)?;
    let err = accounts
        .add_user("ci-bot.2", true)
        .err()
        .ok_or("duplicate user accepted")?;
    assert!(matches!(err, AuthError::UserExists(_)), "{err}");
    Ok(())
}

#[test]
fn removed_or_revoked_users_lose_access() -> TestResult {
    let dir = tempfile::tempdir()?;
    let accounts = Accounts::open(dir.path())?;
    let alice = accounts.add_user("alice", false)?;
    let web = app("web");
    accounts.grant(&web, "alice")?;
    assert_eq!(accounts.granted(&web), vec!["alice".to_owned()]);
    assert!(accounts.may_push(&alice, &web));
    accounts.revoke_app(&web)?;
    assert!(!accounts.may_push(&alice, &web));
    accounts.grant(&web, "alice")?;
    accounts.revoke(&web, "alice")?;
    assert!(!accounts.may_push(&alice, &web));

    accounts.set_admin("alice", true)?;
    assert!(accounts.may_push(&alice, &web), "admin now");
    accounts.remove_user("alice")?;
    assert!(
        !accounts.may_push(&alice, &web),
        "removed users push nowhere"
    );
    assert!(matches!(
        accounts.grant(&web, "alice"),
        Err(AuthError::UnknownUser(_))
    ));
    Ok(())
}

#[test]
fn a_corrupt_file_is_reported_not_replaced() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join(ACCOUNTS_FILE);
    fs::write(&path, "{ not json")?;
    let err = Accounts::open(dir.path())
        .err()
        .ok_or("corrupt file accepted")?;
    assert!(matches!(err, AuthError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("accounts.json"), "{err}");
    assert_eq!(fs::read_to_string(&path)?, "{ not json");
    Ok(())
}

#[cfg(unix)]
#[test]
fn the_file_is_private_and_no_temp_files_remain() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("data");
    let accounts = Accounts::open(&dir)?;
    accounts.add_user("alice", false)?;
    accounts.create_token("alice")?;
    let mode = fs::metadata(dir.join(ACCOUNTS_FILE))?.permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the accounts file");
    let mode = fs::metadata(&dir)?.permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o700,
        "the data directory Accounts::open created"
    );
    let names: Vec<_> = fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    assert_eq!(names, vec![std::ffi::OsString::from(ACCOUNTS_FILE)]);
    Ok(())
}

#[test]
fn a_failed_write_leaves_memory_unchanged() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let accounts = Accounts::open(&data)?;
    accounts.add_user("alice", false)?;
    fs::remove_dir_all(&data)?;
    let err = accounts
        .add_user("bob", false)
        .err()
        .ok_or("write into a removed directory succeeded")?;
    assert!(matches!(err, AuthError::Io { .. }), "{err}");
    assert_eq!(accounts.user("bob"), None);
    Ok(())
}
