//! pacer's own ids: a short type prefix and a ULID, so ids are opaque to
//! clients, sort by creation time (cursor pagination relies on it) and say
//! what they name in logs.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Project,
    Pool,
    Binding,
    Job,
    Runner,
    User,
    Audit,
    SelfServiceRunner,
    SecurityEvent,
}

impl IdKind {
    pub fn prefix(self) -> &'static str {
        match self {
            IdKind::Project => "prj",
            IdKind::Pool => "pool",
            IdKind::Binding => "rb",
            IdKind::Job => "job",
            IdKind::Runner => "run",
            IdKind::User => "usr",
            IdKind::Audit => "evt",
            IdKind::SelfServiceRunner => "ssr",
            IdKind::SecurityEvent => "sec",
        }
    }
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prefix())
    }
}

/// What makes ids, held by the state beside the clock: [`Ulids`] in pacer,
/// [`SequentialIds`] where a test wants ids it can name in advance.
pub trait IdSource: Send + Sync {
    /// A new id of `kind`, ordered by `at` to the millisecond and, within one
    /// millisecond, by creation.
    fn new_id(&self, kind: IdKind, at: super::Time) -> String;
}

/// Ids whose 80 low bits are random, as ULIDs are.
#[derive(Debug, Default)]
pub struct Ulids {
    /// The last id made per recent millisecond, so ids made within one
    /// millisecond still sort in the order they were made (lists are "newest
    /// first"), even when callers with different clocks interleave.
    last: std::sync::Mutex<std::collections::HashMap<u64, u128>>,
}

/// How many recent milliseconds [`Ulids`] remembers before starting afresh.
const REMEMBERED_MS: usize = 1024;

impl IdSource for Ulids {
    fn new_id(&self, kind: IdKind, at: super::Time) -> String {
        let ms = millis(at);
        let mut ulid = ulid::Ulid::from_parts(ms, rand::random::<u128>());
        {
            let mut last = self
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.len() >= REMEMBERED_MS && !last.contains_key(&ms) {
                last.clear();
            }
            if let Some(previous) = last.get(&ms).map(|u| ulid::Ulid(*u)) {
                if ulid <= previous {
                    // Same millisecond: count up from the previous id instead.
                    ulid = previous.increment().unwrap_or(ulid);
                }
            }
            last.insert(ms, ulid.0);
        }
        format_id(kind, ulid)
    }
}

/// Ids whose low bits count 1, 2, 3… across every kind: the same calls at
/// the same times make the same ids, so a test can name them before they
/// exist. Later ids still sort after earlier ones made at the same time.
#[derive(Debug, Default)]
pub struct SequentialIds {
    made: std::sync::atomic::AtomicU64,
}

impl SequentialIds {
    /// The id the `n`th call (counting from 1) makes for `kind` at `at`.
    pub fn nth(kind: IdKind, at: super::Time, n: u64) -> String {
        format_id(kind, ulid::Ulid::from_parts(millis(at), u128::from(n)))
    }
}

impl IdSource for SequentialIds {
    fn new_id(&self, kind: IdKind, at: super::Time) -> String {
        let n = self.made.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        Self::nth(kind, at, n)
    }
}

/// Milliseconds since the epoch; a time before it counts as the epoch.
fn millis(at: super::Time) -> u64 {
    u64::try_from(at.timestamp_millis()).unwrap_or(0)
}

fn format_id(kind: IdKind, ulid: ulid::Ulid) -> String {
    format!(
        "{}_{}",
        kind.prefix(),
        ulid.to_string().to_ascii_lowercase()
    )
}

/// Whether `id` looks like an id of `kind` (a cheap check that turns a wrong
/// id into a 404 without a store round trip).
pub fn is_id_of(kind: IdKind, id: &str) -> bool {
    id.strip_prefix(kind.prefix())
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|u| u.len() == 26 && u.chars().all(|c| c.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn ids_sort_by_creation_time_and_carry_their_kind() {
        let ids = Ulids::default();
        let earlier = ids.new_id(IdKind::Job, Utc.timestamp_millis_opt(1_000).unwrap());
        let later = ids.new_id(IdKind::Job, Utc.timestamp_millis_opt(2_000).unwrap());
        assert!(earlier < later);
        assert!(is_id_of(IdKind::Job, &earlier));
        assert!(!is_id_of(IdKind::Pool, &earlier));
        assert!(!is_id_of(IdKind::Job, "job_nope"));
    }

    #[test]
    fn ids_made_within_one_millisecond_sort_in_creation_order() {
        let at = Utc.timestamp_millis_opt(5_000).unwrap();
        let ids = Ulids::default();
        let made: Vec<String> = (0..200).map(|_| ids.new_id(IdKind::Audit, at)).collect();
        let mut sorted = made.clone();
        sorted.sort();
        assert_eq!(made, sorted);
    }

    #[test]
    fn sequential_ids_are_known_in_advance_and_still_pacer_ids() {
        let at = Utc.timestamp_millis_opt(7_000).unwrap();
        let ids = SequentialIds::default();
        let first = ids.new_id(IdKind::Project, at);
        let second = ids.new_id(IdKind::Pool, at);
        assert_eq!(first, SequentialIds::nth(IdKind::Project, at, 1));
        assert_eq!(second, SequentialIds::nth(IdKind::Pool, at, 2));
        assert!(is_id_of(IdKind::Project, &first) && is_id_of(IdKind::Pool, &second));
        let (a, b) = (ids.new_id(IdKind::Job, at), ids.new_id(IdKind::Job, at));
        assert!(a < b, "later ids sort after earlier ones");
        assert_eq!(
            SequentialIds::default().new_id(IdKind::Project, at),
            first,
            "the same calls make the same ids"
        );
    }
}
