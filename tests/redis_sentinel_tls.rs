//! The Redis store on a primary watched by Sentinel, all over TLS: a primary, its replica
//! and three sentinels on free loopback ports that listen with TLS only, replicate over
//! TLS and ask every client for a certificate of a test CA made here. The gate reaches
//! the sentinels and the primary with the same CA and client certificate; after the
//! primary is killed and the replica promoted, the same gate signs people in again and a
//! code verified before the failover stays spent. A store trusting another CA, or showing
//! no client certificate, is refused.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis_pki::Pki;
use common::{capture, email_and_sms, free_port, next_message, send_to, verify_for, wait_for_port};
use otpgate::identifier::Identifier;
use otpgate::otp::ServerSecret;
use otpgate::store::{RedisSettings, RedisStore, RedisTls, RedisTopology, Store, StoreError};
use otpgate::token::SigningKey;
use otpgate::{Gate, GateError};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const TOKEN_SECRET: &[u8] = b"fedcba9876543210fedcba9876543210";
const MASTER: &str = "mymaster";

fn secret() -> ServerSecret {
    ServerSecret::new(SECRET.to_vec()).unwrap()
}

/// A primary, one replica and three sentinels (quorum 2), TLS only. Killed when dropped.
struct Watched {
    pki: Pki,
    primary: u16,
    replica: u16,
    sentinels: Vec<u16>,
    children: Vec<Option<Child>>,
    dir: tempfile::TempDir,
}

