//! The pod sandbox on the host: the pod directory (with a `pod.json` record so an orphaned
//! directory can be cleaned up after the API object is gone), `/etc/hosts`, `resolv.conf`,
//! volumes (emptyDir on disk or tmpfs, hostPath with type checks) and their removal.
//!
//! ```text
//! <pod_dir>/pod.json                              namespace, name, uid, hostNetwork
//! <pod_dir>/etc-hosts, resolv.conf
//! <pod_dir>/volumes/kubernetes.io~empty-dir/<v>  emptyDir (a tmpfs mount for medium Memory)
//! <pod_dir>/volumes/kubernetes.io~configmap/<v>   configMap (and ~downward-api) on disk
//! <pod_dir>/volumes/kubernetes.io~secret/<v>      secret (and ~projected) on tmpfs, never disk
//! <pod_dir>/containers/<name>/                    rootfs, upper, work, termination-log
//! <pod_dir>/ns/ipc, <pod_dir>/ns/uts              the pod's IPC and UTS namespaces (bind mounts)
//! <pod_dir>/shm                                   the pod's /dev/shm (tmpfs, 64 MiB)
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Pod, Volume};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use serde::{Deserialize, Serialize};

use super::container::HostVolume;

/// A sandbox step that failed. Retryable: the worker tries again on its next sync.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{step} {path:?}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{step} {path:?}")]
    Mount {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

fn io_err<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SandboxError + 'a {
    move |source| SandboxError::Io {
        step,
        path: path.to_path_buf(),
        source,
    }
}

/// What the agent records about a pod on disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRecord {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub host_network: bool,
}

pub const POD_RECORD: &str = "pod.json";
const EMPTY_DIR: &str = "volumes/kubernetes.io~empty-dir";

pub fn write_record(pod_dir: &Path, record: &PodRecord) -> Result<(), SandboxError> {
    fs::create_dir_all(pod_dir).map_err(io_err("creating pod directory", pod_dir))?;
    let path = pod_dir.join(POD_RECORD);
    let bytes = serde_json::to_vec(record).map_err(|e| SandboxError::Io {
        step: "encoding",
        path: path.clone(),
        source: e.into(),
    })?;
    fs::write(&path, bytes).map_err(io_err("writing", &path))
}

pub fn read_record(pod_dir: &Path) -> Option<PodRecord> {
    serde_json::from_slice(&fs::read(pod_dir.join(POD_RECORD)).ok()?).ok()
}

/// The kubelet-managed hosts file (pkg/kubelet/kubelet_pods.go `managedHostsFileContent`).
pub fn hosts_file(pod: &Pod, pod_ips: &[String]) -> String {
    let spec = pod.spec.as_ref();
    let hostname = spec
        .and_then(|s| s.hostname.clone())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    let fqdn = match (
        spec.and_then(|s| s.subdomain.as_deref()),
        pod.metadata.namespace.as_deref(),
    ) {
        (Some(sub), Some(ns)) if !sub.is_empty() => {
            Some(format!("{hostname}.{sub}.{ns}.svc.cluster.local"))
        }
        _ => None,
    };
    for ip in pod_ips {
        match &fqdn {
            Some(fqdn) => out.push_str(&format!("{ip}\t{fqdn}\t{hostname}\n")),
            None => out.push_str(&format!("{ip}\t{hostname}\n")),
        }
    }
    let aliases = spec.and_then(|s| s.host_aliases.as_ref());
    if aliases.is_some_and(|a| !a.is_empty()) {
        out.push_str("\n# Entries added by HostAliases.\n");
        for alias in aliases.into_iter().flatten() {
            out.push_str(&format!(
                "{}\t{}\n",
                alias.ip,
                alias.hostnames.clone().unwrap_or_default().join("\t")
            ));
        }
    }
    out
}

