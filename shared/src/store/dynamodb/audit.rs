//! The audit log.

use super::*;

#[async_trait]
impl AuditStore for DynamoStore {
    #[instrument(level = "debug", skip_all, fields(table = %self.table, action = %event.action))]
    async fn append_audit(&self, event: &AuditEvent) -> StoreResult<()> {
        if self
            .put_if(audit_item(event)?.item, Cond::absent(), "append_audit")
            .await?
        {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "audit event {} exists already",
                event.id
            )))
        }
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table))]
    async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<AuditEvent>> {
        let mut listing = Listing::new("list_audit", GSI1, AUDIT.collection, true);
        listing.lo = filter.from.as_ref().map(time_key);
        listing.hi = filter.to.as_ref().map(time_key);
        let mut tests = Vec::new();
        if let Some(a) = &filter.action {
            tests.push(("action", s(a)));
        }
        if let Some(a) = &filter.actor {
            tests.push(("audit_actor", s(a)));
        }
        let prefixed = filter
            .action_prefix
            .iter()
            .map(|p| ("action", s(p)))
            .collect();
        listing.filter = Cond::all_of(tests, prefixed);
        let (items, next_cursor) = self.list(&listing, page).await?;
        Ok(Page {
            items: items
                .into_iter()
                .map(decode_audit)
                .collect::<StoreResult<_>>()?,
            next_cursor,
        })
    }
}
