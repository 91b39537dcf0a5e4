//! The content-addressed image store under `<data-dir>/images`:
//!
//! ```text
//! blobs/sha256/<hex>      manifests, configs and layers, verified against their digest
//! ingest/                 downloads and imports in progress (`<hex>` resumes a pull)
//! index.json              image references -> manifest, config and layer digests
//! leases/<name>.json      blobs and snapshots in use (a pull in flight, a mounted rootfs)
//! snapshots/<chain-id>/   each layer unpacked once, shared by every image that has it
//! lock                    flock(2) serialising index writes and garbage collection
//! ```
//!
//! A blob becomes visible only by `rename(2)` after it was fsynced and its digest checked, so a
//! crash never leaves a half-written blob under its name.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::manifest::{self, ConfigFile, ManifestKind};
use super::reference::{ImageRef, is_valid_digest};

/// Errors of the content store. Filesystem errors (`Io`) may be retried once the disk has room;
/// the others mean the content or the request is wrong.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("image store {path}: {step}: {source}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid digest {0:?}: expected sha256: and 64 lowercase hex digits")]
    InvalidDigest(String),
    #[error("content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("blob {digest} is not in the image store")]
    BlobNotFound { digest: String },
    #[error(
        "image not found: {0} — list images with `skiff image ls`, pull with `skiff image pull`, or import with `skiff image import`"
    )]
    ImageNotFound(String),
    #[error("{what} {digest} is not valid JSON: {source}")]
    InvalidJson {
        what: &'static str,
        digest: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("manifest {digest} is an index, not an image manifest")]
    NotAnImageManifest { digest: String },
    #[error(
        "image {image}: its config lists {diff_ids} layer diff IDs but its manifest has {layers} layers"
    )]
    LayerCountMismatch {
        image: String,
        diff_ids: usize,
        layers: usize,
    },
    #[error("image store index {path} is corrupt: {source}")]
    CorruptIndex {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io_err<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        step,
        path: path.to_path_buf(),
        source,
    }
}

/// One layer of a stored image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerRecord {
    /// Digest of the blob as stored (compressed or not).
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    /// Digest of the uncompressed tar, from the image config's `rootfs.diff_ids`.
    pub diff_id: String,
    /// The layer's chain ID (OCI image spec): names its snapshot directory.
    pub chain_id: String,
}

/// An image reference and what it points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    pub reference: ImageRef,
    pub manifest_digest: String,
    pub config_digest: String,
    pub layers: Vec<LayerRecord>,
    /// Sum of the manifest, config and layer blob sizes.
    pub size: u64,
    /// The config's `created` time, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
}

impl ImageRecord {
    /// The image ID as Docker and the CRI show it: the config digest.
    pub fn id(&self) -> &str {
        &self.config_digest
    }

    /// `registry/repository@<manifest digest>`: what Kubernetes reports as `imageID`.
    pub fn repo_digest(&self) -> String {
        self.reference
            .with_digest(&self.manifest_digest)
            .to_string()
    }
}

/// The parts of an image config a node and `skiff image inspect` need.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// `port/proto`, e.g. `80/tcp`.
    pub exposed_ports: Vec<String>,
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
    pub architecture: Option<String>,
    pub os: Option<String>,
}

/// `skiff image inspect`: the record and its config.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageInspect {
    #[serde(flatten)]
    pub record: ImageRecord,
    pub config: ImageConfig,
}

/// What a garbage collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub blobs_removed: usize,
    pub bytes_freed: u64,
    pub snapshots_removed: usize,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct IndexFile {
    images: Vec<ImageRecord>,
}

/// Content a process is using: garbage collection keeps it.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeaseFile {
    /// The process holding the lease; when it has died the lease is void. `None` for leases
    /// that outlive processes (a container's rootfs survives agent restarts).
    #[serde(default)]
    pid: Option<u32>,
    #[serde(default)]
    blobs: BTreeSet<String>,
    #[serde(default)]
    snapshots: BTreeSet<String>,
}

