//! The pod sandbox's network: a [`PodNetwork`] gives a pod a network namespace and its IPs at
//! sandbox creation and takes them back at teardown.
//!
//! * [`HostNetwork`]: `hostNetwork: true` pods share the node's namespace and report the
//!   node's IP (upstream: podIP = hostIP for such pods).
//! * [`LoopbackSandbox`]: a new network namespace per pod with only `lo` up; pods reach their
//!   own containers over localhost but have no pod IP. For nodes without CNI plugins.
//! * [`CniNetwork`]: a namespace per pod attached through CNI (`net::cni`), with Skiff's
//!   default conflist written from the node's podCIDR unless the conf dir has one.
//!
//! Namespaces are named `<prefix><pod uid>` and made through `net::netns`, so `ip netns`
//! sees them; they outlive the agent like the pod's containers do.

use std::fmt::Debug;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use net::cni::{CniError, CniRuntime, PodAttachment, PortMapping};
use net::netns::{HostNetns, Netns, NetnsError};

/// A failed network step. Setup failures are retried by the pod worker; teardown failures are
/// retried until they succeed, since a leaked namespace or IP outlives the pod.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("creating network namespace {name:?} for pod {pod}")]
    Create {
        name: String,
        pod: String,
        #[source]
        source: NetnsError,
    },
    #[error("removing network namespace {name:?} of pod {pod}")]
    Remove {
        name: String,
        pod: String,
        #[source]
        source: NetnsError,
    },
    #[error("CNI {step} for pod {pod}")]
    Cni {
        step: &'static str,
        pod: String,
        #[source]
        source: CniError,
    },
    #[error("writing the default CNI config for podCIDR {cidr:?}")]
    DefaultConfig {
        cidr: String,
        #[source]
        source: CniError,
    },
    #[error("a network task panicked")]
    Task(#[source] tokio::task::JoinError),
}

/// The pod a network call is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSandboxRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The containers' hostPorts (the `portMappings` CNI capability).
    pub port_mappings: Vec<PortMapping>,
}

impl std::fmt::Display for PodSandboxRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} ({})", self.namespace, self.name, self.uid)
    }
}

/// What the sandbox's containers join and what the pod reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodNetworkStatus {
    /// The network namespace containers join; `None` means the host's.
    pub netns: Option<PathBuf>,
    /// `status.podIPs`, primary first.
    pub ips: Vec<IpAddr>,
}

/// How pods get a network. Both calls are idempotent: setup of an existing sandbox returns
/// its status (re-adoption after an agent restart), teardown of a missing one succeeds.
pub trait PodNetwork: Send + Sync + Debug {
    fn setup<'a>(
        &'a self,
        pod: &'a PodSandboxRef,
    ) -> BoxFuture<'a, Result<PodNetworkStatus, NetworkError>>;
    fn teardown<'a>(&'a self, pod: &'a PodSandboxRef) -> BoxFuture<'a, Result<(), NetworkError>>;
    /// Called with the Node's `spec.podCIDR` after registration and on every status report
    /// (the server may assign it later). Idempotent.
    fn node_pod_cidr(&self, _pod_cidr: &str) -> Result<(), NetworkError> {
        Ok(())
    }
}

/// `hostNetwork: true`: nothing to create; the pod's IP is the node's.
#[derive(Clone, Debug)]
pub struct HostNetwork {
    pub node_ip: IpAddr,
}

impl PodNetwork for HostNetwork {
    fn setup<'a>(
        &'a self,
        _pod: &'a PodSandboxRef,
    ) -> BoxFuture<'a, Result<PodNetworkStatus, NetworkError>> {
        Box::pin(async move {
            Ok(PodNetworkStatus {
                netns: None,
                ips: vec![self.node_ip],
            })
        })
    }

    fn teardown<'a>(&'a self, _pod: &'a PodSandboxRef) -> BoxFuture<'a, Result<(), NetworkError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Per-pod namespaces: `<prefix><uid>`, created once (re-adopted when they exist).
#[derive(Clone)]
struct PodNamespaces {
    prefix: String,
    netns: Arc<dyn Netns>,
}

impl PodNamespaces {
    fn name(&self, pod: &PodSandboxRef) -> String {
        format!("{}{}", self.prefix, pod.uid)
    }

    /// Creates (or finds) the pod's namespace on a blocking thread: creation runs a thread
    /// that unshares and bind-mounts.
    async fn ensure(&self, pod: &PodSandboxRef) -> Result<PathBuf, NetworkError> {
        let (this, name, label) = (self.clone(), self.name(pod), pod.to_string());
        tokio::task::spawn_blocking(move || {
            if this.netns.exists(&name) {
                return Ok(this.netns.path(&name));
            }
            this.netns
                .create(&name)
                .map_err(|source| NetworkError::Create {
                    name,
                    pod: label,
                    source,
                })
        })
        .await
        .map_err(NetworkError::Task)?
    }

