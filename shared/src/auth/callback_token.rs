//! Runner callback tokens: short-lived, HMAC-signed with
//! `github.callback_hmac_secret`, naming one runner. The token's register
//! right lapses at the pool's boot deadline (and works once — the store's
//! conditional runner transition enforces that); the token then
//! authenticates only `/complete` and `/error`, until the pool's max
//! lifetime.
//!
//! Format: `pcr1.<payload>.<mac>`, both parts base64url without padding;
//! the MAC is HMAC-SHA256 over `pcr1.<payload>`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::Mac;
use serde::{Deserialize, Serialize};

use crate::domain::Time;

const PREFIX: &str = "pcr1";

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The runner it names.
    #[serde(rename = "r")]
    pub runner_id: String,
    /// The token's own id, stored on the runner: a token minted for an
    /// earlier launch of the same runner record is refused.
    #[serde(rename = "n")]
    pub token_id: String,
    #[serde(rename = "iat")]
    pub issued_at: i64,
    /// Unix seconds after which `/register` refuses the token.
    #[serde(rename = "reg")]
    pub register_by: i64,
    /// Unix seconds after which every callback refuses it.
    #[serde(rename = "exp")]
    pub expires_at: i64,
}

/// Why a token was refused. Callers answer 401 for all of them and log the
/// reason (never the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a pacer callback token")]
    Malformed,
    #[error("the signature does not match (wrong or rotated callback secret)")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token's registration window has passed")]
    RegistrationClosed,
}

use crate::mac::hmac_sha256 as mac;

/// Mints a token for `claims`.
pub fn mint(secret: &[u8], claims: &Claims) -> String {
    // Strings and integers only: serialising cannot fail.
    #[allow(clippy::expect_used)]
    let payload = B64.encode(serde_json::to_vec(claims).expect("claims serialise"));
    let signed = format!("{PREFIX}.{payload}");
    let mut m = mac(secret);
    m.update(signed.as_bytes());
    format!("{signed}.{}", B64.encode(m.finalize().into_bytes()))
}

/// Checks the signature and expiry; returns the claims. Whether the token
/// may still register is [`Claims::check_register`].
pub fn verify(secret: &[u8], token: &str, now: Time) -> Result<Claims, TokenError> {
    let (signed, sig) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let payload = signed.strip_prefix("pcr1.").ok_or(TokenError::Malformed)?;
    let sig = B64.decode(sig).map_err(|_| TokenError::Malformed)?;
    let mut m = mac(secret);
    m.update(signed.as_bytes());
    // verify_slice compares in constant time.
    m.verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
    let claims: Claims =
        serde_json::from_slice(&B64.decode(payload).map_err(|_| TokenError::Malformed)?)
            .map_err(|_| TokenError::Malformed)?;
    if now.timestamp() >= claims.expires_at {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

impl Claims {
    pub fn check_register(&self, now: Time) -> Result<(), TokenError> {
        if now.timestamp() >= self.register_by {
            Err(TokenError::RegistrationClosed)
        } else {
            Ok(())
        }
    }
}

/// Reads `Authorization: Bearer <token>`.
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn claims() -> Claims {
        Claims {
            runner_id: "run_1".into(),
            token_id: "n1".into(),
            issued_at: 1000,
            register_by: 1600,
            expires_at: 4600,
        }
    }

    fn at(secs: i64) -> Time {
        Utc.timestamp_opt(secs, 0).unwrap()
    }

    #[test]
    fn a_minted_token_verifies_and_names_its_runner() {
        let token = mint(b"secret-secret-secret-secret-secret", &claims());
        let c = verify(b"secret-secret-secret-secret-secret", &token, at(1001)).unwrap();
        assert_eq!(c, claims());
        assert!(c.check_register(at(1599)).is_ok());
        assert_eq!(
            c.check_register(at(1600)),
            Err(TokenError::RegistrationClosed)
        );
    }

    #[test]
    fn a_token_signed_with_another_secret_or_altered_is_refused() {
        let token = mint(b"one", &claims());
        assert_eq!(
            verify(b"two", &token, at(1001)),
            Err(TokenError::BadSignature)
        );
        let mut other = claims();
        other.runner_id = "run_2".into();
        let forged_payload = mint(b"attacker", &other);
        let (_, forged) = forged_payload.split_once('.').unwrap();
        let (forged, _) = forged.split_once('.').unwrap();
        let (_, real_sig) = token.rsplit_once('.').unwrap();
        assert_eq!(
            verify(b"one", &format!("pcr1.{forged}.{real_sig}"), at(1001)),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn expired_and_malformed_tokens_are_refused() {
        let token = mint(b"k", &claims());
        assert_eq!(verify(b"k", &token, at(4600)), Err(TokenError::Expired));
        for bad in ["", "pcr1", "pcr1.x", "abc.def.ghi", "pcr1.!!.??"] {
            assert!(verify(b"k", bad, at(1001)).is_err(), "{bad}");
        }
    }

    #[test]
    fn bearer_reads_the_authorization_header() {
        let mut h = http::HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer pcr1.a.b".parse().unwrap(),
        );
        assert_eq!(bearer(&h), Some("pcr1.a.b"));
        h.insert(http::header::AUTHORIZATION, "Basic xyz".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }

    use crate::arbitrary::{hostile_text, object_with};
    use crate::auth::tampering::tamper;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    const SECRET: &[u8] = b"secret-secret-secret-secret-secret";

    /// Claims as pacer writes them, and as a forger might: every field
    /// plausible, at an edge, or any JSON at all.
    fn any_claims() -> impl Strategy<Value = Value> {
        let times = vec![
            json!(1000),
            json!(1600),
            json!(4600),
            json!(i64::MIN),
            json!(i64::MAX),
            json!(-1),
            json!(0),
        ];
        object_with(vec![
            ("r", vec![json!("run_1"), json!("run_2"), json!("")]),
            ("n", vec![json!("n1"), json!("")]),
            ("iat", times.clone()),
            ("reg", times.clone()),
            ("exp", times),
        ])
        .prop_map(Value::Object)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_text_is_refused(token in prop_oneof![hostile_text(), "pcr1\\.[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_-]{0,60}"]) {
            prop_assert!(verify(SECRET, &token, at(1001)).is_err());
        }

        #[test]
        fn a_token_verifies_only_untouched(tampering in tamper(any_claims())) {
            let token = mint(SECRET, &claims());
            let changed = tampering.apply(&token);
            match verify(SECRET, &changed, at(1001)) {
                Ok(c) => prop_assert!(changed == token && c == claims(), "accepted {changed:?}"),
                Err(_) => prop_assert_ne!(changed, token),
            }
        }

        #[test]
        fn any_payload_signed_with_the_secret_verifies_only_as_well_formed_unexpired_claims(payload in any_claims(), now in -10i64..5000) {
            // What a holder of the secret could mint: a forger cannot, so
            // this is about never panicking on what the signature covers.
            let signed = format!("pcr1.{}", B64.encode(payload.to_string()));
            let sig = B64.encode(mac(SECRET).chain_update(signed.as_bytes()).finalize().into_bytes());
            let token = format!("{signed}.{sig}");
            let well_formed: Option<Claims> = serde_json::from_value(payload).ok();
            match verify(SECRET, &token, at(now)) {
                Ok(c) => prop_assert!(Some(&c) == well_formed.as_ref() && now < c.expires_at),
                Err(TokenError::Expired) => prop_assert!(well_formed.is_some_and(|c| now >= c.expires_at)),
                Err(e) => prop_assert!(well_formed.is_none(), "{e}"),
            }
        }
    }
}
