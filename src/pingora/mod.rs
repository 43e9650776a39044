//! The edge proxy: otpgate on pingora, in front of any HTTP app.
//!
//! [`OtpFilter`] holds the gate's steps as functions that any [`ProxyHttp`] can call
//! (see `examples/pingora_filter.rs`); [`OtpProxy`] is the ready proxy that the
//! `otpgate run` command serves. Both only translate between pingora's session and the
//! framework-neutral [`crate::http`] layer: every decision is the tower layer's too.
//!
//! Request and response bodies of proxied requests stream through unbuffered, and
//! upgrades (websockets) pass; only the gate's own endpoints read a body, up to the limit.

use std::net::SocketAddr;

use ::pingora::http::{RequestHeader, ResponseHeader};
use ::pingora::proxy::{FailToProxy, ProxyHttp, Session};
use ::pingora::server::configuration::ServerConf;
use ::pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use ::pingora::upstreams::peer::HttpPeer;
use ::pingora::{Error, ErrorSource, ErrorType};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use crate::engine::Identity;
use crate::error::GateError;
use crate::http::{
    CanonicalTarget, Dialect, EndpointRoute, Front, GateResponse, RequestView, Route, UpstreamPlan,
};

mod guard;
mod limits;
mod settings;

pub use guard::{GuardedApp, HeadDeadline};
pub use limits::ConnectionLimits;
pub use settings::{ProxySettings, Upstream};

/// Per-request state of [`OtpFilter`].
#[derive(Debug, Default)]
pub struct OtpCtx {
    plan: Option<UpstreamPlan>,
}

impl OtpCtx {
    /// The verified identity of a request bound for the app, if it carried a valid token.
    pub fn identity(&self) -> Option<&Identity> {
        self.plan.as_ref().and_then(|plan| plan.identity.as_ref())
    }
}

/// The gate's steps for a pingora proxy of your own: call
/// [`request_filter`](OtpFilter::request_filter) from `ProxyHttp::request_filter` and
/// [`upstream_request_filter`](OtpFilter::upstream_request_filter) from
/// `ProxyHttp::upstream_request_filter`.
#[derive(Clone, Debug)]
pub struct OtpFilter {
    front: Front,
    // For mediated routes (the baanx login), which the gate forwards itself.
    upstream: Option<Upstream>,
    client: reqwest::Client,
}

impl OtpFilter {
    /// A filter driven by `front`: a [`Front`], or a [`crate::Gate`] with the default
    /// HTTP settings.
    pub fn new(front: impl Into<Front>) -> OtpFilter {
        OtpFilter {
            front: front.into(),
            upstream: None,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
        }
    }

    /// The app that mediated routes (the baanx login, whose answer the gate must read)
    /// are forwarded to. Without it such routes answer 502.
    pub fn with_upstream(mut self, upstream: Upstream) -> OtpFilter {
        self.upstream = Some(upstream);
        self
    }

    /// The front.
    pub fn front(&self) -> &Front {
        &self.front
    }

