//! Which address a request came from: the direct peer, or — only when the peer is one of
//! `server.trusted_proxies` — the nearest untrusted hop named in `X-Forwarded-For`.
//!
//! The rate limiter, the audit log and the access log all key on this address, so it must not be
//! spoofable: a client that reaches pacer directly can write any `X-Forwarded-For` it likes, and
//! only a proxy we were told to trust has vouched for what it appended.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Extension;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

/// The header proxies append the address they received a request from to.
const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The client address of a request under pacer's rule (see [`client_ip`]).
///
/// Reads the peer from `ConnectInfo<SocketAddr>` and the trusted proxies from a
/// [`TrustedProxies`] request extension (none trusted when it is absent). When the host gave no
/// `ConnectInfo` (a `oneshot` test, or Lambda until its host inserts one), the address is
/// `0.0.0.0`: unknown, deliberately, because no header is trustworthy enough to stand in for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
            return Ok(ClientIp(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
        };
        let trusted = parts
            .extensions
            .get::<TrustedProxies>()
            .map_or(&[][..], |t| t.nets());
        Ok(ClientIp(client_ip(*peer, &parts.headers, trusted)))
    }
}

/// The proxies (`server.trusted_proxies`) whose `X-Forwarded-For` is believed, carried to
/// [`ClientIp`] as a request extension. Add it to a router with [`TrustedProxies::layer`];
/// [`Server`](super::Server) does so for the router it serves.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub Arc<Vec<IpNet>>);

impl TrustedProxies {
    pub fn new(nets: impl Into<Vec<IpNet>>) -> Self {
        Self(Arc::new(nets.into()))
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.0
    }

    /// A layer that inserts this list into every request: `router.layer(trusted.layer())`.
    pub fn layer(&self) -> Extension<Self> {
        Extension(self.clone())
    }
}

/// The client address of a request that arrived from `peer` carrying `headers`.
///
/// - `peer` not in `trusted` (always so when `trusted` is empty): `peer`, whatever
///   `X-Forwarded-For` claims.
/// - `peer` trusted: walk `X-Forwarded-For` from the right (the hop nearest to us) and return the
///   first address that is not itself a trusted proxy; when every hop is trusted, the leftmost.
/// - A malformed entry stops the walk: the answer is the last good hop before it (which may be
///   the peer), because anything to its left was written by someone we cannot vouch for.
///
/// IPv4-mapped IPv6 addresses (what a dual-stack listener reports for IPv4 peers) are compared
/// and returned as plain IPv4, so `trusted_proxies: [10.0.0.0/8]` matches them.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));

    let peer = peer.ip().to_canonical();
    if !is_trusted(&peer) {
        return peer;
    }

    let mut last_good = peer;
    for hop in forwarded_hops(headers).into_iter().rev() {
        let Some(ip) = hop else {
            return last_good;
        };
        if !is_trusted(&ip) {
            return ip;
        }
        last_good = ip;
    }
    last_good
}

/// Every `X-Forwarded-For` entry in order (several header lines count as one comma-joined list),
/// `None` marking an entry that is not an address.
fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let mut hops = Vec::new();
    for value in headers.get_all(X_FORWARDED_FOR) {
        match value.to_str() {
            Ok(list) => hops.extend(list.split(',').map(parse_hop)),
            Err(_) => hops.push(None),
        }
    }
    hops
}

