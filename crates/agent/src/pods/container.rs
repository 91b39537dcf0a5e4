//! A Kubernetes container → the runtime's [`ContainerConfig`]: command and args against the
//! image's Entrypoint and Cmd, the environment (image env, then the container's, with
//! `$(VAR)` expansion and downward-API field references), working directory, user, resource
//! limits, security context and volume mounts. Pure: the caller supplies the image config,
//! the pod's volumes on the host and the sandbox's namespaces.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, PodSecurityContext, SecurityContext};
use runtime::container::{
    CapabilityChanges, ContainerConfig, Mount, MountSource, Namespace, Resources, SeccompProfile,
    User,
};
use runtime::image::ImageConfig;

/// Why a container cannot be built; the worker reports it as the `CreateContainerConfigError`
/// waiting reason with this message. Not retryable until the pod (or the image) changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainerConfigError {
    #[error(
        "container {container:?}: neither command nor the image's Entrypoint/Cmd give anything to run"
    )]
    NoCommand { container: String },
    #[error("container {container:?}: env {name}: {reason}")]
    Env {
        container: String,
        name: String,
        reason: String,
    },
    #[error("container {container:?}: resources.{field}: {value:?} is not a quantity")]
    Quantity {
        container: String,
        field: String,
        value: String,
    },
    #[error("container {container:?}: volumeMounts {name:?}: {reason}")]
    VolumeMount {
        container: String,
        name: String,
        reason: String,
    },
    #[error(
        "container {container:?}: user {user:?} from the image is not in its /etc/passwd; set securityContext.runAsUser"
    )]
    UnknownUser { container: String, user: String },
    #[error(
        "container {container:?}: seccompProfile type {kind:?} is not supported (use RuntimeDefault or Unconfined)"
    )]
    Seccomp { container: String, kind: String },
}

/// A pod volume made ready on the host by the sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostVolume {
    pub path: PathBuf,
    /// Mounts of it are always read-only (upstream: configMap, secret, projected).
    pub read_only: bool,
}

/// Everything besides the container spec that decides its runtime config.
#[derive(Clone, Debug)]
pub struct ContainerEnvironment<'a> {
    pub pod: &'a Pod,
    pub image: &'a ImageConfig,
    /// The mounted root filesystem, to resolve user names through its /etc/passwd.
    pub rootfs: &'a Path,
    pub host_ip: String,
    pub pod_ips: Vec<String>,
    pub volumes: &'a BTreeMap<String, HostVolume>,
    pub sources: &'a EnvSources,
    pub namespaces: Vec<Namespace>,
    pub cgroup_path: String,
    pub hosts_file: Option<PathBuf>,
    pub resolv_conf: Option<PathBuf>,
    pub termination_log: Option<PathBuf>,
}

/// The process the container runs, by Kubernetes' rules (kubernetes.io/docs/tasks/inject-data-
/// application/define-command-argument-container/#notes): `command` replaces the Entrypoint
/// and drops Cmd; `args` alone replaces Cmd; neither runs Entrypoint + Cmd.
pub fn process_args(container: &Container, image: &ImageConfig) -> (Vec<String>, Vec<String>) {
    let command = container.command.clone().unwrap_or_default();
    let args = container.args.clone().unwrap_or_default();
    match (command.is_empty(), args.is_empty()) {
        (true, true) => (image.entrypoint.clone(), image.cmd.clone()),
        (true, false) => (image.entrypoint.clone(), args),
        (false, _) => (command, args),
    }
}

