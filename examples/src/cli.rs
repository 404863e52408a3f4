//! What the `hephy` CLI needs beyond the API client: saved settings, terminal style, and finding
//! the app from the current checkout.

use std::ffi::OsString;
use std::path::PathBuf;

use hephy_core::fs::{create_dir_all, write_atomic, FileMode};
use hephy_core::AppName;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

/// The message for commands that need a server when none is known.
pub const NOT_LOGGED_IN: &str =
    "no hephy server known: run `hephy login URL --token TOKEN`, or set HEPHY_URL and HEPHY_TOKEN";

/// Turns Deis/Heroku-style `apps:create` into `apps create`, so old habits work.
pub fn split_colon_alias(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    // Global flags that take a value, so their value is not mistaken for the command.
    const VALUED: &[&str] = &["--app", "-a", "--url", "--token"];
    let mut out = vec![];
    let mut seen_command = false;
    let mut skip_value = false;
    for (i, a) in args.into_iter().enumerate() {
        let s = a.to_string_lossy().into_owned();
        if i == 0 || seen_command {
            out.push(a);
            continue;
        }
        if skip_value {
            skip_value = false;
            out.push(a);
            continue;
        }
        if s.starts_with('-') {
            skip_value = VALUED.contains(&s.as_str());
            out.push(a);
            continue;
        }
        seen_command = true;
        match s.split_once(':') {
            Some((group, cmd)) if !group.is_empty() && !cmd.is_empty() && !s.contains('/') => {
                out.push(OsString::from(group));
                out.push(OsString::from(cmd));
            }
            _ => out.push(a),
        }
    }
    out
}

/// Reads a token or password from a flag or the environment into a [`SecretString`], so `Debug`
/// of the parsed arguments shows it redacted (a clap `value_parser`).
pub fn secret(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(value))
}

/// Saved client settings (`hephy login`), in `$XDG_CONFIG_HOME/hephy/client.json`, a file only
/// the user may read (0600, in a 0700 directory when hephy creates it).
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Settings {
    /// The server.
    pub url: Option<String>,
    /// The token.
    #[serde(serialize_with = "expose")]
    pub token: Option<SecretString>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// Writes the token itself: the settings file is where it is kept.
fn expose<S: Serializer>(token: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    token.as_ref().map(|t| t.expose_secret()).serialize(s)
}

impl Settings {
    /// Where the settings are kept: `$XDG_CONFIG_HOME/hephy/client.json`, else
    /// `$HOME/.config/hephy/client.json`.
    pub fn path() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
        Some(base.join("hephy").join("client.json"))
    }

    /// The saved settings, or none.
    pub fn load() -> Settings {
        Self::path()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Saves the settings, readable only by the user from the first byte (0600; the
    /// directories hephy creates for it are 0700).
    pub fn save(&self) -> std::io::Result<()> {
        let path = Self::path().ok_or_else(|| {
            std::io::Error::other(
                "neither XDG_CONFIG_HOME nor HOME is set, so settings cannot be saved",
            )
        })?;
        self.save_to(&path)
    }

    /// [`Settings::save`] to `path` instead of the usual place.
    pub fn save_to(&self, path: &std::path::Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            create_dir_all(dir, FileMode::Private)?;
        }
        let mut bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        write_atomic(path, &bytes, FileMode::Private)
    }
}

/// The error returned when the app cannot be found.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AppNotFound(String);

/// The app: `--app`/`HEPHY_APP`, else the last path component of the `hephy` git remote.
pub fn resolve_app(flag: Option<&str>) -> Result<AppName, AppNotFound> {
    if let Some(a) = flag {
        return a
            .parse()
            .map_err(|e: hephy_core::AppNameError| AppNotFound(e.to_string()));
    }
    let out = std::process::Command::new("git")
        .args(["remote", "get-url", "hephy"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .ok_or_else(|| {
            AppNotFound(
                "which app? pass --app NAME, set HEPHY_APP, or add the app's `hephy` git remote"
                    .into(),
            )
        })?;
    let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    app_from_remote(&url).ok_or_else(|| {
        AppNotFound(format!(
            "cannot tell the app from the hephy remote {url:?}: pass --app NAME"
        ))
    })
}

/// The app named by a remote URL such as `http://host:7080/hello.git` or `ssh://git@host/hello.git`.
pub fn app_from_remote(url: &str) -> Option<AppName> {
    let last = url.trim_end_matches('/').rsplit(['/', ':']).next()?;
    last.trim_end_matches(".git").parse().ok()
}

/// An app name from the current directory's name, lower-cased.
pub fn app_from_dir() -> Result<AppName, AppNotFound> {
    let dir = std::env::current_dir().map_err(|e| AppNotFound(e.to_string()))?;
    let name = dir
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .to_ascii_lowercase()
                .replace(['_', '.', ' '], "-")
        })
        .unwrap_or_default();
    name.parse().map_err(|e: hephy_core::AppNameError| {
        AppNotFound(format!("{e}; pass a name: hephy apps create NAME"))
    })
}

/// `~/.ssh/id_ed25519.pub`, else `~/.ssh/id_rsa.pub`.
pub fn default_public_key() -> Result<PathBuf, AppNotFound> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    ["id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"]
        .iter()
        .map(|f| home.join(".ssh").join(f))
        .find(|p| p.exists())
        .ok_or_else(|| {
            AppNotFound(
                "no public key in ~/.ssh: make one with `ssh-keygen -t ed25519` or pass its path"
                    .into(),
            )
        })
}

