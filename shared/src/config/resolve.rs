//! Resolving `ssm:` and `secretsmanager:` references in secret-typed keys.
//!
//! In Lambda, secrets live in SSM Parameter Store SecureStrings or Secrets Manager and the
//! configuration only names them. They are read once per cold start, all at the same time (the
//! look-ups sit on the start-up path), and a reference used by several keys is fetched once.

use super::Config;
use super::error::{ConfigError, one_line};
use super::secret::{Secret, SecretRef};
use std::collections::BTreeMap;

impl Config {
    /// Replaces every secret reference with the value it names, then re-validates the rules that
    /// depend on secret values (lengths, the PEM shape) through [`Config::validate_resolved`].
    ///
    /// `aws` is used as given: pointing it at an emulator (`aws.endpoint_url`) or choosing a
    /// profile is the caller's job. Errors name the key and the reference, never a value. With no
    /// references this makes no AWS call.
    pub async fn resolve_secrets(
        &mut self,
        aws: &aws_config::SdkConfig,
    ) -> Result<(), ConfigError> {
        let mut wanted: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
        for (key, secret) in self.secrets() {
            if let Some(reference) = secret.and_then(Secret::reference) {
                wanted.entry(reference.to_string()).or_default().push(key);
            }
        }
        if wanted.is_empty() {
            return self.validate_resolved();
        }

        let fetcher = Fetcher::new(aws);
        let lookups = wanted.keys().map(|reference| async {
            let fetched = match SecretRef::parse(reference) {
                Some(parsed) => fetcher.fetch(parsed).await,
                None => Err("is not an ssm: or secretsmanager: reference".to_owned()),
            };
            (reference.clone(), fetched)
        });
        let fetched: BTreeMap<String, Result<String, String>> = futures::future::join_all(lookups)
            .await
            .into_iter()
            .collect();

        for (key, slot) in self.secrets_mut() {
            let Some(reference) = slot
                .as_ref()
                .and_then(|s| s.reference())
                .map(|r| r.to_string())
            else {
                continue;
            };
            match fetched.get(&reference).unwrap_or(&Err(String::new())) {
                Ok(value) => *slot = Some(Secret::new(value.trim())),
                Err(message) => {
                    return Err(ConfigError::SecretReference {
                        key: key.to_owned(),
                        reference,
                        message: message.clone(),
                    });
                }
            }
        }
        self.tidy_private_key();
        self.validate_resolved()
    }
}

/// Clients for the two secret stores.
struct Fetcher {
    ssm: aws_sdk_ssm::Client,
    secrets_manager: aws_sdk_secretsmanager::Client,
}

impl Fetcher {
    fn new(aws: &aws_config::SdkConfig) -> Self {
        // Building a client makes no network call; both are cheap.
        Self {
            ssm: aws_sdk_ssm::Client::new(aws),
            secrets_manager: aws_sdk_secretsmanager::Client::new(aws),
        }
    }

    async fn fetch(&self, reference: SecretRef<'_>) -> Result<String, String> {
        match reference {
            SecretRef::Ssm(name) => {
                let output = self
                    .ssm
                    .get_parameter()
                    .name(name)
                    .with_decryption(true)
                    .send()
                    .await
                    .map_err(|e| error_chain(&e))?;
                output
                    .parameter()
                    .and_then(|parameter| parameter.value())
                    .map(str::to_owned)
                    .ok_or_else(|| "the parameter has no value".to_owned())
            }
            SecretRef::SecretsManager(id) => {
                let output = self
                    .secrets_manager
                    .get_secret_value()
                    .secret_id(id)
                    .send()
                    .await
                    .map_err(|e| error_chain(&e))?;
                output.secret_string().map(str::to_owned).ok_or_else(|| {
                    "the secret has no SecretString (binary secrets are not supported)".to_owned()
                })
            }
        }
    }
}

/// The error and its causes on one line (see [`crate::error_text::display_chain`]).
fn error_chain(err: &dyn std::error::Error) -> String {
    one_line(&crate::error_text::display_chain(err))
}
