//! One generation of routing state: the validated config plus everything
//! derived from it once (region indices, hash seeds, geo tables), and the live
//! state of each region. A reload builds a new `Topology` and swaps it in;
//! requests in flight keep the one they started with.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwap;

use switchyard_config::{Config, Region};
use xxhash_rust::xxh3::xxh3_64;

use crate::route::geo::GeoResolver;
use crate::route::live::{EndpointLive, EndpointSet, RegionLive};
use crate::route::owners::{OwnerIndex, OwnershipTable};
use crate::route::ratelimit::TokenBucket;

/// Index of a region in `Topology::regions`.
pub(crate) type RegionIdx = u16;

pub(crate) struct RegionEntry {
    pub(crate) spec: Region,
    pub(crate) live: Arc<RegionLive>,
    pub(crate) endpoints: Arc<EndpointSet>,
    /// Seed for this region's hashes, from its name: stable across restarts.
    pub(crate) seed: u64,
    pub(crate) weight: f64,
    /// 1 / weight (0 for weight 0): the hot path multiplies.
    pub(crate) inv_weight: f64,
    pub(crate) serves: Vec<u64>,
    pub(crate) metrics: crate::metrics::RegionMetrics,
    /// The region's name as the `X-Switchyard-Region` value, built once.
    pub(crate) header_value: http::HeaderValue,
    /// Its rate limit's bucket; kept across reloads while the limit is unchanged.
    pub(crate) rate: Option<Arc<TokenBucket>>,
    /// How its endpoints are reached (TLS material read at build).
    pub(crate) transport: crate::route::upstream::Transport,
}

impl RegionEntry {
    pub(crate) fn serves_service(&self, service_hash: u64) -> bool {
        self.serves.contains(&service_hash)
    }
}

pub struct Topology {
    pub(crate) config: Arc<Config>,
    pub(crate) regions: Vec<RegionEntry>,
    pub(crate) geo: GeoResolver,
    /// For each `geo.prefer` key, every region in preference order: the
    /// list first, then the rest in config order.
    pub(crate) geo_orders: HashMap<String, Vec<RegionIdx>>,
    /// Config order, for clients no preference list covers.
    pub(crate) config_order: Vec<RegionIdx>,
    /// Weighted policy: each hash slot's regions in rendezvous order.
    pub(crate) weighted_slots: Vec<[RegionIdx; crate::route::policy::weighted::PER_SLOT]>,
    /// Latency policy: regions by score, best first; refreshed after probes.
    pub(crate) latency_order: ArcSwap<Vec<(RegionIdx, f64)>>,
    /// Partition owners and epochs, resolved to region indices; swapped on promotion.
    pub(crate) owners: ArcSwap<OwnerIndex>,
    /// The partition header, parsed once.
    pub(crate) partition_header: Option<http::HeaderName>,
    /// The default freshness class.
    pub(crate) default_freshness: switchyard_config::FreshnessClass,
    /// Country → residency zone.
    pub(crate) residency: Vec<(crate::route::geo::Code, Arc<str>)>,
    /// The synthetic marker header and its token (from the environment).
    pub(crate) synthetic: Option<SyntheticMarker>,
    /// Signs and verifies read-your-writes tokens.
    pub(crate) ryw: crate::route::ryw::Signer,
    /// `limits.per_client`; kept across reloads while unchanged.
    pub(crate) per_client: Option<Arc<crate::route::ratelimit::PerClientLimit>>,
    /// Per service: whether too few of its regions are healthy, so that its
    /// reads ignore health (panic mode); refreshed after each probe.
    pub(crate) panic: Vec<ServicePanic>,
}

/// One service's panic state.
pub(crate) struct ServicePanic {
    pub(crate) hash: u64,
    pub(crate) name: String,
    pub(crate) on: std::sync::atomic::AtomicBool,
}

