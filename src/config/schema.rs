//! The TOML file, as written (the first step of reading a config). Every table refuses
//! unknown keys, so a typo is an error that names the key and its line instead of a
//! silently ignored setting. A value whose line a later error may need is `Spanned`; a
//! default made here carries the empty span `0..0`, which reads as "not written".

use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::identifier::Channel;
use crate::otp::{Alphabet, Rate};

/// A duration written like `"30s"`, `"5m"`, `"1h"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map(ConfigDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration `{text}` ({e}): write it like \"30s\", \"5m\" or \"1h\""
                ))
            })
    }
}

/// A rate written like `"5/10m"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigRate(pub Rate);

impl<'de> Deserialize<'de> for ConfigRate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map(ConfigRate)
            .map_err(serde::de::Error::custom)
    }
}

/// A string in which `${NAME}` is replaced by the environment variable `NAME`, so
/// secrets need not be written in the file.
#[derive(Clone, PartialEq, Eq)]
pub struct EnvString(pub String);

impl std::fmt::Debug for EnvString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnvString(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for EnvString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        expand_env(&text, |name| std::env::var(name).ok())
            .map(EnvString)
            .map_err(serde::de::Error::custom)
    }
}

pub(crate) fn expand_env(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated `${{` in `{text}`"))?;
        let name = &after[..end];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("invalid environment variable name `{name}`"));
        }
        let value =
            lookup(name).ok_or_else(|| format!("environment variable `{name}` is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default = "default_otp")]
    pub otp: Spanned<OtpSection>,
    #[serde(default)]
    pub token: TokenSection,
    #[serde(default)]
    pub identity: IdentitySection,
    #[serde(default)]
    pub paths: PathsSection,
    #[serde(default)]
    pub protect: Vec<ProtectSection>,
    #[serde(default)]
    pub pages: PagesSection,
    #[serde(default)]
    pub endpoints: Option<Vec<EndpointSection>>,
    #[serde(default)]
    pub delivery: DeliverySection,
    #[serde(default)]
    pub tenants: Vec<Spanned<TenantSection>>,
    #[serde(default)]
    pub directory: Option<Spanned<DirectorySection>>,
    #[serde(default)]
    pub templates: Vec<Spanned<TemplateSection>>,
    #[serde(default)]
    pub metrics: MetricsSection,
    pub sms_guard: Option<Spanned<SmsGuardSection>>,
}

fn default_otp() -> Spanned<OtpSection> {
    Spanned::new(0..0, OtpSection::default())
}

#[derive(Debug, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum DirectoryKind {
    None,
    Static,
    Http,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectorySection {
    pub kind: DirectoryKind,
    pub file: Option<Spanned<String>>,
    pub url: Option<Spanned<EnvString>>,
    pub cache_ttl: Option<ConfigDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    #[serde(default = "default_listen")]
    pub listen: Spanned<String>,
    #[serde(default = "default_upstream")]
    pub upstream: Spanned<String>,
    pub upstream_ca_file: Option<Spanned<String>>,
    #[serde(default)]
    pub upstreams: Vec<Spanned<String>>,
    pub upstream_balance: Option<Spanned<String>>,
    pub upstream_health_interval: Option<Spanned<ConfigDuration>>,
    pub upstream_health_path: Option<Spanned<String>>,
    pub threads: Option<Spanned<usize>>,
    pub grace_period: Option<ConfigDuration>,
    pub shutdown_timeout: Option<ConfigDuration>,
    pub header_timeout: Option<Spanned<ConfigDuration>>,
    pub keepalive_timeout: Option<Spanned<ConfigDuration>>,
    pub upstream_connect_timeout: Option<Spanned<ConfigDuration>>,
    pub upstream_read_timeout: Option<Spanned<ConfigDuration>>,
    pub upstream_dns_interval: Option<Spanned<ConfigDuration>>,
    pub max_connections: Option<Spanned<usize>>,
    pub max_connections_per_ip: Option<Spanned<usize>>,
    #[serde(default)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    #[serde(default = "default_body_limit")]
    pub body_limit: usize,
    #[serde(default = "default_max_headers")]
    pub max_headers: Spanned<usize>,
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: Spanned<usize>,
    #[serde(default = "default_tenant")]
    pub default_tenant: Spanned<String>,
    #[serde(default)]
    pub h2c: bool,
    pub tls: Option<Spanned<TlsSection>>,
}

/// `[server.tls]`: the proxy's TLS listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub listen: Spanned<String>,
    #[serde(default)]
    pub certificates: Vec<Spanned<CertificateSection>>,
    pub hsts: Option<Spanned<String>>,
    #[serde(default)]
    pub redirect_http: bool,
}

/// One `[[server.tls.certificates]]`: PEM files, relative to the config file's folder.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSection {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

