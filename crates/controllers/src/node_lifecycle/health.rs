//! Pure decisions of the node lifecycle controller, from a Node's current state: whether its
//! kubelet is overdue (conditions to turn Unknown), which taints its conditions call for, and
//! the disruption state of its zone. No I/O here, so each rule is unit-tested as upstream
//! states it.

use k8s_openapi::api::core::v1::{Node, NodeCondition, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
pub const TAINT_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
pub const TAINT_DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
pub const TAINT_PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
pub const TAINT_NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";
/// Set by an administrator on a node known to be shut down; pod GC then force-deletes its
/// terminating pods (KEP-2268, non-graceful node shutdown).
pub const TAINT_OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

pub const NO_SCHEDULE: &str = "NoSchedule";
pub const NO_EXECUTE: &str = "NoExecute";

/// The conditions the kubelet owns and the controller turns Unknown when it falls silent
/// (upstream `nodeConditionTypes`; NetworkUnavailable belongs to the network plugin).
pub const KUBELET_CONDITIONS: [&str; 4] =
    ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// Every NoSchedule taint key TaintNodesByCondition manages; others (user taints) are kept.
const CONDITION_TAINT_KEYS: [&str; 7] = [
    TAINT_NOT_READY,
    TAINT_UNREACHABLE,
    TAINT_UNSCHEDULABLE,
    TAINT_MEMORY_PRESSURE,
    TAINT_DISK_PRESSURE,
    TAINT_PID_PRESSURE,
    TAINT_NETWORK_UNAVAILABLE,
];

/// The Ready condition's status as the controller reads it: True, False, or Unknown (also
/// when the condition is absent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    True,
    False,
    Unknown,
}

impl Readiness {
    pub fn of(node: &Node) -> Readiness {
        match condition(node, "Ready").map(|c| c.status.as_str()) {
            Some("True") => Readiness::True,
            Some("False") => Readiness::False,
            _ => Readiness::Unknown,
        }
    }
}

pub fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// Turns every kubelet-owned condition Unknown, as upstream's `tryUpdateNodeHealth` does once
/// the grace period has passed: a condition the kubelet never posted is added with
/// `NodeStatusNeverUpdated`, one it did post becomes `NodeStatusUnknown` (its heartbeat kept,
/// its transition time now). Returns false when nothing changed (all Unknown already).
pub fn mark_conditions_unknown(node: &mut Node, now: jiff::Timestamp) -> bool {
    let created = node.metadata.creation_timestamp.clone();
    let status = node.status.get_or_insert_with(Default::default);
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let mut changed = false;
    for type_ in KUBELET_CONDITIONS {
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            None => {
                conditions.push(NodeCondition {
                    type_: type_.to_string(),
                    status: "Unknown".to_string(),
                    reason: Some("NodeStatusNeverUpdated".to_string()),
                    message: Some("Kubelet never posted node status.".to_string()),
                    last_heartbeat_time: created.clone(),
                    last_transition_time: Some(Time(now)),
                });
                changed = true;
            }
            Some(c) if c.status != "Unknown" => {
                c.status = "Unknown".to_string();
                c.reason = Some("NodeStatusUnknown".to_string());
                c.message = Some("Kubelet stopped posting node status.".to_string());
                c.last_transition_time = Some(Time(now));
                changed = true;
            }
            Some(_) => {}
        }
    }
    changed
}

/// The NoSchedule taints TaintNodesByCondition wants on `node` (upstream
/// `doNoScheduleTaintingPass`): Ready False/Unknown → not-ready/unreachable, the pressure
/// conditions and NetworkUnavailable when True, and `spec.unschedulable` (cordon).
pub fn condition_taint_keys(node: &Node) -> Vec<&'static str> {
    let mut keys = Vec::new();
    for c in node
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
    {
        let key = match (c.type_.as_str(), c.status.as_str()) {
            ("Ready", "False") => TAINT_NOT_READY,
            ("Ready", "Unknown") => TAINT_UNREACHABLE,
            ("MemoryPressure", "True") => TAINT_MEMORY_PRESSURE,
            ("DiskPressure", "True") => TAINT_DISK_PRESSURE,
            ("PIDPressure", "True") => TAINT_PID_PRESSURE,
            ("NetworkUnavailable", "True") => TAINT_NETWORK_UNAVAILABLE,
            _ => continue,
        };
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        keys.push(TAINT_UNSCHEDULABLE);
    }
    keys
}

