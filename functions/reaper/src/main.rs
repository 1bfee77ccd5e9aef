//! The `reaper` Lambda: the scheduled reconciliation of the store, EC2 and GitHub, from EventBridge.
//! Only wiring: boot (config, logs, secrets, clients) and serve — see
//! `pacer_shared::host::lambda`.

use pacer_shared::config::Function;
use pacer_shared::host::lambda;

// One thread: Lambda gives a function one invocation at a time, and below
// 1,769 MB of memory less than one vCPU, so worker threads only add wake-ups
// (a sixth of the webhook's CPU per event, measured with `perf`).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda::Error> {
    lambda::run(Function::Reaper).await
}
