//! The App JWT checked as GitHub checks it: an RS256 signature under the App's public key, `iss`
//! the App id, `iat` not in the future, `exp` in the future but at most ten minutes ahead.
//!
//! RS256 is RSASSA-PKCS1-v1_5 with SHA-256: the verification is the one rustls (aws-lc-rs) uses
//! for TLS signatures of that scheme, so the test crate needs no JWT library of its own.

use rustls::SignatureScheme;
use serde_json::Value;

use super::base64;

/// GitHub's limit on how far ahead `exp` may be.
const MAX_LIFETIME_SECS: i64 = 600;
/// Tolerated drift of the client's clock ahead of GitHub's.
const CLOCK_SKEW_SECS: i64 = 30;

/// The claims of an accepted App JWT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppJwtClaims {
    pub iat: i64,
    pub exp: i64,
    /// As sent: GitHub accepts the App id as a number or a string (or the client id).
    pub iss: String,
}

/// Checks `token` and answers its claims, or why GitHub would refuse it.
pub fn verify(
    token: &str,
    public_key_pkcs1_der: &[u8],
    app_id: u64,
    now: i64,
) -> Result<AppJwtClaims, String> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a JWT (three dot-separated parts)".into());
    };
    let header: Value = decode_json(header, "header")?;
    if header["alg"] != "RS256" {
        return Err(format!("alg is {}, GitHub wants RS256", header["alg"]));
    }
    let signature = base64::decode_url(signature).ok_or("the signature is not base64url")?;
    let signed = format!(
        "{}.{}",
        token.split('.').next().unwrap_or_default(),
        payload
    );
    verify_rs256(public_key_pkcs1_der, signed.as_bytes(), &signature)?;

    let claims: Value = decode_json(payload, "payload")?;
    let time = |name: &str| {
        claims[name]
            .as_i64()
            .ok_or_else(|| format!("{name} is missing or not an integer"))
    };
    let (iat, exp) = (time("iat")?, time("exp")?);
    let iss = match &claims["iss"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => return Err(format!("iss is {other}, not the App id")),
    };
    if iss != app_id.to_string() {
        return Err(format!("iss {iss} is not the App id {app_id}"));
    }
    if iat > now + CLOCK_SKEW_SECS {
        return Err(format!(
            "'Issued at' claim ('iat') is {} s in the future",
            iat - now
        ));
    }
    if exp <= now {
        return Err("'Expiration time' claim ('exp') is in the past".into());
    }
    if exp > now + MAX_LIFETIME_SECS + CLOCK_SKEW_SECS {
        return Err("'Expiration time' claim ('exp') is too far in the future".into());
    }
    if exp <= iat {
        return Err("exp is not after iat".into());
    }
    Ok(AppJwtClaims { iat, exp, iss })
}

fn decode_json(part: &str, what: &str) -> Result<Value, String> {
    let bytes = base64::decode_url(part).ok_or_else(|| format!("the {what} is not base64url"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("the {what} is not the expected JSON: {e}"))
}

fn verify_rs256(public_key: &[u8], message: &[u8], signature: &[u8]) -> Result<(), String> {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let (_, algorithms) = provider
        .signature_verification_algorithms
        .mapping
        .iter()
        .find(|(scheme, _)| *scheme == SignatureScheme::RSA_PKCS1_SHA256)
        .expect("aws-lc-rs verifies RSA PKCS#1 SHA-256");
    if algorithms
        .iter()
        .any(|alg| alg.verify_signature(public_key, message, signature).is_ok())
    {
        Ok(())
    } else {
        Err("the signature does not verify under the App's public key".into())
    }
}
