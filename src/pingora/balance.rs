//! [`UpstreamPool`]: several instances of the app (`[server] upstreams`), balanced round
//! robin or to the least busy, each checked in the background and skipped while it
//! accepts no connection.
//!
//! The checks are TCP connects (or `GET` a health path, [`UpstreamPool::with_health_path`]),
//! every [`health_interval`](UpstreamPool::health_interval) and within the connect timeout; a proxied request that cannot connect also marks its
//! instance down at once and is retried on another, so clients see no error from an
//! instance that went away between two checks. The pool's [`Upstream`] (`primary`) follows
//! a healthy instance: the readiness probe and the gate's own requests to the app use it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use super::Upstream;

/// How a request picks its instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balance {
    /// Each healthy instance in turn.
    RoundRobin,
    /// The healthy instance with the fewest requests under way (in turn among equals).
    LeastConnections,
}

/// Several instances of the app. Clones share their health and counters.
#[derive(Clone)]
pub struct UpstreamPool {
    shared: Arc<Shared>,
}

struct Shared {
    instances: Vec<Instance>,
    balance: Balance,
    health_interval: Duration,
    // `Some`: checked with `GET path` (an answer under 400 passes), not a TCP connect.
    health_path: Option<String>,
    next: AtomicUsize,
    // A healthy instance's address, for the readiness probe and mediated requests.
    primary: Upstream,
}

struct Instance {
    upstream: Upstream,
    healthy: AtomicBool,
    in_flight: AtomicUsize,
}

/// A request under way at one instance: counts in its in-flight requests until dropped
/// (the request's context is dropped when the request ends, however it ends).
pub struct InFlight {
    shared: Arc<Shared>,
    index: usize,
}

impl InFlight {
    /// The instance.
    pub fn upstream(&self) -> &Upstream {
        &self.shared.instances[self.index].upstream
    }

    /// Marks the instance down until its next check succeeds: it refused a connection.
    pub fn mark_down(&self) {
        let instance = &self.shared.instances[self.index];
        if instance.healthy.swap(false, Ordering::AcqRel) {
            tracing::warn!(upstream = %instance.upstream, "an upstream instance refused a connection; skipped until it accepts again");
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.shared.instances[self.index]
            .in_flight
            .fetch_sub(1, Ordering::AcqRel);
    }
}

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InFlight({})", self.upstream())
    }
}

impl UpstreamPool {
    /// The default interval between two checks of each instance: 5 s.
    pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);

    /// A pool of `instances` (at least one; all of one scheme), balanced by `balance`,
    /// each checked every `health_interval`. Every instance counts as healthy until its
    /// first check.
    ///
    /// # Panics
    ///
    /// When `instances` is empty: the config never makes such a pool.
    pub fn new(instances: Vec<Upstream>, balance: Balance, health_interval: Duration) -> Self {
        UpstreamPool::build(instances, balance, health_interval, None)
    }

    /// A pool of the same instances, each checked with `GET path` over plain http (an
    /// answer under 400 passes) instead of a TCP connect. An https instance is still
    /// checked with a TCP connect.
    pub fn with_health_path(self, path: impl Into<String>) -> UpstreamPool {
        let instances = self.instances().cloned().collect();
        let shared = &self.shared;
        UpstreamPool::build(
            instances,
            shared.balance,
            shared.health_interval,
            Some(path.into()),
        )
    }

    fn build(
        instances: Vec<Upstream>,
        balance: Balance,
        health_interval: Duration,
        health_path: Option<String>,
    ) -> Self {
        assert!(!instances.is_empty(), "an upstream pool needs an instance");
        let primary = instances[0].clone();
        let primary = Upstream {
            addr: super::settings::UpstreamAddr::settable(primary.current()),
            ..primary
        };
        let instances = instances
            .into_iter()
            .map(|upstream| Instance {
                upstream,
                healthy: AtomicBool::new(true),
                in_flight: AtomicUsize::new(0),
            })
            .collect();
        UpstreamPool {
            shared: Arc::new(Shared {
                instances,
                balance,
                health_interval,
                health_path,
                next: AtomicUsize::new(0),
                primary,
            }),
        }
    }

    /// The instances, in the order written.
    pub fn instances(&self) -> impl Iterator<Item = &Upstream> {
        self.shared.instances.iter().map(|i| &i.upstream)
    }

    /// How a request picks its instance.
    pub fn balance(&self) -> Balance {
        self.shared.balance
    }

    /// How often each instance is checked.
    pub fn health_interval(&self) -> Duration {
        self.shared.health_interval
    }

    /// The path each plain http instance is checked with; `None`: a TCP connect.
    pub fn health_path(&self) -> Option<&str> {
        self.shared.health_path.as_deref()
    }

    /// The upstream that follows a healthy instance (the first until one is checked).
    pub fn primary(&self) -> &Upstream {
        &self.shared.primary
    }

    /// A healthy instance with an address for a new request, counted in flight; `None`
    /// when no instance is healthy.
    pub fn pick(&self) -> Option<InFlight> {
        let shared = &self.shared;
        let count = shared.instances.len();
        let start = shared.next.fetch_add(1, Ordering::Relaxed);
        let ready = |index: &usize| {
            let instance = &shared.instances[*index];
            instance.upstream.start_resolving();
            instance.healthy.load(Ordering::Acquire) && instance.upstream.current().is_some()
        };
        let mut order = (0..count).map(|offset| (start + offset) % count);
        let index = match shared.balance {
            Balance::RoundRobin => order.find(ready)?,
            // `min_by_key` keeps the first of equals: the turn order breaks ties.
            Balance::LeastConnections => order
                .filter(ready)
                .min_by_key(|index| shared.instances[*index].in_flight.load(Ordering::Acquire))?,
        };
        shared.instances[index]
            .in_flight
            .fetch_add(1, Ordering::AcqRel);
        Some(InFlight {
            shared: Arc::clone(shared),
            index,
        })
    }

    /// Checks every instance now and every interval after, for as long as the future runs.
    pub async fn check_forever(&self, connect_timeout: Duration) {
        loop {
            self.check_once(connect_timeout.min(self.shared.health_interval))
                .await;
            tokio::time::sleep(self.shared.health_interval).await;
        }
    }

    async fn check_once(&self, timeout: Duration) {
        let checks = self.shared.instances.iter().map(|instance| async move {
            instance.upstream.start_resolving();
            let path = self.shared.health_path.as_deref();
            let accepts = match instance.upstream.current() {
                Some(addr) => tokio::time::timeout(timeout, check(&instance.upstream, addr, path))
                    .await
                    .unwrap_or(false),
                None => false,
            };
            let was = instance.healthy.swap(accepts, Ordering::AcqRel);
            if was != accepts {
                if accepts {
                    tracing::info!(upstream = %instance.upstream, "an upstream instance accepts connections again");
                } else {
                    tracing::warn!(upstream = %instance.upstream, "an upstream instance accepts no connection; skipped until it does");
                }
            }
            accepts.then(|| instance.upstream.current()).flatten()
        });
        let healthy = futures_util::future::join_all(checks).await;
        // The primary keeps its address while that instance is healthy, else takes the
        // first healthy one; with none, it keeps the last (and readiness reports it down).
        let primary = &self.shared.primary;
        let now = primary.current();
        if !healthy.iter().flatten().any(|addr| Some(*addr) == now)
            && let Some(addr) = healthy.into_iter().flatten().next()
        {
            primary.addr.set(addr);
        }
    }
}

