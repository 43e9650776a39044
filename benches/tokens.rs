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
            cache_keys(&mut group, &token);
        }
    }
    group.finish();
}

/// The verified-token cache key: SHA-256 (what the cache uses) against the keyed hashes
/// that could replace it. Only cryptographic ones qualify: a key that an attacker could
/// make collide with a cached token's would let a forged token answer from the cache.
fn cache_keys(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    token: &str,
) {
    group.bench_function("cache_key/sha256", |b| {
        b.iter(|| {
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, black_box(token.as_bytes()))
        })
    });
    let key = [7u8; 32];
    group.bench_function("cache_key/blake3_keyed", |b| {
        b.iter(|| blake3::keyed_hash(&key, black_box(token.as_bytes())))
    });
    group.bench_function("cache_key/siphash_2_4_128", |b| {
        use std::hash::Hasher;
        b.iter(|| {
            let mut hasher = siphasher::sip128::SipHasher24::new_with_key(&[7u8; 16]);
            hasher.write(black_box(token.as_bytes()));
            siphasher::sip128::Hasher128::finish128(&hasher)
        })
    });
    group.bench_function("cache_key/siphash_1_3_128", |b| {
        use std::hash::Hasher;
        b.iter(|| {
            let mut hasher = siphasher::sip128::SipHasher13::new_with_key(&[7u8; 16]);
            hasher.write(black_box(token.as_bytes()));
            siphasher::sip128::Hasher128::finish128(&hasher)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
