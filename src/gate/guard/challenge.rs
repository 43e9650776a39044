//! Proof of work on sends, in ALTCHA's open protocol (<https://altcha.org/docs>), so its
//! widget or any client of the protocol can answer.
//!
//! The gate issues `{algorithm, challenge, maxnumber, salt, signature}`: `challenge` is
//! hex(SHA-256(salt + number)) for a random `number` in `[0, maxnumber]`, `signature`
//! hex(HMAC-SHA256(key, challenge)), and the salt carries its expiry as
//! `<random hex>?expires=<unix seconds>&`. The client tries numbers until the hash
//! matches and sends back base64(JSON `{algorithm, challenge, number, salt, signature}`).
//! The gate holds no state per challenge it issues; only a solved one it accepts is
//! written, so that it is accepted once.

use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use serde::{Deserialize, Serialize};

use crate::store::{SetMode, keys};
use crate::util::hex;

use super::super::{Gate, GateError};

/// The only algorithm issued and accepted.
const ALGORITHM: &str = "SHA-256";

/// Random bytes in a salt: enough that no two challenges share one.
const SALT_BYTES: usize = 12;

/// A payload longer than this is refused before it is decoded: a real one is ~300 bytes.
const MAX_PAYLOAD: usize = 2048;

/// When a tenant's sends need a solved challenge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChallengeMode {
    /// Never (the default).
    #[default]
    Never,
    /// On every send.
    Always,
    /// While the SMS guard has refused sends lately (for one cool-down after a trip, as any
    /// gate sharing the store saw it).
    UnderAttack,
}

impl ChallengeMode {
    /// The mode a configuration names: `never` or `always`.
    pub fn parse(name: &str) -> Option<ChallengeMode> {
        match name {
            "never" => Some(ChallengeMode::Never),
            "always" => Some(ChallengeMode::Always),
            "under_attack" => Some(ChallengeMode::UnderAttack),
            _ => None,
        }
    }
}

/// A tenant's challenge settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChallengePolicy {
    /// When a send needs one.
    pub mode: ChallengeMode,
    /// The largest number a challenge hides: a client tries half of them on average
    /// (100,000 is a fraction of a second in a browser, and costs a pumping bot as much
    /// per message).
    pub max_number: u64,
    /// How long an issued challenge can be answered.
    pub expires_in: Duration,
}

impl ChallengePolicy {
    /// The default difficulty.
    pub const DEFAULT_MAX_NUMBER: u64 = 100_000;
    /// The default lifetime of a challenge.
    pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(5 * 60);

    /// Whether sends need a solved challenge, with the SMS guard `under_attack` or not.
    pub fn is_required(&self, under_attack: bool) -> bool {
        match self.mode {
            ChallengeMode::Never => false,
            ChallengeMode::Always => true,
            ChallengeMode::UnderAttack => under_attack,
        }
    }
}

impl Default for ChallengePolicy {
    fn default() -> Self {
        ChallengePolicy {
            mode: ChallengeMode::Never,
            max_number: ChallengePolicy::DEFAULT_MAX_NUMBER,
            expires_in: ChallengePolicy::DEFAULT_EXPIRY,
        }
    }
}

/// An issued challenge, serialized as ALTCHA's widget reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// Always `SHA-256`.
    pub algorithm: String,
    /// hex(SHA-256(salt + number)).
    pub challenge: String,
    /// The largest number to try.
    pub maxnumber: u64,
    /// Random hex, then `?expires=<unix seconds>&`.
    pub salt: String,
    /// hex(HMAC-SHA256(key, challenge)).
    pub signature: String,
}

/// What a client sends back, base64-encoded JSON; other fields (`took`) are ignored.
#[derive(Deserialize)]
struct Payload {
    algorithm: String,
    challenge: String,
    number: u64,
    salt: String,
    signature: String,
}

/// How a send's challenge is judged.
#[derive(Clone, Copy, Debug)]
pub(in crate::gate) enum ChallengeCheck<'a> {
    /// Against the tenant's policy, with this payload if the client sent one.
    Presented(Option<&'a str>),
    /// Not at all: the destination is the account's own, known to the gate, never one the
    /// requester picked, and pumping needs destinations the attacker picks.
    Exempt,
}

