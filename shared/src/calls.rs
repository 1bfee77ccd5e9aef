//! How many calls each adapter made to the system behind it: SQLite or
//! DynamoDB, the in-process queue or SQS, the simulated fleet or EC2, the
//! offline GitHub or GitHub's REST API (docs/architecture.md, "Performance budgets": calls per job are
//! counted and reported). `make bench` divides them by the jobs a burst
//! completed; tests check that a known sequence moves them as expected.
//!
//! Every adapter instance holds its own [`CallCounts`] and answers a
//! snapshot from `calls()`. Nothing here is a process global, so tests that
//! run side by side never see each other's calls.
//!
//! What counts as one call:
//! - SQLite: one trip to the connection (a store method's statements, run
//!   under its lock); DynamoDB: one data-plane request put on the wire —
//!   a retry is another request, table setup is not counted.
//! - The memory queue: one method call; SQS: one request on the wire.
//! - The simulated fleet and the offline GitHub: one port method call, as
//!   the real adapter would make at least one request for it; EC2 and
//!   GitHub's API: one HTTP request (an installation-token fetch included).

use std::fmt;
use std::ops::{Add, Sub};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use serde::Serialize;

/// One kind of call an adapter makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    StoreRead,
    StoreWrite,
    QueueSend,
    QueueReceive,
    /// Acknowledging a handled message (SQS DeleteMessage).
    QueueDelete,
    /// Handing a message back for later (SQS ChangeMessageVisibility).
    QueueRequeue,
    /// EC2, or the simulated fleet standing in for it.
    Fleet,
    GitHub,
}

const KINDS: usize = 8;

/// The running counts of one adapter instance.
#[derive(Default)]
pub struct CallCounts([AtomicU64; KINDS]);

impl CallCounts {
    fn counter(&self, call: Call) -> &AtomicU64 {
        // One counter per kind: the array has KINDS slots, one per variant.
        #[allow(clippy::indexing_slicing)]
        &self.0[call as usize]
    }

    pub fn count(&self, call: Call) {
        self.counter(call).fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Calls {
        let get = |call: Call| self.counter(call).load(Ordering::Relaxed);
        Calls {
            store_reads: get(Call::StoreRead),
            store_writes: get(Call::StoreWrite),
            queue_sends: get(Call::QueueSend),
            queue_receives: get(Call::QueueReceive),
            queue_deletes: get(Call::QueueDelete),
            queue_requeues: get(Call::QueueRequeue),
            fleet: get(Call::Fleet),
            github: get(Call::GitHub),
        }
    }
}

impl fmt::Debug for CallCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.snapshot().fmt(f)
    }
}

/// Counts at one moment. Add the snapshots of several adapters for a whole
/// deployment; subtract two snapshots for the calls made in between.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Calls {
    pub store_reads: u64,
    pub store_writes: u64,
    pub queue_sends: u64,
    pub queue_receives: u64,
    pub queue_deletes: u64,
    pub queue_requeues: u64,
    pub fleet: u64,
    pub github: u64,
}

impl Calls {
    fn fields(self) -> [u64; KINDS] {
        [
            self.store_reads,
            self.store_writes,
            self.queue_sends,
            self.queue_receives,
            self.queue_deletes,
            self.queue_requeues,
            self.fleet,
            self.github,
        ]
    }

    fn from_fields(f: [u64; KINDS]) -> Self {
        Calls {
            store_reads: f[0],
            store_writes: f[1],
            queue_sends: f[2],
            queue_receives: f[3],
            queue_deletes: f[4],
            queue_requeues: f[5],
            fleet: f[6],
            github: f[7],
        }
    }

    /// Every call of every kind.
    pub fn total(self) -> u64 {
        self.fields().iter().sum()
    }
}

impl Add for Calls {
    type Output = Calls;
    fn add(self, other: Calls) -> Calls {
        Calls::from_fields(zip_fields(self.fields(), other.fields(), |a, b| a + b))
    }
}

impl Sub for Calls {
    type Output = Calls;
    /// The calls made since `earlier` (counts only grow; saturates anyway).
    fn sub(self, earlier: Calls) -> Calls {
        Calls::from_fields(zip_fields(
            self.fields(),
            earlier.fields(),
            u64::saturating_sub,
        ))
    }
}