/// Writes `/etc/hosts` and `resolv.conf` for the pod. hostNetwork pods get the node's own
/// hosts file, as upstream.
pub fn write_files(
    pod_dir: &Path,
    pod: &Pod,
    pod_ips: &[String],
    host_network: bool,
    resolv_conf: &Path,
    cluster_dns: &ClusterDns,
) -> Result<(PathBuf, PathBuf), SandboxError> {
    let hosts = pod_dir.join("etc-hosts");
    let content = if host_network {
        fs::read_to_string("/etc/hosts").unwrap_or_else(|_| hosts_file(pod, pod_ips))
    } else {
        hosts_file(pod, pod_ips)
    };
    fs::write(&hosts, content).map_err(io_err("writing", &hosts))?;
    let resolv = pod_dir.join("resolv.conf");
    let host = fs::read_to_string(resolv_conf).unwrap_or_default();
    let content = pod_resolv_conf(pod, host_network, &host, cluster_dns);
    fs::write(&resolv, content).map_err(io_err("writing", &resolv))?;
    Ok((hosts, resolv))
}

/// The cluster's DNS as the kubelet knows it (`--cluster-dns`, `--cluster-domain`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterDns {
    /// Empty: no cluster DNS, ClusterFirst pods fall back to the node's resolv.conf.
    pub servers: Vec<String>,
    pub domain: String,
}

/// Upstream's limits (pkg/kubelet/network/dns): 3 nameservers, 32 search domains.
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

/// The pod's resolv.conf per its `dnsPolicy` and `dnsConfig`, as the kubelet writes it:
/// ClusterFirst → the cluster DNS with `<ns>.svc.<domain> svc.<domain> <domain>` before the
/// node's own search path and `ndots:5`; Default (and ClusterFirst on the host network) → the
/// node's; None → only what `dnsConfig` says. `dnsConfig` adds nameservers and searches and
/// overrides options by name.
pub fn pod_resolv_conf(pod: &Pod, host_network: bool, host: &str, cluster: &ClusterDns) -> String {
    let spec = pod.spec.as_ref();
    let policy = spec.and_then(|s| s.dns_policy.as_deref()).unwrap_or("ClusterFirst");
    let (mut servers, mut searches, mut options) = (Vec::new(), Vec::new(), Vec::<(String, Option<String>)>::new());
    let (host_servers, host_searches, host_options) = parse_resolv(host);
    let cluster_first = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network,
        _ => false,
    };
    match policy {
        "None" => {}
        _ if cluster_first && !cluster.servers.is_empty() => {
            servers.clone_from(&cluster.servers);
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            searches = vec![
                format!("{ns}.svc.{}", cluster.domain),
                format!("svc.{}", cluster.domain),
                cluster.domain.clone(),
            ];
            searches.extend(host_searches);
            options.push(("ndots".into(), Some("5".into())));
        }
        // Default, or ClusterFirst without a cluster DNS (upstream falls back the same way).
        _ => {
            servers = host_servers;
            searches = host_searches;
            options = host_options;
        }
    }
    if let Some(config) = spec.and_then(|s| s.dns_config.as_ref()) {
        for server in config.nameservers.iter().flatten() {
            if !servers.contains(server) {
                servers.push(server.clone());
            }
        }
        for search in config.searches.iter().flatten() {
            if !searches.contains(search) {
                searches.push(search.clone());
            }
        }
        for option in config.options.iter().flatten() {
            let name = option.name.clone().unwrap_or_default();
            options.retain(|(n, _)| *n != name);
            options.push((name, option.value.clone()));
        }
    }
    servers.truncate(MAX_NAMESERVERS);
    searches.truncate(MAX_SEARCHES);
    let mut out = String::new();
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for server in &servers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    if !options.is_empty() {
        let rendered: Vec<String> = options
            .iter()
            .map(|(n, v)| match v {
                Some(v) => format!("{n}:{v}"),
                None => n.clone(),
            })
            .collect();
        out.push_str(&format!("options {}\n", rendered.join(" ")));
    }
    out
}

