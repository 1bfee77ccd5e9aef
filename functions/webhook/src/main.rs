//! The `webhook` Lambda: GitHub's `workflow_job` deliveries (`POST /api/webhook`), behind API Gateway.
//! Only wiring: boot (config, logs, secrets, clients) and serve — see
//! `pacer_shared::host::lambda`.

use pacer_shared::config::Function;
use pacer_shared::host::lambda;

#[tokio::main]
async fn main() -> Result<(), lambda::Error> {
    lambda::run(Function::Webhook).await
}
