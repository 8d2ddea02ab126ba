//! The shared frame ring: each event's WebSocket frame is encoded once, on the ingest thread, and
//! every subscriber reads the same `Bytes` from here.
//!
//! The ring holds the last `capacity` frames in slots indexed by frame number, and of those only
//! as many of the newest as fit in `max_bytes` (so a burst of large events cannot hold hundreds
//! of MiB). Publishing a frame is one slot store, whatever the number of subscribers (plus one
//! per frame the byte bound evicts, when it bites); subscribers keep their own position and
//! detect that they fell behind when the frame they want was evicted. Waking subscribers is
//! O(subscribers), so the ingest thread only pokes one waker task, which does that work.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use bytes::{Bytes, BytesMut};
use tokio::sync::{watch, Notify};
use uuid::Uuid;

use crate::event::frame::{write_frame, FRAME_OVERHEAD_MAX};

/// Default number of frames the ring keeps.
pub const DEFAULT_RING_CAPACITY: usize = 32_768;
/// Default bound on the bytes of the frames the ring keeps.
pub const DEFAULT_RING_BYTES: usize = 32 << 20;
/// What a frame costs the ring beyond its bytes (the `Frame` and its `Arc`), counted against
/// `max_bytes` so that many small frames are bounded too.
pub const FRAME_OVERHEAD: usize = std::mem::size_of::<Frame>() + 16;
/// Frames are encoded into blocks of this size (larger frames get a block of their own).
const FRAME_BLOCK: usize = 64 * 1024;

/// One event as subscribers receive it.
#[derive(Debug)]
pub struct Frame {
    /// Frame number: position in the ring's history (not the log seq; non-JSON events get none).
    pub index: u64,
    pub seq: u64,
    /// `{"seq":N,"event":<payload as stored>}`.
    pub bytes: Bytes,
    pub subject: Arc<str>,
    /// The formation the event correlates with, when it names one by UUID.
    pub formation: Option<Uuid>,
}

pub struct Ring {
    slots: Box<[ArcSwapOption<Frame>]>,
    mask: u64,
    /// Frames published so far; frame `n` (0-based) is in slot `n & mask` until overwritten
    /// or evicted.
    published: AtomicU64,
    /// Frames below this index were evicted by the byte bound (those evicted by count are the
    /// ones more than a capacity older than the newest).
    kept_from: AtomicU64,
    /// Bytes of the frames kept, [`FRAME_OVERHEAD`] included.
    held_bytes: AtomicU64,
    /// Seq of the newest published frame's event (0 before any).
    last_seq: AtomicU64,
    /// The ring holds the frames of events after this seq only: the projection started there (a
    /// checkpoint's seq; 0 after a full replay). Older history is the log's.
    floor: AtomicU64,
    poke: Notify,
    heads: watch::Sender<u64>,
}

/// The single writer of a ring. Not `Clone`: it moves into the ingest thread.
///
/// The type is reachable (this compiles) and not `Clone` (the next does not):
/// ```
/// fn moves(x: cellos_server::fanout::RingWriter) -> cellos_server::fanout::RingWriter { x }
/// ```
/// ```compile_fail
/// fn is_clone<T: Clone>() {}
/// is_clone::<cellos_server::fanout::RingWriter>();
/// ```
pub struct RingWriter {
    ring: Arc<Ring>,
    next: u64,
    encode: BytesMut,
    /// What each slot's frame costs (bytes + overhead; 0 once the byte bound evicted it), kept
    /// here so that evicting a frame does not read it back.
    costs: Box<[u32]>,
    /// Where the byte bound last stopped evicting (frames older than a capacity left by count).
    kept_from: u64,
    /// The cost of the frames kept.
    held: usize,
    max_bytes: usize,
}

