//! Sending and verifying codes: the per-IP limit, the core's decision applied atomically
//! in the store, delivery through the outbox, and the account a verified code proves.

use std::net::IpAddr;
use std::time::Duration;

use super::GateError;
use super::audit::{self, FailReason};
use super::guard::ChallengeCheck;
use super::{Gate, SendOptions, SendOutcome, SendRequest, VerifyRequest};
use crate::delivery::{Link, Message, TemplateContext};
use crate::directory::{Account, DirectoryError};
use crate::identifier::{Channel, Identifier};
use crate::otp::{CodeState, IssueDecision, Rate, VerifyDecision, decide_issue, decide_verify};
use crate::store::{Answer, CodeRecord, CodeUpdate, Op, SetMode, SetValue, StoreError, keys};
use crate::token::Subject;

/// How long the gate remembers an account it auto-created (for `accountExists`); apps
/// that need accounts forever keep them in their own directory.
const AUTO_CREATED_ACCOUNT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Codes longer than this are refused as malformed without touching the store.
const MAX_TYPED_CODE: usize = 64;

/// What a send or a verify reads from the store before it decides, all in one round trip.
/// Each keeps its own result, so each request reports failures in its own order.
struct Opening {
    /// The destination's code record, to decide on.
    record: Result<CodeRecord, StoreError>,
    /// The id of the account the gate auto-created, if it did.
    created: Result<Option<String>, StoreError>,
    /// The answers to the caller's `extra` operations, in order.
    extra: Vec<Result<Answer, StoreError>>,
}

