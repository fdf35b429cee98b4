//! Process-wide memory settings for a long-running program that embeds the engine.

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
