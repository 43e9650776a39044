//! The smallest axum app, for measuring what the tower layer costs: `GET /` answers
//! `ok`. With a config file it runs behind `OtpLayer` built from it, so every request's
//! bearer token is checked (protect `/` in that file) and its identity injected.
//!
//! ```sh
//! cargo run --release --example bench_app -- 127.0.0.1:3100                       # bare
//! cargo run --release --example bench_app -- 127.0.0.1:3101 bench/otpgate.toml    # with the layer
//! ```
//!
//! `bench/run.sh` (`make bench`) drives both with wrk. `BENCH_THREADS` sets the worker
//! threads (default 1, like every other server in that harness).

use std::net::SocketAddr;

use axum::Router;
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
