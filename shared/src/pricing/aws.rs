//! The AWS pricing adapter: on-demand rates from the AWS Pricing API
//! (`GetProducts`), spot rates from EC2's spot price history
//! (`DescribeSpotPriceHistory`), each cached per (type, market, zone).
//!
//! The Pricing API answers only in a few regions (us-east-1, eu-central-1,
//! ap-south-1) whatever region the instances run in, so its client is always
//! built for [`PRICING_API_REGION`] (see [`pricing_client`]); the region
//! being priced travels as the `regionCode` filter. IAM needs
//! `pricing:GetProducts` and `ec2:DescribeSpotPriceHistory`; without them
//! every quote is `None` and one WARN says so.
//!
//! It prices Linux, shared tenancy, no preinstalled software: what pacer's
//! runners are. It ignores EBS, data transfer and spot-price drift after
//! launch, so a quote is an estimate, never a bill.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use async_trait::async_trait;
use aws_sdk_ec2::types::{InstanceType, SpotPrice};
use aws_sdk_pricing::types::{Filter, FilterType};
use serde::Deserialize;
use tracing::instrument;

use super::cache::{PriceCache, QuoteKey};
use super::{Market, Price, PriceSource, Pricing, log_unavailable, micro_usd};
use crate::clock::Clock;

/// The Pricing SDK this adapter is built against, so callers construct its
/// client with exactly the same version.
pub use aws_sdk_pricing as sdk;

/// Where the Pricing API client is pointed, whatever `aws.region` says: the
/// endpoint operators open (`api.pricing.us-east-1.amazonaws.com`).
pub const PRICING_API_REGION: &str = "us-east-1";

/// The spot product pacer's runners are (Linux in a VPC).
const SPOT_PRODUCT: &str = "Linux/UNIX";

/// Prices in effect now come back as one row per zone; a region has at most
/// a handful, so one small page holds them.
const SPOT_PAGE: i32 = 20;

/// `GetProducts` with every filter set matches one product; a few spare
/// rows let a surprising answer be noticed rather than silently cut.
const PRODUCTS_PAGE: i32 = 10;

/// How long one lookup may take, SDK retries included, before the quote is
/// given up (and the failure cached): a launch never waits longer on a price.
const FETCH_TIMEOUT: Duration = Duration::from_secs(20);

/// A Pricing API client for [`PRICING_API_REGION`], from the deployment's
/// SDK configuration: its credentials, retry and timeout settings, and its
/// endpoint override (`aws.endpoint_url`, or `AWS_ENDPOINT_URL_PRICING`)
/// are kept; only the region is replaced.
pub fn pricing_client(aws: &aws_config::SdkConfig) -> aws_sdk_pricing::Client {
    let config = aws_sdk_pricing::config::Builder::from(aws)
        .region(aws_sdk_pricing::config::Region::new(PRICING_API_REGION))
        .build();
    aws_sdk_pricing::Client::from_conf(config)
}

/// How many AWS requests the adapter has made (cache misses only), for the
/// per-job call counts `make bench` reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PricingCalls {
    pub get_products: u64,
    pub describe_spot_price_history: u64,
}

impl PricingCalls {
    pub fn total(&self) -> u64 {
        self.get_products + self.describe_spot_price_history
    }
}

pub struct AwsPricing {
    pricing: aws_sdk_pricing::Client,
    ec2: aws_sdk_ec2::Client,
    /// The region being priced (`aws.region`), not the Pricing API's own.
    region: String,
    cache: PriceCache,
    get_products: AtomicU64,
    describe_spot_price_history: AtomicU64,
}