/// (nameservers, search domains, options) of a resolv.conf.
fn parse_resolv(text: &str) -> (Vec<String>, Vec<String>, Vec<(String, Option<String>)>) {
    let (mut servers, mut searches, mut options) = (Vec::new(), Vec::new(), Vec::new());
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => servers.extend(words.next().map(str::to_string)),
            // The last search/domain line wins, as in the resolver.
            Some("search" | "domain") => searches = words.map(str::to_string).collect(),
            Some("options") => options.extend(words.map(|o| match o.split_once(':') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (o.to_string(), None),
            })),
            _ => {}
        }
    }
    (servers, searches, options)
}

/// `emptyDir.sizeLimit` in bytes, for the tmpfs `size=` option.
fn size_limit(volume: &Volume) -> Option<u64> {
    let q = volume.empty_dir.as_ref()?.size_limit.as_ref()?;
    let millis = api::validation::parse_quantity(&q.0).ok()?;
    u64::try_from((millis + 999) / 1000).ok().filter(|b| *b > 0)
}

/// Makes every volume of the pod ready on the host. A volume that cannot be made (a hostPath
/// whose type check fails, a kind this node does not support) is reported per volume, so only
/// the containers mounting it fail.
pub fn prepare_volumes(
    pod_dir: &Path,
    pod: &Pod,
) -> (BTreeMap<String, HostVolume>, BTreeMap<String, String>) {
    let mut ready = BTreeMap::new();
    let mut failed = BTreeMap::new();
    for volume in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        // Their files come from the API: the worker fills them (`api_volume_dir`).
        if crate::volume_sources::is_api_volume(volume) {
            continue;
        }
        match prepare_volume(pod_dir, volume) {
            Ok(v) => {
                ready.insert(volume.name.clone(), v);
            }
            Err(message) => {
                failed.insert(volume.name.clone(), message);
            }
        }
    }
    (ready, failed)
}

fn prepare_volume(pod_dir: &Path, volume: &Volume) -> Result<HostVolume, String> {
    if let Some(empty) = &volume.empty_dir {
        let path = pod_dir.join(EMPTY_DIR).join(&volume.name);
        fs::create_dir_all(&path).map_err(|e| format!("creating emptyDir {path:?}: {e}"))?;
        // Upstream makes emptyDirs world-writable so any container user can use them.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o777))
            .map_err(|e| format!("chmod {path:?}: {e}"))?;
        if empty.medium.as_deref() == Some("Memory") && !runtime::image::snapshot::is_mounted(&path)
        {
            let mut options = String::from("mode=0777");
            if let Some(bytes) = size_limit(volume) {
                options.push_str(&format!(",size={bytes}"));
            }
            nix::mount::mount(
                Some("tmpfs"),
                &path,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(options.as_str()),
            )
            .map_err(|e| format!("mounting tmpfs for emptyDir {:?}: {e}", volume.name))?;
        }
        return Ok(HostVolume {
            path,
            read_only: false,
        });
    }
    if let Some(host) = &volume.host_path {
        let path = PathBuf::from(&host.path);
        check_host_path(&path, host.type_.as_deref().unwrap_or(""))?;
        return Ok(HostVolume {
            path,
            read_only: false,
        });
    }
    Err(format!(
        "volume {:?}: this kind of volume is not supported by this node yet (emptyDir, hostPath, configMap, secret, downwardAPI and projected are)",
        volume.name
    ))
}

/// hostPath `type` checks and creations (pkg/volume/hostpath `checkType`).
fn check_host_path(path: &Path, kind: &str) -> Result<(), String> {
    let meta = fs::metadata(path);
    let fail = |what: &str| {
        Err(format!(
            "hostPath type check failed: {} is not {what}",
            path.display()
        ))
    };
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => fail("a directory"),
            Err(_) => {
                fs::create_dir_all(path)
                    .map_err(|e| format!("creating hostPath {}: {e}", path.display()))?;
                fs::set_permissions(path, fs::Permissions::from_mode(0o755))
                    .map_err(|e| format!("chmod {}: {e}", path.display()))
            }
        },
        "FileOrCreate" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => fail("a file"),
            Err(_) => fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map(|_| ())
                .map_err(|e| format!("creating hostPath {}: {e}", path.display())),
        },
        "Directory" if meta.as_ref().is_ok_and(|m| m.is_dir()) => Ok(()),
        "Directory" => fail("a directory"),
        "File" if meta.as_ref().is_ok_and(|m| m.is_file()) => Ok(()),
        "File" => fail("a file"),
        "Socket" if meta.as_ref().is_ok_and(|m| m.file_type().is_socket()) => Ok(()),
        "Socket" => fail("a socket"),
        "CharDevice" if meta.as_ref().is_ok_and(|m| m.file_type().is_char_device()) => Ok(()),
        "CharDevice" => fail("a character device"),
        "BlockDevice" if meta.as_ref().is_ok_and(|m| m.file_type().is_block_device()) => Ok(()),
        "BlockDevice" => fail("a block device"),
        other => Err(format!("hostPath type {other:?} is not a known type")),
    }
}

