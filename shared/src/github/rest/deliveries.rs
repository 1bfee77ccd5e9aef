//! Webhook deliveries: the failed ones, and asking for one again.

use super::*;

impl RestGitHub {
    #[tracing::instrument(skip(self))]
    pub(super) async fn failed_deliveries(&self, since: Time) -> GitHubResult<Vec<GhDelivery>> {
        let mut failed: Vec<GhDelivery> = Vec::new();
        let mut failed_at: HashMap<String, usize> = HashMap::new();
        let mut delivered: HashSet<String> = HashSet::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            pages += 1;
            let mut call = Call::new(&HOOK_DELIVERIES, Method::GET, ["app", "hook", "deliveries"])
                .auth(Auth::App)
                .query("per_page", PER_PAGE.to_string());
            if let Some(cursor) = &cursor {
                call = call.query("cursor", cursor.clone());
            }
            let reply = self.call(&call).await?;
            let page: Vec<WireDelivery> = reply.json(&call)?;
            // Newest first: once a page reaches past `since`, older pages are not wanted.
            let reached_since = page.is_empty() || page.iter().any(|d| d.delivered_at < since);
            for wire in page.into_iter().filter(|d| d.delivered_at >= since) {
                if (200..300).contains(&wire.status_code) {
                    delivered.insert(wire.guid);
                } else if let Some(listed) =
                    failed_at.get(&wire.guid).and_then(|&i| failed.get_mut(i))
                {
                    // An older failed attempt of an event already listed by its newest one.
                    listed.failed_attempts += 1;
                } else {
                    failed_at.insert(wire.guid.clone(), failed.len());
                    failed.push(wire.into_delivery());
                }
            }
            if reached_since {
                break;
            }
            let next = link_target(&reply.headers, "next").and_then(|url| {
                url.query_pairs()
                    .find(|(k, _)| k == "cursor")
                    .map(|(_, v)| v.into_owned())
            });
            match next {
                Some(next) if cursor.as_ref() != Some(&next) && pages < MAX_PAGES => {
                    cursor = Some(next)
                }
                Some(_) => {
                    tracing::warn!(
                        pages,
                        "webhook delivery list truncated (page limit or a repeated cursor)"
                    );
                    break;
                }
                None => break,
            }
        }
        // An event GitHub delivered successfully since (a redelivery that worked) needs nothing.
        failed.retain(|d| !delivered.contains(&d.guid));
        failed.sort_by_key(|d| std::cmp::Reverse(d.delivered_at));
        tracing::debug!(
            pages,
            failed = failed.len(),
            "listed failed webhook deliveries"
        );
        Ok(failed)
    }

    #[tracing::instrument(skip(self))]
    pub(super) async fn redeliver(&self, delivery_id: i64) -> GitHubResult<()> {
        let id = delivery_id.to_string();
        let call = Call::new(
            &REDELIVER,
            Method::POST,
            ["app", "hook", "deliveries", &id, "attempts"],
        )
        .auth(Auth::App);
        self.call(&call).await?;
        tracing::info!(delivery_id, "webhook redelivery requested");
        Ok(())
    }
}

/// One item of `GET /app/hook/deliveries`.
#[derive(Deserialize)]
pub(super) struct WireDelivery {
    pub(super) id: i64,
    pub(super) guid: String,
    pub(super) delivered_at: Time,
    #[serde(default)]
    pub(super) redelivery: bool,
    #[serde(default)]
    pub(super) status: String,
    pub(super) status_code: i64,
    pub(super) event: String,
    #[serde(default)]
    pub(super) action: Option<String>,
    #[serde(default)]
    pub(super) installation_id: Option<i64>,
    #[serde(default)]
    pub(super) repository_id: Option<i64>,
}

impl WireDelivery {
    pub(super) fn into_delivery(self) -> GhDelivery {
        GhDelivery {
            id: self.id,
            guid: self.guid,
            event: self.event,
            action: self.action,
            // Anything that is not an HTTP status (GitHub sends 0 when it could not connect).
            status_code: u16::try_from(self.status_code).unwrap_or(0),
            status: self.status,
            delivered_at: self.delivered_at,
            redelivery: self.redelivery,
            installation_id: self.installation_id,
            repository_id: self.repository_id,
            failed_attempts: 1,
        }
    }
}
