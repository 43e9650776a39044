//! The shared store on Redis (or Valkey), for several gate instances serving one site.
//!
//! Every operation is one or two round trips on a single multiplexed connection (one per
//! node for a Redis Cluster) that re-establishes itself after Redis restarts; a send or a
//! verify takes two in all, its independent reads sent together and then its writes (see
//! `batch`). Every operation is bounded by a timeout, so an unreachable Redis turns into a quick
//! [`StoreError::Unavailable`] (a 503) instead of a hung request. Every script and command
//! names exactly one key, so each runs on the one node that owns it in a cluster.
//!
//! What Redis holds says nothing about who signs in: keys are an HMAC of the logical key
//! (which contains the email, phone or client address), and text values (which may hold
//! a phone number waiting for a second factor) are sealed with AES-256-GCM. Identity
//! records hold only keyed code hashes, counters and times. Both keys derive from the
//! gate's server secret, which every instance shares anyway.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use rand::TryRngCore;
use rand::rngs::OsRng;
use redis::{AsyncCommands, Script};
use tokio::sync::Mutex;

use super::{
    Answer, CodeRecord, CodeStateUpdate, CodeStateUpdateWith, CodeUpdate, Op, SetMode, Store,
    StoreError, WindowCount,
};
use crate::otp::{CodeState, ServerSecret, Timestamp};

mod batch;
mod connect;
mod sentinel;

use connect::{Connection, Target};
pub use connect::{RedisClientCert, RedisTls, RedisTopology};

/// How a [`RedisStore`] connects.
#[derive(Clone, Debug)]
pub struct RedisSettings {
    /// `redis://[user:password@]host[:port][/db]`, or `rediss://` for TLS (the
    /// certificate is checked: `#insecure` is refused). `valkey://` and `valkeys://` are
    /// the same. For a Redis Cluster, one seed node (see [`RedisTopology`]).
    pub url: String,
    /// Prefix of every key, so several sites can share one Redis.
    pub namespace: String,
    /// Bound on each operation, connecting included. Past it the operation fails and
    /// the request gets a 503.
    pub timeout: Duration,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: "redis://127.0.0.1:6379".into(),
            namespace: "otpgate".into(),
            timeout: Duration::from_millis(500),
        }
    }
}

/// A Redis URL (or the certificates that go with it) that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid redis url: {0}")]
pub struct InvalidRedisUrl(String);

/// Compare-and-set of a code record: written only if the record is still the one
/// that was read (ARGV[1] = "1" when one was read, ARGV[2] its bytes; ARGV[3] the new
/// record, empty to delete; ARGV[4] its TTL in milliseconds).
const COMPARE_AND_SET: &str = r#"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
end
return 1
"#;

/// A fixed-window counter, the same rule as the memory store's: the window opens at the
/// first hit after the last one ended (ARGV[1] = now, ARGV[2] = window, milliseconds).
/// The gate's clock decides, not Redis's, so every instance and every test agrees.
const HIT: &str = r#"
local now = tonumber(ARGV[1])
local resets = tonumber(redis.call('HGET', KEYS[1], 'r') or '0')
if resets > now then
  local count = redis.call('HINCRBY', KEYS[1], 'c', 1)
  return {count, resets}
end
resets = now + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'c', 1, 'r', resets)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, resets}
"#;

/// Local serialisation of updates to one key. Contention for one destination inside this
/// process waits here instead of making every contender retry against Redis; the
/// compare-and-set still decides between instances.
const LOCK_STRIPES: usize = 1024;

/// How many operation timeouts an update may wait for its turn on one destination.
const LOCK_WAIT_TIMEOUTS: u32 = 4;

/// Retries of a compare-and-set that lost to another instance. Each loss means another
/// instance's update landed, so this is only reached under pathological contention.
const MAX_CONFLICTS: usize = 64;

/// The Redis store. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    /// How logs name the store: addresses, never the URL's password.
    description: String,
    connection: OnceLock<Connection>,
    namespace: String,
    timeout: Duration,
    key_hasher: hmac::Key,
    sealer: LessSafeKey,
    locks: Box<[Mutex<()>]>,
    /// Per lock stripe, how many compare-and-sets this store has sent: a record read
    /// while it stayed the same has not been changed by this process since.
    writes: Box<[AtomicU64]>,
    compare_and_set: Script,
    hit: Script,
}

impl RedisStore {
    /// A store on the Redis at `settings.url`. Nothing connects yet: the first operation
    /// does, inside the runtime that serves requests, and a Redis that is down at start
    /// only makes operations fail until it is up.
    pub fn new(settings: RedisSettings, secret: &ServerSecret) -> Result<Self, InvalidRedisUrl> {
        Self::with_options(
            settings,
            &RedisTopology::Single,
            &RedisTls::default(),
            secret,
        )
    }

