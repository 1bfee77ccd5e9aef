//! A private pebble — Debian's ACME test CA — for one test: on 127.0.0.1, on free ports, killed
//! when the [`Pebble`] is dropped.
//!
//! Pebble validates HTTP-01 for real. It resolves every host through `pebble-challtestsrv`, a
//! fake DNS that answers 127.0.0.1 for any name, and fetches
//! `http://<host>:<http01_port>/.well-known/acme-challenge/<token>`: the server under test must
//! listen for challenges on [`Pebble::http01_port`]. Pebble's own API speaks only HTTPS, with a
//! certificate from a CA made here ([`Pebble::listener_ca`]); the certificates it *issues* chain
//! to another root, made afresh by every pebble and fetched with [`Pebble::issuing_root`].

use std::fs::File;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Certificate, Url};
use serde_json::json;
use tempfile::TempDir;

const PEBBLE: &str = "/usr/bin/pebble";
const CHALLTESTSRV: &str = "/usr/bin/pebble-challtestsrv";

/// How long pebble and its DNS may take to listen (they usually take well under a second).
const START_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_EVERY: Duration = Duration::from_millis(20);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Pebble {
    ports: Ports,
    listener_ca: PathBuf,
    // Fields drop in order: pebble stops before its DNS, and both before their files go.
    pebble: Process,
    dns: Process,
    _dir: TempDir,
}

impl Pebble {
    /// Starts pebble-challtestsrv and pebble, and waits until both listen. Panics (never skips)
    /// when pebble is not installed or does not come up.
    pub async fn start() -> Pebble {
        let pebble_bin = installed(PEBBLE);
        let challtestsrv_bin = installed(CHALLTESTSRV);
        pacer_shared::http_client::install_crypto_provider();

        let dir = tempfile::tempdir().expect("a temporary directory for pebble");
        let tls = ListenerTls::write(dir.path());
        let ports = Ports::pick();

        let dns = Process::spawn(
            "pebble-challtestsrv",
            Command::new(challtestsrv_bin).args([
                "-dns01",
                &format!("127.0.0.1:{}", ports.dns),
                "-management",
                &format!("127.0.0.1:{}", ports.dns_management),
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                // Pebble does the challenges against the server under test, not against this.
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ]),
            log_dir().join(format!("challtestsrv-{}.log", ports.dns)),
        );

        let config = dir.path().join("pebble.json");
        let config_json = json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{}", ports.acme),
            "managementListenAddress": format!("127.0.0.1:{}", ports.management),
            "certificate": tls.cert,
            "privateKey": tls.key,
            "httpPort": ports.http01,
            // Where pebble would dial for TLS-ALPN-01, which pacer never answers.
            "tlsPort": ports.tls_alpn01,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        std::fs::write(&config, config_json.to_string()).expect("write pebble.json");

        let mut command = Command::new(pebble_bin);
        command
            .arg("-config")
            .arg(&config)
            .args(["-dnsserver", &format!("127.0.0.1:{}", ports.dns)]);
        // No inherited tuning: PEBBLE_VA_ALWAYS_VALID, for one, would skip the validation
        // these tests are about.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PEBBLE_") {
                command.env_remove(key);
            }
        }
        command
            // Validate at once instead of after a random 0–15 s pause.
            .env("PEBBLE_VA_NOSLEEP", "1")
            // Never reject a good nonce on purpose (by default 5% are, to test client retries).
            .env("PEBBLE_WFE_NONCEREJECT", "0");
        let pebble = Process::spawn(
            "pebble",
            &mut command,
            log_dir().join(format!("pebble-{}.log", ports.acme)),
        );

        let mut pebble = Pebble {
            ports,
            listener_ca: tls.ca,
            pebble,
            dns,
            _dir: dir,
        };
        pebble.wait_until_listening().await;
        pebble
    }

    async fn wait_until_listening(&mut self) {
        let ports = [
            self.ports.acme,
            self.ports.management,
            self.ports.dns_management,
        ];
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.dns.assert_running();
            self.pebble.assert_running();
            if listening(&ports).await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "pebble did not listen on {ports:?} within {START_TIMEOUT:?}; see {} and {}",
                self.pebble.log.display(),
                self.dns.log.display(),
            );
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// The ACME directory: what `server.tls.acme.directory_url` names.
    pub fn directory_url(&self) -> Url {
        let url = format!("https://127.0.0.1:{}/dir", self.ports.acme);
        Url::parse(&url).expect("a valid directory URL")
    }

    /// The PEM file of the CA behind pebble's own HTTPS listeners: what a client of its API
    /// trusts (`server.tls.acme.ca_cert`).
    pub fn listener_ca(&self) -> &Path {
        &self.listener_ca
    }

    /// The port pebble fetches HTTP-01 responses from.
    pub fn http01_port(&self) -> u16 {
        self.ports.http01
    }

    /// The root the certificates this pebble issues chain to, from its management API.
    pub async fn issuing_root(&self) -> Certificate {
        let ca = std::fs::read(&self.listener_ca).expect("read the listener CA");
        let client = reqwest::Client::builder()
            .no_proxy()
            .tls_built_in_root_certs(false)
            .add_root_certificate(Certificate::from_pem(&ca).expect("the listener CA is PEM"))
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("an HTTPS client for pebble's management API");
        let url = format!("https://127.0.0.1:{}/roots/0", self.ports.management);
        let pem = async {
            client
                .get(&url)
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await
        }
        .await
        .unwrap_or_else(|err| panic!("GET {url}: {err}; see {}", self.pebble.log.display()));
        Certificate::from_pem(&pem).expect("pebble's root is PEM")
    }
}

