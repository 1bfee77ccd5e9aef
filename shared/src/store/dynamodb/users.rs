//! Users, login rate-limit counters and revoked sessions.

use super::*;

#[async_trait]
impl UserStore for DynamoStore {
    // --- users ---

    #[instrument(level = "debug", skip_all, fields(table = %self.table, user_id = %user.id))]
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let mut writes = vec![
            self.tx_put(user_item(user)?.item, Cond::absent())?,
            self.tx_put(USER_EMAIL.item(&user.email, &user.id), Cond::absent())?,
        ];
        if let Some(subject) = &user.oidc_subject {
            writes.push(self.tx_put(USER_OIDC.item(subject, &user.id), Cond::absent())?);
        }
        match self.transact(writes, "create_user").await? {
            None => Ok(()),
            Some(c) if c.failed(1) => Err(StoreError::Conflict(format!(
                "a user with email {} exists already",
                user.email
            ))),
            Some(c) if c.failed(2) => Err(StoreError::Conflict(
                "another user has this SSO identity".into(),
            )),
            Some(_) => Err(StoreError::Conflict(format!(
                "user {} exists already",
                user.id
            ))),
        }
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table, user_id = %id))]
    async fn get_user(&self, id: &str) -> StoreResult<Option<User>> {
        self.get(&USER, id, "get_user").await
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table))]
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        self.get_guarded(
            &USER_EMAIL,
            &email.trim().to_lowercase(),
            &USER,
            "user_by_email",
        )
        .await
    }

    /// Through the subject's guard item: two reads, however many users.
    #[instrument(level = "debug", skip_all, fields(table = %self.table))]
    async fn user_by_oidc_subject(&self, subject: &str) -> StoreResult<Option<User>> {
        self.get_guarded(&USER_OIDC, subject, &USER, "user_by_oidc_subject")
            .await
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table))]
    async fn list_users(&self, page: &PageRequest) -> StoreResult<Page<User>> {
        self.list_as(
            Listing::new("list_users", GSI1, USER.collection, false),
            page,
        )
        .await
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table, user_id = %user.id))]
    async fn update_user(&self, user: &User) -> StoreResult<()> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(current) = self.get::<User>(&USER, &user.id, "update_user").await? else {
                return Err(StoreError::NotFound);
            };
            let cond = Cond::exists_and(|e| {
                let subject = e.name("oidc_subject");
                let same_subject = match &current.oidc_subject {
                    Some(sub) => format!("{subject} = {}", e.value(s(sub))),
                    None => format!("attribute_not_exists({subject})"),
                };
                format!(
                    "{} = {} AND {same_subject}",
                    e.name("email"),
                    e.value(s(&current.email))
                )
            });
            let mut writes = vec![self.tx_put(user_item(user)?.item, cond)?];
            let mut taken = Vec::new();
            if current.email != user.email {
                writes.push(
                    self.tx_delete(USER_EMAIL.key(&current.email), Cond::owned_by(&user.id))?,
                );
                taken.push((
                    writes.len(),
                    format!("a user with email {} exists already", user.email),
                ));
                writes.push(self.tx_put(USER_EMAIL.item(&user.email, &user.id), Cond::absent())?);
            }
            if current.oidc_subject != user.oidc_subject {
                if let Some(old) = &current.oidc_subject {
                    writes.push(self.tx_delete(USER_OIDC.key(old), Cond::owned_by(&user.id))?);
                }
                if let Some(new) = &user.oidc_subject {
                    taken.push((
                        writes.len(),
                        "another user has this SSO identity".to_string(),
                    ));
                    writes.push(self.tx_put(USER_OIDC.item(new, &user.id), Cond::absent())?);
                }
            }
            match self.transact(writes, "update_user").await? {
                None => return Ok(()),
                Some(c) => {
                    if let Some((_, why)) = taken.into_iter().find(|(i, _)| c.failed(*i)) {
                        return Err(StoreError::Conflict(why));
                    }
                    continue;
                }
            }
        }
        Err(self.changed_too_often("update_user", &user.id))
    }

    // --- login counters and revoked sessions ---

    #[instrument(level = "debug", skip_all, fields(table = %self.table, key = %key))]
    async fn hit_counter(
        &self,
        key: &str,
        window_start: Time,
        expires_at: Time,
    ) -> StoreResult<u64> {
        let mut e = Expr::default();
        let update = format!(
            "ADD {count} {one} SET {ttl} = {expires}, {kind} = {counter}",
            count = e.name("count"),
            one = e.value(n(1)),
            ttl = e.name(TTL_ATTRIBUTE),
            expires = e.value(n(expires_at.timestamp())),
            kind = e.name("type"),
            counter = e.value(s("counter")),
        );
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(counter_key(key, window_start)))
            .update_expression(update)
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values())
            .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|err| self.backend(err, "UpdateItem", "hit_counter"))?;
        let count = out
            .attributes
            .as_ref()
            .and_then(|a| a.get("count"))
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("hit_counter: no count came back"))?;
        Ok(count)
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table, key = %key))]
    async fn refund_hit(&self, key: &str, window_start: Time) -> StoreResult<()> {
        // Only a counter that exists and is above zero: never below, never created.
        let positive = Cond::new(|e| format!("{} > {}", e.name("count"), e.value(n(0))));
        self.add_if(
            counter_key(key, window_start),
            "count",
            -1,
            positive,
            "refund_hit",
        )
        .await?;
        Ok(())
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table))]
    async fn revoke_session(&self, session_id: &str, expires_at: Time) -> StoreResult<()> {
        let item: Item = [
            (PK.to_string(), s(format!("REVOKED#{session_id}"))),
            (SK.to_string(), s("SESSION")),
            ("type".to_string(), s("revoked_session")),
            (TTL_ATTRIBUTE.to_string(), n(expires_at.timestamp())),
        ]
        .into_iter()
        .collect();
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|err| self.backend(err, "PutItem", "revoke_session"))?;
        Ok(())
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table))]
    async fn is_session_revoked(&self, session_id: &str) -> StoreResult<bool> {
        let key: Item = [
            (PK.to_string(), s(format!("REVOKED#{session_id}"))),
            (SK.to_string(), s("SESSION")),
        ]
        .into_iter()
        .collect();
        Ok(self.get_item(key, "is_session_revoked").await?.is_some())
    }
}

/// The item of the counter `key` for the window starting at `window_start`.
fn counter_key(key: &str, window_start: Time) -> Item {
    [
        (PK.to_string(), s(format!("COUNTER#{key}"))),
        (
            SK.to_string(),
            s(window_start.timestamp_micros().to_string()),
        ),
    ]
    .into_iter()
    .collect()
}
