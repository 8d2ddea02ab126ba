//! `CellId`: a cell's id, one pointer to a shared block of an 8-byte header and the text.
//!
//! Every cell holds its id in three places (the ordered index, the writer's lookup and its
//! formation's set) and a million cells hold a million ids, so the id is shared, and the block
//! is small: a 32-bit count and a 32-bit length before the bytes. `arcstr::ArcStr` and
//! `Arc<str>` put 16 bytes there. The allocator's size classes are 16 bytes apart up to 128, so
//! 8 bytes less is a class less for half of all lengths and never a class more: an id of 17 to
//! 24 bytes takes 32 bytes here and 48 in an `ArcStr`, one of 25 to 32 takes 48 in both.
//!
//! What must stay true: the block is allocated with `CellId::layout` of its length and freed
//! with the same layout by whoever drops the last handle; the bytes are the UTF-8 text the id was
//! made from and never change; the count is the number of live handles.

use std::alloc::{self, Layout};
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{self, AtomicU32};

#[repr(C)]
struct Header {
    /// Live handles.
    count: AtomicU32,
    /// Bytes of text after the header.
    len: u32,
}

/// Past this many handles a clone aborts the process rather than let the count wrap (like
/// `Arc`'s limit). Handles are held by the tables and their snapshots' copies, a handful each.
const MAX_COUNT: u32 = i32::MAX as u32;

/// A shared, immutable cell id: compares, orders and hashes as its text.
pub struct CellId {
    header: NonNull<Header>,
    /// Owns a share of a `Header` (for drop check and auto traits, like `Arc`).
    _owns: PhantomData<Header>,
}

// SAFETY: the text is immutable and the count atomic, as in `Arc<str>`, which is Send and Sync.
#[allow(unsafe_code)]
unsafe impl Send for CellId {}
// SAFETY: as for Send: shared access only reads the text and counts atomically.
#[allow(unsafe_code)]
unsafe impl Sync for CellId {}

impl CellId {
    /// Longest id: its length must fit the header's 32 bits. Events are far smaller
    /// ([`crate::event::decode::MAX_EVENT_BYTES`]).
    pub const MAX_LEN: usize = u32::MAX as usize;

    /// The block for a text of `len` bytes.
    fn layout(len: usize) -> Layout {
        Layout::new::<Header>()
            .extend(Layout::array::<u8>(len).expect("MAX_LEN keeps the array layout valid"))
            .expect("MAX_LEN keeps the block layout valid")
            .0
            .pad_to_align()
    }

    /// The id `text`, in a new block; `None` if longer than [`CellId::MAX_LEN`].
    #[allow(unsafe_code)]
    pub fn new(text: &str) -> Option<CellId> {
        if text.len() > Self::MAX_LEN {
            return None;
        }
        let layout = Self::layout(text.len());
        // SAFETY: the layout is never zero-sized (it holds the header).
        let block = unsafe { alloc::alloc(layout) };
        let Some(header) = NonNull::new(block.cast::<Header>()) else {
            alloc::handle_alloc_error(layout);
        };
        // SAFETY: `block` is a fresh allocation of `layout`: a `Header` at its start (aligned,
        // `layout` starts with it) and `text.len()` bytes after it, which `text` cannot overlap.
        unsafe {
            header.as_ptr().write(Header {
                count: AtomicU32::new(1),
                len: text.len() as u32,
            });
            let bytes = block.add(std::mem::size_of::<Header>());
            std::ptr::copy_nonoverlapping(text.as_ptr(), bytes, text.len());
        }
        Some(CellId {
            header,
            _owns: PhantomData,
        })
    }

    fn header(&self) -> &Header {
        // SAFETY: the block lives as long as any handle, this one included.
        #[allow(unsafe_code)]
        unsafe {
            self.header.as_ref()
        }
    }

