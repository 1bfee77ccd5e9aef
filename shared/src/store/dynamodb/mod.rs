//! The DynamoDB adapter of the store port, for the serverless deployment:
//! one table holding every object, guard items that make names unique,
//! counters that make capacity and parent/child rules atomic, and queries
//! over two overloaded GSIs for the listings.
//!
//! This file holds the table: its layout, keys and the calls every aggregate
//! shares. `config.rs`, `runners.rs`, `jobs.rs`, `users.rs` and `audit.rs`
//! implement one store trait each, over `item.rs` (entity ⇄ attributes),
//! `expr.rs` (expressions) and `cursor.rs` (pages).
//!
//! # Table definition
//!
//! This is what [`DynamoStore::create_table`] creates and what `template.yaml`
//! must declare: on-demand billing (`PAY_PER_REQUEST`), TTL on `expires_at`,
//! every key attribute a string (`S`).
//!
//! | key        | attributes            | projection | holds                                        |
//! |------------|-----------------------|------------|----------------------------------------------|
//! | table      | `pk` (HASH), `sk` (RANGE) | —      | every item                                   |
//! | `gsi1`     | `gsi1pk`, `gsi1sk`    | ALL        | whole collections in list order             |
//! | `gsi2`     | `gsi2pk`, `gsi2sk`    | ALL        | sub-collections: by state, by project        |
//! | `runner_instance` | `instance_id` (HASH) | KEYS_ONLY | runners that have an EC2 instance (sparse) |
//! | `runner_name` | `runner_reg_name` (HASH) | KEYS_ONLY | runners by the name they register under (sparse) |
//!
//! # Items
//!
//! Every item carries `type`. An entity item also carries each field of the
//! entity as its own top-level attribute, exactly as serde names it
//! (through `serde_dynamo`; `None` fields are left out rather than stored as
//! `NULL`, so an attribute exists only when it has a value — what a sparse
//! index needs).
//!
//! | type           | pk                        | sk       | gsi1pk / gsi1sk           | gsi2pk / gsi2sk                 | extra attributes |
//! |----------------|---------------------------|----------|---------------------------|---------------------------------|------------------|
//! | `project`      | `PROJECT#<id>`            | `PROJECT`| `PROJECTS` / `<id>`       | —                               | `dependents` (pools + bindings naming it) |
//! | `pool`         | `POOL#<id>`               | `POOL`   | `POOLS` / `<id>`          | `POOLS#<project_id>` / `<id>`   | `active_runners` is the capacity counter |
//! | `binding`      | `BINDING#<id>`            | `BINDING`| `BINDINGS` / `<id>`       | `BINDINGS#<project_id>` / `<id>`| `binding_repo_key`, `binding_project_id` |
//! | `job`          | `JOB#<id>`                | `JOB`    | `JOBS` / `<created>#<id>` | `JOBSTATE#<state>` / `<created>#<id>` | `job_repo_key`, `job_project_id`, `job_pool_id` |
//! | `runner`       | `RUNNER#<id>`             | `RUNNER` | `RUNNERS` / `<created>#<id>` | `RUNNERSTATE#<state>` / `<created>#<id>` | `runner_pool_id`, `runner_project_id`, `runner_reg_name`, `runner_live_pool_id` (only while live) |
//! | `user`         | `USER#<id>`               | `USER`   | `USERS` / `<id>`          | —                               | `password_hash` (never logged) |
//! | `audit`        | `AUDIT#<id>`              | `AUDIT`  | `AUDIT` / `<at>#<id>`     | —                               | `audit_actor` (the actor's id) |
//! | `self_runner`  | `SSRUNNER#<name>`         | `SSRUNNER` | `SSRUNNERS` / `<created>#<id>` | `SSOWNER#<owner>` / `<created>#<id>` | `expires_at` once deleted |
//! | `label_policy` | `LABELPOLICY#<identity>`  | `LABELPOLICY` | `LABELPOLICIES` / `<identity>` | —                          | |
//! | `security_event` | `SECEVENT#<id>`         | `SECEVENT` | `SECEVENTS` / `<at>#<id>` | —                               | |
//! | `project_name` | `PROJECTNAME#<lower name>`| `UNIQUE` | —                         | —                               | `owner` |
//! | `pool_name`    | `POOLNAME#<project_id>#<lower name>` | `UNIQUE` | —              | —                               | `owner` |
//! | `repo_binding` | `REPO#<lower owner/name>` | `UNIQUE` | —                         | —                               | `owner`, `binding` (a copy of the binding, as a map) |
//! | `github_job`   | `GHJOB#<github job id>`   | `UNIQUE` | —                         | —                               | `owner` |
//! | `user_email`   | `USEREMAIL#<email>`       | `UNIQUE` | —                         | —                               | `owner` |
//! | `user_oidc`    | `USEROIDC#<subject>`      | `UNIQUE` | —                         | —                               | `owner` |
//!
//! Times in sort keys are RFC 3339 UTC with nine fraction digits, so they
//! sort as strings; ids are ULIDs, which sort by creation time. Projects,
//! pools, bindings and users list oldest first; jobs, runners and audit
//! events newest first.
//!
//! Guard items (`sk = UNIQUE`) are written and deleted in the same
//! `TransactWriteItems` as their entity, conditional on not existing (or on
//! being owned by the entity), which is how names, repos, GitHub job ids and
//! emails stay unique. The repo guard holds a copy of its binding so the
//! webhook finds the binding of a repo with one `GetItem`.
//!
//! Console auth keeps two small item types, both expiring by TTL:
//! `COUNTER#<key>` / `<window start, µs>` (`count`, a login rate-limit
//! window) and `REVOKED#<session id>` / `SESSION` (a logged-out session).
//!
//! Self-service keeps two more: `TOKEN#<sha256 of iss, jti>` / `USED` (a
//! workload token's single use, expiring by TTL) and `SSLIVE#<owner>` /
//! `LIVE` (`live`, how many of an owner's runners are pending or active,
//! moved in the same transaction as the runner that changes it).
//!
//! # Adding an access path without migrating items
//!
//! Every searchable value is already a top-level attribute, under a name
//! only one item type uses: `email`, `oidc_subject` (users), `github_job_id`,
//! `runner_name`, `job_repo_key`, `job_pool_id`, `job_project_id` (jobs),
//! `runner_reg_name` (the runner's own name; jobs already use `runner_name`
//! for the runner that ran them), `runner_pool_id`, `runner_live_pool_id`,
//! `binding_repo_key`, `action`, `audit_actor`. A new query adds a GSI keyed
//! on that attribute (with `gsi1sk` as its sort key where order matters:
//! `<created>#<id>` for jobs and runners). DynamoDB backfills a new GSI from
//! the existing items by itself, and the index is sparse: it holds only the
//! items of the one type that has the attribute. For example, "live runners
//! of a pool" is a GSI `runner_live_pool_id` / `gsi1sk`; "jobs of a repo" is
//! `job_repo_key` / `gsi1sk`; "runner by name" was added this way, as the
//! `runner_name` index on `runner_reg_name`.
//! Only a value that is not stored yet needs a backfill, which is why the
//! items above carry these attributes from the start.
//!
//! `gsi1pk = JOBS` and `AUDIT` are single partitions: fine for pacer's
//! volume (a GSI partition takes ~1,000 writes a second); shard them by day
//! if that ever changes.
//!
//! The methods here and in the other store adapter look alike on purpose:
//! the same trait signatures, the same bind-write-map-the-error shape. The
//! conformance suite (`store/conformance/`) is what keeps the two the same;
//! a body shared between them would tie SQL to DynamoDB expressions.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, CancellationReason, Delete,
    GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType, Put,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TimeToLiveSpecification,
    TimeToLiveStatus, TransactWriteItem, Update,
};
use aws_smithy_types::error::display::DisplayErrorContext;
use base64::Engine;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::instrument;

