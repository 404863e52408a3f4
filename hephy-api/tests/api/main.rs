//! The control API served on a real socket, called with the real client.

use hephy_api::image_policy::ImagePolicy;
use hephy_api::{ApiState, Client, ClientError};
use hephy_core::AppName;
use hephy_git::auth::Accounts;
use hephy_git::GitServer;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Api {
    url: String,
    accounts: Accounts,
    git: GitServer,
    _dir: tempfile::TempDir,
}

async fn serve(policy: Option<ImagePolicy>) -> Result<Api> {
    let dir = tempfile::tempdir()?;
    let accounts = Accounts::open(dir.path())?;
    let git = GitServer::builder(dir.path())
        .accounts(accounts.clone())
        .build()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let mut state = ApiState::new(git.clone(), accounts.clone(), url.clone());
    if let Some(p) = policy {
        state = state.with_image_policy(p);
    }
    let router = hephy_api::router(state);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(Api {
        url,
        accounts,
        git,
        _dir: dir,
    })
}

fn pinned(name: &str) -> String {
    format!("{name}@sha256:{}", "1".repeat(64))
}

/// The status and message of a refused call.
fn refusal<T: std::fmt::Debug>(r: std::result::Result<T, ClientError>) -> Result<(u16, String)> {
    match r {
        Err(ClientError::Api { status, message }) => Ok((status, message)),
        other => Err(format!("expected the API to refuse, got {other:?}").into()),
    }
}

/// A user with push rights to one app cannot deploy another app's image, nor an image from a
/// registry the admin did not allow; their own app's image passes the policy (and then meets
/// the deployer, which this server has not).
#[tokio::test]
async fn image_deploys_stay_within_the_callers_apps() -> Result {
    let api = serve(None).await?;
    api.accounts.add_user("root", true)?;
    let (mine, theirs): (AppName, AppName) = ("mine".parse()?, "theirs".parse()?);
    api.git.create_app(&mine, "root")?;
    api.git.create_app(&theirs, "root")?;
    api.accounts.add_user("alice", false)?;
    api.accounts.grant(&mine, "alice")?;
    let alice = Client::new(&api.url, api.accounts.create_token("alice")?);

    let (status, message) = refusal(
        alice
            .deploy_image(&mine, &pinned("hephy.local/theirs"))
            .await,
    )?;
    assert_eq!(status, 403);
    insta::assert_snapshot!(message, @"user alice may not use app theirs: ask its owner or an admin for access");

    let (status, message) = refusal(
        alice
            .deploy_image(&mine, &pinned("registry.example/private/db"))
            .await,
    )?;
    assert_eq!(status, 403);
    insta::assert_snapshot!(message, @"registry.example/private/db@sha256:1111111111111111111111111111111111111111111111111111111111111111 comes from registry.example, which this server does not deploy from: deploy an image of an app you may push to (hephy.local/APP@sha256:...), or ask the admin to start hephy-server with --allow-image-registry registry.example");

    // Past the policy: this server has no deployer, and says so.
    let (status, _) = refusal(alice.deploy_image(&mine, &pinned("hephy.local/mine")).await)?;
    assert_eq!(
        status, 501,
        "an image of the caller's own app passes the policy"
    );
    Ok(())
}

/// An admin's allowed registry opens that registry (or that path of it) only.
#[tokio::test]
async fn allowed_registries_open_only_what_the_admin_named() -> Result {
    let api = serve(Some(
        ImagePolicy::new("reg.example:5000", "apps").allow_registry("ghcr.io/acme"),
    ))
    .await?;
    api.accounts.add_user("root", true)?;
    let app: AppName = "web".parse()?;
    api.git.create_app(&app, "root")?;
    let admin = Client::new(&api.url, api.accounts.create_token("root")?);
    let (status, _) = refusal(admin.deploy_image(&app, &pinned("ghcr.io/acme/tool")).await)?;
    assert_eq!(status, 501);
    let (status, _) = refusal(
        admin
            .deploy_image(&app, &pinned("reg.example:5000/apps/web"))
            .await,
    )?;
    assert_eq!(status, 501);
    let (status, message) = refusal(
        admin
            .deploy_image(&app, &pinned("ghcr.io/acme-evil/tool"))
            .await,
    )?;
    assert_eq!(status, 403, "{message}");
    // The local image store is not this server's: its names are no app's.
    let (status, message) = refusal(admin.deploy_image(&app, &pinned("hephy.local/web")).await)?;
    assert_eq!(status, 403, "{message}");
    Ok(())
}
