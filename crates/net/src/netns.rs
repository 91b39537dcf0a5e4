//! Named network namespaces under `/run/netns`, made the way `ip netns add` makes them, so `ip
//! netns exec <name>` and the CNI plugins (which take a path in `CNI_NETNS`) work on them.
//!
//! * [`Netns`] is the narrow trait the agent depends on; [`HostNetns`] is the real one and
//!   [`FakeNetns`] an in-memory recording fake for callers' tests.
//! * [`create`]: a fresh thread `unshare(CLONE_NEWNET)`s, bind-mounts its
//!   `/proc/thread-self/ns/net` onto `/run/netns/<name>` (which keeps the namespace alive after the
//!   thread ends) and brings `lo` up. Only that thread ever lives in the new namespace.
//! * [`delete`]: lazy unmount and unlink; idempotent.
//! * [`run_in`]: runs a closure on a thread joined to a namespace (`setns`), for tests and
//!   diagnostics.
//!
//! The namespace must be created from the root mount namespace: a bind mount made inside a
//! temporary mount namespace (such as the one `ip netns exec` makes) dies with it and leaves a
//! dead entry behind.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::libc;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

/// Where `ip netns` keeps its namespaces (iproute2's `NETNS_RUN_DIR`).
pub const DEFAULT_RUN_DIR: &str = "/run/netns";

