//! A string that must never be printed: signing keys, webhook secrets, the App's private key.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

const REDACTED: &str = "[redacted]";

/// A secret value. `Debug`, `Display` and `Serialize` all print `[redacted]`, so a config can be
/// logged or dumped whole; the only way to the text is [`Secret::expose`], which is easy to grep for.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret text itself. Call it only where the value is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length in characters: what error messages report instead of the value.
    pub fn char_len(&self) -> usize {
        self.0.chars().count()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `ssm:` or `secretsmanager:` reference this value stands for, if it is one.
    pub fn reference(&self) -> Option<SecretRef<'_>> {
        SecretRef::parse(&self.0)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// Where a referenced secret lives. References are not secret themselves (they name a parameter,
/// not its value), so they may appear in errors and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretRef<'a> {
    /// `ssm:/path/name`: an SSM Parameter Store parameter, read with decryption.
    Ssm(&'a str),
    /// `secretsmanager:<ARN or name>`: the `SecretString` of a Secrets Manager secret.
    SecretsManager(&'a str),
}

impl<'a> SecretRef<'a> {
    pub const SSM_PREFIX: &'static str = "ssm:";
    pub const SECRETS_MANAGER_PREFIX: &'static str = "secretsmanager:";

    /// Recognises the reference prefixes. The name after the prefix may still be empty or
    /// malformed; [`SecretRef::check`] says so.
    pub fn parse(value: &'a str) -> Option<Self> {
        if let Some(name) = value.strip_prefix(Self::SSM_PREFIX) {
            Some(Self::Ssm(name))
        } else {
            value
                .strip_prefix(Self::SECRETS_MANAGER_PREFIX)
                .map(Self::SecretsManager)
        }
    }

    /// Checks the name after the prefix, so a typo fails at load rather than at the AWS call.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Self::Ssm(name) if !name.starts_with('/') || name.len() < 2 => Err(format!(
                "secret reference {self} must name a parameter path, like ssm:/pacer/jwt-secret"
            )),
            Self::SecretsManager("") => Err(format!(
                "secret reference {self} must name a secret ARN or name, like secretsmanager:pacer/jwt-secret"
            )),
            _ if self.name().chars().any(char::is_whitespace) => {
                Err(format!("secret reference {self} must not contain spaces"))
            }
            _ => Ok(()),
        }
    }

    /// The parameter name or secret id, without the prefix.
    pub fn name(&self) -> &'a str {
        match self {
            Self::Ssm(name) | Self::SecretsManager(name) => name,
        }
    }
}

impl fmt::Display for SecretRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ssm(name) => write!(f, "{}{name}", Self::SSM_PREFIX),
            Self::SecretsManager(id) => write!(f, "{}{id}", Self::SECRETS_MANAGER_PREFIX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_display_and_serialize_never_show_the_value() {
        let secret = Secret::new("hunter2-hunter2");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"[redacted]\"");
        assert_eq!(secret.expose(), "hunter2-hunter2");
    }

    #[test]
    fn recognises_ssm_and_secrets_manager_references() {
        assert_eq!(
            Secret::new("ssm:/pacer/jwt").reference(),
            Some(SecretRef::Ssm("/pacer/jwt"))
        );
        assert_eq!(
            Secret::new("secretsmanager:arn:aws:secretsmanager:us-east-1:1:secret:x").reference(),
            Some(SecretRef::SecretsManager(
                "arn:aws:secretsmanager:us-east-1:1:secret:x"
            ))
        );
        assert_eq!(Secret::new("plain-value").reference(), None);
    }

    #[test]
    fn a_reference_without_a_name_is_refused() {
        assert!(SecretRef::parse("ssm:").unwrap().check().is_err());
        assert!(SecretRef::parse("ssm:relative").unwrap().check().is_err());
        assert!(
            SecretRef::parse("secretsmanager:")
                .unwrap()
                .check()
                .is_err()
        );
        assert!(SecretRef::parse("ssm:/a b").unwrap().check().is_err());
        assert!(SecretRef::parse("ssm:/pacer/x").unwrap().check().is_ok());
    }
}
