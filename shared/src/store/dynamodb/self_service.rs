//! Self-service runners: token uses, the runners with their owners' live
//! counts, label policies and security events.

use sha2::{Digest, Sha256};

use crate::domain::self_service::DELETED_RUNNER_RETENTION;

use super::*;

/// `ADD live ±1` on an owner's count: the number of its runners in a live
/// status, kept in step by every write that moves one in or out.
const LIVE: &str = "live";

fn live_key(owner: &str) -> Item {
    key(format!("SSLIVE#{owner}"), "LIVE")
}

/// A token use's key: a digest, because `iss` and `jti` come from the token
/// and may together exceed what a key holds.
fn token_key(issuer: &str, jti: &str) -> Item {
    let mut digest = Sha256::new();
    digest.update(issuer.as_bytes());
    digest.update([0]);
    digest.update(jti.as_bytes());
    key(format!("TOKEN#{}", hex::encode(digest.finalize())), "USED")
}

/// Whether a runner's name guard is held: `true` until the runner is deleted.
const HELD: &str = "held";

fn self_runner_item(r: &SelfServiceRunner) -> StoreResult<Encoded> {
    let mut e = Encoded::of(r, &SELF_RUNNER, &r.id)?;
    let order = format!("{}#{}", time_key(&r.created_at), r.id);
    e.index(GSI1, SELF_RUNNER.collection, &order);
    e.index(GSI2, format!("SSOWNER#{}", r.owner), order);
    if let Some(until) = retained_until(r) {
        e.set(TTL_ATTRIBUTE, until);
    }
    Ok(e)
}

/// When the table's TTL may drop a deleted runner (and its released name).
fn retained_until(r: &SelfServiceRunner) -> Option<AttributeValue> {
    let deleted = r.deleted_at?;
    let retained =
        chrono::Duration::from_std(DELETED_RUNNER_RETENTION).unwrap_or(chrono::TimeDelta::MAX);
    let until = deleted.checked_add_signed(retained).unwrap_or(deleted);
    Some(n(until.timestamp()))
}

fn label_policy_item(p: &IdentityPolicy) -> StoreResult<Encoded> {
    let mut e = Encoded::of(p, &LABEL_POLICY, &p.identity)?;
    e.index(GSI1, LABEL_POLICY.collection, &p.identity);
    Ok(e)
}

fn security_event_item(ev: &SecurityEvent) -> StoreResult<Encoded> {
    let mut e = Encoded::of(ev, &SECURITY_EVENT, &ev.id)?;
    e.index(
        GSI1,
        SECURITY_EVENT.collection,
        format!("{}#{}", time_key(&ev.at), ev.id),
    );
    Ok(e)
}

/// The largest owner or policy identity this table keys: a policy's
/// identity is a sort key of `gsi1`, whose limit is 1 KiB.
const MAX_OWNER_BYTES: usize = 1024;

