//! `[token]`: the signing algorithm and key, the previous keys that still verify, and the
//! tokens' claims and lifetimes. The session cookie written here belongs to the HTTP
//! front (`http.rs`).

use toml::Spanned;

use super::schema::TokenSection;
use super::{ConfigError, Place, Source};
use crate::token::{SigningAlgorithm, SigningKey, TokenSettings, VerifyingKey};

/// `[token]`, checked; key files are named, not read yet.
pub(super) struct TokenModel {
    key: KeySource,
    /// `previous_keys`: PEM files as written, each with its place.
    previous_keys: Vec<(String, Place)>,
    settings: TokenSettings,
}

/// Where the signing key comes from.
enum KeySource {
    /// None is configured: the engine makes a fresh EdDSA key at start.
    Fresh,
    /// An HS256 secret from the file, already checked.
    Secret(Box<SigningKey>),
    /// A PEM file, read when building.
    File {
        algorithm: SigningAlgorithm,
        /// As written, relative to the directory the config's paths are taken from.
        path: String,
        place: Place,
    },
}

/// Checks `[token]`.
pub(super) fn check(token: &TokenSection, source: &Source<'_>) -> Result<TokenModel, ConfigError> {
    let algorithm_span = token.algorithm.as_ref().map(Spanned::span);
    let algorithm = match &token.algorithm {
        Some(name) => name
            .get_ref()
            .parse::<SigningAlgorithm>()
            .map_err(|e| source.invalid("token.algorithm", Some(name.span()), e.to_string()))?,
        None => SigningAlgorithm::EdDSA,
    };
    let key = match (algorithm, &token.private_key, &token.secret) {
        (SigningAlgorithm::HS256, _, Some(secret)) => KeySource::Secret(Box::new(
            SigningKey::from_hmac_secret(secret.get_ref().0.as_bytes())
                .map_err(|e| source.invalid("token.secret", Some(secret.span()), e.to_string()))?,
        )),
        (SigningAlgorithm::HS256, _, None) => {
            return Err(source.invalid(
                "token.secret",
                algorithm_span,
                "HS256 needs token.secret (at least 32 bytes)",
            ));
        }
        (_, Some(path), _) => KeySource::File {
            algorithm,
            path: path.get_ref().clone(),
            place: source.place("token.private_key", Some(path.span())),
        },
        (SigningAlgorithm::EdDSA, None, _) => KeySource::Fresh,
        (_, None, _) => {
            return Err(source.invalid(
                "token.private_key",
                algorithm_span,
                format!("{algorithm:?} needs token.private_key"),
            ));
        }
    };
    if algorithm == SigningAlgorithm::HS256
        && let Some(first) = token.previous_keys.first()
    {
        return Err(source.invalid(
            "token.previous_keys",
            Some(first.span()),
            format!(
                "`{}`: previous keys are PEM keys for EdDSA, ES256 or RS256; \
                 HS256 signs with a shared secret, which has no previous keys",
                first.get_ref()
            ),
        ));
    }
    let previous_keys = token
        .previous_keys
        .iter()
        .map(|path| {
            (
                path.get_ref().clone(),
                source.place("token.previous_keys", Some(path.span())),
            )
        })
        .collect();
    let mut settings = settings(token);
    if let Some(entries) = &token.cache_entries {
        settings.cache_entries = u64::try_from(*entries.get_ref())
            .ok()
            .filter(|entries| *entries <= MAX_CACHE_ENTRIES)
            .ok_or_else(|| {
                source.invalid(
                    "token.cache_entries",
                    Some(entries.span()),
                    format!(
                        "{} is not a number of tokens from 0 (no cache) to {MAX_CACHE_ENTRIES}",
                        entries.get_ref()
                    ),
                )
            })?;
    }
    Ok(TokenModel {
        key,
        previous_keys,
        settings,
    })
}

