//! Config-file driven deployment: one TOML file describes endpoints, tenants, delivery,
//! keys, limits and protected paths. The file is parsed into [`schema`] types, checked,
//! and turned into a [`GateBuilder`]; every error names the key and, where it has one,
//! the line.
//!
//! ```no_run
//! let config = otpgate::config::Config::from_file("config/otpgate.toml".as_ref())?;
//! let gate = config.build()?;
//! # Ok::<(), otpgate::config::ConfigError>(())
//! ```

use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use crate::delivery::{
    ConsoleSender, OutboxPolicy, Sender, Senders, SmtpSecurity, SmtpSender, SmtpSettings, Template,
    TemplateScope, Templates, TwilioFrom, TwilioSender, WebhookSender,
};
use crate::engine::{BuildError, GateBuilder, IpLimits, RevocationFallback, Tenant};
use crate::http::{
    CookieSettings, EndpointMount, Front, HttpSettings, IdentityHeaders, PathPolicy,
};
use crate::otp::{CodeFormat, OtpPolicy, ServerSecret};
use crate::store::{MemoryStore, Store};
use crate::token::{SigningAlgorithm, SigningKey, TokenSettings};

mod schema;

pub use crate::pingora::{ProxySettings, Upstream};

use schema::{
    EnvString, FileConfig, RevocationFallbackName, SecurityKind, SenderKind, SenderSection,
    StoreBackend, StoreSection,
};

/// The documented default configuration, embedded in the binary.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/otpgate.toml");

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key, or a value of the wrong form. The message names
    /// the key and shows the line.
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: String,
        /// toml's message, with line, column and the offending line.
        message: String,
    },
    /// A value that parses but cannot be used.
    #[error("{file}{}: `{key}`: {message}", .line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        /// The file.
        file: String,
        /// The line, when known.
        line: Option<usize>,
        /// The key, dotted.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// A parsed, checked configuration.
pub struct Config {
    /// The edge proxy's settings (`[server]`).
    pub proxy: ProxySettings,
    /// The HTTP front's settings (`[server]` limits, `[[endpoints]]`, `[[protect]]`,
    /// `[identity]`, `[paths]`, the cookie).
    pub http: HttpSettings,
    builder: GateBuilder,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("proxy", &self.proxy)
            .finish_non_exhaustive()
    }
}

struct Source<'a> {
    name: &'a str,
    text: &'a str,
    dir: &'a Path,
}

