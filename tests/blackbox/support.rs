//! What many black-box tests share: a pacer wired in process on the
//! embedded adapters (SQLite in a temporary directory, memory queue,
//! simulated fleet, offline GitHub).

use std::sync::Arc;
use std::time::Duration;

use pacer_shared::clock::SystemClock;
use pacer_shared::config::Secret;
use pacer_shared::fleet::simulated::{SimulatedFleet, SimulatedSettings};
use pacer_shared::github::offline::OfflineGitHub;
use pacer_shared::queue::memory::MemoryQueue;
use pacer_shared::service::{Ports, Settings};
use pacer_shared::store::sqlite::SqliteStore;

pub const WEBHOOK_SECRET: &str = "test-webhook-secret-0123456789abcdef";
pub const CALLBACK_SECRET: &str = "test-callback-secret-0123456789abcdef";

pub fn settings(callback_url: &str) -> Settings {
    Settings {
        deployment: "pacer".into(),
        callback_url: callback_url.into(),
        callback_secret: Secret::new(CALLBACK_SECRET),
        webhook_secrets: vec![Secret::new(WEBHOOK_SECRET)],
        max_attempts: 3,
        runner_version: "2.330.0".into(),
    }
}

/// Ports on the embedded adapters; the simulated fleet boots instantly and
/// is returned so a test can point it at a served pacer.
pub fn local_ports(dir: &std::path::Path) -> (Ports, Arc<SimulatedFleet>) {
    let store = SqliteStore::open(&dir.join("pacer.db")).expect("sqlite");
    let fleet = Arc::new(SimulatedFleet::new(SimulatedSettings {
        boot_delay: Duration::from_millis(10),
        job_time: Duration::from_millis(50),
        deployment: "pacer".into(),
        webhook_secret: Some(Secret::new(WEBHOOK_SECRET)),
        pickup_delay: Duration::from_millis(10),
        register_tries: 5,
        retry_delay: Duration::from_millis(50),
    }));
    let ports = Ports {
        store: Arc::new(store),
        clock: Arc::new(SystemClock),
        queue: Arc::new(MemoryQueue::new(Duration::from_secs(300))),
        fleet: fleet.clone(),
        github: Arc::new(OfflineGitHub::new("2.330.0")),
        settings: Arc::new(settings("http://127.0.0.1:9")),
    };
    (ports, fleet)
}
