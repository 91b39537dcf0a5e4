//! Reading a Deployment's ReplicaSets (upstream deploymentutil and controller_utils): their
//! sizes and counts, the orders upstream sorts them in, which one is the new ReplicaSet, and
//! how a scaling of the Deployment is shared among them.

use std::cmp::Ordering;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;

use super::annotations::{self, POD_TEMPLATE_HASH};
use super::fenceposts::{self, FencepostError, desired_replicas};

/// `spec.replicas` (defaulted to 1 by the API server).
pub(crate) fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// `status.replicas`: the pods the ReplicaSet controller counted.
pub(crate) fn actual_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

pub(crate) fn ready_replicas(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

pub(crate) fn available_replicas(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// Upstream `GetReplicaCountForReplicaSets`: the sum of `spec.replicas`.
pub(crate) fn total_spec<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> i32 {
    rss.into_iter()
        .fold(0i32, |n, rs| n.saturating_add(spec_replicas(rs)))
}

/// Upstream `GetActualReplicaCountForReplicaSets`: the sum of `status.replicas`.
pub(crate) fn total_actual<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> i32 {
    rss.into_iter()
        .fold(0i32, |n, rs| n.saturating_add(actual_replicas(rs)))
}

pub(crate) fn total_ready<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> i32 {
    rss.into_iter()
        .fold(0i32, |n, rs| n.saturating_add(ready_replicas(rs)))
}

pub(crate) fn total_available<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> i32 {
    rss.into_iter()
        .fold(0i32, |n, rs| n.saturating_add(available_replicas(rs)))
}

/// The v1.33 `terminatingReplicas` sum: `None` unless some ReplicaSet reports the field
/// (upstream `GetTerminatingReplicaCountForReplicaSets`).
pub(crate) fn total_terminating<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> Option<i32> {
    rss.into_iter()
        .filter_map(|rs| rs.status.as_ref().and_then(|s| s.terminating_replicas))
        .reduce(i32::saturating_add)
}

/// Upstream `FilterActiveReplicaSets`: the ones with pods wanted.
pub(crate) fn is_active(rs: &ReplicaSet) -> bool {
    spec_replicas(rs) > 0
}

fn created(rs: &ReplicaSet) -> Option<jiff::Timestamp> {
    rs.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

fn name(rs: &ReplicaSet) -> &str {
    rs.metadata.name.as_deref().unwrap_or_default()
}

/// Upstream `ReplicaSetsByCreationTimestamp`: oldest first, then by name.
pub(crate) fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    created(a)
        .cmp(&created(b))
        .then_with(|| name(a).cmp(name(b)))
}

/// Upstream `ReplicaSetsBySizeOlder`: largest first, then oldest.
pub(crate) fn by_size_older(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    spec_replicas(b)
        .cmp(&spec_replicas(a))
        .then_with(|| by_creation(a, b))
}

/// Upstream `ReplicaSetsBySizeNewer`: largest first, then newest.
pub(crate) fn by_size_newer(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    spec_replicas(b)
        .cmp(&spec_replicas(a))
        .then_with(|| by_creation(b, a))
}

/// Upstream `ReplicaSetsByRevision`: lowest revision first (unparsable counts as 0), then by
/// creation.
pub(crate) fn by_revision(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let revision = |rs: &ReplicaSet| annotations::revision(&rs.metadata).unwrap_or(0);
    revision(a)
        .cmp(&revision(b))
        .then_with(|| by_creation(a, b))
}

/// Upstream `EqualIgnoreHash`: the templates are equal once the `pod-template-hash` label is
/// removed from both. This is what makes `kubectl rollout undo` (which patches an old
/// ReplicaSet's template, minus that label, back into the Deployment) reuse the old ReplicaSet.
pub(crate) fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.remove(POD_TEMPLATE_HASH);
        }
        t
    };
    strip(a) == strip(b)
}

fn template_of(rs: &ReplicaSet) -> Option<&PodTemplateSpec> {
    rs.spec.as_ref().and_then(|s| s.template.as_ref())
}

