//! The dependency graph (upstream `graph.go` + the event half of `graph_builder.go`).
//!
//! Nodes are keyed by UID. An observed node mirrors one object seen by a watch; a *virtual*
//! node stands for an owner that some dependent references but no watch has shown yet, with
//! coordinates guessed from the reference (the dependent's namespace). Every change returns the
//! work it implies as [`Effect`]s; the graph itself never talks to the API server, which keeps
//! it pure and unit-testable.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;

use api::catalogue::Resource;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// The finalizer that makes deletion wait for dependents to be orphaned.
pub const ORPHAN_FINALIZER: &str = "orphan";
/// The finalizer that makes deletion wait for blocking dependents to be deleted.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// How many verified-absent owners are remembered (upstream's `absentOwnerCache` holds 500).
const ABSENT_OWNER_CACHE_SIZE: usize = 500;

/// The coordinates of one object: an owner reference plus the namespace it is looked up in
/// (upstream's `objectReference`). `namespace` is empty for cluster-scoped objects; fields are
/// ordered so that sorting follows upstream's `referenceLessThan` closely enough to be stable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectIdentity {
    pub namespace: String,
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

impl ObjectIdentity {
    /// The reference an Event about this object carries.
    pub fn object_reference(&self) -> k8s_openapi::api::core::v1::ObjectReference {
        k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(self.api_version.clone()),
            kind: Some(self.kind.clone()),
            name: Some(self.name.clone()),
            namespace: (!self.namespace.is_empty()).then(|| self.namespace.clone()),
            uid: Some(self.uid.clone()),
            ..Default::default()
        }
    }

    /// The identity an owner reference implies when read from a dependent in `namespace`.
    pub fn of_owner_reference(owner: &OwnerReference, namespace: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            api_version: owner.api_version.clone(),
            kind: owner.kind.clone(),
            name: owner.name.clone(),
            uid: owner.uid.clone(),
        }
    }

    /// The identity of an object seen by the watch of `resource`; `None` without name or UID.
    pub fn observed(resource: &Resource, meta: &ObjectMeta) -> Option<Self> {
        let name = meta.name.clone().filter(|n| !n.is_empty())?;
        let uid = meta.uid.clone().filter(|u| !u.is_empty())?;
        let namespace = if resource.namespaced {
            meta.namespace.clone().unwrap_or_default()
        } else {
            String::new()
        };
        Some(Self {
            namespace,
            api_version: resource.api_version(),
            kind: resource.kind.to_string(),
            name,
            uid,
        })
    }

    /// Upstream `ownerReferenceMatchesCoordinates`: same UID, name, kind and apiVersion.
    fn matches_reference(&self, owner: &OwnerReference) -> bool {
        self.uid == owner.uid
            && self.name == owner.name
            && self.kind == owner.kind
            && self.api_version == owner.api_version
    }
}

/// Formatted like upstream's `objectReference.String()`, which event messages quote.
impl fmt::Display for ObjectIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}/{}, namespace: {}, name: {}, uid: {}]",
            self.api_version, self.kind, self.namespace, self.name, self.uid
        )
    }
}

/// The deletion state of an observed object, kept to detect transitions (the informer's
/// "old object" upstream).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct DeletionState {
    being_deleted: bool,
    orphan_finalizer: bool,
    foreground_finalizer: bool,
}

impl DeletionState {
    fn of(meta: &ObjectMeta) -> Self {
        let has = |f: &str| {
            meta.finalizers
                .as_ref()
                .is_some_and(|fs| fs.iter().any(|x| x == f))
        };
        Self {
            being_deleted: meta.deletion_timestamp.is_some(),
            orphan_finalizer: has(ORPHAN_FINALIZER),
            foreground_finalizer: has(FOREGROUND_FINALIZER),
        }
    }
}

/// One object (or virtual owner) in the graph.
#[derive(Clone, Debug)]
pub struct Node {
    pub identity: ObjectIdentity,
    /// The object's ownerReferences as last observed (empty for virtual nodes).
    pub owners: Vec<OwnerReference>,
    /// UIDs of the nodes whose ownerReferences name this one.
    pub dependents: BTreeSet<String>,
    /// False for a virtual node: referenced by a dependent, not yet seen by a watch.
    pub observed: bool,
    /// The object has a deletionTimestamp.
    pub being_deleted: bool,
    /// The object is being deleted in the foreground and waits for its blocking dependents.
    pub deleting_dependents: bool,
    last: Option<DeletionState>,
}