    /// A store on a Redis Cluster or over TLS with certificates of its own: as
    /// [`RedisStore::new`], with `topology` saying what `settings.url` names and `tls`
    /// the certificates of `rediss://` connections. Certificates are parsed here, so a
    /// bad one fails now. When TLS is used and the process has no default rustls
    /// provider yet, aws-lc-rs is installed as that default.
    pub fn with_options(
        settings: RedisSettings,
        topology: &RedisTopology,
        tls: &RedisTls,
        secret: &ServerSecret,
    ) -> Result<Self, InvalidRedisUrl> {
        let (target, description) = connect::open(&settings.url, topology, tls, settings.timeout)?;
        // Derived keys are wiped once the AES and HMAC contexts hold them.
        let sealing_key = zeroize::Zeroizing::new(secret.derive_key("otpgate redis store values"));
        let hashing_key = zeroize::Zeroizing::new(secret.derive_key("otpgate redis store keys"));
        let sealer = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &*sealing_key)
                // Infallible: the key is 32 bytes, AES-256's length.
                .expect("a 32-byte AES-256 key"),
        );
        Ok(RedisStore {
            inner: Arc::new(Inner {
                target,
                description,
                connection: OnceLock::new(),
                namespace: settings.namespace,
                timeout: settings.timeout,
                key_hasher: hmac::Key::new(hmac::HMAC_SHA256, &*hashing_key),
                sealer,
                locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
                writes: (0..LOCK_STRIPES).map(|_| AtomicU64::new(0)).collect(),
                compare_and_set: Script::new(COMPARE_AND_SET),
                hit: Script::new(HIT),
            }),
        })
    }

    /// Asks Redis for a PONG; for readiness checks and start-up logs.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection()?;
        self.bounded(async move {
            // On a cluster every primary must answer.
            redis::cmd("PING").query_async::<()>(&mut connection).await
        })
        .await
        .map(drop)
    }

    /// The Redis key of a logical key: the namespace, the key's kind (the part before its
    /// first `:`, which names no one) and an HMAC of the whole key, so no identifier or
    /// address is readable in Redis and keys cannot be guessed without the secret.
    pub fn redis_key(&self, key: &str) -> String {
        let kind = key.split_once(':').map_or("misc", |(kind, _)| kind);
        let tag = hmac::sign(&self.inner.key_hasher, key.as_bytes());
        let mut out = String::with_capacity(self.inner.namespace.len() + kind.len() + 34);
        out.push_str(&self.inner.namespace);
        out.push(':');
        out.push_str(kind);
        out.push(':');
        crate::util::push_hex(&mut out, &tag.as_ref()[..16]);
        out
    }

    /// The one connection every command and script goes through.
    fn connection(&self) -> Result<Connection, StoreError> {
        if let Some(connection) = self.inner.connection.get() {
            return Ok(connection.clone());
        }
        // Created on first use because the connection spawns its reconnection task on the
        // runtime at hand, which must be the one serving requests.
        let connection = self.inner.target.connect().map_err(unavailable)?;
        Ok(self.inner.connection.get_or_init(|| connection).clone())
    }

    async fn bounded<T>(
        &self,
        operation: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.inner.timeout, operation).await {
            Ok(result) => result.map_err(unavailable),
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer from redis within {:?}",
                self.inner.timeout
            ))),
        }
    }

    /// `SET` of `value`, sealed, under `key` for `ttl`.
    fn set_command(&self, key: &str, value: &str, ttl: Duration, mode: SetMode) -> redis::Cmd {
        let redis_key = self.redis_key(key);
        let sealed = self.seal(&redis_key, value);
        let mut command = redis::cmd("SET");
        command
            .arg(&redis_key)
            .arg(sealed)
            .arg("PX")
            .arg(ttl_millis(ttl));
        if mode == SetMode::IfAbsent {
            // SET NX is atomic in Redis: of many concurrent callers exactly one writes.
            command.arg("NX");
        }
        command
    }

    /// The lock stripe of `redis_key`.
    fn stripe(&self, redis_key: &str) -> usize {
        let tag = hmac::sign(&self.inner.key_hasher, redis_key.as_bytes());
        let index = u16::from_le_bytes([tag.as_ref()[0], tag.as_ref()[1]]) as usize;
        index % LOCK_STRIPES
    }

    fn lock_for(&self, redis_key: &str) -> &Mutex<()> {
        &self.inner.locks[self.stripe(redis_key)]
    }

    /// The count of compare-and-sets sent on `redis_key`'s stripe.
    fn writes_for(&self, redis_key: &str) -> &AtomicU64 {
        &self.inner.writes[self.stripe(redis_key)]
    }

    /// Seals a text value; the Redis key is the associated data, so a value copied to
    /// another key does not open.
    fn seal(&self, redis_key: &str, value: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        // A random 96-bit nonce per value: values are few and short-lived, far from the
        // 2^32 messages per key where random nonces start to risk repeating.
        OsRng
            .try_fill_bytes(&mut nonce)
            .expect("the operating system's random number generator failed");
        let mut sealed = value.as_bytes().to_vec();
        self.inner
            .sealer
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(redis_key.as_bytes()),
                &mut sealed,
            )
            // Infallible for values far below AES-GCM's 64 GiB limit.
            .expect("AES-GCM sealing");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    fn open(&self, redis_key: &str, mut sealed: Vec<u8>) -> Result<String, StoreError> {
        if sealed.len() < NONCE_LEN {
            return Err(StoreError::Corrupt("sealed value too short".into()));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[..NONCE_LEN]);
        let plain = self
            .inner
            .sealer
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(redis_key.as_bytes()),
                &mut sealed[NONCE_LEN..],
            )
            .map_err(|_| {
                StoreError::Corrupt("a value does not open (another secret, or tampered)".into())
            })?;
        String::from_utf8(plain.to_vec()).map_err(|e| StoreError::Corrupt(e.to_string()))
    }
}