/// Keeps blobs and snapshots from garbage collection until dropped (or, for a persistent lease,
/// until [`Store::release_lease`]).
#[derive(Debug)]
pub struct Lease {
    path: PathBuf,
    persistent: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.persistent {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The content store. Cheap to clone; every method works from the files, so several processes
/// (the agent and `skiff image` commands) may share one root.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name for a temporary file no other writer in any process picks.
pub(crate) fn unique_name(prefix: &str) -> String {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos}", std::process::id())
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// Chain IDs per the OCI image spec: `ChainID(L0) = DiffID(L0)`,
/// `ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(parent) => digest_of(format!("{parent} {diff_id}").as_bytes()),
        };
        out.push(next);
    }
    out
}

fn hex_of(digest: &str) -> Result<&str, StoreError> {
    if !is_valid_digest(digest) {
        return Err(StoreError::InvalidDigest(digest.to_string()));
    }
    Ok(&digest["sha256:".len()..])
}

/// fsync a directory so a rename into it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Store {
    /// Opens (creating if needed) the store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let root = root.into();
        for dir in ["blobs/sha256", "ingest", "leases", "snapshots"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(io_err("create directory", &path))?;
        }
        Ok(Store { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    pub(crate) fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// The directory a layer with this chain ID is unpacked into.
    pub fn snapshot_dir(&self, chain_id: &str) -> Result<PathBuf, StoreError> {
        Ok(self.snapshots_dir().join(hex_of(chain_id)?))
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        Ok(self.root.join("blobs/sha256").join(hex_of(digest)?))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    pub fn open_blob(&self, digest: &str) -> Result<File, StoreError> {
        let path = self.blob_path(digest)?;
        File::open(&path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => StoreError::BlobNotFound {
                digest: digest.to_string(),
            },
            _ => StoreError::Io {
                step: "open blob",
                path,
                source,
            },
        })
    }

    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
        let mut bytes = Vec::new();
        let path = self.blob_path(digest)?;
        self.open_blob(digest)?
            .read_to_end(&mut bytes)
            .map_err(io_err("read blob", &path))?;
        Ok(bytes)
    }

    /// Writes a blob from `reader`, verifying it against `expected` when given; returns its
    /// digest. Safe to call for a blob already present.
    pub fn write_blob(
        &self,
        expected: Option<&str>,
        mut reader: impl Read,
    ) -> Result<String, StoreError> {
        if let Some(expected) = expected {
            hex_of(expected)?;
        }
        let tmp = self.ingest_dir().join(unique_name("blob"));
        let result = (|| {
            let mut file = File::create(&tmp).map_err(io_err("create temporary blob", &tmp))?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = reader
                    .read(&mut buf)
                    .map_err(io_err("read blob content", &tmp))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                file.write_all(&buf[..n])
                    .map_err(io_err("write temporary blob", &tmp))?;
            }
            file.sync_all()
                .map_err(io_err("fsync temporary blob", &tmp))?;
            let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
            if let Some(expected) = expected
                && expected != digest
            {
                return Err(StoreError::DigestMismatch {
                    expected: expected.to_string(),
                    actual: digest,
                });
            }
            self.commit_file(&tmp, &digest)?;
            Ok(digest)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    pub fn write_blob_bytes(
        &self,
        expected: Option<&str>,
        bytes: &[u8],
    ) -> Result<String, StoreError> {
        self.write_blob(expected, bytes)
    }

    /// Moves a fully written, fsynced file whose content has `digest` into the blob store.
    pub(crate) fn commit_file(&self, tmp: &Path, digest: &str) -> Result<(), StoreError> {
        let dest = self.blob_path(digest)?;
        if dest.is_file() {
            let _ = fs::remove_file(tmp);
            return Ok(());
        }
        fs::rename(tmp, &dest).map_err(io_err("rename blob into place", &dest))?;
        let dir = self.root.join("blobs/sha256");
        sync_dir(&dir).map_err(io_err("fsync blob directory", &dir))
    }

    /// The file a download of `digest` resumes from.
    pub(crate) fn ingest_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        Ok(self.ingest_dir().join(hex_of(digest)?))
    }

    fn lock(&self) -> Result<Flock<File>, StoreError> {
        let path = self.root.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open lock file", &path))?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| StoreError::Io {
            step: "lock",
            path,
            source: errno.into(),
        })
    }

    fn read_index(&self) -> Result<IndexFile, StoreError> {
        let path = self.root.join("index.json");
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| StoreError::CorruptIndex { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(IndexFile::default()),
            Err(source) => Err(StoreError::Io {
                step: "read index",
                path,
                source,
            }),
        }
    }

    fn write_index(&self, index: &IndexFile) -> Result<(), StoreError> {
        let path = self.root.join("index.json");
        let tmp = self.root.join(unique_name(".index.json"));
        let bytes =
            serde_json::to_vec_pretty(index).map_err(|source| StoreError::CorruptIndex {
                path: path.clone(),
                source,
            })?;
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            sync_dir(&self.root)
        };
        write().map_err(|source| {
            let _ = fs::remove_file(&tmp);
            StoreError::Io {
                step: "write index",
                path: path.clone(),
                source,
            }
        })
    }

    /// Every stored image reference, sorted.
    pub fn list(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let mut images = self.read_index()?.images;
        images.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(images)
    }

    /// The image a reference names, if stored. A digest reference matches any stored reference
    /// of the same repository with that manifest digest.
    pub fn get(&self, reference: &ImageRef) -> Result<Option<ImageRecord>, StoreError> {
        let images = self.read_index()?.images;
        if let Some(found) = images.iter().find(|r| &r.reference == reference) {
            return Ok(Some(found.clone()));
        }
        Ok(reference.digest.as_ref().and_then(|digest| {
            images
                .into_iter()
                .find(|r| r.reference.name() == reference.name() && &r.manifest_digest == digest)
                .map(|r| ImageRecord {
                    reference: reference.clone(),
                    ..r
                })
        }))
    }

    /// Finds an image by reference, by image ID (`sha256:…`, or a hex prefix of at least 12
    /// digits like `docker images` shows).
    pub fn resolve(&self, name_or_id: &str) -> Result<ImageRecord, StoreError> {
        let not_found = || StoreError::ImageNotFound(name_or_id.to_string());
        if let Some(found) = self.find_by_id(name_or_id)?.into_iter().next() {
            return Ok(found);
        }
        let reference = ImageRef::parse(name_or_id).map_err(|_| not_found())?;
        self.get(&reference)?.ok_or_else(not_found)
    }

    fn find_by_id(&self, id: &str) -> Result<Vec<ImageRecord>, StoreError> {
        let hex = id.strip_prefix("sha256:").unwrap_or(id);
        let is_id =
            (hex.len() >= 12 && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
                && (id.starts_with("sha256:") || !id.contains(['/', ':']));
        if !is_id {
            return Ok(Vec::new());
        }
        Ok(self
            .list()?
            .into_iter()
            .filter(|r| r.config_digest["sha256:".len()..].starts_with(hex))
            .collect())
    }

    /// Records `reference` → the manifest blob `manifest_digest` (already stored, as are its
    /// config and layers), replacing what the reference pointed at before.
    pub fn tag(
        &self,
        reference: &ImageRef,
        manifest_digest: &str,
    ) -> Result<ImageRecord, StoreError> {
        let record = self.record_for(reference, manifest_digest)?;
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        index.images.retain(|r| &r.reference != reference);
        index.images.push(record.clone());
        self.write_index(&index)?;
        Ok(record)
    }

    fn record_for(
        &self,
        reference: &ImageRef,
        manifest_digest: &str,
    ) -> Result<ImageRecord, StoreError> {
        let bytes = self.read_blob(manifest_digest)?;
        let invalid = |source| StoreError::InvalidJson {
            what: "manifest",
            digest: manifest_digest.to_string(),
            source,
        };
        let manifest = match manifest::parse_manifest_or_index(&bytes).map_err(invalid)? {
            ManifestKind::Manifest(m) => m,
            ManifestKind::Index(_) => {
                return Err(StoreError::NotAnImageManifest {
                    digest: manifest_digest.to_string(),
                });
            }
        };
        let config_bytes = self.read_blob(&manifest.config.digest)?;
        let config: ConfigFile =
            serde_json::from_slice(&config_bytes).map_err(|source| StoreError::InvalidJson {
                what: "image config",
                digest: manifest.config.digest.clone(),
                source,
            })?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(StoreError::LayerCountMismatch {
                image: reference.to_string(),
                diff_ids: config.rootfs.diff_ids.len(),
                layers: manifest.layers.len(),
            });
        }
        for diff_id in &config.rootfs.diff_ids {
            hex_of(diff_id)?;
        }
        let chains = chain_ids(&config.rootfs.diff_ids);
        let mut layers = Vec::with_capacity(manifest.layers.len());
        let mut size = bytes.len() as u64 + config_bytes.len() as u64;
        for ((layer, diff_id), chain_id) in manifest
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .zip(chains)
        {
            if !self.has_blob(&layer.digest) {
                return Err(StoreError::BlobNotFound {
                    digest: layer.digest.clone(),
                });
            }
            size += layer.size;
            layers.push(LayerRecord {
                digest: layer.digest.clone(),
                media_type: layer.media_type.clone(),
                size: layer.size,
                diff_id: diff_id.clone(),
                chain_id,
            });
        }
        Ok(ImageRecord {
            reference: reference.clone(),
            manifest_digest: manifest_digest.to_string(),
            config_digest: manifest.config.digest,
            layers,
            size,
            created: config.created,
        })
    }

    /// The config of a stored image.
    pub fn config(&self, image: &ImageRecord) -> Result<ImageConfig, StoreError> {
        let bytes = self.read_blob(&image.config_digest)?;
        let file: ConfigFile =
            serde_json::from_slice(&bytes).map_err(|source| StoreError::InvalidJson {
                what: "image config",
                digest: image.config_digest.clone(),
                source,
            })?;
        let c = file.config.unwrap_or_default();
        Ok(ImageConfig {
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            working_dir: c.working_dir.filter(|w| !w.is_empty()),
            user: c.user.filter(|u| !u.is_empty()),
            exposed_ports: c.exposed_ports.unwrap_or_default().into_keys().collect(),
            volumes: c.volumes.unwrap_or_default().into_keys().collect(),
            labels: c.labels.unwrap_or_default(),
            stop_signal: c.stop_signal.filter(|s| !s.is_empty()),
            architecture: file.architecture,
            os: file.os,
        })
    }

    pub fn inspect(&self, name_or_id: &str) -> Result<ImageInspect, StoreError> {
        let record = self.resolve(name_or_id)?;
        let config = self.config(&record)?;
        Ok(ImageInspect { record, config })
    }

    /// Removes an image reference, or every reference to an image ID, then collects the blobs
    /// and snapshots nothing references any more. Returns the references removed.
    pub fn remove(&self, name_or_id: &str) -> Result<Vec<ImageRef>, StoreError> {
        let by_id = self.find_by_id(name_or_id)?;
        let removed: Vec<ImageRef> = if !by_id.is_empty() {
            let ids: BTreeSet<String> = by_id.iter().map(|r| r.config_digest.clone()).collect();
            let _lock = self.lock()?;
            let mut index = self.read_index()?;
            let (gone, kept) = index
                .images
                .into_iter()
                .partition(|r| ids.contains(&r.config_digest));
            index.images = kept;
            self.write_index(&index)?;
            gone.into_iter().map(|r: ImageRecord| r.reference).collect()
        } else {
            let record = self.resolve(name_or_id)?;
            let _lock = self.lock()?;
            let mut index = self.read_index()?;
            index.images.retain(|r| r.reference != record.reference);
            self.write_index(&index)?;
            vec![record.reference]
        };
        self.gc()?;
        Ok(removed)
    }

    /// Creates a lease on blobs and snapshots. Process-bound leases (`persistent == false`)
    /// are void once their process dies and are removed when dropped.
    pub fn lease(
        &self,
        name: &str,
        blobs: impl IntoIterator<Item = String>,
        snapshots: impl IntoIterator<Item = String>,
        persistent: bool,
    ) -> Result<Lease, StoreError> {
        let path = self
            .root
            .join("leases")
            .join(format!("{}.json", sha256_hex(name.as_bytes())));
        let file = LeaseFile {
            pid: (!persistent).then(std::process::id),
            blobs: blobs.into_iter().collect(),
            snapshots: snapshots.into_iter().collect(),
        };
        let bytes = serde_json::to_vec(&file).map_err(|source| StoreError::CorruptIndex {
            path: path.clone(),
            source,
        })?;
        let tmp = self.root.join("leases").join(unique_name(".lease"));
        fs::write(&tmp, bytes)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(io_err("write lease", &path))?;
        Ok(Lease { path, persistent })
    }

    /// Ends a persistent lease created with the same `name`.
    pub fn release_lease(&self, name: &str) -> Result<(), StoreError> {
        let path = self
            .root
            .join("leases")
            .join(format!("{}.json", sha256_hex(name.as_bytes())));
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StoreError::Io {
                step: "remove lease",
                path,
                source: e,
            }),
            _ => Ok(()),
        }
    }

    fn live_leases(&self) -> Result<LeaseFile, StoreError> {
        let dir = self.root.join("leases");
        let mut all = LeaseFile::default();
        for entry in fs::read_dir(&dir).map_err(io_err("list leases", &dir))? {
            let path = entry.map_err(io_err("list leases", &dir))?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let Ok(bytes) = fs::read(&path) else { continue };
            let Ok(lease) = serde_json::from_slice::<LeaseFile>(&bytes) else {
                continue;
            };
            if let Some(pid) = lease.pid
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = fs::remove_file(&path);
                continue;
            }
            all.blobs.extend(lease.blobs);
            all.snapshots.extend(lease.snapshots);
        }
        Ok(all)
    }

    /// Removes blobs and snapshots that no image and no live lease references.
    pub fn gc(&self) -> Result<GcReport, StoreError> {
        let _lock = self.lock()?;
        let images = self.read_index()?.images;
        let leases = self.live_leases()?;
        let mut keep_blobs: BTreeSet<String> = leases.blobs;
        let mut keep_snapshots: BTreeSet<String> = leases.snapshots;
        for image in &images {
            keep_blobs.insert(image.manifest_digest.clone());
            keep_blobs.insert(image.config_digest.clone());
            for layer in &image.layers {
                keep_blobs.insert(layer.digest.clone());
                keep_snapshots.insert(layer.chain_id.clone());
            }
        }
        let mut report = GcReport::default();
        let blobs = self.root.join("blobs/sha256");
        for entry in fs::read_dir(&blobs).map_err(io_err("list blobs", &blobs))? {
            let entry = entry.map_err(io_err("list blobs", &blobs))?;
            let digest = format!("sha256:{}", entry.file_name().to_string_lossy());
            if !keep_blobs.contains(&digest) {
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(entry.path()).map_err(io_err("remove blob", &entry.path()))?;
                report.blobs_removed += 1;
                report.bytes_freed += size;
            }
        }
        let snapshots = self.snapshots_dir();
        for entry in fs::read_dir(&snapshots).map_err(io_err("list snapshots", &snapshots))? {
            let entry = entry.map_err(io_err("list snapshots", &snapshots))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Unpacks in progress are named `tmp-…`; an abandoned one (its process died) is
            // only garbage once old, so leave those to the unpacker's own cleanup.
            if name.starts_with("tmp-") || name == "empty" {
                continue;
            }
            if !keep_snapshots.contains(&format!("sha256:{name}")) {
                fs::remove_dir_all(entry.path())
                    .map_err(io_err("remove snapshot", &entry.path()))?;
                report.snapshots_removed += 1;
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_verified_and_deduplicated() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = store.write_blob_bytes(None, b"hello").unwrap();
        assert_eq!(d, digest_of(b"hello"));
        assert_eq!(store.write_blob_bytes(Some(&d), b"hello").unwrap(), d);
        let wrong = digest_of(b"other");
        assert!(matches!(
            store.write_blob_bytes(Some(&wrong), b"hello"),
            Err(StoreError::DigestMismatch { .. })
        ));
        assert!(!store.has_blob(&wrong));
        // Nothing half-written is left behind.
        assert_eq!(fs::read_dir(store.ingest_dir()).unwrap().count(), 0);
        assert!(matches!(
            store.blob_path("sha256:../../etc"),
            Err(StoreError::InvalidDigest(_))
        ));
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = digest_of(b"a");
        let b = digest_of(b"b");
        let chains = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chains[0], a);
        assert_eq!(chains[1], digest_of(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn tag_list_remove_and_gc() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let layer = store.write_blob_bytes(None, b"layer").unwrap();
        let diff_id = digest_of(b"uncompressed");
        let config = serde_json::json!({"architecture":"amd64","os":"linux",
            "config":{"Cmd":["sh"],"ExposedPorts":{"80/tcp":{}}},"rootfs":{"type":"layers","diff_ids":[diff_id]}});
        let config_bytes = serde_json::to_vec(&config).unwrap();
        let config_digest = store.write_blob_bytes(None, &config_bytes).unwrap();
        let manifest = serde_json::json!({"schemaVersion":2,"mediaType":manifest::OCI_MANIFEST,
            "config":{"mediaType":manifest::OCI_CONFIG,"digest":config_digest,"size":config_bytes.len()},
            "layers":[{"mediaType":manifest::OCI_LAYER,"digest":layer,"size":5}]});
        let manifest_digest = store
            .write_blob_bytes(None, &serde_json::to_vec(&manifest).unwrap())
            .unwrap();
        let stray = store.write_blob_bytes(None, b"stray").unwrap();
        let r = ImageRef::parse("busybox:1").unwrap();
        let record = store.tag(&r, &manifest_digest).unwrap();
        assert_eq!(record.layers[0].chain_id, diff_id);
        assert_eq!(store.list().unwrap().len(), 1);
        assert_eq!(store.resolve("busybox:1").unwrap(), record);
        assert_eq!(
            store
                .resolve(&config_digest["sha256:".len().."sha256:".len() + 12])
                .unwrap(),
            record
        );
        let pinned = store
            .get(&r.with_digest(&manifest_digest))
            .unwrap()
            .unwrap();
        assert_eq!(pinned.manifest_digest, manifest_digest);
        let inspect = store.inspect("docker.io/library/busybox:1").unwrap();
        assert_eq!(inspect.config.cmd, vec!["sh"]);
        assert_eq!(inspect.config.exposed_ports, vec!["80/tcp"]);

        let report = store.gc().unwrap();
        assert_eq!(report.blobs_removed, 1);
        assert!(!store.has_blob(&stray));
        assert!(store.has_blob(&layer));

        let lease = store.lease("pin", [layer.clone()], [], false).unwrap();
        assert_eq!(store.remove("busybox:1").unwrap(), vec![r]);
        assert!(store.has_blob(&layer), "a leased blob survives gc");
        assert!(!store.has_blob(&manifest_digest));
        drop(lease);
        store.gc().unwrap();
        assert!(!store.has_blob(&layer));
        assert!(matches!(
            store.resolve("busybox:1"),
            Err(StoreError::ImageNotFound(_))
        ));
    }
}