impl Source<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        self.text[..span.start.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn invalid(
        &self,
        key: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            file: self.name.to_owned(),
            line: span.map(|s| self.line(&s)),
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// A protected prefix, which must be a canonical path: requests are compared in canonical
/// form, so `api/` or `/api//` would protect nothing.
fn protect_prefix(
    source: &Source<'_>,
    prefix: &toml::Spanned<String>,
    paths: &PathPolicy,
) -> Result<String, ConfigError> {
    let text = prefix.get_ref();
    let canonical = crate::http::target::canonicalize(text.as_bytes(), false, paths)
        .ok()
        .filter(|target| target.query().is_none())
        .map(|target| target.path().to_owned());
    match canonical {
        Some(path) if path == *text || path == format!("{text}/") => Ok(text.clone()),
        _ => Err(source.invalid(
            "protect.prefix",
            Some(prefix.span()),
            format!("`{text}` is not a canonical path; write it like \"/api/\""),
        )),
    }
}

/// A count that must be at least 1.
fn positive(
    source: &Source<'_>,
    key: &str,
    value: &toml::Spanned<usize>,
) -> Result<usize, ConfigError> {
    match *value.get_ref() {
        0 => Err(source.invalid(key, Some(value.span()), "must be at least 1")),
        count => Ok(count),
    }
}

impl Config {
    /// Reads and checks the file at `path`. Relative paths in it (the private key) are
    /// taken from the working directory.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string(), Path::new("."))
    }

    /// The embedded default configuration, with key paths taken from `dir`.
    pub fn embedded_default(dir: &Path) -> Result<Config, ConfigError> {
        Config::parse(DEFAULT_CONFIG, "<embedded default config>", dir)
    }

    /// Parses and checks `text`, named `name` in errors.
    pub fn parse(text: &str, name: &str, dir: &Path) -> Result<Config, ConfigError> {
        let source = Source { name, text, dir };
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: name.to_owned(),
            message: e.to_string(),
        })?;
        Config::from_schema(file, &source)
    }

    fn from_schema(file: FileConfig, source: &Source<'_>) -> Result<Config, ConfigError> {
        let mut builder = GateBuilder::default().default_tenant(&file.server.default_tenant);

        // [otp]
        let otp = &file.otp;
        let defaults = OtpPolicy::default();
        let format = match &otp.length {
            Some(length) => CodeFormat::new(*length.get_ref(), otp.alphabet.unwrap_or_default())
                .map_err(|e| source.invalid("otp.length", Some(length.span()), e.to_string()))?,
            None => CodeFormat::new(defaults.format.length(), otp.alphabet.unwrap_or_default())
                .map_err(|e| source.invalid("otp.length", None, e.to_string()))?,
        };
        let failure_budget = match &otp.failure_budget {
            Some(budget) if !(1..=100).contains(budget.get_ref()) => {
                return Err(source.invalid(
                    "otp.failure_budget",
                    Some(budget.span()),
                    "must be between 1 and 100 (NIST SP 800-63B caps consecutive failures at 100)",
                ));
            }
            Some(budget) => *budget.get_ref(),
            None => defaults.failure_budget,
        };
        let max_attempts = otp.max_attempts.unwrap_or(defaults.max_attempts);
        if max_attempts == 0 {
            return Err(source.invalid("otp.max_attempts", None, "must be at least 1"));
        }
        let policy = OtpPolicy {
            format,
            ttl: otp.ttl.map_or(defaults.ttl, |d| d.0),
            max_attempts,
            resend_cooldown: otp
                .resend_cooldown
                .map_or(defaults.resend_cooldown, |d| d.0),
            sends_per_identifier: otp
                .sends_per_identifier
                .map_or(defaults.sends_per_identifier, |r| r.0),
            failure_budget,
            backoff: crate::otp::Backoff {
                free_failures: max_attempts,
                ..defaults.backoff
            },
            failure_memory: otp.failure_memory.map_or(defaults.failure_memory, |d| d.0),
        };
        builder = builder.policy(policy);
        let ip_defaults = IpLimits::default();
        builder = builder.ip_limits(IpLimits {
            sends: otp.sends_per_ip.map_or(ip_defaults.sends, |r| r.0),
            verifies: otp.verifies_per_ip.map_or(ip_defaults.verifies, |r| r.0),
        });
        let secret = match &otp.secret {
            Some(secret) => {
                let bytes = secret.get_ref().0.as_bytes().to_vec();
                let secret_value = ServerSecret::new(bytes).map_err(|e| {
                    source.invalid("otp.secret", Some(secret.span()), e.to_string())
                })?;
                builder = builder.secret(secret_value.clone());
                Some(secret_value)
            }
            None => None,
        };

        // [token]
        let token = &file.token;
        let algorithm = match &token.algorithm {
            Some(name) => name
                .get_ref()
                .parse::<SigningAlgorithm>()
                .map_err(|e| source.invalid("token.algorithm", Some(name.span()), e.to_string()))?,
            None => SigningAlgorithm::EdDSA,
        };
        let key = match (algorithm, &token.private_key, &token.secret) {
            (SigningAlgorithm::HS256, _, Some(secret)) => Some(
                SigningKey::from_hmac_secret(secret.get_ref().0.as_bytes()).map_err(|e| {
                    source.invalid("token.secret", Some(secret.span()), e.to_string())
                })?,
            ),
            (SigningAlgorithm::HS256, _, None) => {
                return Err(source.invalid(
                    "token.secret",
                    None,
                    "HS256 needs token.secret (at least 32 bytes)",
                ));
            }
            (_, Some(path), _) => {
                let full = source.dir.join(path.get_ref());
                let pem = std::fs::read(&full).map_err(|e| {
                    source.invalid(
                        "token.private_key",
                        Some(path.span()),
                        format!(
                            "cannot read {}: {e} (make one with `otpgate keygen --algorithm {algorithm:?} --out {}`)",
                            full.display(),
                            path.get_ref()
                        ),
                    )
                })?;
                Some(SigningKey::from_pem(algorithm, &pem).map_err(|e| {
                    source.invalid("token.private_key", Some(path.span()), e.to_string())
                })?)
            }
            (_, None, _) => None,
        };
        let has_key = key.is_some();
        if let Some(key) = key {
            builder = builder.signing_key(key);
        } else if algorithm != SigningAlgorithm::EdDSA {
            return Err(source.invalid(
                "token.private_key",
                None,
                format!("{algorithm:?} needs token.private_key"),
            ));
        }
        // [store], after [otp] and [token]: a shared store needs their shared secrets.
        builder = builder.store(build_store(&file.store, source, secret.as_ref(), has_key)?);
        builder = builder.revocation_fallback(match file.store.revocation_fallback {
            None | Some(RevocationFallbackName::Allow) => RevocationFallback::Allow,
            Some(RevocationFallbackName::Deny) => RevocationFallback::Deny,
        });

        let token_defaults = TokenSettings::default();
        builder = builder.token_settings(TokenSettings {
            issuer: token.issuer.clone().unwrap_or(token_defaults.issuer),
            audience: token.audience.clone().unwrap_or(token_defaults.audience),
            ttl: token.ttl.map_or(token_defaults.ttl, |d| d.0),
            leeway: token.leeway.map_or(token_defaults.leeway, |d| d.0),
            cache_entries: token_defaults.cache_entries,
            refresh_ttl: match token.refresh_ttl {
                // "0s" turns refresh tokens off.
                Some(d) if d.0.is_zero() => None,
                Some(d) => Some(d.0),
                None => token_defaults.refresh_ttl,
            },
            exchange_ttl: token
                .exchange_ttl
                .map_or(token_defaults.exchange_ttl, |d| d.0),
        });

        // [identity], [[protect]], [[endpoints]], [server]
        let header =
            |key: &str, value: &Option<toml::Spanned<String>>, default: HeaderName| match value {
                Some(name) => HeaderName::from_bytes(name.get_ref().as_bytes()).map_err(|_| {
                    source.invalid(
                        key,
                        Some(name.span()),
                        format!("`{}` is not a valid header name", name.get_ref()),
                    )
                }),
                None => Ok(default),
            };
        let identity_defaults = IdentityHeaders::default();
        let identity = IdentityHeaders {
            jwt: header(
                "identity.jwt_header",
                &file.identity.jwt_header,
                identity_defaults.jwt,
            )?,
            subject: header(
                "identity.subject_header",
                &file.identity.subject_header,
                identity_defaults.subject,
            )?,
            email: header(
                "identity.email_header",
                &file.identity.email_header,
                identity_defaults.email,
            )?,
            phone: header(
                "identity.phone_header",
                &file.identity.phone_header,
                identity_defaults.phone,
            )?,
            tenant: header(
                "identity.tenant_header",
                &file.identity.tenant_header,
                identity_defaults.tenant,
            )?,
            strip: file
                .identity
                .strip
                .clone()
                .unwrap_or(identity_defaults.strip),
            strip_reroute: file
                .identity
                .strip_reroute_headers
                .unwrap_or(identity_defaults.strip_reroute),
        };
        let endpoints = match &file.endpoints {
            Some(list) => list
                .iter()
                .map(|e| {
                    let dialect = e.dialect.get_ref().parse().map_err(|m: String| {
                        source.invalid("endpoints.dialect", Some(e.dialect.span()), m)
                    })?;
                    let assertion_header = match &e.assertion_header {
                        Some(name) => Some(
                            HeaderName::from_bytes(name.get_ref().as_bytes()).map_err(|_| {
                                source.invalid(
                                    "endpoints.assertion_header",
                                    Some(name.span()),
                                    format!("`{}` is not a valid header name", name.get_ref()),
                                )
                            })?,
                        ),
                        None => None,
                    };
                    Ok(EndpointMount {
                        dialect,
                        prefix: e.prefix.clone(),
                        client_keys: e
                            .client_keys
                            .iter()
                            .flatten()
                            .map(|k| k.0.clone())
                            .collect(),
                        assertion_header,
                    })
                })
                .collect::<Result<Vec<_>, ConfigError>>()?,
            None => HttpSettings::default().endpoints,
        };
        let paths = PathPolicy {
            case_sensitive: file.paths.case_sensitive,
            allow_path_params: file.paths.allow_path_params,
            allow_encoded_slashes: file.paths.allow_encoded_slashes,
        };
        let protect = file
            .protect
            .iter()
            .map(|section| protect_prefix(source, &section.prefix, &paths))
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let http = HttpSettings {
            endpoints,
            protect,
            identity,
            cookie: match &token.cookie {
                Some(name) if name.is_empty() => None,
                name => Some(CookieSettings {
                    name: name.clone().unwrap_or_else(|| "otpgate_session".into()),
                    secure: token.cookie_secure.unwrap_or(true),
                }),
            },
            body_limit: file.server.body_limit,
            paths,
            max_headers: positive(source, "server.max_headers", &file.server.max_headers)?,
            max_header_bytes: positive(
                source,
                "server.max_header_bytes",
                &file.server.max_header_bytes,
            )?,
            trusted_proxies: file.server.trusted_proxies.clone(),
            ..HttpSettings::default()
        };

        // [delivery]
        // With no [delivery] at all the builder's development default (console) applies.
        let delivery = &file.delivery;
        if delivery.email.is_some() || delivery.sms.is_some() {
            let (email, email_fallback) =
                senders(source, "delivery.email", delivery.email.as_ref())?;
            let (sms, sms_fallback) = senders(source, "delivery.sms", delivery.sms.as_ref())?;
            builder = builder.senders(Senders {
                email,
                sms,
                email_fallback,
                sms_fallback,
            });
        }
        let outbox_defaults = OutboxPolicy::default();
        if let Some(attempts) = &delivery.attempts
            && !(1..=10).contains(attempts.get_ref())
        {
            return Err(source.invalid(
                "delivery.attempts",
                Some(attempts.span()),
                "must be between 1 and 10",
            ));
        }
        builder = builder.outbox_policy(OutboxPolicy {
            capacity: delivery.outbox_capacity.unwrap_or(outbox_defaults.capacity),
            concurrency: delivery.concurrency.unwrap_or(outbox_defaults.concurrency),
            attempts: delivery
                .attempts
                .as_ref()
                .map_or(outbox_defaults.attempts, |a| *a.get_ref()),
            backoff: delivery
                .retry_backoff
                .map_or(outbox_defaults.backoff, |d| d.0),
            timeout: delivery.timeout.map_or(outbox_defaults.timeout, |d| d.0),
        });

        // [[templates]]
        if !file.templates.is_empty() {
            let first_span = file.templates.first().map(|t| t.span());
            let templates = file
                .templates
                .iter()
                .map(|t| {
                    let t = t.get_ref();
                    (
                        TemplateScope {
                            tenant: t.tenant.clone(),
                            channel: t.channel,
                            locale: t.locale.as_ref().map(|l| l.to_ascii_lowercase()),
                        },
                        Template {
                            subject: t.subject.clone(),
                            text: t.text.clone(),
                            html: t.html.clone(),
                            from_name: t.from_name.clone(),
                        },
                    )
                })
                .collect();
            let templates = Templates::new(templates)
                .map_err(|e| source.invalid("templates", first_span, e.to_string()))?;
            builder = builder.templates(templates);
        }

        // [directory]
        if let Some(section) = &file.directory {
            let span = Some(section.span());
            let directory = section.get_ref();
            let built: Arc<dyn crate::directory::Directory> = match directory.kind {
                schema::DirectoryKind::None => Arc::new(crate::directory::NoDirectory),
                schema::DirectoryKind::Static => {
                    let path = directory.file.as_ref().ok_or_else(|| {
                        source.invalid(
                            "directory.file",
                            span.clone(),
                            "a static directory needs file",
                        )
                    })?;
                    Arc::new(
                        crate::directory::StaticDirectory::from_file(&source.dir.join(path))
                            .map_err(|e| {
                                source.invalid("directory.file", span.clone(), e.to_string())
                            })?,
                    )
                }
                schema::DirectoryKind::Http => {
                    let url = directory.url.as_ref().ok_or_else(|| {
                        source.invalid("directory.url", span.clone(), "an http directory needs url")
                    })?;
                    let url: reqwest::Url = url.0.parse().map_err(|e| {
                        source.invalid("directory.url", span.clone(), format!("invalid URL: {e}"))
                    })?;
                    let ttl = directory.cache_ttl.map_or(Duration::from_secs(60), |d| d.0);
                    Arc::new(crate::directory::HttpDirectory::new(url, ttl))
                }
            };
            builder = builder.directory(built);
        }

        // [[tenants]]
        for tenant in &file.tenants {
            let t = tenant.get_ref();
            if t.channels.is_empty() {
                return Err(source.invalid(
                    "tenants.channels",
                    Some(tenant.span()),
                    "a tenant needs at least one channel",
                ));
            }
            builder = builder.tenant(Tenant {
                id: t.id.clone(),
                channels: t.channels.clone(),
                auto_create: t.auto_create,
                reveal_account: t.reveal_account,
                display_name: t.name.clone(),
            });
        }

        Ok(Config {
            proxy: proxy_settings(source, &file.server)?,
            http,
            builder,
        })
    }

    /// Builds what the file describes: the engine behind its HTTP front.
    pub fn build(self) -> Result<Front, ConfigError> {
        let (builder, http) = self.into_parts();
        let gate = builder.build().map_err(|e| ConfigError::Invalid {
            file: "config".into(),
            line: None,
            key: match &e {
                BuildError::MissingSender { .. } => "delivery".into(),
                BuildError::Key(_) => "token".into(),
                BuildError::InvalidPolicy(_) => "otp".into(),
                _ => "tenants".into(),
            },
            message: e.to_string(),
        })?;
        Ok(Front::new(gate, http))
    }

    /// The engine builder and the HTTP settings, for changes in code before building:
    /// `Front::new(builder.senders(..).build()?, http)`.
    pub fn into_parts(self) -> (GateBuilder, HttpSettings) {
        (self.builder, self.http)
    }
}

