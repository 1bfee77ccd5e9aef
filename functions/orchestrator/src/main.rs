//! The `orchestrator` Lambda: the jobs queue's consumer: launches a runner per queued job, from SQS batches.
//! Only wiring: boot (config, logs, secrets, clients) and serve — see
//! `pacer_shared::host::lambda`.

use pacer_shared::config::Function;
use pacer_shared::host::lambda;

#[tokio::main]
async fn main() -> Result<(), lambda::Error> {
    lambda::run(Function::Orchestrator).await
}
