//! The engine: send, verify and authenticate, tying the core, the store, the directory,
//! delivery and tokens together. Framework-neutral; adapters call it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::delivery::{
    ConsoleSender, DeliveryStats, Message, Outbox, OutboxPolicy, Senders, TemplateContext,
    Templates,
};
use crate::directory::{Account, Directory, NoDirectory};
use crate::error::GateError;
use crate::http::HttpSettings;
use crate::identifier::{Channel, Identifier};
use crate::otp::{
    Clock, CodeHasher, IdentityState, IssueDecision, OtpPolicy, Rate, ServerSecret, SystemClock,
    VerifyDecision, Write, decide_issue, decide_verify,
};
use crate::store::{MemoryStore, SetMode, Store};
use crate::token::{
    Claims, MintedToken, SigningAlgorithm, SigningKey, Subject, TokenKind, TokenSettings, Tokens,
};

/// A tenant: one set of users with its own channels and account rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    /// Its id, as clients name it.
    pub id: String,
    /// The channels its users may receive codes by.
    pub channels: Vec<Channel>,
    /// Whether an unknown identifier becomes an account on its first verified code.
    pub auto_create: bool,
    /// Whether send answers say if the account existed. Off by default: on, it lets
    /// anyone enumerate accounts.
    pub reveal_account: bool,
    /// The name messages are signed with (a location, a product); none when `None`.
    pub display_name: Option<String>,
}

impl Tenant {
    /// The default tenant: email and SMS, auto-create on, accounts not revealed.
    pub fn new(id: &str) -> Tenant {
        Tenant {
            id: id.to_owned(),
            channels: vec![Channel::Email, Channel::Sms],
            auto_create: true,
            reveal_account: false,
            display_name: None,
        }
    }
}

/// Per-IP limits (per-identifier limits are in [`OtpPolicy`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpLimits {
    /// Sends from one client IP.
    pub sends: Rate,
    /// Verifies from one client IP.
    pub verifies: Rate,
}

impl Default for IpLimits {
    fn default() -> Self {
        IpLimits {
            sends: Rate::new(30, Duration::from_secs(5 * 60)),
            verifies: Rate::new(60, Duration::from_secs(5 * 60)),
        }
    }
}

/// A verified identity: what the app behind the gate learns about the caller. It is
/// also put in the request's extensions.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The token's claims.
    pub claims: Arc<Claims>,
    /// The token itself (forwarded so the app can verify it independently).
    pub token: Arc<str>,
}

impl Identity {
    /// The account id.
    pub fn subject(&self) -> &str {
        &self.claims.sub
    }

    /// The verified email, if any.
    pub fn email(&self) -> Option<&str> {
        self.claims.email.as_deref()
    }

    /// The verified phone, if any.
    pub fn phone(&self) -> Option<&str> {
        self.claims.phone.as_deref()
    }

    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.claims.tenant
    }
}

/// A send request.
#[derive(Debug)]
pub struct SendRequest<'a> {
    /// The tenant named by the client; the default tenant when `None`.
    pub tenant: Option<&'a str>,
    /// Where the code goes.
    pub identifier: Identifier,
    /// The client's address, for per-IP limits.
    pub client_ip: Option<IpAddr>,
    /// The language the message should be in (`fr`, `pt-BR`), where a template has it.
    pub locale: Option<&'a str>,
}

/// What a successful send may tell the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendOutcome {
    /// Whether the account existed; `None` unless the tenant reveals accounts.
    pub account_exists: Option<bool>,
}

/// A verify request.
#[derive(Debug)]
pub struct VerifyRequest<'a> {
    /// The tenant; the default one when `None`.
    pub tenant: Option<&'a str>,
    /// Whose code it is.
    pub identifier: Identifier,
    /// The code as typed.
    pub code: &'a str,
    /// The client's address, for per-IP limits.
    pub client_ip: Option<IpAddr>,
}

/// How long the gate remembers an account it auto-created (for `accountExists`); apps
/// that need accounts forever keep them in their own directory.
const AUTO_CREATED_ACCOUNT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Lifetime of a second-factor assertion: long enough to cross to the app, no longer.
const ASSERTION_TTL: Duration = Duration::from_secs(60);

/// Codes longer than this are refused as malformed without touching the store.
const MAX_TYPED_CODE: usize = 64;

