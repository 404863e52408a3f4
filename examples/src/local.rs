//! `hephy build` and `hephy check`: the server's pipeline, run on the current checkout (for CI).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hephy_backends::dockerfile::default_cache_dir;
use hephy_backends::sandbox::{Sandbox, SandboxError, SandboxPolicy};
use hephy_backends::BuildEnv;
use hephy_core::fs::{write_atomic, FileMode};
use hephy_core::{
    AppName, BuildContext, Events, Job, Pipeline, Platform, Publisher, Revision, Source,
};
use hephy_git::GitSource;

use crate::cli::Style;

/// Flags of `hephy build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The checkout to build.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Platforms to build for, overriding hephy.toml (repeat the flag).
    #[arg(long = "platform")]
    pub platforms: Vec<Platform>,
    /// Publish to this registry (`host[:port][/prefix]`); without it, into an OCI layout.
    #[arg(long, env = "HEPHY_REGISTRY")]
    pub registry: Option<String>,
    /// Talk plain HTTP to the registry (only for registries on a trusted network).
    #[arg(long, env = "HEPHY_INSECURE_REGISTRY")]
    pub insecure_registry: bool,
    /// Registry user name (else Docker's config.json credentials, else anonymous).
    #[arg(long, env = "HEPHY_REGISTRY_USER")]
    pub registry_user: Option<String>,
    /// Registry password or token.
    #[arg(long, env = "HEPHY_REGISTRY_PASSWORD", hide_env_values = true, value_parser = crate::cli::secret)]
    pub registry_password: Option<secrecy::SecretString>,
    /// The OCI layout directory to publish into when no registry is given.
    #[arg(long, default_value = ".hephy/images")]
    pub layout: PathBuf,
    /// The tag (default: `git-<short commit>`, as the server tags pushes).
    #[arg(long)]
    pub tag: Option<String>,
    /// Write the published, digest-pinned reference to this file (for `hephy deploy --image`).
    #[arg(long)]
    pub image_file: Option<PathBuf>,
}

/// Flags of `hephy check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The checkout to explain.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
}

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The commit `HEAD` of the checkout `dir` names, with its ref; `None` when `dir` is not a git
/// checkout (or has no commit yet).
pub fn head(dir: &Path) -> Option<Revision> {
    let git = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--verify", "HEAD^{commit}"])?;
    Some(
        Revision::new(commit)
            .with_ref_name(git(&["symbolic-ref", "-q", "HEAD"]).unwrap_or_default()),
    )
}

/// Where `hephy build` runs build tools: in hephy-server's sandbox when run as root (which the
/// sandbox needs), else on this machine as the current user, with a warning; it is the user's
/// own code, but a build then sees what they see.
fn local_build_env(work: &Path, style: &Style) -> Result<BuildEnv> {
    match Sandbox::new(SandboxPolicy::default(), work.join("sandbox")) {
        Ok(sandbox) => {
            eprintln!(
                "{}",
                style.event_line(&format!(
                    "        building in the build sandbox, as uid {}, as hephy-server does",
                    sandbox.policy().uid
                ))
            );
            Ok(BuildEnv::sandboxed(sandbox, default_cache_dir()))
        }
        Err(e) => {
            let why = match e {
                SandboxError::NotRoot { .. } => "not running as root".to_owned(),
                other => other.to_string(),
            };
            eprintln!(
                "{}",
                style.event_line(&format!(
                    " !     building without the sandbox ({why}): the build tools run as you and see what you see; run hephy build as root to build as hephy-server does"
                ))
            );
            Ok(BuildEnv::unconfined(default_cache_dir()))
        }
    }
}

/// Runs `hephy build`.
pub async fn build(args: BuildArgs, app: Option<&str>, style: &Style) -> Result {
    let app: AppName = match app {
        Some(a) => a.parse()?,
        None => crate::cli::resolve_app(None).or_else(|_| crate::cli::app_from_dir())?,
    };
    let work = tempfile::Builder::new().prefix("hephy-build-").tempdir()?;
    let s = *style;
    let events = Events::from_fn(move |e| eprintln!("{}", s.event_line(&e.render())));
    let mut ctx = match head(&args.dir) {
        // The committed tree, written by the same source the server uses for a push, so the
        // build gives the server's digest.
        Some(rev) => {
            let src = work.path().join("source");
            std::fs::create_dir_all(&src)?;
            let rev = GitSource::repository(&args.dir)
                .materialize(&app, &rev, &src, &events)
                .await?;
            BuildContext::open(&src)?.with_revision(rev)
        }
        None => {
            eprintln!(
                "{}",
                style.event_line(" !     not a git checkout: building the directory as it is")
            );
            BuildContext::open(&args.dir)?
        }
    };
    if !args.platforms.is_empty() {
        ctx.config_mut().build.platforms = args.platforms.clone();
    }
    let publisher: Arc<dyn Publisher> = match &args.registry {
        Some(registry) => crate::publisher::registry(
            registry,
            args.insecure_registry,
            args.registry_user.as_deref(),
            args.registry_password.as_ref(),
        )?,
        None => Arc::new(hephy_oci::OciLayoutPublisher::new(&args.layout)),
    };
    let env = local_build_env(work.path(), style)?;
    let mut builder = Pipeline::builder().publisher(publisher);
    for b in hephy_backends::default_backends(&env) {
        builder = builder.backend(b);
    }
    let pipeline = builder.build()?;
    let mut job = Job::context(app, ctx, work.path().join("work")).publish_only();
    if let Some(t) = &args.tag {
        job = job.with_tag(t.clone());
    }
    let report = pipeline.run(job, &events).await?;
    let reference = report.published.reference.to_string();
    println!("{reference}");
    if let Some(f) = &args.image_file {
        write_atomic(f, format!("{reference}\n").as_bytes(), FileMode::Public)?;
    }
    Ok(())
}

/// Runs `hephy check`.
pub async fn check(args: CheckArgs, style: &Style) -> Result {
    let ctx = BuildContext::open(&args.dir)?;
    // `check` runs no build tool: nothing of the repository runs, sandbox or not.
    let env = BuildEnv::unconfined(default_cache_dir());
    let backends = hephy_backends::default_backends(&env);
    let explanation = hephy_backends::check::explain(&ctx, &backends).await;
    println!("{explanation}");
    if explanation.ok() {
        println!("{}", style.ok("ok: a push would build"));
        Ok(())
    } else {
        Err("this repository would not build; see above".into())
    }
}
