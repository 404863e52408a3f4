//! The control API the `hephy` CLI talks to: apps, keys, config, releases, rollback, logs.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use hephy_core::{
    AppName, ConfigChange, DeployConfig, DeployError, Deployer, Events, NewRelease, Reference,
    ReleaseCause, ReleaseVersion,
};
use hephy_git::auth::{Accounts, User};
use hephy_git::GitServer;
use serde::Deserialize;

use crate::image_policy::{ImagePolicy, ImageSource};
use crate::runtime::{AppRuntime, LineStream};
use crate::types::*;

/// Everything the API serves from.
#[derive(Clone)]
pub struct ApiState {
    git: GitServer,
    accounts: Accounts,
    deployer: Option<Arc<dyn Deployer>>,
    runtime: Option<Arc<dyn AppRuntime>>,
    http_base: String,
    ssh_base: Option<String>,
    images: ImagePolicy,
}

impl ApiState {
    /// The API over `git` (apps and repositories) and `accounts` (users, tokens, keys).
    /// `http_base` is the server's public HTTP address, used in git remote URLs.
    pub fn new(git: GitServer, accounts: Accounts, http_base: impl Into<String>) -> Self {
        ApiState {
            git,
            accounts,
            deployer: None,
            runtime: None,
            http_base: http_base.into().trim_end_matches('/').to_owned(),
            ssh_base: None,
            images: ImagePolicy::new("hephy.local", ""),
        }
    }

    /// Which images `POST /api/v1/apps/{app}/deploy` accepts: by default only images of apps the
    /// caller may push to, in the local image store (`hephy.local/APP`). A server that publishes
    /// to a registry says so here, and lists the other registries its admin allows.
    pub fn with_image_policy(mut self, policy: ImagePolicy) -> Self {
        self.images = policy;
        self
    }

    /// Serves releases, config and rollback from `deployer`.
    pub fn with_deployer(mut self, deployer: Arc<dyn Deployer>) -> Self {
        self.deployer = Some(deployer);
        self
    }

    /// Serves app lifecycle, URLs and logs from `runtime`.
    pub fn with_runtime(mut self, runtime: Arc<dyn AppRuntime>) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Shows SSH remotes as `ssh_base/APP.git` (like `ssh://git@host:2222`).
    pub fn with_ssh(mut self, ssh_base: impl Into<String>) -> Self {
        self.ssh_base = Some(ssh_base.into().trim_end_matches('/').to_owned());
        self
    }
}

/// The API's routes under `/api/v1`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/apps", get(list_apps).post(create_app))
        .route("/api/v1/apps/{app}", get(app_info).delete(destroy_app))
        .route(
            "/api/v1/apps/{app}/config",
            get(get_config).post(change_config),
        )
        .route("/api/v1/apps/{app}/releases", get(releases))
        .route("/api/v1/apps/{app}/rollback", post(rollback))
        .route("/api/v1/apps/{app}/deploy", post(deploy_image))
        .route("/api/v1/apps/{app}/logs", get(logs))
        .route("/api/v1/keys", get(list_keys).post(add_key))
        .route("/api/v1/keys/{fingerprint}", delete(remove_key))
        .with_state(state)
}

/// An error answer: a status and a message that says what to do.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ApiErrorBody { error: self.1 })).into_response()
    }
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> Self {
        let status = match &e {
            DeployError::UnknownApp { .. } | DeployError::UnknownRelease { .. } => {
                StatusCode::NOT_FOUND
            }
            DeployError::NoRelease { .. } => StatusCode::CONFLICT,
            DeployError::Config(_) => StatusCode::BAD_REQUEST,
            DeployError::Unhealthy { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, with_hint(&e, e.hint()))
    }
}

/// An error's message with its hint: this API answers hephy's own CLI, so the advice that
/// names the CLI (`hephy apps create`) belongs in the answer.
fn with_hint(e: &impl std::fmt::Display, hint: Option<String>) -> String {
    match hint {
        Some(hint) => format!("{e} ({hint})"),
        None => e.to_string(),
    }
}

/// The answer to a failed app operation of the git server.
fn app_error(e: hephy_git::AppError) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, with_hint(&e, e.hint()))
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

type ApiResult<T> = Result<T, ApiError>;

/// The authenticated user: a token as `Authorization: Bearer` or as the password of basic auth.
pub struct Authed(User);

impl FromRequestParts<ApiState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized = || {
            ApiError(
                StatusCode::UNAUTHORIZED,
                "missing or wrong token: run `hephy login URL --token TOKEN`".into(),
            )
        };
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(unauthorized)?;
        // Bearer (the CLI) or the password of Basic (git's credential helpers, curl -u).
        let credentials = hephy_git::auth::parse_authorization(value)
            .map_err(|e| ApiError(StatusCode::UNAUTHORIZED, e.to_string()))?;
        let token = credentials.token();
        state
            .accounts
            .authenticate_token(token)
            .map(Authed)
            .ok_or_else(unauthorized)
    }
}