impl Node {
    fn new(identity: ObjectIdentity, observed: bool) -> Self {
        Self {
            identity,
            owners: Vec::new(),
            dependents: BTreeSet::new(),
            observed,
            being_deleted: false,
            deleting_dependents: false,
            last: None,
        }
    }

    /// True when one of this node's ownerReferences names `owner_uid` with
    /// `blockOwnerDeletion: true`.
    pub fn blocks(&self, owner_uid: &str) -> bool {
        self.owners
            .iter()
            .any(|o| o.uid == owner_uid && o.block_owner_deletion == Some(true))
    }
}

/// Work implied by a graph change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Queue the node for `attemptToDelete` (`rate_limited`: after the item's backoff).
    AttemptToDelete { uid: String, rate_limited: bool },
    /// Queue the node for `attemptToOrphan`.
    AttemptToOrphan { uid: String },
    /// Record the `OwnerRefInvalidNamespace` warning on `dependent`: its reference resolves
    /// to `invalid_owner`, which does not exist in the dependent's namespace.
    InvalidNamespaceOwnerRef {
        dependent: Box<ObjectIdentity>,
        invalid_owner: Box<ObjectIdentity>,
    },
}

fn attempt(uid: &str) -> Effect {
    Effect::AttemptToDelete {
        uid: uid.to_string(),
        rate_limited: false,
    }
}

/// Owners verified absent (upstream's LRU `absentOwnerCache`; evicts the oldest entry).
#[derive(Debug, Default)]
struct AbsentOwnerCache {
    order: VecDeque<ObjectIdentity>,
    set: HashSet<ObjectIdentity>,
}

impl AbsentOwnerCache {
    fn add(&mut self, identity: ObjectIdentity) {
        if self.set.contains(&identity) {
            return;
        }
        if self.order.len() >= ABSENT_OWNER_CACHE_SIZE
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        self.set.insert(identity.clone());
        self.order.push_back(identity);
    }
}

/// The UID-keyed dependency graph.
#[derive(Debug, Default)]
pub struct DependencyGraph {
    nodes: HashMap<String, Node>,
    absent_owners: AbsentOwnerCache,
}

