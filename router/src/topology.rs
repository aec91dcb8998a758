//! One generation of routing state: the validated config plus everything
//! derived from it once (region indices, hash seeds, geo tables), and the live
//! state of each region. A reload builds a new `Topology` and swaps it in;
//! requests in flight keep the one they started with.

use std::collections::HashMap;
use std::sync::Arc;

use switchyard_config::{Config, Region, RegionKind};
use xxhash_rust::xxh3::xxh3_64;

use crate::geo::GeoResolver;
use crate::live::{EndpointLive, EndpointSet, RegionLive};

/// Index of a region in `Topology::regions`.
pub type RegionIdx = u16;

pub struct RegionEntry {
    pub spec: Region,
    pub live: Arc<RegionLive>,
    pub endpoints: Arc<EndpointSet>,
    /// Seed for this region's hashes, from its name: stable across restarts.
    pub seed: u64,
    pub weight: f64,
    pub serves: Vec<u64>,
}

impl RegionEntry {
    pub fn serves_service(&self, service_hash: u64) -> bool {
        self.serves.contains(&service_hash)
    }

    /// Takes writes: a full or lightweight region, not a read-only one.
    pub fn writable(&self) -> bool {
        self.spec.kind != RegionKind::ReadOnly
    }
}

pub struct Topology {
    pub config: Arc<Config>,
    pub regions: Vec<RegionEntry>,
    pub geo: GeoResolver,
    /// `geo.prefer` with region names turned into indices.
    pub prefer: HashMap<String, Vec<RegionIdx>>,
    pub default_owner: Option<RegionIdx>,
    pub owners: HashMap<String, RegionIdx>,
}

/// Hash of a service name, as regions store it.
pub fn service_hash(name: &str) -> u64 {
    xxh3_64(name.as_bytes())
}

impl Topology {
    /// Builds a generation from `config`, keeping the live state of regions and
    /// endpoints that `previous` already had.
    pub fn build(config: Arc<Config>, previous: Option<&Topology>) -> anyhow::Result<Topology> {
        let geo = GeoResolver::from_config(&config.routing.geo)?;
        let mut regions = Vec::with_capacity(config.regions.len());
        for spec in &config.regions {
            let old = previous.and_then(|p| p.region(spec.name.as_str()));
            let live = match old {
                Some(o) => {
                    if o.spec.dial != spec.dial {
                        o.live.dial.store(spec.dial.get(), std::sync::atomic::Ordering::Relaxed);
                    }
                    o.live.clone()
                }
                None => Arc::new(RegionLive::new(spec.dial)),
            };
            let endpoints = spec
                .endpoints
                .iter()
                .map(|e| {
                    old.and_then(|o| o.endpoints.endpoints.iter().find(|x| x.spec == *e).cloned())
                        .unwrap_or_else(|| Arc::new(EndpointLive::new(e.clone())))
                })
                .collect();
            regions.push(RegionEntry {
                spec: spec.clone(),
                live,
                endpoints: Arc::new(EndpointSet::new(endpoints)),
                seed: xxh3_64(spec.name.as_str().as_bytes()),
                weight: f64::from(config.routing.weight(&spec.name)),
                serves: spec.services.iter().map(|s| service_hash(s)).collect(),
            });
        }
        let index = |name: &str| {
            config
                .regions
                .iter()
                .position(|r| r.name.as_str() == name)
                .map(|i| i as RegionIdx)
        };
        let prefer = config
            .routing
            .geo
            .prefer
            .iter()
            .map(|(k, list)| (k.clone(), list.iter().filter_map(|r| index(r.as_str())).collect()))
            .collect();
        let default_owner = config
            .consistency
            .default_owner
            .as_ref()
            .and_then(|r| index(r.as_str()))
            .or_else(|| {
                config
                    .regions
                    .iter()
                    .position(|r| r.kind != RegionKind::ReadOnly)
                    .map(|i| i as RegionIdx)
            });
        let owners = config
            .consistency
            .owners
            .iter()
            .filter_map(|(p, r)| index(r.as_str()).map(|i| (p.clone(), i)))
            .collect();
        // Endpoints a reload dropped stop their health and DNS tasks.
        if let Some(prev) = previous {
            for e in prev.regions.iter().flat_map(|r| r.endpoints.endpoints.iter()) {
                let kept = regions
                    .iter()
                    .any(|r| r.endpoints.endpoints.iter().any(|x| Arc::ptr_eq(x, e)));
                if !kept {
                    e.retired.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        Ok(Topology {
            config,
            regions,
            geo,
            prefer,
            default_owner,
            owners,
        })
    }

    pub fn region(&self, name: &str) -> Option<&RegionEntry> {
        self.regions.iter().find(|r| r.spec.name.as_str() == name)
    }

    pub fn name(&self, idx: RegionIdx) -> &str {
        self.regions[idx as usize].spec.name.as_str()
    }

    /// The owner of a partition: its own entry, else the default owner.
    pub fn owner_of(&self, partition: Option<&str>) -> Option<RegionIdx> {
        partition
            .and_then(|p| self.owners.get(p).copied())
            .or(self.default_owner)
    }
}
