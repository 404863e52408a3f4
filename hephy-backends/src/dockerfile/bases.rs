//! The images a Dockerfile's stages start from, checked before a build: buildah accepts a
//! transport in `FROM` (`oci:DIR`, `dir:DIR`, `containers-storage:NAME` ...), and those read
//! the server's disk. A layout or archive must be inside the repository; the builder's own
//! image store, which every app built on this server shares, is refused.

use std::collections::BTreeMap;

use hephy_core::{BuildContext, BuildError};

use super::parse::{expand, Dockerfile};
use crate::paths;

/// Transports whose reference is a path (and, after a `:`, an image in it).
const PATH_TRANSPORTS: &[&str] = &["oci", "oci-archive", "docker-archive"];
/// Transports whose whole reference is a path.
const DIR_TRANSPORTS: &[&str] = &["dir", "sif"];
/// Transports that read images already on the server.
const LOCAL_TRANSPORTS: &[&str] = &["containers-storage", "docker-daemon", "ostree"];

/// Checks the base of every stage in `needed` of `df` (`rel` in the repository of `ctx`), with
/// the build `args` of `hephy.toml` and the Dockerfile's global `ARG` defaults substituted.
pub(super) fn check(
    ctx: &BuildContext,
    rel: &str,
    df: &Dockerfile,
    needed: &[usize],
    args: &BTreeMap<String, String>,
) -> Result<(), BuildError> {
    let vars = |name: &str| {
        args.get(name).cloned().or_else(|| {
            df.global_args
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .and_then(|(_, d)| d.clone())
        })
    };
    for &i in needed {
        let stage = &df.stages[i];
        if df.stage_index(&stage.base, i).is_some() {
            continue;
        }
        // A form of substitution hephy does not know: the builder decides, as before.
        let Some(base) = expand(&stage.base, &vars) else {
            continue;
        };
        let Some((transport, reference)) = base.split_once(':') else {
            continue;
        };
        let key = format!("{rel}:{}: FROM", stage.line);
        if PATH_TRANSPORTS.contains(&transport) || DIR_TRANSPORTS.contains(&transport) {
            let dir = if DIR_TRANSPORTS.contains(&transport) {
                reference
            } else {
                reference.split(':').next().unwrap_or(reference)
            };
            paths::layout_dir(ctx.dir(), &key, &base, dir)?;
        } else if LOCAL_TRANSPORTS.contains(&transport) {
            return Err(BuildError::InvalidContext {
                problem: format!(
                    "{key} {base} reads an image already on the build server, where other apps' images are too: name an image in a registry, or an OCI layout in the repository (FROM oci:DIR:TAG)"
                ),
            });
        }
    }
    Ok(())
}
