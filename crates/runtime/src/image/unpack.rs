//! Applying layer tarballs to a directory.
//!
//! Two ways to represent deletions, as containerd has: [`Whiteouts::Apply`] performs them
//! (`.wh.<name>` deletes `<name>`, `.wh..wh..opq` empties the directory of what lower layers
//! put there) to build a flat root filesystem; [`Whiteouts::Overlay`] records them the way
//! overlayfs reads them (a 0/0 character device, the `trusted.overlay.opaque=y` xattr) so that
//! each layer can be unpacked alone into its own snapshot directory.
//!
//! Every path is resolved inside the destination: entries naming `..` are refused, and symlinks
//! met on the way are followed as if the destination were `/` (an absolute target is re-rooted,
//! a relative one may not climb above the root), as containerd's `fs.RootPath` does.

use std::collections::HashSet;
use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Symlinks followed while resolving one path before giving up, as Linux's MAXSYMLINKS.
const MAX_SYMLINKS: usize = 40;

/// Why a layer could not be applied. A refused layer (`PathEscapes`, `Unsupported…`) is the
/// image's fault and will fail again; `Io` may be a full disk.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry {entry:?} escapes the root filesystem: refusing to unpack it")]
    PathEscapes { entry: String },
    #[error("layer entry {entry:?}: {step}: {source}")]
    Entry {
        entry: String,
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("reading the layer tar stream: {0}")]
    Read(#[source] io::Error),
    #[error(
        "layer is compressed with {0}, which Skiff does not support: use gzip or uncompressed layers"
    )]
    UnsupportedCompression(&'static str),
    #[error("hard link {entry:?} points at {target:?}, which is missing or a directory")]
    BadHardLink { entry: String, target: String },
    #[error("layer content does not match its diff ID: expected {expected}, got {actual}")]
    DiffIdMismatch { expected: String, actual: String },
}

/// How whiteouts in a layer are represented in the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// Perform the deletions: the destination holds the layers below.
    Apply,
    /// Record them for overlayfs: the destination is this layer's own snapshot directory.
    Overlay,
}

/// What unpacking learnt about the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// `sha256:` of the uncompressed tar stream (the layer's diff ID).
    pub diff_id: String,
    pub entries: usize,
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Returns a reader of the uncompressed tar, judging compression from the magic bytes rather
/// than the media type (`docker save` layers carry none, and some registries mislabel).
pub fn decompressed(
    reader: impl Read + Send + 'static,
) -> Result<Box<dyn Read + Send>, UnpackError> {
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    let head = reader.fill_buf().map_err(UnpackError::Read)?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(reader)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Err(UnpackError::UnsupportedCompression("zstd"))
    } else if head.starts_with(b"BZh") {
        Err(UnpackError::UnsupportedCompression("bzip2"))
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Err(UnpackError::UnsupportedCompression("xz"))
    } else {
        Ok(Box::new(reader))
    }
}

/// Whether this process may create devices and set ownership (it runs as root).
pub fn is_privileged() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Unpacks one layer (gzip or plain tar) into `dest`, which must exist. When `expected_diff_id`
/// is given the uncompressed stream is checked against it after the last entry.
pub fn unpack_layer(
    reader: impl Read + Send + 'static,
    dest: &Path,
    whiteouts: Whiteouts,
    expected_diff_id: Option<&str>,
) -> Result<Unpacked, UnpackError> {
    let privileged = is_privileged();
    let tar_stream = HashingReader {
        inner: decompressed(reader)?,
        hasher: Sha256::new(),
    };
    let mut archive = tar::Archive::new(tar_stream);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(privileged);
    archive.set_unpack_xattrs(privileged);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    let mut created: HashSet<PathBuf> = HashSet::new();
    let mut count = 0;
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        count += 1;
        apply_entry(&mut entry, dest, whiteouts, privileged, &mut created)?;
    }
    let mut tar_stream = archive.into_inner();
    // The diff ID covers the whole stream, including the end-of-archive blocks tar stops at.
    io::copy(&mut tar_stream, &mut io::sink()).map_err(UnpackError::Read)?;
    let diff_id = format!("sha256:{}", hex::encode(tar_stream.hasher.finalize()));
    if let Some(expected) = expected_diff_id
        && expected != diff_id
    {
        return Err(UnpackError::DiffIdMismatch {
            expected: expected.to_string(),
            actual: diff_id,
        });
    }
    Ok(Unpacked {
        diff_id,
        entries: count,
    })
}

