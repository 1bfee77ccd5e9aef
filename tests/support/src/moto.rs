//! A private `moto_server` for one test or benchmark: AWS APIs (DynamoDB,
//! SQS, EC2, …) on 127.0.0.1, on a free port, stopped when the [`Moto`] is
//! dropped.
//!
//! One server per test rather than one per test binary: it answers in about
//! half a second, a shared one would need a static that is never dropped
//! (so the process would outlive the tests), and a private one keeps every
//! test's data to itself.
//!
//! moto_server handles each request on its own thread with no lock around
//! its backends, so two writes to one DynamoDB item interleave: a
//! conditional `active_runners < max_runners` increment can pass twice at
//! `max - 1`, and an increment racing another UpdateItem of the item can be
//! lost (measured: the 50-reserver conformance case failed 2 runs in 40).
//! DynamoDB applies each write to an item atomically, so the harness makes
//! moto handle one DynamoDB request at a time, through a `sitecustomize`
//! hook on PYTHONPATH that wraps moto's WSGI app in a lock
//! ([`SERIALISE_HOOK`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_dynamodb::config::{Credentials, Region};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::free_port;

/// Loaded by Python at start (as `sitecustomize`): wraps the WSGI app that
/// moto hands to werkzeug's `run_simple` so DynamoDB requests run one at a
/// time. Only DynamoDB's: an SQS long poll holds its request open for
/// seconds and must not stall everything else. Every response carries
/// [`HOOK_HEADER`], so the harness knows the hook is in place.
const SERIALISE_HOOK: &str = r#"# Written by pacer's test harness (tests/support/src/moto.rs).
import threading
import werkzeug.serving as _serving

_run_simple = _serving.run_simple


def _serialised_run_simple(hostname, port, application, *args, **kwargs):
    lock = threading.Lock()

    def serialised(environ, start_response):
        def marked(status, headers, exc_info=None):
            return start_response(status, headers + [("X-Pacer-Serialised", "dynamodb")], exc_info)

        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return application(environ, marked)
        with lock:
            return list(application(environ, marked))

    return _run_simple(hostname, port, serialised, *args, **kwargs)


_serving.run_simple = _serialised_run_simple
"#;

const HOOK_HEADER: &str = "x-pacer-serialised";

/// How long a starting moto_server may take to answer before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_EVERY: Duration = Duration::from_millis(50);

pub struct Moto {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    child: Child,
    log_path: PathBuf,
}

impl Moto {
    /// Starts moto_server and waits until it answers HTTP. Panics (never
    /// skips) when moto_server is missing or does not come up.
    pub async fn start() -> Moto {
        let bin = moto_server_bin();
        let port = free_port();
        let log_path = log_dir().join(format!("moto-{port}.log"));
        let log = std::fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("cannot create the moto log {}: {e}", log_path.display()));
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("PYTHONPATH", python_path(&serialise_hook_dir(port)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the moto log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut moto = Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
            log_path,
        };
        moto.wait_until_ready(port).await;
        moto
    }

    async fn wait_until_ready(&mut self, port: u16) {
        let log_path = self.log_path.clone();
        let tries = START_TIMEOUT.as_millis() / POLL_EVERY.as_millis();
        for _ in 0..tries {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "moto_server exited with {status} before answering; see {}",
                    log_path.display()
                );
            }
            match answers_http(port).await {
                Some(head) if head.to_ascii_lowercase().contains(HOOK_HEADER) => return,
                Some(_) => panic!(
                    "{} answers without the harness's serialising hook (was PYTHONPATH dropped?); \
                     concurrent DynamoDB writes would not be atomic",
                    self.endpoint
                ),
                None => {}
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
        panic!(
            "moto_server did not answer on port {port} within {START_TIMEOUT:?}; see {}",
            log_path.display()
        );
    }

    /// SDK configuration for this server: us-east-1, static test
    /// credentials, every client's endpoint pointed at moto.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        // pacer's own SDK settings, as its functions build their clients.
        pacer_shared::runtime::sdk_settings(aws_config::defaults(
            aws_config::BehaviorVersion::latest(),
        ))
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .endpoint_url(&self.endpoint)
        .load()
        .await
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The log only matters when the test failed.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}