/// The directory of a configMap, secret, downwardAPI or projected volume, made (on tmpfs for
/// secrets and projections, which may hold them) and ready for its payload. Upstream's
/// plugin directory names, so tools that know the kubelet's layout find them.
pub fn api_volume_dir(pod_dir: &Path, volume: &Volume) -> Result<PathBuf, SandboxError> {
    let (plugin, in_memory) = if volume.secret.is_some() {
        ("kubernetes.io~secret", true)
    } else if volume.projected.is_some() {
        ("kubernetes.io~projected", true)
    } else if volume.downward_api.is_some() {
        ("kubernetes.io~downward-api", false)
    } else {
        ("kubernetes.io~configmap", false)
    };
    let path = pod_dir.join("volumes").join(plugin).join(&volume.name);
    fs::create_dir_all(&path).map_err(|source| SandboxError::Io {
        step: "creating volume directory",
        path: path.clone(),
        source,
    })?;
    if in_memory && !runtime::image::snapshot::is_mounted(&path) {
        nix::mount::mount(
            Some("tmpfs"),
            &path,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=0755"),
        )
        .map_err(|source| SandboxError::Mount {
            step: "mounting tmpfs for volume",
            path: path.clone(),
            source,
        })?;
    }
    Ok(path)
}

/// What the containers of a pod share besides the network, like the pause container gives
/// them upstream: one IPC namespace (SysV IPC, POSIX message queues) with one `/dev/shm`, and,
/// off the host network, one UTS namespace whose hostname is the pod's. `None`: the host's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodNamespaces {
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    pub shm: Option<PathBuf>,
}

/// The kubelet's default shm size (containerd's sandbox /dev/shm).
const SHM_SIZE: &str = "size=65536k";

