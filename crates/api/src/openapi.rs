//! The OpenAPI documents served at `/openapi/v2` and `/openapi/v3/…`.
//!
//! All of them are generated at build time (see `build.rs`) from the upstream v1.33 spec and
//! kept gzip-compressed in the binary, so they cost no memory until a client asks:
//! * [`v2_gzip`] / [`v2_json`]: the upstream v2 document, unchanged.
//! * [`v3_index_json`]: the `/openapi/v3` discovery document listing each group-version with
//!   its `serverRelativeURL` and content hash.
//! * [`v3_document`] / [`v3_document_gzip`]: one OpenAPI 3.0 document per group-version
//!   (`api/v1`, `apis/apps/v1`, …) with only the schemas its paths reach.
//!
//! kubectl needs these for `apply`/`create` with `--validate=strict` (it looks for a
//! `fieldValidation` parameter on each kind's PATCH operation, `supportsQueryParamV3` in
//! cli-runtime) and for `kubectl explain` (the schemas, with `x-kubernetes-group-version-kind`).

use std::io::Read as _;

use flate2::read::GzDecoder;
use serde_json::{Map, Value, json};

/// One generated OpenAPI v3 document.
pub(crate) struct V3Document {
    /// `api/v1`, `apis/apps/v1`, …: the path under `/openapi/v3/`.
    pub(crate) group_version: &'static str,
    /// Stable content hash, the `?hash=` clients cache by.
    pub(crate) hash: &'static str,
    pub(crate) gzip: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/openapi_v3_documents.rs"));

static OPENAPI_V2_GZIP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/openapi-v2.json.gz"));

/// The `/openapi/v2` document (upstream's, compact JSON), gzip-compressed.
pub fn v2_gzip() -> &'static [u8] {
    OPENAPI_V2_GZIP
}

/// The `/openapi/v2` document as JSON bytes, decompressed on each call (about 3.5 MB, so the
/// caller should not keep it).
pub fn v2_json() -> Vec<u8> {
    // The bytes were compressed by our own build script; a unit test decompresses them, so
    // failure here would mean a corrupt binary. Serving an empty document is then the least bad.
    gunzip(OPENAPI_V2_GZIP).unwrap_or_default()
}

/// The `/openapi/v3` discovery document:
/// `{"paths":{"api/v1":{"serverRelativeURL":"/openapi/v3/api/v1?hash=…"},…}}`.
pub fn v3_index_json() -> Value {
    let paths: Map<String, Value> = OPENAPI_V3_DOCUMENTS
        .iter()
        .map(|document| {
            let url = format!(
                "/openapi/v3/{}?hash={}",
                document.group_version, document.hash
            );
            (
                document.group_version.to_owned(),
                json!({ "serverRelativeURL": url }),
            )
        })
        .collect();
    json!({ "paths": paths })
}

/// The group-versions that have a v3 document, in the order of [`v3_index_json`].
pub fn v3_group_versions() -> impl Iterator<Item = &'static str> {
    OPENAPI_V3_DOCUMENTS
        .iter()
        .map(|document| document.group_version)
}

/// The v3 document of `gv_path` (`api/v1`, `apis/apps/v1`; a leading `/` or `/openapi/v3/` is
/// tolerated) as JSON bytes, with its hash; `None` for an unknown group-version.
pub fn v3_document(gv_path: &str) -> Option<(Vec<u8>, &'static str)> {
    let document = find_v3(gv_path)?;
    let json = gunzip(document.gzip).ok()?;
    Some((json, document.hash))
}

/// The v3 document of `gv_path`, still gzip-compressed (for clients sending
/// `Accept-Encoding: gzip`), with its hash.
pub fn v3_document_gzip(gv_path: &str) -> Option<(&'static [u8], &'static str)> {
    find_v3(gv_path).map(|document| (document.gzip, document.hash))
}

fn find_v3(gv_path: &str) -> Option<&'static V3Document> {
    let key = gv_path.trim_start_matches('/');
    let key = key.strip_prefix("openapi/v3/").unwrap_or(key);
    let key = key.trim_end_matches('/');
    OPENAPI_V3_DOCUMENTS
        .iter()
        .find(|document| document.group_version == key)
}

