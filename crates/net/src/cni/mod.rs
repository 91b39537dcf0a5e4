//! The CNI runtime: attaching pod network namespaces to the pod network by running CNI plugins
//! (spec up to 1.0.0, which the plugins in apt's containernetworking-plugins 1.1.1 speak).
//!
//! * `config`: finding the network config list in the conf dir; Skiff's default one (bridge
//!   `cni0` + host-local from the node's pod CIDR + portmap + loopback).
//! * `exec`: running one plugin binary (env, stdin, timeout, error objects).
//! * `result`: the typed result returned to the caller ([`CniResult`], [`IpNet`]).
//! * this module: [`CniRuntime`] chains the plugins for ADD (each gets the previous result as
//!   `prevResult`), caches the final result with the config that produced it, and runs DEL in
//!   reverse order and CHECK in order from that cache, as libcni does.
//!   [`PodNetwork`] is the narrow trait the agent depends on; [`FakeCni`] a recording fake.

mod config;
mod exec;
mod result;

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use config::{
    DEFAULT_BRIDGE, DEFAULT_CNI_VERSION, DEFAULT_CONFLIST_NAME, DEFAULT_NETWORK_NAME,
    NetworkConfigList, config_files, default_conflist, ensure_default_conflist, load_network,
    write_default_conflist,
};
pub use exec::Command;
pub use result::{CniResult, Dns, Interface, IpConfig, IpNet, IpNetParseError, Route};

use config::parse_version;
use exec::{Invocation, run_plugin};

/// Where plugins are looked for by default: the upstream convention, then Debian's package.
pub const DEFAULT_PLUGIN_DIRS: [&str; 2] = ["/opt/cni/bin", "/usr/lib/cni"];
/// The conventional network config directory.
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
/// How long one plugin may run before it is killed. Measured chains take well under a second;
/// the margin covers a loaded node and iptables lock waits.
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors from the CNI runtime. Retryable (see [`CniError::is_retryable`]): timeouts and a
/// plugin's "try again later" (code 11); every other error needs a config or host fix first.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error(
        "no CNI network config (*.conflist, *.conf, *.json) in {}: write one there or let Skiff write its default",
        conf_dir.display()
    )]
    NoNetworkConfig { conf_dir: PathBuf },
    #[error("reading CNI config {}: {source}", path.display())]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parsing CNI config {}: {source}", path.display())]
    ParseConfig {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid CNI config {}: {reason}", path.display())]
    InvalidConfig { path: PathBuf, reason: String },
    #[error("writing CNI config {}: {source}", path.display())]
    WriteConfig {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("pod CIDR {cidr:?} {reason}")]
    InvalidPodCidr { cidr: String, reason: String },
    #[error("invalid pod attachment: {field} {value:?} {reason}")]
    InvalidAttachment {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(
        "CNI plugin {plugin:?} not found in {dirs}: install containernetworking-plugins (apt install containernetworking-plugins) or add the directory holding it to the plugin dirs"
    )]
    PluginNotFound { plugin: String, dirs: String },
    #[error("starting CNI plugin {plugin:?} ({}) for {command}: {source}", path.display())]
    Spawn {
        plugin: String,
        command: Command,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("opening the host network namespace {} for CNI plugins: {source}", path.display())]
    HostNetns {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("CNI plugin {plugin:?} {command} did not finish within {timeout:?} and was killed")]
    Timeout {
        plugin: String,
        command: Command,
        timeout: Duration,
    },
    #[error("CNI plugin {plugin:?} {command} failed (code {code}): {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
    Plugin {
        plugin: String,
        command: Command,
        code: u32,
        msg: String,
        details: String,
    },
    #[error("CNI plugin {plugin:?} {command} failed ({status}): {output}")]
    PluginFailed {
        plugin: String,
        command: Command,
        status: String,
        output: String,
    },
    #[error("CNI plugin {plugin:?} {command} returned an invalid result: {reason}")]
    InvalidResult {
        plugin: String,
        command: Command,
        reason: String,
    },
    #[error("CNI result cache {}: {reason}", path.display())]
    Cache { path: PathBuf, reason: String },
    #[error(
        "no cached CNI result for container {container_id:?} interface {ifname:?}: CHECK needs a prior ADD"
    )]
    NoCachedResult {
        container_id: String,
        ifname: String,
    },
    #[error("CNI CHECK needs cniVersion 0.4.0 or later; network {network:?} uses {version}")]
    CheckUnsupported { network: String, version: String },
}

