//! Servers on 127.0.0.1 port 0, each stopped by its test. Ordering is driven by channels, never by
//! how long something took. Where a deadline is under test, the server gets a short one and the
//! test waits many times longer for its effect, so timing fails a test only when the server never
//! acts.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::routing::get;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::*;
use crate::config::{KeyAlg, TlsConfig};

fn config(tls: TlsConfig) -> ServerConfig {
    ServerConfig {
        addr: "127.0.0.1:0".to_owned(),
        tls,
        ..ServerConfig::default()
    }
}

fn tls_config(mode: TlsMode) -> TlsConfig {
    TlsConfig {
        mode,
        ..TlsConfig::default()
    }
}

fn hello_router() -> Router {
    Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route(
            "/ip",
            get(|ClientIp(ip): ClientIp| async move { ip.to_string() }),
        )
}

/// A server running in the background, stopped by [`Running::stop`].
struct Running {
    addr: SocketAddr,
    certificate: Option<CertificateDer<'static>>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn start(router: Router, cfg: &ServerConfig) -> Self {
        Self::start_bound(Server::bind(router, cfg).await.expect("bind")).await
    }

    async fn start_bound(server: Server) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let addr = server.local_addr();
        let certificate = server.certificate().cloned();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            certificate,
            stop,
            task,
        }
    }

    /// Begins shutdown without waiting for it.
    fn begin_stop(self) -> JoinHandle<anyhow::Result<()>> {
        self.stop.send(()).expect("server still running");
        self.task
    }

    async fn stop(self) {
        self.begin_stop()
            .await
            .expect("server task")
            .expect("clean shutdown");
    }
}

/// One HTTP/1.1 GET over a fresh connection; returns the status and body.
async fn get_plain(addr: SocketAddr, path: &str) -> (u16, String) {
    parse_response(&fetch_plain(addr, &request(path, "localhost")).await)
}

/// Sends `request` over a fresh connection and returns the whole response as it came.
async fn fetch_plain(addr: SocketAddr, request: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    response
}

fn request(path: &str, host: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

fn parse_response(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response in {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, body.to_owned())
}

/// One HTTPS GET trusting only `root`, sending `server_name` as SNI and checking the
/// certificate against it; returns the status and body.
async fn get_tls(
    addr: SocketAddr,
    root: &CertificateDer<'static>,
    server_name: &str,
    path: &str,
) -> Result<(u16, String), rustls::Error> {
    let response = fetch_tls(addr, root, server_name, request(path, server_name)).await?;
    Ok(parse_response(&response))
}

/// Sends `request` as [`get_tls`] does and returns the whole response as it came.
async fn fetch_tls(
    addr: SocketAddr,
    root: &CertificateDer<'static>,
    server_name: &str,
    request: String,
) -> Result<Vec<u8>, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).expect("usable root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_owned()).expect("server name");

    // rustls' blocking stream keeps the test client small; it runs off the reactor.
    tokio::task::spawn_blocking(move || {
        let connection = rustls::ClientConnection::new(Arc::new(config), name)?;
        let socket = std::net::TcpStream::connect(addr).expect("connect");
        let mut stream = rustls::StreamOwned::new(connection, socket);
        stream
            .write_all(request.as_bytes())
            .map_err(into_tls_error)?;
        let mut response = Vec::new();
        match stream.read_to_end(&mut response) {
            Ok(_) => {}
            // A peer closing without close_notify after a complete response is fine here.
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
            Err(err) => return Err(into_tls_error(err)),
        }
        Ok(response)
    })
    .await
    .expect("client task")
}

