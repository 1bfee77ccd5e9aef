//! The SQS adapter: the jobs queue of the serverless deployment (and of
//! `pacer serve` with `queue.engine: sqs`). In Lambda the orchestrator is
//! handed its batch by the runtime and only `send` is used here.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::MessageSystemAttributeName;

use super::{Delivery, Queue, QueueError, QueueResult};
use crate::calls::{CallCounts, Calls, SdkCallCounter, sqs_call};

pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
    calls: Arc<CallCounts>,
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: String) -> Self {
        // Every request this queue sends is counted on its way out.
        let calls = Arc::<CallCounts>::default();
        let counter = SdkCallCounter::new(calls.clone(), sqs_call);
        let client = aws_sdk_sqs::Client::from_conf(
            client.config().to_builder().interceptor(counter).build(),
        );
        Self { client, url, calls }
    }

    /// The SQS requests sent so far (see [`crate::calls`]).
    pub fn calls(&self) -> Calls {
        self.calls.snapshot()
    }

    /// The error of an SQS `action` on this queue that failed.
    fn failed(
        &self,
        action: &str,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> QueueError {
        QueueError {
            operation: format!("SQS {action} {}", self.url),
            source: Box::new(e),
        }
    }
}

fn whole_seconds(d: Duration, max: u64) -> i32 {
    d.as_secs().min(max) as i32
}

#[async_trait]
impl Queue for SqsQueue {
    fn engine(&self) -> &'static str {
        "sqs"
    }

    async fn send(&self, job_id: &str, delay: Option<Duration>) -> QueueResult<()> {
        let mut req = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(job_id);
        if let Some(d) = delay {
            // SQS delays at most 15 minutes.
            req = req.delay_seconds(whole_seconds(d, 900));
        }
        req.send()
            .await
            .map_err(|e| self.failed("SendMessage to", e))?;
        Ok(())
    }

    async fn receive(&self, max: usize, wait: Duration) -> QueueResult<Vec<Delivery>> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(whole_seconds(wait, 20))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| self.failed("ReceiveMessage from", e))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let receive_count = m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1);
                Some(Delivery {
                    job_id: m.body?,
                    receipt: m.receipt_handle?,
                    receive_count,
                })
            })
            .collect())
    }

    async fn ack(&self, delivery: &Delivery) -> QueueResult<()> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(&delivery.receipt)
            .send()
            .await
            .map_err(|e| self.failed("DeleteMessage on", e))?;
        Ok(())
    }

    async fn retry_later(&self, delivery: &Delivery, after: Duration) -> QueueResult<()> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(&delivery.receipt)
            .visibility_timeout(whole_seconds(after, 43_200))
            .send()
            .await
            .map_err(|e| self.failed("ChangeMessageVisibility on", e))?;
        Ok(())
    }
}
