//! The embedded log: durability across reopen, dedupe window, group commit, retention, tail.

use std::sync::atomic::AtomicU64;

use super::*;
use crate::event::decode::MAX_EVENT_BYTES;

fn ev(id: &str, payload: &str) -> Append {
    Append {
        subject: format!("cellos.events.other.{id}"),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        dedupe_id: id.to_owned(),
    }
}

struct FakeClock(Arc<AtomicU64>);

impl FakeClock {
    fn new() -> (FakeClock, Clock) {
        let now = Arc::new(AtomicU64::new(1_000_000));
        let read = now.clone();
        (
            FakeClock(now),
            Arc::new(move || read.load(Ordering::SeqCst)),
        )
    }
    fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

fn open(dir: &Path, retention: Retention, clock: Clock) -> Arc<EmbeddedLog> {
    Arc::new(EmbeddedLog::open(dir, retention, clock).unwrap())
}

#[tokio::test]
async fn append_read_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), Retention::default(), system_clock());
        assert_eq!(log.bounds().await.unwrap(), Bounds { first: 1, last: 0 });
        let seqs = log
            .append(vec![ev("a", "{}"), ev("b", "[1]")])
            .await
            .unwrap();
        assert_eq!(seqs, vec![1, 2]);
        let read = log.read(0, 10).await.unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(
            (read[1].seq, &*read[1].subject),
            (2, "cellos.events.other.b")
        );
        assert_eq!(&read[1].payload[..], b"[1]");
        assert_eq!(log.read(1, 10).await.unwrap().len(), 1);
        assert_eq!(log.read(0, 1).await.unwrap().len(), 1);
        assert!(log.read(2, 10).await.unwrap().is_empty());
        let got = log.get(vec![2, 9, 1]).await.unwrap();
        assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 1]);
    }
    // Dropping the log released the file: it opens again and continues the sequence.
    let log = open(dir.path(), Retention::default(), system_clock());
    assert_eq!(log.bounds().await.unwrap(), Bounds { first: 1, last: 2 });
    assert_eq!(log.append(vec![ev("c", "{}")]).await.unwrap(), vec![3]);
    // A dedupe id survives the reopen too.
    assert_eq!(
        log.append(vec![ev("a", "{\"x\":1}")]).await.unwrap(),
        vec![1]
    );
}

/// A read whose caller gave up still runs on a blocking thread; closing the log waits for it, so
/// the directory opens again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_waits_for_abandoned_reads() {
    use futures_util::FutureExt;

    let dir = tempfile::tempdir().unwrap();
    let payload = format!("\"{}\"", "x".repeat(4000));
    {
        let log = open(dir.path(), Retention::default(), system_clock());
        for chunk in 0..5 {
            let batch = (0..200)
                .map(|i| ev(&format!("e{chunk}-{i}"), &payload))
                .collect();
            log.append(batch).await.unwrap();
        }
    }
    for round in 0..3 {
        let log = open(dir.path(), Retention::default(), system_clock());
        // One poll starts the blocking read; dropping the future abandons it mid-flight.
        for _ in 0..2 {
            let _ = log.read(0, MAX_READ_EVENTS).now_or_never();
        }
        drop(log);
        let reopened = EmbeddedLog::open(dir.path(), Retention::default(), system_clock());
        assert!(reopened.is_ok(), "round {round}: {:?}", reopened.err());
    }
}

#[tokio::test]
async fn dedupe_window() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, c) = FakeClock::new();
    let log = open(dir.path(), Retention::default(), c);
    assert_eq!(log.append(vec![ev("a", "{}")]).await.unwrap(), vec![1]);
    // Same id inside the window (also twice within one batch): original seq, nothing appended.
    assert_eq!(
        log.append(vec![ev("a", "{}"), ev("b", "{}"), ev("b", "{}")])
            .await
            .unwrap(),
        vec![1, 2, 2]
    );
    clock.advance(DEDUPE_WINDOW_MS - 1);
    assert_eq!(log.append(vec![ev("a", "{}")]).await.unwrap(), vec![1]);
    clock.advance(2);
    assert_eq!(log.append(vec![ev("a", "{}")]).await.unwrap(), vec![3]);
    assert_eq!(log.read(0, 100).await.unwrap().len(), 3);
    // Expired entries are pruned from the table, not only ignored.
    clock.advance(DEDUPE_WINDOW_MS + 1);
    log.append(vec![ev("z", "{}")]).await.unwrap();
    let tx = log.db.begin_read().unwrap();
    let dedupe = tx.open_table(DEDUPE).unwrap();
    assert!(dedupe.get("b").unwrap().is_none());
    assert!(dedupe.get("z").unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Retention::default(), system_clock());
    let before = log.commits();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append(vec![ev(&format!("e{i}"), "{}")]).await.unwrap() })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.extend(t.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=200).collect::<Vec<u64>>(),
        "every append got its own seq"
    );
    let commits = log.commits() - before;
    assert!(
        commits < 200,
        "200 concurrent appends took {commits} commits"
    );
}