/// What the NoExecute pass wants of the controller's NoExecute taints on one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoExecute {
    /// Leave them as they are (e.g. waiting for the zone's rate limiter).
    Keep,
    /// Exactly this one of not-ready/unreachable (the other removed).
    Set(&'static str),
    /// Neither (the node is Ready again, or the cluster is in full disruption).
    Remove,
}

/// The node's taints after applying the condition NoSchedule set and a NoExecute decision,
/// or `None` when they would not change. Taints the controller does not manage are kept in
/// place; kept taints keep their `timeAdded`; new NoExecute taints get `now` (the taint
/// manager counts tolerationSeconds from it).
pub fn desired_taints(
    node: &Node,
    no_execute: NoExecute,
    now: jiff::Timestamp,
) -> Option<Vec<Taint>> {
    let current: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let want_no_schedule = condition_taint_keys(node);
    let managed_no_execute = |t: &Taint| {
        t.effect == NO_EXECUTE && (t.key == TAINT_NOT_READY || t.key == TAINT_UNREACHABLE)
    };
    let mut next: Vec<Taint> = current
        .iter()
        .filter(|t| {
            if t.effect == NO_SCHEDULE && CONDITION_TAINT_KEYS.contains(&t.key.as_str()) {
                return want_no_schedule.contains(&t.key.as_str());
            }
            if managed_no_execute(t) {
                return match no_execute {
                    NoExecute::Keep => true,
                    NoExecute::Set(key) => t.key == key,
                    NoExecute::Remove => false,
                };
            }
            true
        })
        .cloned()
        .collect();
    for key in want_no_schedule {
        if !next.iter().any(|t| t.effect == NO_SCHEDULE && t.key == key) {
            next.push(Taint {
                key: key.to_string(),
                effect: NO_SCHEDULE.to_string(),
                ..Taint::default()
            });
        }
    }
    if let NoExecute::Set(key) = no_execute
        && !next.iter().any(|t| t.effect == NO_EXECUTE && t.key == key)
    {
        next.push(Taint {
            key: key.to_string(),
            effect: NO_EXECUTE.to_string(),
            time_added: Some(Time(now)),
            value: None,
        });
    }
    (next != current).then_some(next)
}

pub fn has_taint(node: &Node, key: &str, effect: &str) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == key && t.effect == effect))
}

/// The zone a node counts in for disruption (upstream `nodetopology.GetZoneKey`: region and
/// zone labels, the GA ones first, then the deprecated failure-domain ones).
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
        return String::new();
    }
    // Upstream joins them with ":\x00:" so no real label values can collide.
    format!("{region}:\x00:{zone}")
}

/// Nodes labelled so are left out of the zone disruption counts (upstream
/// `node.kubernetes.io/exclude-disruption`).
pub fn excluded_from_disruption(node: &Node) -> bool {
    node.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key("node.kubernetes.io/exclude-disruption"))
}

/// A zone's health (upstream `ZoneState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneState {
    /// Evict at the normal rate.
    Normal,
    /// Many nodes down: evict slowly, or not at all in small clusters.
    PartialDisruption,
    /// No node Ready: if every zone is like this the controller assumes its own network is
    /// at fault and stops evicting altogether.
    FullDisruption,
}