impl AwsPricing {
    /// `pricing_client` must be built for a region the Pricing API answers
    /// in (use [`pricing_client`]); `region` is where instances run.
    pub fn new(
        pricing_client: aws_sdk_pricing::Client,
        ec2_client: aws_sdk_ec2::Client,
        region: String,
        cache_ttl: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            pricing: pricing_client,
            ec2: ec2_client,
            region,
            cache: PriceCache::new(cache_ttl, clock),
            get_products: AtomicU64::new(0),
            describe_spot_price_history: AtomicU64::new(0),
        }
    }

    /// Both clients from the deployment's SDK configuration; prices its
    /// region.
    pub fn from_sdk_config(
        aws: &aws_config::SdkConfig,
        cache_ttl: Duration,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let region = aws
            .region()
            .context("pricing needs aws.region")?
            .to_string();
        Ok(Self::new(
            pricing_client(aws),
            aws_sdk_ec2::Client::new(aws),
            region,
            cache_ttl,
            clock,
        ))
    }

    /// Requests made so far.
    pub fn calls(&self) -> PricingCalls {
        PricingCalls {
            get_products: self.get_products.load(Ordering::Relaxed),
            describe_spot_price_history: self.describe_spot_price_history.load(Ordering::Relaxed),
        }
    }

    /// How long a failed lookup is remembered before it is tried again.
    pub fn failure_ttl(&self) -> Duration {
        self.cache.failure_ttl()
    }

    async fn fetch(&self, key: &QuoteKey) -> anyhow::Result<f64> {
        let lookup = async {
            match key.market {
                Market::OnDemand => self.on_demand(&key.instance_type).await,
                Market::Spot => {
                    self.spot(&key.instance_type, key.availability_zone.as_deref())
                        .await
                }
            }
        };
        tokio::time::timeout(FETCH_TIMEOUT, lookup)
            .await
            .unwrap_or_else(|_| Err(anyhow!("no answer within {FETCH_TIMEOUT:?}")))
    }

    #[instrument(skip(self), fields(region = %self.region))]
    async fn on_demand(&self, instance_type: &str) -> anyhow::Result<f64> {
        self.get_products.fetch_add(1, Ordering::Relaxed);
        let filters = [
            ("instanceType", instance_type),
            ("regionCode", self.region.as_str()),
            ("operatingSystem", "Linux"),
            ("tenancy", "Shared"),
            ("preInstalledSw", "NA"),
            ("licenseModel", "No License required"),
            // Without these two, $0 capacity-reservation rows and Capacity
            // Block rows match the same type too.
            ("capacitystatus", "Used"),
            ("marketoption", "OnDemand"),
        ]
        .into_iter()
        .map(|(field, value)| {
            Filter::builder()
                .r#type(FilterType::TermMatch)
                .field(field)
                .value(value)
                .build()
        })
        .collect::<Result<Vec<_>, _>>()
        .context("building GetProducts filters")?;
        let answer = self
            .pricing
            .get_products()
            .service_code("AmazonEC2")
            .format_version("aws_v1")
            .set_filters(Some(filters))
            .max_results(PRODUCTS_PAGE)
            .send()
            .await
            .map_err(|e| sdk_error(&e))
            .context("pricing:GetProducts")?;
        on_demand_price(answer.price_list(), instance_type)
            .with_context(|| format!("on-demand price of {instance_type} in {}", self.region))
    }

    #[instrument(skip(self), fields(region = %self.region))]
    async fn spot(
        &self,
        instance_type: &str,
        availability_zone: Option<&str>,
    ) -> anyhow::Result<f64> {
        self.describe_spot_price_history
            .fetch_add(1, Ordering::Relaxed);
        // From now on: the price in effect now, per zone (with its older
        // timestamp), plus any change since.
        let now = aws_sdk_ec2::primitives::DateTime::from_secs(self.cache.now().timestamp());
        let answer = self
            .ec2
            .describe_spot_price_history()
            .instance_types(InstanceType::from(instance_type))
            .product_descriptions(SPOT_PRODUCT)
            .set_availability_zone(availability_zone.map(str::to_owned))
            .start_time(now)
            .max_results(SPOT_PAGE)
            .send()
            .await
            .map_err(|e| sdk_error(&e))
            .context("ec2:DescribeSpotPriceHistory")?;
        newest_spot_price(
            answer.spot_price_history(),
            instance_type,
            availability_zone,
        )
        .with_context(|| {
            format!(
                "spot price of {instance_type} in {}",
                availability_zone.unwrap_or(&self.region)
            )
        })
    }
}

