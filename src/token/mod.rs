//! JWTs: minting after a verified code, verifying on every later request, and the JWKS
//! that lets any app check them itself.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};

use crate::otp::Timestamp;

mod cache;
mod keys;

pub use keys::{KeyError, SigningAlgorithm, SigningKey, VerifyingKey};

/// The claims of an otpgate token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Subject: the account the code was verified for.
    pub sub: String,
    /// Audience: the app the token is for.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at.
    pub iat: u64,
    /// Not before.
    pub nbf: u64,
    /// Unique token id.
    pub jti: String,
    /// Authentication methods: `["otp"]`.
    pub amr: Vec<String>,
    /// When the code was verified.
    pub auth_time: u64,
    /// The verified email, when the code went by email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The verified phone (E.164), when the code went by SMS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// The tenant the account belongs to.
    pub tenant: String,
    /// Refresh tokens only: the family every rotation of one sign-in shares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fam: Option<String>,
    /// The identity headers made from these claims, kept with them so that a token
    /// answered from the verified-token cache does not rebuild them on every request.
    #[serde(skip)]
    pub(crate) forwarded: ForwardedHeaders,
    /// What the gate last learnt about this token's revocation, kept with the cached
    /// claims so that a token seen again is not looked up in the store on every request.
    #[serde(skip)]
    pub(crate) revocation: RevocationCheck,
}

/// A token's revocation as last checked: the revocation generation the check was made
/// at (`u64::MAX`: never checked), and whether it was found revoked (for good: a revoked
/// token stays revoked). Not part of what claims are: equal whatever it holds.
#[derive(Debug)]
pub(crate) struct RevocationCheck {
    checked_at: std::sync::atomic::AtomicU64,
    revoked: std::sync::atomic::AtomicBool,
}

impl RevocationCheck {
    const NEVER: u64 = u64::MAX;

    /// Whether the token was checked and found not revoked at `generation`.
    pub(crate) fn passed_at(&self, generation: u64) -> bool {
        use std::sync::atomic::Ordering;
        self.checked_at.load(Ordering::Acquire) == generation
    }

