//! Projects, pools and repo bindings: create, read, update, delete — each
//! mutation validated by the domain's rules and audited.

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::audit::record;
use super::{Caller, Ports, ServiceError, ServiceResult};
use crate::domain::fields::merge_patch;
use crate::domain::pool::PoolSpec;
use crate::domain::project::{BindingSpec, ProjectSpec};
use crate::domain::{IdKind, Invalid, Pool, Project, RepoBinding};
use crate::fleet::FleetError;
use crate::store::{Page, PageRequest, StoreError};

/// Merges a PATCH into the current spec and validates the result with the
/// create rules.
fn patched<S: Serialize, T>(
    current: &S,
    patch: Map<String, Value>,
    read_only: &[&str],
    parse: impl FnOnce(Map<String, Value>) -> Result<T, Invalid>,
) -> ServiceResult<T> {
    let current = serde_json::to_value(current).map_err(anyhow::Error::from)?;
    Ok(parse(merge_patch(current, patch, read_only)?)?)
}

/// The fields whose values differ between two specs, for the audit detail.
fn changed_fields<S: Serialize>(before: &S, after: &S) -> Vec<String> {
    let (Ok(Value::Object(b)), Ok(Value::Object(a))) =
        (serde_json::to_value(before), serde_json::to_value(after))
    else {
        return Vec::new();
    };
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect()
}

/// Names up to a few things, for a 409 message a person can act on.
fn name_some(names: &[String], total_more: bool) -> String {
    let mut s = names.join(", ");
    if total_more {
        s.push_str(", …");
    }
    s
}

/// A store refusal as a client reads it: a unique `field` already taken is
/// a 409 naming that field, a missing object is `what` not found.
fn taken_or_missing(
    field: &'static str,
    what: &'static str,
) -> impl Fn(StoreError) -> ServiceError {
    move |e| match e {
        StoreError::Conflict(m) => ServiceError::Duplicate(Invalid::new(field, m)),
        other => not_found(what)(other),
    }
}

/// A project, pool or binding was written: this process's catalog reads the
/// configuration again, and the change is audited.
async fn config_changed(
    ports: &Ports,
    caller: &Caller,
    action: &str,
    target: Option<&str>,
    detail: Value,
) -> ServiceResult<()> {
    ports.catalog.invalidate();
    record(ports, caller, action, target, detail).await
}

fn not_found(what: &'static str) -> impl Fn(StoreError) -> ServiceError {
    move |e| match e {
        StoreError::NotFound => ServiceError::NotFound(what),
        other => other.into(),
    }
}

// ---- projects ----

pub async fn create_project(
    ports: &Ports,
    caller: &Caller,
    body: Map<String, Value>,
) -> ServiceResult<Project> {
    let spec = ProjectSpec::parse(body)?;
    let now = ports.clock.now();
    let project = Project {
        id: ports.ids.new_id(IdKind::Project, now),
        spec,
        created_at: now,
        updated_at: now,
    };
    ports
        .store
        .create_project(&project)
        .await
        .map_err(taken_or_missing("name", "object"))?;
    config_changed(
        ports,
        caller,
        "project.created",
        Some(&project.id),
        json!({"name": project.spec.name, "scope": project.spec.scope}),
    )
    .await?;
    Ok(project)
}

pub async fn get_project(ports: &Ports, id: &str) -> ServiceResult<Project> {
    ports
        .store
        .get_project(id)
        .await?
        .ok_or(ServiceError::NotFound("project"))
}

pub async fn list_projects(ports: &Ports, page: &PageRequest) -> ServiceResult<Page<Project>> {
    Ok(ports.store.list_projects(page).await?)
}

pub async fn update_project(
    ports: &Ports,
    caller: &Caller,
    id: &str,
    patch: Map<String, Value>,
) -> ServiceResult<Project> {
    let current = get_project(ports, id).await?;
    // Scope and org decide where runners register; changing them under
    // live runners and bindings would strand both. Make a new project.
    let spec = patched(
        &current.spec,
        patch,
        &["id", "created_at", "updated_at", "scope", "org"],
        ProjectSpec::parse,
    )?;
    let changed = changed_fields(&current.spec, &spec);
    let project = Project {
        spec,
        updated_at: ports.clock.now(),
        ..current.clone()
    };
    ports
        .store
        .update_project(&project)
        .await
        .map_err(taken_or_missing("name", "project"))?;
    config_changed(
        ports,
        caller,
        "project.updated",
        Some(id),
        json!({"name": project.spec.name, "changed": changed}),
    )
    .await?;
    Ok(project)
}

