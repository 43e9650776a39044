//! `[server]`, as the edge proxy reads it: where it listens, the app behind it, threads,
//! shutdown and connection bounds. The request limits and trusted proxies written here
//! belong to the HTTP front (`http.rs`), the default tenant to `tenants.rs`.
//!
//! The section is checked in every build, so a file is judged the same everywhere; only
//! a build with the `proxy` feature goes on to use it. Nothing here looks a name up: the
//! proxy resolves the upstream's host name once it runs, and again as DNS changes.

use std::net::SocketAddr;
use std::time::Duration;

use toml::Spanned;

use super::schema::{ConfigDuration, ServerSection, TlsSection};
use super::{ConfigError, Place, Source};

#[cfg(feature = "proxy")]
use crate::pingora::{ProxySettings, Upstream, UpstreamPool, UpstreamTimeouts, UpstreamTls};
// The TLS listener's settings: its certificates, read and checked here.
#[cfg(feature = "proxy")]
use crate::pingora::{Certificate, CertificateError, Certificates, TlsListener};

/// `[server]`, checked.
#[cfg_attr(not(feature = "proxy"), allow(dead_code))]
pub(super) struct ServerModel {
    listen: SocketAddr,
    /// The upstream's host, without IPv6 brackets.
    upstream_host: String,
    upstream_port: u16,
    upstream_dns_interval: Duration,
    /// `Some`: an https upstream, with its CA file (relative to the config's folder) if
    /// one is given and where it is written.
    upstream_tls: Option<Option<(String, Place)>>,
    /// `Some`: several instances (`upstreams`); the host and port above are the first's.
    pool: Option<PoolModel>,
    /// `None`: one per available core.
    threads: Option<usize>,
    grace_period: Duration,
    shutdown_timeout: Duration,
    header_timeout: Duration,
    keepalive_timeout: Duration,
    upstream_connect_timeout: Duration,
    upstream_read_timeout: Duration,
    max_connections: usize,
    max_connections_per_ip: usize,
    h2c: bool,
    tls: Option<TlsModel>,
}

/// `[server.tls]`, checked; the PEM files are read when the settings are built.
#[cfg_attr(not(feature = "proxy"), allow(dead_code))]
struct TlsModel {
    listen: SocketAddr,
    /// Each certificate's and key's path (relative to the config's folder), and where
    /// each is written.
    certificates: Vec<[(String, Place); 2]>,
    hsts: Option<http::HeaderValue>,
    redirect_http: bool,
}

