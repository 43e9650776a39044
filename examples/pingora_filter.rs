//! otpgate's steps inside a pingora proxy of your own.
//!
//! The proxy below routes by path to two upstreams and lets `OtpFilter` do the sign-in:
//! it answers `/auth/otp/*`, the JWKS and `/healthz`, refuses `/api/` without a token,
//! strips forged identity headers and injects the verified identity.
//!
//! ```sh
//! cargo run --example echo_upstream                                   # 127.0.0.1:3000
//! ECHO_LISTEN=127.0.0.1:3001 cargo run --example echo_upstream       # 127.0.0.1:3001
//! cargo run --example pingora_filter                                  # 127.0.0.1:6188
//! curl -s localhost:6188/auth/otp/send -H 'content-type: application/json' -d '{"email":"a@example.com"}'
//! curl -s localhost:6188/auth/otp/verify -H 'content-type: application/json' -d '{"email":"a@example.com","code":"<code>"}'
//! curl -s localhost:6188/api/me -H "authorization: Bearer <token>"      # -> 3000
//! curl -s localhost:6188/static/x                                      # -> 3001, public
//! ```

use async_trait::async_trait;
use otpgate::Gate;
use otpgate::http::Front;
use otpgate::http::HttpSettings;
use otpgate::pingora::{OtpCtx, OtpFilter};
use pingora::http::RequestHeader;
use pingora::proxy::{ProxyHttp, Session, http_proxy_service};
use pingora::server::Server;
use pingora::upstreams::peer::HttpPeer;

/// A pure helper: which upstream serves a path.
fn upstream_for(path: &str) -> &'static str {
    if path.starts_with("/static/") {
        "127.0.0.1:3001"
    } else {
        "127.0.0.1:3000"
    }
}

struct MyProxy {
    otp: OtpFilter,
}

#[async_trait]
impl ProxyHttp for MyProxy {
    type CTX = OtpCtx;

    fn new_ctx(&self) -> OtpCtx {
        OtpCtx::default()
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut OtpCtx,
    ) -> pingora::Result<bool> {
        // Your own checks can come before or after; `true` means the gate answered.
        self.otp.request_filter(session, ctx).await
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        _ctx: &mut OtpCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let addr = upstream_for(session.req_header().uri.path());
        Ok(Box::new(HttpPeer::new(addr, false, String::new())))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut OtpCtx,
    ) -> pingora::Result<()> {
        self.otp.upstream_request_filter(upstream_request, ctx)?;
        // The verified identity is in the context for your own use as well.
        if let Some(identity) = ctx.identity() {
            upstream_request.insert_header("X-Signed-In", "yes")?;
            let _ = identity.subject();
        }
        Ok(())
    }
}

fn main() {
    tracing_subscriber::fmt().init();
    let mut http = HttpSettings::default();
    http.protect.push("/api/".into());
    if let Some(cookie) = http.cookie.as_mut() {
        cookie.secure = false;
    }
    let gate = Front::new(Gate::builder().build().expect("gate"), http);

    let mut server = Server::new(None).expect("server");
    server.bootstrap();
    let mut service = http_proxy_service(
        &server.configuration,
        MyProxy {
            otp: OtpFilter::new(gate),
        },
    );
    service.add_tcp("127.0.0.1:6188");
    server.add_service(service);
    server.run_forever();
}