/// `MOTO_SERVER_BIN`, else the workspace's `.venv/bin/moto_server`.
fn moto_server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("MOTO_SERVER_BIN") {
        return PathBuf::from(bin);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = workspace.join(".venv/bin/moto_server");
    if venv.is_file() {
        return venv;
    }
    panic!(
        "moto_server not found: set MOTO_SERVER_BIN, or run `make test` (or `make test-deps`) to install it into {}",
        venv.display()
    );
}

/// A directory holding only the `sitecustomize.py` hook. Written to a
/// unique name and renamed, so tests starting together never read half a file.
fn serialise_hook_dir(port: u16) -> PathBuf {
    let dir = log_dir().join("pyhooks");
    std::fs::create_dir_all(&dir).expect("create the moto hook directory");
    let hook = dir.join("sitecustomize.py");
    if std::fs::read_to_string(&hook).ok().as_deref() != Some(SERIALISE_HOOK) {
        let partial = dir.join(format!("sitecustomize.py.{}.{port}", std::process::id()));
        std::fs::write(&partial, SERIALISE_HOOK).expect("write the moto hook");
        std::fs::rename(&partial, &hook).expect("install the moto hook");
    }
    dir
}

/// `dir` first, then whatever PYTHONPATH already held.
fn python_path(dir: &Path) -> std::ffi::OsString {
    let mut paths = vec![dir.to_path_buf()];
    if let Some(existing) = std::env::var_os("PYTHONPATH") {
        paths.extend(std::env::split_paths(&existing));
    }
    std::env::join_paths(paths).expect("a PYTHONPATH")
}

/// `<target>/tmp/moto`, where the black-box tests always kept the logs.
fn log_dir() -> PathBuf {
    crate::scratch_dir("moto")
}

/// The response head of an HTTP server on the port, if one answers. A bare
/// HTTP/1.0 request over TCP: the readiness check needs no HTTP client (or
/// TLS provider).
async fn answers_http(port: u16) -> Option<String> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        stream
            .write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .ok()?;
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            match stream.read(&mut buf).await.ok()? {
                0 => break,
                n => head.extend_from_slice(&buf[..n]),
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        head.starts_with("HTTP/1.").then_some(head)
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
}

/// A place in moto's EC2 to launch runners: a VPC with two subnets in two
/// zones (4,091 addresses each: moto fails a launch into a full subnet
/// with a bare 500), a security group in it, and an x86_64 AMI from moto's
/// catalogue.
pub struct Ec2Network {
    pub vpc: String,
    pub subnets: [String; 2],
    pub zones: [String; 2],
    pub sg: String,
    pub ami: String,
}

impl Ec2Network {
    /// Creates the VPC, its subnets and its group through `ec2`, and picks
    /// the AMI.
    pub async fn create(ec2: &pacer_shared::fleet::ec2::sdk::Client) -> Ec2Network {
        use pacer_shared::fleet::ec2::sdk::types::Filter;
        let vpc = ec2
            .create_vpc()
            .cidr_block("10.0.0.0/16")
            .send()
            .await
            .expect("CreateVpc")
            .vpc
            .and_then(|v| v.vpc_id)
            .expect("a VPC id");
        let zones = ["us-east-1a".to_string(), "us-east-1b".to_string()];
        let mut subnets = Vec::new();
        for (cidr, zone) in ["10.0.0.0/20", "10.0.16.0/20"].into_iter().zip(&zones) {
            let created = ec2
                .create_subnet()
                .vpc_id(&vpc)
                .cidr_block(cidr)
                .availability_zone(zone)
                .send()
                .await
                .expect("CreateSubnet");
            subnets.push(
                created
                    .subnet
                    .and_then(|s| s.subnet_id)
                    .expect("a subnet id"),
            );
        }
        let sg = ec2
            .create_security_group()
            .group_name("runners")
            .description("pacer runners")
            .vpc_id(&vpc)
            .send()
            .await
            .expect("CreateSecurityGroup")
            .group_id
            .expect("a group id");
        let images = ec2
            .describe_images()
            .owners("amazon")
            .filters(
                Filter::builder()
                    .name("architecture")
                    .values("x86_64")
                    .build(),
            )
            .send()
            .await
            .expect("DescribeImages");
        let ami = images
            .images()
            .iter()
            .find(|i| i.root_device_name() == Some("/dev/xvda"))
            .or(images.images().first())
            .and_then(|i| i.image_id())
            .expect("moto ships x86_64 AMIs")
            .to_string();
        Ec2Network {
            vpc,
            subnets: [subnets[0].clone(), subnets[1].clone()],
            zones,
            sg,
            ami,
        }
    }
}
