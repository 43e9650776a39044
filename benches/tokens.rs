//! Token verification, cold (signature check) and cached, against the cost of hashing
//! the token (the cache key) as the same-run baseline; minting, against
//! `jsonwebtoken::encode` of the same header, claims and key (which parses the key for
//! every token).
//!
//! `cargo bench --bench tokens`

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::EncodingKey;
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
    for algorithm in SigningAlgorithm::ALL {
        let (key, secret) = SigningKey::generate(algorithm).unwrap();
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
        let minted = cold.mint(&subject(), now).unwrap();
        let header = jsonwebtoken::decode_header(&minted.token).unwrap();
        let encoding = match algorithm {
            SigningAlgorithm::EdDSA => EncodingKey::from_ed_pem(secret.as_bytes()).unwrap(),
            SigningAlgorithm::ES256 => EncodingKey::from_ec_pem(secret.as_bytes()).unwrap(),
            SigningAlgorithm::RS256 => EncodingKey::from_rsa_pem(secret.as_bytes()).unwrap(),
            SigningAlgorithm::HS256 => {
                EncodingKey::from_secret(&URL_SAFE_NO_PAD.decode(&*secret).unwrap())
            }
        };
        group.bench_function(format!("{algorithm:?}/jsonwebtoken_encode"), |b| {
            b.iter(|| jsonwebtoken::encode(&header, black_box(&*minted.claims), &encoding).unwrap())
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
