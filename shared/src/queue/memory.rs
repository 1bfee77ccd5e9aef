//! The in-process queue of `pacer serve`: SQS semantics in memory —
//! received messages stay hidden until acknowledged, and reappear when their
//! visibility lapses, so a worker that dies mid-message loses nothing.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Delivery, Queue, QueueResult};
use crate::calls::{Call, CallCounts, Calls};

struct Message {
    job_id: String,
    receive_count: u32,
}

#[derive(Default)]
struct State {
    ready: VecDeque<Message>,
    /// Delayed or in flight: visible again at the instant, keyed by receipt.
    hidden: BTreeMap<u64, (Instant, Message)>,
    next_receipt: u64,
}

pub struct MemoryQueue {
    state: Mutex<State>,
    notify: Notify,
    visibility: Duration,
    calls: CallCounts,
}

impl MemoryQueue {
    /// `visibility`: how long a received, unacknowledged message stays hidden.
    pub fn new(visibility: Duration) -> Self {
        Self {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            visibility,
            calls: CallCounts::default(),
        }
    }

    /// The sends, receives, acks and retries so far (see [`crate::calls`]).
    pub fn calls(&self) -> Calls {
        self.calls.snapshot()
    }

    /// Messages waiting or in flight (for tests and the bench).
    pub fn len(&self) -> usize {
        let s = crate::sync::lock(&self.state);
        s.ready.len() + s.hidden.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves lapsed hidden messages back to ready; returns when the next
    /// hidden one lapses.
    fn surface(state: &mut State, now: Instant) -> Option<Instant> {
        let lapsed: Vec<u64> = state
            .hidden
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in lapsed {
            if let Some((_, m)) = state.hidden.remove(&key) {
                state.ready.push_back(m);
            }
        }
        state.hidden.values().map(|(at, _)| *at).min()
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    fn engine(&self) -> &'static str {
        "memory"
    }

    fn sends_remotely(&self) -> bool {
        false
    }

    async fn send(&self, job_id: &str, delay: Option<Duration>) -> QueueResult<()> {
        self.calls.count(Call::QueueSend);
        let message = Message {
            job_id: job_id.to_string(),
            receive_count: 0,
        };
        {
            let mut s = crate::sync::lock(&self.state);
            match delay.filter(|d| !d.is_zero()) {
                Some(d) => {
                    let key = s.next_receipt;
                    s.next_receipt += 1;
                    s.hidden.insert(key, (Instant::now() + d, message));
                }
                None => s.ready.push_back(message),
            }
        }
        self.notify.notify_one();
        Ok(())
    }

    async fn receive(&self, max: usize, wait: Duration) -> QueueResult<Vec<Delivery>> {
        self.calls.count(Call::QueueReceive);
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.notify.notified();
            let next_lapse = {
                let mut s = crate::sync::lock(&self.state);
                let now = Instant::now();
                let next_lapse = Self::surface(&mut s, now);
                let mut out = Vec::new();
                while out.len() < max.max(1) {
                    let Some(mut m) = s.ready.pop_front() else {
                        break;
                    };
                    m.receive_count += 1;
                    let key = s.next_receipt;
                    s.next_receipt += 1;
                    out.push(Delivery {
                        job_id: m.job_id.clone(),
                        receipt: key.to_string(),
                        receive_count: m.receive_count,
                    });
                    s.hidden.insert(key, (now + self.visibility, m));
                }
                if !out.is_empty() {
                    return Ok(out);
                }
                next_lapse
            };
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let until = next_lapse.map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn ack(&self, delivery: &Delivery) -> QueueResult<()> {
        self.calls.count(Call::QueueDelete);
        if let Ok(key) = delivery.receipt.parse::<u64>() {
            crate::sync::lock(&self.state).hidden.remove(&key);
        }
        Ok(())
    }

    async fn retry_later(&self, delivery: &Delivery, after: Duration) -> QueueResult<()> {
        self.calls.count(Call::QueueRequeue);
        if let Ok(key) = delivery.receipt.parse::<u64>() {
            let mut s = crate::sync::lock(&self.state);
            if let Some(entry) = s.hidden.get_mut(&key) {
                entry.0 = Instant::now() + after;
            }
        }
        self.notify.notify_one();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Duration = Duration::from_millis(10);

    #[tokio::test]
    async fn a_received_message_is_hidden_until_acknowledged() {
        let q = MemoryQueue::new(Duration::from_secs(60));
        q.send("job_a", None).await.unwrap();
        let got = q.receive(10, SHORT).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            q.receive(10, SHORT).await.unwrap(),
            vec![],
            "hidden while in flight"
        );
        q.ack(&got[0]).await.unwrap();
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_unacknowledged_message_comes_back_after_its_visibility() {
        let q = MemoryQueue::new(Duration::from_secs(30));
        q.send("job_a", None).await.unwrap();
        let first = q.receive(1, SHORT).await.unwrap();
        let again = q.receive(1, Duration::from_secs(31)).await.unwrap();
        assert_eq!(again[0].job_id, "job_a");
        assert_eq!((first[0].receive_count, again[0].receive_count), (1, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_and_retried_messages_wait_their_turn() {
        let q = MemoryQueue::new(Duration::from_secs(30));
        q.send("later", Some(Duration::from_secs(5))).await.unwrap();
        assert!(
            q.receive(1, Duration::from_secs(1))
                .await
                .unwrap()
                .is_empty()
        );
        let got = q.receive(1, Duration::from_secs(10)).await.unwrap();
        assert_eq!(got[0].job_id, "later");
        q.retry_later(&got[0], Duration::from_secs(2))
            .await
            .unwrap();
        assert!(
            q.receive(1, Duration::from_secs(1))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            q.receive(1, Duration::from_secs(5)).await.unwrap()[0].receive_count,
            2
        );
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_on_send() {
        let q = std::sync::Arc::new(MemoryQueue::new(Duration::from_secs(30)));
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.receive(1, Duration::from_secs(30)).await.unwrap() })
        };
        tokio::task::yield_now().await;
        q.send("job_b", None).await.unwrap();
        assert_eq!(waiter.await.unwrap()[0].job_id, "job_b");
    }
}
