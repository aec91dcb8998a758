//! Checks that span keys: names that must refer to declared regions, services
//! that must be served, listeners that must not collide.

use crate::diag::Diags;
use crate::model::{Config, Policy, RegionKind};
use crate::yaml::{Node, Pos, Value};

/// The position of the key at `path` (falling back to its nearest ancestor).
fn key_pos(root: &Node, path: &[&str]) -> Pos {
    let mut node = root;
    let mut pos = root.pos;
    for key in path {
        let Value::Map(entries) = &node.value else {
            break;
        };
        match entries.iter().find(|(k, _)| k.as_scalar() == Some(key)) {
            Some((k, v)) => {
                pos = k.pos;
                node = v;
            }
            None => break,
        }
    }
    pos
}

/// The position of the `index`th item of the list at `path`.
fn item_pos(root: &Node, path: &[&str], index: usize) -> Pos {
    let mut node = root;
    for key in path {
        let Value::Map(entries) = &node.value else {
            return key_pos(root, path);
        };
        match entries.iter().find(|(k, _)| k.as_scalar() == Some(key)) {
            Some((_, v)) => node = v,
            None => return key_pos(root, path),
        }
    }
    match &node.value {
        Value::Seq(items) => items.get(index).map_or(node.pos, |n| n.pos),
        _ => node.pos,
    }
}

pub fn cross_check(cfg: &Config, root: &Node, d: &mut Diags) {
    let names: Vec<&str> = cfg.regions.iter().map(|r| r.name.as_str()).collect();
    let known = names.join(", ");
    let unknown = |what: &str, name: &str| {
        format!("`{what}` names region {name:?}, which is not declared under `regions` (declared: {known})")
    };

    for name in cfg.routing.weights.keys() {
        if cfg.region(name.as_str()).is_none() {
            d.error(
                key_pos(root, &["routing", "weights", name.as_str()]),
                unknown(&format!("routing.weights.{name}"), name.as_str()),
            );
        }
    }
    if cfg.routing.policy == Policy::Weighted
        && !cfg.routing.weights.is_empty()
        && cfg.routing.weights.values().all(|w| *w == 0)
    {
        d.error(
            key_pos(root, &["routing", "weights"]),
            "`routing.weights` must give at least one region a weight above 0",
        );
    }

    for (key, list) in &cfg.routing.geo.prefer {
        let valid_key =
            key == "default" || (key.len() == 2 && key.bytes().all(|b| b.is_ascii_uppercase()));
        if !valid_key {
            d.error(
                key_pos(root, &["routing", "geo", "prefer", key]),
                format!("`routing.geo.prefer` keys must be a country code, a continent code or `default`, found {key:?}"),
            );
        }
        for (i, name) in list.iter().enumerate() {
            if cfg.region(name.as_str()).is_none() {
                d.error(
                    item_pos(root, &["routing", "geo", "prefer", key], i),
                    unknown(&format!("routing.geo.prefer.{key}"), name.as_str()),
                );
            }
        }
    }

    let owners = cfg
        .consistency
        .default_owner
        .iter()
        .map(|r| ("default", r))
        .chain(cfg.consistency.owners.iter().map(|(p, r)| (p.as_str(), r)));
    for (partition, owner) in owners {
        let pos = key_pos(root, &["consistency", "owners", partition]);
        match cfg.region(owner.as_str()) {
            None => d.error(
                pos,
                unknown(&format!("consistency.owners.{partition}"), owner.as_str()),
            ),
            Some(r) if r.kind == RegionKind::ReadOnly => d.error(
                pos,
                format!("`consistency.owners.{partition}` names {:?}, a read-only region, which cannot own writes", owner.as_str()),
            ),
            Some(_) => {}
        }
    }

    for route in &cfg.routes {
        if !cfg
            .regions
            .iter()
            .any(|r| r.services.contains(&route.service))
        {
            d.error(
                key_pos(root, &["routes", &route.prefix]),
                format!(
                    "`routes.{}` sends to service {:?}, which no region serves",
                    route.prefix, route.service
                ),
            );
        }
    }

    let mut ramped: Vec<(&str, &str)> = Vec::new();
    for ramp in &cfg.ramps {
        let pos = key_pos(root, &["ramps", &ramp.name, "region"]);
        if cfg.region(ramp.region.as_str()).is_none() {
            d.error(
                pos,
                unknown(&format!("ramps.{}.region", ramp.name), ramp.region.as_str()),
            );
        }
        if let Some((other, _)) = ramped.iter().find(|(_, r)| *r == ramp.region.as_str()) {
            d.error(
                pos,
                format!(
                    "`ramps.{}` ramps region {:?}, which ramp {other:?} already ramps",
                    ramp.name,
                    ramp.region.as_str()
                ),
            );
        }
        ramped.push((&ramp.name, ramp.region.as_str()));
        let uses_synthetic = ramp.steps.first() == Some(&crate::model::RampStep::Synthetic);
        if uses_synthetic && cfg.synthetic.is_none() {
            d.error(
                key_pos(root, &["ramps", &ramp.name, "steps"]),
                format!(
                    "`ramps.{}.steps` starts with `synthetic`, but no `synthetic` marker is configured (synthetic: {{ header: X-Switchyard-Synthetic, token_env: SWITCHYARD_SYNTHETIC_TOKEN }})",
                    ramp.name
                ),
            );
        }
        if ramp.shadow.is_some() && !uses_synthetic {
            d.error(
                key_pos(root, &["ramps", &ramp.name, "shadow"]),
                format!(
                    "`ramps.{}.shadow` mirrors reads during the synthetic stage, but the ramp has none",
                    ramp.name
                ),
            );
        }
    }
    if cfg.safety.min_serving_regions > cfg.regions.len() && !cfg.regions.is_empty() {
        d.error(
            key_pos(root, &["safety", "min_serving_regions"]),
            format!(
                "`safety.min_serving_regions` is {}, but only {} regions are declared",
                cfg.safety.min_serving_regions,
                cfg.regions.len()
            ),
        );
    }

    if let (Some(http), Some(https)) = (&cfg.listen.http, &cfg.listen.https) {
        if *http == https.addr && http.port() != 0 {
            d.error(
                key_pos(root, &["listen", "https"]),
                format!("`listen.https.addr` and `listen.http` are both {http}"),
            );
        }
    }
}
