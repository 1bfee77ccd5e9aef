//! Accepting connections on a listener and serving HTTP on them within the limits set under
//! `server.`, so that slow or idle clients cannot hold the listener's capacity: the main listener
//! and ACME's HTTP-01 listener both run here.
//!
//! - At most `max_connections` connections are served at once. At the cap pacer stops accepting:
//!   new connections wait in the system's listen queue, costing pacer nothing, and are served as
//!   others close. Waiting rather than refusing means a burst is answered late rather than lost
//!   (GitHub does not retry a failed webhook delivery by itself), while a flood still cannot
//!   exhaust memory or file descriptors.
//! - A connection gets `header_read_timeout` for its TLS handshake, and the same again, each time
//!   it has no request in flight (just accepted, or its last request answered), to send the next
//!   request's headers. Otherwise it is closed. hyper enforces this on HTTP/1 headers itself; a
//!   watchdog per connection covers what hyper does not: a client that sends nothing at all
//!   (hyper's protocol detection has no deadline) and an idle HTTP/2 connection.
//! - HTTP/2 peers are pinged every `header_read_timeout` and dropped when an answer takes longer.
//! - A request gets `request_timeout` from its complete headers to its answer, reading its body
//!   included; past it the client gets 408, and a connection with body left unread is closed.
//! - A connection asked to close (idle, or at shutdown) finishes the answers it has started;
//!   one still busy `request_timeout` later (a client that stopped reading) is dropped.
//! - An answer given before its request's body was read to the end (a refusal: 401, 413, 415)
//!   says `Connection: close`, and the connection closes after it: the unread rest of the body
//!   cannot be told apart from a next request. Saying so keeps a client from sending its next
//!   request on a connection that is already closing.
//! - On a TLS listener every response carries `Strict-Transport-Security`, so browsers come back
//!   over HTTPS only. A plain listener never sends it: behind a proxy that terminates TLS, the
//!   proxy owns that policy.
//!
//! On shutdown the listener closes at once, requests in flight get the grace period to finish,
//! and connections still open after it are dropped.

use std::future::{Future, pending};
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::HttpBody;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::AddExtension;
use axum::{Extension, Router};
use axum_server::accept::Accept;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use http_body::{Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tower::Layer;
use tower::util::MapFuture;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tracing::{debug, info, warn};

use crate::config::ServerConfig;

/// One year, the usual lifetime of an HSTS policy; every response renews it.
const HSTS: &str = "max-age=31536000";

/// What a listener allows its connections; see the module docs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
}

impl Limits {
    pub fn of(cfg: &ServerConfig) -> Self {
        let max_connections = usize::try_from(cfg.max_connections).unwrap_or(usize::MAX);
        Self {
            header_read_timeout: cfg.header_read_timeout,
            request_timeout: cfg.request_timeout,
            max_connections: max_connections.min(Semaphore::MAX_PERMITS),
        }
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `shutdown` resolves, then
/// drains as the module docs say. Handlers see the peer as `ConnectInfo<SocketAddr>`.
pub(super) async fn serve(
    listener: TcpListener,
    tls: Option<RustlsConfig>,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    grace_period: Duration,
) {
    let timeout =
        TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limits.request_timeout);
    let mut app = app
        .layer(timeout)
        .layer(axum::middleware::from_fn(close_if_body_unread));
    if tls.is_some() {
        // Outermost, so that answers from the layers inside (a 408) carry it too.
        let hsts = HeaderValue::from_static(HSTS);
        app = app.layer(SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            hsts,
        ));
    }
    let handshake =
        tls.map(|config| RustlsAcceptor::new(config).handshake_timeout(limits.header_read_timeout));
    let builder = Arc::new(http_builder(&limits));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();

    let mut shutdown = pin!(shutdown);
    loop {
        let (slot, stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            // Reaps finished connections, which also frees their slots for `accept`.
            Some(_) = connections.join_next() => continue,
            accepted = accept(&listener, &slots) => accepted,
        };
        let service = Extension(ConnectInfo(peer)).layer(app.clone());
        let connection = Connection {
            peer,
            builder: builder.clone(),
            limits,
            stopping: stopping.clone(),
        };
        connections.spawn(connection.serve(stream, handshake.clone(), service, slot));
    }

    drop(listener);
    stop.send_replace(true);
    info!(
        open_connections = connections.len(),
        ?grace_period,
        "shutting down: no new connections, letting requests in flight finish",
    );
    let drained = tokio::time::timeout(grace_period, async {
        while connections.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        warn!(
            open_connections = connections.len(),
            ?grace_period,
            "grace period over; dropping the connections still open",
        );
        connections.shutdown().await;
    }
    info!("server stopped");
}

/// Waits for a free slot, then for a connection to fill it.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> (OwnedSemaphorePermit, TcpStream, SocketAddr) {
    loop {
        // The semaphore is never closed.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return pending().await;
        };
        match listener.accept().await {
            Ok((stream, peer)) => return (slot, stream, peer),
            // A peer that gave up before being accepted costs nothing.
            Err(err) if is_peer_gone(&err) => {}
            // Out of file descriptors or memory: retrying at once would only spin.
            Err(err) => {
                warn!(error = %crate::error_text::display_chain(&err), "accepting a connection failed; trying again in a second");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn is_peer_gone(err: &io::Error) -> bool {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        err.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused
    )
}

/// HTTP/1 and HTTP/2 (chosen by ALPN, or by the client's first bytes over plain HTTP) with the
/// deadlines hyper can enforce itself.
fn http_builder(limits: &Limits) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.header_read_timeout)
        .keep_alive_timeout(limits.header_read_timeout);
    builder
}

