//! The clock port: every "now" in pacer comes from here, so deadlines and
//! expiries are testable without sleeping.

use std::sync::Mutex;

use crate::domain::Time;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Time;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Time {
        chrono::Utc::now()
    }
}

/// A clock that moves only when told to; a test double like any adapter.
#[derive(Debug)]
pub struct ManualClock(Mutex<Time>);

impl ManualClock {
    pub fn new(start: Time) -> Self {
        Self(Mutex::new(start))
    }

    pub fn advance(&self, by: std::time::Duration) {
        let mut now = crate::sync::lock(&self.0);
        *now += chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Time {
        *crate::sync::lock(&self.0)
    }
}