use crate::calls::{CallCounts, Calls, SdkCallCounter, dynamodb_call};

use super::{
    AuditFilter, AuditStore, Claim, ConfigStore, Inserted, JobFilter, JobStore, Page, PageRequest,
    RunnerFilter, RunnerStore, SecurityEventFilter, SelfRunnerFilter, SelfServiceStore, Store,
    StoreError, StoreResult, UsageStore, UserStore,
};
use crate::domain::self_service::{
    IdentityPolicy, SecurityEvent, SelfRunnerStatus, SelfServiceRunner,
};
use crate::domain::{
    AuditEvent, Job, JobState, Pool, Project, RepoBinding, Runner, RunnerState, Time, User,
};

mod audit;
mod config;
mod cursor;
mod expr;
mod item;
mod jobs;
mod runners;
mod self_service;
mod usage;
mod users;

use cursor::{Cursor, Listing};
use expr::{Cond, Expr};
use item::{
    Encoded, audit_item, binding_item, decode, decode_audit, job_item, pool_item, project_item,
    runner_item, user_item,
};

type Item = HashMap<String, AttributeValue>;

const PK: &str = "pk";
const SK: &str = "sk";
const TYPE: &str = "type";
/// The TTL attribute (epoch seconds). No item sets it yet; declared so a
/// retention rule can start using it without a table change.
pub const TTL_ATTRIBUTE: &str = "expires_at";
const OWNER: &str = "owner";
const DEPENDENTS: &str = "dependents";
const ACTIVE_RUNNERS: &str = "active_runners";
const MAX_RUNNERS: &str = "max_runners";
const STATE: &str = "state";
const NAME: &str = "name";
const PROJECT_ID: &str = "project_id";
const BINDING_COPY: &str = "binding";
const INSTANCE_INDEX: &str = "runner_instance";
/// Runners by their registration name: every `in_progress` webhook links
/// the runner that took the job by name, so this must be one query.
const RUNNER_NAME_INDEX: &str = "runner_name";
const RUNNER_REG_NAME: &str = "runner_reg_name";
const INSTANCE_ID: &str = "instance_id";

