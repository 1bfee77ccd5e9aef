//! Base64 for the test fakes (JWT parts, JWKs, PKCE, PEM bodies, JIT
//! configs), through the `base64` crate.

use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{
    GeneralPurpose, GeneralPurposeConfig, STANDARD, URL_SAFE_NO_PAD,
};
use base64::{Engine, alphabet};

/// Decodes with or without padding.
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const URL_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Standard alphabet, padded.
pub fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// base64url without padding (JWT parts, JWK members, PKCE).
pub fn encode_url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// base64url, padded or not.
pub fn decode_url(text: &str) -> Option<Vec<u8>> {
    URL_LENIENT.decode(text).ok()
}

/// Standard alphabet, padded or not; whitespace (PEM line breaks) skipped.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD_LENIENT.decode(compact).ok()
}

/// Either alphabet, padded or not.
pub fn decode_any(text: &str) -> Option<Vec<u8>> {
    decode_url(text).or_else(|| decode(text))
}

/// The DER inside a PEM block.
pub fn pem_body(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    decode(&body).expect("a PEM body is base64")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_in_both_alphabets() {
        for text in ["", "f", "fo", "foo", "foob", "fooba", "foobar"] {
            assert_eq!(decode(&encode(text.as_bytes())).unwrap(), text.as_bytes());
            assert_eq!(
                decode_url(&encode_url(text.as_bytes())).unwrap(),
                text.as_bytes()
            );
        }
        assert_eq!(encode(b"fo"), "Zm8=");
        assert_eq!(decode_url("_-8").unwrap(), [0xff, 0xef]);
        assert_eq!(decode_any("Zm8="), Some(b"fo".to_vec()));
        // RFC 7636 appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        use sha2::Digest;
        assert_eq!(
            encode_url(&sha2::Sha256::digest(verifier.as_bytes())),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