impl Gate {
    /// A fresh challenge for `tenant` (the default one when `None`), with its
    /// difficulty and lifetime; issued whether or not the tenant requires one.
    pub fn issue_challenge(&self, tenant: Option<&str>) -> Result<Challenge, GateError> {
        let policy = self.challenge_policy(tenant)?;
        let expires = self.inner.clock.now().plus(policy.expires_in).as_secs();
        let mut random = [0u8; SALT_BYTES];
        aws_lc_rs::rand::fill(&mut random)
            .map_err(|_| GateError::Internal("system random source failed".into()))?;
        // The trailing `&` ends the parameters, so digits cannot move between the number
        // and the expiry without changing the hash (ALTCHA's fix for salt splicing).
        let salt = format!("{}?expires={expires}&", hex(&random));
        let number = rand::random_range(0..=policy.max_number);
        let challenge = hash_of(&salt, number);
        let signature = hex(hmac::sign(&self.challenge_key(), challenge.as_bytes()).as_ref());
        Ok(Challenge {
            algorithm: ALGORITHM.to_owned(),
            challenge,
            maxnumber: policy.max_number,
            salt,
            signature,
        })
    }

    /// The challenge settings of `tenant` (the default one when `None`).
    pub fn challenge_policy(&self, tenant: Option<&str>) -> Result<ChallengePolicy, GateError> {
        self.inner
            .tenants
            .get(tenant.unwrap_or(&self.inner.default_tenant))
            .map(|tenant| tenant.challenge)
            .ok_or(GateError::UnknownTenant)
    }

    /// Judges a send's challenge against `policy`: `Ok` when none is needed or a valid
    /// one was solved, which is then spent.
    pub(in crate::gate) async fn admit_challenge(
        &self,
        policy: &ChallengePolicy,
        check: ChallengeCheck<'_>,
    ) -> Result<(), GateError> {
        let under_attack = policy.mode == ChallengeMode::UnderAttack && self.under_attack().await;
        match check {
            ChallengeCheck::Exempt => Ok(()),
            ChallengeCheck::Presented(_) if !policy.is_required(under_attack) => Ok(()),
            ChallengeCheck::Presented(None) => Err(GateError::ChallengeRequired),
            ChallengeCheck::Presented(Some(payload)) => self.spend_challenge(payload).await,
        }
    }

    /// Verifies a solved challenge and marks it spent: signature, hash, expiry on the
    /// gate's clock, then single use through the store.
    pub async fn spend_challenge(&self, payload: &str) -> Result<(), GateError> {
        let payload = decode(payload).ok_or(GateError::ChallengeInvalid)?;
        if payload.algorithm != ALGORITHM {
            return Err(GateError::ChallengeInvalid);
        }
        let signature = unhex(&payload.signature).ok_or(GateError::ChallengeInvalid)?;
        // Constant-time: timing must not tell how much of a forged signature was right.
        hmac::verify(
            &self.challenge_key(),
            payload.challenge.as_bytes(),
            &signature,
        )
        .map_err(|_| GateError::ChallengeInvalid)?;
        // Public values both: the signature already vouches for the challenge.
        if hash_of(&payload.salt, payload.number) != payload.challenge {
            return Err(GateError::ChallengeInvalid);
        }
        let expires = expiry_of(&payload.salt).ok_or(GateError::ChallengeInvalid)?;
        let now = self.inner.clock.now();
        let left = Duration::from_secs(expires.saturating_sub(now.as_secs()));
        if left.is_zero() {
            return Err(GateError::ChallengeInvalid);
        }
        // Kept until the challenge expires, after which its expiry refuses it anyway; one
        // second more covers the rounding of the expiry to whole seconds.
        let first = self
            .inner
            .store
            .set_value(
                &keys::challenge_used(&payload.signature.to_ascii_lowercase()),
                "1",
                left + Duration::from_secs(1),
                SetMode::IfAbsent,
            )
            .await
            .map_err(GateError::StoreUnavailable)?;
        if !first {
            return Err(GateError::ChallengeInvalid);
        }
        Ok(())
    }