impl Ring {
    /// A ring of at least `capacity` frames (rounded up to a power of two) holding at most
    /// `max_bytes` of frames (the newest frame is kept whatever its size), and its writer.
    pub fn new(capacity: usize, max_bytes: usize) -> (Arc<Ring>, RingWriter) {
        let capacity = capacity.max(2).next_power_of_two();
        let slots = (0..capacity).map(|_| ArcSwapOption::empty()).collect();
        let ring = Arc::new(Ring {
            slots,
            mask: capacity as u64 - 1,
            published: AtomicU64::new(0),
            kept_from: AtomicU64::new(0),
            held_bytes: AtomicU64::new(0),
            last_seq: AtomicU64::new(0),
            floor: AtomicU64::new(0),
            poke: Notify::new(),
            heads: watch::channel(0).0,
        });
        let writer = RingWriter {
            ring: ring.clone(),
            next: 0,
            encode: BytesMut::new(),
            costs: vec![0; capacity].into_boxed_slice(),
            kept_from: 0,
            held: 0,
            max_bytes,
        };
        (ring, writer)
    }

    pub fn capacity(&self) -> u64 {
        self.mask + 1
    }

    /// Number of frames published so far (the next frame's index).
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Acquire)
    }

    /// Frame `index`, if it is still in the ring. `None` for a frame not yet published or
    /// already evicted (the reader fell behind by more than the capacity or the byte bound).
    pub fn get(&self, index: u64) -> Option<Arc<Frame>> {
        if index >= self.published() || index < self.kept_from.load(Ordering::Acquire) {
            return None;
        }
        let frame = self.slots[(index & self.mask) as usize].load_full()?;
        (frame.index == index).then_some(frame)
    }

    /// Reads frame `index` in place, without taking a reference to it: what a session uses to
    /// skip frames its filter rejects, so idle subscribers never write to a frame's cache line.
    pub fn peek<R>(&self, index: u64, f: impl FnOnce(&Frame) -> R) -> Option<R> {
        if index >= self.published() || index < self.kept_from.load(Ordering::Acquire) {
            return None;
        }
        let slot = self.slots[(index & self.mask) as usize].load();
        let frame = slot.as_ref()?;
        (frame.index == index).then(|| f(frame))
    }

    /// The seq the ring's history starts after (see `floor`).
    pub fn floor(&self) -> u64 {
        self.floor.load(Ordering::Acquire)
    }

    /// Index of the oldest frame still in the ring (the published count when none is).
    pub fn oldest(&self) -> u64 {
        let published = self.published();
        let kept_from = self.kept_from.load(Ordering::Acquire);
        kept_from
            .max(published.saturating_sub(self.capacity()))
            .min(published)
    }

    /// Bytes of the frames the ring holds as of the last commit, per-frame overhead included (at
    /// most its `max_bytes`, or the newest frame alone when that is larger).
    pub fn held_bytes(&self) -> u64 {
        self.held_bytes.load(Ordering::Relaxed)
    }

    /// Where a subscriber that wants only what comes next starts: after the seq of the newest
    /// published frame, at the next index. Should a round larger than the byte bound have
    /// evicted that frame already, after the newest seq pushed: it starts a little later, still
    /// without a gap.
    pub fn live_start(&self) -> (u64, u64) {
        let published = self.published();
        let seq = published
            .checked_sub(1)
            .and_then(|i| self.get(i))
            .map_or_else(|| self.last_seq().max(self.floor()), |f| f.seq);
        (seq, published)
    }

    /// The ring index of the first frame with a seq above `seq`, if the ring provably holds every
    /// frame after `seq` (none was evicted between `seq` and the oldest frame kept).
    pub fn position_after(&self, seq: u64) -> Option<u64> {
        if seq < self.floor() {
            return None;
        }
        let published = self.published();
        let oldest = self.oldest();
        if oldest > 0 {
            let first = self.get(oldest)?;
            if first.seq > seq + 1 {
                return None;
            }
        }
        // Frames are in seq order: binary search for the first one above `seq`.
        let (mut lo, mut hi) = (oldest, published);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.get(mid)?.seq <= seq {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Some(lo)
    }

    /// A receiver that changes whenever new frames are published (value: `published()`).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.heads.subscribe()
    }

    /// Runs until `stop`: turns the ingest thread's single poke into wake-ups for every subscriber.
    #[cfg(feature = "server")]
    pub async fn run_waker(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = self.poke.notified() => {}
                _ = stop.cancelled() => return,
            }
            self.heads.send_replace(self.published());
        }
    }
}