impl CniError {
    /// Whether retrying the same operation later may succeed without a config change.
    pub fn is_retryable(&self) -> bool {
        match self {
            CniError::Timeout { .. } => true,
            // Spec error code 11: "Try again later".
            CniError::Plugin { code, .. } => *code == 11,
            _ => false,
        }
    }
}

/// Transport protocol of a port mapping, spelled as CNI's `portMappings` capability wants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

/// A hostPort mapping (the `portMappings` capability, which the portmap plugin implements).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    /// Bind only this host address; all addresses when absent.
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
}

/// One pod sandbox's attachment to the network: what ADD, DEL and CHECK are called with.
/// DEL and CHECK must be given the same `container_id` and `ifname` as ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAttachment {
    /// The sandbox ID (`CNI_CONTAINERID`): letters, digits, `_`, `.`, `-`.
    pub container_id: String,
    /// The pod's network namespace (`CNI_NETNS`), e.g. `/run/netns/<name>`. For DEL it may no
    /// longer exist.
    pub netns_path: PathBuf,
    /// The interface inside the pod (`CNI_IFNAME`), normally `eth0`.
    pub ifname: String,
    /// `CNI_ARGS` pairs, e.g. from [`PodAttachment::kubernetes_args`].
    pub args: Vec<(String, String)>,
    pub port_mappings: Vec<PortMapping>,
}

impl PodAttachment {
    /// The `CNI_ARGS` the kubelet/CRI pass for a pod sandbox.
    pub fn kubernetes_args(
        namespace: &str,
        name: &str,
        uid: &str,
        infra_container_id: &str,
    ) -> Vec<(String, String)> {
        vec![
            ("K8S_POD_NAMESPACE".into(), namespace.into()),
            ("K8S_POD_NAME".into(), name.into()),
            (
                "K8S_POD_INFRA_CONTAINER_ID".into(),
                infra_container_id.into(),
            ),
            ("K8S_POD_UID".into(), uid.into()),
        ]
    }

    fn validate(&self) -> Result<(), CniError> {
        let bad = |field, value: &str, reason| {
            Err(CniError::InvalidAttachment {
                field,
                value: value.to_string(),
                reason,
            })
        };
        // The spec's rules: the ID also names cache files, so no path characters.
        if self.container_id.is_empty()
            || !self
                .container_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return bad(
                "container_id",
                &self.container_id,
                "must be non-empty letters, digits, '_', '.' or '-'",
            );
        }
        if self.ifname.is_empty()
            || self.ifname.len() > 15
            || self.ifname == "."
            || self.ifname == ".."
            || self
                .ifname
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace())
        {
            return bad(
                "ifname",
                &self.ifname,
                "must be a Linux interface name (1-15 bytes, no '/', ':' or spaces)",
            );
        }
        for (k, v) in &self.args {
            if k.is_empty() || k.contains(['=', ';']) || v.contains(';') {
                return bad(
                    "args",
                    k,
                    "keys and values must not contain ';' (or '=' in keys)",
                );
            }
        }
        Ok(())
    }

    /// `CNI_ARGS`: `IgnoreUnknown=1` first, so plugins that parse args strictly accept the
    /// Kubernetes keys they do not know (what the CRI implementations send).
    fn cni_args(&self) -> String {
        let mut s = String::from("IgnoreUnknown=1");
        for (k, v) in &self.args {
            s.push(';');
            s.push_str(k);
            s.push('=');
            s.push_str(v);
        }
        s
    }

    fn capability_args(&self) -> Map<String, Value> {
        let mut caps = Map::new();
        caps.insert(
            "portMappings".into(),
            serde_json::to_value(&self.port_mappings).unwrap_or(Value::Array(Vec::new())),
        );
        caps
    }
}

