//! The accounts store with keys made by the real `ssh-keygen`.

use std::path::Path;

use crate::*;

/// Makes a key pair with `ssh-keygen` and returns the path of the private key and the public line.
pub(crate) async fn keygen(dir: &Path, name: &str, kind: &str) -> Result<(PathBuf, String)> {
    let key = dir.join(name);
    let mut args = vec!["-q", "-t", kind, "-N", "", "-C"];
    let comment = format!("{name}@test");
    args.push(&comment);
    if kind == "rsa" {
        args.extend(["-b", "2048"]);
    }
    let key_arg = key.to_string_lossy().into_owned();
    args.extend(["-f", &key_arg]);
    let out = tokio::process::Command::new("ssh-keygen")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .await?;
    if !out.status.success() {
        return Err(format!(
            "ssh-keygen {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let public = std::fs::read_to_string(key.with_extension("pub"))?;
    Ok((key, public.trim().to_owned()))
}

/// The fingerprint `ssh-keygen -l` prints for a key file (`SHA256:...`).
pub(crate) async fn ssh_keygen_fingerprint(file: &Path) -> Result<String> {
    let out = tokio::process::Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    let fingerprint = text
        .split_whitespace()
        .nth(1)
        .filter(|f| f.starts_with("SHA256:"))
        .ok_or_else(|| format!("ssh-keygen -l printed no fingerprint: {text}"))?;
    Ok(fingerprint.to_owned())
}

#[tokio::test]
async fn keys_of_every_common_type_match_ssh_keygen_fingerprints() -> Result {
    let dir = tempfile::tempdir()?;
    let accounts = Accounts::open(dir.path().join("data"))?;
    accounts.add_user("alice", false)?;
    for kind in ["ed25519", "ecdsa", "rsa"] {
        let (key, line) = keygen(dir.path(), &format!("id_{kind}"), kind).await?;
        let info = accounts.add_key("alice", &line)?;
        let expected = ssh_keygen_fingerprint(&key.with_extension("pub")).await?;
        assert_eq!(info.fingerprint, expected, "{kind} fingerprint");
        assert_eq!(info.comment, format!("id_{kind}@test"));
        let public = russh::keys::PublicKey::from_openssh(&line)?;
        let user = accounts
            .authenticate_key(&public)
            .ok_or("key not accepted")?;
        assert_eq!(user.name, "alice");
    }
    assert_eq!(accounts.keys("alice").len(), 3);

    // A private key pasted by mistake is refused without echoing it.
    let (key, _) = keygen(dir.path(), "oops", "ed25519").await?;
    let private = std::fs::read_to_string(&key)?;
    let err = accounts
        .add_key("alice", &private)
        .err()
        .ok_or("a private key was accepted")?;
    let message = err.to_string();
    assert!(message.contains("private key"), "{message}");
    assert!(
        !message.contains(private.lines().nth(1).unwrap_or("-")),
        "the secret is echoed: {message}"
    );

    // Another process sees the same state (the file is complete after every change).
    let again = Accounts::open(dir.path().join("data"))?;
    assert_eq!(again.keys("alice"), accounts.keys("alice"));
    Ok(())
}
