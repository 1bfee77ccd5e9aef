//! Console passwords: argon2id hashes (PHC strings) and the random
//! passwords pacer hands out once (bootstrap, reset, new local users).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::seq::IndexedRandom;

/// Length of the passwords pacer generates.
pub const GENERATED_LENGTH: usize = 16;

/// The argon2id PHC string of `password`, with a fresh random salt.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))?;
    Ok(hash.to_string())
}

/// Whether `password` matches the stored PHC string. A malformed hash
/// matches nothing.
pub fn verify_password(stored: &str, password: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// A random password of letters and digits, without look-alikes (0/O, 1/l/I).
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..GENERATED_LENGTH).filter_map(|_| ALPHABET.choose(&mut rng)).map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_and_nothing_else() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "Correct horse"));
        assert!(!verify_password("not a hash", "correct horse"));
    }

    #[test]
    fn the_same_password_hashes_differently_each_time() {
        assert_ne!(hash_password("x").unwrap(), hash_password("x").unwrap());
    }

    #[test]
    fn generated_passwords_are_sixteen_unambiguous_characters() {
        let a = generate_password();
        assert_eq!(a.len(), GENERATED_LENGTH);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() && !"0O1lI".contains(c)), "{a}");
        assert_ne!(a, generate_password());
    }
}
