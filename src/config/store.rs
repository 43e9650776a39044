//! `[store]`: where codes, counters and revocations live, and what protected requests get
//! while the store cannot answer.

use std::sync::Arc;

use super::otp::OtpModel;
use super::schema::{RevocationFallbackName, StoreBackend, StoreSection};
use super::token::TokenModel;
use super::{ConfigError, Source};
use crate::gate::RevocationFallback;
use crate::store::{MemoryStore, Store};

use super::Place;
#[cfg(feature = "redis")]
use super::schema::EnvString;
#[cfg(feature = "redis")]
use crate::otp::ServerSecret;
#[cfg(feature = "redis")]
use crate::store::{RedisClientCert, RedisSettings, RedisStore, RedisTls, RedisTopology};

/// `[store]`, checked; nothing is connected or allocated yet.
pub(super) struct StoreModel {
    backend: Backend,
    /// What a protected request gets while revocations cannot be checked.
    pub(super) revocation_fallback: RevocationFallback,
    /// How often the gate asks the store whether a token was revoked anywhere.
    pub(super) revocation_poll: std::time::Duration,
}

enum Backend {
    Memory {
        max_entries: u64,
    },
    #[cfg(feature = "redis")]
    Redis {
        settings: RedisSettings,
        /// One server, or a cluster whose first seed is `settings.url`.
        topology: RedisTopology,
        /// The certificate files, read when building (boxed: most stores have none).
        tls: Box<TlsFiles>,
        /// `otp.secret`: code hashes and the store's own keys derive from it.
        secret: ServerSecret,
        /// `store.redis_url` (or `store.redis_cluster`), where a URL the client refuses
        /// is reported.
        url_place: Place,
    },
}

/// A file named in the config, as written, and where.
#[cfg(feature = "redis")]
type NamedFile = (String, Place);

/// `store.tls_ca_file`, and `store.tls_client_cert` with `store.tls_client_key`.
#[cfg(feature = "redis")]
struct TlsFiles {
    ca: Option<NamedFile>,
    client: Option<(NamedFile, NamedFile)>,
}

/// Checks `[store]`. A Redis store is shared by several instances, so it is refused
/// without what they must share: `otp.secret` (code hashes and the store's own keys
/// derive from it) and a configured token key (a token minted by one instance must
/// verify on the others).
pub(super) fn check(
    store: &StoreSection,
    otp: &OtpModel,
    token: &TokenModel,
    source: &Source<'_>,
) -> Result<StoreModel, ConfigError> {
    let revocation_fallback = match store.revocation_fallback {
        None | Some(RevocationFallbackName::Allow) => RevocationFallback::Allow,
        Some(RevocationFallbackName::Deny) => RevocationFallback::Deny,
    };
    let revocation_poll = match &store.revocation_poll {
        None => crate::gate::DEFAULT_REVOCATION_POLL,
        Some(value) => {
            let poll = value.get_ref().0;
            // Under 10 ms a poll would be a store read on nearly every request; over a
            // minute, a logout elsewhere would take too long to be honoured here.
            if poll < std::time::Duration::from_millis(10)
                || poll > std::time::Duration::from_secs(60)
            {
                return Err(source.invalid(
                    "store.revocation_poll",
                    Some(value.span()),
                    "must be between 10ms and 60s",
                ));
            }
            poll
        }
    };
    let backend = match store.backend.as_ref().map(|b| (*b.get_ref(), b.span())) {
        None | Some((StoreBackend::Memory, _)) => Backend::Memory {
            max_entries: store
                .max_entries
                .unwrap_or(MemoryStore::DEFAULT_MAX_ENTRIES),
        },
        #[cfg(not(feature = "redis"))]
        Some((StoreBackend::Redis, span)) => {
            // Shared secrets are not asked for: no fix to them would make this build work.
            let _ = (otp, token);
            return Err(source.invalid(
                "store.backend",
                Some(span),
                "the redis backend is not in this build (the crate's \"redis\" feature is off); \
                 use \"memory\", or build with the \"redis\" feature",
            ));
        }
        #[cfg(feature = "redis")]
        Some((StoreBackend::Redis, span)) => redis(store, span, otp, token, source)?,
    };
    Ok(StoreModel {
        backend,
        revocation_fallback,
        revocation_poll,
    })
}