/// Where the processes write their output; kept after the test, for a failure's post-mortem.
pub fn log_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pebble");
    std::fs::create_dir_all(&dir).expect("create the pebble log directory");
    dir
}

fn installed(path: &'static str) -> &'static str {
    assert!(
        Path::new(path).is_file(),
        "{path} not found: the ACME tests need Debian's `pebble` package. Run `make test`, \
         whose test-deps step installs it (or `apt-get install -y pebble`)",
    );
    path
}

/// Whether something accepts TCP connections on every one of `ports`.
async fn listening(ports: &[u16]) -> bool {
    for &port in ports {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            return false;
        }
    }
    true
}

/// A child process, killed and reaped on drop.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(name: &'static str, command: &mut Command, log: PathBuf) -> Process {
        let file = File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create the log {}: {e}", log.display()));
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone the log handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Process { name, child, log }
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited with {status}; see {}",
                self.name,
                self.log.display()
            );
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Distinct free ports on 127.0.0.1.
struct Ports {
    acme: u16,
    management: u16,
    http01: u16,
    tls_alpn01: u16,
    /// Free for both UDP and TCP: the fake DNS listens on both.
    dns: u16,
    dns_management: u16,
}

impl Ports {
    /// Every socket stays bound until all ports are picked, so no two are the same; they are
    /// released together for the processes to bind.
    fn pick() -> Ports {
        let mut held = Vec::new();
        let mut tcp = || {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port on 127.0.0.1");
            let port = listener.local_addr().expect("local address").port();
            held.push(listener);
            port
        };
        let ports = Ports {
            acme: tcp(),
            management: tcp(),
            http01: tcp(),
            tls_alpn01: tcp(),
            dns_management: tcp(),
            dns: free_udp_and_tcp_port(),
        };
        drop(held);
        ports
    }
}

fn free_udp_and_tcp_port() -> u16 {
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind a free UDP port on 127.0.0.1");
        let port = udp.local_addr().expect("local address").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port on 127.0.0.1 free for both UDP and TCP after 20 tries");
}

/// The certificate pebble's HTTPS listeners present (for `127.0.0.1` and `localhost`), signed
/// by a CA made for this one pebble.
struct ListenerTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl ListenerTls {
    fn write(dir: &Path) -> ListenerTls {
        let ca_key = rcgen::KeyPair::generate().expect("a CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pacer tests: pebble listener CA");
        let ca = ca_params.self_signed(&ca_key).expect("a self-signed CA");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let key = rcgen::KeyPair::generate().expect("a listener key");
        let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let cert = rcgen::CertificateParams::new(names)
            .expect("listener params")
            .signed_by(&key, &issuer)
            .expect("a listener certificate");

        let tls = ListenerTls {
            ca: dir.join("listener-ca.pem"),
            cert: dir.join("listener-cert.pem"),
            key: dir.join("listener-key.pem"),
        };
        std::fs::write(&tls.ca, ca.pem()).expect("write the listener CA");
        std::fs::write(&tls.cert, cert.pem()).expect("write the listener certificate");
        std::fs::write(&tls.key, key.serialize_pem()).expect("write the listener key");
        tls
    }
}
