//! `skiff image import`: OCI image layouts (directory or tar) and `docker save` tarballs
//! (`manifest.json` with `RepoTags`, legacy `<id>/layer.tar` or the OCI blobs Docker 25+ writes).
//! Tarballs are read in one pass: every regular file goes into the store as a blob (hashed on
//! the way), small JSON documents are kept in memory to be interpreted afterwards.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::manifest::{self, Descriptor, Manifest, ManifestKind};
use super::reference::ImageRef;
use super::store::{Store, StoreError};

/// JSON documents larger than this are not layout metadata.
const MAX_METADATA: u64 = 16 * 1024 * 1024;

/// Why an import failed; all mean the file is not what it should be (not retryable).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{0} is neither an OCI image layout (oci-layout, index.json) nor a `docker save` archive (manifest.json)"
    )]
    UnknownFormat(PathBuf),
    #[error("{path} in the archive is not valid: {source}")]
    InvalidJson {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the archive refers to {0}, which it does not contain")]
    Missing(String),
    #[error(
        "{0} names no image: tag it (annotation io.containerd.image.name or org.opencontainers.image.ref.name, or RepoTags) before importing"
    )]
    Unnamed(PathBuf),
    #[error("image name {name:?} in the archive: {source}")]
    BadName {
        name: String,
        #[source]
        source: super::reference::ReferenceError,
    },
    #[error("the image index has no linux/amd64 manifest")]
    NoMatchingPlatform,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The archive's files: blobs already written to the store (path → digest) and metadata.
#[derive(Default)]
struct Contents {
    blobs: HashMap<String, String>,
    metadata: HashMap<String, Vec<u8>>,
}

impl Contents {
    fn json(&self, path: &str) -> Option<&[u8]> {
        self.metadata.get(path).map(Vec::as_slice)
    }

    fn blob(&self, path: &str) -> Result<&str, ImportError> {
        self.blobs
            .get(path)
            .map(String::as_str)
            .ok_or_else(|| ImportError::Missing(path.to_string()))
    }
}

/// A path inside the archive in one spelling: no `./`, no leading `/`, `..` resolved.
fn normalise(path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.join("/")
}

fn is_metadata(path: &str) -> bool {
    path.ends_with(".json") || path == "oci-layout" || path == "repositories"
}

fn read_tarball(store: &Store, path: &Path) -> Result<Contents, ImportError> {
    let read_err = |source| ImportError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let mut buffered = BufReader::new(file);
    let gzip = buffered
        .fill_buf()
        .map_err(read_err)?
        .starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let mut archive = tar::Archive::new(reader);
    let mut contents = Contents::default();
    let mut links: Vec<(String, String)> = Vec::new();
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let name = normalise(&entry.path().map_err(read_err)?);
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            // `docker save` links identical layers to the first copy.
            if let Some(target) = entry.link_name().map_err(read_err)? {
                let base = if kind.is_symlink() {
                    Path::new(&name)
                        .parent()
                        .unwrap_or(Path::new(""))
                        .join(&target)
                } else {
                    target.into_owned()
                };
                links.push((name, normalise(&base)));
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        if is_metadata(&name) && entry.size() <= MAX_METADATA {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(read_err)?;
            if name.starts_with("blobs/sha256/")
                || name.ends_with(".json") && !name.contains('/') && name.len() > 64
            {
                let digest = store.write_blob_bytes(None, &bytes)?;
                contents.blobs.insert(name.clone(), digest);
            }
            contents.metadata.insert(name, bytes);
        } else {
            let digest = store.write_blob(None, &mut entry)?;
            contents.blobs.insert(name, digest);
        }
    }
    for (link, target) in links {
        if let Some(digest) = contents.blobs.get(&target).cloned() {
            contents.blobs.insert(link.clone(), digest);
        }
        if let Some(bytes) = contents.metadata.get(&target).cloned() {
            contents.metadata.insert(link, bytes);
        }
    }
    Ok(contents)
}

fn read_directory(store: &Store, dir: &Path) -> Result<Contents, ImportError> {
    let mut contents = Contents::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let read_err = |source| ImportError::Read {
            path: current.clone(),
            source,
        };
        for entry in std::fs::read_dir(&current).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            let path = entry.path();
            // Follows symlinks, as `docker load` of an extracted archive would.
            let meta = std::fs::metadata(&path).map_err(|source| ImportError::Read {
                path: path.clone(),
                source,
            })?;
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = normalise(path.strip_prefix(dir).unwrap_or(&path));
            let open = || {
                File::open(&path).map_err(|source| ImportError::Read {
                    path: path.clone(),
                    source,
                })
            };
            if is_metadata(&rel) && meta.len() <= MAX_METADATA {
                let bytes = std::fs::read(&path).map_err(|source| ImportError::Read {
                    path: path.clone(),
                    source,
                })?;
                contents.metadata.insert(rel.clone(), bytes);
            }
            if !(rel == "oci-layout"
                || rel == "index.json"
                || rel == "manifest.json"
                || rel == "repositories")
            {
                let digest = store.write_blob(None, open()?)?;
                contents.blobs.insert(rel, digest);
            }
        }
    }
    Ok(contents)
}

/// Imports every named image in the OCI layout or `docker save` archive at `path` (a
/// directory, a tar, or a gzipped tar) and returns the references now in the store.
pub fn import(store: &Store, path: &Path) -> Result<Vec<ImageRef>, ImportError> {
    let contents = if path.is_dir() {
        read_directory(store, path)?
    } else {
        read_tarball(store, path)?
    };
    // Hold what was written until the references are recorded, so a concurrent garbage
    // collection cannot take it.
    let _lease = store.lease(
        &format!("import:{}:{}", path.display(), std::process::id()),
        contents.blobs.values().cloned(),
        [],
        false,
    )?;
    let imported = if contents.json("manifest.json").is_some() {
        import_docker_save(store, &contents)?
    } else if contents.json("index.json").is_some() {
        import_oci_layout(store, &contents, path)?
    } else {
        return Err(ImportError::UnknownFormat(path.to_path_buf()));
    };
    if imported.is_empty() {
        return Err(ImportError::Unnamed(path.to_path_buf()));
    }
    Ok(imported)
}

