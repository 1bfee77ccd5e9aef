//! Console sessions: HS256 JWTs signed with `auth.jwt_secret`,
//! `iss=pacer`, `aud=pacer-session`, `sub` = the user id, `jti` = the
//! session id (what logout revokes), `iat`/`nbf`/`exp`. Verification pins
//! the algorithm, issuer and audience, and checks times against the
//! injected clock, so a token minted by a sibling service sharing the
//! secret, or for another purpose, is refused.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};

use crate::domain::{Time, User};

pub const ISSUER: &str = "pacer";
pub const AUDIENCE: &str = "pacer-session";
/// The cookie that carries the session.
pub const COOKIE: &str = "pacer_session";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    pub iss: String,
    pub aud: String,
    /// The user's id.
    pub sub: String,
    /// The session's id.
    pub jti: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// The user's session generation when it was opened: a password change
    /// since ends it (tokens minted before there was one count as 0).
    #[serde(default, rename = "gen")]
    pub generation: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Anything wrong with the token itself; the reason is for the log.
    #[error("invalid session token: {0}")]
    Invalid(String),
    #[error("the session has expired")]
    Expired,
}

/// Mints a session for `user` valid for `ttl` from `now`.
pub fn mint(
    secret: &[u8],
    user: &User,
    now: Time,
    ttl: std::time::Duration,
) -> (String, SessionClaims) {
    let claims = SessionClaims {
        generation: user.session_generation,
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: user.id.clone(),
        jti: format!("ses_{}", hex::encode(rand::random::<[u8; 16]>())),
        iat: now.timestamp(),
        nbf: now.timestamp(),
        exp: now.timestamp() + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2),
    };
    // HS256 takes a key of any length and the claims are plain data: nothing here can fail.
    #[allow(clippy::expect_used)]
    let token = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("HS256 signing with a byte key cannot fail");
    (token, claims)
}

