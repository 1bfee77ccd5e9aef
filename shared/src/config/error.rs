//! Configuration errors: one line each, naming the key, never quoting a secret.

use std::path::PathBuf;

/// Why a configuration could not be loaded. `Display` is a single line that names the key (or the
/// file or variable) so an operator can fix it without reading code; secret values are described
/// by their length, never shown.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The config file is not valid YAML.
    #[error("config file {}: not valid YAML: {message}", path.display())]
    Yaml { path: PathBuf, message: String },

    /// The file names a key pacer does not have.
    #[error("config invalid: {key}: unknown key{}", did_you_mean(suggestion))]
    UnknownKey {
        key: String,
        suggestion: Option<String>,
    },

    /// A `PACER_*` variable names no key (and is not one of the non-config variables).
    #[error(
        "config invalid: {name}: unknown environment variable, not a configuration key{}",
        did_you_mean(suggestion)
    )]
    UnknownEnvVar {
        name: String,
        suggestion: Option<String>,
    },

    /// A key has a wrong value, a missing peer, or contradicts another key.
    #[error("config invalid: {key}: {message}{}", from_env(env_var))]
    Invalid {
        key: String,
        message: String,
        /// The `PACER_*` variable the bad value came from, when it came from the environment.
        env_var: Option<String>,
    },

    /// A secret reference (`ssm:` / `secretsmanager:`) could not be resolved.
    #[error("config invalid: {key}: cannot resolve secret reference {reference}: {message}")]
    SecretReference {
        key: String,
        reference: String,
        message: String,
    },
}

impl ConfigError {
    /// The key (dotted path, or the variable name) the error is about.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Read { .. } | Self::Yaml { .. } => None,
            Self::UnknownKey { key, .. }
            | Self::Invalid { key, .. }
            | Self::SecretReference { key, .. } => Some(key),
            Self::UnknownEnvVar { name, .. } => Some(name),
        }
    }

    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: one_line(&message.into()),
            env_var: None,
        }
    }
}

/// Messages from parsers and SDKs occasionally span lines; the contract is one line per error.
pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map(|s| format!(" (did you mean {s}?)"))
        .unwrap_or_default()
}

fn from_env(env_var: &Option<String>) -> String {
    env_var
        .as_ref()
        .map(|name| format!(" (set by {name})"))
        .unwrap_or_default()
}