    /// Answers the gate's endpoints and refuses protected paths without a valid token.
    /// `Ok(true)` means the response is written and the request must not be proxied.
    pub async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut OtpCtx,
    ) -> ::pingora::Result<bool> {
        let target = match self.canonical_request(session) {
            Ok(target) => target,
            Err(refusal) => {
                write_response(session, *refusal).await?;
                return Ok(true);
            }
        };
        match self.front.route(&target) {
            Route::Endpoint(route) => {
                let response = match self.read_body(session, route).await {
                    Ok(body) => {
                        let (method, uri, headers) = request_parts(session);
                        let view = self.view(session, &method, &uri, &headers);
                        self.front.handle(route, &view, body).await
                    }
                    Err(refusal) => refusal,
                };
                write_response(session, response).await?;
                Ok(true)
            }
            Route::Mediated(route) => {
                let response = match self.read_body(session, route).await {
                    Ok(body) => self.mediate(session, route, body).await,
                    Err(refusal) => refusal,
                };
                write_response(session, response).await?;
                Ok(true)
            }
            Route::Upstream { protected } => match self
                .front
                .plan_upstream(&session.req_header().headers, peer_ip(session), protected)
                .await
            {
                Ok(plan) => {
                    ctx.plan = Some(plan);
                    Ok(false)
                }
                Err(refusal) => {
                    write_response(session, *refusal).await?;
                    Ok(true)
                }
            },
        }
    }

    /// Checks the request head and puts the canonical target in place of the one the
    /// client sent, so that the app receives exactly the path that was judged.
    fn canonical_request(
        &self,
        session: &mut Session,
    ) -> Result<CanonicalTarget, Box<GateResponse>> {
        let request = session.req_header();
        self.front.check_head(&request.headers)?;
        let target = self
            .front
            .canonical_target(&request.method, request.raw_path())?;
        if !target.is_spelled(request.raw_path()) || request.uri.authority().is_some() {
            let uri = http::Uri::try_from(target.to_origin_form()).map_err(|_| {
                Box::new(Dialect::Generic.error(&GateError::InvalidRequest(
                    "the request target is invalid".into(),
                )))
            })?;
            session.req_header_mut().set_uri(uri);
        }
        Ok(target)
    }

    /// Strips the client's identity headers from the request to the app and injects the
    /// verified identity. Fails, so that nothing is forwarded, when
    /// [`request_filter`](Self::request_filter) did not run for the request.
    pub fn upstream_request_filter(
        &self,
        upstream_request: &mut RequestHeader,
        ctx: &OtpCtx,
    ) -> ::pingora::Result<()> {
        match &ctx.plan {
            Some(plan) => apply(plan, upstream_request),
            // request_filter did not run (a mistake in the caller's proxy): the gate never
            // judged this path or its token, so nothing of it is forwarded.
            None => Error::e_explain(
                ErrorType::InternalError,
                "OtpFilter::request_filter did not run for this request",
            ),
        }
    }

    /// Reads a body the gate needs, up to the limit; the refusal to answer otherwise.
    async fn read_body(
        &self,
        session: &mut Session,
        route: EndpointRoute,
    ) -> Result<Bytes, GateResponse> {
        let Some(mut reader) = self
            .front
            .body_reader(route, &session.req_header().headers)?
        else {
            return Ok(Bytes::new());
        };
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => reader.push(&chunk)?,
                Ok(None) => return Ok(reader.finish()),
                Err(_) => return Err(reader.unreadable()),
            }
        }
    }

    fn view<'a>(
        &self,
        session: &Session,
        method: &'a http::Method,
        uri: &'a http::Uri,
        headers: &'a http::HeaderMap,
    ) -> RequestView<'a> {
        let peer = peer_ip(session);
        RequestView {
            method,
            path: uri.path(),
            headers,
            query: uri.query(),
            client_ip: self.front.client_ip(peer, headers),
        }
    }

    /// A mediated route: the gate forwards the (possibly rewritten) request to the app
    /// itself, so that it can read the answer before the client does.
    async fn mediate(&self, session: &Session, route: EndpointRoute, body: Bytes) -> GateResponse {
        let (method, uri, mut headers) = request_parts(session);
        self.front
            .strip_only_plan(&headers, peer_ip(session))
            .apply(&mut headers);
        let view = self.view(session, &method, &uri, &headers);
        let target = self.upstream.as_ref().map(|upstream| {
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            format!("http://{}{}", upstream.addr, path)
        });
        let client = self.client.clone();
        let (forward_method, mut forward_headers) = (method.clone(), headers.clone());
        let forward = move |body: Bytes, extra: Vec<(http::HeaderName, http::HeaderValue)>| async move {
            let target = target.ok_or(GateError::UpstreamUnavailable)?;
            for (name, value) in extra {
                forward_headers.insert(name, value);
            }
            for hop in [
                http::header::CONNECTION,
                http::header::CONTENT_LENGTH,
                http::header::TRANSFER_ENCODING,
            ] {
                forward_headers.remove(hop);
            }
            let mut response = client
                .request(forward_method, target)
                .headers(forward_headers)
                .body(body)
                .send()
                .await
                .map_err(|_| GateError::UpstreamUnavailable)?;
            let status = response.status();
            let mut headers = response.headers().clone();
            for hop in [
                http::header::CONNECTION,
                http::header::CONTENT_LENGTH,
                http::header::TRANSFER_ENCODING,
            ] {
                headers.remove(hop);
            }
            let mut body = BytesMut::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|_| GateError::UpstreamUnavailable)?
            {
                if body.len() + chunk.len() > crate::http::MEDIATED_RESPONSE_LIMIT {
                    return Err(GateError::UpstreamUnavailable);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(GateResponse {
                status,
                headers,
                body: body.freeze(),
            })
        };
        self.front.mediate(route, &view, body, forward).await
    }
}

fn peer_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(SocketAddr::ip)
}

fn request_parts(session: &Session) -> (http::Method, http::Uri, http::HeaderMap) {
    let request = session.req_header();
    (
        request.method.clone(),
        request.uri.clone(),
        request.headers.clone(),
    )
}

fn apply(plan: &UpstreamPlan, request: &mut RequestHeader) -> ::pingora::Result<()> {
    for name in &plan.strip {
        request.remove_header(name);
    }
    for (name, value) in &plan.inject {
        request.insert_header(name.clone(), value.clone())?;
    }
    Ok(())
}