/// What is cached after a successful ADD: the config it ran with and its result, so DEL and
/// CHECK run against what was set up even if the conf dir changed since.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CacheEntry {
    kind: String,
    container_id: String,
    if_name: String,
    network_name: String,
    config: Value,
    cni_args: String,
    capability_args: Map<String, Value>,
    result: Value,
}

const CACHE_KIND: &str = "skiffCniCacheV1";

/// Runs CNI plugins for pods. Cheap to clone; holds no open resources.
#[derive(Debug, Clone)]
pub struct CniRuntime {
    plugin_dirs: Vec<PathBuf>,
    conf_dir: PathBuf,
    cache_dir: PathBuf,
    plugin_timeout: Duration,
    host_netns: Option<PathBuf>,
}

impl CniRuntime {
    /// Plugins are looked up in `plugin_dirs` in order; the network config is the first file
    /// in `conf_dir`; results are cached under `<cache_dir>/results`.
    pub fn new(
        plugin_dirs: Vec<PathBuf>,
        conf_dir: impl Into<PathBuf>,
        cache_dir: impl Into<PathBuf>,
    ) -> Self {
        CniRuntime {
            plugin_dirs,
            conf_dir: conf_dir.into(),
            cache_dir: cache_dir.into(),
            plugin_timeout: DEFAULT_PLUGIN_TIMEOUT,
            host_netns: None,
        }
    }

    /// Kills a plugin that runs longer than `timeout`.
    pub fn with_plugin_timeout(mut self, timeout: Duration) -> Self {
        self.plugin_timeout = timeout;
        self
    }

    /// Runs the plugins inside the network namespace at `path` instead of the caller's, so
    /// the "host" side (bridge, host veths, iptables rules) lands there. For tests, which must
    /// not change the root network namespace.
    pub fn with_host_netns(mut self, path: impl Into<PathBuf>) -> Self {
        self.host_netns = Some(path.into());
        self
    }

    pub fn conf_dir(&self) -> &Path {
        &self.conf_dir
    }

    pub fn plugin_dirs(&self) -> &[PathBuf] {
        &self.plugin_dirs
    }

    /// The network config ADD would use now.
    pub fn load_network(&self) -> Result<NetworkConfigList, CniError> {
        load_network(&self.conf_dir)
    }

    /// Attaches the pod: runs the chain in order, each plugin getting the previous result, and
    /// caches the final result for DEL and CHECK. On failure, undoes what it can with a DEL of
    /// the chain (as the CRI implementations do) so no address leaks, and returns the ADD error.
    pub async fn add(&self, pod: &PodAttachment) -> Result<CniResult, CniError> {
        pod.validate()?;
        let list = self.load_network()?;
        let netns = pod.netns_path.to_string_lossy().into_owned();
        let cni_args = pod.cni_args();
        let caps = pod.capability_args();
        let inv = self.invocation(Command::Add, pod, &netns, &cni_args);
        match self.add_chain(&list, &inv, &caps).await {
            Ok((raw, result)) => {
                let entry = CacheEntry {
                    kind: CACHE_KIND.into(),
                    container_id: pod.container_id.clone(),
                    if_name: pod.ifname.clone(),
                    network_name: list.name.clone(),
                    config: list.raw.clone(),
                    cni_args: cni_args.clone(),
                    capability_args: caps,
                    result: raw,
                };
                if let Err(e) = self.write_cache(&entry) {
                    self.rollback(&list, pod, &netns, &cni_args, &entry.capability_args)
                        .await;
                    return Err(e);
                }
                Ok(result)
            }
            Err(e) => {
                self.rollback(&list, pod, &netns, &cni_args, &caps).await;
                Err(e)
            }
        }
    }