/// An SDK error and its causes, as text fit for a log line.
fn sdk_error(err: &dyn std::error::Error) -> anyhow::Error {
    anyhow!(crate::error_text::display_chain(err))
}

#[async_trait]
impl Pricing for AwsPricing {
    async fn quote(
        &self,
        instance_type: &str,
        market: &str,
        availability_zone: Option<&str>,
    ) -> Option<Price> {
        let Some(parsed) = Market::parse(market) else {
            log_unavailable(
                instance_type,
                market,
                availability_zone,
                "not a market pacer prices (on-demand | spot)",
            );
            return None;
        };
        let key = QuoteKey::new(instance_type, parsed, availability_zone);
        let usd = self.cache.get_or_fetch(&key, || self.fetch(&key)).await?;
        let source = match parsed {
            Market::OnDemand => PriceSource::PricingApi,
            Market::Spot => PriceSource::SpotHistory,
        };
        Some(Price {
            micro_usd_per_hour: micro_usd(usd)?,
            source,
        })
    }
}

// ------------------------------------------------------------------ parsing

/// One element of `GetProducts`' `PriceList`, as far as pacer reads it.
/// Unknown fields are ignored: AWS adds attributes over time.
#[derive(Debug, Deserialize)]
struct PriceListItem {
    #[serde(default)]
    product: Option<Product>,
    terms: Terms,
}

#[derive(Debug, Deserialize)]
struct Product {
    #[serde(default)]
    attributes: Attributes,
}

