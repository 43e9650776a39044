//! The in-process store on a moka cache: bounded in size, entries expire with their TTL.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;
use moka::future::Cache;
use moka::ops::compute::Op;

use super::{CodeStateUpdate, SetMode, Store, StoreError, WindowCount};
use crate::otp::{CodeState, Timestamp, Write};

#[derive(Clone, Debug)]
enum Value {
    // Inline rather than behind its own allocation: a pending code is one moka entry.
    Identity(CodeState),
    Counter(WindowCount),
    Text(Arc<str>),
}

#[derive(Clone, Debug)]
struct Entry {
    value: Value,
    ttl: Duration,
}

struct EntryTtl;

impl Expiry<u128, Entry> for EntryTtl {
    fn expire_after_create(
        &self,
        _key: &u128,
        entry: &Entry,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &u128,
        entry: &Entry,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// The default store: one process, no dependencies. Holds at most `max_entries` records;
/// past that the least useful are evicted, which can only forget limits early, never
/// accept a wrong code.
#[derive(Clone)]
pub struct MemoryStore {
    // Keyed by a 128-bit hash of the logical key under two random SipHash keys of this
    // store: 16 bytes instead of the key string, and collisions are out of reach (and out
    // of an attacker's control) at any size the store can hold.
    cache: Cache<u128, Entry>,
    hashers: Arc<(RandomState, RandomState)>,
}

impl MemoryStore {
    /// Default bound on the number of records.
    pub const DEFAULT_MAX_ENTRIES: u64 = 1_000_000;

    /// A store holding at most `max_entries` records and counters.
    pub fn new(max_entries: u64) -> MemoryStore {
        MemoryStore {
            cache: Cache::builder()
                .max_capacity(max_entries)
                .expire_after(EntryTtl)
                .build(),
            hashers: Arc::new((RandomState::new(), RandomState::new())),
        }
    }

    fn key(&self, key: &str) -> u128 {
        let (high, low) = &*self.hashers;
        (u128::from(high.hash_one(key)) << 64) | u128::from(low.hash_one(key))
    }

    /// How many entries are held (approximate; for diagnostics).
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new(Self::DEFAULT_MAX_ENTRIES)
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn update_code_state(
        &self,
        key: &str,
        update: &mut CodeStateUpdate<'_>,
    ) -> Result<(), StoreError> {
        // moka runs compute closures for one key one at a time: this is the atomic step.
        self.cache
            .entry(self.key(key))
            .and_compute_with(|existing| {
                let current = existing.and_then(|entry| match entry.into_value().value {
                    Value::Identity(state) => Some(state),
                    Value::Counter(_) | Value::Text(_) => None,
                });
                let op = match update(current) {
                    Write::Keep => Op::Nop,
                    Write::Put { state, ttl } => Op::Put(Entry {
                        value: Value::Identity(state),
                        ttl,
                    }),
                    Write::Delete => Op::Remove,
                };
                std::future::ready(op)
            })
            .await;
        Ok(())
    }

    async fn hit(
        &self,
        key: &str,
        window: Duration,
        now: Timestamp,
    ) -> Result<WindowCount, StoreError> {
        let mut result = WindowCount {
            count: 1,
            resets_at: now.plus(window),
        };
        self.cache
            .entry(self.key(key))
            .and_compute_with(|existing| {
                if let Some(Value::Counter(current)) = existing.map(|e| e.into_value().value)
                    && current.resets_at > now
                {
                    result = WindowCount {
                        count: current.count + 1,
                        resets_at: current.resets_at,
                    };
                }
                std::future::ready(Op::Put(Entry {
                    value: Value::Counter(result),
                    ttl: now.until(result.resets_at),
                }))
            })
            .await;
        Ok(result)
    }

    async fn peek_code_state(&self, key: &str) -> Result<Option<CodeState>, StoreError> {
        Ok(
            match self.cache.get(&self.key(key)).await.map(|e| e.value) {
                Some(Value::Identity(state)) => Some(state),
                _ => None,
            },
        )
    }

    async fn set_value(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
        mode: SetMode,
    ) -> Result<bool, StoreError> {
        let mut written = false;
        self.cache
            .entry(self.key(key))
            .and_compute_with(|existing| {
                // Serialised per key by moka: the check and the write are one step.
                let op = if mode == SetMode::IfAbsent && existing.is_some() {
                    Op::Nop
                } else {
                    written = true;
                    Op::Put(Entry {
                        value: Value::Text(Arc::from(value)),
                        ttl,
                    })
                };
                std::future::ready(op)
            })
            .await;
        Ok(written)
    }

    async fn get_value(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(
            match self.cache.get(&self.key(key)).await.map(|e| e.value) {
                Some(Value::Text(text)) => Some(text.to_string()),
                _ => None,
            },
        )
    }

    fn describe(&self) -> String {
        format!(
            "memory, at most {} entries",
            self.cache.policy().max_capacity().unwrap_or(u64::MAX)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_passes_the_conformance_suite() {
        super::super::conformance::run_all(|| MemoryStore::new(10_000)).await;
    }

    #[tokio::test]
    async fn memory_store_stays_within_its_bound() {
        let store = MemoryStore::new(100);
        let now = Timestamp(1_000);
        for i in 0..1_000 {
            store
                .hit(&format!("k{i}"), Duration::from_secs(60), now)
                .await
                .unwrap();
        }
        store.cache.run_pending_tasks().await;
        assert!(
            store.entry_count() <= 100,
            "{} entries",
            store.entry_count()
        );
    }
}
