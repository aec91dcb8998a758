//! The router's memory stays on ordinary 4 KiB pages: transparent huge
//! pages are turned off for the process at start.
//!
//! The allocator reserves its heap in large regions, and with huge pages
//! allowed the kernel backs each new 2 MiB of it with one huge page on first
//! touch: the fault zeroes 2 MiB before the touching thread goes on. When the
//! heap grows while serving, that thread is a worker, and every request on
//! it waits out the fault. Where fresh memory is slow to come by (a virtual
//! machine whose host backs guest memory only when it is first touched, as
//! on the machines our drills run on) a worker was seen spending 30 ms in
//! one such fault, and a router took one to five of them in each 4 s run at
//! a constant 20,000 requests a second. Over 14 such runs, the p99.9 passed
//! 20 ms in 8 with huge pages allowed and in 2 without (medians 23 and
//! 5.3 ms; the bare pingora proxy's, 3.5 ms). One of the two left, traced,
//! was the host taking the CPU away for 70 ms, which nothing in the process
//! changes. Neither the requests a second nor the CPU per request of the
//! closed-loop drill moved (`loadtests/RESULTS.md`): a proxy's working set
//! is small, and the fewer TLB misses huge pages buy it do not show.
//!
//! `PR_SET_THP_DISABLE` is the process's own switch: it holds whatever the
//! system-wide setting (`always` or `madvise`), is inherited by a re-executed
//! router (`switchyard upgrade`), and needs no privilege.

/// Turns transparent huge pages off for this process. An error (a seccomp
/// policy that refuses `prctl`, say) leaves the process as it was: it is
/// said and the router runs on.
pub(crate) fn keep_memory_off_huge_pages() {
    match rustix::thread::disable_transparent_huge_pages(true) {
        Ok(()) => tracing::debug!("transparent huge pages off for this process"),
        Err(e) => tracing::warn!(
            error = %e,
            "could not turn transparent huge pages off (prctl PR_SET_THP_DISABLE); a heap that grows while serving may stall a worker while the kernel zeroes each new huge page"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_says_its_huge_pages_are_off() {
        keep_memory_off_huge_pages();
        assert_eq!(
            rustix::thread::transparent_huge_pages_are_disabled().ok(),
            Some(true)
        );
    }
}
