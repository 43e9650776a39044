//! A Redis primary found through Sentinel, and found again after a failover.
//!
//! The Redis client asks the sentinels once and then stays on that address: after a
//! failover it keeps failing against a dead primary, or writes to a demoted one that
//! answers `READONLY`. So the connection here is dropped whenever the primary may have
//! changed (a connection error, a timeout, `READONLY`, a request abandoned by the store's
//! own timeout), and the next command asks the sentinels again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::sentinel::SentinelClient;
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult,
    ServerErrorKind, Value,
};

/// The primary's connection, shared by clones; found on first use.
#[derive(Clone)]
pub(super) struct SentinelConnection {
    shared: Arc<Shared>,
}

struct Shared {
    /// One discovery at a time: the others wait for its result.
    sentinel: tokio::sync::Mutex<SentinelClient>,
    /// The connection in use and its number, so that a failure on an older one does not
    /// drop a newer one.
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    next: AtomicU64,
    config: AsyncConnectionConfig,
}

impl SentinelConnection {
    pub(super) fn new(sentinel: SentinelClient, config: AsyncConnectionConfig) -> Self {
        SentinelConnection {
            shared: Arc::new(Shared {
                sentinel: tokio::sync::Mutex::new(sentinel),
                current: Mutex::new(None),
                next: AtomicU64::new(0),
                config,
            }),
        }
    }
}

impl Shared {
    fn current(&self) -> MutexGuard<'_, Option<(u64, MultiplexedConnection)>> {
        // The guarded value is replaced whole, so a panic elsewhere cannot leave it torn.
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn get(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(current) = self.current().clone() {
            return Ok(current);
        }
        let mut sentinel = self.sentinel.lock().await;
        if let Some(current) = self.current().clone() {
            return Ok(current);
        }
        // Asks the sentinels for the primary's address and checks its ROLE there.
        let client = sentinel.async_get_client().await?;
        let connection = client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        *self.current() = Some((number, connection.clone()));
        Ok((number, connection))
    }

    /// Drops connection `number` if it is still the one in use.
    fn forget(&self, number: u64) {
        let mut current = self.current();
        if current.as_ref().is_some_and(|(n, _)| *n == number) {
            *current = None;
        }
    }
}

/// Whether `error` may mean the primary moved: the next command asks the sentinels.
fn primary_may_have_moved(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_unrecoverable_error()
        || error.is_timeout()
        || error.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
}

/// Forgets the connection unless the request it watches finished well: a request dropped
/// unfinished was abandoned by the store's timeout, and its primary may be gone.
struct Watch<'a> {
    shared: &'a Shared,
    number: u64,
    healthy: bool,
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        if !self.healthy {
            self.shared.forget(self.number);
        }
    }
}

impl<'a> Watch<'a> {
    fn new(shared: &'a Shared, number: u64) -> Self {
        Watch {
            shared,
            number,
            healthy: false,
        }
    }

    fn judge<T>(&mut self, result: &RedisResult<T>) {
        self.healthy = match result {
            Ok(_) => true,
            Err(error) => !primary_may_have_moved(error),
        };
    }
}

impl ConnectionLike for SentinelConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let shared = &*self.shared;
            let (number, mut connection) = shared.get().await?;
            let mut watch = Watch::new(shared, number);
            let result = connection.req_packed_command(cmd).await;
            watch.judge(&result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let shared = &*self.shared;
            let (number, mut connection) = shared.get().await?;
            let mut watch = Watch::new(shared, number);
            let result = connection
                .req_packed_commands(pipeline, offset, count)
                .await;
            watch.judge(&result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.shared
            .current()
            .as_ref()
            .map_or(0, |(_, connection)| connection.get_db())
    }
}
