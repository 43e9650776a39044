//! [`MeasuredStore`]: any [`Store`] with each operation timed and its failures counted,
//! as `otpgate_store_duration_seconds` and `otpgate_store_errors_total` (see
//! [`crate::metrics`]).

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{
    Answer, CodeRecord, CodeStateUpdate, CodeStateUpdateWith, Op, SetMode, Store, StoreError,
    WindowCount,
};
use crate::otp::{CodeState, Timestamp};

/// A [`Store`] that measures the one it wraps; every answer is the wrapped store's.
#[derive(Clone)]
pub struct MeasuredStore {
    inner: Arc<dyn Store>,
}

impl MeasuredStore {
    /// Measures `inner`.
    pub fn new(inner: Arc<dyn Store>) -> MeasuredStore {
        MeasuredStore { inner }
    }

    /// `store`, measured: `store` itself when it is already a [`MeasuredStore`] made here
    /// (a reload handing the running store to a new engine), so nothing counts twice.
    pub fn wrap(store: Arc<dyn Store>) -> Arc<dyn Store> {
        // The stores `wrap` made, still alive: recognised by address, since a `dyn Store`
        // cannot be downcast.
        static MADE: Mutex<Vec<Weak<MeasuredStore>>> = Mutex::new(Vec::new());
        let mut made = MADE.lock().unwrap_or_else(PoisonError::into_inner);
        made.retain(|weak| weak.strong_count() > 0);
        let address = Arc::as_ptr(&store).cast::<()>();
        if made
            .iter()
            .any(|weak| Weak::as_ptr(weak).cast::<()>() == address)
        {
            return store;
        }
        let measured = Arc::new(MeasuredStore::new(store));
        made.push(Arc::downgrade(&measured));
        measured
    }
}

impl std::fmt::Debug for MeasuredStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeasuredStore")
            .field("inner", &self.inner.describe())
            .finish()
    }
}

/// Runs `operation`, recording how long it took and whether it failed.
async fn measured<T>(
    name: &'static str,
    operation: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let started = Instant::now();
    let result = operation.await;
    crate::metrics::store_operation(name, started.elapsed(), result.is_err());
    result
}

#[async_trait]
impl Store for MeasuredStore {
    async fn update_code_state(
        &self,
        key: &str,
        update: &mut CodeStateUpdate<'_>,
    ) -> Result<(), StoreError> {
        measured(
            "update_code_state",
            self.inner.update_code_state(key, update),
        )
        .await
    }

    async fn hit(
        &self,
        key: &str,
        window: Duration,
        now: Timestamp,
    ) -> Result<WindowCount, StoreError> {
        measured("hit", self.inner.hit(key, window, now)).await
    }

    async fn batch(&self, ops: &[Op<'_>]) -> Vec<Result<Answer, StoreError>> {
        let started = Instant::now();
        let answers = self.inner.batch(ops).await;
        let elapsed = started.elapsed();
        // Each operation is timed as its own kind: it waited as long as the batch did.
        for (op, answer) in ops.iter().zip(&answers) {
            let name = match op {
                Op::Hit { .. } => "hit",
                Op::ReadCodeState { .. } => "peek_code_state",
                Op::GetValue { .. } => "get_value",
            };
            crate::metrics::store_operation(name, elapsed, answer.is_err());
        }
        answers
    }

    async fn read_code_state(&self, key: &str) -> Result<CodeRecord, StoreError> {
        measured("peek_code_state", self.inner.read_code_state(key)).await
    }

    async fn update_code_state_from(
        &self,
        key: &str,
        read: CodeRecord,
        update: &mut CodeStateUpdateWith<'_>,
    ) -> Result<(), StoreError> {
        measured(
            "update_code_state",
            self.inner.update_code_state_from(key, read, update),
        )
        .await
    }

    async fn peek_code_state(&self, key: &str) -> Result<Option<CodeState>, StoreError> {
        measured("peek_code_state", self.inner.peek_code_state(key)).await
    }

    async fn set_value(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
        mode: SetMode,
    ) -> Result<bool, StoreError> {
        measured("set_value", self.inner.set_value(key, value, ttl, mode)).await
    }

    async fn get_value(&self, key: &str) -> Result<Option<String>, StoreError> {
        measured("get_value", self.inner.get_value(key)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        measured("ping", self.inner.ping()).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use crate::store::conformance::UnreachableStore;

    /// The value of the sample line starting with `prefix` in the rendered metrics.
    fn sample(prefix: &str) -> f64 {
        let text = crate::metrics::render(None);
        text.lines()
            .find_map(|line| line.strip_prefix(prefix))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `{prefix}` in {text}"))
    }

    #[tokio::test]
    async fn answers_are_the_inner_stores_and_failures_are_counted() {
        let store = MeasuredStore::new(Arc::new(MemoryStore::default()));
        let errors = "otpgate_store_errors_total{operation=\"peek_code_state\"}";
        let timed = "otpgate_store_duration_seconds_count{operation=\"set_value\"}";
        let (errors_before, timed_before) = (sample(errors), sample(timed));
        let wrote = store
            .set_value("k", "v", Duration::from_secs(60), SetMode::IfAbsent)
            .await
            .unwrap();
        assert!(wrote);
        assert_eq!(store.get_value("k").await.unwrap().as_deref(), Some("v"));
        assert!(sample(timed) > timed_before);
        assert!(store.describe().contains("memory"), "{}", store.describe());

        let down = MeasuredStore::new(Arc::new(UnreachableStore));
        assert!(down.peek_code_state("k").await.is_err());
        assert!(sample(errors) > errors_before);
        // The inner store's own words: a store without a description says so.
        assert_eq!(down.describe(), UnreachableStore.describe());
    }

    #[test]
    fn wrapping_twice_measures_once() {
        let once = MeasuredStore::wrap(Arc::new(MemoryStore::default()));
        let twice = MeasuredStore::wrap(Arc::clone(&once));
        assert!(Arc::ptr_eq(&once, &twice));
        let other: Arc<dyn Store> = Arc::new(MemoryStore::default());
        assert!(!Arc::ptr_eq(
            &MeasuredStore::wrap(Arc::clone(&other)),
            &other
        ));
    }
}
