//! The host's cgroup layout and the few cgroup reads and removals the shim and the agent need.
//! libcontainer (libcgroups) creates cgroups and writes limits; this module only finds out how
//! they ended.
//!
//! Three layouts exist: v1 (one hierarchy per controller under `/sys/fs/cgroup/<controller>`),
//! v2 (one unified hierarchy at `/sys/fs/cgroup`), and hybrid (v1 controllers plus an empty
//! cgroup2 at `/sys/fs/cgroup/unified`, systemd's default on Debian ≤ 11 and this project's test
//! hosts). libcgroups treats hybrid as v1, and so does this module.

use std::io;
use std::path::{Path, PathBuf};

/// Where cgroup filesystems are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A cgroup operation that failed. Retryable when processes are still exiting (`EBUSY`).
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("removing cgroup directory {path:?}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing {value:?} to {path:?}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("listing cgroup directory {path:?}")]
    List {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Limits of a pod's own cgroup, the parent of its containers' (the kubelet's pod-level
/// cgroup). `None` leaves that controller unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodLimits {
    pub memory_bytes: Option<i64>,
    /// CPU quota in microseconds per `cpu_period_us`.
    pub cpu_quota_us: Option<i64>,
    pub cpu_period_us: u64,
    /// v1 `cpu.shares` (converted to `cpu.weight` on v2).
    pub cpu_shares: Option<u64>,
    pub pids_max: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupLayout {
    V1,
    V2,
    Hybrid,
}

fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|fs| fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

impl CgroupLayout {
    pub fn detect() -> CgroupLayout {
        let root = Path::new(CGROUP_ROOT);
        if is_cgroup2(root) {
            CgroupLayout::V2
        } else if is_cgroup2(&root.join("unified")) {
            CgroupLayout::Hybrid
        } else {
            CgroupLayout::V1
        }
    }

    /// Every hierarchy a cgroup path exists in: one for v2, one per v1 controller mount (plus
    /// the unified one on hybrid hosts, where systemd and libcgroups may also create it).
    pub fn hierarchies(self) -> Vec<PathBuf> {
        let root = Path::new(CGROUP_ROOT);
        if self == CgroupLayout::V2 {
            return vec![root.to_path_buf()];
        }
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(root) {
            for entry in entries.flatten() {
                let path = entry.path();
                // Co-mounted controllers appear twice (`cpu` and `cpu,cpuacct` symlinks).
                let is_link = entry.file_type().map(|t| t.is_symlink()).unwrap_or(true);
                if !is_link && path.is_dir() && path.join("cgroup.procs").exists() {
                    out.push(path);
                }
            }
        }
        out.sort();
        out
    }

    /// The directory of the memory controller for `cgroup_path`.
    fn memory_dir(self, cgroup_path: &str) -> PathBuf {
        let relative = cgroup_path.trim_start_matches('/');
        match self {
            CgroupLayout::V2 => Path::new(CGROUP_ROOT).join(relative),
            CgroupLayout::V1 | CgroupLayout::Hybrid => {
                Path::new(CGROUP_ROOT).join("memory").join(relative)
            }
        }
    }

    /// How many times the kernel's OOM killer killed a process of this cgroup (`oom_kill` in
    /// v2 `memory.events` or v1 `memory.oom_control`, Linux ≥ 4.13). `None` if the cgroup is
    /// gone or the kernel does not count.
    pub fn oom_kill_count(self, cgroup_path: &str) -> Option<u64> {
        let dir = self.memory_dir(cgroup_path);
        let file = match self {
            CgroupLayout::V2 => dir.join("memory.events"),
            CgroupLayout::V1 | CgroupLayout::Hybrid => dir.join("memory.oom_control"),
        };
        let text = std::fs::read_to_string(file).ok()?;
        parse_flat_keyed(&text, "oom_kill")
    }

    /// Whether the cgroup exists in any hierarchy.
    pub fn exists(self, cgroup_path: &str) -> bool {
        let relative = cgroup_path.trim_start_matches('/');
        !relative.is_empty() && self.hierarchies().iter().any(|h| h.join(relative).exists())
    }

    /// Creates the pod's cgroup (where missing) and writes its limits, before any container
    /// is made under it. On v2 the controllers are enabled down the path first.
    pub fn set_pod_limits(self, cgroup_path: &str, limits: &PodLimits) -> Result<(), CgroupError> {
        let relative = cgroup_path.trim_start_matches('/');
        let root = Path::new(CGROUP_ROOT);
        let write = |path: PathBuf, value: String| -> Result<(), CgroupError> {
            std::fs::write(&path, &value).map_err(|source| CgroupError::Write {
                path,
                value,
                source,
            })
        };
        let mkdir = |dir: &Path| -> Result<(), CgroupError> {
            std::fs::create_dir_all(dir).map_err(|source| CgroupError::Write {
                path: dir.to_path_buf(),
                value: "(mkdir)".into(),
                source,
            })
        };
        match self {
            CgroupLayout::V2 => {
                // Each ancestor hands memory, cpu and pids down to its children.
                let mut dir = root.to_path_buf();
                for part in Path::new(relative).components() {
                    let _ =
                        std::fs::write(dir.join("cgroup.subtree_control"), "+memory +cpu +pids");
                    dir = dir.join(part);
                    mkdir(&dir)?;
                }
                if let Some(bytes) = limits.memory_bytes {
                    write(dir.join("memory.max"), bytes.to_string())?;
                }
                let quota = limits
                    .cpu_quota_us
                    .map_or("max".to_string(), |q| q.to_string());
                write(
                    dir.join("cpu.max"),
                    format!("{quota} {}", limits.cpu_period_us),
                )?;
                if let Some(shares) = limits.cpu_shares {
                    // The kubelet's conversion: shares 2..262144 → weight 1..10000.
                    let weight = 1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142;
                    write(dir.join("cpu.weight"), weight.to_string())?;
                }
                if let Some(pids) = limits.pids_max {
                    write(dir.join("pids.max"), pids.to_string())?;
                }
            }
            CgroupLayout::V1 | CgroupLayout::Hybrid => {
                let dir = |controller: &str| root.join(controller).join(relative);
                if let Some(bytes) = limits.memory_bytes {
                    mkdir(&dir("memory"))?;
                    write(
                        dir("memory").join("memory.limit_in_bytes"),
                        bytes.to_string(),
                    )?;
                }
                if limits.cpu_quota_us.is_some() || limits.cpu_shares.is_some() {
                    mkdir(&dir("cpu"))?;
                    write(
                        dir("cpu").join("cpu.cfs_period_us"),
                        limits.cpu_period_us.to_string(),
                    )?;
                    write(
                        dir("cpu").join("cpu.cfs_quota_us"),
                        limits.cpu_quota_us.unwrap_or(-1).to_string(),
                    )?;
                    if let Some(shares) = limits.cpu_shares {
                        write(dir("cpu").join("cpu.shares"), shares.to_string())?;
                    }
                }
                if let Some(pids) = limits.pids_max {
                    mkdir(&dir("pids"))?;
                    write(dir("pids").join("pids.max"), pids.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// Removes the cgroup and its descendants from every hierarchy, deepest first. Missing
    /// directories are fine; a cgroup with live processes fails with `EBUSY`.
    pub fn remove(self, cgroup_path: &str) -> Result<(), CgroupError> {
        let relative = cgroup_path.trim_start_matches('/');
        if relative.is_empty() {
            return Ok(());
        }
        for hierarchy in self.hierarchies() {
            remove_tree(&hierarchy.join(relative))?;
        }
        Ok(())
    }
}

fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CgroupError::List {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_tree(&entry.path())?;
        }
    }
    // cgroupfs directories hold only kernel files: rmdir, never remove_dir_all.
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CgroupError::Remove {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// The value of `key` in a cgroup "flat keyed" file (`key value` per line).
fn parse_flat_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        if k == key {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_oom_kill_from_both_formats() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(parse_flat_keyed(v1, "oom_kill"), Some(2));
        let v2 = "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_flat_keyed(v2, "oom_kill"), Some(1));
        assert_eq!(parse_flat_keyed("oom 3\n", "oom_kill"), None);
    }

    #[test]
    fn removing_a_missing_cgroup_is_fine() {
        let layout = CgroupLayout::detect();
        assert!(layout.remove("/skiff-test-never-created-xyz").is_ok());
        assert!(!layout.exists("/skiff-test-never-created-xyz"));
        assert!(layout.remove("/").is_ok(), "the root is never removed");
    }
}
