//! The shared frame ring: each event's WebSocket frame is encoded once, on the ingest thread, and
//! every subscriber reads the same `Bytes` from here.
//!
//! The ring holds the last `capacity` frames in slots indexed by frame number. Publishing a frame
//! is one slot store, whatever the number of subscribers; subscribers keep their own position and
//! detect that they fell behind when the slot they want holds a newer frame. Waking subscribers is
//! O(subscribers), so the ingest thread only pokes one waker task, which does that work.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{watch, Notify};
use uuid::Uuid;

/// Default number of frames the ring keeps.
pub const DEFAULT_RING_CAPACITY: usize = 65_536;
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
    /// Frames published so far; frame `n` (0-based) is in slot `n & mask` until overwritten.
    published: AtomicU64,
    /// Seq of the newest published frame's event (0 before any).
    last_seq: AtomicU64,
    /// The ring holds the frames of events after this seq only: the projection started there (a
    /// checkpoint's seq; 0 after a full replay). Older history is the log's.
    floor: AtomicU64,
    poke: Notify,
    heads: watch::Sender<u64>,
}

/// The single writer of a ring. Not `Clone`: it moves into the ingest thread.
pub struct RingWriter {
    ring: Arc<Ring>,
    next: u64,
    encode: BytesMut,
}

impl Ring {
    /// A ring of at least `capacity` frames (rounded up to a power of two) and its writer.
    pub fn new(capacity: usize) -> (Arc<Ring>, RingWriter) {
        let capacity = capacity.max(2).next_power_of_two();
        let slots = (0..capacity).map(|_| ArcSwapOption::empty()).collect();
        let ring = Arc::new(Ring {
            slots,
            mask: capacity as u64 - 1,
            published: AtomicU64::new(0),
            last_seq: AtomicU64::new(0),
            floor: AtomicU64::new(0),
            poke: Notify::new(),
            heads: watch::channel(0).0,
        });
        let writer = RingWriter {
            ring: ring.clone(),
            next: 0,
            encode: BytesMut::new(),
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
    /// already overwritten (the reader fell behind by more than the capacity).
    pub fn get(&self, index: u64) -> Option<Arc<Frame>> {
        if index >= self.published() {
            return None;
        }
        let frame = self.slots[(index & self.mask) as usize].load_full()?;
        (frame.index == index).then_some(frame)
    }

    /// Reads frame `index` in place, without taking a reference to it: what a session uses to
    /// skip frames its filter rejects, so idle subscribers never write to a frame's cache line.
    pub fn peek<R>(&self, index: u64, f: impl FnOnce(&Frame) -> R) -> Option<R> {
        if index >= self.published() {
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

    /// Index of the oldest frame still guaranteed to be in the ring.
    pub fn oldest(&self) -> u64 {
        self.published().saturating_sub(self.capacity())
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
        let need = payload.len() + 32;
        if self.encode.capacity() < need {
            self.encode.reserve(need.max(FRAME_BLOCK));
        }
        self.encode.put_slice(b"{\"seq\":");
        let mut digits = itoa::Buffer::new();
        self.encode.put_slice(digits.format(seq).as_bytes());
        self.encode.put_slice(b",\"event\":");
        self.encode.put_slice(payload);
        self.encode.put_u8(b'}');
        let bytes = self.encode.split().freeze();
        let index = self.next;
        self.next += 1;
        let frame = Frame {
            index,
            seq,
            bytes,
            subject,
            formation,
        };
        self.ring.slots[(index & self.ring.mask) as usize].store(Some(Arc::new(frame)));
        self.ring.last_seq.store(seq, Ordering::Release);
    }

    /// Makes every pushed frame visible and wakes subscribers (through the waker task).
    pub fn commit(&mut self) {
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
        let (ring, mut w) = Ring::new(4);
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

    #[test]
    fn position_after_proves_coverage() {
        let (ring, mut w) = Ring::new(4);
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
        let (ring, mut w) = Ring::new(8);
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
}