    async fn add_chain(
        &self,
        list: &NetworkConfigList,
        inv: &Invocation<'_>,
        caps: &Map<String, Value>,
    ) -> Result<(Value, CniResult), CniError> {
        let mut prev: Option<(String, Value)> = None;
        for plugin in &list.plugins {
            let ty = plugin_type(plugin);
            let stdin = plugin_stdin(list, plugin, prev.as_ref().map(|(_, v)| v), caps);
            let out = run_plugin(ty, inv, &stdin).await?;
            let Some(out) = out else {
                return Err(CniError::InvalidResult {
                    plugin: ty.to_string(),
                    command: Command::Add,
                    reason: "printed no result".into(),
                });
            };
            prev = Some((ty.to_string(), out));
        }
        let Some((last, raw)) = prev else {
            return Err(CniError::InvalidConfig {
                path: list.source.clone(),
                reason: "\"plugins\" is empty".into(),
            });
        };
        let result: CniResult =
            serde_json::from_value(raw.clone()).map_err(|e| CniError::InvalidResult {
                plugin: last,
                command: Command::Add,
                reason: e.to_string(),
            })?;
        Ok((raw, result))
    }

    async fn rollback(
        &self,
        list: &NetworkConfigList,
        pod: &PodAttachment,
        netns: &str,
        cni_args: &str,
        caps: &Map<String, Value>,
    ) {
        let netns = if crate::netns::is_netns(Path::new(netns)) {
            netns
        } else {
            ""
        };
        let inv = self.invocation(Command::Del, pod, netns, cni_args);
        if let Err(e) = self.del_chain(list, &inv, None, caps).await {
            tracing::warn!(
                container_id = %pod.container_id,
                error = %e,
                "undoing a failed CNI ADD failed; a later DEL retries it"
            );
        }
    }

