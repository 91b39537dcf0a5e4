//! From a runtime-level container description ([`ContainerConfig`]) to a complete OCI runtime
//! spec (`config.json`), with the defaults containerd gives a Kubernetes container: the 14
//! default capabilities, masked and read-only `/proc` paths, the default devices and their
//! cgroup allow-list, `/proc` `/dev` `/dev/pts` `/dev/shm` `/dev/mqueue` `/sys` mounts,
//! `RLIMIT_NOFILE` 1024, and the `RuntimeDefault` seccomp profile on request.
//!
//! Pure: no I/O. The spec is assembled as OCI JSON and parsed into `oci_spec::runtime::Spec`, so
//! field names are the spec's own.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::seccomp;

/// Why a container description cannot become a runtime spec. Not retryable: the description
/// must change.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("container process: command and args are both empty; nothing to run")]
    NoCommand,
    #[error("container rootfs {0:?} is not an absolute path")]
    RelativeRootfs(PathBuf),
    #[error("mount destination {0:?} is not an absolute path")]
    RelativeMountDestination(PathBuf),
    #[error("capabilities: unknown capability {0:?}")]
    UnknownCapability(String),
    #[error("namespaces: {0:?} is listed twice")]
    DuplicateNamespace(NamespaceKind),
    #[error("namespaces: a container needs its own mount namespace; it cannot join one by path")]
    SharedMountNamespace,
    #[error("building the OCI runtime spec")]
    Build(#[source] serde_json::Error),
}

/// A container as the runtime needs it; the agent translates a Kubernetes container into this.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// The entrypoint, already resolved against the image (Kubernetes `command` or `Entrypoint`).
    pub command: Vec<String>,
    /// Its arguments (Kubernetes `args` or `Cmd`); the process runs `command ++ args`.
    pub args: Vec<String>,
    /// `NAME=value` pairs, in order.
    pub env: Vec<String>,
    /// Working directory inside the container; `/` when empty.
    pub cwd: String,
    pub user: User,
    /// Set only when the container has its own or shares the pod's UTS namespace.
    pub hostname: Option<String>,
    /// Absolute path of the root filesystem (an overlay mount, a directory).
    pub rootfs: PathBuf,
    /// Mounts after the defaults, in order (volumes).
    pub mounts: Vec<Mount>,
    /// Bind-mounted at `/etc/hosts`, when given.
    pub hosts_file: Option<PathBuf>,
    /// Bind-mounted at `/etc/resolv.conf`, when given.
    pub resolv_conf: Option<PathBuf>,
    /// Bind-mounted read-write at `/dev/termination-log`, when given.
    pub termination_log: Option<PathBuf>,
    pub resources: Resources,
    pub capabilities: CapabilityChanges,
    /// All capabilities, all devices, no seccomp, no masked or read-only paths, rw `/sys`.
    pub privileged: bool,
    pub readonly_rootfs: bool,
    /// `allowPrivilegeEscalation: false`.
    pub no_new_privs: bool,
    pub seccomp: SeccompProfile,
    /// Namespaces of the container; see [`default_namespaces`].
    pub namespaces: Vec<Namespace>,
    /// The container's cgroup, relative to the cgroup root (e.g. `/skiff/pod-uid/ctr`).
    pub cgroup_path: String,
    /// `/proc/<pid>/oom_score_adj` of the container's processes.
    pub oom_score_adj: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

/// One mount; bind mounts are recursive and private unless `options` say otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub destination: PathBuf,
    pub source: MountSource,
    pub read_only: bool,
    /// Extra mount options (`nosuid`, `size=64m`, `rshared` …).
    #[serde(default)]
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountSource {
    /// A host path bound into the container.
    Bind(PathBuf),
    /// A fresh tmpfs (emptyDir `medium: Memory`).
    Tmpfs,
}

/// Limits; `None` leaves the controller unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub memory_limit_bytes: Option<i64>,
    /// CFS quota per period, microseconds (`limits.cpu`).
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    /// cgroup v1 `cpu.shares` (`requests.cpu`); libcgroups converts it to `cpu.weight` on v2.
    pub cpu_shares: Option<u64>,
    pub pids_limit: Option<i64>,
}

