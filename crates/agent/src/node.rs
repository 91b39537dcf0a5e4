//! The node itself: the agent's configuration, registration of the Node object (capacity,
//! allocatable, addresses, nodeInfo, conditions), its periodic status report, the node Lease
//! in `kube-node-lease`, and [`run`], which ties them to the pod workers until shutdown.
//!
//! Flow: [`run`] validates the [`AgentConfig`], opens the image store, registers the Node
//! (retrying until the API answers), then runs three tasks on one cancellation token: the
//! [`NodeLease`] renewal, the status report, and `pods::PodManager`. Shutdown ends the tasks
//! but leaves containers running: the per-pod shims own them and the next agent re-adopts them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    ContainerImage, DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints,
    NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::network::{LoopbackSandbox, PodNetwork};
use crate::paths::NodePaths;
use crate::pods::PodManager;

/// The version the node reports as its kubelet (`nodeInfo.kubeletVersion`): the API version
/// Skiff serves.
pub const KUBELET_VERSION: &str = "v1.33.0";

/// The namespace of node Leases (upstream `v1.NamespaceNodeLease`).
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// Upstream's default `nodeLeaseDurationSeconds`.
const LEASE_DURATION_SECONDS: i32 = 40;

/// The kubelet's default hard eviction thresholds (`memory.available<100Mi`,
/// `nodefs.available<10%`), which allocatable subtracts and the pressure conditions test.
/// The kubelet's hard eviction thresholds that decide MemoryPressure and DiskPressure and are
/// held back from allocatable (`--eviction-hard`, upstream default
/// `memory.available<100Mi,nodefs.available<10%`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvictionThresholds {
    pub memory_available_bytes: u64,
    pub nodefs_available_percent: u64,
}

impl Default for EvictionThresholds {
    fn default() -> Self {
        EvictionThresholds {
            memory_available_bytes: 100 << 20,
            nodefs_available_percent: 10,
        }
    }
}