/// How often a read-then-write retries when the object changed in between.
const MAX_ATTEMPTS: usize = 5;

/// A global secondary index with a string hash and range key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Index {
    name: &'static str,
    pk: &'static str,
    sk: &'static str,
}

/// Whole collections in list order.
const GSI1: Index = Index {
    name: "gsi1",
    pk: "gsi1pk",
    sk: "gsi1sk",
};
/// Sub-collections: jobs and runners by state, pools and bindings by project.
const GSI2: Index = Index {
    name: "gsi2",
    pk: "gsi2pk",
    sk: "gsi2sk",
};

/// One entity type: its key prefix, its sort key, its `type` and the
/// `gsi1pk` of its collection.
struct Kind {
    prefix: &'static str,
    sk: &'static str,
    type_name: &'static str,
    collection: &'static str,
}

/// A [`Kind`] from its sort key, type name and collection: items of kind
/// `kind!("POOL", …)` live under partition key `POOL#<id>`.
macro_rules! kind {
    ($sk:literal, $type_name:literal, $collection:literal) => {
        Kind {
            prefix: concat!($sk, "#"),
            sk: $sk,
            type_name: $type_name,
            collection: $collection,
        }
    };
}

const PROJECT: Kind = kind!("PROJECT", "project", "PROJECTS");
const POOL: Kind = kind!("POOL", "pool", "POOLS");
const BINDING: Kind = kind!("BINDING", "binding", "BINDINGS");
const JOB: Kind = kind!("JOB", "job", "JOBS");
const RUNNER: Kind = kind!("RUNNER", "runner", "RUNNERS");
const USER: Kind = kind!("USER", "user", "USERS");
const AUDIT: Kind = kind!("AUDIT", "audit", "AUDIT");
/// Self-service runners are keyed by their id; [`SELF_RUNNER_NAME`] finds
/// one by its name.
const SELF_RUNNER: Kind = kind!("SSRUNNER", "self_runner", "SSRUNNERS");
/// Label policies are keyed by the identity they are for.
const LABEL_POLICY: Kind = kind!("LABELPOLICY", "label_policy", "LABELPOLICIES");
const SECURITY_EVENT: Kind = kind!("SECEVENT", "security_event", "SECEVENTS");

impl Kind {
    fn key(&self, id: &str) -> Item {
        key(format!("{}{id}", self.prefix), self.sk)
    }
}

/// A uniqueness guard: one item per taken value, owned by one entity.
struct Guard {
    prefix: &'static str,
    type_name: &'static str,
}

const PROJECT_NAME: Guard = Guard {
    prefix: "PROJECTNAME#",
    type_name: "project_name",
};
const POOL_NAME: Guard = Guard {
    prefix: "POOLNAME#",
    type_name: "pool_name",
};
const REPO: Guard = Guard {
    prefix: "REPO#",
    type_name: "repo_binding",
};
const GITHUB_JOB: Guard = Guard {
    prefix: "GHJOB#",
    type_name: "github_job",
};
const USER_EMAIL: Guard = Guard {
    prefix: "USEREMAIL#",
    type_name: "user_email",
};
const USER_OIDC: Guard = Guard {
    prefix: "USEROIDC#",
    type_name: "user_oidc",
};
const GUARD_SK: &str = "UNIQUE";

impl Guard {
    fn key(&self, value: &str) -> Item {
        key(format!("{}{value}", self.prefix), GUARD_SK)
    }

    fn item(&self, value: &str, owner: &str) -> Item {
        let mut item = self.key(value);
        item.insert(TYPE.into(), s(self.type_name));
        item.insert(OWNER.into(), s(owner));
        item
    }
}

/// DynamoDB refuses a partition key over 2 KiB with an error (moto does not).
/// Values that reach lookups come from outside (a path, a sign-in, a
/// webhook); no item can be stored under a longer one, so such a lookup
/// finds nothing instead of failing the request.
const MAX_PARTITION_KEY_BYTES: usize = 2048;

fn fits_a_key(value: &str) -> bool {
    value.len() <= MAX_PARTITION_KEY_BYTES
}

fn key(pk: String, sk: &str) -> Item {
    HashMap::from([
        (PK.to_string(), AttributeValue::S(pk)),
        (SK.to_string(), s(sk)),
    ])
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn string_attr<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn number_attr(item: &Item, name: &str) -> Option<i64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

/// A time as it appears in sort keys: fixed width, so strings sort as times.
fn time_key(t: &Time) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// A self-service runner's name, owned by the newest runner that had it:
/// held (`held = true`) while that runner is not deleted, then kept, released,
/// for as long as the deleted runner is, so a lookup by name still finds it.
const SELF_RUNNER_NAME: Guard = Guard {
    prefix: "SSRUNNERNAME#",
    type_name: "self_runner_name",
};
fn pool_name_key(project_id: &str, name: &str) -> String {
    format!("{project_id}#{}", name.to_lowercase())
}

// ---------------------------------------------------------------------------
// Transactions.
// ---------------------------------------------------------------------------

/// Which writes of a cancelled transaction failed their condition, and the
/// item as it was where `ReturnValuesOnConditionCheckFailure` asked for it.
struct Cancelled {
    reasons: Vec<CancellationReason>,
}

impl Cancelled {
    fn failed(&self, index: usize) -> bool {
        self.reasons.get(index).and_then(|r| r.code()) == Some("ConditionalCheckFailed")
    }

    fn old(&self, index: usize) -> Option<&Item> {
        self.reasons.get(index).and_then(|r| r.item())
    }
}

fn build_err(
    what: &str,
) -> impl FnOnce(aws_smithy_types::error::operation::BuildError) -> StoreError + '_ {
    move |e| StoreError::Backend(anyhow!(e).context(format!("building a DynamoDB {what}")))
}

