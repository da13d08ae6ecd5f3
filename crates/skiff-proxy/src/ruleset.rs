//! The proxy's nftables table as data, and the `nft -f` scripts that install
//! it.
//!
//! A [`Ruleset`] is the whole desired table: named sets and maps with their
//! elements (verdict maps, data maps, constant sets, and the affinity sets the
//! packet path fills), and chains with their rules (rule text is nft syntax).
//! It turns into two kinds of script, each applied as one atomic transaction:
//!
//! - [`Ruleset::full_script`] replaces the table whole (`add table`,
//!   `delete table`, then the definition), so whatever an earlier run left
//!   is gone. It is used for the first sync and after a failure.
//! - [`Ruleset::update_script`] turns the previously applied ruleset into this
//!   one with the fewest commands: new chains, sets and maps are added,
//!   changed chains flushed and refilled, elements deleted and added one by
//!   one, vanished chains, sets and maps deleted. A one-Service change at 10k
//!   Services is a few commands rather than a reload, and affinity sets keep
//!   their entries. Anything it cannot express (a base chain or a set
//!   declaration changed) makes it return `None`, and the caller falls back to
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
    /// Sets and maps by name (one namespace in nftables).
    sets: BTreeMap<String, Set>,
    chains: BTreeMap<String, Chain>,
}

/// A named set or map: its declaration and its elements.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Set {
    decl: Decl,
    /// Key → value; the value is empty in a set (as opposed to a map).
    elements: BTreeMap<String, String>,
}