/// Why the agent could not start or stopped. `Register` and `Lease` are retried inside [`run`]
/// and only reported when shutdown interrupts them; the others need a configuration fix.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("agent configuration: {0}")]
    Config(String),
    #[error("creating the agent directory {path:?}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the image store")]
    ImageStore(#[source] runtime::image::StoreError),
    #[error("registering Node {node:?}")]
    Register {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("renewing Lease {NODE_LEASE_NAMESPACE}/{node}")]
    Lease {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("a node agent task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// The node agent's settings (`skiff agent` flags, or `skiff server`'s built-in node).
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The Node's name (a DNS subdomain).
    pub node_name: String,
    /// `--data-dir`: images, pod directories, container state (see `paths`).
    pub data_dir: PathBuf,
    /// Pod log root (upstream `/var/log/pods`).
    pub log_root: PathBuf,
    /// The binary re-executed as `<binary> shim ARGS` for each pod.
    pub skiff_binary: PathBuf,
    /// How often the node Lease is renewed (upstream: a quarter of its 40 s duration).
    pub lease_renew: Duration,
    /// How often the Node status is reported even when nothing changed.
    pub status_update: Duration,
    pub registry: runtime::image::pull::RegistryConfig,
    /// The first crash-loop back-off; it doubles up to 300 s (upstream 10 s).
    pub backoff_base: Duration,
    /// The most processes one pod may run (the kubelet's `--pod-max-pids`); `None`: no limit.
    pub pod_max_pids: Option<i64>,
    /// Hard eviction thresholds (MemoryPressure, DiskPressure, allocatable).
    pub eviction: EvictionThresholds,
    /// How often running pods' configMap/secret/downwardAPI volumes are refreshed (the
    /// kubelet's `--sync-frequency`, 1 minute).
    pub sync_frequency: Duration,
    /// `status.capacity.pods`.
    pub max_pods: u32,
    /// The kubelet server's port, advertised in `daemonEndpoints`.
    pub kubelet_port: u16,
    /// The node's InternalIP, also hostNetwork pods' IP.
    pub node_ip: IpAddr,
    /// The cgroup all pods live under (`/<cgroup_root>/pod<uid>/<container>`); tests use
    /// `skiff-test-<pid>` so they never touch the host's.
    pub cgroup_root: String,
    /// The node's resolv.conf: hostNetwork and `dnsPolicy: Default` pods get its servers.
    pub resolv_conf: PathBuf,
    /// The cluster DNS ClusterFirst pods use (`--cluster-dns`, `--cluster-domain`).
    pub cluster_dns: crate::pods::ClusterDns,
    /// The network of pods that do not ask for `hostNetwork`.
    pub pod_network: Arc<dyn PodNetwork>,
}

impl AgentConfig {
    /// A configuration with upstream's defaults: 10 s lease renewal and back-off, 110 pods,
    /// port 10250, pods under the `skiff` cgroup, logs under `/var/log/pods`, and
    /// loopback-only pod sandboxes.
    pub fn new(
        node_name: &str,
        data_dir: &Path,
        skiff_binary: &Path,
        node_ip: IpAddr,
    ) -> AgentConfig {
        let paths = NodePaths::new(data_dir, Path::new("/var/log/pods"));
        AgentConfig {
            node_name: node_name.to_string(),
            data_dir: data_dir.to_path_buf(),
            log_root: PathBuf::from("/var/log/pods"),
            skiff_binary: skiff_binary.to_path_buf(),
            lease_renew: Duration::from_secs(10),
            status_update: Duration::from_secs(60),
            registry: runtime::image::pull::RegistryConfig::default(),
            backoff_base: Duration::from_secs(10),
            sync_frequency: Duration::from_secs(60),
            pod_max_pids: None,
            eviction: EvictionThresholds::default(),
            max_pods: 110,
            kubelet_port: 10250,
            node_ip,
            cgroup_root: "skiff".to_string(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            cluster_dns: crate::pods::ClusterDns {
                servers: vec!["10.43.0.10".to_string()],
                domain: "cluster.local".to_string(),
            },
            pod_network: Arc::new(LoopbackSandbox::new(&paths.network_state())),
        }
    }

    /// Rejects settings that cannot work, naming the field.
    pub fn validate(&self) -> Result<(), AgentError> {
        let errors = api::validation::is_dns1123_subdomain(&self.node_name);
        if !errors.is_empty() {
            return Err(AgentError::Config(format!(
                "node name {:?} is not a valid Node name: {}",
                self.node_name,
                errors.join("; ")
            )));
        }
        for (name, value) in [
            ("lease_renew", self.lease_renew),
            ("status_update", self.status_update),
            ("backoff_base", self.backoff_base),
            ("sync_frequency", self.sync_frequency),
        ] {
            if value.is_zero() {
                return Err(AgentError::Config(format!(
                    "{name} must be longer than zero"
                )));
            }
        }
        if !self.data_dir.is_absolute() || !self.log_root.is_absolute() {
            return Err(AgentError::Config(format!(
                "data_dir {:?} and log_root {:?} must be absolute paths",
                self.data_dir, self.log_root
            )));
        }
        let cgroup = self.cgroup_root.trim_matches('/');
        if cgroup.is_empty()
            || cgroup
                .split('/')
                .any(|part| part.is_empty() || part == "..")
        {
            return Err(AgentError::Config(format!(
                "cgroup_root {:?} must be a relative cgroup path like \"skiff\"",
                self.cgroup_root
            )));
        }
        Ok(())
    }

    pub fn paths(&self) -> NodePaths {
        NodePaths::new(&self.data_dir, &self.log_root)
    }
}

/// Runs the node agent until `shutdown` is cancelled: registers the Node, renews its Lease,
/// reports its status and runs one worker per pod bound to it. Containers keep running after
/// it returns (their shims own them).
pub async fn run(
    config: AgentConfig,
    client: Client,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    config.validate()?;
    let paths = config.paths();
    for dir in [
        paths.root.clone(),
        paths.images(),
        paths.container_state(),
        paths.log_root.clone(),
    ] {
        std::fs::create_dir_all(&dir).map_err(|source| AgentError::DataDir {
            path: dir.clone(),
            source,
        })?;
    }
    let store = runtime::image::Store::open(paths.images()).map_err(AgentError::ImageStore)?;
    let config = Arc::new(config);
    let reporter = NodeStatusReporter {
        config: config.clone(),
        client: client.clone(),
        store: store.clone(),
    };

    // Registration is retried: the API server may still be starting (the built-in node of
    // `skiff server` races it), as the kubelet's registerWithAPIServer does.
    let node = loop {
        match reporter.register().await {
            Ok(node) => break node,
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "node registration failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(e),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    tracing::info!(node = %config.node_name, "node registered");

    let lease = NodeLease::new(
        client.clone(),
        &config.node_name,
        node.metadata.uid.clone(),
        config.lease_renew,
    );
    let manager = PodManager::new(config.clone(), client.clone(), store);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(lease.run(shutdown.clone()));
    tasks.spawn(reporter.run(shutdown.clone()));
    tasks.spawn(manager.run(shutdown.clone()));
    while let Some(done) = tasks.join_next().await {
        done.map_err(AgentError::Task)?;
    }
    Ok(())
}

/// An error and its causes on one line, for logs.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The Lease `kube-node-lease/<node>` the node controller watches for liveness (KEP-589):
/// renewed every `renew` with holderIdentity = the node and a 40 s duration.
pub struct NodeLease {
    api: Api<Lease>,
    node: String,
    node_uid: Option<String>,
    renew: Duration,
}

impl NodeLease {
    pub fn new(client: Client, node: &str, node_uid: Option<String>, renew: Duration) -> NodeLease {
        NodeLease {
            api: Api::namespaced(client, NODE_LEASE_NAMESPACE),
            node: node.to_string(),
            node_uid,
            renew,
        }
    }

    /// Creates the Lease or bumps its renewTime.
    pub async fn renew_once(&self) -> Result<(), AgentError> {
        let err = |source| AgentError::Lease {
            node: self.node.clone(),
            source,
        };
        let now = MicroTime(jiff::Timestamp::now());
        match self.api.get_opt(&self.node).await.map_err(err)? {
            Some(_) => {
                let patch = json!({"spec": {
                    "holderIdentity": self.node,
                    "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                    "renewTime": now,
                }});
                self.api
                    .patch(&self.node, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(err)?;
            }
            None => {
                // Owned by the Node so deleting the Node deletes its Lease (as the kubelet).
                let owner = self.node_uid.as_ref().map(|uid| OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: self.node.clone(),
                    uid: uid.clone(),
                    ..OwnerReference::default()
                });
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.node.clone()),
                        namespace: Some(NODE_LEASE_NAMESPACE.into()),
                        owner_references: owner.map(|o| vec![o]),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.node.clone()),
                        lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
                        renew_time: Some(now),
                        ..LeaseSpec::default()
                    }),
                };
                self.api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map_err(err)?;
            }
        }
        Ok(())
    }

    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.renew_once().await {
                tracing::warn!(error = %error_chain(&e), "lease renewal failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.renew) => {}
            }
        }
    }
}