    #[allow(unsafe_code)]
    pub fn as_str(&self) -> &str {
        let len = self.header().len as usize;
        // SAFETY: the block holds `len` bytes after the header, copied from a `str` when it was
        // made and never written since; they live as long as this handle.
        unsafe {
            let bytes = self
                .header
                .as_ptr()
                .cast::<u8>()
                .add(std::mem::size_of::<Header>());
            std::str::from_utf8_unchecked(std::slice::from_raw_parts(bytes, len))
        }
    }

    /// Whether both handles share one block.
    pub fn ptr_eq(a: &CellId, b: &CellId) -> bool {
        a.header == b.header
    }
}

impl Clone for CellId {
    fn clone(&self) -> CellId {
        // Relaxed, as in `Arc`: a new handle is made from an existing one, which keeps the block
        // alive; nothing else is ordered by the count going up.
        if self.header().count.fetch_add(1, atomic::Ordering::Relaxed) > MAX_COUNT {
            std::process::abort();
        }
        CellId {
            header: self.header,
            _owns: PhantomData,
        }
    }
}

impl Drop for CellId {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // Release, then Acquire before the free, as in `Arc`: every other handle's use of the
        // block happens before it is freed.
        if self.header().count.fetch_sub(1, atomic::Ordering::Release) != 1 {
            return;
        }
        atomic::fence(atomic::Ordering::Acquire);
        let layout = Self::layout(self.header().len as usize);
        // SAFETY: this was the last handle, so nothing else refers to the block; it was
        // allocated with this layout (same length) in `new`.
        unsafe { alloc::dealloc(self.header.as_ptr().cast::<u8>(), layout) }
    }
}

impl Deref for CellId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for CellId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for CellId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for CellId {
    fn eq(&self, other: &CellId) -> bool {
        CellId::ptr_eq(self, other) || self.as_str() == other.as_str()
    }
}

impl Eq for CellId {}

impl PartialEq<str> for CellId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialOrd for CellId {
    fn partial_cmp(&self, other: &CellId) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for CellId {
    fn cmp(&self, other: &CellId) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

/// As the text's, so that lookups by `&str` agree ([`Borrow`]).
impl Hash for CellId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for CellId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for CellId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_handle_is_one_pointer_and_the_block_eight_bytes_and_the_text() {
        assert_eq!(std::mem::size_of::<CellId>(), 8);
        assert_eq!(std::mem::size_of::<Option<CellId>>(), 8);
        assert_eq!(CellId::layout(17).size(), 28);
        assert_eq!(CellId::layout(0).size(), 8);
    }

    #[test]
    fn clones_share_the_block_until_the_last_is_dropped() {
        let id = CellId::new("ci-build-7f3a9c2e").unwrap();
        let clones: Vec<CellId> = (0..100).map(|_| id.clone()).collect();
        assert!(clones.iter().all(|c| CellId::ptr_eq(c, &id)));
        assert_eq!(id.header().count.load(atomic::Ordering::Relaxed), 101);
        let threads: Vec<_> = clones
            .chunks(25)
            .map(|chunk| {
                let chunk = chunk.to_vec();
                std::thread::spawn(move || {
                    for c in &chunk {
                        assert_eq!(c.as_str(), "ci-build-7f3a9c2e");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(clones);
        assert_eq!(id.header().count.load(atomic::Ordering::Relaxed), 1);
        assert_eq!(&*id, "ci-build-7f3a9c2e");
    }

    proptest! {
        /// Compares, orders and hashes exactly as its text.
        #[test]
        fn behaves_as_its_text(a in ".{0,40}", b in ".{0,40}") {
            let (x, y) = (CellId::new(&a).unwrap(), CellId::new(&b).unwrap());
            prop_assert_eq!(x.as_str(), a.as_str());
            prop_assert_eq!(x.cmp(&y), a.cmp(&b));
            prop_assert_eq!(x == y, a == b);
            let hash = |v: &dyn Fn(&mut std::collections::hash_map::DefaultHasher)| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                v(&mut h);
                h.finish()
            };
            prop_assert_eq!(hash(&|h| x.hash(h)), hash(&|h| a.as_str().hash(h)));
            prop_assert_eq!(format!("{x:?}"), format!("{a:?}"));
        }
    }
}