/// Expands `$(VAR)` references as upstream's `third_party/forked/golang/expansion`: `$$` is an
/// escaped `$`, an undefined reference stays as written, anything else after `$` is literal.
pub fn expand(input: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let bytes = input.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' || i + 1 >= bytes.len() {
            let ch = input[i..].chars().next().unwrap_or('$');
            out.push(ch);
            i += ch.len_utf8();
            continue;
        }
        match bytes[i + 1] {
            b'$' => {
                out.push('$');
                i += 2;
            }
            b'(' => match input[i + 2..].find(')') {
                Some(end) => {
                    let name = &input[i + 2..i + 2 + end];
                    match vars(name) {
                        Some(value) => out.push_str(&value),
                        None => out.push_str(&input[i..i + 3 + end]),
                    }
                    i += 3 + end;
                }
                None => {
                    out.push_str(&input[i..]);
                    i = bytes.len();
                }
            },
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    out
}

/// A downward-API `fieldRef` value (the fields upstream allows in env).
fn field_ref(path: &str, env: &ContainerEnvironment<'_>) -> Option<String> {
    pod_field(env.pod, &env.host_ip, &env.pod_ips, path)
}

/// A downward-API `fieldRef` value of `pod` on this node, for env and volumes alike.
pub(crate) fn pod_field(pod: &Pod, host_ip: &str, pod_ips: &[String], path: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let keyed = |prefix: &str, map: Option<&BTreeMap<String, String>>| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.hostIP" => Some(host_ip.to_string()),
        "status.hostIPs" => Some(host_ip.to_string()),
        "status.podIP" => Some(pod_ips.first().cloned().unwrap_or_default()),
        "status.podIPs" => Some(pod_ips.join(",")),
        _ => keyed("metadata.labels['", meta.labels.as_ref())
            .or_else(|| keyed("metadata.annotations['", meta.annotations.as_ref())),
    }
}

/// The container's own environment, in order, with references expanded against the variables
/// defined before each one (upstream `makeEnvironmentVariables`).
/// The ConfigMaps and Secrets of the pod's namespace that containers refer to in `env` and
/// `envFrom`, fetched by the worker before building the container. `None`: it does not exist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvSources {
    pub config_maps: BTreeMap<String, Option<BTreeMap<String, String>>>,
    pub secrets: BTreeMap<String, Option<BTreeMap<String, String>>>,
}

impl EnvSources {
    /// The names of the ConfigMaps and Secrets `container` refers to.
    pub fn wanted(container: &Container) -> (BTreeSet<String>, BTreeSet<String>) {
        let (mut config_maps, mut secrets) = (BTreeSet::new(), BTreeSet::new());
        for from in container.env_from.iter().flatten() {
            if let Some(r) = &from.config_map_ref {
                config_maps.insert(r.name.clone());
            }
            if let Some(r) = &from.secret_ref {
                secrets.insert(r.name.clone());
            }
        }
        for source in container
            .env
            .iter()
            .flatten()
            .filter_map(|v| v.value_from.as_ref())
        {
            if let Some(r) = &source.config_map_key_ref {
                config_maps.insert(r.name.clone());
            }
            if let Some(r) = &source.secret_key_ref {
                secrets.insert(r.name.clone());
            }
        }
        (config_maps, secrets)
    }
}

/// Upstream's `IsEnvVarName`: `[-._a-zA-Z][-._a-zA-Z0-9]*`.
fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || "-._".contains(c))
        && chars.all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
}

/// Sets `name`, replacing an earlier definition in place.
fn define(out: &mut Vec<(String, String)>, name: &str, value: String) {
    match out.iter_mut().find(|(k, _)| k == name) {
        Some(entry) => entry.1 = value,
        None => out.push((name.to_string(), value)),
    }
}

/// One key of a ConfigMap or Secret for `valueFrom`; `Ok(None)` when optional and missing.
fn key_ref(
    kind: &str,
    sources: &BTreeMap<String, Option<BTreeMap<String, String>>>,
    namespace: &str,
    name: &str,
    key: &str,
    optional: bool,
) -> Result<Option<String>, String> {
    match sources.get(name).cloned().flatten() {
        None if optional => Ok(None),
        None => Err(format!("{} {name:?} not found", kind.to_ascii_lowercase())),
        Some(data) => match data.get(key) {
            Some(value) => Ok(Some(value.clone())),
            None if optional => Ok(None),
            None => Err(format!(
                "couldn't find key {key} in {kind} {namespace}/{name}"
            )),
        },
    }
}

