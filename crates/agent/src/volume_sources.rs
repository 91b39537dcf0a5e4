//! configMap, secret, downwardAPI and projected volumes: their files come from the API and are
//! written into the volume's directory the way the kubelet's `AtomicWriter` does, so a running
//! container sees either the old set of files or the new one, never a mix:
//!
//! ```text
//! <volume>/..2026_11_23_21_15_00.123456789/<files>   one generation of the payload
//! <volume>/..data -> ..2026_11_23_21_15_00.123456789  swapped with one rename
//! <volume>/<key>  -> ..data/<key>                     stable names the container opens
//! ```
//!
//! [`resolve`] reads the sources (a missing ConfigMap or Secret is an error unless the source
//! is `optional`, with the kubelet's words); [`write_atomic`] publishes the payload and removes
//! the previous generation. The node calls both when the pod starts and again on resync, so an
//! edited ConfigMap reaches running pods (not through `subPath` mounts, as upstream).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, Volume, VolumeProjection,
};
use kube::Api;

/// The payload directory link (upstream `..data`).
const DATA_LINK: &str = "..data";

/// Why a volume's files could not be produced; the message is what `FailedMount` shows.
#[derive(Debug, thiserror::Error)]
pub enum VolumeSourceError {
    #[error("configmap {name:?} not found")]
    ConfigMapNotFound { name: String },
    #[error("secret {name:?} not found")]
    SecretNotFound { name: String },
    #[error("configmap references non-existent config key: {key}")]
    ConfigMapKeyMissing { key: String },
    #[error("secret references non-existent secret key: {key}")]
    SecretKeyMissing { key: String },
    #[error("reading {kind} {name:?}: {source}")]
    Api {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("downwardAPI item {path:?}: {reason}")]
    Downward { path: String, reason: String },
    #[error(
        "invalid file path {path:?}: it must be relative, without '..' and not start with '..'"
    )]
    BadPath { path: String },
    #[error("writing the volume's files in {dir:?}: {source}")]
    Write {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl VolumeSourceError {
    /// Errors that may go away on their own (the API was unreachable), worth a quick retry.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            VolumeSourceError::Api { .. } | VolumeSourceError::Write { .. }
        )
    }
}

/// One file of a volume's payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadFile {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Relative path → file.
pub type Payload = BTreeMap<String, PayloadFile>;

/// Whether `volume` is one of the kinds this module fills.
pub fn is_api_volume(volume: &Volume) -> bool {
    volume.config_map.is_some()
        || volume.secret.is_some()
        || volume.downward_api.is_some()
        || volume.projected.is_some()
}

/// What the downward API needs from the node: the value of a `fieldRef` (pod fields the node
/// knows, like `status.podIP`), and of a `resourceFieldRef` for a container.
pub trait DownwardValues {
    fn field(&self, path: &str) -> Option<String>;
    fn resource(
        &self,
        container: &str,
        resource: &str,
        divisor: Option<&str>,
    ) -> Result<String, String>;
}

/// The payload of an API-backed volume of `pod`, read now from the API server.
pub async fn resolve(
    client: &kube::Client,
    pod: &Pod,
    volume: &Volume,
    downward: &(dyn DownwardValues + Sync),
) -> Result<Payload, VolumeSourceError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut payload = Payload::new();
    if let Some(cm) = &volume.config_map {
        let mode = cm.default_mode.unwrap_or(0o644) as u32;
        if let Some(data) = config_map(client, &namespace, &cm.name, cm.optional).await? {
            project(&mut payload, data, cm.items.as_deref(), mode, true)?;
        }
    } else if let Some(s) = &volume.secret {
        let mode = s.default_mode.unwrap_or(0o644) as u32;
        let name = s.secret_name.clone().unwrap_or_default();
        if let Some(data) = secret(client, &namespace, &name, s.optional).await? {
            project(&mut payload, data, s.items.as_deref(), mode, false)?;
        }
    } else if let Some(d) = &volume.downward_api {
        let mode = d.default_mode.unwrap_or(0o644) as u32;
        for item in d.items.iter().flatten() {
            downward_file(&mut payload, pod, item, mode, downward)?;
        }
    } else if let Some(p) = &volume.projected {
        let mode = p.default_mode.unwrap_or(0o644) as u32;
        for source in p.sources.iter().flatten() {
            projected_source(
                client,
                &namespace,
                pod,
                source,
                mode,
                downward,
                &mut payload,
            )
            .await?;
        }
    }
    Ok(payload)
}

