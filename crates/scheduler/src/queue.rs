//! The scheduling queue (upstream's `PriorityQueue`), three sub-queues:
//!
//! * activeQ: pods ready to be tried, highest priority first, then the earliest queued;
//! * backoffQ: pods that failed recently and wait out 1 s doubling to 10 s per attempt;
//! * unschedulable: pods no node fits. They leave only when a cluster event that could help
//!   them happens (a node added or changed, an assigned pod deleted …, matched against the
//!   plugins that rejected them), or after five minutes as upstream's safety net. Never by
//!   polling: the loop sleeps until the next backoff expiry or leftover deadline.
//!
//! A pod rejected while a relevant event arrived during its cycle goes to backoffQ rather than
//! unschedulable, as upstream's `moveRequestCycle` does, so the event is not lost.

use std::cmp::Ordering;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::plugins::{Plugin, PluginSet};
use crate::pod_info::{PodInfo, PodKey};

/// Upstream's `DefaultPodInitialBackoffDuration` and `DefaultPodMaxBackoffDuration`.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Upstream's `DefaultPodMaxInUnschedulablePodsDuration`.
pub const MAX_IN_UNSCHEDULABLE: Duration = Duration::from_secs(5 * 60);

/// Something that happened in the cluster that may make unschedulable pods fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterEvent {
    NodeAdd,
    /// A node update, with which plugins' inputs changed.
    NodeUpdate(PluginSet),
    AssignedPodAdd,
    AssignedPodUpdate,
    AssignedPodDelete,
}