fn into_tls_error(err: io::Error) -> rustls::Error {
    match err
        .into_inner()
        .map(|inner| inner.downcast::<rustls::Error>())
    {
        Some(Ok(tls)) => *tls,
        Some(Err(other)) => rustls::Error::General(other.to_string()),
        None => rustls::Error::General("I/O error".to_owned()),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "pacer-server-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// --- plain HTTP and shutdown ---------------------------------------------------------------

#[tokio::test]
async fn plain_http_answers_then_stops_when_shutdown_resolves() {
    let server = Server::bind(hello_router(), &config(tls_config(TlsMode::None)))
        .await
        .unwrap();
    assert_eq!(server.scheme(), "http");
    assert!(server.certificate().is_none());
    let running = Running::start_bound(server).await;

    assert_eq!(
        get_plain(running.addr, "/hello").await,
        (200, "hello".to_owned())
    );
    let addr = running.addr;
    running.stop().await;

    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}

#[tokio::test]
async fn handlers_see_the_peer_as_the_client() {
    let running = Running::start(hello_router(), &config(tls_config(TlsMode::None))).await;
    assert_eq!(
        get_plain(running.addr, "/ip").await,
        (200, "127.0.0.1".to_owned())
    );
    running.stop().await;
}

#[tokio::test]
async fn a_trusted_loopback_proxy_passes_on_the_forwarded_client() {
    let mut cfg = config(tls_config(TlsMode::None));
    cfg.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    let running = Running::start(hello_router(), &cfg).await;

    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    let request =
        "GET /ip HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.100.9\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    assert_eq!(parse_response(&response), (200, "198.51.100.9".to_owned()));
    running.stop().await;
}

/// A route that reports when it has started and then waits to be released.
fn slow_router() -> (Router, mpsc::Receiver<()>, oneshot::Sender<()>) {
    let (started_tx, started_rx) = mpsc::channel(1);
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let release_rx = Arc::new(Mutex::new(Some(release_rx)));
    let router = Router::new().route(
        "/slow",
        get(move || {
            let (started_tx, release_rx) = (started_tx.clone(), release_rx.clone());
            async move {
                started_tx.send(()).await.unwrap();
                if let Some(release) = release_rx.lock().await.take() {
                    let _ = release.await;
                }
                "done"
            }
        }),
    );
    (router, started_rx, release_tx)
}

/// Waits until connecting fails, i.e. the server has stopped accepting.
async fn until_refused(addr: SocketAddr) {
    for _ in 0..1000 {
        if TcpStream::connect(addr).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{addr} kept accepting connections after shutdown began");
}

#[tokio::test]
async fn shutdown_refuses_new_connections_but_finishes_a_request_in_flight() {
    let (router, mut started, release) = slow_router();
    let running = Running::start(router, &config(tls_config(TlsMode::None))).await;
    let addr = running.addr;
    let in_flight = tokio::spawn(get_plain(addr, "/slow"));
    started
        .recv()
        .await
        .expect("the slow request reached its handler");

    let stopping = running.begin_stop();
    until_refused(addr).await;
    release.send(()).unwrap();

    assert_eq!(in_flight.await.unwrap(), (200, "done".to_owned()));
    stopping.await.unwrap().expect("clean shutdown");
}

#[tokio::test]
async fn connections_still_open_after_the_grace_period_are_dropped() {
    let (router, mut started, _never_released) = slow_router();
    let server = Server::bind(router, &config(tls_config(TlsMode::None)))
        .await
        .unwrap()
        .with_grace_period(Duration::from_millis(50));
    let running = Running::start_bound(server).await;

    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    stream
        .write_all(request("/slow", "localhost").as_bytes())
        .await
        .unwrap();
    started
        .recv()
        .await
        .expect("the slow request reached its handler");

    running.stop().await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    assert!(
        response.is_empty(),
        "no response, the connection was dropped: {response:?}"
    );
}

// --- self-signed -----------------------------------------------------------------------------

const ED25519_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
const RSA_ENCRYPTION_OID: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];

async fn self_signed_server(alg: KeyAlg, fqdn: Option<&str>) -> Running {
    let tls = TlsConfig {
        fqdn: fqdn.map(str::to_owned),
        alg,
        ..tls_config(TlsMode::SelfSigned)
    };
    let server = Server::bind(hello_router(), &config(tls)).await.unwrap();
    assert_eq!(server.scheme(), "https");
    Running::start_bound(server).await
}

#[tokio::test]
async fn self_signed_rsa_certificate_names_localhost_and_the_loopback_addresses() {
    let running = self_signed_server(KeyAlg::Rsa, None).await;
    let cert = running.certificate.clone().expect("a certificate");
    assert!(contains(&cert, RSA_ENCRYPTION_OID), "an RSA key");

    for name in ["localhost", "127.0.0.1", "::1"] {
        let answer = get_tls(running.addr, &cert, name, "/hello").await;
        assert_eq!(answer.unwrap(), (200, "hello".to_owned()), "as {name}");
    }
    running.stop().await;
}

#[tokio::test]
async fn self_signed_ed25519_certificate_names_localhost_and_the_fqdn() {
    let running = self_signed_server(KeyAlg::Ed25519, Some("pacer.internal.example")).await;
    let cert = running.certificate.clone().expect("a certificate");
    assert!(contains(&cert, ED25519_OID), "an Ed25519 key");

    for name in ["pacer.internal.example", "localhost"] {
        let answer = get_tls(running.addr, &cert, name, "/hello").await;
        assert_eq!(answer.unwrap(), (200, "hello".to_owned()), "as {name}");
    }
    running.stop().await;
}

#[tokio::test]
async fn self_signed_certificate_does_not_name_other_hosts() {
    let running = self_signed_server(KeyAlg::Ed25519, None).await;
    let cert = running.certificate.clone().unwrap();
    let refused = get_tls(running.addr, &cert, "elsewhere.example", "/hello").await;
    assert!(
        matches!(
            refused,
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. }
            ))
        ),
        "{refused:?}"
    );
    running.stop().await;
}