fn redis_server(args: &[String], dir: &Path) -> Child {
    Command::new("redis-server")
        .args(args)
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is missing: `make test` installs it (apt-get install redis-server)")
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "not within 20 s: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Watched {
    async fn start() -> Watched {
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let (primary, replica) = (free_port(), free_port());
        let mut watched = Watched {
            pki,
            primary,
            replica,
            sentinels: Vec::new(),
            children: Vec::new(),
            dir,
        };
        let tls: Vec<String> = watched
            .pki
            .server_lines()
            .into_iter()
            .flat_map(|(key, value)| [format!("--{key}"), value])
            .collect();
        for (name, port, extra) in [
            ("primary", primary, Vec::new()),
            (
                "replica",
                replica,
                vec!["--replicaof".to_owned(), format!("127.0.0.1 {primary}")],
            ),
        ] {
            let data = watched.dir.path().join(name);
            std::fs::create_dir(&data).unwrap();
            // No plain port: TLS only.
            let mut args = vec![
                "--port".to_owned(),
                "0".to_owned(),
                "--tls-port".to_owned(),
                port.to_string(),
            ];
            args.extend(tls.iter().cloned());
            args.extend(extra);
            watched.children.push(Some(redis_server(&args, &data)));
            wait_for_port(port).await;
        }
        let tls_conf: String = watched
            .pki
            .server_lines()
            .into_iter()
            .map(|(key, value)| format!("{key} {value}\n"))
            .collect();
        for index in 0..3 {
            let port = free_port();
            let data = watched.dir.path().join(format!("sentinel{index}"));
            std::fs::create_dir(&data).unwrap();
            // Sentinel rewrites its config file, so each gets a writable one of its own.
            let conf = data.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port 0\ntls-port {port}\nbind 127.0.0.1\ndir {dir}\n{tls_conf}\
                     sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n\
                     sentinel down-after-milliseconds {MASTER} 1000\n\
                     sentinel failover-timeout {MASTER} 5000\n",
                    dir = data.display()
                ),
            )
            .unwrap();
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server is missing: `make test` installs it");
            watched.children.push(Some(child));
            watched.sentinels.push(port);
            wait_for_port(port).await;
        }
        eventually("the replica is in sync over TLS", || {
            watched
                .replication(replica)
                .get("master_link_status")
                .map(String::as_str)
                == Some("up")
        })
        .await;
        // Every sentinel must know the replica and the other two (their hellos go over
        // TLS too) before a failover can be agreed on.
        for &port in &watched.sentinels {
            eventually("the sentinels know each other and the replica", || {
                let fields: Vec<String> = watched
                    .cli(port, &["SENTINEL", "MASTER", MASTER])
                    .lines()
                    .map(str::to_owned)
                    .collect();
                let field = |name: &str| {
                    fields
                        .chunks(2)
                        .find(|pair| pair[0] == name)
                        .and_then(|pair| pair.get(1).cloned())
                };
                field("num-slaves").as_deref() == Some("1")
                    && field("num-other-sentinels").as_deref() == Some("2")
            })
            .await;
        }
        watched
    }

    /// What `redis-cli` prints for `args` on the server on `port`, over TLS with the
    /// client certificate.
    fn cli(&self, port: u16, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["--tls", "-p", &port.to_string()])
            .arg("--cacert")
            .arg(self.pki.path("ca.pem"))
            .arg("--cert")
            .arg(self.pki.path("client.pem"))
            .arg("--key")
            .arg(self.pki.path("client.key"))
            .args(args)
            .output()
            .expect("redis-cli is missing: `make test` installs it (apt-get install redis-tools)");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `INFO replication` of the server on `port`, as fields.
    fn replication(&self, port: u16) -> HashMap<String, String> {
        self.cli(port, &["INFO", "replication"])
            .lines()
            .filter_map(|line| line.trim().split_once(':'))
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect()
    }

    fn store(&self, tls: &RedisTls, timeout: Duration) -> RedisStore {
        let settings = RedisSettings {
            // Only the scheme, credentials and database count: the sentinels name the host.
            url: "rediss://sentinel-primary".into(),
            namespace: "sentinel-tls".into(),
            timeout,
        };
        let topology = RedisTopology::Sentinel {
            sentinels: self
                .sentinels
                .iter()
                .map(|port| format!("rediss://127.0.0.1:{port}"))
                .collect(),
            master: MASTER.into(),
        };
        RedisStore::with_options(settings, &topology, tls, &secret()).unwrap()
    }

    /// Waits until the replica has every write the primary has taken.
    async fn replicated(&self) {
        let offset = |port: u16, field: &str| -> u64 {
            self.replication(port)
                .get(field)
                .and_then(|value| value.parse().ok())
                .unwrap_or(0)
        };
        let written = offset(self.primary, "master_repl_offset");
        assert!(written > 0, "the primary answers INFO over TLS");
        eventually("the replica caught up", || {
            offset(self.replica, "slave_repl_offset") >= written
        })
        .await;
    }

    /// Kills the primary at once (SIGKILL), as a crash.
    fn kill_primary(&mut self) {
        if let Some(mut child) = self.children[0].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        for child in self.children.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
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
        .signing_key(SigningKey::from_hmac_secret(TOKEN_SECRET).unwrap())
        .senders(email_and_sms(sender))
        .build()
        .unwrap();
    (gate, inbox)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_over_tls_come_back_after_a_failover_and_spent_codes_stay_spent() {
    let mut watched = Watched::start().await;
    let store = watched.store(&watched.pki.tls("ca.pem", true), Duration::from_secs(1));
    let described = store.describe();
    assert!(
        described.contains(MASTER) && described.contains("(tls)"),
        "{described}"
    );
    let (gate, mut inbox) = gate(store);
    gate.readiness().await.unwrap();

    let alice = Identifier::email("alice@example.com").unwrap();
    gate.send(send_to(alice.clone())).await.unwrap();
    let spent = next_message(&mut inbox).await.code.expose().to_owned();
    gate.verify(verify_for(alice.clone(), &spent))
        .await
        .unwrap();
    watched.replicated().await;

    watched.kill_primary();
    // The same gate, no restart: sends fail closed until the sentinels promote the
    // replica, then work against it, over TLS again.
    let carol = Identifier::email("carol@example.com").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match gate.send(send_to(carol.clone())).await {
            Ok(_) => break,
            Err(GateError::StoreUnavailable(_)) => {
                assert!(Instant::now() < deadline, "no failover within 30 s");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(other) => panic!("a send during the failover failed with {other:?}"),
        }
    }
    assert!(
        watched
            .cli(watched.replica, &["ROLE"])
            .starts_with("master"),
        "the replica was promoted"
    );
    let code = next_message(&mut inbox).await.code.expose().to_owned();
    gate.verify(verify_for(carol, &code)).await.unwrap();
    gate.readiness().await.unwrap();

    match gate.verify(verify_for(alice, &spent)).await {
        Ok(_) => panic!("a code verified before the failover was accepted again"),
        Err(GateError::StoreUnavailable(e)) => panic!("the store failed: {e}"),
        Err(_) => {}
    }
}

/// Whether `store` fails to reach Redis, as a store error (never a panic), and why.
async fn refused(store: RedisStore) -> String {
    match store.ping().await {
        Err(StoreError::Unavailable(why)) => why,
        other => panic!("expected the connection to be refused, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_with_a_certificate_of_another_ca_or_no_client_certificate_are_refused() {
    let watched = Watched::start().await;
    let timeout = Duration::from_secs(1);

    // The sentinels' certificate is not of the CA the store trusts.
    let why = refused(watched.store(&watched.pki.tls("other-ca.pem", true), timeout)).await;
    // rustls: "invalid peer certificate: UnknownIssuer".
    assert!(
        why.to_lowercase().contains("certificate"),
        "the reason names the certificate: {why}"
    );
    // The servers ask for a client certificate; the store shows none.
    let why = refused(watched.store(&watched.pki.tls("ca.pem", false), timeout)).await;
    // The server's TLS alert says what it missed: "CertificateRequired".
    assert!(why.to_lowercase().contains("certificate"), "{why}");

    // A gate on it is not ready, says the store is why, and sign-ins fail closed.
    let (gate, mut inbox) = gate(watched.store(&watched.pki.tls("other-ca.pem", true), timeout));
    match gate.readiness().await {
        Err(GateError::NotReady { part, detail }) => {
            assert_eq!(part, "store", "{detail}");
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

    // The same sentinels with the right CA and the client certificate answer: the
    // refusals were the certificates'.
    watched
        .store(&watched.pki.tls("ca.pem", true), timeout)
        .ping()
        .await
        .unwrap();
}
