//! What `otpgate run` does on SIGHUP: reads its config file again and, when it is valid,
//! serves it; `otpgate reload` sends the signal.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use otpgate::Gate;
use otpgate::config::{Config, ProxySettings, SetupWarningKind};
use otpgate::http::Front;
use otpgate::pingora::{Reloader, TlsListener};

/// The sections of a config file that only the HTTP front reads: a reload that changes
/// nothing else keeps the running engine as it is.
const FRONT_SECTIONS: [&str; 4] = ["protect", "endpoints", "identity", "paths"];

/// The one `[server]` key the engine reads; the others are the front's or the proxy's.
const ENGINE_SERVER_KEY: &str = "default_tenant";

/// Re-reads the config file `otpgate run` started from.
pub struct ConfigReloader {
    path: PathBuf,
    /// The proxy's settings as it runs: changing them takes a restart.
    running: ProxySettings,
    /// The text of the file last served, to tell which sections a reload changes.
    served: Mutex<String>,
}

impl ConfigReloader {
    /// A reloader for the file at `path`, whose text `text` the proxy runs with `running`.
    pub fn new(path: PathBuf, text: String, running: ProxySettings) -> ConfigReloader {
        ConfigReloader {
            path,
            running,
            served: Mutex::new(text),
        }
    }

    /// The front the file now describes, built on what `current` runs where that is
    /// unchanged; why not, naming the file, key and line.
    async fn load(&self, current: &Front) -> Result<Front, String> {
        let (config, text) = read(&self.path)?;
        let name = self.path.display().to_string();
        let warnings = config.warnings().await;
        for warning in &warnings {
            tracing::warn!("{warning}");
        }
        let generated_key = warnings
            .iter()
            .any(|w| w.kind() == SetupWarningKind::GeneratedKey);
        self.restart_only_changes(&config.proxy);
        let tls = config.proxy.tls.clone();
        let (mut builder, http) = config.into_parts();
        let gate = current.gate();
        let kept_store = same_store(&text, &self.served_text());
        if kept_store {
            // Pending codes, counters and revoked sessions live there; codes hashed under a
            // secret the running engine made itself must still verify.
            builder = builder.store(gate.store().clone());
            if !sets_otp_secret(&text) {
                builder = builder.code_hasher_of(gate);
            }
        }
        if generated_key {
            // A key made afresh would sign every client out; the running one stays.
            builder = builder.signing_key(gate.tokens().key().clone());
        }
        let built = builder
            .build()
            .map_err(|e| format!("{name}: the engine cannot be built: {e}"))?;
        let engine_unchanged = engine_sections(&text) == engine_sections(&self.served_text())
            && same_keys(&built, gate);
        let gate = if engine_unchanged {
            // Codes sent before the reload stay hashed under the running engine's secret,
            // which a file without `otp.secret` makes afresh: the running engine stays.
            tracing::info!(
                "reload: the engine's sections are unchanged: its pending codes, counters, \
                 sessions and key are kept"
            );
            gate.clone()
        } else {
            tracing::info!(store_kept = kept_store, "reload: a new engine");
            built
        };
        *self.served.lock().unwrap_or_else(PoisonError::into_inner) = text;
        self.reload_certificates(tls.as_ref());
        Ok(Front::new(gate, http))
    }