// ---------------------------------------------------------------------------
// The store.
// ---------------------------------------------------------------------------

/// The store on one DynamoDB table (see the module docs for its layout).
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    calls: Arc<CallCounts>,
}

impl Debug for DynamoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStore")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl DynamoStore {
    pub fn new(client: Client, table: String) -> Self {
        // Every request this store sends is counted on its way out.
        let calls = Arc::<CallCounts>::default();
        let counter = SdkCallCounter::new(calls.clone(), dynamodb_call);
        let client = Client::from_conf(client.config().to_builder().interceptor(counter).build());
        Self {
            client,
            table,
            calls,
        }
    }

    /// The reads and writes sent so far (see [`crate::calls`]).
    pub fn calls(&self) -> Calls {
        self.calls.snapshot()
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table with its indexes and TTL (see the module docs), and
    /// waits until it is active. An existing table is left as it is, so
    /// this is safe to run at every start against an emulator.
    pub async fn create_table(&self) -> anyhow::Result<()> {
        let string = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
        };
        let key = |name: &str, key_type: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(key_type)
                .build()
        };
        let gsi = |index: Index| {
            GlobalSecondaryIndex::builder()
                .index_name(index.name)
                .key_schema(key(index.pk, KeyType::Hash)?)
                .key_schema(key(index.sk, KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
        };
        let keys_only = |index: &str, attribute: &str| {
            GlobalSecondaryIndex::builder()
                .index_name(index)
                .key_schema(key(attribute, KeyType::Hash)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::KeysOnly)
                        .build(),
                )
                .build()
        };
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .set_attribute_definitions(Some(
                [
                    PK,
                    SK,
                    GSI1.pk,
                    GSI1.sk,
                    GSI2.pk,
                    GSI2.sk,
                    INSTANCE_ID,
                    RUNNER_REG_NAME,
                ]
                .into_iter()
                .map(string)
                .collect::<Result<_, _>>()?,
            ))
            .key_schema(key(PK, KeyType::Hash)?)
            .key_schema(key(SK, KeyType::Range)?)
            .global_secondary_indexes(gsi(GSI1)?)
            .global_secondary_indexes(gsi(GSI2)?)
            .global_secondary_indexes(keys_only(INSTANCE_INDEX, INSTANCE_ID)?)
            .global_secondary_indexes(keys_only(RUNNER_NAME_INDEX, RUNNER_REG_NAME)?)
            .send()
            .await;
        match created {
            Ok(_) => tracing::info!(table = %self.table, "created the DynamoDB table"),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_in_use_exception()) =>
            {
                tracing::debug!(table = %self.table, "the DynamoDB table exists already");
            }
            Err(e) => return Err(sdk_error(e, &self.table, "CreateTable")),
        }
        self.client
            .wait_until_table_exists()
            .table_name(&self.table)
            .wait(Duration::from_secs(300))
            .await
            .map_err(|e| anyhow!("{}", DisplayErrorContext(e)))
            .with_context(|| {
                format!("waiting for DynamoDB table {} to become active", self.table)
            })?;

        let ttl = self
            .client
            .describe_time_to_live()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| sdk_error(e, &self.table, "DescribeTimeToLive"))?;
        let status = ttl
            .time_to_live_description()
            .and_then(|d| d.time_to_live_status());
        if !matches!(
            status,
            Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
        ) {
            self.client
                .update_time_to_live()
                .table_name(&self.table)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(TTL_ATTRIBUTE)
                        .enabled(true)
                        .build()?,
                )
                .send()
                .await
                .map_err(|e| sdk_error(e, &self.table, "UpdateTimeToLive"))?;
        }
        Ok(())
    }

    fn context(&self, call: &str, op: &str) -> String {
        format!("DynamoDB {call} on table {} ({op})", self.table)
    }

    fn backend<E, R>(&self, err: SdkError<E, R>, call: &str, op: &str) -> StoreError
    where
        E: std::error::Error + Send + Sync + 'static,
        R: Debug,
    {
        // DisplayErrorContext prints the cause chain without the raw
        // response, so no item content can leak into a log.
        StoreError::Backend(
            anyhow!("{}", DisplayErrorContext(&err)).context(self.context(call, op)),
        )
    }

    // --- single-item reads and writes ---

    async fn get_item(&self, key: Item, op: &str) -> StoreResult<Option<Item>> {
        if !fits_a_key(string_attr(&key, PK).unwrap_or_default()) {
            return Ok(None);
        }
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.backend(e, "GetItem", op))?;
        Ok(out.item)
    }

    async fn get<T: DeserializeOwned>(
        &self,
        kind: &Kind,
        id: &str,
        op: &str,
    ) -> StoreResult<Option<T>> {
        self.get_item(kind.key(id), op)
            .await?
            .map(decode)
            .transpose()
    }

    /// The entity a guard points at.
    async fn get_guarded<T: DeserializeOwned>(
        &self,
        guard: &Guard,
        value: &str,
        kind: &Kind,
        op: &str,
    ) -> StoreResult<Option<T>> {
        let Some(g) = self.get_item(guard.key(value), op).await? else {
            return Ok(None);
        };
        let owner = string_attr(&g, OWNER)
            .ok_or_else(|| anyhow!("guard {}{value} has no owner", guard.prefix))?;
        self.get(kind, owner, op).await
    }

    /// A conditional `PutItem`; `Ok(false)` when the condition failed.
    async fn put_if(&self, item: Item, cond: Cond, op: &str) -> StoreResult<bool> {
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(cond.text)
            .set_expression_attribute_names(cond.expr.names())
            .set_expression_attribute_values(cond.expr.values())
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(PutItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.backend(e, "PutItem", op)),
        }
    }

    /// `SET counter = counter + delta` under a condition; `Ok(false)` when
    /// the condition failed (the item is missing, or the bound is reached).
    /// The runner whose `attribute` (the hash key of the sparse keys-only
    /// `index`) is `value`: the index gives the key; the runner itself is
    /// then read consistently, so its state is never an index's stale copy.
    async fn runner_by_sparse_key(
        &self,
        index: &str,
        attribute: &str,
        value: &str,
        op: &str,
    ) -> StoreResult<Option<Runner>> {
        if !fits_a_key(value) {
            return Ok(None);
        }
        let mut e = Expr::default();
        let cond = format!("{} = {}", e.name(attribute), e.value(s(value)));
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(index)
            .key_condition_expression(cond)
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values())
            .send()
            .await
            .map_err(|err| self.backend(err, "Query", op))?;
        for found in out.items.unwrap_or_default() {
            let key: Item = [PK, SK]
                .iter()
                .filter_map(|k| found.get(*k).map(|v| (k.to_string(), v.clone())))
                .collect();
            if let Some(item) = self.get_item(key, op).await? {
                // The index may lag a rewrite that changed the attribute.
                if string_attr(&item, attribute) == Some(value) {
                    return decode(item).map(Some);
                }
            }
        }
        Ok(None)
    }

    async fn add_if(
        &self,
        key: Item,
        counter: &str,
        delta: i64,
        cond: Cond,
        op: &str,
    ) -> StoreResult<bool> {
        let mut e = cond.expr;
        let update = format!(
            "SET {c} = {c} + {d}",
            c = e.name(counter),
            d = e.value(n(delta))
        );
        self.update_if(key, e, update, Some(cond.text), op).await
    }

    /// One `UpdateItem` of `key` (its names and values in `e`), under `cond`
    /// if any; `Ok(false)` when the condition failed.
    async fn update_if(
        &self,
        key: Item,
        e: Expr,
        update: String,
        cond: Option<String>,
        op: &str,
    ) -> StoreResult<bool> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression(update)
            .set_condition_expression(cond)
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values())
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.backend(e, "UpdateItem", op)),
        }
    }

    // --- transaction items ---

    fn tx_put(&self, item: Item, cond: Cond) -> StoreResult<TransactWriteItem> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(cond.text)
            .set_expression_attribute_names(cond.expr.names())
            .set_expression_attribute_values(cond.expr.values())
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(build_err("Put"))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn tx_delete(&self, key: Item, cond: Cond) -> StoreResult<TransactWriteItem> {
        let delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key))
            .condition_expression(cond.text)
            .set_expression_attribute_names(cond.expr.names())
            .set_expression_attribute_values(cond.expr.values())
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(build_err("Delete"))?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }

    /// An update whose expression is built on the condition's placeholders.
    fn tx_update(
        &self,
        key: Item,
        cond: Cond,
        update: impl FnOnce(&mut Expr) -> String,
    ) -> StoreResult<TransactWriteItem> {
        let mut e = cond.expr;
        let update = update(&mut e);
        let op = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression(update)
            .condition_expression(cond.text)
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values())
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(build_err("Update"))?;
        Ok(TransactWriteItem::builder().update(op).build())
    }

    /// Rewrites an entity item in place: SETs every attribute of `enc`
    /// except the key and the `keep` counters, REMOVEs its absent ones.
    fn tx_rewrite(
        &self,
        enc: &Encoded,
        keep: &[&str],
        cond: Cond,
    ) -> StoreResult<TransactWriteItem> {
        let key: Item = [PK, SK]
            .iter()
            .filter_map(|k| enc.item.get(*k).map(|v| (k.to_string(), v.clone())))
            .collect();
        self.tx_update(key, cond, |e| {
            let mut sets: Vec<String> = enc
                .item
                .iter()
                .filter(|(name, _)| {
                    ![PK, SK].contains(&name.as_str()) && !keep.contains(&name.as_str())
                })
                .map(|(name, value)| format!("{} = {}", e.name(name), e.value(value.clone())))
                .collect();
            sets.sort(); // deterministic requests are easier to read in logs
            let removes: Vec<String> = enc.absent.iter().map(|name| e.name(name)).collect();
            let mut update = format!("SET {}", sets.join(", "));
            if !removes.is_empty() {
                update.push_str(&format!(" REMOVE {}", removes.join(", ")));
            }
            update
        })
    }

    /// `ADD dependents delta` on a project that must exist.
    fn tx_dependents(&self, project_id: &str, delta: i64) -> StoreResult<TransactWriteItem> {
        self.tx_update(PROJECT.key(project_id), Cond::exists(), |e| {
            format!("ADD {} {}", e.name(DEPENDENTS), e.value(n(delta)))
        })
    }

    /// Runs a transaction. `Ok(None)` when it committed; `Ok(Some(_))` when
    /// a condition failed. Conflicts with concurrent transactions on the
    /// same items are retried here. (The SDK gives every call an
    /// idempotency token, so its own retries never apply a write twice.)
    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
        op: &str,
    ) -> StoreResult<Option<Cancelled>> {
        let mut attempt = 0;
        loop {
            let out = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            let err = match out {
                Ok(_) => return Ok(None),
                Err(err) => err,
            };
            let Some(TransactWriteItemsError::TransactionCanceledException(cancel)) =
                err.as_service_error()
            else {
                return Err(self.backend(err, "TransactWriteItems", op));
            };
            let reasons = cancel.cancellation_reasons().to_vec();
            let codes: Vec<&str> = reasons.iter().map(|r| r.code().unwrap_or("None")).collect();
            if codes.contains(&"ConditionalCheckFailed") {
                return Ok(Some(Cancelled { reasons }));
            }
            attempt += 1;
            if codes
                .iter()
                .all(|c| matches!(*c, "None" | "TransactionConflict"))
                && attempt < MAX_ATTEMPTS
            {
                tracing::debug!(op, attempt, "transaction conflict; retrying");
                tokio::time::sleep(backoff(attempt)).await;
                continue;
            }
            // Only the codes: the messages may quote values.
            return Err(StoreError::Backend(
                anyhow!("transaction cancelled: {}", codes.join(", "))
                    .context(self.context("TransactWriteItems", op)),
            ));
        }
    }

    fn changed_too_often(&self, op: &str, id: &str) -> StoreError {
        StoreError::Backend(
            anyhow!("{id} kept changing during the write")
                .context(self.context("TransactWriteItems", op)),
        )
    }

    // --- listings ---

    /// One page of a listing, as raw items, and the cursor after it.
    async fn list(
        &self,
        listing: &Listing,
        page: &PageRequest,
    ) -> StoreResult<(Vec<Item>, Option<String>)> {
        let cursor = page
            .cursor
            .as_deref()
            .map(|raw| Cursor::decode(raw, listing.index, &listing.partitions))
            .transpose()?;
        let limit = page.limit();
        // One more than a page, to know whether another page follows.
        let want = limit + 1;
        let reads = listing
            .partitions
            .iter()
            .map(|p| self.query_partition(listing, p, cursor.as_ref(), want));
        let mut items: Vec<Item> = futures::future::try_join_all(reads)
            .await?
            .into_iter()
            .flatten()
            .collect();

        let sort_key = |item: &Item| {
            string_attr(item, listing.index.sk)
                .unwrap_or_default()
                .to_string()
        };
        items.sort_by_cached_key(sort_key);
        if listing.newest_first {
            items.reverse();
        }
        // An item that changed partition between two reads shows up twice.
        let mut seen = HashSet::new();
        items.retain(|item| seen.insert(string_attr(item, PK).unwrap_or_default().to_string()));

        let next = if items.len() > limit {
            items.truncate(limit);
            // The cursor is the last item *returned*, never DynamoDB's last
            // evaluated key: with a filter or a merge that one may lie
            // beyond items this page did not return.
            items
                .last()
                .map(|last| Cursor::of(last, listing.index).map(|c| c.encode(listing.index)))
                .transpose()?
        } else {
            None
        };
        Ok((items, next))
    }

    /// Up to `want` items of one partition after `cursor`, in list order.
    /// DynamoDB applies `Limit` before the filter, so this keeps reading
    /// until it has `want` matches or the partition ends.
    async fn query_partition(
        &self,
        l: &Listing,
        partition: &str,
        cursor: Option<&Cursor>,
        want: usize,
    ) -> StoreResult<Vec<Item>> {
        let (lo, hi) = (l.lo.as_deref(), l.hi.as_deref());
        if let (Some(lo), Some(hi)) = (lo, hi) {
            if lo >= hi {
                return Ok(Vec::new());
            }
        }
        // Start after the cursor, unless it lies before the window (then
        // from the start) or beyond it (then nothing is left).
        let mut start = None;
        if let Some(c) = cursor {
            let at = c.index_sk.as_str();
            let (beyond, before) = if l.newest_first {
                (lo.is_some_and(|lo| at < lo), hi.is_some_and(|hi| at >= hi))
            } else {
                (hi.is_some_and(|hi| at >= hi), lo.is_some_and(|lo| at < lo))
            };
            if beyond {
                return Ok(Vec::new());
            }
            if !before {
                start = Some(c.start_key(l.index, partition));
            }
        }

        let mut e = l
            .filter
            .as_ref()
            .map(|f| f.expr.clone())
            .unwrap_or_default();
        let mut key_cond = format!("{} = {}", e.name(l.index.pk), e.value(s(partition)));
        let range = match (lo, hi) {
            // BETWEEN includes `hi`; the rare item equal to it is dropped below.
            (Some(lo), Some(hi)) => {
                Some(format!("BETWEEN {} AND {}", e.value(s(lo)), e.value(s(hi))))
            }
            (Some(lo), None) => Some(format!(">= {}", e.value(s(lo)))),
            (None, Some(hi)) => Some(format!("< {}", e.value(s(hi)))),
            (None, None) => None,
        };
        if let Some(range) = range {
            // Named only when used: DynamoDB refuses unused placeholders.
            key_cond.push_str(&format!(" AND {} {range}", e.name(l.index.sk)));
        }

        let mut out = Vec::new();
        loop {
            let remaining = want - out.len();
            // Filtered reads skip items, so read ahead more than needed.
            let page_size = if l.filter.is_some() {
                (remaining * 4).clamp(25, 1000)
            } else {
                remaining.min(1000)
            };
            let resp = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(l.index.name)
                .key_condition_expression(&key_cond)
                .set_filter_expression(l.filter.as_ref().map(|f| f.text.clone()))
                .set_expression_attribute_names(e.names())
                .set_expression_attribute_values(e.values())
                .scan_index_forward(!l.newest_first)
                .limit(page_size as i32)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|err| self.backend(err, "Query", l.op))?;
            for item in resp.items.unwrap_or_default() {
                if hi.is_some() && string_attr(&item, l.index.sk) == hi {
                    continue;
                }
                out.push(item);
                if out.len() == want {
                    return Ok(out);
                }
            }
            match resp.last_evaluated_key {
                Some(last) if !last.is_empty() => start = Some(last),
                _ => return Ok(out),
            }
        }
    }

    async fn list_as<T: DeserializeOwned>(
        &self,
        listing: Listing,
        page: &PageRequest,
    ) -> StoreResult<Page<T>> {
        let (items, next_cursor) = self.list(&listing, page).await?;
        Ok(Page {
            items: items.into_iter().map(decode).collect::<StoreResult<_>>()?,
            next_cursor,
        })
    }

    /// Whether a project has pools, bindings, or both: the words of `InUse`.
    async fn dependents_of(&self, project_id: &str) -> StoreResult<String> {
        let mut kinds = Vec::new();
        for (partition, what) in [
            (format!("POOLS#{project_id}"), "pools"),
            (format!("BINDINGS#{project_id}"), "repo bindings"),
        ] {
            let listing = Listing::new("delete_project", GSI2, partition, false);
            if !self
                .list(&listing, &PageRequest::first(1))
                .await?
                .0
                .is_empty()
            {
                kinds.push(what);
            }
        }
        Ok(match kinds.as_slice() {
            [] => "the project still has pools or repo bindings".into(),
            kinds => format!("the project still has {}", kinds.join(" and ")),
        })
    }
}

