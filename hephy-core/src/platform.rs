//! Target platforms such as `linux/amd64` or `linux/arm64/v8`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The error returned by [`Platform::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlatformError {
    /// The text is not of the form `os/arch[/variant]`.
    #[error("invalid platform {input:?}: write it as os/arch or os/arch/variant, like linux/amd64 or linux/arm64/v8")]
    Syntax {
        /// The text that was given.
        input: String,
    },
    /// The operating system is not one OCI images are built for.
    #[error("unknown operating system {os:?} in platform {input:?}: use one of {}", KNOWN_OS.join(", "))]
    UnknownOs {
        /// The text that was given.
        input: String,
        /// The operating system part.
        os: String,
    },
    /// The architecture is not one OCI images are built for.
    #[error("unknown architecture {arch:?} in platform {input:?}: use one of {}", KNOWN_ARCH.join(", "))]
    UnknownArch {
        /// The text that was given.
        input: String,
        /// The architecture part.
        arch: String,
    },
}

const KNOWN_OS: &[&str] = &["linux", "windows", "darwin", "freebsd", "wasip1", "wasi"];
const KNOWN_ARCH: &[&str] = &[
    "amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64", "mips64le", "loong64", "wasm",
];

/// A platform an image is built for, as OCI image indexes name it: `os/architecture[/variant]`.
///
/// Common aliases are normalized on parsing (`x86_64` → `amd64`, `aarch64` → `arm64`), so two
/// spellings of the same platform compare equal. `linux/arm64` and `linux/arm64/v8` stay distinct
/// values, but [`Platform::matches`] treats them as the same machine, as container runtimes do.
///
/// ```
/// use hephy_core::Platform;
/// let p: Platform = "linux/arm64/v8".parse()?;
/// assert_eq!(p.os(), "linux");
/// assert_eq!(p.architecture(), "arm64");
/// assert_eq!(p.variant(), Some("v8"));
/// assert!(p.matches(&"linux/aarch64".parse()?));
/// # Ok::<(), hephy_core::PlatformError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

impl Platform {
    /// `linux/amd64`.
    pub fn linux_amd64() -> Self {
        Self::new_unchecked("linux", "amd64", None)
    }

    /// `linux/arm64`.
    pub fn linux_arm64() -> Self {
        Self::new_unchecked("linux", "arm64", None)
    }

    fn new_unchecked(os: &str, arch: &str, variant: Option<&str>) -> Self {
        Platform {
            os: os.to_owned(),
            architecture: arch.to_owned(),
            variant: variant.map(str::to_owned),
        }
    }

    /// The platform of the machine this code runs on, as a Linux image for it would name it.
    ///
    /// Images are Linux images, so the OS is always `linux`, whatever the host OS is.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            "loongarch64" => "loong64",
            other => other,
        };
        Self::new_unchecked("linux", arch, None)
    }

    /// The operating system, such as `linux`.
    pub fn os(&self) -> &str {
        &self.os
    }

    /// The CPU architecture in Go/OCI spelling, such as `amd64` or `arm64`.
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// The CPU variant, such as `v8` or `v7`, if one was given.
    pub fn variant(&self) -> Option<&str> {
        self.variant.as_deref()
    }

    /// Whether both name the same machine: equal, or differing only in a variant that is the
    /// default for the architecture (`arm64` is `arm64/v8`).
    pub fn matches(&self, other: &Platform) -> bool {
        fn default_variant(arch: &str) -> Option<&'static str> {
            match arch {
                "arm64" => Some("v8"),
                _ => None,
            }
        }
        self.os == other.os
            && self.architecture == other.architecture
            && (self
                .variant
                .as_deref()
                .or(default_variant(&self.architecture))
                == other
                    .variant
                    .as_deref()
                    .or(default_variant(&other.architecture)))
    }

    /// A string safe to use in file names and log prefixes: `linux-arm64-v8`.
    pub fn slug(&self) -> String {
        self.to_string().replace('/', "-")
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let syntax = || PlatformError::Syntax {
            input: input.to_owned(),
        };
        let parts: Vec<&str> = input.trim().split('/').collect();
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, variant] => (*os, *arch, Some(*variant)),
            _ => return Err(syntax()),
        };
        if os.is_empty() || arch.is_empty() || variant.is_some_and(str::is_empty) {
            return Err(syntax());
        }
        let os = os.to_ascii_lowercase();
        if !KNOWN_OS.contains(&os.as_str()) {
            return Err(PlatformError::UnknownOs {
                input: input.to_owned(),
                os,
            });
        }
        let arch = arch.to_ascii_lowercase();
        let (arch, variant) = match (arch.as_str(), variant) {
            ("x86_64" | "x86-64", v) => ("amd64".to_owned(), v.map(str::to_owned)),
            ("aarch64", v) => ("arm64".to_owned(), v.map(str::to_owned)),
            ("armhf", None) => ("arm".to_owned(), Some("v7".to_owned())),
            ("armel", None) => ("arm".to_owned(), Some("v6".to_owned())),
            ("i386" | "x86", v) => ("386".to_owned(), v.map(str::to_owned)),
            (a, v) => (a.to_owned(), v.map(str::to_ascii_lowercase)),
        };
        if !KNOWN_ARCH.contains(&arch.as_str()) {
            return Err(PlatformError::UnknownArch {
                input: input.to_owned(),
                arch,
            });
        }
        Ok(Platform {
            os,
            architecture: arch,
            variant,
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl Serialize for Platform {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Platform {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
