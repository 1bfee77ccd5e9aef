//! The `api` Lambda: the console API and `/healthz`, behind API Gateway (and CloudFront).
//! Only wiring: boot (config, logs, secrets, clients) and serve — see
//! `pacer_shared::host::lambda`.

use pacer_shared::config::Function;
use pacer_shared::host::lambda;

#[tokio::main]
async fn main() -> Result<(), lambda::Error> {
    lambda::run(Function::Api).await
}
