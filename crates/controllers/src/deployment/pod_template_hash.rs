//! The `pod-template-hash` that names a Deployment's ReplicaSets and keeps their pods apart
//! (upstream `controller.ComputeHash` and `rand.SafeEncodeString`).
//!
//! Upstream hashes the Go struct with FNV-32a through a deterministic printer; Skiff hashes the
//! template's canonical JSON (typed structs serialise their fields in a fixed order and maps
//! sorted), which gives the same properties that matter: equal templates hash equal, any change
//! gives a new value, and `collisionCount` moves the hash away from a name that is taken. The
//! rendering is upstream's: the decimal digits of the 32-bit sum mapped into an alphabet without
//! vowels (so no words appear in names) and without confusable characters.

use k8s_openapi::api::core::v1::PodTemplateSpec;

/// Upstream `rand.SafeEncodeString`'s alphabet.
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

const FNV_OFFSET_BASIS: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

/// FNV-1a, 32 bits.
fn fnv32a(hash: u32, bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(hash, |h, b| (h ^ u32::from(*b)).wrapping_mul(FNV_PRIME))
}

/// Upstream `rand.SafeEncodeString`: each byte mapped into [`ALPHANUMS`] by its value.
fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()]))
        .collect()
}

/// The hash of `template` (the Deployment's, without a `pod-template-hash` label) salted with
/// the Deployment's `status.collisionCount`: at most 10 characters of [`ALPHANUMS`].
pub(crate) fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    // Serialising a typed template cannot fail (no maps with non-string keys); an empty
    // buffer would still give a stable hash.
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    let mut hash = fnv32a(FNV_OFFSET_BASIS, &bytes);
    if let Some(count) = collision_count {
        // Upstream writes the count little-endian into an 8-byte buffer.
        let mut buffer = [0u8; 8];
        buffer[..4].copy_from_slice(&count.to_le_bytes());
        hash = fnv32a(hash, &buffer);
    }
    safe_encode(&hash.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "web", "tier": "front"}},
            "spec": {"containers": [{"name": "c", "image": image}]},
        }))
        .expect("template")
    }

    #[test]
    fn fnv32a_matches_the_reference_vectors() {
        assert_eq!(fnv32a(FNV_OFFSET_BASIS, b""), 0x811c_9dc5);
        assert_eq!(fnv32a(FNV_OFFSET_BASIS, b"a"), 0xe40c_292c);
        assert_eq!(fnv32a(FNV_OFFSET_BASIS, b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn safe_encode_maps_digits_like_upstream() {
        // '0' is 48 → 48 % 27 = 21 → '4'; '9' is 57 → 57 % 27 = 3 → 'f'.
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
    }

    #[test]
    fn hash_is_stable_short_and_from_the_safe_alphabet() {
        let a = compute_hash(&template("nginx:1"), None);
        assert_eq!(a, compute_hash(&template("nginx:1"), None));
        assert!(!a.is_empty() && a.len() <= 10, "{a}");
        assert!(a.bytes().all(|b| ALPHANUMS.contains(&b)), "{a}");
    }

    #[test]
    fn label_order_does_not_matter_but_content_does() {
        let mut reordered = template("nginx:1");
        let labels: BTreeMap<String, String> = [("tier", "front"), ("app", "web")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(meta) = reordered.metadata.as_mut() {
            meta.labels = Some(labels);
        }
        assert_eq!(
            compute_hash(&reordered, None),
            compute_hash(&template("nginx:1"), None)
        );
        assert_ne!(
            compute_hash(&template("nginx:2"), None),
            compute_hash(&template("nginx:1"), None)
        );
    }

    #[test]
    fn collision_count_changes_the_hash() {
        let t = template("nginx:1");
        let none = compute_hash(&t, None);
        let zero = compute_hash(&t, Some(0));
        let one = compute_hash(&t, Some(1));
        assert_ne!(none, zero);
        assert_ne!(zero, one);
    }
}
