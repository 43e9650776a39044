//! The I/O-free core: codes, keyed hashes, policy and the decisions on a code record.
//!
//! Nothing here performs I/O or reads the clock; time comes in as a [`Timestamp`] from a
//! [`Clock`], so every rule can be tested by moving a [`ManualClock`].

mod clock;
mod code;
mod policy;
mod state;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use code::{
    Alphabet, Code, CodeFormat, CodeHash, CodeHasher, InvalidCodeLength, MAX_CODE_LENGTH,
    MIN_CODE_LENGTH, SecretTooShort, ServerSecret,
};
pub use policy::{Backoff, CodePolicy, InvalidRate, Rate};
pub use state::{
    Challenge, CodeState, IssueDecision, VerifyDecision, Write, decide_issue, decide_verify,
};