/// Upstream `ComputeZoneState`: full disruption when no node is Ready and some are not;
/// partial when more than two are not Ready and they are at least `unhealthy_threshold` of
/// the zone.
pub fn zone_state(ready: usize, not_ready: usize, unhealthy_threshold: f64) -> ZoneState {
    if ready == 0 && not_ready > 0 {
        ZoneState::FullDisruption
    } else if not_ready > 2
        && (not_ready as f64) / ((ready + not_ready) as f64) >= unhealthy_threshold
    {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus};

    fn node(conditions: &[(&str, &str)], unschedulable: bool, taints: Vec<Taint>) -> Node {
        Node {
            spec: Some(NodeSpec {
                unschedulable: unschedulable.then_some(true),
                taints: (!taints.is_empty()).then_some(taints),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(t, s)| NodeCondition {
                            type_: t.to_string(),
                            status: s.to_string(),
                            ..NodeCondition::default()
                        })
                        .collect(),
                ),
                ..NodeStatus::default()
            }),
            ..Node::default()
        }
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            ..Taint::default()
        }
    }

    #[test]
    fn overdue_conditions_become_unknown_and_missing_ones_never_updated() {
        let now = jiff::Timestamp::now();
        let mut n = node(
            &[
                ("Ready", "True"),
                ("MemoryPressure", "False"),
                ("NetworkUnavailable", "False"),
            ],
            false,
            vec![],
        );
        assert!(mark_conditions_unknown(&mut n, now));
        let ready = condition(&n, "Ready").expect("ready");
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            ready.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        let disk = condition(&n, "DiskPressure").expect("added");
        assert_eq!(disk.reason.as_deref(), Some("NodeStatusNeverUpdated"));
        // The network plugin's condition is not the kubelet's.
        assert_eq!(
            condition(&n, "NetworkUnavailable").expect("kept").status,
            "False"
        );
        assert_eq!(Readiness::of(&n), Readiness::Unknown);
        assert!(
            !mark_conditions_unknown(&mut n, now),
            "second pass changes nothing"
        );
    }

    #[test]
    fn conditions_and_cordon_map_to_no_schedule_taints() {
        let n = node(
            &[
                ("Ready", "False"),
                ("DiskPressure", "True"),
                ("PIDPressure", "False"),
            ],
            true,
            vec![],
        );
        assert_eq!(
            condition_taint_keys(&n),
            vec![TAINT_NOT_READY, TAINT_DISK_PRESSURE, TAINT_UNSCHEDULABLE]
        );
        let n = node(&[("Ready", "Unknown")], false, vec![]);
        assert_eq!(condition_taint_keys(&n), vec![TAINT_UNREACHABLE]);
        assert!(condition_taint_keys(&node(&[("Ready", "True")], false, vec![])).is_empty());
    }

    #[test]
    fn desired_taints_keep_user_taints_and_swap_managed_ones() {
        let now = jiff::Timestamp::now();
        let user = taint("dedicated", NO_SCHEDULE);
        let n = node(
            &[("Ready", "Unknown")],
            false,
            vec![
                user.clone(),
                taint(TAINT_NOT_READY, NO_SCHEDULE),
                taint(TAINT_NOT_READY, NO_EXECUTE),
            ],
        );
        let next = desired_taints(&n, NoExecute::Set(TAINT_UNREACHABLE), now).expect("changes");
        let keys: Vec<(&str, &str)> = next
            .iter()
            .map(|t| (t.key.as_str(), t.effect.as_str()))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("dedicated", NO_SCHEDULE),
                (TAINT_UNREACHABLE, NO_SCHEDULE),
                (TAINT_UNREACHABLE, NO_EXECUTE)
            ]
        );
        assert_eq!(next[2].time_added, Some(Time(now)));
        assert!(next[1].time_added.is_none());

        // Keep leaves NoExecute taints alone; nothing else to do means no update.
        let n = node(&[("Ready", "Unknown")], false, next.clone());
        assert_eq!(desired_taints(&n, NoExecute::Keep, now), None);
        assert_eq!(
            desired_taints(&n, NoExecute::Set(TAINT_UNREACHABLE), now),
            None
        );

        // Recovery removes every managed taint but the user's.
        let n = node(&[("Ready", "True")], false, next);
        assert_eq!(desired_taints(&n, NoExecute::Remove, now), Some(vec![user]));
    }

    #[test]
    fn zone_states_follow_upstream_thresholds() {
        assert_eq!(zone_state(0, 1, 0.55), ZoneState::FullDisruption);
        assert_eq!(zone_state(0, 0, 0.55), ZoneState::Normal);
        assert_eq!(zone_state(1, 1, 0.55), ZoneState::Normal);
        assert_eq!(zone_state(2, 2, 0.55), ZoneState::Normal);
        assert_eq!(zone_state(2, 3, 0.55), ZoneState::PartialDisruption);
        assert_eq!(zone_state(3, 3, 0.55), ZoneState::Normal);
    }
}
