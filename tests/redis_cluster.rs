//! The Redis store on a real Redis Cluster: three primaries (no replicas) on free
//! loopback ports, made into one cluster with `redis-cli --cluster create`. The store's
//! conformance suite passes through the cluster connection, and of 1000 concurrent
//! verifies of one code split over two gate instances exactly one wins. Over TLS (with
//! client certificates, between the nodes too) the suite passes as well.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{capture, email_and_sms, free_port, next_message, send_to, wait_for_port};
use otpgate::Gate;
use otpgate::identifier::Identifier;
use otpgate::otp::ServerSecret;
use otpgate::store::{
    RedisClientCert, RedisSettings, RedisStore, RedisTls, RedisTopology, Store, conformance,
};
use otpgate::token::SigningKey;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const TOKEN_SECRET: &[u8] = b"fedcba9876543210fedcba9876543210";

/// Three redis-servers in cluster mode, every slot assigned. Killed when dropped.
struct Cluster {
    ports: Vec<u16>,
    children: Vec<Child>,
    dir: tempfile::TempDir,
    tls: bool,
}

/// Writes a test CA, a certificate for 127.0.0.1 that every node uses as server and as
/// client, and the gate's client certificate into `dir`.
fn write_certificates(dir: &std::path::Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Each certificate names its own subject: a leaf named like its issuer looks
    // self-issued to OpenSSL.
    params
        .distinguished_name
        .push(DnType::CommonName, "cluster test ca");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    write("ca.pem", ca.pem());
    for (name, names, usages) in [
        (
            "node",
            vec!["127.0.0.1".to_owned()],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        ),
        (
            "client",
            Vec::new(),
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        ),
    ] {
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = usages;
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        write(
            &format!("{name}.pem"),
            params.signed_by(&key, &ca).unwrap().pem(),
        );
        write(&format!("{name}.key"), key.serialize_pem());
    }
}

impl Cluster {
    async fn start() -> Cluster {
        Cluster::start_with(false).await
    }

