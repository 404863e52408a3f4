//! CI workflow files that run `hephy build` (and deploy) in GitHub Actions or GitLab CI.

use std::fmt;
use std::str::FromStr;

/// A CI system `hephy ci` writes a workflow for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CiSystem {
    /// GitHub Actions: `.github/workflows/hephy.yml`.
    GitHub,
    /// GitLab CI: `.gitlab-ci.yml`.
    GitLab,
}

/// The error returned by [`CiSystem::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown CI system {0:?}: use github or gitlab")]
pub struct CiSystemError(String);

impl FromStr for CiSystem {
    type Err = CiSystemError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "github" | "github-actions" | "gha" => Ok(CiSystem::GitHub),
            "gitlab" | "gitlab-ci" => Ok(CiSystem::GitLab),
            _ => Err(CiSystemError(s.to_owned())),
        }
    }
}

impl fmt::Display for CiSystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CiSystem::GitHub => "github",
            CiSystem::GitLab => "gitlab",
        })
    }
}

impl CiSystem {
    /// Where the workflow file goes, relative to the repository root.
    pub fn path(self) -> &'static str {
        match self {
            CiSystem::GitHub => ".github/workflows/hephy.yml",
            CiSystem::GitLab => ".gitlab-ci.yml",
        }
    }

    /// The workflow for `app`: build and publish to the registry in `HEPHY_REGISTRY` on every
    /// push of `branch`, then deploy the published image when `deploy` is set.
    pub fn workflow(self, app: &str, branch: &str, deploy: bool) -> String {
        let deploy_step_gh = if deploy {
            "\n      - name: Deploy\n        run: hephy deploy --app \"$HEPHY_APP\" --image \"$(cat hephy-image.txt)\"\n        env:\n          HEPHY_URL: ${{ secrets.HEPHY_URL }}\n          HEPHY_TOKEN: ${{ secrets.HEPHY_TOKEN }}\n"
        } else {
            ""
        };
        let deploy_step_gl = if deploy {
            "\n    - hephy deploy --app \"$HEPHY_APP\" --image \"$(cat hephy-image.txt)\"   # needs HEPHY_URL and HEPHY_TOKEN CI variables\n"
        } else {
            ""
        };
        match self {
            CiSystem::GitHub => format!(
                "# Written by `hephy ci github`: builds {app} for every platform in hephy.toml and publishes it.\n\
name: hephy\n\
on:\n  push:\n    branches: [{branch}]\n\
jobs:\n  build:\n    runs-on: ubuntu-latest\n    env:\n      HEPHY_APP: {app}\n      HEPHY_REGISTRY: ${{{{ vars.HEPHY_REGISTRY }}}}\n      HEPHY_REGISTRY_USER: ${{{{ secrets.HEPHY_REGISTRY_USER }}}}\n      HEPHY_REGISTRY_PASSWORD: ${{{{ secrets.HEPHY_REGISTRY_PASSWORD }}}}\n    steps:\n      - uses: actions/checkout@v4\n      - uses: actions/setup-go@v5\n        with:\n          go-version: stable\n      - name: Install hephy\n        run: cargo install --locked --git https://github.com/hephy/hephy hephy-examples --bin hephy\n      - name: Build and publish\n        run: hephy build --app \"$HEPHY_APP\" --registry \"$HEPHY_REGISTRY\" --image-file hephy-image.txt\n{deploy_step_gh}"
            ),
            CiSystem::GitLab => format!(
                "# Written by `hephy ci gitlab`: builds {app} for every platform in hephy.toml and publishes it.\n\
hephy:\n  image: rust:latest\n  rules:\n    - if: $CI_COMMIT_BRANCH == \"{branch}\"\n  variables:\n    HEPHY_APP: {app}\n    HEPHY_REGISTRY: $CI_REGISTRY_IMAGE\n    HEPHY_REGISTRY_USER: $CI_REGISTRY_USER\n    HEPHY_REGISTRY_PASSWORD: $CI_REGISTRY_PASSWORD\n  script:\n    - apt-get update && apt-get install -y golang-go\n    - cargo install --locked --git https://github.com/hephy/hephy hephy-examples --bin hephy\n    - hephy build --app \"$HEPHY_APP\" --registry \"$HEPHY_REGISTRY\" --image-file hephy-image.txt\n{deploy_step_gl}"
            ),
        }
    }
}
