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
        }
    }
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prefix())
    }
}

/// The last id made in this process per recent millisecond, so ids made
/// within one millisecond still sort in the order they were made (lists are
/// "newest first"), even when callers with different clocks interleave.
static LAST: std::sync::Mutex<Option<std::collections::HashMap<u64, u128>>> =
    std::sync::Mutex::new(None);

/// How many recent milliseconds [`LAST`] remembers before starting afresh.
const REMEMBERED_MS: usize = 1024;

/// A new id of the given kind: ordered by `at` to the millisecond and, within
/// one millisecond in this process, by creation.
pub fn new_id(kind: IdKind, at: super::Time) -> String {
    let ms = at.timestamp_millis().max(0) as u64;
    let mut ulid = ulid::Ulid::from_parts(ms, rand::random::<u128>());
    {
        let mut guard = LAST.lock().unwrap_or_else(|p| p.into_inner());
        let last = guard.get_or_insert_with(Default::default);
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
        let earlier = new_id(IdKind::Job, Utc.timestamp_millis_opt(1_000).unwrap());
        let later = new_id(IdKind::Job, Utc.timestamp_millis_opt(2_000).unwrap());
        assert!(earlier < later);
        assert!(is_id_of(IdKind::Job, &earlier));
        assert!(!is_id_of(IdKind::Pool, &earlier));
        assert!(!is_id_of(IdKind::Job, "job_nope"));
    }

    #[test]
    fn ids_made_within_one_millisecond_sort_in_creation_order() {
        let at = Utc.timestamp_millis_opt(5_000).unwrap();
        let ids: Vec<String> = (0..200).map(|_| new_id(IdKind::Audit, at)).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }
}
