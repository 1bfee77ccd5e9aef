//! The AWS pricing adapter through the real SDK clients: spot quotes from
//! moto's DescribeSpotPriceHistory (canned: $0.00001 in every zone), the
//! Pricing API failing (moto has none and answers 500), and on-demand quotes
//! from a local stand-in that answers `GetProducts` with the recorded-shape
//! item in `shared/src/pricing/fixtures/`. TTLs are crossed by moving an
//! injected clock, never by sleeping.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::config::{Credentials, Region};
use pacer_shared::clock::ManualClock;
use pacer_shared::pricing::aws::{AwsPricing, PricingCalls};
use pacer_shared::pricing::{ON_DEMAND, Price, PriceSource, Pricing, SPOT};
use serde_json::{Value, json};

use crate::moto::Moto;

const TTL: Duration = Duration::from_secs(24 * 3600);

/// moto's canned spot price for every type and zone: $0.00001 an hour.
const MOTO_SPOT_PRICE: Price = Price {
    micro_usd_per_hour: 10,
    source: PriceSource::SpotHistory,
};

/// The recorded Pricing API answer's on-demand price for m7g.large: $0.0816.
const M7G_LARGE_ON_DEMAND: Price = Price {
    micro_usd_per_hour: 81_600,
    source: PriceSource::PricingApi,
};

/// The Pricing API's item for m7g.large in us-east-1, recorded beside the
/// adapter's unit tests.
fn m7g_large_item() -> String {
    let path = pacer_test_support::in_repo(
        "shared/src/pricing/fixtures/get_products_m7g_large_us_east_1.json",
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(chrono::Utc::now()))
}

async fn against_moto(moto: &Moto, clock: &Arc<ManualClock>) -> AwsPricing {
    AwsPricing::from_sdk_config(&moto.sdk_config().await, TTL, clock.clone()).expect("an adapter")
}

fn spot_calls(n: u64) -> PricingCalls {
    PricingCalls {
        get_products: 0,
        describe_spot_price_history: n,
    }
}

#[tokio::test]
async fn a_spot_quote_comes_from_the_spot_price_history_and_is_cached_per_zone() {
    let moto = Moto::start().await;
    let pricing = against_moto(&moto, &clock()).await;

    assert_eq!(
        pricing.quote("m7g.large", SPOT, Some("us-east-1a")).await,
        Some(MOTO_SPOT_PRICE)
    );
    assert_eq!(pricing.calls(), spot_calls(1));

    assert_eq!(
        pricing.quote("m7g.large", SPOT, Some("us-east-1a")).await,
        Some(MOTO_SPOT_PRICE)
    );
    assert_eq!(
        pricing.calls(),
        spot_calls(1),
        "a cache hit makes no request"
    );

    assert_eq!(
        pricing.quote("m7g.large", SPOT, Some("us-east-1b")).await,
        Some(MOTO_SPOT_PRICE)
    );
    assert_eq!(
        pricing.quote("m7g.large", SPOT, None).await,
        Some(MOTO_SPOT_PRICE),
        "any zone"
    );
    assert_eq!(
        pricing.calls(),
        spot_calls(3),
        "one request per zone asked for"
    );
}

#[tokio::test]
async fn concurrent_spot_quotes_for_one_zone_make_one_request() {
    let moto = Moto::start().await;
    let pricing = against_moto(&moto, &clock()).await;

    let quotes = (0..8).map(|_| pricing.quote("m7g.large", SPOT, Some("us-east-1a")));
    let prices = futures::future::join_all(quotes).await;

    assert!(
        prices.iter().all(|p| *p == Some(MOTO_SPOT_PRICE)),
        "{prices:?}"
    );
    assert_eq!(pricing.calls(), spot_calls(1));
}