    /// Detaches the pod: runs the chain in reverse order with the config and result cached by
    /// ADD (or the current config when nothing is cached), then drops the cache. Idempotent,
    /// and works when the pod's namespace is already gone (plugins are then told no netns and
    /// release what lives outside it: addresses, host veths, iptables rules).
    pub async fn del(&self, pod: &PodAttachment) -> Result<(), CniError> {
        pod.validate()?;
        let (cache_path, cached) = self.find_cache(pod)?;
        let (list, cni_args, caps, prev) = match cached {
            Some(entry) => (
                NetworkConfigList::from_value(entry.config, &cache_path)?,
                entry.cni_args,
                entry.capability_args,
                Some(entry.result),
            ),
            None => (
                self.load_network()?,
                pod.cni_args(),
                pod.capability_args(),
                None,
            ),
        };
        // A dead or missing namespace file: say "no netns", which the spec allows for DEL,
        // rather than have plugins fail to enter it.
        let netns = if crate::netns::is_netns(&pod.netns_path) {
            pod.netns_path.to_string_lossy().into_owned()
        } else {
            String::new()
        };
        let inv = self.invocation(Command::Del, pod, &netns, &cni_args);
        // prevResult on DEL arrived with spec 0.4.0; older plugins do not expect it.
        let prev = prev.filter(|_| version_at_least(&list.cni_version, (0, 4, 0)));
        self.del_chain(&list, &inv, prev.as_ref(), &caps).await?;
        match fs::remove_file(&cache_path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CniError::Cache {
                path: cache_path,
                reason: format!("removing: {e}"),
            }),
        }
    }

    async fn del_chain(
        &self,
        list: &NetworkConfigList,
        inv: &Invocation<'_>,
        prev: Option<&Value>,
        caps: &Map<String, Value>,
    ) -> Result<(), CniError> {
        for plugin in list.plugins.iter().rev() {
            let stdin = plugin_stdin(list, plugin, prev, caps);
            run_plugin(plugin_type(plugin), inv, &stdin).await?;
        }
        Ok(())
    }

    /// Verifies the attachment is still as ADD left it: every plugin, in order, checks the
    /// cached result. A no-op when the config sets `disableCheck`.
    pub async fn check(&self, pod: &PodAttachment) -> Result<(), CniError> {
        pod.validate()?;
        let (cache_path, cached) = self.find_cache(pod)?;
        let Some(entry) = cached else {
            return Err(CniError::NoCachedResult {
                container_id: pod.container_id.clone(),
                ifname: pod.ifname.clone(),
            });
        };
        let list = NetworkConfigList::from_value(entry.config, &cache_path)?;
        if !version_at_least(&list.cni_version, (0, 4, 0)) {
            return Err(CniError::CheckUnsupported {
                network: list.name,
                version: list.cni_version,
            });
        }
        if list.disable_check {
            return Ok(());
        }
        let netns = pod.netns_path.to_string_lossy().into_owned();
        let inv = self.invocation(Command::Check, pod, &netns, &entry.cni_args);
        for plugin in &list.plugins {
            let stdin = plugin_stdin(&list, plugin, Some(&entry.result), &entry.capability_args);
            run_plugin(plugin_type(plugin), &inv, &stdin).await?;
        }
        Ok(())
    }

    /// The result ADD cached for this attachment, if any (e.g. to report pod IPs again after
    /// an agent restart without re-running ADD).
    pub fn cached_result(&self, pod: &PodAttachment) -> Result<Option<CniResult>, CniError> {
        pod.validate()?;
        let (path, cached) = self.find_cache(pod)?;
        match cached {
            None => Ok(None),
            Some(entry) => {
                serde_json::from_value(entry.result)
                    .map(Some)
                    .map_err(|e| CniError::Cache {
                        path,
                        reason: format!("cached result is invalid: {e}"),
                    })
            }
        }
    }

    fn invocation<'a>(
        &'a self,
        command: Command,
        pod: &'a PodAttachment,
        netns: &'a str,
        cni_args: &'a str,
    ) -> Invocation<'a> {
        Invocation {
            command,
            container_id: &pod.container_id,
            netns,
            ifname: &pod.ifname,
            cni_args,
            plugin_dirs: &self.plugin_dirs,
            timeout: self.plugin_timeout,
            host_netns: self.host_netns.as_deref(),
        }
    }

    /// The cache file for this attachment and its entry, if ADD left one. Files are named
    /// `<cache_dir>/results/<network>-<container>-<ifname>` (libcni's layout); when the current
    /// config names another network than ADD used, the entry is found by its contents.
    fn find_cache(&self, pod: &PodAttachment) -> Result<(PathBuf, Option<CacheEntry>), CniError> {
        let dir = self.cache_dir.join("results");
        let network = self
            .load_network()
            .map(|l| l.name)
            .unwrap_or_else(|_| DEFAULT_NETWORK_NAME.to_string());
        let suffix = format!("-{}-{}", pod.container_id, pod.ifname);
        let expected = dir.join(format!("{network}{suffix}"));
        // Names alone are ambiguous ("net-x" + "-a-eth0" and "net" + "-x-a-eth0" are the same
        // file name): an entry counts only if its contents name this attachment.
        let ours = |e: &CacheEntry| e.container_id == pod.container_id && e.if_name == pod.ifname;
        if let Some(entry) = self.read_cache(&expected)?
            && ours(&entry)
            && entry.network_name == network
        {
            return Ok((expected, Some(entry)));
        }
        let mut candidates: Vec<PathBuf> = match fs::read_dir(&dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.ends_with(&suffix) && !n.starts_with('.'))
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        candidates.sort();
        for path in candidates {
            if let Ok(Some(entry)) = self.read_cache(&path)
                && ours(&entry)
            {
                return Ok((path, Some(entry)));
            }
        }
        Ok((expected, None))
    }

    fn read_cache(&self, path: &Path) -> Result<Option<CacheEntry>, CniError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(CniError::Cache {
                    path: path.to_path_buf(),
                    reason: format!("reading: {e}"),
                });
            }
        };
        let entry: CacheEntry = serde_json::from_slice(&bytes).map_err(|e| CniError::Cache {
            path: path.to_path_buf(),
            reason: format!("parsing: {e}"),
        })?;
        if entry.kind != CACHE_KIND {
            return Err(CniError::Cache {
                path: path.to_path_buf(),
                reason: format!("unknown kind {:?}", entry.kind),
            });
        }
        Ok(Some(entry))
    }

    fn write_cache(&self, entry: &CacheEntry) -> Result<(), CniError> {
        let dir = self.cache_dir.join("results");
        let name = format!(
            "{}-{}-{}",
            entry.network_name, entry.container_id, entry.if_name
        );
        let path = dir.join(&name);
        let err = |reason: String| CniError::Cache {
            path: path.clone(),
            reason,
        };
        fs::create_dir_all(&dir).map_err(|e| err(format!("creating {}: {e}", dir.display())))?;
        let bytes = serde_json::to_vec(entry).map_err(|e| err(format!("encoding: {e}")))?;
        let tmp = dir.join(format!(".{name}.tmp"));
        fs::write(&tmp, bytes).map_err(|e| err(format!("writing: {e}")))?;
        fs::rename(&tmp, &path).map_err(|e| err(format!("renaming: {e}")))
    }
}

