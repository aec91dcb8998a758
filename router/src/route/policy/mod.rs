//! Routing policies. Each gives every eligible region a rank key (lower is
//! better); `decide` keeps the best few that the dials admit. Keys are
//! computed once per region per request, so a decision is linear in the
//! number of regions: no comparator does real work.

use smallvec::SmallVec;

use crate::route::topology::RegionIdx;

pub(crate) mod geo;
pub(crate) mod latency;
pub(crate) mod weighted;

/// Regions to try, best first.
pub(crate) type Order = SmallVec<[RegionIdx; 8]>;

/// At most this many regions are kept per decision: the pick, the one retry,
/// and spares for endpoints found down on the way.
pub(crate) const MAX_TRIES: usize = 4;

/// The `MAX_TRIES` lowest keys, in order (ties by region index).
pub(crate) fn best_first(ranked: &mut [(f64, RegionIdx)]) -> Order {
    let keep = ranked.len().min(MAX_TRIES);
    if ranked.len() > keep {
        ranked.select_nth_unstable_by(keep - 1, |a, b| a.0.total_cmp(&b.0));
    }
    ranked[..keep].sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    ranked[..keep].iter().map(|(_, i)| *i).collect()
}

/// Mixes a request's sticky hash with a region's seed into a uniform `u64`.
#[inline]
pub(crate) fn mix(sticky: u64, seed: u64) -> u64 {
    // splitmix64 finaliser: cheap, and good enough to decorrelate regions.
    let mut z = sticky ^ seed.rotate_left(17);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform float in (0, 1) from a hash.
#[inline]
pub(crate) fn unit(h: u64) -> f64 {
    ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// Natural log for `x > 0`, within 1e-9 absolute of `f64::ln`.
///
/// Written here rather than taken from libm: rendezvous hashing takes one log
/// per region per request, and libm's exact log was a third of the decision's
/// time at 50 regions. Table-driven, without a division: x = m * 2^e with m in
/// [1, 2); the top 8 bits of m pick c from a table of ln c and 1/c, and
/// ln m = ln c + ln(1 + r) with r = m/c - 1, |r| < 1/512, by three terms.
#[inline]
pub(crate) fn fast_ln(x: f64) -> f64 {
    let t = log_table();
    let bits = x.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let m = f64::from_bits((bits & 0x000F_FFFF_FFFF_FFFF) | 0x3FF0_0000_0000_0000);
    let k = ((bits >> 44) & 0xff) as usize;
    let r = m * t.inv[k] - 1.0;
    let ln1p = r * (1.0 - r * (0.5 - r * (1.0 / 3.0)));
    exponent as f64 * std::f64::consts::LN_2 + t.ln[k] + ln1p
}

struct LogTable {
    ln: [f64; 256],
    inv: [f64; 256],
}

fn log_table() -> &'static LogTable {
    static TABLE: std::sync::LazyLock<LogTable> = std::sync::LazyLock::new(|| {
        let mut t = LogTable {
            ln: [0.0; 256],
            inv: [0.0; 256],
        };
        for k in 0..256 {
            let c = 1.0 + (k as f64 + 0.5) / 256.0;
            t.ln[k] = c.ln();
            t.inv[k] = 1.0 / c;
        }
        t
    });
    &TABLE
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn fast_ln_is_close_to_ln(h in any::<u64>()) {
            let x = unit(h);
            let exact = x.ln();
            prop_assert!((fast_ln(x) - exact).abs() <= 1e-9);
        }
    }

    #[test]
    fn fast_ln_at_edges() {
        for x in [1e-300, 1e-9, 0.25, 0.5, 0.999_999, 1.0] {
            let e: f64 = x;
            assert!((fast_ln(x) - e.ln()).abs() <= 1e-9, "{x}");
        }
    }
}
