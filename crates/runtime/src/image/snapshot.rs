//! Snapshots: each layer unpacked once into `snapshots/<chain-id>` (overlay whiteouts, see
//! `unpack`), and a container's root filesystem as an overlay of them with its own upper and
//! work directories, the layout of containerd's overlayfs snapshotter.
//!
//! ```text
//! <container_dir>/rootfs   the overlay mount point
//! <container_dir>/upper    the container's writes
//! <container_dir>/work     overlayfs' scratch space (same filesystem as upper)
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use super::store::{ImageRecord, Store, StoreError, unique_name};
use super::unpack::{self, UnpackError, Whiteouts};

/// Errors preparing or removing a root filesystem. Mount failures usually mean the process is
/// not root or overlayfs is missing; none are worth retrying unchanged.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("unpacking layer {layer}: {source}")]
    Unpack {
        layer: String,
        #[source]
        source: UnpackError,
    },
    #[error("{step} {path}: {source}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("container directory {0} must be an absolute path")]
    RelativeContainerDir(PathBuf),
    #[error("path {0} contains ':' or ',' which overlayfs mount options cannot carry")]
    UnsafeOverlayPath(PathBuf),
    #[error("mounting overlayfs at {target}: {source} (needs root and the overlay filesystem)")]
    Mount {
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("unmounting {target}: {source}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
}

fn io_err<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        step,
        path: path.to_path_buf(),
        source,
    }
}

/// A mounted container root filesystem. Plain data: nothing is unmounted on drop, because the
/// rootfs must outlive an agent restart; call [`cleanup_rootfs`] when the container is removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rootfs {
    /// The mount point, `<container_dir>/rootfs`: the OCI bundle's `root.path`.
    pub path: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Layer directories, bottom layer first.
    pub layers: Vec<PathBuf>,
}

/// Unpacks (once) every layer of `image` into its snapshot directory and returns them bottom
/// first. Concurrent callers are safe: each unpacks into a private directory and the first
/// `rename(2)` wins.
pub fn ensure_snapshots(store: &Store, image: &ImageRecord) -> Result<Vec<PathBuf>, SnapshotError> {
    let mut dirs = Vec::with_capacity(image.layers.len());
    for layer in &image.layers {
        let dir = store.snapshot_dir(&layer.chain_id)?;
        if !dir.is_dir() {
            let tmp = store.snapshots_dir().join(unique_name("tmp"));
            fs::create_dir(&tmp).map_err(io_err("create snapshot directory", &tmp))?;
            let result = store
                .open_blob(&layer.digest)
                .map_err(SnapshotError::from)
                .and_then(|blob| {
                    unpack::unpack_layer(blob, &tmp, Whiteouts::Overlay, Some(&layer.diff_id))
                        .map_err(|source| SnapshotError::Unpack {
                            layer: layer.digest.clone(),
                            source,
                        })
                })
                .and_then(|_| match fs::rename(&tmp, &dir) {
                    Ok(()) => Ok(()),
                    // Someone else finished the same layer first.
                    Err(_) if dir.is_dir() => {
                        let _ = fs::remove_dir_all(&tmp);
                        Ok(())
                    }
                    Err(source) => Err(SnapshotError::Io {
                        step: "rename snapshot into place",
                        path: dir.clone(),
                        source,
                    }),
                });
            if let Err(e) = result {
                let _ = fs::remove_dir_all(&tmp);
                return Err(e);
            }
        }
        dirs.push(dir);
    }
    Ok(dirs)
}

/// Applies every layer of `image` in order into `dest` (a plain directory, no overlay): for
/// exporting a root filesystem or running without overlayfs.
pub fn unpack_image(store: &Store, image: &ImageRecord, dest: &Path) -> Result<(), SnapshotError> {
    fs::create_dir_all(dest).map_err(io_err("create directory", dest))?;
    for layer in &image.layers {
        let blob = store.open_blob(&layer.digest)?;
        unpack::unpack_layer(blob, dest, Whiteouts::Apply, Some(&layer.diff_id)).map_err(
            |source| SnapshotError::Unpack {
                layer: layer.digest.clone(),
                source,
            },
        )?;
    }
    Ok(())
}

