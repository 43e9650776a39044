//! [`UpstreamPool`]: several instances of the app (`[server] upstreams`), balanced round
//! robin or to the least busy, each checked in the background and skipped while it fails.
//!
//! The pool is pingora's load balancer (`pingora::lb`): its [`Backends`] keep each
//! instance's health, its health-check registry runs the checks, and the selection is
//! [`Turns`], which adds least-connections to round robin (pingora's selections have no
//! least-connections). Checks are pingora's [`TcpHealthCheck`] (a TCP connect) or, with
//! [`UpstreamPool::with_health_path`], its [`HttpHealthCheck`] (`GET path`, an answer
//! under 400 passes, over TLS with the app's CA for an https instance), every
//! [`health_interval`](UpstreamPool::health_interval) and within the connect timeout.
//!
//! A proxied request that cannot connect also marks its instance refused at once, and is
//! retried on another, so clients see no error from an instance that went away between
//! two checks; its next passing check clears that. Host names are looked up by the
//! instances' own resolvers ([`Upstream::start_resolving`]), never by a blocking lookup,
//! and each check round takes the addresses they found. The pool's [`Upstream`]
//! (`primary`) follows a healthy instance: the readiness probe and the gate's own
//! requests to the app use it.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use ::pingora::lb::discovery::ServiceDiscovery;
use ::pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use ::pingora::lb::selection::{BackendIter, BackendSelection};
use ::pingora::lb::{Backend, Backends, LoadBalancer};
use async_trait::async_trait;
use futures_util::FutureExt;

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
    instances: Vec<Arc<Instance>>,
    balancer: LoadBalancer<Turns>,
    balance: Balance,
    health_interval: Duration,
    // `Some`: checked with `GET path` (an answer under 400 passes), not a TCP connect.
    health_path: Option<String>,
    // How long one check may take, in nanoseconds: the connect timeout, set when the
    // checks start (the checks are built before the proxy's timeouts are known).
    check_timeout: Arc<AtomicU64>,
    // A healthy instance's address, for the readiness probe and mediated requests.
    primary: Upstream,
}

/// One configured instance: carried in its [`Backend`]'s extensions, so the selection
/// and the checks reach its counters.
struct Instance {
    upstream: Upstream,
    // A proxied request could not connect: skipped until a check passes again.
    refused: AtomicBool,
    in_flight: AtomicUsize,
    // `GET path` over http(s), for a pool with a health path.
    http_check: Option<HttpHealthCheck>,
}

fn instance_of(backend: &Backend) -> Option<&Arc<Instance>> {
    backend.ext.get::<Arc<Instance>>()
}

/// A request under way at one instance: counts in its in-flight requests until dropped
/// (the request's context is dropped when the request ends, however it ends).
pub struct InFlight {
    instance: Arc<Instance>,
    addr: SocketAddr,
}

impl InFlight {
    /// The instance.
    pub fn upstream(&self) -> &Upstream {
        &self.instance.upstream
    }

    /// The address this request goes to: the instance's, as the last check round found it.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Marks the instance refused until its next check passes: it refused a connection.
    pub fn mark_down(&self) {
        if !self.instance.refused.swap(true, Ordering::AcqRel) {
            tracing::warn!(upstream = %self.instance.upstream, "an upstream instance refused a connection; skipped until it accepts again");
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.instance.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InFlight({} at {})", self.upstream(), self.addr)
    }
}

impl UpstreamPool {
    /// The default interval between two checks of each instance: 5 s.
    pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);

    /// A pool of `instances` (at least one; all of one scheme), balanced by `balance`,
    /// each checked every `health_interval`. Every instance counts as healthy until its
    /// first check; an instance at a host name joins once its name is looked up.
    ///
    /// # Panics
    ///
    /// When `instances` is empty: the config never makes such a pool.
    pub fn new(instances: Vec<Upstream>, balance: Balance, health_interval: Duration) -> Self {
        UpstreamPool::build(instances, balance, health_interval, None)
    }