fn plugin_type(plugin: &Map<String, Value>) -> &str {
    // NetworkConfigList::from_value guarantees a valid string type.
    plugin
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn version_at_least(version: &str, min: (u32, u32, u32)) -> bool {
    parse_version(version).is_some_and(|v| v >= min)
}

/// The config one plugin reads on stdin: its own entry plus the list's `name` and `cniVersion`,
/// the previous result, and `runtimeConfig` holding the capability arguments it declared in
/// `capabilities` (the spec's "Deriving runtimeConfig").
fn plugin_stdin(
    list: &NetworkConfigList,
    plugin: &Map<String, Value>,
    prev: Option<&Value>,
    caps: &Map<String, Value>,
) -> Vec<u8> {
    let mut conf = plugin.clone();
    conf.insert("name".into(), Value::String(list.name.clone()));
    conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    if let Some(prev) = prev {
        conf.insert("prevResult".into(), prev.clone());
    }
    let mut runtime = Map::new();
    if let Some(Value::Object(declared)) = plugin.get("capabilities") {
        for (cap, enabled) in declared {
            if enabled.as_bool() == Some(true)
                && let Some(v) = caps.get(cap)
            {
                runtime.insert(cap.clone(), v.clone());
            }
        }
    }
    if !runtime.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime));
    }
    serde_json::to_vec(&Value::Object(conf)).unwrap_or_default()
}

/// The pod network operations the agent needs, so pod logic can be tested against [`FakeCni`].
pub trait PodNetwork: Send + Sync {
    fn add(&self, pod: &PodAttachment) -> impl Future<Output = Result<CniResult, CniError>> + Send;
    fn del(&self, pod: &PodAttachment) -> impl Future<Output = Result<(), CniError>> + Send;
    fn check(&self, pod: &PodAttachment) -> impl Future<Output = Result<(), CniError>> + Send;
}

impl PodNetwork for CniRuntime {
    fn add(&self, pod: &PodAttachment) -> impl Future<Output = Result<CniResult, CniError>> + Send {
        CniRuntime::add(self, pod)
    }
    fn del(&self, pod: &PodAttachment) -> impl Future<Output = Result<(), CniError>> + Send {
        CniRuntime::del(self, pod)
    }
    fn check(&self, pod: &PodAttachment) -> impl Future<Output = Result<(), CniError>> + Send {
        CniRuntime::check(self, pod)
    }
}

/// One call made on a [`FakeCni`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniCall {
    pub command: Command,
    pub container_id: String,
    pub netns_path: PathBuf,
}

/// A [`PodNetwork`] that runs nothing: ADD hands out 10.42.0.2, .3, … with gateway 10.42.0.1
/// (one address per attachment, kept until DEL), and every call is recorded.
#[derive(Debug, Default)]
pub struct FakeCni {
    state: Mutex<FakeCniState>,
}

