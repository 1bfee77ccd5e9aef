//! Console users.

use serde::{Deserialize, Serialize};

use super::{Invalid, Time};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
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

/// No email address is longer (RFC 5321's path limit, less its brackets).
pub const MAX_EMAIL_BYTES: usize = 254;

/// Normalises an email address for lookup and checks its shape.
pub fn parse_email(field: &str, raw: &str) -> Result<String, Invalid> {
    let email = raw.trim().to_lowercase();
    let ok = email.len() <= MAX_EMAIL_BYTES
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty() && !domain.contains('@') && !email.contains(char::is_whitespace))
        // An address with a NUL, an escape or a right-to-left override shows
        // in the console and the audit log as another address.
        && !email.contains(super::text::is_invisible);
    if ok {
        Ok(email)
    } else {
        Err(Invalid::new(
            field,
            format!("{raw:?} is not an email address"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An admin could create `probe@ex\u{0}ample.com` or one behind a
    /// right-to-left override: users whose address reads as another's.
    #[test]
    fn an_email_with_a_control_or_invisible_formatting_character_is_refused() {
        for bad in [
            "probe@ex\u{0}ample.com",
            "probe@ex\u{1b}[31mample.com",
            "\u{202e}moc.elpmaxe@eborp",
            "probe@ex\u{200b}ample.com",
            "\u{feff}probe@example.com",
        ] {
            assert!(parse_email("email", bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_email("email", "Jürgen@Exämple.com").unwrap(),
            "jürgen@exämple.com",
            "visible non-ASCII text stays an address"
        );
    }

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(
            parse_email("email", "  Admin@Example.COM ").unwrap(),
            "admin@example.com"
        );
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
