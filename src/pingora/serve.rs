//! [`serve`]: the edge proxy as a process, `otpgate run`.

use ::pingora::Error;
use ::pingora::server::configuration::ServerConf;
use ::pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use ::pingora::services::background::BackgroundService;
use async_trait::async_trait;

use super::{
    ConnectionLimits, FrontCell, GuardedApp, OtpProxy, ProxySettings, Upstream, UpstreamPool,
};
use crate::http::Front;

/// What SIGHUP does to a proxy [`serve_reloadable`] serves: makes the front to serve from
/// now on, or keeps the current one.
#[async_trait]
pub trait Reloader: Send + Sync + 'static {
    /// The front to serve to requests that start from now on, made from `current` and
    /// whatever this reloader reads; `None` keeps `current` (the reloader logs why).
    async fn reload(&self, current: &Front) -> Option<Front>;
}

/// Replaces the served front on every SIGHUP, with what the [`Reloader`] makes.
struct ReloadOnHangup<R> {
    cell: FrontCell,
    reloader: R,
}

#[async_trait]
impl<R: Reloader> BackgroundService for ReloadOnHangup<R> {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => hangup,
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGHUP: reloading is off");
                return;
            }
        };
        tracing::info!(pid = std::process::id(), "SIGHUP reloads the config");
        loop {
            tokio::select! {
                received = hangup.recv() => {
                    if received.is_none() {
                        return;
                    }
                    tracing::info!("SIGHUP: reloading the config");
                    let current = self.cell.current();
                    if let Some(front) = self.reloader.reload(&current).await {
                        self.cell.replace(front);
                        tracing::info!("config reloaded: new requests use it, those under way finish on the old one");
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Treats SIGINT like SIGTERM: stop accepting, let in-flight requests finish.
struct GracefulOnSignals;

#[async_trait]
impl ShutdownSignalWatch for GracefulOnSignals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot listen for SIGTERM/SIGINT; shutting down");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: finishing in-flight requests"),
            _ = int.recv() => tracing::info!("SIGINT: finishing in-flight requests"),
        }
        ShutdownSignal::GracefulTerminate
    }
}

/// Keeps the upstream's address following DNS while the server runs.
struct ResolveUpstream(Upstream);

