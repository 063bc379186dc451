//! The process heap's policy (glibc): what the daemons that read the whole queue once in a
//! while (a start, a compaction) do so that their resident size is what they keep, not the
//! peak of the read.

/// Returns to the system the heap a whole read or write of the queue freed (the snapshot's
/// bytes, each task decoded on its way to what the reader keeps): glibc keeps freed heap
/// otherwise, so the resident size would stay at the read's peak.
pub(crate) fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Keeps large allocations (a snapshot read whole, a reader's tables) mapped on their own and
/// unmapped when freed, for the process's life: glibc raises its mmap threshold to the size of a
/// mapped block once one is freed (up to 32 MiB), so after a first whole read the next one grew
/// its tables inside the heap, copying on each growth with old and new held at once, and left
/// the heap fragmented (cortex-api at 100,000 tasks: 48 → 60 MiB after a reload, peak 90 → 108
/// MiB). A fixed threshold also stops that adjustment.
pub(crate) fn keep_large_allocations_mapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's policy for later allocations.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}
