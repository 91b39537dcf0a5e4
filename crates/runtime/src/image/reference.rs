//! Image references normalised the way Docker does (`busybox` →
//! `docker.io/library/busybox:latest`), and the Kubernetes image pull policy as a pure function.

use std::fmt;
use std::str::FromStr;

/// The registry Docker assumes when a reference names none.
pub const DEFAULT_REGISTRY: &str = "docker.io";
const DEFAULT_TAG: &str = "latest";

/// Why a string is not an image reference. Never retryable: the name itself must change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid image reference {reference:?}: {reason}")]
    Invalid {
        reference: String,
        reason: &'static str,
    },
}

/// A fully qualified image reference: `registry/repository[:tag][@digest]`.
///
/// Parsing follows Docker's `reference.ParseNormalizedNamed`: the first path component is a
/// registry only if it contains `.` or `:` or is `localhost`; single-component Docker Hub names
/// live under `library/`; a reference with neither tag nor digest gets `:latest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses and normalises `reference`.
    pub fn parse(reference: &str) -> Result<Self, ReferenceError> {
        let invalid = |reason| ReferenceError::Invalid {
            reference: reference.to_string(),
            reason,
        };
        if reference.is_empty() {
            return Err(invalid("the reference is empty"));
        }
        if reference.len() > 4096 || reference.chars().any(|c| c.is_whitespace()) {
            return Err(invalid("the reference contains whitespace or is too long"));
        }
        let (rest, digest) = match reference.split_once('@') {
            Some((rest, digest)) => {
                if !is_valid_digest(digest) {
                    return Err(invalid(
                        "the digest must be sha256: followed by 64 lowercase hex digits",
                    ));
                }
                (rest, Some(digest.to_string()))
            }
            None => (reference, None),
        };
        // A tag is the part after the last ':' unless that ':' belongs to a registry port
        // (followed by a '/').
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => {
                (&rest[..i], Some(rest[i + 1..].to_string()))
            }
            _ => (rest, None),
        };
        if let Some(tag) = &tag
            && !is_valid_tag(tag)
        {
            return Err(invalid(
                "the tag must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}",
            ));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        // Docker Hub's legacy hostname names the same registry.
        let registry = if registry == "index.docker.io" {
            DEFAULT_REGISTRY.to_string()
        } else {
            registry
        };
        if registry.is_empty() {
            return Err(invalid("the registry host is empty"));
        }
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if !is_valid_repository(&repository) {
            return Err(invalid(
                "the repository must be lowercase path components of [a-z0-9] separated by '.', '_', '__' or '-'",
            ));
        }
        let tag = match (tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (tag, _) => tag,
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, the name without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository pinned to `digest` (`docker.io/library/busybox@sha256:…`), the form
    /// Kubernetes reports as a container's `imageID`.
    pub fn with_digest(&self, digest: &str) -> ImageRef {
        ImageRef {
            tag: None,
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }

    /// Whether the reference names the `latest` tag (or no tag and no digest, which parsing
    /// turned into `latest`).
    pub fn is_latest(&self) -> bool {
        self.digest.is_none() && self.tag.as_deref() == Some(DEFAULT_TAG)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

impl serde::Serialize for ImageRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ImageRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        ImageRef::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `sha256:<64 lowercase hex>`, the only digest algorithm this store accepts.
pub fn is_valid_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn is_valid_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    tag.len() <= 128
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// Docker's path component grammar: `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`.
fn is_valid_repository(repository: &str) -> bool {
    !repository.is_empty()
        && repository.len() <= 255
        && repository.split('/').all(|component| {
            let bytes = component.as_bytes();
            let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
                return false;
            }
            let mut i = 0;
            while i < bytes.len() {
                let b = bytes[i];
                if alnum(b) {
                    i += 1;
                    continue;
                }
                // A separator run: '.', '_', '__' or any number of '-'.
                let start = i;
                while i < bytes.len() && !alnum(bytes[i]) {
                    i += 1;
                }
                let sep = &component[start..i];
                if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
                    return false;
                }
            }
            true
        })
}

/// Kubernetes' `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// The policy an unset `imagePullPolicy` defaults to, as the API server's defaulting does:
    /// `Always` for `:latest` or an untagged, undigested name, `IfNotPresent` otherwise.
    pub fn default_for(image: &ImageRef) -> PullPolicy {
        if image.is_latest() {
            PullPolicy::Always
        } else {
            PullPolicy::IfNotPresent
        }
    }

    /// Parses the API's spelling (`Always`, `IfNotPresent`, `Never`); `None` if unset or unknown.
    pub fn from_api(value: &str) -> Option<PullPolicy> {
        match value {
            "Always" => Some(PullPolicy::Always),
            "IfNotPresent" => Some(PullPolicy::IfNotPresent),
            "Never" => Some(PullPolicy::Never),
            _ => None,
        }
    }
}

/// What the node should do about an image before starting a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullDecision {
    /// Pull (again) from the registry.
    Pull,
    /// Use the image already in the store.
    UsePresent,
    /// The policy is `Never` and the image is absent: the kubelet reports `ErrImageNeverPull`.
    NeverPullMissing,
}