fn gunzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len() * 8);
    GzDecoder::new(bytes).read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v3(gv: &str) -> Value {
        let (bytes, _) = v3_document(gv).expect("document exists");
        serde_json::from_slice(&bytes).expect("document is JSON")
    }

    #[test]
    fn v2_is_the_upstream_document() {
        let v2: Value = serde_json::from_slice(&v2_json()).expect("v2 is JSON");
        assert_eq!(v2["swagger"], "2.0");
        assert!(
            v2["definitions"]["io.k8s.api.apps.v1.Deployment"].is_object(),
            "Deployment definition present"
        );
        assert!(v2_gzip().len() < 1_500_000, "v2 gzip stays small");
    }

    #[test]
    fn index_lists_every_group_version_with_hash() {
        let index = v3_index_json();
        let paths = index["paths"].as_object().expect("paths");
        for gv in [
            "api/v1",
            "apis/apps/v1",
            "apis/batch/v1",
            "apis/networking.k8s.io/v1",
        ] {
            let url = paths[gv]["serverRelativeURL"].as_str().expect("url");
            let (_, hash) = v3_document(gv).expect("document");
            assert_eq!(url, format!("/openapi/v3/{gv}?hash={hash}"));
            assert_eq!(hash.len(), 32);
        }
        // Paths outside a group-version are not documents.
        assert!(!paths.contains_key("apis/apps"));
        assert!(!paths.contains_key("version"));
    }

    #[test]
    fn every_document_decompresses_and_hashes_differ() {
        let mut hashes = std::collections::HashSet::new();
        for gv in v3_group_versions() {
            let doc = v3(gv);
            assert_eq!(doc["openapi"], "3.0.0", "{gv}");
            assert!(
                hashes.insert(v3_document(gv).expect("doc").1),
                "{gv} hash unique"
            );
        }
        assert!(hashes.len() >= 30);
    }

    #[test]
    fn patch_operation_has_gvk_and_field_validation() {
        let doc = v3("apis/apps/v1");
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"],
            json!({"group": "apps", "kind": "Deployment", "version": "v1"})
        );
        let parameters = patch["parameters"].as_array().expect("parameters");
        let field_validation = parameters
            .iter()
            .find(|p| p["name"] == "fieldValidation")
            .expect("fieldValidation parameter inline, not a $ref");
        assert_eq!(field_validation["in"], "query");
        assert_eq!(field_validation["schema"]["type"], "string");
        assert!(field_validation.get("type").is_none());
        // The body became a requestBody per patch content type.
        let content = patch["requestBody"]["content"]
            .as_object()
            .expect("content");
        assert!(content.contains_key("application/strategic-merge-patch+json"));
        assert_eq!(
            content["application/merge-patch+json"]["schema"]["$ref"],
            "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"
        );
        // Responses carry content per produced media type.
        assert_eq!(
            patch["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/io.k8s.api.apps.v1.Deployment"
        );
        assert!(patch.get("consumes").is_none() && patch.get("produces").is_none());
    }

    #[test]
    fn schemas_are_reachable_only_and_refs_rewritten() {
        let doc = v3("apis/apps/v1");
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        let deployment = &schemas["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deployment["x-kubernetes-group-version-kind"][0]["kind"],
            "Deployment"
        );
        // A $ref with a description beside it is wrapped in allOf, as upstream's v3 does.
        assert_eq!(
            deployment["properties"]["spec"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"
        );
        // Transitively reached: PodSpec through the template; Container through PodSpec.
        assert!(schemas.contains_key("io.k8s.api.core.v1.Container"));
        // Not reached from apps/v1: batch Jobs, core Services.
        assert!(!schemas.contains_key("io.k8s.api.batch.v1.Job"));
        assert!(!schemas.contains_key("io.k8s.api.core.v1.Service"));
        let text = serde_json::to_string(&doc).expect("serialise");
        assert!(!text.contains("#/definitions/"));
        assert!(!text.contains("#/parameters/"));
        // Patch markers survive the conversion.
        let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    }

    #[test]
    fn lookups_tolerate_prefixes_and_reject_unknown() {
        assert!(v3_document("/openapi/v3/api/v1").is_some());
        assert!(v3_document("/apis/apps/v1/").is_some());
        assert!(v3_document("apis/apps/v2").is_none());
        assert!(v3_document_gzip("api/v1").is_some());
    }
}