/// The container's own environment, in order: `envFrom` sources, then `env`, a later
/// definition replacing an earlier one; `$(VAR)` references expand against the variables
/// defined before (upstream `makeEnvironmentVariables`).
fn container_env(
    container: &Container,
    env: &ContainerEnvironment<'_>,
) -> Result<Vec<(String, String)>, ContainerConfigError> {
    let namespace = env.pod.metadata.namespace.clone().unwrap_or_default();
    let err = |name: &str, reason: String| ContainerConfigError::Env {
        container: container.name.clone(),
        name: name.to_string(),
        reason,
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (kind, name, optional, sources) = match (&from.config_map_ref, &from.secret_ref) {
            (Some(r), _) => (
                "ConfigMap",
                &r.name,
                r.optional.unwrap_or(false),
                &env.sources.config_maps,
            ),
            (None, Some(r)) => (
                "Secret",
                &r.name,
                r.optional.unwrap_or(false),
                &env.sources.secrets,
            ),
            (None, None) => continue,
        };
        match sources.get(name).cloned().flatten() {
            None if optional => {}
            None => {
                return Err(err(
                    "envFrom",
                    format!("{} {name:?} not found", kind.to_ascii_lowercase()),
                ));
            }
            Some(data) => {
                for (key, value) in data {
                    let var = format!("{prefix}{key}");
                    // Upstream skips (and reports in an event) keys that are not variable names.
                    if is_env_var_name(&var) {
                        define(&mut out, &var, value);
                    }
                }
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => {
                let defined = out.clone();
                let lookup = move |name: &str| {
                    defined
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                };
                Some(expand(var.value.as_deref().unwrap_or_default(), &lookup))
            }
            Some(source) => {
                if let Some(f) = &source.field_ref {
                    Some(field_ref(&f.field_path, env).ok_or_else(|| {
                        err(
                            &var.name,
                            format!("fieldRef {:?} is not a supported field", f.field_path),
                        )
                    })?)
                } else if let Some(r) = &source.resource_field_ref {
                    Some(
                        resource_field(
                            container,
                            &r.resource,
                            r.divisor.as_ref().map(|d| d.0.as_str()),
                        )
                        .map_err(|reason| err(&var.name, reason))?,
                    )
                } else if let Some(r) = &source.config_map_key_ref {
                    let optional = r.optional.unwrap_or(false);
                    key_ref(
                        "ConfigMap",
                        &env.sources.config_maps,
                        &namespace,
                        &r.name,
                        &r.key,
                        optional,
                    )
                    .map_err(|reason| err(&var.name, reason))?
                } else if let Some(r) = &source.secret_key_ref {
                    let optional = r.optional.unwrap_or(false);
                    key_ref(
                        "Secret",
                        &env.sources.secrets,
                        &namespace,
                        &r.name,
                        &r.key,
                        optional,
                    )
                    .map_err(|reason| err(&var.name, reason))?
                } else {
                    return Err(err(&var.name, "valueFrom names no source".into()));
                }
            }
        };
        if let Some(value) = value {
            define(&mut out, &var.name, value);
        }
    }
    Ok(out)
}

/// A `resourceFieldRef` (`limits.memory`, `requests.cpu` …) divided by its divisor, rounded up
/// as upstream's `ExtractContainerResourceValue`. Unset limits report the node's capacity
/// upstream; here they report 0 for want of the allocatable value.
pub(crate) fn resource_field(
    container: &Container,
    resource: &str,
    divisor: Option<&str>,
) -> Result<String, String> {
    let (kind, name) = resource
        .split_once('.')
        .ok_or_else(|| format!("resourceFieldRef {resource:?} is not supported"))?;
    let resources = container.resources.as_ref();
    let map = match kind {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => return Err(format!("resourceFieldRef {resource:?} is not supported")),
    };
    let value = match map.and_then(|m| m.get(name)) {
        Some(q) => api::validation::parse_quantity(&q.0).map_err(|e| format!("{resource}: {e}"))?,
        None => 0,
    };
    let divisor = match divisor {
        Some(d) => api::validation::parse_quantity(d).map_err(|e| format!("divisor: {e}"))?,
        None => 1000,
    };
    if divisor <= 0 {
        return Err("divisor must be positive".into());
    }
    Ok(((value + divisor - 1) / divisor).to_string())
}

/// Image env, then the container's; a container variable replaces the image's of the same
/// name in place (containerd's `WithEnv`).
fn merge_env(image: &[String], container: &[(String, String)]) -> Vec<String> {
    let mut out: Vec<String> = image.to_vec();
    for (name, value) in container {
        let entry = format!("{name}={value}");
        match out
            .iter()
            .position(|e| e.split_once('=').map(|(k, _)| k).unwrap_or(e) == name)
        {
            Some(i) => out[i] = entry,
            None => out.push(entry),
        }
    }
    out
}

fn quantity_millis(
    container: &Container,
    field: &str,
    value: &str,
) -> Result<i128, ContainerConfigError> {
    api::validation::parse_quantity(value).map_err(|_| ContainerConfigError::Quantity {
        container: container.name.clone(),
        field: field.to_string(),
        value: value.to_string(),
    })
}

/// `limits.memory` → bytes, `limits.cpu` → a CFS quota per 100 ms period, `requests.cpu` →
/// shares (upstream `MilliCPUToShares`/`MilliCPUToQuota`: minimum 2 shares, 1 ms quota).
fn resources(container: &Container) -> Result<Resources, ContainerConfigError> {
    const PERIOD: u64 = 100_000;
    let r = container.resources.as_ref();
    let get = |map: Option<
        &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
               key: &str| { map.and_then(|m| m.get(key)).map(|q| q.0.clone()) };
    let limits = r.and_then(|r| r.limits.as_ref());
    let requests = r.and_then(|r| r.requests.as_ref());
    let mut out = Resources::default();
    if let Some(memory) = get(limits, "memory") {
        let bytes = (quantity_millis(container, "limits.memory", &memory)? + 999) / 1000;
        out.memory_limit_bytes = Some(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
    if let Some(cpu) = get(limits, "cpu") {
        let millis = quantity_millis(container, "limits.cpu", &cpu)?;
        let quota = (millis * i128::from(PERIOD) / 1000).max(1000);
        out.cpu_quota = Some(i64::try_from(quota).unwrap_or(i64::MAX));
        out.cpu_period = Some(PERIOD);
    }
    // Defaulting copies limits to unset requests, so an unset request means best effort.
    let request = get(requests, "cpu").or_else(|| get(limits, "cpu"));
    let millis = match request {
        Some(cpu) => quantity_millis(container, "requests.cpu", &cpu)?,
        None => 0,
    };
    out.cpu_shares = Some(u64::try_from((millis * 1024 / 1000).max(2)).unwrap_or(u64::MAX));
    Ok(out)
}

/// Looks a user or group name up in the image's passwd/group file.
fn lookup_id(rootfs: &Path, file: &str, name: &str) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(rootfs.join("etc").join(file)).ok()?;
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&name)).then(|| {
            let id = fields.get(2)?.parse().ok()?;
            let gid = fields.get(3).and_then(|g| g.parse().ok()).unwrap_or(id);
            Some((id, gid))
        })?
    })
}

