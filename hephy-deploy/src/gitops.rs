//! [`FluxDeployer`]: releases as commits on a GitOps repository that Flux applies.
//!
//! Each release renders the same objects as the [Kubernetes deployer](crate::kubernetes)
//! ([`manifests::render`]) into a kustomize tree and makes one commit,
//! `deploy APP vN: REGISTRY/REPOSITORY@DIGEST`, on the repository's branch:
//!
//! ```text
//! apps/kustomization.yaml           every app directory, for Flux's Kustomization at ./apps
//! apps/APP/kustomization.yaml       the app's objects
//! apps/APP/deployment.yaml
//! apps/APP/service.yaml             or canary.yaml with strategy = "blue-green" | "canary"
//! apps/APP/secret.yaml              only with plain secrets (see below)
//! apps/APP/releases.json            the release history (hephy-core's JSON), oldest first
//! flux-system/kustomization.yaml    written once, when the tree has no flux-system/ yet:
//! flux-system/gitrepository.yaml      the Flux GitRepository (source.toolkit.fluxcd.io/v1)
//! flux-system/kustomization-apps.yaml and Kustomization (kustomize.toolkit.fluxcd.io/v1)
//! ```
//!
//! Apply `flux-system/` once with `kubectl apply -k flux-system` (or keep your own bootstrap's
//! objects and ignore it); from then on Flux reconciles `./apps` from the branch. History is
//! the commit log and `apps/APP/releases.json`; rollback (the [`Deployer`] trait's default) is
//! a new commit that restores vN's image, config and settings, so the log only grows.
//!
//! # Secrets
//!
//! By default config vars never go into the repository: the Deployment reads its environment
//! from the Secret `APP-env` (marked optional), which you provide encrypted through SOPS or as a
//! SealedSecret next to the app, and a release that carries config vars is refused with an error
//! saying so. [`FluxDeployerBuilder::plain_secrets`] writes them into `apps/APP/secret.yaml` (and
//! `releases.json`) instead, readable by everyone who can read the repository: only for a
//! private repository whose readers may see every app's configuration.
//!
//! # Git
//!
//! Commits are made with gix in a bare repository under the deployer's work directory, which
//! is only a cache of the GitOps repository. The transport uses the `git` client at run time:
//! `git ls-remote` to learn the branch's tip, `git fetch` to bring it when it is not cached, and
//! `git push` of the new commit without force, so a commit made elsewhere in between is never
//! overwritten: the push is rejected, and the release is made again on top of the new tip (a
//! few times, then the deploy fails). The repository is anything `git push` accepts: a
//! local (bare) repository path, a `file://`, `ssh://` or `https://` URL, with the credentials
//! git is configured with.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use hephy_deploy::gitops::FluxDeployer;
//! let deployer = FluxDeployer::builder("/srv/git/gitops.git", "/var/lib/hephy/gitops")
//!     .namespace("apps")
//!     .flux_url("ssh://git@git.example.com/ops/gitops.git")
//!     .build()?;
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use gix::bstr::ByteSlice;
use gix::objs::tree::EntryKind;
use gix::ObjectId;
use hephy_core::{
    async_trait, AppName, DeployError, Deployer, Events, NewRelease, Release, ReleaseVersion,
};
use tokio::sync::Mutex;

use crate::manifests::{self, to_yaml, ManifestError, ManifestOptions};

/// The name of the Flux `GitRepository` and the prefix of the `Kustomization` hephy writes.
pub const FLUX_SOURCE_NAME: &str = "hephy-gitops";
/// How often a release is made again on top when the branch moved before its push.
const PUSH_ATTEMPTS: usize = 5;

/// The name of the Flux `Kustomization` that applies `./apps`.
pub const FLUX_KUSTOMIZATION_NAME: &str = "hephy-apps";

/// The error returned by [`FluxDeployerBuilder::build`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GitOpsError {
    /// The namespace or a label is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The branch name is not a valid git branch.
    #[error("invalid branch {branch:?}: use a plain branch name like main")]
    Branch {
        /// The branch given.
        branch: String,
    },
    /// The repository location is empty.
    #[error("no GitOps repository given: pass a local repository path or a git URL")]
    Repository,
}

