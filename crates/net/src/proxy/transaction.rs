//! `nft -f` scripts that move Skiff's table from one ruleset to another in one transaction.
//!
//! * [`full`]: make the table hold exactly the ruleset, whatever it held before (the kernel's
//!   chain and set names are listed first). Chains and static maps are flushed and refilled
//!   rather than the table being deleted, so live traffic never sees an empty table, and the
//!   ClientIP affinity sets keep their entries (kube-proxy's nftables mode does the same).
//! * [`diff`]: only what changed between the ruleset last applied and the new one: new chains
//!   added, changed chains flushed and refilled, removed chains and sets deleted, map elements
//!   added and deleted one by one.
//!
//! Commands are ordered so that no step refers to something not yet added or deletes something
//! still referenced: declarations, element deletions, flushes, rules, element additions, set
//! deletions, chain deletions (sets first: a map's elements may point at a chain).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::rules::{Chain, Ruleset, TABLE};

/// Names of the chains and sets (maps included) that exist in the kernel's table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableObjects {
    pub chains: BTreeSet<String>,
    pub sets: BTreeSet<String>,
}

fn add_chain(out: &mut String, name: &str, chain: &Chain) {
    match &chain.base {
        Some(base) => {
            let _ = writeln!(out, "add chain {TABLE} {name} {{ {base} }}");
        }
        None => {
            let _ = writeln!(out, "add chain {TABLE} {name}");
        }
    }
}

fn add_rules(out: &mut String, name: &str, chain: &Chain) {
    for rule in &chain.rules {
        let _ = writeln!(out, "add rule {TABLE} {name} {rule}");
    }
}

fn element_text(key: &str, value: &Option<String>) -> String {
    match value {
        Some(v) => format!("{key} : {v}"),
        None => key.to_string(),
    }
}

/// Elements go in batches so no single command line grows without bound.
const ELEMENTS_PER_COMMAND: usize = 1000;

fn elements<'a>(
    out: &mut String,
    verb: &str,
    set: &str,
    items: impl IntoIterator<Item = (&'a String, &'a Option<String>)>,
) {
    let items: Vec<String> = items.into_iter().map(|(k, v)| element_text(k, v)).collect();
    for batch in items.chunks(ELEMENTS_PER_COMMAND) {
        let _ = writeln!(
            out,
            "{verb} element {TABLE} {set} {{ {} }}",
            batch.join(", ")
        );
    }
}

/// The script that makes the table hold exactly `desired`, given what `existing` lists in it
/// now (empty when the table does not exist).
pub fn full(desired: &Ruleset, existing: &TableObjects) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "add table {TABLE}");
    for (name, set) in &desired.sets {
        let _ = writeln!(out, "add {} {TABLE} {name} {{ {} }}", set.keyword, set.body);
    }
    for (name, chain) in &desired.chains {
        add_chain(&mut out, name, chain);
    }
    // Flush every chain that exists, ours now or left over, so no rule refers to a chain or
    // set about to go; then every static set and map. Chains just added are empty already.
    for name in &existing.chains {
        let _ = writeln!(out, "flush chain {TABLE} {name}");
    }
    for (name, set) in &desired.sets {
        if !set.dynamic && existing.sets.contains(name) {
            let _ = writeln!(out, "flush {} {TABLE} {name}", set.keyword);
        }
    }
    for (name, chain) in &desired.chains {
        add_rules(&mut out, name, chain);
    }
    for (set, items) in &desired.elements {
        elements(&mut out, "add", set, items);
    }
    // Sets first: a leftover map's elements may still point at a leftover chain.
    for name in existing
        .sets
        .iter()
        .filter(|n| !desired.sets.contains_key(*n))
    {
        // `delete set` removes maps too.
        let _ = writeln!(out, "delete set {TABLE} {name}");
    }
    for name in existing
        .chains
        .iter()
        .filter(|n| !desired.chains.contains_key(*n))
    {
        let _ = writeln!(out, "delete chain {TABLE} {name}");
    }
    out
}

/// Why a diff cannot be expressed and a full sync is needed instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NeedsFullSync {
    /// A base chain's hook or a set's declaration changed; nftables cannot change either in
    /// place.
    DeclarationChanged(String),
}