impl ClusterEvent {
    /// The plugins whose rejection this event may resolve (upstream's `EventsToRegister`).
    fn plugins(self) -> Option<PluginSet> {
        match self {
            // A new node can fit anyone.
            ClusterEvent::NodeAdd => None,
            ClusterEvent::NodeUpdate(set) => Some(set),
            ClusterEvent::AssignedPodAdd | ClusterEvent::AssignedPodUpdate => {
                Some(PluginSet::of(&[
                    Plugin::InterPodAffinity,
                    Plugin::PodTopologySpread,
                ]))
            }
            ClusterEvent::AssignedPodDelete => Some(PluginSet::of(&[
                Plugin::NodeResourcesFit,
                Plugin::NodePorts,
                Plugin::InterPodAffinity,
                Plugin::PodTopologySpread,
            ])),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Where {
    Active,
    Backoff(Instant),
    Unschedulable(Instant),
    InFlight,
    /// `spec.schedulingGates` not empty: not tried until they are removed.
    Gated,
}

#[derive(Debug)]
struct Entry {
    pod: Arc<PodInfo>,
    at: Where,
    attempts: u32,
    /// When the pod last entered the queue (ordering within a priority).
    timestamp: Instant,
    last_failure: Option<Instant>,
    unschedulable_plugins: PluginSet,
    /// Invalidates stale heap items.
    seq: u64,
}

impl Entry {
    fn backoff_expiry(&self) -> Option<Instant> {
        let last = self.last_failure?;
        let shift = self.attempts.saturating_sub(1).min(16);
        let d = INITIAL_BACKOFF
            .saturating_mul(1u32 << shift)
            .min(MAX_BACKOFF);
        Some(last + d)
    }
}

#[derive(Debug, PartialEq, Eq)]
struct ActiveItem {
    priority: i32,
    timestamp: Instant,
    seq: u64,
    key: PodKey,
}

impl Ord for ActiveItem {
    fn cmp(&self, other: &Self) -> Ordering {
        // Max-heap: higher priority first, then the earlier timestamp.
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.timestamp.cmp(&self.timestamp))
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for ActiveItem {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// How a scheduling attempt ended, for [`SchedulingQueue::done`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Assumed onto a node; the queue forgets the pod.
    Scheduled,
    /// No node fits; these plugins said so.
    Unschedulable(PluginSet),
    /// An error (API failure, binding conflict): retry after backoff.
    Error,
}

/// A popped pod and the cycle it was popped in.
pub struct Popped {
    pub pod: Arc<PodInfo>,
    pub cycle: u64,
    pub attempts: u32,
}

/// A timer item of backoffQ or of the unschedulable leftovers: (due, seq, key).
type Timer = Reverse<(Instant, u64, PodKey)>;

#[derive(Default)]
pub struct SchedulingQueue {
    entries: HashMap<PodKey, Entry>,
    active: BinaryHeap<ActiveItem>,
    /// Backoff expiries and unschedulable leftover deadlines; stale items are skipped by seq.
    timers: BinaryHeap<Timer>,
    unschedulable: HashSet<PodKey>,
    seq: u64,
    scheduling_cycle: u64,
    move_request_cycle: u64,
    in_flight_cycle: HashMap<PodKey, u64>,
}

impl SchedulingQueue {
    fn push_active(&mut self, key: &str, now: Instant) {
        self.seq += 1;
        let seq = self.seq;
        self.unschedulable.remove(key);
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        e.at = Where::Active;
        e.timestamp = now;
        e.seq = seq;
        self.active.push(ActiveItem {
            priority: e.pod.priority,
            timestamp: now,
            seq,
            key: key.to_string(),
        });
    }

    /// A new pending pod.
    pub fn add(&mut self, pod: Arc<PodInfo>, now: Instant) {
        if self.entries.contains_key(&pod.key) {
            self.update(pod, now);
            return;
        }
        let key = pod.key.clone();
        let gated = pod.gated;
        self.entries.insert(
            key.clone(),
            Entry {
                pod,
                at: Where::Gated,
                attempts: 0,
                timestamp: now,
                last_failure: None,
                unschedulable_plugins: PluginSet::default(),
                seq: 0,
            },
        );
        if !gated {
            self.push_active(&key, now);
        }
    }

    /// A pending pod changed: refresh it; a gated pod whose gates are gone, or an unschedulable
    /// pod whose spec changed, is tried again (upstream: `isPodUpdated`).
    pub fn update(&mut self, pod: Arc<PodInfo>, now: Instant) {
        let key = pod.key.clone();
        let Some(e) = self.entries.get_mut(&key) else {
            self.add(pod, now);
            return;
        };
        let spec_changed = e.pod.pod.spec != pod.pod.spec || e.pod.labels != pod.labels;
        let priority_changed = e.pod.priority != pod.priority;
        e.pod = pod;
        match e.at {
            Where::Gated if !e.pod.gated => self.push_active(&key, now),
            Where::Active if priority_changed => self.push_active(&key, now),
            Where::Unschedulable(_) if spec_changed => self.requeue(&key, now),
            _ => {}
        }
    }

    /// The pod was deleted or bound by someone else.
    pub fn delete(&mut self, key: &str) {
        self.entries.remove(key);
        self.unschedulable.remove(key);
        self.in_flight_cycle.remove(key);
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Moves an unschedulable pod to backoffQ if its backoff is still running, else activeQ.
    fn requeue(&mut self, key: &str, now: Instant) {
        let Some(e) = self.entries.get(key) else {
            return;
        };
        match e.backoff_expiry() {
            Some(t) if t > now => self.set_timer(key, Where::Backoff(t)),
            _ => self.push_active(key, now),
        }
    }

    /// Puts the pod in backoffQ or the unschedulable set with its timer.
    fn set_timer(&mut self, key: &str, at: Where) {
        self.seq += 1;
        let seq = self.seq;
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        e.at = at;
        e.seq = seq;
        let due = match at {
            Where::Backoff(t) => {
                self.unschedulable.remove(key);
                t
            }
            Where::Unschedulable(since) => {
                self.unschedulable.insert(key.to_string());
                since + MAX_IN_UNSCHEDULABLE
            }
            _ => return,
        };
        self.timers.push(Reverse((due, seq, key.to_string())));
    }

    /// Takes the next pod to schedule, first moving finished backoffs to activeQ.
    pub fn pop(&mut self, now: Instant) -> Option<Popped> {
        self.flush(now);
        while let Some(item) = self.active.pop() {
            let Some(e) = self.entries.get_mut(&item.key) else {
                continue;
            };
            if e.seq != item.seq || e.at != Where::Active {
                continue;
            }
            e.at = Where::InFlight;
            self.scheduling_cycle += 1;
            self.in_flight_cycle
                .insert(item.key.clone(), self.scheduling_cycle);
            return Some(Popped {
                pod: e.pod.clone(),
                cycle: self.scheduling_cycle,
                attempts: e.attempts,
            });
        }
        None
    }

    /// Reports how the attempt on `key` ended.
    pub fn done(&mut self, key: &str, outcome: Outcome, now: Instant) {
        let cycle = self.in_flight_cycle.remove(key).unwrap_or(0);
        if outcome == Outcome::Scheduled {
            self.delete(key);
            return;
        }
        let move_requested = self.move_request_cycle >= cycle;
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        e.attempts = e.attempts.saturating_add(1);
        e.last_failure = Some(now);
        e.timestamp = now;
        let at = match outcome {
            Outcome::Unschedulable(plugins) if !move_requested => {
                e.unschedulable_plugins = plugins;
                Where::Unschedulable(now)
            }
            _ => Where::Backoff(e.backoff_expiry().unwrap_or(now)),
        };
        self.set_timer(key, at);
    }

    /// A binding failed after the pod left the queue: retry it after backoff.
    pub fn requeue_after_error(&mut self, pod: Arc<PodInfo>, now: Instant) {
        let key = pod.key.clone();
        if !self.entries.contains_key(&key) {
            self.entries.insert(
                key.clone(),
                Entry {
                    pod,
                    at: Where::InFlight,
                    attempts: 0,
                    timestamp: now,
                    last_failure: None,
                    unschedulable_plugins: PluginSet::default(),
                    seq: 0,
                },
            );
        }
        self.done(&key, Outcome::Error, now);
    }

    /// A cluster event: unschedulable pods it may help move on (upstream's
    /// `MoveAllToActiveOrBackoffQueue` with queueing hints reduced to plugin sets).
    pub fn on_event(&mut self, event: ClusterEvent, now: Instant) {
        self.move_request_cycle = self.scheduling_cycle;
        let relevant = event.plugins();
        let keys: Vec<PodKey> = self
            .unschedulable
            .iter()
            .filter_map(|k| self.entries.get_key_value(k))
            .filter(|(_, e)| match relevant {
                None => true,
                Some(set) => {
                    e.unschedulable_plugins.is_empty() || e.unschedulable_plugins.intersects(set)
                }
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.requeue(&k, now);
        }
    }

    /// Moves finished backoffs to activeQ and pods unschedulable for five minutes back too.
    fn flush(&mut self, now: Instant) {
        while let Some(Reverse((due, seq, key))) = self.timers.peek().cloned() {
            if due > now {
                break;
            }
            self.timers.pop();
            let Some(e) = self.entries.get(&key) else {
                continue;
            };
            if e.seq != seq {
                continue;
            }
            match e.at {
                Where::Backoff(_) => self.push_active(&key, now),
                Where::Unschedulable(_) => self.requeue(&key, now),
                _ => {}
            }
        }
    }

    /// When the next pod leaves backoffQ or the unschedulable leftovers: the loop sleeps until
    /// then unless an event wakes it first.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((due, seq, key))) = self.timers.peek() {
            if self.entries.get(key).is_some_and(|e| e.seq == *seq) {
                return Some(*due);
            }
            self.timers.pop();
        }
        None
    }

    /// Whether activeQ has something to pop.
    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }

    /// Pending pods known (all sub-queues), for metrics.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, priority: i32) -> Arc<PodInfo> {
        Arc::new(PodInfo::new(
            Arc::new(serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d"}, "spec": {"containers": []}})).expect("pod")),
            priority,
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn active_orders_by_priority_then_time() {
        let mut q = SchedulingQueue::default();
        let t0 = Instant::now();
        q.add(pod("low", 0), t0);
        q.add(pod("high", 100), t0 + Duration::from_millis(1));
        q.add(pod("low2", 0), t0 + Duration::from_millis(2));
        let now = t0 + Duration::from_millis(3);
        let order: Vec<String> = std::iter::from_fn(|| q.pop(now))
            .map(|p| p.pod.name.clone())
            .collect();
        assert_eq!(order, vec!["high", "low", "low2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn unschedulable_pods_wait_for_a_relevant_event_then_backoff() {
        let mut q = SchedulingQueue::default();
        let t0 = Instant::now();
        q.add(pod("p", 0), t0);
        let p = q.pop(t0).expect("pod");
        q.done(
            &p.pod.key,
            Outcome::Unschedulable(PluginSet::of(&[Plugin::NodeResourcesFit])),
            t0,
        );
        assert!(q.pop(t0 + Duration::from_secs(60)).is_none(), "no polling");
        // An irrelevant event leaves it there.
        q.on_event(ClusterEvent::AssignedPodAdd, t0 + Duration::from_secs(61));
        assert!(q.pop(t0 + Duration::from_secs(61)).is_none());
        // A deleted pod frees resources: it moves (its 1 s backoff is over).
        q.on_event(
            ClusterEvent::AssignedPodDelete,
            t0 + Duration::from_secs(62),
        );
        assert!(q.pop(t0 + Duration::from_secs(62)).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_up_to_ten_seconds() {
        let mut q = SchedulingQueue::default();
        let t0 = Instant::now();
        q.add(pod("p", 0), t0);
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..6 {
            let p = q.pop(now).expect("due");
            q.done(&p.pod.key, Outcome::Error, now);
            let next = q.next_deadline().expect("backoff");
            waits.push((next - now).as_secs());
            assert!(q.pop(next - Duration::from_millis(1)).is_none());
            now = next;
        }
        assert_eq!(waits, vec![1, 2, 4, 8, 10, 10]);
    }

    #[tokio::test(start_paused = true)]
    async fn event_during_the_cycle_sends_the_pod_to_backoff() {
        let mut q = SchedulingQueue::default();
        let t0 = Instant::now();
        q.add(pod("p", 0), t0);
        let p = q.pop(t0).expect("pod");
        q.on_event(ClusterEvent::NodeAdd, t0);
        q.done(
            &p.pod.key,
            Outcome::Unschedulable(PluginSet::of(&[Plugin::NodeResourcesFit])),
            t0,
        );
        assert_eq!(q.next_deadline(), Some(t0 + INITIAL_BACKOFF));
    }

    #[tokio::test(start_paused = true)]
    async fn leftover_flush_after_five_minutes_and_gates() {
        let mut q = SchedulingQueue::default();
        let t0 = Instant::now();
        q.add(pod("p", 0), t0);
        let p = q.pop(t0).expect("pod");
        q.done(
            &p.pod.key,
            Outcome::Unschedulable(PluginSet::of(&[Plugin::NodeAffinity])),
            t0,
        );
        assert_eq!(q.next_deadline(), Some(t0 + MAX_IN_UNSCHEDULABLE));
        assert!(q.pop(t0 + MAX_IN_UNSCHEDULABLE).is_some());

        let gated = Arc::new(PodInfo::new(
            Arc::new(serde_json::from_value(json!({"metadata": {"name": "g", "namespace": "d"}, "spec": {"containers": [], "schedulingGates": [{"name": "x"}]}})).expect("pod")),
            0,
        ));
        q.add(gated, t0);
        assert!(q.pop(t0).is_none());
        q.update(pod("g", 0), t0);
        assert_eq!(q.pop(t0).map(|p| p.pod.name.clone()), Some("g".into()));
    }
}