    fn challenge_key(&self) -> hmac::Key {
        self.inner.hasher.subkey("otpgate challenge")
    }
}

/// Standard base64 with or without padding, as browsers' `btoa` and other clients write it.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn decode(payload: &str) -> Option<Payload> {
    // Bounded before decoding: the payload is the client's, and sent before any limit.
    if payload.len() > MAX_PAYLOAD {
        return None;
    }
    let json = LENIENT_BASE64
        .decode(payload.trim())
        .or_else(|_| general_purpose::URL_SAFE_NO_PAD.decode(payload.trim()))
        .ok()?;
    serde_json::from_slice(&json).ok()
}

/// hex(SHA-256(salt + number)), the number in decimal.
fn hash_of(salt: &str, number: u64) -> String {
    hex(&crate::util::sha256(format!("{salt}{number}").as_bytes()))
}

/// The `expires` of a salt `<hex>?expires=<secs>&`. Only a salt whose parameters end in
/// `&` is read, so that no digit of the number can pass for one of the expiry.
fn expiry_of(salt: &str) -> Option<u64> {
    let (_, params) = salt.split_once('?')?;
    let params = params.strip_suffix('&')?;
    let mut expires = None;
    for (name, value) in form_urlencoded::parse(params.as_bytes()) {
        if name == "expires" {
            // Twice is ambiguous; refused rather than guessed at.
            if expires.is_some() {
                return None;
            }
            expires = Some(value.parse::<u64>().ok()?);
        }
    }
    expires
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// Solves `challenge` by brute force, as a client does; `None` when no number up to
/// `maxnumber` matches. For tests and tools: the gate never solves its own.
pub fn solve(challenge: &Challenge) -> Option<String> {
    let number =
        (0..=challenge.maxnumber).find(|n| hash_of(&challenge.salt, *n) == challenge.challenge)?;
    Some(payload_for(challenge, number))
}

/// The payload a client sends for `challenge` answered with `number`.
pub fn payload_for(challenge: &Challenge, number: u64) -> String {
    let json = serde_json::json!({
        "algorithm": challenge.algorithm,
        "challenge": challenge.challenge,
        "number": number,
        "salt": challenge.salt,
        "signature": challenge.signature,
    });
    general_purpose::STANDARD.encode(json.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    use super::{ChallengeMode, ChallengePolicy, hash_of, payload_for, solve};
    use crate::gate::{Gate, GateError, Tenant};
    use crate::otp::ManualClock;

    fn new_gate(max_number: u64) -> (Gate, ManualClock) {
        let clock = ManualClock::starting_now();
        let gate = Gate::builder()
            .tenant(Tenant {
                challenge: ChallengePolicy {
                    mode: ChallengeMode::Always,
                    max_number,
                    ..ChallengePolicy::default()
                },
                ..Tenant::new("default")
            })
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap();
        (gate, clock)
    }

    fn invalid(result: Result<(), GateError>) -> bool {
        matches!(result, Err(GateError::ChallengeInvalid))
    }

    #[tokio::test]
    async fn a_solved_challenge_is_accepted_once() {
        let (gate, _) = new_gate(1000);
        let challenge = gate.issue_challenge(None).unwrap();
        assert_eq!(challenge.algorithm, "SHA-256");
        assert_eq!(challenge.maxnumber, 1000);
        assert!(challenge.salt.contains("?expires=") && challenge.salt.ends_with('&'));
        let payload = solve(&challenge).expect("solvable");
        gate.spend_challenge(&payload).await.unwrap();
        assert!(invalid(gate.spend_challenge(&payload).await), "reused");
    }

    #[tokio::test]
    async fn a_wrong_number_is_refused() {
        let (gate, _) = new_gate(1000);
        let challenge = gate.issue_challenge(None).unwrap();
        let right = (0..=1000)
            .find(|n| hash_of(&challenge.salt, *n) == challenge.challenge)
            .unwrap();
        let wrong = payload_for(&challenge, right + 1);
        assert!(invalid(gate.spend_challenge(&wrong).await));
        // The wrong answer spent nothing: the right one still goes through.
        gate.spend_challenge(&payload_for(&challenge, right))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_tampered_signature_or_another_gates_challenge_is_refused() {
        let (gate, _) = new_gate(1000);
        let mut challenge = gate.issue_challenge(None).unwrap();
        let solved = solve(&challenge).unwrap();
        let last = challenge.signature.pop().unwrap();
        challenge
            .signature
            .push(if last == '0' { '1' } else { '0' });
        let number = (0..=1000)
            .find(|n| hash_of(&challenge.salt, *n) == challenge.challenge)
            .unwrap();
        assert!(invalid(
            gate.spend_challenge(&payload_for(&challenge, number)).await
        ));
        // Another gate, another random secret, another key.
        let (other, _) = new_gate(1000);
        assert!(invalid(other.spend_challenge(&solved).await));
    }

    #[tokio::test]
    async fn an_expired_challenge_is_refused() {
        let (gate, clock) = new_gate(1000);
        let challenge = gate.issue_challenge(None).unwrap();
        let payload = solve(&challenge).unwrap();
        clock.advance(ChallengePolicy::DEFAULT_EXPIRY + Duration::from_secs(1));
        assert!(invalid(gate.spend_challenge(&payload).await));
    }

    #[tokio::test]
    async fn a_spliced_expiry_is_refused() {
        // Digits moved from the number into the expiry keep the hash, and would push the
        // expiry out tenfold per digit, were the parameters not ended by `&`.
        let (gate, _) = new_gate(1000);
        let challenge = gate.issue_challenge(None).unwrap();
        let bare = challenge.salt.trim_end_matches('&').to_owned();
        let number = (0..=1000).find(|n| hash_of(&challenge.salt, *n) == challenge.challenge);
        let number = number.unwrap().to_string();
        let spliced = serde_json::json!({
            "algorithm": "SHA-256",
            "challenge": challenge.challenge,
            "number": 0,
            "salt": format!("{bare}&{}", &number[..number.len() - 1]),
            "signature": challenge.signature,
        });
        let spliced = STANDARD.encode(spliced.to_string());
        assert!(invalid(gate.spend_challenge(&spliced).await));
    }

    #[tokio::test]
    async fn malformed_payloads_are_refused() {
        let (gate, _) = new_gate(1000);
        let challenge = gate.issue_challenge(None).unwrap();
        let other_algorithm = serde_json::json!({
            "algorithm": "SHA-1", "challenge": challenge.challenge, "number": 1,
            "salt": challenge.salt, "signature": challenge.signature,
        });
        for payload in [
            String::new(),
            "not base64 !!".to_owned(),
            STANDARD.encode("not json"),
            STANDARD.encode("{\"algorithm\":\"SHA-256\"}"),
            STANDARD.encode(
                "{\"algorithm\":\"SHA-256\",\"challenge\":\"ab\",\"number\":-1,\"salt\":\"x\",\"signature\":\"zz\"}",
            ),
            STANDARD.encode(other_algorithm.to_string()),
            "A".repeat(4096),
        ] {
            assert!(invalid(gate.spend_challenge(&payload).await), "{payload}");
        }
    }

    #[tokio::test]
    async fn the_policy_decides_whether_one_is_needed() {
        use super::ChallengeCheck;
        let (gate, _) = new_gate(1000);
        let always = gate.challenge_policy(None).unwrap();
        assert!(matches!(
            gate.admit_challenge(&always, ChallengeCheck::Presented(None))
                .await,
            Err(GateError::ChallengeRequired)
        ));
        gate.admit_challenge(&always, ChallengeCheck::Exempt)
            .await
            .unwrap();
        let never = ChallengePolicy::default();
        gate.admit_challenge(&never, ChallengeCheck::Presented(Some("junk")))
            .await
            .unwrap();
        assert!(matches!(
            gate.issue_challenge(Some("nobody")),
            Err(GateError::UnknownTenant)
        ));
    }
}
