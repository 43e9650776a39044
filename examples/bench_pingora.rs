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
//! harness).

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::prelude::{HttpPeer, ProxyHttp, Result, Server, Session};
use pingora::server::configuration::ServerConf;

// The same allocator as the `otpgate` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct PlainProxy {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for PlainProxy {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
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
    let conf = ServerConf {
        threads,
        // A benchmark target stops at once when told to.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service =
        pingora::proxy::http_proxy_service(&server.configuration, PlainProxy { upstream });
    service.add_tcp(&listen.to_string());
    server.add_service(service);
    server.run_forever()
}