struct Inner {
    policy: OtpPolicy,
    hasher: CodeHasher,
    store: Arc<dyn Store>,
    tokens: Tokens,
    outbox: Outbox,
    templates: Templates,
    directory: Arc<dyn Directory>,
    tenants: HashMap<String, Tenant>,
    default_tenant: String,
    ip_limits: IpLimits,
    clock: Arc<dyn Clock>,
    http: HttpSettings,
    revocation_fallback: RevocationFallback,
}

/// The gate. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("policy", &self.inner.policy)
            .field("tokens", &self.inner.tokens)
            .field("tenants", &self.inner.tenants)
            .finish_non_exhaustive()
    }
}

/// A gate that cannot be built from its parts.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A tenant offers a channel that has no sender.
    #[error("tenant `{tenant}` offers {channel} but no {channel} delivery is configured")]
    MissingSender {
        /// The tenant.
        tenant: String,
        /// The channel.
        channel: Channel,
    },
    /// Two tenants share an id.
    #[error("tenant `{0}` is defined twice")]
    DuplicateTenant(String),
    /// The default tenant is not among the tenants.
    #[error("default tenant `{0}` is not defined")]
    MissingDefaultTenant(String),
    /// A policy value is out of range.
    #[error("{0}")]
    InvalidPolicy(String),
    /// The signing key could not be made.
    #[error(transparent)]
    Key(#[from] crate::token::KeyError),
}

/// Builds a [`Gate`]. Every part has a development-friendly default: the memory store,
/// console delivery, a fresh EdDSA key, one tenant `default`.
pub struct GateBuilder {
    policy: OtpPolicy,
    secret: Option<ServerSecret>,
    store: Option<Arc<dyn Store>>,
    key: Option<SigningKey>,
    token_settings: TokenSettings,
    senders: Option<Senders>,
    directory: Arc<dyn Directory>,
    tenants: Vec<Tenant>,
    default_tenant: String,
    ip_limits: IpLimits,
    clock: Arc<dyn Clock>,
    http: HttpSettings,
    outbox: OutboxPolicy,
    templates: Option<Templates>,
    revocation_fallback: RevocationFallback,
}

/// What a protected request with a valid token gets when the store cannot say whether
/// the token was revoked (the store is down).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RevocationFallback {
    /// Let it through, and log a warning: the signature and expiry were checked, only a
    /// logout during the outage can be missed. Keeps the app up while the store is down.
    #[default]
    Allow,
    /// Answer 503: no request passes unless its token is known not to be revoked.
    Deny,
}

impl Default for GateBuilder {
    fn default() -> Self {
        GateBuilder {
            policy: OtpPolicy::default(),
            secret: None,
            store: None,
            key: None,
            token_settings: TokenSettings::default(),
            senders: None,
            directory: Arc::new(NoDirectory),
            tenants: Vec::new(),
            default_tenant: "default".into(),
            ip_limits: IpLimits::default(),
            clock: Arc::new(SystemClock),
            http: HttpSettings::default(),
            outbox: OutboxPolicy::default(),
            templates: None,
            revocation_fallback: RevocationFallback::default(),
        }
    }
}

