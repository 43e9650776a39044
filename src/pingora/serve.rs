//! [`serve`]: the edge proxy as a process, `otpgate run`.

use ::pingora::Error;
use ::pingora::server::configuration::ServerConf;
use ::pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use ::pingora::services::background::BackgroundService;
use async_trait::async_trait;

use super::{ConnectionLimits, GuardedApp, OtpProxy, ProxySettings, Upstream};
use crate::http::Front;

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
/// finish. Blocks the calling thread.
pub fn serve(front: Front, settings: &ProxySettings) -> Result<(), Box<Error>> {
    let conf = server_conf(settings);
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let store = front.gate().store().describe();
    let proxy =
        OtpProxy::with_timeouts(front, settings.upstream.clone(), settings.upstream_timeouts);
    let app = GuardedApp::new(
        ::pingora::proxy::http_proxy(&server.configuration, proxy),
        ConnectionLimits::from(settings).fitted_to_open_file_limit(),
    );
    let mut service = ::pingora::services::listening::Service::new("otpgate proxy".to_owned(), app);
    service.add_tcp(&settings.listen.to_string());
    server.add_service(service);
    // The upstream's host name is looked up as the server starts, not at the first request,
    // and again every interval; a name that does not resolve yet does not stop the start.
    server.add_service(::pingora::services::background::background_service(
        "upstream dns",
        ResolveUpstream(settings.upstream.clone()),
    ));
    tracing::info!(listen = %settings.listen, upstream = %settings.upstream, threads = settings.threads, store = %store, "otpgate proxy started");
    server.run(RunArgs {
        shutdown_signal: Box::new(GracefulOnSignals),
    });
    tracing::info!("otpgate proxy stopped");
    Ok(())
}
