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
}
