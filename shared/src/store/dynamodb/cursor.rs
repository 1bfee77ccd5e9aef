//! Cursors and listings: where a page ended, and what a listing reads.

use super::*;

/// DynamoDB's limit on a sort key's value (which must not be empty either,
/// nor a partition key's, whose limit is [`MAX_PARTITION_KEY_BYTES`]).
pub(super) const MAX_SORT_KEY_BYTES: usize = 1024;

/// Where a page ended: the key (table and index attributes) of the last
/// item it returned, i.e. a `LastEvaluatedKey` for that item. Encoded as
/// base64url of a JSON object of strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Cursor {
    pub(super) pk: String,
    pub(super) sk: String,
    pub(super) index_pk: String,
    pub(super) index_sk: String,
}

impl Cursor {
    pub(super) fn of(item: &Item, index: Index) -> StoreResult<Self> {
        let get = |name: &str| {
            string_attr(item, name).map(str::to_string).ok_or_else(|| {
                StoreError::Backend(anyhow!("a listed item lacks its key attribute {name}"))
            })
        };
        Ok(Self {
            pk: get(PK)?,
            sk: get(SK)?,
            index_pk: get(index.pk)?,
            index_sk: get(index.sk)?,
        })
    }

    pub(super) fn encode(&self, index: Index) -> String {
        let json = serde_json::json!({
            PK: self.pk, SK: self.sk, index.pk: self.index_pk, index.sk: self.index_sk,
        });
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string())
    }

    /// Reads a cursor of a listing over `index`; it must name one of the
    /// listing's partitions.
    pub(super) fn decode(raw: &str, index: Index, partitions: &[String]) -> StoreResult<Self> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw)
            .map_err(|_| StoreError::BadCursor)?;
        let json: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&bytes).map_err(|_| StoreError::BadCursor)?;
        let get = |name: &str| {
            json.get(name)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or(StoreError::BadCursor)
        };
        let cursor = Self {
            pk: get(PK)?,
            sk: get(SK)?,
            index_pk: get(index.pk)?,
            index_sk: get(index.sk)?,
        };
        // A start key DynamoDB would refuse (a key attribute empty, or over
        // its size limit) is a cursor this store never wrote: a 400, not a
        // ValidationException answered with a 500.
        let fits = |value: &str, max: usize| !value.is_empty() && value.len() <= max;
        let keys_fit = fits(&cursor.pk, MAX_PARTITION_KEY_BYTES)
            && fits(&cursor.index_pk, MAX_PARTITION_KEY_BYTES)
            && fits(&cursor.sk, MAX_SORT_KEY_BYTES)
            && fits(&cursor.index_sk, MAX_SORT_KEY_BYTES);
        if json.len() != 4 || !partitions.contains(&cursor.index_pk) || !keys_fit {
            return Err(StoreError::BadCursor);
        }
        Ok(cursor)
    }

    /// An `ExclusiveStartKey` that starts right after this item in
    /// `partition` (which need not be the item's own: merged listings read
    /// several partitions in one sort order).
    pub(super) fn start_key(&self, index: Index, partition: &str) -> Item {
        HashMap::from([
            (PK.to_string(), s(&self.pk)),
            (SK.to_string(), s(&self.sk)),
            (index.pk.to_string(), s(partition)),
            (index.sk.to_string(), s(&self.index_sk)),
        ])
    }
}

/// A listing: one or more partitions of an index read in the index's sort
/// order, within `[lo, hi)` of its sort key, filtered, merged.
pub(super) struct Listing {
    pub(super) op: &'static str,
    pub(super) index: Index,
    pub(super) partitions: Vec<String>,
    /// Inclusive lower bound of the sort key.
    pub(super) lo: Option<String>,
    /// Exclusive upper bound of the sort key.
    pub(super) hi: Option<String>,
    pub(super) newest_first: bool,
    pub(super) filter: Option<Cond>,
}

impl Listing {
    pub(super) fn new(
        op: &'static str,
        index: Index,
        partition: impl Into<String>,
        newest_first: bool,
    ) -> Self {
        Self {
            op,
            index,
            partitions: vec![partition.into()],
            lo: None,
            hi: None,
            newest_first,
            filter: None,
        }
    }
}