#[async_trait]
impl BackgroundService for ResolveUpstream {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        tokio::select! {
            () = self.0.resolve_forever() => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Checks the pool's instances while the server runs.
struct CheckUpstreams(UpstreamPool, std::time::Duration);

#[async_trait]
impl BackgroundService for CheckUpstreams {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        tokio::select! {
            () = self.0.check_forever(self.1) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Answers `GET /metrics` with the Prometheus metrics and the served front's delivery
/// counters, on the metrics listener only; anything else there is 404.
struct MetricsApp(FrontCell);

#[async_trait]
impl ::pingora::apps::http_app::ServeHttp for MetricsApp {
    async fn response(
        &self,
        session: &mut ::pingora::protocols::http::ServerSession,
    ) -> http::Response<Vec<u8>> {
        let request = session.req_header();
        let (status, content_type, body) =
            if request.method == http::Method::GET && request.uri.path() == "/metrics" {
                let front = self.0.current();
                let gate = front.gate();
                let text = crate::metrics::render_with_depth(
                    Some(gate.delivery_stats()),
                    Some(gate.outbox_depth()),
                );
                (http::StatusCode::OK, crate::metrics::CONTENT_TYPE, text)
            } else {
                let text = "not found\n".to_owned();
                (
                    http::StatusCode::NOT_FOUND,
                    "text/plain; charset=utf-8",
                    text,
                )
            };
        http::Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body.into_bytes())
            .unwrap_or_default()
    }
}

/// The pingora server configuration for `settings`.
pub fn server_conf(settings: &ProxySettings) -> ServerConf {
    ServerConf {
        threads: settings.threads,
        grace_period_seconds: Some(settings.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(settings.shutdown_timeout.as_secs().max(1)),
        ..ServerConf::default()
    }
}

/// Serves `front` as an edge proxy until SIGTERM or SIGINT, then lets in-flight requests
/// finish; SIGHUP changes nothing. Blocks the calling thread.
pub fn serve(front: Front, settings: &ProxySettings) -> Result<(), Box<Error>> {
    serve_inner(front, settings, NoReload)
}

/// [`serve`], and on every SIGHUP the front `reloader` makes replaces the served one:
/// requests that start afterwards use it, those under way finish on the old one, and no
/// connection is closed.
pub fn serve_reloadable(
    front: Front,
    settings: &ProxySettings,
    reloader: impl Reloader,
) -> Result<(), Box<Error>> {
    serve_inner(front, settings, reloader)
}

/// Whether the proxy could listen on `listen`: binds it, without listening, and lets it go.
/// An address in use, not local or not permitted fails here, at the start, where pingora
/// would only find out in its listener thread, after the start was logged.
///
/// Never listens: a socket that listened even for a moment would accept the connections of
/// clients and readiness probes that arrive then, and drop them when let go, so the port
/// would look ready and then refuse.
pub fn check_listen(listen: std::net::SocketAddr) -> std::io::Result<()> {
    bound_unlistened(listen).map(drop)
}

/// A socket bound to `listen` that does not listen.
fn bound_unlistened(listen: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = match listen {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As pingora's listener does: a port left in TIME_WAIT by the last run is free to bind,
    // and a socket listening on it still is not.
    socket.set_reuseaddr(true)?;
    socket.bind(listen)?;
    Ok(socket)
}

/// [`check_listen`], naming `key` in the error.
fn bind_first(key: &str, listen: std::net::SocketAddr) -> Result<(), Box<Error>> {
    check_listen(listen).map_err(|e| {
        Error::explain(
            ::pingora::ErrorType::BindError,
            format!("{key}: cannot listen on {listen}: {e}"),
        )
    })
}

/// The reloader of a proxy that has nothing to read again.
struct NoReload;

#[async_trait]
impl Reloader for NoReload {
    async fn reload(&self, _current: &Front) -> Option<Front> {
        tracing::warn!("SIGHUP: no config file to read again; the running config stays");
        None
    }
}

fn serve_inner(
    front: Front,
    settings: &ProxySettings,
    reloader: impl Reloader,
) -> Result<(), Box<Error>> {
    // Before pingora builds its TLS connector, and before any client the gate delivers
    // codes with: each takes the process default.
    super::install_crypto_provider();
    let conf = server_conf(settings);
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let store = front.gate().store().describe();
    let cell = FrontCell::new(front);
    let mut proxy = OtpProxy::reloadable(
        cell.clone(),
        settings.upstream.clone(),
        settings.upstream_timeouts,
    );
    if let Some(pool) = &settings.pool {
        proxy = proxy.with_pool(pool.clone());
        server.add_service(::pingora::services::background::background_service(
            "upstream health",
            CheckUpstreams(pool.clone(), settings.upstream_timeouts.connect),
        ));
    }
    if let Some(hsts) = settings.tls.as_ref().and_then(|tls| tls.hsts.clone()) {
        proxy = proxy.with_hsts(hsts);
    }
    let mut http = ::pingora::proxy::http_proxy(&server.configuration, proxy);
    let mut options = ::pingora::apps::HttpServerOptions::default();
    options.h2c = settings.h2c;
    // An HTTP/2 connection leaves the head deadline with its preface (GuardedApp): idle,
    // it closes after the keep-alive timeout, as an HTTP/1 one does.
    options.h2_idle_timeout = Some(settings.keepalive_timeout);
    http.server_options = Some(options);
    let limits = ConnectionLimits::from(settings).fitted_to_open_file_limit();
    let app = GuardedApp::new(http, limits);
    let mut service = ::pingora::services::listening::Service::new("otpgate proxy".to_owned(), app);
    let redirect = settings.tls.as_ref().filter(|tls| tls.redirect_http);
    if redirect.is_none() {
        service.add_tcp(&settings.listen.to_string());
    }
    if let Some(tls) = &settings.tls {
        bind_first("server.tls.listen", tls.listen)?;
        // The certificates were read and checked with the config; the resolver serves
        // them, and a reload replaces them in it, with no file read at the handshake.
        let mut tls_settings = ::pingora::listeners::tls::TlsSettings::intermediate("", "")?;
        tls_settings.set_cert_resolver(std::sync::Arc::new(tls.certificates.clone()));
        tls_settings.enable_h2();
        service.add_tls_with_settings(&tls.listen.to_string(), None, tls_settings);
        tracing::info!(listen = %tls.listen, certificates = ?tls.certificates, "TLS listener");
    }
    server.add_service(service);
    if let Some(tls) = redirect {
        let redirect = super::tls::RedirectToHttps {
            port: tls.listen.port(),
        };
        let mut plain = ::pingora::services::listening::Service::new(
            "otpgate https redirect".to_owned(),
            GuardedApp::new(redirect, limits),
        );
        plain.add_tcp(&settings.listen.to_string());
        server.add_service(plain);
        tracing::info!(listen = %settings.listen, "plain HTTP only redirects to https");
    }
    // The upstream's host name is looked up as the server starts, not at the first request,
    // and again every interval; a name that does not resolve yet does not stop the start.
    server.add_service(::pingora::services::background::background_service(
        "upstream dns",
        ResolveUpstream(settings.upstream.clone()),
    ));
    if let Some(listen) = settings.metrics_listen {
        bind_first("metrics.listen", listen)?;
        let mut metrics = ::pingora::services::listening::Service::new(
            "otpgate metrics".to_owned(),
            MetricsApp(cell.clone()),
        );
        metrics.add_tcp(&listen.to_string());
        server.add_service(metrics);
        tracing::info!(%listen, "metrics served at /metrics");
    }
    // Always listened for: SIGHUP's default action would end the process.
    server.add_service(::pingora::services::background::background_service(
        "config reload",
        ReloadOnHangup { cell, reloader },
    ));
    tracing::info!(listen = %settings.listen, upstream = %settings.upstream, threads = settings.threads, store = %store, "otpgate proxy started");
    server.run(RunArgs {
        shutdown_signal: Box::new(GracefulOnSignals),
    });
    tracing::info!("otpgate proxy stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read};
    use std::net::{TcpListener, TcpStream};

    use super::{bound_unlistened, check_listen};

    #[test]
    fn an_address_someone_listens_on_fails_the_check() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap();
        let error = check_listen(address).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::AddrInUse);
        drop(taken);
        check_listen(address).unwrap();
    }

    #[test]
    fn a_port_left_in_time_wait_passes_the_check() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(address).unwrap();
        let (served, _) = listener.accept().unwrap();
        // The listening side closes first, so its end of the connection, on the listened
        // port, waits in TIME_WAIT after the client closes too.
        drop(served);
        let _ = client.read(&mut [0; 1]);
        drop(client);
        drop(listener);
        check_listen(address).unwrap();
    }

    #[test]
    fn the_checked_address_accepts_no_connection() {
        // While the check holds the address, a client is refused at once, rather than
        // accepted and then dropped as the check lets go.
        let held = bound_unlistened("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = held.local_addr().unwrap();
        assert_eq!(
            TcpStream::connect(address).unwrap_err().kind(),
            ErrorKind::ConnectionRefused
        );
        drop(held);
    }
}
