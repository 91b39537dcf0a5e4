//! What a request asks for: the resource path and the query options.
//!
//! Path parsing follows apiserver's `RequestInfoFactory`: `/api/v1/...` and
//! `/apis/<group>/<version>/...`, with `namespaces/<ns>/<resource>` for namespaced resources
//! and `namespaces/<name>/{status,finalize}` for the namespace object itself.

use std::time::Duration;

use crate::error::{ApiError, ApiResult};

/// The resource coordinates of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestInfo {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl RequestInfo {
    /// Parses `/api/v1/...` or `/apis/<g>/<v>/...`; `None` when the path is not a resource path.
    pub fn parse(path: &str) -> Option<RequestInfo> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
        let (group, version, rest) = match parts.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return None,
        };
        if rest.is_empty() {
            return None;
        }
        let mut namespace = None;
        let mut rest = rest;
        if rest[0] == "namespaces" && rest.len() > 1 {
            namespace = Some(rest[1].to_string());
            if rest.len() > 2 && rest[2] != "status" && rest[2] != "finalize" {
                rest = &rest[2..];
            } else {
                // The namespace object itself: namespaces/<name>[/status|finalize].
                return Some(RequestInfo {
                    group: group.into(),
                    version: version.into(),
                    namespace: None,
                    resource: "namespaces".into(),
                    name: Some(rest[1].to_string()),
                    subresource: rest.get(2).map(|s| s.to_string()),
                });
            }
        }
        if rest.len() > 3 {
            return None;
        }
        Some(RequestInfo {
            group: group.into(),
            version: version.into(),
            namespace,
            resource: rest[0].to_string(),
            name: rest.get(1).map(|s| s.to_string()),
            subresource: rest.get(2).map(|s| s.to_string()),
        })
    }
}

/// Query parameters, decoded once. Repeated keys (`command=a&command=b`) are kept in order.
#[derive(Clone, Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        let pairs = raw
            .map(|q| form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
            .unwrap_or_default();
        Query { pairs }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> Vec<&str> {
        self.pairs.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    }

    /// A boolean parameter: present with "true"/"1"/"" is true.
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true") | Some("1") | Some(""))
    }

    pub fn int(&self, key: &str) -> ApiResult<Option<i64>> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid value for query parameter {key}: {v:?} is not an integer"))),
        }
    }

    pub fn timeout(&self) -> ApiResult<Option<Duration>> {
        Ok(self.int("timeoutSeconds")?.filter(|s| *s > 0).map(|s| Duration::from_secs(s as u64)))
    }

    /// `dryRun=All` (the only value upstream accepts).
    pub fn dry_run(&self) -> ApiResult<bool> {
        let values = self.all("dryRun");
        for v in &values {
            if *v != "All" {
                return Err(ApiError::bad_request(format!(
                    "Invalid dry run value: unsupported value {v:?}, supported values: \"All\""
                )));
            }
        }
        Ok(!values.is_empty())
    }

    pub fn field_validation(&self) -> ApiResult<FieldValidation> {
        match self.get("fieldValidation") {
            None | Some("") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {other:?}"
            ))),
        }
    }
}

/// `fieldValidation`: what to do with unknown or duplicate fields in a request body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(path: &str) -> Option<RequestInfo> {
        RequestInfo::parse(path)
    }

    #[test]
    fn parses_namespaced_and_cluster_paths() {
        let i = info("/apis/apps/v1/namespaces/default/deployments/web/scale").expect("parsed");
        assert_eq!((i.group.as_str(), i.namespace.as_deref(), i.resource.as_str()), ("apps", Some("default"), "deployments"));
        assert_eq!((i.name.as_deref(), i.subresource.as_deref()), (Some("web"), Some("scale")));
        let i = info("/api/v1/nodes/n1/status").expect("parsed");
        assert_eq!((i.namespace, i.resource.as_str(), i.name.as_deref()), (None, "nodes", Some("n1")));
        let i = info("/api/v1/pods").expect("parsed");
        assert_eq!((i.namespace, i.name), (None, None));
    }

    #[test]
    fn namespace_object_and_its_subresources() {
        let i = info("/api/v1/namespaces/foo").expect("parsed");
        assert_eq!((i.resource.as_str(), i.name.as_deref(), i.namespace), ("namespaces", Some("foo"), None));
        let i = info("/api/v1/namespaces/foo/status").expect("parsed");
        assert_eq!((i.name.as_deref(), i.subresource.as_deref()), (Some("foo"), Some("status")));
        let i = info("/api/v1/namespaces").expect("parsed");
        assert_eq!((i.resource.as_str(), i.name), ("namespaces", None));
        let i = info("/api/v1/namespaces/foo/pods").expect("parsed");
        assert_eq!((i.resource.as_str(), i.namespace.as_deref()), ("pods", Some("foo")));
    }

    #[test]
    fn rejects_non_resource_paths() {
        assert!(info("/api").is_none());
        assert!(info("/apis/apps/v1").is_none());
        assert!(info("/api/v1/namespaces/a/pods/b/c/d").is_none());
    }

    #[test]
    fn query_repeats_and_flags() {
        let q = Query::parse(Some("command=echo&command=hi&watch=1&dryRun=All"));
        assert_eq!(q.all("command"), vec!["echo", "hi"]);
        assert!(q.flag("watch"));
        assert!(q.dry_run().expect("valid"));
        assert!(Query::parse(Some("dryRun=Some")).dry_run().is_err());
    }
}
