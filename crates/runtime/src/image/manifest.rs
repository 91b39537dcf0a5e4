//! The JSON documents of the OCI image spec and their Docker schema 2 twins (same shape, other
//! media types): descriptors, manifests, indexes (manifest lists) and image configs. Parsed
//! leniently with our own types because Docker-written configs omit fields `oci-spec` requires.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The annotation containerd and Docker put on index entries with the full image name.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI annotation naming an index entry (a tag, or a full reference).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// An image index (OCI) or manifest list (Docker).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

impl Index {
    /// The entry for linux/amd64, the only platform a Skiff node runs. Entries without a
    /// platform (attestations, or a single-platform index written by a tool) are taken when
    /// nothing matches, as containerd's default matcher does for an unnamed platform.
    pub fn linux_amd64(&self) -> Option<&Descriptor> {
        self.manifests
            .iter()
            .find(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
            })
            .or_else(|| {
                self.manifests.iter().find(|d| {
                    d.platform.is_none()
                        && (d.media_type == OCI_MANIFEST || d.media_type == DOCKER_MANIFEST)
                        && !d.annotations.contains_key("vnd.docker.reference.type")
                })
            })
    }
}

/// What a manifest-shaped JSON document is, judged by its `mediaType` and then its fields
/// (the field is optional in OCI manifests).
#[derive(Debug)]
pub enum ManifestKind {
    Manifest(Manifest),
    Index(Index),
}

pub fn parse_manifest_or_index(bytes: &[u8]) -> Result<ManifestKind, serde_json::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes)?;
    let is_index = match probe.media_type.as_deref() {
        Some(OCI_INDEX) | Some(DOCKER_MANIFEST_LIST) => true,
        Some(_) => false,
        None => probe.manifests.is_some(),
    };
    if is_index {
        Ok(ManifestKind::Index(serde_json::from_slice(bytes)?))
    } else {
        Ok(ManifestKind::Manifest(serde_json::from_slice(bytes)?))
    }
}

/// The image config blob; only the fields a node uses.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConfigFile {
    #[serde(default)]
    pub architecture: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub config: Option<ContainerConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// The `config` object of an image config, in Docker's PascalCase spelling (the OCI spec kept it).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub stop_signal: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_manifests_from_indexes() {
        let index = br#"{"schemaVersion":2,"manifests":[
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:a","size":1,
             "platform":{"architecture":"arm64","os":"linux"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:b","size":1,
             "platform":{"architecture":"amd64","os":"linux"}}]}"#;
        match parse_manifest_or_index(index).unwrap() {
            ManifestKind::Index(i) => assert_eq!(i.linux_amd64().unwrap().digest, "sha256:b"),
            other => panic!("{other:?}"),
        }
        let manifest = br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:c","size":2},"layers":[]}"#;
        assert!(matches!(
            parse_manifest_or_index(manifest).unwrap(),
            ManifestKind::Manifest(_)
        ));
    }

    #[test]
    fn reads_docker_configs_with_nulls() {
        let config: ConfigFile = serde_json::from_str(
            r#"{"architecture":"amd64","config":{"Env":["PATH=/bin"],"Cmd":["sh"],"Entrypoint":null,
                "ExposedPorts":{"80/tcp":{}},"WorkingDir":""},"rootfs":{"type":"layers","diff_ids":["sha256:x"]}}"#,
        )
        .unwrap();
        let c = config.config.unwrap();
        assert_eq!(c.cmd.unwrap(), vec!["sh"]);
        assert!(c.entrypoint.is_none());
        assert_eq!(config.rootfs.diff_ids, vec!["sha256:x"]);
    }
}
