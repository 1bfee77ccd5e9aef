//! `server.tls.mode: acme` against a real ACME CA, Debian's pebble, on 127.0.0.1: pacer's server
//! orders a certificate over HTTP-01 (pebble really fetches the challenge from pacer's HTTP-01
//! listener), serves HTTPS with it, redirects plain HTTP there, and keeps the certificate in
//! `cache_dir` across restarts.
//!
//! Every test has its own pebble and its own cache: an order takes about a second.

mod pebble;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::http::{Method, StatusCode, Uri, header};
use pacer_shared::config::{AcmeConfig, ServerConfig, TlsConfig, TlsMode};
use pacer_shared::server::Server;
use reqwest::tls::TlsInfo;
use reqwest::{Certificate, ClientBuilder, redirect};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use pebble::Pebble;

/// The names pacer orders a certificate for.
const HOSTS: [&str; 2] = ["pacer.test", "www.pacer.test"];
/// A name the clients also resolve to 127.0.0.1, but which the certificate must not cover.
const OTHER_HOST: &str = "other.pacer.test";

/// The most a start may take, ordering included (pebble issues in about a second).
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn acme_mode_gets_a_certificate_from_the_ca_and_serves_https_for_each_host() {
    // Given a CA and pacer configured for two hosts
    let pebble = Pebble::start().await;
    let cache = tempfile::tempdir().unwrap();

    // When pacer starts in acme mode
    let pacer = Pacer::start(&acme_config(&pebble, cache.path())).await;

    // Then a client trusting only the CA's root reaches each host over HTTPS, and the
    // certificate it verified is the one pacer obtained
    let client = trusting(&pebble.issuing_root().await).build().unwrap();
    for host in HOSTS {
        let response = client.get(pacer.https_url(host, "/hello")).send().await;
        let response = response.unwrap_or_else(|err| panic!("GET https://{host}: {err:?}"));
        assert_eq!(response.status(), StatusCode::OK, "{host}");
        assert_eq!(served_leaf(&response), pacer.certificate, "{host}");
        let hsts = &response.headers()[header::STRICT_TRANSPORT_SECURITY];
        assert_eq!(hsts, "max-age=31536000", "{host}");
        assert_eq!(response.text().await.unwrap(), "GET /hello ");
    }

    // And it covers only those hosts: the same client refuses it for another name
    let err = client
        .get(pacer.https_url(OTHER_HOST, "/hello"))
        .send()
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("NotValidForName"), "{err:?}");

    pacer.stop().await;
}

#[tokio::test]
async fn acme_http_listener_redirects_to_https_keeping_method_path_and_query() {
    // Given pacer in acme mode, its HTTP-01 listener on the port the CA validates
    let pebble = Pebble::start().await;
    let cache = tempfile::tempdir().unwrap();
    let pacer = Pacer::start(&acme_config(&pebble, cache.path())).await;
    let http_url = format!("http://www.pacer.test:{}/api/x?y=1", pebble.http01_port());

    // When a client POSTs plain HTTP to something other than a challenge
    let root = pebble.issuing_root().await;
    let not_following = trusting(&root)
        .redirect(redirect::Policy::none())
        .build()
        .unwrap();
    let response = not_following
        .post(&http_url)
        .body("payload")
        .send()
        .await
        .unwrap();

    // Then it is sent, with a 308 (which keeps the method), to the same host, path and query
    // on the HTTPS listener
    assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
    let location = response.headers()[header::LOCATION].to_str().unwrap();
    assert_eq!(location, pacer.https_url("www.pacer.test", "/api/x?y=1"));
    // (browsers ignore HSTS over plain HTTP, so the listener does not send it)
    assert!(
        !response
            .headers()
            .contains_key(header::STRICT_TRANSPORT_SECURITY)
    );

    // And a client that follows it arrives over HTTPS as a POST, body and all
    let following = trusting(&root).build().unwrap();
    let response = following
        .post(&http_url)
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(response.url().as_str(), location);
    assert_eq!(response.text().await.unwrap(), "POST /api/x?y=1 payload");

    pacer.stop().await;
}