    async fn remove(&self, pod: &PodSandboxRef) -> Result<(), NetworkError> {
        let (this, name, label) = (self.clone(), self.name(pod), pod.to_string());
        tokio::task::spawn_blocking(move || {
            this.netns
                .delete(&name)
                .map_err(|source| NetworkError::Remove {
                    name,
                    pod: label,
                    source,
                })
        })
        .await
        .map_err(NetworkError::Task)?
    }
}

/// A network namespace per pod with loopback up and nothing else.
#[derive(Clone)]
pub struct LoopbackSandbox {
    namespaces: PodNamespaces,
}

impl Debug for LoopbackSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopbackSandbox")
            .field("prefix", &self.namespaces.prefix)
            .finish_non_exhaustive()
    }
}

impl LoopbackSandbox {
    /// Namespaces named `skiff-<pod uid>` under `/run/netns`. `_state_dir` is where a CNI
    /// implementation keeps its cache; the loopback sandbox keeps nothing beyond the namespace.
    pub fn new(_state_dir: &Path) -> LoopbackSandbox {
        LoopbackSandbox::with_netns("skiff-", Arc::new(HostNetns::new()))
    }

    pub fn with_prefix(prefix: &str) -> LoopbackSandbox {
        LoopbackSandbox::with_netns(prefix, Arc::new(HostNetns::new()))
    }

    pub fn with_netns(prefix: &str, netns: Arc<dyn Netns>) -> LoopbackSandbox {
        LoopbackSandbox {
            namespaces: PodNamespaces {
                prefix: prefix.to_string(),
                netns,
            },
        }
    }

    /// The namespace name of a pod. Pod UIDs are unique, so names never collide.
    pub fn netns_name(&self, pod: &PodSandboxRef) -> String {
        self.namespaces.name(pod)
    }
}

impl PodNetwork for LoopbackSandbox {
    fn setup<'a>(
        &'a self,
        pod: &'a PodSandboxRef,
    ) -> BoxFuture<'a, Result<PodNetworkStatus, NetworkError>> {
        Box::pin(async move {
            let path = self.namespaces.ensure(pod).await?;
            Ok(PodNetworkStatus {
                netns: Some(path),
                ips: Vec::new(),
            })
        })
    }

    fn teardown<'a>(&'a self, pod: &'a PodSandboxRef) -> BoxFuture<'a, Result<(), NetworkError>> {
        Box::pin(self.namespaces.remove(pod))
    }
}

/// Pods attached through CNI: a namespace per pod, ADD with the pod's CNI_ARGS and hostPorts,
/// DEL before the namespace goes (as containerd's CRI plugin orders sandbox teardown).
#[derive(Clone)]
pub struct CniNetwork {
    namespaces: PodNamespaces,
    cni: CniRuntime,
    /// Where the default conflist's IPAM keeps its leases; `None` never writes a default.
    default_config_data_dir: Option<PathBuf>,
}

impl Debug for CniNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CniNetwork")
            .field("prefix", &self.namespaces.prefix)
            .field("cni", &self.cni)
            .field("default_config_data_dir", &self.default_config_data_dir)
            .finish_non_exhaustive()
    }
}

impl CniNetwork {
    /// `cni` runs the plugins; namespaces are `<prefix><uid>` through `netns`. With
    /// `default_config_data_dir`, Skiff's default conflist is written from the node's podCIDR
    /// when the conf dir has no network config (users may put their own there instead).
    pub fn new(
        cni: CniRuntime,
        prefix: &str,
        netns: Arc<dyn Netns>,
        default_config_data_dir: Option<PathBuf>,
    ) -> CniNetwork {
        CniNetwork {
            namespaces: PodNamespaces {
                prefix: prefix.to_string(),
                netns,
            },
            cni,
            default_config_data_dir,
        }
    }

    /// The attachment of a pod: the sandbox ID is the pod UID (stable across agent restarts,
    /// so DEL finds ADD's cached result).
    fn attachment(&self, pod: &PodSandboxRef, netns_path: PathBuf) -> PodAttachment {
        PodAttachment {
            container_id: pod.uid.clone(),
            netns_path,
            ifname: "eth0".to_string(),
            args: PodAttachment::kubernetes_args(&pod.namespace, &pod.name, &pod.uid, &pod.uid),
            port_mappings: pod.port_mappings.clone(),
        }
    }
}

