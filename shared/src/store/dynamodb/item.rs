//! Items: entity ⇄ attributes.

use super::*;

/// An entity's attributes plus the names of its attributes that must not
/// exist (its `None` fields), which an `UpdateItem` has to REMOVE.
pub(super) struct Encoded {
    pub(super) item: Item,
    pub(super) absent: Vec<String>,
}

impl Encoded {
    pub(super) fn of<T: Serialize>(value: &T, kind: &Kind, id: &str) -> StoreResult<Self> {
        let attrs: Item = serde_dynamo::aws_sdk_dynamodb_1::to_item(value)
            .context("encoding an item for DynamoDB")?;
        // NULL attributes are left out: a GSI refuses a NULL key and a
        // sparse index must not see the attribute at all.
        let (nulls, mut item): (Item, Item) = attrs.into_iter().partition(|(_, v)| v.is_null());
        item.extend(kind.key(id));
        item.insert(TYPE.into(), s(kind.type_name));
        Ok(Self {
            item,
            absent: nulls.into_keys().collect(),
        })
    }

    pub(super) fn set(&mut self, name: &str, value: AttributeValue) {
        self.item.insert(name.into(), value);
    }

    pub(super) fn set_opt(&mut self, name: &str, value: Option<&str>) {
        match value {
            Some(v) => self.set(name, s(v)),
            None => self.absent.push(name.into()),
        }
    }

    pub(super) fn index(&mut self, index: Index, pk: impl Into<String>, sk: impl Into<String>) {
        self.set(index.pk, s(pk));
        self.set(index.sk, s(sk));
    }
}

pub(super) fn project_item(p: &Project) -> StoreResult<Encoded> {
    let mut e = Encoded::of(p, &PROJECT, &p.id)?;
    e.index(GSI1, PROJECT.collection, &p.id);
    Ok(e)
}

pub(super) fn pool_item(p: &Pool) -> StoreResult<Encoded> {
    let mut e = Encoded::of(p, &POOL, &p.id)?;
    e.index(GSI1, POOL.collection, &p.id);
    e.index(GSI2, format!("POOLS#{}", p.spec.project_id), &p.id);
    Ok(e)
}

pub(super) fn binding_item(b: &RepoBinding) -> StoreResult<Encoded> {
    let mut e = Encoded::of(b, &BINDING, &b.id)?;
    e.index(GSI1, BINDING.collection, &b.id);
    e.index(GSI2, format!("BINDINGS#{}", b.spec.project_id), &b.id);
    e.set("binding_repo_key", s(b.spec.repo.key()));
    e.set("binding_project_id", s(&b.spec.project_id));
    Ok(e)
}

pub(super) fn job_item(j: &Job) -> StoreResult<Encoded> {
    let mut e = Encoded::of(j, &JOB, &j.id)?;
    let order = format!("{}#{}", time_key(&j.created_at), j.id);
    e.index(GSI1, JOB.collection, &order);
    e.index(GSI2, format!("JOBSTATE#{}", j.state), order);
    e.set("job_repo_key", s(j.repo.to_lowercase()));
    e.set_opt("job_project_id", j.project_id.as_deref());
    e.set_opt("job_pool_id", j.pool_id.as_deref());
    Ok(e)
}

pub(super) fn runner_item(r: &Runner) -> StoreResult<Encoded> {
    let mut e = Encoded::of(r, &RUNNER, &r.id)?;
    let order = format!("{}#{}", time_key(&r.created_at), r.id);
    e.index(GSI1, RUNNER.collection, &order);
    e.index(GSI2, format!("RUNNERSTATE#{}", r.state), order);
    e.set("runner_pool_id", s(&r.pool_id));
    e.set("runner_project_id", s(&r.project_id));
    e.set(RUNNER_REG_NAME, s(&r.name));
    e.set_opt(
        "runner_live_pool_id",
        r.state.is_live().then_some(r.pool_id.as_str()),
    );
    Ok(e)
}

pub(super) fn user_item(u: &User) -> StoreResult<Encoded> {
    let mut e = Encoded::of(u, &USER, &u.id)?;
    e.index(GSI1, USER.collection, &u.id);
    // `User` never serialises its hash (it must not reach clients), so the
    // store writes it itself.
    e.set_opt("password_hash", u.password_hash.as_deref());
    Ok(e)
}

pub(super) fn audit_item(a: &AuditEvent) -> StoreResult<Encoded> {
    let mut e = Encoded::of(a, &AUDIT, &a.id)?;
    e.index(
        GSI1,
        AUDIT.collection,
        format!("{}#{}", time_key(&a.at), a.id),
    );
    e.set("audit_actor", s(&a.actor.id));
    Ok(e)
}

pub(super) fn decode<T: DeserializeOwned>(item: Item) -> StoreResult<T> {
    let what = item
        .get(TYPE)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_else(|| "?".into());
    let id = item
        .get("id")
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default();
    Ok(serde_dynamo::aws_sdk_dynamodb_1::from_item(item)
        .with_context(|| format!("decoding the DynamoDB item of {what} {id}"))?)
}

pub(super) fn decode_audit(mut item: Item) -> StoreResult<AuditEvent> {
    // A JSON `null` detail was left out like any NULL attribute.
    item.entry("detail".into())
        .or_insert(AttributeValue::Null(true));
    decode(item)
}