fn sdk_error<E, R>(err: SdkError<E, R>, table: &str, call: &str) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
    R: Debug,
{
    anyhow!("{}", DisplayErrorContext(&err)).context(format!("DynamoDB {call} on table {table}"))
}

/// Exponential backoff with jitter: 20 ms, 40 ms, 80 ms, … plus up to 100%.
fn backoff(attempt: usize) -> Duration {
    let base = 20u64 << attempt.min(6);
    Duration::from_millis(base + rand::random::<u64>() % base)
}

impl Store for DynamoStore {
    fn engine(&self) -> &'static str {
        "dynamodb"
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_key_dynamodb_would_refuse_is_not_sent() {
        assert!(fits_a_key(&"x".repeat(MAX_PARTITION_KEY_BYTES)));
        assert!(!fits_a_key(&"x".repeat(MAX_PARTITION_KEY_BYTES + 1)));
        assert!(!fits_a_key(&"€".repeat(683)), "bytes, not characters");
    }

    use super::*;
    use chrono::TimeZone;

    #[test]
    fn time_keys_sort_as_times() {
        let a = chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let b = a + chrono::Duration::milliseconds(500);
        let c = a + chrono::Duration::seconds(1);
        assert!(time_key(&a) < time_key(&b) && time_key(&b) < time_key(&c));
        assert_eq!(time_key(&a), "2026-01-02T03:04:05.000000000Z");
    }

