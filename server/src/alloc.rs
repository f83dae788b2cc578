//! The binary's global allocator: the system allocator, except that very
//! large blocks are reserved lazily (`mmap` with `MAP_NORESERVE`).
//!
//! Why: the `kafka-protocol` decoder pre-sizes arrays with
//! `Vec::with_capacity(n)` where `n` is read from the request before any
//! element is decoded (upstream: kafka-protocol-rs PRs #152/#161/#200, not
//! released as of 0.18.0). A 10-byte request claiming two billion elements
//! asks for hundreds of GiB; the system allocator refuses, and Rust aborts
//! the process — one packet would kill the broker. Reserved lazily, such a
//! block costs only address space; decoding then fails on the missing bytes
//! and the block is unmapped, and the client gets its connection closed.
//! No legitimate allocation of Chronik's is this large (requests are capped
//! by `socket.request.max.bytes`), so this path only ever serves bad input.
//! Remove it when the codec bounds its pre-allocation.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks at least this large are mapped lazily.
const LAZY_BYTES_MIN: usize = 1 << 30;
const PAGE: usize = 4096;

pub struct LazyLargeAlloc;

fn is_lazy(size: usize, align: usize) -> bool {
    size >= LAZY_BYTES_MIN && align <= PAGE
}

unsafe fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping has no preconditions; failure is
    // reported as MAP_FAILED, which we turn into the allocator's null.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}

unsafe impl GlobalAlloc for LazyLargeAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_lazy(layout.size(), layout.align()) {
            unsafe { map(layout.size()) }
        } else {
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_lazy(layout.size(), layout.align()) {
            unsafe { map(layout.size()) } // fresh anonymous pages are zero
        } else {
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_lazy(layout.size(), layout.align()) {
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        } else {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !is_lazy(layout.size(), layout.align()) && !is_lazy(new_size, layout.align()) {
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: the caller guarantees new_size is valid for this alignment.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn huge_reservations_do_not_abort() {
        #[global_allocator]
        static A: super::LazyLargeAlloc = super::LazyLargeAlloc;
        // 256 GiB of address space, never touched beyond the first page.
        let mut v: Vec<u64> = Vec::with_capacity(32 << 30);
        v.push(7);
        assert_eq!(v[0], 7);
        let mut small: Vec<u8> = Vec::with_capacity(10);
        small.extend_from_slice(b"hello");
        small.reserve(2 << 30); // grows into a lazy block, keeping the data
        assert_eq!(&small[..5], b"hello");
        small.shrink_to_fit();
        assert_eq!(&small[..], b"hello");
    }
}
