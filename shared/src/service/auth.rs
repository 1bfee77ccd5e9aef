//! Console authentication: the bootstrap user, local login with a
//! store-backed rate limit, sessions (revocable, and dead the moment their
//! user is disabled), roles, and the users an admin manages.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use super::audit::{record, record_unauthenticated};
use super::limits::{self, Window};
use super::{Caller, Ports, ServiceError, ServiceResult};
use crate::auth::password::{self, generate_password};
use crate::auth::session::{self, SessionClaims};
use crate::config::Secret;
use crate::domain::user::{MAX_EMAIL_BYTES, parse_email};
use crate::domain::{Actor, ActorKind, IdKind, Invalid, Role, Time, User};
use crate::store::{Page, PageRequest, Pages, StoreError};

/// What console auth needs, from `auth.*`.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub jwt_secret: Secret,
    pub session_ttl: Duration,
    /// Local email + password login (`auth.local.enabled`).
    pub local: bool,
    /// `auth.login_rate_limit`: attempts per window, per client address.
    pub login_attempts: u32,
    pub login_window: Duration,
    /// The SSO button's label, when OIDC is on.
    pub oidc_issuer_host: Option<String>,
    /// Set `Secure` on the cookie (`server.public_url` is https).
    pub secure_cookie: bool,
}

/// Why a sign-in or a session was refused. The caller sees one generic
/// message per kind; the detail goes to the log and the audit trail.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the email or password is wrong")]
    BadCredentials,
    #[error("sign in first")]
    NoSession,
    #[error("the session is no longer valid; sign in again")]
    InvalidSession(String),
    #[error("too many sign-in attempts; try again in {retry_after:?}")]
    RateLimited { retry_after: Duration },
    #[error("local login is turned off")]
    LocalDisabled,
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        AuthError::Service(e.into())
    }
}

impl From<anyhow::Error> for AuthError {
    fn from(e: anyhow::Error) -> Self {
        AuthError::Service(e.into())
    }
}

