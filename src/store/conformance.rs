//! The behaviour every [`Store`] backend must show, written once.
//!
//! A backend's tests call [`run_all`] with a factory of fresh, empty stores:
//!
//! ```no_run
//! # async fn demo() {
//! otpgate::store::conformance::run_all(|| otpgate::store::MemoryStore::new(10_000)).await;
//! # }
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{
    Answer, CodeRecord, CodeStateUpdate, CodeUpdate, Op, SetMode, SetValue, Store, StoreError,
    WindowCount,
};
use crate::otp::{
    CodeFormat, CodeHasher, CodePolicy, CodeState, ServerSecret, Timestamp, VerifyDecision, Write,
    decide_issue, decide_verify,
};

/// Runs every check against fresh stores made by `make`. Panics on the first failure.
pub async fn run_all<S: Store, F: Fn() -> S>(make: F) {
    missing_records_read_as_none(make()).await;
    put_keep_and_delete(make()).await;
    records_expire_with_their_ttl(make()).await;
    concurrent_updates_are_serialized(&[Arc::new(make())]).await;
    exactly_one_of_many_concurrent_verifies_wins(&[Arc::new(make())]).await;
    counters_count_within_a_window(make()).await;
    concurrent_hits_are_all_counted(Arc::new(make())).await;
    values_are_set_read_and_expire(make()).await;
    exactly_one_of_many_concurrent_if_absent_sets_wins(Arc::new(make())).await;
    a_batch_answers_each_operation_in_order(make()).await;
    updates_start_from_a_record_read_before(make()).await;
    exactly_one_of_many_concurrent_verifies_from_reads_wins(&[Arc::new(make())]).await;
}

/// The checks that matter when several gate instances share one backend: `make` returns
/// two independent handles (two connections, as two instances would have) on one fresh
/// backend, and the concurrent calls are split between them.
pub async fn run_shared<S: Store, F: Fn() -> (S, S)>(make: F) {
    let (a, b) = make();
    let (a, b) = (Arc::new(a), Arc::new(b));
    a.update_code_state("shared", &mut |_| Write::Put {
        state: state_with_sends(7),
        ttl: Duration::from_secs(60),
    })
    .await
    .unwrap();
    assert_eq!(
        b.peek_code_state("shared").await.unwrap(),
        Some(state_with_sends(7)),
        "a record written through one handle reads through the other"
    );
    concurrent_updates_are_serialized(&[a, b]).await;
    let (a, b) = make();
    exactly_one_of_many_concurrent_verifies_wins(&[Arc::new(a), Arc::new(b)]).await;
    let (a, b) = make();
    exactly_one_of_many_concurrent_verifies_from_reads_wins(&[Arc::new(a), Arc::new(b)]).await;
}

fn state_with_sends(sends: u32) -> CodeState {
    CodeState {
        sends_in_window: sends,
        ..CodeState::default()
    }
}

/// An absent key reads as `None`, for peeks and updates alike.
pub async fn missing_records_read_as_none<S: Store>(store: S) {
    assert_eq!(store.peek_code_state("absent").await.unwrap(), None);
    let mut seen = Some(CodeState::default());
    store
        .update_code_state("absent", &mut |current| {
            seen = current;
            Write::Keep
        })
        .await
        .unwrap();
    assert_eq!(seen, None);
    assert_eq!(store.peek_code_state("absent").await.unwrap(), None);
}

/// `Put` stores, `Keep` leaves, `Delete` removes.
pub async fn put_keep_and_delete<S: Store>(store: S) {
    let ttl = Duration::from_secs(60);
    store
        .update_code_state("k", &mut |_| Write::Put {
            state: state_with_sends(3),
            ttl,
        })
        .await
        .unwrap();
    assert_eq!(
        store.peek_code_state("k").await.unwrap(),
        Some(state_with_sends(3))
    );
    store
        .update_code_state("k", &mut |_| Write::Keep)
        .await
        .unwrap();
    assert_eq!(
        store.peek_code_state("k").await.unwrap(),
        Some(state_with_sends(3))
    );
    assert_eq!(
        store.peek_code_state("other").await.unwrap(),
        None,
        "keys are independent"
    );
    let mut seen = None;
    store
        .update_code_state("k", &mut |current| {
            seen = current;
            Write::Delete
        })
        .await
        .unwrap();
    assert_eq!(
        seen,
        Some(state_with_sends(3)),
        "update sees the stored record"
    );
    assert_eq!(store.peek_code_state("k").await.unwrap(), None);
}