/// The Redis backend's settings and the secret it shares with the other instances.
#[cfg(feature = "redis")]
fn redis(
    store: &StoreSection,
    backend_span: std::ops::Range<usize>,
    otp: &OtpModel,
    token: &TokenModel,
    source: &Source<'_>,
) -> Result<Backend, ConfigError> {
    let Some(secret) = otp.secret.clone() else {
        return Err(source.invalid(
            "otp.secret",
            Some(backend_span.clone()),
            "store.backend = \"redis\" needs otp.secret (32+ bytes, the same on every instance)",
        ));
    };
    if !token.has_configured_key() {
        return Err(source.invalid(
            "token.private_key",
            Some(backend_span),
            "store.backend = \"redis\" needs token.private_key (or token.secret for HS256), \
             the same on every instance, so tokens minted by one verify on the others",
        ));
    }
    let (url, topology, url_place) = topology(store, backend_span, source)?;
    let tls = Box::new(tls_files(store, &url, &topology, source)?);
    let defaults = RedisSettings::default();
    let namespace = match &store.namespace {
        Some(namespace) => {
            let name = namespace.get_ref();
            let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
            if name.is_empty() || !name.chars().all(allowed) {
                return Err(source.invalid(
                    "store.namespace",
                    Some(namespace.span()),
                    "letters, digits, '-', '_' and '.' only",
                ));
            }
            name.clone()
        }
        None => defaults.namespace,
    };
    Ok(Backend::Redis {
        settings: RedisSettings {
            url,
            namespace,
            timeout: store.timeout.map_or(defaults.timeout, |d| d.0),
        },
        topology,
        tls,
        secret,
        url_place,
    })
}

/// Which Redis `[store]` names: `redis_url` alone (one server), `redis_cluster` (a
/// cluster's seed nodes) or `sentinels` with `sentinel_master` (a primary the sentinels
/// name; `redis_url`, if given, sets its scheme, credentials and database). The URL the
/// store starts from, the topology, and where to report a URL the client refuses.
#[cfg(feature = "redis")]
fn topology(
    store: &StoreSection,
    backend_span: std::ops::Range<usize>,
    source: &Source<'_>,
) -> Result<(String, RedisTopology, Place), ConfigError> {
    let list = |key: &str, urls: &toml::Spanned<Vec<EnvString>>| {
        let place = source.place(&format!("store.{key}"), Some(urls.span()));
        let urls: Vec<String> = urls.get_ref().iter().map(|url| url.0.clone()).collect();
        if urls.is_empty() {
            return Err(source.at(&place, "list at least one (redis://host:port)"));
        }
        Ok((urls, place))
    };
    if let (Some(master), None) = (&store.sentinel_master, &store.sentinels) {
        return Err(source.invalid(
            "store.sentinel_master",
            Some(master.span()),
            "is used only with store.sentinels",
        ));
    }
    match (&store.redis_url, &store.redis_cluster, &store.sentinels) {
        (Some(url), None, None) => Ok((
            url.get_ref().0.clone(),
            RedisTopology::Single,
            source.place("store.redis_url", Some(url.span())),
        )),
        (None, Some(seeds), None) => {
            let (mut seeds, place) = list("redis_cluster", seeds)?;
            let first = seeds.remove(0);
            Ok((first, RedisTopology::Cluster { seeds }, place))
        }
        (url, None, Some(sentinels)) => {
            let (sentinels, place) = list("sentinels", sentinels)?;
            let Some(master) = &store.sentinel_master else {
                return Err(source.at(
                    &place,
                    "needs store.sentinel_master, the name the sentinels monitor the primary as",
                ));
            };
            // Without redis_url the primary is reached as the sentinels are: in TLS when
            // they are, without credentials, database 0.
            let url = match url {
                Some(url) => url.get_ref().0.clone(),
                None if encrypted(&sentinels[0]) => "rediss://sentinel-primary".into(),
                None => "redis://sentinel-primary".into(),
            };
            let topology = RedisTopology::Sentinel {
                sentinels,
                master: master.get_ref().clone(),
            };
            Ok((url, topology, place))
        }
        (_, Some(seeds), Some(_)) | (Some(_), Some(seeds), None) => Err(source.invalid(
            "store.redis_cluster",
            Some(seeds.span()),
            "give one of store.redis_url (one server), store.redis_cluster (a cluster's seed \
             nodes) and store.sentinels",
        )),
        (None, None, None) => Err(source.invalid(
            "store.redis_url",
            Some(backend_span),
            "store.backend = \"redis\" needs store.redis_url (redis://host:6379), or \
             store.redis_cluster for a Redis Cluster, or store.sentinels",
        )),
    }
}

/// Whether `url` asks for TLS.
#[cfg(feature = "redis")]
fn encrypted(url: &str) -> bool {
    url.starts_with("rediss://") || url.starts_with("valkeys://")
}

/// The TLS files `[store]` names: a client certificate comes with its key, and both only
/// with `rediss://` URLs, where they are used.
#[cfg(feature = "redis")]
fn tls_files(
    store: &StoreSection,
    url: &str,
    topology: &RedisTopology,
    source: &Source<'_>,
) -> Result<TlsFiles, ConfigError> {
    let named = |key: &str, value: &Option<toml::Spanned<String>>| {
        value.as_ref().map(|value| {
            let place = source.place(&format!("store.{key}"), Some(value.span()));
            (value.get_ref().clone(), place)
        })
    };
    let ca = named("tls_ca_file", &store.tls_ca_file);
    let client = match (
        named("tls_client_cert", &store.tls_client_cert),
        named("tls_client_key", &store.tls_client_key),
    ) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some((_, place)), None) => {
            return Err(source.at(
                &place,
                "needs store.tls_client_key too: the certificate's private key",
            ));
        }
        (None, Some((_, place))) => {
            return Err(source.at(
                &place,
                "needs store.tls_client_cert too: the certificate the key belongs to",
            ));
        }
    };
    let first = ca
        .as_ref()
        .map(|(_, place)| place)
        .or(client.as_ref().map(|((_, place), _)| place));
    if let Some(place) = first {
        let others = match topology {
            RedisTopology::Cluster { seeds } => seeds.as_slice(),
            RedisTopology::Sentinel { sentinels, .. } => sentinels.as_slice(),
            _ => &[],
        };
        if !encrypted(url) || !others.iter().all(|other| encrypted(other)) {
            return Err(source.at(
                place,
                "TLS certificates need rediss:// (or valkeys://) urls in store.redis_url, \
                 store.redis_cluster or store.sentinels",
            ));
        }
    }
    Ok(TlsFiles { ca, client })
}