fn parse_app(s: &str) -> ApiResult<AppName> {
    s.parse()
        .map_err(|e: hephy_core::AppNameError| bad(e.to_string()))
}

/// The app, if it exists and the user may use it.
fn authorized_app(state: &ApiState, user: &User, app: &str) -> ApiResult<AppName> {
    let app = parse_app(app)?;
    let exists = state
        .git
        .apps()
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .contains(&app);
    if !exists {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("unknown app {app}: create it with `hephy apps create {app}`"),
        ));
    }
    if !state.accounts.may_push(user, &app) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "user {} may not use app {app}: ask its owner or an admin for access",
                user.name
            ),
        ));
    }
    Ok(app)
}

fn deployer(state: &ApiState) -> ApiResult<&Arc<dyn Deployer>> {
    state.deployer.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::NOT_IMPLEMENTED,
            "this server has no deployer: start hephy-server with --deployer local, kubernetes or gitops".into(),
        )
    })
}

async fn info(state: &ApiState, app: &AppName) -> ApiResult<AppInfo> {
    let release = match &state.deployer {
        Some(d) => d.current(app).await?,
        None => None,
    };
    let (url, process) = match &state.runtime {
        Some(r) => (r.url(app).await, r.process(app).await),
        None => (None, None),
    };
    Ok(AppInfo {
        name: app.to_string(),
        users: state.accounts.granted(app),
        git_http: format!("{}/{app}.git", state.http_base),
        git_ssh: state.ssh_base.as_ref().map(|s| format!("{s}/{app}.git")),
        url,
        release,
        process,
    })
}

async fn whoami(Authed(user): Authed) -> Json<WhoAmI> {
    Json(WhoAmI {
        user: user.name,
        admin: user.admin,
    })
}

async fn list_apps(
    State(state): State<ApiState>,
    Authed(user): Authed,
) -> ApiResult<Json<Vec<AppInfo>>> {
    let apps = state
        .git
        .apps()
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut out = vec![];
    for app in apps.iter().filter(|a| state.accounts.may_push(&user, a)) {
        out.push(info(&state, app).await?);
    }
    Ok(Json(out))
}

async fn create_app(
    State(state): State<ApiState>,
    Authed(user): Authed,
    Json(body): Json<CreateApp>,
) -> ApiResult<(StatusCode, Json<AppInfo>)> {
    let app = parse_app(&body.name)?;
    if state.git.apps().map(|a| a.contains(&app)).unwrap_or(false) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("app {app} exists already: choose another name, or push to it"),
        ));
    }
    state.git.create_app(&app, &user.name).map_err(app_error)?;
    if let Some(r) = &state.runtime {
        r.create(&app).await?;
    }
    Ok((StatusCode::CREATED, Json(info(&state, &app).await?)))
}

async fn app_info(
    State(state): State<ApiState>,
    Authed(user): Authed,
    Path(app): Path<String>,
) -> ApiResult<Json<AppInfo>> {
    let app = authorized_app(&state, &user, &app)?;
    Ok(Json(info(&state, &app).await?))
}

async fn destroy_app(
    State(state): State<ApiState>,
    Authed(user): Authed,
    Path(app): Path<String>,
) -> ApiResult<StatusCode> {
    let app = authorized_app(&state, &user, &app)?;
    if let Some(r) = &state.runtime {
        r.destroy(&app).await?;
    }
    state.git.delete_app(&app).map_err(app_error)?;
    let _ = state.accounts.revoke_app(&app);
    Ok(StatusCode::NO_CONTENT)
}

async fn get_config(
    State(state): State<ApiState>,
    Authed(user): Authed,
    Path(app): Path<String>,
) -> ApiResult<Json<ConfigView>> {
    let app = authorized_app(&state, &user, &app)?;
    let current = deployer(&state)?.current(&app).await?;
    Ok(Json(ConfigView {
        vars: current.map(|r| r.config).unwrap_or_default(),
    }))
}

async fn change_config(
    State(state): State<ApiState>,
    Authed(user): Authed,
    Path(app): Path<String>,
    Json(change): Json<ConfigChange>,
) -> ApiResult<Json<hephy_core::Release>> {
    let app = authorized_app(&state, &user, &app)?;
    if change.is_empty() {
        return Err(bad(
            "nothing to change: give NAME=value pairs to set or NAMEs to unset",
        ));
    }
    let r = deployer(&state)?
        .set_config(&app, &change, &Events::discard())
        .await?;
    Ok(Json(r))
}

