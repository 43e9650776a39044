//! Sessions: authenticating access tokens, starting, refreshing and exchanging
//! sessions, and revoking them.

use std::sync::Arc;
use std::time::Duration;

use super::GateError;
use super::audit;
use super::{Gate, Identity, RevocationFallback, Session};
use crate::otp::{Clock, SystemClock};
use crate::store::{SetMode, keys};
use crate::token::{Claims, MintedToken, Subject, TokenKind};

/// Lifetime of a second-factor assertion: long enough to cross to the app, no longer.
const ASSERTION_TTL: Duration = Duration::from_secs(60);

impl Gate {
    /// Checks an access token, including that it was not revoked, and returns the
    /// identity it carries.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use otpgate::{Gate, GateError};
    /// use otpgate::token::Subject;
    ///
    /// let gate = Gate::builder().build()?;
    /// let carol = Subject {
    ///     id: "u-7".into(),
    ///     email: Some("carol@example.com".into()),
    ///     phone: None,
    ///     tenant: "default".into(),
    /// };
    /// let session = gate.start_session(&carol)?;
    ///
    /// let caller = gate.authenticate(&session.access.token).await?;
    /// assert_eq!(caller.subject(), "u-7");
    ///
    /// // Revoked (a logout): refused from then on, by every gate sharing the store.
    /// gate.revoke_access(&caller.claims).await?;
    /// let again = gate.authenticate(&session.access.token).await;
    /// assert!(matches!(again, Err(GateError::Unauthorized)));
    /// # Ok(()) }
    /// ```
    pub async fn authenticate(&self, token: &str) -> Result<Identity, GateError> {
        let claims = self
            .inner
            .tokens
            .verify(token, self.inner.clock.now())
            .map_err(|_| GateError::Unauthorized)?;
        if claims.revocation.revoked() {
            return Err(GateError::Unauthorized);
        }
        match self.revocation_checked(&claims).await {
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
        let now = self.inner.clock.now();
        self.mint_since(kind, subject, ttl, family, now.as_secs())
    }

    /// Mints for a session whose code was verified at `auth_time`.
    fn mint_since(
        &self,
        kind: TokenKind,
        subject: &Subject,
        ttl: Option<Duration>,
        family: Option<String>,
        auth_time: u64,
    ) -> Result<MintedToken, GateError> {
        let now = self.inner.clock.now();
        self.inner
            .tokens
            .mint_continuing(kind, subject, now, ttl, family, auth_time)
            .map_err(|e| GateError::Internal(e.to_string()))
    }

    /// Starts a session for a verified subject: an access token and, unless refresh
    /// tokens are off, the first refresh token of a new family.
    pub fn start_session(&self, subject: &Subject) -> Result<Session, GateError> {
        let now = self.inner.clock.now().as_secs();
        self.session(subject, None, crate::util::random_id(), now)
    }

    fn session(
        &self,
        subject: &Subject,
        access_ttl: Option<Duration>,
        family: String,
        auth_time: u64,
    ) -> Result<Session, GateError> {
        let access = self.mint_since(TokenKind::Access, subject, access_ttl, None, auth_time)?;
        let refresh = match self.inner.tokens.settings().refresh_ttl {
            Some(_) => {
                Some(self.mint_since(TokenKind::Refresh, subject, None, Some(family), auth_time)?)
            }
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
        // The session counts from the verified code, not from the exchange.
        self.session(
            &subject_of(&claims),
            Some(ttl),
            crate::util::random_id(),
            claims.auth_time,
        )
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
            audit::refresh_reuse_detected(&claims);
            return Err(GateError::InvalidToken);
        }
        // A rotation is no new sign-in: `auth_time` stays that of the code, so a rule's
        // maximum session age cannot be outrun by refreshing.
        let session = self.session(&subject_of(&claims), None, family, claims.auth_time)?;
        audit::session_refreshed(&claims);
        Ok(session)
    }

    /// Revokes an access token until it expires: at once on this gate, and within the
    /// revocation poll interval on every gate sharing the store.
    pub async fn revoke_access(&self, claims: &Claims) -> Result<(), GateError> {
        let ttl = self.until_expiry(claims);
        self.inner
            .store
            .set_value(&keys::revoked(&claims.jti), "1", ttl, SetMode::Always)
            .await
            .map_err(GateError::StoreUnavailable)?;
        claims.revocation.revoke();
        // After the revoked mark: a gate that sees the new epoch finds the mark. Should the
        // store not take it, this gate's next poll announces it again.
        self.inner
            .revocations
            .announce(&*self.inner.store)
            .await
            .map_err(GateError::StoreUnavailable)?;
        audit::logged_out(claims, "access");
        Ok(())
    }

    /// Signs out the session of access token `token`: revokes it while it is valid. A
    /// token that is invalid, expired or revoked already has nothing left to revoke (`Ok`);
    /// a store that cannot say whether it still holds is an error, for a sign-out that did
    /// not happen must not be reported as done.
    pub async fn sign_out(&self, token: &str) -> Result<(), GateError> {
        match self.authenticate(token).await {
            Ok(identity) => self.revoke_access(&identity.claims).await,
            Err(error @ GateError::StoreUnavailable(_)) => Err(error),
            Err(_) => Ok(()),
        }
    }

    /// Revokes a refresh token and every rotation of it.
    pub async fn revoke_refresh(&self, token: &str) -> Result<(), GateError> {
        let claims = self.verify_kind(TokenKind::Refresh, token)?;
        let family = claims.fam.clone().ok_or(GateError::InvalidToken)?;
        self.revoke_family(&family).await?;
        audit::logged_out(&claims, "refresh");
        Ok(())
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
                &keys::used(&claims.jti),
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

    /// Whether the token was revoked: from its cached claims while no logout happened
    /// since its last check (no store read), else from the store.
    async fn revocation_checked(&self, claims: &Claims) -> Result<bool, GateError> {
        let generation = self
            .inner
            .revocations
            .generation(&*self.inner.store)
            .await
            .map_err(GateError::StoreUnavailable)?;
        if claims.revocation.passed_at(generation) {
            return Ok(false);
        }
        let revoked = self
            .inner
            .store
            .get_value(&keys::revoked(&claims.jti))
            .await
            .map_err(GateError::StoreUnavailable)?
            .is_some();
        if revoked {
            claims.revocation.revoke();
        } else {
            // The generation read before the lookup: a logout during it moves the
            // generation on, and the next request checks again.
            claims.revocation.pass(generation);
        }
        Ok(revoked)
    }

    async fn family_revoked(&self, family: &str) -> Result<bool, GateError> {
        Ok(self
            .inner
            .store
            .get_value(&keys::family_revoked(family))
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
            .set_value(&keys::family_revoked(family), "1", ttl, SetMode::Always)
            .await
            .map_err(GateError::StoreUnavailable)?;
        Ok(())
    }
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
