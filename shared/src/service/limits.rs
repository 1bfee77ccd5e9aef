//! Fixed-window counters in the store, so a limit holds across every
//! instance of pacer (several Lambdas, or one process restarted): the
//! sign-in rate limit, and "once per window" for audit entries that outside
//! callers could otherwise repeat without bound.

use std::time::Duration;

use super::{Ports, ServiceResult};
use crate::domain::Time;

/// One window of a fixed length: windows start at multiples of the length
/// since the Unix epoch, so every instance agrees on where they begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Time,
    pub end: Time,
}

impl Window {
    /// The window of `length` that holds `now`.
    pub fn at(now: Time, length: Duration) -> Self {
        let micros = i64::try_from(length.as_micros()).unwrap_or(i64::MAX).max(1);
        let now_us = now.timestamp_micros();
        let start = chrono::DateTime::from_timestamp_micros(now_us - now_us.rem_euclid(micros))
            .unwrap_or(now);
        let end = start + chrono::Duration::from_std(length).unwrap_or(chrono::Duration::MAX);
        Self { start, end }
    }

    /// How long until the next window, at least a second (what a
    /// `Retry-After` says).
    pub fn remaining(&self, now: Time) -> Duration {
        (self.end - now)
            .to_std()
            .unwrap_or_default()
            .max(Duration::from_secs(1))
    }
}

/// Counts one hit on `key` in the window of `length` holding now; returns
/// the count, this hit included, and the window.
pub async fn hit(ports: &Ports, key: &str, length: Duration) -> ServiceResult<(u64, Window)> {
    let window = Window::at(ports.clock.now(), length);
    let count = ports
        .store
        .hit_counter(key, window.start, window.end)
        .await?;
    Ok((count, window))
}

/// Claims `key` for good (until `until`, when it is forgotten): true for the
/// one caller that claims it first, on every instance at once — the store's
/// counter is atomic. For values that work once, such as an SSO state.
pub async fn claim_once(ports: &Ports, key: &str, until: Time) -> ServiceResult<bool> {
    // One window for the key's whole life: a claim near a window boundary
    // must not land in a fresh count.
    let forever = chrono::DateTime::UNIX_EPOCH;
    Ok(ports.store.hit_counter(key, forever, until).await? == 1)
}

/// Whether this is the first hit on `key` in its window of `length`: for
/// doing something (say, an audit entry) once per window however often
/// its cause repeats.
pub async fn first_in_window(ports: &Ports, key: &str, length: Duration) -> ServiceResult<bool> {
    Ok(hit(ports, key, length).await?.0 == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_start_at_multiples_of_their_length() {
        let at = |s: i64| chrono::DateTime::from_timestamp(s, 0).unwrap();
        let w = Window::at(at(3_725), Duration::from_secs(3_600));
        assert_eq!((w.start, w.end), (at(3_600), at(7_200)));
        assert_eq!(w.remaining(at(3_725)), Duration::from_secs(3_475));
        assert_eq!(
            w.remaining(at(7_200)),
            Duration::from_secs(1),
            "never less than a second"
        );
        assert_eq!(
            Window::at(at(7_200), Duration::from_secs(3_600)).start,
            at(7_200)
        );
    }
}
