//! Flags, then a validated config (ripgrep's LowArgs → HiArgs; k3s's flag checks).
//! Every rejection names the flag and says what would be accepted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "skiff", version, about = "A Kubernetes-compatible cluster in one binary")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a whole cluster on this machine: datastore, API server and controllers.
    Server(ServerFlags),
    /// Run a node that joins an existing server.
    Agent(AgentFlags),
    /// Manage the node's images: pull, import, list, remove.
    #[command(subcommand)]
    Image(ImageCommand),
    /// The per-pod shim (started by the agent, not by hand).
    #[command(hide = true, disable_help_flag = true)]
    Shim {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// `skiff agent`: a node joining a server.
#[derive(Args, Debug)]
pub struct AgentFlags {
    /// The API server to join, e.g. http://127.0.0.1:6443.
    #[arg(long, env = "SKIFF_SERVER")]
    pub server: String,
    /// Where the node keeps its state (images, pods).
    #[arg(long, env = "SKIFF_DATA_DIR", default_value = "/var/lib/skiff")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub node: NodeFlags,
    /// Log level or filter (tracing-subscriber syntax); SKIFF_LOG overrides it.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// Settings of a node (the server's built-in one, or `skiff agent`).
#[derive(Args, Debug, Clone)]
pub struct NodeFlags {
    /// The Node's name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// The node's address (default: the address of the default route's interface, else 127.0.0.1).
    #[arg(long)]
    pub node_ip: Option<std::net::IpAddr>,
    /// Port of the node's kubelet server (logs, exec); 0 picks a free one.
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,
    /// Where container logs go (CRI layout).
    #[arg(long, default_value = "/var/log/pods")]
    pub log_root: PathBuf,
    /// The cgroup (relative to each hierarchy's root) pods run under.
    #[arg(long, default_value = "skiff")]
    pub cgroup_root: String,
    /// Directories holding CNI plugins, comma-separated.
    #[arg(long, default_value = "/usr/lib/cni,/opt/cni/bin")]
    pub cni_bin_dir: String,
    /// The CNI config directory (default: DATA_DIR/agent/cni/net.d); Skiff writes its bridge
    /// config there unless one exists.
    #[arg(long)]
    pub cni_conf_dir: Option<PathBuf>,
    /// The pod network of the whole cluster: the server gives each node a /24 of it, and the
    /// node's service proxy masquerades traffic to Services from outside it.
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// The cluster DNS Service address ClusterFirst pods resolve with (the kubelet's flag;
    /// the built-in DNS serves it as kube-system/kube-dns). Empty: the node's resolv.conf.
    #[arg(long, default_value = "10.43.0.10")]
    pub cluster_dns: String,
    /// The cluster's DNS domain (the kubelet's flag).
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Registry mirror, HOST=URL (e.g. docker.io=http://127.0.0.1:5000); repeatable.
    #[arg(long = "registry-mirror")]
    pub registry_mirrors: Vec<String>,
    /// Registry host spoken to over plain HTTP; repeatable.
    #[arg(long = "plain-http-registry")]
    pub plain_http_registries: Vec<String>,
    /// First container restart back-off (doubles up to 300s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub restart_backoff: Duration,
    /// Hard eviction thresholds, the kubelet's syntax: `memory.available<100Mi,nodefs.available<10%`.
    /// Below them the node reports MemoryPressure / DiskPressure (and is tainted).
    #[arg(long, default_value = "memory.available<100Mi,nodefs.available<10%", value_parser = parse_eviction_hard)]
    pub eviction_hard: agent::node::EvictionThresholds,
    /// The most processes one pod may run (the kubelet's flag; -1: no limit).
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    pub pod_max_pids: i64,
    /// How often running pods' configMap, secret and downwardAPI volumes are refreshed
    /// (the kubelet's flag, 1m).
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub sync_frequency: Duration,
    /// How often the node renews its Lease.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub node_lease_renew: Duration,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Pull an image from a registry (e.g. `busybox:1.36`, `127.0.0.1:5000/app:v1`).
    Pull {
        reference: String,
        #[command(flatten)]
        store: ImageStoreFlags,
        /// Registry mirror, `HOST=URL` (e.g. `docker.io=http://127.0.0.1:5000`); repeatable.
        #[arg(long = "mirror")]
        mirrors: Vec<String>,
        /// Registry host spoken to over plain HTTP (e.g. `127.0.0.1:5000`); repeatable.
        #[arg(long = "plain-http")]
        plain_http: Vec<String>,
        /// Basic-auth user name (the password comes from SKIFF_REGISTRY_PASSWORD).
        #[arg(long)]
        username: Option<String>,
    },
    /// Import images from an OCI layout (directory or tar) or a `docker save` tarball.
    Import {
        path: PathBuf,
        #[command(flatten)]
        store: ImageStoreFlags,
    },
    /// List the node's images.
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        store: ImageStoreFlags,
    },
    /// Remove images by reference or ID (unused layers are collected).
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
        #[command(flatten)]
        store: ImageStoreFlags,
    },
}

#[derive(Args, Debug)]
pub struct ImageStoreFlags {
    /// The node's data dir; images live in DIR/agent/images.
    #[arg(long, env = "SKIFF_DATA_DIR", default_value = "/var/lib/skiff")]
    pub data_dir: PathBuf,
}

impl ImageStoreFlags {
    pub fn images_dir(&self) -> PathBuf {
        self.data_dir.join("agent").join("images")
    }
}

#[derive(Args, Debug)]
pub struct ServerFlags {
    /// Where Skiff keeps its state (the SQLite datastore, the admin kubeconfig).
    #[arg(long, env = "SKIFF_DATA_DIR", default_value = "/var/lib/skiff")]
    pub data_dir: PathBuf,
    /// Address the API server listens on. Plain HTTP is allowed only on loopback.
    #[arg(long, env = "SKIFF_LISTEN", default_value = "127.0.0.1:6443")]
    pub listen: String,
    /// Use an external datastore instead of the embedded SQLite: `http://HOST:2379` (etcd;
    /// several comma-separated endpoints allowed), or `memory` (nothing is persisted; tests only).
    #[arg(long, env = "SKIFF_DATASTORE_ENDPOINT")]
    pub datastore_endpoint: Option<String>,
    /// How much store history is kept for watches and consistent paging, e.g. 5m, 30s, 1h.
    #[arg(long, default_value = "5m")]
    pub history_retention: String,
    /// Log level or filter (tracing-subscriber syntax); SKIFF_LOG overrides it.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Async worker threads (default: one per core, at least 2).
    #[arg(long)]
    pub worker_threads: Option<usize>,
    /// Do not run the built-in node (a control-plane-only server).
    #[arg(long)]
    pub disable_agent: bool,
    /// Do not run the built-in Ingress controller.
    #[arg(long)]
    pub disable_ingress: bool,
    /// The built-in Ingress controller's HTTP port on the node's address.
    #[arg(long, default_value_t = 80)]
    pub ingress_http_port: u16,
    /// The built-in Ingress controller's HTTPS port on the node's address.
    #[arg(long, default_value_t = 443)]
    pub ingress_https_port: u16,
    #[command(flatten)]
    pub node: NodeFlags,
    /// Leader election: how long a leader Lease is valid (upstream 15s).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub leader_lease_duration: Duration,
    /// Leader election: how long a leader keeps trying to renew before giving up (upstream 10s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub leader_renew_deadline: Duration,
    /// Leader election: how often to retry acquiring or renewing (upstream 2s).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub leader_retry_period: Duration,
    /// How often node health is checked (kube-controller-manager's flag, 5s).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub node_monitor_period: Duration,
    /// How long a node may go without renewing its Lease before it is marked unreachable
    /// (upstream 50s).
    #[arg(long, default_value = "50s", value_parser = parse_duration)]
    pub node_monitor_grace_period: Duration,
    /// How long a newly registered node has to send its first heartbeat (upstream 60s).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub node_startup_grace_period: Duration,
    /// Terminated pods kept before the oldest are deleted (upstream 12500).
    #[arg(long, default_value_t = 12500)]
    pub terminated_pod_gc_threshold: usize,
    /// The range ClusterIPs come from; its first address is the `kubernetes` Service's and
    /// its tenth the cluster DNS's.
    #[arg(long, default_value = "10.43.0.0/16")]
    pub service_cidr: apiserver::service_alloc::ServiceCidr,
    /// The range node ports come from (FROM-TO).
    #[arg(long, default_value = "30000-32767")]
    pub service_node_port_range: apiserver::service_alloc::NodePortRange,
    /// The address published in the `kubernetes` Endpoints (default: the listen address).
    #[arg(long)]
    pub advertise_address: Option<std::net::IpAddr>,
    /// Endpoints per EndpointSlice (upstream 100, at most 1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub max_endpoints_per_slice: u16,
}

/// This machine's host name, for leader identities and the default Node name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "skiff".into())
}

