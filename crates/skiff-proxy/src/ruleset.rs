//! The proxy's nftables table as data, and the `nft -f` scripts that install
//! it.
//!
//! A [`Ruleset`] is the whole desired table: named verdict maps with their
//! elements, affinity sets, and chains with their rules (rule text is nft
//! syntax). It turns into two kinds of script, each applied as one atomic
//! transaction:
//!
//! - [`Ruleset::full_script`] replaces the table whole (`add table`,
//!   `delete table`, then the definition), so whatever an earlier run left
//!   is gone. It is used for the first sync and after a failure.
//! - [`Ruleset::update_script`] turns the previously applied ruleset into this
//!   one with the fewest commands: new chains and sets are added, changed
//!   chains flushed and refilled, map elements deleted and added one by one,
//!   vanished chains and sets deleted. A one-Service change at 10k Services is
//!   a few commands rather than a 40k-chain reload, and affinity sets keep
//!   their entries. Anything it cannot express (a base chain or a set
//!   definition changed) makes it return `None`, and the caller falls back to
//!   a full replacement.
//!
//! Conntrack keeps established flows' NAT bindings, so neither kind of script
//! disturbs open connections.

use std::collections::BTreeMap;
use std::fmt::Write;

/// A whole nftables table of family `ip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    table: String,
    maps: BTreeMap<String, Map>,
    sets: BTreeMap<String, Set>,
    chains: BTreeMap<String, Chain>,
}

/// A named verdict map: `type KEY : verdict` and its elements (key → verdict).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Map {
    key_type: &'static str,
    elements: BTreeMap<String, String>,
}

/// A set of client addresses the packet path fills (`update @set`), whose
/// entries expire after `timeout` seconds: session affinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Set {
    timeout_secs: u32,
}

/// A base chain's attachment to a netfilter hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hook {
    /// `nat` or `filter`.
    pub kind: &'static str,
    /// `prerouting`, `input`, `forward`, `output` or `postrouting`.
    pub hook: &'static str,
    /// The priority; numeric, as old nft releases accept only `dstnat` names
    /// on some hooks.
    pub priority: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Chain {
    hook: Option<Hook>,
    rules: Vec<String>,
}

