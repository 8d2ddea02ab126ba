//! The global allocator: mimalloc, entered by `mi_malloc` whenever that alone aligns the block.
//!
//! mimalloc's aligned entry point (which the `mimalloc` crate's `GlobalAlloc` calls for every
//! allocation) takes a block of the size's own class only when that class already has a free
//! block at hand. Otherwise it allocates `size + align - 1`, a class up; and since an aligned
//! request never creates a page of the exact class, in a Rust program that is every time for a
//! size whose class is not a power of two: a 160-byte leaf of cell records took 192 bytes, a
//! 112-byte leaf of identities 128. At 10^6 cells that was 11 MiB of the
//! state's 197 (BENCHMARKS.md, "Memory after replay").
//!
//! `mi_malloc`, like C's `malloc`, aligns a block of 16 bytes or more to 16 and a smaller one to
//! its size's power of two, 8 at least (its size classes are multiples of 16 from 16 up, on
//! pages aligned to 16). So a request whose alignment is at most 16 and at most its size takes
//! `mi_malloc` (the rule Rust's own `System` allocator applies over `malloc`), and any other the
//! aligned entry point.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// What `mi_malloc` aligns every block of 16 bytes or more to.
const MALLOC_ALIGN: usize = 16;

/// Whether a `size`-byte block from `mi_malloc` (or `mi_realloc`) is aligned to `align`.
fn malloc_aligns(align: usize, size: usize) -> bool {
    align <= MALLOC_ALIGN && align <= size
}

/// mimalloc as the global allocator, with blocks of the size's own class (see the module docs).
pub struct Allocator;

// SAFETY: every block comes from mimalloc and goes back to it through `mi_free` or the
// `mi_realloc` family, which take a block from either entry point. A block is aligned as its
// layout asks: by the aligned entry points when `malloc_aligns` is false, and by `mi_malloc`'s
// own alignment (module docs) when it is true. Sizes are passed through unchanged, so a block
// holds at least `layout.size()` (or `new_size`) bytes; a null return is passed on as failure.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if malloc_aligns(layout.align(), layout.size()) {
            mi::mi_malloc(layout.size()).cast()
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if malloc_aligns(layout.align(), layout.size()) {
            mi::mi_zalloc(layout.size()).cast()
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if malloc_aligns(layout.align(), new_size) {
            mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
        } else {
            mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
        }
    }
}

#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use super::*;

    fn usable(ptr: *mut u8) -> usize {
        // SAFETY: `ptr` is a live block from mimalloc.
        unsafe { mi::mi_usable_size(ptr.cast::<c_void>()) }
    }

    /// With the aligned entry point alone (the `mimalloc` crate's allocator), a fresh thread's
    /// 160 bytes take 192 and its 112 take 128.
    #[test]
    fn a_block_takes_its_own_size_class() {
        for (size, class) in [(160, 160), (112, 112), (36, 48), (320, 320)] {
            let layout = Layout::from_size_align(size, 8).unwrap();
            // SAFETY: a non-zero size; freed below with the same layout.
            let ptr = unsafe { Allocator.alloc(layout) };
            assert_eq!(usable(ptr), class, "{size} bytes");
            // SAFETY: allocated above by `Allocator` with `layout`.
            unsafe { Allocator.dealloc(ptr, layout) };
        }
    }

    #[test]
    fn blocks_are_aligned_and_keep_their_bytes_through_realloc() {
        let mut live = Vec::new();
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in (1..600).step_by(7).chain([4096, 70_000]) {
                let layout = Layout::from_size_align(size, align).unwrap();
                let zeroed = size % 2 == 0;
                // SAFETY: a non-zero size; every block is freed at the end with its layout.
                let ptr = unsafe {
                    if zeroed {
                        Allocator.alloc_zeroed(layout)
                    } else {
                        Allocator.alloc(layout)
                    }
                };
                assert!(!ptr.is_null());
                assert_eq!(ptr as usize % align, 0, "{size} bytes aligned to {align}");
                // SAFETY: `ptr` holds `size` bytes.
                let bytes = unsafe { std::slice::from_raw_parts_mut(ptr, size) };
                if zeroed {
                    assert!(bytes.iter().all(|b| *b == 0));
                }
                bytes.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
                let new_size = size * 3 / 2 + 1;
                // SAFETY: `ptr` came from `Allocator` with `layout`; `new_size` is not zero.
                let grown = unsafe { Allocator.realloc(ptr, layout, new_size) };
                assert_eq!(grown as usize % align, 0);
                // SAFETY: the grown block holds at least the `size` bytes written above.
                let kept = unsafe { std::slice::from_raw_parts(grown, size) };
                assert!(kept.iter().enumerate().all(|(i, b)| *b == i as u8));
                live.push((grown, Layout::from_size_align(new_size, align).unwrap()));
            }
        }
        for (ptr, layout) in live {
            // SAFETY: each block is live and was last sized by `layout`.
            unsafe { Allocator.dealloc(ptr, layout) };
        }
    }
}