#[tokio::test]
async fn retention_by_count_and_age() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, c) = FakeClock::new();
    let retention = Retention {
        max_age: Duration::from_secs(10),
        max_events: 3,
        keep_after_checkpoint: false,
    };
    let log = open(dir.path(), retention, c);
    for i in 0..5 {
        log.append(vec![ev(&format!("e{i}"), "{}")]).await.unwrap();
    }
    assert_eq!(log.bounds().await.unwrap(), Bounds { first: 3, last: 5 });
    let read = log.read(0, 10).await.unwrap();
    assert_eq!(
        read.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    clock.advance(11_000);
    log.append(vec![ev("late", "{}")]).await.unwrap();
    // Everything older than 10 s is gone; the newest event is always kept.
    assert_eq!(log.bounds().await.unwrap(), Bounds { first: 6, last: 6 });
}

/// With checkpoints, retention never removes an event the newest checkpoint does not hold.
#[tokio::test]
async fn retention_keeps_every_event_after_the_newest_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, c) = FakeClock::new();
    let retention = Retention {
        max_age: Duration::from_secs(10),
        max_events: 3,
        keep_after_checkpoint: true,
    };
    let log = open(dir.path(), retention, c);
    for i in 0..6 {
        log.append(vec![ev(&format!("e{i}"), "{}")]).await.unwrap();
    }
    assert_eq!(log.bounds().await.unwrap(), Bounds { first: 1, last: 6 }, "no checkpoint yet");
    log.checkpointed(2);
    log.append(vec![ev("e6", "{}")]).await.unwrap();
    assert_eq!(log.bounds().await.unwrap(), Bounds { first: 3, last: 7 });
    log.checkpointed(5);
    log.checkpointed(1);
    log.append(vec![ev("e7", "{}")]).await.unwrap();
    assert_eq!(log.bounds().await.unwrap(), Bounds { first: 6, last: 8 });
    clock.advance(11_000);
    log.checkpointed(8);
    log.append(vec![ev("late", "{}")]).await.unwrap();
    assert_eq!(log.bounds().await.unwrap(), Bounds { first: 9, last: 9 });
}

#[tokio::test]
async fn the_identity_is_kept_across_reopens_and_differs_between_logs() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = open(a.path(), Retention::default(), system_clock());
    let id = first.identity().await.unwrap();
    assert_eq!(id.stream, "embedded");
    drop(first);
    let again = open(a.path(), Retention::default(), system_clock());
    assert_eq!(again.identity().await.unwrap(), id);
    let other = open(b.path(), Retention::default(), system_clock());
    assert_ne!(other.identity().await.unwrap(), id);
}

#[tokio::test]
async fn oversized_events_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Retention::default(), system_clock());
    let big = "x".repeat(MAX_EVENT_BYTES + 1);
    assert!(matches!(
        log.append(vec![ev("ok", "{}"), ev("big", &big)]).await,
        Err(LogError::TooLarge { .. })
    ));
    assert_eq!(
        log.bounds().await.unwrap().last,
        0,
        "nothing of the batch was appended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_replays_then_follows() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Retention::default(), system_clock());
    log.append((0..5).map(|i| ev(&format!("e{i}"), "{}")).collect())
        .await
        .unwrap();
    let mut tail = log.clone().tail(1);
    let first = tail.next(3).await.unwrap();
    assert_eq!(
        first.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    assert!(!first.caught_up);
    let second = tail.next(3).await.unwrap();
    assert_eq!(
        second.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![5]
    );
    assert!(second.caught_up);
    let idle = tail.next(3).await.unwrap();
    assert!(idle.events.is_empty() && idle.caught_up);
    // The next call waits for an append.
    let waiter = tokio::spawn(async move { tail.next(3).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(20)).await;
    log.append(vec![ev("live", "{}")]).await.unwrap();
    let live = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("tail woke up")
        .unwrap();
    assert_eq!(
        live.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![6]
    );
}

#[test]
fn records_round_trip_and_corruption_is_an_error() {
    let mut buf = Vec::new();
    encode_record(&mut buf, &ev("id-1", "{\"a\":1}"), 42);
    let r = split_record(&buf).unwrap();
    assert_eq!(
        (r.subject, r.dedupe_id, r.time_ms, r.payload),
        ("cellos.events.other.id-1", "id-1", 42, &b"{\"a\":1}"[..])
    );
    for cut in 0..buf.len() - 7 {
        let _ = split_record(&buf[..cut]);
    }
    assert!(decode_record(&[0xff, 0xff, 0xff, 0xff]).is_err());
}
