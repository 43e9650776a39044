//! The smallest axum app, for measuring what the tower layer costs: `GET /` answers
//! `ok`. With a config file it runs behind `OtpLayer` built from it, so every request's
//! bearer token is checked (protect `/` in that file) and its identity injected.
//!
//! ```sh
//! cargo run --release --example bench_app -- 127.0.0.1:3100                       # bare
//! cargo run --release --example bench_app -- 127.0.0.1:3101 bench/otpgate.toml    # with the layer
//! cargo run --release --example bench_app -- 127.0.0.1:3102 --headers            # see below
//! ```
//!
//! `--headers` puts a plain tower `MapRequest` in front instead, which sets the headers the
//! layer sets for an authenticated request (request id, forwarding headers, the token and
//! the identity), checking nothing: the same header work without the gate's decisions
//! (`bench/instructions.sh`).
//!
//! `bench/run.sh` (`make bench`) drives both with wrk. `BENCH_THREADS` sets the worker
//! threads (default 1, like every other server in that harness).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::routing::get;
use otpgate::config::Config;
use otpgate::tower::OtpLayer;

// The same allocator as the `otpgate` binary, for both the bare and the layered app.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().unwrap_or("127.0.0.1:3100".into()).parse()?;
    let config = args.next();
    let threads = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?
        .block_on(async move {
            let app = Router::new().route("/", get(|| async { "ok" }));
            let app = match config {
                Some(flag) if flag == "--headers" => {
                    app.layer(tower::util::MapRequestLayer::new(set_headers))
                }
                Some(path) => {
                    let gate = Config::from_file(path.as_ref())?.build()?;
                    app.layer(OtpLayer::new(gate))
                }
                None => app,
            };
            let listener = tokio::net::TcpListener::bind(listen).await?;
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await?;
            Ok(())
        })
}

/// What `--headers` does to each request: sets the headers the layer would, from nothing
/// but the request itself (`tower`'s `MapRequest`, the plainest way to touch a request).
fn set_headers(mut request: Request) -> Request {
    static REQUESTS: AtomicU64 = AtomicU64::new(0);
    let id = REQUESTS.fetch_add(1, Ordering::Relaxed);
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(String::new(), |info| info.0.ip().to_string());
    let token = request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let headers = request.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    set("x-request-id", format!("{id:016x}"));
    set("x-forwarded-for", peer);
    set("x-forwarded-proto", "http".into());
    set("x-otpgate-jwt", token);
    set("x-auth-subject", "usr_3q4xvkz7m2p8d6fjw5nhc9rtyb".into());
    set("x-auth-tenant", "default".into());
    set("x-auth-email", "bench@example.com".into());
    request
}
