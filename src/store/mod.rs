//! Where code records and rate counters live.
//!
//! A [`Store`] offers two atomic operations and nothing else:
//! [`Store::update_code_state`], a read-modify-write of one code record, and
//! [`Store::hit`], a fixed-window counter increment. The decisions themselves are made by
//! the pure functions in [`crate::otp`]; a backend only has to make the read, the
//! decision and the write one indivisible step. [`conformance`] checks that it does.

use std::time::Duration;

use async_trait::async_trait;

use crate::otp::{CodeState, Timestamp, Write};

pub mod conformance;
pub mod keys;
mod measured;
mod memory;
#[cfg(feature = "redis")]
mod redis;

#[cfg(feature = "redis")]
pub use self::redis::{
    InvalidRedisUrl, RedisClientCert, RedisSettings, RedisStore, RedisTls, RedisTopology,
};
pub use measured::MeasuredStore;
pub use memory::MemoryStore;

/// A store failure: the backend could not be reached or answered nonsense.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend is unreachable or failed.
    #[error("store backend unavailable: {0}")]
    Unavailable(String),
    /// A record could not be decoded.
    #[error("store record is corrupt: {0}")]
    Corrupt(String),
}

/// The state of a fixed-window counter after a hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowCount {
    /// Hits in the current window, this one included.
    pub count: u64,
    /// When the current window ends.
    pub resets_at: Timestamp,
}

/// The read-modify-write function handed to [`Store::update_code_state`]. It may be called
/// more than once by a backend that retries on contention; the last call's write is the
/// one that lands.
pub type CodeStateUpdate<'a> = dyn FnMut(Option<CodeState>) -> Write + Send + 'a;

/// Identity records and counters, shared by every request of the gate.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads the record under `key`, calls `update` with it and applies the [`Write`] it
    /// returns, as one atomic step with respect to every other call for the same key.
    async fn update_code_state(
        &self,
        key: &str,
        update: &mut CodeStateUpdate<'_>,
    ) -> Result<(), StoreError>;

    /// Adds one hit to the fixed window counter under `key`. A window opens at the first
    /// hit after the previous one ended and lasts `window`.
    async fn hit(
        &self,
        key: &str,
        window: Duration,
        now: Timestamp,
    ) -> Result<WindowCount, StoreError>;

    /// Reads the record under `key` without changing it (diagnostics and tests).
    async fn peek_code_state(&self, key: &str) -> Result<Option<CodeState>, StoreError>;

    /// Stores a small value under `key` for `ttl`. With [`SetMode::IfAbsent`] nothing is
    /// written when the key holds a live value; returns whether this call wrote. This is
    /// the single-use primitive: of many concurrent `IfAbsent` calls, exactly one wins.
    async fn set_value(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
        mode: SetMode,
    ) -> Result<bool, StoreError>;

    /// The live value under `key`.
    async fn get_value(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Whether the backend answers now, for readiness probes. The default reads
    /// [`READINESS_KEY`], which nothing writes; a backend with a cheaper probe (Redis's
    /// `PING`) answers with that. Bounded like every other operation.
    async fn ping(&self) -> Result<(), StoreError> {
        self.get_value(READINESS_KEY).await.map(drop)
    }

    /// One line for operators (`otpgate check`, start-up logs); never a credential.
    fn describe(&self) -> String {
        "custom store".into()
    }
}

/// The key the default [`Store::ping`] reads: never written, so reading it changes nothing.
pub const READINESS_KEY: &str = "ready:probe";

/// How [`Store::set_value`] treats an existing value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetMode {
    /// Replace it.
    Always,
    /// Keep it and report that nothing was written.
    IfAbsent,
}
