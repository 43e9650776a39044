//! Config-file driven deployment: one TOML file describes endpoints, tenants, delivery,
//! keys, limits and protected paths.
//!
//! A file is read in three steps:
//!
//! 1. **Schema** (`schema.rs`): the file as written, read by serde. Not TOML, an unknown
//!    key or a value of the wrong form is refused with toml's message (key, line, column).
//! 2. **Model**: each section is checked into plain values, and the sections against one
//!    another (every channel a tenant offers has a sender, a shared store has the shared
//!    secrets), without touching the disk or the network.
//! 3. **Building**: the token key, CA and users files are read, the upstream address is
//!    resolved, senders, stores and the directory are made. The result is a
//!    [`GateBuilder`], the [`HttpSettings`] and, with the `proxy` feature, the proxy's
//!    `ProxySettings`.
//!
//! Every error of steps 2 and 3 names the file, the dotted key and, where the file writes
//! it, the line. Each section lives in its own file here, with its model and its building.
//!
//! A file that reads but sets up something rarely wanted (nothing protected, codes printed
//! to the log, a key made at start, a shared store that does not answer) is not refused:
//! [`Config::warnings`] lists it, the same way.
//!
//! ```no_run
//! let config = otpgate::config::Config::from_file("config/otpgate.toml".as_ref())?;
//! let front = config.build()?;
//! # Ok::<(), otpgate::config::ConfigError>(())
//! ```

use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::gate::{BuildError, GateBuilder};
use crate::http::{Front, HttpSettings};

mod delivery;
mod directory;
mod http;
mod metrics;
mod otp;
mod schema;
mod server;
mod sms_guard;
mod store;
mod tenants;
mod token;
mod warnings;

#[cfg(test)]
mod tests;

#[cfg(feature = "proxy")]
pub use crate::pingora::{ProxySettings, Upstream};
pub use warnings::{SetupWarning, SetupWarningKind};

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

/// A parsed, checked configuration, its files read and its upstream resolved.
pub struct Config {
    /// The edge proxy's settings (`[server]`).
    #[cfg(feature = "proxy")]
    pub proxy: ProxySettings,
    /// The HTTP front's settings (`[server]` limits, `[[endpoints]]`, `[[protect]]`,
    /// `[identity]`, `[paths]`, the cookie).
    pub http: HttpSettings,
    /// Where the edge proxy serves its Prometheus metrics (`[metrics] listen`); `None`:
    /// nowhere.
    pub metrics: Option<std::net::SocketAddr>,
    builder: GateBuilder,
    /// The file's name, for errors of [`Config::build`] and for warnings.
    file: String,
    /// What [`Config::warnings`] looks at.
    facts: warnings::SetupFacts,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = f.debug_struct("Config");
        debug.field("file", &self.file);
        #[cfg(feature = "proxy")]
        debug.field("proxy", &self.proxy);
        debug.finish_non_exhaustive()
    }
}

/// The text being read: its name for errors, its lines, and the directory that relative
/// paths in it start from.
struct Source<'a> {
    name: &'a str,
    text: &'a str,
    dir: &'a Path,
}

impl Source<'_> {
    /// The line `span` starts on; `None` for a value the file does not write (defaults
    /// carry the empty span at 0).
    fn line(&self, span: &Range<usize>) -> Option<usize> {
        if span.end == 0 {
            return None;
        }
        let before = &self.text.as_bytes()[..span.start.min(self.text.len())];
        Some(before.iter().filter(|&&b| b == b'\n').count() + 1)
    }

    /// Where `key` is written, for errors found after the model is made.
    fn place(&self, key: &str, span: Option<Range<usize>>) -> Place {
        Place {
            key: key.to_owned(),
            line: span.and_then(|span| self.line(&span)),
        }
    }

    /// An error at `key`, on the line of `span` when there is one.
    fn invalid(
        &self,
        key: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> ConfigError {
        self.at(&self.place(key, span), message)
    }

    /// An error at a place the model kept.
    fn at(&self, place: &Place, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.name.to_owned(),
            line: place.line,
            key: place.key.clone(),
            message: message.into(),
        }
    }
}

/// A dotted key and the line it is written on. The model keeps one for each value whose
/// building can still fail (a file to read, a name to resolve), so that error points into
/// the file too.
#[derive(Clone, Debug)]
struct Place {
    key: String,
    line: Option<usize>,
}

impl Place {
    /// `field` inside this table, on the table's line (`delivery.email` → `delivery.email.host`).
    fn child(&self, field: &str) -> Place {
        Place {
            key: format!("{}.{field}", self.key),
            line: self.line,
        }
    }
}

/// The second step: every section checked, nothing read or resolved yet.
struct Model {
    server: server::ServerModel,
    otp: otp::OtpModel,
    token: token::TokenModel,
    store: store::StoreModel,
    http: HttpSettings,
    delivery: delivery::DeliveryModel,
    directory: directory::DirectoryModel,
    tenants: tenants::TenantsModel,
    metrics: Option<std::net::SocketAddr>,
    sms_guard: crate::gate::SmsGuard,
}