fn default_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:8080".into())
}
fn default_upstream() -> Spanned<String> {
    Spanned::new(0..0, "http://127.0.0.1:3000".into())
}
fn default_body_limit() -> usize {
    16 * 1024
}
fn default_max_headers() -> Spanned<usize> {
    Spanned::new(0..0, 100)
}
fn default_max_header_bytes() -> Spanned<usize> {
    Spanned::new(0..0, 32 * 1024)
}
fn default_tenant() -> Spanned<String> {
    Spanned::new(0..0, "default".into())
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: default_listen(),
            upstream: default_upstream(),
            upstream_ca_file: None,
            upstreams: Vec::new(),
            upstream_balance: None,
            upstream_health_interval: None,
            upstream_health_path: None,
            threads: None,
            grace_period: None,
            shutdown_timeout: None,
            header_timeout: None,
            keepalive_timeout: None,
            upstream_connect_timeout: None,
            upstream_read_timeout: None,
            upstream_dns_interval: None,
            max_connections: None,
            max_connections_per_ip: None,
            trusted_proxies: Vec::new(),
            body_limit: default_body_limit(),
            max_headers: default_max_headers(),
            max_header_bytes: default_max_header_bytes(),
            default_tenant: default_tenant(),
            h2c: false,
            tls: None,
        }
    }
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    #[default]
    Memory,
    Redis,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    pub backend: Option<Spanned<StoreBackend>>,
    // Read only where the Redis store is built in; without it `backend = "redis"` is
    // refused before these are looked at.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub redis_url: Option<Spanned<EnvString>>,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub redis_cluster: Option<Spanned<Vec<EnvString>>>,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub sentinels: Option<Spanned<Vec<EnvString>>>,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub sentinel_master: Option<Spanned<String>>,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub tls_ca_file: Option<Spanned<String>>,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub tls_client_cert: Option<Spanned<String>>,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub tls_client_key: Option<Spanned<String>>,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub namespace: Option<Spanned<String>>,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub timeout: Option<ConfigDuration>,
    pub revocation_fallback: Option<RevocationFallbackName>,
    pub revocation_poll: Option<Spanned<ConfigDuration>>,
    pub max_entries: Option<u64>,
}

