//! How the Redis store reaches Redis: one server, a Redis Cluster or a primary watched by
//! Sentinel, in plain TCP or in TLS with the certificates the operator names. Every
//! command and script of the store goes through one [`Connection`], whichever kind it is.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, ClientTlsConfig, Cmd, ConnectionAddr, ConnectionInfo,
    IntoConnectionInfo, Pipeline, RedisFuture, TlsCertificates, TlsMode, Value,
};

use super::InvalidRedisUrl;
use super::sentinel::SentinelConnection;

/// Certificates for a `rediss://` (or `valkeys://`) connection. Empty (the default): the
/// system's trusted roots check Redis's certificate and the client shows none.
#[derive(Clone, Default)]
pub struct RedisTls {
    /// PEM certificates of the CAs that may sign Redis's certificate. When set, only
    /// these are trusted (the system's roots are not).
    pub ca_pem: Option<Vec<u8>>,
    /// The certificate (PEM, chain allowed) and private key (PEM: PKCS#8, PKCS#1 or SEC1)
    /// this client shows Redis, for servers that require client certificates.
    pub client: Option<RedisClientCert>,
}

/// A client certificate and its key, for mutual TLS with Redis.
#[derive(Clone)]
pub struct RedisClientCert {
    /// The certificate chain, PEM.
    pub cert_pem: Vec<u8>,
    /// The private key, PEM; wiped from memory when dropped.
    pub key_pem: zeroize::Zeroizing<Vec<u8>>,
}

impl RedisTls {
    fn is_empty(&self) -> bool {
        self.ca_pem.is_none() && self.client.is_none()
    }

    fn certificates(&self) -> TlsCertificates {
        TlsCertificates {
            root_cert: self.ca_pem.clone(),
            client_tls: self.client.as_ref().map(|client| ClientTlsConfig {
                client_cert: client.cert_pem.clone(),
                client_key: client.key_pem.to_vec(),
            }),
        }
    }
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Whether each part is set, never its bytes: one of them is a private key.
        f.debug_struct("RedisTls")
            .field("ca", &self.ca_pem.is_some())
            .field("client_cert", &self.client.is_some())
            .finish()
    }
}

/// Which Redis deployment [`RedisSettings::url`](super::RedisSettings::url) names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisTopology {
    /// One server (a primary at a fixed address, or a proxy in front of several).
    #[default]
    Single,
    /// A Redis Cluster: the URL is one seed node and `seeds` lists more. The client asks
    /// them for the cluster's layout and follows it (moved slots, failed-over primaries)
    /// from then on. Every seed has the same scheme, credentials and database 0.
    Cluster {
        /// Seed nodes besides the URL, as URLs.
        seeds: Vec<String>,
    },
    /// A primary (with replicas) watched by Sentinel: the sentinels name the primary's
    /// address, again after each failover. The URL gives only the primary's scheme,
    /// credentials and database; its host and port are not used.
    Sentinel {
        /// The sentinels, as URLs (`redis://host:26379`, with the sentinels' own
        /// credentials if they have any; `rediss://` for TLS).
        sentinels: Vec<String>,
        /// The name the sentinels monitor the primary as (`mymaster`).
        master: String,
    },
}

/// What the store connects with, checked; nothing is connected yet.
pub(super) enum Target {
    Single {
        client: Client,
        config: ConnectionManagerConfig,
    },
    Cluster {
        client: ClusterClient,
        config: ClusterConfig,
    },
    Sentinel(SentinelConnection),
}

/// A connection of either kind, cheap to clone: clones share the connection.
#[derive(Clone)]
pub(super) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(SentinelConnection),
}

/// The checked target and how logs name it (addresses only: URLs may carry passwords).
pub(super) fn open(
    url: &str,
    topology: &RedisTopology,
    tls: &RedisTls,
    timeout: Duration,
) -> Result<(Target, String), InvalidRedisUrl> {
    let urls: Vec<&str> = match topology {
        RedisTopology::Single => vec![url],
        RedisTopology::Cluster { seeds } => std::iter::once(url)
            .chain(seeds.iter().map(String::as_str))
            .collect(),
        RedisTopology::Sentinel { sentinels, .. } => std::iter::once(url)
            .chain(sentinels.iter().map(String::as_str))
            .collect(),
    };
    let mut infos = Vec::with_capacity(urls.len());
    for url in urls {
        infos.push(checked(url, tls)?);
    }
    let encrypted = infos.iter().any(is_tls);
    if encrypted {
        use_aws_lc_rs();
    }
    let addresses: Vec<String> = infos.iter().map(|info| info.addr().to_string()).collect();
    let bad = |e: redis::RedisError| InvalidRedisUrl(e.to_string());
    let target = match topology {
        RedisTopology::Single => {
            let info = infos.remove(0);
            let client = if tls.is_empty() {
                Client::open(info)
            } else {
                // Parses the PEM now, so a bad certificate or key is a start-up error.
                Client::build_with_tls(info, tls.certificates())
            }
            .map_err(bad)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                // Few, short reconnection tries: requests fail fast while Redis is down, and
                // the next request after a failure starts a fresh attempt.
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(timeout);
            Target::Single { client, config }
        }
        RedisTopology::Cluster { .. } => {
            if infos.iter().any(|info| is_tls(info) != encrypted) {
                return Err(InvalidRedisUrl(
                    "cluster seeds mix redis:// and rediss://; use one scheme for all".into(),
                ));
            }
            if let Some(info) = infos.iter().find(|info| info.redis_settings().db() != 0) {
                return Err(InvalidRedisUrl(format!(
                    "{}: a Redis Cluster has database 0 only",
                    info.addr()
                )));
            }
            let max_wait = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            let mut builder = ClusterClientBuilder::new(infos)
                .connection_timeout(timeout)
                .response_timeout(timeout)
                // As for one server: one quick retry, then the request fails.
                .retries(1)
                .min_retry_wait(50)
                .max_retry_wait(max_wait);
            if !tls.is_empty() {
                // Applied to every node the cluster announces, not only the seeds.
                builder = builder.certs(tls.certificates());
            }
            let client = builder.build().map_err(bad)?;
            let config = ClusterConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout);
            Target::Cluster { client, config }
        }
        RedisTopology::Sentinel { master, .. } => sentinel_target(infos, master, tls, timeout)?,
    };
    let description = match topology {
        RedisTopology::Single => format!("redis at {}", addresses.join(", ")),
        RedisTopology::Cluster { .. } => {
            format!("redis cluster seeded by {}", addresses.join(", "))
        }
        RedisTopology::Sentinel { master, .. } => format!(
            "redis primary {master:?} found by the sentinels at {}",
            addresses[1..].join(", ")
        ),
    };
    let description = if encrypted {
        format!("{description} (tls)")
    } else {
        description
    };
    Ok((target, description))
}