/// Upstream `FindNewReplicaSet`: the oldest ReplicaSet whose template equals the Deployment's
/// (ignoring the hash label). The oldest, because a collision or a slow cache may once have
/// produced two.
pub(crate) fn find_new<'a>(d: &Deployment, rss: &'a [ReplicaSet]) -> Option<&'a ReplicaSet> {
    let template = &d.spec.as_ref()?.template;
    let mut matching: Vec<&ReplicaSet> = rss
        .iter()
        .filter(|rs| template_of(rs).is_some_and(|t| equal_ignore_hash(t, template)))
        .collect();
    matching.sort_by(|a, b| by_creation(a, b));
    matching.first().copied()
}

/// Upstream `FindNewReplicaSet`: every ReplicaSet but the new one.
pub(crate) fn find_old(d: &Deployment, rss: &[ReplicaSet]) -> Vec<ReplicaSet> {
    let new_uid = find_new(d, rss).and_then(|rs| rs.metadata.uid.clone());
    rss.iter()
        .filter(|rs| new_uid.is_none() || rs.metadata.uid != new_uid)
        .cloned()
        .collect()
}

/// Upstream `NewRSNewReplicas`: the size the new ReplicaSet may grow to now. RollingUpdate:
/// up to `replicas + maxSurge` pods in all, never beyond `replicas`; Recreate: `replicas`.
pub(crate) fn new_rs_new_replicas(
    d: &Deployment,
    all: &[&ReplicaSet],
    new_rs: &ReplicaSet,
) -> Result<i32, FencepostError> {
    let desired = desired_replicas(d);
    if !fenceposts::is_rolling_update(d) {
        return Ok(desired);
    }
    let surge = fenceposts::checked_max_surge(d)?;
    let current = total_spec(all.iter().copied());
    let max_total = desired.saturating_add(surge);
    let new_size = spec_replicas(new_rs);
    if current >= max_total {
        return Ok(new_size);
    }
    let scale_up = (max_total - current).min(desired.saturating_sub(new_size));
    Ok(new_size.saturating_add(scale_up))
}

/// Upstream `IsSaturated`: the ReplicaSet is at the Deployment's size, annotated so, and all
/// its pods are available.
pub(crate) fn is_saturated(d: &Deployment, rs: Option<&ReplicaSet>) -> bool {
    let Some(rs) = rs else {
        return false;
    };
    let Some(desired_annotation) = annotations::desired_replicas_annotation(&rs.metadata) else {
        return false;
    };
    let desired = desired_replicas(d);
    spec_replicas(rs) == desired
        && desired_annotation == desired
        && available_replicas(rs) == desired
}

/// Upstream `FindActiveOrLatest`: the only active ReplicaSet; with none active, the new one or
/// else the newest old one; with several active, none.
pub(crate) fn find_active_or_latest<'a>(
    new_rs: Option<&'a ReplicaSet>,
    old: &'a [ReplicaSet],
) -> Option<&'a ReplicaSet> {
    if new_rs.is_none() && old.is_empty() {
        return None;
    }
    let mut active: Vec<&ReplicaSet> = old
        .iter()
        .chain(new_rs)
        .filter(|rs| is_active(rs))
        .collect();
    match active.len() {
        0 => new_rs.or_else(|| old.iter().max_by(|a, b| by_creation(a, b))),
        1 => active.pop(),
        _ => None,
    }
}