/// What the host has, read from /proc and statvfs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostFacts {
    pub cpus: u64,
    pub memory_bytes: u64,
    pub memory_available_bytes: u64,
    pub disk_bytes: u64,
    pub disk_available_bytes: u64,
    pub hostname: String,
    pub kernel_version: String,
    pub os_image: String,
    pub machine_id: String,
    pub system_uuid: String,
    pub boot_id: String,
}

impl HostFacts {
    /// Reads the host; anything unreadable is left empty or zero rather than failing the
    /// registration (a container-less host lacks `/etc/machine-id`, non-root cannot read the
    /// DMI product UUID).
    pub fn read(data_dir: &Path) -> HostFacts {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let meminfo = read("/proc/meminfo");
        let (disk_bytes, disk_available_bytes) = nix::sys::statvfs::statvfs(data_dir)
            .map(|fs| {
                let frag = fs.fragment_size();
                (fs.blocks() * frag, fs.blocks_available() * frag)
            })
            .unwrap_or((0, 0));
        HostFacts {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get() as u64)
                .unwrap_or(1),
            memory_bytes: meminfo_kib(&meminfo, "MemTotal").unwrap_or(0) * 1024,
            memory_available_bytes: meminfo_kib(&meminfo, "MemAvailable").unwrap_or(0) * 1024,
            disk_bytes,
            disk_available_bytes,
            hostname: read("/proc/sys/kernel/hostname"),
            kernel_version: read("/proc/sys/kernel/osrelease"),
            os_image: os_release_pretty_name(&read("/etc/os-release")),
            machine_id: read("/etc/machine-id"),
            system_uuid: read("/sys/class/dmi/id/product_uuid"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
        }
    }
}

/// A value in KiB from /proc/meminfo (`MemTotal:  16318412 kB`).
fn meminfo_kib(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let (k, rest) = line.split_once(':')?;
        (k == key)
            .then(|| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .flatten()
    })
}

/// `PRETTY_NAME` from os-release, as the kubelet's `osImage` (cadvisor reads the same field).
fn os_release_pretty_name(os_release: &str) -> String {
    os_release
        .lines()
        .find_map(|line| line.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "Linux".to_string())
}