/// Kubernetes `securityContext.capabilities`: names with or without `CAP_`, any case; `ALL`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityChanges {
    #[serde(default)]
    pub add: Vec<String>,
    #[serde(default)]
    pub drop: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeccompProfile {
    /// Kubernetes' default when the field is unset (`Unconfined`), kept here for the same reason.
    #[default]
    Unconfined,
    RuntimeDefault,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamespaceKind {
    Pid,
    Network,
    Ipc,
    Uts,
    Mount,
    Cgroup,
}

impl NamespaceKind {
    fn oci_name(self) -> &'static str {
        match self {
            NamespaceKind::Pid => "pid",
            NamespaceKind::Network => "network",
            NamespaceKind::Ipc => "ipc",
            NamespaceKind::Uts => "uts",
            NamespaceKind::Mount => "mount",
            NamespaceKind::Cgroup => "cgroup",
        }
    }
}

/// A namespace the container runs in: a new one (`path: None`) or an existing one it joins
/// (the pod's network, IPC and UTS namespaces, `/var/run/netns/<name>` or `/proc/<pid>/ns/*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub kind: NamespaceKind,
    pub path: Option<PathBuf>,
}

/// New pid, network, IPC, UTS and mount namespaces: a container on its own.
pub fn default_namespaces() -> Vec<Namespace> {
    [
        NamespaceKind::Pid,
        NamespaceKind::Network,
        NamespaceKind::Ipc,
        NamespaceKind::Uts,
        NamespaceKind::Mount,
    ]
    .into_iter()
    .map(|kind| Namespace { kind, path: None })
    .collect()
}

/// The capabilities containerd (and Docker) give a container by default; Kubernetes' add/drop
/// apply to this set.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability the OCI spec names (Linux 5.9+), for `privileged` and `add: [ALL]`.
const ALL_CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Character devices every container gets (as runc's defaults): (path, major, minor).
const DEFAULT_DEVICES: [(&str, i64, i64); 6] = [
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

/// Device-cgroup rules beyond the default devices: `/dev/console`, `/dev/ptmx` and the pty
/// slaves, which devpts creates inside the container.
const EXTRA_DEVICE_RULES: [(i64, Option<i64>); 3] = [(5, Some(1)), (5, Some(2)), (136, None)];

/// `/proc` paths hidden from the container (covered with `/dev/null` or an empty tmpfs), as
/// containerd's defaults: they leak host information or allow host-wide effects.
const MASKED_PATHS: [&str; 10] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Normalizes a Kubernetes capability name (`net_admin`, `NET_ADMIN`, `CAP_NET_ADMIN`).
fn capability_name(name: &str) -> Result<String, SpecError> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if ALL_CAPABILITIES.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(SpecError::UnknownCapability(name.to_string()))
    }
}

fn is_all(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("ALL")
}

/// The capability set after Kubernetes' rules: privileged gets all; otherwise `drop` is applied
/// to the defaults (`ALL` empties them) and `add` is applied last (`ALL` gives every one), as in
/// containerd's `WithCapabilities`.
pub fn effective_capabilities(
    changes: &CapabilityChanges,
    privileged: bool,
) -> Result<Vec<String>, SpecError> {
    if privileged || changes.add.iter().any(|c| is_all(c)) {
        return Ok(ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect());
    }
    let mut caps: Vec<String> = if changes.drop.iter().any(|c| is_all(c)) {
        Vec::new()
    } else {
        let dropped = changes
            .drop
            .iter()
            .map(|c| capability_name(c))
            .collect::<Result<Vec<_>, _>>()?;
        DEFAULT_CAPABILITIES
            .iter()
            .filter(|c| !dropped.iter().any(|d| d == *c))
            .map(|c| c.to_string())
            .collect()
    };
    for add in &changes.add {
        let add = capability_name(add)?;
        if !caps.contains(&add) {
            caps.push(add);
        }
    }
    Ok(caps)
}

