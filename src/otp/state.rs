//! The per-code record and the pure decisions made on it.
//!
//! Every store applies these functions inside its own atomic read-modify-write, so the
//! rules live here once and hold on every backend.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::clock::Timestamp;
use super::code::CodeHash;
use super::policy::CodePolicy;

/// The live code of a destination.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Challenge {
    /// Keyed hash of the code; the plaintext is never stored.
    pub code_hash: CodeHash,
    /// When the code stops being accepted.
    pub expires_at: Timestamp,
    /// Wrong guesses so far; carried over when a resend replaces the code.
    pub attempts: u32,
}

/// What the gate remembers about one destination (one email or phone within a tenant).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CodeState {
    /// The code that may be verified, if any.
    pub challenge: Option<Challenge>,
    /// When a code was last sent (for the resend cooldown).
    pub last_sent_at: Option<Timestamp>,
    /// Start of the current send-rate window.
    pub send_window_start: Option<Timestamp>,
    /// Sends within the current window.
    pub sends_in_window: u32,
    /// Failed verifications in a row, across all codes; reset only by a success.
    pub consecutive_failures: u32,
    /// When the last failure happened.
    pub last_failure_at: Option<Timestamp>,
}

/// What a store should do with a record after a decision.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// Leave the record as it was.
    Keep,
    /// Store this record, to be kept for `ttl`.
    Put {
        /// The new record.
        state: CodeState,
        /// How long the store must keep it.
        ttl: Duration,
    },
    /// Remove the record.
    Delete,
}

/// The answer to a send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueDecision {
    /// The new code is stored and may be delivered.
    Issued,
    /// Too soon after the last send, or too many sends in the window.
    RateLimited {
        /// When a send may succeed again.
        retry_after: Duration,
    },
    /// Too many wrong guesses: no new code until this passes.
    Locked {
        /// When a send may succeed again.
        retry_after: Duration,
    },
}

/// The answer to a verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyDecision {
    /// The code was right and is now consumed.
    Accepted,
    /// Wrong, expired, used, unknown, or the attempts are spent: callers must not
    /// tell these apart.
    Rejected,
    /// The destination must wait before trying again (back-off or spent failure budget).
    Throttled {
        /// When a verify may be tried again.
        retry_after: Duration,
    },
}

impl CodeState {
    fn live_challenge(&self, now: Timestamp) -> Option<&Challenge> {
        self.challenge.as_ref().filter(|c| c.expires_at > now)
    }

    fn failures_remembered(&self, now: Timestamp, policy: &CodePolicy) -> u32 {
        match self.last_failure_at {
            Some(at) if at.plus(policy.failure_memory) > now => self.consecutive_failures,
            _ => 0,
        }
    }

    /// How long any verify or send must wait because of past failures.
    fn failure_wait(&self, now: Timestamp, policy: &CodePolicy) -> Option<Duration> {
        let failures = self.failures_remembered(now, policy);
        let last = self.last_failure_at?;
        let until = if failures >= policy.failure_budget {
            // Budget spent: locked until the failures are forgotten.
            last.plus(policy.failure_memory)
        } else {
            last.plus(policy.backoff.delay(failures))
        };
        (until > now).then(|| now.until(until))
    }

    /// Until when the store must keep this record so that no rule is forgotten early.
    fn keep_until(&self, policy: &CodePolicy) -> Timestamp {
        let mut until = Timestamp(0);
        if let Some(challenge) = &self.challenge {
            until = until.max(challenge.expires_at);
        }
        if let Some(sent) = self.last_sent_at {
            until = until.max(sent.plus(policy.resend_cooldown));
        }
        if let Some(start) = self.send_window_start {
            until = until.max(start.plus(policy.sends_per_identifier.per));
        }
        if self.consecutive_failures > 0
            && let Some(at) = self.last_failure_at
        {
            until = until.max(at.plus(policy.failure_memory));
        }
        until
    }

    fn into_write(self, now: Timestamp, policy: &CodePolicy) -> Write {
        let until = self.keep_until(policy);
        if until <= now {
            Write::Delete
        } else {
            Write::Put {
                state: self,
                ttl: now.until(until),
            }
        }
    }
}

