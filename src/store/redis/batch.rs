//! Commands sent together: the independent operations a request starts with (its per-IP
//! counter, its code record, its account), and a code record's compare-and-set with the
//! value written beside it. Two round trips for a send or a verify instead of four or
//! five.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::future::join_all;
use redis::{AsyncCommands, Cmd, ErrorKind, RedisResult, Script, ServerErrorKind, Value};

use super::connect::Connection;
use super::{LOCK_WAIT_TIMEOUTS, MAX_CONFLICTS, RedisStore, decode, ttl_millis, unavailable};
use crate::otp::{Timestamp, Write};
use crate::store::{Answer, CodeRecord, CodeStateUpdateWith, CodeUpdate, Op, StoreError};

impl RedisStore {
    /// [`Store::batch`](crate::store::Store::batch): every operation in one round trip.
    pub(super) async fn send_batch(&self, ops: &[Op<'_>]) -> Vec<Result<Answer, StoreError>> {
        let keys: Vec<String> = ops
            .iter()
            .map(|op| {
                self.redis_key(match *op {
                    Op::Hit { key, .. } | Op::ReadCodeState { key } | Op::GetValue { key } => key,
                })
            })
            .collect();
        // Counted before the reads leave, so an update can tell whether this process wrote
        // a record after it was read.
        let writes: Vec<u64> = keys
            .iter()
            .map(|key| self.writes_for(key).load(Ordering::SeqCst))
            .collect();
        let commands: Vec<Cmd> = ops
            .iter()
            .zip(&keys)
            .map(|(op, key)| match *op {
                Op::Hit { window, now, .. } => self.hit_command(key, window, now),
                Op::ReadCodeState { .. } | Op::GetValue { .. } => redis::cmd("GET").arg(key).take(),
            })
            .collect();
        let answers = match self.together(&commands).await {
            Ok(answers) => answers,
            Err(error) => return ops.iter().map(|_| Err(error.clone())).collect(),
        };
        ops.iter()
            .zip(&keys)
            .zip(writes)
            .zip(answers)
            .map(|(((op, key), writes), answer)| {
                let value = answer.map_err(unavailable)?;
                match op {
                    Op::Hit { .. } => {
                        let (count, resets_at): (u64, u64) = parse(value)?;
                        Ok(Answer::Hit(crate::store::WindowCount {
                            count,
                            resets_at: Timestamp(resets_at),
                        }))
                    }
                    Op::ReadCodeState { .. } => {
                        Ok(Answer::CodeState(record(parse(value)?, writes)?))
                    }
                    Op::GetValue { .. } => {
                        let read: Option<Vec<u8>> = parse(value)?;
                        let opened = read.map(|sealed| self.open(key, sealed)).transpose()?;
                        Ok(Answer::Value(opened))
                    }
                }
            })
            .collect()
    }

    /// [`Store::read_code_state`](crate::store::Store::read_code_state).
    pub(super) async fn read_code_record(&self, key: &str) -> Result<CodeRecord, StoreError> {
        let redis_key = self.redis_key(key);
        let writes = self.writes_for(&redis_key).load(Ordering::SeqCst);
        let mut connection = self.connection()?;
        record(self.bounded(connection.get(&redis_key)).await?, writes)
    }

    /// A read-modify-write of the code record under `key`, starting from `known` (the
    /// record as read a moment ago) or, without it, from a fresh read. The record's
    /// compare-and-set and the value `update` asks for go in one round trip; when the
    /// record changed since it was read, it is read again and `update` decides again.
    pub(super) async fn update_code_record(
        &self,
        key: &str,
        known: Option<Known>,
        update: &mut CodeStateUpdateWith<'_>,
    ) -> Result<(), StoreError> {
        let redis_key = self.redis_key(key);
        // The wait is bounded too: with Redis down, a queue of updates to one destination
        // must not turn into one long wait per request.
        let _serialised = tokio::time::timeout(
            self.inner.timeout * LOCK_WAIT_TIMEOUTS,
            self.lock_for(&redis_key).lock(),
        )
        .await
        .map_err(|_| {
            StoreError::Unavailable("too many updates of one destination at once".into())
        })?;
        let writes = self.writes_for(&redis_key);
        // A read from before an update of this process wrote is stale: read again at once
        // rather than send a compare-and-set bound to lose. Updates queued here behind
        // one another then take no more round trips than without the read.
        let mut known = known
            .filter(|known| known.writes == writes.load(Ordering::SeqCst))
            .map(|known| known.bytes);
        let mut connection = self.connection()?;
        for conflict in 0..MAX_CONFLICTS {
            if conflict > 0 {
                // Another update won the last round. A random pause, growing with each
                // loss, lets this one take a turn: a steady stream of the other's updates
                // cannot starve it.
                let pause = rand::random_range(0..=conflict.min(8) as u64);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            let read: Option<Vec<u8>> = match known.take() {
                Some(read) => read,
                None => self.bounded(connection.get(&redis_key)).await?,
            };
            let current = read.as_deref().map(decode).transpose()?;
            let CodeUpdate { write, also } = update(current);
            let mut commands = Vec::with_capacity(2);
            let new_record = match write {
                // What was read was the record at that moment: keeping it needs no write.
                Write::Keep => None,
                Write::Put { state, ttl } => Some((
                    serde_json::to_vec(&state).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    ttl_millis(ttl),
                )),
                Write::Delete => Some((Vec::new(), 0)),
            };
            let compares = new_record.is_some();
            if let Some((new_record, ttl)) = new_record {
                let mut compare_and_set = evalsha(&self.inner.compare_and_set, &redis_key);
                compare_and_set
                    .arg(if read.is_some() { "1" } else { "0" })
                    .arg(read.as_deref().unwrap_or_default())
                    .arg(new_record)
                    .arg(ttl);
                commands.push(compare_and_set);
            }
            if let Some(value) = also {
                commands.push(self.set_command(value.key, value.value, value.ttl, value.mode));
            }
            if commands.is_empty() {
                return Ok(());
            }
            if compares {
                // Counted before it leaves: even unanswered, it may land.
                writes.fetch_add(1, Ordering::SeqCst);
            }
            let mut answers = self.together(&commands).await?.into_iter();
            let written = if compares {
                let answer = answers.next().ok_or_else(missing_answer)?;
                parse::<i64>(answer.map_err(unavailable)?)? == 1
            } else {
                true
            };
            if also.is_some() {
                // Whether an `IfAbsent` value was new does not matter here; a failure does,
                // unless the record was written: the decision then stands (a verify has
                // spent the code), and failing it would only cost the person that code.
                let also_written = answers.next().ok_or_else(missing_answer)?;
                match also_written {
                    Err(error) if written => tracing::warn!(
                        error = %error,
                        "a value written with a code record's update did not land; the update stands"
                    ),
                    other => {
                        other.map_err(unavailable)?;
                    }
                }
            }
            if written {
                return Ok(());
            }
            // Another update changed the record between the read and the write: decide
            // again on what it wrote.
        }
        Err(StoreError::Unavailable(format!(
            "a code record kept changing under {MAX_CONFLICTS} updates"
        )))
    }

    /// The hit script on `redis_key`.
    fn hit_command(&self, redis_key: &str, window: Duration, now: Timestamp) -> Cmd {
        let mut command = evalsha(&self.inner.hit, redis_key);
        command.arg(now.0).arg(ttl_millis(window));
        command
    }

    /// Sends `commands` together and answers each. To one server (or Sentinel's primary)
    /// they go as one pipeline: one round trip. A cluster takes a pipeline only when all
    /// its keys share a slot, and the store's keys each hash alone, so there every command
    /// goes to the node owning its key, all at once: the wait is still one round trip.
    /// A script Redis does not know (after a restart or `SCRIPT FLUSH`) is loaded, and
    /// the commands that ran into that sent again.
    async fn together(&self, commands: &[Cmd]) -> Result<Vec<RedisResult<Value>>, StoreError> {
        let mut connection = self.connection()?;
        let mut answers = self.bounded(send(&mut connection, commands)).await?;
        let unknown: Vec<usize> = (0..answers.len())
            .filter(|&at| {
                matches!(&answers[at], Err(error)
                    if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript))
            })
            .collect();
        if unknown.is_empty() {
            return Ok(answers);
        }
        self.bounded(async {
            self.inner.hit.load_async(&mut connection).await?;
            self.inner.compare_and_set.load_async(&mut connection).await
        })
        .await?;
        let again: Vec<Cmd> = unknown.iter().map(|&at| commands[at].clone()).collect();
        let answered = self.bounded(send(&mut connection, &again)).await?;
        for (at, answer) in unknown.into_iter().zip(answered) {
            answers[at] = answer;
        }
        Ok(answers)
    }
}

/// `EVALSHA` of `script` on the one key it touches; its arguments follow.
fn evalsha(script: &Script, redis_key: &str) -> Cmd {
    redis::cmd("EVALSHA")
        .arg(script.get_hash())
        .arg(1)
        .arg(redis_key)
        .take()
}

/// The commands' answers, each with its own result; an error for all of them only when
/// the connection failed.
async fn send(
    connection: &mut Connection,
    commands: &[Cmd],
) -> RedisResult<Vec<RedisResult<Value>>> {
    if let Connection::Cluster(cluster) = connection {
        let asked = commands.iter().map(|command| {
            let mut cluster = cluster.clone();
            async move { command.query_async::<Value>(&mut cluster).await }
        });
        return Ok(join_all(asked).await);
    }
    let mut pipeline = redis::pipe();
    for command in commands {
        pipeline.add_command(command.clone());
    }
    pipeline.ignore_errors().query_async(connection).await
}

/// A code record as this store read it, for the update that starts from it.
pub(super) struct Known {
    /// The compare-and-sets sent on its lock stripe before the read was sent.
    writes: u64,
    /// Its bytes; `None` when there was no record.
    bytes: Option<Vec<u8>>,
}

/// A code record as read, with what its update needs in its version: the count of
/// compare-and-sets before the read (8 bytes), whether there was a record (1) and its
/// bytes, for the compare-and-set.
fn record(read: Option<Vec<u8>>, writes: u64) -> Result<CodeRecord, StoreError> {
    let state = read.as_deref().map(decode).transpose()?;
    let mut version = writes.to_le_bytes().to_vec();
    version.push(u8::from(read.is_some()));
    version.extend(read.unwrap_or_default());
    Ok(CodeRecord::new(state, Some(version)))
}

/// What [`record`] kept; `None` for a record this store did not read (read it again).
pub(super) fn known(read: &CodeRecord) -> Option<Known> {
    let (writes, rest) = read.version()?.split_first_chunk::<8>()?;
    let (present, bytes) = rest.split_first()?;
    Some(Known {
        writes: u64::from_le_bytes(*writes),
        bytes: (*present == 1).then(|| bytes.to_vec()),
    })
}

fn parse<T: redis::FromRedisValue>(value: Value) -> Result<T, StoreError> {
    redis::from_redis_value(value).map_err(|e| StoreError::Corrupt(format!("redis: {e}")))
}

fn missing_answer() -> StoreError {
    StoreError::Corrupt("redis answered fewer commands than were sent".into())
}