fn bind_mount(destination: &str, source: &Path, read_only: bool) -> Value {
    let mut options = vec!["rbind", "rprivate"];
    if read_only {
        options.push("ro");
    }
    json!({"destination": destination, "type": "bind", "source": source, "options": options})
}

fn mounts(config: &ContainerConfig) -> Result<Vec<Value>, SpecError> {
    let overridden = |dest: &str| {
        config
            .mounts
            .iter()
            .any(|m| m.destination == Path::new(dest))
    };
    let sysfs_mode = if config.privileged { "rw" } else { "ro" };
    let mut out = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
    ];
    // The pod may hand every container one shared /dev/shm (shared IPC namespace).
    if !overridden("/dev/shm") {
        out.push(
            json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                        "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        );
    }
    out.push(
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                    "options": ["nosuid", "noexec", "nodev"]}),
    );
    out.push(
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                    "options": ["nosuid", "noexec", "nodev", sysfs_mode]}),
    );
    out.push(
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                    "options": ["nosuid", "noexec", "nodev", "relatime", sysfs_mode]}),
    );
    for mount in &config.mounts {
        if !mount.destination.is_absolute() {
            return Err(SpecError::RelativeMountDestination(
                mount.destination.clone(),
            ));
        }
        let mut options: Vec<String> = Vec::new();
        let value = match &mount.source {
            MountSource::Bind(source) => {
                options.push("rbind".into());
                if !mount.options.iter().any(|o| is_propagation(o)) {
                    options.push("rprivate".into());
                }
                options.extend(mount.options.iter().cloned());
                if mount.read_only {
                    options.push("ro".into());
                }
                json!({"destination": mount.destination, "type": "bind", "source": source,
                       "options": options})
            }
            MountSource::Tmpfs => {
                options.extend(["nosuid".to_string(), "nodev".to_string()]);
                options.extend(mount.options.iter().cloned());
                if mount.read_only {
                    options.push("ro".into());
                }
                json!({"destination": mount.destination, "type": "tmpfs", "source": "tmpfs",
                       "options": options})
            }
        };
        out.push(value);
    }
    if let Some(hosts) = &config.hosts_file {
        out.push(bind_mount("/etc/hosts", hosts, false));
    }
    if let Some(resolv) = &config.resolv_conf {
        out.push(bind_mount("/etc/resolv.conf", resolv, false));
    }
    if let Some(log) = &config.termination_log {
        out.push(bind_mount("/dev/termination-log", log, false));
    }
    Ok(out)
}

fn is_propagation(option: &str) -> bool {
    matches!(
        option,
        "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave"
    )
}

fn namespaces(config: &ContainerConfig) -> Result<Vec<Value>, SpecError> {
    let mut out = Vec::new();
    for (i, ns) in config.namespaces.iter().enumerate() {
        if config.namespaces[..i].iter().any(|n| n.kind == ns.kind) {
            return Err(SpecError::DuplicateNamespace(ns.kind));
        }
        match &ns.path {
            None => out.push(json!({"type": ns.kind.oci_name()})),
            Some(_) if ns.kind == NamespaceKind::Mount => {
                return Err(SpecError::SharedMountNamespace);
            }
            Some(path) => out.push(json!({"type": ns.kind.oci_name(), "path": path})),
        }
    }
    if !config
        .namespaces
        .iter()
        .any(|n| n.kind == NamespaceKind::Mount)
    {
        out.push(json!({"type": "mount"}));
    }
    Ok(out)
}