#[test]
fn fingerprints_read_like_openssl_prints_them() {
    let identity = tls::self_signed(None, KeyAlg::Ed25519).unwrap();
    let fingerprint = tls::fingerprint(identity.leaf());
    assert_eq!(fingerprint.len(), 32 * 3 - 1);
    assert!(fingerprint.split(':').all(|byte| {
        byte.len() == 2
            && byte
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
    }));
}

// --- manual ----------------------------------------------------------------------------------

/// A CA and a leaf for localhost signed by it, written as PEM into `dir`.
struct ManualFiles {
    ca: CertificateDer<'static>,
    leaf: CertificateDer<'static>,
    cert: PathBuf,
    key: PathBuf,
}

fn write_manual_files(dir: &TempDir) -> ManualFiles {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();

    let cert = dir.0.join("fullchain.pem");
    let key = dir.0.join("privkey.pem");
    std::fs::write(&cert, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    ManualFiles {
        ca: ca.der().clone(),
        leaf: leaf.der().clone(),
        cert,
        key,
    }
}

fn manual_config(cert: PathBuf, key: PathBuf) -> ServerConfig {
    config(TlsConfig {
        cert: Some(cert),
        key: Some(key),
        ..tls_config(TlsMode::Manual)
    })
}

#[tokio::test]
async fn manual_mode_serves_the_chain_from_the_pem_files() {
    let dir = TempDir::new();
    let files = write_manual_files(&dir);
    let running = Running::start(hello_router(), &manual_config(files.cert, files.key)).await;
    assert_eq!(running.certificate.as_ref(), Some(&files.leaf));

    let answer = get_tls(running.addr, &files.ca, "localhost", "/hello").await;
    assert_eq!(answer.unwrap(), (200, "hello".to_owned()));
    running.stop().await;
}

#[tokio::test]
async fn manual_mode_serves_a_renewed_certificate_and_keeps_serving_through_a_bad_one() {
    // Given a server on the first CA's certificate, checking its files often
    let dir = TempDir::new();
    let first = write_manual_files(&dir);
    let server = Server::bind(
        hello_router(),
        &manual_config(first.cert.clone(), first.key.clone()),
    )
    .await
    .expect("bind")
    .with_tls_reload_interval(Duration::from_millis(50));
    let running = Running::start_bound(server).await;
    assert_eq!(
        get_tls(running.addr, &first.ca, "localhost", "/hello")
            .await
            .unwrap()
            .0,
        200
    );

    // When the files are rewritten with a half-written certificate, the server keeps the one it has
    std::fs::write(&first.cert, "-----BEGIN CERTIFICATE-----\nMIIB").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        get_tls(running.addr, &first.ca, "localhost", "/hello")
            .await
            .unwrap()
            .0,
        200
    );

    // And when a renewal (another CA, another key) lands, it serves that from the next handshake
    let renewed = write_manual_files(&dir);
    assert_eq!(
        (&renewed.cert, &renewed.key),
        (&first.cert, &first.key),
        "the same paths"
    );
    let mut served = false;
    for _ in 0..100 {
        if get_tls(running.addr, &renewed.ca, "localhost", "/hello")
            .await
            .is_ok()
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "the renewed certificate was never served");
    assert!(
        get_tls(running.addr, &first.ca, "localhost", "/hello")
            .await
            .is_err(),
        "the old CA no longer verifies it"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_missing_certificate_file_is_an_error_naming_it() {
    let dir = TempDir::new();
    let files = write_manual_files(&dir);
    let missing = dir.0.join("no-such-cert.pem");

    let err = Server::bind(hello_router(), &manual_config(missing.clone(), files.key))
        .await
        .err()
        .expect("an error");
    let message = format!("{err:#}");
    assert!(message.contains("server.tls.cert"), "{message}");
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
}

#[tokio::test]
async fn a_key_file_without_a_key_is_an_error_naming_it() {
    let dir = TempDir::new();
    let files = write_manual_files(&dir);

    let err = Server::bind(
        hello_router(),
        &manual_config(files.cert.clone(), files.cert.clone()),
    )
    .await
    .err()
    .unwrap();
    let message = format!("{err:#}");
    assert!(message.contains("server.tls.key"), "{message}");
    assert!(
        message.contains(&files.cert.display().to_string()),
        "{message}"
    );
}

#[tokio::test]
async fn a_key_that_does_not_fit_the_certificate_is_refused() {
    let dir = TempDir::new();
    let files = write_manual_files(&dir);
    let other_key = dir.0.join("other.pem");
    std::fs::write(
        &other_key,
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();

    let err = Server::bind(hello_router(), &manual_config(files.cert, other_key))
        .await
        .err()
        .unwrap();
    let message = format!("{err:#}");
    assert!(message.contains("does not fit"), "{message}");
    assert!(message.contains("other.pem"), "{message}");
}

#[tokio::test]
async fn manual_mode_without_paths_is_refused() {
    let err = Server::bind(hello_router(), &config(tls_config(TlsMode::Manual)))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("server.tls.cert"), "{err}");
}

// --- addresses -------------------------------------------------------------------------------

#[test]
fn listeners_read_addresses_as_the_configuration_defines_them() {
    for addr in [":3000", "127.0.0.1:3000", "[::1]:3000", "localhost:80"] {
        let cfg = ServerConfig {
            addr: addr.to_owned(),
            ..ServerConfig::default()
        };
        assert_eq!(bind_target(addr), cfg.bind_addr(), "{addr}");
    }
}

#[tokio::test]
async fn a_taken_port_is_an_error_naming_the_key() {
    let running = Running::start(hello_router(), &config(tls_config(TlsMode::None))).await;
    let mut cfg = config(tls_config(TlsMode::None));
    cfg.addr = running.addr.to_string();
    let err = Server::bind(hello_router(), &cfg).await.err().unwrap();
    assert!(err.to_string().contains("server.addr"), "{err}");
    running.stop().await;
}

// --- slow and idle clients -----------------------------------------------------------------

/// A deadline short enough to wait for in a test.
const SHORT: Duration = Duration::from_millis(250);
/// A deadline no test reaches.
const LONG: Duration = Duration::from_secs(300);
/// How long a test waits for what the server must do after a [`SHORT`] deadline: far longer,
/// so only a server that never does it fails.
const WITHIN: Duration = Duration::from_secs(5);

fn limited(
    tls: TlsConfig,
    header_read_timeout: Duration,
    request_timeout: Duration,
    max_connections: u32,
) -> ServerConfig {
    ServerConfig {
        header_read_timeout,
        request_timeout,
        max_connections,
        ..config(tls)
    }
}

/// A plain-HTTP server serving `router` within the given limits.
async fn plain_limited(
    router: Router,
    header_read_timeout: Duration,
    request_timeout: Duration,
    max_connections: u32,
) -> Running {
    let cfg = limited(
        tls_config(TlsMode::None),
        header_read_timeout,
        request_timeout,
        max_connections,
    );
    Running::start(router, &cfg).await
}

/// Reads until the server closes the connection, which must happen within [`WITHIN`]; returns
/// what it sent before closing.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    // A reset counts as closed as much as an orderly end does.
    let read = tokio::time::timeout(WITHIN, stream.read_to_end(&mut received)).await;
    assert!(
        read.is_ok(),
        "still open after {WITHIN:?}, having sent {:?}",
        String::from_utf8_lossy(&received)
    );
    received
}

/// Connections that have connected and sent `sent`, and then nothing more.
async fn stalled(addr: SocketAddr, count: usize, sent: &[u8]) -> Vec<TcpStream> {
    let mut streams = Vec::new();
    for _ in 0..count {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(sent).await.unwrap();
        streams.push(stream);
    }
    streams
}

/// `POST /webhook` answers 202 with the length of the body it read.
fn webhook_router() -> Router {
    Router::new().route(
        "/webhook",
        axum::routing::post(|body: axum::body::Bytes| async move {
            (axum::http::StatusCode::ACCEPTED, body.len().to_string())
        }),
    )
}

fn webhook_request(body: &str) -> String {
    format!(
        "POST /webhook HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

const HALF_A_REQUEST: &[u8] = b"GET /hello HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";

#[tokio::test]
async fn a_client_that_stops_halfway_through_its_headers_is_disconnected() {
    let running = plain_limited(hello_router(), SHORT, LONG, 16).await;

    let mut stalled = stalled(running.addr, 1, HALF_A_REQUEST).await;
    let received = until_closed(&mut stalled[0]).await;
    assert!(
        received.is_empty() || received.starts_with(b"HTTP/1.1 408"),
        "no answer but a timeout: {:?}",
        String::from_utf8_lossy(&received)
    );
    running.stop().await;
}

#[tokio::test]
async fn a_connection_that_never_sends_a_byte_is_disconnected() {
    let running = plain_limited(hello_router(), SHORT, LONG, 16).await;

    let mut silent = TcpStream::connect(running.addr).await.unwrap();
    assert_eq!(until_closed(&mut silent).await, b"");
    running.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_its_last_answer() {
    let running = plain_limited(hello_router(), SHORT, LONG, 16).await;

    // A request that asks to keep the connection open is answered...
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    // ...and the connection, left idle after it, is closed.
    let received = until_closed(&mut stream).await;
    assert_eq!(parse_response(&received), (200, "hello".to_owned()));
    running.stop().await;
}

/// The types of the HTTP/2 frames in `bytes`, a stream of whole frames.
fn http2_frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let length = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        types.push(bytes[3]);
        bytes = &bytes[(9 + length).min(bytes.len())..];
    }
    types
}

#[tokio::test]
async fn an_idle_http2_connection_is_sent_away_and_closed() {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];
    const GOAWAY: u8 = 7;
    let running = plain_limited(hello_router(), SHORT, LONG, 16).await;

    // A client that speaks HTTP/2 and then asks for nothing
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    stream.write_all(PREFACE).await.unwrap();
    stream.write_all(&EMPTY_SETTINGS).await.unwrap();

    // is told to go away, and then disconnected (it does not answer pings either).
    let received = until_closed(&mut stream).await;
    let frames = http2_frame_types(&received);
    assert!(frames.contains(&GOAWAY), "frame types received: {frames:?}");
    running.stop().await;
}

#[tokio::test]
async fn a_webhook_is_answered_while_slow_clients_hold_connections() {
    // Given slow clients holding connections, under the cap and far from any deadline
    let running = plain_limited(webhook_router(), LONG, LONG, 8).await;
    let slow = stalled(running.addr, 4, HALF_A_REQUEST).await;

    // When a webhook arrives, it is answered
    let body = r#"{"action":"queued"}"#;
    let webhook = webhook_request(body);
    let answer = tokio::time::timeout(WITHIN, fetch_plain(running.addr, &webhook)).await;
    let answer = answer.expect("the webhook was answered");
    assert_eq!(parse_response(&answer), (202, body.len().to_string()));

    drop(slow);
    running.stop().await;
}

#[tokio::test]
async fn a_body_that_trickles_in_is_cut_off_by_the_request_timeout() {
    let running = plain_limited(webhook_router(), LONG, SHORT, 16).await;

    // Complete headers announcing 1000 bytes of body, of which 10 arrive
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    let head = "POST /webhook HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(b"{\"action\":").await.unwrap();

    let received = until_closed(&mut stream).await;
    assert_eq!(parse_response(&received).0, 408);
    running.stop().await;
}

#[tokio::test]
async fn beyond_max_connections_a_new_connection_waits_until_another_closes() {
    // Given two connections, the cap, held by clients that send nothing
    let running = plain_limited(hello_router(), LONG, LONG, 2).await;
    let mut holders = stalled(running.addr, 2, b"").await;

    // When a third client sends a request, it is not answered while the cap is reached
    let mut third = TcpStream::connect(running.addr).await.unwrap();
    third
        .write_all(request("/hello", "localhost").as_bytes())
        .await
        .unwrap();
    // Half a second of silence: a server without the cap would answer at once, so a slow
    // machine can at worst let a broken server pass, never fail a working one.
    let mut first_byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut first_byte)).await;
    assert!(early.is_err(), "answered beyond the cap: {early:?}");

    // But once a holder leaves, it is served
    holders.pop();
    let received = until_closed(&mut third).await;
    assert_eq!(parse_response(&received), (200, "hello".to_owned()));

    drop(holders);
    running.stop().await;
}

