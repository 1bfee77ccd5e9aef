//! Authentication: runner callback tokens now; console sessions, local
//! login, OIDC SSO and workload identity as they land.

pub mod callback_token;
pub mod oidc;
pub mod password;
pub mod session;