impl RingWriter {
    pub fn ring(&self) -> &Arc<Ring> {
        &self.ring
    }

    /// Says where the ring's history starts: the ingest thread continues a projection that
    /// already holds every event through `seq`. Called before the first frame.
    pub fn start_after(&mut self, seq: u64) {
        self.ring.floor.store(seq, Ordering::Release);
    }

    /// Encodes and stores one frame. Not visible to readers until [`RingWriter::commit`].
    pub fn push(&mut self, seq: u64, payload: &[u8], subject: Arc<str>, formation: Option<Uuid>) {
        // Frames are carved out of shared blocks: one allocation per block, not per frame. A
        // block is freed once every frame cut from it has left the ring and every socket.
        let need = payload.len() + FRAME_OVERHEAD_MAX;
        if self.encode.capacity() < need {
            self.encode.reserve(need.max(FRAME_BLOCK));
        }
        write_frame(&mut self.encode, seq, payload);
        let bytes = self.encode.split().freeze();
        let index = self.next;
        self.next += 1;
        // Frames are far below 4 GiB (an event is bounded by the log's payload limit).
        let cost = (bytes.len() + FRAME_OVERHEAD) as u32;
        let slot = (index & self.ring.mask) as usize;
        // The frame whose slot this is leaves by count; a frame the byte bound evicted already
        // costs 0 here.
        self.held = self.held - self.costs[slot] as usize + cost as usize;
        self.costs[slot] = cost;
        if self.held > self.max_bytes {
            self.evict_by_bytes(index);
        }
        let frame = Frame {
            index,
            seq,
            bytes,
            subject,
            formation,
        };
        self.ring.slots[slot].store(Some(Arc::new(frame)));
        self.ring.last_seq.store(seq, Ordering::Release);
    }

    /// Evicts the oldest frames until the bytes held fit the bound again, keeping `newest`
    /// (being pushed) whatever its size. Only when the bound bites: with frames of the usual
    /// size the slot count evicts first, and this costs nothing.
    #[cold]
    #[inline(never)]
    fn evict_by_bytes(&mut self, newest: u64) {
        let mask = self.ring.mask;
        // Frames more than a capacity older than `newest` left by count.
        let start = self.kept_from.max((newest + 1).saturating_sub(mask + 1));
        let mut kept_from = start;
        while self.held > self.max_bytes && kept_from < newest {
            let slot = (kept_from & mask) as usize;
            self.held -= std::mem::take(&mut self.costs[slot]) as usize;
            kept_from += 1;
        }
        self.kept_from = kept_from;
        // Readers learn of the eviction before they can find a slot emptied by it. The slots
        // are distinct from `newest`'s: every frame kept is less than a capacity older.
        self.ring.kept_from.store(kept_from, Ordering::Release);
        for index in start..kept_from {
            self.ring.slots[(index & mask) as usize].store(None);
        }
    }

