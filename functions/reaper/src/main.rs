//! The `reaper` Lambda: the scheduled reconciliation of the store, EC2 and GitHub, from EventBridge.
//! Only wiring: boot (config, logs, secrets, clients) and serve — see
//! `pacer_shared::lambda`.

use pacer_shared::lambda::{self, Kind};

#[tokio::main]
async fn main() -> Result<(), lambda::Error> {
    lambda::run(Kind::Reaper).await
}