impl DependencyGraph {
    pub fn node(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The dependents of `uid` that exist in the graph, sorted by identity.
    pub fn dependents(&self, uid: &str) -> Vec<Node> {
        let mut deps: Vec<Node> = self
            .nodes
            .get(uid)
            .map(|n| {
                n.dependents
                    .iter()
                    .filter_map(|d| self.nodes.get(d).cloned())
                    .collect()
            })
            .unwrap_or_default();
        deps.sort_by(|a, b| a.identity.cmp(&b.identity));
        deps
    }

    /// Upstream `blockingDependents`: dependents whose reference to `uid` has
    /// `blockOwnerDeletion: true`.
    pub fn blocking_dependents(&self, uid: &str) -> Vec<Node> {
        self.dependents(uid)
            .into_iter()
            .filter(|d| d.blocks(uid))
            .collect()
    }

    pub fn is_absent(&self, identity: &ObjectIdentity) -> bool {
        self.absent_owners.set.contains(identity)
    }

    pub fn mark_absent(&mut self, identity: ObjectIdentity) {
        self.absent_owners.add(identity);
    }

    /// An add or update event from the watch of `resource` (upstream `processGraphChanges`).
    pub fn observe(&mut self, resource: &Resource, meta: &ObjectMeta) -> Vec<Effect> {
        let Some(identity) = ObjectIdentity::observed(resource, meta) else {
            return Vec::new();
        };
        let uid = identity.uid.clone();
        let mut effects = Vec::new();
        let owners = meta.owner_references.clone().unwrap_or_default();
        let state = DeletionState::of(meta);

        // A virtual node is now observed: if dependents guessed its coordinates wrongly (another
        // namespace, kind or name) they must be re-checked. This covers the "bad child, then
        // good parent" order; `add_dependent_to_owners` covers the other one.
        if let Some(existing) = self.nodes.get(&uid)
            && !existing.observed
        {
            if existing.identity != identity {
                let deps = self.dependents(&uid);
                let (_, mismatched) = partition_dependents(&deps, &identity);
                for dep in mismatched {
                    if !identity.namespace.is_empty()
                        && dep.identity.namespace != identity.namespace
                    {
                        effects.push(invalid_namespace_effect(dep, &uid));
                    }
                    effects.push(attempt(&dep.identity.uid));
                }
            }
            if let Some(existing) = self.nodes.get_mut(&uid) {
                existing.identity = identity.clone();
                existing.observed = true;
            }
        }

        let old_state = match self.nodes.get_mut(&uid) {
            None => {
                let mut node = Node::new(identity, true);
                node.owners = owners.clone();
                node.being_deleted = state.being_deleted;
                node.deleting_dependents = state.being_deleted && state.foreground_finalizer;
                node.last = Some(state);
                self.nodes.insert(uid.clone(), node);
                effects.extend(self.add_dependent_to_owners(&uid, &owners));
                None
            }
            Some(existing) => {
                let (added, removed, changed) = references_diffs(&existing.owners, &owners);
                let old_state = existing.last.replace(state);
                if state.being_deleted {
                    existing.being_deleted = true;
                }
                if !added.is_empty() || !removed.is_empty() || !changed.is_empty() {
                    existing.owners = owners;
                    effects.extend(self.unblocked_owners(&removed, &changed));
                    effects.extend(self.add_dependent_to_owners(&uid, &added));
                    self.remove_dependent_from_owners(&uid, &removed);
                }
                old_state
            }
        };
        effects.extend(self.process_transitions(old_state, state, &uid));
        effects
    }

    /// A delete event from the watch of `resource`.
    pub fn observe_deleted(&mut self, resource: &Resource, meta: &ObjectMeta) -> Vec<Effect> {
        match meta.uid.as_deref() {
            Some(uid) if self.nodes.contains_key(uid) => {
                self.remove(uid, ObjectIdentity::observed(resource, meta))
            }
            _ => Vec::new(),
        }
    }

    /// After a (re)list of `resource`: objects the graph saw but the list no longer holds were
    /// deleted while the watch was down (the informer's `DeletedFinalStateUnknown`).
    pub fn relisted(&mut self, resource: &Resource, present: &HashSet<String>) -> Vec<Effect> {
        let api_version = resource.api_version();
        let gone: Vec<String> = self
            .nodes
            .values()
            .filter(|n| {
                n.observed
                    && n.identity.kind == resource.kind
                    && n.identity.api_version == api_version
            })
            .filter(|n| !present.contains(&n.identity.uid))
            .map(|n| n.identity.uid.clone())
            .collect();
        let mut effects = Vec::new();
        for uid in gone {
            let identity = self.nodes.get(&uid).map(|n| n.identity.clone());
            effects.extend(self.remove(&uid, identity));
        }
        effects
    }

    /// A live lookup found no object (or another UID) at `deleted`'s coordinates (upstream's
    /// virtual delete event). Dependents that reference the UID by other coordinates keep the
    /// node alive until those are checked too.
    pub fn virtual_delete(&mut self, deleted: &ObjectIdentity) -> Vec<Effect> {
        let Some(existing) = self.nodes.get(&deleted.uid) else {
            return Vec::new();
        };
        let mut effects = Vec::new();
        let uid = deleted.uid.clone();
        let deps = self.dependents(&uid);
        if !existing.observed {
            let (matching, mismatched) = partition_dependents(&deps, deleted);
            if !mismatched.is_empty() {
                if !matching.is_empty() {
                    self.absent_owners.add(deleted.clone());
                    effects.extend(matching.iter().map(|d| attempt(&d.identity.uid)));
                }
                if existing.identity == *deleted
                    && let Some(replacement) = alternate_owner_identity(&mismatched, deleted)
                    && let Some(node) = self.nodes.get_mut(&uid)
                {
                    node.identity = replacement;
                    effects.push(Effect::AttemptToDelete {
                        uid,
                        rate_limited: true,
                    });
                }
                return effects;
            }
        } else if existing.identity != *deleted {
            // The watch saw the object at other coordinates: only references that named the
            // checked coordinates are dangling.
            let (matching, _) = partition_dependents(&deps, deleted);
            if !matching.is_empty() {
                self.absent_owners.add(deleted.clone());
                effects.extend(matching.iter().map(|d| attempt(&d.identity.uid)));
            }
            return effects;
        }
        effects.extend(self.remove(&uid, Some(deleted.clone())));
        effects
    }

    /// Removes a node: its dependents are re-checked (their owner is gone) and owners waiting
    /// in the foreground are re-checked (one fewer blocking dependent).
    fn remove(&mut self, uid: &str, identity: Option<ObjectIdentity>) -> Vec<Effect> {
        let Some(node) = self.nodes.remove(uid) else {
            return Vec::new();
        };
        let removed_refs: Vec<OwnerReference> = node.owners.clone();
        self.remove_dependent_from_owners(uid, &removed_refs);
        let mut effects = Vec::new();
        if !node.dependents.is_empty() {
            self.absent_owners
                .add(identity.unwrap_or_else(|| node.identity.clone()));
        }
        effects.extend(node.dependents.iter().map(|d| attempt(d)));
        for owner in &node.owners {
            if self
                .nodes
                .get(&owner.uid)
                .is_some_and(|o| o.deleting_dependents)
            {
                effects.push(attempt(&owner.uid));
            }
        }
        effects
    }

    /// Upstream `addDependentToOwners`: links `uid` under each owner, creating virtual owners
    /// (queued so a live lookup confirms them) and flagging references that cannot be right.
    fn add_dependent_to_owners(&mut self, uid: &str, owners: &[OwnerReference]) -> Vec<Effect> {
        let Some(dependent) = self.nodes.get(uid).map(|n| n.identity.clone()) else {
            return Vec::new();
        };
        let mut effects = Vec::new();
        let mut potentially_invalid = false;
        for owner in owners {
            match self.nodes.get_mut(&owner.uid) {
                None => {
                    let mut node = Node::new(
                        ObjectIdentity::of_owner_reference(owner, &dependent.namespace),
                        false,
                    );
                    node.dependents.insert(uid.to_string());
                    self.nodes.insert(owner.uid.clone(), node);
                    effects.push(attempt(&owner.uid));
                }
                Some(owner_node) => {
                    owner_node.dependents.insert(uid.to_string());
                    if potentially_invalid {
                        continue;
                    }
                    let owner_namespaced = !owner_node.identity.namespace.is_empty();
                    if owner_namespaced && owner_node.identity.namespace != dependent.namespace {
                        // A namespaced owner must live in its dependent's namespace; once the
                        // owner has been observed elsewhere this is certainly wrong.
                        if owner_node.observed {
                            effects.push(Effect::InvalidNamespaceOwnerRef {
                                dependent: Box::new(dependent.clone()),
                                invalid_owner: Box::new(ObjectIdentity::of_owner_reference(
                                    owner,
                                    &dependent.namespace,
                                )),
                            });
                        }
                        potentially_invalid = true;
                    } else if !owner_node.identity.matches_reference(owner) {
                        potentially_invalid = true;
                    } else if !owner_namespaced
                        && owner_node.identity.namespace != dependent.namespace
                        && !owner_node.observed
                    {
                        // A virtual cluster-scoped owner may really be a missing object of a
                        // namespaced kind referenced from a cluster-scoped dependent
                        // (kubernetes#98040): verify.
                        potentially_invalid = true;
                    }
                }
            }
        }
        if potentially_invalid {
            effects.push(attempt(uid));
        }
        effects
    }

    fn remove_dependent_from_owners(&mut self, uid: &str, owners: &[OwnerReference]) {
        for owner in owners {
            if let Some(node) = self.nodes.get_mut(&owner.uid) {
                node.dependents.remove(uid);
            }
        }
    }

    /// Upstream `addUnblockedOwnersToDeleteQueue`: an owner waiting in the foreground may be
    /// done once a blocking reference goes away or stops blocking.
    fn unblocked_owners(
        &self,
        removed: &[OwnerReference],
        changed: &[(OwnerReference, OwnerReference)],
    ) -> Vec<Effect> {
        let unblocked = removed
            .iter()
            .filter(|r| r.block_owner_deletion == Some(true))
            .chain(
                changed
                    .iter()
                    .filter(|(old, new)| {
                        old.block_owner_deletion == Some(true)
                            && new.block_owner_deletion != Some(true)
                    })
                    .map(|(old, _)| old),
            );
        unblocked
            .filter(|r| self.nodes.contains_key(&r.uid))
            .map(|r| attempt(&r.uid))
            .collect()
    }

    /// Upstream `processTransitions`: starting to wait for orphaning or for dependents'
    /// deletion queues the work once, when the finalizer first shows on a deleting object.
    fn process_transitions(
        &mut self,
        old: Option<DeletionState>,
        new: DeletionState,
        uid: &str,
    ) -> Vec<Effect> {
        let starts = |has: fn(&DeletionState) -> bool| {
            new.being_deleted && has(&new) && old.is_none_or(|o| !o.being_deleted || !has(&o))
        };
        if starts(|s| s.orphan_finalizer) {
            return vec![Effect::AttemptToOrphan {
                uid: uid.to_string(),
            }];
        }
        if starts(|s| s.foreground_finalizer) {
            let Some(node) = self.nodes.get_mut(uid) else {
                return Vec::new();
            };
            node.deleting_dependents = true;
            let mut effects: Vec<Effect> = node.dependents.iter().map(|d| attempt(d)).collect();
            effects.push(attempt(uid));
            return effects;
        }
        Vec::new()
    }
}

fn invalid_namespace_effect(dep: &Node, owner_uid: &str) -> Effect {
    let reference = dep.owners.iter().find(|o| o.uid == owner_uid);
    let invalid_owner = match reference {
        Some(r) => ObjectIdentity::of_owner_reference(r, &dep.identity.namespace),
        None => ObjectIdentity {
            namespace: dep.identity.namespace.clone(),
            uid: owner_uid.to_string(),
            ..Default::default()
        },
    };
    Effect::InvalidNamespaceOwnerRef {
        dependent: Box::new(dep.identity.clone()),
        invalid_owner: Box::new(invalid_owner),
    }
}

/// Upstream `partitionDependents`: dependents whose reference to `owner.uid` matches the
/// owner's coordinates, and those with a reference that does not (a dependent may be both).
fn partition_dependents<'a>(
    deps: &'a [Node],
    owner: &ObjectIdentity,
) -> (Vec<&'a Node>, Vec<&'a Node>) {
    let owner_namespaced = !owner.namespace.is_empty();
    let mut matching = Vec::new();
    let mut mismatched = Vec::new();
    for dep in deps {
        let (mut found_match, mut found_mismatch) = (false, false);
        if owner_namespaced && owner.namespace != dep.identity.namespace {
            found_mismatch = true;
        } else {
            for reference in dep.owners.iter().filter(|r| r.uid == owner.uid) {
                if owner.matches_reference(reference) {
                    found_match = true;
                } else {
                    found_mismatch = true;
                }
            }
        }
        if found_match {
            matching.push(dep);
        }
        if found_mismatch {
            mismatched.push(dep);
        }
    }
    (matching, mismatched)
}