/// One entry: a bare IPv4 or IPv6 address, or one with a port (`1.2.3.4:5678`, `[::1]:5678`),
/// which some load balancers write.
fn parse_hop(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|addr| addr.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::http::{HeaderValue, Request};
    use axum::routing::get;
    use tower::ServiceExt;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .unwrap()
            })
            .collect()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(X_FORWARDED_FOR, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn peer(addr: &str) -> SocketAddr {
        addr.parse().unwrap()
    }

    fn ip(addr: &str) -> IpAddr {
        addr.parse().unwrap()
    }

    #[test]
    fn without_trusted_proxies_a_spoofed_forwarded_for_is_ignored() {
        let headers = xff(&["6.6.6.6"]);
        assert_eq!(
            client_ip(peer("203.0.113.7:5000"), &headers, &[]),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn an_untrusted_peer_cannot_speak_for_others_even_when_proxies_are_configured() {
        let headers = xff(&["6.6.6.6"]);
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(peer("203.0.113.7:5000"), &headers, &trusted),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn a_trusted_peer_without_forwarded_for_is_the_client() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(peer("10.1.2.3:5000"), &HeaderMap::new(), &trusted),
            ip("10.1.2.3")
        );
    }

    #[test]
    fn a_trusted_chain_yields_the_nearest_untrusted_hop() {
        // client 198.51.100.9 → CDN edge 10.0.0.5 → load balancer 10.0.0.1 (peer); the leftmost
        // entry is whatever the client wrote, and must not win.
        let headers = xff(&["1.1.1.1, 198.51.100.9, 10.0.0.5"]);
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(peer("10.0.0.1:443"), &headers, &trusted),
            ip("198.51.100.9")
        );
    }

    #[test]
    fn several_forwarded_for_lines_read_as_one_list() {
        let headers = xff(&["1.1.1.1, 198.51.100.9", "10.0.0.5"]);
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(peer("10.0.0.1:443"), &headers, &trusted),
            ip("198.51.100.9")
        );
    }

    #[test]
    fn when_every_hop_is_trusted_the_leftmost_wins() {
        let headers = xff(&["10.9.9.9, 10.0.0.5"]);
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(peer("10.0.0.1:443"), &headers, &trusted),
            ip("10.9.9.9")
        );
    }

    #[test]
    fn ipv6_peers_and_hops_are_handled() {
        let headers = xff(&["2001:db8::1, fd00::5"]);
        let trusted = nets(&["fd00::/8", "::1"]);
        assert_eq!(
            client_ip(peer("[::1]:443"), &headers, &trusted),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn hops_with_ports_are_understood() {
        let headers = xff(&["[2001:db8::1]:4711, 198.51.100.9:1234"]);
        let trusted = nets(&["127.0.0.1"]);
        assert_eq!(
            client_ip(peer("127.0.0.1:443"), &headers, &trusted),
            ip("198.51.100.9")
        );
    }

    #[test]
    fn an_ipv4_mapped_peer_matches_an_ipv4_trusted_range() {
        let headers = xff(&["198.51.100.9"]);
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(peer("[::ffff:10.0.0.1]:443"), &headers, &trusted),
            ip("198.51.100.9")
        );
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_good_hop() {
        let trusted = nets(&["10.0.0.0/8"]);
        // The garbage sits right next to us: only the peer can be vouched for.
        let headers = xff(&["198.51.100.9, unknown"]);
        assert_eq!(
            client_ip(peer("10.0.0.1:443"), &headers, &trusted),
            ip("10.0.0.1")
        );
        // The garbage sits behind a trusted hop: that hop is the best we know.
        let headers = xff(&["not-an-ip, 10.0.0.5"]);
        assert_eq!(
            client_ip(peer("10.0.0.1:443"), &headers, &trusted),
            ip("10.0.0.5")
        );
        // Empty entries are garbage too.
        let headers = xff(&["198.51.100.9,,10.0.0.5"]);
        assert_eq!(
            client_ip(peer("10.0.0.1:443"), &headers, &trusted),
            ip("10.0.0.5")
        );
    }

    #[test]
    fn garbage_left_of_the_client_does_not_matter() {
        let headers = xff(&["<script>, 198.51.100.9"]);
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(peer("10.0.0.1:443"), &headers, &trusted),
            ip("198.51.100.9")
        );
    }

    async fn extracted(request: Request<Body>, trusted: TrustedProxies) -> String {
        let app = Router::new()
            .route(
                "/",
                get(|ClientIp(ip): ClientIp| async move { ip.to_string() }),
            )
            .layer(trusted.layer());
        let response = app.oneshot(request).await.unwrap();
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn the_extractor_applies_the_rule_to_the_connection_peer() {
        let mut request = Request::builder()
            .uri("/")
            .header(X_FORWARDED_FOR, "198.51.100.9")
            .body(Body::empty())
            .unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(peer("10.0.0.1:443")));
        let trusted = TrustedProxies::new(nets(&["10.0.0.0/8"]));
        assert_eq!(extracted(request, trusted).await, "198.51.100.9");
    }

    #[tokio::test]
    async fn without_connect_info_the_extractor_answers_unspecified_and_ignores_headers() {
        let request = Request::builder()
            .uri("/")
            .header(X_FORWARDED_FOR, "198.51.100.9")
            .body(Body::empty())
            .unwrap();
        let trusted = TrustedProxies::new(nets(&["0.0.0.0/0"]));
        assert_eq!(extracted(request, trusted).await, "0.0.0.0");
    }

    use proptest::strategy::Strategy as _;

    /// An `X-Forwarded-For` entry: an address (with or without a port), or garbage.
    fn hop() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            any::<std::net::Ipv4Addr>().prop_map(|a| a.to_string()),
            any::<std::net::Ipv6Addr>().prop_map(|a| a.to_string()),
            any::<SocketAddr>().prop_map(|a| a.to_string()),
            proptest::sample::select(vec![
                "10.0.0.1".to_string(),
                "10.9.9.9:80".into(),
                "::ffff:10.0.0.2".into(),
                "[::1]:8080".into()
            ]),
            "[0-9a-fA-F:.\\[\\] ]{0,30}",
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn the_client_is_the_peer_or_an_address_a_trusted_proxy_forwarded(
            peer_addr in proptest::prop_oneof![proptest::prelude::Just(peer("10.0.0.5:1")), proptest::prelude::any::<SocketAddr>()],
            lines in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::collection::vec(hop(), 0..6).prop_map(|hops| hops.join(",").into_bytes()),
                    proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
                ],
                0..3,
            ),
        ) {
            let mut headers = HeaderMap::new();
            for line in &lines {
                if let Ok(value) = HeaderValue::from_bytes(line) {
                    headers.append(X_FORWARDED_FOR, value);
                }
            }
            let trusted = nets(&["10.0.0.0/8", "::1"]);
            let client = client_ip(peer_addr, &headers, &trusted);
            let forwarded: Vec<IpAddr> = forwarded_hops(&headers).into_iter().flatten().collect();
            proptest::prop_assert!(client == peer_addr.ip().to_canonical() || forwarded.contains(&client), "{client} came from nowhere");
            if !trusted.iter().any(|net| net.contains(&peer_addr.ip().to_canonical())) {
                proptest::prop_assert_eq!(client, peer_addr.ip().to_canonical(), "an untrusted peer speaks for itself");
            }
        }
    }
}
