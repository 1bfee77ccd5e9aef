//! Authentication: runner callback tokens, console sessions, local login,
//! OIDC SSO, and the workload OIDC tokens of self-service runners.

pub mod callback_token;
pub mod oidc;
pub mod password;
pub mod session;
pub mod workload;

/// Ways a signed token (`<prefix>.<payload>.<signature>`, each part
/// base64url) can be tampered with, for the property tests of its verifier.
#[cfg(test)]
pub(crate) mod tampering {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use proptest::prelude::*;
    use proptest::sample::Index;

    /// One change to a token.
    #[derive(Debug, Clone)]
    pub enum Tamper {
        /// A character replaced.
        Flip(Index, char),
        /// Cut short.
        Truncate(Index),
        /// A `.` slipped in.
        ExtraDot(Index),
        /// Text added at the end.
        Append(String),
        /// The middle part replaced by another JSON payload, signature kept.
        Payload(serde_json::Value),
    }

    /// Any tampering, the replacement payload drawn from `claims`.
    pub fn tamper(
        claims: impl Strategy<Value = serde_json::Value>,
    ) -> impl Strategy<Value = Tamper> {
        let character = prop_oneof![
            proptest::char::ranges(vec!['A'..='Z', 'a'..='z', '0'..='9'].into()),
            proptest::sample::select(vec!['-', '_', '.', '=', '+', '/', ' ', '\0', '€']),
        ];
        prop_oneof![
            3 => (any::<Index>(), character).prop_map(|(at, c)| Tamper::Flip(at, c)),
            1 => any::<Index>().prop_map(Tamper::Truncate),
            1 => any::<Index>().prop_map(Tamper::ExtraDot),
            1 => crate::arbitrary::hostile_text().prop_map(Tamper::Append),
            2 => claims.prop_map(Tamper::Payload),
        ]
    }

    impl Tamper {
        /// `token` with this change made.
        pub fn apply(&self, token: &str) -> String {
            let chars: Vec<char> = token.chars().collect();
            let mut out = chars.clone();
            match self {
                Tamper::Flip(at, c) => out[at.index(chars.len())] = *c,
                Tamper::Truncate(at) => out.truncate(at.index(chars.len())),
                Tamper::ExtraDot(at) => out.insert(at.index(chars.len() + 1), '.'),
                Tamper::Append(tail) => out.extend(tail.chars()),
                Tamper::Payload(claims) => {
                    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
                    parts[1] = B64.encode(claims.to_string());
                    return parts.join(".");
                }
            }
            out.into_iter().collect()
        }
    }
}
