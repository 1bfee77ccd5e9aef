//! The `reaper` Lambda: the scheduled reconciliation of the store, EC2 and GitHub, from EventBridge.
//! Only wiring: boot (config, logs, secrets, clients) and serve — see
//! `pacer_shared::host::lambda`.

use pacer_shared::config::Function;
use pacer_shared::host::lambda;

#[tokio::main]
async fn main() -> Result<(), lambda::Error> {
    lambda::run(Function::Reaper).await
}
