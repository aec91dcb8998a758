//! The overload and tail-latency keys: `routing.hedge`, `routing.try_timeout`,
//! `routing.panic_threshold`, and a region's `max_inflight` or
//! `adaptive_concurrency`.

use std::time::Duration;

use crate::diag::{self, Diags, Fields};
use crate::model::*;
use crate::traffic::{percent, positive};
use crate::yaml::{Node, Value};

/// What `routing` holds for overload.
pub struct RoutingOverload {
    pub hedge: Option<Hedge>,
    pub try_timeout: Option<Duration>,
    pub panic_threshold: Percent,
}

/// `hedge`, `try_timeout`, `panic_threshold` of `routing`.
pub fn routing(f: &Fields<'_>, d: &mut Diags) -> RoutingOverload {
    let hedge = f.get("hedge").and_then(|n| hedge(n, &f.child("hedge"), d));
    let try_timeout = f
        .get("try_timeout")
        .and_then(|n| positive(n, &f.child("try_timeout"), d));
    let panic_threshold = f
        .get("panic_threshold")
        .and_then(|n| percent(n, &f.child("panic_threshold"), d))
        .unwrap_or(Percent::from_tenths(500).unwrap_or(Percent::ZERO));
    RoutingOverload {
        hedge,
        try_timeout,
        panic_threshold,
    }
}

/// `{ after: 50ms | p95, max: 1 }`.
fn hedge(n: &Node, path: &str, d: &mut Diags) -> Option<Hedge> {
    let f = Fields::new(n, path, &["after", "max"], d)?;
    let after = f.require("after", d).and_then(|n| {
        if matches!(&n.value, Value::Scalar(s, _) if s.trim() == "p95") {
            return Some(HedgeAfter::P95);
        }
        let s = diag::string(n, &f.child("after"), d)?;
        match diag::parse_duration(&s) {
            Some(v) if !v.is_zero() => Some(HedgeAfter::Fixed(v)),
            _ => {
                d.error(
                    n.pos,
                    format!(
                        "`{}` must be a duration such as 50ms, or p95, found {}",
                        f.child("after"),
                        diag::found(n)
                    ),
                );
                None
            }
        }
    });
    let max = f
        .get("max")
        .and_then(|n| diag::integer(n, &f.child("max"), 1, 3, d))
        .unwrap_or(1) as u32;
    Some(Hedge { after: after?, max })
}

/// A region's `max_inflight` (fixed) or `adaptive_concurrency`; not both.
pub fn concurrency(f: &Fields<'_>, d: &mut Diags) -> Concurrency {
    let fixed = f.get("max_inflight").and_then(|n| {
        diag::integer(n, &f.child("max_inflight"), 1, 1_000_000, d).map(|v| v as usize)
    });
    let adaptive = f
        .get("adaptive_concurrency")
        .and_then(|n| adaptive(n, &f.child("adaptive_concurrency"), d));
    match (fixed, adaptive) {
        (Some(_), Some(_)) => {
            let pos = f.get("adaptive_concurrency").map_or(f.pos, |n| n.pos);
            d.error(
                pos,
                format!(
                    "`{}` and `{}` cannot both be set: a fixed limit or an adaptive one",
                    f.child("max_inflight"),
                    f.child("adaptive_concurrency")
                ),
            );
            Concurrency::Unlimited
        }
        (Some(n), None) => Concurrency::Fixed(n),
        (None, Some(a)) => Concurrency::Adaptive(a),
        (None, None) => Concurrency::Unlimited,
    }
}

/// `true`, or `{ min, max, initial, tolerance }`.
fn adaptive(n: &Node, path: &str, d: &mut Diags) -> Option<Adaptive> {
    let mut a = Adaptive::default();
    if let Value::Scalar(s, _) = &n.value {
        return match s.trim() {
            "true" => Some(a),
            "false" => None,
            _ => {
                d.error(
                    n.pos,
                    format!(
                        "`{path}` must be true or {{ min, max, initial, tolerance }}, found {}",
                        diag::found(n)
                    ),
                );
                None
            }
        };
    }
    let f = Fields::new(n, path, &["min", "max", "initial", "tolerance"], d)?;
    let count = |key: &str, d: &mut Diags| {
        f.get(key)
            .and_then(|n| diag::integer(n, &f.child(key), 1, 1_000_000, d))
            .map(|v| v as usize)
    };
    if let Some(v) = count("min", d) {
        a.min = v;
    }
    if let Some(v) = count("max", d) {
        a.max = v;
    }
    a.initial = count("initial", d).unwrap_or(a.initial.clamp(a.min, a.max.max(a.min)));
    if let Some(v) = f
        .get("tolerance")
        .and_then(|n| diag::number(n, &f.child("tolerance"), 1.0, 10.0, d))
    {
        a.tolerance = v;
    }
    if a.min > a.max || !(a.min..=a.max).contains(&a.initial) {
        d.error(
            f.pos,
            format!(
                "`{path}` needs min ≤ initial ≤ max, found min {}, initial {}, max {}",
                a.min, a.initial, a.max
            ),
        );
        return None;
    }
    Some(a)
}