#[derive(Debug, Default, Deserialize)]
struct Attributes {
    #[serde(rename = "instanceType")]
    instance_type: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Terms {
    /// Keyed by `<sku>.<offerTermCode>`. `Reserved` terms sit beside it and
    /// are not read.
    #[serde(rename = "OnDemand", default)]
    on_demand: BTreeMap<String, Term>,
}

#[derive(Debug, Deserialize)]
struct Term {
    /// Keyed by rate code, `<sku>.<offerTermCode>.<rateCode>`.
    #[serde(rename = "priceDimensions", default)]
    price_dimensions: BTreeMap<String, Dimension>,
}

#[derive(Debug, Deserialize)]
struct Dimension {
    unit: Option<String>,
    /// Currency → amount as a decimal string, e.g. `{"USD": "0.0816000000"}`.
    #[serde(rename = "pricePerUnit", default)]
    price_per_unit: BTreeMap<String, serde_json::Value>,
}

/// The hourly on-demand USD rate among a `GetProducts` answer's items: the
/// first item that has one (with the filters pacer sends there is one).
pub(crate) fn on_demand_price(price_list: &[String], instance_type: &str) -> anyhow::Result<f64> {
    let mut problems = Vec::new();
    for item in price_list {
        match on_demand_item_price(item, instance_type) {
            Ok(price) => return Ok(price),
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    if problems.is_empty() {
        bail!("no product matches (not offered in this region?)");
    }
    bail!("no usable on-demand price: {}", problems.join("; "))
}

/// The hourly on-demand USD rate in one `PriceList` item (a JSON document
/// in a string): `terms.OnDemand.*.priceDimensions.*.pricePerUnit.USD`,
/// from a dimension billed in hours.
pub(crate) fn on_demand_item_price(item: &str, instance_type: &str) -> anyhow::Result<f64> {
    let item: PriceListItem = serde_json::from_str(item).context("not a price list item")?;
    let found = item
        .product
        .as_ref()
        .and_then(|p| p.attributes.instance_type.as_deref());
    if let Some(found) = found.filter(|found| *found != instance_type) {
        bail!("the product is {found}, not {instance_type}");
    }
    if item.terms.on_demand.is_empty() {
        bail!("no on-demand term");
    }
    let mut problems = Vec::new();
    for dimension in item
        .terms
        .on_demand
        .values()
        .flat_map(|term| term.price_dimensions.values())
    {
        if let Some(unit) = dimension
            .unit
            .as_deref()
            .filter(|unit| !unit.eq_ignore_ascii_case("Hrs"))
        {
            problems.push(format!("priced per {unit:?}, not per hour"));
            continue;
        }
        match usd(dimension) {
            Ok(price) => return Ok(price),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if problems.is_empty() {
        bail!("the on-demand term has no price dimension");
    }
    bail!("{}", problems.join("; "))
}

fn usd(dimension: &Dimension) -> anyhow::Result<f64> {
    let raw = dimension
        .price_per_unit
        .get("USD")
        .context("no USD price")?;
    let price = match raw {
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
        serde_json::Value::Number(n) => n.as_f64(),
        _ => None,
    };
    match price {
        Some(p) if p.is_finite() && p > 0.0 => Ok(p),
        Some(0.0) => bail!("the USD price is zero"),
        _ => bail!("the USD price is not a positive number: {raw}"),
    }
}

/// The newest spot price for the type (and zone, when given) in a
/// `DescribeSpotPriceHistory` answer. Rows of other types or zones are
/// skipped (not every implementation applies the request's filters).
/// Between rows of the same time, the higher price wins: an estimate had
/// better not undercount.
pub(crate) fn newest_spot_price(
    history: &[SpotPrice],
    instance_type: &str,
    availability_zone: Option<&str>,
) -> anyhow::Result<f64> {
    let mut rows = 0;
    let mut best: Option<((i64, u32), f64)> = None;
    for row in history {
        if row
            .instance_type()
            .is_some_and(|t| t.as_str() != instance_type)
        {
            continue;
        }
        if availability_zone
            .is_some_and(|az| row.availability_zone().is_some_and(|found| found != az))
        {
            continue;
        }
        rows += 1;
        let price = row.spot_price().and_then(|p| p.trim().parse::<f64>().ok());
        let Some(price) = price.filter(|p| p.is_finite() && *p > 0.0) else {
            continue;
        };
        let at = row
            .timestamp()
            .map_or((i64::MIN, 0), |t| (t.secs(), t.subsec_nanos()));
        if best.is_none_or(|(best_at, best_price)| (at, price) > (best_at, best_price)) {
            best = Some((at, price));
        }
    }
    match best {
        Some((_, price)) => Ok(price),
        None if rows == 0 => bail!("no spot price history"),
        None => bail!("no usable spot price in {rows} rows"),
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_ec2::primitives::DateTime;

    use super::*;

    /// One `PriceList` element for a Linux m7g.large in us-east-1, with its
    /// on-demand term and two reserved ones. Modelled on the structure AWS
    /// documents (not captured from AWS: no account is reachable here);
    /// `fixtures/README.md` says what is real in it and how to replace it
    /// with a captured item. pacer reads `product.attributes.instanceType`
    /// and `terms.OnDemand.*.priceDimensions.*.{unit, pricePerUnit.USD}`.
    const M7G_LARGE: &str = include_str!("fixtures/get_products_m7g_large_us_east_1.json");

    /// The fixture as the API sends it: a compact JSON document in a string.
    fn wire(item: &str) -> String {
        serde_json::to_string(&serde_json::from_str::<serde_json::Value>(item).unwrap()).unwrap()
    }

    fn with_on_demand_usd(usd: serde_json::Value) -> String {
        let mut item: serde_json::Value = serde_json::from_str(M7G_LARGE).unwrap();
        item["terms"]["OnDemand"]["EXAMPLE7GLARGE01.JRTCKXETXF"]["priceDimensions"]["EXAMPLE7GLARGE01.JRTCKXETXF.6YS6EN2CT7"]
            ["pricePerUnit"]["USD"] = usd;
        item.to_string()
    }

    #[test]
    fn the_on_demand_rate_is_read_from_a_real_shaped_item() {
        assert_eq!(
            on_demand_item_price(&wire(M7G_LARGE), "m7g.large").unwrap(),
            0.0816
        );
        assert_eq!(
            on_demand_price(&[wire(M7G_LARGE)], "m7g.large").unwrap(),
            0.0816
        );
    }

    #[test]
    fn reserved_terms_beside_the_on_demand_one_are_ignored() {
        // The fixture's reserved rates (0.0514/h; 0.0245/h plus a 215 upfront
        // fee) are all cheaper: only the on-demand term may count.
        let price = on_demand_item_price(M7G_LARGE, "m7g.large").unwrap();
        assert_eq!(price, 0.0816);

        let mut only_reserved: serde_json::Value = serde_json::from_str(M7G_LARGE).unwrap();
        only_reserved["terms"]
            .as_object_mut()
            .unwrap()
            .remove("OnDemand");
        let err = on_demand_item_price(&only_reserved.to_string(), "m7g.large").unwrap_err();
        assert!(err.to_string().contains("no on-demand term"), "{err:#}");
    }

    #[test]
    fn a_missing_zero_or_garbage_price_is_unavailable() {
        let mut no_usd: serde_json::Value = serde_json::from_str(M7G_LARGE).unwrap();
        no_usd["terms"]["OnDemand"]["EXAMPLE7GLARGE01.JRTCKXETXF"]["priceDimensions"]["EXAMPLE7GLARGE01.JRTCKXETXF.6YS6EN2CT7"]
            ["pricePerUnit"] = serde_json::json!({"CNY": "0.5"});
        let cases = [
            ("no USD", no_usd.to_string()),
            ("zero", with_on_demand_usd("0.0000000000".into())),
            ("garbage", with_on_demand_usd("call us".into())),
            ("negative", with_on_demand_usd("-0.08".into())),
            ("not finite", with_on_demand_usd("NaN".into())),
            ("null", with_on_demand_usd(serde_json::Value::Null)),
            ("not JSON", "{\"product\":".to_owned()),
            (
                "no terms",
                r#"{"product":{"attributes":{"instanceType":"m7g.large"}}}"#.to_owned(),
            ),
            (
                "no dimensions",
                r#"{"terms":{"OnDemand":{"A.B":{"priceDimensions":{}}}}}"#.to_owned(),
            ),
        ];
        for (what, item) in cases {
            assert!(on_demand_price(&[item], "m7g.large").is_err(), "{what}");
        }
        assert!(
            on_demand_price(&[], "m7g.large")
                .unwrap_err()
                .to_string()
                .contains("no product matches")
        );
    }

    #[test]
    fn an_item_for_another_instance_type_is_refused() {
        let err = on_demand_item_price(M7G_LARGE, "m6g.large").unwrap_err();
        assert!(
            err.to_string().contains("m7g.large, not m6g.large"),
            "{err:#}"
        );
    }

    #[test]
    fn a_dimension_not_billed_per_hour_is_skipped() {
        let item = r#"{"terms":{"OnDemand":{"S.T":{"priceDimensions":{
            "S.T.A":{"unit":"Quantity","pricePerUnit":{"USD":"215"}},
            "S.T.B":{"unit":"Hrs","pricePerUnit":{"USD":"0.0816"}}}}}}}"#;
        assert_eq!(on_demand_item_price(item, "m7g.large").unwrap(), 0.0816);
    }

    #[test]
    fn the_first_item_with_a_usable_price_wins() {
        let items = [with_on_demand_usd("0".into()), wire(M7G_LARGE)];
        assert_eq!(on_demand_price(&items, "m7g.large").unwrap(), 0.0816);
    }

    fn spot(az: &str, price: &str, secs: i64) -> SpotPrice {
        SpotPrice::builder()
            .instance_type(InstanceType::from("m7g.large"))
            .availability_zone(az)
            .spot_price(price)
            .timestamp(DateTime::from_secs(secs))
            .build()
    }

    #[test]
    fn the_newest_spot_price_of_the_zone_is_taken() {
        let history = [
            spot("us-east-1a", "0.0300", 100),
            spot("us-east-1a", "0.0310", 200),
            spot("us-east-1b", "0.0500", 300),
        ];
        assert_eq!(
            newest_spot_price(&history, "m7g.large", Some("us-east-1a")).unwrap(),
            0.031
        );
        assert_eq!(
            newest_spot_price(&history, "m7g.large", None).unwrap(),
            0.05,
            "no zone: newest anywhere"
        );
    }

    #[test]
    fn spot_rows_of_other_types_or_zones_or_without_a_price_do_not_count() {
        let history = [
            spot("us-east-1b", "0.05", 300),
            spot("us-east-1a", "n/a", 400),
        ];
        assert!(newest_spot_price(&history, "m7g.large", Some("us-east-1a")).is_err());
        let other_type = newest_spot_price(&history, "m6g.large", None).unwrap_err();
        assert!(
            other_type.to_string().contains("no spot price history"),
            "{other_type:#}"
        );
        assert!(newest_spot_price(&[], "m7g.large", None).is_err());
    }

    #[test]
    fn equal_times_resolve_to_the_higher_spot_price() {
        let history = [
            spot("us-east-1a", "0.02", 100),
            spot("us-east-1b", "0.03", 100),
        ];
        assert_eq!(
            newest_spot_price(&history, "m7g.large", None).unwrap(),
            0.03
        );
    }

    /// An endpoint that answers every request like moto does for the
    /// Pricing API: HTTP 500 with an HTML page.
    async fn failing_endpoint() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let _ = stream.read(&mut buf).await;
                    let body = "<!doctype html><title>500 Internal Server Error</title>";
                    let head = format!(
                        "HTTP/1.1 500 INTERNAL SERVER ERROR\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(format!("{head}{body}").as_bytes()).await;
                });
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_failed_lookup_is_reported_in_one_line_naming_the_call_without_the_response() {
        let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(sdk::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .endpoint_url(failing_endpoint().await)
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .load()
            .await;
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::SystemClock);
        let adapter = AwsPricing::from_sdk_config(&aws, Duration::from_secs(3600), clock).unwrap();

        let on_demand = adapter
            .fetch(&QuoteKey::new("m7g.large", Market::OnDemand, None))
            .await
            .unwrap_err();
        let text = format!("{on_demand:#}");
        assert!(text.starts_with("pricing:GetProducts: "), "{text}");
        assert!(!text.contains("<title>") && !text.contains('\n'), "{text}");

        let spot = adapter
            .fetch(&QuoteKey::new(
                "m7g.large",
                Market::Spot,
                Some("us-east-1a"),
            ))
            .await
            .unwrap_err();
        assert!(
            format!("{spot:#}").starts_with("ec2:DescribeSpotPriceHistory: "),
            "{spot:#}"
        );
        assert_eq!(
            adapter.calls(),
            PricingCalls {
                get_products: 1,
                describe_spot_price_history: 1
            }
        );
    }

    #[test]
    fn the_pricing_client_keeps_the_endpoint_but_moves_to_us_east_1() {
        let aws = aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("eu-west-3"))
            .endpoint_url("http://127.0.0.1:4566")
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let client = pricing_client(&aws);
        assert_eq!(
            client.config().region().map(|r| r.as_ref()),
            Some(PRICING_API_REGION)
        );

        let clock: Arc<dyn Clock> = Arc::new(crate::clock::SystemClock);
        let adapter = AwsPricing::from_sdk_config(&aws, Duration::from_secs(3600), clock).unwrap();
        assert_eq!(
            adapter.region, "eu-west-3",
            "prices the deployment's region"
        );
        assert_eq!(adapter.calls(), PricingCalls::default());
    }
}
