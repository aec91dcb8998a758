//! The traffic-shift and protection sections: `synthetic`, `ramps`, `safety`
//! and `routing.outlier`, plus the dial reader they share with regions.

use std::time::Duration;

use crate::diag::{self, found, Diags, Fields};
use crate::model::*;
use crate::yaml::Node;

/// A percentage from 0 to 100 in steps of 0.1.
pub fn percent(n: &Node, path: &str, d: &mut Diags) -> Option<Percent> {
    let s = diag::string(n, path, d)?;
    let p = s
        .trim()
        .trim_end_matches('%')
        .parse::<f64>()
        .ok()
        .and_then(Percent::from_f64);
    if p.is_none() {
        d.error(
            n.pos,
            format!(
                "`{path}` must be a percentage from 0 to 100 in steps of 0.1, found {}",
                found(n)
            ),
        );
    }
    p
}

pub fn synthetic(n: &Node, d: &mut Diags) -> Option<Synthetic> {
    let f = Fields::new(n, "synthetic", &["header", "token_env"], d)?;
    let header = f
        .require("header", d)
        .and_then(|n| diag::string(n, "synthetic.header", d));
    if let Some(h) = &header {
        if !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') || h.is_empty() {
            d.error(
                f.pos,
                format!("`synthetic.header` must be a header name, found {h:?}"),
            );
        }
    }
    let token_env = f
        .require("token_env", d)
        .and_then(|n| diag::string(n, "synthetic.token_env", d));
    Some(Synthetic {
        header: header?,
        token_env: token_env?,
    })
}

pub fn ramps(n: &Node, d: &mut Diags) -> Vec<Ramp> {
    diag::map_entries(n, "ramps", d)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, _, node)| ramp(name, node, d))
        .collect()
}

fn ramp(name: &str, n: &Node, d: &mut Diags) -> Option<Ramp> {
    let path = format!("ramps.{name}");
    let f = Fields::new(
        n,
        &path,
        &[
            "region",
            "steps",
            "hold",
            "gates",
            "step_down_every",
            "shadow",
        ],
        d,
    )?;
    let region = f
        .require("region", d)
        .and_then(|n| diag::string(n, &f.child("region"), d))
        .map(|s| RegionName::new(&s));
    let steps = f
        .require("steps", d)
        .and_then(|n| steps(n, &f.child("steps"), d));
    let hold = f
        .get("hold")
        .and_then(|n| positive(n, &f.child("hold"), d))
        .unwrap_or(Duration::from_secs(60));
    let gates = f
        .get("gates")
        .map_or_else(Gates::default, |n| gates(n, &f.child("gates"), d));
    let step_down_every = f
        .get("step_down_every")
        .and_then(|n| positive(n, &f.child("step_down_every"), d))
        .unwrap_or(Duration::from_secs(1));
    let shadow = f.get("shadow").and_then(|n| {
        let s = Fields::new(
            n,
            &f.child("shadow"),
            &["percent", "compare_body", "strip_headers", "max_inflight"],
            d,
        )?;
        let percent = s
            .require("percent", d)
            .and_then(|n| percent(n, &s.child("percent"), d))?;
        let compare_body = s
            .get("compare_body")
            .and_then(|n| diag::boolean(n, &s.child("compare_body"), d))
            .unwrap_or(false);
        let strip_headers = s.get("strip_headers").map_or_else(Vec::new, |n| {
            diag::strings(n, &s.child("strip_headers"), d)
                .into_iter()
                .map(|(h, _)| h.to_ascii_lowercase())
                .collect()
        });
        let max_inflight = s
            .get("max_inflight")
            .and_then(|n| diag::integer(n, &s.child("max_inflight"), 1, 100_000, d))
            .map_or(64, |v| v as usize);
        Some(Shadow {
            percent,
            compare_body,
            strip_headers,
            max_inflight,
        })
    });
    Some(Ramp {
        name: name.to_string(),
        region: region?,
        steps: steps?,
        hold,
        gates,
        step_down_every,
        shadow,
    })
}

/// `[synthetic, 1, 5, 25, 100]`: `synthetic` only first, then rising percentages.
fn steps(n: &Node, path: &str, d: &mut Diags) -> Option<Vec<RampStep>> {
    let items = diag::seq(n, path, d)?;
    if items.is_empty() {
        d.error(n.pos, format!("`{path}` must list at least one step"));
        return None;
    }
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let step = if item.as_scalar() == Some("synthetic") {
            if i != 0 {
                d.error(
                    item.pos,
                    format!("`{at}`: `synthetic` can only be the first step"),
                );
                ok = false;
            }
            RampStep::Synthetic
        } else {
            match percent(item, &at, d) {
                Some(p) => RampStep::Real(p),
                None => {
                    ok = false;
                    continue;
                }
            }
        };
        if let (Some(prev), RampStep::Real(p)) = (out.last().map(|s: &RampStep| s.dial()), step) {
            if p <= prev {
                d.error(
                    item.pos,
                    format!("`{at}` must be above the step before it ({prev}), found {p}"),
                );
                ok = false;
            }
        }
        out.push(step);
    }
    ok.then_some(out)
}

