//! Configuration objects: projects, pools and repo bindings.

use super::*;

#[async_trait]
impl ConfigStore for DynamoStore {
    // --- projects ---

    #[instrument(level = "debug", skip_all, fields(table = %self.table, project_id = %project.id))]
    async fn create_project(&self, project: &Project) -> StoreResult<()> {
        let mut enc = project_item(project)?;
        enc.set(DEPENDENTS, n(0));
        let writes = vec![
            self.tx_put(enc.item, Cond::absent())?,
            self.tx_put(
                PROJECT_NAME.item(&project.spec.name.to_lowercase(), &project.id),
                Cond::absent(),
            )?,
        ];
        match self.transact(writes, "create_project").await? {
            None => Ok(()),
            Some(c) if c.failed(1) => Err(StoreError::Conflict(format!(
                "a project named {} exists already",
                project.spec.name
            ))),
            Some(_) => Err(StoreError::Conflict(format!(
                "project {} exists already",
                project.id
            ))),
        }
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table, project_id = %id))]
    async fn get_project(&self, id: &str) -> StoreResult<Option<Project>> {
        self.get(&PROJECT, id, "get_project").await
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table))]
    async fn list_projects(&self, page: &PageRequest) -> StoreResult<Page<Project>> {
        self.list_as(
            Listing::new("list_projects", GSI1, PROJECT.collection, false),
            page,
        )
        .await
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table, project_id = %project.id))]
    async fn update_project(&self, project: &Project) -> StoreResult<()> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(current) = self
                .get::<Project>(&PROJECT, &project.id, "update_project")
                .await?
            else {
                return Err(StoreError::NotFound);
            };
            let (old_name, new_name) = (
                current.spec.name.to_lowercase(),
                project.spec.name.to_lowercase(),
            );
            // Conditional on the name this write's guard moves are based on.
            let cond = Cond::exists_and(|e| {
                format!("{} = {}", e.name(NAME), e.value(s(&current.spec.name)))
            });
            let mut writes = vec![self.tx_rewrite(&project_item(project)?, &[DEPENDENTS], cond)?];
            if old_name != new_name {
                writes.push(
                    self.tx_delete(PROJECT_NAME.key(&old_name), Cond::owned_by(&project.id))?,
                );
                writes
                    .push(self.tx_put(PROJECT_NAME.item(&new_name, &project.id), Cond::absent())?);
            }
            match self.transact(writes, "update_project").await? {
                None => return Ok(()),
                Some(c) if c.failed(2) => {
                    return Err(StoreError::Conflict(format!(
                        "a project named {} exists already",
                        project.spec.name
                    )));
                }
                Some(_) => continue, // renamed or deleted meanwhile: read again
            }
        }
        Err(self.changed_too_often("update_project", &project.id))
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table, project_id = %id))]
    async fn delete_project(&self, id: &str) -> StoreResult<()> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(current) = self.get::<Project>(&PROJECT, id, "delete_project").await? else {
                return Err(StoreError::NotFound);
            };
            let cond = Cond::exists_and(|e| {
                let dependents = e.name(DEPENDENTS);
                format!(
                    "(attribute_not_exists({dependents}) OR {dependents} = {}) AND {} = {}",
                    e.value(n(0)),
                    e.name(NAME),
                    e.value(s(&current.spec.name))
                )
            });
            let writes = vec![
                self.tx_delete(PROJECT.key(id), cond)?,
                self.tx_delete(
                    PROJECT_NAME.key(&current.spec.name.to_lowercase()),
                    Cond::owned_by(id),
                )?,
            ];
            match self.transact(writes, "delete_project").await? {
                None => return Ok(()),
                Some(c) if c.failed(0) => match c.old(0) {
                    None => return Err(StoreError::NotFound),
                    Some(old) if number_attr(old, DEPENDENTS).unwrap_or(0) > 0 => {
                        return Err(StoreError::InUse(self.dependents_of(id).await?));
                    }
                    Some(_) => continue,
                },
                Some(_) => continue,
            }
        }
        Err(self.changed_too_often("delete_project", id))
    }

    // --- pools ---

    #[instrument(level = "debug", skip_all, fields(table = %self.table, pool_id = %pool.id, project_id = %pool.spec.project_id))]
    async fn create_pool(&self, pool: &Pool) -> StoreResult<()> {
        let writes = vec![
            self.tx_dependents(&pool.spec.project_id, 1)?,
            self.tx_put(pool_item(pool)?.item, Cond::absent())?,
            self.tx_put(
                POOL_NAME.item(
                    &pool_name_key(&pool.spec.project_id, &pool.spec.name),
                    &pool.id,
                ),
                Cond::absent(),
            )?,
        ];
        match self.transact(writes, "create_pool").await? {
            None => Ok(()),
            Some(c) if c.failed(0) => Err(StoreError::MissingParent("project")),
            Some(c) if c.failed(2) => Err(StoreError::Conflict(format!(
                "the project has a pool named {} already",
                pool.spec.name
            ))),
            Some(_) => Err(StoreError::Conflict(format!(
                "pool {} exists already",
                pool.id
            ))),
        }
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table, pool_id = %id))]
    async fn get_pool(&self, id: &str) -> StoreResult<Option<Pool>> {
        self.get(&POOL, id, "get_pool").await
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table))]
    async fn list_pools(
        &self,
        project_id: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<Pool>> {
        let listing = match project_id {
            Some(p) => Listing::new("list_pools", GSI2, format!("POOLS#{p}"), false),
            None => Listing::new("list_pools", GSI1, POOL.collection, false),
        };
        self.list_as(listing, page).await
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table, pool_id = %pool.id))]
    async fn update_pool(&self, pool: &Pool) -> StoreResult<()> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(current) = self.get::<Pool>(&POOL, &pool.id, "update_pool").await? else {
                return Err(StoreError::NotFound);
            };
            let (old_project, new_project) = (&current.spec.project_id, &pool.spec.project_id);
            let old_guard = pool_name_key(old_project, &current.spec.name);
            let new_guard = pool_name_key(new_project, &pool.spec.name);
            let cond = Cond::exists_and(|e| {
                format!(
                    "{} = {} AND {} = {}",
                    e.name(NAME),
                    e.value(s(&current.spec.name)),
                    e.name(PROJECT_ID),
                    e.value(s(old_project))
                )
            });
            // The counter belongs to reservations, never to this write.
            let mut writes = vec![self.tx_rewrite(&pool_item(pool)?, &[ACTIVE_RUNNERS], cond)?];
            let mut new_parent = None;
            if old_project != new_project {
                new_parent = Some(writes.len());
                writes.push(self.tx_dependents(new_project, 1)?);
                writes.push(self.tx_dependents(old_project, -1)?);
            }
            let mut new_name = None;
            if old_guard != new_guard {
                writes.push(self.tx_delete(POOL_NAME.key(&old_guard), Cond::owned_by(&pool.id))?);
                new_name = Some(writes.len());
                writes.push(self.tx_put(POOL_NAME.item(&new_guard, &pool.id), Cond::absent())?);
            }
            match self.transact(writes, "update_pool").await? {
                None => return Ok(()),
                Some(c) if new_parent.is_some_and(|i| c.failed(i)) => {
                    return Err(StoreError::MissingParent("project"));
                }
                Some(c) if new_name.is_some_and(|i| c.failed(i)) => {
                    return Err(StoreError::Conflict(format!(
                        "the project has a pool named {} already",
                        pool.spec.name
                    )));
                }
                Some(_) => continue,
            }
        }
        Err(self.changed_too_often("update_pool", &pool.id))
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table, pool_id = %id))]
    async fn delete_pool(&self, id: &str) -> StoreResult<()> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(current) = self.get::<Pool>(&POOL, id, "delete_pool").await? else {
                return Err(StoreError::NotFound);
            };
            let cond = Cond::exists_and(|e| {
                format!(
                    "{} = {} AND {} = {} AND {} = {}",
                    e.name(ACTIVE_RUNNERS),
                    e.value(n(0)),
                    e.name(NAME),
                    e.value(s(&current.spec.name)),
                    e.name(PROJECT_ID),
                    e.value(s(&current.spec.project_id))
                )
            });
            let writes = vec![
                self.tx_delete(POOL.key(id), cond)?,
                self.tx_delete(
                    POOL_NAME.key(&pool_name_key(&current.spec.project_id, &current.spec.name)),
                    Cond::owned_by(id),
                )?,
                self.tx_dependents(&current.spec.project_id, -1)?,
            ];
            match self.transact(writes, "delete_pool").await? {
                None => return Ok(()),
                Some(c) if c.failed(0) => match c.old(0) {
                    None => return Err(StoreError::NotFound),
                    Some(old) => match number_attr(old, ACTIVE_RUNNERS) {
                        Some(active) if active > 0 => {
                            return Err(StoreError::InUse(format!(
                                "the pool has {active} live runner(s)"
                            )));
                        }
                        _ => continue,
                    },
                },
                Some(_) => continue,
            }
        }
        Err(self.changed_too_often("delete_pool", id))
    }

    // --- repo bindings ---

    #[instrument(level = "debug", skip_all, fields(table = %self.table, binding_id = %binding.id, project_id = %binding.spec.project_id))]
    async fn create_binding(&self, binding: &RepoBinding) -> StoreResult<()> {
        let writes = vec![
            self.tx_dependents(&binding.spec.project_id, 1)?,
            self.tx_put(binding_item(binding)?.item, Cond::absent())?,
            self.tx_put(repo_guard(binding)?, Cond::absent())?,
        ];
        match self.transact(writes, "create_binding").await? {
            None => Ok(()),
            Some(c) if c.failed(0) => Err(StoreError::MissingParent("project")),
            Some(c) if c.failed(2) => Err(StoreError::Conflict(format!(
                "{} is bound to a project already",
                binding.spec.repo
            ))),
            Some(_) => Err(StoreError::Conflict(format!(
                "binding {} exists already",
                binding.id
            ))),
        }
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table, binding_id = %id))]
    async fn get_binding(&self, id: &str) -> StoreResult<Option<RepoBinding>> {
        self.get(&BINDING, id, "get_binding").await
    }

    /// One `GetItem`: the repo's guard holds a copy of its binding.
    #[instrument(level = "debug", skip_all, fields(table = %self.table, repo = %repo_key))]
    async fn binding_for_repo(&self, repo_key: &str) -> StoreResult<Option<RepoBinding>> {
        let Some(mut guard) = self
            .get_item(REPO.key(&repo_key.to_lowercase()), "binding_for_repo")
            .await?
        else {
            return Ok(None);
        };
        match guard.remove(BINDING_COPY) {
            Some(AttributeValue::M(copy)) => decode(copy).map(Some),
            _ => Err(StoreError::Backend(anyhow!(
                "the guard of repo {repo_key} holds no binding"
            ))),
        }
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table))]
    async fn list_bindings(
        &self,
        project_id: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<RepoBinding>> {
        let listing = match project_id {
            Some(p) => Listing::new("list_bindings", GSI2, format!("BINDINGS#{p}"), false),
            None => Listing::new("list_bindings", GSI1, BINDING.collection, false),
        };
        self.list_as(listing, page).await
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table, binding_id = %binding.id))]
    async fn update_binding(&self, binding: &RepoBinding) -> StoreResult<()> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(current) = self
                .get::<RepoBinding>(&BINDING, &binding.id, "update_binding")
                .await?
            else {
                return Err(StoreError::NotFound);
            };
            let (old_project, new_project) = (&current.spec.project_id, &binding.spec.project_id);
            let (old_repo, new_repo) = (current.spec.repo.key(), binding.spec.repo.key());
            let cond = Cond::exists_and(|e| {
                format!(
                    "{} = {} AND {} = {}",
                    e.name("binding_repo_key"),
                    e.value(s(&old_repo)),
                    e.name(PROJECT_ID),
                    e.value(s(old_project))
                )
            });
            // A binding has no counters: it is rewritten whole.
            let mut writes = vec![self.tx_put(binding_item(binding)?.item, cond)?];
            let mut new_parent = None;
            if old_project != new_project {
                new_parent = Some(writes.len());
                writes.push(self.tx_dependents(new_project, 1)?);
                writes.push(self.tx_dependents(old_project, -1)?);
            }
            let mut new_guard = None;
            if old_repo != new_repo {
                writes.push(self.tx_delete(REPO.key(&old_repo), Cond::owned_by(&binding.id))?);
                new_guard = Some(writes.len());
                writes.push(self.tx_put(repo_guard(binding)?, Cond::absent())?);
            } else {
                // Refresh the guard's copy.
                writes.push(self.tx_put(repo_guard(binding)?, Cond::owned_by(&binding.id))?);
            }
            match self.transact(writes, "update_binding").await? {
                None => return Ok(()),
                Some(c) if new_parent.is_some_and(|i| c.failed(i)) => {
                    return Err(StoreError::MissingParent("project"));
                }
                Some(c) if new_guard.is_some_and(|i| c.failed(i)) => {
                    return Err(StoreError::Conflict(format!(
                        "{} is bound to a project already",
                        binding.spec.repo
                    )));
                }
                Some(_) => continue,
            }
        }
        Err(self.changed_too_often("update_binding", &binding.id))
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table, binding_id = %id))]
    async fn delete_binding(&self, id: &str) -> StoreResult<()> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(current) = self
                .get::<RepoBinding>(&BINDING, id, "delete_binding")
                .await?
            else {
                return Err(StoreError::NotFound);
            };
            let repo = current.spec.repo.key();
            let cond = Cond::exists_and(|e| {
                format!(
                    "{} = {} AND {} = {}",
                    e.name("binding_repo_key"),
                    e.value(s(&repo)),
                    e.name(PROJECT_ID),
                    e.value(s(&current.spec.project_id))
                )
            });
            let writes = vec![
                self.tx_delete(BINDING.key(id), cond)?,
                self.tx_delete(REPO.key(&repo), Cond::owned_by(id))?,
                self.tx_dependents(&current.spec.project_id, -1)?,
            ];
            match self.transact(writes, "delete_binding").await? {
                None => return Ok(()),
                Some(c) if c.failed(0) && c.old(0).is_none() => return Err(StoreError::NotFound),
                Some(_) => continue,
            }
        }
        Err(self.changed_too_often("delete_binding", id))
    }
}

/// The guard of a binding's repo, carrying a copy of the binding.
fn repo_guard(binding: &RepoBinding) -> StoreResult<Item> {
    let copy: Item = serde_dynamo::aws_sdk_dynamodb_1::to_item(binding)
        .context("encoding a binding for DynamoDB")?;
    let mut item = REPO.item(&binding.spec.repo.key(), &binding.id);
    item.insert(
        BINDING_COPY.into(),
        AttributeValue::M(copy.into_iter().filter(|(_, v)| !v.is_null()).collect()),
    );
    Ok(item)
}
