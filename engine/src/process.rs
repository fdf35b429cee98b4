//! Process-wide memory settings for a long-running program that embeds the engine: the
//! allocator it runs with and the settings of the system's own.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// The global allocator `emporium serve` and the benchmarks run with: mimalloc, asked
/// for plain blocks whenever a plain block is aligned enough.
///
/// The `mimalloc` crate's allocator asks for every block through `mi_malloc_aligned`,
/// whose entry checks the alignment, looks for a free block of the size class, checks
/// that block's address against the alignment and then takes it: 55 instructions an
/// allocation on average on the engine's sequencer, 36 through `mi_malloc` (each with
/// mimalloc's occasional refills of a page counted in). mimalloc aligns every block to
/// its size class up to 16 bytes (`mi_malloc_is_naturally_aligned` in its
/// `alloc-aligned.c` is the same rule), so a layout aligned to at most 16 bytes and to
/// no more than its size takes the plain entry points; any other goes through the
/// aligned ones. Nearly every block Rust code asks for is of the first kind.
///
/// ```
/// #[global_allocator]
/// static ALLOCATOR: emporium_engine::Allocator = emporium_engine::Allocator;
///
/// let orders: Vec<u128> = (0..4).collect();
/// assert_eq!(orders.as_ptr() as usize % std::mem::align_of::<u128>(), 0);
/// ```
pub struct Allocator;

/// The alignment every mimalloc block of at least this many bytes has
/// (`MI_MAX_ALIGN_SIZE`).
const PLAIN_ALIGN_MAX: usize = 16;

/// Whether a plain mimalloc block of `size` bytes is aligned to `align`.
#[inline]
fn plain(align: usize, size: usize) -> bool {
    align <= PLAIN_ALIGN_MAX && align <= size
}

/// A block of `layout` from mimalloc's plain entry point `plain_block` where its
/// blocks are aligned enough, else from the aligned one `aligned_block`.
///
/// # Safety
/// As for [`GlobalAlloc::alloc`]; the two functions are mimalloc's of one kind
/// (allocating, or allocating zeroed).
#[inline]
unsafe fn block(
    layout: Layout,
    plain_block: unsafe extern "C" fn(usize) -> *mut c_void,
    aligned_block: unsafe extern "C" fn(usize, usize) -> *mut c_void,
) -> *mut u8 {
    if plain(layout.align(), layout.size()) {
        plain_block(layout.size()) as *mut u8
    } else {
        aligned_block(layout.size(), layout.align()) as *mut u8
    }
}

// SAFETY: every entry point hands the request to mimalloc, which returns null or a
// block of at least `size` bytes aligned as asked: through its aligned functions, or
// through the plain ones where `plain` holds, whose blocks mimalloc aligns to the
// request's alignment. `dealloc` and `realloc` receive only blocks from these entry
// points, and `mi_free` and `mi_realloc` take any mimalloc block, aligned or not.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        block(layout, libmimalloc_sys::mi_malloc, libmimalloc_sys::mi_malloc_aligned)
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        block(layout, libmimalloc_sys::mi_zalloc, libmimalloc_sys::mi_zalloc_aligned)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        libmimalloc_sys::mi_free(ptr as *mut c_void);
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain(layout.align(), new_size) {
            libmimalloc_sys::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
        } else {
            libmimalloc_sys::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align())
                as *mut u8
        }
    }
}