/// A server configuration that passed validation.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    /// The built-in Ingress controller's (HTTP, HTTPS) ports, `None` when disabled.
    pub ingress_ports: Option<(u16, u16)>,
    pub listen: SocketAddr,
    pub services: apiserver::service_alloc::ServiceNetworkConfig,
    pub backend: store::Backend,
    pub store: store::StoreConfig,
    pub log_level: String,
    pub worker_threads: usize,
    pub controllers: controllers::ControllersConfig,
    /// The built-in node, unless `--disable-agent`.
    pub node: Option<NodeFlags>,
}

impl ServerConfig {
    pub fn from_flags(f: ServerFlags) -> Result<ServerConfig, String> {
        let listen: SocketAddr = f.listen.parse().map_err(|_| {
            format!("--listen {:?} is not an address; use IP:PORT, e.g. 127.0.0.1:6443", f.listen)
        })?;
        if !listen.ip().is_loopback() {
            return Err(format!(
                "--listen {listen}: plain HTTP is only allowed on a loopback address (127.0.0.1 or [::1]) until TLS is configured; \
                 use --listen 127.0.0.1:{}",
                listen.port()
            ));
        }
        if f.data_dir.as_os_str().is_empty() {
            return Err("--data-dir must not be empty".into());
        }
        let backend = match f.datastore_endpoint.as_deref().map(str::trim) {
            None | Some("") => store::Backend::Sqlite { path: f.data_dir.join("db").join("state.db") },
            Some("memory") => store::Backend::Memory,
            Some(ep) => {
                let endpoints: Vec<String> = ep.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
                for e in &endpoints {
                    let rest = e.strip_prefix("http://").ok_or_else(|| {
                        format!("--datastore-endpoint {e:?}: only http://HOST:PORT etcd endpoints are supported (or \"memory\")")
                    })?;
                    if !rest.contains(':') || rest.ends_with(':') {
                        return Err(format!("--datastore-endpoint {e:?}: missing the port, e.g. http://127.0.0.1:2379"));
                    }
                }
                store::Backend::Etcd { endpoints }
            }
        };
        let history_retention = parse_duration(&f.history_retention)
            .map_err(|e| format!("--history-retention {:?}: {e}", f.history_retention))?;
        if history_retention < Duration::from_secs(10) {
            return Err(format!("--history-retention {:?}: must be at least 10s", f.history_retention));
        }
        if !(f.leader_lease_duration > f.leader_renew_deadline && f.leader_renew_deadline > f.leader_retry_period)
            || f.leader_retry_period.is_zero()
        {
            return Err(format!(
                "--leader-lease-duration ({:?}) must be greater than --leader-renew-deadline ({:?}), which must be greater than --leader-retry-period ({:?}) > 0",
                f.leader_lease_duration, f.leader_renew_deadline, f.leader_retry_period
            ));
        }
        let cluster_cidr: controllers::node_ipam::Ipv4Cidr =
            f.node.cluster_cidr.parse().map_err(|e| format!("--cluster-cidr: {e}"))?;
        if cluster_cidr.prefix > 24 {
            return Err(format!("--cluster-cidr {cluster_cidr}: must be /24 or larger (each node gets a /24)"));
        }
        let worker_threads = match f.worker_threads {
            Some(0) => return Err("--worker-threads must be at least 1".into()),
            Some(n) => n,
            None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2),
        };
        Ok(ServerConfig {
            ingress_ports: (!f.disable_ingress).then_some((f.ingress_http_port, f.ingress_https_port)),
            data_dir: f.data_dir,
            listen,
            services: apiserver::service_alloc::ServiceNetworkConfig {
                service_cidr: f.service_cidr.clone(),
                node_port_range: f.service_node_port_range.clone(),
                advertise_address: f.advertise_address,
                ..Default::default()
            },
            backend,
            store: store::StoreConfig { history_retention, ..Default::default() },
            log_level: f.log_level,
            worker_threads,
            node: (!f.disable_agent).then_some(f.node),
            controllers: controllers::ControllersConfig {
                identity: format!("{}_{}", hostname(), std::process::id()),
                lease_duration: f.leader_lease_duration,
                renew_deadline: f.leader_renew_deadline,
                retry_period: f.leader_retry_period,
                cluster_cidr,
                node_cidr_mask: 24,
                node_lifecycle: controllers::node_lifecycle::NodeLifecycleConfig {
                    monitor_period: f.node_monitor_period,
                    grace_period: f.node_monitor_grace_period,
                    startup_grace_period: f.node_startup_grace_period,
                    ..Default::default()
                },
                pod_gc: controllers::pod_gc::PodGcConfig {
                    terminated_pod_threshold: f.terminated_pod_gc_threshold,
                    ..Default::default()
                },
                max_endpoints_per_slice: usize::from(f.max_endpoints_per_slice),
            },
        })
    }

    pub fn backend_description(&self) -> String {
        match &self.backend {
            store::Backend::Memory => "memory (not persisted)".into(),
            store::Backend::Sqlite { path } => format!("sqlite {}", path.display()),
            store::Backend::Etcd { endpoints } => format!("etcd {}", endpoints.join(",")),
        }
    }
}

