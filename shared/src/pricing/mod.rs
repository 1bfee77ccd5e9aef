//! The pricing port: what one instance costs per hour, quoted at launch and
//! stamped on its runner so cost rollups can multiply it by elapsed time.
//!
//! A quote is best-effort. A missing price never blocks a launch: the port
//! answers `None` rather than an error, and the runner's price stays null.
//! Adapters: [`aws::AwsPricing`] (on-demand from the AWS Pricing API, spot
//! from EC2's spot price history, both cached) and [`NoPricing`]
//! (`pricing.enabled: false`).

use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;

pub mod aws;
mod cache;

/// The markets a quote is asked for, as the fleet reports what it launched.
pub const ON_DEMAND: &str = "on-demand";
pub const SPOT: &str = "spot";

#[async_trait]
pub trait Pricing: Send + Sync + 'static {
    /// USD per hour for one Linux instance of `instance_type` in this
    /// deployment's region, in `market` ([`ON_DEMAND`] or [`SPOT`]). The
    /// availability zone matters for spot prices only. `None` when no price
    /// is known; never an error.
    async fn quote(
        &self,
        instance_type: &str,
        market: &str,
        availability_zone: Option<&str>,
    ) -> Option<f64>;
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
    ) -> Option<f64> {
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