async fn projected_source(
    client: &kube::Client,
    namespace: &str,
    pod: &Pod,
    source: &VolumeProjection,
    mode: u32,
    downward: &(dyn DownwardValues + Sync),
    payload: &mut Payload,
) -> Result<(), VolumeSourceError> {
    if let Some(cm) = &source.config_map {
        if let Some(data) = config_map(client, namespace, &cm.name, cm.optional).await? {
            project(payload, data, cm.items.as_deref(), mode, true)?;
        }
    }
    if let Some(s) = &source.secret {
        if let Some(data) = secret(client, namespace, &s.name, s.optional).await? {
            project(payload, data, s.items.as_deref(), mode, false)?;
        }
    }
    if let Some(d) = &source.downward_api {
        for item in d.items.iter().flatten() {
            downward_file(payload, pod, item, mode, downward)?;
        }
    }
    Ok(())
}

/// A ConfigMap's data and binaryData, `None` if it is absent and optional.
async fn config_map(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    optional: Option<bool>,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, VolumeSourceError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(cm)) => {
            let mut data: BTreeMap<String, Vec<u8>> = cm
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            for (k, v) in cm.binary_data.unwrap_or_default() {
                data.insert(k, v.0);
            }
            Ok(Some(data))
        }
        Ok(None) if optional.unwrap_or(false) => Ok(None),
        Ok(None) => Err(VolumeSourceError::ConfigMapNotFound { name: name.into() }),
        Err(source) => Err(VolumeSourceError::Api {
            kind: "configmap",
            name: name.into(),
            source,
        }),
    }
}

/// A Secret's data (stringData is folded into data by the API server), `None` if it is absent
/// and optional.
async fn secret(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    optional: Option<bool>,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, VolumeSourceError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(s)) => {
            let mut data: BTreeMap<String, Vec<u8>> = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            for (k, v) in s.string_data.unwrap_or_default() {
                data.entry(k).or_insert_with(|| v.into_bytes());
            }
            Ok(Some(data))
        }
        Ok(None) if optional.unwrap_or(false) => Ok(None),
        Ok(None) => Err(VolumeSourceError::SecretNotFound { name: name.into() }),
        Err(source) => Err(VolumeSourceError::Api {
            kind: "secret",
            name: name.into(),
            source,
        }),
    }
}

/// Every key as a file of its own name, or only the listed `items` at their paths (a listed key
/// that is missing is an error, as upstream).
fn project(
    payload: &mut Payload,
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    config_map: bool,
) -> Result<(), VolumeSourceError> {
    match items {
        None | Some([]) => {
            for (key, value) in data {
                let path = checked_path(&key)?;
                payload.insert(
                    path,
                    PayloadFile {
                        data: value,
                        mode: default_mode,
                    },
                );
            }
        }
        Some(items) => {
            for item in items {
                let Some(value) = data.get(&item.key) else {
                    return Err(if config_map {
                        VolumeSourceError::ConfigMapKeyMissing {
                            key: item.key.clone(),
                        }
                    } else {
                        VolumeSourceError::SecretKeyMissing {
                            key: item.key.clone(),
                        }
                    });
                };
                let path = checked_path(&item.path)?;
                payload.insert(
                    path,
                    PayloadFile {
                        data: value.clone(),
                        mode: item.mode.map_or(default_mode, |m| m as u32),
                    },
                );
            }
        }
    }
    Ok(())
}