#[derive(Debug, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum RevocationFallbackName {
    Allow,
    Deny,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtpSection {
    pub length: Option<Spanned<usize>>,
    pub alphabet: Option<Alphabet>,
    pub ttl: Option<Spanned<ConfigDuration>>,
    pub max_attempts: Option<Spanned<u32>>,
    pub resend_cooldown: Option<Spanned<ConfigDuration>>,
    pub sends_per_identifier: Option<Spanned<ConfigRate>>,
    pub sends_per_ip: Option<ConfigRate>,
    pub verifies_per_ip: Option<ConfigRate>,
    pub failure_budget: Option<Spanned<u32>>,
    pub failure_memory: Option<Spanned<ConfigDuration>>,
    /// Keys code hashes; required when several instances share a store.
    pub secret: Option<Spanned<EnvString>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSection {
    #[serde(default)]
    pub algorithm: Option<Spanned<String>>,
    pub private_key: Option<Spanned<String>>,
    #[serde(default)]
    pub previous_keys: Vec<Spanned<String>>,
    pub secret: Option<Spanned<EnvString>>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub ttl: Option<ConfigDuration>,
    pub refresh_ttl: Option<ConfigDuration>,
    pub exchange_ttl: Option<ConfigDuration>,
    pub leeway: Option<ConfigDuration>,
    pub cache_entries: Option<Spanned<i64>>,
    pub cookie: Option<String>,
    pub cookie_secure: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySection {
    pub jwt_header: Option<Spanned<String>>,
    pub subject_header: Option<Spanned<String>>,
    pub email_header: Option<Spanned<String>>,
    pub phone_header: Option<Spanned<String>>,
    pub tenant_header: Option<Spanned<String>>,
    pub strip: Option<Vec<String>>,
    pub strip_reroute_headers: Option<bool>,
}

/// How request paths are read (`[paths]`); see `crate::http::PathPolicy`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathsSection {
    #[serde(default)]
    pub case_sensitive: bool,
    #[serde(default)]
    pub allow_path_params: bool,
    #[serde(default)]
    pub allow_encoded_slashes: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectSection {
    pub prefix: Spanned<String>,
    pub methods: Option<Vec<Spanned<String>>>,
    pub tenants: Option<Vec<Spanned<String>>>,
    pub emails: Option<Vec<Spanned<String>>>,
    pub email_domains: Option<Vec<Spanned<String>>>,
    pub phone_countries: Option<Vec<Spanned<String>>>,
    pub max_session_age: Option<Spanned<ConfigDuration>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagesSection {
    pub enabled: Option<bool>,
    pub prefix: Option<Spanned<String>>,
    pub default_return: Option<Spanned<String>>,
    pub allowed_return_hosts: Option<Vec<String>>,
    pub sign_in_links: Option<Spanned<bool>>,
    pub flow_ttl: Option<Spanned<ConfigDuration>>,
    pub public_url: Option<Spanned<String>>,
    pub forward_auth: Option<bool>,
    #[serde(default)]
    pub branding: Vec<BrandingSection>,
}

/// `[[pages.branding]]`: one tenant's looks and words.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrandingSection {
    pub tenant: Spanned<String>,
    pub title: Option<String>,
    pub logo_url: Option<Spanned<String>>,
    pub primary_color: Option<Spanned<String>>,
    pub background_color: Option<Spanned<String>>,
    pub locale: Option<Spanned<String>>,
    pub texts: Option<Spanned<std::collections::BTreeMap<String, String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSection {
    pub dialect: Spanned<String>,
    pub prefix: String,
    pub client_keys: Option<Vec<EnvString>>,
    pub assertion_header: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySection {
    pub email: Option<Spanned<SenderSection>>,
    pub sms: Option<Spanned<SenderSection>>,
    pub outbox_capacity: Option<usize>,
    pub concurrency: Option<usize>,
    pub attempts: Option<Spanned<u32>>,
    pub retry_backoff: Option<ConfigDuration>,
    pub timeout: Option<ConfigDuration>,
}

#[derive(Debug, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum SenderKind {
    Console,
    Webhook,
    Smtp,
    Twilio,
}

#[derive(Debug, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum SecurityKind {
    None,
    Starttls,
    Tls,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SenderSection {
    pub kind: SenderKind,
    // webhook
    pub url: Option<EnvString>,
    pub secret: Option<EnvString>,
    pub timeout: Option<ConfigDuration>,
    // smtp
    pub host: Option<String>,
    pub port: Option<u16>,
    pub security: Option<SecurityKind>,
    pub username: Option<EnvString>,
    pub password: Option<EnvString>,
    pub from: Option<EnvString>,
    pub ca_file: Option<String>,
    pub pool_size: Option<u32>,
    // twilio
    pub account_sid: Option<EnvString>,
    pub auth_token: Option<EnvString>,
    pub messaging_service_sid: Option<EnvString>,
    pub base_url: Option<String>,
    /// Takes over when this provider fails.
    pub fallback: Option<Box<SenderSection>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSection {
    pub tenant: Option<String>,
    pub channel: Option<Channel>,
    pub locale: Option<String>,
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub from_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSection {
    pub id: Spanned<String>,
    #[serde(default = "all_channels")]
    pub channels: Spanned<Vec<Channel>>,
    #[serde(default = "yes")]
    pub auto_create: bool,
    #[serde(default)]
    pub reveal_account: bool,
    pub name: Option<String>,
    /// ISO 3166-1 alpha-2 regions its SMS go to; absent: every region.
    pub sms_countries: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub allow_voip: bool,
    /// The only email domains its codes go to.
    pub email_domains: Option<Spanned<Vec<Spanned<String>>>>,
    /// A file of email domains its codes never go to (nor to their subdomains).
    pub email_domains_block_file: Option<Spanned<String>>,
    /// When its sends need a solved proof-of-work challenge: `never` or `always`.
    pub challenge: Option<Spanned<String>>,
    /// The largest number a challenge hides (its difficulty).
    pub challenge_max_number: Option<Spanned<u64>>,
}

fn all_channels() -> Spanned<Vec<Channel>> {
    Spanned::new(0..0, vec![Channel::Email, Channel::Sms])
}
fn yes() -> bool {
    true
}

/// `[metrics]`: where the Prometheus metrics are served; nowhere when `listen` is absent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    pub listen: Option<Spanned<String>>,
}

/// `[sms_guard]`: velocity caps, budgets and the pumping signature for SMS sends.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsGuardSection {
    pub prefix_digits: Option<Spanned<usize>>,
    pub window: Option<Spanned<ConfigDuration>>,
    pub per_country: Option<Spanned<u64>>,
    pub per_prefix: Option<Spanned<u64>>,
    pub hourly_messages: Option<Spanned<u64>>,
    pub daily_messages: Option<Spanned<u64>>,
    pub hourly_cost: Option<Spanned<f64>>,
    pub daily_cost: Option<Spanned<f64>>,
    pub pumping: Option<Spanned<bool>>,
    pub min_sends: Option<Spanned<u64>>,
    pub min_verify_ratio: Option<Spanned<f64>>,
    pub cool_down: Option<Spanned<ConfigDuration>>,
    /// Price per message by ISO region, calling code or `default`.
    #[serde(default)]
    pub prices: std::collections::BTreeMap<String, Spanned<f64>>,
}