/// Builds a [`FluxDeployer`]; from [`FluxDeployer::builder`].
#[derive(Debug)]
#[must_use]
pub struct FluxDeployerBuilder {
    repository: String,
    work_dir: PathBuf,
    branch: String,
    namespace: String,
    labels: Vec<(String, String)>,
    flux_url: Option<String>,
    flux_secret: Option<String>,
    flux_interval: String,
    plain_secrets: bool,
    author: (String, String),
}

impl FluxDeployerBuilder {
    /// The branch Flux follows; `main` by default.
    pub fn branch(mut self, branch: impl Into<String>) -> Self {
        self.branch = branch.into();
        self
    }

    /// The namespace the apps' objects go to; `default` by default. It must exist in the
    /// cluster.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// A label added to every object.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }

    /// The URL Flux in the cluster clones the repository from, when it differs from the one
    /// hephy pushes to (always, for a local path); the push location by default.
    pub fn flux_url(mut self, url: impl Into<String>) -> Self {
        self.flux_url = Some(url.into());
        self
    }

    /// The Secret in `flux-system` with the credentials Flux uses for the repository.
    pub fn flux_secret(mut self, name: impl Into<String>) -> Self {
        self.flux_secret = Some(name.into());
        self
    }

    /// How often Flux looks for new commits; `1m` by default.
    pub fn flux_interval(mut self, interval: impl Into<String>) -> Self {
        self.flux_interval = interval.into();
        self
    }

    /// Writes config vars into the repository as a plain Secret (see the
    /// [module docs](self#secrets)); off by default.
    pub fn plain_secrets(mut self, plain: bool) -> Self {
        self.plain_secrets = plain;
        self
    }

    /// The author and committer of release commits; `hephy <hephy@localhost>` by default.
    pub fn author(mut self, name: impl Into<String>, email: impl Into<String>) -> Self {
        self.author = (name.into(), email.into());
        self
    }

    /// The deployer; an error names an invalid setting.
    pub fn build(self) -> Result<FluxDeployer, GitOpsError> {
        if self.repository.trim().is_empty() {
            return Err(GitOpsError::Repository);
        }
        let b = &self.branch;
        let valid_branch = !b.is_empty()
            && !b.starts_with(['-', '/'])
            && !b.ends_with(['/', '.'])
            && !b.ends_with(".lock")
            && !b.contains("..")
            && !b.contains("//")
            && !b.contains("@{")
            && !b.chars().any(|c| c.is_control() || " ~^:?*[\\".contains(c));
        if !valid_branch {
            return Err(GitOpsError::Branch {
                branch: self.branch,
            });
        }
        let mut options =
            ManifestOptions::new(&self.namespace)?.secret_optional(!self.plain_secrets);
        for (k, v) in &self.labels {
            options = options.label(k, v)?;
        }
        Ok(FluxDeployer {
            flux_url: self.flux_url.unwrap_or_else(|| self.repository.clone()),
            repository: self.repository,
            cache: self.work_dir.join("gitops.git"),
            branch: self.branch,
            options,
            flux_secret: self.flux_secret,
            flux_interval: self.flux_interval,
            plain_secrets: self.plain_secrets,
            author: self.author,
            lock: Mutex::new(()),
        })
    }
}

/// Deploys releases as commits on a GitOps repository for Flux (see the
/// [module docs](self)).
#[derive(Debug)]
pub struct FluxDeployer {
    repository: String,
    cache: PathBuf,
    branch: String,
    options: ManifestOptions,
    flux_url: String,
    flux_secret: Option<String>,
    flux_interval: String,
    plain_secrets: bool,
    author: (String, String),
    // One release at a time per deployer: each commit's parent is the previous one.
    lock: Mutex<()>,
}

