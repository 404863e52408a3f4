//! Users, their API tokens and SSH keys, and which apps they may push to.
//!
//! [`Accounts`] is a small file-backed store at `<data_dir>/accounts.json`. Every change is
//! written atomically (temp file, fsync, rename, fsync of the directory), so a crash leaves either
//! the old or the new file, never half of one. Reads are served from an in-memory copy behind a
//! lock; one process is expected to own the file.
//!
//! Tokens are 32 random bytes shown once as 64 hex characters; only their SHA-256 is stored and a
//! presented token is compared against every stored hash in constant time. SSH keys are OpenSSH
//! public key lines (`ssh-ed25519 AAAA... you@host`), identified by their `SHA256:...`
//! fingerprint; one key belongs to at most one user, so a key identifies its user.
//!
//! ```
//! use hephy_git::auth::Accounts;
//! let dir = tempfile::tempdir()?;
//! let accounts = Accounts::open(dir.path())?;
//! accounts.add_user("alice", false)?;
//! let token = accounts.create_token("alice")?;
//! assert_eq!(accounts.authenticate_token(&token).map(|u| u.name), Some("alice".to_owned()));
//! let app = "web".parse()?;
//! accounts.grant(&app, "alice")?;
//! let alice = accounts.user("alice").ok_or("alice was just added")?;
//! assert!(accounts.may_push(&alice, &app));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use hephy_core::fs::{create_dir_all, write_atomic, FileMode};
use hephy_core::AppName;
use russh::keys::HashAlg;
/// An SSH public key: russh's (0.65) re-export of `ssh-key`'s, parsed with `PublicKey::from_openssh`.
pub use russh::keys::PublicKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

/// The file name of the store inside the data directory.
pub const ACCOUNTS_FILE: &str = "accounts.json";

/// The version of the file format written by this crate.
const FORMAT_VERSION: u32 = 1;

/// A user as seen by the transports: a name and whether the user may push to every app.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct User {
    /// The user name (1 to 64 of `a-z`, `0-9`, `-`, `_`, `.`, starting with a letter or digit).
    pub name: String,
    /// Admins may push to every app.
    pub admin: bool,
}

impl User {
    /// A user value for callers that serve pushes without [`Accounts`] (with accounts, get users
    /// from [`Accounts::user`] or the `authenticate_*` methods instead).
    pub fn new(name: impl Into<String>, admin: bool) -> User {
        User {
            name: name.into(),
            admin,
        }
    }
}

/// A registered SSH public key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct KeyInfo {
    /// The SHA-256 fingerprint as OpenSSH prints it (`SHA256:` and unpadded base64).
    pub fingerprint: String,
    /// The comment of the key line (often `user@host`), empty if there was none.
    pub comment: String,
}

/// The error returned by the methods of [`Accounts`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The accounts file or its directory could not be read or written.
    #[error("cannot {action} {path}: {source}; check that the data directory exists, is writable by this process and the disk is not full")]
    Io {
        /// What was being done (`read`, `write`, `create`, ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The accounts file exists but is not a valid store.
    #[error("the accounts file {path} is not valid: {source}; fix the JSON by hand or restore the file from a backup")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A user name does not follow the rules.
    #[error("invalid user name {name:?}: {problem}; a user name is 1 to 64 of a-z, 0-9, '-', '_' and '.', starting with a letter or digit (like alice or ci-bot)")]
    InvalidUserName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// [`Accounts::add_user`] was called for a name that is taken.
    #[error("user {0:?} already exists; pick another name or use the existing user")]
    UserExists(String),
    /// The named user does not exist.
    #[error("unknown user {0:?}; create it first with Accounts::add_user")]
    UnknownUser(String),
    /// The text given to [`Accounts::add_key`] is not an OpenSSH public key line.
    #[error("not an OpenSSH public key ({problem}); pass one line as found in ~/.ssh/id_ed25519.pub, like `ssh-ed25519 AAAAC3Nz... you@host` (create one with `ssh-keygen -t ed25519`)")]
    InvalidKey {
        /// What is wrong with the text.
        problem: String,
    },
    /// The key is registered already.
    #[error("the key {fingerprint} is already registered for user {user:?}; a key identifies exactly one user, so create a separate key with `ssh-keygen -t ed25519` or remove it from {user:?} first")]
    DuplicateKey {
        /// The fingerprint of the key.
        fingerprint: String,
        /// The user it belongs to.
        user: String,
    },
    /// [`Accounts::remove_key`] was asked for a key the user does not have.
    #[error("user {user:?} has no key with fingerprint {fingerprint}; list the user's keys with Accounts::keys")]
    UnknownKey {
        /// The user.
        user: String,
        /// The fingerprint that was asked for.
        fingerprint: String,
    },
    /// The operating system's random number generator failed.
    #[error("cannot generate a token: the system random number generator failed ({0}); check that /dev/urandom or getrandom(2) is available")]
    Random(String),
}