/// The secrets a topology needs, read once by the app (from the environment
/// or the state directory) and kept across reloads.
#[derive(Clone)]
pub struct Secrets {
    /// The read-your-writes signing key.
    pub ryw_key: Arc<[u8]>,
    /// The synthetic marker's token; `None`: no request counts as synthetic.
    pub synthetic_token: Option<Arc<str>>,
}

impl Secrets {
    /// Fixed secrets, for tests and benches.
    pub fn fixed(ryw_key: &[u8]) -> Self {
        Secrets {
            ryw_key: Arc::from(ryw_key),
            synthetic_token: None,
        }
    }
}

/// The synthetic traffic marker: a header carrying a shared token.
pub(crate) struct SyntheticMarker {
    pub(crate) header: http::HeaderName,
    /// `None` when the token variable is unset: no request counts as synthetic.
    pub(crate) token: Option<Arc<str>>,
}

/// Hash of a service name, as regions store it.
pub(crate) fn service_hash(name: &str) -> u64 {
    xxh3_64(name.as_bytes())
}

impl Topology {
    /// Builds a generation from `config`, keeping the live state of regions and
    /// endpoints that `previous` already had.
    pub fn build(
        config: Arc<Config>,
        previous: Option<&Topology>,
        secrets: &Secrets,
    ) -> anyhow::Result<Topology> {
        let geo = GeoResolver::from_config(&config.routing.geo)?;
        let mut regions = Vec::with_capacity(config.regions.len());
        for spec in &config.regions {
            let old = previous.and_then(|p| p.region(spec.name.as_str()));
            let live = match old {
                Some(o) => {
                    if o.spec.dial != spec.dial {
                        o.live.set_dial(spec.dial);
                    }
                    o.live.clone()
                }
                None => Arc::new(RegionLive::new(spec.dial)),
            };
            crate::route::concurrency::configure(&live, spec.concurrency);
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
                inv_weight: match config.routing.weight(&spec.name) {
                    0 => 0.0,
                    w => 1.0 / f64::from(w),
                },
                serves: spec.services.iter().map(|s| service_hash(s)).collect(),
                metrics: crate::metrics::RegionMetrics::new(&spec.name),
                // Region names are validated as [A-Za-z0-9_-]+, always a valid value.
                header_value: http::HeaderValue::from_str(spec.name.as_str())?,
                rate: spec.rate_limit.map(|limit| {
                    old.and_then(|o| o.rate.clone())
                        .filter(|b| b.limit == limit)
                        .unwrap_or_else(|| Arc::new(TokenBucket::new(limit)))
                }),
                transport: crate::route::upstream::Transport::load(spec)?
                    .keeping_header_case(config.listen.preserve_header_case),
            });
        }
        let index = |name: &str| {
            config
                .regions
                .iter()
                .position(|r| r.name.as_str() == name)
                .map(|i| i as RegionIdx)
        };
        let prefer: HashMap<String, Vec<RegionIdx>> = config
            .routing
            .geo
            .prefer
            .iter()
            .map(|(k, list)| {
                (
                    k.clone(),
                    list.iter().filter_map(|r| index(r.as_str())).collect(),
                )
            })
            .collect();
        let geo_orders = prefer
            .iter()
            .map(|(k, list)| {
                (
                    k.clone(),
                    crate::route::policy::geo::full_order(list, regions.len()),
                )
            })
            .collect();
        let config_order = (0..regions.len() as RegionIdx).collect();
        let weighted_slots = if config.routing.policy == switchyard_config::Policy::Weighted {
            crate::route::policy::weighted::slots(&regions)
        } else {
            Vec::new()
        };
        let latency_order = ArcSwap::from_pointee(crate::route::policy::latency::order(&regions));
        // Endpoints a reload dropped stop their health and DNS tasks.
        if let Some(prev) = previous {
            for e in prev
                .regions
                .iter()
                .flat_map(|r| r.endpoints.endpoints.iter())
            {
                let kept = regions
                    .iter()
                    .any(|r| r.endpoints.endpoints.iter().any(|x| Arc::ptr_eq(x, e)));
                if !kept {
                    e.retired.store(true, Ordering::Relaxed);
                }
            }
        }
        let partition_header = config
            .consistency
            .partition
            .header
            .as_deref()
            .map(http::HeaderName::try_from)
            .transpose()
            .map_err(|_| {
                anyhow::anyhow!("consistency.partition.header is not a valid header name")
            })?;
        let default_freshness = config
            .consistency
            .classes
            .get(&config.consistency.default_class)
            .copied()
            .unwrap_or(switchyard_config::FreshnessClass::bounded(
                std::time::Duration::from_secs(2),
            ));
        let residency = config
            .routing
            .residency
            .iter()
            .filter_map(|(country, zone)| {
                crate::route::geo::Code::parse(country).map(|c| (c, Arc::from(zone.as_str())))
            })
            .collect();
        let synthetic = match &config.synthetic {
            None => None,
            Some(m) => Some(SyntheticMarker {
                header: http::HeaderName::try_from(m.header.as_str())
                    .map_err(|_| anyhow::anyhow!("synthetic.header is not a valid header name"))?,
                token: secrets.synthetic_token.clone(),
            }),
        };
        let per_client = config.limits.per_client.as_ref().map(|spec| {
            previous
                .and_then(|p| p.per_client.clone())
                .filter(|l| l.spec == *spec)
                .unwrap_or_else(|| Arc::new(crate::route::ratelimit::PerClientLimit::new(spec)))
        });
        let mut services: Vec<&str> = config
            .regions
            .iter()
            .flat_map(|r| r.services.iter().map(String::as_str))
            .collect();
        services.sort_unstable();
        services.dedup();
        let panic = services
            .into_iter()
            .map(|name| ServicePanic {
                hash: service_hash(name),
                name: name.to_string(),
                on: std::sync::atomic::AtomicBool::new(false),
            })
            .collect();
        let topo = Topology {
            panic,
            per_client,
            ryw: crate::route::ryw::Signer::new(&secrets.ryw_key),
            synthetic,
            partition_header,
            default_freshness,
            residency,
            config,
            regions,
            geo,
            geo_orders,
            config_order,
            weighted_slots,
            latency_order,
            owners: ArcSwap::from_pointee(OwnerIndex::default()),
        };
        // Until the ownership table is attached: the config's owners at epoch 1.
        let mut seeded = OwnershipTable::default();
        seeded.seed(&topo.config);
        topo.set_owners(&seeded);
        topo.refresh_panic();
        Ok(topo)
    }

    /// Whether `service`'s reads ignore health now.
    #[inline]
    pub(crate) fn in_panic(&self, service_hash: u64) -> bool {
        self.panic
            .iter()
            .any(|p| p.hash == service_hash && p.on.load(Ordering::Relaxed))
    }

    /// Re-judges each service: fewer than `routing.panic_threshold` of the
    /// regions serving it healthy and not ejected puts it in panic mode. An
    /// ejected region counts as down, as an unhealthy one does: ejecting the
    /// last regions of a service that still answer would otherwise refuse
    /// every read until the ejection runs out.
    pub(crate) fn refresh_panic(&self) {
        let threshold = u64::from(self.config.routing.panic_threshold.tenths());
        for p in &self.panic {
            let (mut serving, mut healthy) = (0u64, 0u64);
            for r in self.regions.iter().filter(|r| r.serves_service(p.hash)) {
                serving += 1;
                healthy += u64::from(r.live.is_healthy() && !r.live.is_ejected());
            }
            let on = serving > 0 && healthy * 1000 < serving * threshold;
            if p.on.swap(on, Ordering::Relaxed) != on {
                if on {
                    tracing::warn!(service = %p.name, healthy, serving, "panic mode: too few healthy regions (ejected ones count as down); reads ignore health and ejection");
                } else {
                    tracing::info!(service = %p.name, healthy, serving, "panic mode over");
                }
                crate::metrics::panic_mode(&p.name, on);
            }
        }
    }

    /// As if every region had just been probed: region `i` scores
    /// `latency_secs(i)` and reports no replica lag. For benches and tests
    /// that decide without running health checks.
    pub fn assume_probed(&self, latency_secs: impl Fn(usize) -> f64) {
        for (i, r) in self.regions.iter().enumerate() {
            r.live.latency_score.set(latency_secs(i));
            r.live.lag_ms.store(0, std::sync::atomic::Ordering::Relaxed);
            r.live.lag_reported_at.store(
                crate::route::live::now_nanos().max(1),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        self.refresh_latency_order();
    }

    /// Re-sorts regions by their latency scores (after a probe).
    pub fn refresh_latency_order(&self) {
        self.latency_order
            .store(Arc::new(crate::route::policy::latency::order(
                &self.regions,
            )));
    }

    pub(crate) fn region(&self, name: &str) -> Option<&RegionEntry> {
        self.regions.iter().find(|r| r.spec.name.as_str() == name)
    }

    pub(crate) fn index_of(&self, name: &str) -> Option<RegionIdx> {
        self.regions
            .iter()
            .position(|r| r.spec.name.as_str() == name)
            .map(|i| i as RegionIdx)
    }

    /// The partitions `idx` owns: `default` when it is the default owner, and explicit ones.
    pub(crate) fn owned_partitions(&self, idx: RegionIdx) -> Vec<String> {
        let owners = self.owners.load();
        let mut out: Vec<String> = Vec::new();
        if owners.default.map(|o| o.0) == Some(idx) {
            out.push(crate::route::owners::DEFAULT.to_string());
        }
        let mut named: Vec<String> = owners
            .partitions
            .iter()
            .filter(|(_, o)| o.0 == idx)
            .map(|(p, _)| p.clone())
            .collect();
        named.sort();
        out.extend(named);
        out
    }

    /// Resolves an ownership table against this topology and makes it current.
    pub(crate) fn set_owners(&self, table: &crate::route::owners::OwnershipTable) {
        self.owners
            .store(Arc::new(OwnerIndex::build(table, &|n| self.index_of(n))));
    }

    pub(crate) fn name(&self, idx: RegionIdx) -> &str {
        self.regions[idx as usize].spec.name.as_str()
    }

    /// The owner of a partition: its own entry, else the default owner.
    pub(crate) fn owner_of(&self, partition: Option<&str>) -> Option<RegionIdx> {
        self.owners.load().get(partition).map(|o| o.0)
    }

    /// The ownership entry that decides `partition`'s owner: its own, or `default`.
    pub(crate) fn owner_entry<'p>(&self, partition: &'p str) -> &'p str {
        if self.owners.load().partitions.contains_key(partition) {
            partition
        } else {
            crate::route::owners::DEFAULT
        }
    }

    /// The owner of a partition and the epoch its writes carry.
    pub(crate) fn owner_and_epoch(&self, partition: Option<&str>) -> Option<(RegionIdx, u64)> {
        self.owners.load().get(partition)
    }

    /// Until when (unix ms) a fleet promotion holds `partition`'s writes.
    pub(crate) fn writes_held_until(&self, partition: Option<&str>, now_ms: u64) -> Option<u64> {
        self.owners.load().writes_held_until(partition, now_ms)
    }
}

/// A topology from a config text, for unit tests: every region just probed,
/// with no lag.
#[cfg(test)]
pub(crate) fn for_test(yaml: &str) -> Topology {
    let cfg = switchyard_config::parse_str(yaml, std::path::Path::new("t.yaml")).expect("valid");
    let t = Topology::build(Arc::new(cfg), None, &Secrets::fixed(b"test key")).expect("topology");
    t.assume_probed(|i| 0.010 + i as f64 * 0.001);
    t
}