/// One accepted connection and what it needs to be served.
struct Connection {
    peer: SocketAddr,
    builder: Arc<Builder<TokioExecutor>>,
    limits: Limits,
    stopping: watch::Receiver<bool>,
}

impl Connection {
    /// Serves the connection to its end, holding `slot` until then.
    async fn serve(
        mut self,
        stream: TcpStream,
        handshake: Option<RustlsAcceptor>,
        service: PeerService,
        slot: OwnedSemaphorePermit,
    ) {
        let _slot = slot;
        let Some(handshake) = handshake else {
            return self.serve_http(stream, service).await;
        };
        let shaken = tokio::select! {
            shaken = handshake.accept(stream, ()) => shaken,
            () = stopped(&mut self.stopping) => return,
        };
        match shaken {
            Ok((stream, ())) => self.serve_http(stream, service).await,
            // Scanners, clients that distrust the certificate, and handshakes over the deadline.
            Err(err) => {
                debug!(peer = %self.peer, error = %crate::error_text::display_chain(&err), "TLS handshake failed")
            }
        }
    }

    async fn serve_http<I>(mut self, io: I, service: PeerService)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (in_flight, mut watched) = watch::channel(0usize);
        let in_flight = InFlight(Arc::new(in_flight));
        let service = MapFuture::new(service, move |answer| in_flight.track(answer));
        let connection = self
            .builder
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
        let mut connection = pin!(connection);

        let idle = idle_for(&mut watched, self.limits.header_read_timeout);
        let reason = tokio::select! {
            result = connection.as_mut() => return self.ended(result),
            () = idle => "idle",
            () = stopped(&mut self.stopping) => "shutdown",
        };
        debug!(peer = %self.peer, reason, "closing the connection");
        connection.as_mut().graceful_shutdown();
        match tokio::time::timeout(self.limits.request_timeout, connection).await {
            Ok(result) => self.ended(result),
            Err(_) => {
                debug!(peer = %self.peer, "dropping a connection that did not finish closing")
            }
        }
    }

    fn ended(&self, result: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
        // Timeouts and clients that hang up land here: worth a debug line, not a warning.
        if let Err(err) = result {
            debug!(peer = %self.peer, error = %crate::error_text::display_chain(&*err), "connection ended with an error");
        }
    }
}

/// What one connection serves: the router, with the peer attached to every request.
type PeerService = AddExtension<Router, ConnectInfo<SocketAddr>>;

/// The number of requests of one connection whose answer has not started yet.
#[derive(Clone)]
struct InFlight(Arc<watch::Sender<usize>>);

impl InFlight {
    /// Counts `answer` as in flight until it resolves or is dropped.
    fn track<F: Future>(&self, answer: F) -> impl Future<Output = F::Output> + use<F> {
        self.0.send_modify(|count| *count += 1);
        let done = Done(self.0.clone());
        async move {
            let output = answer.await;
            drop(done);
            output
        }
    }
}

struct Done(Arc<watch::Sender<usize>>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.send_modify(|count| *count = count.saturating_sub(1));
    }
}

/// Resolves once the server begins to stop.
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    // An error means the server is gone, which counts as stopping.
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// Resolves once the connection has had no request in flight for `limit`.
async fn idle_for(in_flight: &mut watch::Receiver<usize>, limit: Duration) {
    loop {
        let busy = *in_flight.borrow_and_update() > 0;
        let changed = in_flight.changed();
        if busy {
            // The clock starts again when the last answer has started.
            if changed.await.is_err() {
                return;
            }
        } else if !matches!(tokio::time::timeout(limit, changed).await, Ok(Ok(()))) {
            return;
        }
    }
}

/// Answers `Connection: close` when the handler answered without reading its request's body to
/// the end (see the module docs). HTTP/2 has no such header: there a stream ends on its own.
async fn close_if_body_unread(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if request.version() >= axum::http::Version::HTTP_2 || request.body().is_end_stream() {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let finished = Arc::new(AtomicBool::new(false));
    let body = axum::body::Body::new(Watched {
        inner: body,
        finished: finished.clone(),
    });
    let mut response = next
        .run(axum::extract::Request::from_parts(parts, body))
        .await;
    if !finished.load(Ordering::Relaxed) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A request body that notes when it has been read to its end.
struct Watched {
    inner: axum::body::Body,
    finished: Arc<AtomicBool>,
}

impl HttpBody for Watched {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.finished.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