fn blob_path_for(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

fn parse_json<'a, T: Deserialize<'a>>(path: &str, bytes: &'a [u8]) -> Result<T, ImportError> {
    serde_json::from_slice(bytes).map_err(|source| ImportError::InvalidJson {
        path: path.to_string(),
        source,
    })
}

fn parse_name(name: &str) -> Result<ImageRef, ImportError> {
    ImageRef::parse(name).map_err(|source| ImportError::BadName {
        name: name.to_string(),
        source,
    })
}

fn import_oci_layout(
    store: &Store,
    contents: &Contents,
    path: &Path,
) -> Result<Vec<ImageRef>, ImportError> {
    let index_bytes = contents
        .json("index.json")
        .ok_or_else(|| ImportError::Missing("index.json".into()))?;
    let index: manifest::Index = parse_json("index.json", index_bytes)?;
    let mut imported = Vec::new();
    for entry in &index.manifests {
        let name = entry
            .annotations
            .get(manifest::ANNOTATION_CONTAINERD_NAME)
            .or_else(|| entry.annotations.get(manifest::ANNOTATION_REF_NAME));
        let Some(name) = name else { continue };
        let reference = parse_name(name)?;
        let manifest_digest = resolve_platform(store, contents, entry)?;
        store.tag(&reference, &manifest_digest)?;
        imported.push(reference);
    }
    if imported.is_empty() && !index.manifests.is_empty() {
        return Err(ImportError::Unnamed(path.to_path_buf()));
    }
    Ok(imported)
}

/// Follows nested indexes down to the linux/amd64 image manifest; returns its digest.
fn resolve_platform(
    store: &Store,
    contents: &Contents,
    entry: &Descriptor,
) -> Result<String, ImportError> {
    let mut digest = entry.digest.clone();
    for _ in 0..8 {
        let path = blob_path_for(&digest);
        let stored = contents.blob(&path)?;
        if stored != digest {
            return Err(StoreError::DigestMismatch {
                expected: digest,
                actual: stored.to_string(),
            }
            .into());
        }
        let bytes = store.read_blob(&digest)?;
        match manifest::parse_manifest_or_index(&bytes).map_err(|source| {
            ImportError::InvalidJson {
                path: path.clone(),
                source,
            }
        })? {
            ManifestKind::Manifest(m) => {
                for d in std::iter::once(&m.config).chain(&m.layers) {
                    let p = blob_path_for(&d.digest);
                    let stored = contents.blob(&p)?;
                    if stored != d.digest {
                        return Err(StoreError::DigestMismatch {
                            expected: d.digest.clone(),
                            actual: stored.to_string(),
                        }
                        .into());
                    }
                }
                return Ok(digest);
            }
            ManifestKind::Index(i) => {
                digest = i
                    .linux_amd64()
                    .ok_or(ImportError::NoMatchingPlatform)?
                    .digest
                    .clone()
            }
        }
    }
    Err(ImportError::NoMatchingPlatform)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerSaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn import_docker_save(store: &Store, contents: &Contents) -> Result<Vec<ImageRef>, ImportError> {
    let bytes = contents
        .json("manifest.json")
        .ok_or_else(|| ImportError::Missing("manifest.json".into()))?;
    let entries: Vec<DockerSaveEntry> = parse_json("manifest.json", bytes)?;
    let mut imported = Vec::new();
    for entry in entries {
        let config_path = normalise(Path::new(&entry.config));
        let config_bytes = contents
            .json(&config_path)
            .ok_or_else(|| ImportError::Missing(config_path.clone()))?;
        let config_digest = store.write_blob_bytes(None, config_bytes)?;
        let mut layers = Vec::with_capacity(entry.layers.len());
        for layer in &entry.layers {
            let path = normalise(Path::new(layer));
            let digest = contents.blob(&path)?.to_string();
            let mut head = [0u8; 2];
            let mut blob = store.open_blob(&digest)?;
            let size = blob
                .metadata()
                .map_err(|source| ImportError::Read {
                    path: PathBuf::from(&path),
                    source,
                })?
                .len();
            let gzip = blob.read_exact(&mut head).is_ok() && head == [0x1f, 0x8b];
            layers.push(Descriptor {
                media_type: (if gzip {
                    manifest::DOCKER_LAYER_GZIP
                } else {
                    manifest::DOCKER_LAYER
                })
                .to_string(),
                digest,
                size,
                annotations: BTreeMap::new(),
                platform: None,
            });
        }
        // `docker save` has no manifest of its own; write the schema 2 manifest a registry
        // would have served for it.
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(manifest::DOCKER_MANIFEST.to_string()),
            config: Descriptor {
                media_type: manifest::DOCKER_CONFIG.to_string(),
                digest: config_digest,
                size: config_bytes.len() as u64,
                annotations: BTreeMap::new(),
                platform: None,
            },
            layers,
        };
        let manifest_bytes =
            serde_json::to_vec(&manifest).map_err(|source| ImportError::InvalidJson {
                path: "manifest.json".into(),
                source,
            })?;
        let manifest_digest = store.write_blob_bytes(None, &manifest_bytes)?;
        for tag in entry.repo_tags.unwrap_or_default() {
            let reference = parse_name(&tag)?;
            store.tag(&reference, &manifest_digest)?;
            imported.push(reference);
        }
    }
    Ok(imported)
}