fn downward_file(
    payload: &mut Payload,
    pod: &Pod,
    item: &DownwardAPIVolumeFile,
    default_mode: u32,
    downward: &(dyn DownwardValues + Sync),
) -> Result<(), VolumeSourceError> {
    let path = checked_path(&item.path)?;
    let fail = |reason: String| VolumeSourceError::Downward {
        path: item.path.clone(),
        reason,
    };
    let value = if let Some(f) = &item.field_ref {
        match f.field_path.as_str() {
            // Whole maps are written as sorted `key="value"` lines (upstream
            // `fieldpath.FormatMap`), which is why only volumes may ask for them.
            "metadata.labels" => format_map(pod.metadata.labels.as_ref()),
            "metadata.annotations" => format_map(pod.metadata.annotations.as_ref()),
            other => downward
                .field(other)
                .ok_or_else(|| fail(format!("fieldRef {other:?} is not a supported field")))?,
        }
    } else if let Some(r) = &item.resource_field_ref {
        let container = r.container_name.clone().unwrap_or_default();
        downward
            .resource(
                &container,
                &r.resource,
                r.divisor.as_ref().map(|d| d.0.as_str()),
            )
            .map_err(fail)?
    } else {
        return Err(fail("names neither fieldRef nor resourceFieldRef".into()));
    };
    payload.insert(
        path,
        PayloadFile {
            data: value.into_bytes(),
            mode: item.mode.map_or(default_mode, |m| m as u32),
        },
    );
    Ok(())
}

fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    let mut out = String::new();
    for (k, v) in map.into_iter().flatten() {
        if !out.is_empty() {
            out.push('\n');
        }
        // Go's %q: a double-quoted, escaped string.
        out.push_str(&format!("{k}={}", serde_json::Value::String(v.clone())));
    }
    out
}

/// A payload path must stay inside the volume (upstream `validatePath`).
fn checked_path(path: &str) -> Result<String, VolumeSourceError> {
    let bad = || VolumeSourceError::BadPath { path: path.into() };
    if path.is_empty() || path.starts_with("..") || Path::new(path).is_absolute() {
        return Err(bad());
    }
    if Path::new(path)
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(bad());
    }
    Ok(path.to_string())
}

/// Publishes `payload` in `dir` atomically; returns whether anything changed. Files are owned
/// by root, or by group `fs_group` (group-readable, as upstream's `SetVolumeOwnership`).
pub fn write_atomic(
    dir: &Path,
    payload: &Payload,
    fs_group: Option<u32>,
) -> Result<bool, VolumeSourceError> {
    let werr = |source: io::Error| VolumeSourceError::Write {
        dir: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(werr)?;
    let data_link = dir.join(DATA_LINK);
    let current = fs::read_link(&data_link).ok();
    if let Some(current) = &current
        && same_payload(&dir.join(current), payload)
    {
        return Ok(false);
    }
    // 1. The new generation, complete, under a fresh hidden name.
    let stamp = jiff::Timestamp::now()
        .strftime("..%Y_%m_%d_%H_%M_%S.%f")
        .to_string();
    let generation = dir.join(&stamp);
    fs::create_dir(&generation).map_err(werr)?;
    for (path, file) in payload {
        let target = generation.join(path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(werr)?;
        }
        fs::write(&target, &file.data).map_err(werr)?;
        let mut mode = file.mode & 0o777;
        if let Some(gid) = fs_group {
            std::os::unix::fs::chown(&target, None, Some(gid)).map_err(werr)?;
            mode |= 0o040;
        }
        fs::set_permissions(&target, fs::Permissions::from_mode(mode)).map_err(werr)?;
    }
    fs::set_permissions(&generation, fs::Permissions::from_mode(0o755)).map_err(werr)?;
    // 2. Swap `..data` with one rename of a new link over the old one.
    let tmp_link = dir.join("..data_tmp");
    let _ = fs::remove_file(&tmp_link);
    symlink(&stamp, &tmp_link).map_err(werr)?;
    fs::rename(&tmp_link, &data_link).map_err(werr)?;
    // 3. The user-visible names: one link per top-level entry; stale ones go.
    let mut top: Vec<String> = payload
        .keys()
        .filter_map(|p| p.split('/').next().map(str::to_string))
        .collect();
    top.dedup();
    for name in &top {
        let link = dir.join(name);
        if fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA_LINK).join(name), &link).map_err(werr)?;
        }
    }
    for entry in fs::read_dir(dir).map_err(werr)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") {
            if name != DATA_LINK && name != stamp && entry.path().is_dir() {
                fs::remove_dir_all(entry.path()).map_err(werr)?;
            }
            continue;
        }
        if !top.contains(&name) {
            fs::remove_file(entry.path()).map_err(werr)?;
        }
    }
    Ok(true)
}

