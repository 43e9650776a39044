//! The edge proxy's settings: where it listens, the app behind it and how that app's
//! address follows DNS, its threads, timeouts and connection bounds. Read from the config
//! file's `[server]` section.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use super::UpstreamTls;

/// Where the edge proxy sends requests: the app's host and port as written, and the
/// address that host has now.
///
/// An IP literal is its own address and never needs DNS. A host name is looked up when
/// the proxy starts, and again every [`dns_interval`](Upstream::dns_interval), by a task
/// the proxy starts on the runtime it serves on; a failed lookup keeps the last address
/// that answered. Until a first lookup succeeds, requests for the app answer
/// 502 `upstream_unavailable`. Clones share the address, so every part of the proxy
/// follows the same lookups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// The host as written, without IPv6 brackets (for SNI and logs).
    pub host: String,
    /// The port.
    pub port: u16,
    /// The address requests go to now.
    pub addr: UpstreamAddr,
    /// `Some`: the app is reached over https, its certificate verified for `host`.
    pub tls: Option<UpstreamTls>,
}

impl Upstream {
    /// The default interval between two lookups of a host name: 30 s.
    pub const DEFAULT_DNS_INTERVAL: Duration = Duration::from_secs(30);

    /// The app at an IP address.
    pub fn at(addr: SocketAddr) -> Upstream {
        Upstream {
            host: addr.ip().to_string(),
            port: addr.port(),
            addr: UpstreamAddr::fixed(addr),
            tls: None,
        }
    }

    /// The app at `host` (a name or an IP literal, without brackets) and `port`; a name
    /// is looked up every `dns_interval` once the proxy runs. Nothing is looked up here.
    pub fn named(host: impl Into<String>, port: u16, dns_interval: Duration) -> Upstream {
        let host = host.into();
        let addr = match host.parse::<IpAddr>() {
            Ok(ip) => UpstreamAddr::fixed(SocketAddr::new(ip, port)),
            Err(_) => UpstreamAddr::looked_up(dns_interval),
        };
        Upstream {
            host,
            port,
            addr,
            tls: None,
        }
    }

    /// The same app, reached over https and verified with `tls`.
    pub fn with_tls(mut self, tls: UpstreamTls) -> Upstream {
        self.tls = Some(tls);
        self
    }

    /// The address requests go to now; `None` while a host name has never resolved.
    pub fn current(&self) -> Option<SocketAddr> {
        self.addr.get()
    }

    /// How often a host name is looked up again; `None` for an IP literal.
    pub fn dns_interval(&self) -> Option<Duration> {
        self.addr.0.dns_interval
    }

    /// Starts looking the host name up in the background, on the current tokio runtime,
    /// unless that already runs or the host is an IP literal. Cheap when it already runs:
    /// the proxy calls it on each request so that an embedding never has to.
    pub fn start_resolving(&self) {
        if self.addr.0.dns_interval.is_none() || self.addr.0.resolving.load(Ordering::Acquire) {
            return;
        }
        // Outside a runtime there is nowhere to run the lookups; a later call will start
        // them.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.addr.0.resolving.swap(true, Ordering::AcqRel) {
            return;
        }
        let (shared, host, port) = (Arc::downgrade(&self.addr.0), self.host.clone(), self.port);
        runtime.spawn(resolve_while_used(shared, host, port, lookup_host));
    }

    /// Looks the host name up now and every interval after, for as long as the process
    /// runs; returns at once for an IP literal or when lookups already run elsewhere.
    pub async fn resolve_forever(&self) {
        if self.addr.0.dns_interval.is_none() || self.addr.0.resolving.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let shared = Arc::downgrade(&self.addr.0);
        // This clone keeps the address alive, so the loop only ends with the caller.
        let _keep = self.addr.clone();
        resolve_while_used(shared, self.host.clone(), self.port, lookup_host).await;
    }
}

/// `host:port`, as it would be written in a URL.
impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The address an [`Upstream`] has now, shared by its clones. Shows as the address, or
/// `not resolved yet`.
#[derive(Clone)]
pub struct UpstreamAddr(Arc<SharedAddr>);

struct SharedAddr {
    current: RwLock<Option<SocketAddr>>,
    // `None`: an IP literal, never looked up.
    dns_interval: Option<Duration>,
    // Whether a task already looks the name up: one is enough.
    resolving: AtomicBool,
}

impl UpstreamAddr {
    fn fixed(addr: SocketAddr) -> UpstreamAddr {
        UpstreamAddr(Arc::new(SharedAddr {
            current: RwLock::new(Some(addr)),
            dns_interval: None,
            resolving: AtomicBool::new(false),
        }))
    }

    fn looked_up(dns_interval: Duration) -> UpstreamAddr {
        UpstreamAddr(Arc::new(SharedAddr {
            current: RwLock::new(None),
            dns_interval: Some(dns_interval),
            resolving: AtomicBool::new(false),
        }))
    }

    /// The address now; `None` while a host name has never resolved.
    pub fn get(&self) -> Option<SocketAddr> {
        self.0.get()
    }

