//! The Redis store over TLS, against a real redis-server that speaks TLS only and asks for
//! client certificates: a test CA, a server certificate for 127.0.0.1 and a client
//! certificate made here. The conformance suite passes over TLS; a server certificate
//! from another CA and a client without its certificate are refused; the `[store]` TLS
//! keys are read from the config file's folder and a wrong one is named with its line.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::redis_pki::Pki;
use common::{capture, email_and_sms, free_port, next_message, send_to, verify_for, wait_for_port};
use otpgate::config::Config;
use otpgate::identifier::Identifier;
use otpgate::otp::ServerSecret;
use otpgate::store::{
    RedisSettings, RedisStore, RedisTls, RedisTopology, Store, StoreError, conformance,
};
use otpgate::token::SigningKey;
use otpgate::{Gate, GateError};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const TOKEN_SECRET: &str = "fedcba9876543210fedcba9876543210";

fn secret() -> ServerSecret {
    ServerSecret::new(SECRET.to_vec()).unwrap()
}

/// A redis-server that listens with TLS only (no plain port) and refuses clients
/// without a certificate of the test CA. Killed when dropped.
struct TlsRedis {
    port: u16,
    child: Child,
    _data: tempfile::TempDir,
}

impl TlsRedis {
    async fn start(pki: &Pki) -> TlsRedis {
        let port = free_port();
        let data = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--tls-cert-file")
            .arg(pki.path("server.pem"))
            .arg("--tls-key-file")
            .arg(pki.path("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(pki.path("ca.pem"))
            .args(["--tls-auth-clients", "yes"])
            .arg("--dir")
            .arg(data.path())
            .stdout(Stdio::null())
            .spawn()
            .expect(
                "redis-server is missing: `make test` installs it (apt-get install redis-server)",
            );
        wait_for_port(port).await;
        TlsRedis {
            port,
            child,
            _data: data,
        }
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn store(url: &str, namespace: &str, tls: &RedisTls) -> RedisStore {
    let settings = RedisSettings {
        url: url.into(),
        namespace: namespace.into(),
        timeout: Duration::from_secs(2),
    };
    RedisStore::with_options(settings, &RedisTopology::Single, tls, &secret()).unwrap()
}

fn gate(
    store: RedisStore,
) -> (
    Gate,
    tokio::sync::mpsc::UnboundedReceiver<otpgate::delivery::Message>,
) {
    let (sender, inbox) = capture();
    let gate = Gate::builder()
        .store(Arc::new(store))
        .secret(secret())
        .signing_key(SigningKey::from_hmac_secret(TOKEN_SECRET.as_bytes()).unwrap())
        .senders(email_and_sms(sender))
        .build()
        .unwrap();
    (gate, inbox)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_passes_the_conformance_suite_over_tls() {
    let pki = Pki::new();
    let server = TlsRedis::start(&pki).await;
    let url = server.url();
    let tls = pki.tls("ca.pem", true);
    let fresh = AtomicUsize::new(0);
    let namespace = || format!("tls{}", fresh.fetch_add(1, Ordering::SeqCst));
    conformance::run_all(|| store(&url, &namespace(), &tls)).await;
    conformance::run_shared(|| {
        let shared = namespace();
        (store(&url, &shared, &tls), store(&url, &shared, &tls))
    })
    .await;
    assert!(
        store(&url, "x", &tls).describe().contains("(tls)"),
        "the description says the connection is encrypted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_works_over_tls_with_a_client_certificate() {
    let pki = Pki::new();
    let server = TlsRedis::start(&pki).await;
    let (gate, mut inbox) = gate(store(&server.url(), "signin", &pki.tls("ca.pem", true)));
    gate.readiness().await.unwrap();
    let alice = Identifier::email("alice@example.com").unwrap();
    gate.send(send_to(alice.clone())).await.unwrap();
    let code = next_message(&mut inbox).await.code.expose().to_owned();
    gate.verify(verify_for(alice.clone(), &code)).await.unwrap();
    assert!(
        gate.verify(verify_for(alice, &code)).await.is_err(),
        "single use over TLS too"
    );
}

/// Whether `store` fails to reach Redis, as a store error (never a panic), and why.
async fn refused(store: RedisStore) -> String {
    match store.ping().await {
        Err(StoreError::Unavailable(why)) => why,
        other => panic!("expected the connection to be refused, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let server = TlsRedis::start(&pki).await;
    let why = refused(store(&server.url(), "x", &pki.tls("other-ca.pem", true))).await;
    assert!(
        why.to_lowercase().contains("certificate"),
        "the reason names the certificate: {why}"
    );
    // The system's roots do not know the test CA either.
    let system_roots = RedisTls {
        ca_pem: None,
        ..pki.tls("ca.pem", true)
    };
    let why = refused(store(&server.url(), "x", &system_roots)).await;
    assert!(why.to_lowercase().contains("certificate"), "{why}");

    // A gate on it is not ready, and says the store is why; sign-ins fail closed.
    let (gate, mut inbox) = gate(store(&server.url(), "x", &pki.tls("other-ca.pem", true)));
    match gate.readiness().await {
        Err(GateError::NotReady { part, detail }) => {
            assert_eq!(part, "store");
            assert!(detail.to_lowercase().contains("certificate"), "{detail}");
        }
        other => panic!("expected not ready, got {other:?}"),
    }
    let sent = gate
        .send(send_to(Identifier::email("a@example.com").unwrap()))
        .await;
    assert!(
        matches!(sent, Err(GateError::StoreUnavailable(_))),
        "{sent:?}"
    );
    assert!(inbox.try_recv().is_err(), "no code is sent");

    // The same server with the right CA answers: the refusal was the certificate's.
    store(&server.url(), "x", &pki.tls("ca.pem", true))
        .ping()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_the_client_certificate_is_refused_by_the_server() {
    let pki = Pki::new();
    let server = TlsRedis::start(&pki).await;
    let why = refused(store(&server.url(), "x", &pki.tls("ca.pem", false))).await;
    // The server's TLS alert says what it missed.
    assert!(why.to_lowercase().contains("certificate"), "{why}");
    store(&server.url(), "x", &pki.tls("ca.pem", true))
        .ping()
        .await
        .unwrap();
}

/// `text` as a config file in `dir`, checked and built.
fn parse(text: &str, dir: &Path) -> Result<Config, String> {
    Config::parse(text, "test.toml", dir).map_err(|e| e.to_string())
}

/// The shared secrets a Redis store needs, after `store`.
fn with_shared(store: &str) -> String {
    format!(
        "{store}[otp]\nsecret = \"{}\"\n[token]\nalgorithm = \"HS256\"\nsecret = \"{TOKEN_SECRET}\"\n",
        std::str::from_utf8(SECRET).unwrap()
    )
}

/// The 1-based line of `text` that starts with `key`.
fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|line| line.starts_with(key))
        .unwrap_or_else(|| panic!("{key} is in {text}"))
        + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_tls_keys_are_read_from_the_config_files_folder() {
    let pki = Pki::new();
    let server = TlsRedis::start(&pki).await;
    let text = with_shared(&format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"{}\"\ntls_ca_file = \"ca.pem\"\n\
         tls_client_cert = \"client.pem\"\ntls_client_key = \"client.key\"\n",
        server.url()
    ));
    let front = parse(&text, pki.dir.path()).unwrap().build().unwrap();
    front.gate().readiness().await.unwrap();
}

#[test]
fn wrong_store_tls_keys_are_named_with_their_line() {
    let pki = Pki::new();
    let dir = pki.dir.path();
    let tls = "tls_ca_file = \"ca.pem\"\ntls_client_cert = \"client.pem\"\n\
               tls_client_key = \"client.key\"\n";
    let url = "redis_url = \"rediss://127.0.0.1:6380\"\n";
    for (store, key) in [
        (
            format!("{url}tls_ca_file = \"missing.pem\"\n"),
            "tls_ca_file",
        ),
        // A key where certificates belong, a certificate where the key belongs.
        (
            format!("{url}tls_ca_file = \"client.key\"\n"),
            "tls_ca_file",
        ),
        (
            format!("{url}tls_client_cert = \"client.key\"\ntls_client_key = \"client.key\"\n"),
            "tls_client_cert",
        ),
        (
            format!("{url}tls_client_cert = \"client.pem\"\ntls_client_key = \"client.pem\"\n"),
            "tls_client_key",
        ),
        // Both or neither.
        (
            format!("{url}tls_client_cert = \"client.pem\"\n"),
            "tls_client_cert",
        ),
        (
            format!("{url}tls_client_key = \"client.key\"\n"),
            "tls_client_key",
        ),
        // Certificates for a plain connection would be silently unused.
        (
            format!("redis_url = \"redis://127.0.0.1:6379\"\n{tls}"),
            "tls_ca_file",
        ),
        (
            format!(
                "redis_cluster = [\"rediss://127.0.0.1:7001\", \"redis://127.0.0.1:7002\"]\n{tls}"
            ),
            "tls_ca_file",
        ),
        // No certificate check at all.
        (
            "redis_url = \"rediss://127.0.0.1:6380/#insecure\"\n".to_owned(),
            "redis_url",
        ),
        (
            "redis_url = \"valkeys://127.0.0.1:6380#insecure\"\n".to_owned(),
            "redis_url",
        ),
        // One server or a cluster; a cluster of something; database 0 only.
        (
            format!("{url}redis_cluster = [\"redis://127.0.0.1:7001\"]\n"),
            "redis_cluster",
        ),
        ("redis_cluster = []\n".to_owned(), "redis_cluster"),
        // Sentinel: a primary's name with the sentinels, one kind of deployment at a time.
        (
            "sentinels = [\"redis://127.0.0.1:26379\"]\n".to_owned(),
            "sentinels",
        ),
        (
            "sentinels = []\nsentinel_master = \"mymaster\"\n".to_owned(),
            "sentinels",
        ),
        (
            format!("{url}sentinel_master = \"mymaster\"\n"),
            "sentinel_master",
        ),
        (
            "sentinels = [\"redis://127.0.0.1:26379\"]\nsentinel_master = \"m\"\n\
             redis_cluster = [\"redis://127.0.0.1:7001\"]\n"
                .to_owned(),
            "redis_cluster",
        ),
        (
            format!("sentinels = [\"redis://127.0.0.1:26379\"]\nsentinel_master = \"m\"\n{tls}"),
            "tls_ca_file",
        ),
        (
            "redis_cluster = [\"redis://127.0.0.1:7001/2\"]\n".to_owned(),
            "redis_cluster",
        ),
    ] {
        let text = with_shared(&format!("[store]\nbackend = \"redis\"\n{store}"));
        let error = parse(&text, dir).map(|_| ()).unwrap_err();
        assert!(error.contains(&format!("`store.{key}`")), "{key}: {error}");
        let line = line_of(&text, key);
        assert!(
            error.contains(&format!("test.toml:{line}:")),
            "{key} on line {line}: {error}"
        );
    }
}

#[test]
fn tls_and_valkey_urls_are_accepted() {
    let pki = Pki::new();
    let dir = pki.dir.path();
    for store in [
        // Certificates of the system's roots (a managed Redis), or of a CA of one's own.
        "redis_url = \"rediss://127.0.0.1:6380\"\n",
        "redis_url = \"valkeys://127.0.0.1:6380\"\ntls_ca_file = \"ca.pem\"\n",
        "redis_url = \"valkey://127.0.0.1:6379\"\n",
        "redis_url = \"rediss://127.0.0.1:6380\"\ntls_ca_file = \"ca.pem\"\n\
         tls_client_cert = \"client.pem\"\ntls_client_key = \"client.key\"\n",
        "redis_cluster = [\"redis://127.0.0.1:7001\", \"redis://127.0.0.1:7002\"]\n",
        "redis_cluster = [\"rediss://127.0.0.1:7001\"]\ntls_ca_file = \"ca.pem\"\n",
        "sentinels = [\"redis://127.0.0.1:26379\", \"redis://127.0.0.1:26380\"]\n\
         sentinel_master = \"mymaster\"\n",
        "sentinels = [\"redis://127.0.0.1:26379\"]\nsentinel_master = \"mymaster\"\n\
         redis_url = \"redis://:secret@primary/2\"\n",
        "sentinels = [\"rediss://127.0.0.1:26379\"]\nsentinel_master = \"mymaster\"\n\
         tls_ca_file = \"ca.pem\"\n",
    ] {
        let text = with_shared(&format!("[store]\nbackend = \"redis\"\n{store}"));
        if let Err(error) = parse(&text, dir) {
            panic!("{store}: {error}");
        }
    }
}