/// Verifies a session token as of `now`.
pub fn verify(secret: &[u8], token: &str, now: Time) -> Result<SessionClaims, SessionError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.algorithms = vec![Algorithm::HS256];
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["iss", "aud", "sub", "exp", "nbf", "iat"]);
    // Times are checked below against the injected clock, not the process's.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    let claims = decode::<SessionClaims>(token, &DecodingKey::from_secret(secret), &validation)
        .map_err(|e| SessionError::Invalid(e.to_string()))?
        .claims;
    let now = now.timestamp();
    if now >= claims.exp {
        return Err(SessionError::Expired);
    }
    // Saturating: `iat` is whatever the signed token says, i64::MIN included.
    if now < claims.nbf || now < claims.iat.saturating_sub(60) {
        return Err(SessionError::Invalid("not valid yet".into()));
    }
    if claims.jti.is_empty() || claims.sub.is_empty() {
        return Err(SessionError::Invalid("no session or user id".into()));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use chrono::{TimeZone, Utc};
    use serde_json::json;
    use std::time::Duration;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn at(secs: i64) -> Time {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn forged(
        header: serde_json::Value,
        claims: serde_json::Value,
        key: &EncodingKey,
        alg: Algorithm,
    ) -> String {
        let mut h = Header::new(alg);
        if let Some(typ) = header.get("typ") {
            h.typ = typ.as_str().map(str::to_string);
        }
        encode(&h, &claims, key).unwrap()
    }

    fn user() -> User {
        crate::store::conformance::user("a@example.com", at(0))
    }

    fn good_claims() -> serde_json::Value {
        json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "usr_1", "jti": "ses_1",
               "iat": at(0).timestamp(), "nbf": at(0).timestamp(), "exp": at(3600).timestamp()})
    }

    #[test]
    fn a_minted_session_verifies_until_it_expires() {
        let (token, claims) = mint(SECRET, &user(), at(0), Duration::from_secs(3600));
        assert_eq!(verify(SECRET, &token, at(10)).unwrap(), claims);
        assert_eq!(verify(SECRET, &token, at(3600)), Err(SessionError::Expired));
        assert!(
            matches!(
                verify(b"another-secret-another-secret-xx", &token, at(10)),
                Err(SessionError::Invalid(_))
            ),
            "a rotated secret invalidates it"
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let header = B64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = B64.encode(good_claims().to_string());
        assert!(matches!(
            verify(SECRET, &format!("{header}.{payload}."), at(10)),
            Err(SessionError::Invalid(_))
        ));
    }

    #[test]
    fn other_algorithms_are_refused_even_with_the_right_secret() {
        let hs512 = forged(
            json!({}),
            good_claims(),
            &EncodingKey::from_secret(SECRET),
            Algorithm::HS512,
        );
        assert!(matches!(
            verify(SECRET, &hs512, at(10)),
            Err(SessionError::Invalid(_))
        ));
        let pem = include_bytes!("../../../tests/blackbox/fake_github/test_only_app_key.pem");
        let rs256 = forged(
            json!({}),
            good_claims(),
            &EncodingKey::from_rsa_pem(pem).unwrap(),
            Algorithm::RS256,
        );
        assert!(matches!(
            verify(SECRET, &rs256, at(10)),
            Err(SessionError::Invalid(_))
        ));
    }

    #[test]
    fn an_edited_payload_is_refused() {
        let (token, _) = mint(SECRET, &user(), at(0), Duration::from_secs(3600));
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&B64.decode(&parts[1]).unwrap()).unwrap();
        claims["sub"] = "usr_admin".into();
        parts[1] = B64.encode(claims.to_string());
        assert!(matches!(
            verify(SECRET, &parts.join("."), at(10)),
            Err(SessionError::Invalid(_))
        ));
    }

    #[test]
    fn wrong_issuer_audience_or_missing_claims_are_refused() {
        let key = EncodingKey::from_secret(SECRET);
        for (field, value) in [
            ("iss", json!("someone-else")),
            ("aud", json!("pacer-other")),
            ("aud", json!(["x"])),
        ] {
            let mut c = good_claims();
            c[field] = value.clone();
            let token = forged(json!({}), c, &key, Algorithm::HS256);
            assert!(
                matches!(
                    verify(SECRET, &token, at(10)),
                    Err(SessionError::Invalid(_))
                ),
                "{field}={value}"
            );
        }
        for missing in ["exp", "iat", "nbf", "sub", "aud", "iss"] {
            let mut c = good_claims();
            c.as_object_mut().unwrap().remove(missing);
            let token = forged(json!({}), c, &key, Algorithm::HS256);
            assert!(verify(SECRET, &token, at(10)).is_err(), "missing {missing}");
        }
    }

    /// Found by any_claims_signed_with_the_secret_verify_only_when_every_rule_holds:
    /// `iat - 60` overflowed for an `iat` of i64::MIN (a panic in a debug
    /// build, a wrap to "not valid yet" in a release one).
    #[test]
    fn a_session_issued_at_the_earliest_time_is_judged_without_overflow() {
        let mut claims = good_claims();
        claims["iat"] = json!(i64::MIN);
        let token = forged(
            json!({}),
            claims,
            &EncodingKey::from_secret(SECRET),
            Algorithm::HS256,
        );
        assert!(verify(SECRET, &token, at(10)).is_ok());
    }

    #[test]
    fn a_token_not_valid_yet_is_refused() {
        let (token, _) = mint(SECRET, &user(), at(600), Duration::from_secs(3600));
        assert!(matches!(
            verify(SECRET, &token, at(0)),
            Err(SessionError::Invalid(_))
        ));
    }

    use crate::arbitrary::{any_json, hostile_text};
    use crate::auth::tampering::tamper;
    use proptest::prelude::*;

    /// A value for `claim` at an edge of its type, another plausible one,
    /// or any JSON at all.
    fn changed(claim: &'static str) -> impl Strategy<Value = (&'static str, serde_json::Value)> {
        let t = |s: i64| json!(at(s).timestamp());
        let edges = match claim {
            "iat" | "nbf" | "exp" | "gen" => vec![
                json!(i64::MIN),
                json!(i64::MAX),
                json!(u64::MAX),
                json!(-1),
                json!(1.5),
                t(-3600),
                t(3600),
            ],
            _ => vec![
                json!(""),
                json!("someone-else"),
                json!(ISSUER),
                json!(AUDIENCE),
                json!([AUDIENCE]),
                json!(null),
            ],
        };
        prop_oneof![3 => proptest::sample::select(edges), 1 => any_json()]
            .prop_map(move |value| (claim, value))
    }

    /// The claims of a good session with one claim changed, now and then
    /// two or three.
    fn any_claims() -> impl Strategy<Value = serde_json::Value> {
        let claim =
            proptest::sample::select(vec!["iss", "aud", "sub", "jti", "iat", "nbf", "exp", "gen"])
                .prop_flat_map(changed);
        let changes = prop_oneof![3 => proptest::collection::vec(claim.clone(), 1..2), 1 => proptest::collection::vec(claim, 2..4)];
        changes.prop_map(|changes| {
            let mut claims = good_claims();
            for (claim, value) in changes {
                claims[claim] = value;
            }
            claims
        })
    }

    proptest! {
        // Cheap (an HMAC each), and the claim that breaks a rule is one of many.
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_text_is_refused(token in prop_oneof![hostile_text(), "[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_-]{0,50}"]) {
            prop_assert!(verify(SECRET, &token, at(10)).is_err());
        }

        #[test]
        fn a_session_verifies_only_untouched(tampering in tamper(any_claims())) {
            let (token, claims) = mint(SECRET, &user(), at(0), Duration::from_secs(3600));
            let changed = tampering.apply(&token);
            match verify(SECRET, &changed, at(10)) {
                Ok(c) => prop_assert!(changed == token && c == claims, "accepted {changed:?}"),
                Err(_) => prop_assert_ne!(changed, token),
            }
        }

        #[test]
        fn any_claims_signed_with_the_secret_verify_only_when_every_rule_holds(claims in any_claims(), now in prop_oneof![3 => 0i64..3600, 1 => -7200i64..10_800]) {
            // A forger cannot sign; this is about never panicking on what
            // the signature covers, and the rules holding for what passes.
            let token = forged(json!({}), claims, &EncodingKey::from_secret(SECRET), Algorithm::HS256);
            let now = at(now).timestamp();
            if let Ok(c) = verify(SECRET, &token, Utc.timestamp_opt(now, 0).unwrap()) {
                prop_assert!(c.iss == ISSUER && c.aud == AUDIENCE && !c.sub.is_empty() && !c.jti.is_empty(), "{c:?}");
                prop_assert!(c.nbf <= now && now < c.exp && now >= c.iat.saturating_sub(60), "{c:?} at {now}");
            }
        }
    }
}