    /// An address that only [`set`](UpstreamAddr::set) changes, never DNS.
    pub(super) fn settable(addr: Option<SocketAddr>) -> UpstreamAddr {
        UpstreamAddr(Arc::new(SharedAddr {
            current: RwLock::new(addr),
            dns_interval: None,
            resolving: AtomicBool::new(false),
        }))
    }

    /// Points every clone at `addr`.
    pub(super) fn set(&self, addr: SocketAddr) {
        self.0.set(addr);
    }
}

impl SharedAddr {
    fn get(&self) -> Option<SocketAddr> {
        // A writer cannot panic between reading and writing an `Option<SocketAddr>`, so a
        // poisoned lock still holds a whole address.
        *self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set(&self, addr: SocketAddr) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(addr);
    }
}

impl fmt::Display for UpstreamAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.get() {
            Some(addr) => addr.fmt(f),
            None => f.write_str("not resolved yet"),
        }
    }
}

impl fmt::Debug for UpstreamAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Two addresses are equal when they point at the same place now and follow DNS alike.
impl PartialEq for UpstreamAddr {
    fn eq(&self, other: &UpstreamAddr) -> bool {
        self.get() == other.get() && self.0.dns_interval == other.0.dns_interval
    }
}

impl Eq for UpstreamAddr {}

async fn lookup_host(host: String, port: u16) -> io::Result<Vec<SocketAddr>> {
    Ok(tokio::net::lookup_host((host.as_str(), port))
        .await?
        .collect())
}

/// Looks `host` up with `lookup` now and every interval after, into `shared`, until every
/// [`Upstream`] sharing it is gone.
async fn resolve_while_used<L, F>(shared: Weak<SharedAddr>, host: String, port: u16, mut lookup: L)
where
    L: FnMut(String, u16) -> F,
    F: Future<Output = io::Result<Vec<SocketAddr>>>,
{
    let mut failing = false;
    loop {
        let Some(addr) = shared.upgrade() else {
            return;
        };
        let Some(interval) = addr.dns_interval else {
            return;
        };
        let answer = lookup(host.clone(), port).await;
        record_lookup(&addr, &host, answer, &mut failing);
        // Not held while asleep: the last user going away ends the loop.
        drop(addr);
        tokio::time::sleep(interval).await;
    }
}

/// Keeps `answer` in `addr`; a failed or empty answer keeps the last good address, and
/// only the first failure of a streak is logged.
fn record_lookup(
    addr: &SharedAddr,
    host: &str,
    answer: io::Result<Vec<SocketAddr>>,
    failing: &mut bool,
) {
    match answer {
        Ok(addrs) if !addrs.is_empty() => {
            // The address in use stays while DNS still gives it: its pooled connections
            // stay useful, and a name with several addresses does not flap between them.
            let current = addr.get();
            let next = match current {
                Some(current) if addrs.contains(&current) => current,
                _ => addrs[0],
            };
            if current != Some(next) {
                tracing::info!(upstream = %host, addr = %next, "the upstream resolves to a new address");
                addr.set(next);
            }
            if std::mem::take(failing) {
                tracing::info!(upstream = %host, addr = %next, "the upstream resolves again");
            }
        }
        Ok(_) => record_failure(
            addr,
            host,
            &io::Error::new(io::ErrorKind::NotFound, "no address"),
            failing,
        ),
        Err(error) => record_failure(addr, host, &error, failing),
    }
}

/// Logs the first failed lookup of a streak.
fn record_failure(addr: &SharedAddr, host: &str, error: &io::Error, failing: &mut bool) {
    if std::mem::replace(failing, true) {
        return;
    }
    match addr.get() {
        Some(last) => {
            tracing::warn!(upstream = %host, %error, addr = %last, "cannot resolve the upstream; keeping its last address")
        }
        None => {
            tracing::warn!(upstream = %host, %error, "cannot resolve the upstream yet; its requests answer 502 until it resolves")
        }
    }
}

/// How long the gate waits on the app.
///
/// `connect` bounds every connection to the app. `read` bounds each wait for the app's
/// answer to a request whose answer the gate reads itself (the mediated baanx login);
/// requests proxied through stream for as long as the app takes, since websockets and
/// long polls may rightly stay quiet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    /// How long connecting to the app may take.
    pub connect: Duration,
    /// How long the app may stay silent while the gate waits for its answer.
    pub read: Duration,
}

impl UpstreamTimeouts {
    /// The default connect timeout: 5 s.
    pub const DEFAULT_CONNECT: Duration = Duration::from_secs(5);
    /// The default read timeout: 30 s.
    pub const DEFAULT_READ: Duration = Duration::from_secs(30);
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        UpstreamTimeouts {
            connect: UpstreamTimeouts::DEFAULT_CONNECT,
            read: UpstreamTimeouts::DEFAULT_READ,
        }
    }
}