/// What one release commit writes and removes.
struct TreeChange {
    upsert: BTreeMap<String, Vec<u8>>,
    remove: Vec<String>,
}

impl FluxDeployer {
    /// A builder for a deployer that pushes to `repository` (a local repository path or a git
    /// URL) and keeps its cache under `work_dir`.
    pub fn builder(
        repository: impl Into<String>,
        work_dir: impl AsRef<Path>,
    ) -> FluxDeployerBuilder {
        FluxDeployerBuilder {
            repository: repository.into(),
            work_dir: work_dir.as_ref().to_owned(),
            branch: "main".into(),
            namespace: "default".into(),
            labels: Vec::new(),
            flux_url: None,
            flux_secret: None,
            flux_interval: "1m".into(),
            plain_secrets: false,
            author: ("hephy".into(), "hephy@localhost".into()),
        }
    }

    /// The repository releases are pushed to.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The branch Flux follows.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    async fn git_output(&self, args: &[&str]) -> Result<std::process::Output, DeployError> {
        tokio::process::Command::new("git")
            .arg("--git-dir")
            .arg(&self.cache)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| {
                DeployError::other(
                    "cannot run git, which the GitOps deployer uses to fetch and push: install git",
                    e,
                )
            })
    }

    async fn git(&self, args: &[&str]) -> Result<String, DeployError> {
        let out = self.git_output(args).await?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(DeployError::Other {
                message: format!(
                    "git {} failed for the GitOps repository {}: {}",
                    args.first().copied().unwrap_or_default(),
                    self.repository,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                source: None,
            })
        }
    }

    /// Brings the branch's tip into the cache; `None` when the branch does not exist yet.
    async fn sync(&self) -> Result<Option<ObjectId>, DeployError> {
        let cache = self.cache.clone();
        tokio::task::spawn_blocking(move || {
            if cache.join("HEAD").is_file() {
                gix::open(&cache).map(drop).map_err(|e| e.to_string())
            } else {
                std::fs::create_dir_all(&cache).map_err(|e| e.to_string())?;
                gix::init_bare(&cache).map(drop).map_err(|e| e.to_string())
            }
        })
        .await
        .map_err(|e| DeployError::other("the GitOps cache task failed", e))?
        .map_err(|e| {
            DeployError::other(
                format!(
                    "cannot open the GitOps cache repository {}: remove the directory to make a new one",
                    self.cache.display()
                ),
                e,
            )
        })?;
        let refname = format!("refs/heads/{}", self.branch);
        let listed = self
            .git(&["ls-remote", "--", &self.repository, &refname])
            .await?;
        let Some(hex) = listed
            .lines()
            .find(|l| l.ends_with(&format!("\t{refname}")))
            .and_then(|l| l.split('\t').next())
        else {
            return Ok(None);
        };
        let tip = ObjectId::from_hex(hex.as_bytes()).map_err(|e| {
            DeployError::other(format!("git ls-remote printed an invalid id {hex:?}"), e)
        })?;
        if !self.has_commit(tip).await? {
            let spec = format!("+{refname}:refs/remotes/gitops/{}", self.branch);
            self.git(&[
                "fetch",
                "--quiet",
                "--no-tags",
                "--",
                &self.repository,
                &spec,
            ])
            .await?;
        }
        Ok(Some(tip))
    }

    async fn has_commit(&self, id: ObjectId) -> Result<bool, DeployError> {
        let cache = self.cache.clone();
        tokio::task::spawn_blocking(move || -> Result<bool, gix::Error> {
            let repo = gix::open(&cache)?;
            let found = repo.try_find_object(id)?.is_some();
            Ok(found)
        })
        .await
        .map_err(|e| DeployError::other("the GitOps cache task failed", e))?
        .map_err(|e| DeployError::other("cannot read the GitOps cache repository", e))
    }

    /// The app directories and files of the tree at `tip`, and the releases of `app`.
    async fn read(&self, tip: Option<ObjectId>, app: &AppName) -> Result<Snapshot, DeployError> {
        let Some(tip) = tip else {
            return Ok(Snapshot::default());
        };
        let cache = self.cache.clone();
        let app = app.clone();
        let snapshot = tokio::task::spawn_blocking(move || read_snapshot(&cache, tip, &app))
            .await
            .map_err(|e| DeployError::other("the GitOps cache task failed", e))??;
        Ok(snapshot)
    }

    fn flux_files(&self) -> Result<BTreeMap<String, Vec<u8>>, DeployError> {
        let mut source_spec = serde_json::json!({
            "interval": self.flux_interval,
            "url": self.flux_url,
            "ref": {"branch": self.branch},
        });
        if let Some(s) = &self.flux_secret {
            source_spec["secretRef"] = serde_json::json!({ "name": s });
        }
        let source = serde_json::json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "GitRepository",
            "metadata": {"name": FLUX_SOURCE_NAME, "namespace": "flux-system"},
            "spec": source_spec,
        });
        let apps = serde_json::json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {"name": FLUX_KUSTOMIZATION_NAME, "namespace": "flux-system"},
            "spec": {
                "interval": "10m",
                "retryInterval": "1m",
                "path": "./apps",
                "prune": true,
                "wait": true,
                "timeout": "5m",
                "sourceRef": {"kind": "GitRepository", "name": FLUX_SOURCE_NAME},
            },
        });
        let mut files = BTreeMap::new();
        files.insert(
            "flux-system/gitrepository.yaml".to_owned(),
            yaml(&source)?.into_bytes(),
        );
        files.insert(
            "flux-system/kustomization-apps.yaml".to_owned(),
            yaml(&apps)?.into_bytes(),
        );
        files.insert(
            "flux-system/kustomization.yaml".to_owned(),
            kustomization(&["gitrepository.yaml", "kustomization-apps.yaml"])?.into_bytes(),
        );
        Ok(files)
    }

    fn release_files(
        &self,
        release: &Release,
        history: &[Release],
        snapshot: &Snapshot,
    ) -> Result<TreeChange, DeployError> {
        let app = &release.app;
        let m = manifests::render(release, &self.options).map_err(|e| {
            DeployError::other(format!("cannot deploy {} of {app}", release.version), e)
        })?;
        let dir = format!("apps/{app}");
        let mut files = BTreeMap::new();
        let mut resources = Vec::new();
        if self.plain_secrets {
            files.insert(format!("{dir}/secret.yaml"), yaml(&m.secret)?);
            resources.push("secret.yaml");
        }
        files.insert(format!("{dir}/deployment.yaml"), yaml(&m.deployment)?);
        resources.push("deployment.yaml");
        if let Some(s) = &m.service {
            files.insert(format!("{dir}/service.yaml"), yaml(s)?);
            resources.push("service.yaml");
        }
        if let Some(c) = &m.canary {
            files.insert(format!("{dir}/canary.yaml"), yaml(c)?);
            resources.push("canary.yaml");
        }
        files.insert(
            format!("{dir}/kustomization.yaml"),
            kustomization(&resources)?,
        );
        let json = serde_json::to_string_pretty(history)
            .map_err(|e| DeployError::other(format!("cannot write the releases of {app}"), e))?;
        files.insert(format!("{dir}/releases.json"), json + "\n");

        let mut apps: BTreeSet<String> = snapshot.apps.iter().cloned().collect();
        apps.insert(app.to_string());
        let apps: Vec<&str> = apps.iter().map(String::as_str).collect();
        files.insert("apps/kustomization.yaml".into(), kustomization(&apps)?);

        let mut upsert: BTreeMap<String, Vec<u8>> = files
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        if !snapshot.has_flux_system {
            upsert.extend(self.flux_files()?);
        }
        // Files of an earlier release that this one no longer has (service.yaml after a switch
        // to a Flagger strategy, secret.yaml after turning plain secrets off).
        let remove = snapshot
            .app_files
            .iter()
            .map(|f| format!("{dir}/{f}"))
            .filter(|p| !upsert.contains_key(p))
            .collect();
        Ok(TreeChange { upsert, remove })
    }

    /// One attempt at a release: `None` when the branch moved between reading its tip and
    /// pushing (another hephy instance or a person pushed), so the caller tries again on top.
    async fn try_deploy(
        &self,
        new: &NewRelease,
        events: &Events,
    ) -> Result<Option<Release>, DeployError> {
        let new = new.clone();
        let app = new.app.clone();
        let tip = self.sync().await?;
        let snapshot = self.read(tip, &app).await?;
        let mut history = snapshot.releases.clone();
        let previous = history.last();
        let version = ReleaseVersion::next_after(previous.map(|p| p.version));
        let release = new.into_release(version, manifests::release_time(), previous);
        if !self.plain_secrets && !release.config.is_empty() {
            let names: Vec<&str> = release.config.iter().map(|(k, _)| k).collect();
            return Err(DeployError::Other {
                message: format!(
                    "{app} has config vars ({}), which the GitOps deployer does not write into the repository: put them into an encrypted Secret {} (SOPS or a SealedSecret) in the cluster and unset them in hephy, or enable plain secrets for a private repository",
                    names.join(", "),
                    manifests::secret_name(&app)
                ),
                source: None,
            });
        }
        let image = manifests::pinned_image(&release)
            .map_err(|e| DeployError::other(format!("cannot deploy {version} of {app}"), e))?;
        history.push(release.clone());
        let change = self.release_files(&release, &history, &snapshot)?;
        let message = format!("deploy {app} {version}: {image}\n\n{}\n", release.cause);

        let cache = self.cache.clone();
        let author = self.author.clone();
        let base = snapshot.tree;
        let commit = tokio::task::spawn_blocking(move || {
            write_commit(&cache, tip, base, &change, &message, &author)
        })
        .await
        .map_err(|e| DeployError::other("the GitOps commit task failed", e))??;

        let refspec = format!("{commit}:refs/heads/{}", self.branch);
        let out = self
            .git_output(&["push", "--porcelain", "--", &self.repository, &refspec])
            .await?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            // `--porcelain` marks a rejected ref with `!` and says why; a non-fast-forward or
            // a lost ref lock means the branch moved, anything else is a real failure.
            let moved = stdout.lines().any(|l| l.starts_with('!'))
                && [
                    "non-fast-forward",
                    "fetch first",
                    "cannot lock ref",
                    "failed to update ref",
                    "stale info",
                ]
                .iter()
                .any(|m| stdout.contains(m) || stderr.contains(m));
            if moved {
                return Ok(None);
            }
            return Err(DeployError::Other {
                message: format!(
                    "cannot push {version} of {app} to {} of the GitOps repository {}: {}",
                    self.branch,
                    self.repository,
                    stderr.trim()
                ),
                source: None,
            });
        }
        events.log(format!(
            "committed {version} of {app} as {} on {} of {}; Flux applies it at its next reconciliation",
            commit.to_hex_with_len(12),
            self.branch,
            self.repository
        ));
        Ok(Some(release))
    }
}