impl AuthError {
    fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        AuthError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// What is stored in `accounts.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Store {
    version: u32,
    #[serde(default)]
    users: BTreeMap<String, StoredUser>,
    /// App name -> users allowed to push (admins are not listed: they may push everywhere).
    #[serde(default)]
    apps: BTreeMap<String, BTreeSet<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredUser {
    admin: bool,
    /// Hex SHA-256 of each token.
    #[serde(default)]
    tokens: Vec<String>,
    #[serde(default)]
    keys: Vec<StoredKey>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredKey {
    fingerprint: String,
    comment: String,
    /// The key as an OpenSSH line, kept so the fingerprint can be checked and keys exported.
    openssh: String,
}

impl StoredKey {
    fn info(&self) -> KeyInfo {
        KeyInfo {
            fingerprint: self.fingerprint.clone(),
            comment: self.comment.clone(),
        }
    }
}

struct Inner {
    path: PathBuf,
    store: Mutex<Store>,
}

/// The file-backed store of users, tokens, SSH keys and app grants.
///
/// Cheap to clone: clones share the same in-memory copy and file. All methods block only on a
/// small local file write, so they are fine to call from async code.
#[derive(Clone)]
pub struct Accounts {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Accounts {
    /// Opens the store at `<data_dir>/accounts.json`, creating the directory if needed. A missing
    /// file is an empty store (it is written on the first change).
    pub fn open(data_dir: impl AsRef<Path>) -> Result<Accounts, AuthError> {
        let dir = data_dir.as_ref();
        create_dir_all(dir, FileMode::Private).map_err(|e| AuthError::io("create", dir, e))?;
        let path = dir.join(ACCOUNTS_FILE);
        let store = match fs::read(&path) {
            Ok(bytes) => parse_store(&path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Store {
                version: FORMAT_VERSION,
                ..Store::default()
            },
            Err(e) => return Err(AuthError::io("read", &path, e)),
        };
        Ok(Accounts {
            inner: Arc::new(Inner {
                path,
                store: Mutex::new(store),
            }),
        })
    }

    /// The path of the accounts file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave the store half-changed: changes are made on
        // a copy and swapped in only after they are on disk.
        self.inner
            .store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies `change` to a copy of the store, writes the copy to disk and only then makes it
    /// the current state, so memory never runs ahead of the file.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut Store) -> Result<T, AuthError>,
    ) -> Result<T, AuthError> {
        let mut guard = self.lock();
        let mut next = guard.clone();
        let out = change(&mut next)?;
        write_atomically(&self.inner.path, &next)?;
        *guard = next;
        Ok(out)
    }

    /// Adds a user. Fails if the name is invalid or taken.
    pub fn add_user(&self, name: &str, admin: bool) -> Result<User, AuthError> {
        check_user_name(name)?;
        self.update(|store| {
            if store.users.contains_key(name) {
                return Err(AuthError::UserExists(name.to_owned()));
            }
            store.users.insert(
                name.to_owned(),
                StoredUser {
                    admin,
                    ..StoredUser::default()
                },
            );
            Ok(User {
                name: name.to_owned(),
                admin,
            })
        })
    }

    /// Removes a user with its tokens, keys and grants.
    pub fn remove_user(&self, name: &str) -> Result<(), AuthError> {
        self.update(|store| {
            if store.users.remove(name).is_none() {
                return Err(AuthError::UnknownUser(name.to_owned()));
            }
            for users in store.apps.values_mut() {
                users.remove(name);
            }
            store.apps.retain(|_, users| !users.is_empty());
            Ok(())
        })
    }

    /// Makes a user an admin or takes that away.
    pub fn set_admin(&self, name: &str, admin: bool) -> Result<(), AuthError> {
        self.update(|store| {
            let user = store
                .users
                .get_mut(name)
                .ok_or_else(|| AuthError::UnknownUser(name.to_owned()))?;
            user.admin = admin;
            Ok(())
        })
    }

    /// The user with this name, if any.
    pub fn user(&self, name: &str) -> Option<User> {
        self.lock().users.get(name).map(|u| User {
            name: name.to_owned(),
            admin: u.admin,
        })
    }

    /// All users, sorted by name.
    pub fn users(&self) -> Vec<User> {
        self.lock()
            .users
            .iter()
            .map(|(name, u)| User {
                name: name.clone(),
                admin: u.admin,
            })
            .collect()
    }

    /// Creates a new API token for the user and returns it. The token (64 hex characters) is
    /// shown only here: only its SHA-256 is stored.
    pub fn create_token(&self, user: &str) -> Result<String, AuthError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| AuthError::Random(e.to_string()))?;
        let token = hex::encode(secret);
        let hash = token_hash(&token);
        self.update(|store| {
            let stored = store
                .users
                .get_mut(user)
                .ok_or_else(|| AuthError::UnknownUser(user.to_owned()))?;
            stored.tokens.push(hex::encode(hash));
            Ok(())
        })?;
        Ok(token)
    }

    /// Revokes every token of the user.
    pub fn revoke_tokens(&self, user: &str) -> Result<(), AuthError> {
        self.update(|store| {
            let stored = store
                .users
                .get_mut(user)
                .ok_or_else(|| AuthError::UnknownUser(user.to_owned()))?;
            stored.tokens.clear();
            Ok(())
        })
    }

    /// The user the token belongs to, or `None` for an unknown token.
    ///
    /// Every stored hash is compared, in constant time, so the answer's timing does not tell how
    /// close a guess was.
    pub fn authenticate_token(&self, token: &str) -> Option<User> {
        let presented = token_hash(token.trim());
        let store = self.lock();
        let mut found: Option<&String> = None;
        for (name, user) in &store.users {
            for stored in &user.tokens {
                let mut stored_bytes = [0u8; 32];
                if hex::decode_to_slice(stored, &mut stored_bytes).is_err() {
                    continue;
                }
                if bool::from(stored_bytes.ct_eq(&presented)) {
                    found = Some(name);
                }
            }
        }
        let name = found?;
        store.users.get(name).map(|u| User {
            name: name.clone(),
            admin: u.admin,
        })
    }

    /// Registers an SSH public key (one OpenSSH line, `ssh-ed25519 AAAA... comment`) for the user.
    ///
    /// Fails if the line is not a public key, or the key is registered already (for this user or
    /// another one).
    pub fn add_key(&self, user: &str, openssh_line: &str) -> Result<KeyInfo, AuthError> {
        let key = parse_key_line(openssh_line)?;
        let fingerprint = fingerprint(&key);
        let comment = key.comment().as_str_lossy().to_owned();
        let mut bare = key.clone();
        bare.set_comment("");
        let openssh = bare.to_openssh().map_err(|e| AuthError::InvalidKey {
            problem: format!("it cannot be encoded again: {e}"),
        })?;
        self.update(|store| {
            if !store.users.contains_key(user) {
                return Err(AuthError::UnknownUser(user.to_owned()));
            }
            if let Some(owner) = key_owner(store, &fingerprint) {
                return Err(AuthError::DuplicateKey {
                    fingerprint: fingerprint.clone(),
                    user: owner.to_owned(),
                });
            }
            let stored = StoredKey {
                fingerprint: fingerprint.clone(),
                comment: comment.clone(),
                openssh,
            };
            let info = stored.info();
            if let Some(u) = store.users.get_mut(user) {
                u.keys.push(stored);
            }
            Ok(info)
        })
    }

    /// Removes the key with this fingerprint (`SHA256:...`) from the user.
    pub fn remove_key(&self, user: &str, fingerprint: &str) -> Result<(), AuthError> {
        self.update(|store| {
            let stored = store
                .users
                .get_mut(user)
                .ok_or_else(|| AuthError::UnknownUser(user.to_owned()))?;
            let before = stored.keys.len();
            stored.keys.retain(|k| k.fingerprint != fingerprint);
            if stored.keys.len() == before {
                return Err(AuthError::UnknownKey {
                    user: user.to_owned(),
                    fingerprint: fingerprint.to_owned(),
                });
            }
            Ok(())
        })
    }

    /// The keys of the user, in the order they were added (empty for an unknown user).
    pub fn keys(&self, user: &str) -> Vec<KeyInfo> {
        self.lock()
            .users
            .get(user)
            .map(|u| u.keys.iter().map(StoredKey::info).collect())
            .unwrap_or_default()
    }

    /// The user this public key is registered for, if any.
    pub fn authenticate_key(&self, key: &PublicKey) -> Option<User> {
        let fingerprint = fingerprint(key);
        let store = self.lock();
        let name = key_owner(&store, &fingerprint)?;
        store.users.get(name).map(|u| User {
            name: name.to_owned(),
            admin: u.admin,
        })
    }

    /// Allows the user to push to the app.
    pub fn grant(&self, app: &AppName, user: &str) -> Result<(), AuthError> {
        self.update(|store| {
            if !store.users.contains_key(user) {
                return Err(AuthError::UnknownUser(user.to_owned()));
            }
            store
                .apps
                .entry(app.as_str().to_owned())
                .or_default()
                .insert(user.to_owned());
            Ok(())
        })
    }

    /// Takes the user's permission to push to the app away (a no-op if there was none).
    pub fn revoke(&self, app: &AppName, user: &str) -> Result<(), AuthError> {
        self.update(|store| {
            if let Some(users) = store.apps.get_mut(app.as_str()) {
                users.remove(user);
                if users.is_empty() {
                    store.apps.remove(app.as_str());
                }
            }
            Ok(())
        })
    }

    /// Forgets every grant for the app (call it when the app is deleted, so a new app of the
    /// same name does not inherit them).
    pub fn revoke_app(&self, app: &AppName) -> Result<(), AuthError> {
        self.update(|store| {
            store.apps.remove(app.as_str());
            Ok(())
        })
    }

    /// The users granted the app (admins, who may push everywhere, are not listed).
    pub fn granted(&self, app: &AppName) -> Vec<String> {
        self.lock()
            .apps
            .get(app.as_str())
            .map(|users| users.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether the user may push to the app: admins may push to every app, others to the apps
    /// they were granted. The stored state decides, so a user removed or demoted since `user`
    /// was looked up loses access at once.
    pub fn may_push(&self, user: &User, app: &AppName) -> bool {
        let store = self.lock();
        let Some(stored) = store.users.get(&user.name) else {
            return false;
        };
        stored.admin
            || store
                .apps
                .get(app.as_str())
                .is_some_and(|users| users.contains(&user.name))
    }
}

fn parse_store(path: &Path, bytes: &[u8]) -> Result<Store, AuthError> {
    let corrupt = |source: Box<dyn std::error::Error + Send + Sync>| AuthError::Corrupt {
        path: path.to_owned(),
        source,
    };
    let store: Store = serde_json::from_slice(bytes).map_err(|e| corrupt(Box::new(e)))?;
    if store.version != FORMAT_VERSION {
        return Err(corrupt(
            format!(
                "format version {} is not supported (this hephy reads version {FORMAT_VERSION})",
                store.version
            )
            .into(),
        ));
    }
    Ok(store)
}

/// Writes the store with [`hephy_core::fs::write_atomic`]: 0600 from the first byte (token
/// hashes and key lists are nobody else's business), fsynced, renamed over the old file.
fn write_atomically(path: &Path, store: &Store) -> Result<(), AuthError> {
    let mut json = serde_json::to_vec_pretty(store).map_err(|e| AuthError::Corrupt {
        path: path.to_owned(),
        source: Box::new(e),
    })?;
    json.push(b'\n');
    write_atomic(path, &json, FileMode::Private).map_err(|e| AuthError::io("write", path, e))
}

fn check_user_name(name: &str) -> Result<(), AuthError> {
    let err = |problem| AuthError::InvalidUserName {
        name: name.to_owned(),
        problem,
    };
    if name.is_empty() {
        return Err(err("it is empty"));
    }
    if name.len() > 64 {
        return Err(err("it is longer than 64 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(err(
            "it has characters other than a-z, 0-9, '-', '_' and '.'",
        ));
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(err("it does not start with a letter or digit"));
    }
    Ok(())
}

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The SHA-256 fingerprint of a key as OpenSSH prints it (`SHA256:...`).
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

fn key_owner<'a>(store: &'a Store, fingerprint: &str) -> Option<&'a str> {
    store.users.iter().find_map(|(name, u)| {
        u.keys
            .iter()
            .any(|k| k.fingerprint == fingerprint)
            .then_some(name.as_str())
    })
}

fn parse_key_line(line: &str) -> Result<PublicKey, AuthError> {
    let line = line.trim();
    if line.is_empty() {
        return Err(AuthError::InvalidKey {
            problem: "the text is empty".to_owned(),
        });
    }
    if line.contains("PRIVATE KEY") {
        return Err(AuthError::InvalidKey {
            problem: "this is a private key: never share it, pass the matching .pub file instead"
                .to_owned(),
        });
    }
    if line.lines().count() > 1 {
        return Err(AuthError::InvalidKey {
            problem: "the text has more than one line; add one key at a time".to_owned(),
        });
    }
    PublicKey::from_openssh(line).map_err(|e| AuthError::InvalidKey {
        problem: format!("cannot parse {:?}: {e}", abbreviate(line)),
    })
}

/// The start of a long line, so an error message stays readable.
fn abbreviate(line: &str) -> String {
    const MAX: usize = 40;
    match line.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}...", &line[..at]),
        None => line.to_owned(),
    }
}

#[path = "auth_header.rs"]
mod header;
pub use header::{parse_authorization, AuthHeaderError, Credentials, MAX_AUTHORIZATION_BYTES};

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
