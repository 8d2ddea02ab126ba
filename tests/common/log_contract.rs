//! The `EventLog` contract, written once and run on every backend (embedded and JetStream).
//!
//! Every tail read is bounded by [`WAIT`], so a backend that breaks the contract fails the test
//! instead of hanging it.

use std::sync::Arc;
use std::time::Duration;

use cellos_server::event::decode::MAX_EVENT_BYTES;
use cellos_server::event::RawEvent;
use cellos_server::log::{
    Append, Bounds, EventLog, LogError, LogIdentity, LogTail, TailBatch, MAX_DEDUPE_ID_BYTES,
};

/// Upper bound on one tail read that must return.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// One event to append.
pub(crate) fn append(subject: &str, payload: &str, id: &str) -> Append {
    Append {
        subject: subject.into(),
        payload: payload.to_owned().into(),
        dedupe_id: id.into(),
    }
}

/// The seqs of these events, in order.
pub(crate) fn seqs(events: &[RawEvent]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

/// The tail's next batch; fails after [`WAIT`].
pub(crate) async fn next(tail: &mut Box<dyn LogTail>) -> TailBatch {
    tokio::time::timeout(WAIT, tail.next(100))
        .await
        .expect("the tail answered within the wait")
        .expect("the tail reads")
}

/// Reads the tail until it says it caught up with `last` delivered; the seqs it saw.
pub(crate) async fn drain(tail: &mut Box<dyn LogTail>, last: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    loop {
        let batch = next(tail).await;
        seen.extend(batch.events.iter().map(|e| e.seq));
        if batch.caught_up && seen.last() == Some(&last) {
            return seen;
        }
        assert!(seen.len() < 100, "{seen:?}");
    }
}

/// Asserts that the tail's next batch is empty and says it caught up.
async fn assert_idle(tail: &mut Box<dyn LogTail>) {
    let idle = next(tail).await;
    assert!(
        idle.events.is_empty() && idle.caught_up,
        "an idle tail reports an empty, caught-up batch: {idle:?}"
    );
}

/// The contract on a fresh, empty log: bounds, dedupe, ranged reads, get in the order asked, a
/// tail that replays, reports catching up and follows live, and oversized events refused whole.
/// Leaves events 1..=5 (dedupe ids `id-1`..`id-5`) in the log for [`check_reopened`].
/// Returns the log's identity, for [`check_reopened`].
pub(crate) async fn check_log_contract(log: Arc<dyn EventLog>) -> LogIdentity {
    // Empty: nothing retained, nothing ever appended.
    assert_eq!(log.bounds().await.unwrap(), Bounds { first: 1, last: 0 });
    assert!(log.read(0, 10).await.unwrap().is_empty());
    assert!(log.get(vec![1]).await.unwrap().is_empty());
    let identity = log.identity().await.unwrap();
    assert_eq!(
        log.identity().await.unwrap(),
        identity,
        "identity is stable"
    );
    let mut tail = log.clone().tail(0);
    assert_idle(&mut tail).await;

    // Appends get increasing seqs; a repeated dedupe id gets its original seq and appends nothing.
    let got = log
        .append(vec![
            append("cellos.events.other.a", "{\"n\":1}", "id-1"),
            append("cellos.events.other.b", "{\"n\":2}", "id-2"),
            append("cellos.events.other.c", "[3]", "id-3"),
        ])
        .await
        .unwrap();
    assert_eq!(got, [1, 2, 3]);
    let got = log
        .append(vec![
            append("cellos.events.other.b", "{\"n\":2}", "id-2"),
            append("cellos.events.other.d", "{\"n\":4}", "id-4"),
        ])
        .await
        .unwrap();
    assert_eq!(got, [2, 4], "a repeated id returns the original seq");
    assert_eq!(log.bounds().await.unwrap(), Bounds { first: 1, last: 4 });

    // Reads: after a seq, ascending, at most `max`, subject and payload as appended.
    let all = log.read(0, 100).await.unwrap();
    assert_eq!(seqs(&all), [1, 2, 3, 4]);
    assert_eq!(&*all[1].subject, "cellos.events.other.b");
    assert_eq!(&all[2].payload[..], b"[3]");
    assert_eq!(seqs(&log.read(0, 2).await.unwrap()), [1, 2]);
    assert_eq!(seqs(&log.read(1, 1).await.unwrap()), [2]);
    assert_eq!(seqs(&log.read(2, 100).await.unwrap()), [3, 4]);
    assert!(log.read(4, 10).await.unwrap().is_empty());
    assert!(log.read(100, 10).await.unwrap().is_empty());
    // Get: in the order asked, unknown seqs left out.
    let got = log.get(vec![4, 2, 1, 99]).await.unwrap();
    assert_eq!(seqs(&got), [4, 2, 1]);
    assert_eq!(&got[0].payload[..], b"{\"n\":4}");

    // The tail opened before the appends sees them all and says when it has caught up; a tail
    // opened now replays the same; then it follows live, and a tail can start after any seq.
    assert_eq!(drain(&mut tail, 4).await, [1, 2, 3, 4]);
    let mut late = log.clone().tail(0);
    assert_eq!(drain(&mut late, 4).await, [1, 2, 3, 4]);
    drop(late);
    assert_idle(&mut tail).await;
    let got = log
        .append(vec![append("cellos.events.other.e", "{}", "id-5")])
        .await
        .unwrap();
    assert_eq!(got, [5]);
    let live = next(&mut tail).await;
    assert_eq!(seqs(&live.events), [5]);
    let mut from_three = log.clone().tail(3);
    assert_eq!(drain(&mut from_three, 5).await, [4, 5]);
    drop(from_three);

    // Refused, never cut: an oversized payload or dedupe id, and a batch holding one appends
    // nothing at all.
    let big = "x".repeat(MAX_EVENT_BYTES + 1);
    assert!(matches!(
        log.append(vec![append("cellos.events.other.f", &big, "id-6")])
            .await,
        Err(LogError::TooLarge { .. })
    ));
    let long_id = "i".repeat(MAX_DEDUPE_ID_BYTES + 1);
    assert!(matches!(
        log.append(vec![append("cellos.events.other.f", "{}", &long_id)])
            .await,
        Err(LogError::TooLarge { .. })
    ));
    assert!(matches!(
        log.append(vec![
            append("cellos.events.other.f", "{}", "id-6"),
            append("cellos.events.other.f", "{}", &long_id),
        ])
        .await,
        Err(LogError::TooLarge { .. })
    ));
    assert_eq!(log.bounds().await.unwrap(), Bounds { first: 1, last: 5 });
    assert_eq!(seqs(&log.read(0, 100).await.unwrap()), [1, 2, 3, 4, 5]);
    drop(tail);
    identity
}

/// The contract across a reopen of the log [`check_log_contract`] ran on (the same file, or the
/// same stream): the events, the identity and the dedupe ids survive, and seqs continue.
pub(crate) async fn check_reopened(log: Arc<dyn EventLog>, identity: &LogIdentity) {
    assert_eq!(log.bounds().await.unwrap(), Bounds { first: 1, last: 5 });
    assert_eq!(&log.identity().await.unwrap(), identity);
    assert_eq!(seqs(&log.read(0, 100).await.unwrap()), [1, 2, 3, 4, 5]);
    let got = log
        .append(vec![
            append("cellos.events.other.a", "{\"n\":1}", "id-1"),
            append("cellos.events.other.g", "{}", "id-7"),
        ])
        .await
        .unwrap();
    assert_eq!(got, [1, 6], "dedupe ids survive a reopen and seqs continue");
    let mut tail = log.clone().tail(0);
    assert_eq!(drain(&mut tail, 6).await, [1, 2, 3, 4, 5, 6]);
}
