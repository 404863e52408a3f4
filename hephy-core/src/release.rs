//! Releases: numbered, digest-pinned versions of an app with their config.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::unknown::UnknownFields;
use crate::{AppName, DeployConfig, Reference};

/// A release number, written `v1`, `v2`, ...
///
/// ```
/// use hephy_core::ReleaseVersion;
/// let v: ReleaseVersion = "v3".parse()?;
/// assert_eq!(v.number(), 3);
/// assert_eq!(v.next().to_string(), "v4");
/// assert_eq!("3".parse::<ReleaseVersion>()?, v);
/// # Ok::<(), hephy_core::ReleaseVersionError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReleaseVersion(u32);

/// The error returned by [`ReleaseVersion::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid release {input:?}: write it as vN with N from 1, like v3")]
pub struct ReleaseVersionError {
    input: String,
}

impl ReleaseVersion {
    /// The first release, `v1`.
    pub const FIRST: ReleaseVersion = ReleaseVersion(1);

    /// The release with number `n`; `None` for 0.
    pub fn new(n: u32) -> Option<Self> {
        (n > 0).then_some(ReleaseVersion(n))
    }

    /// The number without the `v`.
    pub fn number(self) -> u32 {
        self.0
    }

    /// The release after this one.
    pub fn next(self) -> Self {
        ReleaseVersion(self.0.saturating_add(1))
    }

    /// The number of the release that follows `latest`, the newest recorded one: `v1` when
    /// there is none. A deployer's ledger numbers each new release with it.
    ///
    /// ```
    /// use hephy_core::ReleaseVersion;
    /// assert_eq!(ReleaseVersion::next_after(None), ReleaseVersion::FIRST);
    /// let v3: ReleaseVersion = "v3".parse()?;
    /// assert_eq!(ReleaseVersion::next_after(Some(v3)).to_string(), "v4");
    /// # Ok::<(), hephy_core::ReleaseVersionError>(())
    /// ```
    pub fn next_after(latest: Option<ReleaseVersion>) -> Self {
        latest.map_or(ReleaseVersion::FIRST, ReleaseVersion::next)
    }
}

impl FromStr for ReleaseVersion {
    type Err = ReleaseVersionError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let digits = input.strip_prefix(['v', 'V']).unwrap_or(input);
        digits
            .parse::<u32>()
            .ok()
            .and_then(ReleaseVersion::new)
            .filter(|_| digits.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| ReleaseVersionError {
                input: input.to_owned(),
            })
    }
}

impl fmt::Display for ReleaseVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

impl Serialize for ReleaseVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ReleaseVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The error returned when a config var name or value is invalid, or a change cannot apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigVarError {
    /// The name is not a portable environment variable name.
    #[error("invalid config var name {name:?}: use letters, digits and '_', not starting with a digit, like DATABASE_URL")]
    Name {
        /// The rejected name.
        name: String,
    },
    /// The value holds a NUL byte, which no process environment can carry.
    #[error("invalid value for config var {name}: it contains a NUL byte, which an environment cannot hold")]
    Value {
        /// The variable whose value was rejected.
        name: String,
    },
    /// The name is set by hephy itself.
    #[error("config var {name} is reserved: hephy sets it from [deploy] in hephy.toml")]
    Reserved {
        /// The reserved name.
        name: String,
    },
    /// An unset names a variable that is not set.
    #[error("config var {name} is not set, so it cannot be unset: check the name against the vars that are set")]
    NotSet {
        /// The name that is not set.
        name: String,
    },
    /// The text given is not `NAME=value`.
    #[error("invalid config assignment {input:?}: write it as NAME=value")]
    Assignment {
        /// The text that was given.
        input: String,
    },
}

impl ConfigVarError {
    /// Advice that names hephy's CLI, for hephy's own tools to show after the message (see
    /// [`DeployError::hint`](crate::DeployError::hint)).
    pub fn hint(&self) -> Option<String> {
        match self {
            ConfigVarError::NotSet { .. } => {
                Some("list the set vars with `hephy config list`".into())
            }
            _ => None,
        }
    }
}