/// The script that turns the applied ruleset `old` into `new`; empty when nothing changed.
pub fn diff(old: &Ruleset, new: &Ruleset) -> Result<String, NeedsFullSync> {
    for (name, chain) in &new.chains {
        if let Some(before) = old.chains.get(name)
            && before.base != chain.base
        {
            return Err(NeedsFullSync::DeclarationChanged(format!("chain {name}")));
        }
    }
    for (name, set) in &new.sets {
        if let Some(before) = old.sets.get(name)
            && before != set
        {
            return Err(NeedsFullSync::DeclarationChanged(format!("set {name}")));
        }
    }

    let mut out = String::new();
    for (name, set) in new.sets.iter().filter(|(n, _)| !old.sets.contains_key(*n)) {
        let _ = writeln!(out, "add {} {TABLE} {name} {{ {} }}", set.keyword, set.body);
    }
    for (name, chain) in new
        .chains
        .iter()
        .filter(|(n, _)| !old.chains.contains_key(*n))
    {
        add_chain(&mut out, name, chain);
    }
    let empty = Default::default();
    for (set, old_items) in &old.elements {
        let new_items = new.elements.get(set).unwrap_or(&empty);
        let gone = old_items
            .iter()
            .filter(|(k, v)| new_items.get(*k) != Some(*v));
        elements(&mut out, "delete", set, gone);
    }
    for (name, chain) in &old.chains {
        if new.chains.get(name) != Some(chain) {
            let _ = writeln!(out, "flush chain {TABLE} {name}");
        }
    }
    for (name, chain) in &new.chains {
        if old.chains.get(name) != Some(chain) {
            add_rules(&mut out, name, chain);
        }
    }
    for (set, new_items) in &new.elements {
        let old_items = old.elements.get(set).unwrap_or(&empty);
        let added = new_items
            .iter()
            .filter(|(k, v)| old_items.get(*k) != Some(*v));
        elements(&mut out, "add", set, added);
    }
    for name in old.sets.keys().filter(|n| !new.sets.contains_key(*n)) {
        let _ = writeln!(out, "delete set {TABLE} {name}");
    }
    for name in old.chains.keys().filter(|n| !new.chains.contains_key(*n)) {
        let _ = writeln!(out, "delete chain {TABLE} {name}");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::rules::SetSpec;
    use super::*;

    fn chain(rules: &[&str]) -> Chain {
        Chain {
            base: None,
            rules: rules.iter().map(|r| r.to_string()).collect(),
        }
    }

    fn ruleset(chains: &[(&str, &[&str])], elements: &[(&str, &str)]) -> Ruleset {
        let mut rs = Ruleset::default();
        rs.sets.insert(
            "service-ips".into(),
            SetSpec {
                keyword: "map",
                body: "type ipv4_addr . inet_proto . inet_service : verdict;".into(),
                dynamic: false,
            },
        );
        let map = rs.elements.entry("service-ips".into()).or_default();
        for (k, v) in elements {
            map.insert(k.to_string(), Some(v.to_string()));
        }
        for (name, rules) in chains {
            rs.chains.insert(name.to_string(), chain(rules));
        }
        rs
    }

    #[test]
    fn identical_rulesets_need_no_commands() {
        let a = ruleset(
            &[("svc", &["goto ep"]), ("ep", &["dnat"])],
            &[("k", "goto svc")],
        );
        assert_eq!(diff(&a, &a.clone()), Ok(String::new()));
    }

    #[test]
    fn endpoint_replacement_touches_only_its_service() {
        let old = ruleset(
            &[
                ("svc-a", &["numgen random mod 2 0 goto ep-a1", "goto ep-a2"]),
                ("ep-a1", &["dnat a1"]),
                ("ep-a2", &["dnat a2"]),
                ("svc-b", &["goto ep-b1"]),
                ("ep-b1", &["dnat b1"]),
            ],
            &[("a", "goto svc-a"), ("b", "goto svc-b")],
        );
        let new = ruleset(
            &[
                ("svc-a", &["numgen random mod 2 0 goto ep-a1", "goto ep-a3"]),
                ("ep-a1", &["dnat a1"]),
                ("ep-a3", &["dnat a3"]),
                ("svc-b", &["goto ep-b1"]),
                ("ep-b1", &["dnat b1"]),
            ],
            &[("a", "goto svc-a"), ("b", "goto svc-b")],
        );
        let script = diff(&old, &new).expect("diff");
        assert_eq!(
            script,
            "add chain ip skiff ep-a3\n\
             flush chain ip skiff ep-a2\n\
             flush chain ip skiff svc-a\n\
             add rule ip skiff ep-a3 dnat a3\n\
             add rule ip skiff svc-a numgen random mod 2 0 goto ep-a1\n\
             add rule ip skiff svc-a goto ep-a3\n\
             delete chain ip skiff ep-a2\n"
        );
    }

    #[test]
    fn map_elements_change_one_by_one_and_before_chain_deletion() {
        let old = ruleset(
            &[("svc-a", &["goto x"])],
            &[("a", "goto svc-a"), ("b", "drop")],
        );
        let new = ruleset(&[], &[("b", "goto reject-chain"), ("c", "drop")]);
        let script = diff(&old, &new).expect("diff");
        assert_eq!(
            script,
            "delete element ip skiff service-ips { a : goto svc-a, b : drop }\n\
             flush chain ip skiff svc-a\n\
             add element ip skiff service-ips { b : goto reject-chain, c : drop }\n\
             delete chain ip skiff svc-a\n"
        );
    }

    #[test]
    fn changed_declarations_need_a_full_sync() {
        let old = ruleset(&[], &[]);
        let mut new = old.clone();
        new.sets.get_mut("service-ips").expect("set").body = "type ipv4_addr;".into();
        assert!(matches!(
            diff(&old, &new),
            Err(NeedsFullSync::DeclarationChanged(_))
        ));
        let mut new = old.clone();
        let mut old2 = old.clone();
        old2.chains.insert(
            "nat-output".into(),
            Chain {
                base: Some("type nat hook output priority -100;".into()),
                rules: vec![],
            },
        );
        new.chains.insert(
            "nat-output".into(),
            Chain {
                base: Some("type nat hook output priority -99;".into()),
                rules: vec![],
            },
        );
        assert!(diff(&old2, &new).is_err());
    }

    #[test]
    fn full_sync_flushes_everything_and_deletes_leftovers() {
        let mut desired = ruleset(
            &[("svc", &["goto ep"]), ("ep", &["dnat"])],
            &[("k", "goto svc")],
        );
        desired.sets.insert(
            "affinity-x".into(),
            SetSpec {
                keyword: "set",
                body: "type ipv4_addr; flags dynamic,timeout; timeout 5s;".into(),
                dynamic: true,
            },
        );
        let existing = TableObjects {
            chains: ["svc", "stale"].iter().map(|s| s.to_string()).collect(),
            sets: ["service-ips", "affinity-old"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        let script = full(&desired, &existing);
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(lines[0], "add table ip skiff");
        let pos = |l: &str| {
            lines
                .iter()
                .position(|x| *x == l)
                .unwrap_or_else(|| panic!("missing {l:?} in\n{script}"))
        };
        assert!(pos("flush chain ip skiff stale") < pos("delete chain ip skiff stale"));
        assert!(
            pos("flush map ip skiff service-ips")
                < pos("add element ip skiff service-ips { k : goto svc }")
        );
        assert!(pos("add rule ip skiff svc goto ep") < pos("delete chain ip skiff stale"));
        assert!(pos("delete set ip skiff affinity-old") < pos("delete chain ip skiff stale"));
        assert!(pos("flush chain ip skiff svc") < pos("delete set ip skiff affinity-old"));
        // Affinity state survives a resync.
        assert!(!script.contains("flush set ip skiff affinity-x"));
        assert!(script.contains(
            "add set ip skiff affinity-x { type ipv4_addr; flags dynamic,timeout; timeout 5s; }"
        ));
        // Only chains that exist need a flush.
        assert!(!script.contains("flush chain ip skiff ep\n"));
    }
}
