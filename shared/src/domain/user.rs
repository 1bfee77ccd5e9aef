//! Console users.

use serde::{Deserialize, Serialize};

use super::{Invalid, Time};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Viewer,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    /// Lower-cased and trimmed: the login key.
    pub email: String,
    /// argon2id PHC string; never serialised to clients.
    #[serde(default, skip_serializing)]
    pub password_hash: Option<String>,
    pub oidc_subject: Option<String>,
    pub role: Role,
    pub disabled: bool,
    /// Sessions carry the generation they were opened in; a password change
    /// or reset moves it on, which ends every session opened before.
    #[serde(default)]
    pub session_generation: u32,
    pub created_at: Time,
    pub updated_at: Time,
}

/// Normalises an email address for lookup and checks its shape.
pub fn parse_email(field: &str, raw: &str) -> Result<String, Invalid> {
    let email = raw.trim().to_lowercase();
    let ok = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty() && !domain.contains('@') && !email.contains(char::is_whitespace));
    if ok {
        Ok(email)
    } else {
        Err(Invalid::new(field, format!("{raw:?} is not an email address")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(parse_email("email", "  Admin@Example.COM ").unwrap(), "admin@example.com");
        for bad in ["", "@x.com", "a@", "a b@c", "a@b@c"] {
            assert!(parse_email("email", bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn any_text_is_an_email_or_a_refusal_naming_the_field(
            raw in proptest::prop_oneof![crate::arbitrary::hostile_text(), "[ A-Za-z0-9.@İ]{0,20}@[A-Za-z0-9.@ ]{0,20}"],
        ) {
            match parse_email("email", &raw) {
                Ok(email) => {
                    proptest::prop_assert!(email.len() <= 254 && !email.contains(char::is_whitespace));
                    proptest::prop_assert_eq!(parse_email("email", &email), Ok(email.clone()), "a stored address is its own login key");
                }
                Err(e) => proptest::prop_assert!(e.field == "email" && !e.message.is_empty()),
            }
        }
    }
}
