//! Failpoints: named steps where a test can make the process die, to prove
//! that every crash leaves a state the reaper converges.
//! `PACER_FAILPOINTS=after_job_insert,after_launch` (read once) aborts the
//! process the first time each named step is reached. Unset —
//! always, in production — a failpoint costs one atomic load.

use std::collections::HashSet;
use std::sync::OnceLock;

/// The environment variable naming the armed failpoints.
pub const ENV: &str = "PACER_FAILPOINTS";

/// Every failpoint pacer has, for docs and validation.
pub const ALL: &[(&str, &str)] = &[
    (
        "after_job_insert",
        "a queued job is stored, its id not yet enqueued",
    ),
    (
        "after_launch",
        "RunInstances succeeded, the runner record not yet updated",
    ),
    (
        "after_jit_mint",
        "GitHub issued a JIT config, the runner not yet marked registered",
    ),
];

fn armed() -> &'static HashSet<String> {
    static ARMED: OnceLock<HashSet<String>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var(ENV)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    })
}

/// Aborts the process here if the failpoint `name` is armed.
pub fn hit(name: &str) {
    debug_assert!(
        ALL.iter().any(|(n, _)| *n == name),
        "unknown failpoint {name}"
    );
    if armed().contains(name) {
        eprintln!("pacer: failpoint {name} reached: aborting");
        std::process::abort();
    }
}