/// The `f_type` statfs reports for a namespace file (`NSFS_MAGIC` in linux/magic.h).
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Errors from namespace operations. None is retryable as such: they are permission, name or
/// kernel errors that a retry does not change.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("invalid network namespace name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("network namespace {} already exists", path.display())]
    AlreadyExists { path: PathBuf },
    #[error("creating the network namespace directory {}: {source}", path.display())]
    CreateRunDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("making {} a shared mount (needed so namespace mounts propagate): {source}", path.display())]
    MakeShared {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("creating the mount point {}: {source}", path.display())]
    CreateMountPoint {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unshare(CLONE_NEWNET) for {}: {source} (creating network namespaces needs CAP_SYS_ADMIN)", path.display())]
    Unshare {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("bind-mounting the new network namespace onto {}: {source}", path.display())]
    BindMount {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("bringing up lo in network namespace {}: {source}", path.display())]
    LoopbackUp {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("unmounting network namespace {}: {source}", path.display())]
    Unmount {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("removing network namespace file {}: {source}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("opening network namespace {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("joining network namespace {} (setns): {source}", path.display())]
    Join {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("the thread working in network namespace {} panicked", path.display())]
    ThreadPanicked { path: PathBuf },
}

/// The namespace operations the agent needs, so pod logic can be tested against [`FakeNetns`].
pub trait Netns: Send + Sync {
    /// Creates the namespace `name` and returns its path (what CNI gets as `CNI_NETNS`).
    fn create(&self, name: &str) -> Result<PathBuf, NetnsError>;
    /// Removes the namespace `name`; succeeds when it does not exist.
    fn delete(&self, name: &str) -> Result<(), NetnsError>;
    /// Whether `name` exists as a live namespace (not a dead mount point).
    fn exists(&self, name: &str) -> bool;
    /// The path `name` has (or would have).
    fn path(&self, name: &str) -> PathBuf;
}

/// Namespaces on this host, under a run directory (`/run/netns` unless a test says otherwise).
#[derive(Debug, Clone)]
pub struct HostNetns {
    run_dir: PathBuf,
}

impl Default for HostNetns {
    fn default() -> Self {
        HostNetns::new()
    }
}

impl HostNetns {
    /// Namespaces under `/run/netns`, shared with `ip netns`.
    pub fn new() -> Self {
        HostNetns {
            run_dir: PathBuf::from(DEFAULT_RUN_DIR),
        }
    }

    /// Namespaces under another directory.
    pub fn with_run_dir(run_dir: impl Into<PathBuf>) -> Self {
        HostNetns {
            run_dir: run_dir.into(),
        }
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }
}

impl Netns for HostNetns {
    fn create(&self, name: &str) -> Result<PathBuf, NetnsError> {
        validate_name(name)?;
        let path = self.run_dir.join(name);
        prepare_run_dir(&self.run_dir)?;
        // O_EXCL: two creators of one name must not both succeed (ip netns add fails the same way).
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o000)
            .open(&path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(NetnsError::AlreadyExists { path });
            }
            Err(source) => return Err(NetnsError::CreateMountPoint { path, source }),
        }
        let made = std::thread::scope(|scope| {
            scope
                .spawn(|| unshare_and_mount(&path))
                .join()
                .unwrap_or_else(|_| Err(NetnsError::ThreadPanicked { path: path.clone() }))
        });
        if let Err(e) = made {
            // Leave nothing behind, not even the empty mount point.
            let _ = umount2(&path, MntFlags::MNT_DETACH);
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        tracing::debug!(path = %path.display(), "created network namespace");
        Ok(path)
    }

    fn delete(&self, name: &str) -> Result<(), NetnsError> {
        validate_name(name)?;
        remove_at(&self.run_dir.join(name))
    }

    fn exists(&self, name: &str) -> bool {
        validate_name(name).is_ok() && is_netns(&self.run_dir.join(name))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.run_dir.join(name)
    }
}

/// Creates `/run/netns/<name>`; see [`HostNetns::create`].
pub fn create(name: &str) -> Result<PathBuf, NetnsError> {
    HostNetns::new().create(name)
}

/// Removes `/run/netns/<name>`; idempotent.
pub fn delete(name: &str) -> Result<(), NetnsError> {
    HostNetns::new().delete(name)
}

/// Whether `/run/netns/<name>` is a live network namespace.
pub fn exists(name: &str) -> bool {
    HostNetns::new().exists(name)
}

/// Unmounts and removes a namespace file by path; idempotent (a missing file, or one that is
/// not a mount point any more, is not an error).
pub fn remove_at(path: &Path) -> Result<(), NetnsError> {
    // MNT_DETACH as `ip netns del` does: a process still inside keeps the namespace alive, but
    // the name goes away now.
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(source) => {
            return Err(NetnsError::Unmount {
                path: path.to_path_buf(),
                source,
            });
        }
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetnsError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Whether `path` is a namespace file (an nsfs mount), not a plain file left by a namespace
/// that died with its mount namespace.
// fs_type_t is i64 on x86_64 glibc but narrower elsewhere; the cast is for those.
#[allow(clippy::unnecessary_cast)]
pub fn is_netns(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 as i64 == NSFS_MAGIC)
        .unwrap_or(false)
}

/// Runs `f` on a new thread that has joined the network namespace at `path`, and returns what it
/// returns. Sockets `f` creates belong to that namespace and stay there when used elsewhere.
pub fn run_in<T, F>(path: &Path, f: F) -> Result<T, NetnsError>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let file = File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                // A fresh thread, so no other work ever runs in the joined namespace.
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Join {
                    path: path.to_path_buf(),
                    source,
                })?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| {
                Err(NetnsError::ThreadPanicked {
                    path: path.to_path_buf(),
                })
            })
    })
}

fn validate_name(name: &str) -> Result<(), NetnsError> {
    let reason = if name.is_empty() {
        "must not be empty"
    } else if name == "." || name == ".." {
        "must not be . or .."
    } else if name.contains('/') || name.contains('\0') {
        "must not contain / or NUL"
    } else if name.len() > 255 {
        "must be at most 255 bytes"
    } else {
        return Ok(());
    };
    Err(NetnsError::InvalidName {
        name: name.to_string(),
        reason,
    })
}

