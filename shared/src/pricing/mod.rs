//! The pricing port: what one instance costs per hour, quoted at launch and
//! stamped on its runner so cost rollups can multiply it by elapsed time.
//!
//! A quote is best-effort. A missing price never blocks a launch: the port
//! answers `None` rather than an error, and the runner's price stays null.
//! Adapters: [`aws::AwsPricing`] (on-demand from the AWS Pricing API, spot
//! from EC2's spot price history, both cached), [`NoPricing`]
//! (`pricing.enabled: false`), and [`WithOverrides`] (`pricing.overrides`
//! in front of either).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;

pub use crate::domain::cost::{MicroUsd, Price, PriceSource, micro_usd};

pub mod aws;
mod cache;

/// The markets a quote is asked for, as the fleet reports what it launched.
pub const ON_DEMAND: &str = "on-demand";
pub const SPOT: &str = "spot";

#[async_trait]
pub trait Pricing: Send + Sync + 'static {
    /// The hourly price of one Linux instance of `instance_type` in this
    /// deployment's region, in `market` ([`ON_DEMAND`] or [`SPOT`]), and
    /// where it came from. The availability zone matters for spot prices
    /// only. `None` when no price is known; never an error.
    async fn quote(
        &self,
        instance_type: &str,
        market: &str,
        availability_zone: Option<&str>,
    ) -> Option<Price>;
}

/// `pricing.overrides` (instance type → hourly price, for negotiated rates,
/// Savings Plans and offline use) in front of another source: an instance
/// type with an override is priced at it in every market; any other is
/// asked of `inner`.
pub struct WithOverrides {
    overrides: BTreeMap<String, MicroUsd>,
    inner: Arc<dyn Pricing>,
}

impl WithOverrides {
    pub fn new(overrides: BTreeMap<String, MicroUsd>, inner: Arc<dyn Pricing>) -> Self {
        Self { overrides, inner }
    }
}

#[async_trait]
impl Pricing for WithOverrides {
    async fn quote(
        &self,
        instance_type: &str,
        market: &str,
        availability_zone: Option<&str>,
    ) -> Option<Price> {
        match self.overrides.get(instance_type) {
            Some(&micro_usd_per_hour) => Some(Price {
                micro_usd_per_hour,
                source: PriceSource::Override,
            }),
            None => {
                self.inner
                    .quote(instance_type, market, availability_zone)
                    .await
            }
        }
    }
}

/// Prices turned off (`pricing.enabled: false`): every quote is `None`.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPricing;

#[async_trait]
impl Pricing for NoPricing {
    async fn quote(
        &self,
        _instance_type: &str,
        _market: &str,
        _availability_zone: Option<&str>,
    ) -> Option<Price> {
        None
    }
}

/// A market the port knows, parsed from its wire name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Market {
    OnDemand,
    Spot,
}

impl Market {
    pub(crate) fn parse(market: &str) -> Option<Self> {
        match market {
            ON_DEMAND => Some(Self::OnDemand),
            SPOT => Some(Self::Spot),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::OnDemand => ON_DEMAND,
            Self::Spot => SPOT,
        }
    }
}

/// True the first time it is asked, false ever after.
pub(crate) struct FirstTime(AtomicBool);

impl FirstTime {
    pub(crate) const fn new() -> Self {
        Self(AtomicBool::new(false))
    }

    pub(crate) fn take(&self) -> bool {
        !self.0.swap(true, Ordering::Relaxed)
    }
}

/// One WARN per process when a price is first unavailable (missing IAM
/// permission, no route to the Pricing API…); every later one is a debug
/// line, so an install without pricing access is not flooded.
pub(crate) static UNAVAILABLE_WARNING: FirstTime = FirstTime::new();

/// Logs that a quote came back empty, at WARN only the first time.
pub(crate) fn log_unavailable(
    instance_type: &str,
    market: &str,
    availability_zone: Option<&str>,
    why: &str,
) {
    if UNAVAILABLE_WARNING.take() {
        tracing::warn!(
            instance_type,
            market,
            availability_zone,
            error = why,
            "price unavailable: runners are recorded without a price (needs pricing:GetProducts and \
             ec2:DescribeSpotPriceHistory; set pricing.enabled: false to stop asking); later misses log at debug"
        );
    } else {
        tracing::debug!(
            instance_type,
            market,
            availability_zone,
            error = why,
            "price unavailable"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_pricing_never_quotes() {
        assert_eq!(NoPricing.quote("m7g.large", ON_DEMAND, None).await, None);
        assert_eq!(
            NoPricing.quote("m7g.large", SPOT, Some("us-east-1a")).await,
            None
        );
    }

    /// Answers every quote with one price, counting the quotes it was asked.
    struct Fixed(Price, std::sync::atomic::AtomicUsize);

    #[async_trait]
    impl Pricing for Fixed {
        async fn quote(&self, _: &str, _: &str, _: Option<&str>) -> Option<Price> {
            self.1.fetch_add(1, Ordering::Relaxed);
            Some(self.0)
        }
    }

    #[tokio::test]
    async fn an_override_wins_in_every_market_and_other_types_ask_the_source() {
        let api = Price {
            micro_usd_per_hour: 81_600,
            source: PriceSource::PricingApi,
        };
        let inner = Arc::new(Fixed(api, Default::default()));
        let priced = WithOverrides::new(
            BTreeMap::from([("m7g.large".to_string(), 50_000)]),
            inner.clone(),
        );
        let negotiated = Price {
            micro_usd_per_hour: 50_000,
            source: PriceSource::Override,
        };
        assert_eq!(
            priced.quote("m7g.large", ON_DEMAND, None).await,
            Some(negotiated)
        );
        assert_eq!(
            priced.quote("m7g.large", SPOT, Some("us-east-1a")).await,
            Some(negotiated)
        );
        assert_eq!(
            inner.1.load(Ordering::Relaxed),
            0,
            "an override asks nothing"
        );
        assert_eq!(priced.quote("c7g.large", ON_DEMAND, None).await, Some(api));
        let offline = WithOverrides::new(BTreeMap::new(), Arc::new(NoPricing));
        assert_eq!(
            offline.quote("m7g.large", ON_DEMAND, None).await,
            None,
            "a missing price stays missing"
        );
    }

    #[test]
    fn markets_parse_from_their_wire_names_only() {
        assert_eq!(Market::parse("on-demand"), Some(Market::OnDemand));
        assert_eq!(Market::parse("spot"), Some(Market::Spot));
        assert_eq!(
            Market::parse("spot-fallback"),
            None,
            "a pool's policy, not a market an instance runs in"
        );
        assert_eq!(Market::parse("Spot"), None);
        assert_eq!(Market::OnDemand.as_str(), ON_DEMAND);
    }

    #[test]
    fn first_time_is_true_once() {
        let first = FirstTime::new();
        assert!(first.take());
        assert!(!first.take());
        assert!(!first.take());
    }
}
