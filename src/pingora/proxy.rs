//! [`OtpProxy`]: the ready edge proxy, [`OtpFilter`] in front of one app.

use std::time::Instant;

use ::pingora::http::{RequestHeader, ResponseHeader};
use ::pingora::proxy::{FailToProxy, ProxyHttp, Session};
use ::pingora::upstreams::peer::HttpPeer;
use ::pingora::{Error, ErrorSource, ErrorType};
use async_trait::async_trait;
use http::StatusCode;

use super::filter::write_response;
use super::{FrontCell, InFlight, OtpCtx, OtpFilter, Upstream, UpstreamPool, UpstreamTimeouts};
use crate::gate::GateError;
use crate::http::{Dialect, Front};

/// The ready edge proxy: the gate in front of one upstream app.
#[derive(Clone, Debug)]
pub struct OtpProxy {
    filter: OtpFilter,
    upstream: Upstream,
    timeouts: UpstreamTimeouts,
    // Several instances: each request goes to one of them, not to `upstream`.
    pool: Option<UpstreamPool>,
}

impl OtpProxy {
    /// A proxy for `front` in front of `upstream`, with the default
    /// [`UpstreamTimeouts`].
    pub fn new(front: Front, upstream: Upstream) -> OtpProxy {
        OtpProxy::with_timeouts(front, upstream, UpstreamTimeouts::default())
    }

    /// A proxy for `front` in front of `upstream`, waiting on it at most `timeouts`.
    pub fn with_timeouts(front: Front, upstream: Upstream, timeouts: UpstreamTimeouts) -> OtpProxy {
        OtpProxy::reloadable(FrontCell::new(front), upstream, timeouts)
    }

    /// A proxy for the front in `cell`, which a reload may replace while it runs
    /// (requests under way finish on the front they started with).
    pub fn reloadable(cell: FrontCell, upstream: Upstream, timeouts: UpstreamTimeouts) -> OtpProxy {
        OtpProxy {
            filter: OtpFilter::with_cell(cell)
                .with_upstream_timeouts(timeouts)
                .with_upstream(upstream.clone()),
            upstream,
            timeouts,
            pool: None,
        }
    }

    /// Sends each request to a healthy instance of `pool` instead; the gate's own
    /// requests and the readiness probe go to the pool's primary.
    pub fn with_pool(mut self, pool: UpstreamPool) -> OtpProxy {
        self.filter = self.filter.with_upstream(pool.primary().clone());
        self.upstream = pool.primary().clone();
        self.pool = Some(pool);
        self
    }
}

impl OtpProxy {
    /// Adds `Strict-Transport-Security: value` to every answer over TLS (see
    /// [`OtpFilter::with_hsts`]).
    pub fn with_hsts(mut self, value: http::HeaderValue) -> OtpProxy {
        self.filter = self.filter.with_hsts(value);
        self
    }
}

/// Per-request state of [`OtpProxy`]: the filter's, and what its request log line needs.
#[derive(Debug)]
pub struct ProxyCtx {
    filter: OtpCtx,
    // Ties the request's log lines together, and to what a client reports: the id the
    // app gets, or a fresh one for a request the gate answered; set by `request_filter`.
    request_id: Option<http::HeaderValue>,
    // When the request head was read: the log line's latency counts from here.
    started: Instant,
    // The pool instance this request went to; counted in flight until the request ends.
    instance: Option<InFlight>,
}

impl ProxyCtx {
    /// The state of a request whose head was just read, with a fresh request id.
    fn new() -> ProxyCtx {
        ProxyCtx {
            filter: OtpCtx::default(),
            request_id: None,
            started: Instant::now(),
            instance: None,
        }
    }

    /// Gives a request that failed before the gate read it an id of its own, for its log
    /// lines.
    fn ensure_request_id(&mut self) {
        self.request_id
            .get_or_insert_with(crate::http::fresh_request_id);
    }

    /// The id of this request in the logs.
    pub fn request_id(&self) -> &str {
        // Always printable ASCII: fresh hex, or a trusted proxy's checked id; `-` for a
        // request that failed before it was read (its log lines make one).
        self.request_id
            .as_ref()
            .and_then(|id| id.to_str().ok())
            .unwrap_or("-")
    }
}

#[async_trait]
impl ProxyHttp for OtpProxy {
    type CTX = ProxyCtx;