/// The first bytes of a TLS ClientHello: a handshake record announcing 512 bytes that never come.
const HALF_A_CLIENT_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01];

/// A self-signed TLS server serving `router` within the given limits.
async fn self_signed_limited(
    router: Router,
    header_read_timeout: Duration,
    request_timeout: Duration,
    max_connections: u32,
) -> Running {
    let tls = TlsConfig {
        alg: KeyAlg::Ed25519,
        ..tls_config(TlsMode::SelfSigned)
    };
    let cfg = limited(tls, header_read_timeout, request_timeout, max_connections);
    Running::start(router, &cfg).await
}

#[tokio::test]
async fn a_tls_client_that_never_finishes_its_handshake_is_disconnected() {
    let running = self_signed_limited(hello_router(), SHORT, LONG, 16).await;

    let mut stalled = stalled(running.addr, 1, HALF_A_CLIENT_HELLO).await;
    until_closed(&mut stalled[0]).await;
    running.stop().await;
}

#[tokio::test]
async fn a_stalled_tls_handshake_holds_its_slot_only_until_its_deadline() {
    // Given the only slot taken by a handshake that stalls
    let running = self_signed_limited(hello_router(), SHORT, LONG, 1).await;
    let mut stalled = stalled(running.addr, 1, HALF_A_CLIENT_HELLO).await;

    // When a real client connects, it is served once the stalled one is cut off
    let cert = running.certificate.clone().unwrap();
    let answer = get_tls(running.addr, &cert, "localhost", "/hello");
    let answer = tokio::time::timeout(WITHIN, answer)
        .await
        .expect("served in time");
    assert_eq!(answer.unwrap(), (200, "hello".to_owned()));
    until_closed(&mut stalled[0]).await;
    running.stop().await;
}