/// The primary gid of `uid` from the image's /etc/passwd.
fn primary_gid(rootfs: &Path, uid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(rootfs.join("etc/passwd")).ok()?;
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.get(2).and_then(|u| u.parse::<u32>().ok()) == Some(uid))
            .then(|| fields.get(3)?.parse().ok())?
    })
}

/// runAsUser/runAsGroup (container over pod), else the image's `User` (`uid`, `name`,
/// `uid:gid`, `name:group`), resolved as containerd does.
fn user(
    container: &Container,
    sc: Option<&SecurityContext>,
    psc: Option<&PodSecurityContext>,
    env: &ContainerEnvironment<'_>,
) -> Result<User, ContainerConfigError> {
    let run_as_user = sc
        .and_then(|s| s.run_as_user)
        .or_else(|| psc.and_then(|p| p.run_as_user));
    let run_as_group = sc
        .and_then(|s| s.run_as_group)
        .or_else(|| psc.and_then(|p| p.run_as_group));
    let (uid, image_gid) = match run_as_user {
        Some(uid) => (uid as u32, None),
        None => match env.image.user.as_deref() {
            None => (0, None),
            Some(spec) => {
                let (u, g) = match spec.split_once(':') {
                    Some((u, g)) => (u, Some(g)),
                    None => (spec, None),
                };
                let uid = match u.parse::<u32>() {
                    Ok(uid) => uid,
                    Err(_) => lookup_id(env.rootfs, "passwd", u)
                        .map(|(uid, _)| uid)
                        .ok_or_else(|| ContainerConfigError::UnknownUser {
                            container: container.name.clone(),
                            user: spec.to_string(),
                        })?,
                };
                let gid = match g {
                    None => None,
                    Some(g) => Some(match g.parse::<u32>() {
                        Ok(gid) => gid,
                        Err(_) => lookup_id(env.rootfs, "group", g)
                            .map(|(gid, _)| gid)
                            .ok_or_else(|| ContainerConfigError::UnknownUser {
                                container: container.name.clone(),
                                user: spec.to_string(),
                            })?,
                    }),
                };
                (uid, gid)
            }
        },
    };
    let gid = match run_as_group {
        Some(gid) => gid as u32,
        None => image_gid
            .or_else(|| primary_gid(env.rootfs, uid))
            .unwrap_or(0),
    };
    let mut additional_gids: Vec<u32> = Vec::new();
    for g in psc
        .and_then(|p| p.supplemental_groups.clone())
        .unwrap_or_default()
        .into_iter()
        .chain(psc.and_then(|p| p.fs_group))
    {
        let g = g as u32;
        if !additional_gids.contains(&g) {
            additional_gids.push(g);
        }
    }
    Ok(User {
        uid,
        gid,
        additional_gids,
    })
}