/// The kubelet's `shouldPullImage`: `Always` pulls every time, `IfNotPresent` only when absent,
/// `Never` never (and an absent image is an error the caller reports as `ErrImageNeverPull`).
/// `policy` is the pod's value or, when unset, [`PullPolicy::default_for`].
pub fn pull_decision(image: &ImageRef, policy: Option<PullPolicy>, present: bool) -> PullDecision {
    match policy.unwrap_or_else(|| PullPolicy::default_for(image)) {
        PullPolicy::Always => PullDecision::Pull,
        PullPolicy::IfNotPresent if present => PullDecision::UsePresent,
        PullPolicy::IfNotPresent => PullDecision::Pull,
        PullPolicy::Never if present => PullDecision::UsePresent,
        PullPolicy::Never => PullDecision::NeverPullMissing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        ImageRef::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("user/app"), "docker.io/user/app:latest");
        assert_eq!(
            norm("index.docker.io/library/busybox:1"),
            "docker.io/library/busybox:1"
        );
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(norm("127.0.0.1:5000/a/b:v1"), "127.0.0.1:5000/a/b:v1");
        assert_eq!(norm("quay.io/x/y"), "quay.io/x/y:latest");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            norm(&format!("busybox@{d}")),
            format!("docker.io/library/busybox@{d}")
        );
        assert_eq!(
            norm(&format!("busybox:1@{d}")),
            format!("docker.io/library/busybox:1@{d}")
        );
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "a b",
            "busybox@sha256:abc",
            "a//b",
            "-a",
            "a:-x",
            "a/",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(ImageRef::parse("a__b/c.d-e---f").is_ok());
        assert!(ImageRef::parse("a___b").is_err());
    }

    #[test]
    fn pull_policy_follows_kubelet() {
        let latest = ImageRef::parse("busybox").unwrap();
        let pinned = ImageRef::parse("busybox:1.36").unwrap();
        let by_digest = ImageRef::parse(&format!("busybox@sha256:{}", "b".repeat(64))).unwrap();
        assert_eq!(PullPolicy::default_for(&latest), PullPolicy::Always);
        assert_eq!(
            PullPolicy::default_for(&ImageRef::parse("busybox:latest").unwrap()),
            PullPolicy::Always
        );
        assert_eq!(PullPolicy::default_for(&pinned), PullPolicy::IfNotPresent);
        assert_eq!(
            PullPolicy::default_for(&by_digest),
            PullPolicy::IfNotPresent
        );
        assert_eq!(pull_decision(&latest, None, true), PullDecision::Pull);
        assert_eq!(pull_decision(&pinned, None, true), PullDecision::UsePresent);
        assert_eq!(pull_decision(&pinned, None, false), PullDecision::Pull);
        assert_eq!(
            pull_decision(&pinned, Some(PullPolicy::Always), true),
            PullDecision::Pull
        );
        assert_eq!(
            pull_decision(&pinned, Some(PullPolicy::Never), false),
            PullDecision::NeverPullMissing
        );
        assert_eq!(
            pull_decision(&latest, Some(PullPolicy::Never), true),
            PullDecision::UsePresent
        );
        assert_eq!(
            PullPolicy::from_api("IfNotPresent"),
            Some(PullPolicy::IfNotPresent)
        );
        assert_eq!(PullPolicy::from_api(""), None);
    }
}