impl PodNetwork for CniNetwork {
    fn setup<'a>(
        &'a self,
        pod: &'a PodSandboxRef,
    ) -> BoxFuture<'a, Result<PodNetworkStatus, NetworkError>> {
        Box::pin(async move {
            let path = self.namespaces.ensure(pod).await?;
            let attachment = self.attachment(pod, path.clone());
            let cni_err = |step| {
                move |source| NetworkError::Cni {
                    step,
                    pod: pod.to_string(),
                    source,
                }
            };
            // Re-adoption: an attached sandbox keeps its address (a second ADD would allocate
            // another one from host-local).
            let result = match self
                .cni
                .cached_result(&attachment)
                .map_err(cni_err("reading the cached result"))?
            {
                Some(result) => result,
                None => self.cni.add(&attachment).await.map_err(cni_err("ADD"))?,
            };
            Ok(PodNetworkStatus {
                netns: Some(path),
                ips: result.pod_ips(),
            })
        })
    }

    fn teardown<'a>(&'a self, pod: &'a PodSandboxRef) -> BoxFuture<'a, Result<(), NetworkError>> {
        Box::pin(async move {
            let attachment =
                self.attachment(pod, self.namespaces.netns.path(&self.namespaces.name(pod)));
            match self.cni.del(&attachment).await {
                // No cached result and no network config: nothing was ever attached.
                Ok(()) | Err(CniError::NoNetworkConfig { .. }) => {}
                Err(source) => {
                    return Err(NetworkError::Cni {
                        step: "DEL",
                        pod: pod.to_string(),
                        source,
                    });
                }
            }
            self.namespaces.remove(pod).await
        })
    }

    fn node_pod_cidr(&self, pod_cidr: &str) -> Result<(), NetworkError> {
        let Some(data_dir) = &self.default_config_data_dir else {
            return Ok(());
        };
        net::cni::ensure_default_conflist(self.cni.conf_dir(), pod_cidr, data_dir)
            .map(|_| ())
            .map_err(|source| NetworkError::DefaultConfig {
                cidr: pod_cidr.to_string(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PodSandboxRef {
        PodSandboxRef {
            namespace: "default".into(),
            name: "web".into(),
            uid: "u1".into(),
            port_mappings: vec![],
        }
    }

    #[tokio::test]
    async fn host_network_reports_the_node_ip() {
        let host = HostNetwork {
            node_ip: "10.0.0.5".parse().expect("ip"),
        };
        let status = host.setup(&pod()).await.expect("setup");
        assert_eq!(status.netns, None);
        assert_eq!(status.ips, vec!["10.0.0.5".parse::<IpAddr>().expect("ip")]);
        assert!(host.teardown(&pod()).await.is_ok());
        assert_eq!(
            LoopbackSandbox::with_prefix("skiff-test-1-").netns_name(&pod()),
            "skiff-test-1-u1"
        );
    }

    #[tokio::test]
    async fn loopback_sandbox_creates_once_and_removes() {
        let fake = Arc::new(net::netns::FakeNetns::new("/fake/netns"));
        let sandbox = LoopbackSandbox::with_netns("p-", fake.clone());
        let first = sandbox.setup(&pod()).await.expect("setup");
        assert_eq!(first.netns, Some(PathBuf::from("/fake/netns/p-u1")));
        assert!(first.ips.is_empty());
        assert_eq!(
            sandbox.setup(&pod()).await.expect("adopt"),
            first,
            "setup is idempotent"
        );
        sandbox.teardown(&pod()).await.expect("teardown");
        assert!(!fake.exists("p-u1"));
        sandbox.teardown(&pod()).await.expect("teardown twice");
    }

    #[tokio::test]
    async fn cni_network_reports_missing_config_and_writes_the_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cni = CniRuntime::new(
            vec![dir.path().join("bin")],
            dir.path().join("net.d"),
            dir.path().join("cache"),
        );
        let fake = Arc::new(net::netns::FakeNetns::new("/fake/netns"));
        let network = CniNetwork::new(cni, "p-", fake.clone(), Some(dir.path().join("data")));
        let err = network.setup(&pod()).await.expect_err("no config yet");
        assert!(
            matches!(&err, NetworkError::Cni { step: "ADD", .. }),
            "{err:?}"
        );
        network
            .teardown(&pod())
            .await
            .expect("teardown of a pod never attached");
        assert!(fake.live().is_empty());
        network
            .node_pod_cidr("10.42.0.0/24")
            .expect("default conflist");
        assert!(
            dir.path()
                .join("net.d")
                .join(net::cni::DEFAULT_CONFLIST_NAME)
                .exists()
        );
        // With a config but no plugins, ADD fails; the namespace stays for a retry or teardown.
        assert!(matches!(
            network.setup(&pod()).await,
            Err(NetworkError::Cni { step: "ADD", .. })
        ));
        assert_eq!(fake.live(), ["p-u1"]);
    }
}