/// The most verified tokens `token.cache_entries` may keep: each entry holds a token's
/// signed part and claims, under a kilobyte, so this bounds the cache near 10 GB, and a
/// larger number is a typo rather than a plan.
const MAX_CACHE_ENTRIES: u64 = 10_000_000;

/// Claims and lifetimes, over the defaults.
fn settings(token: &TokenSection) -> TokenSettings {
    let defaults = TokenSettings::default();
    TokenSettings {
        issuer: token.issuer.clone().unwrap_or(defaults.issuer),
        audience: token.audience.clone().unwrap_or(defaults.audience),
        ttl: token.ttl.map_or(defaults.ttl, |d| d.0),
        leeway: token.leeway.map_or(defaults.leeway, |d| d.0),
        cache_entries: defaults.cache_entries,
        refresh_ttl: match token.refresh_ttl {
            // "0s" turns refresh tokens off.
            Some(d) if d.0.is_zero() => None,
            Some(d) => Some(d.0),
            None => defaults.refresh_ttl,
        },
        exchange_ttl: token.exchange_ttl.map_or(defaults.exchange_ttl, |d| d.0),
        // Read when building.
        previous_keys: Vec::new(),
    }
}

impl TokenModel {
    /// Whether a key is configured, rather than made fresh at start: only then do tokens
    /// minted by one instance verify on another.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(super) fn has_configured_key(&self) -> bool {
        !matches!(self.key, KeySource::Fresh)
    }

    /// Reads the key file, if one is named, and the previous keys. `None` leaves the
    /// engine to make a fresh key.
    pub(super) fn build(
        self,
        source: &Source<'_>,
    ) -> Result<(Option<SigningKey>, TokenSettings), ConfigError> {
        let key = match self.key {
            KeySource::Fresh => None,
            KeySource::Secret(key) => Some(*key),
            KeySource::File {
                algorithm,
                path,
                place,
            } => Some(read_key(algorithm, &path, &place, source)?),
        };
        let mut settings = self.settings;
        for (path, place) in &self.previous_keys {
            let previous = read_previous_key(path, place, source)?;
            // The same kid is the same key: listed twice, or still the signing key.
            if key.as_ref().is_some_and(|key| key.kid() == previous.kid()) {
                return Err(source.at(
                    place,
                    format!(
                        "{path} is the current signing key (kid {}); list only keys that no longer sign",
                        previous.kid()
                    ),
                ));
            }
            if settings
                .previous_keys
                .iter()
                .any(|earlier| earlier.kid() == previous.kid())
            {
                return Err(source.at(
                    place,
                    format!("{path} is listed twice (kid {})", previous.kid()),
                ));
            }
            settings.previous_keys.push(previous);
        }
        Ok((key, settings))
    }
}

/// A previous key's PEM file (private or public), found as the signing key's is.
fn read_previous_key(
    path: &str,
    place: &Place,
    source: &Source<'_>,
) -> Result<VerifyingKey, ConfigError> {
    let full = source.dir.join(path);
    let pem = std::fs::read(&full)
        .map_err(|e| source.at(place, format!("cannot read {}: {e}", full.display())))?;
    VerifyingKey::from_pem(&pem).map_err(|e| source.at(place, format!("{path}: {e}")))
}

/// A PEM key file, relative to the config file's folder.
fn read_key(
    algorithm: SigningAlgorithm,
    path: &str,
    place: &Place,
    source: &Source<'_>,
) -> Result<SigningKey, ConfigError> {
    let full = source.dir.join(path);
    let pem = std::fs::read(&full).map_err(|e| {
        // The hint only where no file is there: keygen refuses to overwrite, and a key
        // that exists but cannot be read needs its permissions fixed, not a new key.
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                " (make one with `otpgate keygen --algorithm {algorithm:?} --out {}`)",
                full.display()
            ),
            _ => String::new(),
        };
        source.at(place, format!("cannot read {}: {e}{hint}", full.display()))
    })?;
    SigningKey::from_pem(algorithm, &pem).map_err(|e| source.at(place, e.to_string()))
}