/// A user as clients see it (never the password hash).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub role: Role,
    pub disabled: bool,
    pub sso: bool,
    /// The user can sign in with a local password (and so change it).
    pub local_password: bool,
    pub created_at: Time,
    pub updated_at: Time,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView {
            id: u.id.clone(),
            email: u.email.clone(),
            role: u.role,
            disabled: u.disabled,
            sso: u.oidc_subject.is_some(),
            local_password: u.password_hash.is_some(),
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

async fn no_users_yet(ports: &Ports) -> ServiceResult<bool> {
    Ok(ports
        .store
        .list_users(&PageRequest::first(1))
        .await?
        .items
        .is_empty())
}

fn new_user(ports: &Ports, email: String, role: Role, password_hash: Option<String>) -> User {
    let now = ports.clock.now();
    User {
        id: ports.ids.new_id(IdKind::User, now),
        email,
        password_hash,
        oidc_subject: None,
        role,
        disabled: false,
        session_generation: 0,
        created_at: now,
        updated_at: now,
    }
}

/// Creates the bootstrap admin if there are no users: returns its
/// password, to be shown once. Concurrent starts create one user (the
/// email is unique; the loser sees a conflict and returns `None`).
pub async fn bootstrap(ports: &Ports, email: &str) -> ServiceResult<Option<String>> {
    if !no_users_yet(ports).await? {
        return Ok(None);
    }
    let email = parse_email("auth.local.email", email)?;
    let password = generate_password();
    let user = new_user(
        ports,
        email.clone(),
        Role::Admin,
        Some(password::hash(&password).await?),
    );
    match ports.store.create_user(&user).await {
        Ok(()) => {
            record(
                ports,
                &Caller::system("bootstrap"),
                "user.created",
                Some(&user.id),
                json!({"email": email, "role": "admin", "via": "bootstrap"}),
            )
            .await?;
            Ok(Some(password))
        }
        Err(StoreError::Conflict(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Sets a new random password for `email` (`pacer admin reset-password`).
pub async fn reset_password(ports: &Ports, email: &str) -> ServiceResult<String> {
    let password = generate_password();
    let hash = password::hash(&password).await?;
    admin_cli_change(ports, email, "user.password_reset", |user| {
        user.password_hash = Some(hash);
        // Whoever knew the old password may hold a session: every one ends.
        user.session_generation = user.session_generation.wrapping_add(1);
        json!({"email": user.email})
    })
    .await?;
    Ok(password)
}

/// Sets a user's role by email (`pacer admin set-role`): the way back in
/// when nobody is admin any more.
pub async fn set_role_by_email(ports: &Ports, email: &str, role: Role) -> ServiceResult<User> {
    admin_cli_change(ports, email, "user.role_changed", |user| {
        user.role = role;
        json!({"email": user.email, "role": role})
    })
    .await
}

/// A change an operator makes to the user with `email` from the command
/// line (no session: the way in when the console is locked), audited as
/// `action` with the detail `change` returns.
async fn admin_cli_change(
    ports: &Ports,
    email: &str,
    action: &str,
    change: impl FnOnce(&mut User) -> serde_json::Value,
) -> ServiceResult<User> {
    let email = parse_email("email", email)?;
    let mut user = ports
        .store
        .user_by_email(&email)
        .await?
        .ok_or(ServiceError::NotFound("user"))?;
    let detail = change(&mut user);
    user.updated_at = ports.clock.now();
    ports.store.update_user(&user).await?;
    record(
        ports,
        &Caller::system("admin-cli"),
        action,
        Some(&user.id),
        detail,
    )
    .await?;
    Ok(user)
}

/// A signed-in session: the token for the cookie and its claims.
pub struct SignedIn {
    pub token: String,
    pub claims: SessionClaims,
    pub user: User,
}

/// A sign-in attempt, counted against `auth.login_rate_limit`.
pub struct Attempt {
    counter: String,
    window: Window,
}

impl Attempt {
    /// A successful sign-in gives its hit back: the limit is for guesses.
    pub async fn succeeded(self, ports: &Ports) {
        if let Err(e) = ports
            .store
            .refund_hit(&self.counter, self.window.start)
            .await
        {
            tracing::warn!(error = %crate::error_text::display_chain(&e), "could not take a successful sign-in off the rate limit");
        }
    }
}

/// Counts a sign-in attempt from `client_ip` against `auth.login_rate_limit`
/// (local logins and SSO callbacks share it); refuses one over the limit.
/// Every attempt counts as it is made, so parallel guesses cannot slip past.
pub async fn count_attempt(
    ports: &Ports,
    auth: &AuthSettings,
    client_ip: Option<std::net::IpAddr>,
) -> Result<Attempt, AuthError> {
    let ip = client_ip.map_or("unknown".to_string(), |ip| ip.to_string());
    let counter = format!("login:{ip}");
    let (hits, window) = limits::hit(ports, &counter, auth.login_window).await?;
    if hits > u64::from(auth.login_attempts) {
        return Err(AuthError::RateLimited {
            retry_after: window.remaining(ports.clock.now()),
        });
    }
    Ok(Attempt { counter, window })
}

/// Local email + password login.
pub async fn login(
    ports: &Ports,
    auth: &AuthSettings,
    client_ip: Option<std::net::IpAddr>,
    email: &str,
    password: &str,
) -> Result<SignedIn, AuthError> {
    if !auth.local {
        return Err(AuthError::LocalDisabled);
    }
    let now = ports.clock.now();
    let attempt = count_attempt(ports, auth, client_ip).await?;
    let email = email.trim().to_lowercase();
    // Longer than any address, it is nobody's: neither looked up nor written
    // to the audit log whole (an unauthenticated caller chose it).
    let (user, email) = if email.len() <= MAX_EMAIL_BYTES {
        (ports.store.user_by_email(&email).await?, email)
    } else {
        (
            None,
            format!(
                "{}…",
                email.chars().take(MAX_EMAIL_BYTES).collect::<String>()
            ),
        )
    };
    // Hash even for an unknown email, so the answer takes the same time.
    let stored = user.as_ref().and_then(|u| u.password_hash.clone());
    let matches = match &stored {
        Some(hash) => password::verify(hash, password).await?,
        None => {
            static DUMMY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
            let dummy = DUMMY
                .get_or_try_init(|| password::hash("no such user"))
                .await?;
            let _ = password::verify(dummy, password).await?;
            false
        }
    };
    let caller = Caller {
        actor: Actor {
            kind: ActorKind::User,
            id: email.clone(),
        },
        client_ip,
        role: Role::Viewer,
    };
    let Some(user) = user.filter(|u| matches && !u.disabled) else {
        record_unauthenticated(
            ports,
            &caller,
            "auth.login_failed",
            Some(&email),
            json!({"method": "local"}),
        )
        .await?;
        return Err(AuthError::BadCredentials);
    };
    attempt.succeeded(ports).await;
    let detail = json!({"method": "local", "email": user.email});
    open_session(
        ports,
        auth,
        user,
        client_ip,
        now,
        "auth.login_succeeded",
        detail,
    )
    .await
}

/// A session for `user`, who has just proved who they are, audited as
/// `action`: how every way of signing in ends.
async fn open_session(
    ports: &Ports,
    auth: &AuthSettings,
    user: User,
    client_ip: Option<std::net::IpAddr>,
    now: crate::domain::Time,
    action: &str,
    detail: serde_json::Value,
) -> Result<SignedIn, AuthError> {
    let (token, claims) = session::mint(
        auth.jwt_secret.expose().as_bytes(),
        &user,
        now,
        auth.session_ttl,
    );
    let caller = Caller {
        actor: Actor::user(&user.id),
        client_ip,
        role: user.role,
    };
    record(ports, &caller, action, Some(&user.id), detail).await?;
    Ok(SignedIn {
        token,
        claims,
        user,
    })
}

/// The caller a session token names: checked for signature, expiry,
/// revocation, and a user that still exists and is not disabled — on every
/// request, so a disabled user's sessions stop at once on every instance.
pub async fn authenticate(
    ports: &Ports,
    auth: &AuthSettings,
    token: &str,
    client_ip: Option<std::net::IpAddr>,
) -> Result<(Caller, SessionClaims), AuthError> {
    let claims = session::verify(
        auth.jwt_secret.expose().as_bytes(),
        token,
        ports.clock.now(),
    )
    .map_err(|e| AuthError::InvalidSession(e.to_string()))?;
    if ports.store.is_session_revoked(&claims.jti).await? {
        return Err(AuthError::InvalidSession("signed out".into()));
    }
    let user = ports
        .store
        .get_user(&claims.sub)
        .await?
        .ok_or_else(|| AuthError::InvalidSession("its user is gone".into()))?;
    if user.disabled {
        return Err(AuthError::InvalidSession("its user is disabled".into()));
    }
    if claims.generation != user.session_generation {
        return Err(AuthError::InvalidSession(
            "its user's password changed since".into(),
        ));
    }
    Ok((
        Caller {
            actor: Actor::user(&user.id),
            client_ip,
            role: user.role,
        },
        claims,
    ))
}

/// Signs in the identity an IdP vouched for: the allowlists, then the user
/// by subject, else a local user with the same (verified) email — linked —
/// else a new user (the first ever is admin, later ones viewers;
/// `admin_groups` makes admins). `Err(reason)` when denied: the reason is
/// audited, the browser sees a generic page.
pub async fn oidc_sign_in(
    ports: &Ports,
    auth: &AuthSettings,
    settings: &crate::auth::oidc::OidcSettings,
    identity: &crate::auth::oidc::Identity,
    client_ip: Option<std::net::IpAddr>,
) -> Result<SignedIn, AuthError> {
    use crate::auth::oidc::{admit, is_admin_by_group};
    let who = identity
        .email
        .clone()
        .unwrap_or_else(|| identity.sub.clone());
    let caller = Caller {
        actor: Actor {
            kind: ActorKind::User,
            id: who.clone(),
        },
        client_ip,
        role: Role::Viewer,
    };
    let deny = |reason: String| async move {
        record_unauthenticated(
            ports,
            &caller,
            "auth.oidc.login_denied",
            Some(&who),
            json!({"reason": reason, "sub": identity.sub}),
        )
        .await?;
        Err::<SignedIn, AuthError>(AuthError::BadCredentials)
    };
    if let Err(reason) = admit(settings, identity) {
        return deny(reason).await;
    }
    let now = ports.clock.now();
    let admin_by_group = is_admin_by_group(settings, identity);
    let user = match ports.store.user_by_oidc_subject(&identity.sub).await? {
        Some(u) => Some(u),
        None => match identity
            .email
            .as_deref()
            .filter(|_| identity.email_verified)
        {
            Some(email) => match ports.store.user_by_email(email).await? {
                Some(mut local) => {
                    local.oidc_subject = Some(identity.sub.clone());
                    local.updated_at = now;
                    ports.store.update_user(&local).await?;
                    record(
                        ports,
                        &Caller::system("oidc"),
                        "user.oidc_linked",
                        Some(&local.id),
                        json!({"email": email, "sub": identity.sub}),
                    )
                    .await?;
                    Some(local)
                }
                None => None,
            },
            None => None,
        },
    };
    let mut user = match user {
        Some(u) => u,
        None => {
            let Some(email) = identity
                .email
                .clone()
                .filter(|_| identity.email_verified || !settings.require_email_verified)
            else {
                return deny("the IdP gave no usable email for a new user".into()).await;
            };
            let role = if no_users_yet(ports).await? || admin_by_group {
                Role::Admin
            } else {
                Role::Viewer
            };
            let mut created = new_user(ports, email.clone(), role, None);
            created.oidc_subject = Some(identity.sub.clone());
            ports.store.create_user(&created).await?;
            record(
                ports,
                &Caller::system("oidc"),
                "user.created",
                Some(&created.id),
                json!({"email": email, "role": role, "via": "oidc"}),
            )
            .await?;
            created
        }
    };
    if user.disabled {
        return deny(format!("user {} is disabled", user.email)).await;
    }
    if admin_by_group && user.role != Role::Admin {
        user.role = Role::Admin;
        user.updated_at = now;
        ports.store.update_user(&user).await?;
    }
    let detail = json!({"email": user.email, "sub": identity.sub});
    open_session(
        ports,
        auth,
        user,
        client_ip,
        now,
        "auth.oidc.login_succeeded",
        detail,
    )
    .await
}

pub async fn logout(ports: &Ports, caller: &Caller, claims: &SessionClaims) -> ServiceResult<()> {
    let expires =
        chrono::DateTime::from_timestamp(claims.exp, 0).unwrap_or_else(|| ports.clock.now());
    ports.store.revoke_session(&claims.jti, expires).await?;
    record(ports, caller, "auth.logout", Some(&claims.sub), json!({})).await
}

pub async fn me(ports: &Ports, caller: &Caller) -> ServiceResult<UserView> {
    let user = ports
        .store
        .get_user(&caller.actor.id)
        .await?
        .ok_or(ServiceError::NotFound("user"))?;
    Ok(UserView::from(&user))
}

/// Passwords pacer accepts from people.
pub const MIN_PASSWORD_LENGTH: usize = 12;

fn check_new_password(field: &str, password: &str) -> Result<(), Invalid> {
    if password.chars().count() < MIN_PASSWORD_LENGTH {
        return Err(Invalid::new(
            field,
            format!("must be at least {MIN_PASSWORD_LENGTH} characters"),
        ));
    }
    Ok(())
}

/// Changes the caller's own password. Every session of theirs ends (one
/// may be a thief's, opened with the old password); the caller gets a new
/// one, returned, so they stay signed in.
pub async fn change_password(
    ports: &Ports,
    auth: &AuthSettings,
    caller: &Caller,
    current: &str,
    new: &str,
) -> ServiceResult<SignedIn> {
    let mut user = ports
        .store
        .get_user(&caller.actor.id)
        .await?
        .ok_or(ServiceError::NotFound("user"))?;
    let matches = match user.password_hash.as_deref() {
        Some(hash) => password::verify(hash, current).await?,
        None => false,
    };
    if !matches {
        return Err(Invalid::new("current_password", "is not your current password").into());
    }
    check_new_password("new_password", new)?;
    user.password_hash = Some(password::hash(new).await?);
    user.session_generation = user.session_generation.wrapping_add(1);
    let now = ports.clock.now();
    user.updated_at = now;
    ports.store.update_user(&user).await?;
    record(
        ports,
        caller,
        "user.password_changed",
        Some(&user.id),
        json!({"other_sessions": "ended"}),
    )
    .await?;
    let (token, claims) = session::mint(
        auth.jwt_secret.expose().as_bytes(),
        &user,
        now,
        auth.session_ttl,
    );
    Ok(SignedIn {
        token,
        claims,
        user,
    })
}

pub async fn list_users(ports: &Ports, page: &PageRequest) -> ServiceResult<Page<UserView>> {
    let listed = ports.store.list_users(page).await?;
    Ok(Page {
        items: listed.items.iter().map(UserView::from).collect(),
        next_cursor: listed.next_cursor,
    })
}

/// A new local user with a one-time password (shown once to the admin).
pub async fn create_user(
    ports: &Ports,
    caller: &Caller,
    email: &str,
    role: Role,
) -> ServiceResult<(UserView, String)> {
    let email = parse_email("email", email)?;
    let password = generate_password();
    let user = new_user(
        ports,
        email.clone(),
        role,
        Some(password::hash(&password).await?),
    );
    ports.store.create_user(&user).await.map_err(|e| match e {
        StoreError::Conflict(m) => ServiceError::Duplicate(Invalid::new("email", m)),
        other => other.into(),
    })?;
    record(
        ports,
        caller,
        "user.created",
        Some(&user.id),
        json!({"email": email, "role": role, "via": "console"}),
    )
    .await?;
    Ok((UserView::from(&user), password))
}

async fn enabled_admins(ports: &Ports) -> ServiceResult<usize> {
    let mut count = 0;
    let mut pages = Pages::start();
    while let Some(page) = pages.next_request() {
        count += pages
            .items(ports.store.list_users(&page).await?)
            .iter()
            .filter(|u| u.role == Role::Admin && !u.disabled)
            .count();
    }
    Ok(count)
}

/// Sets a user's role and/or disabled flag. The last enabled admin cannot
/// be demoted or disabled: nobody could undo it from the console.
pub async fn update_user(
    ports: &Ports,
    caller: &Caller,
    id: &str,
    role: Option<Role>,
    disabled: Option<bool>,
) -> ServiceResult<UserView> {
    let mut user = ports
        .store
        .get_user(id)
        .await?
        .ok_or(ServiceError::NotFound("user"))?;
    let loses_admin = user.role == Role::Admin
        && !user.disabled
        && (role == Some(Role::Viewer) || disabled == Some(true));
    if loses_admin && enabled_admins(ports).await? <= 1 {
        return Err(ServiceError::Conflict(format!(
            "{} is the last enabled admin; make another admin first",
            user.email
        )));
    }
    if let Some(r) = role {
        user.role = r;
    }
    if let Some(d) = disabled {
        user.disabled = d;
    }
    user.updated_at = ports.clock.now();
    ports.store.update_user(&user).await?;
    record(
        ports,
        caller,
        "user.updated",
        Some(id),
        json!({"email": user.email, "role": role, "disabled": disabled}),
    )
    .await?;
    Ok(UserView::from(&user))
}