async fn write_response(session: &mut Session, response: GateResponse) -> ::pingora::Result<()> {
    let mut header = ResponseHeader::build(response.status, Some(response.headers.len() + 1))?;
    for (name, value) in &response.headers {
        header.append_header(name.clone(), value.clone())?;
    }
    header.insert_header(http::header::CONTENT_LENGTH, response.body.len())?;
    let empty = response.body.is_empty();
    session
        .write_response_header(Box::new(header), empty)
        .await?;
    if !empty {
        session
            .write_response_body(Some(response.body), true)
            .await?;
    }
    Ok(())
}

/// The ready edge proxy: the gate in front of one upstream app.
#[derive(Debug)]
pub struct OtpProxy {
    filter: OtpFilter,
    upstream: Upstream,
}

impl OtpProxy {
    /// A proxy for `front` in front of `upstream`.
    pub fn new(front: impl Into<Front>, upstream: Upstream) -> OtpProxy {
        OtpProxy {
            filter: OtpFilter::new(front).with_upstream(upstream.clone()),
            upstream,
        }
    }
}

#[async_trait]
impl ProxyHttp for OtpProxy {
    type CTX = OtpCtx;

    fn new_ctx(&self) -> OtpCtx {
        OtpCtx::default()
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut OtpCtx,
    ) -> ::pingora::Result<()> {
        self.filter.early_request_filter(session);
        Ok(())
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut OtpCtx,
    ) -> ::pingora::Result<bool> {
        self.filter.request_filter(session, ctx).await
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut OtpCtx,
    ) -> ::pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.addr,
            false,
            self.upstream.host.clone(),
        )))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut OtpCtx,
    ) -> ::pingora::Result<()> {
        // The plan also tells the app who the client is, in X-Forwarded-For.
        self.filter.upstream_request_filter(upstream_request, ctx)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        _ctx: &mut OtpCtx,
    ) -> FailToProxy {
        let (status, code, message) = match (e.esource(), e.etype()) {
            (_, ErrorType::HTTPStatus(status)) => {
                (*status, "request_failed", "the request could not be served")
            }
            (ErrorSource::Upstream, _) => (
                502,
                "upstream_unavailable",
                "the app behind the gate is unavailable",
            ),
            _ if client_went_away(e) => {
                // The client is gone; nobody to answer.
                (0, "", "")
            }
            (ErrorSource::Downstream, _) => {
                (400, "invalid_request", "the request could not be read")
            }
            _ => (500, "internal_error", "internal error"),
        };
        if status > 0 {
            tracing::warn!(status, error = e.etype().as_str(), source = ?e.esource(), "request failed");
            let status_code =
                http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
            let response = GateResponse::json(
                status_code,
                &serde_json::json!({"error": code, "message": message}),
            );
            if let Err(write_error) = write_response(session, response).await {
                tracing::debug!(error = %write_error, "could not write the error response");
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &OtpCtx, error: &Error) -> bool {
        // A client that hangs up before its answer is not an error of the gate's: pingora
        // would log it at ERROR for every impatient client. `logging` still records it.
        client_went_away(error)
    }

    fn request_summary(&self, session: &Session, _ctx: &OtpCtx) -> String {
        // Used in pingora's own error logs: the path only, as in ours.
        let request = session.req_header();
        format!("{} {}", request.method, request.uri.path())
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut OtpCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        // The path only: query strings may carry destinations or codes.
        let request = session.req_header();
        tracing::info!(
            method = %request.method,
            path = %request.uri.path(),
            status,
            authenticated = ctx.identity().is_some(),
            error = error.map(|e| e.etype().as_str()),
            "request"
        );
    }
}

/// Whether `error` means the client closed its connection (or it broke) mid-request.
fn client_went_away(error: &Error) -> bool {
    matches!(
        (error.esource(), error.etype()),
        (
            ErrorSource::Downstream,
            ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed
        )
    )
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
    let proxy = OtpProxy::new(front, settings.upstream.clone());
    let app = GuardedApp::new(
        ::pingora::proxy::http_proxy(&server.configuration, proxy),
        ConnectionLimits::from(settings).fitted_to_open_file_limit(),
    );
    let mut service = ::pingora::services::listening::Service::new("otpgate proxy".to_owned(), app);
    service.add_tcp(&settings.listen.to_string());
    server.add_service(service);
    tracing::info!(listen = %settings.listen, upstream = %settings.upstream.addr, threads = settings.threads, store = %store, "otpgate proxy started");
    server.run(RunArgs {
        shutdown_signal: Box::new(GracefulOnSignals),
    });
    tracing::info!("otpgate proxy stopped");
    Ok(())
}