async fn releases(
    State(state): State<ApiState>,
    Authed(user): Authed,
    Path(app): Path<String>,
) -> ApiResult<Json<Vec<hephy_core::Release>>> {
    let app = authorized_app(&state, &user, &app)?;
    Ok(Json(deployer(&state)?.releases(&app).await?))
}

async fn rollback(
    State(state): State<ApiState>,
    Authed(user): Authed,
    Path(app): Path<String>,
    Json(body): Json<Rollback>,
) -> ApiResult<Json<hephy_core::Release>> {
    let app = authorized_app(&state, &user, &app)?;
    let version: ReleaseVersion = body
        .version
        .parse()
        .map_err(|e: hephy_core::ReleaseVersionError| bad(e.to_string()))?;
    Ok(Json(
        deployer(&state)?
            .rollback(&app, version, &Events::discard())
            .await?,
    ))
}

async fn deploy_image(
    State(state): State<ApiState>,
    Authed(user): Authed,
    Path(app): Path<String>,
    Json(body): Json<DeployImage>,
) -> ApiResult<Json<hephy_core::Release>> {
    let app = authorized_app(&state, &user, &app)?;
    let image: Reference = body
        .image
        .parse()
        .map_err(|e: hephy_core::ReferenceError| bad(e.to_string()))?;
    if !image.is_pinned() {
        return Err(bad(format!(
            "{image} is not pinned by digest: deploy REF@sha256:..., as `hephy build --image-file` writes it, so the release is exactly what was built"
        )));
    }
    match state
        .images
        .classify(&image)
        .map_err(|e| ApiError(StatusCode::FORBIDDEN, e.to_string()))?
    {
        ImageSource::App(owner) if owner != app => {
            authorized_app(&state, &user, owner.as_str())?;
        }
        _ => {}
    }
    let d = deployer(&state)?;
    let settings = d
        .current(&app)
        .await?
        .map(|r| r.deploy)
        .unwrap_or_else(DeployConfig::default);
    let new = NewRelease::new(
        app,
        image.clone(),
        settings,
        ReleaseCause::Image {
            reference: image.to_string(),
        },
    );
    Ok(Json(d.deploy(new, &Events::discard()).await?))
}

#[derive(Deserialize)]
struct LogQuery {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    follow: bool,
}

async fn logs(
    State(state): State<ApiState>,
    Authed(user): Authed,
    Path(app): Path<String>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Response> {
    let app = authorized_app(&state, &user, &app)?;
    let lines: LineStream = match q.kind.as_deref().unwrap_or("app") {
        "build" => {
            let path = build_log_path(&state, &app);
            let text = std::fs::read_to_string(&path).map_err(|_| {
                ApiError(
                    StatusCode::NOT_FOUND,
                    format!("{app} has no build log yet: git push hephy main"),
                )
            })?;
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            Box::pin(futures_util::stream::iter(lines))
        }
        "app" => {
            let runtime = state.runtime.as_ref().ok_or_else(|| {
                ApiError(
                    StatusCode::NOT_IMPLEMENTED,
                    "this server's deployer keeps no app logs".into(),
                )
            })?;
            runtime.logs(&app, q.follow).await?
        }
        other => return Err(bad(format!("unknown log kind {other:?}: use app or build"))),
    };
    use futures_util::StreamExt;
    let body = Body::from_stream(lines.map(|l| Ok::<_, std::io::Error>(format!("{l}\n"))));
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

fn build_log_path(state: &ApiState, app: &AppName) -> PathBuf {
    state.git.build_log_path(app)
}

async fn list_keys(State(state): State<ApiState>, Authed(user): Authed) -> Json<Vec<KeyView>> {
    Json(
        state
            .accounts
            .keys(&user.name)
            .into_iter()
            .map(|k| KeyView {
                fingerprint: k.fingerprint,
                comment: k.comment,
            })
            .collect(),
    )
}

async fn add_key(
    State(state): State<ApiState>,
    Authed(user): Authed,
    Json(body): Json<AddKey>,
) -> ApiResult<(StatusCode, Json<KeyView>)> {
    let k = state
        .accounts
        .add_key(&user.name, &body.key)
        .map_err(|e| bad(e.to_string()))?;
    Ok((
        StatusCode::CREATED,
        Json(KeyView {
            fingerprint: k.fingerprint,
            comment: k.comment,
        }),
    ))
}

async fn remove_key(
    State(state): State<ApiState>,
    Authed(user): Authed,
    Path(fingerprint): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .accounts
        .remove_key(&user.name, &fingerprint)
        .map_err(|e| ApiError(StatusCode::NOT_FOUND, e.to_string()))?;
    Ok(StatusCode::NO_CONTENT)
}
