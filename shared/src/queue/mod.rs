//! The queue port: "look at job X now". A hint, never the truth
//! (docs/architecture.md): losing a message delays a job until the reaper re-drives it.
//! Adapters: [`memory::MemoryQueue`] (one process) and [`sqs::SqsQueue`].

use std::time::Duration;

use async_trait::async_trait;

pub mod memory;
pub mod sqs;

/// One received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub job_id: String,
    /// The adapter's handle for acknowledging this receipt.
    pub receipt: String,
    /// How many times the message has been received, this time included.
    pub receive_count: u32,
}

/// Why the queue did not do what it was asked. Every failure is the
/// queue service's (unreachable, throttled, refusing): the in-process queue
/// never fails.
#[derive(Debug, thiserror::Error)]
#[error("{operation} failed")]
pub struct QueueError {
    /// What was asked, of which queue (`SQS SendMessage to https://…`).
    pub operation: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

pub type QueueResult<T> = Result<T, QueueError>;

#[async_trait]
pub trait Queue: Send + Sync + 'static {
    fn engine(&self) -> &'static str;
    /// Whether a send is a round trip to a service (SQS): worth starting
    /// beside other I/O instead of after it. An in-process send costs
    /// nothing, and its receiver may run before the sender's next step.
    fn sends_remotely(&self) -> bool {
        true
    }
    /// Asks for `job_id` to be looked at (after `delay`, if any).
    async fn send(&self, job_id: &str, delay: Option<Duration>) -> QueueResult<()>;
    /// Up to `max` messages, waiting up to `wait` for the first. A received
    /// message is hidden until acknowledged or its visibility lapses.
    async fn receive(&self, max: usize, wait: Duration) -> QueueResult<Vec<Delivery>>;
    /// Removes a handled message.
    async fn ack(&self, delivery: &Delivery) -> QueueResult<()>;
    /// Makes an unhandled message visible again after `after`.
    async fn retry_later(&self, delivery: &Delivery, after: Duration) -> QueueResult<()>;
}
