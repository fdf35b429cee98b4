//! Accepting connections: plain TCP or TLS, HTTP/1.1 and HTTP/2 on the same port,
//! graceful shutdown (stop accepting, finish in-flight requests, close the engine).
//!
//! Connections are bounded like a front-line server's: at most `connections_max` open,
//! at most `connections_per_client_max` from one address, and past either a new
//! connection gets an immediate 503 and is closed (never a silent wait in the listen
//! backlog). A connection must send a whole request head within `header_timeout_s`
//! (a silent or trickling client is closed), an idle keep-alive connection is closed
//! after `idle_timeout_s`, and heads are limited in count and size.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

use crate::app::App;
use crate::config::Config;

/// How long shutdown waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections the kernel may hold before they are accepted; accepting is fast (a
/// refusal is a write and a close), so this only absorbs bursts.
const LISTEN_BACKLOG: u32 = 4096;
/// Most bytes buffered for a request head. The header fields are limited by hyper's
/// own default, 100 (431 past it): set explicitly, even to 100, hyper fills a 100-slot
/// array twice for every request head it parses (`SmallVec::from_elem`, 2% of the HTTP
/// workers' samples answering sold-out purchases), where its default leaves them
/// uninitialised.
const HEAD_BYTES_MAX: usize = 64 * 1024;
/// Open connections, in all and per client address.
struct Gate {
    total: usize,
    per_client: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; its place is given back on drop.
struct Admission {
    gate: Arc<Gate>,
    client: IpAddr,
}

impl Gate {
    fn admit(self: &Arc<Gate>, client: IpAddr) -> Option<Admission> {
        let mut open = self.open.lock();
        let (total, per_client) = &mut *open;
        let mine = per_client.entry(client).or_insert(0);
        if *total >= self.total || *mine >= self.per_client {
            if *mine == 0 {
                per_client.remove(&client);
            }
            return None;
        }
        *mine += 1;
        *total += 1;
        Some(Admission { gate: self.clone(), client })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut open = self.gate.open.lock();
        let (total, per_client) = &mut *open;
        *total -= 1;
        if let Some(mine) = per_client.get_mut(&self.client) {
            *mine -= 1;
            if *mine == 0 {
                per_client.remove(&self.client);
            }
        }
    }
}

/// What a connection is doing, for its deadlines.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// When the last request finished, in milliseconds after `opened`.
    last_ms: AtomicU64,
    /// When a request in flight last made progress (began, or sent a piece of its
    /// body), in milliseconds after `opened`.
    progress_ms: AtomicU64,
}