fn resources(config: &ContainerConfig) -> Value {
    let mut devices = Vec::new();
    if config.privileged {
        devices.push(json!({"allow": true, "access": "rwm"}));
    } else {
        devices.push(json!({"allow": false, "access": "rwm"}));
        for (_, major, minor) in DEFAULT_DEVICES {
            devices.push(
                json!({"allow": true, "type": "c", "major": major, "minor": minor,
                                "access": "rwm"}),
            );
        }
        for (major, minor) in EXTRA_DEVICE_RULES {
            let mut rule = json!({"allow": true, "type": "c", "major": major, "access": "rwm"});
            if let (Some(minor), Some(obj)) = (minor, rule.as_object_mut()) {
                obj.insert("minor".into(), json!(minor));
            }
            devices.push(rule);
        }
    }
    let r = &config.resources;
    let mut out = json!({"devices": devices});
    if let Some(obj) = out.as_object_mut() {
        if let Some(limit) = r.memory_limit_bytes {
            obj.insert("memory".into(), json!({"limit": limit}));
        }
        let mut cpu = serde_json::Map::new();
        if let Some(quota) = r.cpu_quota {
            cpu.insert("quota".into(), json!(quota));
        }
        if let Some(period) = r.cpu_period {
            cpu.insert("period".into(), json!(period));
        }
        if let Some(shares) = r.cpu_shares {
            cpu.insert("shares".into(), json!(shares));
        }
        if !cpu.is_empty() {
            obj.insert("cpu".into(), Value::Object(cpu));
        }
        if let Some(pids) = r.pids_limit {
            obj.insert("pids".into(), json!({"limit": pids}));
        }
    }
    out
}