#[derive(Debug, Default)]
struct FakeCniState {
    calls: Vec<CniCall>,
    attached: Vec<(String, Ipv4Addr)>,
    next_host: u8,
    fail_adds: bool,
}

impl FakeCni {
    pub fn new() -> Self {
        FakeCni::default()
    }

    /// Calls so far, in order.
    pub fn calls(&self) -> Vec<CniCall> {
        self.lock().calls.clone()
    }

    /// Container IDs currently attached.
    pub fn attached(&self) -> Vec<String> {
        self.lock()
            .attached
            .iter()
            .map(|(c, _)| c.clone())
            .collect()
    }

    /// Makes later ADDs fail with a retryable plugin error (code 11).
    pub fn fail_adds(&self, fail: bool) {
        self.lock().fail_adds = fail;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeCniState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(
        &self,
        command: Command,
        pod: &PodAttachment,
    ) -> std::sync::MutexGuard<'_, FakeCniState> {
        let mut state = self.lock();
        state.calls.push(CniCall {
            command,
            container_id: pod.container_id.clone(),
            netns_path: pod.netns_path.clone(),
        });
        state
    }

    fn fake_add(&self, pod: &PodAttachment) -> Result<CniResult, CniError> {
        pod.validate()?;
        let mut state = self.record(Command::Add, pod);
        if state.fail_adds {
            return Err(CniError::Plugin {
                plugin: "fake".into(),
                command: Command::Add,
                code: 11,
                msg: "fake failure".into(),
                details: String::new(),
            });
        }
        let ip = match state.attached.iter().find(|(c, _)| *c == pod.container_id) {
            Some((_, ip)) => *ip,
            None => {
                let host =
                    state
                        .next_host
                        .max(1)
                        .checked_add(1)
                        .ok_or_else(|| CniError::Plugin {
                            plugin: "fake".into(),
                            command: Command::Add,
                            code: 999,
                            msg: "fake address range exhausted".into(),
                            details: String::new(),
                        })?;
                state.next_host = host;
                let ip = Ipv4Addr::new(10, 42, 0, host);
                state.attached.push((pod.container_id.clone(), ip));
                ip
            }
        };
        Ok(CniResult {
            cni_version: DEFAULT_CNI_VERSION.into(),
            interfaces: vec![Interface {
                name: pod.ifname.clone(),
                mac: None,
                sandbox: Some(pod.netns_path.to_string_lossy().into_owned()),
            }],
            ips: vec![IpConfig {
                address: IpNet {
                    addr: IpAddr::V4(ip),
                    prefix_len: 24,
                },
                gateway: Some(IpAddr::V4(Ipv4Addr::new(10, 42, 0, 1))),
                interface: Some(0),
            }],
            routes: Vec::new(),
            dns: Dns::default(),
        })
    }
}

impl PodNetwork for FakeCni {
    fn add(&self, pod: &PodAttachment) -> impl Future<Output = Result<CniResult, CniError>> + Send {
        std::future::ready(self.fake_add(pod))
    }
    fn del(&self, pod: &PodAttachment) -> impl Future<Output = Result<(), CniError>> + Send {
        let result = pod.validate().map(|()| {
            let mut state = self.record(Command::Del, pod);
            state.attached.retain(|(c, _)| *c != pod.container_id);
        });
        std::future::ready(result)
    }
    fn check(&self, pod: &PodAttachment) -> impl Future<Output = Result<(), CniError>> + Send {
        let result = pod.validate().and_then(|()| {
            let state = self.record(Command::Check, pod);
            if state.attached.iter().any(|(c, _)| *c == pod.container_id) {
                Ok(())
            } else {
                Err(CniError::NoCachedResult {
                    container_id: pod.container_id.clone(),
                    ifname: pod.ifname.clone(),
                })
            }
        });
        std::future::ready(result)
    }
}

#[cfg(test)]
mod tests;
