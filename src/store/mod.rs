//! Where code records and rate counters live.
//!
//! A [`Store`] offers two atomic operations and nothing else:
//! [`Store::update_code_state`], a read-modify-write of one code record, and
//! [`Store::hit`], a fixed-window counter increment. The decisions themselves are made by
//! the pure functions in [`crate::otp`]; a backend only has to make the read, the
//! decision and the write one indivisible step. [`conformance`] checks that it does.
//!
//! A networked backend also saves round trips: [`Store::batch`] sends independent
//! operations together, and [`Store::update_code_state_from`] starts an update from a
//! record such a batch read, so a send or a verify costs two round trips on Redis. Their
//! default implementations use the methods above, so a backend needs neither.

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
#[derive(Clone, Debug, thiserror::Error)]
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

/// A code record as [`Store::read_code_state`] (or a [`Store::batch`]) read it, to start
/// an update from with [`Store::update_code_state_from`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CodeRecord {
    state: Option<CodeState>,
    version: Option<Vec<u8>>,
}

impl CodeRecord {
    /// `state` as read, with `version`: what the backend that read it needs to check that
    /// it has not changed since (the Redis store keeps the bytes it read). `None` when
    /// the backend reads the record again anyway.
    pub fn new(state: Option<CodeState>, version: Option<Vec<u8>>) -> CodeRecord {
        CodeRecord { state, version }
    }

    /// The record as read; `None` when there was none.
    pub fn state(&self) -> Option<&CodeState> {
        self.state.as_ref()
    }

    /// What the reading backend needs to check that the record is unchanged.
    pub fn version(&self) -> Option<&[u8]> {
        self.version.as_deref()
    }
}

/// One of the independent operations of a [`Store::batch`].
#[derive(Clone, Copy, Debug)]
pub enum Op<'a> {
    /// [`Store::hit`].
    Hit {
        /// The counter.
        key: &'a str,
        /// The window a first hit opens.
        window: Duration,
        /// The time of the hit.
        now: Timestamp,
    },
    /// [`Store::read_code_state`].
    ReadCodeState {
        /// The code record.
        key: &'a str,
    },
    /// [`Store::get_value`].
    GetValue {
        /// The value.
        key: &'a str,
    },
}

/// The answer to one [`Op`], of its kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// To [`Op::Hit`].
    Hit(WindowCount),
    /// To [`Op::ReadCodeState`].
    CodeState(CodeRecord),
    /// To [`Op::GetValue`].
    Value(Option<String>),
}

impl Answer {
    /// The counter of an [`Op::Hit`]'s answer.
    pub fn into_hit(self) -> Result<WindowCount, StoreError> {
        match self {
            Answer::Hit(count) => Ok(count),
            other => Err(other.mismatch("a hit")),
        }
    }

    /// The record of an [`Op::ReadCodeState`]'s answer.
    pub fn into_code_state(self) -> Result<CodeRecord, StoreError> {
        match self {
            Answer::CodeState(record) => Ok(record),
            other => Err(other.mismatch("a code record")),
        }
    }

    /// The value of an [`Op::GetValue`]'s answer.
    pub fn into_value(self) -> Result<Option<String>, StoreError> {
        match self {
            Answer::Value(value) => Ok(value),
            other => Err(other.mismatch("a value")),
        }
    }

    fn mismatch(&self, expected: &str) -> StoreError {
        let found = match self {
            Answer::Hit(_) => "a hit",
            Answer::CodeState(_) => "a code record",
            Answer::Value(_) => "a value",
        };
        StoreError::Corrupt(format!(
            "the store answered {found} where {expected} was due"
        ))
    }
}

/// A value that [`Store::update_code_state_from`] writes beside a code record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetValue<'a> {
    /// Where, as for [`Store::set_value`].
    pub key: &'a str,
    /// What.
    pub value: &'a str,
    /// For how long.
    pub ttl: Duration,
    /// Whether an existing value is replaced.
    pub mode: SetMode,
}

/// What a [`CodeStateUpdateWith`] decides: the code record's write and, perhaps, a value
/// to write beside it.
#[derive(Clone, Debug, PartialEq)]
pub struct CodeUpdate<'a> {
    /// The code record's write.
    pub write: Write,
    /// A value to write too, in the same round trip where the backend can.
    pub also: Option<SetValue<'a>>,
}

/// The read-modify-write function handed to [`Store::update_code_state_from`]; called
/// like a [`CodeStateUpdate`].
pub type CodeStateUpdateWith<'a> = dyn FnMut(Option<CodeState>) -> CodeUpdate<'a> + Send + 'a;

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

    /// Runs independent operations and answers each, in order, with its own result. A
    /// networked backend sends them together (one round trip on Redis); the default runs
    /// them at once through [`hit`](Store::hit),
    /// [`read_code_state`](Store::read_code_state) and [`get_value`](Store::get_value).
    async fn batch(&self, ops: &[Op<'_>]) -> Vec<Result<Answer, StoreError>> {
        futures_util::future::join_all(ops.iter().map(|op| async move {
            match *op {
                Op::Hit { key, window, now } => self.hit(key, window, now).await.map(Answer::Hit),
                Op::ReadCodeState { key } => self.read_code_state(key).await.map(Answer::CodeState),
                Op::GetValue { key } => self.get_value(key).await.map(Answer::Value),
            }
        }))
        .await
    }

    /// Reads the record under `key` to start an update from, with
    /// [`update_code_state_from`](Store::update_code_state_from). The default peeks and
    /// keeps no version.
    async fn read_code_state(&self, key: &str) -> Result<CodeRecord, StoreError> {
        Ok(CodeRecord::new(self.peek_code_state(key).await?, None))
    }

    /// [`update_code_state`](Store::update_code_state), starting from `read`, the record
    /// under `key` as this store read it a moment ago, and writing the value `update` asks
    /// for beside the record. A backend that can writes at once if the record is still
    /// `read` (on Redis: one round trip, the value in it too), and otherwise reads it
    /// again and calls `update` again, as `update_code_state` does.
    ///
    /// The value is written when the call of `update` whose record write lands asks for
    /// it, and may also be written when a call whose write lost to another update asked:
    /// ask only for a value that every such call is entitled to write.
    ///
    /// The default reads again (it ignores `read`), then writes the value.
    async fn update_code_state_from(
        &self,
        key: &str,
        read: CodeRecord,
        update: &mut CodeStateUpdateWith<'_>,
    ) -> Result<(), StoreError> {
        let _ = read;
        let mut also = None;
        self.update_code_state(key, &mut |current| {
            let decided = update(current);
            also = decided.also;
            decided.write
        })
        .await?;
        if let Some(value) = also {
            self.set_value(value.key, value.value, value.ttl, value.mode)
                .await?;
        }
        Ok(())
    }

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