pub async fn delete_project(ports: &Ports, caller: &Caller, id: &str) -> ServiceResult<()> {
    let project = get_project(ports, id).await?;
    let few = PageRequest::first(5);
    let pools = ports.store.list_pools(Some(id), &few).await?;
    let bindings = ports.store.list_bindings(Some(id), &few).await?;
    if !pools.items.is_empty() || !bindings.items.is_empty() {
        let mut parts = Vec::new();
        if !pools.items.is_empty() {
            let names: Vec<String> = pools.items.iter().map(|p| p.spec.name.clone()).collect();
            parts.push(format!(
                "pools {}",
                name_some(&names, pools.next_cursor.is_some())
            ));
        }
        if !bindings.items.is_empty() {
            let names: Vec<String> = bindings
                .items
                .iter()
                .map(|b| b.spec.repo.to_string())
                .collect();
            parts.push(format!(
                "repo bindings {}",
                name_some(&names, bindings.next_cursor.is_some())
            ));
        }
        return Err(ServiceError::Conflict(format!(
            "project {} still has {}; delete those first",
            project.spec.name,
            parts.join(" and ")
        )));
    }
    ports
        .store
        .delete_project(id)
        .await
        .map_err(not_found("project"))?;
    config_changed(
        ports,
        caller,
        "project.deleted",
        Some(id),
        json!({"name": project.spec.name}),
    )
    .await
}

// ---- pools ----

async fn require_project(ports: &Ports, project_id: &str) -> ServiceResult<Project> {
    ports.store.get_project(project_id).await?.ok_or_else(|| {
        ServiceError::Invalid(Invalid::new(
            "project_id",
            format!("no project with id {project_id:?}"),
        ))
    })
}

/// Checks a pool against the fleet (AMI, types, subnets, groups, profile)
/// and creates or updates its launch template: a bad value is a 422 naming
/// the field, before anything is stored.
async fn prepare(ports: &Ports, pool: &Pool) -> ServiceResult<()> {
    match ports.fleet.prepare_pool(pool).await {
        Ok(_) => Ok(()),
        Err(FleetError::InvalidPool(invalid)) => Err(ServiceError::Invalid(invalid)),
        Err(e) => Err(ServiceError::Upstream(format!(
            "the fleet could not check the pool: {e}"
        ))),
    }
}

pub async fn create_pool(
    ports: &Ports,
    caller: &Caller,
    body: Map<String, Value>,
) -> ServiceResult<Pool> {
    let spec = PoolSpec::parse(body)?;
    let project = require_project(ports, &spec.project_id).await?;
    let now = ports.clock.now();
    let pool = Pool {
        id: ports.ids.new_id(IdKind::Pool, now),
        spec,
        active_runners: 0,
        degraded: None,
        created_at: now,
        updated_at: now,
    };
    prepare(ports, &pool).await?;
    ports
        .store
        .create_pool(&pool)
        .await
        .map_err(taken_or_missing("name", "object"))?;
    config_changed(
        ports,
        caller,
        "pool.created",
        Some(&pool.id),
        json!({"name": pool.spec.name, "project": project.spec.name}),
    )
    .await?;
    Ok(pool)
}

pub async fn get_pool(ports: &Ports, id: &str) -> ServiceResult<Pool> {
    ports
        .store
        .get_pool(id)
        .await?
        .ok_or(ServiceError::NotFound("pool"))
}

pub async fn list_pools(
    ports: &Ports,
    project_id: Option<&str>,
    page: &PageRequest,
) -> ServiceResult<Page<Pool>> {
    Ok(ports.store.list_pools(project_id, page).await?)
}