#[tokio::test]
async fn a_spot_price_is_asked_again_once_its_ttl_has_passed() {
    let moto = Moto::start().await;
    let clock = clock();
    let pricing = against_moto(&moto, &clock).await;
    pricing.quote("m7g.large", SPOT, Some("us-east-1a")).await;

    clock.advance(TTL - Duration::from_secs(1));
    assert_eq!(
        pricing.quote("m7g.large", SPOT, Some("us-east-1a")).await,
        Some(MOTO_SPOT_PRICE)
    );
    assert_eq!(pricing.calls(), spot_calls(1), "still fresh");

    clock.advance(Duration::from_secs(1));
    assert_eq!(
        pricing.quote("m7g.large", SPOT, Some("us-east-1a")).await,
        Some(MOTO_SPOT_PRICE)
    );
    assert_eq!(pricing.calls(), spot_calls(2), "expired: asked again");
}

#[tokio::test]
async fn a_type_with_no_spot_history_has_no_price_and_the_miss_is_cached() {
    let moto = Moto::start().await;
    let pricing = against_moto(&moto, &clock()).await;

    assert_eq!(
        pricing.quote("no7.such", SPOT, Some("us-east-1a")).await,
        None
    );
    assert_eq!(
        pricing.quote("no7.such", SPOT, Some("us-east-1a")).await,
        None
    );
    assert_eq!(pricing.calls(), spot_calls(1));
}

#[tokio::test]
async fn a_failing_pricing_api_gives_no_price_and_is_left_alone_until_the_failure_expires() {
    let moto = Moto::start().await;
    let clock = clock();
    let pricing = against_moto(&moto, &clock).await;

    assert_eq!(
        pricing.quote("m7g.large", ON_DEMAND, None).await,
        None,
        "moto answers 500 for the Pricing API"
    );
    assert_eq!(pricing.calls().get_products, 1);

    // Another zone is the same on-demand price, and the failure is remembered.
    assert_eq!(
        pricing
            .quote("m7g.large", ON_DEMAND, Some("us-east-1b"))
            .await,
        None
    );
    clock.advance(pricing.failure_ttl() - Duration::from_secs(1));
    assert_eq!(pricing.quote("m7g.large", ON_DEMAND, None).await, None);
    assert_eq!(
        pricing.calls().get_products,
        1,
        "not asked again while the failure is cached"
    );

    clock.advance(Duration::from_secs(1));
    assert_eq!(pricing.quote("m7g.large", ON_DEMAND, None).await, None);
    assert_eq!(
        pricing.calls().get_products,
        2,
        "asked again once the failure expired"
    );
    assert!(
        pricing.failure_ttl() < TTL,
        "a failure is kept for less than a price"
    );
}

// ------------------------------------------------------- on-demand, recorded

/// A stand-in for the Pricing API on 127.0.0.1: every request is recorded
/// and answered with `body`.
struct PricingStandIn {
    endpoint: String,
    requests: Arc<Mutex<Vec<(axum::http::HeaderMap, Value)>>>,
    server: tokio::task::JoinHandle<()>,
}

impl PricingStandIn {
    async fn start(body: Value) -> Self {
        let requests: Arc<Mutex<Vec<(axum::http::HeaderMap, Value)>>> = Arc::default();
        let seen = requests.clone();
        let app = axum::Router::new().fallback(
            move |headers: axum::http::HeaderMap, body_bytes: axum::body::Bytes| {
                let seen = seen.clone();
                let answer = body.clone();
                async move {
                    let request = serde_json::from_slice(&body_bytes).unwrap_or(Value::Null);
                    seen.lock().unwrap().push((headers, request));
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/x-amz-json-1.1",
                        )],
                        answer.to_string(),
                    )
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            endpoint: format!("http://{addr}"),
            requests,
            server,
        }
    }

    /// An adapter whose Pricing client talks to this stand-in, pricing
    /// `region` (EC2 is never called for on-demand quotes).
    async fn adapter(&self, region: &str) -> AwsPricing {
        let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .credentials_provider(Credentials::new(
                "testing", "testing", None, None, "stand-in",
            ))
            .endpoint_url(&self.endpoint)
            .load()
            .await;
        AwsPricing::from_sdk_config(&aws, TTL, clock()).expect("an adapter")
    }

    fn requests(&self) -> Vec<(axum::http::HeaderMap, Value)> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for PricingStandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A `GetProducts` answer as the API sends it: each item a JSON string.
