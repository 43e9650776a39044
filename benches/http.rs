//! The gate's own work, beyond pass-through (`bench/run.sh` runs this and puts its rows
//! in bench/RESULTS.md):
//!
//! - sign-ins over HTTP: send + verify against `otpgate run` (memory store, then a
//!   redis-server on loopback; codes delivered by webhook to this process), 64 clients at
//!   once, against plain `GET /healthz` from the same clients in the same run;
//! - memory per pending code: RSS growth of a gate holding 100k and then 1M pending codes,
//!   against the plain size of one (its store key's bytes and its record's struct);
//! - cold start: from spawning `otpgate run` to the first answered request, against
//!   spawning `/bin/true`.
//!
//! `cargo bench --bench http -- --bench` for the full run (`BENCH_QUICK=1` for a short
//! one). Under `cargo test` it runs a small smoke pass of each.

use std::collections::HashMap;
use std::io::{Read, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::routing::post;
use axum::{Json, Router};
use otpgate::delivery::{DeliveryError, Message, Sender, Senders};
use otpgate::identifier::Identifier;
use otpgate::store::MemoryStore;
use otpgate::{Gate, GateError, SendRequest};
use serde_json::{Value, json};
use tokio::sync::oneshot;

const CLIENTS: usize = 64;

struct Scale {
    load_for: Duration,
    pending: [u64; 2],
    cold_starts: usize,
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let quick = std::env::var("BENCH_QUICK").as_deref() == Ok("1");
    let scale = match (benchmarking, quick) {
        (true, false) => Scale {
            load_for: Duration::from_secs(10),
            pending: [100_000, 1_000_000],
            cold_starts: 20,
        },
        (true, true) => Scale {
            load_for: Duration::from_secs(2),
            pending: [20_000, 100_000],
            cold_starts: 5,
        },
        // `cargo test`: prove each part works, quickly.
        (false, _) => Scale {
            load_for: Duration::from_millis(300),
            pending: [1_000, 2_000],
            cold_starts: 1,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("eddsa.pem");
    let status = Command::new(env!("CARGO_BIN_EXE_otpgate"))
        .args(["keygen", "--alg", "EdDSA", "--out"])
        .arg(&key)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());

    println!(
        "{}",
        runtime.block_on(sign_ins(dir.path(), &key, &scale, None))
    );
    let redis = RedisServer::start();
    println!(
        "{}",
        runtime.block_on(sign_ins(dir.path(), &key, &scale, Some(redis.1)))
    );
    drop(redis);
    for row in pending_codes(&runtime, &scale) {
        println!("{row}");
    }
    println!("{}", cold_start(dir.path(), &key, &scale));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `otpgate run` with `extra` config, killed when dropped.
struct Gateway(Child, u16);

impl Gateway {
    fn spawn(dir: &std::path::Path, key: &std::path::Path, extra: &str) -> Gateway {
        let port = free_port();
        let config = dir.join(format!("gate-{port}.toml"));
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\nupstream = \"http://127.0.0.1:9\"\nthreads = 1\n\
                 [token]\nalgorithm = \"EdDSA\"\nprivate_key = \"{}\"\n{extra}",
                key.display()
            ),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_otpgate"))
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("otpgate runs");
        Gateway(child, port)
    }

    /// Blocks until `/healthz` answers 200 (at most 10 s).
    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.1)) {
                let _ = stream.write_all(
                    b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n",
                );
                let mut answer = Vec::new();
                let _ = stream.read_to_end(&mut answer);
                if answer.starts_with(b"HTTP/1.1 200") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        panic!("otpgate did not answer /healthz within 10 s");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A redis-server on a free loopback port, without persistence; killed when dropped.
struct RedisServer(Child, u16);

impl RedisServer {
    fn start() -> RedisServer {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(5));
        }
        RedisServer(child, port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<String>>>>;

/// Sign-ins per second on the memory store, or on the Redis at `redis_port`.
async fn sign_ins(
    dir: &std::path::Path,
    key: &std::path::Path,
    scale: &Scale,
    redis_port: Option<u16>,
) -> String {
    // The webhook receiver: hands each code to the client waiting for that address.
    let waiters: Waiters = Arc::default();
    let hook_waiters = waiters.clone();
    let hook = Router::new().route(
        "/hook",
        post(move |Json(body): Json<Value>| {
            let waiters = hook_waiters.clone();
            async move {
                let to = body["to"].as_str().unwrap_or_default().to_owned();
                if let Some(waiter) = waiters.lock().unwrap().remove(&to) {
                    let _ = waiter.send(body["code"].as_str().unwrap_or_default().to_owned());
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, hook).await });

    // A shared store needs the secret every instance shares.
    let store = match redis_port {
        Some(port) => format!(
            "[store]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:{port}\"\n\
             namespace = \"bench{}\"\n",
            free_port()
        ),
        None => String::new(),
    };
    // Every client is 127.0.0.1, so the per-IP limits are lifted for this measurement.
    let gate = Gateway::spawn(
        dir,
        key,
        &format!(
            "{store}[otp]\nsecret = \"0123456789abcdef0123456789abcdef\"\n\
             sends_per_ip = \"1000000000/1s\"\nverifies_per_ip = \"1000000000/1s\"\n\
             [delivery.email]\nkind = \"webhook\"\nurl = \"http://{hook_addr}/hook\"\n\
             [delivery.sms]\nkind = \"webhook\"\nurl = \"http://{hook_addr}/hook\"\n"
        ),
    );
    tokio::task::block_in_place(|| gate.wait_healthy());
    let base = format!("http://127.0.0.1:{}", gate.1);
    let client = reqwest::Client::new();

    let healthz = drive(scale.load_for, |_| {
        let request = client.get(format!("{base}/healthz"));
        async move {
            let answer = request.send().await.unwrap();
            assert!(answer.status().is_success());
        }
    })
    .await;

    let next = AtomicU64::new(0);
    let sign_ins = drive(scale.load_for, |_| {
        let email = format!("user{}@example.com", next.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        waiters.lock().unwrap().insert(email.clone(), tx);
        let send = client
            .post(format!("{base}/auth/otp/send"))
            .json(&json!({ "email": email }));
        let verify = client.post(format!("{base}/auth/otp/verify"));
        async move {
            let sent = send.send().await.unwrap();
            assert!(sent.status().is_success(), "send: {}", sent.status());
            let code = rx.await.unwrap();
            let verified = verify
                .json(&json!({ "email": email, "code": code }))
                .send()
                .await
                .unwrap();
            assert!(
                verified.status().is_success(),
                "verify: {}",
                verified.status()
            );
        }
    })
    .await;
    format!(
        "| sign-ins over HTTP (send + verify, {CLIENTS} clients, {} store) | {sign_ins:.0} /s | `GET /healthz`: {healthz:.0} req/s | {:.3} |",
        if redis_port.is_some() {
            "Redis"
        } else {
            "memory"
        },
        sign_ins / healthz
    )
}

/// Runs `CLIENTS` loops of `round` for `duration`; returns rounds per second.
async fn drive<F, Fut>(duration: Duration, round: F) -> f64
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut loops = tokio::task::JoinSet::new();
    // Each client runs its rounds one after another; the futures are built here, on the
    // caller's side, so `round` need not be Send.
    let mut pending: Vec<_> = (0..CLIENTS).map(|i| Some(round(i))).collect();
    while Instant::now() < deadline {
        for (i, slot) in pending.iter_mut().enumerate() {
            if let Some(future) = slot.take() {
                let done = done.clone();
                loops.spawn(async move {
                    future.await;
                    done.fetch_add(1, Ordering::Relaxed);
                    i
                });
            }
        }
        match loops.join_next().await {
            Some(finished) => pending[finished.unwrap()] = Some(round(0)),
            None => break,
        }
    }
    while loops.join_next().await.is_some() {}
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Discards messages: the store is what is measured.
struct Discard;

#[async_trait]
impl Sender for Discard {
    async fn send(&self, _: &Message) -> Result<(), DeliveryError> {
        Ok(())
    }
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

fn pending_codes(runtime: &tokio::runtime::Runtime, scale: &Scale) -> Vec<String> {
    let gate = runtime.block_on(async {
        Gate::builder()
            .store(Arc::new(MemoryStore::new(4_000_000)))
            .senders(Senders {
                email: Some(Arc::new(Discard)),
                sms: Some(Arc::new(Discard)),
                ..Senders::default()
            })
            .build()
            .unwrap()
    });
    let issue = |from: u64, to: u64| {
        runtime.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            let per = (to - from).div_ceil(CLIENTS as u64);
            for c in 0..CLIENTS as u64 {
                let gate = gate.clone();
                let start = from + c * per;
                let end = (start + per).min(to);
                tasks.spawn(async move {
                    for n in start..end {
                        let identifier =
                            Identifier::email(&format!("user{n}@example.com")).unwrap();
                        loop {
                            let sent = gate
                                .send(SendRequest {
                                    tenant: None,
                                    identifier: identifier.clone(),
                                    client_ip: None,
                                    locale: None,
                                })
                                .await;
                            match sent {
                                Ok(_) => break,
                                // The outbox is full for a moment (nothing was stored):
                                // wait for it, then retry.
                                Err(GateError::DeliveryUnavailable) => {
                                    tokio::time::sleep(Duration::from_millis(1)).await
                                }
                                Err(other) => panic!("send: {other}"),
                            }
                        }
                    }
                });
            }
            while let Some(task) = tasks.join_next().await {
                task.unwrap();
            }
        })
    };
    // Warm the allocator and the runtime first, so the growth is the codes'.
    issue(0, 1_000);
    let base = rss_bytes();
    let key = otpgate::store::keys::code_record(
        "default",
        &Identifier::email("user1@example.com").unwrap(),
    );
    assert!(
        runtime
            .block_on(gate.store().peek_code_state(&key))
            .unwrap()
            .is_some()
    );
    // What one pending code is, laid out plainly: its key's bytes and its record's struct.
    let logical = key.len() + std::mem::size_of::<otpgate::otp::CodeState>();
    let mut rows = Vec::new();
    let mut pending = 0;
    for target in scale.pending {
        issue(1_000 + pending, 1_000 + target);
        pending = target;
        let per_code = (rss_bytes().saturating_sub(base)) as f64 / target as f64;
        rows.push(format!(
            "| memory per pending code, {target} pending | {per_code:.0} bytes | key + record struct: {logical} bytes | {:.2} |",
            per_code / logical as f64
        ));
    }
    rows
}

fn cold_start(dir: &std::path::Path, key: &std::path::Path, scale: &Scale) -> String {
    let mut starts = Vec::new();
    let mut baselines = Vec::new();
    for _ in 0..scale.cold_starts {
        let started = Instant::now();
        let status = Command::new("true").status().unwrap();
        assert!(status.success());
        baselines.push(started.elapsed());

        let started = Instant::now();
        let gate = Gateway::spawn(dir, key, "");
        gate.wait_healthy();
        starts.push(started.elapsed());
    }
    starts.sort();
    baselines.sort();
    let median = starts[starts.len() / 2];
    let baseline = baselines[baselines.len() / 2];
    format!(
        "| cold start to first answered request (median of {}, max {:.1} ms) | {:.1} ms | spawning `true`: {:.2} ms | {:.0} |",
        starts.len(),
        starts[starts.len() - 1].as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e3,
        baseline.as_secs_f64() * 1e3,
        median.as_secs_f64() / baseline.as_secs_f64()
    )
}