pub async fn update_pool(
    ports: &Ports,
    caller: &Caller,
    id: &str,
    patch: Map<String, Value>,
) -> ServiceResult<Pool> {
    let current = get_pool(ports, id).await?;
    let read_only = [
        "id",
        "created_at",
        "updated_at",
        "project_id",
        "active_runners",
    ];
    let spec = patched(&current.spec, patch, &read_only, PoolSpec::parse)?;
    let changed = changed_fields(&current.spec, &spec);
    let pool = Pool {
        spec,
        updated_at: ports.clock.now(),
        ..current.clone()
    };
    prepare(ports, &pool).await?;
    ports
        .store
        .update_pool(&pool)
        .await
        .map_err(taken_or_missing("name", "pool"))?;
    let pool = get_pool(ports, id).await?;
    config_changed(
        ports,
        caller,
        "pool.updated",
        Some(id),
        json!({"name": pool.spec.name, "changed": changed}),
    )
    .await?;
    Ok(pool)
}

pub async fn delete_pool(ports: &Ports, caller: &Caller, id: &str) -> ServiceResult<()> {
    let pool = get_pool(ports, id).await?;
    ports.store.delete_pool(id).await.map_err(|e| match e {
        StoreError::InUse(m) => ServiceError::Conflict(format!(
            "pool {} cannot be deleted: {m}; let them finish or terminate them first",
            pool.spec.name
        )),
        other => not_found("pool")(other),
    })?;
    if let Err(e) = ports.fleet.forget_pool(&pool).await {
        // The pool is gone from pacer; a leftover launch template is harmless.
        tracing::warn!(pool_id = id, error = %crate::error_text::display_chain(&e), "could not remove the pool's launch template");
    }
    config_changed(
        ports,
        caller,
        "pool.deleted",
        Some(id),
        json!({"name": pool.spec.name}),
    )
    .await
}

// ---- repo bindings ----

pub async fn create_binding(
    ports: &Ports,
    caller: &Caller,
    body: Map<String, Value>,
) -> ServiceResult<RepoBinding> {
    let spec = BindingSpec::parse(body)?;
    let project = require_project(ports, &spec.project_id).await?;
    spec.check_against(&project)?;
    let now = ports.clock.now();
    let binding = RepoBinding {
        id: ports.ids.new_id(IdKind::Binding, now),
        spec,
        created_at: now,
        updated_at: now,
    };
    ports
        .store
        .create_binding(&binding)
        .await
        .map_err(taken_or_missing("repo", "object"))?;
    config_changed(
        ports,
        caller,
        "repo.bound",
        Some(&binding.id),
        json!({"repo": binding.spec.repo, "project": project.spec.name}),
    )
    .await?;
    Ok(binding)
}

pub async fn get_binding(ports: &Ports, id: &str) -> ServiceResult<RepoBinding> {
    ports
        .store
        .get_binding(id)
        .await?
        .ok_or(ServiceError::NotFound("repo binding"))
}

pub async fn list_bindings(
    ports: &Ports,
    project_id: Option<&str>,
    page: &PageRequest,
) -> ServiceResult<Page<RepoBinding>> {
    Ok(ports.store.list_bindings(project_id, page).await?)
}

pub async fn update_binding(
    ports: &Ports,
    caller: &Caller,
    id: &str,
    patch: Map<String, Value>,
) -> ServiceResult<RepoBinding> {
    let current = get_binding(ports, id).await?;
    let spec = patched(
        &current.spec,
        patch,
        &["id", "created_at", "updated_at"],
        BindingSpec::parse,
    )?;
    let project = require_project(ports, &spec.project_id).await?;
    spec.check_against(&project)?;
    let changed = changed_fields(&current.spec, &spec);
    let binding = RepoBinding {
        spec,
        updated_at: ports.clock.now(),
        ..current
    };
    ports
        .store
        .update_binding(&binding)
        .await
        .map_err(taken_or_missing("repo", "repo binding"))?;
    config_changed(
        ports,
        caller,
        "repo.updated",
        Some(id),
        json!({"repo": binding.spec.repo, "changed": changed}),
    )
    .await?;
    Ok(binding)
}

pub async fn delete_binding(ports: &Ports, caller: &Caller, id: &str) -> ServiceResult<()> {
    let binding = get_binding(ports, id).await?;
    ports
        .store
        .delete_binding(id)
        .await
        .map_err(not_found("repo binding"))?;
    config_changed(
        ports,
        caller,
        "repo.unbound",
        Some(id),
        json!({"repo": binding.spec.repo}),
    )
    .await
}