/// Whether the instance at `addr` accepts a connection and, with a `path` and plain
/// http, answers `GET path` under 400.
async fn check(upstream: &Upstream, addr: std::net::SocketAddr, path: Option<&str>) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let Some(path) = path.filter(|_| upstream.tls.is_none()) else {
        return true;
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {upstream}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    // "HTTP/1.1 200": the status is all that is read.
    let mut head = [0u8; 12];
    if stream.read_exact(&mut head).await.is_err() {
        return false;
    }
    let status = std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|code| code.parse::<u16>().ok());
    head.starts_with(b"HTTP/1.") && status.is_some_and(|code| (200..400).contains(&code))
}

impl PartialEq for UpstreamPool {
    fn eq(&self, other: &UpstreamPool) -> bool {
        self.shared.balance == other.shared.balance
            && self.shared.health_interval == other.shared.health_interval
            && self.shared.health_path == other.shared.health_path
            && self.instances().eq(other.instances())
    }
}

impl Eq for UpstreamPool {}

impl fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("instances", &self.instances().collect::<Vec<_>>())
            .field("balance", &self.shared.balance)
            .field("health_interval", &self.shared.health_interval)
            .field("health_path", &self.shared.health_path)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(balance: Balance) -> UpstreamPool {
        let instances = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]
            .iter()
            .map(|addr| Upstream::at(addr.parse().unwrap()))
            .collect();
        UpstreamPool::new(instances, balance, Duration::from_secs(1))
    }

    fn host(instance: &InFlight) -> &str {
        &instance.upstream().host
    }

    #[test]
    fn round_robin_takes_each_healthy_instance_in_turn() {
        let pool = pool(Balance::RoundRobin);
        let hosts: Vec<String> = (0..4)
            .map(|_| host(&pool.pick().unwrap()).to_owned())
            .collect();
        assert_eq!(hosts, ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.1"]);
        pool.pick().unwrap().mark_down(); // 10.0.0.2
        let hosts: Vec<String> = (0..4)
            .map(|_| host(&pool.pick().unwrap()).to_owned())
            .collect();
        assert!(!hosts.iter().any(|h| h == "10.0.0.2"), "{hosts:?}");
        // The two left.
        for _ in 0..2 {
            pool.pick().unwrap().mark_down();
        }
        assert!(pool.pick().is_none());
    }

    #[test]
    fn least_connections_avoids_the_busy_and_counts_until_dropped() {
        let pool = pool(Balance::LeastConnections);
        let first = pool.pick().unwrap();
        let second = pool.pick().unwrap();
        let third = pool.pick().unwrap();
        assert_eq!(
            [host(&first), host(&second), host(&third)],
            ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
        );
        drop(second);
        for _ in 0..3 {
            assert_eq!(host(&pool.pick().unwrap()), "10.0.0.2");
        }
    }
}