/// `90s`, `5m`, `1h`, `1h30m`, or plain seconds.
/// `--eviction-hard`: `signal<threshold` pairs, comma-separated; signals not named keep their
/// defaults. memory.available takes a quantity, nodefs.available a percentage.
pub fn parse_eviction_hard(s: &str) -> Result<agent::node::EvictionThresholds, String> {
    let mut out = agent::node::EvictionThresholds::default();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (signal, value) = pair
            .split_once('<')
            .ok_or_else(|| format!("{pair:?}: expected SIGNAL<THRESHOLD, e.g. nodefs.available<10%"))?;
        match signal.trim() {
            "memory.available" => {
                let millis = api::validation::parse_quantity(value.trim()).map_err(|e| format!("{pair:?}: {e}"))?;
                out.memory_available_bytes = u64::try_from(millis / 1000).map_err(|_| format!("{pair:?}: must not be negative"))?;
            }
            "nodefs.available" => {
                let pct = value
                    .trim()
                    .strip_suffix('%')
                    .and_then(|p| p.parse::<u64>().ok())
                    .filter(|p| *p <= 100)
                    .ok_or_else(|| format!("{pair:?}: nodefs.available takes a percentage like 10%"))?;
                out.nodefs_available_percent = pct;
            }
            other => return Err(format!("{other:?} is not a supported eviction signal (memory.available, nodefs.available)")),
        }
    }
    Ok(out)
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().map_err(|_| "expected a duration like 30s, 5m or 1h".to_string())?;
        num.clear();
        total += match c {
            's' => n,
            'm' => n * 60,
            'h' => n * 3600,
            _ => return Err(format!("unknown unit {c:?}; use s, m or h")),
        };
    }
    if !num.is_empty() {
        return Err("a number needs a unit (s, m or h)".into());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(listen: &str, ds: Option<&str>) -> ServerFlags {
        ServerFlags {
            data_dir: "/tmp/x".into(),
            listen: listen.into(),
            datastore_endpoint: ds.map(String::from),
            history_retention: "5m".into(),
            log_level: "info".into(),
            worker_threads: None,
            disable_agent: true,
            disable_ingress: false,
            ingress_http_port: 80,
            ingress_https_port: 443,
            node: NodeFlags {
                node_name: None,
                node_ip: None,
                kubelet_port: 10250,
                log_root: "/var/log/pods".into(),
                cgroup_root: "skiff".into(),
                cni_bin_dir: "/usr/lib/cni".into(),
                cni_conf_dir: None,
                cluster_cidr: "10.42.0.0/16".into(),
                cluster_dns: "10.43.0.10".into(),
                cluster_domain: "cluster.local".into(),
                registry_mirrors: vec![],
                plain_http_registries: vec![],
                restart_backoff: Duration::from_secs(10),
                sync_frequency: Duration::from_secs(60),
                pod_max_pids: -1,
                eviction_hard: agent::node::EvictionThresholds::default(),
                node_lease_renew: Duration::from_secs(10),
            },
            leader_lease_duration: Duration::from_secs(15),
            leader_renew_deadline: Duration::from_secs(10),
            leader_retry_period: Duration::from_secs(2),
            node_monitor_period: Duration::from_secs(5),
            node_monitor_grace_period: Duration::from_secs(50),
            node_startup_grace_period: Duration::from_secs(60),
            terminated_pod_gc_threshold: 12500,
            max_endpoints_per_slice: 100,
            service_cidr: "10.43.0.0/16".parse().expect("cidr"),
            service_node_port_range: "30000-32767".parse().expect("range"),
            advertise_address: None,
        }
    }

    #[test]
    fn eviction_thresholds_parse_like_the_kubelet() {
        let t = parse_eviction_hard("memory.available<200Mi,nodefs.available<5%").expect("parse");
        assert_eq!((t.memory_available_bytes, t.nodefs_available_percent), (200 << 20, 5));
        assert_eq!(parse_eviction_hard("nodefs.available<0%").expect("parse").memory_available_bytes, 100 << 20);
        assert!(parse_eviction_hard("imagefs.available<15%").expect_err("unknown").contains("imagefs.available"));
        assert!(parse_eviction_hard("nodefs.available<10").is_err());
    }

    #[test]
    fn refuses_plain_http_off_loopback() {
        let e = ServerConfig::from_flags(flags("0.0.0.0:6443", None)).expect_err("refused");
        assert!(e.contains("--listen") && e.contains("loopback"), "{e}");
        assert!(ServerConfig::from_flags(flags("127.0.0.1:0", None)).is_ok());
        assert!(ServerConfig::from_flags(flags("nonsense", None)).expect_err("bad").contains("--listen"));
    }

    #[test]
    fn datastore_endpoints_are_checked() {
        let c = ServerConfig::from_flags(flags("127.0.0.1:0", Some("http://127.0.0.1:2379"))).expect("ok");
        assert_eq!(c.backend, store::Backend::Etcd { endpoints: vec!["http://127.0.0.1:2379".into()] });
        let e = ServerConfig::from_flags(flags("127.0.0.1:0", Some("https://x:1"))).expect_err("bad scheme");
        assert!(e.contains("--datastore-endpoint"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("5x").is_err());
    }
}

/// `HOST=URL` registry mirror flags into the runtime's mirror map; `flag` names the flag in
/// the error (`--mirror` for `skiff image pull`, `--registry-mirror` for a node).
pub fn parse_mirrors(flag: &str, mirrors: &[String]) -> Result<std::collections::BTreeMap<String, Vec<String>>, String> {
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for m in mirrors {
        let (host, url) = m
            .split_once('=')
            .ok_or_else(|| format!("{flag} {m:?}: expected HOST=URL, e.g. docker.io=http://127.0.0.1:5000"))?;
        out.entry(host.to_string()).or_default().push(url.to_string());
    }
    Ok(out)
}
