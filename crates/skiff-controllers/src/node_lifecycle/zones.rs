//! How fast nodes may be given the `NoExecute` taints, per zone: upstream's
//! disruption handling.
//!
//! Tainting a node `NoExecute` starts evicting its pods, so a controller that
//! wrongly believes many nodes dead (because *it* lost the network) could
//! empty a cluster. Upstream guards against that per zone (the
//! `topology.kubernetes.io/region` and `zone` labels; nodes without them
//! share one zone), from the share of its nodes that are not Ready:
//!
//! | zone state | when | tainting rate |
//! |---|---|---|
//! | Normal | otherwise | `eviction_limiter_qps` (0.1 nodes/s) |
//! | PartialDisruption | more than 2 and at least `unhealthy_zone_threshold` (55 %) not Ready | `secondary_eviction_limiter_qps` (0.01/s) if the zone has more than `large_cluster_size_threshold` (50) nodes, else none |
//! | FullDisruption | no node Ready | `eviction_limiter_qps` |
//!
//! and if *every* zone is in FullDisruption, the controller assumes the
//! fault is its own: it stops tainting and removes the `NoExecute` taints it
//! placed. When some node is Ready again, every node's grace period restarts.
//!
//! Each zone's rate is a token bucket of burst 1: the first unhealthy node is
//! tainted at once, the next 10 s later. Nodes labelled
//! `node.kubernetes.io/exclude-disruption` are not counted.
//!
//! Unlike upstream, which queues waiting nodes in order, a node refused a
//! token retries when the next token is due, and whichever waiting node asks
//! first gets it; the rate is the same, the order among waiting nodes is not
//! guaranteed.

use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Node;

/// The label that leaves a node out of the zone counts.
pub const LABEL_EXCLUDE_DISRUPTION: &str = "node.kubernetes.io/exclude-disruption";

/// The rates and thresholds of disruption handling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateConfig {
    /// Nodes tainted per second in a healthy zone.
    pub eviction_limiter_qps: f64,
    /// Nodes tainted per second in a large, partially disrupted zone.
    pub secondary_eviction_limiter_qps: f64,
    /// Zones with more nodes than this are "large".
    pub large_cluster_size_threshold: usize,
    /// The share of not-Ready nodes that makes a zone partially disrupted.
    pub unhealthy_zone_threshold: f64,
}

/// A zone's health, as upstream names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneState {
    /// Few or no unhealthy nodes.
    Normal,
    /// Many unhealthy nodes, some healthy ones.
    PartialDisruption,
    /// No healthy node.
    FullDisruption,
}

/// The zone of a node: region and zone labels (the GA ones, else the beta
/// `failure-domain` ones), empty when it has neither.
pub fn zone_key(node: &Node) -> String {
    let labels = node.metadata.labels.as_ref();
    let label = |ga: &str, beta: &str| {
        labels
            .and_then(|l| l.get(ga).or_else(|| l.get(beta)))
            .cloned()
            .unwrap_or_default()
    };
    let region = label(
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/region",
    );
    let zone = label(
        "topology.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/zone",
    );
    if region.is_empty() && zone.is_empty() {
        String::new()
    } else {
        format!("{region}:\0:{zone}")
    }
}

/// True if the node is left out of the zone counts.
pub fn excluded(node: &Node) -> bool {
    node.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(LABEL_EXCLUDE_DISRUPTION))
}

/// A token bucket of burst 1 over wall time. With a burst of 1 the bucket
/// is full again exactly one interval (1/qps) after a token was taken, so it
/// keeps only that time.
#[derive(Debug, Clone, PartialEq)]
struct TokenBucket {
    qps: f64,
    /// When the next token is due; `None` while the bucket is full.
    next: Option<Timestamp>,
}

impl TokenBucket {
    fn new(qps: f64) -> Self {
        Self { qps, next: None }
    }

    /// Takes a token, or says when the next one is due (`None`: never, at a
    /// rate of zero).
    fn take(&mut self, now: Timestamp) -> Result<(), Option<Timestamp>> {
        if self.qps <= 0.0 {
            return Err(None);
        }
        if let Some(next) = self.next
            && now < next
        {
            return Err(Some(next));
        }
        let interval =
            SignedDuration::try_from_secs_f64(1.0 / self.qps).unwrap_or(SignedDuration::MAX);
        self.next = Some(now.saturating_add(interval).unwrap_or(Timestamp::MAX));
        Ok(())
    }
}

#[derive(Debug)]
struct Zone {
    ready: usize,
    not_ready: usize,
    state: ZoneState,
    limiter: TokenBucket,
}

#[derive(Debug, Clone)]
struct Member {
    zone: String,
    /// `None` if excluded from the counts.
    ready: Option<bool>,
}