    #[test]
    fn cursors_round_trip_and_refuse_foreign_partitions() {
        let c = Cursor {
            pk: "JOB#j".into(),
            sk: "JOB".into(),
            index_pk: "JOBS".into(),
            index_sk: "t#j".into(),
        };
        let raw = c.encode(GSI1);
        assert_eq!(Cursor::decode(&raw, GSI1, &["JOBS".into()]).unwrap(), c);
        assert!(matches!(
            Cursor::decode(&raw, GSI1, &["AUDIT".into()]),
            Err(StoreError::BadCursor)
        ));
        assert!(matches!(
            Cursor::decode(&raw, GSI2, &["JOBS".into()]),
            Err(StoreError::BadCursor)
        ));
        assert!(matches!(
            Cursor::decode("not-a-cursor!", GSI1, &["JOBS".into()]),
            Err(StoreError::BadCursor)
        ));
    }

    #[test]
    fn none_fields_are_left_out_and_remembered_as_absent() {
        let job = crate::store::conformance::job(7, "Acme/App", crate::store::conformance::t0());
        let enc = job_item(&job).unwrap();
        assert!(!enc.item.contains_key("pool_id"));
        assert!(enc.absent.iter().any(|a| a == "pool_id"));
        assert!(enc.absent.iter().any(|a| a == "job_pool_id"));
        assert_eq!(string_attr(&enc.item, "job_repo_key"), Some("acme/app"));
        assert_eq!(string_attr(&enc.item, TYPE), Some("job"));
        assert_eq!(string_attr(&enc.item, GSI2.pk), Some("JOBSTATE#queued"));
    }

