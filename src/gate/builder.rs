//! [`GateBuilder`]: the one place that checks the parts of a gate fit together.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Gate, Inner, IpLimits, Tenant};
use crate::delivery::{ConsoleSender, Outbox, OutboxPolicy, Senders, Templates};
use crate::directory::{Directory, NoDirectory};
use crate::identifier::Channel;
use crate::otp::{Clock, CodeHasher, CodePolicy, ServerSecret, SystemClock};
use crate::store::{MeasuredStore, MemoryStore, Store};
use crate::token::{SigningAlgorithm, SigningKey, TokenSettings, Tokens};

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
    policy: CodePolicy,
    secret: Option<ServerSecret>,
    // Another gate's code hasher, taken over whole: its secret never leaves it.
    hasher: Option<CodeHasher>,
    store: Option<Arc<dyn Store>>,
    key: Option<SigningKey>,
    token_settings: TokenSettings,
    senders: Option<Senders>,
    directory: Arc<dyn Directory>,
    tenants: Vec<Tenant>,
    default_tenant: String,
    ip_limits: IpLimits,
    clock: Arc<dyn Clock>,
    outbox: OutboxPolicy,
    templates: Option<Templates>,
    revocation_fallback: RevocationFallback,
    revocation_poll: Duration,
    sms_guard: super::SmsGuard,
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
            policy: CodePolicy::default(),
            secret: None,
            hasher: None,
            store: None,
            key: None,
            token_settings: TokenSettings::default(),
            senders: None,
            directory: Arc::new(NoDirectory),
            tenants: Vec::new(),
            default_tenant: "default".into(),
            ip_limits: IpLimits::default(),
            clock: Arc::new(SystemClock),
            outbox: OutboxPolicy::default(),
            templates: None,
            revocation_fallback: RevocationFallback::default(),
            revocation_poll: super::DEFAULT_REVOCATION_POLL,
            sms_guard: super::SmsGuard::default(),
        }
    }
}

impl GateBuilder {
    /// The OTP policy.
    pub fn policy(mut self, policy: CodePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The secret that keys code hashes; shared by every instance using one store.
    /// Defaults to a random one.
    pub fn secret(mut self, secret: ServerSecret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// Keys code hashes exactly as `gate` does, whatever its secret (one it was given or
    /// one it made): codes `gate` issued verify on the gate built here. For a gate that
    /// replaces another on the same store, as a config reload does; overrides
    /// [`secret`](Self::secret).
    pub fn code_hasher_of(mut self, gate: &Gate) -> Self {
        self.hasher = Some(gate.inner.hasher.clone());
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

    /// How often the gate asks the store whether a token was revoked anywhere (a logout
    /// on another gate sharing the store): the bound on how long such a logout takes to
    /// be honoured here. Between two polls, a token seen before costs no store read.
    /// Defaults to 1 s; at least 10 ms.
    pub fn revocation_poll(mut self, interval: Duration) -> Self {
        self.revocation_poll = interval.max(Duration::from_millis(10));
        self
    }

    /// The gate-wide SMS guard (velocity, budgets, the pumping signature); by default it
    /// guards nothing.
    pub fn sms_guard(mut self, guard: super::SmsGuard) -> Self {
        self.sms_guard = guard;
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
        validate_policy(&policy)?;
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
        let hasher = match self.hasher {
            Some(hasher) => hasher,
            None => CodeHasher::new(&self.secret.unwrap_or_else(ServerSecret::random)),
        };
        let epoch_ttl = self.token_settings.ttl + self.token_settings.leeway;
        Ok(Gate {
            inner: Arc::new(Inner {
                hasher,
                policy,
                // Measured here so that every gate's store shows in the metrics.
                store: MeasuredStore::wrap(
                    self.store
                        .unwrap_or_else(|| Arc::new(MemoryStore::default())),
                ),
                tokens: Tokens::new(key, self.token_settings),
                outbox: Outbox::new(senders, self.outbox),
                templates: self.templates.unwrap_or_else(Templates::defaults),
                directory: self.directory,
                tenants,
                default_tenant: self.default_tenant,
                ip_limits: self.ip_limits,
                clock: self.clock,
                revocation_fallback: self.revocation_fallback,
                revocations: super::revocations::Revocations::new(self.revocation_poll, epoch_ttl),
                sms_guard: Arc::new(self.sms_guard),
                guard_alert: super::guard::Alert::default(),
            }),
        })
    }
}

/// Checks an OTP policy: the one rule book, used by [`GateBuilder::build`] and by the
/// config file's validation, so a value is refused the same way from code and from TOML.
pub fn validate_policy(policy: &CodePolicy) -> Result<(), BuildError> {
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
    Ok(())
}