/// Upstream `GetProportion`: how many of `to_add` (positive or negative) replicas this
/// ReplicaSet takes, from its share of the size the Deployment had when the ReplicaSets were
/// last annotated (`max-replicas`), without going beyond what is left to share.
pub(crate) fn proportion(d: &Deployment, rs: &ReplicaSet, to_add: i32, added: i32) -> i32 {
    if spec_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = replica_set_fraction(d, rs);
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

/// Upstream `getReplicaSetFraction`: `round(size * (replicas + surge) / max-replicas) - size`,
/// using the Deployment's `status.replicas` where the annotation is missing.
fn replica_set_fraction(d: &Deployment, rs: &ReplicaSet) -> i32 {
    let size = spec_replicas(rs);
    let desired = desired_replicas(d);
    if desired == 0 {
        return -size;
    }
    let deployment_replicas = desired.saturating_add(fenceposts::max_surge(d));
    let annotated = annotations::max_replicas(&rs.metadata)
        .unwrap_or_else(|| d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
    if annotated == 0 {
        // Upstream divides by zero here (an RS created outside the controller while the
        // Deployment reported no replicas); keeping the size is the only sensible share.
        return 0;
    }
    let new_size = (f64::from(size) * f64::from(deployment_replicas)) / f64::from(annotated);
    // Go's math.Round: half away from zero, which f64::round also does.
    (new_size.round() as i32).saturating_sub(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rs(name: &str, replicas: i32, available: i32, created: &str) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": name, "uid": name, "creationTimestamp": created},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web", "pod-template-hash": name}},
                    "spec": {"containers": [{"name": "c", "image": name}]}}},
            "status": {"replicas": replicas, "availableReplicas": available},
        }))
        .expect("rs")
    }

    fn deployment(replicas: i32, image: &str) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": image}]}}},
        }))
        .expect("deployment")
    }

    #[test]
    fn the_new_replica_set_is_found_ignoring_its_hash_label() {
        let rss = vec![
            rs("a", 1, 1, "2024-01-01T00:00:00Z"),
            rs("b", 1, 1, "2024-01-02T00:00:00Z"),
        ];
        let d = deployment(3, "b");
        assert_eq!(
            find_new(&d, &rss).and_then(|r| r.metadata.name.as_deref()),
            Some("b")
        );
        let old = find_old(&d, &rss);
        assert_eq!(old.len(), 1);
        assert_eq!(old[0].metadata.name.as_deref(), Some("a"));
        assert!(find_new(&deployment(3, "c"), &rss).is_none());
        assert_eq!(find_old(&deployment(3, "c"), &rss).len(), 2);
    }

    #[test]
    fn new_replicas_respect_the_surge() {
        let d = deployment(3, "b");
        let old = rs("a", 3, 3, "2024-01-01T00:00:00Z");
        let new = rs("b", 0, 0, "2024-01-02T00:00:00Z");
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), Ok(1));
        let new = rs("b", 1, 1, "2024-01-02T00:00:00Z");
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), Ok(1));
        let old = rs("a", 2, 2, "2024-01-01T00:00:00Z");
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), Ok(2));
    }

    #[test]
    fn sort_orders_match_upstream() {
        let mut rss = [
            rs("old-small", 1, 1, "2024-01-01T00:00:00Z"),
            rs("old-big", 3, 3, "2024-01-01T00:00:00Z"),
            rs("new-big", 3, 3, "2024-01-03T00:00:00Z"),
        ];
        rss.sort_by(by_size_newer);
        let names: Vec<_> = rss.iter().map(name).collect();
        assert_eq!(names, ["new-big", "old-big", "old-small"]);
        rss.sort_by(by_size_older);
        let names: Vec<_> = rss.iter().map(name).collect();
        assert_eq!(names, ["old-big", "new-big", "old-small"]);
    }

    #[test]
    fn active_or_latest() {
        let a = rs("a", 0, 0, "2024-01-01T00:00:00Z");
        let b = rs("b", 0, 0, "2024-01-02T00:00:00Z");
        let old = vec![a.clone(), b.clone()];
        assert_eq!(find_active_or_latest(None, &old).map(name), Some("b"));
        let c = rs("c", 2, 0, "2024-01-03T00:00:00Z");
        assert_eq!(find_active_or_latest(Some(&c), &old).map(name), Some("c"));
        let old = vec![rs("a", 1, 1, "2024-01-01T00:00:00Z"), b];
        assert!(find_active_or_latest(Some(&c), &old).is_none());
    }

    #[test]
    fn proportions_follow_the_max_replicas_annotation() {
        // A Deployment of 10 (surge 1 → 11 allowed) mid-rollout: old 8, new 3, scaled to 20
        // (21 allowed): +10 to share.
        let mut d = deployment(20, "new");
        let mut old = rs("old", 8, 8, "2024-01-01T00:00:00Z");
        let mut new = rs("new", 3, 0, "2024-01-02T00:00:00Z");
        for r in [&mut old, &mut new] {
            annotations::set_replicas_annotations(&mut r.metadata, 10, 11);
        }
        d.status = Some(Default::default());
        // old: round(8 * 21 / 11) - 8 = 15 - 8 = 7; new: round(3 * 21 / 11) - 3 = 6 - 3 = 3.
        assert_eq!(proportion(&d, &old, 10, 0), 7);
        assert_eq!(proportion(&d, &new, 10, 7), 3);
        assert_eq!(proportion(&d, &new, 10, 10), 0);
    }
}