/// Reads the TLS files, relative to the config file's folder, and checks that each holds
/// what its key says, so a wrong file is named before anything connects.
#[cfg(feature = "redis")]
fn read_tls(files: &TlsFiles, source: &Source<'_>) -> Result<RedisTls, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let read = |(path, place): &NamedFile| {
        let full = source.dir.join(path);
        std::fs::read(&full)
            .map_err(|e| source.at(place, format!("cannot read {}: {e}", full.display())))
    };
    let certificates = |file: &NamedFile| {
        let pem = read(file)?;
        let (path, place) = file;
        let mut count = 0;
        for certificate in CertificateDer::pem_slice_iter(&pem) {
            certificate.map_err(|e| source.at(place, format!("{path}: {e}")))?;
            count += 1;
        }
        if count == 0 {
            return Err(source.at(
                place,
                format!("{path}: no PEM certificate (BEGIN CERTIFICATE) in it"),
            ));
        }
        Ok(pem)
    };
    let ca_pem = files.ca.as_ref().map(certificates).transpose()?;
    let client = match &files.client {
        Some((cert, key)) => {
            let cert_pem = certificates(cert)?;
            let key_pem = zeroize::Zeroizing::new(read(key)?);
            let (path, place) = key;
            PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                source.at(
                    place,
                    format!("{path}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in it: {e}"),
                )
            })?;
            Some(RedisClientCert { cert_pem, key_pem })
        }
        None => None,
    };
    Ok(RedisTls { ca_pem, client })
}

/// What [`StoreModel::build`] makes.
pub(super) struct BuiltStore {
    /// The store the engine uses.
    pub(super) store: Arc<dyn Store>,
    /// For a Redis store, a second client on the same settings that only asks whether
    /// Redis answers, and where the file names it.
    pub(super) probe: Option<StoreProbe>,
}

/// How to ask a shared store whether it answers, apart from the store requests use: a
/// Redis connection is bound to the runtime that first uses it, and a check at start runs
/// before (and outside) the runtime that serves requests.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(super) struct StoreProbe {
    #[cfg(feature = "redis")]
    settings: RedisSettings,
    #[cfg(feature = "redis")]
    topology: RedisTopology,
    #[cfg(feature = "redis")]
    tls: RedisTls,
    #[cfg(feature = "redis")]
    secret: ServerSecret,
    /// The store as `describe()` tells it: the address only, never the URL's password.
    pub(super) description: String,
    /// `store.redis_url` (or `store.redis_cluster`).
    pub(super) place: Place,
}

impl StoreProbe {
    /// Whether the store answers one `PING` within its timeout; why not when it does not.
    /// Each call connects afresh, in the runtime at hand, and drops the connection.
    pub(super) async fn ping(&self) -> Result<(), String> {
        #[cfg(feature = "redis")]
        {
            let store = RedisStore::with_options(
                self.settings.clone(),
                &self.topology,
                &self.tls,
                &self.secret,
            )
            .map_err(|e| e.to_string())?;
            store.ping().await.map_err(|e| e.to_string())
        }
        #[cfg(not(feature = "redis"))]
        Ok(())
    }
}

impl StoreModel {
    /// Makes the store. A Redis store does not connect here: its first operation does.
    pub(super) fn build(self, source: &Source<'_>) -> Result<BuiltStore, ConfigError> {
        #[cfg(not(feature = "redis"))]
        let _ = source;
        match self.backend {
            Backend::Memory { max_entries } => Ok(BuiltStore {
                store: Arc::new(MemoryStore::new(max_entries)),
                probe: None,
            }),
            #[cfg(feature = "redis")]
            Backend::Redis {
                settings,
                topology,
                tls,
                secret,
                url_place,
            } => {
                let tls = read_tls(&tls, source)?;
                let store = RedisStore::with_options(settings.clone(), &topology, &tls, &secret)
                    .map_err(|e| source.at(&url_place, e.to_string()))?;
                Ok(BuiltStore {
                    probe: Some(StoreProbe {
                        description: store.describe(),
                        settings,
                        topology,
                        tls,
                        secret,
                        place: url_place,
                    }),
                    store: Arc::new(store),
                })
            }
        }
    }
}