/// Makes (or, after an agent restart, finds) the pod's shared namespaces and /dev/shm.
pub fn pod_namespaces(pod_dir: &Path, pod: &Pod, host_network: bool) -> Result<PodNamespaces, SandboxError> {
    let spec = pod.spec.as_ref();
    let host_ipc = spec.and_then(|s| s.host_ipc).unwrap_or(false);
    let hostname = spec
        .and_then(|s| s.hostname.clone())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    let ns_dir = pod_dir.join("ns");
    fs::create_dir_all(&ns_dir).map_err(io_err("creating", &ns_dir))?;
    let mut out = PodNamespaces::default();
    let mut wanted = CloneFlags::empty();
    if !host_ipc {
        wanted |= CloneFlags::CLONE_NEWIPC;
    }
    if !host_network {
        wanted |= CloneFlags::CLONE_NEWUTS;
    }
    let targets: Vec<(CloneFlags, PathBuf, &str)> = [
        (CloneFlags::CLONE_NEWIPC, ns_dir.join("ipc"), "ipc"),
        (CloneFlags::CLONE_NEWUTS, ns_dir.join("uts"), "uts"),
    ]
    .into_iter()
    .filter(|(flag, _, _)| wanted.contains(*flag))
    .collect();
    let missing: Vec<&(CloneFlags, PathBuf, &str)> =
        targets.iter().filter(|(_, path, _)| !runtime::image::snapshot::is_mounted(path)).collect();
    if !missing.is_empty() {
        for (_, path, _) in &missing {
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(io_err("creating", path))?;
        }
        let flags = missing.iter().fold(CloneFlags::empty(), |f, (flag, _, _)| f | *flag);
        let made = std::thread::scope(|scope| {
            scope
                .spawn(|| -> Result<(), SandboxError> {
                    // Only this short-lived thread enters the new namespaces.
                    nix::sched::unshare(flags).map_err(|source| SandboxError::Mount {
                        step: "unsharing the pod's IPC/UTS namespaces",
                        path: ns_dir.clone(),
                        source,
                    })?;
                    if flags.contains(CloneFlags::CLONE_NEWUTS) {
                        nix::unistd::sethostname(&hostname).map_err(|source| SandboxError::Mount {
                            step: "setting the pod's hostname",
                            path: ns_dir.clone(),
                            source,
                        })?;
                    }
                    for (_, path, kind) in &missing {
                        let source = format!("/proc/thread-self/ns/{kind}");
                        nix::mount::mount(Some(source.as_str()), path, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                            .map_err(|source| SandboxError::Mount {
                                step: "bind-mounting a pod namespace",
                                path: path.clone(),
                                source,
                            })?;
                    }
                    Ok(())
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(SandboxError::Io {
                        step: "creating the pod's namespaces (thread panicked)",
                        path: ns_dir.clone(),
                        source: io::Error::other("panic"),
                    })
                })
        });
        made?;
    }
    for (flag, path, _) in targets {
        if flag == CloneFlags::CLONE_NEWIPC {
            out.ipc = Some(path);
        } else {
            out.uts = Some(path);
        }
    }
    if !host_ipc {
        let shm = pod_dir.join("shm");
        fs::create_dir_all(&shm).map_err(io_err("creating", &shm))?;
        if !runtime::image::snapshot::is_mounted(&shm) {
            nix::mount::mount(
                Some("shm"),
                &shm,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some(format!("mode=1777,{SHM_SIZE}").as_str()),
            )
            .map_err(|source| SandboxError::Mount {
                step: "mounting the pod's /dev/shm",
                path: shm.clone(),
                source,
            })?;
        }
        out.shm = Some(shm);
    }
    Ok(out)
}

/// Unmounts the pod's tmpfs volumes and removes its directory. Idempotent.
pub fn remove(pod_dir: &Path) -> Result<(), SandboxError> {
    for path in [pod_dir.join("ns").join("ipc"), pod_dir.join("ns").join("uts"), pod_dir.join("shm")] {
        while runtime::image::snapshot::is_mounted(&path) {
            nix::mount::umount2(&path, MntFlags::MNT_DETACH).map_err(|source| SandboxError::Mount {
                step: "unmounting a pod namespace",
                path: path.clone(),
                source,
            })?;
        }
    }
    let plugins = ["kubernetes.io~secret", "kubernetes.io~projected"];
    let dirs = std::iter::once(pod_dir.join(EMPTY_DIR))
        .chain(plugins.iter().map(|p| pod_dir.join("volumes").join(p)));
    for dir in dirs {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            while runtime::image::snapshot::is_mounted(&path) {
                nix::mount::umount2(&path, MntFlags::MNT_DETACH).map_err(|source| {
                    SandboxError::Mount {
                        step: "unmounting a tmpfs volume",
                        path: path.clone(),
                        source,
                    }
                })?;
            }
        }
    }
    match fs::remove_dir_all(pod_dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(SandboxError::Io {
            step: "removing pod directory",
            path: pod_dir.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(extra: serde_json::Value) -> Pod {
        let mut spec = json!({"containers": []});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        serde_json::from_value(
            json!({"metadata": {"name": "web-0", "namespace": "prod"}, "spec": spec}),
        )
        .expect("pod")
    }

    #[test]
    fn hosts_file_names_the_pod_and_aliases() {
        let plain = hosts_file(&pod(json!({})), &["10.42.0.5".into()]);
        assert!(plain.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(plain.ends_with("10.42.0.5\tweb-0\n"));
        let full = hosts_file(
            &pod(
                json!({"subdomain": "web", "hostAliases": [{"ip": "1.2.3.4", "hostnames": ["a", "b"]}]}),
            ),
            &["10.42.0.5".into()],
        );
        assert!(full.contains("10.42.0.5\tweb-0.web.prod.svc.cluster.local\tweb-0\n"));
        assert!(full.ends_with("# Entries added by HostAliases.\n1.2.3.4\ta\tb\n"));
    }

    #[test]
    fn resolv_conf_follows_the_dns_policy() {
        let cluster = ClusterDns { servers: vec!["10.43.0.10".into()], domain: "cluster.local".into() };
        let host = "# generated\nnameserver 192.168.1.1\nsearch corp.example\noptions edns0\n";
        let first = pod_resolv_conf(&pod(json!({})), false, host, &cluster);
        assert_eq!(
            first,
            "search prod.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 10.43.0.10\noptions ndots:5\n"
        );
        // Host network without ClusterFirstWithHostNet: the node's.
        let node = pod_resolv_conf(&pod(json!({})), true, host, &cluster);
        assert_eq!(node, "search corp.example\nnameserver 192.168.1.1\noptions edns0\n");
        let with_host_net = pod_resolv_conf(&pod(json!({"dnsPolicy": "ClusterFirstWithHostNet"})), true, host, &cluster);
        assert!(with_host_net.contains("nameserver 10.43.0.10"));
        let none = pod_resolv_conf(
            &pod(json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.1.1.1"], "searches": ["a.b"], "options": [{"name": "ndots", "value": "2"}, {"name": "rotate"}]}})),
            false,
            host,
            &cluster,
        );
        assert_eq!(none, "search a.b\nnameserver 1.1.1.1\noptions ndots:2 rotate\n");
        let merged = pod_resolv_conf(&pod(json!({"dnsConfig": {"options": [{"name": "ndots", "value": "1"}]}})), false, host, &cluster);
        assert!(merged.ends_with("options ndots:1\n"), "{merged}");
        // No cluster DNS: ClusterFirst falls back to the node's.
        let fallback = pod_resolv_conf(&pod(json!({})), false, host, &ClusterDns { servers: vec![], domain: "cluster.local".into() });
        assert_eq!(fallback, node);
    }

    #[test]
    fn volumes_and_host_path_types() {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = dir.path().join("host");
        let p = pod(json!({"volumes": [
            {"name": "scratch", "emptyDir": {}},
            {"name": "made", "hostPath": {"path": host.join("made"), "type": "DirectoryOrCreate"}},
            {"name": "missing", "hostPath": {"path": host.join("nope"), "type": "Directory"}},
            {"name": "cm", "configMap": {"name": "x"}},
        ]}));
        fs::create_dir_all(&host).expect("host dir");
        let pod_dir = dir.path().join("pod");
        let (ready, failed) = prepare_volumes(&pod_dir, &p);
        assert_eq!(ready.keys().collect::<Vec<_>>(), ["made", "scratch"]);
        assert!(host.join("made").is_dir());
        assert!(pod_dir.join(EMPTY_DIR).join("scratch").is_dir());
        assert!(
            failed["missing"].contains("is not a directory"),
            "{failed:?}"
        );
        // API-backed volumes are the worker's to fill, not errors here.
        assert!(!failed.contains_key("cm") && !ready.contains_key("cm"));
        let unknown = pod(json!({"volumes": [{"name": "nfs", "nfs": {"server": "s", "path": "/"}}]}));
        let (_, failed_unknown) = prepare_volumes(&pod_dir, &unknown);
        assert!(failed_unknown["nfs"].contains("not supported"), "{failed_unknown:?}");
        write_record(
            &pod_dir,
            &PodRecord {
                namespace: "prod".into(),
                name: "web-0".into(),
                uid: "u".into(),
                host_network: false,
            },
        )
        .expect("record");
        assert_eq!(read_record(&pod_dir).map(|r| r.uid), Some("u".to_string()));
        remove(&pod_dir).expect("remove");
        assert!(!pod_dir.exists());
        remove(&pod_dir).expect("idempotent");
    }
}
