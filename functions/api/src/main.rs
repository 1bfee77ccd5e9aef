//! The `api` Lambda: the console API and `/healthz`, behind API Gateway (and CloudFront).
//! Only wiring: boot (config, logs, secrets, clients) and serve — see
//! `pacer_shared::lambda`.

use pacer_shared::lambda::{self, Kind};

#[tokio::main]
async fn main() -> Result<(), lambda::Error> {
    lambda::run(Kind::Api).await
}