    fn served_text(&self) -> String {
        self.served
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Serves the certificates the file now names (read again, so a renewed file on disk
    /// counts) to new TLS connections; those open keep theirs.
    fn reload_certificates(&self, new: Option<&TlsListener>) {
        let (Some(running), Some(new)) = (&self.running.tls, new) else {
            return;
        };
        if running.certificates == new.certificates {
            tracing::info!("reload: the TLS certificates are unchanged");
            return;
        }
        running.certificates.replace(new.certificates.current());
        tracing::info!(certificates = ?running.certificates, "reload: new TLS connections get the certificates read now");
    }

    /// Logs each `[server]` setting that a reload cannot change while the proxy runs.
    fn restart_only_changes(&self, new: &ProxySettings) {
        let old = &self.running;
        let changes = [
            (
                "server.listen",
                old.listen.to_string(),
                new.listen.to_string(),
            ),
            (
                "server.threads",
                old.threads.to_string(),
                new.threads.to_string(),
            ),
            (
                "metrics.listen",
                format!("{:?}", old.metrics_listen),
                format!("{:?}", new.metrics_listen),
            ),
            (
                "server.upstream",
                old.upstream.to_string(),
                new.upstream.to_string(),
            ),
            (
                "server.upstream_timeouts",
                format!("{:?}", old.upstream_timeouts),
                format!("{:?}", new.upstream_timeouts),
            ),
            (
                "server.max_connections",
                format!(
                    "{} per ip {}",
                    old.max_connections, old.max_connections_per_ip
                ),
                format!(
                    "{} per ip {}",
                    new.max_connections, new.max_connections_per_ip
                ),
            ),
            (
                "server.header_timeout, keepalive_timeout",
                format!("{:?} {:?}", old.header_timeout, old.keepalive_timeout),
                format!("{:?} {:?}", new.header_timeout, new.keepalive_timeout),
            ),
            ("server.h2c", old.h2c.to_string(), new.h2c.to_string()),
            (
                "server.tls (listen, hsts, redirect_http)",
                tls_shape(old),
                tls_shape(new),
            ),
            (
                "server.grace_period, shutdown_timeout",
                format!("{:?} {:?}", old.grace_period, old.shutdown_timeout),
                format!("{:?} {:?}", new.grace_period, new.shutdown_timeout),
            ),
        ];
        for (key, was, now) in changes {
            if was != now {
                tracing::warn!(
                    key,
                    running = %was,
                    file = %now,
                    "reload: `{key}` changed; it takes a restart, and the running value stays until then"
                );
            }
        }
    }
}

#[async_trait]
impl Reloader for ConfigReloader {
    async fn reload(&self, current: &Front) -> Option<Front> {
        match self.load(current).await {
            Ok(front) => Some(front),
            Err(message) => {
                tracing::error!("reload refused, the running config stays: {message}");
                None
            }
        }
    }
}

/// The TLS listener's settings other than its certificates, which a reload replaces.
fn tls_shape(settings: &ProxySettings) -> String {
    match &settings.tls {
        Some(tls) => format!("{} {:?} {}", tls.listen, tls.hsts, tls.redirect_http),
        None => "none".into(),
    }
}

/// The config in the file at `path`, and the text it was read from.
pub fn read(path: &Path) -> Result<(Config, String), String> {
    let text = || {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let before = text()?;
    let config = Config::from_file(path).map_err(|e| e.to_string())?;
    // The text decides what a reload keeps, so it must be the text that was read.
    if text()? != before {
        return Err(format!(
            "{} changed while it was read; read it again",
            path.display()
        ));
    }
    Ok((config, before))
}

/// The file's top-level tables, or none when it is not TOML (the parse already passed).
fn tables(text: &str) -> toml::Table {
    text.parse::<toml::Table>().unwrap_or_default()
}

/// What the engine is built from: every section but the front's, and of `[server]` only
/// the default tenant.
fn engine_sections(text: &str) -> toml::Table {
    let mut table = tables(text);
    for section in FRONT_SECTIONS {
        table.remove(section);
    }
    if let Some(server) = table.remove("server")
        && let Some(tenant) = server.get(ENGINE_SERVER_KEY)
    {
        table.insert(ENGINE_SERVER_KEY.into(), tenant.clone());
    }
    table
}

/// `[store]` keys that say how the engine uses the store, not which store it is: a change
/// to them keeps the running store (a new memory store would forget every revocation,
/// spent token and counter).
const STORE_USE_KEYS: [&str; 2] = ["revocation_fallback", "revocation_poll"];

/// Whether the two files name the same store in `[store]` (its keys but
/// [`STORE_USE_KEYS`]) and the same `otp.secret` (a Redis store's own keys derive from it).
fn same_store(new: &str, old: &str) -> bool {
    let (new, old) = (tables(new), tables(old));
    let secret = |t: &toml::Table| t.get("otp").and_then(|o| o.get("secret")).cloned();
    let store = |t: &toml::Table| {
        let mut store = t
            .get("store")
            .and_then(|s| s.as_table())
            .cloned()
            .unwrap_or_default();
        for key in STORE_USE_KEYS {
            store.remove(key);
        }
        store
    };
    store(&new) == store(&old) && secret(&new) == secret(&old)
}

/// Whether the file sets `otp.secret`, so that code hashes survive a new engine.
fn sets_otp_secret(text: &str) -> bool {
    tables(text)
        .get("otp")
        .and_then(|otp| otp.get("secret"))
        .is_some()
}

/// Whether `new` signs and verifies with the keys `old` does (a key made at start counts
/// as the running one, which the builder was given).
fn same_keys(new: &Gate, old: &Gate) -> bool {
    let kids = |gate: &Gate| {
        gate.tokens()
            .verifying_keys()
            .map(|k| k.kid().to_owned())
            .collect::<Vec<_>>()
    };
    kids(new) == kids(old)
}

/// `otpgate reload`: SIGHUP to the `otpgate run` process `pid`.
pub fn send_hangup(pid: u32) -> Result<(), String> {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .map_err(|e| format!("cannot run kill: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -HUP {pid} failed ({status})"))
    }
}

#[cfg(test)]
mod tests {
    use super::same_store;

    #[test]
    fn how_the_store_is_used_is_no_new_store_but_which_store_is() {
        let old = "[store]\nbackend = \"memory\"\nrevocation_poll = \"1s\"\n";
        assert!(same_store(
            "[store]\nbackend = \"memory\"\nrevocation_poll = \"2s\"\nrevocation_fallback = \"deny\"\n",
            old
        ));
        assert!(!same_store(
            "[store]\nbackend = \"memory\"\nmax_entries = 10\nrevocation_poll = \"1s\"\n",
            old
        ));
        assert!(!same_store(
            "[store]\nbackend = \"memory\"\nrevocation_poll = \"1s\"\n[otp]\nsecret = \"x\"\n",
            old
        ));
    }
}
