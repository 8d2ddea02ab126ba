//! `Delivery` driven against the real frame ring and a plain log, checked against the list of
//! events the session's filter wants.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::fanout::Ring;

/// The session's filter, in these tests: subject `a`.
struct View<'a>(&'a Ring);

impl RingView for View<'_> {
    fn published(&self) -> u64 {
        self.0.published()
    }
    fn last_seq(&self) -> u64 {
        self.0.last_seq()
    }
    fn position_after(&self, seq: u64) -> Option<u64> {
        self.0.position_after(seq)
    }
    fn frame(&self, index: u64) -> Option<(u64, bool)> {
        self.0.peek(index, |f| (f.seq, &*f.subject == "a"))
    }
}

#[derive(Clone, Copy, Debug)]
struct Ev {
    seq: u64,
    /// Subject `a` (else `b`).
    wanted: bool,
    /// JSON, so it gets a frame (else only the log has it).
    framed: bool,
}

#[derive(Clone, Debug)]
enum Op {
    /// The next `n` events are appended, applied and published.
    Push(usize),
    /// The session takes one step.
    Step,
    /// Retention removes the log's oldest `n` events.
    Trim(u64),
}

/// Does what `session.rs` does with each decision; returns the close, if any.
/// `chunk`: how many events a log read returns at most (a log may return fewer than asked).
fn step(
    d: &mut Delivery,
    ring: &Ring,
    (log, log_first, chunk): (&[Ev], u64, usize),
    sent: &mut Vec<u64>,
) -> Option<(u16, String)> {
    let view = View(ring);
    if !d.is_live() {
        match d.catch_up(&view) {
            CatchUp::Live => {}
            CatchUp::Ring { from, to } => {
                for index in from..to {
                    let Some(frame) = ring.get(index) else { break };
                    if d.offer(frame.seq, &*frame.subject == "a") {
                        sent.push(frame.seq);
                    }
                }
                return None;
            }
            CatchUp::Log { after } => {
                let read: Vec<Ev> = log
                    .iter()
                    .filter(|e| e.seq > after && e.seq >= log_first)
                    .take(chunk.min(CATCHUP_CHUNK))
                    .copied()
                    .collect();
                match d.log_read(read.first().map(|e| e.seq)) {
                    LogRead::Empty => {
                        if let Some(close) = d.retained_from(log_first) {
                            return Some(close);
                        }
                    }
                    LogRead::Close(code, reason) => return Some((code, reason)),
                    LogRead::Events => {
                        for e in read {
                            if d.offer(e.seq, e.framed && e.wanted) {
                                sent.push(e.seq);
                            }
                        }
                    }
                }
                return None;
            }
        }
    }
    loop {
        match d.next_live(&view) {
            Live::Idle => return None,
            Live::Close(code, reason) => return Some((code, reason)),
            Live::Send { index } => match ring.get(index) {
                None => return Some(d.lagged()),
                Some(frame) => {
                    sent.push(frame.seq);
                    d.sent_live(index, frame.seq);
                }
            },
        }
    }
}

fn events() -> impl Strategy<Value = Vec<Ev>> {
    prop::collection::vec((any::<bool>(), prop::bool::weighted(0.9)), 0..120).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (wanted, framed))| Ev {
                seq: i as u64 + 1,
                wanted,
                framed,
            })
            .collect()
    })
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            4 => (1usize..12).prop_map(Op::Push),
            4 => Just(Op::Step),
            1 => (1u64..8).prop_map(Op::Trim),
        ],
        0..80,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn sends_what_the_filter_wants_in_order_once_or_closes_with_a_resume_point(
        events in events(),
        ops in ops(),
        // `None`: live from the ring's head after `initial` events; else resume after it.
        since in prop::option::of(0u64..130),
        initial in 0usize..40,
        capacity in 4usize..40,
        max_bytes in 150usize..4000,
        max_backlog in 2u64..24,
        first in prop_oneof![Just(1u64), 1u64..60],
        chunk in prop_oneof![Just(CATCHUP_CHUNK), 1usize..10],
    ) {
        let mut log_first = first;
        let (ring, mut writer) = Ring::new(capacity, max_bytes);
        let max_backlog = max_backlog.min(ring.capacity() / 2);
        let mut pushed = 0usize;
        let mut push = |n: usize, pushed: &mut usize| {
            for e in events.iter().skip(*pushed).take(n) {
                if e.framed {
                    let subject: Arc<str> = Arc::from(if e.wanted { "a" } else { "b" });
                    writer.push(e.seq, format!("{{\"n\":{}}}", e.seq).as_bytes(), subject, None);
                }
            }
            *pushed = (*pushed + n).min(events.len());
            writer.commit();
        };
        let mut d = match since {
            Some(since) => Delivery::resume(since, max_backlog),
            None => {
                push(initial, &mut pushed);
                let (seq, next) = ring.live_start();
                Delivery::live(seq, next, max_backlog)
            }
        };
        let start = d.cursor();
        let mut sent = Vec::new();
        // As the session checks before its first step: a resume point the log no longer
        // continues from is refused at once.
        let mut closed = since.and_then(|_| d.retained_from(log_first));
        for op in ops.iter().cloned().chain(std::iter::repeat_n(Op::Step, 200)) {
            if closed.is_some() {
                break;
            }
            match op {
                Op::Push(n) => push(n, &mut pushed),
                // Retention never removes more than the log holds.
                Op::Trim(n) => log_first = log_first.max((log_first + n).min(pushed as u64 + 1)),
                Op::Step => {
                    let log = &events[..pushed];
                    closed = step(&mut d, &ring, (log, log_first, chunk), &mut sent);
                    if closed.is_some() {
                        break;
                    }
                }
            }
        }
        let expected: Vec<u64> = events[..pushed]
            .iter()
            .filter(|e| e.wanted && e.framed && e.seq > start)
            .map(|e| e.seq)
            .collect();
        // In order, each once, and nothing the filter does not want: a prefix of the expected.
        prop_assert!(sent.len() <= expected.len(), "sent {sent:?}, expected {expected:?}");
        prop_assert_eq!(&sent[..], &expected[..sent.len()]);
        match closed {
            None => {
                prop_assert_eq!(&sent, &expected, "an open session has sent everything");
                prop_assert!(d.is_live());
            }
            Some((code, reason)) if code == close::LAGGED => {
                let resume = sent.last().copied().unwrap_or(start);
                prop_assert_eq!(reason, format!("lagged; resume with since={resume}"));
            }
            Some((code, _)) => {
                prop_assert_eq!(code, close::RETENTION_EXHAUSTED);
                prop_assert!(d.cursor() + 1 < log_first, "closed at {} with the log from {log_first}", d.cursor());
            }
        }
    }
}

#[test]
fn a_session_behind_by_more_than_its_backlog_is_closed_with_its_resume_point() {
    let (ring, mut writer) = Ring::new(64, 1 << 20);
    for seq in 1..=10 {
        writer.push(seq, b"{}", Arc::from("a"), None);
    }
    writer.commit();
    let mut d = Delivery::live(0, 0, 4);
    assert_eq!(
        d.next_live(&View(&ring)),
        Live::Close(close::LAGGED, "lagged; resume with since=0".into())
    );
    let mut d = Delivery::resume(3, 16);
    assert_eq!(d.catch_up(&View(&ring)), CatchUp::Live);
    assert_eq!(d.next_live(&View(&ring)), Live::Send { index: 3 });
    d.sent_live(3, 4);
    assert_eq!(d.delivered(), 4);
}
