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
use crate::otp::ServerSecret;
#[cfg(feature = "redis")]
use crate::store::{RedisSettings, RedisStore};

/// `[store]`, checked; nothing is connected or allocated yet.
pub(super) struct StoreModel {
    backend: Backend,
    /// What a protected request gets while revocations cannot be checked.
    pub(super) revocation_fallback: RevocationFallback,
}

enum Backend {
    Memory {
        max_entries: u64,
    },
    #[cfg(feature = "redis")]
    Redis {
        settings: RedisSettings,
        /// `otp.secret`: code hashes and the store's own keys derive from it.
        secret: ServerSecret,
        /// `store.redis_url`, where a URL the client refuses is reported.
        url_place: Place,
    },
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
    let Some(url) = &store.redis_url else {
        return Err(source.invalid(
            "store.redis_url",
            Some(backend_span),
            "store.backend = \"redis\" needs store.redis_url (redis://host:6379)",
        ));
    };
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
            url: url.get_ref().0.clone(),
            namespace,
            timeout: store.timeout.map_or(defaults.timeout, |d| d.0),
        },
        secret,
        url_place: source.place("store.redis_url", Some(url.span())),
    })
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
    secret: ServerSecret,
    /// The store as `describe()` tells it: the address only, never the URL's password.
    pub(super) description: String,
    /// `store.redis_url`.
    pub(super) place: Place,
}

impl StoreProbe {
    /// Whether the store answers one `PING` within its timeout; why not when it does not.
    /// Each call connects afresh, in the runtime at hand, and drops the connection.
    pub(super) async fn ping(&self) -> Result<(), String> {
        #[cfg(feature = "redis")]
        {
            let store =
                RedisStore::new(self.settings.clone(), &self.secret).map_err(|e| e.to_string())?;
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
                secret,
                url_place,
            } => {
                let store = RedisStore::new(settings.clone(), &secret)
                    .map_err(|e| source.at(&url_place, e.to_string()))?;
                Ok(BuiltStore {
                    probe: Some(StoreProbe {
                        description: store.describe(),
                        settings,
                        secret,
                        place: url_place,
                    }),
                    store: Arc::new(store),
                })
            }
        }
    }
}
