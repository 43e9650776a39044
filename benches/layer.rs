//! What `OtpLayer` adds to one request, in-process (no sockets, so no network noise):
//! the bare axum app as the same-run baseline, the app behind the layer with a valid
//! bearer token on a protected path, and a public path through the layer. A second
//! baseline puts a plain `map_request` in front of the app that sets the five headers the
//! layer sets for that request (a fresh request id, the token, subject, tenant, email) and
//! checks nothing: what those headers cost on their own.
//!
//! `cargo bench --bench layer`

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Request};
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
    let requests = std::sync::Arc::new(AtomicU64::new(0));
    let same_headers = app.clone().layer(tower::util::MapRequestLayer::new(
        move |mut request: Request<Body>| {
            let id = requests.fetch_add(1, Ordering::Relaxed);
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
            set("x-otpgate-jwt", token);
            set("x-auth-subject", "u-42".into());
            set("x-auth-tenant", "default".into());
            set("x-auth-email", "alice@example.com".into());
            request
        },
    ));
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
    group.bench_function("baseline/app_setting_the_same_headers", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = same_headers
                .clone()
                .oneshot(request("/api/me"))
                .await
                .unwrap();
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
