//! Smart HTTP for pushes: `GET /APP.git/info/refs?service=git-receive-pack` and
//! `POST /APP.git/git-receive-pack`, with token auth over HTTP basic.

use std::io;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::TryStreamExt;
use tokio::io::AsyncRead;
use tokio_util::io::{ReaderStream, StreamReader};

use crate::auth::{parse_authorization, Credentials, User};
use crate::receive::{self, pktline, ReceiveError};
use crate::repo::repo_path;
use crate::GitServer;

pub(crate) fn router(server: GitServer) -> Router {
    Router::new()
        .fallback(handle)
        // Pushes are limited by max_push_bytes while they stream, not buffered.
        .layer(DefaultBodyLimit::disable())
        .with_state(server)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    InfoRefs,
    ReceivePack,
    UploadPack,
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut body = message.into();
    body.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn receive_error(server: &GitServer, e: &ReceiveError) -> Response {
    let status = match e {
        ReceiveError::UnknownApp { .. } => StatusCode::NOT_FOUND,
        ReceiveError::Forbidden { .. } => StatusCode::FORBIDDEN,
        ReceiveError::Locked(_) => StatusCode::CONFLICT,
        ReceiveError::Protocol { .. } => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    text(status, server.inner().with_hint(e, e.hint()))
}

fn unauthorized(message: &str) -> Response {
    let mut r = text(StatusCode::UNAUTHORIZED, message);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"hephy\""),
    );
    r
}

/// The user of a request: from HTTP basic (user name and API token) when the server has
/// accounts, else anonymous.
#[allow(clippy::result_large_err)]
fn authenticate(server: &GitServer, headers: &HeaderMap) -> Result<User, Response> {
    let Some(accounts) = server.accounts() else {
        return Ok(User {
            name: "anonymous".to_owned(),
            admin: false,
        });
    };
    let inner = server.inner();
    let token_hint = || Some("create one with `hephy tokens create`".to_owned());
    let required = inner.with_hint(
        "authentication required: use your user name and an API token as the password",
        token_hint(),
    );
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized(&required));
    };
    let credentials = value
        .to_str()
        .map_err(|_| {
            unauthorized("the Authorization header is not ASCII text: send your hephy user name and an API token")
        })
        .and_then(|v| parse_authorization(v).map_err(|e| unauthorized(&e.to_string())))?;
    let Credentials::Basic {
        user: name,
        password: token,
    } = credentials
    else {
        return Err(unauthorized(&required));
    };
    match accounts.authenticate_token(&token) {
        Some(user) if user.name == name => Ok(user),
        _ => Err(unauthorized(&inner.with_hint(
            "invalid user name or token: check the credentials git uses for this server (the password is an API token)",
            token_hint(),
        ))),
    }
}

async fn handle(State(server): State<GitServer>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let (repo, action) = if let Some(r) = path.strip_suffix("/info/refs") {
        (r, Action::InfoRefs)
    } else if let Some(r) = path.strip_suffix("/git-receive-pack") {
        (r, Action::ReceivePack)
    } else if let Some(r) = path.strip_suffix("/git-upload-pack") {
        (r, Action::UploadPack)
    } else {
        return text(
            StatusCode::NOT_FOUND,
            "not found: push to http://HOST/APP.git (git push http://HOST/APP.git main)",
        );
    };
    let app = match repo_path(repo) {
        Ok(app) => app,
        Err(e) => return text(StatusCode::NOT_FOUND, e.to_string()),
    };
    let user = match authenticate(&server, req.headers()) {
        Ok(u) => u,
        Err(r) => return r,
    };
    const NO_FETCH: &str = "hephy receives pushes only; fetching and cloning are not served (keep your code in your own git host and push to hephy to deploy)";
    match action {
        Action::UploadPack => text(StatusCode::FORBIDDEN, NO_FETCH),
        Action::InfoRefs => {
            if req.method() != Method::GET {
                return text(StatusCode::METHOD_NOT_ALLOWED, "use GET for info/refs");
            }
            let service = req.uri().query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("service="))
                    .map(str::to_owned)
            });
            match service.as_deref() {
                Some("git-receive-pack") => {}
                Some("git-upload-pack") => return text(StatusCode::FORBIDDEN, NO_FETCH),
                _ => {
                    return text(
                        StatusCode::FORBIDDEN,
                        "only smart HTTP is served: use a git client of version 1.6.6 or newer",
                    )
                }
            }
            let version1 = req
                .headers()
                .get("git-protocol")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(':').any(|p| p == "version=1"));
            match server.advertisement(&user, &app, version1) {
                Ok(ad) => {
                    let mut body = vec![];
                    pktline::encode(b"# service=git-receive-pack\n", &mut body);
                    pktline::flush(&mut body);
                    body.extend_from_slice(&ad);
                    (
                        [
                            (
                                header::CONTENT_TYPE,
                                "application/x-git-receive-pack-advertisement",
                            ),
                            (header::CACHE_CONTROL, "no-cache"),
                        ],
                        body,
                    )
                        .into_response()
                }
                Err(e) => receive_error(&server, &e),
            }
        }
        Action::ReceivePack => {
            if req.method() != Method::POST {
                return text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "use POST for git-receive-pack",
                );
            }
            if let Err(e) = receive::authorize(server.inner(), &user, &app) {
                return receive_error(&server, &e);
            }
            let content_type = req.headers().get(header::CONTENT_TYPE);
            if content_type.is_some_and(|c| c != "application/x-git-receive-pack-request") {
                return text(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "expected Content-Type application/x-git-receive-pack-request",
                );
            }
            let gzip = match req
                .headers()
                .get(header::CONTENT_ENCODING)
                .map(|v| v.to_str().unwrap_or("?"))
            {
                None | Some("identity") => false,
                Some("gzip") | Some("x-gzip") => true,
                Some(other) => {
                    return text(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        format!(
                            "Content-Encoding {other} is not supported: send gzip or no encoding"
                        ),
                    )
                }
            };
            let body = req.into_body().into_data_stream().map_err(io::Error::other);
            let reader = StreamReader::new(body);
            let input: Box<dyn AsyncRead + Send + Unpin> = if gzip {
                Box::new(async_compression::tokio::bufread::GzipDecoder::new(reader))
            } else {
                Box::new(reader)
            };
            // The response streams while the push runs, so build logs reach the pusher live;
            // when the client goes away, the body is dropped, the next write fails and the build
            // is cancelled.
            let (writer, response) = tokio::io::duplex(64 * 1024);
            tokio::spawn(async move {
                if let Err(e) = server
                    .receive_pack_stateless(&user, &app, input, writer)
                    .await
                {
                    tracing::warn!(app = %app, user = %user.name, "push over HTTP failed: {e}");
                }
            });
            (
                [
                    (
                        header::CONTENT_TYPE,
                        "application/x-git-receive-pack-result",
                    ),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                Body::from_stream(ReaderStream::new(response)),
            )
                .into_response()
        }
    }
}
