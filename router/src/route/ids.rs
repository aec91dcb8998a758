//! Random identifiers that only name things (trace and span ids, request
//! ids): unique by overwhelming odds, never secret. They come from a
//! per-thread xoshiro generator seeded by the OS, a few instructions a draw,
//! rather than the cryptographic thread generator `rand::random` uses (a
//! ChaCha block every few draws; a request takes seven: -150 instructions
//! per proxied request). Keys and anything a client could gain by guessing
//! (the token key, idempotency keys) keep `rand::random`.

use std::cell::RefCell;

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

thread_local! {
    static IDS: RefCell<SmallRng> = RefCell::new(SmallRng::from_os_rng());
}

/// 64 random bits for an identifier.
pub(crate) fn random_u64() -> u64 {
    IDS.with(|rng| rng.borrow_mut().next_u64())
}

/// 128 random bits for an identifier.
pub(crate) fn random_u128() -> u128 {
    IDS.with(|rng| {
        let mut rng = rng.borrow_mut();
        (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn draws_do_not_repeat_within_a_thread_or_across_threads() {
        let mine: HashSet<u64> = (0..10_000).map(|_| random_u64()).collect();
        assert_eq!(mine.len(), 10_000);
        let theirs: HashSet<u64> =
            std::thread::spawn(|| (0..10_000).map(|_| random_u64()).collect())
                .join()
                .expect("the other thread draws");
        assert!(mine.is_disjoint(&theirs), "two threads drew the same ids");
        let wide: HashSet<u128> = (0..1_000).map(|_| random_u128()).collect();
        assert_eq!(wide.len(), 1_000);
    }
}
