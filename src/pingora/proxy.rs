//! [`OtpProxy`]: the ready edge proxy, [`OtpFilter`] in front of one app.

use ::pingora::http::RequestHeader;
use ::pingora::proxy::{FailToProxy, ProxyHttp, Session};
use ::pingora::upstreams::peer::HttpPeer;
use ::pingora::{Error, ErrorSource, ErrorType};
use async_trait::async_trait;
use http::StatusCode;

use super::filter::write_response;
use super::{OtpCtx, OtpFilter, Upstream, UpstreamTimeouts};
use crate::gate::GateError;
use crate::http::{Dialect, Front};

/// The ready edge proxy: the gate in front of one upstream app.
#[derive(Debug)]
pub struct OtpProxy {
    filter: OtpFilter,
    upstream: Upstream,
    timeouts: UpstreamTimeouts,
}

impl OtpProxy {
    /// A proxy for `front` in front of `upstream`, with the default
    /// [`UpstreamTimeouts`].
    pub fn new(front: Front, upstream: Upstream) -> OtpProxy {
        OtpProxy::with_timeouts(front, upstream, UpstreamTimeouts::default())
    }

    /// A proxy for `front` in front of `upstream`, waiting on it at most `timeouts`.
    pub fn with_timeouts(front: Front, upstream: Upstream, timeouts: UpstreamTimeouts) -> OtpProxy {
        OtpProxy {
            filter: OtpFilter::new(front)
                .with_upstream_timeouts(timeouts)
                .with_upstream(upstream.clone()),
            upstream,
            timeouts,
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
        let mut peer = HttpPeer::new(self.upstream.addr, false, self.upstream.host.clone());
        peer.options.connection_timeout = Some(self.timeouts.connect);
        // No read timeout here: a proxied request streams, and a websocket or a long poll
        // may rightly stay quiet for longer.
        Ok(Box::new(peer))
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
        let error = match (e.esource(), e.etype()) {
            (_, ErrorType::HTTPStatus(status)) => Some(GateError::RequestFailed(
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
            )),
            (ErrorSource::Upstream, _) => Some(GateError::UpstreamUnavailable),
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
        tracing::warn!(status, error = e.etype().as_str(), source = ?e.esource(), "request failed");
        if let Err(write_error) = write_response(session, response).await {
            tracing::debug!(error = %write_error, "could not write the error response");
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