/// Upstream `getAlternateOwnerIdentity`: the next coordinates (after `absent`, wrapping) by
/// which some dependent references the same UID.
fn alternate_owner_identity(deps: &[&Node], absent: &ObjectIdentity) -> Option<ObjectIdentity> {
    let absent_cluster_scoped = absent.namespace.is_empty();
    let mut seen: BTreeSet<ObjectIdentity> = BTreeSet::new();
    seen.insert(absent.clone());
    let mut first: Option<ObjectIdentity> = None;
    let mut first_after: Option<ObjectIdentity> = None;
    for dep in deps {
        for reference in dep.owners.iter().filter(|r| r.uid == absent.uid) {
            let mut candidate =
                ObjectIdentity::of_owner_reference(reference, &dep.identity.namespace);
            if absent_cluster_scoped
                && candidate.api_version == absent.api_version
                && candidate.kind == absent.kind
            {
                // This apiVersion/kind is known cluster-scoped from the verified identity.
                candidate.namespace.clear();
            }
            if !seen.insert(candidate.clone()) {
                continue;
            }
            if first.is_none() {
                first = Some(candidate.clone());
            }
            if first_after.is_none() && *absent < candidate {
                first_after = Some(candidate);
            }
        }
    }
    first_after.or(first)
}

/// Upstream `referencesDiffs`, keyed by UID: added, removed, and changed (old, new) pairs.
type ReferenceDiff = (
    Vec<OwnerReference>,
    Vec<OwnerReference>,
    Vec<(OwnerReference, OwnerReference)>,
);