/// Whether the generation at `dir` holds exactly `payload`.
fn same_payload(dir: &Path, payload: &Payload) -> bool {
    let mut count = 0usize;
    for (path, file) in payload {
        let target = dir.join(path);
        match (fs::read(&target), fs::metadata(&target)) {
            (Ok(data), Ok(meta))
                if data == file.data
                    && meta.permissions().mode() & 0o777
                        == (file.mode & 0o777) | (meta.permissions().mode() & 0o040) =>
            {
                count += 1
            }
            _ => return false,
        }
    }
    count_files(dir) == count
}

fn count_files(dir: &Path) -> usize {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() { count_files(&p) } else { 1 }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(data: &str, mode: u32) -> PayloadFile {
        PayloadFile {
            data: data.as_bytes().to_vec(),
            mode,
        }
    }

    #[test]
    fn writes_generations_behind_a_data_link_and_swaps_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut payload = Payload::new();
        payload.insert("app.conf".into(), file("a=1", 0o644));
        payload.insert("nested/deep.txt".into(), file("deep", 0o600));
        assert!(write_atomic(dir.path(), &payload, None).expect("write"));
        assert_eq!(
            fs::read_to_string(dir.path().join("app.conf")).expect("read"),
            "a=1"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("nested/deep.txt")).expect("read"),
            "deep"
        );
        assert_eq!(
            fs::read_link(dir.path().join("app.conf")).expect("link"),
            Path::new("..data/app.conf")
        );
        let mode = fs::metadata(dir.path().join("nested/deep.txt"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let first = fs::read_link(dir.path().join(DATA_LINK)).expect("data link");

        // Unchanged: nothing is rewritten.
        assert!(!write_atomic(dir.path(), &payload, None).expect("write"));
        assert_eq!(
            fs::read_link(dir.path().join(DATA_LINK)).expect("link"),
            first
        );

        // Changed: a new generation, the old one gone, a removed key's link gone.
        std::thread::sleep(std::time::Duration::from_millis(2));
        let mut next = Payload::new();
        next.insert("app.conf".into(), file("a=2", 0o644));
        assert!(write_atomic(dir.path(), &next, None).expect("write"));
        assert_eq!(
            fs::read_to_string(dir.path().join("app.conf")).expect("read"),
            "a=2"
        );
        assert!(!dir.path().join("nested").exists());
        assert!(!dir.path().join(&first).exists());
        let hidden: Vec<String> = fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".."))
            .collect();
        assert_eq!(hidden.len(), 2, "{hidden:?}");
    }

    #[test]
    fn projects_keys_items_and_refuses_escaping_paths() {
        let data: BTreeMap<String, Vec<u8>> = [
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec()),
        ]
        .into();
        let mut all = Payload::new();
        project(&mut all, data.clone(), None, 0o644, true).expect("all keys");
        assert_eq!(all.keys().collect::<Vec<_>>(), ["a", "b"]);

        let items = [KeyToPath {
            key: "b".into(),
            path: "dir/bee".into(),
            mode: Some(0o400),
        }];
        let mut some = Payload::new();
        project(&mut some, data.clone(), Some(&items), 0o644, true).expect("items");
        assert_eq!(some.len(), 1);
        assert_eq!(some["dir/bee"].mode, 0o400);

        let missing = [KeyToPath {
            key: "zz".into(),
            path: "z".into(),
            mode: None,
        }];
        let err = project(
            &mut Payload::new(),
            data.clone(),
            Some(&missing),
            0o644,
            true,
        )
        .expect_err("missing key");
        assert_eq!(
            err.to_string(),
            "configmap references non-existent config key: zz"
        );
        for bad in ["../x", "/etc/passwd", "a/../../b", "..data"] {
            let items = [KeyToPath {
                key: "a".into(),
                path: bad.into(),
                mode: None,
            }];
            assert!(
                project(&mut Payload::new(), data.clone(), Some(&items), 0o644, true).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn labels_are_formatted_like_upstream() {
        let labels: BTreeMap<String, String> = [
            ("app".to_string(), "web".to_string()),
            ("tier".to_string(), "a \"b\"".to_string()),
        ]
        .into();
        assert_eq!(
            format_map(Some(&labels)),
            "app=\"web\"\ntier=\"a \\\"b\\\"\""
        );
    }
}