fn lease_name(container_dir: &Path) -> String {
    format!("rootfs:{}", container_dir.display())
}

/// Whether `path` is a mount point, from /proc/self/mountinfo (field 5, octal-escaped).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    info.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .is_some_and(|m| unescape_mountinfo(m) == wanted)
    })
}

fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            out.push(
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0'),
            );
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mounts the image's root filesystem at `<container_dir>/rootfs`. Idempotent: an existing
/// mount (an agent restarting next to a running container) is kept as it is.
pub fn prepare_rootfs(
    store: &Store,
    image: &ImageRecord,
    container_dir: &Path,
) -> Result<Rootfs, SnapshotError> {
    if !container_dir.is_absolute() {
        return Err(SnapshotError::RelativeContainerDir(
            container_dir.to_path_buf(),
        ));
    }
    // Lease first so a concurrent `skiff image rm` cannot collect the layers under us.
    store.lease(
        &lease_name(container_dir),
        image.layers.iter().map(|l| l.digest.clone()),
        image.layers.iter().map(|l| l.chain_id.clone()),
        true,
    )?;
    let mut layers = ensure_snapshots(store, image)?;
    if layers.is_empty() {
        // overlayfs needs a lower directory; an image without layers gets an empty one.
        let empty = store.snapshots_dir().join("empty");
        fs::create_dir_all(&empty).map_err(io_err("create directory", &empty))?;
        layers.push(empty);
    }
    let rootfs = Rootfs {
        path: container_dir.join("rootfs"),
        upper: container_dir.join("upper"),
        work: container_dir.join("work"),
        layers,
    };
    for dir in [&rootfs.path, &rootfs.upper, &rootfs.work] {
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    }
    if is_mounted(&rootfs.path) {
        return Ok(rootfs);
    }
    for path in rootfs.layers.iter().chain([&rootfs.upper, &rootfs.work]) {
        if path.to_string_lossy().contains([':', ',']) {
            return Err(SnapshotError::UnsafeOverlayPath(path.clone()));
        }
    }
    // lowerdir lists the top layer first.
    let lower: Vec<String> = rootfs
        .layers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        rootfs.upper.display(),
        rootfs.work.display()
    );
    nix::mount::mount(
        Some("overlay"),
        &rootfs.path,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|source| SnapshotError::Mount {
        target: rootfs.path.clone(),
        source,
    })?;
    Ok(rootfs)
}

/// Unmounts and removes the root filesystem under `container_dir` and releases its lease.
/// Idempotent; works from the directory alone so a restarted agent can clean up.
pub fn cleanup_rootfs(store: &Store, container_dir: &Path) -> Result<(), SnapshotError> {
    let rootfs = container_dir.join("rootfs");
    while is_mounted(&rootfs) {
        match nix::mount::umount2(&rootfs, MntFlags::empty()) {
            Ok(()) => {}
            // Something still holds it (a process that is exiting): detach it now; the kernel
            // frees it when the last user goes.
            Err(nix::Error::EBUSY) => {
                nix::mount::umount2(&rootfs, MntFlags::MNT_DETACH).map_err(|source| {
                    SnapshotError::Unmount {
                        target: rootfs.clone(),
                        source,
                    }
                })?
            }
            Err(source) => {
                return Err(SnapshotError::Unmount {
                    target: rootfs.clone(),
                    source,
                });
            }
        }
    }
    for dir in [
        rootfs,
        container_dir.join("upper"),
        container_dir.join("work"),
    ] {
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(SnapshotError::Io {
                    step: "remove",
                    path: dir,
                    source: e,
                });
            }
            _ => {}
        }
    }
    store.release_lease(&lease_name(container_dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert!(is_mounted(Path::new("/proc")) || !Path::new("/proc/self").exists());
    }
}