    fn new_ctx(&self) -> ProxyCtx {
        ProxyCtx::new()
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut ProxyCtx,
    ) -> ::pingora::Result<()> {
        self.filter.early_request_filter(session);
        Ok(())
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut ProxyCtx,
    ) -> ::pingora::Result<bool> {
        let answered = self.filter.request_filter(session, &mut ctx.filter).await;
        // One id in the log and at the app, for requests the app gets.
        ctx.request_id = Some(match ctx.filter.request_id_value() {
            Some(id) => id.clone(),
            // 64 random bits as 16 hex digits: unique enough to find one request in logs.
            None => crate::http::fresh_request_id(),
        });
        answered
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut ProxyCtx,
    ) -> ::pingora::Result<Box<HttpPeer>> {
        let (upstream, addr) = match &self.pool {
            None => {
                let upstream = &self.upstream;
                upstream.start_resolving();
                (upstream, upstream.current())
            }
            Some(pool) => {
                // A retry drops the instance it failed on, and its count, here.
                ctx.instance = pool.pick();
                match &ctx.instance {
                    Some(instance) => (instance.upstream(), Some(instance.addr())),
                    None => {
                        return Err(Error::explain(
                            ErrorType::Custom("NoHealthyUpstream"),
                            "no upstream instance is healthy",
                        )
                        .into_up());
                    }
                }
            }
        };
        let Some(addr) = addr else {
            // A host name that never resolved yet: the app cannot be reached, as when down.
            return Err(Error::explain(
                ErrorType::Custom("UpstreamNotResolved"),
                format!("`{}` has not resolved yet", upstream.host),
            )
            .into_up());
        };
        // The host as written is the server name: sent as SNI and verified in the app's
        // certificate. Never empty (a URL has a host), which pingora would take as "verify
        // nothing".
        let tls = upstream.tls.as_ref();
        let mut peer = HttpPeer::new(addr, tls.is_some(), upstream.host.clone());
        peer.options.connection_timeout = Some(self.timeouts.connect);
        if let Some(tls) = tls {
            // Only the configured CAs, when a CA file is given; else the system's roots.
            peer.options.ca = tls.peer_ca();
            peer.options.verify_cert = true;
            peer.options.verify_hostname = true;
        }
        // No read timeout here: a proxied request streams, and a websocket or a long poll
        // may rightly stay quiet for longer.
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut ProxyCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // An instance that refuses is skipped until its next check passes, and the request
        // (nothing of it was sent yet) goes to another.
        if let Some(instance) = &ctx.instance {
            instance.mark_down();
            e.set_retry(true);
        }
        e
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        _ctx: &mut ProxyCtx,
    ) -> ::pingora::Result<()> {
        self.filter.response_filter(session, upstream_response)
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut ProxyCtx,
    ) -> ::pingora::Result<()> {
        // The plan also tells the app who the client is, in X-Forwarded-For.
        self.filter
            .upstream_request_filter(upstream_request, &ctx.filter)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut ProxyCtx,
    ) -> FailToProxy {
        let error = match (e.esource(), e.etype()) {
            (_, ErrorType::HTTPStatus(status)) => Some(GateError::RequestFailed(
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
            )),
            (ErrorSource::Upstream, kind) => {
                crate::metrics::upstream_error(upstream_error_kind(kind));
                Some(GateError::UpstreamUnavailable)
            }
            // The client is gone; nobody to answer.
            _ if client_went_away(e) => None,
            (ErrorSource::Downstream, _) => Some(GateError::InvalidRequest(
                "the request could not be read".into(),
            )),
            _ => Some(GateError::Internal(e.etype().as_str().to_owned())),
        };
        let Some(error) = error else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        let response = Dialect::Generic.error(&error);
        let status = response.status.as_u16();
        ctx.ensure_request_id();
        tracing::warn!(
            request_id = ctx.request_id(),
            status,
            error = e.etype().as_str(),
            source = ?e.esource(),
            "request failed"
        );
        // The connection is not reused (below), so the answer must not promise it is.
        session.set_keepalive(None);
        let hsts = self.filter.hsts_for(session).cloned();
        if let Err(write_error) = write_response(session, response, hsts).await {
            tracing::debug!(error = %write_error, "could not write the error response");
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &ProxyCtx, error: &Error) -> bool {
        // A client that hangs up before its answer is not an error of the gate's: pingora
        // would log it at ERROR for every impatient client. `logging` still records it.
        client_went_away(error)
    }

    fn request_summary(&self, session: &Session, ctx: &ProxyCtx) -> String {
        // Used in pingora's own error logs: the path only, as in ours, and the request id
        // that finds our line for the same request.
        let request = session.req_header();
        format!(
            "{} {} request_id={}",
            request.method,
            request.uri.path(),
            ctx.request_id()
        )
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut ProxyCtx) {
        let elapsed = ctx.started.elapsed();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        crate::metrics::request_answered(status, ctx.filter.route_kind(), elapsed);
        // The access line is made only when it is written: with `info` off, a request
        // costs no formatting here.
        if !tracing::enabled!(tracing::Level::INFO) {
            return;
        }
        ctx.ensure_request_id();
        // Rounded to microseconds: finer digits are noise in a log line.
        let latency_ms = (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0;
        let client = session.client_addr().map(ToString::to_string);
        // The path only, as the gate rewrote it to its canonical form: query strings may
        // carry destinations or codes.
        let request = session.req_header();
        tracing::info!(
            request_id = ctx.request_id(),
            client = %client.as_deref().unwrap_or("-"),
            method = %request.method,
            path = %request.uri.path(),
            status,
            latency_ms,
            authenticated = ctx.filter.identity().is_some(),
            error = error.map(|e| e.etype().as_str()),
            "request"
        );
    }
}

/// The `kind` label of `otpgate_upstream_errors_total` for an upstream error of `kind`.
fn upstream_error_kind(kind: &ErrorType) -> &'static str {
    match kind {
        ErrorType::ConnectTimedout
        | ErrorType::ReadTimedout
        | ErrorType::WriteTimedout
        | ErrorType::TLSHandshakeTimedout => "timeout",
        ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::ConnectProxyFailure
        | ErrorType::TLSHandshakeFailure
        | ErrorType::InvalidCert
        | ErrorType::Custom("UpstreamNotResolved")
        | ErrorType::Custom("NoHealthyUpstream") => "connect",
        _ => "other",
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
