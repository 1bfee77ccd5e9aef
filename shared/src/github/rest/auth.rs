//! App authentication: the App JWT, installation tokens and their cache, and
//! which installation serves a repository.

use super::*;

pub(super) struct InstallationToken {
    pub(super) token: Secret,
    pub(super) expires_at: Time,
}

impl InstallationToken {
    pub(super) fn usable_at(&self, now: Time) -> bool {
        now < self.expires_at - TOKEN_REFRESH_MARGIN
    }
}

#[derive(Serialize)]
pub(super) struct AppClaims {
    pub(super) iat: i64,
    pub(super) exp: i64,
    pub(super) iss: String,
}

impl RestGitHub {
    /// The App JWT GitHub wants on `/app/…` endpoints.
    pub(super) fn app_jwt(&self) -> Result<Secret, jsonwebtoken::errors::Error> {
        let now = self.clock.now();
        let claims = AppClaims {
            iat: (now - JWT_BACKDATE).timestamp(),
            exp: (now + JWT_LIFETIME).timestamp(),
            iss: self.app_id.to_string(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key).map(Secret::new)
    }

    /// A usable installation token: the cached one, or a fresh one fetched by exactly one of the
    /// callers that found the cache stale.
    pub(super) async fn installation_token(&self, installation_id: i64) -> GitHubResult<Secret> {
        let slot = self.token_slot(installation_id);
        let mut cached = slot.lock().await;
        if let Some(token) = cached.as_ref().filter(|t| t.usable_at(self.clock.now())) {
            return Ok(token.token.clone());
        }
        let fresh = self.fetch_installation_token(installation_id).await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// Drops `stale` from the cache after GitHub refused it, unless another caller already
    /// replaced it.
    pub(super) async fn forget_token(&self, installation_id: i64, stale: &Secret) {
        let slot = self.token_slot(installation_id);
        let mut cached = slot.lock().await;
        if cached.as_ref().is_some_and(|t| &t.token == stale) {
            *cached = None;
        }
    }

    pub(super) fn token_slot(
        &self,
        installation_id: i64,
    ) -> Arc<tokio::sync::Mutex<Option<InstallationToken>>> {
        let mut tokens = crate::sync::lock(&self.tokens);
        tokens.entry(installation_id).or_default().clone()
    }

    /// Trades the App JWT for an installation token. Boxed: `call` fetches tokens, and this
    /// fetch is itself a `call`.
    pub(super) fn fetch_installation_token(
        &self,
        installation_id: i64,
    ) -> BoxFuture<'_, GitHubResult<InstallationToken>> {
        #[derive(Deserialize)]
        struct Wire {
            token: String,
            expires_at: Time,
        }
        Box::pin(async move {
            let id = installation_id.to_string();
            let call = Call::new(
                &ACCESS_TOKEN,
                Method::POST,
                ["app", "installations", &id, "access_tokens"],
            )
            .auth(Auth::App);
            let wire: Wire = self.call(&call).await?.json(&call)?;
            tracing::debug!(installation_id, expires_at = %wire.expires_at, "installation token issued");
            Ok(InstallationToken {
                token: Secret::new(wire.token),
                expires_at: wire.expires_at,
            })
        })
    }
}

impl RestGitHub {
    #[tracing::instrument(skip(self), fields(repo = %repo))]
    pub(super) async fn repo_installation(&self, repo: &RepoName) -> GitHubResult<i64> {
        let call = Call::new(
            &REPO_INSTALLATION,
            Method::GET,
            ["repos", repo.owner(), repo.name(), "installation"],
        )
        .auth(Auth::App);
        Ok(self.call(&call).await?.json::<InstallationWire>(&call)?.id)
    }

    #[tracing::instrument(skip(self))]
    pub(super) async fn org_installation(&self, org: &str) -> GitHubResult<i64> {
        let call = Call::new(
            &ORG_INSTALLATION,
            Method::GET,
            ["orgs", org, "installation"],
        )
        .auth(Auth::App);
        Ok(self.call(&call).await?.json::<InstallationWire>(&call)?.id)
    }
}

/// The one field pacer reads of an installation.
#[derive(Deserialize)]
struct InstallationWire {
    id: i64,
}