/// Two sets of counts combined kind by kind.
fn zip_fields(a: [u64; KINDS], b: [u64; KINDS], f: impl Fn(u64, u64) -> u64) -> [u64; KINDS] {
    let mut out = a;
    for (o, b) in out.iter_mut().zip(b) {
        *o = f(*o, b);
    }
    out
}

impl std::iter::Sum for Calls {
    fn sum<I: Iterator<Item = Calls>>(iter: I) -> Calls {
        iter.fold(Calls::default(), Add::add)
    }
}

/// An AWS SDK interceptor that counts each request a client puts on the
/// wire, after `classify` names its kind from the operation (`None`: not
/// counted). Counting at transmission, not per call, includes the SDK's own
/// retries: each is a request AWS bills.
#[derive(Clone)]
pub struct SdkCallCounter {
    counts: Arc<CallCounts>,
    classify: fn(&str) -> Option<Call>,
}

impl SdkCallCounter {
    pub fn new(counts: Arc<CallCounts>, classify: fn(&str) -> Option<Call>) -> Self {
        Self { counts, classify }
    }
}

impl fmt::Debug for SdkCallCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SdkCallCounter")
            .field("counts", &self.counts)
            .finish()
    }
}

impl Intercept for SdkCallCounter {
    fn name(&self) -> &'static str {
        "pacer.call_counts"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(call) = cfg
            .load::<Metadata>()
            .and_then(|m| (self.classify)(m.name()))
        {
            self.counts.count(call);
        }
        Ok(())
    }
}

/// DynamoDB's data plane; table management is setup, not a job's cost.
pub fn dynamodb_call(operation: &str) -> Option<Call> {
    match operation {
        "GetItem" | "BatchGetItem" | "Query" | "Scan" | "TransactGetItems" => Some(Call::StoreRead),
        "PutItem" | "UpdateItem" | "DeleteItem" | "BatchWriteItem" | "TransactWriteItems" => {
            Some(Call::StoreWrite)
        }
        _ => None,
    }
}

/// SQS's message calls; queue management is not counted.
pub fn sqs_call(operation: &str) -> Option<Call> {
    match operation {
        "SendMessage" | "SendMessageBatch" => Some(Call::QueueSend),
        "ReceiveMessage" => Some(Call::QueueReceive),
        "DeleteMessage" | "DeleteMessageBatch" => Some(Call::QueueDelete),
        "ChangeMessageVisibility" | "ChangeMessageVisibilityBatch" => Some(Call::QueueRequeue),
        _ => None,
    }
}

/// Every EC2 request counts.
pub fn ec2_call(_operation: &str) -> Option<Call> {
    Some(Call::Fleet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_add_up_and_subtract_to_the_calls_in_between() {
        let counts = CallCounts::default();
        counts.count(Call::StoreRead);
        let before = counts.snapshot();
        counts.count(Call::StoreRead);
        counts.count(Call::StoreWrite);
        counts.count(Call::GitHub);
        let between = counts.snapshot() - before;
        assert_eq!(
            between,
            Calls {
                store_reads: 1,
                store_writes: 1,
                github: 1,
                ..Default::default()
            }
        );
        assert_eq!(between.total(), 3);
        assert_eq!((between + between).store_reads, 2);
        assert_eq!([between, between].into_iter().sum::<Calls>().github, 2);
    }

    #[test]
    fn sdk_operations_are_classified_by_what_they_cost() {
        assert_eq!(dynamodb_call("Query"), Some(Call::StoreRead));
        assert_eq!(dynamodb_call("TransactWriteItems"), Some(Call::StoreWrite));
        assert_eq!(dynamodb_call("CreateTable"), None);
        assert_eq!(sqs_call("ReceiveMessage"), Some(Call::QueueReceive));
        assert_eq!(
            sqs_call("ChangeMessageVisibility"),
            Some(Call::QueueRequeue)
        );
        assert_eq!(sqs_call("GetQueueUrl"), None);
        assert_eq!(ec2_call("RunInstances"), Some(Call::Fleet));
    }
}