fn yaml<T: serde::Serialize>(object: &T) -> Result<String, DeployError> {
    to_yaml(object).map_err(|e| DeployError::other("cannot render the GitOps tree", e))
}

fn kustomization(resources: &[&str]) -> Result<String, DeployError> {
    yaml(&serde_json::json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
    }))
}

/// What the tree at the branch's tip holds.
#[derive(Default)]
struct Snapshot {
    tree: Option<ObjectId>,
    apps: Vec<String>,
    app_files: Vec<String>,
    releases: Vec<Release>,
    has_flux_system: bool,
}

fn cache_error(e: impl Into<hephy_core::BoxError>) -> DeployError {
    DeployError::other("cannot read the GitOps repository's tree", e)
}

fn read_snapshot(cache: &Path, tip: ObjectId, app: &AppName) -> Result<Snapshot, DeployError> {
    let repo = gix::open(cache).map_err(cache_error)?;
    let commit = repo.find_commit(tip).map_err(cache_error)?;
    let tree = commit.tree().map_err(cache_error)?;
    let mut s = Snapshot {
        tree: Some(tree.id),
        has_flux_system: tree
            .lookup_entry_by_path("flux-system")
            .map_err(cache_error)?
            .is_some(),
        ..Snapshot::default()
    };
    let names = |path: &str, trees: bool| -> Result<Vec<String>, DeployError> {
        let Some(entry) = tree.lookup_entry_by_path(path).map_err(cache_error)? else {
            return Ok(Vec::new());
        };
        if !entry.mode().is_tree() {
            return Ok(Vec::new());
        }
        let sub = entry.object().map_err(cache_error)?.into_tree();
        let mut out = Vec::new();
        for e in sub.iter() {
            let e = e.map_err(cache_error)?;
            if e.mode().is_tree() == trees {
                out.push(e.filename().to_str_lossy().into_owned());
            }
        }
        Ok(out)
    };
    s.apps = names("apps", true)?;
    s.app_files = names(&format!("apps/{app}"), false)?;
    let path = format!("apps/{app}/releases.json");
    if let Some(entry) = tree.lookup_entry_by_path(&path).map_err(cache_error)? {
        let blob = entry.object().map_err(cache_error)?;
        s.releases = serde_json::from_slice(&blob.data).map_err(|e| {
            DeployError::other(
                format!("{path} in the GitOps repository is not valid hephy JSON: restore it with a commit that fixes it"),
                e,
            )
        })?;
    }
    Ok(s)
}