fn proxy_settings(
    source: &Source<'_>,
    server: &schema::ServerSection,
) -> Result<ProxySettings, ConfigError> {
    let span = |s: &toml::Spanned<String>| (s.span().end > 0).then(|| s.span());
    let listen: SocketAddr = server.listen.get_ref().parse().map_err(|_| {
        source.invalid(
            "server.listen",
            span(&server.listen),
            format!(
                "`{}` is not an address like 127.0.0.1:8080",
                server.listen.get_ref()
            ),
        )
    })?;
    let invalid_upstream =
        |message: String| source.invalid("server.upstream", span(&server.upstream), message);
    let url: reqwest::Url = server
        .upstream
        .get_ref()
        .parse()
        .map_err(|e| invalid_upstream(format!("invalid URL: {e}")))?;
    if url.scheme() != "http" {
        return Err(invalid_upstream(format!(
            "scheme `{}` is not supported: the upstream is reached over plain http (put TLS in front of the gate)",
            url.scheme()
        )));
    }
    let host = url
        .host_str()
        .ok_or_else(|| invalid_upstream("the URL has no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = url.port_or_known_default().unwrap_or(80);
    // Resolved once here: a name lookup per request would stall the proxy.
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| invalid_upstream(format!("cannot resolve `{host}`")))?;
    let threads = match &server.threads {
        Some(threads) if *threads.get_ref() == 0 || *threads.get_ref() > 1024 => {
            return Err(source.invalid(
                "server.threads",
                Some(threads.span()),
                "must be between 1 and 1024",
            ));
        }
        Some(threads) => *threads.get_ref(),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let (header_timeout, keepalive_timeout, max_connections, max_connections_per_ip) =
        connection_bounds(source, server)?;
    Ok(ProxySettings {
        listen,
        upstream: Upstream { addr, host },
        threads,
        grace_period: server.grace_period.map_or(Duration::from_secs(5), |d| d.0),
        shutdown_timeout: server
            .shutdown_timeout
            .map_or(Duration::from_secs(5), |d| d.0),
        header_timeout,
        keepalive_timeout,
        max_connections,
        max_connections_per_ip,
    })
}

/// `server.header_timeout`, `keepalive_timeout`, `max_connections` and
/// `max_connections_per_ip`: every slow or numerous client is bounded, so none may be
/// zero (no connection could work) or unbounded in effect.
fn connection_bounds(
    source: &Source<'_>,
    server: &schema::ServerSection,
) -> Result<(Duration, Duration, usize, usize), ConfigError> {
    let duration = |key: &str,
                    value: &Option<toml::Spanned<schema::ConfigDuration>>,
                    default: u64,
                    max: u64|
     -> Result<Duration, ConfigError> {
        let Some(value) = value else {
            return Ok(Duration::from_secs(default));
        };
        let duration = value.get_ref().0;
        if duration < Duration::from_secs(1) || duration > Duration::from_secs(max) {
            return Err(source.invalid(
                key,
                Some(value.span()),
                format!(
                    "must be between 1s and {}",
                    humantime::format_duration(Duration::from_secs(max))
                ),
            ));
        }
        Ok(duration)
    };
    let count = |key: &str,
                 value: &Option<toml::Spanned<usize>>,
                 default: usize,
                 max: usize,
                 max_name: &str|
     -> Result<usize, ConfigError> {
        match value {
            None => Ok(default),
            Some(value) if *value.get_ref() == 0 || *value.get_ref() > max => Err(source.invalid(
                key,
                Some(value.span()),
                format!("must be between 1 and {max_name}"),
            )),
            Some(value) => Ok(*value.get_ref()),
        }
    };
    // A head slower than 5 minutes is an attack, not a client.
    let header_timeout = duration("server.header_timeout", &server.header_timeout, 10, 300)?;
    let keepalive_timeout = duration(
        "server.keepalive_timeout",
        &server.keepalive_timeout,
        60,
        3600,
    )?;
    let max_connections = count(
        "server.max_connections",
        &server.max_connections,
        4096,
        1 << 20,
        "1048576",
    )?;
    let max_connections_per_ip = count(
        "server.max_connections_per_ip",
        &server.max_connections_per_ip,
        256.min(max_connections),
        max_connections,
        &format!("server.max_connections ({max_connections})"),
    )?;
    Ok((
        header_timeout,
        keepalive_timeout,
        max_connections,
        max_connections_per_ip,
    ))
}

type SenderPair = (Option<Arc<dyn Sender>>, Option<Arc<dyn Sender>>);

/// A channel's primary sender and its fallback.
fn senders(
    source: &Source<'_>,
    key: &str,
    section: Option<&toml::Spanned<SenderSection>>,
) -> Result<SenderPair, ConfigError> {
    let Some(spanned) = section else {
        return Ok((None, None));
    };
    let span = Some(spanned.span());
    let primary = sender(source, key, span.clone(), spanned.get_ref())?;
    let fallback = match &spanned.get_ref().fallback {
        Some(fallback) => {
            if fallback.fallback.is_some() {
                return Err(source.invalid(
                    &format!("{key}.fallback.fallback"),
                    span,
                    "one fallback per channel",
                ));
            }
            Some(sender(source, &format!("{key}.fallback"), span, fallback)?)
        }
        None => None,
    };
    Ok((Some(primary), fallback))
}

fn sender(
    source: &Source<'_>,
    key: &str,
    span: Option<Range<usize>>,
    section: &SenderSection,
) -> Result<Arc<dyn Sender>, ConfigError> {
    let invalid = |field: &str, message: String| {
        source.invalid(&format!("{key}.{field}"), span.clone(), message)
    };
    let required = |field: &str, value: Option<&EnvString>| {
        value.map(|v| v.0.clone()).ok_or_else(|| {
            invalid(
                field,
                format!("a {:?} sender needs {field}", section.kind).to_lowercase(),
            )
        })
    };
    let timeout = section.timeout.map_or(Duration::from_secs(10), |d| d.0);
    match section.kind {
        SenderKind::Console => Ok(Arc::new(ConsoleSender)),
        SenderKind::Webhook => {
            let url: reqwest::Url = required("url", section.url.as_ref())?
                .parse()
                .map_err(|e| invalid("url", format!("invalid URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(invalid("url", "the URL must be http or https".into()));
            }
            let mut webhook = WebhookSender::new(url).timeout(timeout);
            if let Some(secret) = &section.secret {
                webhook = webhook.signing_secret(secret.0.as_bytes());
            }
            Ok(Arc::new(webhook))
        }
        SenderKind::Smtp => {
            let host = section
                .host
                .clone()
                .ok_or_else(|| invalid("host", "an smtp sender needs host".into()))?;
            let from: lettre::message::Mailbox = required("from", section.from.as_ref())?
                .parse()
                .map_err(|e| {
                invalid(
                    "from",
                    format!("not an address like \"Acme <no-reply@acme.example>\": {e}"),
                )
            })?;
            let credentials = match (&section.username, &section.password) {
                (Some(user), Some(password)) => Some((user.0.clone(), password.0.clone())),
                (None, None) => None,
                _ => {
                    return Err(invalid(
                        "username",
                        "username and password go together".into(),
                    ));
                }
            };
            let root_certificates = match &section.ca_file {
                Some(path) => vec![
                    std::fs::read(source.dir.join(path))
                        .map_err(|e| invalid("ca_file", format!("cannot read {path}: {e}")))?,
                ],
                None => Vec::new(),
            };
            let security = match section.security.unwrap_or(SecurityKind::Starttls) {
                SecurityKind::None => SmtpSecurity::None,
                SecurityKind::Starttls => SmtpSecurity::StartTls,
                SecurityKind::Tls => SmtpSecurity::Tls,
            };
            let sender = SmtpSender::new(SmtpSettings {
                host,
                port: section.port,
                security,
                credentials,
                from,
                timeout,
                root_certificates,
                pool_size: section.pool_size.unwrap_or(4),
            })
            .map_err(|e| invalid("host", e.to_string()))?;
            Ok(Arc::new(sender))
        }
        SenderKind::Twilio => {
            let account_sid = required("account_sid", section.account_sid.as_ref())?;
            let auth_token = required("auth_token", section.auth_token.as_ref())?;
            let from = match (&section.from, &section.messaging_service_sid) {
                (Some(from), None) => TwilioFrom::Number(from.0.clone()),
                (None, Some(sid)) => TwilioFrom::MessagingService(sid.0.clone()),
                _ => {
                    return Err(invalid(
                        "from",
                        "a twilio sender needs exactly one of from and messaging_service_sid"
                            .into(),
                    ));
                }
            };
            let base_url = section
                .base_url
                .as_deref()
                .unwrap_or(TwilioSender::DEFAULT_BASE_URL);
            let sender = TwilioSender::new(base_url, &account_sid, &auth_token, from, timeout)
                .map_err(|e| invalid("base_url", e.to_string()))?;
            Ok(Arc::new(sender))
        }
    }
}

/// The store `[store]` asks for. A Redis store is shared by several instances, so it
/// refuses to start without what they must share: `otp.secret` (code hashes and the
/// store's own keys derive from it) and a configured token key (a token minted by one
/// instance must verify on the others).
fn build_store(
    store: &StoreSection,
    source: &Source<'_>,
    secret: Option<&ServerSecret>,
    has_token_key: bool,
) -> Result<Arc<dyn Store>, ConfigError> {
    let backend = store.backend.as_ref().map(|b| (*b.get_ref(), b.span()));
    match backend {
        None | Some((StoreBackend::Memory, _)) => {
            let max = store
                .max_entries
                .unwrap_or(MemoryStore::DEFAULT_MAX_ENTRIES);
            Ok(Arc::new(MemoryStore::new(max)))
        }
        #[cfg(not(feature = "redis"))]
        Some((StoreBackend::Redis, span)) => Err(source.invalid(
            "store.backend",
            Some(span),
            "the redis backend is not available in this build (feature \"redis\"); use \"memory\"",
        )),
        #[cfg(feature = "redis")]
        Some((StoreBackend::Redis, span)) => {
            use crate::store::{RedisSettings, RedisStore};
            let Some(secret) = secret else {
                return Err(source.invalid(
                    "otp.secret",
                    None,
                    "store.backend = \"redis\" needs otp.secret (32+ bytes, the same on every instance)",
                ));
            };
            if !has_token_key {
                return Err(source.invalid(
                    "token.private_key",
                    Some(span),
                    "store.backend = \"redis\" needs token.private_key (or token.secret for HS256), \
                     the same on every instance, so tokens minted by one verify on the others",
                ));
            }
            let defaults = RedisSettings::default();
            let url = match &store.redis_url {
                Some(url) => url,
                None => {
                    return Err(source.invalid(
                        "store.redis_url",
                        Some(span),
                        "store.backend = \"redis\" needs store.redis_url (redis://host:6379)",
                    ));
                }
            };
            let namespace = match &store.namespace {
                Some(namespace) => {
                    let name = namespace.get_ref();
                    if name.is_empty()
                        || !name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    {
                        return Err(source.invalid(
                            "store.namespace",
                            Some(namespace.span()),
                            "letters, digits, '-', '_' and '.' only",
                        ));
                    }
                    name.clone()
                }
                None => defaults.namespace,
            };
            let settings = RedisSettings {
                url: url.get_ref().0.clone(),
                namespace,
                timeout: store.timeout.map_or(defaults.timeout, |d| d.0),
            };
            let store = RedisStore::new(settings, secret)
                .map_err(|e| source.invalid("store.redis_url", Some(url.span()), e.to_string()))?;
            Ok(Arc::new(store))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", Path::new("."))
    }

    #[test]
    fn the_embedded_default_parses() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::embedded_default(dir.path()).unwrap();
        assert_eq!(config.proxy.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.proxy.upstream.addr.to_string(), "127.0.0.1:3000");
        config.build().unwrap();
    }

    #[test]
    fn an_empty_file_is_a_development_gate() {
        let gate = parse("").unwrap().build().unwrap();
        assert_eq!(gate.gate().policy().max_attempts, 5);
    }

    #[test]
    fn unknown_keys_name_the_key_and_line() {
        let error = parse("[otp]\nlength = 6\nmax_atempts = 3\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("max_atempts"), "{error}");
        assert!(error.contains("line 3"), "{error}");
    }

    #[test]
    fn bad_values_name_the_key_and_line() {
        let error = parse("[otp]\n\nlength = 12\n").unwrap_err().to_string();
        assert!(error.contains("test.toml:3: `otp.length`"), "{error}");
        let error = parse("[otp]\nttl = \"five minutes\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("line 2") && error.contains("invalid duration"),
            "{error}"
        );
        let error = parse("[otp]\nsends_per_ip = \"30 per 5m\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("line 2") && error.contains("invalid rate"),
            "{error}"
        );
        let error = parse("[otp]\nfailure_budget = 1000\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains(":2: `otp.failure_budget`"), "{error}");
        let error = parse("[token]\nalgorithm = \"none\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains(":2: `token.algorithm`"), "{error}");
        let error = parse("[token]\nprivate_key = \"missing.pem\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(":2: `token.private_key`") && error.contains("otpgate keygen"),
            "{error}"
        );
        let error = parse("[delivery.email]\nkind = \"webhook\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("delivery.email.url"), "{error}");
        let error = parse("[identity]\nsubject_header = \"bad header\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains(":2: `identity.subject_header`"), "{error}");
        let error = parse("[[endpoints]]\ndialect = \"soap\"\nprefix = \"/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains(":2: `endpoints.dialect`"), "{error}");
    }

    #[test]
    fn providers_templates_and_outbox_settings_parse() {
        let text = r#"
[delivery]
attempts = 4
retry_backoff = "100ms"
timeout = "3s"

[delivery.email]
kind = "smtp"
host = "smtp.example.com"
port = 587
security = "starttls"
username = "mailer"
password = "secret"
from = "Acme <no-reply@acme.example>"

[delivery.email.fallback]
kind = "webhook"
url = "http://127.0.0.1:9000/mail"

[delivery.sms]
kind = "twilio"
account_sid = "AC123"
auth_token = "token"
messaging_service_sid = "MG456"

[[templates]]
channel = "email"
locale = "FR"
subject = "Votre code : {{ code }}"

[[templates]]
tenant = "default"
from_name = "Acme"
"#;
        parse(text).unwrap().build().unwrap();
    }

    const SHARED: &str = "[otp]\nsecret = \"0123456789abcdef0123456789abcdef\"\n[token]\nalgorithm = \"HS256\"\nsecret = \"fedcba9876543210fedcba9876543210\"\n";

    #[test]
    fn a_redis_store_needs_what_instances_share() {
        for (text, key) in [
            (
                "[store]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\n".to_owned(),
                "otp.secret",
            ),
            (
                "[store]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\n[otp]\nsecret = \"0123456789abcdef0123456789abcdef\"\n".to_owned(),
                "token.private_key",
            ),
            (format!("[store]\nbackend = \"redis\"\n{SHARED}"), "store.redis_url"),
            (
                format!("[store]\nbackend = \"redis\"\nredis_url = \"http://x\"\n{SHARED}"),
                "store.redis_url",
            ),
            (
                format!("[store]\nbackend = \"redis\"\nredis_url = \"rediss://x\"\n{SHARED}"),
                "store.redis_url",
            ),
            (
                format!("[store]\nbackend = \"redis\"\nredis_url = \"redis://x\"\nnamespace = \"a b\"\n{SHARED}"),
                "store.namespace",
            ),
        ] {
            let error = parse(&text).map(|_| ()).unwrap_err().to_string();
            assert!(error.contains(&format!("`{key}`")), "{key}: {error}");
            assert!(error.contains("test.toml:"), "names the line: {error}");
        }
        assert!(
            parse("[store]\nrevocation_fallback = \"sometimes\"\n").is_err(),
            "an unknown fallback is refused"
        );
    }

    #[tokio::test]
    async fn a_redis_store_is_configured_without_connecting() {
        // Port 9 (discard) has no Redis: loading must not connect, and the first use fails
        // with a 503-class error within the configured timeout.
        let text = format!(
            "[store]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:9\"\ntimeout = \"200ms\"\nrevocation_fallback = \"deny\"\n{SHARED}"
        );
        let gate = parse(&text).unwrap().build().unwrap();
        let error = gate
            .gate()
            .send(crate::SendRequest {
                tenant: None,
                identifier: crate::identifier::Identifier::email("a@example.com").unwrap(),
                client_ip: None,
                locale: None,
            })
            .await
            .unwrap_err();
        assert_eq!(error.code(), "temporarily_unavailable");
    }

    #[test]
    fn provider_mistakes_name_the_key() {
        for (text, key) in [
            (
                "[delivery.email]\nkind = \"smtp\"\nfrom = \"a@b.example\"\n",
                "delivery.email.host",
            ),
            (
                "[delivery.email]\nkind = \"smtp\"\nhost = \"h\"\nfrom = \"not an address\"\n",
                "delivery.email.from",
            ),
            (
                "[delivery.email]\nkind = \"smtp\"\nhost = \"h\"\nfrom = \"a@b.example\"\nusername = \"u\"\n",
                "delivery.email.username",
            ),
            (
                "[delivery.sms]\nkind = \"twilio\"\nauth_token = \"t\"\nfrom = \"+15005550006\"\n",
                "delivery.sms.account_sid",
            ),
            (
                "[delivery.sms]\nkind = \"twilio\"\naccount_sid = \"a\"\nauth_token = \"t\"\n",
                "delivery.sms.from",
            ),
            (
                "[delivery.sms]\nkind = \"console\"\n[delivery.sms.fallback]\nkind = \"webhook\"\n",
                "delivery.sms.fallback.url",
            ),
            ("[delivery]\nattempts = 0\n", "delivery.attempts"),
            ("[[templates]]\nsubject = \"{{ code \"\n", "templates"),
        ] {
            let error = parse(text).map(|_| ()).unwrap_err().to_string();
            assert!(error.contains(&format!("`{key}`")), "{key}: {error}");
        }
        let error = parse("[delivery.email]\nkind = \"carrier-pigeon\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("carrier-pigeon") && error.contains("line 2"),
            "{error}"
        );
    }

    #[test]
    fn tenants_need_a_sender_for_each_channel() {
        let text = "[delivery.email]\nkind = \"console\"\n[[tenants]]\nid = \"default\"\nchannels = [\"sms\"]\n";
        let error = parse(text).unwrap().build().unwrap_err().to_string();
        assert!(error.contains("sms"), "{error}");
    }

    #[test]
    fn connection_bounds_default_and_refuse_zero_or_absurd_values() {
        let proxy = parse("").unwrap().proxy;
        assert_eq!(proxy.header_timeout, Duration::from_secs(10));
        assert_eq!(proxy.keepalive_timeout, Duration::from_secs(60));
        assert_eq!(
            (proxy.max_connections, proxy.max_connections_per_ip),
            (4096, 256)
        );
        let proxy = parse(
            "[server]\nheader_timeout = \"2s\"\nkeepalive_timeout = \"5m\"\n\
             max_connections = 100\nmax_connections_per_ip = 100\n",
        )
        .unwrap()
        .proxy;
        assert_eq!(proxy.header_timeout, Duration::from_secs(2));
        assert_eq!(proxy.keepalive_timeout, Duration::from_secs(300));
        assert_eq!(
            (proxy.max_connections, proxy.max_connections_per_ip),
            (100, 100)
        );
        for (text, key) in [
            ("header_timeout = \"0s\"", "server.header_timeout"),
            ("header_timeout = \"1h\"", "server.header_timeout"),
            ("keepalive_timeout = \"100ms\"", "server.keepalive_timeout"),
            ("keepalive_timeout = \"2days\"", "server.keepalive_timeout"),
            ("max_connections = 0", "server.max_connections"),
            ("max_connections = 100000000", "server.max_connections"),
            (
                "max_connections_per_ip = 0",
                "server.max_connections_per_ip",
            ),
            (
                "max_connections = 10\nmax_connections_per_ip = 11",
                "server.max_connections_per_ip",
            ),
        ] {
            let error = parse(&format!("[server]\n\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(&format!("`{key}`: must be between")),
                "{error}"
            );
            assert!(
                error.contains("test.toml:3:") || error.contains("test.toml:4:"),
                "{error}"
            );
        }
    }

    #[test]
    fn secrets_come_from_the_environment() {
        assert_eq!(
            schema::expand_env("a${X}b${Y}", |n| Some(n.to_lowercase())).unwrap(),
            "axby"
        );
        assert!(
            schema::expand_env("${MISSING}", |_| None)
                .unwrap_err()
                .contains("MISSING")
        );
        assert!(schema::expand_env("${oops", |_| None).is_err());
        let error = parse("[otp]\nsecret = \"${OTPGATE_TEST_SURELY_UNSET}\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("OTPGATE_TEST_SURELY_UNSET") && error.contains("line 2"),
            "{error}"
        );
    }
}