/// Makes the run directory a shared mount point, as iproute2 does, so a namespace mounted later
/// shows up in mount namespaces that were copied from this one (containers, `ip netns exec`).
fn prepare_run_dir(run_dir: &Path) -> Result<(), NetnsError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(run_dir)
        .map_err(|source| NetnsError::CreateRunDir {
            path: run_dir.to_path_buf(),
            source,
        })?;
    let make_shared = || {
        mount(
            None::<&str>,
            run_dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match make_shared() {
        Ok(()) => Ok(()),
        // EINVAL: not a mount point yet. Bind it onto itself first, then retry.
        Err(Errno::EINVAL) => mount(
            Some(run_dir),
            run_dir,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .and_then(|()| make_shared())
        .map_err(|source| NetnsError::MakeShared {
            path: run_dir.to_path_buf(),
            source,
        }),
        Err(source) => Err(NetnsError::MakeShared {
            path: run_dir.to_path_buf(),
            source,
        }),
    }
}

/// Runs on a dedicated thread: only this thread moves to the new namespace, and it ends right
/// after, so no other work of the process ever runs there.
fn unshare_and_mount(path: &Path) -> Result<(), NetnsError> {
    unshare(CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Unshare {
        path: path.to_path_buf(),
        source,
    })?;
    // thread-self, not self: the process's main thread is still in the old namespace.
    mount(
        Some("/proc/thread-self/ns/net"),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|source| NetnsError::BindMount {
        path: path.to_path_buf(),
        source,
    })?;
    loopback_up().map_err(|source| NetnsError::LoopbackUp {
        path: path.to_path_buf(),
        source,
    })
}

/// Sets IFF_UP on `lo` of the calling thread's namespace (a new namespace starts with it down).
fn loopback_up() -> Result<(), Errno> {
    // SAFETY: socket() has no memory effects; the fd is owned right away.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(Errno::last());
    }
    // SAFETY: raw is a fresh descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write an ifreq we own, by pointer.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(Errno::last());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(Errno::last());
        }
    }
    Ok(())
}

/// One call made on a [`FakeNetns`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetnsCall {
    Create(String),
    Delete(String),
}

/// An in-memory [`Netns`] that records calls and touches nothing, for tests of the agent.
/// It behaves like the real one where callers can observe it: creating an existing name fails,
/// deleting is idempotent.
#[derive(Debug)]
pub struct FakeNetns {
    run_dir: PathBuf,
    state: Mutex<FakeState>,
}

#[derive(Debug, Default)]
struct FakeState {
    live: BTreeSet<String>,
    calls: Vec<NetnsCall>,
    fail_create: bool,
}