#[tokio::test]
async fn acme_restart_with_the_same_cache_dir_serves_the_cached_certificate_without_a_new_order() {
    // Given pacer got a certificate from the CA into its cache, and stopped
    let pebble = Pebble::start().await;
    let cache = tempfile::tempdir().unwrap();
    let config = acme_config(&pebble, cache.path());
    let client = trusting(&pebble.issuing_root().await).build().unwrap();
    let first = Pacer::start(&config).await;
    let issued = first.certificate.clone();
    first.stop().await;

    // When it starts again with the same cache_dir
    let again = Pacer::start(&config).await;

    // Then it serves the very certificate it had (same bytes, so same serial and key):
    // nothing was ordered
    assert_eq!(
        again.certificate, issued,
        "the certificate pacer starts with"
    );
    let response = client
        .get(again.https_url(HOSTS[1], "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(served_leaf(&response), issued, "the certificate it serves");

    again.stop().await;
}

#[tokio::test]
async fn acme_restart_while_the_ca_is_down_still_serves_the_cached_certificate() {
    // Given pacer got a certificate from the CA into its cache, and stopped
    let pebble = Pebble::start().await;
    let cache = tempfile::tempdir().unwrap();
    let config = acme_config(&pebble, cache.path());
    let client = trusting(&pebble.issuing_root().await).build().unwrap();
    let first = Pacer::start(&config).await;
    let issued = first.certificate.clone();
    first.stop().await;

    // When the CA is gone and pacer starts again (an order could only fail)
    drop(pebble);
    let again = Pacer::start(&config).await;

    // Then it serves the cached certificate
    let response = client
        .get(again.https_url(HOSTS[0], "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(served_leaf(&response), issued);

    again.stop().await;
}

#[cfg(unix)]
#[tokio::test]
async fn acme_cache_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| {
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        format!("{:o}", mode & 0o777)
    };

    // Given a CA and a cache_dir that does not exist yet
    let pebble = Pebble::start().await;
    let parent = tempfile::tempdir().unwrap();
    let cache = parent.path().join("certs");

    // When pacer gets a certificate
    let pacer = Pacer::start(&acme_config(&pebble, &cache)).await;
    pacer.stop().await;

    // Then the account key and the certificate key are in files only their owner can read,
    // in a directory only its owner can enter
    let mut files: Vec<String> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, ["account.json", "certificate.json"]);
    for file in &files {
        assert_eq!(mode(&cache.join(file)), "600", "{file}");
    }
    assert_eq!(mode(&cache), "700", "the cache directory");
}

// --- fixtures ------------------------------------------------------------------------------------

/// pacer's server in acme mode for [`HOSTS`], ordering from `pebble` into `cache_dir`, its HTTPS
/// listener on a free port.
fn acme_config(pebble: &Pebble, cache_dir: &Path) -> ServerConfig {
    ServerConfig {
        addr: "127.0.0.1:0".into(),
        tls: TlsConfig {
            mode: TlsMode::Acme,
            acme: AcmeConfig {
                hosts: HOSTS.map(String::from).to_vec(),
                email: Some("ops@pacer.test".into()),
                cache_dir: cache_dir.to_owned(),
                http_addr: format!("127.0.0.1:{}", pebble.http01_port()),
                directory_url: pebble.directory_url(),
                ca_cert: Some(pebble.listener_ca().to_owned()),
            },
            ..TlsConfig::default()
        },
        ..ServerConfig::default()
    }
}

/// A running `Server` with an app that echoes each request, stopped by [`Pacer::stop`] (or
/// aborted on drop when a test fails first).
struct Pacer {
    https_port: u16,
    /// The leaf certificate pacer started with (DER).
    certificate: Vec<u8>,
    stop: Option<oneshot::Sender<()>>,
    serving: JoinHandle<anyhow::Result<()>>,
}

impl Pacer {
    /// Binds (which, in acme mode, gets the certificate) and starts serving.
    async fn start(config: &ServerConfig) -> Pacer {
        let logs = pebble::log_dir();
        let server = tokio::time::timeout(START_TIMEOUT, Server::bind(echo_app(), config))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no certificate within {START_TIMEOUT:?}; see {}",
                    logs.display()
                )
            })
            .unwrap_or_else(|err| panic!("pacer did not start: {err:#}; see {}", logs.display()))
            // Idle keep-alive connections of the test's clients must not hold up a restart.
            .with_grace_period(Duration::from_secs(1));
        let https_port = server.local_addr().port();
        let certificate = server
            .certificate()
            .expect("TLS is on in acme mode")
            .to_vec();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Pacer {
            https_port,
            certificate,
            stop: Some(stop),
            serving,
        }
    }

    fn https_url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.https_port)
    }

    /// Stops gracefully; the HTTP-01 listener is closed when this returns.
    async fn stop(mut self) {
        let _ = self.stop.take().expect("not stopped yet").send(());
        let stopped = tokio::time::timeout(STOP_TIMEOUT, &mut self.serving).await;
        let result =
            stopped.unwrap_or_else(|_| panic!("pacer did not stop within {STOP_TIMEOUT:?}"));
        result
            .expect("the server task")
            .expect("pacer stops cleanly");
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

/// The app behind the listener: answers with what arrived (`METHOD /path?query body`).
fn echo_app() -> Router {
    Router::new().fallback(|method: Method, uri: Uri, body: String| async move {
        let target = uri.path_and_query().map_or("/", |target| target.as_str());
        format!("{method} {target} {body}")
    })
}

/// A client that trusts `root` alone and resolves [`HOSTS`] and [`OTHER_HOST`] to 127.0.0.1 (the
/// port comes from each URL), as if their DNS pointed at this machine.
fn trusting(root: &Certificate) -> ClientBuilder {
    pacer_shared::http_client::install_crypto_provider();
    let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
    let builder = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root.clone())
        .tls_info(true)
        .timeout(REQUEST_TIMEOUT);
    HOSTS
        .into_iter()
        .chain([OTHER_HOST])
        .fold(builder, |builder, host| builder.resolve(host, localhost))
}

/// The leaf certificate (DER) the server presented for this response.
fn served_leaf(response: &reqwest::Response) -> Vec<u8> {
    let tls = response
        .extensions()
        .get::<TlsInfo>()
        .expect("an HTTPS response");
    tls.peer_certificate()
        .expect("the server's certificate")
        .to_vec()
}