fn get_products_answer(items: &[&str]) -> Value {
    let price_list: Vec<String> = items
        .iter()
        .map(|item| {
            serde_json::from_str::<Value>(item)
                .expect("fixture is JSON")
                .to_string()
        })
        .collect();
    json!({"FormatVersion": "aws_v1", "PriceList": price_list})
}

fn filters(request: &Value) -> Vec<(String, String)> {
    request["Filters"]
        .as_array()
        .expect("filters sent")
        .iter()
        .map(|f| {
            assert_eq!(f["Type"], "TERM_MATCH", "{f}");
            (
                f["Field"].as_str().unwrap().to_owned(),
                f["Value"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_on_demand_quote_reads_the_recorded_get_products_answer_through_the_sdk() {
    let stand_in = PricingStandIn::start(get_products_answer(&[&m7g_large_item()])).await;
    let pricing = stand_in.adapter("us-east-1").await;

    assert_eq!(
        pricing
            .quote("m7g.large", ON_DEMAND, Some("us-east-1a"))
            .await,
        Some(M7G_LARGE_ON_DEMAND)
    );
    assert_eq!(
        pricing
            .quote("m7g.large", ON_DEMAND, Some("us-east-1c"))
            .await,
        Some(M7G_LARGE_ON_DEMAND),
        "cached for every zone"
    );
    assert_eq!(
        pricing.calls(),
        PricingCalls {
            get_products: 1,
            describe_spot_price_history: 0
        }
    );

    let requests = stand_in.requests();
    assert_eq!(requests.len(), 1);
    let (headers, request) = &requests[0];
    assert_eq!(headers["x-amz-target"], "AWSPriceListService.GetProducts");
    assert_eq!(request["ServiceCode"], "AmazonEC2");
    let filters = filters(request);
    for expected in [
        ("instanceType", "m7g.large"),
        ("regionCode", "us-east-1"),
        ("operatingSystem", "Linux"),
        ("tenancy", "Shared"),
        ("preInstalledSw", "NA"),
        ("capacitystatus", "Used"),
    ] {
        assert!(
            filters.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "filter {expected:?} missing from {filters:?}"
        );
    }
}

#[tokio::test]
async fn an_unknown_market_is_not_priced_and_asks_nothing() {
    let stand_in = PricingStandIn::start(get_products_answer(&[&m7g_large_item()])).await;
    let pricing = stand_in.adapter("us-east-1").await;
    assert_eq!(
        pricing.quote("m7g.large", "spot-fallback", None).await,
        None
    );
    assert_eq!(pricing.calls().total(), 0);
    assert!(stand_in.requests().is_empty());
}

#[tokio::test]
async fn the_pricing_api_is_called_in_us_east_1_for_a_deployment_elsewhere() {
    let stand_in = PricingStandIn::start(get_products_answer(&[])).await;
    let pricing = stand_in.adapter("eu-west-3").await;

    assert_eq!(
        pricing.quote("m7g.large", ON_DEMAND, None).await,
        None,
        "no product: no price"
    );

    let requests = stand_in.requests();
    let (headers, request) = &requests[0];
    let authorization = headers["authorization"].to_str().unwrap();
    assert!(
        authorization.contains("/us-east-1/pricing/aws4_request"),
        "signed for the Pricing API's region: {authorization}"
    );
    assert!(
        filters(request).contains(&("regionCode".to_owned(), "eu-west-3".to_owned())),
        "prices the deployment's region"
    );
}
