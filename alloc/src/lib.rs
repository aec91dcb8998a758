//! The global allocator of the `switchyard` and `bare-proxy` binaries.
//!
//! It is mimalloc (v2), which took most of the allocator's share of a
//! proxied request's CPU away from glibc's malloc. The `mimalloc` crate's
//! own `GlobalAlloc` asks for every block through `mi_malloc_aligned`, even
//! when the alignment is one every block has anyway; that path skips
//! mimalloc's small-block fast path and, in v3, falls back to
//! over-allocating a block above 1 KiB whose size is not a power of two (an
//! async task's state is such a block). This one asks `mi_malloc` when the
//! plain block is aligned enough, and `mi_malloc_aligned` only otherwise.
//!
//! jemalloc was measured in its place (`tikv-jemallocator` 0.6, the same
//! build otherwise): 378 instructions fewer per proxied request, since its
//! thread cache has no counterpart to mimalloc's generic path (about eleven
//! of a request's ~45 allocations take that path), yet no less CPU per
//! request beside nginx (`loadtests/peers/compare.sh`, 5 rounds: 1.66
//! against mimalloc's 1.59, features on 1.90 against 1.90). So mimalloc stays.
//!
//! The one crate of the workspace allowed `unsafe`: a global allocator is
//! an unsafe trait over raw pointers, and this is all it does.
#![allow(unsafe_code)]

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::{c_int, c_long, c_void};
use core::time::Duration;

use libmimalloc_sys::{
    mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc,
    mi_zalloc_aligned,
};

/// Every block mimalloc v2 hands out of `mi_malloc` is aligned to its
/// `MI_MAX_ALIGN_SIZE` (16 bytes on the 64-bit targets we build for), or to
/// 8 when the block itself is 8 bytes: size classes are whole double words
/// from 16 bytes up, and pages start aligned.
const PLAIN_ALIGN: usize = 16;

/// Whether a plain `mi_malloc` block satisfies `layout`.
#[inline]
fn plain_is_aligned(size: usize, align: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

/// mimalloc as the global allocator.
pub struct Allocator;

/// `mi_option_purge_delay` in mimalloc v2's `mi_option_e` (include/mimalloc.h).
const MI_OPTION_PURGE_DELAY: c_int = 15;

extern "C" {
    fn mi_option_set(option: c_int, value: c_long);
    fn mi_option_get(option: c_int) -> c_long;
}

/// Keeps memory the program frees for `delay` before handing it back to
/// the system (mimalloc's purge delay; 10 ms by default, and ten times it
/// for its large regions).
///
/// Memory handed back is zeroed page by page on its next touch, each page
/// a fault. A router reading bursts of large request bodies frees and
/// takes back megabytes each time: with the default, bursts of sixteen
/// 1 MiB uploads every 0.3 s cost 138,000 page faults in 6 s, and each
/// burst's faults delayed every request on the worker; kept for 1 s, the
/// same bursts cost 11,600 (`loadtests/RESULTS.md`). What a quiet router
/// holds on to is returned a second after it goes quiet.
pub fn keep_freed_memory_for(delay: Duration) {
    let ms = c_long::try_from(delay.as_millis()).unwrap_or(c_long::MAX);
    // SAFETY: sets one of mimalloc's options, which it reads atomically
    // whenever it decides whether to purge; callable at any time.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, ms) }
}

/// How long freed memory is kept now; `None` when it is never handed back.
pub fn freed_memory_kept_for() -> Option<Duration> {
    // SAFETY: reads one of mimalloc's options.
    let ms = unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) };
    u64::try_from(ms).ok().map(Duration::from_millis)
}

// SAFETY: every pointer returned comes from mimalloc with at least the
// layout's size and alignment (plain blocks only when `plain_is_aligned`
// holds), and every pointer freed or resized is one mimalloc returned.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain_is_aligned(layout.size(), layout.align()) {
            mi_malloc(layout.size()).cast()
        } else {
            mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain_is_aligned(layout.size(), layout.align()) {
            mi_zalloc(layout.size()).cast()
        } else {
            mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain_is_aligned(new_size, layout.align()) {
            mi_realloc(ptr.cast::<c_void>(), new_size).cast()
        } else {
            mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_set_is_the_one_in_force() {
        keep_freed_memory_for(Duration::from_secs(2));
        assert_eq!(freed_memory_kept_for(), Some(Duration::from_secs(2)));
        keep_freed_memory_for(Duration::from_secs(1));
        assert_eq!(freed_memory_kept_for(), Some(Duration::from_secs(1)));
    }

    /// The promise the fast path rests on, checked over every size class a
    /// request allocates from (and past the small and medium ones), many
    /// blocks each so that more than a page's first block is seen.
    #[test]
    fn plain_blocks_have_the_alignment_their_layout_asks_for() {
        let a = Allocator;
        let mut sizes: Vec<usize> = (1..=1024).collect();
        sizes.extend((1025..=70_000).step_by(97));
        sizes.extend([128 << 10, 512 << 10, 2 << 20]);
        for size in sizes {
            for align in [1, 2, 4, 8, 16] {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                let blocks: Vec<*mut u8> = (0..8).map(|_| unsafe { a.alloc(layout) }).collect();
                for &p in &blocks {
                    assert!(!p.is_null(), "{size} bytes");
                    assert_eq!(p as usize % align, 0, "{size} bytes aligned to {align}");
                }
                for p in blocks {
                    unsafe { a.dealloc(p, layout) };
                }
            }
        }
    }

    #[test]
    fn wider_alignments_and_resizes_keep_their_promise() {
        let a = Allocator;
        for align in [32, 64, 4096] {
            let layout = Layout::from_size_align(24, align).expect("layout");
            let p = unsafe { a.alloc_zeroed(layout) };
            assert_eq!(p as usize % align, 0);
            assert!(unsafe { std::slice::from_raw_parts(p, 24) }
                .iter()
                .all(|b| *b == 0));
            let q = unsafe { a.realloc(p, layout, 5000) };
            assert_eq!(q as usize % align, 0, "grown block aligned to {align}");
            unsafe { a.dealloc(q, Layout::from_size_align(5000, align).expect("layout")) };
        }
        let layout = Layout::from_size_align(10, 8).expect("layout");
        let p = unsafe { a.alloc(layout) };
        unsafe { p.write_bytes(7, 10) };
        let q = unsafe { a.realloc(p, layout, 3000) };
        assert_eq!(q as usize % 8, 0);
        assert!(unsafe { std::slice::from_raw_parts(q, 10) }
            .iter()
            .all(|b| *b == 7));
        unsafe { a.dealloc(q, Layout::from_size_align(3000, 8).expect("layout")) };
    }

    #[test]
    fn small_layouts_below_their_alignment_take_the_aligned_path() {
        assert!(plain_is_aligned(16, 16));
        assert!(plain_is_aligned(8, 8));
        assert!(!plain_is_aligned(8, 16));
        assert!(!plain_is_aligned(64, 32));
    }
}