/// Colour on a terminal (unless `NO_COLOR` is set), plain text otherwise.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    color: bool,
}

impl Style {
    /// The style for an output that is (or is not) a terminal.
    pub fn detect(is_terminal: bool) -> Style {
        Style {
            color: is_terminal && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    /// Whether colour and progress bars are used.
    pub fn is_rich(&self) -> bool {
        self.color
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }

    /// A success line.
    pub fn ok(&self, s: &str) -> String {
        self.paint("32", s)
    }

    /// An error line.
    pub fn error(&self, s: &str) -> String {
        self.paint("31", s)
    }

    /// A heading.
    pub fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }

    /// A rendered pipeline event: stage lines bold, warnings yellow.
    pub fn event_line(&self, line: &str) -> String {
        if line.starts_with("----->") {
            self.bold(line)
        } else if line.starts_with(" !") {
            self.paint("33", line)
        } else {
            line.to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Result = std::result::Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn saved_settings_are_owner_only_and_debug_hides_the_token() -> Result {
        let tmp = tempfile::tempdir()?;
        let path = tmp.path().join("config/hephy/client.json");
        let settings = Settings {
            url: Some("http://127.0.0.1:7080".into()),
            token: Some("hephy_s3cret".into()),
        };
        settings.save_to(&path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &std::path::Path| -> std::io::Result<u32> {
                Ok(std::fs::metadata(p)?.permissions().mode() & 0o777)
            };
            assert_eq!(mode(&path)?, 0o600, "the settings file");
            assert_eq!(
                mode(&tmp.path().join("config"))?,
                0o700,
                "created directories"
            );
            assert_eq!(mode(&tmp.path().join("config/hephy"))?, 0o700);
        }
        let read: Settings = serde_json::from_slice(&std::fs::read(&path)?)?;
        assert_eq!(
            read.token.as_ref().map(|t| t.expose_secret()),
            Some("hephy_s3cret"),
            "the file keeps the token itself"
        );
        let shown = format!("{settings:?} {read:#?}");
        assert!(!shown.contains("s3cret"), "the token in {shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
        Ok(())
    }

    #[test]
    fn token_flags_parse_into_secrets() -> Result {
        let token = secret("hephy_s3cret")?;
        assert!(!format!("{token:?}").contains("s3cret"));
        assert_eq!(token.expose_secret(), "hephy_s3cret");
        Ok(())
    }
}