    #[test]
    fn users_keep_their_password_hash_in_the_item() {
        let user =
            crate::store::conformance::user("a@example.com", crate::store::conformance::t0());
        let enc = user_item(&user).unwrap();
        assert!(enc.item.contains_key("password_hash"));
        let back: User = decode(enc.item).unwrap();
        assert_eq!(back, user);
    }

    /// DynamoDB refuses a key attribute that is empty or longer than 2048
    /// bytes (partition keys) or 1024 bytes (sort keys), with a
    /// ValidationException: a 500 if a cursor ever carried one there.
    fn dynamodb_takes_as_keys(c: &Cursor) -> bool {
        let fits = |value: &str, max: usize| !value.is_empty() && value.len() <= max;
        fits(&c.pk, 2048) && fits(&c.index_pk, 2048) && fits(&c.sk, 1024) && fits(&c.index_sk, 1024)
    }

    /// Found by any_cursor_text_is_a_start_key_dynamodb_takes_or_refused: a
    /// forged cursor with an empty sort key decoded, and DynamoDB's refusal
    /// of it as a start key came back as a 500.
    #[test]
    fn a_forged_cursor_with_an_empty_or_oversized_key_is_refused() {
        let forged = |sk: &str| {
            let json = serde_json::json!({PK: "JOB#j", SK: sk, GSI1.pk: "JOBS", GSI1.sk: "t#j"});
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string())
        };
        for sk in [String::new(), "k".repeat(1025)] {
            assert!(
                matches!(
                    Cursor::decode(&forged(&sk), GSI1, &["JOBS".into()]),
                    Err(StoreError::BadCursor)
                ),
                "sk of {} bytes",
                sk.len()
            );
        }
        assert!(Cursor::decode(&forged("JOB"), GSI1, &["JOBS".into()]).is_ok());
    }

    fn any_cursor_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::strategy::Strategy as _;
        let key = |examples: &[&str]| {
            examples
                .iter()
                .map(|e| serde_json::json!(e))
                .collect::<Vec<_>>()
        };
        let long = "k".repeat(2049);
        let json_cursor = crate::arbitrary::object_with(vec![
            (PK, key(&["JOB#j", "", &long])),
            (SK, key(&["JOB", "", &long])),
            (GSI1.pk, key(&["JOBS", ""])),
            (GSI1.sk, key(&["t#j", "", &long])),
        ])
        .prop_map(|map| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(serde_json::Value::Object(map).to_string())
        });
        proptest::prop_oneof![crate::arbitrary::hostile_text(), json_cursor]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn any_cursor_text_is_a_start_key_dynamodb_takes_or_refused(raw in any_cursor_text()) {
            match Cursor::decode(&raw, GSI1, &["JOBS".into()]) {
                Ok(cursor) => {
                    proptest::prop_assert!(dynamodb_takes_as_keys(&cursor), "{cursor:?}");
                    proptest::prop_assert_eq!(Cursor::decode(&cursor.encode(GSI1), GSI1, &["JOBS".into()]).ok(), Some(cursor));
                }
                Err(e) => proptest::prop_assert!(matches!(e, StoreError::BadCursor)),
            }
        }
    }
}