#[async_trait]
impl SelfServiceStore for DynamoStore {
    #[instrument(level = "debug", skip_all, fields(table = %self.table))]
    async fn use_token(
        &self,
        issuer: &str,
        jti: &str,
        expires_at: Time,
        now: Time,
    ) -> StoreResult<bool> {
        let mut item = token_key(issuer, jti);
        item.insert(TYPE.into(), s("token_use"));
        item.insert(TTL_ATTRIBUTE.into(), n(expires_at.timestamp()));
        // The TTL deletes lazily (within days): an expired use still in the
        // table is forgotten here.
        let cond = Cond::new(|e| {
            format!(
                "attribute_not_exists({}) OR {} < {}",
                e.name(PK),
                e.name(TTL_ATTRIBUTE),
                e.value(n(now.timestamp()))
            )
        });
        self.put_if(item, cond, "use_token").await
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table, name = %runner.name))]
    async fn create_self_runner(
        &self,
        runner: &SelfServiceRunner,
        max_live: u32,
    ) -> StoreResult<bool> {
        if runner.owner.len() > MAX_OWNER_BYTES {
            return Err(StoreError::Conflict("the owner's name is too long".into()));
        }
        if runner.status == SelfRunnerStatus::Deleted {
            return Err(StoreError::runner_left_deleted(runner));
        }
        if runner.status.is_live() && max_live == 0 {
            return Ok(false);
        }
        let mut name = SELF_RUNNER_NAME.item(&runner.name, &runner.id);
        name.insert(HELD.into(), AttributeValue::Bool(true));
        let free = Cond::new(|e| {
            format!(
                "attribute_not_exists({}) OR {} = {}",
                e.name(PK),
                e.name(HELD),
                e.value(AttributeValue::Bool(false))
            )
        });
        let mut writes = vec![
            self.tx_put(name, free)?,
            self.tx_put(self_runner_item(runner)?.item, Cond::absent())?,
        ];
        if !runner.status.is_live() {
            return match self.transact(writes, "create_self_runner").await? {
                None => Ok(true),
                Some(_) => Err(StoreError::runner_name_taken(&runner.name)),
            };
        }
        let room = Cond::new(|e| {
            let live = e.name(LIVE);
            format!(
                "attribute_not_exists({live}) OR {live} < {}",
                e.value(n(max_live))
            )
        });
        writes.push(self.tx_update(live_key(&runner.owner), room, |e| {
            format!("ADD {} {}", e.name(LIVE), e.value(n(1)))
        })?);
        match self.transact(writes, "create_self_runner").await? {
            None => Ok(true),
            Some(c) if c.failed(0) || c.failed(1) => {
                Err(StoreError::runner_name_taken(&runner.name))
            }
            Some(_) => Ok(false),
        }
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table, name = %name))]
    async fn get_self_runner(&self, name: &str) -> StoreResult<Option<SelfServiceRunner>> {
        self.get_guarded(&SELF_RUNNER_NAME, name, &SELF_RUNNER, "get_self_runner")
            .await
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table))]
    async fn list_self_runners(
        &self,
        filter: &SelfRunnerFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<SelfServiceRunner>> {
        let mut listing = match &filter.owner {
            Some(owner) if owner.len() > MAX_OWNER_BYTES => {
                return Ok(Page {
                    items: Vec::new(),
                    next_cursor: None,
                });
            }
            Some(owner) => {
                Listing::new("list_self_runners", GSI2, format!("SSOWNER#{owner}"), true)
            }
            None => Listing::new("list_self_runners", GSI1, SELF_RUNNER.collection, true),
        };
        listing.filter = Cond::all_equal(
            filter
                .status
                .iter()
                .map(|st| ("status", s(st.as_str())))
                .collect(),
        );
        self.list_as(listing, page).await
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table, name = %runner.name, from = from.as_str(), to = runner.status.as_str()))]
    async fn update_self_runner(
        &self,
        from: SelfRunnerStatus,
        runner: &SelfServiceRunner,
    ) -> StoreResult<()> {
        if from == SelfRunnerStatus::Deleted && runner.status != SelfRunnerStatus::Deleted {
            return Err(StoreError::runner_left_deleted(runner));
        }
        let previous = runner.version.saturating_sub(1);
        let cond = Cond::exists_and(|e| {
            format!(
                "{} = {} AND {} = {}",
                e.name("status"),
                e.value(s(from.as_str())),
                e.name("version"),
                e.value(n(previous))
            )
        });
        let mut writes = vec![self.tx_put(self_runner_item(runner)?.item, cond)?];
        if from != SelfRunnerStatus::Deleted && runner.status == SelfRunnerStatus::Deleted {
            // The name goes back with the move, and stays to find the runner
            // by for as long as the runner is kept.
            let release = Cond::owned_by(&runner.id);
            let until = retained_until(runner);
            writes.push(
                self.tx_update(SELF_RUNNER_NAME.key(&runner.name), release, |e| {
                    let mut set = format!(
                        "SET {} = {}",
                        e.name(HELD),
                        e.value(AttributeValue::Bool(false))
                    );
                    if let Some(until) = until {
                        set.push_str(&format!(", {} = {}", e.name(TTL_ATTRIBUTE), e.value(until)));
                    }
                    set
                })?,
            );
        }
        let delta = match (from.is_live(), runner.status.is_live()) {
            (true, false) => -1,
            (false, true) => 1,
            _ => 0,
        };
        if delta != 0 {
            // The count moves with the runner, in the same write, so it
            // never disagrees with the runners it counts.
            let always = Cond::new(|e| {
                format!(
                    "attribute_not_exists({0}) OR attribute_exists({0})",
                    e.name(PK)
                )
            });
            writes.push(self.tx_update(live_key(&runner.owner), always, |e| {
                format!("ADD {} {}", e.name(LIVE), e.value(n(delta)))
            })?);
        }
        match self.transact(writes, "update_self_runner").await? {
            None => Ok(()),
            Some(_) => Err(StoreError::Stale),
        }
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table))]
    async fn put_label_policy(&self, policy: &IdentityPolicy) -> StoreResult<()> {
        if policy.identity.len() > MAX_OWNER_BYTES {
            return Err(StoreError::Conflict("the identity is too long".into()));
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(label_policy_item(policy)?.item))
            .send()
            .await
            .map_err(|err| self.backend(err, "PutItem", "put_label_policy"))?;
        Ok(())
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table))]
    async fn get_label_policy(&self, identity: &str) -> StoreResult<Option<IdentityPolicy>> {
        self.get(&LABEL_POLICY, identity, "get_label_policy").await
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table))]
    async fn list_label_policies(&self, page: &PageRequest) -> StoreResult<Page<IdentityPolicy>> {
        let listing = Listing::new("list_label_policies", GSI1, LABEL_POLICY.collection, false);
        self.list_as(listing, page).await
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table))]
    async fn delete_label_policy(&self, identity: &str) -> StoreResult<()> {
        if !fits_a_key(identity) {
            return Err(StoreError::NotFound);
        }
        let writes = vec![self.tx_delete(LABEL_POLICY.key(identity), Cond::exists())?];
        match self.transact(writes, "delete_label_policy").await? {
            None => Ok(()),
            Some(_) => Err(StoreError::NotFound),
        }
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table, kind = event.kind.as_str()))]
    async fn append_security_event(&self, event: &SecurityEvent) -> StoreResult<()> {
        if self
            .put_if(
                security_event_item(event)?.item,
                Cond::absent(),
                "append_security_event",
            )
            .await?
        {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "security event {} exists already",
                event.id
            )))
        }
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table))]
    async fn list_security_events(
        &self,
        filter: &SecurityEventFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<SecurityEvent>> {
        let mut listing = Listing::new(
            "list_security_events",
            GSI1,
            SECURITY_EVENT.collection,
            true,
        );
        listing.lo = filter.from.as_ref().map(time_key);
        listing.hi = filter.to.as_ref().map(time_key);
        let mut tests = Vec::new();
        if let Some(k) = filter.kind {
            tests.push(("kind", s(k.as_str())));
        }
        if let Some(identity) = &filter.identity {
            tests.push(("identity", s(identity)));
        }
        listing.filter = Cond::all_equal(tests);
        self.list_as(listing, page).await
    }

    async fn sweep_self_service(&self, _now: Time, _deleted_before: Time) -> StoreResult<u64> {
        // The table's TTL on `expires_at` removes token uses and deleted
        // runners; reads already treat an expired token use as absent.
        Ok(0)
    }
}
