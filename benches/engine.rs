//! The engine's send + verify round trip on the memory store and on a real Redis (a
//! redis-server started on a free loopback port), one at a time and 64 at once, against
//! two same-run baselines: one bare memory-store read-modify-write, and one HMAC of a code.
//!
//! `cargo bench --bench engine`

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use otpgate::delivery::{DeliveryError, Message, Sender, Senders};
use otpgate::identifier::Identifier;
use otpgate::otp::{CodeFormat, CodeHasher, CodeState, ServerSecret, Write};
use otpgate::store::{MemoryStore, RedisSettings, RedisStore, Store};
use otpgate::{Gate, SendRequest, VerifyRequest};
use std::hint::black_box;
use tokio::sync::oneshot;

/// Hands each code to whoever waits for that destination, so many concurrent rounds can
/// run at once.
#[derive(Clone, Default)]
struct Loopback(Arc<Mutex<HashMap<String, oneshot::Sender<String>>>>);

#[async_trait]
impl Sender for Loopback {
    async fn send(&self, message: &Message) -> Result<(), DeliveryError> {
        if let Some(waiter) = self.0.lock().unwrap().remove(message.to.as_str()) {
            let _ = waiter.send(message.code.expose().to_owned());
        }
        Ok(())
    }
}

fn gate_on(store: Arc<dyn Store>, loopback: &Loopback) -> Gate {
    let sender = Arc::new(loopback.clone());
    Gate::builder()
        .store(store)
        .secret(ServerSecret::new(vec![7; 32]).unwrap())
        .senders(Senders {
            email: Some(sender.clone()),
            sms: Some(sender),
            ..Default::default()
        })
        .build()
        .unwrap()
}

/// One sign-in: send a code to a fresh identity, receive it, verify it.
async fn sign_in(gate: &Gate, loopback: &Loopback, n: u64) {
    // A fresh identity each round so no cooldown or window interferes.
    let email = format!("user{n}@example.com");
    let identifier = Identifier::email(&email).unwrap();
    let (tx, rx) = oneshot::channel();
    loopback.0.lock().unwrap().insert(email, tx);
    gate.send(SendRequest {
        tenant: None,
        identifier: identifier.clone(),
        client_ip: None,
        locale: None,
    })
    .await
    .unwrap();
    let code = rx.await.unwrap();
    let subject = gate
        .verify(VerifyRequest {
            tenant: None,
            identifier,
            code: &code,
            client_ip: None,
        })
        .await
        .unwrap();
    black_box(subject);
}

/// A real redis-server on a free loopback port, for as long as the benchmark runs.
struct RedisServer(std::process::Child, u16);

impl RedisServer {
    fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is missing: `make test-deps` installs it");
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return RedisServer(child, port);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server did not start on port {port}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const CONCURRENT: u64 = 64;

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let redis = RedisServer::start();
    let loopback = Loopback::default();
    let (memory_gate, redis_gate) = runtime.block_on(async {
        let redis_store = RedisStore::new(
            RedisSettings {
                url: format!("redis://127.0.0.1:{}", redis.1),
                ..RedisSettings::default()
            },
            &ServerSecret::new(vec![7; 32]).unwrap(),
        )
        .unwrap();
        (
            // Room for every identity the run creates: a full store evicts, and an evicted
            // pending code fails its verify (by design), which would end the run.
            gate_on(Arc::new(MemoryStore::new(20_000_000)), &loopback),
            gate_on(Arc::new(redis_store), &loopback),
        )
    });
    let counter = Arc::new(AtomicU64::new(0));

    let mut group = c.benchmark_group("engine");
    group.measurement_time(Duration::from_secs(8));
    for (name, gate) in [("memory", &memory_gate), ("redis", &redis_gate)] {
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("send_then_verify/{name}"), |b| {
            b.to_async(&runtime).iter(|| async {
                sign_in(gate, &loopback, counter.fetch_add(1, Ordering::Relaxed)).await
            })
        });
        // Throughput as a site sees it: many sign-ins in flight at once.
        group.throughput(Throughput::Elements(CONCURRENT));
        group.bench_function(format!("send_then_verify_x{CONCURRENT}/{name}"), |b| {
            b.to_async(&runtime).iter(|| async {
                let rounds: Vec<_> = (0..CONCURRENT)
                    .map(|_| {
                        let gate = gate.clone();
                        let loopback = loopback.clone();
                        let n = counter.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(async move { sign_in(&gate, &loopback, n).await })
                    })
                    .collect();
                for round in rounds {
                    round.await.unwrap();
                }
            })
        });
    }
    group.throughput(Throughput::Elements(1));

    let store = MemoryStore::default();
    let keys = AtomicU64::new(0);
    group.bench_function("baseline/store_update", |b| {
        b.to_async(&runtime).iter(|| async {
            let key = format!("k{}", keys.fetch_add(1, Ordering::Relaxed));
            store
                .update_code_state(&key, &mut |_| Write::Put {
                    state: CodeState::default(),
                    ttl: Duration::from_secs(60),
                })
                .await
                .unwrap();
        })
    });

    let hasher = CodeHasher::new(&ServerSecret::random());
    let code = CodeFormat::default().generate();
    group.bench_function("baseline/hmac_code", |b| {
        b.iter(|| hasher.hash(black_box("otp:default:email:a@example.com"), &code))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
