//! The engine's issue + verify round trip on the memory store, against two same-run
//! baselines: one bare store read-modify-write, and one HMAC of a code.
//!
//! `cargo bench --bench engine`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use criterion::{Criterion, criterion_group, criterion_main};
use otpgate::delivery::{DeliveryError, Message, Sender, Senders};
use otpgate::identifier::Identifier;
use otpgate::otp::{CodeFormat, CodeHasher, IdentityState, ServerSecret, Write};
use otpgate::store::{MemoryStore, Store};
use otpgate::{Gate, SendRequest, VerifyRequest};
use std::hint::black_box;
use tokio::sync::mpsc;

/// Hands codes back to the benchmark instead of delivering them.
struct Loopback(mpsc::UnboundedSender<Message>);

#[async_trait]
impl Sender for Loopback {
    async fn send(&self, message: &Message) -> Result<(), DeliveryError> {
        let _ = self.0.send(message.clone());
        Ok(())
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let sender = Arc::new(Loopback(tx));
    let gate = runtime.block_on(async {
        Gate::builder()
            .senders(Senders {
                email: Some(sender.clone()),
                sms: Some(sender),
                ..Default::default()
            })
            .build()
            .unwrap()
    });
    let counter = AtomicU64::new(0);

    let mut group = c.benchmark_group("engine");
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("send_then_verify", |b| {
        b.to_async(&runtime).iter(|| async {
            // A fresh identity each round so no cooldown or window interferes.
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let identifier = Identifier::email(&format!("user{n}@example.com")).unwrap();
            gate.send(SendRequest {
                tenant: None,
                identifier: identifier.clone(),
                client_ip: None,
                locale: None,
            })
            .await
            .unwrap();
            let message = rx.lock().await.recv().await.unwrap();
            let minted = gate
                .verify(VerifyRequest {
                    tenant: None,
                    identifier,
                    code: message.code.expose(),
                    client_ip: None,
                })
                .await
                .unwrap();
            black_box(minted);
        })
    });

    let store = MemoryStore::default();
    let keys = AtomicU64::new(0);
    group.bench_function("baseline/store_update", |b| {
        b.to_async(&runtime).iter(|| async {
            let key = format!("k{}", keys.fetch_add(1, Ordering::Relaxed));
            store
                .update_identity(&key, &mut |_| Write::Put {
                    state: IdentityState::default(),
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
