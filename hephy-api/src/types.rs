//! The JSON bodies of the control API, shared by the server and the client.

use hephy_core::{ConfigVars, Release};
use serde::{Deserialize, Serialize};

/// An app as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AppInfo {
    /// The app's name.
    pub name: String,
    /// Users who may push to it (admins may push to every app).
    pub users: Vec<String>,
    /// The smart-HTTP remote.
    pub git_http: String,
    /// The SSH remote, when the server has SSH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ssh: Option<String>,
    /// Where the running app answers, when it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The current release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<Release>,
    /// How the current release's process fares, where the runtime watches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessInfo>,
}

/// How an app's process fares under the runtime's supervision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProcessInfo {
    /// `running`, `restarting` (it died and is being started again) or `crash-loop` (it died
    /// again and again lately; restarts go on with a longer wait).
    pub state: String,
    /// How many times it was restarted after it died, since the release went live.
    pub restarts: u32,
    /// When it was last restarted, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restart: Option<u64>,
    /// The last lines it printed before it last died.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_lines: Vec<String>,
}

/// `POST /api/v1/apps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateApp {
    /// The new app's name.
    pub name: String,
}

/// `POST /api/v1/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddKey {
    /// An OpenSSH public key line.
    pub key: String,
}

/// A registered public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyView {
    /// `SHA256:...`.
    pub fingerprint: String,
    /// The key's comment.
    pub comment: String,
}

/// `POST /api/v1/apps/APP/rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    /// The release to roll back to, `vN`.
    pub version: String,
}

/// `POST /api/v1/apps/APP/deploy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployImage {
    /// A digest-pinned image reference.
    pub image: String,
}

/// `GET /api/v1/apps/APP/config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigView {
    /// The current release's config vars.
    pub vars: ConfigVars,
}

/// `GET /api/v1/whoami`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    /// The user's name.
    pub user: String,
    /// Whether the user is an admin.
    pub admin: bool,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// What went wrong and what to do.
    pub error: String,
}