/// The scheme (`true`: https), host (without IPv6 brackets) and port of the upstream URL
/// `text`, written at `place`.
fn parse_upstream(
    text: &str,
    place: &Place,
    source: &Source<'_>,
) -> Result<(bool, String, u16), ConfigError> {
    let invalid_upstream = |message: String| source.at(place, message);
    let url: reqwest::Url = text
        .parse()
        .map_err(|e| invalid_upstream(format!("invalid URL: {e}")))?;
    let https = match url.scheme() {
        "http" => false,
        "https" => true,
        scheme => {
            return Err(invalid_upstream(format!(
                "scheme `{scheme}` is not supported: write http:// or https://"
            )));
        }
    };
    let upstream_host = url
        .host_str()
        .ok_or_else(|| invalid_upstream("the URL has no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    // The gate forwards each request's own path and query; a base path would be silently
    // dropped, and credentials in the URL would never be sent, so both are refused.
    if url.path() != "/" {
        return Err(invalid_upstream(format!(
            "the path `{}` is not supported: the gate forwards each request's own path unchanged; write only the app's address, like http://{}",
            url.path(),
            authority(&url)
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid_upstream(format!(
            "a query or fragment is not supported: the gate forwards each request's own path and query unchanged; write only the app's address, like http://{}",
            authority(&url)
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid_upstream(format!(
            "a user name or password is not supported: the gate sends the app no credentials of its own; write only the app's address, like http://{}",
            authority(&url)
        )));
    }
    let port = url.port_or_known_default().unwrap_or(80);
    Ok((https, upstream_host, port))
}

/// `upstreams`' instances, balance and check interval; `None` for a single `upstream`,
/// which takes neither key.
fn pool_model(
    server: &ServerSection,
    instances: Vec<(bool, String, u16)>,
    source: &Source<'_>,
) -> Result<Option<PoolModel>, ConfigError> {
    if server.upstreams.is_empty() {
        let stray = [
            (
                "server.upstream_balance",
                server.upstream_balance.as_ref().map(|b| b.span()),
            ),
            (
                "server.upstream_health_interval",
                server.upstream_health_interval.as_ref().map(|d| d.span()),
            ),
            (
                "server.upstream_health_path",
                server.upstream_health_path.as_ref().map(|p| p.span()),
            ),
        ];
        if let Some((key, span)) = stray.into_iter().find(|(_, span)| span.is_some()) {
            return Err(source.invalid(key, span, "only for several instances (`upstreams`)"));
        }
        return Ok(None);
    }
    let balance = match server.upstream_balance.as_ref() {
        None => Balance::RoundRobin,
        Some(text) => match text.get_ref().as_str() {
            "round_robin" => Balance::RoundRobin,
            "least_connections" => Balance::LeastConnections,
            other => {
                return Err(source.invalid(
                    "server.upstream_balance",
                    Some(text.span()),
                    format!("`{other}`: write \"round_robin\" or \"least_connections\""),
                ));
            }
        },
    };
    let health_interval = bounded_duration(
        "server.upstream_health_interval",
        &server.upstream_health_interval,
        5,
        3600,
        source,
    )?;
    let health_path = server.upstream_health_path.as_ref().map(|path| {
        let text = path.get_ref();
        let invalid = |message: &str| {
            source.invalid("server.upstream_health_path", Some(path.span()), message)
        };
        // Written into the check's request line as is: nothing that could end it.
        if !text.starts_with('/') || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid("a path like /health: printable, no spaces"));
        }
        Ok(text.clone())
    });
    let health_path = health_path.transpose()?;
    Ok(Some(PoolModel {
        health_path,
        instances: instances
            .into_iter()
            .map(|(_, host, port)| (host, port))
            .collect(),
        balance,
        health_interval,
    }))
}

/// `upstreams`, checked.
#[cfg_attr(not(feature = "proxy"), allow(dead_code))]
struct PoolModel {
    health_path: Option<String>,
    instances: Vec<(String, u16)>,
    balance: Balance,
    health_interval: Duration,
}

/// How a pool balances, in every build (the proxy's own type needs the feature).
#[cfg_attr(not(feature = "proxy"), allow(dead_code))]
enum Balance {
    RoundRobin,
    LeastConnections,
}

/// Checks the proxy's part of `[server]`.
pub(super) fn check(
    server: &ServerSection,
    source: &Source<'_>,
) -> Result<ServerModel, ConfigError> {
    let listen: SocketAddr = server.listen.get_ref().parse().map_err(|_| {
        source.invalid(
            "server.listen",
            Some(server.listen.span()),
            format!(
                "`{}` is not an address like 127.0.0.1:8080",
                server.listen.get_ref()
            ),
        )
    })?;
    let upstream_place = source.place("server.upstream", Some(server.upstream.span()));
    let written: Vec<(&str, Place)> = if server.upstreams.is_empty() {
        vec![(server.upstream.get_ref().as_str(), upstream_place)]
    } else {
        // A default `upstream` has no place in the file: one written beside `upstreams`
        // leaves it unclear which the gate would use.
        if server.upstream.span() != (0..0) {
            return Err(source.at(
                &upstream_place,
                "write either `upstream` (one app) or `upstreams` (several instances), not both",
            ));
        }
        server
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, url)| {
                let key = format!("server.upstreams[{i}]");
                (url.get_ref().as_str(), source.place(&key, Some(url.span())))
            })
            .collect()
    };
    let mut instances = Vec::with_capacity(written.len());
    for (text, place) in &written {
        let (https, host, port) = parse_upstream(text, place, source)?;
        if instances
            .first()
            .is_some_and(|(first, _, _): &(bool, String, u16)| *first != https)
        {
            return Err(source.at(place, "every instance must have the same scheme"));
        }
        instances.push((https, host, port));
    }
    let (https, upstream_host, upstream_port) = instances[0].clone();
    let pool = pool_model(server, instances, source)?;
    let ca_file = server.upstream_ca_file.as_ref().map(|file| {
        let place = source.place("server.upstream_ca_file", Some(file.span()));
        (file.get_ref().clone(), place)
    });
    let upstream_tls = match (https, ca_file) {
        (true, ca_file) => Some(ca_file),
        (false, None) => None,
        // A CA file for a plain upstream would verify nothing: surely a mistake.
        (false, Some((_, place))) => {
            return Err(source.at(
                &place,
                "the upstream is plain http: a CA file is only for an https upstream",
            ));
        }
    };
    // A name may move (a container restarted, a service failed over): looked up this often.
    let upstream_dns_interval = bounded_duration(
        "server.upstream_dns_interval",
        &server.upstream_dns_interval,
        30,
        3600,
        source,
    )?;
    let threads = match &server.threads {
        Some(threads) if *threads.get_ref() == 0 || *threads.get_ref() > 1024 => {
            return Err(source.invalid(
                "server.threads",
                Some(threads.span()),
                "must be between 1 and 1024",
            ));
        }
        Some(threads) => Some(*threads.get_ref()),
        None => None,
    };
    // Every slow or numerous client is bounded, so no bound may be zero (no connection
    // could work) or unbounded in effect. A head slower than 5 minutes is an attack, not
    // a client.
    let header_timeout = bounded_duration(
        "server.header_timeout",
        &server.header_timeout,
        10,
        300,
        source,
    )?;
    let keepalive_timeout = bounded_duration(
        "server.keepalive_timeout",
        &server.keepalive_timeout,
        60,
        3600,
        source,
    )?;
    // A stuck app must not hold a client forever; one slower than these is down.
    let upstream_connect_timeout = bounded_duration(
        "server.upstream_connect_timeout",
        &server.upstream_connect_timeout,
        5,
        60,
        source,
    )?;
    let upstream_read_timeout = bounded_duration(
        "server.upstream_read_timeout",
        &server.upstream_read_timeout,
        30,
        600,
        source,
    )?;
    let max_connections = bounded_count(
        "server.max_connections",
        &server.max_connections,
        (4096, 1 << 20),
        "1048576",
        source,
    )?;
    let max_connections_per_ip = bounded_count(
        "server.max_connections_per_ip",
        &server.max_connections_per_ip,
        (256.min(max_connections), max_connections),
        &format!("server.max_connections ({max_connections})"),
        source,
    )?;
    let tls = match &server.tls {
        Some(tls) => Some(check_tls(tls.get_ref(), tls.span(), listen, source)?),
        None => None,
    };
    Ok(ServerModel {
        listen,
        upstream_host,
        upstream_port,
        upstream_dns_interval,
        upstream_tls,
        pool,
        threads,
        grace_period: server.grace_period.map_or(Duration::from_secs(5), |d| d.0),
        shutdown_timeout: server
            .shutdown_timeout
            .map_or(Duration::from_secs(5), |d| d.0),
        header_timeout,
        keepalive_timeout,
        upstream_connect_timeout,
        upstream_read_timeout,
        max_connections,
        max_connections_per_ip,
        h2c: server.h2c,
        tls,
    })
}

/// Whether two listen addresses would take the same connections: one port, and one
/// address, or either the wildcard. An IPv4-mapped IPv6 address (`[::ffff:127.0.0.1]`) is
/// the IPv4 address it maps, as the kernel binds it.
pub(super) fn listen_overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    let (a_ip, b_ip) = (a.ip().to_canonical(), b.ip().to_canonical());
    a.port() == b.port() && (a_ip == b_ip || a_ip.is_unspecified() || b_ip.is_unspecified())
}

/// Checks `[server.tls]`, whose table starts at `span`; nothing is read yet.
fn check_tls(
    tls: &TlsSection,
    span: std::ops::Range<usize>,
    plain: SocketAddr,
    source: &Source<'_>,
) -> Result<TlsModel, ConfigError> {
    let listen: SocketAddr = tls.listen.get_ref().parse().map_err(|_| {
        source.invalid(
            "server.tls.listen",
            Some(tls.listen.span()),
            format!(
                "`{}` is not an address like 0.0.0.0:8443",
                tls.listen.get_ref()
            ),
        )
    })?;
    if listen_overlaps(listen, plain) {
        return Err(source.invalid(
            "server.tls.listen",
            Some(tls.listen.span()),
            format!("{listen} overlaps server.listen ({plain}): TLS needs a port of its own"),
        ));
    }
    if tls.certificates.is_empty() {
        return Err(source.invalid(
            "server.tls.certificates",
            Some(span),
            "a TLS listener needs at least one [[server.tls.certificates]] with `cert` and `key`",
        ));
    }
    let certificates = tls
        .certificates
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let entry = entry.get_ref();
            let key = |field: &str| format!("server.tls.certificates[{i}].{field}");
            [
                (
                    entry.cert.get_ref().clone(),
                    source.place(&key("cert"), Some(entry.cert.span())),
                ),
                (
                    entry.key.get_ref().clone(),
                    source.place(&key("key"), Some(entry.key.span())),
                ),
            ]
        })
        .collect();
    let hsts = match &tls.hsts {
        None => None,
        Some(value) => {
            let text = value.get_ref().trim();
            // Browsers ignore a header without max-age; a typo must not pass for HSTS on.
            let max_age = text
                .split(';')
                .map(str::trim)
                .find_map(|part| part.strip_prefix("max-age="))
                .and_then(|secs| secs.trim_matches('"').parse::<u64>().ok());
            let header = http::HeaderValue::from_str(text).ok();
            match (max_age, header) {
                (Some(_), Some(header)) => Some(header),
                _ => {
                    return Err(source.invalid(
                        "server.tls.hsts",
                        Some(value.span()),
                        format!(
                            "`{text}` is not a Strict-Transport-Security value like \"max-age=31536000; includeSubDomains\""
                        ),
                    ));
                }
            }
        }
    };
    Ok(TlsModel {
        listen,
        certificates,
        hsts,
        redirect_http: tls.redirect_http,
    })
}
/// `host:port` of `url`, brackets kept, for messages.
fn authority(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// A duration between 1s and `max_secs`; `default_secs` when not written.
fn bounded_duration(
    key: &str,
    value: &Option<Spanned<ConfigDuration>>,
    default_secs: u64,
    max_secs: u64,
    source: &Source<'_>,
) -> Result<Duration, ConfigError> {
    let Some(value) = value else {
        return Ok(Duration::from_secs(default_secs));
    };
    let duration = value.get_ref().0;
    let max = Duration::from_secs(max_secs);
    if duration < Duration::from_secs(1) || duration > max {
        return Err(source.invalid(
            key,
            Some(value.span()),
            format!("must be between 1s and {}", humantime::format_duration(max)),
        ));
    }
    Ok(duration)
}

/// A count between 1 and `max` (named `max_name` in the error); `default` when not
/// written.
fn bounded_count(
    key: &str,
    value: &Option<Spanned<usize>>,
    (default, max): (usize, usize),
    max_name: &str,
    source: &Source<'_>,
) -> Result<usize, ConfigError> {
    match value {
        None => Ok(default),
        Some(value) if *value.get_ref() == 0 || *value.get_ref() > max => Err(source.invalid(
            key,
            Some(value.span()),
            format!("must be between 1 and {max_name}"),
        )),
        Some(value) => Ok(*value.get_ref()),
    }
}

#[cfg(feature = "proxy")]
impl ServerModel {
    /// The proxy's settings. Infallible, and without I/O: the upstream's host name is
    /// resolved by the proxy once it runs, so a start before DNS is ready still serves.
    pub(super) fn build(self, source: &Source<'_>) -> Result<ProxySettings, ConfigError> {
        let tls = match self.upstream_tls {
            None => None,
            Some(None) => Some(UpstreamTls::system_roots()),
            Some(Some((file, place))) => {
                // Read and checked here, so that a bad file stops the start (or a reload)
                // naming its key, not the first request.
                let full = source.dir.join(&file);
                let pem = std::fs::read(&full).map_err(|e| {
                    source.at(&place, format!("cannot read {}: {e}", full.display()))
                })?;
                let tls = UpstreamTls::from_ca_pem(&pem)
                    .map_err(|e| source.at(&place, format!("{file}: {e}")))?;
                Some(tls)
            }
        };
        let interval = self.upstream_dns_interval;
        let make = |host: String, port: u16| {
            let upstream = Upstream::named(host, port, interval);
            match &tls {
                Some(tls) => upstream.with_tls(tls.clone()),
                None => upstream,
            }
        };
        let pool = self.pool.map(|pool| {
            let balance = match pool.balance {
                Balance::RoundRobin => crate::pingora::Balance::RoundRobin,
                Balance::LeastConnections => crate::pingora::Balance::LeastConnections,
            };
            let instances = pool
                .instances
                .into_iter()
                .map(|(host, port)| make(host, port))
                .collect();
            let made = UpstreamPool::new(instances, balance, pool.health_interval);
            match pool.health_path {
                Some(path) => made.with_health_path(path),
                None => made,
            }
        });
        let upstream = match &pool {
            Some(pool) => pool.primary().clone(),
            None => make(self.upstream_host, self.upstream_port),
        };
        Ok(ProxySettings {
            listen: self.listen,
            upstream,
            threads: self
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            grace_period: self.grace_period,
            shutdown_timeout: self.shutdown_timeout,
            header_timeout: self.header_timeout,
            keepalive_timeout: self.keepalive_timeout,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            upstream_timeouts: UpstreamTimeouts {
                connect: self.upstream_connect_timeout,
                read: self.upstream_read_timeout,
            },
            // Set from `[metrics]` once that section is read.
            metrics_listen: None,
            h2c: self.h2c,
            tls: self.tls.map(|tls| tls.build(source)).transpose()?,
            pool,
        })
    }
}

#[cfg(feature = "proxy")]
impl TlsModel {
    /// Reads and checks every certificate and key, so that a bad file stops the start (or
    /// a reload) here, naming its key, and never the TLS listener later.
    fn build(self, source: &Source<'_>) -> Result<TlsListener, ConfigError> {
        let mut list = Vec::with_capacity(self.certificates.len());
        for [(cert, cert_place), (key, key_place)] in &self.certificates {
            let read = |path: &str, place: &Place| {
                let full = source.dir.join(path);
                std::fs::read(&full)
                    .map_err(|e| source.at(place, format!("cannot read {}: {e}", full.display())))
            };
            let (cert_pem, key_pem) = (read(cert, cert_place)?, read(key, key_place)?);
            let certificate = Certificate::from_pem(&cert_pem, &key_pem).map_err(|e| match e {
                CertificateError::Certificate(why) => {
                    source.at(cert_place, format!("{cert}: {why}"))
                }
                CertificateError::Key(why) => source.at(key_place, format!("{key}: {why}")),
            })?;
            list.push(certificate);
        }
        Ok(TlsListener {
            listen: self.listen,
            certificates: Certificates::new(list),
            hsts: self.hsts,
            redirect_http: self.redirect_http,
        })
    }
}
