//! Which EndpointSlice writes of this controller the watch has delivered (upstream
//! `EndpointSliceTracker`), so that
//!
//! * the controller's own writes, coming back through the watch, do not trigger a sync
//!   ([`EndpointSliceTracker::should_sync`]), while anyone else's change does;
//! * a sync never plans from a cache that does not yet show its previous writes and deletions
//!   ([`EndpointSliceTracker::stale_slices`]), which would create duplicate slices.
//!
//! Upstream tracks `metadata.generation`; Skiff's API server does not keep a generation for
//! EndpointSlices, so the tracker compares resourceVersions (the store revision, increasing
//! with every write) instead, which orders writes the same way.

use std::collections::HashMap;

use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::LABEL_SERVICE_NAME;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tracked {
    /// The resourceVersion this controller's last write returned.
    Written(String),
    /// This controller deleted the slice.
    DeletionExpected,
}

/// Tracked slices by Service key (`namespace/name`), then by slice UID.
#[derive(Default)]
pub(crate) struct EndpointSliceTracker {
    by_service: HashMap<String, HashMap<String, Tracked>>,
}

fn service_key(slice: &EndpointSlice) -> Option<String> {
    let service = slice.metadata.labels.as_ref()?.get(LABEL_SERVICE_NAME)?;
    Some(format!(
        "{}/{}",
        slice.metadata.namespace.as_deref().unwrap_or_default(),
        service
    ))
}

fn uid(slice: &EndpointSlice) -> String {
    slice.metadata.uid.clone().unwrap_or_default()
}

fn version(slice: &EndpointSlice) -> &str {
    slice
        .metadata
        .resource_version
        .as_deref()
        .unwrap_or_default()
}

/// Whether resourceVersion `a` is newer than `b` (numerically when both are numbers, as the
/// store's revisions are; otherwise any difference counts as newer).
fn newer(a: &str, b: &str) -> bool {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(a), Ok(b)) => a > b,
        _ => a != b,
    }
}

/// Whether `a` is older than `b` (only decidable for numeric versions).
fn older(a: &str, b: &str) -> bool {
    matches!((a.parse::<u64>(), b.parse::<u64>()), (Ok(a), Ok(b)) if a < b)
}

impl EndpointSliceTracker {
    /// Whether the slice is tracked at all.
    pub(crate) fn has(&self, slice: &EndpointSlice) -> bool {
        service_key(slice)
            .and_then(|key| self.by_service.get(&key))
            .is_some_and(|slices| slices.contains_key(&uid(slice)))
    }

    /// Whether a watched slice differs from what this controller last wrote (or is unknown).
    pub(crate) fn should_sync(&self, slice: &EndpointSlice) -> bool {
        let tracked = service_key(slice)
            .and_then(|key| self.by_service.get(&key))
            .and_then(|slices| slices.get(&uid(slice)));
        match tracked {
            None | Some(Tracked::DeletionExpected) => true,
            Some(Tracked::Written(rv)) => newer(version(slice), rv),
        }
    }

    /// Whether the cached slices of the Service lag behind this controller's writes: a slice
    /// it deleted is still there, one it wrote is older than its write, or one it wrote is
    /// missing.
    pub(crate) fn stale_slices(
        &self,
        service: &str,
        slices: &[std::sync::Arc<EndpointSlice>],
    ) -> bool {
        let Some(tracked) = self.by_service.get(service) else {
            return false;
        };
        let mut seen = std::collections::HashSet::new();
        for slice in slices {
            let uid = uid(slice);
            match tracked.get(&uid) {
                Some(Tracked::DeletionExpected) => return true,
                Some(Tracked::Written(rv)) if older(version(slice), rv) => return true,
                _ => {}
            }
            seen.insert(uid);
        }
        tracked
            .iter()
            .any(|(uid, t)| matches!(t, Tracked::Written(_)) && !seen.contains(uid))
    }

    /// Records a slice this controller created or updated, as the API returned it.
    pub(crate) fn update(&mut self, slice: &EndpointSlice) {
        if let Some(key) = service_key(slice) {
            self.by_service
                .entry(key)
                .or_default()
                .insert(uid(slice), Tracked::Written(version(slice).to_string()));
        }
    }

    /// Records a slice this controller deleted.
    pub(crate) fn expect_deletion(&mut self, slice: &EndpointSlice) {
        if let Some(key) = service_key(slice) {
            self.by_service
                .entry(key)
                .or_default()
                .insert(uid(slice), Tracked::DeletionExpected);
        }
    }

    /// Forgets a deleted slice; returns whether this controller expected the deletion (if
    /// not, the Service must be synced to replace it).
    pub(crate) fn handle_deletion(&mut self, slice: &EndpointSlice) -> bool {
        let Some(slices) = service_key(slice).and_then(|key| self.by_service.get_mut(&key)) else {
            return true;
        };
        !matches!(slices.remove(&uid(slice)), Some(Tracked::Written(_)))
    }

    /// Forgets a deleted Service.
    pub(crate) fn delete_service(&mut self, service: &str) {
        self.by_service.remove(service);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn slice(uid: &str, rv: &str) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": uid, "namespace": "default", "uid": uid, "resourceVersion": rv,
                "labels": {LABEL_SERVICE_NAME: "web"}},
            "addressType": "IPv4", "endpoints": [],
        }))
        .expect("slice")
    }

    #[test]
    fn own_writes_do_not_trigger_syncs_but_others_do() {
        let mut tracker = EndpointSliceTracker::default();
        assert!(tracker.should_sync(&slice("a", "5")));
        tracker.update(&slice("a", "5"));
        assert!(!tracker.should_sync(&slice("a", "5")));
        assert!(tracker.should_sync(&slice("a", "9")));
    }

    #[test]
    fn a_cache_behind_the_writes_is_stale() {
        let mut tracker = EndpointSliceTracker::default();
        tracker.update(&slice("a", "5"));
        tracker.expect_deletion(&slice("b", "3"));
        assert!(tracker.stale_slices("default/web", &[Arc::new(slice("a", "4"))]));
        assert!(
            tracker.stale_slices("default/web", &[]),
            "written slice missing"
        );
        assert!(tracker.stale_slices(
            "default/web",
            &[Arc::new(slice("a", "5")), Arc::new(slice("b", "3"))]
        ));
        assert!(!tracker.stale_slices("default/web", &[Arc::new(slice("a", "5"))]));
        assert!(
            tracker.handle_deletion(&slice("b", "3")),
            "expected deletion"
        );
        assert!(
            !tracker.handle_deletion(&slice("a", "5")),
            "unexpected deletion"
        );
    }
}
