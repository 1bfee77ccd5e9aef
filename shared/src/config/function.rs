//! Which function of pacer a process serves, and so which secrets its configuration must hold.
//!
//! `pacer serve` does every job in one process and needs every secret. In the serverless
//! deployment each Lambda function does one job, and giving it only the secrets of that job lets
//! its IAM role read only those: a webhook function that is broken into cannot sign runner
//! callbacks or mint console sessions. A secret a function does not need may still be given; it
//! is then checked like any other, and simply not used.

/// The secrets (by key) that some functions need and others do not. The OIDC client secret goes
/// with `auth.jwt_secret`; `github.webhook_secret_previous` is optional everywhere.
pub const FUNCTION_SECRETS: [&str; 4] = [
    "github.webhook_secret",
    "github.callback_hmac_secret",
    "github.private_key",
    "auth.jwt_secret",
];

/// The function a process serves: the single local process, or one of the five Lambda
/// functions of the serverless deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Function {
    /// `pacer serve` and the `pacer` admin commands: everything, in one process.
    #[default]
    Serve,
    /// The webhook function (`POST /api/webhook`): verifies and accepts GitHub's `workflow_job`
    /// deliveries.
    Webhook,
    /// The runner function (`/api/runner/*`): the callbacks of booting runners.
    Runner,
    /// The api function: the console API, sessions and SSO, and `/healthz`.
    Api,
    /// The orchestrator function, the jobs queue's consumer: launches a runner for each queued
    /// job.
    Orchestrator,
    /// The reaper function: scheduled reconciliation with GitHub and EC2.
    Reaper,
}

impl Function {
    /// The name operators see in logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            Function::Serve => "serve",
            Function::Webhook => "webhook",
            Function::Runner => "runner",
            Function::Api => "api",
            Function::Orchestrator => "orchestrator",
            Function::Reaper => "reaper",
        }
    }

    /// Checks GitHub's webhook signatures: needs `github.webhook_secret`.
    pub fn verifies_webhooks(self) -> bool {
        matches!(self, Function::Serve | Function::Webhook)
    }

    /// Mints (at launch) or verifies (at callback) runner tokens: needs
    /// `github.callback_hmac_secret`.
    pub fn signs_callbacks(self) -> bool {
        matches!(
            self,
            Function::Serve | Function::Runner | Function::Orchestrator
        )
    }

    /// Calls GitHub as the App: needs `github.private_key`. The orchestrator only launches
    /// instances; the runner's JIT configuration is fetched by its callback.
    pub fn calls_github(self) -> bool {
        !matches!(self, Function::Orchestrator)
    }

    /// Serves the console API: needs `auth.jwt_secret` and, with SSO, `auth.oidc.client_secret`.
    pub fn serves_console(self) -> bool {
        matches!(self, Function::Serve | Function::Api)
    }

    /// Whether this function needs the secret at `key`, one of [`FUNCTION_SECRETS`].
    pub fn needs_secret(self, key: &str) -> bool {
        match key {
            "github.webhook_secret" => self.verifies_webhooks(),
            "github.callback_hmac_secret" => self.signs_callbacks(),
            "github.private_key" => self.calls_github(),
            "auth.jwt_secret" => self.serves_console(),
            other => panic!("{other} is not one of the secrets that depend on the function"),
        }
    }

    /// The `PACER_*` variables of the [`FUNCTION_SECRETS`] this function needs.
    pub fn secret_env_vars(self) -> Vec<String> {
        FUNCTION_SECRETS
            .into_iter()
            .filter(|key| self.needs_secret(key))
            .map(super::schema::env_name)
            .collect()
    }

    /// Why a secret this function needs is required, for the error that says it is missing.
    pub(crate) fn needs(self, what: &str) -> String {
        match self {
            Function::Serve => format!("pacer {what}"),
            function => format!("the {} function {what}", function.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{FUNCTION_SECRETS, Function};

    #[test]
    fn every_secret_is_needed_somewhere_and_serve_needs_them_all() {
        let lambda = [
            Function::Webhook,
            Function::Runner,
            Function::Api,
            Function::Orchestrator,
            Function::Reaper,
        ];
        for key in FUNCTION_SECRETS {
            assert!(Function::Serve.needs_secret(key));
            assert!(
                lambda.iter().any(|function| function.needs_secret(key)),
                "{key}"
            );
            assert!(
                !lambda.iter().all(|function| function.needs_secret(key)),
                "{key}: needed by every function"
            );
        }
        assert_eq!(
            Function::Orchestrator.secret_env_vars(),
            ["PACER_GITHUB_CALLBACK_HMAC_SECRET"]
        );
        assert_eq!(Function::Serve.secret_env_vars().len(), 4);
    }
}