    /// Whether a check found the token revoked.
    pub(crate) fn revoked(&self) -> bool {
        self.revoked.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A check made at `generation` found the token not revoked.
    pub(crate) fn pass(&self, generation: u64) {
        self.checked_at
            .store(generation, std::sync::atomic::Ordering::Release);
    }

    /// A check found the token revoked.
    pub(crate) fn revoke(&self) {
        self.revoked
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

impl Default for RevocationCheck {
    fn default() -> Self {
        RevocationCheck {
            checked_at: std::sync::atomic::AtomicU64::new(Self::NEVER),
            revoked: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// A copy starts unchecked: it is another token's claims, or claims about to be minted.
impl Clone for RevocationCheck {
    fn clone(&self) -> Self {
        RevocationCheck::default()
    }
}

impl PartialEq for RevocationCheck {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for RevocationCheck {}

/// Identity headers derived from a token's claims (never the token itself, so the
/// verified-token cache still holds no usable token). Not part of what claims are:
/// equal whatever it holds.
#[derive(Clone, Default)]
pub(crate) struct ForwardedHeaders(pub(crate) std::sync::OnceLock<Arc<Forwarded>>);

/// The identity headers made from a token's claims, and the header names (subject,
/// tenant, email, phone) they were made under: a reload may rename them.
#[derive(Debug)]
pub(crate) struct Forwarded {
    pub(crate) names: [http::HeaderName; 4],
    pub(crate) headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl PartialEq for ForwardedHeaders {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ForwardedHeaders {}

impl std::fmt::Debug for ForwardedHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("..")
    }
}

/// What a token is for. Each kind has its own audience, so one can never stand in for
/// another: a refresh token is no access token, a one-time exchange token neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// Proves the identity to the app; `aud` is the configured audience.
    Access,
    /// Buys a new access token, once; `aud` is `{issuer}/refresh`.
    Refresh,
    /// A verified code's one-time proof, exchanged once for a session; `aud` is
    /// `{issuer}/exchange`.
    Exchange,
}

/// Who a token is minted for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    /// The account id (`sub`).
    pub id: String,
    /// The verified email, if any.
    pub email: Option<String>,
    /// The verified phone, if any.
    pub phone: Option<String>,
    /// The tenant.
    pub tenant: String,
}

/// Token settings.
#[derive(Clone, Debug)]
pub struct TokenSettings {
    /// `iss` of minted tokens, required on verified ones.
    pub issuer: String,
    /// `aud` of minted tokens, required on verified ones.
    pub audience: String,
    /// Lifetime of minted tokens.
    pub ttl: Duration,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// Upper bound on the verified-token cache; 0 turns the cache off.
    pub cache_entries: u64,
    /// Lifetime of refresh tokens; `None` issues none.
    pub refresh_ttl: Option<Duration>,
    /// Lifetime of one-time exchange tokens.
    pub exchange_ttl: Duration,
    /// Keys that signed before the current one: tokens naming their kid still verify,
    /// and the JWKS still publishes them, until they are removed from here.
    pub previous_keys: Vec<VerifyingKey>,
}

impl Default for TokenSettings {
    fn default() -> Self {
        TokenSettings {
            issuer: "otpgate".into(),
            audience: "app".into(),
            ttl: Duration::from_secs(3600),
            leeway: Duration::from_secs(5),
            cache_entries: 100_000,
            refresh_ttl: Some(Duration::from_secs(30 * 24 * 3600)),
            exchange_ttl: Duration::from_secs(5 * 60),
            previous_keys: Vec::new(),
        }
    }
}

/// Why a token was refused. Callers answer all of these the same way; the variants are
/// for tests and metrics.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not a JWT, too long, or unparseable.
    #[error("malformed token")]
    Malformed,
    /// Signed with another algorithm than the pinned one (including `none`).
    #[error("token algorithm not accepted")]
    WrongAlgorithm,
    /// Names a key this gate does not hold.
    #[error("token key not recognised")]
    UnknownKey,
    /// Signature, issuer, audience or required claims wrong.
    #[error("token rejected: {0}")]
    Invalid(String),
    /// Past `exp`.
    #[error("token expired")]
    Expired,
    /// Before `nbf`.
    #[error("token not yet valid")]
    NotYetValid,
    /// Signing failed (a broken key).
    #[error("token signing failed: {0}")]
    Signing(String),
}

/// A freshly minted token.
#[derive(Clone, Debug)]
pub struct MintedToken {
    /// The compact JWT.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// Its claims.
    pub claims: Arc<Claims>,
}

/// Tokens longer than this are refused before any parsing.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Mints with the current key; verifies with the current key or a previous one, each
/// pinned to its own algorithm and chosen by the token's kid.
pub struct Tokens {
    key: SigningKey,
    settings: TokenSettings,
    /// The current key first, then the previous ones.
    verifiers: Vec<Verifier>,
    // Never holds a usable token (see `cache`). It lives and dies with this `Tokens`,
    // which is made anew from each loaded config: a token of a key removed from the
    // config is never answered from here.
    verified: Option<cache::VerifiedTokens>,
    jwks: Bytes,
}

/// One key that verifies, with its checks for each token kind.
struct Verifier {
    key: VerifyingKey,
    validations: [Validation; 3],
}

impl Verifier {
    fn new(key: VerifyingKey, settings: &TokenSettings) -> Verifier {
        let validations =
            [TokenKind::Access, TokenKind::Refresh, TokenKind::Exchange].map(|kind| {
                // Pinned: only this key's algorithm, never a choice made by the token header.
                let mut validation = Validation::new(key.algorithm().jwt_algorithm());
                validation.set_issuer(&[&settings.issuer]);
                validation.set_audience(&[audience(settings, kind)]);
                validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
                // exp and nbf are checked against the gate's Clock below, not the system time.
                validation.validate_exp = false;
                validation.validate_nbf = false;
                validation
            });
        Verifier { key, validations }
    }
}

impl Tokens {
    /// Tokens signed by `key` under `settings`, verified with `key` and
    /// `settings.previous_keys`. A previous key whose kid is already taken is the same
    /// key listed again and is left out; [`Tokens::try_new`] refuses it instead.
    pub fn new(key: SigningKey, settings: TokenSettings) -> Tokens {
        let mut verifiers = vec![Verifier::new(key.verifying_key(), &settings)];
        for previous in &settings.previous_keys {
            if !verifiers.iter().any(|v| v.key.kid() == previous.kid()) {
                verifiers.push(Verifier::new(previous.clone(), &settings));
            }
        }
        let verified = (settings.cache_entries > 0)
            .then(|| cache::VerifiedTokens::new(settings.cache_entries));
        // Public parts only: HS256 keys have none and are never published.
        let keys: Vec<_> = verifiers
            .iter()
            .filter_map(|v| v.key.public_jwk())
            .collect();
        let jwks = Bytes::from(
            serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap_or_default(),
        );
        Tokens {
            key,
            settings,
            verifiers,
            verified,
            jwks,
        }
    }

    /// Like [`Tokens::new`], but refuses a previous key whose kid is the current key's
    /// or another previous key's.
    pub fn try_new(key: SigningKey, settings: TokenSettings) -> Result<Tokens, KeyError> {
        let mut kids = HashSet::from([key.kid()]);
        for previous in &settings.previous_keys {
            if !kids.insert(previous.kid()) {
                return Err(KeyError::DuplicateKid(previous.kid().to_owned()));
            }
        }
        Ok(Tokens::new(key, settings))
    }

    /// The settings.
    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    /// The signing key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// The keys that verify: the current key's public half first, then the previous keys.
    pub fn verifying_keys(&self) -> impl Iterator<Item = &VerifyingKey> {
        self.verifiers.iter().map(|v| &v.key)
    }

    /// The JWKS document (`{"keys": [...]}`) with the public key of the current key and
    /// of every previous key; HS256 keys are left out.
    pub fn jwks(&self) -> &Bytes {
        &self.jwks
    }

    /// Mints an access token for `subject`, valid from `now` for the configured TTL.
    pub fn mint(&self, subject: &Subject, now: Timestamp) -> Result<MintedToken, TokenError> {
        self.mint_kind(TokenKind::Access, subject, now, None, None)
    }

    /// Mints a token of `kind`, valid for `ttl` (the kind's configured lifetime when
    /// `None`); refresh tokens carry `family`.
    pub fn mint_kind(
        &self,
        kind: TokenKind,
        subject: &Subject,
        now: Timestamp,
        ttl: Option<Duration>,
        family: Option<String>,
    ) -> Result<MintedToken, TokenError> {
        self.mint_continuing(kind, subject, now, ttl, family, now.as_secs())
    }

    /// [`mint_kind`](Self::mint_kind) for a session that goes on from a sign-in at
    /// `auth_time` (seconds since the epoch): a refresh or an exchange keeps the time the
    /// code was verified, so a rule's maximum session age counts from the sign-in, not
    /// from the last rotation.
    pub fn mint_continuing(
        &self,
        kind: TokenKind,
        subject: &Subject,
        now: Timestamp,
        ttl: Option<Duration>,
        family: Option<String>,
        auth_time: u64,
    ) -> Result<MintedToken, TokenError> {
        let iat = now.as_secs();
        let ttl = ttl
            .unwrap_or(match kind {
                TokenKind::Access => self.settings.ttl,
                TokenKind::Refresh => self.settings.refresh_ttl.unwrap_or(self.settings.ttl),
                TokenKind::Exchange => self.settings.exchange_ttl,
            })
            .as_secs()
            .max(1);
        let claims = Claims {
            iss: self.settings.issuer.clone(),
            sub: subject.id.clone(),
            aud: audience(&self.settings, kind),
            exp: iat + ttl,
            iat,
            nbf: iat,
            jti: crate::util::random_id(),
            amr: vec!["otp".into()],
            // Never after the token's own issue time.
            auth_time: auth_time.min(iat),
            email: subject.email.clone(),
            phone: subject.phone.clone(),
            tenant: subject.tenant.clone(),
            fam: family,
            forwarded: ForwardedHeaders::default(),
            revocation: RevocationCheck::default(),
        };
        let mut header = Header::new(self.key.algorithm().jwt_algorithm());
        header.kid = Some(self.key.kid().to_owned());
        let token = self.sign(&header, &claims)?;
        Ok(MintedToken {
            token,
            expires_in: ttl,
            claims: Arc::new(claims),
        })
    }

    /// `header` and `claims` as a compact JWS (RFC 7515), as `jsonwebtoken::encode` writes
    /// it, signed with the key parsed once at load.
    fn sign(&self, header: &Header, claims: &Claims) -> Result<String, TokenError> {
        fn part<T: Serialize>(value: &T) -> Result<String, TokenError> {
            serde_json::to_vec(value)
                .map(|json| crate::util::base64url(&json))
                .map_err(|e| TokenError::Signing(e.to_string()))
        }
        let mut token = part(header)?;
        token.push('.');
        token.push_str(&part(claims)?);
        let signature = (self.key.sign(token.as_bytes()))
            .map_err(|_| TokenError::Signing("the key could not sign".into()))?;
        token.push('.');
        token.push_str(&crate::util::base64url(&signature));
        Ok(token)
    }

    /// Verifies an access token at `now`: the key its kid names, that key's pinned
    /// algorithm, signature, iss, aud, exp, nbf. A token verified before is answered from
    /// a cache without a signature check, but never past its `exp`.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<Arc<Claims>, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        if let Some(claims) = self.verified.as_ref().and_then(|cache| cache.get(token)) {
            let checked = self.check_times(&claims, now);
            crate::metrics::token_verified(true, checked.is_ok());
            checked?;
            return Ok(claims);
        }
        let claims = self.verify_kind(TokenKind::Access, token, now);
        crate::metrics::token_verified(false, claims.is_ok());
        let claims = claims?;
        if let Some(cache) = &self.verified {
            cache.insert(token, &claims);
        }
        Ok(claims)
    }

    /// Verifies a token of `kind` at `now`, without the cache.
    pub fn verify_kind(
        &self,
        kind: TokenKind,
        token: &str,
        now: Timestamp,
    ) -> Result<Arc<Claims>, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            // `alg: none` and unknown algorithms fail to parse as a header at all.
            jsonwebtoken::errors::ErrorKind::Json(_) => TokenError::WrongAlgorithm,
            _ => TokenError::Malformed,
        })?;
        let pinned = |verifier: &Verifier| verifier.key.algorithm().jwt_algorithm() == header.alg;
        if !self.verifiers.iter().any(pinned) {
            // Algorithm confusion (an RS256 public key used as an HS256 secret, etc.)
            // is impossible: the header's choice is never followed.
            return Err(TokenError::WrongAlgorithm);
        }
        // Every token this gate signs names its key; one that names none, or a key not
        // configured (any more), is refused rather than tried against each key.
        let verifier = header
            .kid
            .as_deref()
            .and_then(|kid| self.verifiers.iter().find(|v| v.key.kid() == kid))
            .ok_or(TokenError::UnknownKey)?;
        if !pinned(verifier) {
            return Err(TokenError::WrongAlgorithm);
        }
        let validation = &verifier.validations[kind as usize];
        let data = jsonwebtoken::decode::<Claims>(token, verifier.key.decoding(), validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
                jsonwebtoken::errors::ErrorKind::InvalidToken
                | jsonwebtoken::errors::ErrorKind::Base64(_)
                | jsonwebtoken::errors::ErrorKind::Utf8(_) => TokenError::Malformed,
                _ => TokenError::Invalid(e.to_string()),
            })?;
        let claims = Arc::new(data.claims);
        self.check_times(&claims, now)?;
        Ok(claims)
    }

    fn check_times(&self, claims: &Claims, now: Timestamp) -> Result<(), TokenError> {
        let now = now.as_secs();
        let leeway = self.settings.leeway.as_secs();
        if claims.exp.saturating_add(leeway) <= now {
            return Err(TokenError::Expired);
        }
        if claims.nbf > now.saturating_add(leeway) {
            return Err(TokenError::NotYetValid);
        }
        Ok(())
    }

    /// Audiences accepted for access tokens (for diagnostics).
    pub fn audiences(&self) -> HashSet<String> {
        self.verifiers[0].validations[TokenKind::Access as usize]
            .aud
            .clone()
            .unwrap_or_default()
    }
}

fn audience(settings: &TokenSettings, kind: TokenKind) -> String {
    match kind {
        TokenKind::Access => settings.audience.clone(),
        TokenKind::Refresh => format!("{}/refresh", settings.issuer),
        TokenKind::Exchange => format!("{}/exchange", settings.issuer),
    }
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("key", &self.key)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