// --- HSTS ------------------------------------------------------------------------------------

const HSTS_FOR_A_YEAR: &str = "max-age=31536000";

/// The value of header `name` in a raw HTTP/1.1 response.
fn header_value(response: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(response);
    let (head, _) = text.split_once("\r\n\r\n")?;
    head.lines().find_map(|line| {
        let (field, value) = line.split_once(':')?;
        field
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

#[tokio::test]
async fn every_answer_over_tls_carries_hsts_a_timeout_included() {
    let router = hello_router().merge(webhook_router());
    let running = self_signed_limited(router, LONG, SHORT, 16).await;
    let cert = running.certificate.clone().unwrap();

    let trickling = "POST /webhook HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n{";
    for (request, status) in [
        (request("/hello", "localhost"), 200),
        (request("/no-such-page", "localhost"), 404),
        (trickling.to_owned(), 408),
    ] {
        let response = fetch_tls(running.addr, &cert, "localhost", request)
            .await
            .unwrap();
        assert_eq!(parse_response(&response).0, status);
        let hsts = header_value(&response, "strict-transport-security");
        assert_eq!(hsts.as_deref(), Some(HSTS_FOR_A_YEAR), "on the {status}");
    }
    running.stop().await;
}

#[tokio::test]
async fn manual_tls_answers_carry_hsts() {
    let dir = TempDir::new();
    let files = write_manual_files(&dir);
    let running = Running::start(hello_router(), &manual_config(files.cert, files.key)).await;

    let response = fetch_tls(
        running.addr,
        &files.ca,
        "localhost",
        request("/hello", "localhost"),
    );
    let hsts = header_value(&response.await.unwrap(), "strict-transport-security");
    assert_eq!(hsts.as_deref(), Some(HSTS_FOR_A_YEAR));
    running.stop().await;
}

#[tokio::test]
async fn plain_http_answers_carry_no_hsts_even_behind_an_https_public_url() {
    // TLS is then the proxy's, and so is the policy that comes with it.
    let cfg = ServerConfig {
        public_url: Some("https://pacer.example.com".parse().unwrap()),
        ..config(tls_config(TlsMode::None))
    };
    let running = Running::start(hello_router(), &cfg).await;

    let response = fetch_plain(running.addr, &request("/hello", "localhost")).await;
    assert_eq!(parse_response(&response), (200, "hello".to_owned()));
    assert_eq!(header_value(&response, "strict-transport-security"), None);
    running.stop().await;
}

fn body_router() -> Router {
    Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route(
            "/read",
            axum::routing::post(|body: String| async move { format!("read {}", body.len()) }),
        )
        .route(
            "/refuse",
            axum::routing::post(|| async { (axum::http::StatusCode::UNAUTHORIZED, "no") }),
        )
}

/// Reads one answer (with a `Content-Length` body) off a connection that stays open.
async fn one_answer(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(WITHIN, stream.read(&mut byte)).await;
        assert_eq!(read.expect("an answer").unwrap(), 1, "closed mid-answer");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let line = line.to_ascii_lowercase();
            line.strip_prefix("content-length: ")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("content-length");
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.unwrap();
    head + &String::from_utf8(body).unwrap()
}

fn post(path: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello")
}

/// A refusal that leaves the body unread ends the connection (the rest of the body cannot be told
/// from a next request). A client not told so sends its next request on a connection already
/// closing, and sees it fail: the answer says `Connection: close`.
#[tokio::test]
async fn an_answer_before_the_body_was_read_says_the_connection_closes() {
    let running = plain_limited(body_router(), LONG, LONG, 16).await;
    let mut stream = TcpStream::connect(running.addr).await.unwrap();

    // A body read to its end: the connection stays open for the next request...
    stream.write_all(post("/read").as_bytes()).await.unwrap();
    let answer = one_answer(&mut stream).await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("read 5"),
        "{answer}"
    );
    assert!(
        !answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    // ...a request without a body too...
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let answer = one_answer(&mut stream).await;
    assert!(answer.ends_with("hello"), "{answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    // ...and a refusal before reading says the connection closes, then closes it.
    stream.write_all(post("/refuse").as_bytes()).await.unwrap();
    let answer = String::from_utf8(until_closed(&mut stream).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "the client is told: {answer}"
    );
    running.stop().await;
}