impl GateBuilder {
    /// The OTP policy.
    pub fn policy(mut self, policy: OtpPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The secret that keys code hashes; shared by every instance using one store.
    /// Defaults to a random one.
    pub fn secret(mut self, secret: ServerSecret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// The store; defaults to a [`MemoryStore`].
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// What protected requests get while the store cannot answer the revocation check;
    /// defaults to [`RevocationFallback::Allow`].
    pub fn revocation_fallback(mut self, fallback: RevocationFallback) -> Self {
        self.revocation_fallback = fallback;
        self
    }

    /// The token signing key; defaults to a fresh EdDSA key (tokens die with the process).
    pub fn signing_key(mut self, key: SigningKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Token issuer, audience and lifetime.
    pub fn token_settings(mut self, settings: TokenSettings) -> Self {
        self.token_settings = settings;
        self
    }

    /// The senders; defaults to console delivery for both channels.
    pub fn senders(mut self, senders: Senders) -> Self {
        self.senders = Some(senders);
        self
    }

    /// The account directory; defaults to [`NoDirectory`].
    pub fn directory(mut self, directory: Arc<dyn Directory>) -> Self {
        self.directory = directory;
        self
    }

    /// Adds a tenant. Without any, one tenant `default` is made.
    pub fn tenant(mut self, tenant: Tenant) -> Self {
        self.tenants.push(tenant);
        self
    }

    /// Which tenant requests that name none belong to.
    pub fn default_tenant(mut self, id: &str) -> Self {
        self.default_tenant = id.to_owned();
        self
    }

    /// Per-IP limits.
    pub fn ip_limits(mut self, limits: IpLimits) -> Self {
        self.ip_limits = limits;
        self
    }

    /// The clock; defaults to the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// HTTP settings: endpoints, protected paths, identity headers, limits.
    pub fn http(mut self, http: HttpSettings) -> Self {
        self.http = http;
        self
    }

    /// Largest number of codes waiting for delivery.
    pub fn outbox_capacity(mut self, capacity: usize) -> Self {
        self.outbox.capacity = capacity;
        self
    }

    /// Retries, timeout, capacity and concurrency of delivery.
    pub fn outbox_policy(mut self, policy: OutboxPolicy) -> Self {
        self.outbox = policy;
        self
    }

    /// Message templates; the built-in ones when not set.
    pub fn templates(mut self, templates: Templates) -> Self {
        self.templates = Some(templates);
        self
    }

    /// Builds the gate, checking that the parts fit together.
    pub fn build(self) -> Result<Gate, BuildError> {
        let policy = self.policy;
        if policy.max_attempts == 0 || policy.failure_budget == 0 {
            return Err(BuildError::InvalidPolicy(
                "otp.max_attempts and otp.failure_budget must be at least 1".into(),
            ));
        }
        if policy.failure_budget > 100 {
            // NIST SP 800-63B 5.2.2 caps consecutive failed attempts at 100.
            return Err(BuildError::InvalidPolicy(
                "otp.failure_budget must be at most 100".into(),
            ));
        }
        if policy.ttl.is_zero() {
            return Err(BuildError::InvalidPolicy(
                "otp.ttl must be longer than zero".into(),
            ));
        }
        let mut tenants = HashMap::new();
        let defined = if self.tenants.is_empty() {
            vec![Tenant::new(&self.default_tenant)]
        } else {
            self.tenants
        };
        let senders = self.senders.unwrap_or_else(|| Senders {
            email: Some(Arc::new(ConsoleSender)),
            sms: Some(Arc::new(ConsoleSender)),
            ..Senders::default()
        });
        for tenant in defined {
            for &channel in &tenant.channels {
                if senders.for_channel(channel).is_none() {
                    return Err(BuildError::MissingSender {
                        tenant: tenant.id.clone(),
                        channel,
                    });
                }
            }
            if tenants.contains_key(&tenant.id) {
                return Err(BuildError::DuplicateTenant(tenant.id));
            }
            tenants.insert(tenant.id.clone(), tenant);
        }
        if !tenants.contains_key(&self.default_tenant) {
            return Err(BuildError::MissingDefaultTenant(self.default_tenant));
        }
        let key = match self.key {
            Some(key) => key,
            None => {
                tracing::warn!(
                    "no token key configured: using a fresh EdDSA key; tokens will not survive a restart"
                );
                SigningKey::generate(SigningAlgorithm::EdDSA)?.0
            }
        };
        let secret = self.secret.unwrap_or_else(ServerSecret::random);
        let mut http = self.http;
        // A client must never be able to send the second-factor assertion itself.
        let assertion_headers: Vec<String> = http
            .endpoints
            .iter()
            .filter(|m| m.dialect == crate::http::Dialect::Baanx)
            .map(|m| {
                m.assertion_header.as_ref().map_or(
                    crate::http::dialect::baanx::DEFAULT_ASSERTION_HEADER.to_owned(),
                    |h| h.as_str().to_owned(),
                )
            })
            .collect();
        http.identity.strip.extend(assertion_headers);
        Ok(Gate {
            inner: Arc::new(Inner {
                hasher: CodeHasher::new(&secret),
                policy,
                store: self
                    .store
                    .unwrap_or_else(|| Arc::new(MemoryStore::default())),
                tokens: Tokens::new(key, self.token_settings),
                outbox: Outbox::new(senders, self.outbox),
                templates: self.templates.unwrap_or_else(Templates::defaults),
                directory: self.directory,
                tenants,
                default_tenant: self.default_tenant,
                ip_limits: self.ip_limits,
                clock: self.clock,
                http,
                revocation_fallback: self.revocation_fallback,
            }),
        })
    }
}

impl Gate {
    /// A builder with development defaults.
    pub fn builder() -> GateBuilder {
        GateBuilder::default()
    }

    /// The token minter and verifier.
    pub fn tokens(&self) -> &Tokens {
        &self.inner.tokens
    }

    /// The OTP policy.
    pub fn policy(&self) -> &OtpPolicy {
        &self.inner.policy
    }

    /// The HTTP settings.
    pub fn http_settings(&self) -> &HttpSettings {
        &self.inner.http
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Delivery counters since start: sent, failed, retried, failed over.
    pub fn delivery_stats(&self) -> DeliveryStats {
        self.inner.outbox.stats()
    }

    /// Messages for unknown accounts, queued like any other and dropped unsent by the
    /// outbox worker, since start.
    pub fn decoys_dropped(&self) -> u64 {
        self.inner.outbox.decoys_dropped()
    }

    /// The directory.
    pub fn directory(&self) -> &Arc<dyn Directory> {
        &self.inner.directory
    }

    /// The tenant of requests that name none.
    pub fn default_tenant(&self) -> &str {
        &self.inner.default_tenant
    }

    /// The store key of an identity's record. Public so that tests and tools can look
    /// at what the store holds.
    pub fn identity_key(tenant: &str, identifier: &Identifier) -> String {
        format!(
            "otp:{tenant}:{}:{}",
            identifier.channel(),
            identifier.as_str()
        )
    }

    fn tenant(&self, id: Option<&str>, channel: Channel) -> Result<&Tenant, GateError> {
        let tenant = self
            .inner
            .tenants
            .get(id.unwrap_or(&self.inner.default_tenant))
            .ok_or(GateError::UnknownTenant)?;
        if !tenant.channels.contains(&channel) {
            return Err(GateError::ChannelDisabled(channel));
        }
        Ok(tenant)
    }

    async fn limit_ip(
        &self,
        action: &str,
        ip: Option<IpAddr>,
        rate: Rate,
    ) -> Result<(), GateError> {
        let Some(ip) = ip else {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "client address unknown: per-IP limits are not applied; serve axum with \
                     into_make_service_with_connect_info::<SocketAddr>()"
                )
            });
            return Ok(());
        };
        let now = self.inner.clock.now();
        let hit = self
            .inner
            .store
            .hit(&format!("ip:{action}:{ip}"), rate.per, now)
            .await
            .map_err(GateError::StoreUnavailable)?;
        if hit.count > u64::from(rate.count) {
            return Err(GateError::RateLimited {
                retry_after: now.until(hit.resets_at),
            });
        }
        Ok(())
    }

    /// Applies a core decision to the identity record under `key`, atomically in the
    /// store, and returns what was decided (`initial` if the store never called it).
    async fn decide<D: Send>(
        &self,
        key: &str,
        initial: D,
        decide: impl Fn(Option<IdentityState>) -> (Write, D) + Send + Sync,
    ) -> Result<D, GateError> {
        let mut decision = initial;
        self.inner
            .store
            .update_identity(key, &mut |current| {
                let (write, d) = decide(current);
                decision = d;
                write
            })
            .await
            .map_err(GateError::StoreUnavailable)?;
        Ok(decision)
    }

    /// Issues a code and queues its delivery. The answer never depends on whether the
    /// account exists (unless the tenant reveals accounts) nor on the delivery.
    pub async fn send(&self, request: SendRequest<'_>) -> Result<SendOutcome, GateError> {
        let tenant = self.tenant(request.tenant, request.identifier.channel())?;
        self.limit_ip("send", request.client_ip, self.inner.ip_limits.sends)
            .await?;
        let account = self.find_account(&tenant.id, &request.identifier).await?;
        let exists = account.is_some();
        let deliver = exists || tenant.auto_create;
        if !deliver && tenant.reveal_account {
            return Err(GateError::AccountNotFound);
        }

        // A place in the outbox first: a full outbox refuses the send before the record
        // changes, so the 503 does not also start a resend cooldown. Unknown identities
        // take one too, so a full outbox answers both alike.
        let slot = self
            .inner
            .outbox
            .reserve()
            .map_err(|_| GateError::DeliveryUnavailable)?;

        // An unknown identity gets a code too, stored and limited the same way, and its
        // message rendered and queued the same way; the outbox worker drops it unsent.
        // From outside, both paths look and time alike.
        let code = self.inner.policy.format.generate();
        let key = Gate::identity_key(&tenant.id, &request.identifier);
        let hash = self.inner.hasher.hash(&key, &code);
        let now = self.inner.clock.now();
        let decision = self
            .decide(&key, IssueDecision::Issued, |current| {
                decide_issue(current, hash, now, &self.inner.policy)
            })
            .await?;
        match decision {
            IssueDecision::Issued => {}
            IssueDecision::RateLimited { retry_after } => {
                return Err(GateError::RateLimited { retry_after });
            }
            IssueDecision::Locked { retry_after } => {
                return Err(GateError::TooManyAttempts { retry_after });
            }
        }
        // No branch on `deliver` here: the same rendering, allocations and queue op for
        // both, so the answer's timing cannot tell a known account from an unknown one.
        let ttl = self.inner.policy.ttl;
        let content = self.inner.templates.render(
            request.identifier.channel(),
            request.locale,
            &TemplateContext {
                code: code.expose(),
                minutes: ttl.as_secs().div_ceil(60),
                tenant: &tenant.id,
                tenant_name: tenant.display_name.as_deref(),
            },
        );
        slot.queue(
            Message {
                to: request.identifier,
                code,
                tenant: tenant.id.clone(),
                expires_in: ttl,
                content,
            },
            deliver,
        );
        Ok(SendOutcome {
            account_exists: tenant.reveal_account.then_some(exists),
        })
    }

    /// Checks a code and, when it is right, consumes it and returns the account it proves.
    /// What that buys (a session, a one-time token, an assertion) is the caller's choice.
    pub async fn verify(&self, request: VerifyRequest<'_>) -> Result<Subject, GateError> {
        let tenant = self.tenant(request.tenant, request.identifier.channel())?;
        let code = self.inner.policy.format.normalize(request.code);
        if code.expose().is_empty() || code.expose().len() > MAX_TYPED_CODE {
            return Err(GateError::InvalidRequest(
                "code must be a non-empty string of at most 64 characters".into(),
            ));
        }
        self.limit_ip("verify", request.client_ip, self.inner.ip_limits.verifies)
            .await?;
        let key = Gate::identity_key(&tenant.id, &request.identifier);
        let presented = self.inner.hasher.hash(&key, &code);
        let now = self.inner.clock.now();
        let decision = self
            .decide(&key, VerifyDecision::Rejected, |current| {
                decide_verify(current, presented, now, &self.inner.policy)
            })
            .await?;
        match decision {
            VerifyDecision::Accepted => {}
            VerifyDecision::Rejected => return Err(GateError::InvalidCode),
            VerifyDecision::Throttled { retry_after } => {
                return Err(GateError::TooManyAttempts { retry_after });
            }
        }
        let account = self.find_account(&tenant.id, &request.identifier).await?;
        let subject_id = match account {
            Some(account) => account.subject,
            None if tenant.auto_create => {
                self.create_account(&tenant.id, &request.identifier).await?
            }
            // Codes for unknown identities are never delivered; a match is a lucky guess.
            None => return Err(GateError::InvalidCode),
        };
        let (email, phone) = match &request.identifier {
            Identifier::Email(e) => (Some(e.clone()), None),
            Identifier::Phone(p) => (None, Some(p.clone())),
        };
        Ok(Subject {
            id: subject_id,
            email,
            phone,
            tenant: tenant.id.clone(),
        })
    }

    /// The account of `identifier`: the directory's, else one the gate auto-created.
    pub async fn find_account(
        &self,
        tenant: &str,
        identifier: &Identifier,
    ) -> Result<Option<Account>, GateError> {
        // Both lookups, always and at once: asking the store only when the directory
        // misses would make unknown accounts slower by a store round trip (a network one
        // on redis), which tells an attacker who is a member.
        let created_key = Gate::created_account_key(tenant, identifier);
        let (listed, created) = tokio::join!(
            self.inner.directory.find(tenant, identifier),
            self.inner.store.get_value(&created_key)
        );
        let listed = listed.map_err(GateError::DirectoryUnavailable)?;
        let created = created.map_err(GateError::StoreUnavailable)?;
        if let Some(account) = listed {
            return Ok(Some(account));
        }
        Ok(created.map(|subject| Account {
            subject,
            email: matches!(identifier, Identifier::Email(_))
                .then(|| identifier.as_str().to_owned()),
            phone: matches!(identifier, Identifier::Phone(_))
                .then(|| identifier.as_str().to_owned()),
        }))
    }

    fn created_account_key(tenant: &str, identifier: &Identifier) -> String {
        format!(
            "account:{tenant}:{}:{}",
            identifier.channel(),
            identifier.as_str()
        )
    }

    /// Records an account auto-created on its first verified code, so that later sends
    /// know it exists. Its id is the identifier itself.
    async fn create_account(
        &self,
        tenant: &str,
        identifier: &Identifier,
    ) -> Result<String, GateError> {
        let subject = identifier.as_str().to_owned();
        self.inner
            .store
            .set_value(
                &Gate::created_account_key(tenant, identifier),
                &subject,
                AUTO_CREATED_ACCOUNT_TTL,
                SetMode::IfAbsent,
            )
            .await
            .map_err(GateError::StoreUnavailable)?;
        Ok(subject)
    }

    /// Checks an access token, including that it was not revoked, and returns the
    /// identity it carries.
    pub async fn authenticate(&self, token: &str) -> Result<Identity, GateError> {
        let claims = self
            .inner
            .tokens
            .verify(token, self.inner.clock.now())
            .map_err(|_| GateError::Unauthorized)?;
        match self.is_revoked(&claims.jti).await {
            Ok(false) => {}
            Ok(true) => return Err(GateError::Unauthorized),
            Err(error) => match self.inner.revocation_fallback {
                RevocationFallback::Deny => return Err(error),
                RevocationFallback::Allow => warn_revocation_unchecked(&error),
            },
        }
        Ok(Identity {
            claims,
            token: Arc::from(token),
        })
    }

    fn mint(
        &self,
        kind: TokenKind,
        subject: &Subject,
        ttl: Option<Duration>,
        family: Option<String>,
    ) -> Result<MintedToken, GateError> {
        self.inner
            .tokens
            .mint_kind(kind, subject, self.inner.clock.now(), ttl, family)
            .map_err(|e| GateError::Internal(e.to_string()))
    }

    /// Starts a session for a verified subject: an access token and, unless refresh
    /// tokens are off, the first refresh token of a new family.
    pub fn start_session(&self, subject: &Subject) -> Result<Session, GateError> {
        self.session(subject, None, crate::util::random_id())
    }

    fn session(
        &self,
        subject: &Subject,
        access_ttl: Option<Duration>,
        family: String,
    ) -> Result<Session, GateError> {
        let access = self.mint(TokenKind::Access, subject, access_ttl, None)?;
        let refresh = match self.inner.tokens.settings().refresh_ttl {
            Some(_) => Some(self.mint(TokenKind::Refresh, subject, None, Some(family))?),
            None => None,
        };
        Ok(Session { access, refresh })
    }

    /// A short-lived (60 s) signed assertion, for the app, that `subject` just passed a
    /// one-time code.
    pub fn mint_assertion(&self, subject: &Subject) -> Result<MintedToken, GateError> {
        self.mint(TokenKind::Access, subject, Some(ASSERTION_TTL), None)
    }

    /// A one-time token proving that `subject` verified a code, to be exchanged once
    /// for a session ([`Gate::exchange`]).
    pub fn mint_exchange_token(&self, subject: &Subject) -> Result<MintedToken, GateError> {
        self.mint(TokenKind::Exchange, subject, None, None)
    }

    /// Consumes a one-time exchange token and starts a session whose access token lives
    /// `valid_for` (at most the configured access lifetime).
    pub async fn exchange(
        &self,
        token: &str,
        valid_for: Option<Duration>,
    ) -> Result<Session, GateError> {
        let claims = self.verify_kind(TokenKind::Exchange, token)?;
        self.consume(&claims).await?;
        let max = self.inner.tokens.settings().ttl;
        let ttl = valid_for.map_or(max, |wanted| wanted.min(max));
        self.session(&subject_of(&claims), Some(ttl), crate::util::random_id())
    }

    /// Rotates a refresh token: it is consumed, and a new access token and a new refresh
    /// token of the same family come back. A refresh token used twice means it was
    /// copied: its whole family is revoked.
    pub async fn refresh(&self, token: &str) -> Result<Session, GateError> {
        let claims = self.verify_kind(TokenKind::Refresh, token)?;
        let family = claims.fam.clone().ok_or(GateError::InvalidToken)?;
        if self.family_revoked(&family).await? {
            return Err(GateError::InvalidToken);
        }
        if self.consume(&claims).await.is_err() {
            // Reuse of a rotated token: whoever holds the newer one may be a thief.
            self.revoke_family(&family).await?;
            tracing::warn!(tenant = %claims.tenant, "refresh token reused; its family is revoked");
            return Err(GateError::InvalidToken);
        }
        self.session(&subject_of(&claims), None, family)
    }

    /// Revokes an access token until it expires.
    pub async fn revoke_access(&self, claims: &Claims) -> Result<(), GateError> {
        let ttl = self.until_expiry(claims);
        self.inner
            .store
            .set_value(
                &format!("revoked:{}", claims.jti),
                "1",
                ttl,
                SetMode::Always,
            )
            .await
            .map_err(GateError::StoreUnavailable)?;
        Ok(())
    }

    /// Revokes a refresh token and every rotation of it.
    pub async fn revoke_refresh(&self, token: &str) -> Result<(), GateError> {
        let claims = self.verify_kind(TokenKind::Refresh, token)?;
        let family = claims.fam.clone().ok_or(GateError::InvalidToken)?;
        self.revoke_family(&family).await
    }

    fn verify_kind(&self, kind: TokenKind, token: &str) -> Result<Arc<Claims>, GateError> {
        self.inner
            .tokens
            .verify_kind(kind, token, self.inner.clock.now())
            .map_err(|_| GateError::InvalidToken)
    }

    fn until_expiry(&self, claims: &Claims) -> Duration {
        let now = self.inner.clock.now().as_secs();
        // Kept a little past exp so the leeway cannot reopen the window.
        Duration::from_secs(
            claims.exp.saturating_sub(now) + self.inner.tokens.settings().leeway.as_secs() + 1,
        )
    }

    /// Marks a single-use token as used; fails when it already was.
    async fn consume(&self, claims: &Claims) -> Result<(), GateError> {
        let first = self
            .inner
            .store
            .set_value(
                &format!("used:{}", claims.jti),
                "1",
                self.until_expiry(claims),
                SetMode::IfAbsent,
            )
            .await
            .map_err(GateError::StoreUnavailable)?;
        if first {
            Ok(())
        } else {
            Err(GateError::InvalidToken)
        }
    }

    async fn is_revoked(&self, jti: &str) -> Result<bool, GateError> {
        Ok(self
            .inner
            .store
            .get_value(&format!("revoked:{jti}"))
            .await
            .map_err(GateError::StoreUnavailable)?
            .is_some())
    }

    async fn family_revoked(&self, family: &str) -> Result<bool, GateError> {
        Ok(self
            .inner
            .store
            .get_value(&format!("family-revoked:{family}"))
            .await
            .map_err(GateError::StoreUnavailable)?
            .is_some())
    }

    async fn revoke_family(&self, family: &str) -> Result<(), GateError> {
        let ttl = self
            .inner
            .tokens
            .settings()
            .refresh_ttl
            .unwrap_or(Duration::from_secs(3600))
            + self.inner.tokens.settings().leeway;
        self.inner
            .store
            .set_value(
                &format!("family-revoked:{family}"),
                "1",
                ttl,
                SetMode::Always,
            )
            .await
            .map_err(GateError::StoreUnavailable)?;
        Ok(())
    }
}

/// What a sign-in yields: an access token and, when refresh tokens are on, a refresh token.
#[derive(Clone, Debug)]
pub struct Session {
    /// The access token.
    pub access: MintedToken,
    /// The refresh token.
    pub refresh: Option<MintedToken>,
}

fn subject_of(claims: &Claims) -> Subject {
    Subject {
        id: claims.sub.clone(),
        email: claims.email.clone(),
        phone: claims.phone.clone(),
        tenant: claims.tenant.clone(),
    }
}

/// Logs, at most every ten seconds, that tokens pass without a revocation check: during
/// an outage every protected request would otherwise log once.
fn warn_revocation_unchecked(error: &GateError) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_WARNED: AtomicU64 = AtomicU64::new(0);
    let now = SystemClock.now().as_secs();
    let last = LAST_WARNED.load(Ordering::Relaxed);
    if now >= last + 10
        && LAST_WARNED
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            error = %std::error::Error::source(error).map_or_else(|| error.to_string(), ToString::to_string),
            "store unavailable: valid tokens pass without a revocation check (store.revocation_fallback = \"allow\")"
        );
    }
}