/// A request in flight on a connection.
struct Busy(Arc<Activity>);

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            progress_ms: AtomicU64::new(0),
        })
    }

    fn progressed(&self) {
        let elapsed = self.opened.elapsed().as_millis() as u64;
        self.progress_ms.fetch_max(elapsed, Ordering::AcqRel);
    }

    fn begin(self: &Arc<Activity>) -> Busy {
        self.progressed();
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// Returns when the connection has been silent too long: no whole request head
    /// within `head` of opening, idle for `idle` after its last request, or a request
    /// in flight that made no progress for `idle` (a response, such as an event
    /// stream, that the client stopped reading).
    async fn expired(&self, head: Duration, idle: Duration) {
        let at = |ms: &AtomicU64| self.opened + Duration::from_millis(ms.load(Ordering::Acquire));
        loop {
            let deadline = if self.in_flight.load(Ordering::Acquire) > 0 {
                at(&self.progress_ms) + idle
            } else if self.requests.load(Ordering::Acquire) == 0 {
                self.opened + head
            } else {
                at(&self.last_ms) + idle
            };
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// A response body that keeps its connection counted busy until it is sent in full: a
/// stream of events is not an idle connection.
struct Guarded {
    body: crate::http::Body,
    busy: Busy,
}

impl hyper::body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let frame = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if frame.is_ready() {
            self.busy.0.progressed();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let elapsed = self.0.opened.elapsed().as_millis() as u64;
        self.0.last_ms.fetch_max(elapsed, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Tells a connection past a cap so, then closes it; bounded so a client that does not
/// read cannot hold the task.
async fn refuse(mut stream: TcpStream) {
    let body = r#"{"type":"about:blank","title":"Overloaded","status":503,"code":"overloaded","detail":"too many connections; retry shortly"}"#;
    let refusal = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(refusal.as_bytes()).await?;
        stream.shutdown().await?;
        // A lingering close: read what the client still sends until it closes, so the
        // kernel does not answer its unread request with a reset that destroys the 503
        // before the client has read it.
        let mut sink = [0u8; 4096];
        while tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}

/// A listener with a deep backlog (the standard library's is 128).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A bound, ready server.
pub struct Server {
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    gate: Arc<Gate>,
    head_timeout: Duration,
    idle_timeout: Duration,
}

impl Server {
    /// Opens the engine, prepares accounts (and the demo), and binds the address.
    pub async fn bind(config: Config) -> anyhow::Result<Server> {
        let tls = config.tls.as_ref().map(|(cert, key)| tls_acceptor(cert, key)).transpose()?;
        let listener =
            listen(config.listen).map_err(|e| anyhow::anyhow!("binding {}: {e}", config.listen))?;
        let gate = Arc::new(Gate {
            total: config.connections_max,
            per_client: config.connections_per_client_max,
            open: Mutex::new((0, HashMap::new())),
        });
        let head_timeout = Duration::from_secs(config.header_timeout_s);
        let idle_timeout = Duration::from_secs(config.idle_timeout_s);
        let app = App::open(config).await?;
        app.gateway.set_target(listener.local_addr()?);
        Ok(Server { app, listener, tls, gate, head_timeout, idle_timeout })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The application (for tests and tools that embed the server).
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Serves until `shutdown` turns true, then drains and closes the engine.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let graceful = GracefulShutdown::new();
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.head_timeout)
            // A client that shuts its side after sending a request still gets the answer.
            .half_close(true)
            .max_buf_size(HEAD_BYTES_MAX);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(self.idle_timeout / 2)
            .keep_alive_timeout(self.head_timeout)
            .max_header_list_size(HEAD_BYTES_MAX as u32);
        tracing::info!(addr = %self.local_addr(), tls = self.tls.is_some(), "listening");
        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors (EMFILE) and the like: back off a little
                        // instead of spinning; connections already open go on.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            let Some(admission) = self.gate.admit(peer.ip()) else {
                self.app.metrics.connection_refused();
                if self.tls.is_none() {
                    tokio::spawn(refuse(stream));
                }
                continue;
            };
            let _ = stream.set_nodelay(true);
            let app = self.app.clone();
            let activity = Activity::new();
            let service = {
                let activity = activity.clone();
                service_fn(move |request| {
                    let busy = activity.begin();
                    let app = app.clone();
                    async move {
                        let answer = crate::http::serve(app, request, peer.ip()).await;
                        answer.map(|response| response.map(|body| Guarded { body, busy }))
                    }
                })
            };
            let (head, idle) = (self.head_timeout, self.idle_timeout);
            match &self.tls {
                None => {
                    let connection =
                        builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    let watched = graceful.watch(connection);
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = watched => {}
                            // Dropping the connection closes it.
                            _ = activity.expired(head, idle) => {}
                        }
                        drop(admission);
                    });
                }
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    let builder = builder.clone();
                    let watcher = graceful.watcher();
                    tokio::spawn(async move {
                        if let Ok(Ok(tls)) =
                            tokio::time::timeout(head, acceptor.accept(stream)).await
                        {
                            let connection =
                                builder.serve_connection(TokioIo::new(tls), service).into_owned();
                            tokio::select! {
                                _ = watcher.watch(connection) => {}
                                _ = activity.expired(head, idle) => {}
                            }
                        }
                        drop(admission);
                    });
                }
            }
        }
        tracing::info!("shutting down: finishing in-flight requests");
        drop(self.listener);
        if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
            tracing::warn!("some connections did not finish in time");
        }
        let app = self.app.clone();
        app.payments.stop();
        app.webhooks.stop();
        app.notifier.stop();
        tokio::task::spawn_blocking(move || {
            app.search_threads.stop();
            app.search.stop();
            app.recommendations.stop();
            app.kpis.stop();
            app.engine.clone().close();
        })
        .await?;
        // After the engine closed: writes still draining needed their standbys.
        self.app.replication.stop();
        tracing::info!("stopped");
        Ok(())
    }
}

fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let mut config = emporium_replication::tls::server_config(cert, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// A server running on its own runtime thread: for tests and embedding.
pub struct RunningServer {
    addr: SocketAddr,
    app: Arc<App>,
    shutdown: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl RunningServer {
    /// Starts a server with `config` and returns once it listens.
    pub fn start(config: Config) -> anyhow::Result<RunningServer> {
        let (shutdown, receiver) = watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread =
            std::thread::Builder::new().name("emporium-server".into()).spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
                runtime.block_on(async move {
                    let server = match Server::bind(config).await {
                        Ok(server) => server,
                        Err(error) => {
                            let message = error.to_string();
                            let _ = ready_tx.send(Err(error));
                            return Err(anyhow::anyhow!(message));
                        }
                    };
                    let _ = ready_tx.send(Ok((server.local_addr(), server.app().clone())));
                    server.run(receiver).await
                })
            })?;
        let (addr, app) =
            ready_rx.recv().map_err(|_| anyhow::anyhow!("the server thread died"))??;
        Ok(RunningServer { addr, app, shutdown, thread: Some(thread) })
    }

    /// The application (for tests that look at its state).
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops it gracefully and waits.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        match self.thread.take() {
            Some(thread) => {
                thread.join().map_err(|_| anyhow::anyhow!("the server thread panicked"))?
            }
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;

    #[test]
    fn a_configured_certificate_serves_https() {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("data"),
            tls: Some((cert, key)),
            password_hash_kib: 64,
            ..Config::default()
        };
        let server = RunningServer::start(config).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let response = runtime.block_on(async {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(certified.cert.der().clone()).unwrap();
            let client = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
            let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
            let tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut tls = connector.connect(name, tcp).await.unwrap();
            tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut bytes = Vec::new();
            // The server may close without close_notify; what arrived before counts.
            let _ = tls.read_to_end(&mut bytes).await;
            String::from_utf8_lossy(&bytes).to_string()
        });
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert!(response.contains(r#"{"status":"ok"}"#), "{response}");
        server.stop().unwrap();
    }
}