/// Names hephy sets in every app's environment; they cannot be set as config vars.
pub const RESERVED_VARS: &[&str] = &["PORT"];

/// An app's config vars: the environment it runs with, kept with every release.
///
/// ```
/// use hephy_core::ConfigVars;
/// let mut vars = ConfigVars::default();
/// vars.set("GREETING", "hello")?;
/// assert_eq!(vars.get("GREETING"), Some("hello"));
/// assert!(vars.set("1BAD", "x").is_err());
/// assert!(vars.set("PORT", "1").is_err());
/// # Ok::<(), hephy_core::ConfigVarError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConfigVars(BTreeMap<String, String>);

impl ConfigVars {
    /// Checks that `name` can be set as a config var.
    pub fn validate_name(name: &str) -> Result<(), ConfigVarError> {
        let b = name.as_bytes();
        let ok = !b.is_empty()
            && !b[0].is_ascii_digit()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_');
        if !ok {
            return Err(ConfigVarError::Name {
                name: name.to_owned(),
            });
        }
        if RESERVED_VARS.contains(&name) {
            return Err(ConfigVarError::Reserved {
                name: name.to_owned(),
            });
        }
        Ok(())
    }

    /// Sets `name` to `value`.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), ConfigVarError> {
        Self::validate_name(name)?;
        if value.contains('\0') {
            return Err(ConfigVarError::Value {
                name: name.to_owned(),
            });
        }
        self.0.insert(name.to_owned(), value.to_owned());
        Ok(())
    }

    /// Removes `name`; an error if it is not set.
    pub fn unset(&mut self, name: &str) -> Result<(), ConfigVarError> {
        self.0
            .remove(name)
            .map(drop)
            .ok_or_else(|| ConfigVarError::NotSet {
                name: name.to_owned(),
            })
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// All vars in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many vars are set.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no var is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A change to an app's config vars, which makes a new release.
///
/// ```
/// use hephy_core::{ConfigChange, ConfigVars};
/// let change = ConfigChange::parse_assignments(["GREETING=hi there", "DEBUG=1"])?;
/// let vars = change.apply(&ConfigVars::default())?;
/// assert_eq!(vars.get("GREETING"), Some("hi there"));
/// # Ok::<(), hephy_core::ConfigVarError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConfigChange {
    /// Vars to set.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Vars to remove.
    #[serde(default)]
    pub unset: Vec<String>,
}

impl ConfigChange {
    /// A change that sets `NAME=value` assignments, as `hephy config set` takes them.
    pub fn parse_assignments<'a>(
        assignments: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, ConfigVarError> {
        let mut set = BTreeMap::new();
        for a in assignments {
            let (k, v) = a
                .split_once('=')
                .ok_or_else(|| ConfigVarError::Assignment {
                    input: a.to_owned(),
                })?;
            ConfigVars::validate_name(k)?;
            set.insert(k.to_owned(), v.to_owned());
        }
        Ok(ConfigChange { set, unset: vec![] })
    }

    /// A change that removes `names`.
    pub fn unset<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        ConfigChange {
            set: BTreeMap::new(),
            unset: names.into_iter().map(str::to_owned).collect(),
        }
    }

    /// The vars after this change, or an error naming the first var it cannot apply.
    pub fn apply(&self, current: &ConfigVars) -> Result<ConfigVars, ConfigVarError> {
        let mut next = current.clone();
        for (k, v) in &self.set {
            next.set(k, v)?;
        }
        for k in &self.unset {
            next.unset(k)?;
        }
        Ok(next)
    }

    /// Whether the change does nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.unset.is_empty()
    }
}