/// A record is gone once its TTL has passed.
pub async fn records_expire_with_their_ttl<S: Store>(store: S) {
    let ttl = Duration::from_millis(300);
    store
        .update_code_state("short", &mut |_| Write::Put {
            state: state_with_sends(1),
            ttl,
        })
        .await
        .unwrap();
    store
        .update_code_state("long", &mut |_| Write::Put {
            state: state_with_sends(1),
            ttl: Duration::from_secs(60),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(store.peek_code_state("short").await.unwrap(), None);
    assert!(store.peek_code_state("long").await.unwrap().is_some());
}

/// 1000 concurrent read-modify-writes of one key, spread over `handles`, lose no update.
pub async fn concurrent_updates_are_serialized<S: Store>(handles: &[Arc<S>]) {
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let store = Arc::clone(&handles[i % handles.len()]);
            tokio::spawn(async move {
                store
                    .update_code_state("counter", &mut |current| {
                        let mut state = current.unwrap_or_default();
                        state.sends_in_window += 1;
                        Write::Put {
                            state,
                            ttl: Duration::from_secs(60),
                        }
                    })
                    .await
                    .unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let state = handles[0]
        .peek_code_state("counter")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.sends_in_window, 1000);
}

/// The security rule itself: of 1000 concurrent verifies of one right code, spread over
/// `handles`, exactly one is accepted.
pub async fn exactly_one_of_many_concurrent_verifies_wins<S: Store>(handles: &[Arc<S>]) {
    verify_race(handles, false).await;
}

/// The security rule for updates that start from a read: 1000 concurrent verifies of one
/// right code, each reading the record first (in a batch) and then updating from that
/// read, spread over `handles`. Exactly one is accepted, and the value it asks for beside
/// its write is written.
pub async fn exactly_one_of_many_concurrent_verifies_from_reads_wins<S: Store>(handles: &[Arc<S>]) {
    verify_race(handles, true).await;
    let written = handles[0].get_value("race-winner").await.unwrap();
    assert!(written.is_some(), "the accepted verify's value is written");
}

async fn verify_race<S: Store>(handles: &[Arc<S>], from_reads: bool) {
    let policy = Arc::new(CodePolicy::default());
    let hasher = CodeHasher::new(&ServerSecret::random());
    let code = CodeFormat::default().generate();
    let key = if from_reads {
        "race-from-reads"
    } else {
        "race"
    };
    let hash = hasher.hash(key, &code);
    let now = Timestamp(1_700_000_000_000);
    handles[0]
        .update_code_state(key, &mut |current| {
            decide_issue(current, hash, now, &policy).0
        })
        .await
        .unwrap();
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let store = Arc::clone(&handles[i % handles.len()]);
            let policy = Arc::clone(&policy);
            tokio::spawn(async move {
                let mut decision = VerifyDecision::Rejected;
                let winner = format!("winner-{i}");
                let mut verify = |current| {
                    let (write, d) = decide_verify(current, hash, now, &policy);
                    decision = d;
                    let also = (from_reads && d == VerifyDecision::Accepted).then(|| SetValue {
                        key: "race-winner",
                        value: &winner,
                        ttl: Duration::from_secs(60),
                        mode: SetMode::IfAbsent,
                    });
                    CodeUpdate { write, also }
                };
                if from_reads {
                    let mut answers = store.batch(&[Op::ReadCodeState { key }]).await;
                    let read = answers.pop().unwrap().and_then(Answer::into_code_state);
                    store
                        .update_code_state_from(key, read.unwrap(), &mut verify)
                        .await
                        .unwrap();
                } else {
                    let mut write_only = |current| verify(current).write;
                    store.update_code_state(key, &mut write_only).await.unwrap();
                }
                decision
            })
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        if task.await.unwrap() == VerifyDecision::Accepted {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 1, "exactly one concurrent verify may win");
}

/// Hits count up within a window and start again at one after it.
pub async fn counters_count_within_a_window<S: Store>(store: S) {
    let window = Duration::from_secs(60);
    let start = Timestamp(1_700_000_000_000);
    let first = store.hit("c", window, start).await.unwrap();
    assert_eq!(first.count, 1);
    assert_eq!(first.resets_at, start.plus(window));
    let second = store
        .hit("c", window, start.plus(Duration::from_secs(59)))
        .await
        .unwrap();
    assert_eq!(second.count, 2);
    assert_eq!(
        second.resets_at, first.resets_at,
        "the window does not slide"
    );
    assert_eq!(
        store.hit("d", window, start).await.unwrap().count,
        1,
        "keys are independent"
    );
    let later = start.plus(window);
    let third = store.hit("c", window, later).await.unwrap();
    assert_eq!(third.count, 1);
    assert_eq!(third.resets_at, later.plus(window));
}

/// 1000 concurrent hits on one key see each count from 1 to 1000 exactly once.
pub async fn concurrent_hits_are_all_counted<S: Store>(store: Arc<S>) {
    let now = Timestamp(1_700_000_000_000);
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .hit("busy", Duration::from_secs(60), now)
                    .await
                    .unwrap()
                    .count
            })
        })
        .collect();
    let mut counts = BTreeSet::new();
    for task in tasks {
        counts.insert(task.await.unwrap());
    }
    assert_eq!(counts, (1..=1000).collect::<BTreeSet<u64>>());
}