    /// With `tls`, the nodes speak TLS only, to clients and to each other, and ask for
    /// client certificates.
    async fn start_with(tls: bool) -> Cluster {
        let mut cluster = Cluster {
            ports: Vec::new(),
            children: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
            tls,
        };
        if tls {
            write_certificates(cluster.dir.path());
        }
        for node in 0..3 {
            let port = free_port();
            let node_dir = cluster.dir.path().join(node.to_string());
            std::fs::create_dir(&node_dir).unwrap();
            // The bus port is given: its default, port + 10000, may be past 65535.
            let bus = free_port();
            let listen = if tls {
                let file = |name: &str| cluster.dir.path().join(name).display().to_string();
                vec![
                    "--port".to_owned(),
                    "0".to_owned(),
                    "--tls-port".to_owned(),
                    port.to_string(),
                    "--tls-cluster".to_owned(),
                    "yes".to_owned(),
                    "--tls-cert-file".to_owned(),
                    file("node.pem"),
                    "--tls-key-file".to_owned(),
                    file("node.key"),
                    "--tls-ca-cert-file".to_owned(),
                    file("ca.pem"),
                    "--tls-auth-clients".to_owned(),
                    "yes".to_owned(),
                ]
            } else {
                vec!["--port".to_owned(), port.to_string()]
            };
            let child = Command::new("redis-server")
                .args(&listen)
                .args(["--cluster-port", &bus.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .arg("--cluster-config-file")
                .arg(node_dir.join("nodes.conf"))
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .spawn()
                .expect(
                    "redis-server is missing: `make test` installs it \
                     (apt-get install redis-server)",
                );
            cluster.children.push(child);
            cluster.ports.push(port);
        }
        for &port in &cluster.ports {
            wait_for_port(port).await;
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let created = redis_cli(&cluster)
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli is missing: `make test` installs it (apt-get install redis-tools)");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        // Every node must see every slot served before the first command.
        for &port in &cluster.ports {
            cluster.wait_for_ok(port).await;
        }
        cluster
    }

    async fn wait_for_ok(&self, port: u16) {
        for _ in 0..200 {
            let info = redis_cli(self)
                .args(["-p", &port.to_string(), "CLUSTER", "INFO"])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the cluster node on {port} is not ok after 10 s");
    }

    /// A store on the cluster, seeded by its first two nodes (the third is found).
    fn store(&self, namespace: &str, timeout: Duration) -> RedisStore {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let settings = RedisSettings {
            url: format!("{scheme}://127.0.0.1:{}", self.ports[0]),
            namespace: namespace.into(),
            timeout,
        };
        let topology = RedisTopology::Cluster {
            seeds: vec![format!("{scheme}://127.0.0.1:{}", self.ports[1])],
        };
        let read = |name: &str| std::fs::read(self.dir.path().join(name)).unwrap();
        let tls = if self.tls {
            RedisTls {
                ca_pem: Some(read("ca.pem")),
                client: Some(RedisClientCert {
                    cert_pem: read("client.pem"),
                    key_pem: read("client.key").into(),
                }),
            }
        } else {
            RedisTls::default()
        };
        let secret = ServerSecret::new(SECRET.to_vec()).unwrap();
        RedisStore::with_options(settings, &topology, &tls, &secret).unwrap()
    }

    /// How many keys each node holds.
    fn keys_per_node(&self) -> Vec<u64> {
        self.ports
            .iter()
            .map(|port| {
                let size = redis_cli(self)
                    .args(["-p", &port.to_string(), "DBSIZE"])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&size.stdout)
                    .trim()
                    .parse()
                    .unwrap()
            })
            .collect()
    }
}

/// `redis-cli`, with the test CA and client certificate when the cluster speaks TLS.
fn redis_cli(cluster: &Cluster) -> Command {
    let mut command = Command::new("redis-cli");
    if cluster.tls {
        let file = |name: &str| cluster.dir.path().join(name);
        command
            .arg("--tls")
            .arg("--cacert")
            .arg(file("ca.pem"))
            .arg("--cert")
            .arg(file("client.pem"))
            .arg("--key")
            .arg(file("client.key"));
    }
    command
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn instance(
    cluster: &Cluster,
    namespace: &str,
) -> (
    Gate,
    tokio::sync::mpsc::UnboundedReceiver<otpgate::delivery::Message>,
) {
    let (sender, inbox) = capture();
    let gate = Gate::builder()
        .store(Arc::new(
            cluster.store(namespace, Duration::from_millis(500)),
        ))
        .secret(ServerSecret::new(SECRET.to_vec()).unwrap())
        .signing_key(SigningKey::from_hmac_secret(TOKEN_SECRET).unwrap())
        .senders(email_and_sms(sender))
        .build()
        .unwrap();
    (gate, inbox)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_passes_the_conformance_suite_on_a_cluster() {
    let cluster = Cluster::start().await;
    let fresh = AtomicUsize::new(0);
    let namespace = || format!("conformance{}", fresh.fetch_add(1, Ordering::SeqCst));
    let timeout = Duration::from_secs(2);
    conformance::run_all(|| cluster.store(&namespace(), timeout)).await;
    conformance::run_shared(|| {
        let shared = namespace();
        (
            cluster.store(&shared, timeout),
            cluster.store(&shared, timeout),
        )
    })
    .await;
    // The keys went to every primary, not only to the seeds: the client followed the
    // cluster's layout.
    let keys = cluster.keys_per_node();
    assert!(keys.iter().all(|&n| n > 0), "keys on every node: {keys:?}");
    let store = cluster.store("ping", timeout);
    store.ping().await.unwrap();
    assert!(store.describe().contains("cluster"), "{}", store.describe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_of_1000_verifies_split_across_two_instances_wins_on_a_cluster() {
    let cluster = Cluster::start().await;
    let (a, mut inbox) = instance(&cluster, "race");
    let (b, _) = instance(&cluster, "race");
    let alice = Identifier::email("alice@example.com").unwrap();
    a.send(send_to(alice.clone())).await.unwrap();
    let code = next_message(&mut inbox).await.code.expose().to_owned();
    let accepted = common::accepted_of_1000_split_verifies(&a, &b, &alice, &code).await;
    assert_eq!(accepted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_passes_the_conformance_suite_on_a_tls_cluster() {
    let cluster = Cluster::start_with(true).await;
    let fresh = AtomicUsize::new(0);
    let namespace = || format!("tls{}", fresh.fetch_add(1, Ordering::SeqCst));
    conformance::run_all(|| cluster.store(&namespace(), Duration::from_secs(2))).await;
    // The node that is no seed was reached too, with the same certificates.
    let keys = cluster.keys_per_node();
    assert!(keys.iter().all(|&n| n > 0), "keys on every node: {keys:?}");
    let store = cluster.store("ping", Duration::from_secs(2));
    store.ping().await.unwrap();
    assert!(store.describe().contains("(tls)"), "{}", store.describe());
}