fn unavailable(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {error}"))
}

fn decode(bytes: &[u8]) -> Result<CodeState, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn ttl_millis(ttl: Duration) -> u64 {
    // Redis refuses a zero expiry; a record due now lives one more millisecond.
    (ttl.as_millis() as u64).max(1)
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("namespace", &self.inner.namespace)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn update_code_state(
        &self,
        key: &str,
        update: &mut CodeStateUpdate<'_>,
    ) -> Result<(), StoreError> {
        let mut update = |current| CodeUpdate {
            write: update(current),
            also: None,
        };
        self.update_code_record(key, None, &mut update).await
    }

    async fn batch(&self, ops: &[Op<'_>]) -> Vec<Result<Answer, StoreError>> {
        self.send_batch(ops).await
    }

    async fn read_code_state(&self, key: &str) -> Result<CodeRecord, StoreError> {
        self.read_code_record(key).await
    }

    async fn update_code_state_from(
        &self,
        key: &str,
        read: CodeRecord,
        update: &mut CodeStateUpdateWith<'_>,
    ) -> Result<(), StoreError> {
        self.update_code_record(key, batch::known(&read), update)
            .await
    }

    async fn hit(
        &self,
        key: &str,
        window: Duration,
        now: Timestamp,
    ) -> Result<WindowCount, StoreError> {
        let redis_key = self.redis_key(key);
        let mut connection = self.connection()?;
        let mut invocation = self.inner.hit.key(&redis_key);
        invocation.arg(now.0).arg(ttl_millis(window));
        let (count, resets_at): (u64, u64) = self
            .bounded(invocation.invoke_async(&mut connection))
            .await?;
        Ok(WindowCount {
            count,
            resets_at: Timestamp(resets_at),
        })
    }

    async fn peek_code_state(&self, key: &str) -> Result<Option<CodeState>, StoreError> {
        let redis_key = self.redis_key(key);
        let mut connection = self.connection()?;
        let read: Option<Vec<u8>> = self.bounded(connection.get(&redis_key)).await?;
        read.as_deref().map(decode).transpose()
    }

    async fn set_value(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
        mode: SetMode,
    ) -> Result<bool, StoreError> {
        let command = self.set_command(key, value, ttl, mode);
        let mut connection = self.connection()?;
        let answer: Option<String> = self.bounded(command.query_async(&mut connection)).await?;
        Ok(answer.is_some())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        RedisStore::ping(self).await
    }

    fn describe(&self) -> String {
        // The address only: the URL may carry a password.
        format!(
            "{}, namespace {:?}, timeout {:?}",
            self.inner.description, self.inner.namespace, self.inner.timeout
        )
    }

    async fn get_value(&self, key: &str) -> Result<Option<String>, StoreError> {
        let redis_key = self.redis_key(key);
        let mut connection = self.connection()?;
        let read: Option<Vec<u8>> = self.bounded(connection.get(&redis_key)).await?;
        read.map(|sealed| self.open(&redis_key, sealed)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::{COMPARE_AND_SET, HIT};

    /// The `KEYS[n]` indices a script's source reads.
    fn keys_read(script: &str) -> Vec<usize> {
        let mut found: Vec<usize> = script
            .match_indices("KEYS[")
            .filter_map(|(at, _)| {
                let rest = &script[at + "KEYS[".len()..];
                rest[..rest.find(']')?].parse().ok()
            })
            .collect();
        found.sort_unstable();
        found.dedup();
        found
    }

    /// A Redis Cluster runs a script on the node owning its first key and refuses keys of
    /// other slots, so a second key would need hash tags (see `store::keys`). Each script
    /// is invoked with one `.key(...)` and reads only that key.
    #[test]
    fn every_script_touches_exactly_one_key() {
        for (name, script) in [("COMPARE_AND_SET", COMPARE_AND_SET), ("HIT", HIT)] {
            assert_eq!(keys_read(script), [1], "{name} reads KEYS[1] only");
            assert!(!script.contains("#KEYS"), "{name} does not loop over keys");
        }
        assert_eq!(keys_read("redis.call('GET', KEYS[1], KEYS[2])"), [1, 2]);
    }
}
