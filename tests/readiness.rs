//! Readiness: `/readyz` answers 200 while the parts the gate needs answer and 503
//! `not_ready`, naming the part, while one does not, and comes back by itself; `/healthz`
//! stays 200 throughout. `otpgate run` as a process, with a real Redis that is killed and
//! started again and an app that stops; and both forms in-process, with a store and a
//! directory that cannot be reached.

mod common;

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode as AxumStatus;
use axum::routing::get;
use common::{Form, RedisServer, both_forms, free_port, gate_command, start_form, wait_for_port};
use otpgate::Gate;
use otpgate::directory::HttpDirectory;
use otpgate::http::Front;
use otpgate::otp::ServerSecret;
use otpgate::store::{RedisSettings, RedisStore};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const TOKEN_SECRET: &str = "fedcba9876543210fedcba9876543210";

both_forms!(
    ready_when_store_and_directory_answer,
    an_unreachable_store_is_not_ready,
    a_failing_directory_is_not_ready,
);

/// `otpgate run` as a process, logging JSON lines to a file. Killed when dropped.
struct GateProcess {
    child: Child,
    base: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl GateProcess {
    async fn start(config: &str) -> GateProcess {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let path = dir.path().join("gate.toml");
        std::fs::write(&path, common::with_listen(config, port)).unwrap();
        let log = dir.path().join("gate.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = gate_command(&path, "info")
            .env("OTPGATE_LOG_FORMAT", "json")
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        let gate = GateProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        wait_for_port(port).await;
        gate
    }

    /// The warnings that say which part failed, as `(reason, status)`.
    fn unavailable_warnings(&self) -> Vec<(String, u64)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["message"] == "a part the gate needs is unavailable")
            .map(|line| {
                (
                    line["reason"].as_str().unwrap_or_default().to_owned(),
                    line["status"].as_u64().unwrap_or_default(),
                )
            })
            .collect()
    }
}

impl Drop for GateProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An app that can be stopped: its listener closes with [`StoppableApp::stop`].
struct StoppableApp {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl StoppableApp {
    async fn start() -> StoppableApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = common::echo_app(common::AppCalls::default());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        StoppableApp { addr, task }
    }