/// The OCI runtime spec for `config`.
pub fn runtime_spec(config: &ContainerConfig) -> Result<Spec, SpecError> {
    let args: Vec<&String> = config.command.iter().chain(&config.args).collect();
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    if !config.rootfs.is_absolute() {
        return Err(SpecError::RelativeRootfs(config.rootfs.clone()));
    }
    let caps = effective_capabilities(&config.capabilities, config.privileged)?;
    let cwd = if config.cwd.is_empty() {
        "/"
    } else {
        &config.cwd
    };
    let mut process = json!({
        "terminal": false,
        "user": {"uid": config.user.uid, "gid": config.user.gid},
        "args": args,
        "env": config.env,
        "cwd": cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
    });
    // Omitted rather than `false`: libcontainer 0.7 decides when to load the seccomp filter by
    // whether the field is present, and an explicit `false` makes it load the filter after
    // dropping CAP_SYS_ADMIN, which the kernel refuses (EACCES).
    if config.no_new_privs {
        process["noNewPrivileges"] = json!(true);
    }
    if !config.user.additional_gids.is_empty() {
        process["user"]["additionalGids"] = json!(config.user.additional_gids);
    }
    if let Some(adj) = config.oom_score_adj {
        process["oomScoreAdj"] = json!(adj);
    }
    let mut linux = json!({
        "namespaces": namespaces(config)?,
        "resources": resources(config),
        "cgroupsPath": config.cgroup_path,
    });
    if !config.privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
        linux["devices"] = DEFAULT_DEVICES
            .iter()
            .map(|(path, major, minor)| {
                json!({"path": path, "type": "c", "major": major, "minor": minor,
                       "fileMode": 0o666, "uid": 0, "gid": 0})
            })
            .collect();
        if config.seccomp == SeccompProfile::RuntimeDefault {
            linux["seccomp"] = seccomp::runtime_default_profile(&caps);
        }
    }
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": config.rootfs, "readonly": config.readonly_rootfs},
        "mounts": mounts(config)?,
        "linux": linux,
    });
    if let Some(hostname) = &config.hostname {
        spec["hostname"] = json!(hostname);
    }
    serde_json::from_value(spec).map_err(SpecError::Build)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ContainerConfig {
        ContainerConfig {
            command: vec!["/bin/sh".into()],
            args: vec!["-c".into(), "echo hi".into()],
            env: vec!["PATH=/bin".into()],
            rootfs: "/var/lib/skiff/rootfs".into(),
            namespaces: default_namespaces(),
            cgroup_path: "/skiff/pod/ctr".into(),
            hostname: Some("web-0".into()),
            ..ContainerConfig::default()
        }
    }

    fn caps_of(spec: &Spec) -> Vec<String> {
        spec.process()
            .as_ref()
            .and_then(|p| p.capabilities().as_ref())
            .and_then(|c| c.bounding().as_ref())
            .map(|set| set.iter().map(|c| format!("CAP_{c}")).collect())
            .unwrap_or_default()
    }

    #[test]
    fn default_container_gets_containerd_defaults() {
        let spec = runtime_spec(&config()).expect("spec");
        let process = spec.process().as_ref().expect("process");
        assert_eq!(
            process.args().as_deref().unwrap_or_default(),
            ["/bin/sh", "-c", "echo hi"]
        );
        assert_eq!(process.cwd(), Path::new("/"));
        assert_eq!(caps_of(&spec).len(), 14);
        let rlimits = process.rlimits().as_ref().expect("rlimits");
        assert_eq!((rlimits[0].hard(), rlimits[0].soft()), (1024, 1024));
        let linux = spec.linux().as_ref().expect("linux");
        assert_eq!(linux.masked_paths().as_ref().map(Vec::len), Some(10));
        assert_eq!(linux.readonly_paths().as_ref().map(Vec::len), Some(5));
        assert_eq!(linux.devices().as_ref().map(Vec::len), Some(6));
        assert!(linux.seccomp().is_none());
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/skiff/pod/ctr"))
        );
        let dests: Vec<String> = spec
            .mounts()
            .iter()
            .flatten()
            .map(|m| m.destination().display().to_string())
            .collect();
        for dest in [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
        ] {
            assert!(
                dests.iter().any(|d| d == dest),
                "{dest} missing from {dests:?}"
            );
        }
        assert_eq!(spec.hostname().as_deref(), Some("web-0"));
        let root = spec.root().as_ref().expect("root");
        assert!(!root.readonly().unwrap_or(true));
    }

    #[test]
    fn capability_add_and_drop_follow_kubernetes() {
        let mut c = config();
        c.capabilities = CapabilityChanges {
            add: vec!["NET_ADMIN".into(), "sys_time".into()],
            drop: vec!["CHOWN".into(), "CAP_KILL".into()],
        };
        let caps = caps_of(&runtime_spec(&c).expect("spec"));
        assert_eq!(caps.len(), 14);
        assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!caps.contains(&"CAP_CHOWN".to_string()));

        c.capabilities = CapabilityChanges {
            add: vec!["NET_BIND_SERVICE".into()],
            drop: vec!["ALL".into()],
        };
        assert_eq!(
            caps_of(&runtime_spec(&c).expect("spec")),
            ["CAP_NET_BIND_SERVICE"]
        );

        c.capabilities = CapabilityChanges {
            add: vec!["BOGUS".into()],
            drop: vec![],
        };
        assert!(matches!(runtime_spec(&c), Err(SpecError::UnknownCapability(n)) if n == "BOGUS"));
    }

    #[test]
    fn privileged_gets_everything_and_no_confinement() {
        let mut c = config();
        c.privileged = true;
        c.seccomp = SeccompProfile::RuntimeDefault;
        let spec = runtime_spec(&c).expect("spec");
        assert_eq!(caps_of(&spec).len(), ALL_CAPABILITIES.len());
        let linux = spec.linux().as_ref().expect("linux");
        assert!(linux.masked_paths().is_none());
        assert!(linux.seccomp().is_none());
        let devices = linux
            .resources()
            .as_ref()
            .and_then(|r| r.devices().clone())
            .unwrap_or_default();
        assert_eq!(devices.len(), 1);
        assert!(devices[0].allow());
    }

    #[test]
    fn resources_security_and_namespaces_map_to_oci() {
        let mut c = config();
        c.resources = Resources {
            memory_limit_bytes: Some(16 << 20),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            cpu_shares: Some(512),
            pids_limit: Some(100),
        };
        c.readonly_rootfs = true;
        c.no_new_privs = true;
        c.seccomp = SeccompProfile::RuntimeDefault;
        c.user = User {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![5, 6],
        };
        c.namespaces = vec![
            Namespace {
                kind: NamespaceKind::Network,
                path: Some("/var/run/netns/pod".into()),
            },
            Namespace {
                kind: NamespaceKind::Pid,
                path: None,
            },
        ];
        let spec = runtime_spec(&c).expect("spec");
        let linux = spec.linux().as_ref().expect("linux");
        let res = linux.resources().as_ref().expect("resources");
        assert_eq!(
            res.memory().as_ref().and_then(|m| m.limit()),
            Some(16 << 20)
        );
        let cpu = res.cpu().as_ref().expect("cpu");
        assert_eq!(
            (cpu.quota(), cpu.period(), cpu.shares()),
            (Some(50_000), Some(100_000), Some(512))
        );
        assert_eq!(res.pids().as_ref().map(|p| p.limit()), Some(100));
        assert!(linux.seccomp().is_some());
        let ns = linux.namespaces().as_ref().expect("namespaces");
        assert_eq!(ns.len(), 3, "mount namespace is always added: {ns:?}");
        assert_eq!(
            ns[0].path().as_deref(),
            Some(Path::new("/var/run/netns/pod"))
        );
        let process = spec.process().as_ref().expect("process");
        assert_eq!(process.no_new_privileges(), Some(true));
        assert_eq!(
            process.user().additional_gids().as_deref(),
            Some(&[5, 6][..])
        );
        assert_eq!(spec.root().as_ref().and_then(|r| r.readonly()), Some(true));
        let sys = spec
            .mounts()
            .iter()
            .flatten()
            .find(|m| m.destination() == Path::new("/sys"));
        assert!(
            sys.and_then(|m| m.options().as_ref())
                .is_some_and(|o| o.contains(&"ro".to_string()))
        );
    }

    #[test]
    fn caller_mounts_and_pod_files_are_bound() {
        let mut c = config();
        c.mounts = vec![
            Mount {
                destination: "/data".into(),
                source: MountSource::Bind("/var/lib/skiff/pods/x/volumes/data".into()),
                read_only: true,
                options: vec![],
            },
            Mount {
                destination: "/dev/shm".into(),
                source: MountSource::Tmpfs,
                read_only: false,
                options: vec!["size=1m".into()],
            },
        ];
        c.hosts_file = Some("/pods/x/etc-hosts".into());
        c.resolv_conf = Some("/pods/x/resolv.conf".into());
        c.termination_log = Some("/pods/x/ctr/termination-log".into());
        let spec = runtime_spec(&c).expect("spec");
        let mounts = spec.mounts().clone().unwrap_or_default();
        assert_eq!(
            mounts
                .iter()
                .filter(|m| m.destination() == Path::new("/dev/shm"))
                .count(),
            1
        );
        let data = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/data"))
            .expect("data");
        assert_eq!(
            data.options().clone().unwrap_or_default(),
            ["rbind", "rprivate", "ro"]
        );
        for dest in ["/etc/hosts", "/etc/resolv.conf", "/dev/termination-log"] {
            assert!(
                mounts.iter().any(|m| m.destination() == Path::new(dest)),
                "{dest}"
            );
        }
        c.mounts[0].destination = "data".into();
        assert!(matches!(
            runtime_spec(&c),
            Err(SpecError::RelativeMountDestination(_))
        ));
    }

    #[test]
    fn rejects_bad_descriptions() {
        let mut c = config();
        c.command.clear();
        c.args.clear();
        assert!(matches!(runtime_spec(&c), Err(SpecError::NoCommand)));
        let mut c = config();
        c.rootfs = "rootfs".into();
        assert!(matches!(
            runtime_spec(&c),
            Err(SpecError::RelativeRootfs(_))
        ));
        let mut c = config();
        c.namespaces.push(Namespace {
            kind: NamespaceKind::Pid,
            path: None,
        });
        assert!(matches!(
            runtime_spec(&c),
            Err(SpecError::DuplicateNamespace(NamespaceKind::Pid))
        ));
        let mut c = config();
        c.namespaces = vec![Namespace {
            kind: NamespaceKind::Mount,
            path: Some("/proc/1/ns/mnt".into()),
        }];
        assert!(matches!(
            runtime_spec(&c),
            Err(SpecError::SharedMountNamespace)
        ));
    }
}