/// Why a release was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ReleaseCause {
    /// A `git push` of a commit.
    Push {
        /// The full commit id.
        commit: String,
        /// Who authored the commit.
        #[serde(default)]
        author: String,
    },
    /// An image built elsewhere was deployed (`hephy deploy --image`).
    Image {
        /// The image as given.
        reference: String,
    },
    /// Config vars were set or unset.
    Config {
        /// The names set.
        set: Vec<String>,
        /// The names unset.
        unset: Vec<String>,
    },
    /// A rollback to an earlier release.
    Rollback {
        /// The release rolled back to.
        to: ReleaseVersion,
    },
}

impl fmt::Display for ReleaseCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReleaseCause::Push { commit, author } => {
                let short = &commit[..commit.len().min(7)];
                if author.is_empty() {
                    write!(f, "push of {short}")
                } else {
                    write!(f, "push of {short} by {author}")
                }
            }
            ReleaseCause::Image { reference } => write!(f, "deploy of {reference}"),
            ReleaseCause::Config { set, unset } => {
                let mut parts = vec![];
                if !set.is_empty() {
                    parts.push(format!("config set {}", set.join(", ")));
                }
                if !unset.is_empty() {
                    parts.push(format!("config unset {}", unset.join(", ")));
                }
                f.write_str(&parts.join("; "))
            }
            ReleaseCause::Rollback { to } => write!(f, "rollback to {to}"),
        }
    }
}

/// A release to be made: what a [`Deployer`](crate::Deployer) is asked to run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NewRelease {
    /// The app.
    pub app: AppName,
    /// The digest-pinned image.
    pub image: Reference,
    /// The config vars, or `None` to keep the current release's.
    pub config: Option<ConfigVars>,
    /// The deploy settings.
    pub deploy: DeployConfig,
    /// Why it is made.
    pub cause: ReleaseCause,
}

impl NewRelease {
    /// A release of `image` for `app`, keeping the current config vars.
    pub fn new(app: AppName, image: Reference, deploy: DeployConfig, cause: ReleaseCause) -> Self {
        NewRelease {
            app,
            image,
            config: None,
            deploy,
            cause,
        }
    }

    /// Sets the config vars of the release.
    pub fn with_config(mut self, config: ConfigVars) -> Self {
        self.config = Some(config);
        self
    }

    /// The release with its number and time, taking the config from `current` when none was set.
    pub fn into_release(
        self,
        version: ReleaseVersion,
        created: SystemTime,
        current: Option<&Release>,
    ) -> Release {
        let config = self
            .config
            .or_else(|| current.map(|c| c.config.clone()))
            .unwrap_or_default();
        Release {
            app: self.app,
            version,
            image: self.image,
            config,
            deploy: self.deploy,
            cause: self.cause,
            created,
            unknown: UnknownFields::default(),
        }
    }
}

/// A release: one numbered, immutable version of an app.
///
/// Its serde form is what ledgers store. Fields this version does not know, here and in
/// [`DeployConfig`], were written by a newer hephy: they are accepted and written back unchanged,
/// so an older binary neither fails on a newer ledger nor loses what it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Release {
    /// The app.
    pub app: AppName,
    /// Its number.
    pub version: ReleaseVersion,
    /// The digest-pinned image it runs.
    pub image: Reference,
    /// The config vars it runs with.
    pub config: ConfigVars,
    /// Its deploy settings.
    pub deploy: DeployConfig,
    /// Why it was made.
    pub cause: ReleaseCause,
    /// When it was made.
    #[serde(with = "rfc3339")]
    pub created: SystemTime,
    #[serde(flatten)]
    unknown: UnknownFields,
}

impl Release {
    /// A new release to make from this one, with its image, config and settings (for rollback).
    pub fn to_new_release(&self, cause: ReleaseCause) -> NewRelease {
        NewRelease {
            app: self.app.clone(),
            image: self.image.clone(),
            config: Some(self.config.clone()),
            deploy: self.deploy.clone(),
            cause,
        }
    }
}

mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&s).map_err(serde::de::Error::custom)
    }
}
