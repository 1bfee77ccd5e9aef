//! A test's own HTTP server: on 127.0.0.1, on a free port, stopped by the
//! test (gracefully, waiting for it) or, if the test panics first, on drop.
//!
//! ```text
//! let bound = Loopback::bind().await;          // the URL is known first…
//! let app = router_that_names(&bound.url);
//! let server = bound.serve(app);               // …then the app is served
//! // …
//! server.stop().await;
//! ```

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A free loopback port, bound and not yet served.
pub struct Bound {
    listener: TcpListener,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

/// An app being served on 127.0.0.1.
pub struct Loopback {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl Loopback {
    pub async fn bind() -> Bound {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a free port on 127.0.0.1");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        Bound { listener, url }
    }

    /// Stops accepting, lets requests in flight finish, and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("the loopback server ran");
        }
    }
}

impl Bound {
    pub fn serve(self, app: axum::Router) -> Loopback {
        let (stop, stopped) = oneshot::channel::<()>();
        let listener = self.listener;
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .expect("the loopback server serves");
        });
        Loopback {
            url: self.url,
            stop: Some(stop),
            server: Some(server),
        }
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
