//! The local deployer as the control API's [`AppRuntime`]: app lifecycle, URLs and logs.

use hephy_api::{AppRuntime, LineStream};
use hephy_core::{async_trait, AppName, DeployError, Events};

use super::LocalDeployer;

#[async_trait]
impl AppRuntime for LocalDeployer {
    async fn create(&self, app: &AppName) -> Result<(), DeployError> {
        if self.ledger().has_app(app) {
            return Ok(());
        }
        self.create_app(app).await
    }

    async fn destroy(&self, app: &AppName) -> Result<(), DeployError> {
        if !self.ledger().has_app(app) {
            return Ok(());
        }
        self.destroy_app(app, &Events::discard()).await
    }

    async fn url(&self, app: &AppName) -> Option<String> {
        LocalDeployer::url(self, app).ok()
    }

    async fn process(&self, app: &AppName) -> Option<hephy_api::ProcessInfo> {
        LocalDeployer::process(self, app)
    }

    async fn logs(&self, app: &AppName, follow: bool) -> Result<LineStream, DeployError> {
        let stream = LocalDeployer::logs(self, app, follow).await?;
        Ok(Box::pin(futures_util::stream::unfold(
            stream,
            |mut s| async move { s.next_line().await.map(|l| (l, s)) },
        )))
    }
}
