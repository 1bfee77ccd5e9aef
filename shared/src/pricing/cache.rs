//! The quote cache: one entry per (instance type, market, availability
//! zone), kept for the configured TTL. A failed lookup is cached too, for a
//! shorter time, so a broken or forbidden Pricing API is asked again now and
//! then rather than at every launch; concurrent misses for one key wait for
//! a single fetch.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;

use super::{Market, log_unavailable};
use crate::clock::Clock;
use crate::domain::Time;

/// The longest a failed lookup is remembered: long enough not to hammer a
/// broken API at every launch, short enough that a fixed permission is
/// picked up within minutes.
pub(crate) const FAILURE_TTL_CAP: Duration = Duration::from_secs(10 * 60);

/// What a quote depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct QuoteKey {
    pub instance_type: String,
    pub market: Market,
    /// Always `None` for on-demand: its price is the same in every zone of a
    /// region, so one entry serves them all.
    pub availability_zone: Option<String>,
}

impl QuoteKey {
    pub(crate) fn new(
        instance_type: &str,
        market: Market,
        availability_zone: Option<&str>,
    ) -> Self {
        let availability_zone = match market {
            Market::OnDemand => None,
            Market::Spot => availability_zone
                .filter(|az| !az.is_empty())
                .map(str::to_owned),
        };
        Self {
            instance_type: instance_type.to_owned(),
            market,
            availability_zone,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    price: Option<f64>,
    expires_at: Time,
}

/// A slot is filled once, by whichever caller gets there first; the others
/// await the same fill. An expired slot is replaced by a fresh one.
type Slot = Arc<OnceCell<Entry>>;

pub(crate) struct PriceCache {
    ttl: Duration,
    failure_ttl: Duration,
    clock: Arc<dyn Clock>,
    slots: Mutex<HashMap<QuoteKey, Slot>>,
}

impl PriceCache {
    pub(crate) fn new(ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            ttl,
            failure_ttl: ttl.min(FAILURE_TTL_CAP),
            clock,
            slots: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn failure_ttl(&self) -> Duration {
        self.failure_ttl
    }

    /// The injected clock's now, for lookups that ask "as of now".
    pub(crate) fn now(&self) -> Time {
        self.clock.now()
    }

    /// The cached quote for `key`, or the result of `fetch` (run at most once
    /// across concurrent callers). A fetch error, or a price that is not a
    /// positive finite number, is cached and answered as `None`.
    pub(crate) async fn get_or_fetch<F, Fut>(&self, key: &QuoteKey, fetch: F) -> Option<f64>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = anyhow::Result<f64>>,
    {
        let slot = self.slot(key);
        let entry = slot
            .get_or_init(|| async {
                let result = fetch().await.and_then(|price| {
                    if price.is_finite() && price > 0.0 {
                        Ok(price)
                    } else {
                        Err(anyhow::anyhow!("not a usable price: {price}"))
                    }
                });
                let now = self.clock.now();
                match result {
                    Ok(price) => {
                        tracing::debug!(
                            instance_type = %key.instance_type,
                            market = key.market.as_str(),
                            availability_zone = key.availability_zone.as_deref(),
                            price,
                            "price quoted"
                        );
                        Entry {
                            price: Some(price),
                            expires_at: later(now, self.ttl),
                        }
                    }
                    Err(error) => {
                        log_unavailable(
                            &key.instance_type,
                            key.market.as_str(),
                            key.availability_zone.as_deref(),
                            &format!("{error:#}"),
                        );
                        Entry {
                            price: None,
                            expires_at: later(now, self.failure_ttl),
                        }
                    }
                }
            })
            .await;
        entry.price
    }

    /// The slot to read or fill: the current one while it is being filled or
    /// still fresh, else a new empty one.
    fn slot(&self, key: &QuoteKey) -> Slot {
        let now = self.clock.now();
        let mut slots = crate::sync::lock(&self.slots);
        if let Some(slot) = slots.get(key) {
            match slot.get() {
                None => return slot.clone(),
                Some(entry) if now < entry.expires_at => return slot.clone(),
                Some(_) => {}
            }
        }
        let slot = Slot::default();
        slots.insert(key.clone(), slot.clone());
        slot
    }
}

fn later(now: Time, by: Duration) -> Time {
    chrono::TimeDelta::from_std(by)
        .ok()
        .and_then(|by| now.checked_add_signed(by))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::clock::ManualClock;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    struct Fixture {
        clock: Arc<ManualClock>,
        cache: PriceCache,
        fetches: AtomicUsize,
    }

    impl Fixture {
        fn new(ttl: Duration) -> Self {
            let clock = Arc::new(ManualClock::new("2025-01-01T00:00:00Z".parse().unwrap()));
            Self {
                cache: PriceCache::new(ttl, clock.clone()),
                clock,
                fetches: AtomicUsize::new(0),
            }
        }

        async fn quote(&self, key: &QuoteKey, answer: anyhow::Result<f64>) -> Option<f64> {
            self.cache
                .get_or_fetch(key, || async {
                    self.fetches.fetch_add(1, Ordering::SeqCst);
                    answer
                })
                .await
        }

        fn fetches(&self) -> usize {
            self.fetches.load(Ordering::SeqCst)
        }
    }

    fn on_demand(instance_type: &str) -> QuoteKey {
        QuoteKey::new(instance_type, Market::OnDemand, None)
    }

    fn broken() -> anyhow::Result<f64> {
        Err(anyhow::anyhow!(
            "AccessDeniedException: not authorized to perform pricing:GetProducts"
        ))
    }

    #[tokio::test]
    async fn a_price_is_reused_until_its_ttl_has_passed() {
        let f = Fixture::new(DAY);
        let key = on_demand("m7g.large");
        assert_eq!(f.quote(&key, Ok(0.0816)).await, Some(0.0816));

        f.clock.advance(DAY - Duration::from_secs(1));
        assert_eq!(
            f.quote(&key, Ok(9.0)).await,
            Some(0.0816),
            "still fresh: the cached price"
        );
        assert_eq!(f.fetches(), 1);

        f.clock.advance(Duration::from_secs(1));
        assert_eq!(
            f.quote(&key, Ok(0.09)).await,
            Some(0.09),
            "expired: fetched again"
        );
        assert_eq!(f.fetches(), 2);
    }

    #[tokio::test]
    async fn a_failure_is_cached_for_the_shorter_failure_ttl() {
        let f = Fixture::new(DAY);
        assert_eq!(f.cache.failure_ttl(), FAILURE_TTL_CAP);
        let key = on_demand("m7g.large");
        assert_eq!(f.quote(&key, broken()).await, None);

        f.clock.advance(FAILURE_TTL_CAP - Duration::from_secs(1));
        assert_eq!(
            f.quote(&key, Ok(0.0816)).await,
            None,
            "the failure is remembered"
        );
        assert_eq!(f.fetches(), 1);

        f.clock.advance(Duration::from_secs(1));
        assert_eq!(
            f.quote(&key, Ok(0.0816)).await,
            Some(0.0816),
            "asked again once the failure expired"
        );
        assert_eq!(f.fetches(), 2);
    }

    #[test]
    fn a_ttl_shorter_than_the_cap_bounds_failures_too() {
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        let cache = PriceCache::new(Duration::from_secs(60), clock);
        assert_eq!(cache.failure_ttl(), Duration::from_secs(60));
    }

    #[tokio::test]
    async fn a_price_that_is_not_positive_and_finite_counts_as_unavailable() {
        let f = Fixture::new(DAY);
        for (i, nonsense) in [0.0, -1.0, f64::NAN, f64::INFINITY].into_iter().enumerate() {
            let key = on_demand(&format!("t{i}.large"));
            assert_eq!(f.quote(&key, Ok(nonsense)).await, None, "{nonsense}");
        }
    }

    #[tokio::test]
    async fn on_demand_ignores_the_zone_and_spot_is_kept_per_zone() {
        let f = Fixture::new(DAY);
        let a = QuoteKey::new("m7g.large", Market::OnDemand, Some("us-east-1a"));
        let b = QuoteKey::new("m7g.large", Market::OnDemand, Some("us-east-1b"));
        assert_eq!(a, b);
        f.quote(&a, Ok(0.0816)).await;
        assert_eq!(f.quote(&b, Ok(1.0)).await, Some(0.0816));
        assert_eq!(f.fetches(), 1);

        let spot_a = QuoteKey::new("m7g.large", Market::Spot, Some("us-east-1a"));
        let spot_b = QuoteKey::new("m7g.large", Market::Spot, Some("us-east-1b"));
        assert_eq!(f.quote(&spot_a, Ok(0.031)).await, Some(0.031));
        assert_eq!(f.quote(&spot_b, Ok(0.029)).await, Some(0.029));
        assert_eq!(f.quote(&spot_a, Ok(1.0)).await, Some(0.031));
        assert_eq!(
            f.fetches(),
            3,
            "one fetch per spot zone, none for the repeat"
        );
        assert_eq!(
            QuoteKey::new("m7g.large", Market::Spot, Some("")),
            QuoteKey::new("m7g.large", Market::Spot, None)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_misses_for_one_key_share_one_fetch() {
        let f = Fixture::new(DAY);
        let key = on_demand("m7g.large");
        let quotes = (0..10).map(|_| {
            f.cache.get_or_fetch(&key, || async {
                f.fetches.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(0.0816)
            })
        });
        let prices = futures::future::join_all(quotes).await;
        assert!(prices.iter().all(|p| *p == Some(0.0816)), "{prices:?}");
        assert_eq!(f.fetches(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_fetch_does_not_wedge_its_key() {
        let f = Fixture::new(DAY);
        let key = on_demand("m7g.large");
        let abandoned = tokio::time::timeout(
            Duration::from_millis(10),
            f.cache.get_or_fetch(&key, || async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(1.0)
            }),
        )
        .await;
        assert!(abandoned.is_err(), "the first caller gave up");
        assert_eq!(
            f.quote(&key, Ok(0.0816)).await,
            Some(0.0816),
            "the next caller fetches"
        );
    }
}