/// A byte count as a canonical binary-SI quantity: the largest power-of-1024 suffix that keeps
/// it whole (`8141440Ki`, `2Gi`, `1000`), as `resource.NewQuantity(n, BinarySI)` prints.
pub fn binary_si(bytes: u64) -> Quantity {
    let mut value = bytes;
    let mut suffix = "";
    for next in ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"] {
        if value == 0 || !value.is_multiple_of(1024) {
            break;
        }
        value /= 1024;
        suffix = next;
    }
    Quantity(format!("{value}{suffix}"))
}

fn condition(
    kind: &str,
    pressure: bool,
    reason_ok: &str,
    message_ok: &str,
    reason_bad: &str,
    message_bad: &str,
) -> NodeCondition {
    let (status, reason, message) = if pressure {
        ("True", reason_bad, message_bad)
    } else {
        ("False", reason_ok, message_ok)
    };
    NodeCondition {
        type_: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        ..NodeCondition::default()
    }
}

/// The node's conditions with upstream's reasons and messages (pkg/kubelet/nodestatus).
/// Heartbeat and transition times are filled in by the caller.
pub fn node_conditions(facts: &HostFacts, eviction: &EvictionThresholds) -> Vec<NodeCondition> {
    let memory_pressure =
        facts.memory_bytes > 0 && facts.memory_available_bytes < eviction.memory_available_bytes;
    let disk_pressure = facts.disk_bytes > 0
        && facts.disk_available_bytes.saturating_mul(100)
            < facts
                .disk_bytes
                .saturating_mul(eviction.nodefs_available_percent);
    vec![
        condition(
            "MemoryPressure",
            memory_pressure,
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
            "KubeletHasInsufficientMemory",
            "kubelet has insufficient memory available",
        ),
        condition(
            "DiskPressure",
            disk_pressure,
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
            "KubeletHasDiskPressure",
            "kubelet has disk pressure",
        ),
        condition(
            "PIDPressure",
            false,
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
            "KubeletHasInsufficientPID",
            "kubelet has insufficient PID available",
        ),
        NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: Some("KubeletReady".into()),
            message: Some("kubelet is posting ready status".into()),
            ..NodeCondition::default()
        },
    ]
}

/// The Node's status from host facts, keeping each condition's lastTransitionTime from
/// `previous` while its status is unchanged.
pub fn node_status(
    config: &AgentConfig,
    facts: &HostFacts,
    images: Vec<ContainerImage>,
    previous: Option<&NodeStatus>,
    now: jiff::Timestamp,
) -> NodeStatus {
    let mut capacity = BTreeMap::new();
    capacity.insert("cpu".to_string(), Quantity(facts.cpus.to_string()));
    capacity.insert("memory".to_string(), binary_si(facts.memory_bytes));
    capacity.insert("pods".to_string(), Quantity(config.max_pods.to_string()));
    capacity.insert("ephemeral-storage".to_string(), binary_si(facts.disk_bytes));
    let mut allocatable = capacity.clone();
    allocatable.insert(
        "memory".to_string(),
        binary_si(facts.memory_bytes.saturating_sub(config.eviction.memory_available_bytes)),
    );
    allocatable.insert(
        "ephemeral-storage".to_string(),
        Quantity(
            (facts.disk_bytes - facts.disk_bytes * config.eviction.nodefs_available_percent.min(100) / 100)
                .to_string(),
        ),
    );
    let time = Time(now.round(jiff::Unit::Second).unwrap_or(now));
    let conditions = node_conditions(facts, &config.eviction)
        .into_iter()
        .map(|mut c| {
            let kept = previous
                .and_then(|p| p.conditions.as_ref())
                .and_then(|cs| {
                    cs.iter()
                        .find(|p| p.type_ == c.type_ && p.status == c.status)
                })
                .and_then(|p| p.last_transition_time.clone());
            c.last_transition_time = Some(kept.unwrap_or_else(|| time.clone()));
            c.last_heartbeat_time = Some(time.clone());
            c
        })
        .collect();
    let hostname = if facts.hostname.is_empty() {
        config.node_name.clone()
    } else {
        facts.hostname.clone()
    };
    NodeStatus {
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        conditions: Some(conditions),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: config.node_ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: hostname,
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(config.kubelet_port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: "amd64".into(),
            boot_id: facts.boot_id.clone(),
            container_runtime_version: format!("skiff://{}", env!("CARGO_PKG_VERSION")),
            kernel_version: facts.kernel_version.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.into(),
            machine_id: facts.machine_id.clone(),
            operating_system: "linux".into(),
            os_image: facts.os_image.clone(),
            system_uuid: facts.system_uuid.clone(),
            swap: None,
        }),
        images: Some(images),
        ..NodeStatus::default()
    }
}