impl Gate {
    /// Counts the request against its client's limit for `action` and reads what it
    /// decides on (see [`Opening`]), with the `extra` operations (the SMS guard's), all
    /// at once. Past the limit, the request ends here.
    #[allow(clippy::too_many_arguments)]
    async fn open(
        &self,
        action: &str,
        ip: Option<IpAddr>,
        rate: Rate,
        tenant: &str,
        identifier: &Identifier,
        record_key: &str,
        extra: &[Op<'_>],
    ) -> Result<Opening, GateError> {
        let ip_key = match ip {
            Some(ip) => Some(keys::ip_counter(action, ip)),
            None => {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    tracing::warn!(
                        "client address unknown: per-IP limits are not applied; serve axum \
                         with into_make_service_with_connect_info::<SocketAddr>()"
                    )
                });
                None
            }
        };
        let created_key = keys::created_account(tenant, identifier);
        let now = self.inner.clock.now();
        let mut ops = vec![
            Op::ReadCodeState { key: record_key },
            Op::GetValue { key: &created_key },
        ];
        if let Some(key) = &ip_key {
            ops.push(Op::Hit {
                key,
                window: rate.per,
                now,
            });
        }
        ops.extend_from_slice(extra);
        // The auto-created account is read always, whatever the directory will say, so an
        // unknown account is not slower by a round trip (which would tell an attacker who
        // is a member). The directory is asked only past the limit check: a client over
        // its limit makes the gate ask the app nothing.
        let answers = self.inner.store.batch(&ops).await;
        let mut answers = answers.into_iter();
        let mut next = || {
            answers.next().unwrap_or_else(|| {
                Err(StoreError::Corrupt(
                    "the store answered too few operations".into(),
                ))
            })
        };
        let record = next().and_then(Answer::into_code_state);
        let created = next().and_then(Answer::into_value);
        if ip_key.is_some() {
            let hit = next()
                .and_then(Answer::into_hit)
                .map_err(GateError::StoreUnavailable)?;
            if hit.count > u64::from(rate.count) {
                return Err(GateError::RateLimited {
                    retry_after: now.until(hit.resets_at),
                });
            }
        }
        // What is left answers `extra`.
        let extra = answers.collect();
        Ok(Opening {
            record,
            created,
            extra,
        })
    }

    /// Applies a core decision to the code record under `key`, atomically in the store,
    /// starting from `record` as [`open`](Self::open) read it, and returns what was
    /// decided (`initial` if the store never called it).
    async fn decide<'a, D: Send>(
        &self,
        key: &str,
        record: Result<CodeRecord, StoreError>,
        initial: D,
        decide: impl Fn(Option<CodeState>) -> (CodeUpdate<'a>, D) + Send + Sync + 'a,
    ) -> Result<D, GateError> {
        let record = record.map_err(GateError::StoreUnavailable)?;
        let mut decision = initial;
        self.inner
            .store
            .update_code_state_from(key, record, &mut |current| {
                let (update, d) = decide(current);
                decision = d;
                update
            })
            .await
            .map_err(GateError::StoreUnavailable)?;
        Ok(decision)
    }

    /// Issues a code and queues its delivery. The answer never depends on whether the
    /// account exists (unless the tenant reveals accounts) nor on the delivery.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use otpgate::delivery::{DeliveryError, Message, Sender, Senders};
    /// # struct Inbox(tokio::sync::mpsc::UnboundedSender<Message>);
    /// # #[async_trait::async_trait]
    /// # impl Sender for Inbox {
    /// #     async fn send(&self, message: &Message) -> Result<(), DeliveryError> {
    /// #         self.0.send(message.clone()).map_err(|e| DeliveryError::Failed(e.to_string()))
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (inbox, mut messages) = tokio::sync::mpsc::unbounded_channel();
    /// # let inbox: Arc<dyn Sender> = Arc::new(Inbox(inbox));
    /// # let senders = Senders { email: Some(inbox.clone()), sms: Some(inbox), ..Senders::default() };
    /// # let gate = otpgate::Gate::builder().senders(senders).build()?;
    /// use otpgate::SendRequest;
    /// use otpgate::identifier::Identifier;
    ///
    /// let alice = Identifier::email("Alice@Example.com")?;
    /// let outcome = gate
    ///     .send(SendRequest { tenant: None, identifier: alice, client_ip: None, locale: None })
    ///     .await?;
    /// assert_eq!(outcome.account_exists, None); // not revealed unless the tenant says so
    /// let message = messages.recv().await.expect("a message");
    /// assert_eq!(message.to.as_str(), "alice@example.com");
    /// assert_eq!(message.code.expose().len(), 6);
    /// # Ok(()) }
    /// ```
    pub async fn send(&self, request: SendRequest<'_>) -> Result<SendOutcome, GateError> {
        self.send_with(request, SendOptions::default()).await
    }

    /// [`send`](Self::send), and an email also carries a sign-in link: `link_prefix`
    /// with the code appended (an address ending in `code=`), in
    /// [`Message::link`](crate::delivery::Message::link) and in the rendered text. SMS
    /// carry no link. The prefix's origin must come from configuration, never from the
    /// request: a link to another host would hand it the code.
    pub async fn send_with_link(
        &self,
        request: SendRequest<'_>,
        link_prefix: &str,
    ) -> Result<SendOutcome, GateError> {
        let options = SendOptions {
            link_prefix: Some(link_prefix),
            ..SendOptions::default()
        };
        self.send_with(request, options).await
    }

    /// [`send`](Self::send) with [`SendOptions`]: a sign-in link, the solved challenge a
    /// tenant with [`ChallengeMode::Always`](crate::gate::ChallengeMode) requires.
    pub async fn send_with(
        &self,
        request: SendRequest<'_>,
        options: SendOptions<'_>,
    ) -> Result<SendOutcome, GateError> {
        let challenge = ChallengeCheck::Presented(options.challenge);
        self.send_code(request, options.link_prefix, challenge)
            .await
    }

    pub(super) async fn send_code(
        &self,
        request: SendRequest<'_>,
        link_prefix: Option<&str>,
        challenge: ChallengeCheck<'_>,
    ) -> Result<SendOutcome, GateError> {
        let tenant = self.tenant(request.tenant, request.identifier.channel())?;
        self.admit_send(tenant, &request.identifier, challenge)
            .await?;
        let key = keys::code_record(&tenant.id, &request.identifier);
        // The SMS guard's counts go in the same first round trip; its verdict comes
        // before the directory is asked and the code record touched.
        let guard = &self.inner.sms_guard;
        let sms_check = guard.check_for(&request.identifier, self.inner.clock.now());
        let extra = sms_check
            .as_ref()
            .map(|check| check.ops())
            .unwrap_or_default();
        let mut opening = self
            .open(
                "send",
                request.client_ip,
                self.inner.ip_limits.sends,
                &tenant.id,
                &request.identifier,
                &key,
                &extra,
            )
            .await?;
        if let Some(check) = &sms_check {
            let answers = std::mem::take(&mut opening.extra);
            self.judge_sms(check, answers, &tenant.id, request.client_ip)
                .await?;
        }
        let listed = self
            .inner
            .directory
            .find(&tenant.id, &request.identifier)
            .await;
        let account = account_of(listed, opening.created, &request.identifier)?;
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
        let hash = self.inner.hasher.hash(&key, &code);
        let now = self.inner.clock.now();
        let decision = self
            .decide(&key, opening.record, IssueDecision::Issued, |current| {
                let (write, decision) = decide_issue(current, hash, now, &self.inner.policy);
                (CodeUpdate { write, also: None }, decision)
            })
            .await?;
        match decision {
            IssueDecision::Issued => {}
            IssueDecision::RateLimited { retry_after } => {
                return Err(GateError::RateLimited { retry_after });
            }
            IssueDecision::Locked { retry_after } => {
                audit::locked_out(
                    &tenant.id,
                    &request.identifier,
                    "send",
                    retry_after,
                    request.client_ip,
                );
                return Err(GateError::TooManyAttempts { retry_after });
            }
        }
        // No branch on `deliver` here: the same rendering, allocations and queue op for
        // both, so the answer's timing cannot tell a known account from an unknown one.
        // Emails only: a link would push an SMS past one segment, and carriers filter
        // texts that carry links. Built for decoys too, so both paths do the same work.
        let channel = request.identifier.channel();
        let link = link_prefix
            .filter(|_| channel == Channel::Email)
            .map(|prefix| Link::new(prefix, &code));
        let ttl = self.inner.policy.ttl;
        let content = self.inner.templates.render(
            channel,
            request.locale,
            &TemplateContext {
                code: code.expose(),
                link: link.as_ref().map(Link::expose),
                minutes: ttl.as_secs().div_ceil(60),
                tenant: &tenant.id,
                tenant_name: tenant.display_name.as_deref(),
            },
        );
        // Written before the message takes the identifier; known and unknown accounts
        // get the same line.
        audit::code_sent(&tenant.id, &request.identifier, request.client_ip);
        slot.queue(
            Message {
                to: request.identifier,
                code,
                link,
                tenant: tenant.id.clone(),
                expires_in: ttl,
                content,
            },
            deliver,
        );
        // Counted only once handed to the sender: a refused send, or a code to an
        // unknown account that the outbox drops unsent, costs nothing and proves nothing.
        // The same work either way, the count only kept for a delivery, for the timing.
        if let Some(check) = &sms_check {
            guard.delivered(check, deliver);
        }
        Ok(SendOutcome {
            account_exists: tenant.reveal_account.then_some(exists),
        })
    }

    /// Checks a code and, when it is right, consumes it and returns the account it proves.
    /// What that buys (a session, a one-time token, an assertion) is the caller's choice.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use otpgate::delivery::{DeliveryError, Message, Sender, Senders};
    /// # struct Inbox(tokio::sync::mpsc::UnboundedSender<Message>);
    /// # #[async_trait::async_trait]
    /// # impl Sender for Inbox {
    /// #     async fn send(&self, message: &Message) -> Result<(), DeliveryError> {
    /// #         self.0.send(message.clone()).map_err(|e| DeliveryError::Failed(e.to_string()))
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (inbox, mut messages) = tokio::sync::mpsc::unbounded_channel();
    /// # let inbox: Arc<dyn Sender> = Arc::new(Inbox(inbox));
    /// # let senders = Senders { email: Some(inbox.clone()), sms: Some(inbox), ..Senders::default() };
    /// # let gate = otpgate::Gate::builder().senders(senders).build()?;
    /// use otpgate::identifier::Identifier;
    /// use otpgate::{GateError, SendRequest, VerifyRequest};
    ///
    /// let bob = Identifier::phone("+14155552671")?;
    /// gate.send(SendRequest { tenant: None, identifier: bob.clone(), client_ip: None, locale: None })
    ///     .await?;
    /// let code = messages.recv().await.expect("a message").code;
    ///
    /// let attempt = |code| VerifyRequest { tenant: None, identifier: bob.clone(), code, client_ip: None };
    /// let subject = gate.verify(attempt(code.expose())).await?;
    /// assert_eq!(subject.phone.as_deref(), Some("+14155552671"));
    /// // A code works once.
    /// assert!(matches!(gate.verify(attempt(code.expose())).await, Err(GateError::InvalidCode)));
    /// # Ok(()) }
    /// ```
    pub async fn verify(&self, request: VerifyRequest<'_>) -> Result<Subject, GateError> {
        let tenant = self.tenant(request.tenant, request.identifier.channel())?;
        let code = self.inner.policy.format.normalize(request.code);
        if code.expose().is_empty() || code.expose().len() > MAX_TYPED_CODE {
            audit::code_failed(
                &tenant.id,
                Some(&request.identifier),
                FailReason::Malformed,
                request.client_ip,
            );
            return Err(GateError::InvalidRequest(
                "code must be a non-empty string of at most 64 characters".into(),
            ));
        }
        let key = keys::code_record(&tenant.id, &request.identifier);
        let opening = self
            .open(
                "verify",
                request.client_ip,
                self.inner.ip_limits.verifies,
                &tenant.id,
                &request.identifier,
                &key,
                &[],
            )
            .await?;
        let presented = self.inner.hasher.hash(&key, &code);
        let now = self.inner.clock.now();
        // A first sign-in creates its account with the write that consumes the code, in
        // the same round trip. Asked only for an accepted code: the right code proves
        // the destination, even when a concurrent verify consumes it first.
        let created_key = keys::created_account(&tenant.id, &request.identifier);
        // Whatever the directory says (it is asked only for an accepted code): an account
        // it lists is taken from it, so a record beside it changes nothing.
        let creates = tenant.auto_create && matches!(&opening.created, Ok(None));
        let creation = creates.then(|| SetValue {
            key: &created_key,
            // An auto-created account's id is its identifier.
            value: request.identifier.as_str(),
            ttl: AUTO_CREATED_ACCOUNT_TTL,
            mode: SetMode::IfAbsent,
        });
        let decision = self
            .decide(&key, opening.record, VerifyDecision::Rejected, |current| {
                let (write, decision) = decide_verify(current, presented, now, &self.inner.policy);
                let also = creation.filter(|_| decision == VerifyDecision::Accepted);
                (CodeUpdate { write, also }, decision)
            })
            .await?;
        match decision {
            VerifyDecision::Accepted => {}
            VerifyDecision::Rejected => {
                audit::code_failed(
                    &tenant.id,
                    Some(&request.identifier),
                    FailReason::Rejected,
                    request.client_ip,
                );
                return Err(GateError::InvalidCode);
            }
            VerifyDecision::Throttled { retry_after } => {
                audit::locked_out(
                    &tenant.id,
                    &request.identifier,
                    "verify",
                    retry_after,
                    request.client_ip,
                );
                return Err(GateError::TooManyAttempts { retry_after });
            }
        }
        // The directory only now: a wrong code never makes the gate ask the app.
        let listed = self
            .inner
            .directory
            .find(&tenant.id, &request.identifier)
            .await;
        let account = account_of(listed, opening.created, &request.identifier)?;
        let subject_id = match account {
            Some(account) => account.subject,
            // Created by the write that consumed the code.
            None if tenant.auto_create => request.identifier.as_str().to_owned(),
            // Codes for unknown identities are never delivered; a match is a lucky guess.
            // Logged like any wrong code: the log does not say who has an account.
            None => {
                audit::code_failed(
                    &tenant.id,
                    Some(&request.identifier),
                    FailReason::Rejected,
                    request.client_ip,
                );
                return Err(GateError::InvalidCode);
            }
        };
        self.record_verified(&request.identifier);
        audit::code_verified(
            &tenant.id,
            &subject_id,
            &request.identifier,
            request.client_ip,
        );
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
        let created_key = keys::created_account(tenant, identifier);
        let (listed, created) = tokio::join!(
            self.inner.directory.find(tenant, identifier),
            self.inner.store.get_value(&created_key)
        );
        account_of(listed, created, identifier)
    }
}

/// The account of `identifier` from the directory's answer and the id of the account the
/// gate auto-created, if any: the directory's first.
fn account_of(
    listed: Result<Option<Account>, DirectoryError>,
    created: Result<Option<String>, StoreError>,
    identifier: &Identifier,
) -> Result<Option<Account>, GateError> {
    let listed = listed.map_err(GateError::DirectoryUnavailable)?;
    let created = created.map_err(GateError::StoreUnavailable)?;
    if let Some(account) = listed {
        return Ok(Some(account));
    }
    Ok(created.map(|subject| Account {
        subject,
        email: matches!(identifier, Identifier::Email(_)).then(|| identifier.as_str().to_owned()),
        phone: matches!(identifier, Identifier::Phone(_)).then(|| identifier.as_str().to_owned()),
    }))
}
