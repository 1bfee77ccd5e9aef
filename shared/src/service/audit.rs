//! Appending to and reading the audit log.

use serde_json::Value;

use super::{Caller, Ports, ServiceResult};
use crate::domain::{new_id, AuditEvent, IdKind};
use crate::store::{AuditFilter, Page, PageRequest};

/// Appends one event for `caller`. A failure to audit fails the request:
/// an unaudited mutation is worse than a refused one.
pub async fn record(ports: &Ports, caller: &Caller, action: &str, target: Option<&str>, detail: Value) -> ServiceResult<()> {
    let at = ports.clock.now();
    let event = AuditEvent {
        id: new_id(IdKind::Audit, at),
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

pub async fn list(ports: &Ports, filter: &AuditFilter, page: &PageRequest) -> ServiceResult<Page<AuditEvent>> {
    Ok(ports.store.list_audit(filter, page).await?)
}