impl FakeNetns {
    /// Paths handed out are `<run_dir>/<name>`; nothing is created there.
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        FakeNetns {
            run_dir: run_dir.into(),
            state: Mutex::new(FakeState::default()),
        }
    }

    /// Calls so far, in order.
    pub fn calls(&self) -> Vec<NetnsCall> {
        self.lock().calls.clone()
    }

    /// Names that exist now.
    pub fn live(&self) -> Vec<String> {
        self.lock().live.iter().cloned().collect()
    }

    /// Makes every later `create` fail as the kernel would refuse it (EPERM).
    pub fn fail_creates(&self, fail: bool) {
        self.lock().fail_create = fail;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        // A panic while holding this lock only happens in a failing test; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Netns for FakeNetns {
    fn create(&self, name: &str) -> Result<PathBuf, NetnsError> {
        validate_name(name)?;
        let path = self.run_dir.join(name);
        let mut state = self.lock();
        state.calls.push(NetnsCall::Create(name.to_string()));
        if state.fail_create {
            return Err(NetnsError::Unshare {
                path,
                source: Errno::EPERM,
            });
        }
        if !state.live.insert(name.to_string()) {
            return Err(NetnsError::AlreadyExists { path });
        }
        Ok(path)
    }

    fn delete(&self, name: &str) -> Result<(), NetnsError> {
        validate_name(name)?;
        let mut state = self.lock();
        state.calls.push(NetnsCall::Delete(name.to_string()));
        state.live.remove(name);
        Ok(())
    }

    fn exists(&self, name: &str) -> bool {
        self.lock().live.contains(name)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.run_dir.join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        (unsafe { libc::geteuid() }) == 0
    }

    #[test]
    fn names_are_validated() {
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(
                matches!(validate_name(bad), Err(NetnsError::InvalidName { .. })),
                "{bad:?}"
            );
        }
        assert!(validate_name(&"x".repeat(256)).is_err());
        assert!(validate_name("skiff-pod-1").is_ok());
    }

    #[test]
    fn fake_records_and_behaves_like_the_real_one() {
        let fake = FakeNetns::new("/fake/netns");
        assert_eq!(
            fake.create("a").expect("create"),
            PathBuf::from("/fake/netns/a")
        );
        assert!(matches!(
            fake.create("a"),
            Err(NetnsError::AlreadyExists { .. })
        ));
        assert!(fake.exists("a"));
        fake.delete("a").expect("delete");
        fake.delete("a").expect("delete twice");
        assert!(!fake.exists("a"));
        fake.fail_creates(true);
        assert!(fake.create("b").is_err());
        assert_eq!(
            fake.calls(),
            vec![
                NetnsCall::Create("a".into()),
                NetnsCall::Create("a".into()),
                NetnsCall::Delete("a".into()),
                NetnsCall::Delete("a".into()),
                NetnsCall::Create("b".into()),
            ]
        );
        assert!(fake.live().is_empty());
    }

    #[test]
    fn plain_files_are_not_namespaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("dead");
        fs::write(&file, b"").expect("write");
        assert!(!is_netns(&file));
        assert!(!is_netns(&dir.path().join("missing")));
        // Removing a dead entry (not a mount point) works, twice.
        remove_at(&file).expect("remove dead entry");
        remove_at(&file).expect("remove again");
        assert!(!file.exists());
    }

    /// Creates a real namespace in /run/netns (as `ip netns add` would), checks it is isolated
    /// and has lo up, and removes it.
    #[test]
    fn create_run_in_and_delete() {
        if !is_root() {
            eprintln!("skipping: creating network namespaces needs root");
            return;
        }
        let name = format!("skiff-test-{}-netns-unit", std::process::id());
        struct Cleanup<'a>(&'a str);
        impl Drop for Cleanup<'_> {
            fn drop(&mut self) {
                let _ = delete(self.0);
            }
        }
        let _cleanup = Cleanup(&name);

        let path = create(&name).expect("create");
        assert_eq!(path, Path::new(DEFAULT_RUN_DIR).join(&name));
        assert!(exists(&name));
        assert!(is_netns(&path));
        assert!(matches!(
            create(&name),
            Err(NetnsError::AlreadyExists { .. })
        ));

        let own = fs::read_link("/proc/thread-self/ns/net").expect("own netns");
        let (inside, links) = run_in(&path, || {
            let inside = fs::read_link("/proc/thread-self/ns/net").expect("netns link");
            // /sys belongs to the root namespace; list links via /proc/net/dev, which follows
            // the reading thread's namespace.
            let dev = fs::read_to_string("/proc/thread-self/net/dev").expect("net/dev");
            let links: Vec<String> = dev
                .lines()
                .skip(2)
                .filter_map(|l| l.split(':').next())
                .map(|s| s.trim().to_string())
                .collect();
            (inside, links)
        })
        .expect("run_in");
        assert_ne!(inside, own, "run_in must run in the other namespace");
        assert_eq!(links, vec!["lo".to_string()], "a new namespace has only lo");

        // lo is up: a TCP connection to 127.0.0.1 inside succeeds.
        run_in(&path, || {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            std::net::TcpStream::connect(addr).expect("connect over lo");
        })
        .expect("run_in");

        delete(&name).expect("delete");
        assert!(!exists(&name));
        assert!(!path.exists());
        delete(&name).expect("delete is idempotent");
        assert!(matches!(run_in(&path, || ()), Err(NetnsError::Open { .. })));
    }
}