    /// Closes the listener: new connections are refused.
    async fn stop(&self) {
        self.task.abort();
        // The listener is dropped once the aborted task has unwound.
        for _ in 0..500 {
            if tokio::net::TcpStream::connect(self.addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the app still accepts connections after it was stopped");
    }
}

impl Drop for StoppableApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `GET {base}{path}`: the status, the `Retry-After` header and the JSON body.
async fn probe(
    client: &reqwest::Client,
    base: &str,
    path: &str,
) -> (StatusCode, Option<String>, Value) {
    let response = client
        .get(format!("{base}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .map(|value| value.to_str().unwrap().to_owned());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, retry_after, body)
}

/// Polls `/readyz` until it answers `want` (at most 15 s); `/healthz` must answer 200 on
/// every round. Returns the last readiness answer.
async fn readiness_becomes(
    client: &reqwest::Client,
    base: &str,
    want: StatusCode,
) -> (StatusCode, Option<String>, Value) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (health, _, health_body) = probe(client, base, "/healthz").await;
        assert_eq!(health, StatusCode::OK, "liveness stays up: {health_body}");
        assert_eq!(health_body, json!({"status": "ok"}));
        let answer = probe(client, base, "/readyz").await;
        if answer.0 == want {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still answers {} {} instead of {want}",
            answer.0,
            answer.2
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_not_ready(answer: &(StatusCode, Option<String>, Value), part: &str) {
    let (status, retry_after, body) = answer;
    assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        *body,
        json!({"error": "not_ready", "message": format!("{part} unavailable")})
    );
    assert_eq!(retry_after.as_deref(), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_redis_and_the_app_of_a_running_gate() {
    let mut redis = RedisServer::start().await;
    let app = StoppableApp::start().await;
    let config = format!(
        r#"
[server]
upstream = "http://{app}"
threads = 1
[store]
backend = "redis"
redis_url = "{url}"
[otp]
secret = "{SECRET}"
[token]
algorithm = "HS256"
secret = "{TOKEN_SECRET}"
"#,
        app = app.addr,
        url = redis.url(),
    );
    let gate = GateProcess::start(&config).await;
    let client = reqwest::Client::new();

    let (_, _, body) = readiness_becomes(&client, &gate.base, StatusCode::OK).await;
    assert_eq!(body, json!({"status": "ready"}));

    // Redis crashes: readiness says so, naming the store, and the log says why.
    redis.kill();
    let answer = readiness_becomes(&client, &gate.base, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_not_ready(&answer, "store");
    assert!(
        gate.unavailable_warnings()
            .contains(&("store".to_owned(), 503)),
        "no warning names the store: {:?}",
        gate.unavailable_warnings()
    );
    // A sign-in answers 503 too, and its warning names the store.
    let before = gate.unavailable_warnings().len();
    let sent = client
        .post(format!("{}/auth/otp/send", gate.base))
        .json(&json!({"email": "alice@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), StatusCode::SERVICE_UNAVAILABLE);
    let warnings = gate.unavailable_warnings();
    assert!(
        warnings[before..].contains(&("store".to_owned(), 503)),
        "the 503 to a send says nothing of the store: {warnings:?}"
    );

    // Redis is back: so is readiness, without a restart of the gate.
    redis.restart().await;
    let (_, _, body) = readiness_becomes(&client, &gate.base, StatusCode::OK).await;
    assert_eq!(body, json!({"status": "ready"}));

    // The app stops: the proxy is not ready, naming the upstream.
    app.stop().await;
    let answer = readiness_becomes(&client, &gate.base, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_not_ready(&answer, "upstream");
    assert!(
        gate.unavailable_warnings()
            .contains(&("upstream".to_owned(), 503)),
        "no warning names the upstream: {:?}",
        gate.unavailable_warnings()
    );
}

/// A directory app answering every lookup with `status`.
async fn directory_answering(status: AxumStatus) -> HttpDirectory {
    let addr = common::serve(Router::new().fallback(get(move || async move { status }))).await;
    HttpDirectory::new(
        format!("http://{addr}/users").parse().unwrap(),
        Duration::from_secs(60),
    )
}

fn gate_with(builder: otpgate::GateBuilder) -> Front {
    Front::with_defaults(builder.build().unwrap())
}

async fn ready_when_store_and_directory_answer(form: Form) {
    let directory = directory_answering(AxumStatus::NOT_FOUND).await;
    let front = gate_with(Gate::builder().directory(Arc::new(directory)));
    let (base, calls) = start_form(form, front).await;
    let client = reqwest::Client::new();
    let (status, retry_after, body) = probe(&client, &base, "/readyz").await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ready"})));
    assert_eq!(retry_after, None);
    // Answered by the gate itself, never by the app.
    assert_eq!(calls.count(), 0);
    let posted = client.post(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(posted.status(), StatusCode::METHOD_NOT_ALLOWED);
}

async fn an_unreachable_store_is_not_ready(form: Form) {
    // Nothing listens on this port.
    let store = RedisStore::new(
        RedisSettings {
            url: format!("redis://127.0.0.1:{}", free_port()),
            timeout: Duration::from_millis(300),
            ..RedisSettings::default()
        },
        &ServerSecret::new(SECRET.as_bytes().to_vec()).unwrap(),
    )
    .unwrap();
    let front = gate_with(
        Gate::builder()
            .secret(ServerSecret::new(SECRET.as_bytes().to_vec()).unwrap())
            .store(Arc::new(store)),
    );
    let (base, _) = start_form(form, front).await;
    let client = reqwest::Client::new();
    assert_not_ready(&probe(&client, &base, "/readyz").await, "store");
    let (health, _, _) = probe(&client, &base, "/healthz").await;
    assert_eq!(health, StatusCode::OK);
}

async fn a_failing_directory_is_not_ready(form: Form) {
    let directory = directory_answering(AxumStatus::INTERNAL_SERVER_ERROR).await;
    let front = gate_with(Gate::builder().directory(Arc::new(directory)));
    let (base, _) = start_form(form, front).await;
    let client = reqwest::Client::new();
    assert_not_ready(&probe(&client, &base, "/readyz").await, "directory");
    let (health, _, _) = probe(&client, &base, "/healthz").await;
    assert_eq!(health, StatusCode::OK);
}
