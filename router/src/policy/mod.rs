//! Routing policies: each orders the eligible regions, best first. They take
//! plain inputs and return plain values; dials and limits apply afterwards.

pub mod geo;
pub mod latency;
pub mod weighted;

/// Mixes a request's sticky hash with a region's seed into a uniform `u64`.
#[inline]
pub fn mix(sticky: u64, seed: u64) -> u64 {
    // splitmix64 finaliser: cheap, and good enough to decorrelate regions.
    let mut z = sticky ^ seed.rotate_left(17);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform float in (0, 1) from a hash.
#[inline]
pub fn unit(h: u64) -> f64 {
    ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}
