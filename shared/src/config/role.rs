//! Which part of pacer a configuration is loaded for, and so which secrets it must hold.
//!
//! `pacer serve` does every job in one process and needs every secret. In the serverless
//! deployment each Lambda function does one job, and giving it only the secrets of that job lets
//! its IAM role read only those: a webhook function that is broken into cannot sign runner
//! callbacks or mint console sessions. A secret a role does not need may still be given; it is
//! then checked like any other, and simply not used.

/// The secrets (by key) that some roles need and others do not. The OIDC client secret goes with
/// `auth.jwt_secret`; `github.webhook_secret_previous` is optional everywhere.
pub const ROLE_SECRETS: [&str; 4] = [
    "github.webhook_secret",
    "github.callback_hmac_secret",
    "github.private_key",
    "auth.jwt_secret",
];

/// The part of pacer a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// `pacer serve` and the `pacer` admin commands: everything.
    #[default]
    Serve,
    /// The webhook function: verifies and accepts GitHub's `workflow_job` deliveries.
    Webhook,
    /// The runner function: the callbacks of booting runners.
    Runner,
    /// The api function: the console API, sessions and SSO.
    Api,
    /// The orchestrator function: launches a runner for each queued job.
    Orchestrator,
    /// The reaper function: scheduled reconciliation with GitHub and EC2.
    Reaper,
}

impl Role {
    /// The name operators see in logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            Role::Serve => "serve",
            Role::Webhook => "webhook",
            Role::Runner => "runner",
            Role::Api => "api",
            Role::Orchestrator => "orchestrator",
            Role::Reaper => "reaper",
        }
    }

    /// Checks GitHub's webhook signatures: needs `github.webhook_secret`.
    pub fn verifies_webhooks(self) -> bool {
        matches!(self, Role::Serve | Role::Webhook)
    }

    /// Mints (at launch) or verifies (at callback) runner tokens: needs
    /// `github.callback_hmac_secret`.
    pub fn signs_callbacks(self) -> bool {
        matches!(self, Role::Serve | Role::Runner | Role::Orchestrator)
    }

    /// Calls GitHub as the App: needs `github.private_key`. The orchestrator only launches
    /// instances; the runner's JIT configuration is fetched by its callback.
    pub fn calls_github(self) -> bool {
        !matches!(self, Role::Orchestrator)
    }

    /// Serves the console API: needs `auth.jwt_secret` and, with SSO, `auth.oidc.client_secret`.
    pub fn serves_console(self) -> bool {
        matches!(self, Role::Serve | Role::Api)
    }

    /// Whether this role needs the secret at `key`, one of [`ROLE_SECRETS`].
    pub fn needs_secret(self, key: &str) -> bool {
        match key {
            "github.webhook_secret" => self.verifies_webhooks(),
            "github.callback_hmac_secret" => self.signs_callbacks(),
            "github.private_key" => self.calls_github(),
            "auth.jwt_secret" => self.serves_console(),
            other => panic!("{other} is not one of the secrets that depend on the role"),
        }
    }

    /// The `PACER_*` variables of the [`ROLE_SECRETS`] this role needs.
    pub fn secret_env_vars(self) -> Vec<String> {
        ROLE_SECRETS
            .into_iter()
            .filter(|key| self.needs_secret(key))
            .map(super::schema::env_name)
            .collect()
    }

    /// Why a secret this role needs is required, for the error that says it is missing.
    pub(crate) fn needs(self, what: &str) -> String {
        match self {
            Role::Serve => format!("pacer {what}"),
            role => format!("the {} function {what}", role.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ROLE_SECRETS, Role};

    #[test]
    fn every_secret_is_needed_somewhere_and_serve_needs_them_all() {
        let lambda = [
            Role::Webhook,
            Role::Runner,
            Role::Api,
            Role::Orchestrator,
            Role::Reaper,
        ];
        for key in ROLE_SECRETS {
            assert!(Role::Serve.needs_secret(key));
            assert!(lambda.iter().any(|role| role.needs_secret(key)), "{key}");
            assert!(
                !lambda.iter().all(|role| role.needs_secret(key)),
                "{key}: needed by every function"
            );
        }
        assert_eq!(
            Role::Orchestrator.secret_env_vars(),
            ["PACER_GITHUB_CALLBACK_HMAC_SECRET"]
        );
        assert_eq!(Role::Serve.secret_env_vars().len(), 4);
    }
}