    /// Makes every pushed frame visible and wakes subscribers (through the waker task).
    pub fn commit(&mut self) {
        self.ring
            .held_bytes
            .store(self.held as u64, Ordering::Relaxed);
        if self.ring.published.load(Ordering::Relaxed) != self.next {
            self.ring.published.store(self.next, Ordering::Release);
            self.ring.poke.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_shared_and_overwritten_in_order() {
        let (ring, mut w) = Ring::new(4, usize::MAX);
        assert_eq!(ring.capacity(), 4);
        for seq in 1..=6u64 {
            w.push(seq, b"{\"a\":1}", Arc::from("cellos.events.x"), None);
        }
        assert!(ring.get(0).is_none(), "not committed yet");
        w.commit();
        assert_eq!(ring.published(), 6);
        assert_eq!(ring.oldest(), 2);
        assert!(ring.get(1).is_none(), "overwritten");
        let f = ring.get(5).unwrap();
        assert_eq!(f.seq, 6);
        assert_eq!(&f.bytes[..], br#"{"seq":6,"event":{"a":1}}"#);
        assert!(ring.get(6).is_none());
        assert_eq!(ring.last_seq(), 6);
    }

    /// What the frame of event `seq` with `payload_len` bytes costs the ring.
    fn cost(seq: u64, payload_len: usize) -> usize {
        format!(r#"{{"seq":{seq},"event":}}"#).len() + payload_len + FRAME_OVERHEAD
    }

    #[test]
    fn the_byte_bound_evicts_the_oldest_frames_and_keeps_the_newest() {
        let budget = 3 * cost(1, 100);
        let (ring, mut w) = Ring::new(16, budget);
        for seq in 1..=3u64 {
            w.push(seq, &[b'1'; 100], Arc::from("s"), None);
        }
        w.commit();
        assert_eq!((ring.oldest(), ring.held_bytes()), (0, budget as u64));
        w.push(4, &[b'1'; 100], Arc::from("s"), None);
        w.commit();
        assert_eq!(ring.oldest(), 1, "one frame made room");
        assert!(ring.get(0).is_none());
        assert_eq!(ring.get(1).unwrap().seq, 2);
        assert_eq!(ring.position_after(0), None, "seq 1 left: the log has it");
        assert_eq!(ring.position_after(1), Some(1));
        // A frame larger than the whole bound evicts everything else but is kept.
        w.push(5, &[b'1'; 1000], Arc::from("s"), None);
        w.commit();
        assert_eq!(ring.oldest(), 4);
        assert_eq!(ring.get(4).unwrap().seq, 5);
        assert_eq!(ring.held_bytes(), cost(5, 1000) as u64);
        assert_eq!(ring.position_after(4), Some(4));
    }

    #[test]
    fn evicted_frames_are_dropped_at_once() {
        let (ring, mut w) = Ring::new(16, 2 * cost(1, 100));
        w.push(1, &[b'1'; 100], Arc::from("s"), None);
        w.commit();
        let first = Arc::downgrade(&ring.get(0).unwrap());
        for seq in 2..=3u64 {
            w.push(seq, &[b'1'; 100], Arc::from("s"), None);
        }
        w.commit();
        assert!(ring.get(0).is_none());
        assert!(first.upgrade().is_none(), "its memory is released");
        assert_eq!(ring.get(1).unwrap().seq, 2, "kept frames stay");
    }

    proptest::proptest! {
        /// Against a model that keeps every frame's cost: after each push the ring keeps exactly
        /// the newest frames that fit in the slots and the byte bound (at least the newest one),
        /// and says so through `oldest`, `get` and `held_bytes`.
        #[test]
        fn eviction_matches_a_model(
            sizes in proptest::collection::vec(0usize..600, 1..200),
            commits in proptest::collection::vec(proptest::bool::ANY, 200),
            budget_frames in 1usize..6,
        ) {
            let capacity = 8u64;
            let budget = budget_frames * cost(1, 300);
            let (ring, mut w) = Ring::new(capacity as usize, budget);
            let mut costs: Vec<usize> = Vec::new();
            let mut kept_from = 0usize;
            for (i, &len) in sizes.iter().enumerate() {
                w.push(i as u64 + 1, &vec![b'7'; len], Arc::from("s"), None);
                costs.push(cost(i as u64 + 1, len));
                kept_from = kept_from.max((i + 1).saturating_sub(capacity as usize));
                while costs[kept_from..].iter().sum::<usize>() > budget && kept_from < i {
                    kept_from += 1;
                }
                if commits[i] || i + 1 == sizes.len() {
                    w.commit();
                    let held: usize = costs[kept_from..].iter().sum();
                    proptest::prop_assert_eq!(ring.held_bytes(), held as u64);
                    proptest::prop_assert_eq!(ring.oldest(), kept_from as u64);
                    for j in 0..=i {
                        let frame = ring.get(j as u64);
                        proptest::prop_assert_eq!(frame.is_some(), j >= kept_from, "frame {}", j);
                        if let Some(f) = frame {
                            proptest::prop_assert_eq!(f.seq, j as u64 + 1);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn position_after_proves_coverage() {
        let (ring, mut w) = Ring::new(4, usize::MAX);
        assert_eq!(
            ring.position_after(0),
            Some(0),
            "empty ring covers everything"
        );
        for seq in [2u64, 3, 5] {
            w.push(seq, b"1", Arc::from("s"), None);
        }
        w.commit();
        assert_eq!(
            ring.position_after(0),
            Some(0),
            "never evicted: complete history"
        );
        assert_eq!(ring.position_after(3), Some(2));
        assert_eq!(ring.position_after(9), Some(3));
        for seq in [7u64, 8, 9] {
            w.push(seq, b"1", Arc::from("s"), None);
        }
        w.commit();
        // Frames 2 and 3 were evicted; the oldest kept is seq 5.
        assert_eq!(ring.position_after(1), None);
        assert_eq!(ring.position_after(3), None, "seq 4 may have had a frame");
        assert_eq!(ring.position_after(4), Some(2));
        assert_eq!(ring.position_after(7), Some(4));
    }

    #[test]
    fn a_ring_started_after_a_checkpoint_covers_nothing_before_it() {
        let (ring, mut w) = Ring::new(8, usize::MAX);
        w.start_after(100);
        assert_eq!(ring.floor(), 100);
        assert_eq!(
            ring.position_after(99),
            None,
            "the log has seq 100, not the ring"
        );
        assert_eq!(ring.position_after(100), Some(0));
        w.push(101, b"1", Arc::from("s"), None);
        w.commit();
        assert_eq!(ring.position_after(50), None);
        assert_eq!(ring.position_after(100), Some(0));
        assert_eq!(ring.position_after(101), Some(1));
    }

    /// One writer pushing and committing while readers read: a reader sees published grow, and
    /// every frame it gets is whole and in its place (index, seq, bytes), or evicted.
    #[test]
    fn readers_see_whole_frames_in_place_while_the_writer_runs() {
        const FRAMES: u64 = 20_000;
        let (ring, mut w) = Ring::new(64, 16 * 1024);
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let ring = ring.clone();
                std::thread::spawn(move || {
                    let (mut seen, mut checked) = (0u64, 0u64);
                    while seen < FRAMES {
                        let published = ring.published();
                        assert!(published >= seen, "published went back");
                        for index in ring.oldest().max(seen)..published {
                            let Some(frame) = ring.get(index) else {
                                continue;
                            };
                            assert_eq!((frame.index, frame.seq), (index, index + 1));
                            let mut expected = Vec::new();
                            let payload =
                                format!("{{\"n\":\"{}\"}}", "x".repeat(index as usize % 300));
                            crate::event::frame::write_frame(
                                &mut expected,
                                index + 1,
                                payload.as_bytes(),
                            );
                            assert_eq!(&frame.bytes[..], &expected[..]);
                            checked += 1;
                        }
                        seen = published;
                        std::thread::yield_now();
                    }
                    checked
                })
            })
            .collect();
        for index in 0..FRAMES {
            let payload = format!("{{\"n\":\"{}\"}}", "x".repeat(index as usize % 300));
            w.push(index + 1, payload.as_bytes(), Arc::from("s"), None);
            if index % 7 == 0 || index + 1 == FRAMES {
                w.commit();
            }
        }
        for reader in readers {
            assert!(reader.join().expect("a reader") > 0);
        }
    }
}
