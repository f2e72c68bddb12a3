//! Bounds how much freed memory glibc's malloc keeps, for the long-running services.
//!
//! Measured in `make bench` (P8): while the webhook service refetches and diffs a
//! 10,000-secret folder its live heap peaks near 17 MiB (heaptrack), yet its RSS stayed at
//! 60-90 MiB with glibc as shipped. Two behaviours of glibc account for the difference:
//! - every thread that allocates under contention gets an arena of its own (up to eight per
//!   core), and each arena keeps its own freed memory;
//! - the mmap threshold is dynamic: once a large block (a listing body of a few MiB) is
//!   freed, blocks up to its size are carved from the arenas from then on, and freed ones stay
//!   there (the trim threshold rises with it to twice that size).
//!
//! [`bound_retention`] caps the arenas at [`ARENA_MAX`] and fixes the mmap threshold at
//! [`MMAP_THRESHOLD`], so a large transient block is mapped for its lifetime and unmapped when
//! freed. The cost is an `mmap`/`munmap` pair per block above the threshold, which a service
//! allocating such blocks once per refetch does not notice. Elsewhere (musl, macOS) it does
//! nothing.
//!
//! Settings an operator gives glibc through the environment (`MALLOC_ARENA_MAX`,
//! `MALLOC_MMAP_THRESHOLD_`, or `GLIBC_TUNABLES`) are applied by glibc before `main` and are
//! left as they are.

/// Arenas at most: one per worker-thread core of a small pod, enough to keep threads from
/// queueing on one arena's lock.
pub const ARENA_MAX: i32 = 2;

/// Blocks of this size or more are mapped on their own and returned to the system when freed.
pub const MMAP_THRESHOLD: i32 = 256 * 1024;

/// What [`bound_retention`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// The arena cap was set (no operator setting for it).
    pub arena_max: bool,
    /// The mmap threshold was fixed (no operator setting for it).
    pub mmap_threshold: bool,
}

/// Applies [`ARENA_MAX`] and [`MMAP_THRESHOLD`] unless the environment already sets them.
/// Call it first thing in `main`, before threads start.
pub fn bound_retention() -> Applied {
    let operator = |name: &str| std::env::var_os(name).is_some();
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    let tuned = |tunable: &str| tunables.contains(tunable);
    let mut applied = Applied::default();
    if !operator("MALLOC_ARENA_MAX") && !tuned("glibc.malloc.arena_max") {
        applied.arena_max = sys::set_arena_max(ARENA_MAX);
    }
    if !operator("MALLOC_MMAP_THRESHOLD_") && !tuned("glibc.malloc.mmap_threshold") {
        applied.mmap_threshold = sys::set_mmap_threshold(MMAP_THRESHOLD);
    }
    applied
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod sys {
    // SAFETY (both calls): `mallopt` takes plain integers and only changes glibc's malloc
    // parameters, which glibc guards with its own lock.
    #[allow(unsafe_code)]
    pub(crate) fn set_arena_max(n: i32) -> bool {
        unsafe { libc::mallopt(libc::M_ARENA_MAX, n) == 1 }
    }

    #[allow(unsafe_code)]
    pub(crate) fn set_mmap_threshold(bytes: i32) -> bool {
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) == 1 }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod sys {
    pub(crate) fn set_arena_max(_: i32) -> bool {
        false
    }

    pub(crate) fn set_mmap_threshold(_: i32) -> bool {
        false
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Bytes glibc currently holds in separately mapped blocks.
    // SAFETY: `mallinfo2` takes nothing and returns a struct by value.
    #[allow(unsafe_code)]
    fn mapped_bytes() -> usize {
        unsafe { libc::mallinfo2() }.hblkhd
    }

    /// A block of `bytes`, written so it is really allocated, and how many bytes the
    /// allocator had mapped while it lived (beyond those mapped before).
    fn mapped_while_holding(bytes: usize) -> usize {
        let before = mapped_bytes();
        let block = std::hint::black_box(vec![1u8; bytes]);
        let during = mapped_bytes();
        drop(block);
        during.saturating_sub(before)
    }

    // The settings are process-wide and must come before the heap grows, as in a service's
    // `main` (nextest runs each test in a process of its own). Without them the second block
    // below comes from the heap and stays there: glibc as shipped raises its mmap threshold to
    // 8 MiB when the first block is freed.
    #[test]
    fn after_a_large_block_is_freed_the_next_one_is_still_mapped_and_returned() {
        let applied = bound_retention();
        assert_eq!(applied, Applied { arena_max: true, mmap_threshold: true });
        assert!(mapped_while_holding(8 << 20) >= 8 << 20, "a large block is mapped");
        assert!(mapped_while_holding(1 << 20) >= 1 << 20, "so is a smaller one after it");
        let before = mapped_bytes();
        drop(std::hint::black_box(vec![1u8; 1 << 20]));
        assert_eq!(mapped_bytes(), before, "and each is unmapped when freed");
    }
}