/// `subPath` must stay inside the volume (upstream validation forbids `..` and absolute paths).
fn sub_path(container: &str, name: &str, sub: &str) -> Result<PathBuf, ContainerConfigError> {
    let path = Path::new(sub);
    if path
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(ContainerConfigError::VolumeMount {
            container: container.to_string(),
            name: name.to_string(),
            reason: format!("subPath {sub:?} must be a relative path without '..'"),
        });
    }
    Ok(path.to_path_buf())
}

fn mounts(
    container: &Container,
    env: &ContainerEnvironment<'_>,
) -> Result<Vec<Mount>, ContainerConfigError> {
    let mut out = Vec::new();
    for vm in container.volume_mounts.iter().flatten() {
        let err = |reason: String| ContainerConfigError::VolumeMount {
            container: container.name.clone(),
            name: vm.name.clone(),
            reason,
        };
        let volume = env
            .volumes
            .get(&vm.name)
            .ok_or_else(|| err("no volume of that name in the pod".into()))?;
        let mut source = volume.path.clone();
        if let Some(sub) = vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
            source = source.join(sub_path(&container.name, &vm.name, sub)?);
            // Upstream creates a missing subPath directory in the volume.
            std::fs::create_dir_all(&source)
                .map_err(|e| err(format!("creating subPath {source:?}: {e}")))?;
        }
        if !vm.mount_path.starts_with('/') {
            return Err(err(format!(
                "mountPath {:?} must be absolute",
                vm.mount_path
            )));
        }
        let mut options = Vec::new();
        match vm.mount_propagation.as_deref() {
            Some("HostToContainer") => options.push("rslave".to_string()),
            Some("Bidirectional") => options.push("rshared".to_string()),
            _ => {}
        }
        out.push(Mount {
            destination: PathBuf::from(&vm.mount_path),
            source: MountSource::Bind(source),
            read_only: vm.read_only.unwrap_or(false) || volume.read_only,
            options,
        });
    }
    Ok(out)
}

