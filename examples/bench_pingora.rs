//! The floor of the proxy form: a plain pingora proxy with no gate at all, configured
//! like `otpgate run` (one service, the given worker threads). `bench/run.sh`
//! (`make bench`) measures it beside the otpgate proxy, so the report separates what
//! otpgate adds from what the pingora engine itself costs.
//!
//! ```sh
//! cargo run --release --example bench_pingora -- 127.0.0.1:3200 127.0.0.1:3000
//! ```
//!
//! `BENCH_THREADS` sets the worker threads (default 1, like every other server in that
//! harness). With `BENCH_HEADERS=1` it also sends the app the headers the gate sends for an
//! authenticated request (request id, forwarding headers, the token and the identity), set
//! with pingora's own `insert_header`: the engine doing the header work the gate does,
//! without the gate's decisions (`bench/instructions.sh`).

use std::net::SocketAddr;

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::prelude::{HttpPeer, ProxyHttp, Result, Server, Session};
use pingora::server::configuration::ServerConf;

// The same allocator as the `otpgate` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct PlainProxy {
    upstream: SocketAddr,
    // Whether to send the gate's headers too.
    headers: bool,
    requests: AtomicU64,
}

#[async_trait]
impl ProxyHttp for PlainProxy {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        request: &mut RequestHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        if !self.headers {
            return Ok(());
        }
        let id = self.requests.fetch_add(1, Ordering::Relaxed);
        let peer = session
            .client_addr()
            .and_then(|addr| addr.as_inet())
            .map_or(String::new(), |addr| addr.ip().to_string());
        let token = request
            .headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or_default()
            .to_owned();
        request.insert_header("x-request-id", format!("{id:016x}"))?;
        request.insert_header("x-forwarded-for", peer)?;
        request.insert_header("x-forwarded-proto", "http")?;
        request.insert_header("x-otpgate-jwt", token)?;
        request.insert_header("x-auth-subject", "usr_3q4xvkz7m2p8d6fjw5nhc9rtyb")?;
        request.insert_header("x-auth-tenant", "default")?;
        request.insert_header("x-auth-email", "bench@example.com")?;
        Ok(())
    }
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().unwrap_or("127.0.0.1:3200".into()).parse()?;
    let upstream: SocketAddr = args.next().unwrap_or("127.0.0.1:3000".into()).parse()?;
    let threads = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let headers = std::env::var("BENCH_HEADERS").is_ok_and(|v| v == "1");
    let conf = ServerConf {
        threads,
        // A benchmark target stops at once when told to.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = pingora::proxy::http_proxy_service(
        &server.configuration,
        PlainProxy {
            upstream,
            headers,
            requests: AtomicU64::new(0),
        },
    );
    service.add_tcp(&listen.to_string());
    server.add_service(service);
    server.run_forever()
}