/// Decides a send: whether `new_code` may replace the destination's code now.
pub fn decide_issue(
    current: Option<CodeState>,
    new_code: CodeHash,
    now: Timestamp,
    policy: &CodePolicy,
) -> (Write, IssueDecision) {
    let mut state = current.unwrap_or_default();

    if let Some(retry_after) = state.failure_wait(now, policy) {
        // Sending fresh codes to a destination under back-off would hand out guesses.
        return (Write::Keep, IssueDecision::Locked { retry_after });
    }
    if let Some(live) = state.live_challenge(now)
        && live.attempts >= policy.max_attempts
    {
        // A resend never resets the attempt count: the destination waits out the code.
        let retry_after = now.until(live.expires_at);
        return (Write::Keep, IssueDecision::Locked { retry_after });
    }
    if let Some(sent) = state.last_sent_at {
        let ready = sent.plus(policy.resend_cooldown);
        if ready > now {
            let retry_after = now.until(ready);
            return (Write::Keep, IssueDecision::RateLimited { retry_after });
        }
    }
    let window = policy.sends_per_identifier;
    match state.send_window_start {
        Some(start) if start.plus(window.per) > now => {
            if state.sends_in_window >= window.count {
                let retry_after = now.until(start.plus(window.per));
                return (Write::Keep, IssueDecision::RateLimited { retry_after });
            }
            state.sends_in_window += 1;
        }
        _ => {
            state.send_window_start = Some(now);
            state.sends_in_window = 1;
        }
    }

    // Wrong guesses against the code being replaced still count against the new one.
    let attempts = state.live_challenge(now).map_or(0, |c| c.attempts);
    state.challenge = Some(Challenge {
        code_hash: new_code,
        expires_at: now.plus(policy.ttl),
        attempts,
    });
    state.last_sent_at = Some(now);
    (state.into_write(now, policy), IssueDecision::Issued)
}

