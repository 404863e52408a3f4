//! `hephy-server`: the git push server, the pipeline, a publisher, a deployer and the control API
//! in one process. A thin binary: every part is a library crate; this file only wires them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use hephy_api::server as api;
use hephy_backends::sandbox::SandboxPolicy;
use hephy_core::{Deployer, Events, Pipeline, Publisher};
use hephy_examples::{publisher, runtime};
use hephy_git::auth::Accounts;
use hephy_git::{GitServer, GitSource};

#[derive(Parser)]
#[command(
    name = "hephy-server",
    version,
    about = "git push to deploy: the hephy server"
)]
struct Args {
    /// Where repositories, images, releases and accounts are kept.
    #[arg(long, env = "HEPHY_DATA_DIR", default_value = ".hephy-data")]
    data_dir: PathBuf,
    /// The address of git over smart HTTP and of the API.
    #[arg(long, env = "HEPHY_HTTP_ADDR", default_value = "127.0.0.1:7080")]
    http: SocketAddr,
    /// The address of git over SSH.
    #[arg(long, env = "HEPHY_SSH_ADDR", default_value = "127.0.0.1:2222")]
    ssh: SocketAddr,
    /// Serve no SSH.
    #[arg(long)]
    no_ssh: bool,
    /// The address users reach the server at, for git remotes (default: http://HTTP).
    #[arg(long, env = "HEPHY_PUBLIC_URL")]
    public_url: Option<String>,
    /// Publish images to this registry (`host[:port][/prefix]`); default: an OCI layout in the data dir.
    #[arg(long, env = "HEPHY_REGISTRY")]
    registry: Option<String>,
    /// Talk plain HTTP to the registry.
    #[arg(long, env = "HEPHY_INSECURE_REGISTRY")]
    insecure_registry: bool,
    /// Registry user name (else Docker's config.json credentials, else anonymous).
    #[arg(long, env = "HEPHY_REGISTRY_USER")]
    registry_user: Option<String>,
    /// Registry password or token.
    #[arg(long, env = "HEPHY_REGISTRY_PASSWORD", hide_env_values = true, value_parser = hephy_examples::cli::secret)]
    registry_password: Option<secrecy::SecretString>,
    /// Where releases run.
    #[arg(long, env = "HEPHY_DEPLOYER", value_enum, default_value_t = DeployerKind::Local)]
    deployer: DeployerKind,
    /// The Kubernetes namespace (with --deployer kubernetes or gitops).
    #[arg(long, env = "HEPHY_NAMESPACE", default_value = "default")]
    namespace: String,
    /// The GitOps repository (a path or URL, with --deployer gitops).
    #[arg(long, env = "HEPHY_GITOPS_REPO")]
    gitops_repo: Option<String>,
    /// The branch whose pushes build and deploy.
    #[arg(long, env = "HEPHY_DEPLOY_BRANCH", default_value = "main")]
    deploy_branch: String,
    /// The longest a build of one platform may take (`[build] timeout` in hephy.toml overrides it).
    #[arg(long, env = "HEPHY_BUILD_TIMEOUT", default_value = "30m", value_parser = humantime::parse_duration)]
    build_timeout: Duration,
    /// The largest push accepted, in bytes.
    #[arg(long, env = "HEPHY_MAX_PUSH_BYTES", default_value_t = 2 << 30)]
    max_push_bytes: u64,
    /// The memory limit of one build (`4G`, `512M`; `0`: none).
    #[arg(long, env = "HEPHY_BUILD_MEMORY", default_value = "4G", value_parser = runtime::parse_size)]
    build_memory: u64,
    /// The process and thread limit of one build (`0`: none).
    #[arg(long, env = "HEPHY_BUILD_PIDS", default_value_t = 1024)]
    build_pids: u64,
    /// How many CPUs one build may use, like `1.5` (default: all).
    #[arg(long, env = "HEPHY_BUILD_CPUS")]
    build_cpus: Option<f64>,
    /// Whether builds may download dependencies (they never reach this server's own loopback);
    /// an app's `[build] network = false` turns it off for that app.
    #[arg(long, env = "HEPHY_BUILD_NETWORK", value_enum, default_value_t = OnOff::On)]
    build_network: OnOff,
    /// Run build tools without the sandbox, as root, seeing the whole server: only where
    /// everyone who can push may run code as root on this machine.
    #[arg(long)]
    unsafe_no_build_sandbox: bool,
    /// A registry (`host[:port]`, or `host[:port]/path`) whose images `hephy deploy --image` may
    /// name, pulled with this server's credentials; repeat it or separate with commas. Without it,
    /// only images of apps the caller may push to are deployed.
    #[arg(long, env = "HEPHY_ALLOW_IMAGE_REGISTRY", value_delimiter = ',')]
    allow_image_registry: Vec<String>,
    /// Where the local deployer's routers run.
    #[arg(long, env = "HEPHY_ROUTER", value_enum, default_value_t = RouterMode::Process)]
    router: RouterMode,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RouterMode {
    /// `hephy-router`, a process of its own that apps' traffic goes through while this server
    /// stops, crashes or is replaced (started when none runs).
    Process,
    /// Routers inside this server: apps are unreachable while it is down, and stopped with it.
    Embedded,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnOff {
    /// Allowed.
    On,
    /// Not allowed.
    Off,
}

#[derive(Clone, Copy, ValueEnum)]
enum DeployerKind {
    /// Run releases on this machine with runc (the default).
    Local,
    /// Deploy to the Kubernetes cluster of the current kubeconfig.
    Kubernetes,
    /// Commit releases to a Flux GitOps repository.
    Gitops,
    /// Build and publish only.
    None,
}

#[tokio::main]
async fn main() -> ExitCode {
    runtime::init_logging();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hephy-server: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    // The data directory holds the accounts, the admin token and the releases' config vars:
    // made owner-only (0700) when hephy creates it.
    hephy_core::fs::create_dir_all(&args.data_dir, hephy_core::fs::FileMode::Private).map_err(
        |e| {
            format!(
                "cannot create the data directory {}: {e}",
                args.data_dir.display()
            )
        },
    )?;
    let data = std::fs::canonicalize(&args.data_dir)?;
    let accounts = Accounts::open(&data)?;
    let admin_token = runtime::bootstrap_admin(&accounts, &data)?;
    // Before anything serves: a server that cannot confine builds does not start.
    let policy = SandboxPolicy::default()
        .with_memory((args.build_memory > 0).then_some(args.build_memory))
        .with_pids((args.build_pids > 0).then_some(args.build_pids))
        .with_cpus(args.build_cpus)
        .with_network(args.build_network == OnOff::On);
    let build_env = runtime::build_env(&data, policy, args.unsafe_no_build_sandbox).await?;

    let log = Events::from_fn(|e| eprintln!("{}", e.render()));
    let images = data.join("images");
    let local = match args.deployer {
        DeployerKind::Local => {
            let registry = match &args.registry {
                Some(r) => Some(publisher::options(
                    r,
                    args.insecure_registry,
                    args.registry_user.as_deref(),
                    args.registry_password.as_ref(),
                )?),
                None => None,
            };
            let router = match args.router {
                RouterMode::Process => Some(runtime::ensure_router(&data).await?),
                RouterMode::Embedded => None,
            };
            Some(runtime::local_deployer(&data, &images, registry, router, &log).await?)
        }
        _ => None,
    };
    // A release whose process died is started again (with backoff) while this server runs.
    let _supervisor = local
        .as_ref()
        .map(|l| l.supervise(Duration::from_secs(1), log.clone()));
    let deployer: Option<Arc<dyn Deployer>> = match args.deployer {
        DeployerKind::Local => local.clone().map(|l| l as Arc<dyn Deployer>),
        DeployerKind::Kubernetes => Some(runtime::kubernetes_deployer(&args.namespace).await?),
        DeployerKind::Gitops => {
            let repo = args
                .gitops_repo
                .as_deref()
                .ok_or("--deployer gitops needs --gitops-repo PATH_OR_URL")?;
            Some(runtime::gitops_deployer(&data, repo, &args.namespace)?)
        }
        DeployerKind::None => None,
    };

    let publisher: Arc<dyn Publisher> = match &args.registry {
        Some(r) => publisher::registry(
            r,
            args.insecure_registry,
            args.registry_user.as_deref(),
            args.registry_password.as_ref(),
        )?,
        None => Arc::new(hephy_oci::OciLayoutPublisher::new(&images)),
    };

    let mut pipeline = Pipeline::builder()
        .source(Arc::new(GitSource::new(&data)))
        .publisher(publisher);
    for b in hephy_backends::default_backends(&build_env) {
        pipeline = pipeline.backend(b);
    }
    if let Some(d) = &deployer {
        pipeline = pipeline.deployer(d.clone());
    }
    let pipeline = Arc::new(pipeline.build()?);

    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", args.http));
    let url_runtime = local.clone();
    let git = GitServer::builder(&data)
        .pipeline(pipeline)
        // hephy's own users have hephy's CLI: show its advice after the messages.
        .cli_hints(true)
        .accounts(accounts.clone())
        .deploy_branch(args.deploy_branch.clone())
        .build_timeout(args.build_timeout)
        .max_push_bytes(args.max_push_bytes)
        .url_hook(move |app, _| url_runtime.as_ref().and_then(|r| r.url(app).ok()))
        .build()?;

    let mut state = api::ApiState::new(git.clone(), accounts.clone(), public_url.clone());
    if let Some(d) = &deployer {
        state = state.with_deployer(d.clone());
    }
    if let Some(l) = &local {
        state = state.with_runtime(l.clone());
    }
    state = state.with_image_policy(publisher::image_policy(
        args.registry.as_deref(),
        &args.allow_image_registry,
    ));
    if !args.no_ssh {
        state = state.with_ssh(format!("ssh://git@{}", args.ssh));
    }
    let app = git.http_router().merge(api::router(state));

    let http = tokio::net::TcpListener::bind(args.http)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {}: {e}; choose another with --http",
                args.http
            )
        })?;
    let ssh = if args.no_ssh {
        None
    } else {
        let l = tokio::net::TcpListener::bind(args.ssh).await.map_err(|e| {
            format!(
                "cannot listen on {}: {e}; choose another with --ssh, or --no-ssh",
                args.ssh
            )
        })?;
        let server = hephy_git::ssh::SshServer::new(
            git.clone(),
            accounts.clone(),
            data.join("ssh_host_ed25519_key"),
        )?;
        Some(tokio::spawn(async move { server.run(l).await }))
    };

    runtime::print_next_steps(
        &public_url,
        (!args.no_ssh).then_some(args.ssh),
        &data,
        admin_token.as_ref(),
    );

    let serve =
        hephy_git::axum::serve(http, app).with_graceful_shutdown(runtime::shutdown_signal());
    serve.await?;
    if let Some(s) = ssh {
        s.abort();
    }
    if let (Some(l), RouterMode::Embedded) = (local, args.router) {
        // Running containers are brought back by the next start. With the router process, apps
        // keep serving through it while this server is down, and the next start adopts them.
        if let Err(e) = l.shutdown().await {
            eprintln!("hephy-server: shutting down the local deployer: {e}");
        }
    }
    Ok(())
}
