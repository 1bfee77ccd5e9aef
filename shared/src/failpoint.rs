//! Failpoints: named steps where a test can make the process die, to prove
//! that every crash leaves a state the reaper converges.
//!
//! They exist only in a build with the `failpoints` cargo feature, which the
//! tests' support crate turns on for the workspace. There,
//! `PACER_FAILPOINTS=after_job_insert,after_launch` (read once) aborts the
//! process the first time each named step is reached. A default build — every
//! Lambda zip and `cargo build -p pacer` — carries neither the variable nor
//! the names: [`hit`] is an empty inline function (`make test` checks the
//! built binary).

/// A step where a test may make the process die.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Failpoint {
    /// A queued job is stored and its hint sent (an in-process queue loses
    /// the hint with the process).
    AfterJobInsert,
    /// A queued job's hint is sent while its row is being written (a queue
    /// service's send goes out beside the write): the row may or may not be
    /// there.
    AfterHintSent,
    /// RunInstances succeeded, the runner record not yet updated.
    AfterLaunch,
    /// GitHub issued a JIT config, the runner not yet marked registered.
    AfterJitMint,
}

#[cfg(feature = "failpoints")]
pub use armed::{ENV, hit};

/// Nothing: this build has no failpoints.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_: Failpoint) {}

#[cfg(feature = "failpoints")]
mod armed {
    use std::collections::HashSet;
    use std::sync::OnceLock;

    use super::Failpoint;

    /// The environment variable naming the armed failpoints.
    pub const ENV: &str = "PACER_FAILPOINTS";

    impl Failpoint {
        /// The name `PACER_FAILPOINTS` lists.
        pub fn name(self) -> &'static str {
            match self {
                Failpoint::AfterJobInsert => "after_job_insert",
                Failpoint::AfterHintSent => "after_hint_sent",
                Failpoint::AfterLaunch => "after_launch",
                Failpoint::AfterJitMint => "after_jit_mint",
            }
        }
    }

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

    /// Aborts the process here if `failpoint` is armed.
    pub fn hit(failpoint: Failpoint) {
        let name = failpoint.name();
        if armed().contains(name) {
            eprintln!("pacer: failpoint {name} reached: aborting");
            std::process::abort();
        }
    }
}