/// What changed in the zones after a node's update.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZoneChange {
    /// Some zone's state (and so its tainting rate) changed: nodes waiting
    /// for a token, or tainted under the old state, must be looked at again.
    pub states_changed: bool,
    /// The cluster left full disruption: every node's grace period restarts.
    pub left_full_disruption: bool,
}

/// Every zone's nodes, state and tainting rate.
#[derive(Debug)]
pub struct Zones {
    config: RateConfig,
    members: HashMap<String, Member>,
    zones: HashMap<String, Zone>,
    /// Every zone is fully disrupted: no tainting, taints come off.
    all_disrupted: bool,
}

impl Zones {
    /// No nodes yet.
    pub fn new(config: RateConfig) -> Self {
        Self {
            config,
            members: HashMap::new(),
            zones: HashMap::new(),
            all_disrupted: false,
        }
    }

    /// Every zone is fully disrupted: the controller must not taint and must
    /// remove the `NoExecute` taints it placed.
    pub fn all_disrupted(&self) -> bool {
        self.all_disrupted
    }

    /// The state of `zone`, if it has nodes.
    pub fn state(&self, zone: &str) -> Option<ZoneState> {
        self.zones.get(zone).map(|z| z.state)
    }

    /// Records the node's zone and readiness (`ready: None` for a node left
    /// out of the counts) and recomputes the states.
    pub fn set_node(&mut self, name: &str, zone: String, ready: Option<bool>) -> ZoneChange {
        let member = Member { zone, ready };
        if let Some(old) = self.members.insert(name.to_string(), member.clone()) {
            self.count(&old, false);
        }
        self.count(&member, true);
        self.recompute()
    }

    /// Forgets a deleted node and recomputes the states.
    pub fn remove_node(&mut self, name: &str) -> ZoneChange {
        match self.members.remove(name) {
            Some(old) => {
                self.count(&old, false);
                self.recompute()
            }
            None => ZoneChange::default(),
        }
    }

    /// Takes a tainting token of `zone`, or says when the next is due
    /// (`None`: not until the zone's state changes).
    pub fn take_token(&mut self, zone: &str, now: Timestamp) -> Result<(), Option<Timestamp>> {
        if self.all_disrupted {
            return Err(None);
        }
        match self.zones.get_mut(zone) {
            Some(z) => z.limiter.take(now),
            None => Err(None),
        }
    }

    fn count(&mut self, member: &Member, add: bool) {
        let qps = self.config.eviction_limiter_qps;
        let zone = self
            .zones
            .entry(member.zone.clone())
            .or_insert_with(|| Zone {
                ready: 0,
                not_ready: 0,
                state: ZoneState::Normal,
                limiter: TokenBucket::new(qps),
            });
        let counter = match member.ready {
            Some(true) => &mut zone.ready,
            Some(false) => &mut zone.not_ready,
            None => return,
        };
        if add {
            *counter += 1;
        } else {
            *counter = counter.saturating_sub(1);
        }
    }

    fn zone_state(&self, zone: &Zone) -> ZoneState {
        let total = zone.ready + zone.not_ready;
        if zone.ready == 0 && zone.not_ready > 0 {
            ZoneState::FullDisruption
        } else if zone.not_ready > 2
            && zone.not_ready as f64 / total as f64 >= self.config.unhealthy_zone_threshold
        {
            ZoneState::PartialDisruption
        } else {
            ZoneState::Normal
        }
    }

    fn rate(&self, state: ZoneState, size: usize) -> f64 {
        match state {
            _ if self.all_disrupted => 0.0,
            ZoneState::Normal | ZoneState::FullDisruption => self.config.eviction_limiter_qps,
            ZoneState::PartialDisruption if size > self.config.large_cluster_size_threshold => {
                self.config.secondary_eviction_limiter_qps
            }
            ZoneState::PartialDisruption => 0.0,
        }
    }

