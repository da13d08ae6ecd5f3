//! `topologySpreadConstraints`: replicas spread evenly over zones.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::fixture::{SPREAD, cluster};
use crate::util::{IMAGE, apply, node_of, wait_running};

/// The zone label upstream's nodes carry.
const ZONE: &str = "topology.kubernetes.io/zone";

/// How many of `pods` run in each zone, given each node's zone.
fn per_zone(pods: &[Value], zones: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<String, usize> = zones.values().map(|z| (z.clone(), 0)).collect();
    for pod in pods {
        let zone = zones
            .get(node_of(pod))
            .unwrap_or_else(|| panic!("pod on a node outside the group: {}", node_of(pod)));
        *counts.get_mut(zone).expect("every zone is counted") += 1;
    }
    counts
}

#[test]
fn replicas_spread_evenly_over_zones() {
    let c = cluster();
    let ns = c.namespace("spread");
    let ns = ns.name();
    // Two nodes in each of three zones.
    let zones: BTreeMap<String, String> = SPREAD
        .nodes()
        .into_iter()
        .enumerate()
        .map(|(i, node)| (node, format!("spread-{}", ["a", "b", "c"][i / 2])))
        .collect();
    for (node, zone) in &zones {
        c.kubectl_ok(&["label", "node", node, &format!("{ZONE}={zone}")]);
    }

    apply(
        ns,
        &format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: spread}}
spec:
  replicas: 6
  selector: {{matchLabels: {{app: spread}}}}
  template:
    metadata: {{labels: {{app: spread}}}}
    spec:
      nodeSelector: {{{selector}}}
      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: {ZONE}
        whenUnsatisfiable: DoNotSchedule
        labelSelector: {{matchLabels: {{app: spread}}}}
      containers: [{{name: app, image: {IMAGE}}}]
"#,
            selector = SPREAD.selector()
        ),
    );
    let six = wait_running(ns, "app=spread", 6);
    let expected: BTreeMap<String, usize> = ["spread-a", "spread-b", "spread-c"]
        .into_iter()
        .map(|z| (z.to_string(), 2))
        .collect();
    assert_eq!(per_zone(&six, &zones), expected);

    c.kubectl_ok(&["scale", "deployment", "spread", "-n", ns, "--replicas=9"]);
    let nine = wait_running(ns, "app=spread", 9);
    let expected: BTreeMap<String, usize> = expected.into_keys().map(|z| (z, 3)).collect();
    assert_eq!(per_zone(&nine, &zones), expected);
}