fn write_commit(
    cache: &Path,
    parent: Option<ObjectId>,
    base_tree: Option<ObjectId>,
    change: &TreeChange,
    message: &str,
    author: &(String, String),
) -> Result<ObjectId, DeployError> {
    let write_error = |e: gix::Error| DeployError::other("cannot write the release commit", e);
    let repo = gix::open(cache).map_err(cache_error)?;
    let mut editor = match base_tree {
        Some(t) => repo.edit_tree(t).map_err(write_error)?,
        None => repo.empty_tree().edit().map_err(write_error)?,
    };
    for path in &change.remove {
        editor.remove(path.as_str()).map_err(write_error)?;
    }
    for (path, data) in &change.upsert {
        let blob = repo.write_blob(data).map_err(write_error)?;
        editor
            .upsert(path.as_str(), EntryKind::Blob, blob)
            .map_err(write_error)?;
    }
    let tree = editor.write().map_err(write_error)?;
    let signature = gix::actor::Signature {
        name: author.0.as_str().into(),
        email: author.1.as_str().into(),
        time: gix::date::Time::now_local_or_utc(),
    };
    let commit = gix::objs::Commit {
        tree: tree.detach(),
        parents: parent.into_iter().collect(),
        author: signature.clone(),
        committer: signature,
        encoding: None,
        message: message.into(),
        extra_headers: Vec::new(),
    };
    Ok(repo.write_object(&commit).map_err(write_error)?.detach())
}

#[async_trait]
impl Deployer for FluxDeployer {
    async fn deploy(&self, new: NewRelease, events: &Events) -> Result<Release, DeployError> {
        let _one_at_a_time = self.lock.lock().await;
        for _ in 0..PUSH_ATTEMPTS {
            if let Some(release) = self.try_deploy(&new, events).await? {
                return Ok(release);
            }
            events.log(format!(
                "{} of the GitOps repository moved while committing; making the release again on top",
                self.branch
            ));
        }
        Err(DeployError::Other {
            message: format!(
                "cannot release {}: {} of the GitOps repository {} moved during each of {PUSH_ATTEMPTS} attempts; deploy again when it is quieter",
                new.app, self.branch, self.repository
            ),
            source: None,
        })
    }

    async fn releases(&self, app: &AppName) -> Result<Vec<Release>, DeployError> {
        let _one_at_a_time = self.lock.lock().await;
        let tip = self.sync().await?;
        Ok(self.read(tip, app).await?.releases)
    }
}
