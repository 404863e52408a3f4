//! A client of the control API, as the `hephy` CLI uses it.

use hephy_core::{AppName, ConfigChange, Release, ReleaseVersion};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::*;

/// The error returned by [`Client`] calls.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server could not be reached.
    #[error("cannot reach hephy at {url}: {source}; is hephy-server running there? Set HEPHY_URL or run `hephy login URL --token TOKEN`")]
    Unreachable {
        /// The server.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The server refused the token.
    #[error("hephy at {url} refused your token: run `hephy login {url} --token TOKEN` with a token from the server (its data directory holds admin-token)")]
    Unauthorized {
        /// The server.
        url: String,
    },
    /// The server answered with an error.
    #[error("{message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The answer was not what the API promises.
    #[error("unexpected answer from hephy at {url}: {message}")]
    Protocol {
        /// The server.
        url: String,
        /// What was wrong.
        message: String,
    },
}

/// A client of one hephy server.
///
/// The token is held as a [`SecretString`]: `Debug` shows `[redacted]` in its place.
///
/// ```
/// let client = hephy_api::Client::new("http://127.0.0.1:7080", "s3cret-token");
/// assert!(!format!("{client:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
pub struct Client {
    base: String,
    token: SecretString,
    http: reqwest::Client,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the server at `base` (like `http://127.0.0.1:7080`) using `token`.
    pub fn new(base: &str, token: impl Into<SecretString>) -> Self {
        Client {
            base: base.trim_end_matches('/').to_owned(),
            token: token.into(),
            http: reqwest::Client::new(),
        }
    }

    /// The server's address.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let resp = req
            .bearer_auth(self.token.expose_secret())
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: self.base.clone(),
                source,
            })?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(ClientError::Unauthorized {
                url: self.base.clone(),
            });
        }
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            let message = serde_json::from_str::<ApiErrorBody>(&text)
                .map(|b| b.error)
                .unwrap_or_else(|_| format!("hephy answered {status}: {text}"));
            return Err(ClientError::Api {
                status: status.as_u16(),
                message,
            });
        }
        Ok(resp)
    }

    async fn json<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let resp = self.send(req).await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: self.base.clone(),
                source,
            })?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
            url: self.base.clone(),
            message: e.to_string(),
        })
    }

    fn post<B: Serialize>(&self, path: &str, body: &B) -> reqwest::RequestBuilder {
        self.http.post(self.url(path)).json(body)
    }

    /// Who the token belongs to.
    pub async fn whoami(&self) -> Result<WhoAmI, ClientError> {
        self.json(self.http.get(self.url("/whoami"))).await
    }

    /// The apps the user may push to.
    pub async fn apps(&self) -> Result<Vec<AppInfo>, ClientError> {
        self.json(self.http.get(self.url("/apps"))).await
    }

    /// Creates an app.
    pub async fn create_app(&self, app: &AppName) -> Result<AppInfo, ClientError> {
        self.json(self.post(
            "/apps",
            &CreateApp {
                name: app.to_string(),
            },
        ))
        .await
    }

    /// One app.
    pub async fn app(&self, app: &AppName) -> Result<AppInfo, ClientError> {
        self.json(self.http.get(self.url(&format!("/apps/{app}"))))
            .await
    }

    /// Destroys an app: its repository, releases and running containers.
    pub async fn destroy_app(&self, app: &AppName) -> Result<(), ClientError> {
        self.send(self.http.delete(self.url(&format!("/apps/{app}"))))
            .await
            .map(drop)
    }

    /// The user's keys.
    pub async fn keys(&self) -> Result<Vec<KeyView>, ClientError> {
        self.json(self.http.get(self.url("/keys"))).await
    }

    /// Adds a public key.
    pub async fn add_key(&self, key: &str) -> Result<KeyView, ClientError> {
        self.json(self.post(
            "/keys",
            &AddKey {
                key: key.to_owned(),
            },
        ))
        .await
    }

    /// Removes a key by fingerprint.
    pub async fn remove_key(&self, fingerprint: &str) -> Result<(), ClientError> {
        let path = format!("/keys/{}", urlencode(fingerprint));
        self.send(self.http.delete(self.url(&path))).await.map(drop)
    }

    /// The app's config vars.
    pub async fn config(&self, app: &AppName) -> Result<ConfigView, ClientError> {
        self.json(self.http.get(self.url(&format!("/apps/{app}/config"))))
            .await
    }

    /// Changes config vars, making a release.
    pub async fn change_config(
        &self,
        app: &AppName,
        change: &ConfigChange,
    ) -> Result<Release, ClientError> {
        self.json(self.post(&format!("/apps/{app}/config"), change))
            .await
    }

    /// The app's releases, oldest first.
    pub async fn releases(&self, app: &AppName) -> Result<Vec<Release>, ClientError> {
        self.json(self.http.get(self.url(&format!("/apps/{app}/releases"))))
            .await
    }

    /// Rolls back to `version` as a new release.
    pub async fn rollback(
        &self,
        app: &AppName,
        version: ReleaseVersion,
    ) -> Result<Release, ClientError> {
        let body = Rollback {
            version: version.to_string(),
        };
        self.json(self.post(&format!("/apps/{app}/rollback"), &body))
            .await
    }

    /// Deploys an image built elsewhere.
    pub async fn deploy_image(&self, app: &AppName, image: &str) -> Result<Release, ClientError> {
        let body = DeployImage {
            image: image.to_owned(),
        };
        self.json(self.post(&format!("/apps/{app}/deploy"), &body))
            .await
    }

    /// Streams the app's log (or its last build's log with `build`) to `out`, following it
    /// with `follow` until the connection ends.
    pub async fn logs(
        &self,
        app: &AppName,
        build: bool,
        follow: bool,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<(), ClientError> {
        let kind = if build { "build" } else { "app" };
        let url = self.url(&format!("/apps/{app}/logs?kind={kind}&follow={follow}"));
        let mut resp = self.send(self.http.get(url)).await?;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: self.base.clone(),
                source,
            })?
        {
            if out.write_all(&chunk).and_then(|_| out.flush()).is_err() {
                break;
            }
        }
        Ok(())
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_server_but_never_the_token() {
        let client = Client::new("http://127.0.0.1:7080/", String::from("hephy_s3cret"));
        let shown = format!("{client:?} {client:#?}");
        assert!(!shown.contains("s3cret"), "the token in {shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
        assert!(shown.contains("http://127.0.0.1:7080"), "{shown}");
        assert_eq!(client.token.expose_secret(), "hephy_s3cret");
    }
}