/// The runtime config of `container` in its pod.
pub fn container_config(
    container: &Container,
    env: &ContainerEnvironment<'_>,
) -> Result<ContainerConfig, ContainerConfigError> {
    let spec = env.pod.spec.as_ref();
    let psc = spec.and_then(|s| s.security_context.as_ref());
    let sc = container.security_context.as_ref();
    let vars = container_env(container, env)?;
    let lookup = |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let (command, args) = process_args(container, env.image);
    let command: Vec<String> = command.iter().map(|c| expand(c, &lookup)).collect();
    let args: Vec<String> = args.iter().map(|a| expand(a, &lookup)).collect();
    if command.is_empty() && args.is_empty() {
        return Err(ContainerConfigError::NoCommand {
            container: container.name.clone(),
        });
    }
    let seccomp_type = sc
        .and_then(|s| s.seccomp_profile.as_ref())
        .or_else(|| psc.and_then(|p| p.seccomp_profile.as_ref()))
        .map(|p| p.type_.clone());
    let seccomp = match seccomp_type.as_deref() {
        None | Some("Unconfined") => SeccompProfile::Unconfined,
        Some("RuntimeDefault") => SeccompProfile::RuntimeDefault,
        Some(other) => {
            return Err(ContainerConfigError::Seccomp {
                container: container.name.clone(),
                kind: other.to_string(),
            });
        }
    };
    let capabilities = sc.and_then(|s| s.capabilities.as_ref());
    let cwd = container
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| env.image.working_dir.clone())
        .unwrap_or_else(|| "/".to_string());
    Ok(ContainerConfig {
        command,
        args,
        env: merge_env(&env.image.env, &vars),
        cwd,
        user: user(container, sc, psc, env)?,
        hostname: env.pod.metadata.name.clone(),
        rootfs: env.rootfs.to_path_buf(),
        mounts: mounts(container, env)?,
        hosts_file: env.hosts_file.clone(),
        resolv_conf: env.resolv_conf.clone(),
        termination_log: env.termination_log.clone(),
        resources: resources(container)?,
        capabilities: CapabilityChanges {
            add: capabilities.and_then(|c| c.add.clone()).unwrap_or_default(),
            drop: capabilities
                .and_then(|c| c.drop.clone())
                .unwrap_or_default(),
        },
        privileged: sc.and_then(|s| s.privileged).unwrap_or(false),
        readonly_rootfs: sc
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false),
        no_new_privs: sc.and_then(|s| s.allow_privilege_escalation) == Some(false),
        seccomp,
        namespaces: env.namespaces.clone(),
        cgroup_path: env.cgroup_path.clone(),
        oom_score_adj: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "prod", "uid": "u-1", "labels": {"app": "w"}},
            "spec": {"nodeName": "n1", "containers": [], "securityContext": {"supplementalGroups": [5], "fsGroup": 7}},
        }))
        .expect("pod")
    }

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["default".into()],
            env: vec!["PATH=/bin".into(), "MODE=image".into()],
            working_dir: Some("/app".into()),
            ..ImageConfig::default()
        }
    }

    fn build(
        container: serde_json::Value,
        volumes: &BTreeMap<String, HostVolume>,
    ) -> Result<ContainerConfig, ContainerConfigError> {
        build_with(container, volumes, &EnvSources::default())
    }

    fn build_with(
        container: serde_json::Value,
        volumes: &BTreeMap<String, HostVolume>,
        sources: &EnvSources,
    ) -> Result<ContainerConfig, ContainerConfigError> {
        let pod = pod();
        let image = image();
        let container: Container = serde_json::from_value(container).expect("container");
        let env = ContainerEnvironment {
            pod: &pod,
            image: &image,
            rootfs: Path::new("/nonexistent-rootfs"),
            host_ip: "10.0.0.5".into(),
            pod_ips: vec!["10.42.0.7".into()],
            volumes,
            sources,
            namespaces: vec![],
            cgroup_path: "/skiff/podu-1/c".into(),
            hosts_file: None,
            resolv_conf: None,
            termination_log: None,
        };
        container_config(&container, &env)
    }

    #[test]
    fn command_and_args_follow_the_kubernetes_rules() {
        let none = BTreeMap::new();
        let c = build(json!({"name": "c"}), &none).expect("config");
        assert_eq!(
            (c.command, c.args),
            (vec!["/entry".to_string()], vec!["default".to_string()])
        );
        let c = build(json!({"name": "c", "args": ["x"]}), &none).expect("config");
        assert_eq!(
            (c.command, c.args),
            (vec!["/entry".to_string()], vec!["x".to_string()])
        );
        let c = build(json!({"name": "c", "command": ["/bin/sh"]}), &none).expect("config");
        assert_eq!((c.command, c.args), (vec!["/bin/sh".to_string()], vec![]));
        assert_eq!(c.cwd, "/app");
        assert_eq!(c.hostname.as_deref(), Some("web"));
    }

    #[test]
    fn env_merges_expands_and_resolves_field_refs() {
        let none = BTreeMap::new();
        let c = build(
            json!({"name": "c", "command": ["echo", "$(GREETING) $$(GREETING) $(MISSING)"], "env": [
                {"name": "MODE", "value": "pod"},
                {"name": "GREETING", "value": "hi-$(MODE)"},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            ]}),
            &none,
        )
        .expect("config");
        assert_eq!(
            c.env,
            [
                "PATH=/bin",
                "MODE=pod",
                "GREETING=hi-pod",
                "POD=web",
                "NS=prod",
                "IP=10.42.0.7",
                "NODE=n1",
                "APP=w"
            ]
        );
        assert_eq!(c.command, ["echo", "hi-pod $(GREETING) $(MISSING)"]);
        let err = build(
            json!({"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}),
            &none,
        );
        assert!(matches!(err, Err(ContainerConfigError::Env { name, .. }) if name == "X"));
    }

    #[test]
    fn resources_user_and_security_context() {
        let none = BTreeMap::new();
        let c = build(
            json!({"name": "c", "resources": {"limits": {"memory": "16Mi", "cpu": "500m"}, "requests": {"cpu": "250m"}},
                   "securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "privileged": false,
                      "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
                      "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
                      "seccompProfile": {"type": "RuntimeDefault"}}}),
            &none,
        )
        .expect("config");
        assert_eq!(c.resources.memory_limit_bytes, Some(16 << 20));
        assert_eq!(
            (
                c.resources.cpu_quota,
                c.resources.cpu_period,
                c.resources.cpu_shares
            ),
            (Some(50_000), Some(100_000), Some(256))
        );
        assert_eq!(
            c.user,
            User {
                uid: 1000,
                gid: 3000,
                additional_gids: vec![5, 7]
            }
        );
        assert!(c.readonly_rootfs && c.no_new_privs && !c.privileged);
        assert_eq!(c.seccomp, SeccompProfile::RuntimeDefault);
        assert_eq!(c.capabilities.drop, ["ALL"]);
        let best_effort = build(json!({"name": "c"}), &none).expect("config");
        assert_eq!(best_effort.resources.cpu_shares, Some(2));
        assert_eq!(best_effort.resources.memory_limit_bytes, None);
        let bad = build(
            json!({"name": "c", "resources": {"limits": {"memory": "lots"}}}),
            &none,
        );
        assert!(
            matches!(bad, Err(ContainerConfigError::Quantity { field, .. }) if field == "limits.memory")
        );
        let bad = build(
            json!({"name": "c", "securityContext": {"seccompProfile": {"type": "Localhost"}}}),
            &none,
        );
        assert!(matches!(bad, Err(ContainerConfigError::Seccomp { .. })));
    }

    #[test]
    fn volume_mounts_bind_host_volumes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let volumes = BTreeMap::from([(
            "data".to_string(),
            HostVolume {
                path: dir.path().to_path_buf(),
                read_only: false,
            },
        )]);
        let c = build(
            json!({"name": "c", "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": true},
                                                   {"name": "data", "mountPath": "/sub", "subPath": "a/b"}]}),
            &volumes,
        )
        .expect("config");
        assert_eq!(c.mounts.len(), 2);
        assert!(c.mounts[0].read_only);
        assert_eq!(
            c.mounts[1].source,
            MountSource::Bind(dir.path().join("a/b"))
        );
        assert!(dir.path().join("a/b").is_dir());
        let bad = build(
            json!({"name": "c", "volumeMounts": [{"name": "data", "mountPath": "/x", "subPath": "../etc"}]}),
            &volumes,
        );
        assert!(matches!(bad, Err(ContainerConfigError::VolumeMount { .. })));
        let bad = build(
            json!({"name": "c", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}),
            &volumes,
        );
        assert!(matches!(bad, Err(ContainerConfigError::VolumeMount { .. })));
    }

    #[test]
    fn env_from_config_maps_and_secrets() {
        let none = BTreeMap::new();
        let data = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        let sources = EnvSources {
            config_maps: BTreeMap::from([
                (
                    "cfg".to_string(),
                    data(&[("MODE", "cm"), ("bad key", "x"), ("LEVEL", "3")]),
                ),
                ("gone".to_string(), None),
            ]),
            secrets: BTreeMap::from([("creds".to_string(), data(&[("password", "s3cret")]))]),
        };
        let container = json!({"name": "c", "envFrom": [{"configMapRef": {"name": "cfg"}}, {"prefix": "S_", "secretRef": {"name": "creds"}},
                                                        {"configMapRef": {"name": "gone", "optional": true}}],
            "env": [{"name": "LEVEL", "value": "override-$(MODE)"},
                    {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                    {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nope", "optional": true}}}]});
        let (cms, secrets) =
            EnvSources::wanted(&serde_json::from_value(container.clone()).expect("container"));
        assert_eq!(cms.into_iter().collect::<Vec<_>>(), ["cfg", "gone"]);
        assert_eq!(secrets.into_iter().collect::<Vec<_>>(), ["creds"]);
        let c = build_with(container, &none, &sources).expect("config");
        assert_eq!(
            c.env,
            [
                "PATH=/bin",
                "MODE=cm",
                "LEVEL=override-cm",
                "S_password=s3cret",
                "PW=s3cret"
            ]
        );
        let missing = build_with(
            json!({"name": "c", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nope"}}}]}),
            &none,
            &sources,
        );
        assert!(
            matches!(missing, Err(ContainerConfigError::Env { reason, .. }) if reason == "couldn't find key nope in ConfigMap prod/cfg")
        );
        let missing = build_with(
            json!({"name": "c", "envFrom": [{"configMapRef": {"name": "gone"}}]}),
            &none,
            &sources,
        );
        assert!(
            matches!(missing, Err(ContainerConfigError::Env { reason, .. }) if reason == "configmap \"gone\" not found")
        );
    }

    #[test]
    fn expansion_edge_cases() {
        let vars = |n: &str| (n == "A").then(|| "1".to_string());
        assert_eq!(expand("$(A)$(A)", &vars), "11");
        assert_eq!(expand("$$(A) $ $x $(", &vars), "$(A) $ $x $(");
        assert_eq!(expand("ünï$(A)", &vars), "ünï1");
    }
}