/// How a set or map is declared. The kernel cannot change a declaration in
/// place, so a changed one needs a full replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decl {
    /// A map, with its `type`/`typeof` statement (`type K : verdict`).
    Map(&'static str),
    /// A set of constant elements, with its `type`/`typeof` statement.
    Set(&'static str),
    /// A set of client addresses the packet path fills (`update @set`),
    /// whose entries expire after this many seconds: session affinity.
    Affinity(u32),
}

impl Decl {
    fn keyword(self) -> &'static str {
        match self {
            Self::Map(_) => "map",
            Self::Set(_) | Self::Affinity(_) => "set",
        }
    }

    /// Writes the declaration's statements, one per line after `indent`.
    fn write_body(self, out: &mut String, indent: &str) {
        match self {
            Self::Map(spec) | Self::Set(spec) => {
                let _ = writeln!(out, "{indent}{spec}");
            }
            Self::Affinity(timeout) => {
                let _ = writeln!(out, "{indent}type ipv4_addr");
                let _ = writeln!(out, "{indent}flags dynamic,timeout");
                let _ = writeln!(out, "{indent}timeout {timeout}s");
            }
        }
    }
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

/// Appends `key` or `key : value` (for a map) to `out`.
fn write_element(out: &mut String, key: &str, value: &str) {
    out.push_str(key);
    if !value.is_empty() {
        out.push_str(" : ");
        out.push_str(value);
    }
}

impl Ruleset {
    /// An empty table named `table`.
    pub fn new(table: &str) -> Self {
        Self {
            table: table.to_owned(),
            sets: BTreeMap::new(),
            chains: BTreeMap::new(),
        }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Declares a map whose `type`/`typeof` statement is `spec`, such as
    /// `type inet_proto . inet_service : verdict` (no-op if it exists).
    pub fn add_map(&mut self, name: &str, spec: &'static str) {
        self.declare(name, Decl::Map(spec));
    }

    /// Declares a set of constant elements whose `type`/`typeof` statement is
    /// `spec` (no-op if it exists).
    pub fn add_set(&mut self, name: &str, spec: &'static str) {
        self.declare(name, Decl::Set(spec));
    }

    /// Declares an affinity set whose entries expire after `timeout_secs`.
    pub fn add_affinity_set(&mut self, name: String, timeout_secs: u32) {
        self.sets.insert(
            name,
            Set {
                decl: Decl::Affinity(timeout_secs),
                elements: BTreeMap::new(),
            },
        );
    }

    fn declare(&mut self, name: &str, decl: Decl) {
        if !self.sets.contains_key(name) {
            self.sets.insert(
                name.to_owned(),
                Set {
                    decl,
                    elements: BTreeMap::new(),
                },
            );
        }
    }

    /// Sets `key`'s value in map `map` (declared by [`Self::add_map`]).
    ///
    /// # Panics
    /// If the map was not declared: a renderer bug.
    pub fn add_element(&mut self, map: &str, key: String, value: String) {
        self.declared(map, |decl| matches!(decl, Decl::Map(_)))
            .insert(key, value);
    }

    /// Adds `key` to set `set` (declared by [`Self::add_set`]).
    ///
    /// # Panics
    /// If the set was not declared: a renderer bug.
    pub fn add_set_element(&mut self, set: &str, key: String) {
        self.declared(set, |decl| matches!(decl, Decl::Set(_)))
            .insert(key, String::new());
    }

    fn declared(
        &mut self,
        name: &str,
        kind: impl Fn(Decl) -> bool,
    ) -> &mut BTreeMap<String, String> {
        match self.sets.get_mut(name) {
            Some(set) if kind(set.decl) => &mut set.elements,
            _ => panic!("{name} is not declared as this kind of set"),
        }
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
        if !self.chains.contains_key(name) {
            self.chains.insert(
                name.to_owned(),
                Chain {
                    hook: None,
                    rules: Vec::new(),
                },
            );
        }
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

    /// The elements (key → value) of map `name`, if it is a map.
    pub fn map(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.sets
            .get(name)
            .filter(|s| matches!(s.decl, Decl::Map(_)))
            .map(|s| &s.elements)
    }

    /// The elements of the constant set `name`, if it is one.
    pub fn set(&self, name: &str) -> Option<impl Iterator<Item = &str>> {
        self.sets
            .get(name)
            .filter(|s| matches!(s.decl, Decl::Set(_)))
            .map(|s| s.elements.keys().map(String::as_str))
    }

    /// The timeout of affinity set `name`, if it is one.
    pub fn affinity_timeout(&self, name: &str) -> Option<u32> {
        match self.sets.get(name)?.decl {
            Decl::Affinity(timeout) => Some(timeout),
            Decl::Map(_) | Decl::Set(_) => None,
        }
    }

    /// The names of all sets and maps.
    pub fn set_names(&self) -> impl Iterator<Item = &str> {
        self.sets.keys().map(String::as_str)
    }

    /// How many elements the sets and maps hold together (affinity sets'
    /// entries, which the packet path adds, not counted).
    pub fn element_count(&self) -> usize {
        self.sets.values().map(|s| s.elements.len()).sum()
    }

    /// A script that replaces the table with this ruleset in one transaction.
    pub fn full_script(&self) -> String {
        let table = &self.table;
        let mut out = String::with_capacity(self.size_hint());
        // `add` first so that `delete` never fails on a fresh host.
        let _ = writeln!(out, "add table ip {table}");
        let _ = writeln!(out, "delete table ip {table}");
        let _ = writeln!(out, "table ip {table} {{");
        for (name, set) in &self.sets {
            let _ = writeln!(out, "\t{} {name} {{", set.decl.keyword());
            set.decl.write_body(&mut out, "\t\t");
            if !set.elements.is_empty() {
                out.push_str("\t\telements = {\n");
                let mut first = true;
                for (key, value) in &set.elements {
                    if !first {
                        out.push_str(",\n");
                    }
                    first = false;
                    out.push_str("\t\t\t");
                    write_element(&mut out, key, value);
                }
                out.push_str("\n\t\t}\n");
            }
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
    /// chain or a set declaration changed). An empty script means there is
    /// nothing to do.
    pub fn update_script(&self, applied: &Ruleset) -> Option<String> {
        if self.table != applied.table {
            return None;
        }
        let hooks_differ = |a: &BTreeMap<String, Chain>, b: &BTreeMap<String, Chain>| {
            a.iter().any(|(name, chain)| {
                b.get(name)
                    .map_or(chain.hook.is_some(), |other| other.hook != chain.hook)
            })
        };
        if hooks_differ(&self.chains, &applied.chains)
            || hooks_differ(&applied.chains, &self.chains)
        {
            return None;
        }
        if self
            .sets
            .iter()
            .any(|(name, set)| applied.sets.get(name).is_some_and(|a| a.decl != set.decl))
        {
            return None;
        }

        let table = &self.table;
        let mut out = String::new();
        // 1. New chains, sets and maps, so that rules and elements may refer
        //    to them.
        for name in self.chains.keys() {
            if !applied.chains.contains_key(name) {
                let _ = writeln!(out, "add chain ip {table} {name}");
            }
        }
        for (name, set) in &self.sets {
            if !applied.sets.contains_key(name) {
                let _ = writeln!(out, "add {} ip {table} {name} {{", set.decl.keyword());
                set.decl.write_body(&mut out, "\t");
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
        // 3. Elements: drop vanished and changed keys, add new and changed.
        let none = BTreeMap::new();
        for (name, set) in &self.sets {
            let before = applied.sets.get(name).map_or(&none, |a| &a.elements);
            let mut removed = before
                .iter()
                .filter(|(key, value)| set.elements.get(*key) != Some(value))
                .peekable();
            if removed.peek().is_some() {
                let _ = write!(out, "delete element ip {table} {name} {{ ");
                for (i, (key, _)) in removed.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(key);
                }
                out.push_str(" }\n");
            }
            let mut added = set
                .elements
                .iter()
                .filter(|(key, value)| before.get(*key) != Some(value))
                .peekable();
            if added.peek().is_some() {
                let _ = write!(out, "add element ip {table} {name} {{ ");
                for (i, (key, value)) in added.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_element(&mut out, key, value);
                }
                out.push_str(" }\n");
            }
        }
        // 4. Nothing refers to vanished chains, sets and maps any more.
        for name in applied.chains.keys() {
            if !self.chains.contains_key(name) {
                let _ = writeln!(out, "delete chain ip {table} {name}");
            }
        }
        for (name, set) in &applied.sets {
            if !self.sets.contains_key(name) {
                let _ = writeln!(out, "delete {} ip {table} {name}", set.decl.keyword());
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
            .sets
            .iter()
            .map(|(name, s)| {
                name.len()
                    + 96
                    + s.elements
                        .iter()
                        .map(|(k, v)| k.len() + v.len() + 8)
                        .sum::<usize>()
            })
            .sum();
        rules + elements + 256
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAT_PREROUTING: Hook = Hook {
        kind: "nat",
        hook: "prerouting",
        priority: -100,
    };
    const IPS: &str = "type ipv4_addr . inet_proto . inet_service : verdict";
    const ENDPOINTS: &str =
        "typeof ip daddr . meta l4proto . th dport . numgen random mod 1 : ip daddr . th dport";
    const PAIRS: &str = "type ipv4_addr . ipv4_addr";

    fn base() -> Ruleset {
        let mut r = Ruleset::new("t");
        r.add_base_chain("nat-prerouting", NAT_PREROUTING);
        r.add_rule(
            "nat-prerouting",
            "ip daddr . meta l4proto . th dport vmap @ips".into(),
        );
        r.add_map("ips", IPS);
        r
    }

    #[test]
    fn full_script_replaces_the_table() {
        let mut r = base();
        r.add_element("ips", "10.43.0.1 . tcp . 80".into(), "goto svc-a".into());
        r.add_element("ips", "10.43.0.2 . udp . 53".into(), "goto svc-a".into());
        r.add_map("eps", ENDPOINTS);
        r.add_element(
            "eps",
            "10.43.0.1 . tcp . 80 . 0".into(),
            "10.42.0.5 . 8080".into(),
        );
        r.add_set("pairs", PAIRS);
        r.add_set_element("pairs", "10.42.0.5 . 10.42.0.5".into());
        r.add_rule("svc-a", "goto ep-a".into());
        r.add_affinity_set("aff-a".into(), 30);
        let text = r.full_script();
        assert!(text.starts_with("add table ip t\ndelete table ip t\ntable ip t {\n"));
        assert!(text.contains(
            "\tmap ips {\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n\t\telements = {\n\t\t\t10.43.0.1 . tcp . 80 : goto svc-a,\n\t\t\t10.43.0.2 . udp . 53 : goto svc-a\n\t\t}\n\t}\n"
        ));
        assert!(text.contains(&format!(
            "\tmap eps {{\n\t\t{ENDPOINTS}\n\t\telements = {{\n\t\t\t10.43.0.1 . tcp . 80 . 0 : 10.42.0.5 . 8080\n\t\t}}\n\t}}\n"
        )));
        assert!(text.contains(
            "\tset pairs {\n\t\ttype ipv4_addr . ipv4_addr\n\t\telements = {\n\t\t\t10.42.0.5 . 10.42.0.5\n\t\t}\n\t}\n"
        ));
        assert!(text.contains(
            "\tset aff-a {\n\t\ttype ipv4_addr\n\t\tflags dynamic,timeout\n\t\ttimeout 30s\n\t}\n"
        ));
        assert!(text.contains(
            "\tchain nat-prerouting {\n\t\ttype nat hook prerouting priority -100; policy accept;\n\t\tip daddr . meta l4proto . th dport vmap @ips\n\t}\n"
        ));
        assert!(text.contains("\tchain svc-a {\n\t\tgoto ep-a\n\t}\n"));
        assert!(text.ends_with("}\n"));
        assert_eq!(r.element_count(), 4);
    }

    #[test]
    fn an_empty_map_has_no_elements_clause() {
        let text = base().full_script();
        assert!(text.contains("\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n\t}\n"));
        assert!(!text.contains("elements"));
    }

    #[test]
    fn accessors_tell_sets_and_maps_apart() {
        let mut r = base();
        r.add_set("pairs", PAIRS);
        r.add_set_element("pairs", "1.2.3.4 . 1.2.3.4".into());
        r.add_affinity_set("aff".into(), 5);
        assert!(r.map("ips").is_some() && r.map("pairs").is_none());
        assert_eq!(
            r.set("pairs").unwrap().collect::<Vec<_>>(),
            ["1.2.3.4 . 1.2.3.4"]
        );
        assert!(r.set("ips").is_none() && r.set("aff").is_none());
        assert_eq!(
            (r.affinity_timeout("aff"), r.affinity_timeout("pairs")),
            (Some(5), None)
        );
        assert_eq!(r.set_names().collect::<Vec<_>>(), ["aff", "ips", "pairs"]);
    }

    #[test]
    #[should_panic(expected = "pairs is not declared")]
    fn an_element_needs_the_right_kind_of_set() {
        let mut r = base();
        r.add_set("pairs", PAIRS);
        r.add_element("pairs", "1.2.3.4 . 1.2.3.4".into(), "drop".into());
    }

    #[test]
    fn update_of_an_identical_ruleset_is_empty() {
        let mut r = base();
        r.add_rule("svc-a", "goto ep-a".into());
        r.add_set("pairs", PAIRS);
        r.add_set_element("pairs", "1.2.3.4 . 1.2.3.4".into());
        assert_eq!(r.update_script(&r.clone()).as_deref(), Some(""));
    }

    #[test]
    fn update_adds_changes_and_removes_in_a_safe_order() {
        let mut before = base();
        before.add_element("ips", "10.43.0.1 . tcp . 80".into(), "goto svc-a".into());
        before.add_element("ips", "10.43.0.2 . tcp . 80".into(), "goto svc-b".into());
        before.add_element("ips", "10.43.0.4 . tcp . 80".into(), "goto pick-1".into());
        before.add_rule("svc-a", "goto ep-a1".into());
        before.add_rule("ep-a1", "dnat to 10.42.0.1:80".into());
        before.add_rule("svc-b", "goto ep-b".into());
        before.add_rule("ep-b", "dnat to 10.42.0.2:80".into());
        before.add_rule("pick-1", "dnat to ip daddr map @eps-1".into());
        before.add_map("eps-1", ENDPOINTS);
        before.add_element(
            "eps-1",
            "10.43.0.4 . tcp . 80 . 0".into(),
            "10.42.0.4 . 80".into(),
        );
        before.add_set("pairs", PAIRS);
        before.add_set_element("pairs", "10.42.0.1 . 10.42.0.1".into());
        before.add_set_element("pairs", "10.42.0.2 . 10.42.0.2".into());
        before.add_affinity_set("aff-b".into(), 10);

        let mut after = base();
        after.add_element("ips", "10.43.0.1 . tcp . 80".into(), "goto svc-a".into());
        after.add_element("ips", "10.43.0.3 . tcp . 80".into(), "goto svc-c".into());
        after.add_element("ips", "10.43.0.4 . tcp . 80".into(), "goto pick-2".into());
        after.add_rule("svc-a", "goto ep-a2".into());
        after.add_rule("ep-a2", "dnat to 10.42.0.9:80".into());
        after.add_rule("svc-c", "ip saddr @aff-c goto ep-c".into());
        after.add_rule("ep-c", "dnat to 10.42.0.3:80".into());
        after.add_rule("pick-2", "dnat to ip daddr map @eps-2".into());
        after.add_map("eps-2", ENDPOINTS);
        after.add_element(
            "eps-2",
            "10.43.0.4 . tcp . 80 . 0".into(),
            "10.42.0.4 . 80".into(),
        );
        after.add_element(
            "eps-2",
            "10.43.0.4 . tcp . 80 . 1".into(),
            "10.42.0.5 . 80".into(),
        );
        after.add_set("pairs", PAIRS);
        after.add_set_element("pairs", "10.42.0.1 . 10.42.0.1".into());
        after.add_set_element("pairs", "10.42.0.9 . 10.42.0.9".into());
        after.add_affinity_set("aff-c".into(), 20);

        let script = after.update_script(&before).unwrap();
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(
            lines,
            [
                "add chain ip t ep-a2",
                "add chain ip t ep-c",
                "add chain ip t pick-2",
                "add chain ip t svc-c",
                "add set ip t aff-c {",
                "\ttype ipv4_addr",
                "\tflags dynamic,timeout",
                "\ttimeout 20s",
                "}",
                "add map ip t eps-2 {",
                &format!("\t{ENDPOINTS}"),
                "}",
                "flush chain ip t ep-a1",
                "flush chain ip t ep-b",
                "flush chain ip t pick-1",
                "flush chain ip t svc-a",
                "flush chain ip t svc-b",
                "add rule ip t ep-a2 dnat to 10.42.0.9:80",
                "add rule ip t ep-c dnat to 10.42.0.3:80",
                "add rule ip t pick-2 dnat to ip daddr map @eps-2",
                "add rule ip t svc-a goto ep-a2",
                "add rule ip t svc-c ip saddr @aff-c goto ep-c",
                "add element ip t eps-2 { 10.43.0.4 . tcp . 80 . 0 : 10.42.0.4 . 80, 10.43.0.4 . tcp . 80 . 1 : 10.42.0.5 . 80 }",
                "delete element ip t ips { 10.43.0.2 . tcp . 80, 10.43.0.4 . tcp . 80 }",
                "add element ip t ips { 10.43.0.3 . tcp . 80 : goto svc-c, 10.43.0.4 . tcp . 80 : goto pick-2 }",
                "delete element ip t pairs { 10.42.0.2 . 10.42.0.2 }",
                "add element ip t pairs { 10.42.0.9 . 10.42.0.9 }",
                "delete chain ip t ep-a1",
                "delete chain ip t ep-b",
                "delete chain ip t pick-1",
                "delete chain ip t svc-b",
                "delete set ip t aff-b",
                "delete map ip t eps-1",
            ]
        );
    }

    #[test]
    fn a_changed_value_is_deleted_then_added() {
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
        unhooked.add_rule("nat-prerouting", "accept".into());
        assert!(unhooked.update_script(&before).is_none());
        assert!(before.update_script(&unhooked).is_none());

        let mut retyped = Ruleset::new("t");
        retyped.add_base_chain("nat-prerouting", NAT_PREROUTING);
        retyped.add_map("ips", "type ipv4_addr : verdict");
        assert!(retyped.update_script(&before).is_none());
        let mut as_set = Ruleset::new("t");
        as_set.add_base_chain("nat-prerouting", NAT_PREROUTING);
        as_set.add_set("ips", "type ipv4_addr . inet_proto . inet_service");
        assert!(as_set.update_script(&before).is_none());

        let mut with_set = base();
        with_set.add_affinity_set("aff".into(), 10);
        let mut new_timeout = base();
        new_timeout.add_affinity_set("aff".into(), 20);
        assert!(new_timeout.update_script(&with_set).is_none());
        assert!(with_set.update_script(&before).is_some());

        let mut more_maps = base();
        more_maps.add_map("ports", "type inet_proto . inet_service : verdict");
        assert_eq!(
            more_maps.update_script(&before).unwrap(),
            "add map ip t ports {\n\ttype inet_proto . inet_service : verdict\n}\n"
        );
    }
}
