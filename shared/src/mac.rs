//! HMAC-SHA256, the one keyed hash pacer signs and checks with: webhook
//! signatures, runner callback tokens, the SSO state cookie.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub type HmacSha256 = Hmac<Sha256>;

/// A fresh HMAC-SHA256 keyed with `key`, of any length.
pub fn hmac_sha256(key: &[u8]) -> HmacSha256 {
    // HMAC hashes a key longer than a block and pads a shorter one, so no
    // key length is refused: `new_from_slice` only fails for fixed-size MACs.
    #[allow(clippy::expect_used)]
    HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// HMAC-SHA256 of `parts`, one after the other, under `key`.
pub fn hmac_sha256_of(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut mac = hmac_sha256(key);
    for part in parts {
        mac.update(part);
    }
    mac
}