impl Ruleset {
    /// An empty table named `table`.
    pub fn new(table: &str) -> Self {
        Self {
            table: table.to_owned(),
            maps: BTreeMap::new(),
            sets: BTreeMap::new(),
            chains: BTreeMap::new(),
        }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Declares a verdict map keyed by `key_type` (no-op if it exists).
    pub fn add_map(&mut self, name: &str, key_type: &'static str) {
        self.maps.entry(name.to_owned()).or_insert_with(|| Map {
            key_type,
            elements: BTreeMap::new(),
        });
    }

    /// Sets `key`'s verdict in map `name` (declared by [`Self::add_map`]).
    ///
    /// # Panics
    /// If the map was not declared: a renderer bug.
    pub fn add_element(&mut self, map: &str, key: String, verdict: String) {
        self.maps
            .get_mut(map)
            .unwrap_or_else(|| panic!("map {map} is not declared"))
            .elements
            .insert(key, verdict);
    }

    /// Declares an affinity set whose entries expire after `timeout_secs`.
    pub fn add_affinity_set(&mut self, name: String, timeout_secs: u32) {
        self.sets.insert(name, Set { timeout_secs });
    }

    /// Declares a base chain attached to `hook`.
    pub fn add_base_chain(&mut self, name: &str, hook: Hook) {
        self.chains.insert(
            name.to_owned(),
            Chain {
                hook: Some(hook),
                rules: Vec::new(),
            },
        );
    }

    /// Declares a regular chain (no-op if it exists).
    pub fn add_chain(&mut self, name: &str) {
        self.chains.entry(name.to_owned()).or_insert_with(|| Chain {
            hook: None,
            rules: Vec::new(),
        });
    }

    /// Appends a rule to chain `name`, declaring the chain if needed.
    pub fn add_rule(&mut self, chain: &str, rule: String) {
        self.add_chain(chain);
        if let Some(chain) = self.chains.get_mut(chain) {
            chain.rules.push(rule);
        }
    }

    /// The rules of chain `name`, if it exists.
    pub fn chain(&self, name: &str) -> Option<&[String]> {
        self.chains.get(name).map(|c| c.rules.as_slice())
    }

    /// The names of all chains.
    pub fn chain_names(&self) -> impl Iterator<Item = &str> {
        self.chains.keys().map(String::as_str)
    }

    /// The elements (key → verdict) of map `name`, if it exists.
    pub fn map(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.maps.get(name).map(|m| &m.elements)
    }

    /// The timeout of affinity set `name`, if it exists.
    pub fn affinity_timeout(&self, name: &str) -> Option<u32> {
        self.sets.get(name).map(|s| s.timeout_secs)
    }

    /// The names of all affinity sets.
    pub fn set_names(&self) -> impl Iterator<Item = &str> {
        self.sets.keys().map(String::as_str)
    }

    /// A script that replaces the table with this ruleset in one transaction.
    pub fn full_script(&self) -> String {
        let table = &self.table;
        let mut out = String::with_capacity(self.size_hint());
        // `add` first so that `delete` never fails on a fresh host.
        let _ = writeln!(out, "add table ip {table}");
        let _ = writeln!(out, "delete table ip {table}");
        let _ = writeln!(out, "table ip {table} {{");
        for (name, map) in &self.maps {
            let _ = writeln!(out, "\tmap {name} {{");
            let _ = writeln!(out, "\t\ttype {} : verdict", map.key_type);
            if !map.elements.is_empty() {
                out.push_str("\t\telements = {\n");
                let mut first = true;
                for (key, verdict) in &map.elements {
                    if !first {
                        out.push_str(",\n");
                    }
                    first = false;
                    let _ = write!(out, "\t\t\t{key} : {verdict}");
                }
                out.push_str("\n\t\t}\n");
            }
            out.push_str("\t}\n");
        }
        for (name, set) in &self.sets {
            let _ = writeln!(out, "\tset {name} {{");
            write_set_body(&mut out, "\t\t", *set);
            out.push_str("\t}\n");
        }
        for (name, chain) in &self.chains {
            let _ = writeln!(out, "\tchain {name} {{");
            if let Some(hook) = chain.hook {
                let _ = writeln!(
                    out,
                    "\t\ttype {} hook {} priority {}; policy accept;",
                    hook.kind, hook.hook, hook.priority
                );
            }
            for rule in &chain.rules {
                let _ = writeln!(out, "\t\t{rule}");
            }
            out.push_str("\t}\n");
        }
        out.push_str("}\n");
        out
    }

    /// A script that turns the table from `applied` into this ruleset, or
    /// `None` if only a full replacement can (the table was renamed, a base
    /// chain, map type or set definition changed). An empty script means
    /// there is nothing to do.
    pub fn update_script(&self, applied: &Ruleset) -> Option<String> {
        if self.table != applied.table {
            return None;
        }
        for (name, chain) in &self.chains {
            let before = applied.chains.get(name).map(|c| c.hook);
            if chain.hook.is_some() && before != Some(chain.hook) {
                return None;
            }
        }
        if applied
            .chains
            .iter()
            .any(|(name, chain)| chain.hook.is_some() && !self.chains.contains_key(name.as_str()))
        {
            return None;
        }
        let maps_compatible = self.maps.len() == applied.maps.len()
            && self.maps.iter().all(|(name, map)| {
                applied
                    .maps
                    .get(name)
                    .is_some_and(|a| a.key_type == map.key_type)
            });
        if !maps_compatible {
            return None;
        }
        if self
            .sets
            .iter()
            .any(|(name, set)| applied.sets.get(name).is_some_and(|before| before != set))
        {
            return None;
        }

        let table = &self.table;
        let mut out = String::new();
        // 1. New chains and sets, so that rules and elements may refer to them.
        for name in self.chains.keys() {
            if !applied.chains.contains_key(name) {
                let _ = writeln!(out, "add chain ip {table} {name}");
            }
        }
        for (name, set) in &self.sets {
            if !applied.sets.contains_key(name) {
                let _ = writeln!(out, "add set ip {table} {name} {{");
                write_set_body(&mut out, "\t", *set);
                out.push_str("}\n");
            }
        }
        // 2. Empty changed and vanished chains, then fill new and changed ones.
        for (name, chain) in &applied.chains {
            if self.chains.get(name).is_none_or(|c| c.rules != chain.rules) {
                let _ = writeln!(out, "flush chain ip {table} {name}");
            }
        }
        for (name, chain) in &self.chains {
            if applied
                .chains
                .get(name)
                .is_none_or(|c| c.rules != chain.rules)
            {
                for rule in &chain.rules {
                    let _ = writeln!(out, "add rule ip {table} {name} {rule}");
                }
            }
        }
        // 3. Map elements: drop vanished and changed keys, add new and changed.
        for (name, map) in &self.maps {
            let before = &applied.maps[name].elements;
            let removed: Vec<&str> = before
                .iter()
                .filter(|(key, verdict)| map.elements.get(*key) != Some(verdict))
                .map(|(key, _)| key.as_str())
                .collect();
            if !removed.is_empty() {
                let _ = writeln!(
                    out,
                    "delete element ip {table} {name} {{ {} }}",
                    removed.join(", ")
                );
            }
            let added: Vec<String> = map
                .elements
                .iter()
                .filter(|(key, verdict)| before.get(*key) != Some(verdict))
                .map(|(key, verdict)| format!("{key} : {verdict}"))
                .collect();
            if !added.is_empty() {
                let _ = writeln!(
                    out,
                    "add element ip {table} {name} {{ {} }}",
                    added.join(", ")
                );
            }
        }
        // 4. Nothing refers to vanished chains and sets any more.
        for name in applied.chains.keys() {
            if !self.chains.contains_key(name) {
                let _ = writeln!(out, "delete chain ip {table} {name}");
            }
        }
        for name in applied.sets.keys() {
            if !self.sets.contains_key(name) {
                let _ = writeln!(out, "delete set ip {table} {name}");
            }
        }
        Some(out)
    }

    fn size_hint(&self) -> usize {
        let rules: usize = self
            .chains
            .iter()
            .map(|(name, c)| name.len() + 16 + c.rules.iter().map(|r| r.len() + 3).sum::<usize>())
            .sum();
        let elements: usize = self
            .maps
            .values()
            .flat_map(|m| &m.elements)
            .map(|(k, v)| k.len() + v.len() + 8)
            .sum();
        rules + elements + self.sets.len() * 96 + 256
    }
}

fn write_set_body(out: &mut String, indent: &str, set: Set) {
    let _ = writeln!(out, "{indent}type ipv4_addr");
    let _ = writeln!(out, "{indent}flags dynamic,timeout");
    let _ = writeln!(out, "{indent}timeout {}s", set.timeout_secs);
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAT_PREROUTING: Hook = Hook {
        kind: "nat",
        hook: "prerouting",
        priority: -100,
    };

    fn base() -> Ruleset {
        let mut r = Ruleset::new("t");
        r.add_base_chain("nat-prerouting", NAT_PREROUTING);
        r.add_rule(
            "nat-prerouting",
            "ip daddr . meta l4proto . th dport vmap @ips".into(),
        );
        r.add_map("ips", "ipv4_addr . inet_proto . inet_service");
        r
    }

    #[test]
    fn full_script_replaces_the_table() {
        let mut r = base();
        r.add_element("ips", "10.43.0.1 . tcp . 80".into(), "goto svc-a".into());
        r.add_element("ips", "10.43.0.2 . udp . 53".into(), "goto svc-a".into());
        r.add_rule("svc-a", "goto ep-a".into());
        r.add_affinity_set("aff-a".into(), 30);
        let text = r.full_script();
        assert!(text.starts_with("add table ip t\ndelete table ip t\ntable ip t {\n"));
        assert!(text.contains(
            "\tmap ips {\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n\t\telements = {\n\t\t\t10.43.0.1 . tcp . 80 : goto svc-a,\n\t\t\t10.43.0.2 . udp . 53 : goto svc-a\n\t\t}\n\t}\n"
        ));
        assert!(text.contains(
            "\tset aff-a {\n\t\ttype ipv4_addr\n\t\tflags dynamic,timeout\n\t\ttimeout 30s\n\t}\n"
        ));
        assert!(text.contains(
            "\tchain nat-prerouting {\n\t\ttype nat hook prerouting priority -100; policy accept;\n\t\tip daddr . meta l4proto . th dport vmap @ips\n\t}\n"
        ));
        assert!(text.contains("\tchain svc-a {\n\t\tgoto ep-a\n\t}\n"));
        assert!(text.ends_with("}\n"));
    }

    #[test]
    fn an_empty_map_has_no_elements_clause() {
        let text = base().full_script();
        assert!(text.contains("\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n\t}\n"));
        assert!(!text.contains("elements"));
    }

    #[test]
    fn update_of_an_identical_ruleset_is_empty() {
        let mut r = base();
        r.add_rule("svc-a", "goto ep-a".into());
        assert_eq!(r.update_script(&r.clone()).as_deref(), Some(""));
    }

    #[test]
    fn update_adds_changes_and_removes_in_a_safe_order() {
        let mut before = base();
        before.add_element("ips", "10.43.0.1 . tcp . 80".into(), "goto svc-a".into());
        before.add_element("ips", "10.43.0.2 . tcp . 80".into(), "goto svc-b".into());
        before.add_rule("svc-a", "goto ep-a1".into());
        before.add_rule("ep-a1", "dnat to 10.42.0.1:80".into());
        before.add_rule("svc-b", "goto ep-b".into());
        before.add_rule("ep-b", "dnat to 10.42.0.2:80".into());
        before.add_affinity_set("aff-b".into(), 10);

        let mut after = base();
        after.add_element("ips", "10.43.0.1 . tcp . 80".into(), "goto svc-a".into());
        after.add_element("ips", "10.43.0.3 . tcp . 80".into(), "goto svc-c".into());
        after.add_rule("svc-a", "goto ep-a2".into());
        after.add_rule("ep-a2", "dnat to 10.42.0.9:80".into());
        after.add_rule("svc-c", "ip saddr @aff-c goto ep-c".into());
        after.add_rule("ep-c", "dnat to 10.42.0.3:80".into());
        after.add_affinity_set("aff-c".into(), 20);

        let script = after.update_script(&before).unwrap();
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(
            lines,
            [
                "add chain ip t ep-a2",
                "add chain ip t ep-c",
                "add chain ip t svc-c",
                "add set ip t aff-c {",
                "\ttype ipv4_addr",
                "\tflags dynamic,timeout",
                "\ttimeout 20s",
                "}",
                "flush chain ip t ep-a1",
                "flush chain ip t ep-b",
                "flush chain ip t svc-a",
                "flush chain ip t svc-b",
                "add rule ip t ep-a2 dnat to 10.42.0.9:80",
                "add rule ip t ep-c dnat to 10.42.0.3:80",
                "add rule ip t svc-a goto ep-a2",
                "add rule ip t svc-c ip saddr @aff-c goto ep-c",
                "delete element ip t ips { 10.43.0.2 . tcp . 80 }",
                "add element ip t ips { 10.43.0.3 . tcp . 80 : goto svc-c }",
                "delete chain ip t ep-a1",
                "delete chain ip t ep-b",
                "delete chain ip t svc-b",
                "delete set ip t aff-b",
            ]
        );
    }

    #[test]
    fn a_changed_verdict_is_deleted_then_added() {
        let mut before = base();
        before.add_element("ips", "10.43.0.1 . tcp . 80".into(), "goto svc-a".into());
        let mut after = base();
        after.add_element("ips", "10.43.0.1 . tcp . 80".into(), "drop".into());
        assert_eq!(
            after.update_script(&before).unwrap(),
            "delete element ip t ips { 10.43.0.1 . tcp . 80 }\n\
             add element ip t ips { 10.43.0.1 . tcp . 80 : drop }\n"
        );
    }

    #[test]
    fn structural_changes_need_a_full_replacement() {
        let before = base();

        let mut renamed = base();
        renamed.table = "u".into();
        assert!(renamed.update_script(&before).is_none());

        let mut rehooked = base();
        rehooked.add_base_chain(
            "nat-prerouting",
            Hook {
                priority: -99,
                ..NAT_PREROUTING
            },
        );
        assert!(rehooked.update_script(&before).is_none());

        let mut unhooked = base();
        unhooked.chains.remove("nat-prerouting");
        assert!(unhooked.update_script(&before).is_none());

        let mut more_maps = base();
        more_maps.add_map("ports", "inet_proto . inet_service");
        assert!(more_maps.update_script(&before).is_none());

        let mut with_set = base();
        with_set.add_affinity_set("aff".into(), 10);
        let mut new_timeout = base();
        new_timeout.add_affinity_set("aff".into(), 20);
        assert!(new_timeout.update_script(&with_set).is_none());
        assert!(with_set.update_script(&before).is_some());
    }
}
