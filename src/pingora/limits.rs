//! How many client connections the proxy holds, and for how long a head or an idle
//! connection may keep one: [`ConnectionLimits`], and the counts behind the caps that
//! [`GuardedApp`](super::GuardedApp) enforces.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::ProxySettings;

/// Bounds on the proxy's client connections (`[server]` in the config file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// How long a client has to send a whole request head: from the connection's start,
    /// or on a kept-alive connection from the request's first byte.
    pub header_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request's first byte.
    pub keepalive_timeout: Duration,
    /// Client connections open at once, in all. Lowered at start to what the process's
    /// open-file limit allows.
    pub max_connections: usize,
    /// Client connections open at once from one address (IPv6: one /64).
    pub max_connections_per_ip: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            max_connections: 4096,
            max_connections_per_ip: 256,
        }
    }
}

impl From<&ProxySettings> for ConnectionLimits {
    fn from(settings: &ProxySettings) -> Self {
        ConnectionLimits {
            header_timeout: settings.header_timeout,
            keepalive_timeout: settings.keepalive_timeout,
            max_connections: settings.max_connections,
            max_connections_per_ip: settings.max_connections_per_ip,
        }
    }
}

/// Descriptors kept for everything but client connections: listeners, the runtime, log
/// files, the store's and delivery's connections.
const RESERVED_DESCRIPTORS: usize = 64;

/// The most client connections that `open_files` descriptors carry: each proxied request
/// holds a client and an upstream descriptor.
fn connections_for_descriptors(open_files: u64) -> usize {
    let open_files = usize::try_from(open_files).unwrap_or(usize::MAX);
    (open_files.saturating_sub(RESERVED_DESCRIPTORS) / 2).max(1)
}

/// The soft open-file limit, from `/proc/self/limits` (Linux); `None` when unlimited or
/// unknown.
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_file_limit(&limits)
}

pub(super) fn parse_open_file_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    // "Max open files            1024                 524288               files"
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl ConnectionLimits {
    /// These limits with `max_connections` lowered to what the process's open-file limit
    /// carries, with a warning when it is lowered.
    pub fn fitted_to_open_file_limit(self) -> ConnectionLimits {
        match open_file_limit() {
            Some(open_files) => self.fitted_to(open_files),
            None => self,
        }
    }

    pub(super) fn fitted_to(mut self, open_files: u64) -> ConnectionLimits {
        let carried = connections_for_descriptors(open_files);
        if carried < self.max_connections {
            // Past the descriptor limit accept() fails and every client, health checks
            // included, waits; a cap below it refuses the excess with a clear answer.
            tracing::warn!(
                max_connections = self.max_connections,
                lowered_to = carried,
                open_file_limit = open_files,
                "server.max_connections lowered to fit the open-file limit (raise it with `ulimit -n` or LimitNOFILE)"
            );
            self.max_connections = carried;
        }
        self
    }
}

/// The counts behind the caps.
#[derive(Debug)]
pub(super) struct Counter {
    pub(super) limits: ConnectionLimits,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// Which cap refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The cap on all connections.
    Total,
    /// The cap on one client address.
    PerIp,
}

/// The address a per-client cap counts against.
pub(super) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            // One host or site gets a whole /64: counting its addresses one by one would
            // give it 2^64 caps.
            None => IpAddr::V6(Ipv6Addr::from(
                u128::from(v6) & 0xffff_ffff_ffff_ffff_0000_0000_0000_0000,
            )),
        },
    }
}

impl Counter {
    /// Counts under `limits`, with nothing open yet.
    pub(super) fn new(limits: ConnectionLimits) -> Counter {
        Counter {
            limits,
            open: Mutex::default(),
        }
    }

    /// Admits a connection from `ip` (`None`: no address known, counted in the total
    /// only), or names the cap it is over.
    pub(super) fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Permit, Refusal> {
        let key = ip.map(client_key);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.total >= self.limits.max_connections {
            return Err(Refusal::Total);
        }
        if let Some(key) = key {
            let count = open.by_ip.entry(key).or_insert(0);
            if *count >= self.limits.max_connections_per_ip {
                return Err(Refusal::PerIp);
            }
            *count += 1;
        }
        open.total += 1;
        Ok(Permit {
            counter: self.clone(),
            key,
        })
    }
}

/// One admitted connection; gives its place back when dropped, with the connection.
#[derive(Debug)]
pub(super) struct Permit {
    counter: Arc<Counter>,
    key: Option<IpAddr>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self
            .counter
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(key) = self.key
            && let Some(count) = open.by_ip.get_mut(&key)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                // Forgotten at zero, so the map holds only addresses with open connections.
                open.by_ip.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            max_connections: 3,
            max_connections_per_ip: 2,
        }
    }

    fn counter(limits: ConnectionLimits) -> Arc<Counter> {
        Arc::new(Counter::new(limits))
    }

    #[test]
    fn caps_count_in_total_and_per_address() {
        let counter = counter(limits());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = counter.admit(Some(a)).unwrap();
        let _second = counter.admit(Some(a)).unwrap();
        assert_eq!(counter.admit(Some(a)).unwrap_err(), Refusal::PerIp);
        let _third = counter.admit(Some(b)).unwrap();
        assert_eq!(counter.admit(Some(b)).unwrap_err(), Refusal::Total);
        drop(first);
        let _again = counter.admit(Some(a)).unwrap();
        assert_eq!(counter.admit(None).unwrap_err(), Refusal::Total);
    }

    #[test]
    fn ipv6_clients_count_per_64_and_mapped_ipv4_as_ipv4() {
        let counter = counter(limits());
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let two: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let _a = counter.admit(Some(one)).unwrap();
        let _b = counter.admit(Some(two)).unwrap();
        assert_eq!(counter.admit(Some(one)).unwrap_err(), Refusal::PerIp);
        assert_eq!(
            client_key("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn the_cap_fits_the_open_file_limit() {
        let limits = ConnectionLimits::default();
        assert_eq!(limits.fitted_to(256).max_connections, 96);
        assert_eq!(limits.fitted_to(1 << 20).max_connections, 4096);
        assert_eq!(limits.fitted_to(10).max_connections, 1);
        let text = "Limit                     Soft Limit           Hard Limit           Units\n\
                    Max open files            1024                 524288               files\n";
        assert_eq!(parse_open_file_limit(text), Some(1024));
        assert_eq!(
            parse_open_file_limit("Max open files  unlimited  unlimited  files\n"),
            None
        );
    }
}
