//! Appending to and reading the audit log.

use serde_json::Value;

use super::{Caller, Ports, ServiceError, ServiceResult};
use crate::domain::{AuditEvent, IdKind};
use crate::store::{AuditFilter, Page, PageRequest};

/// Appends one event for `caller`. A failure to audit fails the request:
/// an unaudited mutation is worse than a refused one.
pub async fn record(
    ports: &Ports,
    caller: &Caller,
    action: &str,
    target: Option<&str>,
    detail: Value,
) -> ServiceResult<()> {
    let at = ports.clock.now();
    let event = AuditEvent {
        id: ports.ids.new_id(IdKind::Audit, at),
        at,
        actor: caller.actor.clone(),
        client_ip: caller.client_ip.map(|ip| ip.to_string()),
        action: action.to_string(),
        target: target.map(str::to_string),
        detail,
    };
    ports.store.append_audit(&event).await?;
    tracing::info!(action, target, actor = %caller.actor.id, "audit");
    Ok(())
}

/// At most this many audit entries a minute from callers nobody has
/// authenticated (failed sign-ins). Each address is rate-limited already;
/// this bounds what many addresses together can write.
pub const UNAUTHENTICATED_PER_MINUTE: u64 = 60;

/// [`record`] for an event an unauthenticated caller caused: past
/// [`UNAUTHENTICATED_PER_MINUTE`] in a minute, logged but not appended.
pub async fn record_unauthenticated(
    ports: &Ports,
    caller: &Caller,
    action: &str,
    target: Option<&str>,
    detail: Value,
) -> ServiceResult<()> {
    let (count, _) = super::limits::hit(
        ports,
        "audit:unauthenticated",
        std::time::Duration::from_secs(60),
    )
    .await?;
    if count > UNAUTHENTICATED_PER_MINUTE {
        if count == UNAUTHENTICATED_PER_MINUTE + 1 {
            tracing::warn!(
                limit = UNAUTHENTICATED_PER_MINUTE,
                "more failed sign-ins this minute than the audit log takes; the rest are logged, not audited"
            );
        }
        tracing::info!(action, target, actor = %caller.actor.id, client_ip = ?caller.client_ip, "not audited (over the minute's limit)");
        return Ok(());
    }
    record(ports, caller, action, target, detail).await
}

pub async fn list(
    ports: &Ports,
    filter: &AuditFilter,
    page: &PageRequest,
) -> ServiceResult<Page<AuditEvent>> {
    Ok(ports.store.list_audit(filter, page).await?)
}

/// The `action` query parameter as a filter: an action name matches exactly,
/// one ending in `*` matches every action that begins with what comes
/// before it (`runner.*`), and `*` alone matches all.
pub fn action_filter(action: Option<String>) -> ServiceResult<(Option<String>, Option<String>)> {
    let Some(action) = action
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
    else {
        return Ok((None, None));
    };
    let (stem, wildcard) = match action.strip_suffix('*') {
        Some(stem) => (stem, true),
        None => (action.as_str(), false),
    };
    if stem.contains('*') {
        return Err(ServiceError::BadRequest(format!(
            "query parameter action ({action:?}): `*` may only end it, as in runner.* (every runner event)"
        )));
    }
    Ok(match (wildcard, stem.is_empty()) {
        (true, true) => (None, None),
        (true, false) => (None, Some(stem.to_string())),
        (false, _) => (Some(action), None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_action_filter_is_exact_or_a_prefix_ending_in_a_star() {
        let f = |a: &str| action_filter(Some(a.into())).map_err(|e| e.to_string());
        assert_eq!(
            f("runner.terminated"),
            Ok((Some("runner.terminated".into()), None))
        );
        assert_eq!(f("runner.*"), Ok((None, Some("runner.".into()))));
        assert_eq!(f(" job* "), Ok((None, Some("job".into()))));
        assert_eq!(f("*"), Ok((None, None)));
        assert_eq!(f(""), Ok((None, None)));
        assert_eq!(action_filter(None).unwrap(), (None, None));
        assert!(f("*.created").unwrap_err().contains("may only end it"));
        assert!(f("runner.**").unwrap_err().contains("may only end it"));
    }
}