/// The entry's path relative to the root, or an error if it names `..`.
fn clean_entry_path(raw: &Path) -> Result<PathBuf, UnpackError> {
    let mut out = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(UnpackError::PathEscapes {
                    entry: raw.display().to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// Resolves `rel` (already free of `..`) inside `root`, following symlinks scoped to `root`,
/// creating missing directories when `create` is set. Returns `None` if a component is missing
/// and `create` is unset.
fn resolve_dir(
    root: &Path,
    rel: &Path,
    create: bool,
    entry: &str,
) -> Result<Option<PathBuf>, UnpackError> {
    let escapes = || UnpackError::PathEscapes {
        entry: entry.to_string(),
    };
    let mut stack: Vec<OsString> = Vec::new();
    let mut pending: Vec<OsString> = rel
        .components()
        .rev()
        .map(|c| c.as_os_str().to_os_string())
        .collect();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        if part == OsStr::new(".") || part.is_empty() || part == OsStr::new("/") {
            continue;
        }
        if part == OsStr::new("..") {
            // Only symlink targets reach here: entry names with `..` were refused. A relative
            // link that climbs above the root cannot mean anything inside the image.
            if stack.pop().is_none() {
                return Err(escapes());
            }
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&stack);
        candidate.push(&part);
        match fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_SYMLINKS {
                    return Err(UnpackError::Entry {
                        entry: entry.to_string(),
                        step: "resolve symlinks",
                        source: io::Error::from_raw_os_error(libc::ELOOP),
                    });
                }
                let target = fs::read_link(&candidate).map_err(|source| UnpackError::Entry {
                    entry: entry.to_string(),
                    step: "read symlink",
                    source,
                })?;
                if target.is_absolute() {
                    stack.clear();
                }
                pending.extend(
                    target
                        .components()
                        .rev()
                        .map(|c| c.as_os_str().to_os_string()),
                );
            }
            Ok(meta) if meta.is_dir() => stack.push(part),
            Ok(_) => {
                return Err(UnpackError::Entry {
                    entry: entry.to_string(),
                    step: "resolve parent directory",
                    source: io::Error::from_raw_os_error(libc::ENOTDIR),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                fs::create_dir(&candidate).map_err(|source| UnpackError::Entry {
                    entry: entry.to_string(),
                    step: "create parent directory",
                    source,
                })?;
                stack.push(part);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(UnpackError::Entry {
                    entry: entry.to_string(),
                    step: "stat parent directory",
                    source,
                });
            }
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&stack);
    Ok(Some(out))
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let p = c_path(path)?;
    let n = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: both strings are NUL-terminated and outlive the call; value is a valid slice.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn mknod(
    path: &Path,
    kind: nix::sys::stat::SFlag,
    mode: u32,
    major: u64,
    minor: u64,
) -> io::Result<()> {
    let perm = nix::sys::stat::Mode::from_bits_truncate(mode & 0o7777);
    nix::sys::stat::mknod(path, kind, perm, nix::sys::stat::makedev(major, minor))
        .map_err(io::Error::from)
}

/// An overlayfs whiteout: a character device 0/0 (Documentation/filesystems/overlayfs.rst).
fn overlay_whiteout(path: &Path) -> io::Result<()> {
    remove_any(path)?;
    mknod(path, nix::sys::stat::SFlag::S_IFCHR, 0, 0, 0)
}

fn apply_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    dest: &Path,
    whiteouts: Whiteouts,
    privileged: bool,
    created: &mut HashSet<PathBuf>,
) -> Result<(), UnpackError> {
    let raw = entry.path().map_err(UnpackError::Read)?.into_owned();
    let name = raw.display().to_string();
    let rel = clean_entry_path(&raw)?;
    let fail = |step: &'static str| {
        let entry = name.clone();
        move |source: io::Error| UnpackError::Entry {
            entry,
            step,
            source,
        }
    };
    let Some(file_name) = rel.file_name().map(OsStr::to_os_string) else {
        // The root itself (`./`): nothing to create.
        return Ok(());
    };
    let parent_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();
    let file_name_str = file_name.to_string_lossy();

    if let Some(hidden) = file_name_str.strip_prefix(WHITEOUT_PREFIX) {
        if file_name_str == OPAQUE_MARKER {
            let Some(parent) = resolve_dir(dest, &parent_rel, true, &name)? else {
                return Ok(());
            };
            match whiteouts {
                Whiteouts::Overlay => set_xattr(&parent, "trusted.overlay.opaque", b"y")
                    .map_err(fail("mark directory opaque"))?,
                Whiteouts::Apply => {
                    // Opaque means "hide what the lower layers have here"; what this layer
                    // already put in the directory stays.
                    for child in fs::read_dir(&parent).map_err(fail("list opaque directory"))? {
                        let child = child.map_err(fail("list opaque directory"))?;
                        if !created.contains(&parent_rel.join(child.file_name())) {
                            remove_any(&child.path()).map_err(fail("empty opaque directory"))?;
                        }
                    }
                }
            }
            return Ok(());
        }
        if hidden.starts_with(".wh.") {
            // Other AUFS metadata (`.wh..wh.plnk`, `.wh..wh.aufs`) describes nothing to apply.
            return Ok(());
        }
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err(UnpackError::PathEscapes { entry: name });
        }
        match whiteouts {
            Whiteouts::Apply => {
                if let Some(parent) = resolve_dir(dest, &parent_rel, false, &name)? {
                    remove_any(&parent.join(hidden)).map_err(fail("apply whiteout"))?;
                }
            }
            Whiteouts::Overlay => {
                let parent = resolve_dir(dest, &parent_rel, true, &name)?.ok_or(
                    UnpackError::PathEscapes {
                        entry: name.clone(),
                    },
                )?;
                overlay_whiteout(&parent.join(hidden)).map_err(fail("create overlay whiteout"))?;
            }
        }
        return Ok(());
    }

    let parent = resolve_dir(dest, &parent_rel, true, &name)?.ok_or(UnpackError::PathEscapes {
        entry: name.clone(),
    })?;
    let target = parent.join(&file_name);
    let kind = entry.header().entry_type();
    let existing = fs::symlink_metadata(&target).ok();
    // A later layer replaces what a lower one had at the same path, except that directories
    // merge (their contents stay).
    if let Some(meta) = &existing
        && !(kind.is_dir() && meta.is_dir())
    {
        remove_any(&target).map_err(fail("replace existing path"))?;
    }

    use tar::EntryType;
    match kind {
        EntryType::Regular
        | EntryType::Continuous
        | EntryType::GNUSparse
        | EntryType::Directory
        | EntryType::Symlink => {
            entry.unpack(&target).map_err(fail("unpack"))?;
        }
        EntryType::Link => {
            let link =
                entry
                    .link_name()
                    .map_err(UnpackError::Read)?
                    .ok_or(UnpackError::BadHardLink {
                        entry: name.clone(),
                        target: String::new(),
                    })?;
            let link_rel = clean_entry_path(&link)?;
            let bad = || UnpackError::BadHardLink {
                entry: name.clone(),
                target: link.display().to_string(),
            };
            let link_name = link_rel.file_name().ok_or_else(bad)?.to_os_string();
            let link_parent = resolve_dir(
                dest,
                link_rel.parent().unwrap_or(Path::new("")),
                false,
                &name,
            )?
            .ok_or_else(bad)?;
            let source = link_parent.join(link_name);
            match fs::symlink_metadata(&source) {
                Ok(meta) if !meta.is_dir() => {
                    fs::hard_link(&source, &target).map_err(fail("create hard link"))?
                }
                _ => return Err(bad()),
            }
        }
        EntryType::Char | EntryType::Block | EntryType::Fifo => {
            let header = entry.header();
            let mode = header.mode().map_err(UnpackError::Read)?;
            let major = header
                .device_major()
                .map_err(UnpackError::Read)?
                .unwrap_or(0) as u64;
            let minor = header
                .device_minor()
                .map_err(UnpackError::Read)?
                .unwrap_or(0) as u64;
            let sflag = match kind {
                EntryType::Char => nix::sys::stat::SFlag::S_IFCHR,
                EntryType::Block => nix::sys::stat::SFlag::S_IFBLK,
                _ => nix::sys::stat::SFlag::S_IFIFO,
            };
            // Without CAP_MKNOD devices cannot be made; the runtime bind-mounts /dev anyway,
            // so an unprivileged unpack (tests, `skiff image export`) skips them.
            if kind != EntryType::Fifo && !privileged {
                return Ok(());
            }
            mknod(&target, sflag, mode, major, minor).map_err(fail("create device node"))?;
            if privileged {
                let uid = header.uid().map_err(UnpackError::Read)? as u32;
                let gid = header.gid().map_err(UnpackError::Read)? as u32;
                nix::unistd::fchownat(
                    None,
                    &target,
                    Some(nix::unistd::Uid::from_raw(uid)),
                    Some(nix::unistd::Gid::from_raw(gid)),
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| UnpackError::Entry {
                    entry: name.clone(),
                    step: "chown device node",
                    source: e.into(),
                })?;
            }
        }
        // PAX and GNU extension headers are folded into the next entry by the tar crate; other
        // types (sockets, volume labels) have no file to create.
        _ => return Ok(()),
    }
    created.insert(rel);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn add_file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, path, data).unwrap();
    }

    fn add_raw(
        b: &mut tar::Builder<Vec<u8>>,
        path: &str,
        kind: tar::EntryType,
        link: Option<&str>,
    ) {
        let mut h = tar::Header::new_old();
        h.set_entry_type(kind);
        h.set_size(0);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        // Write the name bytes directly: the builder's helpers refuse `..`, which is the point.
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(link) = link {
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_cksum();
        b.append(&h, io::empty()).unwrap();
    }

    #[test]
    fn whiteouts_and_opaque_dirs_apply() {
        let dir = tempfile::tempdir().unwrap();
        let lower = tar_of(|b| {
            add_file(b, "etc/keep", b"k");
            add_file(b, "etc/gone", b"g");
            add_file(b, "opaque/old", b"o");
        });
        let upper = tar_of(|b| {
            add_file(b, "etc/.wh.gone", b"");
            add_file(b, "opaque/new", b"n");
            add_file(b, "opaque/.wh..wh..opq", b"");
        });
        let first = unpack_layer(
            io::Cursor::new(lower.clone()),
            dir.path(),
            Whiteouts::Apply,
            None,
        )
        .unwrap();
        assert_eq!(first.diff_id, crate::image::store::digest_of(&lower));
        unpack_layer(io::Cursor::new(upper), dir.path(), Whiteouts::Apply, None).unwrap();
        assert!(dir.path().join("etc/keep").exists());
        assert!(!dir.path().join("etc/gone").exists());
        assert!(!dir.path().join("opaque/old").exists());
        assert_eq!(fs::read(dir.path().join("opaque/new")).unwrap(), b"n");
    }

    #[test]
    fn parent_dir_entries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let evil = tar_of(|b| add_raw(b, "../evil", tar::EntryType::Regular, None));
        let err =
            unpack_layer(io::Cursor::new(evil), dir.path(), Whiteouts::Apply, None).unwrap_err();
        assert!(matches!(err, UnpackError::PathEscapes { .. }), "{err}");
        let evil_link = tar_of(|b| {
            add_file(b, "a", b"a");
            add_raw(b, "b", tar::EntryType::Link, Some("../../etc/passwd"));
        });
        assert!(matches!(
            unpack_layer(
                io::Cursor::new(evil_link),
                dir.path(),
                Whiteouts::Apply,
                None
            ),
            Err(UnpackError::PathEscapes { .. })
        ));
    }

    #[test]
    fn symlinks_stay_inside_the_root() {
        let host = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let abs = host.path().to_str().unwrap().to_string();
        let layer = tar_of(|b| {
            add_raw(b, "abs", tar::EntryType::Symlink, Some(&abs));
            add_file(b, "abs/pwned", b"x");
        });
        unpack_layer(io::Cursor::new(layer), dir.path(), Whiteouts::Apply, None).unwrap();
        assert!(
            !host.path().join("pwned").exists(),
            "wrote through an absolute symlink to the host"
        );
        assert!(
            dir.path()
                .join(abs.trim_start_matches('/'))
                .join("pwned")
                .exists()
        );

        let climbing = tar_of(|b| {
            add_raw(
                b,
                "up",
                tar::EntryType::Symlink,
                Some("../../../../../../.."),
            );
            add_file(b, "up/pwned", b"x");
        });
        assert!(matches!(
            unpack_layer(
                io::Cursor::new(climbing),
                dir.path(),
                Whiteouts::Apply,
                None
            ),
            Err(UnpackError::PathEscapes { .. })
        ));
    }

    #[test]
    fn hard_links_and_diff_id_check() {
        let dir = tempfile::tempdir().unwrap();
        let layer = tar_of(|b| {
            add_file(b, "bin/busybox", b"elf");
            add_raw(b, "bin/sh", tar::EntryType::Link, Some("bin/busybox"));
        });
        let wrong = crate::image::store::digest_of(b"nope");
        assert!(matches!(
            unpack_layer(
                io::Cursor::new(layer.clone()),
                dir.path(),
                Whiteouts::Apply,
                Some(&wrong)
            ),
            Err(UnpackError::DiffIdMismatch { .. })
        ));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &layer).unwrap();
        let unpacked = unpack_layer(
            io::Cursor::new(gz.finish().unwrap()),
            dir.path(),
            Whiteouts::Apply,
            None,
        )
        .unwrap();
        assert_eq!(unpacked.diff_id, crate::image::store::digest_of(&layer));
        assert_eq!(fs::read(dir.path().join("bin/sh")).unwrap(), b"elf");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            fs::metadata(dir.path().join("bin/sh")).unwrap().ino(),
            fs::metadata(dir.path().join("bin/busybox")).unwrap().ino()
        );
        assert!(matches!(
            unpack_layer(
                io::Cursor::new(vec![0x28, 0xb5, 0x2f, 0xfd, 0, 0]),
                dir.path(),
                Whiteouts::Apply,
                None
            ),
            Err(UnpackError::UnsupportedCompression("zstd"))
        ));
    }
}
