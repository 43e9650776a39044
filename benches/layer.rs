//! What `OtpLayer` adds to one request, in-process (no sockets, so no network noise):
//! the bare axum app as the same-run baseline, the app behind the layer with a valid
//! bearer token on a protected path, and a public path through the layer.
//!
//! `cargo bench --bench layer`

use std::hint::black_box;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use otpgate::Gate;
use otpgate::http::Front;
use otpgate::http::HttpSettings;
use otpgate::otp::{Clock, SystemClock};
use otpgate::token::Subject;
use otpgate::tower::OtpLayer;
use tower::ServiceExt;

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (gate, token) = runtime.block_on(async {
        let mut http = HttpSettings::default();
        http.protect.push("/api/".into());
        let gate = Front::new(Gate::builder().build().unwrap(), http);
        let token = gate
            .gate()
            .tokens()
            .mint(
                &Subject {
                    id: "u-42".into(),
                    email: Some("alice@example.com".into()),
                    phone: None,
                    tenant: "default".into(),
                },
                SystemClock.now(),
            )
            .unwrap()
            .token;
        (gate, token)
    });
    let app = Router::new()
        .route("/api/me", get(|| async { "ok" }))
        .route("/hello", get(|| async { "ok" }));
    let layered = app.clone().layer(OtpLayer::new(gate));
    let request = |path: &str| {
        Request::get(path)
            .header("authorization", format!("Bearer {token}"))
            .header("user-agent", "bench")
            .header("accept", "*/*")
            .body(Body::empty())
            .unwrap()
    };

    let mut group = c.benchmark_group("layer");
    group.bench_function("baseline/bare_app", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = app.clone().oneshot(request("/api/me")).await.unwrap();
            assert!(response.status().is_success());
            black_box(response)
        })
    });
    group.bench_function("authenticated", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = layered.clone().oneshot(request("/api/me")).await.unwrap();
            assert!(response.status().is_success());
            black_box(response)
        })
    });
    group.bench_function("public_path", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = layered.clone().oneshot(request("/hello")).await.unwrap();
            assert!(response.status().is_success());
            black_box(response)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