    fn recompute(&mut self) -> ZoneChange {
        let occupied: Vec<String> = {
            let mut used: Vec<&String> = self.members.values().map(|m| &m.zone).collect();
            used.sort();
            used.dedup();
            used.into_iter().cloned().collect()
        };
        self.zones.retain(|name, _| occupied.contains(name));
        let states: Vec<(String, ZoneState, usize)> = self
            .zones
            .iter()
            .map(|(name, z)| (name.clone(), self.zone_state(z), z.ready + z.not_ready))
            .collect();
        let counted: Vec<&(String, ZoneState, usize)> =
            states.iter().filter(|(_, _, size)| *size > 0).collect();
        let all_disrupted = !counted.is_empty()
            && counted
                .iter()
                .all(|(_, state, _)| *state == ZoneState::FullDisruption);
        let mut change = ZoneChange {
            states_changed: all_disrupted != self.all_disrupted,
            left_full_disruption: self.all_disrupted && !all_disrupted,
        };
        self.all_disrupted = all_disrupted;
        for (name, state, size) in states {
            let qps = self.rate(state, size);
            let zone = self.zones.get_mut(&name).expect("zone listed above");
            if zone.state != state {
                zone.state = state;
                change.states_changed = true;
            }
            if zone.limiter.qps != qps {
                zone.limiter = TokenBucket::new(qps);
            }
        }
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    const RATES: RateConfig = RateConfig {
        eviction_limiter_qps: 0.1,
        secondary_eviction_limiter_qps: 0.01,
        large_cluster_size_threshold: 50,
        unhealthy_zone_threshold: 0.55,
    };

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn zones(ready: usize, not_ready: usize) -> Zones {
        let mut zones = Zones::new(RATES);
        for i in 0..ready {
            zones.set_node(&format!("r{i}"), String::new(), Some(true));
        }
        for i in 0..not_ready {
            zones.set_node(&format!("n{i}"), String::new(), Some(false));
        }
        zones
    }

    #[test]
    fn the_zone_key_joins_region_and_zone_labels() {
        let labelled = |pairs: &[(&str, &str)]| Node {
            metadata: ObjectMeta {
                labels: Some(
                    pairs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect::<BTreeMap<_, _>>(),
                ),
                ..ObjectMeta::default()
            },
            ..Node::default()
        };
        assert_eq!(zone_key(&labelled(&[])), "");
        assert_eq!(
            zone_key(&labelled(&[
                ("topology.kubernetes.io/region", "eu"),
                ("topology.kubernetes.io/zone", "eu-1"),
            ])),
            "eu:\0:eu-1"
        );
        assert_eq!(
            zone_key(&labelled(&[(
                "failure-domain.beta.kubernetes.io/zone",
                "b"
            )])),
            ":\0:b"
        );
        assert!(excluded(&labelled(&[(LABEL_EXCLUDE_DISRUPTION, "")])));
    }

    #[test]
    fn a_healthy_zone_taints_one_node_at_once_then_one_per_ten_seconds() {
        let mut zones = zones(9, 1);
        assert_eq!(zones.state(""), Some(ZoneState::Normal));
        assert_eq!(zones.take_token("", at(100)), Ok(()));
        assert_eq!(zones.take_token("", at(104)), Err(Some(at(110))));
        assert_eq!(zones.take_token("", at(110)), Ok(()));
        assert_eq!(zones.take_token("", at(111)), Err(Some(at(120))));
    }

    #[test]
    fn a_small_partially_disrupted_zone_stops_tainting_and_a_large_one_slows_down() {
        let mut small = zones(2, 3);
        assert_eq!(small.state(""), Some(ZoneState::PartialDisruption));
        assert_eq!(small.take_token("", at(0)), Err(None));

        let mut large = zones(20, 40);
        assert_eq!(large.state(""), Some(ZoneState::PartialDisruption));
        assert_eq!(large.take_token("", at(0)), Ok(()));
        assert_eq!(large.take_token("", at(1)), Err(Some(at(100))));

        // Two unhealthy nodes are never a disruption, whatever the share.
        assert_eq!(zones(1, 2).state(""), Some(ZoneState::Normal));
    }

    #[test]
    fn when_every_zone_is_down_tainting_stops_until_a_node_is_ready_again() {
        let mut zones = Zones::new(RATES);
        zones.set_node("a", "z1".into(), Some(true));
        zones.set_node("b", "z2".into(), Some(false));
        assert_eq!(zones.state("z2"), Some(ZoneState::FullDisruption));
        assert!(!zones.all_disrupted(), "z1 is still up");
        assert_eq!(zones.take_token("z2", at(0)), Ok(()));

        let change = zones.set_node("a", "z1".into(), Some(false));
        assert!(change.states_changed);
        assert!(zones.all_disrupted());
        assert_eq!(zones.take_token("z2", at(100)), Err(None));

        let change = zones.set_node("b", "z2".into(), Some(true));
        assert_eq!(
            change,
            ZoneChange {
                states_changed: true,
                left_full_disruption: true
            }
        );
        assert_eq!(zones.take_token("z1", at(101)), Ok(()));
    }

    #[test]
    fn excluded_and_deleted_nodes_do_not_count() {
        let mut zones = zones(0, 1);
        assert!(zones.all_disrupted());
        zones.set_node("excluded", String::new(), None);
        assert!(zones.all_disrupted());
        let change = zones.remove_node("n0");
        assert!(change.left_full_disruption);
        assert!(!zones.all_disrupted());
        assert_eq!(zones.state(""), Some(ZoneState::Normal));
        zones.remove_node("excluded");
        assert_eq!(zones.state(""), None);
    }
}