impl Model {
    /// Checks the file, section by section, then the sections against one another.
    fn check(file: &schema::FileConfig, source: &Source<'_>) -> Result<Model, ConfigError> {
        let otp = otp::check(&file.otp, source)?;
        let token = token::check(&file.token, source)?;
        // After [otp] and [token]: a shared store needs their shared secrets.
        let store = store::check(&file.store, &otp, &token, source)?;
        let http = http::check(file, source)?;
        let delivery = delivery::check(&file.delivery, &file.templates, source)?;
        let directory = directory::check(file.directory.as_ref(), source)?;
        // After [delivery]: every channel a tenant offers needs a sender.
        let tenants = tenants::check(&file.server, &file.tenants, &delivery, source)?;
        let server = server::check(&file.server, source)?;
        // After [server]: the metrics never share its public port.
        let metrics = metrics::check(&file.metrics, &file.server, source)?;
        let sms_guard = sms_guard::check(file.sms_guard.as_ref(), source)?;
        Ok(Model {
            server,
            otp,
            token,
            store,
            http,
            delivery,
            directory,
            tenants,
            metrics,
            sms_guard,
        })
    }

    /// The third step: reads the files the model names, resolves the upstream, makes the
    /// parts and hands them to a [`GateBuilder`].
    fn build(self, source: &Source<'_>) -> Result<Config, ConfigError> {
        let mut builder = GateBuilder::default()
            .policy(self.otp.policy)
            .ip_limits(self.otp.ip_limits);
        if let Some(secret) = self.otp.secret {
            builder = builder.secret(secret);
        }
        let generated_key = !self.token.has_configured_key();
        let console = self.delivery.console_delivery();
        let (key, token_settings) = self.token.build(source)?;
        if let Some(key) = key {
            builder = builder.signing_key(key);
        }
        let revocation_fallback = self.store.revocation_fallback;
        let revocation_poll = self.store.revocation_poll;
        let store = self.store.build(source)?;
        builder = builder
            .token_settings(token_settings)
            .revocation_fallback(revocation_fallback)
            .revocation_poll(revocation_poll)
            .store(store.store);
        let delivery = self.delivery.build(source)?;
        if let Some(senders) = delivery.senders {
            builder = builder.senders(senders);
        }
        builder = builder.outbox_policy(delivery.outbox);
        if let Some(templates) = delivery.templates {
            builder = builder.templates(templates);
        }
        builder = builder.directory(self.directory.build(source)?);
        builder = builder.sms_guard(self.sms_guard);
        builder = builder.default_tenant(&self.tenants.default_tenant);
        for tenant in self.tenants.build(source)? {
            builder = builder.tenant(tenant);
        }
        #[cfg(feature = "proxy")]
        let proxy = ProxySettings {
            metrics_listen: self.metrics,
            ..self.server.build(source)?
        };
        // Checked like every section, so a file is judged alike in every build; only the
        // proxy runs on it.
        #[cfg(not(feature = "proxy"))]
        let _ = self.server;
        Ok(Config {
            #[cfg(feature = "proxy")]
            proxy,
            http: self.http,
            metrics: self.metrics,
            builder,
            file: source.name.to_owned(),
            facts: warnings::SetupFacts {
                console,
                generated_key,
                store_probe: store.probe,
            },
        })
    }
}

impl Config {
    /// Reads the file at `path` and takes it through [`Config::parse`]. Relative paths in
    /// it (the private key, previous keys, a CA file, the users file) are taken from the
    /// file's own folder, wherever the command runs.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let dir = path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Config::parse(&text, &path.display().to_string(), dir)
    }

    /// Whether no token key is configured (neither `token.private_key` nor
    /// `token.secret`), so that the engine makes a fresh one that lives only as long as
    /// the process.
    pub fn token_key_is_generated(&self) -> bool {
        self.facts.generated_key
    }

    /// The embedded default configuration, with relative paths taken from `dir`.
    pub fn embedded_default(dir: &Path) -> Result<Config, ConfigError> {
        Config::parse(DEFAULT_CONFIG, "<embedded default config>", dir)
    }

    /// Takes `text`, named `name` in errors, through the three steps: parsed, checked,
    /// then built (the files it names read from `dir`, the upstream resolved). What is
    /// left for [`Config::build`] is making the engine itself.
    pub fn parse(text: &str, name: &str, dir: &Path) -> Result<Config, ConfigError> {
        let source = Source { name, text, dir };
        let file: schema::FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: name.to_owned(),
            message: e.to_string(),
        })?;
        Model::check(&file, &source)?.build(&source)
    }

    /// Builds what the file describes: the engine behind its HTTP front.
    pub fn build(self) -> Result<Front, ConfigError> {
        let file = self.file.clone();
        let (builder, http) = self.into_parts();
        let gate = builder.build().map_err(|error| {
            // The model has already refused every policy and tenant mistake with its
            // line; what is left here has no line in the file.
            let key = match &error {
                BuildError::Key(_) => "token.private_key",
                BuildError::InvalidPolicy(_) => "otp",
                BuildError::MissingSender { .. } => "tenants.channels",
                BuildError::DuplicateTenant(_) => "tenants.id",
                BuildError::MissingDefaultTenant(_) => "server.default_tenant",
            };
            let message = match &error {
                BuildError::Key(e) => {
                    format!("none is configured, and a fresh EdDSA key cannot be made: {e}")
                }
                other => other.to_string(),
            };
            ConfigError::Invalid {
                file,
                line: None,
                key: key.into(),
                message,
            }
        })?;
        Ok(Front::new(gate, http))
    }

    /// The engine builder and the HTTP settings, for changes in code before building:
    /// `Front::new(builder.senders(..).build()?, http)`.
    pub fn into_parts(self) -> (GateBuilder, HttpSettings) {
        (self.builder, self.http)
    }
}
