//! How the edge proxy runs: where it listens, the app behind it, its threads, timeouts
//! and connection bounds. Read from the config file's `[server]` section.

use std::net::SocketAddr;
use std::time::Duration;

/// Where the edge proxy sends requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// The address, resolved once when the config is read.
    pub addr: SocketAddr,
    /// The host name as written (for SNI and logs).
    pub host: String,
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
}