/// The primary `master` as the sentinels in `infos[1..]` name it; `infos[0]` holds the
/// primary's scheme, credentials and database.
fn sentinel_target(
    mut infos: Vec<ConnectionInfo>,
    master: &str,
    tls: &RedisTls,
    timeout: Duration,
) -> Result<Target, InvalidRedisUrl> {
    let bad = |e: redis::RedisError| InvalidRedisUrl(e.to_string());
    let primary = infos.remove(0);
    let Some(first) = infos.first() else {
        return Err(InvalidRedisUrl("no sentinel is given".into()));
    };
    if infos.iter().any(|info| is_tls(info) != is_tls(first)) {
        return Err(InvalidRedisUrl(
            "the sentinels mix redis:// and rediss://; use one scheme for all".into(),
        ));
    }
    let addresses = infos.iter().map(|info| info.addr().clone());
    let mut builder =
        SentinelClientBuilder::new(addresses, master, SentinelServerType::Master).map_err(bad)?;
    let to_primary = primary.redis_settings();
    if let Some(username) = to_primary.username() {
        builder = builder.set_client_to_redis_username(username);
    }
    if let Some(password) = to_primary.password() {
        builder = builder.set_client_to_redis_password(password);
    }
    builder = builder.set_client_to_redis_db(to_primary.db());
    if is_tls(&primary) {
        builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure);
        if !tls.is_empty() {
            builder = builder.set_client_to_redis_certificates(tls.certificates());
        }
    }
    // The sentinels' own credentials, from the first sentinel's URL.
    let to_sentinel = first.redis_settings();
    if let Some(username) = to_sentinel.username() {
        builder = builder.set_client_to_sentinel_username(username);
    }
    if let Some(password) = to_sentinel.password() {
        builder = builder.set_client_to_sentinel_password(password);
    }
    if is_tls(first) && !tls.is_empty() {
        builder = builder.set_client_to_sentinel_certificates(tls.certificates());
    }
    let client = builder.build().map_err(bad)?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    Ok(Target::Sentinel(SentinelConnection::new(client, config)))
}

/// One URL, parsed and checked against the TLS settings.
fn checked(url: &str, tls: &RedisTls) -> Result<ConnectionInfo, InvalidRedisUrl> {
    let info = url
        .into_connection_info()
        .map_err(|e| InvalidRedisUrl(e.to_string()))?;
    if let ConnectionAddr::TcpTls { insecure: true, .. } = info.addr() {
        // Refused: `#insecure` turns off the certificate check, which is TLS's whole point
        // against someone on the path; a private CA goes in `tls_ca_file` instead.
        return Err(InvalidRedisUrl(format!(
            "{}: #insecure (no certificate check) is refused; name the CA that signs \
             Redis's certificate instead",
            info.addr()
        )));
    }
    if !tls.is_empty() && !is_tls(&info) {
        return Err(InvalidRedisUrl(format!(
            "{}: certificates are given but the url is plain; use rediss:// (or valkeys://)",
            info.addr()
        )));
    }
    Ok(info)
}

fn is_tls(info: &ConnectionInfo) -> bool {
    matches!(info.addr(), ConnectionAddr::TcpTls { .. })
}

/// Makes aws-lc-rs the process's TLS provider unless one is set already. The Redis client
/// builds its TLS settings from the process default and has no way to be handed a
/// provider; left to choose by itself, rustls panics at the first connection whenever
/// its build has both providers (or neither) compiled in.
fn use_aws_lc_rs() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // An error means another thread installed one first; that one stays.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}

impl Target {
    /// A connection that connects on its first command (and reconnects by itself). Its
    /// background task runs on the runtime at hand, which must be the serving one.
    pub(super) fn connect(&self) -> redis::RedisResult<Connection> {
        match self {
            Target::Single { client, config } => {
                ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
                    .map(Connection::Single)
            }
            Target::Cluster { client, config } => Ok(Connection::Cluster(
                client.get_pending_async_connection_with_config(config.clone()),
            )),
            // Connects on first use, inside the command's runtime.
            Target::Sentinel(connection) => Ok(Connection::Sentinel(connection.clone())),
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(connection) => connection.req_packed_command(cmd),
            Connection::Sentinel(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Connection::Cluster(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Connection::Sentinel(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(connection) => connection.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
            Connection::Sentinel(connection) => connection.get_db(),
        }
    }
}