/// How the edge proxy runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxySettings {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// The app behind the gate.
    pub upstream: Upstream,
    /// Worker threads.
    pub threads: usize,
    /// How long in-flight requests get to finish after SIGTERM or SIGINT.
    pub grace_period: Duration,
    /// How long the runtime then gets to stop.
    pub shutdown_timeout: Duration,
    /// How long a client has to send a whole request head.
    pub header_timeout: Duration,
    /// How long a kept-alive client connection may wait for its next request.
    pub keepalive_timeout: Duration,
    /// Client connections open at once, in all.
    pub max_connections: usize,
    /// Client connections open at once from one address.
    pub max_connections_per_ip: usize,
    /// How long the gate waits on the app.
    pub upstream_timeouts: UpstreamTimeouts,
    /// Where the Prometheus metrics are served (`[metrics] listen`); never when `None`.
    pub metrics_listen: Option<SocketAddr>,
    /// Whether the plain listener also takes HTTP/2 with prior knowledge (h2c), for a
    /// proxy or load balancer in front that speaks it.
    pub h2c: bool,
    /// The TLS listener (`[server.tls]`); none when `None`.
    pub tls: Option<super::TlsListener>,
    /// Several instances of the app (`[server] upstreams`); `upstream` is then the pool's
    /// [`primary`](super::UpstreamPool::primary).
    pub pool: Option<super::UpstreamPool>,
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_ip_literal_is_its_own_address() {
        let upstream = Upstream::named("10.0.0.7", 3000, Upstream::DEFAULT_DNS_INTERVAL);
        assert_eq!(upstream.current(), Some(addr("10.0.0.7:3000")));
        assert_eq!(upstream.dns_interval(), None);
        let upstream = Upstream::named("::1", 3000, Upstream::DEFAULT_DNS_INTERVAL);
        assert_eq!(upstream.current(), Some(addr("[::1]:3000")));
        assert_eq!(upstream.to_string(), "[::1]:3000");
    }

    #[test]
    fn a_host_name_is_not_looked_up_before_the_proxy_runs() {
        let upstream = Upstream::named("app.internal", 3000, Duration::from_secs(5));
        assert_eq!(upstream.current(), None);
        assert_eq!(upstream.addr.to_string(), "not resolved yet");
        assert_eq!(upstream.dns_interval(), Some(Duration::from_secs(5)));
    }

    #[test]
    fn lookups_keep_the_last_good_address_and_the_one_in_use() {
        let upstream = Upstream::named("app.internal", 3000, Duration::from_secs(5));
        let shared = &upstream.addr.0;
        let mut failing = false;
        let refused = || Err(io::Error::other("no DNS"));
        record_lookup(shared, "app.internal", refused(), &mut failing);
        assert!(failing);
        assert_eq!(upstream.current(), None);
        record_lookup(
            shared,
            "app.internal",
            Ok(vec![addr("10.0.0.1:3000")]),
            &mut failing,
        );
        assert!(!failing);
        assert_eq!(upstream.current(), Some(addr("10.0.0.1:3000")));
        record_lookup(shared, "app.internal", refused(), &mut failing);
        record_lookup(shared, "app.internal", Ok(Vec::new()), &mut failing);
        assert_eq!(upstream.current(), Some(addr("10.0.0.1:3000")));
        // Still among the answers: kept, even when not first.
        let both = vec![addr("10.0.0.2:3000"), addr("10.0.0.1:3000")];
        record_lookup(shared, "app.internal", Ok(both), &mut failing);
        assert_eq!(upstream.current(), Some(addr("10.0.0.1:3000")));
        record_lookup(
            shared,
            "app.internal",
            Ok(vec![addr("10.0.0.3:3000")]),
            &mut failing,
        );
        assert_eq!(upstream.current(), Some(addr("10.0.0.3:3000")));
    }

    #[tokio::test]
    async fn the_address_follows_dns_until_the_upstream_is_dropped() {
        let upstream = Upstream::named("app.internal", 3000, Duration::from_millis(10));
        let answers = Arc::new(Mutex::new(VecDeque::from([
            Err(io::Error::other("not ready")),
            Ok(vec![addr("10.0.0.1:3000")]),
            Ok(vec![addr("10.0.0.2:3000")]),
        ])));
        let calls = Arc::new(Mutex::new(0usize));
        let lookup = {
            let (answers, calls) = (answers.clone(), calls.clone());
            move |host: String, port: u16| {
                assert_eq!((host.as_str(), port), ("app.internal", 3000));
                *calls.lock().unwrap() += 1;
                let answer = answers.lock().unwrap().pop_front();
                async move { answer.unwrap_or_else(|| Ok(vec![addr("10.0.0.2:3000")])) }
            }
        };
        let task = tokio::spawn(resolve_while_used(
            Arc::downgrade(&upstream.addr.0),
            upstream.host.clone(),
            upstream.port,
            lookup,
        ));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while upstream.current() != Some(addr("10.0.0.2:3000")) {
            assert!(tokio::time::Instant::now() < deadline, "never re-resolved");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(*calls.lock().unwrap() >= 3);
        drop(upstream);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the lookups stop with the last upstream")
            .unwrap();
    }
}