/// Values are written, read back, replaced or kept by mode, and expire with their TTL.
pub async fn values_are_set_read_and_expire<S: Store>(store: S) {
    let minute = Duration::from_secs(60);
    assert_eq!(store.get_value("v").await.unwrap(), None);
    assert!(
        store
            .set_value("v", "one", minute, SetMode::IfAbsent)
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_value("v", "two", minute, SetMode::IfAbsent)
            .await
            .unwrap()
    );
    assert_eq!(store.get_value("v").await.unwrap().as_deref(), Some("one"));
    assert!(
        store
            .set_value("v", "three", minute, SetMode::Always)
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_value("v").await.unwrap().as_deref(),
        Some("three")
    );
    assert!(
        store
            .set_value("brief", "x", Duration::from_millis(300), SetMode::Always)
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(store.get_value("brief").await.unwrap(), None);
    assert!(
        store
            .set_value("brief", "again", minute, SetMode::IfAbsent)
            .await
            .unwrap(),
        "an expired value is absent"
    );
}

/// The single-use rule: of 1000 concurrent `IfAbsent` sets of one key, exactly one wins.
pub async fn exactly_one_of_many_concurrent_if_absent_sets_wins<S: Store>(store: Arc<S>) {
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .set_value(
                        "once",
                        &i.to_string(),
                        Duration::from_secs(60),
                        SetMode::IfAbsent,
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        if task.await.unwrap() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

/// A batch answers each of its operations, in order, as the operation alone would.
pub async fn a_batch_answers_each_operation_in_order<S: Store>(store: S) {
    let minute = Duration::from_secs(60);
    let now = Timestamp(1_700_000_000_000);
    store
        .update_code_state("record", &mut |_| Write::Put {
            state: state_with_sends(2),
            ttl: minute,
        })
        .await
        .unwrap();
    store
        .set_value("value", "held", minute, SetMode::Always)
        .await
        .unwrap();
    store.hit("counter", minute, now).await.unwrap();
    assert!(store.batch(&[]).await.is_empty());
    let answers: Vec<Answer> = store
        .batch(&[
            Op::GetValue { key: "value" },
            Op::ReadCodeState { key: "record" },
            Op::Hit {
                key: "counter",
                window: minute,
                now,
            },
            Op::ReadCodeState { key: "no-record" },
            Op::GetValue { key: "no-value" },
            Op::Hit {
                key: "new-counter",
                window: minute,
                now,
            },
        ])
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(answers.len(), 6);
    let mut answers = answers.into_iter();
    let mut next = || answers.next().unwrap();
    assert_eq!(next().into_value().unwrap().as_deref(), Some("held"));
    let record = next().into_code_state().unwrap();
    assert_eq!(record.state(), Some(&state_with_sends(2)));
    let counted = next().into_hit().unwrap();
    assert_eq!((counted.count, counted.resets_at), (2, now.plus(minute)));
    assert_eq!(next().into_code_state().unwrap().state(), None);
    assert_eq!(next().into_value().unwrap(), None);
    assert_eq!(
        next().into_hit().unwrap().count,
        1,
        "counters are independent"
    );
    assert!(
        Answer::Value(None).into_hit().is_err(),
        "an answer of another kind is an error, not a default"
    );
}

/// An update from a record read before sees the record as it is when it writes: as read
/// if unchanged, else as changed since (or read again, for a record another store read),
/// and writes the value it asks for beside the record.
pub async fn updates_start_from_a_record_read_before<S: Store>(store: S) {
    let minute = Duration::from_secs(60);
    let put = |sends| Write::Put {
        state: state_with_sends(sends),
        ttl: minute,
    };
    let read = store.read_code_state("k").await.unwrap();
    assert_eq!(read.state(), None);
    let mut seen = vec![];
    store
        .update_code_state_from("k", read, &mut |current| {
            seen.push(current);
            CodeUpdate {
                write: put(1),
                also: Some(SetValue {
                    key: "beside",
                    value: "one",
                    ttl: minute,
                    mode: SetMode::IfAbsent,
                }),
            }
        })
        .await
        .unwrap();
    assert_eq!(seen, [None]);
    assert_eq!(
        store.peek_code_state("k").await.unwrap(),
        Some(state_with_sends(1))
    );
    assert_eq!(
        store.get_value("beside").await.unwrap().as_deref(),
        Some("one")
    );

    // Read, then changed by another update: the update decides on the change.
    let stale = store.read_code_state("k").await.unwrap();
    assert_eq!(stale.state(), Some(&state_with_sends(1)));
    store.update_code_state("k", &mut |_| put(5)).await.unwrap();
    let mut last_seen = None;
    store
        .update_code_state_from("k", stale, &mut |current| {
            last_seen = current.clone();
            let mut state = current.unwrap_or_default();
            state.sends_in_window += 1;
            CodeUpdate {
                write: Write::Put { state, ttl: minute },
                also: None,
            }
        })
        .await
        .unwrap();
    assert_eq!(
        last_seen,
        Some(state_with_sends(5)),
        "the last call sees the change"
    );
    assert_eq!(
        store.peek_code_state("k").await.unwrap(),
        Some(state_with_sends(6))
    );

    // A record that another store read (no version of this one): read again.
    let foreign = CodeRecord::new(Some(state_with_sends(99)), None);
    let mut seen = None;
    store
        .update_code_state_from("k", foreign, &mut |current| {
            seen = current;
            CodeUpdate {
                write: Write::Keep,
                also: Some(SetValue {
                    key: "kept",
                    value: "yes",
                    ttl: minute,
                    mode: SetMode::Always,
                }),
            }
        })
        .await
        .unwrap();
    assert_eq!(seen, Some(state_with_sends(6)));
    assert_eq!(
        store.peek_code_state("k").await.unwrap(),
        Some(state_with_sends(6))
    );
    assert_eq!(
        store.get_value("kept").await.unwrap().as_deref(),
        Some("yes"),
        "a value asked for beside a kept record is written too"
    );

    // From a read of the record, deleted.
    let read = store.read_code_state("k").await.unwrap();
    store
        .update_code_state_from("k", read, &mut |_| CodeUpdate {
            write: Write::Delete,
            also: None,
        })
        .await
        .unwrap();
    assert_eq!(store.peek_code_state("k").await.unwrap(), None);
}

/// A store whose backend is down: every call fails with [`StoreError::Unavailable`]. For
/// testing what a gate does during an outage.
#[derive(Clone, Copy, Debug, Default)]
pub struct UnreachableStore;

fn outage() -> StoreError {
    StoreError::Unavailable("connection refused".into())
}

#[async_trait]
impl Store for UnreachableStore {
    async fn update_code_state(
        &self,
        _key: &str,
        _update: &mut CodeStateUpdate<'_>,
    ) -> Result<(), StoreError> {
        Err(outage())
    }

    async fn hit(
        &self,
        _key: &str,
        _window: Duration,
        _now: Timestamp,
    ) -> Result<WindowCount, StoreError> {
        Err(outage())
    }

    async fn peek_code_state(&self, _key: &str) -> Result<Option<CodeState>, StoreError> {
        Err(outage())
    }

    async fn set_value(
        &self,
        _key: &str,
        _value: &str,
        _ttl: Duration,
        _mode: SetMode,
    ) -> Result<bool, StoreError> {
        Err(outage())
    }

    async fn get_value(&self, _key: &str) -> Result<Option<String>, StoreError> {
        Err(outage())
    }
}