/// Sets the process-wide memory settings `emporium serve` runs with. Call it first
/// thing in `main`, before any thread is started and before the engine is opened; an
/// embedder may call it or choose its own. The engine never calls it itself.
///
/// - **Transparent huge pages off for this process** (`prctl(PR_SET_THP_DISABLE)`).
///   mimalloc asks for huge pages on the arenas it reserves (`madvise(MADV_HUGEPAGE)` on
///   1 GiB at a time, even where the system's setting is `madvise`), so the first
///   touch of each 2 MiB, and each touch after mimalloc has returned part of one to
///   the system, has the kernel zero 2 MiB at once. The engine's state grows
///   by small objects for every order and cart, and with a million orders held about a
///   third of a checkout's time went to that zeroing (`clear_page_erms` in
///   `do_huge_pmd_anonymous_page`). With 4 KiB pages the one-line checkout on that state
///   takes 2.5 µs instead of 4.0 µs (`apply_1m_orders` in `bench/benches/engine.rs`);
///   on a small state, and for durable and HTTP throughput, it measured no
///   difference, and the server's resident memory is about 50 MB lower. Redis's
///   documentation advises the same for its server.
/// - **glibc's mmap threshold fixed at 1 MiB** (`mallopt(M_MMAP_THRESHOLD)`). Rust code
///   allocates through the global allocator; RocksDB's C++ allocates through the C
///   library's. glibc's threshold starts at 128 KiB and rises to the size of each mapped
///   block freed, up to 32 MiB: once the first memtable was flushed, every later
///   memtable block (4 MiB) and memtable index came from glibc's arenas, which keep
///   freed memory resident between RocksDB's many small cache blocks. Fixed at 1 MiB,
///   large blocks are mapped and unmapped whole (an explicit threshold turns off the
///   rise, and the trim threshold's with it), so resident memory follows what RocksDB
///   holds.
///
/// Elsewhere than Linux (and, for the second, elsewhere than glibc) it does nothing.
/// An error says which setting the system refused; both change cost, never behaviour,
/// so a caller may go on without them.
///
/// ```
/// // First in `main`, then open the engine and start threads.
/// if let Err(error) = emporium_engine::tune_process_memory() {
///     eprintln!("running with the system's memory settings: {error}");
/// }
/// ```
pub fn tune_process_memory() -> std::io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` changes a setting of glibc's allocator, which it reads under
    // its own lock.
    unsafe {
        // glibc's mallopt returns 1 on success and 0 on error, without errno.
        if libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) != 1 {
            return Err(std::io::Error::other("mallopt(M_MMAP_THRESHOLD) refused 1 MiB"));
        }
    }
    #[cfg(target_os = "linux")]
    // SAFETY: `prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)` sets one flag of this process's
    // memory map and reads no pointer. The arguments are passed as the kernel reads
    // them, full `unsigned long`s: an `int` through C varargs leaves the register's upper
    // half undefined, and the kernel refuses nonzero unused arguments (EINVAL).
    unsafe {
        let zero: libc::c_ulong = 0;
        if libc::prctl(libc::PR_SET_THP_DISABLE, 1 as libc::c_ulong, zero, zero, zero) != 0 {
            let error = std::io::Error::last_os_error();
            return Err(std::io::Error::new(
                error.kind(),
                format!("prctl(PR_SET_THP_DISABLE): {error}"),
            ));
        }
    }
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn turns_transparent_huge_pages_off_for_the_process() {
        super::tune_process_memory().expect("the settings are accepted");
        let zero: libc::c_ulong = 0;
        // SAFETY: reads one flag of this process's memory map.
        let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, zero, zero, zero, zero) };
        assert_eq!(disabled, 1);
    }
}

#[cfg(test)]
mod allocator_tests {
    use std::alloc::{GlobalAlloc, Layout};

    use super::Allocator;

    /// A block of `layout` from the allocator, its first bytes numbered.
    ///
    /// # Safety
    /// `layout` has a nonzero size.
    unsafe fn numbered(layout: Layout) -> *mut u8 {
        let block = Allocator.alloc(layout);
        assert!(!block.is_null());
        for i in 0..layout.size().min(64) {
            block.add(i).write(i as u8);
        }
        block
    }

    /// Every block is aligned as its layout asks, whether mimalloc's plain or aligned
    /// entry point served it, and keeps its bytes through a reallocation to a smaller
    /// or larger size (which may cross from one kind to the other).
    #[test]
    fn blocks_are_aligned_as_asked_and_keep_their_bytes_when_resized() {
        let sizes = (1..=300).chain([511, 512, 4095, 4096, 65_536, 1 << 20, (1 << 22) + 8]);
        for size in sizes {
            for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
                let layout = Layout::from_size_align(size, align).expect("a valid layout");
                // SAFETY: layouts of nonzero size; each block is read and written within
                // its size and freed once, with the layout it has then.
                unsafe {
                    let block = numbered(layout);
                    assert_eq!(block as usize % align, 0, "{size} bytes aligned to {align}");
                    Allocator.dealloc(block, layout);

                    let zeroed = Allocator.alloc_zeroed(layout);
                    assert_eq!(zeroed as usize % align, 0, "{size} zeroed bytes to {align}");
                    assert!((0..size).all(|i| zeroed.add(i).read() == 0));
                    Allocator.dealloc(zeroed, layout);

                    for new_size in [size.div_ceil(2), size * 3 + 17] {
                        let block = numbered(layout);
                        let resized = Allocator.realloc(block, layout, new_size);
                        assert_eq!(resized as usize % align, 0, "{size} -> {new_size}, {align}");
                        let kept = size.min(new_size).min(64);
                        assert!((0..kept).all(|i| resized.add(i).read() == i as u8));
                        let new_layout = Layout::from_size_align(new_size, align).expect("valid");
                        Allocator.dealloc(resized, new_layout);
                    }
                }
            }
        }
    }
}