fn gates(n: &Node, path: &str, d: &mut Diags) -> Gates {
    let mut g = Gates::default();
    let Some(f) = Fields::new(
        n,
        path,
        &[
            "max_error_rate",
            "max_p99_ratio",
            "max_burn_rate",
            "slo",
            "min_requests",
        ],
        d,
    ) else {
        return g;
    };
    // Naming any gate replaces the defaults: only the named ones apply.
    g.max_error_rate = f
        .get("max_error_rate")
        .and_then(|n| diag::number(n, &f.child("max_error_rate"), 0.0, 1.0, d));
    g.max_p99_ratio = f
        .get("max_p99_ratio")
        .and_then(|n| diag::number(n, &f.child("max_p99_ratio"), 1.0, 1000.0, d));
    g.max_burn_rate = f
        .get("max_burn_rate")
        .and_then(|n| diag::number(n, &f.child("max_burn_rate"), 0.0, 1e6, d));
    if let Some(v) = f
        .get("slo")
        .and_then(|n| diag::number(n, &f.child("slo"), 0.0, 0.999_999, d))
    {
        g.slo = v;
    }
    if let Some(v) = f
        .get("min_requests")
        .and_then(|n| diag::integer(n, &f.child("min_requests"), 0, 1_000_000_000, d))
    {
        g.min_requests = v;
    }
    g
}

pub fn safety(n: &Node, d: &mut Diags) -> Safety {
    let mut s = Safety::default();
    let Some(f) = Fields::new(
        n,
        "safety",
        &[
            "min_serving_regions",
            "max_dial_step",
            "dial_step_interval",
            "single_owner",
        ],
        d,
    ) else {
        return s;
    };
    if let Some(v) = f
        .get("min_serving_regions")
        .and_then(|n| diag::integer(n, "safety.min_serving_regions", 0, 10_000, d))
    {
        s.min_serving_regions = v as usize;
    }
    s.max_dial_step = f
        .get("max_dial_step")
        .and_then(|n| percent(n, "safety.max_dial_step", d));
    if s.max_dial_step == Some(Percent::ZERO) {
        d.error(f.pos, "`safety.max_dial_step` must be above 0");
    }
    if let Some(v) = f
        .get("dial_step_interval")
        .and_then(|n| positive(n, "safety.dial_step_interval", d))
    {
        s.dial_step_interval = v;
    }
    if let Some(v) = f
        .get("single_owner")
        .and_then(|n| diag::boolean(n, "safety.single_owner", d))
    {
        s.single_owner = v;
    }
    s
}

pub fn outlier(n: &Node, d: &mut Diags) -> Outlier {
    let mut o = Outlier::default();
    let path = "routing.outlier";
    let Some(f) = Fields::new(
        n,
        path,
        &[
            "enabled",
            "interval",
            "window",
            "consecutive_failures",
            "max_error_rate",
            "min_requests",
            "slow_ratio",
            "slow_min_excess",
            "base_ejection",
            "max_ejection",
            "max_ejected_percent",
        ],
        d,
    ) else {
        return o;
    };
    let dur = |key: &str, d: &mut Diags| f.get(key).and_then(|n| positive(n, &f.child(key), d));
    if let Some(v) = f
        .get("enabled")
        .and_then(|n| diag::boolean(n, &f.child("enabled"), d))
    {
        o.enabled = v;
    }
    if let Some(v) = dur("interval", d) {
        o.interval = v;
    }
    if let Some(v) = dur("window", d) {
        o.window = v;
    }
    if let Some(v) = f
        .get("consecutive_failures")
        .and_then(|n| diag::integer(n, &f.child("consecutive_failures"), 1, 1_000_000, d))
    {
        o.consecutive_failures = v as u32;
    }
    if let Some(v) = f
        .get("max_error_rate")
        .and_then(|n| diag::number(n, &f.child("max_error_rate"), 0.0, 1.0, d))
    {
        o.max_error_rate = v;
    }
    if let Some(v) = f
        .get("min_requests")
        .and_then(|n| diag::integer(n, &f.child("min_requests"), 1, 1_000_000_000, d))
    {
        o.min_requests = v;
    }
    if let Some(v) = f
        .get("slow_ratio")
        .and_then(|n| diag::number(n, &f.child("slow_ratio"), 1.0, 1000.0, d))
    {
        o.slow_ratio = v;
    }
    if let Some(v) = f
        .get("slow_min_excess")
        .and_then(|n| diag::duration(n, &f.child("slow_min_excess"), d))
    {
        o.slow_min_excess = v;
    }
    if let Some(v) = dur("base_ejection", d) {
        o.base_ejection = v;
    }
    if let Some(v) = dur("max_ejection", d) {
        o.max_ejection = v;
    }
    if let Some(v) = f
        .get("max_ejected_percent")
        .and_then(|n| diag::integer(n, &f.child("max_ejected_percent"), 0, 100, d))
    {
        o.max_ejected_percent = v as u8;
    }
    if o.max_ejection < o.base_ejection {
        d.error(
            f.pos,
            format!("`{path}.max_ejection` must not be shorter than `{path}.base_ejection`"),
        );
    }
    o
}

/// A duration above zero.
pub fn positive(n: &Node, path: &str, d: &mut Diags) -> Option<Duration> {
    let v = diag::duration(n, path, d)?;
    if v.is_zero() {
        d.error(n.pos, format!("`{path}` must be longer than 0s"));
        return None;
    }
    Some(v)
}