/// The labels the kubelet puts on its Node (well-known labels, kubernetes.io/docs/reference/labels).
fn node_labels(node_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), node_name.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), "amd64".to_string()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), "amd64".to_string()),
    ])
}

/// Registers the Node and reports its status.
struct NodeStatusReporter {
    config: Arc<AgentConfig>,
    client: Client,
    store: runtime::image::Store,
}

impl NodeStatusReporter {
    fn images(&self) -> Vec<ContainerImage> {
        let mut by_id: BTreeMap<String, ContainerImage> = BTreeMap::new();
        for record in self.store.list().unwrap_or_default() {
            let entry = by_id
                .entry(record.id().to_string())
                .or_insert_with(|| ContainerImage {
                    names: Some(vec![record.repo_digest()]),
                    size_bytes: Some(record.size as i64),
                });
            if let Some(names) = entry.names.as_mut() {
                names.push(record.reference.to_string());
            }
        }
        by_id.into_values().collect()
    }

    /// Creates the Node, or adopts an existing one of the same name (an agent restart), then
    /// writes its status.
    async fn register(&self) -> Result<Node, AgentError> {
        let name = &self.config.node_name;
        let err = |source| AgentError::Register {
            node: name.clone(),
            source,
        };
        let nodes: Api<Node> = Api::all(self.client.clone());
        let existing = match nodes.get_opt(name).await.map_err(err)? {
            Some(_) => {
                let patch = json!({"metadata": {"labels": node_labels(name)}});
                nodes
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(err)?
            }
            None => {
                let node = Node {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        labels: Some(node_labels(name)),
                        ..ObjectMeta::default()
                    },
                    ..Node::default()
                };
                match nodes.create(&PostParams::default(), &node).await {
                    Ok(node) => node,
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        nodes.get(name).await.map_err(err)?
                    }
                    Err(e) => return Err(err(e)),
                }
            }
        };
        self.report(&existing).await
    }

    fn configure_network(&self, node: &Node) {
        if let Some(cidr) = node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref())
            && let Err(e) = self.config.pod_network.node_pod_cidr(cidr)
        {
            tracing::warn!(error = %error_chain(&e), "configuring the pod network failed");
        }
    }

    async fn report(&self, current: &Node) -> Result<Node, AgentError> {
        // The server assigns the podCIDR at registration; the pod network (CNI's default
        // conflist) needs it before the first pod.
        self.configure_network(current);
        let name = &self.config.node_name;
        let facts = HostFacts::read(&self.config.data_dir);
        let status = node_status(
            &self.config,
            &facts,
            self.images(),
            current.status.as_ref(),
            jiff::Timestamp::now(),
        );
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": status })),
            )
            .await
            .map_err(|source| AgentError::Register {
                node: name.clone(),
                source,
            })
    }

    async fn run(self, shutdown: CancellationToken) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let mut next_report = tokio::time::Instant::now() + self.config.status_update;
        let mut has_cidr = false;
        loop {
            // Until the node IPAM controller has given the Node its podCIDR, look every second
            // (without writing status) so the pod network is configured soon after.
            let wake = if has_cidr {
                next_report
            } else {
                next_report.min(tokio::time::Instant::now() + Duration::from_secs(1))
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(wake) => {}
            }
            let due = tokio::time::Instant::now() >= next_report;
            let result = match nodes.get_opt(&self.config.node_name).await {
                Ok(Some(node)) => {
                    has_cidr = node
                        .spec
                        .as_ref()
                        .and_then(|s| s.pod_cidr.as_ref())
                        .is_some_and(|c| !c.is_empty());
                    if due {
                        self.report(&node).await.map(|_| ())
                    } else if has_cidr {
                        self.configure_network(&node);
                        Ok(())
                    } else {
                        Ok(())
                    }
                }
                // Deleted under us (`kubectl delete node`): register again, as the kubelet.
                Ok(None) => self.register().await.map(|_| ()),
                Err(source) => Err(AgentError::Register {
                    node: self.config.node_name.clone(),
                    source,
                }),
            };
            if due {
                next_report = tokio::time::Instant::now() + self.config.status_update;
            }
            if let Err(e) = result {
                tracing::warn!(error = %error_chain(&e), "node status update failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_canonical_binary_si() {
        assert_eq!(binary_si(8141440 * 1024).0, "8141440Ki");
        assert_eq!(binary_si(2 << 30).0, "2Gi");
        assert_eq!(binary_si(1000).0, "1000");
        assert_eq!(binary_si(0).0, "0");
    }

    #[test]
    fn reads_meminfo_and_os_release() {
        let meminfo = "MemTotal:       16318412 kB\nMemFree:  100 kB\nMemAvailable:   9000000 kB\n";
        assert_eq!(meminfo_kib(meminfo, "MemTotal"), Some(16318412));
        assert_eq!(meminfo_kib(meminfo, "MemAvailable"), Some(9000000));
        assert_eq!(meminfo_kib(meminfo, "Nope"), None);
        assert_eq!(
            os_release_pretty_name("NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            "Debian GNU/Linux 12 (bookworm)"
        );
        assert_eq!(os_release_pretty_name(""), "Linux");
    }

    fn facts() -> HostFacts {
        HostFacts {
            cpus: 2,
            memory_bytes: 4 << 30,
            memory_available_bytes: 3 << 30,
            disk_bytes: 100 << 30,
            disk_available_bytes: 50 << 30,
            hostname: "host-a".into(),
            kernel_version: "6.1.0".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            ..HostFacts::default()
        }
    }

    #[test]
    fn status_reports_capacity_conditions_and_info() {
        let config = AgentConfig::new(
            "node-a",
            Path::new("/d"),
            Path::new("/skiff"),
            "10.0.0.5".parse().expect("ip"),
        );
        let t0 = jiff::Timestamp::from_second(1_700_000_000).expect("ts");
        let status = node_status(&config, &facts(), vec![], None, t0);
        let cap = status.capacity.as_ref().expect("capacity");
        assert_eq!(cap["cpu"].0, "2");
        assert_eq!(cap["memory"].0, "4Gi");
        assert_eq!(cap["pods"].0, "110");
        assert_eq!(
            status.allocatable.as_ref().expect("alloc")["memory"].0,
            "3996Mi"
        );
        let conditions = status.conditions.clone().expect("conditions");
        let ready = conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .expect("ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("True", Some("KubeletReady"))
        );
        assert!(conditions.iter().any(|c| c.type_ == "MemoryPressure"
            && c.status == "False"
            && c.reason.as_deref() == Some("KubeletHasSufficientMemory")));
        let info = status.node_info.as_ref().expect("info");
        assert!(info.container_runtime_version.starts_with("skiff://"));
        assert_eq!(info.kubelet_version, "v1.33.0");
        assert_eq!(
            status
                .daemon_endpoints
                .and_then(|d| d.kubelet_endpoint)
                .map(|k| k.port),
            Some(10250)
        );

        // A later report keeps transition times and moves the heartbeat.
        let t1 = jiff::Timestamp::from_second(1_700_000_060).expect("ts");
        let mut low = facts();
        low.memory_available_bytes = 10 << 20;
        let later = node_status(
            &config,
            &low,
            vec![],
            Some(&node_status(&config, &facts(), vec![], None, t0)),
            t1,
        );
        let conditions = later.conditions.expect("conditions");
        let ready = conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .expect("ready");
        assert_eq!(ready.last_transition_time.as_ref().map(|t| t.0), Some(t0));
        assert_eq!(ready.last_heartbeat_time.as_ref().map(|t| t.0), Some(t1));
        let memory = conditions
            .iter()
            .find(|c| c.type_ == "MemoryPressure")
            .expect("memory");
        assert_eq!(
            (
                memory.status.as_str(),
                memory.last_transition_time.as_ref().map(|t| t.0)
            ),
            ("True", Some(t1))
        );
    }

    #[test]
    fn config_validation_names_the_field() {
        let mut config = AgentConfig::new(
            "node-a",
            Path::new("/d"),
            Path::new("/skiff"),
            "10.0.0.5".parse().expect("ip"),
        );
        assert!(config.validate().is_ok());
        config.node_name = "Bad_Name".into();
        assert!(matches!(config.validate(), Err(AgentError::Config(m)) if m.contains("node name")));
        config.node_name = "ok".into();
        config.cgroup_root = "../x".into();
        assert!(
            matches!(config.validate(), Err(AgentError::Config(m)) if m.contains("cgroup_root"))
        );
    }
}
