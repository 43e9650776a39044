//! Token verification, cold (signature check) and cached, against the cost of hashing
//! the token (the cache key) as the same-run baseline.
//!
//! `cargo bench --bench tokens`

use criterion::{Criterion, criterion_group, criterion_main};
use otpgate::otp::{Clock, SystemClock};
use otpgate::token::{SigningAlgorithm, SigningKey, Subject, TokenSettings, Tokens};
use std::hint::black_box;

fn subject() -> Subject {
    Subject {
        id: "alice@example.com".into(),
        email: Some("alice@example.com".into()),
        phone: None,
        tenant: "default".into(),
    }
}

fn bench(c: &mut Criterion) {
    let now = SystemClock.now();
    let mut group = c.benchmark_group("token");
    for algorithm in [
        SigningAlgorithm::EdDSA,
        SigningAlgorithm::ES256,
        SigningAlgorithm::RS256,
        SigningAlgorithm::HS256,
    ] {
        let key = SigningKey::generate(algorithm).unwrap().0;
        let cold = Tokens::new(
            key.clone(),
            TokenSettings {
                cache_entries: 0,
                ..TokenSettings::default()
            },
        );
        let cached = Tokens::new(key, TokenSettings::default());
        let token = cached.mint(&subject(), now).unwrap().token;
        cached.verify(&token, now).unwrap();

        group.bench_function(format!("{algorithm:?}/mint"), |b| {
            b.iter(|| cold.mint(black_box(&subject()), now).unwrap())
        });
        group.bench_function(format!("{algorithm:?}/verify_cold"), |b| {
            b.iter(|| cold.verify(black_box(&token), now).unwrap())
        });
        group.bench_function(format!("{algorithm:?}/verify_cached"), |b| {
            b.iter(|| cached.verify(black_box(&token), now).unwrap())
        });
        if algorithm == SigningAlgorithm::EdDSA {
            group.bench_function("baseline/sha256_of_token", |b| {
                b.iter(|| {
                    aws_lc_rs::digest::digest(
                        &aws_lc_rs::digest::SHA256,
                        black_box(token.as_bytes()),
                    )
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