/// Decides a verify of the code whose hash is `presented`.
pub fn decide_verify(
    current: Option<CodeState>,
    presented: CodeHash,
    now: Timestamp,
    policy: &CodePolicy,
) -> (Write, VerifyDecision) {
    let mut state = current.unwrap_or_default();

    if let Some(retry_after) = state.failure_wait(now, policy) {
        // A throttled try is refused before the code is looked at, so it costs no attempt.
        return (Write::Keep, VerifyDecision::Throttled { retry_after });
    }

    let accepted = match state.live_challenge(now) {
        // Attempts spent: even the right code fails from here on.
        Some(live) if live.attempts >= policy.max_attempts => false,
        Some(live) => live.code_hash.matches(&presented),
        None => false,
    };

    if accepted {
        // Single use: the code goes, and the failure run ends.
        state.challenge = None;
        state.consecutive_failures = 0;
        state.last_failure_at = None;
        return (state.into_write(now, policy), VerifyDecision::Accepted);
    }

    if let Some(challenge) = state.challenge.as_mut().filter(|c| c.expires_at > now) {
        challenge.attempts = challenge.attempts.saturating_add(1);
    }
    state.consecutive_failures = state.failures_remembered(now, policy).saturating_add(1);
    state.last_failure_at = Some(now);
    (state.into_write(now, policy), VerifyDecision::Rejected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otp::code::{CodeFormat, CodeHasher, ServerSecret};

    struct World {
        policy: CodePolicy,
        hasher: CodeHasher,
        state: Option<CodeState>,
        now: Timestamp,
    }

    impl World {
        fn new() -> World {
            World {
                policy: CodePolicy::default(),
                hasher: CodeHasher::new(&ServerSecret::new(vec![9; 32]).unwrap()),
                state: None,
                now: Timestamp(1_700_000_000_000),
            }
        }
        fn hash(&self, code: &str) -> CodeHash {
            self.hasher
                .hash("t/id", &CodeFormat::default().normalize(code))
        }
        fn apply(&mut self, write: Write) {
            match write {
                Write::Keep => {}
                Write::Put { state, ttl } => {
                    assert!(!ttl.is_zero());
                    self.state = Some(state);
                }
                Write::Delete => self.state = None,
            }
        }
        fn send(&mut self, code: &str) -> IssueDecision {
            let (write, decision) =
                decide_issue(self.state.clone(), self.hash(code), self.now, &self.policy);
            self.apply(write);
            decision
        }
        fn verify(&mut self, code: &str) -> VerifyDecision {
            let (write, decision) =
                decide_verify(self.state.clone(), self.hash(code), self.now, &self.policy);
            self.apply(write);
            decision
        }
        fn wait(&mut self, d: Duration) {
            self.now = self.now.plus(d);
        }
    }

    const COOLDOWN: Duration = Duration::from_secs(30);

    #[test]
    fn right_code_is_accepted_once() {
        let mut w = World::new();
        assert_eq!(w.send("111111"), IssueDecision::Issued);
        assert_eq!(w.verify("111111"), VerifyDecision::Accepted);
        assert_eq!(w.verify("111111"), VerifyDecision::Rejected);
    }

    #[test]
    fn expired_code_is_rejected() {
        let mut w = World::new();
        w.send("111111");
        w.wait(Duration::from_secs(5 * 60));
        assert_eq!(w.verify("111111"), VerifyDecision::Rejected);
    }

    #[test]
    fn attempt_cap_holds_even_for_the_right_code() {
        let mut w = World::new();
        w.send("111111");
        for _ in 0..5 {
            assert_eq!(w.verify("000000"), VerifyDecision::Rejected);
            w.wait(Duration::from_secs(60));
        }
        w.now = w.now.plus(Duration::ZERO);
        // The back-off from five failures is 1s; waited 60s already.
        assert_eq!(w.verify("111111"), VerifyDecision::Rejected);
    }

    #[test]
    fn resend_replaces_the_code_but_keeps_the_attempts() {
        let mut w = World::new();
        w.send("111111");
        for _ in 0..4 {
            assert_eq!(w.verify("000000"), VerifyDecision::Rejected);
        }
        w.wait(COOLDOWN);
        assert_eq!(w.send("222222"), IssueDecision::Issued);
        assert_eq!(
            w.state
                .as_ref()
                .unwrap()
                .challenge
                .as_ref()
                .unwrap()
                .attempts,
            4
        );
        assert_eq!(
            w.verify("111111"),
            VerifyDecision::Rejected,
            "old code is gone"
        );
        // Five wrong guesses now: the cap is reached and a further resend is refused.
        w.wait(Duration::from_secs(2));
        assert!(matches!(w.send("333333"), IssueDecision::Locked { .. }));
        assert_eq!(w.verify("222222"), VerifyDecision::Rejected);
    }

    #[test]
    fn cooldown_and_window_limit_sends() {
        let mut w = World::new();
        assert_eq!(w.send("1"), IssueDecision::Issued);
        assert_eq!(
            w.send("2"),
            IssueDecision::RateLimited {
                retry_after: COOLDOWN
            }
        );
        for _ in 0..4 {
            w.wait(COOLDOWN);
            assert_eq!(w.send("3"), IssueDecision::Issued);
        }
        w.wait(COOLDOWN);
        // Five sends in the 10-minute window: the sixth waits for the window to end.
        let started = Duration::from_secs(5 * 30);
        assert_eq!(
            w.send("4"),
            IssueDecision::RateLimited {
                retry_after: Duration::from_secs(600) - started
            }
        );
        w.wait(Duration::from_secs(600));
        assert_eq!(w.send("5"), IssueDecision::Issued);
    }

    #[test]
    fn failure_budget_spans_codes_and_grows_the_backoff() {
        let mut w = World::new();
        w.policy.failure_budget = 12;
        let mut failures = 0;
        let mut code = 100000;
        while failures < 12 {
            // A fresh code each round: resends never reset the failure run.
            w.wait(Duration::from_secs(15 * 60));
            code += 1;
            assert_eq!(w.send(&code.to_string()), IssueDecision::Issued);
            for round in 0..3 {
                if failures == 12 {
                    break;
                }
                let wait = w.policy.backoff.delay(failures);
                // The first try of a round comes 15 minutes after the last failure.
                if round > 0 && !wait.is_zero() {
                    // Too early: throttled, and it costs nothing.
                    assert!(matches!(
                        w.verify("000000"),
                        VerifyDecision::Throttled { .. }
                    ));
                    w.wait(wait);
                }
                assert_eq!(w.verify("000000"), VerifyDecision::Rejected);
                failures += 1;
            }
        }
        assert_eq!(w.state.as_ref().unwrap().consecutive_failures, 12);
        // Budget spent: locked for the failure memory, even with the right code.
        w.wait(Duration::from_secs(3600));
        assert!(matches!(
            w.verify(&code.to_string()),
            VerifyDecision::Throttled { .. }
        ));
        assert!(matches!(w.send("999999"), IssueDecision::Locked { .. }));
        w.wait(Duration::from_secs(24 * 3600));
        assert_eq!(w.send("999999"), IssueDecision::Issued);
        assert_eq!(w.verify("999999"), VerifyDecision::Accepted);
        assert_eq!(w.state.as_ref().map_or(0, |s| s.consecutive_failures), 0);
    }

    #[test]
    fn a_success_ends_the_failure_run() {
        let mut w = World::new();
        w.send("111111");
        w.verify("000000");
        w.verify("000001");
        assert_eq!(w.verify("111111"), VerifyDecision::Accepted);
        let state = w.state.clone().unwrap();
        assert_eq!(state.consecutive_failures, 0);
        assert!(state.challenge.is_none());
    }

    #[test]
    fn records_are_deleted_when_nothing_is_left_to_remember() {
        let mut w = World::new();
        w.send("111111");
        w.wait(Duration::from_secs(11 * 60));
        // Accepted codes leave a record only as long as cooldown or window needs it.
        let (write, _) = decide_verify(w.state.clone(), w.hash("111111"), w.now, &w.policy);
        assert!(
            matches!(write, Write::Put { .. }),
            "the failure must be remembered"
        );
        let mut fresh = World::new();
        fresh.send("111111");
        fresh.wait(Duration::from_secs(601));
        fresh.state.as_mut().unwrap().challenge = None;
        assert_eq!(
            fresh
                .state
                .clone()
                .unwrap()
                .into_write(fresh.now, &fresh.policy),
            Write::Delete
        );
    }
}