fn references_diffs(old: &[OwnerReference], new: &[OwnerReference]) -> ReferenceDiff {
    let old_by_uid: HashMap<&str, &OwnerReference> =
        old.iter().map(|r| (r.uid.as_str(), r)).collect();
    let new_uids: HashSet<&str> = new.iter().map(|r| r.uid.as_str()).collect();
    let mut added = Vec::new();
    let mut changed = Vec::new();
    for r in new {
        match old_by_uid.get(r.uid.as_str()) {
            None => added.push(r.clone()),
            Some(o) if *o != r => changed.push(((*o).clone(), r.clone())),
            Some(_) => {}
        }
    }
    let removed = old
        .iter()
        .filter(|r| !new_uids.contains(r.uid.as_str()))
        .cloned()
        .collect();
    (added, removed, changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::catalogue::find_kind;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn config_maps() -> &'static Resource {
        find_kind("", "v1", "ConfigMap").expect("configmaps served")
    }

    fn namespaces() -> &'static Resource {
        find_kind("", "v1", "Namespace").expect("namespaces served")
    }

    fn reference(kind: &str, name: &str, uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "v1".to_string(),
            kind: kind.to_string(),
            name: name.to_string(),
            uid: uid.to_string(),
            block_owner_deletion: Some(block),
            controller: None,
        }
    }

    fn meta(namespace: &str, name: &str, uid: &str, owners: Vec<OwnerReference>) -> ObjectMeta {
        ObjectMeta {
            namespace: (!namespace.is_empty()).then(|| namespace.to_string()),
            name: Some(name.to_string()),
            uid: Some(uid.to_string()),
            owner_references: (!owners.is_empty()).then_some(owners),
            ..ObjectMeta::default()
        }
    }

    fn deleting(mut m: ObjectMeta, finalizer: &str) -> ObjectMeta {
        m.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        m.finalizers = Some(vec![finalizer.to_string()]);
        m
    }

    fn deletes(effects: &[Effect]) -> Vec<&str> {
        let mut uids: Vec<&str> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::AttemptToDelete { uid, .. } => Some(uid.as_str()),
                _ => None,
            })
            .collect();
        uids.sort_unstable();
        uids
    }

    #[test]
    fn an_unseen_owner_becomes_a_virtual_node_that_is_verified() {
        let mut g = DependencyGraph::default();
        let effects = g.observe(
            config_maps(),
            &meta(
                "ns",
                "dep",
                "d",
                vec![reference("ConfigMap", "owner", "o", true)],
            ),
        );
        assert_eq!(deletes(&effects), vec!["o"]);
        let owner = g.node("o").expect("virtual owner");
        assert!(!owner.observed);
        assert_eq!(owner.identity.namespace, "ns");
        assert!(owner.dependents.contains("d"));
        assert_eq!(g.blocking_dependents("o").len(), 1);

        // Observing the owner makes it real without re-checking matching dependents.
        let effects = g.observe(config_maps(), &meta("ns", "owner", "o", vec![]));
        assert!(effects.is_empty(), "{effects:?}");
        assert!(g.node("o").is_some_and(|n| n.observed));
    }

    #[test]
    fn deleting_an_owner_queues_its_dependents_and_remembers_it_absent() {
        let mut g = DependencyGraph::default();
        g.observe(config_maps(), &meta("ns", "owner", "o", vec![]));
        g.observe(
            config_maps(),
            &meta(
                "ns",
                "dep",
                "d",
                vec![reference("ConfigMap", "owner", "o", true)],
            ),
        );
        let owner_meta = meta("ns", "owner", "o", vec![]);
        let effects = g.observe_deleted(config_maps(), &owner_meta);
        assert_eq!(deletes(&effects), vec!["d"]);
        assert!(g.node("o").is_none());
        let identity = ObjectIdentity::observed(config_maps(), &owner_meta).expect("identity");
        assert!(g.is_absent(&identity));
    }

    #[test]
    fn a_relist_deletes_what_the_watch_missed() {
        let mut g = DependencyGraph::default();
        g.observe(config_maps(), &meta("ns", "owner", "o", vec![]));
        g.observe(config_maps(), &meta("ns", "kept", "k", vec![]));
        g.observe(
            config_maps(),
            &meta(
                "ns",
                "dep",
                "d",
                vec![reference("ConfigMap", "owner", "o", false)],
            ),
        );
        g.observe(namespaces(), &meta("", "ns", "n", vec![]));
        let present: HashSet<String> = ["k", "d"].iter().map(|s| s.to_string()).collect();
        let effects = g.relisted(config_maps(), &present);
        assert_eq!(deletes(&effects), vec!["d"]);
        assert!(g.node("o").is_none());
        assert!(g.node("k").is_some());
        // Another resource's nodes are untouched.
        assert!(g.node("n").is_some());
    }

    #[test]
    fn orphan_and_foreground_transitions_fire_once() {
        let mut g = DependencyGraph::default();
        g.observe(config_maps(), &meta("ns", "owner", "o", vec![]));
        g.observe(
            config_maps(),
            &meta(
                "ns",
                "dep",
                "d",
                vec![reference("ConfigMap", "owner", "o", true)],
            ),
        );
        let orphaning = deleting(meta("ns", "owner", "o", vec![]), ORPHAN_FINALIZER);
        assert_eq!(
            g.observe(config_maps(), &orphaning),
            vec![Effect::AttemptToOrphan {
                uid: "o".to_string()
            }]
        );
        assert!(g.observe(config_maps(), &orphaning).is_empty());

        let mut g = DependencyGraph::default();
        g.observe(config_maps(), &meta("ns", "owner", "o", vec![]));
        g.observe(
            config_maps(),
            &meta(
                "ns",
                "dep",
                "d",
                vec![reference("ConfigMap", "owner", "o", true)],
            ),
        );
        let foreground = deleting(meta("ns", "owner", "o", vec![]), FOREGROUND_FINALIZER);
        assert_eq!(
            deletes(&g.observe(config_maps(), &foreground)),
            vec!["d", "o"]
        );
        assert!(
            g.node("o")
                .is_some_and(|n| n.deleting_dependents && n.being_deleted)
        );
        assert!(g.observe(config_maps(), &foreground).is_empty());
        // The dependent's deletion re-checks the waiting owner.
        let effects = g.observe_deleted(config_maps(), &meta("ns", "dep", "d", vec![]));
        assert_eq!(deletes(&effects), vec!["o"]);
    }

    #[test]
    fn unblocking_a_reference_rechecks_the_waiting_owner() {
        let mut g = DependencyGraph::default();
        g.observe(config_maps(), &meta("ns", "owner", "o", vec![]));
        g.observe(
            config_maps(),
            &meta(
                "ns",
                "dep",
                "d",
                vec![reference("ConfigMap", "owner", "o", true)],
            ),
        );
        let effects = g.observe(
            config_maps(),
            &meta(
                "ns",
                "dep",
                "d",
                vec![reference("ConfigMap", "owner", "o", false)],
            ),
        );
        assert_eq!(deletes(&effects), vec!["o"]);
        assert!(g.blocking_dependents("o").is_empty());
        // Dropping the reference unlinks the dependent.
        g.observe(config_maps(), &meta("ns", "dep", "d", vec![]));
        assert!(g.node("o").is_some_and(|n| n.dependents.is_empty()));
    }

    #[test]
    fn an_owner_seen_in_another_namespace_is_reported_on_the_dependent() {
        // Dependent first: the virtual owner is guessed in the dependent's namespace.
        let mut g = DependencyGraph::default();
        g.observe(
            config_maps(),
            &meta(
                "b",
                "dep",
                "d",
                vec![reference("ConfigMap", "owner", "o", true)],
            ),
        );
        let effects = g.observe(config_maps(), &meta("a", "owner", "o", vec![]));
        assert_eq!(deletes(&effects), vec!["d"]);
        assert!(effects.iter().any(|e| matches!(e,
            Effect::InvalidNamespaceOwnerRef { dependent, invalid_owner }
                if dependent.name == "dep" && invalid_owner.namespace == "b" && invalid_owner.uid == "o")));

        // Owner first: reported as the dependent is added.
        let mut g = DependencyGraph::default();
        g.observe(config_maps(), &meta("a", "owner", "o", vec![]));
        let effects = g.observe(
            config_maps(),
            &meta(
                "b",
                "dep",
                "d",
                vec![reference("ConfigMap", "owner", "o", true)],
            ),
        );
        assert_eq!(deletes(&effects), vec!["d"]);
        assert!(
            effects
                .iter()
                .any(|e| matches!(e, Effect::InvalidNamespaceOwnerRef { .. }))
        );

        // A cluster-scoped owner is fine from any namespace.
        let mut g = DependencyGraph::default();
        g.observe(namespaces(), &meta("", "owner", "o", vec![]));
        let effects = g.observe(
            config_maps(),
            &meta(
                "b",
                "dep",
                "d",
                vec![reference("Namespace", "owner", "o", true)],
            ),
        );
        assert!(effects.is_empty(), "{effects:?}");
    }

    #[test]
    fn a_virtual_delete_keeps_a_node_other_dependents_name_differently() {
        let mut g = DependencyGraph::default();
        let r = reference("Namespace", "owner", "o", false);
        g.observe(config_maps(), &meta("a", "dep-a", "da", vec![r.clone()]));
        g.observe(config_maps(), &meta("b", "dep-b", "db", vec![r]));
        let guessed = g.node("o").expect("virtual").identity.clone();
        assert_eq!(guessed.namespace, "a");
        // Checked at the coordinates from namespace "a": absent. Dependents in "b" reference
        // it by other coordinates, so the node survives under the alternate identity.
        let effects = g.virtual_delete(&guessed);
        assert!(effects.contains(&Effect::AttemptToDelete {
            uid: "da".to_string(),
            rate_limited: false
        }));
        assert!(effects.contains(&Effect::AttemptToDelete {
            uid: "o".to_string(),
            rate_limited: true
        }));
        assert_eq!(g.node("o").expect("kept").identity.namespace, "b");
        assert!(g.is_absent(&guessed));
        // Once the remaining identity is verified absent too, the node goes.
        g.observe_deleted(config_maps(), &meta("a", "dep-a", "da", vec![]));
        let effects = g.virtual_delete(&g.node("o").expect("kept").identity.clone());
        assert_eq!(deletes(&effects), vec!["db"]);
        assert!(g.node("o").is_none());
    }

    #[test]
    fn a_virtual_delete_does_not_remove_an_observed_node_seen_elsewhere() {
        let mut g = DependencyGraph::default();
        g.observe(config_maps(), &meta("a", "owner", "o", vec![]));
        g.observe(
            config_maps(),
            &meta(
                "b",
                "dep",
                "d",
                vec![reference("ConfigMap", "owner", "o", true)],
            ),
        );
        let wrong =
            ObjectIdentity::of_owner_reference(&reference("ConfigMap", "owner", "o", true), "b");
        let effects = g.virtual_delete(&wrong);
        assert_eq!(deletes(&effects), vec!["d"]);
        assert!(g.node("o").is_some_and(|n| n.observed));
    }

    #[test]
    fn the_absent_owner_cache_is_bounded() {
        let mut cache = AbsentOwnerCache::default();
        for i in 0..(ABSENT_OWNER_CACHE_SIZE + 10) {
            cache.add(ObjectIdentity {
                uid: i.to_string(),
                ..ObjectIdentity::default()
            });
        }
        assert_eq!(cache.set.len(), ABSENT_OWNER_CACHE_SIZE);
        assert!(!cache.set.contains(&ObjectIdentity {
            uid: "0".to_string(),
            ..ObjectIdentity::default()
        }));
    }

    #[test]
    fn identities_print_like_upstream() {
        let id =
            ObjectIdentity::of_owner_reference(&reference("ConfigMap", "owner", "o", true), "b");
        assert_eq!(
            id.to_string(),
            "[v1/ConfigMap, namespace: b, name: owner, uid: o]"
        );
    }
}