    /// A pool of the same instances, each checked with `GET path` (an answer under 400
    /// passes; over TLS, verified as proxied requests are, for an https instance) instead
    /// of a TCP connect.
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
        let instances: Vec<Arc<Instance>> = instances
            .into_iter()
            .map(|upstream| {
                let http_check = health_path
                    .as_deref()
                    .map(|path| http_check(&upstream, path));
                Arc::new(Instance {
                    upstream,
                    refused: AtomicBool::new(false),
                    in_flight: AtomicUsize::new(0),
                    http_check,
                })
            })
            .collect();
        let check_timeout = Arc::new(AtomicU64::new(nanos(Duration::from_secs(1))));
        let mut backends = Backends::new(Box::new(Resolved(instances.clone())));
        backends.set_health_check(Box::new(Probe::new(Arc::clone(&check_timeout))));
        let balancer = LoadBalancer::from_backends_with_config(backends, Some(balance));
        // Instances at IP addresses are known at once (the discovery awaits nothing);
        // host names join at the first check round, once looked up.
        let _ = balancer.update().now_or_never();
        UpstreamPool {
            shared: Arc::new(Shared {
                instances,
                balancer,
                balance,
                health_interval,
                health_path,
                check_timeout,
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

    /// The path each instance is checked with; `None`: a TCP connect.
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
        // `Turns` yields each instance once, so this many steps see them all.
        let steps = shared.instances.len();
        let backend = shared
            .balancer
            .select_with(b"", steps, |backend, healthy| {
                healthy && instance_of(backend).is_some_and(|i| !i.refused.load(Ordering::Acquire))
            })?;
        let instance = Arc::clone(instance_of(&backend)?);
        let addr = *backend.addr.as_inet()?;
        instance.in_flight.fetch_add(1, Ordering::AcqRel);
        Some(InFlight { instance, addr })
    }

    /// Checks every instance now and every interval after, for as long as the future
    /// runs; each check may take `connect_timeout` (at most the interval).
    pub async fn check_forever(&self, connect_timeout: Duration) {
        let timeout = connect_timeout.min(self.shared.health_interval);
        self.shared
            .check_timeout
            .store(nanos(timeout), Ordering::Relaxed);
        self.await_first_lookups(timeout).await;
        loop {
            self.check_once().await;
            tokio::time::sleep(self.shared.health_interval).await;
        }
    }

    /// Starts the instances' lookups and waits up to `timeout` for each name to resolve
    /// once, so that the first round already balances over them.
    async fn await_first_lookups(&self, timeout: Duration) {
        let instances = &self.shared.instances;
        instances.iter().for_each(|i| i.upstream.start_resolving());
        let resolved = async {
            while instances.iter().any(|i| i.upstream.current().is_none()) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let _ = tokio::time::timeout(timeout, resolved).await;
    }

    async fn check_once(&self) {
        let balancer = &self.shared.balancer;
        // The addresses the instances' lookups found since the last round. `Resolved`
        // never fails.
        let _ = balancer.update().await;
        balancer.backends().run_health_check(true).await;
        // The primary keeps its address while that instance is healthy, else takes the
        // first healthy one; with none, it keeps the last (and readiness reports it down).
        let backends = balancer.backends();
        let healthy: Vec<SocketAddr> = backends
            .get_backend()
            .iter()
            .filter(|backend| backends.ready(backend))
            .filter_map(|backend| backend.addr.as_inet().copied())
            .collect();
        let primary = &self.shared.primary;
        if !healthy.iter().any(|addr| Some(*addr) == primary.current())
            && let Some(addr) = healthy.first()
        {
            primary.addr.set(*addr);
        }
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// pingora's HTTP check of `GET path` at one instance: `Host` as a proxied request
/// would carry it, TLS verified with the instance's CAs for its host name.
fn http_check(upstream: &Upstream, path: &str) -> HttpHealthCheck {
    let tls = upstream.tls.as_ref();
    let mut check = HttpHealthCheck::new(&upstream.host, tls.is_some());
    // The outer timeout in `Probe` bounds the whole check, with the configured value.
    check.peer_template.options.connection_timeout = None;
    check.peer_template.options.read_timeout = None;
    if let Some(tls) = tls {
        // Only the configured CAs, when a CA file is given; else the system's roots.
        check.peer_template.options.ca = tls.peer_ca();
        check.peer_template.options.verify_cert = true;
        check.peer_template.options.verify_hostname = true;
    }
    // The path was checked by the config (a plain origin-form path), so building the
    // request cannot fail; a failure keeps pingora's `GET /`.
    if let Ok(mut request) = ::pingora::http::RequestHeader::build("GET", path.as_bytes(), None)
        && request.insert_header("Host", upstream.to_string()).is_ok()
    {
        check.req = request;
    }
    check.validator = Some(Box::new(|response| {
        let status = response.status.as_u16();
        if (200..400).contains(&status) {
            Ok(())
        } else {
            ::pingora::Error::e_explain(
                ::pingora::ErrorType::CustomCode("health check status", status),
                "the health path answered 400 or above",
            )
        }
    }));
    check
}

/// The instances as backends, at the addresses their lookups found; one not resolved
/// yet is left out until it is.
struct Resolved(Vec<Arc<Instance>>);

#[async_trait]
impl ServiceDiscovery for Resolved {
    async fn discover(&self) -> ::pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let backends = self
            .0
            .iter()
            .enumerate()
            .filter_map(|(index, instance)| {
                instance.upstream.start_resolving();
                let addr = instance.upstream.current()?;
                let mut ext = http::Extensions::new();
                ext.insert(Arc::clone(instance));
                Some(Backend {
                    addr: ::pingora::protocols::l4::socket::SocketAddr::Inet(addr),
                    // A backend is its address and weight (never its extensions): the
                    // instance's place as the weight keeps two instances at one address
                    // apart, and makes two instances whose addresses swap a new set, so
                    // each address keeps its own instance's host, TLS and counters.
                    // `Turns` gives every backend one turn whatever its weight.
                    weight: index + 1,
                    ext,
                })
            })
            .collect();
        Ok((backends, HashMap::new()))
    }
}

/// The check each round runs on each instance: its HTTP check or a TCP connect, within
/// the connect timeout. A pass also clears a refusal seen by a proxied request.
struct Probe {
    tcp: TcpHealthCheck,
    timeout: Arc<AtomicU64>,
}

impl Probe {
    fn new(timeout: Arc<AtomicU64>) -> Probe {
        let mut tcp = TcpHealthCheck::default();
        // The outer timeout bounds the check, with the configured value.
        tcp.peer_template.options.connection_timeout = None;
        Probe { tcp, timeout }
    }
}

#[async_trait]
impl HealthCheck for Probe {
    async fn check(&self, target: &Backend) -> ::pingora::Result<()> {
        let instance = instance_of(target);
        let check = async {
            match instance.and_then(|i| i.http_check.as_ref()) {
                Some(http) => http.check(target).await,
                None => self.tcp.check(target).await,
            }
        };
        let timeout = Duration::from_nanos(self.timeout.load(Ordering::Relaxed));
        match tokio::time::timeout(timeout, check).await {
            Ok(Ok(())) => {
                if let Some(instance) = instance
                    && instance.refused.swap(false, Ordering::AcqRel)
                {
                    tracing::info!(upstream = %instance.upstream, "an upstream instance accepts connections again");
                }
                Ok(())
            }
            Ok(Err(error)) => Err(error),
            Err(_) => ::pingora::Error::e_explain(
                ::pingora::ErrorType::ConnectTimedout,
                "the health check took longer than the connect timeout",
            ),
        }
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        let Some(instance) = instance_of(target) else {
            return;
        };
        if healthy {
            tracing::info!(upstream = %instance.upstream, "an upstream instance passes its health check again");
        } else {
            tracing::warn!(upstream = %instance.upstream, "an upstream instance fails its health check; skipped until it passes");
        }
    }

    fn backend_summary(&self, target: &Backend) -> String {
        match instance_of(target) {
            Some(instance) => format!("upstream {} at {}", instance.upstream, target.addr),
            None => format!("upstream at {}", target.addr),
        }
    }

    fn health_threshold(&self, _success: bool) -> usize {
        // One failed check takes an instance out, one passed check brings it back.
        1
    }
}

/// pingora's selection with least-connections beside round robin: each request starts
/// one further along the instances; with least-connections, the instances are then
/// ordered by requests under way (the turn order breaks ties). The load balancer skips
/// those that are not healthy.
struct Turns {
    backends: Box<[Backend]>,
    balance: Balance,
    next: AtomicUsize,
}

impl BackendSelection for Turns {
    type Iter = TurnOrder;
    type Config = Balance;

    fn build(backends: &BTreeSet<Backend>) -> Turns {
        Turns::build_with_config(backends, &Balance::RoundRobin)
    }

    fn build_with_config(backends: &BTreeSet<Backend>, balance: &Balance) -> Turns {
        Turns {
            backends: backends.iter().cloned().collect(),
            balance: *balance,
            next: AtomicUsize::new(0),
        }
    }

    fn iter(self: &Arc<Turns>, _key: &[u8]) -> TurnOrder {
        let count = self.backends.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut order: Vec<usize> = (0..count).map(|offset| (start + offset) % count).collect();
        if self.balance == Balance::LeastConnections {
            // A stable sort: among equals, the turn order stays.
            order.sort_by_key(|index| {
                instance_of(&self.backends[*index])
                    .map_or(usize::MAX, |i| i.in_flight.load(Ordering::Acquire))
            });
        }
        TurnOrder {
            turns: Arc::clone(self),
            order: order.into_iter(),
        }
    }
}

/// The instances in the order one request tries them.
struct TurnOrder {
    turns: Arc<Turns>,
    order: std::vec::IntoIter<usize>,
}

impl BackendIter for TurnOrder {
    fn next(&mut self) -> Option<&Backend> {
        let index = self.order.next()?;
        self.turns.backends.get(index)
    }
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
    fn two_instances_at_one_address_stay_two() {
        let same: std::net::SocketAddr = "10.0.0.9:80".parse().unwrap();
        let pool = UpstreamPool::new(
            vec![Upstream::at(same), Upstream::at(same)],
            Balance::LeastConnections,
            Duration::from_secs(1),
        );
        let (first, second) = (pool.pick().unwrap(), pool.pick().unwrap());
        // Each counts its own request: the second pick went to the other instance.
        assert_eq!(first.instance.in_flight.load(Ordering::SeqCst), 1);
        assert_eq!(second.instance.in_flight.load(Ordering::SeqCst), 1);
        assert!(!Arc::ptr_eq(&first.instance, &second.instance));
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
