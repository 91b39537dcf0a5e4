//! Pod spec defaults: `SetDefaults_Pod`, `SetDefaults_PodSpec`, `SetDefaults_Container`, the
//! probe, handler, volume and env defaults of core/v1, plus the ServiceAccount and Priority
//! admission defaults that every cluster applies to Pods (not to templates).

use serde_json::{Map, Value, json};

use super::{
    child_object, default_field, default_int, default_string, each_object, existing_object,
};

/// The three container lists that share `SetDefaults_Container`.
const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

/// A Pod: the pod spec defaults plus what only materialises on Pods (upstream keeps these out
/// of `SetDefaults_PodSpec` so templates of existing workloads do not change on upgrade,
/// kubernetes#69445).
pub(super) fn default_pod(pod: &mut Map<String, Value>) {
    let Some(spec) = child_object(pod, "spec") else {
        return;
    };
    default_pod_spec(spec);
    for list in ["containers", "initContainers"] {
        each_object(spec, list, default_requests_from_limits);
    }
    default_field(spec, "enableServiceLinks", true);
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        // With host networking every container port is a host port.
        for list in ["containers", "initContainers"] {
            each_object(spec, list, |container| {
                each_object(container, "ports", |port| {
                    if let Some(container_port) = port.get("containerPort").cloned() {
                        default_int_value(port, "hostPort", container_port);
                    }
                });
            });
        }
    }
    // The ServiceAccount admission plugin: pods run as "default" unless told otherwise, and
    // the deprecated `serviceAccount` alias mirrors the name.
    let account = match spec.get("serviceAccountName").and_then(Value::as_str) {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => match spec.get("serviceAccount").and_then(Value::as_str) {
            Some(name) if !name.is_empty() => name.to_owned(),
            _ => "default".to_owned(),
        },
    };
    default_string(spec, "serviceAccountName", &account);
    default_string(spec, "serviceAccount", &account);
    // The Priority admission plugin: without a priorityClassName (and with no global default
    // class) a pod gets priority 0 and PreemptLowerPriority. With a class name the plugin
    // resolves the class, which needs a lookup the API server does, so nothing is set here.
    let has_class = spec
        .get("priorityClassName")
        .and_then(Value::as_str)
        .is_some_and(|name| !name.is_empty());
    if !has_class {
        default_field(spec, "priority", 0);
        default_field(spec, "preemptionPolicy", "PreemptLowerPriority");
    }
}

/// Seconds a pod stays bound to a node that turned not-ready or unreachable before the taint
/// manager evicts it (upstream `--default-not-ready-toleration-seconds` and
/// `--default-unreachable-toleration-seconds`, both 300).
const DEFAULT_NODE_TOLERATION_SECONDS: i64 = 300;

/// The DefaultTolerationSeconds admission plugin (upstream
/// `plugin/pkg/admission/defaulttolerationseconds`): a pod that does not already tolerate the
/// `node.kubernetes.io/not-ready:NoExecute` or `node.kubernetes.io/unreachable:NoExecute` taint
/// gets a toleration of it for [`DEFAULT_NODE_TOLERATION_SECONDS`], so a node failure evicts
/// its pods after five minutes instead of at once. A toleration with an empty key (all taints)
/// or an empty effect (all effects) already counts, exactly as upstream tests it; such pods
/// (DaemonSet pods, for one) are left alone.
///
/// Admission runs on Pod CREATE, never on templates or subresources, so this is not part of
/// [`default_pod`]: the API server calls it through `prepare_for_create`.
pub(super) fn default_toleration_seconds(pod: &mut Map<String, Value>) {
    let Some(spec) = child_object(pod, "spec") else {
        return;
    };
    let slot = spec.entry("tolerations").or_insert(Value::Null);
    if slot.is_null() {
        *slot = Value::Array(Vec::new());
    }
    // A non-array is left for validation to report.
    let Some(tolerations) = slot.as_array_mut() else {
        return;
    };
    let tolerates = |taint_key: &str| {
        tolerations.iter().filter_map(Value::as_object).any(|t| {
            let key = t.get("key").and_then(Value::as_str).unwrap_or_default();
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or_default();
            (key.is_empty() || key == taint_key) && (effect.is_empty() || effect == "NoExecute")
        })
    };
    let missing: Vec<&str> = [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ]
    .into_iter()
    .filter(|key| !tolerates(key))
    .collect();
    for key in missing {
        tolerations.push(
            json!({"key": key, "operator": "Exists", "effect": "NoExecute",
            "tolerationSeconds": DEFAULT_NODE_TOLERATION_SECONDS}),
        );
    }
}

/// A `PodTemplateSpec` embedded in a workload: only the pod spec defaults.
pub(super) fn default_pod_template(template: &mut Map<String, Value>) {
    if let Some(spec) = child_object(template, "spec") {
        default_pod_spec(spec);
    }
}

/// `SetDefaults_PodSpec` and everything generated below it (containers, volumes).
pub(super) fn default_pod_spec(spec: &mut Map<String, Value>) {
    default_string(spec, "dnsPolicy", "ClusterFirst");
    default_string(spec, "restartPolicy", "Always");
    default_field(spec, "securityContext", json!({}));
    default_field(spec, "terminationGracePeriodSeconds", 30);
    default_string(spec, "schedulerName", "default-scheduler");
    for list in CONTAINER_LISTS {
        each_object(spec, list, default_container);
    }
    each_object(spec, "volumes", default_volume);
}

/// `SetDefaults_Container` plus the nested ports, env, probes and lifecycle handlers.
fn default_container(container: &mut Map<String, Value>) {
    let image = container.get("image").and_then(Value::as_str).unwrap_or("");
    let policy = if image_tag(image).as_deref() == Some("latest") {
        "Always"
    } else {
        "IfNotPresent"
    };
    default_string(container, "imagePullPolicy", policy);
    default_string(container, "terminationMessagePath", "/dev/termination-log");
    default_string(container, "terminationMessagePolicy", "File");
    // `resources` is a non-pointer struct upstream, so it is always serialised (as `{}`).
    default_field(container, "resources", json!({}));
    each_object(container, "ports", |port| {
        default_string(port, "protocol", "TCP")
    });
    each_object(container, "env", |env| {
        if let Some(source) = existing_object(env, "valueFrom")
            && let Some(field_ref) = existing_object(source, "fieldRef")
        {
            default_string(field_ref, "apiVersion", "v1");
        }
    });
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(probe) = existing_object(container, probe) {
            default_int(probe, "timeoutSeconds", 1);
            default_int(probe, "periodSeconds", 10);
            default_int(probe, "successThreshold", 1);
            default_int(probe, "failureThreshold", 3);
            default_handler(probe);
        }
    }
    if let Some(lifecycle) = existing_object(container, "lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(handler) = existing_object(lifecycle, hook) {
                default_handler(handler);
            }
        }
    }
}

/// `SetDefaults_HTTPGetAction` for a probe or lifecycle handler.
fn default_handler(handler: &mut Map<String, Value>) {
    if let Some(http_get) = existing_object(handler, "httpGet") {
        default_string(http_get, "path", "/");
        default_string(http_get, "scheme", "HTTP");
    }
}

/// The tag the kubelet would pull, as upstream's `parsers.ParseImageName` reports it: the
/// explicit tag, `latest` when there is neither tag nor digest, and `None` when the reference
/// does not parse (upstream then ignores the error and uses IfNotPresent).
fn image_tag(image: &str) -> Option<String> {
    if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    if name.is_empty() || digest.is_some_and(str::is_empty) {
        return None;
    }
    let last_segment = name.rsplit('/').next().unwrap_or(name);
    match last_segment.split_once(':') {
        Some((_, "")) => None,
        Some((_, tag)) => Some(tag.to_owned()),
        None if digest.is_some() => Some(String::new()),
        None => Some("latest".to_owned()),
    }
}

/// `SetDefaults_Pod`: a container with limits but no request for a resource requests its limit.
fn default_requests_from_limits(container: &mut Map<String, Value>) {
    let Some(resources) = existing_object(container, "resources") else {
        return;
    };
    let Some(limits) = resources.get("limits").and_then(Value::as_object).cloned() else {
        return;
    };
    let Some(requests) = child_object(resources, "requests") else {
        return;
    };
    for (name, quantity) in limits {
        requests.entry(name).or_insert(quantity);
    }
}

/// `SetDefaults_Volume` and the per-source defaults below it.
fn default_volume(volume: &mut Map<String, Value>) {
    if !crate::schema::volume_source_keys()
        .any(|source| volume.get(source).is_some_and(|v| !v.is_null()))
    {
        volume.insert("emptyDir".to_owned(), json!({}));
    }
    // 0644, upstream's SecretVolumeSourceDefaultMode and friends.
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(source) = existing_object(volume, source) {
            default_field(source, "defaultMode", 420);
        }
    }
    if let Some(downward) = existing_object(volume, "downwardAPI") {
        each_object(downward, "items", default_downward_item);
    }
    if let Some(projected) = existing_object(volume, "projected") {
        each_object(projected, "sources", |source| {
            if let Some(token) = existing_object(source, "serviceAccountToken") {
                default_field(token, "expirationSeconds", 3600);
            }
            if let Some(downward) = existing_object(source, "downwardAPI") {
                each_object(downward, "items", default_downward_item);
            }
        });
    }
    if let Some(host_path) = existing_object(volume, "hostPath") {
        default_field(host_path, "type", "");
    }
    if let Some(iscsi) = existing_object(volume, "iscsi") {
        default_string(iscsi, "iscsiInterface", "default");
    }
    if let Some(rbd) = existing_object(volume, "rbd") {
        default_string(rbd, "pool", "rbd");
        default_string(rbd, "user", "admin");
        default_string(rbd, "keyring", "/etc/ceph/keyring");
    }
    if let Some(azure) = existing_object(volume, "azureDisk") {
        default_field(azure, "cachingMode", "ReadWrite");
        default_field(azure, "fsType", "ext4");
        default_field(azure, "readOnly", false);
        default_field(azure, "kind", "Shared");
    }
    if let Some(scale_io) = existing_object(volume, "scaleIO") {
        default_string(scale_io, "storageMode", "ThinProvisioned");
        default_string(scale_io, "fsType", "xfs");
    }
    if let Some(ephemeral) = existing_object(volume, "ephemeral")
        && let Some(claim) = existing_object(ephemeral, "volumeClaimTemplate")
        && let Some(spec) = existing_object(claim, "spec")
    {
        default_field(spec, "volumeMode", "Filesystem");
    }
    if let Some(image) = existing_object(volume, "image") {
        let reference = image.get("reference").and_then(Value::as_str).unwrap_or("");
        let policy = if image_tag(reference).as_deref() == Some("latest") {
            "Always"
        } else {
            "IfNotPresent"
        };
        default_string(image, "pullPolicy", policy);
    }
}

fn default_downward_item(item: &mut Map<String, Value>) {
    if let Some(field_ref) = existing_object(item, "fieldRef") {
        default_string(field_ref, "apiVersion", "v1");
    }
}

/// Like `default_int` but copies a JSON number already in hand (hostPort from containerPort).
fn default_int_value(map: &mut Map<String, Value>, key: &str, value: Value) {
    if let Some(n) = value.as_i64() {
        default_int(map, key, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defaults::apply_defaults;

    #[test]
    fn image_pull_policy_follows_the_tag() {
        for (image, policy) in [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("registry:5000/nginx", "Always"),
            ("registry:5000/nginx:1.27", "IfNotPresent"),
            ("nginx:1.27", "IfNotPresent"),
            ("nginx@sha256:abc", "IfNotPresent"),
            ("nginx:latest@sha256:abc", "Always"),
            ("", "IfNotPresent"),
        ] {
            let mut c = json!({"image": image});
            default_container(c.as_object_mut().unwrap());
            assert_eq!(c["imagePullPolicy"], policy, "{image}");
        }
    }

    #[test]
    fn pod_matches_kubectl_run_output() {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "labels": {"run": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx",
                "ports": [{"containerPort": 80}],
                "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "readinessProbe": {"httpGet": {"port": 80}},
                "resources": {"limits": {"cpu": "1"}, "requests": {"memory": "1Gi"}}}],
                "volumes": [{"name": "cache"}, {"name": "cfg", "configMap": {"name": "c"}},
                    {"name": "h", "hostPath": {"path": "/x"}}]}});
        apply_defaults("", "v1", "Pod", &mut pod);
        let before = pod.clone();
        apply_defaults("", "v1", "Pod", &mut pod);
        assert_eq!(before, pod, "idempotent");
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["securityContext"], json!({}));
        assert_eq!(spec["enableServiceLinks"], true);
        assert_eq!(spec["serviceAccountName"], "default");
        assert_eq!(spec["serviceAccount"], "default");
        assert_eq!(spec["priority"], 0);
        assert_eq!(spec["preemptionPolicy"], "PreemptLowerPriority");
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
        assert_eq!(
            c["readinessProbe"],
            json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1,
                "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(
            c["resources"]["requests"],
            json!({"memory": "1Gi", "cpu": "1"})
        );
        assert_eq!(spec["volumes"][0], json!({"name": "cache", "emptyDir": {}}));
        assert_eq!(spec["volumes"][1]["configMap"]["defaultMode"], 420);
        assert_eq!(spec["volumes"][2]["hostPath"]["type"], "");
    }

    #[test]
    fn templates_get_no_pod_only_defaults() {
        let mut template = json!({"spec": {"containers": [{"name": "a", "image": "a:1",
            "resources": {"limits": {"cpu": "1"}}}]}});
        default_pod_template(template.as_object_mut().unwrap());
        assert!(template["spec"].get("enableServiceLinks").is_none());
        assert!(template["spec"].get("serviceAccountName").is_none());
        assert!(
            template["spec"]["containers"][0]["resources"]
                .get("requests")
                .is_none()
        );
        assert_eq!(
            template["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
    }

    #[test]
    fn pods_get_default_node_tolerations_unless_they_tolerate_already() {
        let not_ready = json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists",
            "effect": "NoExecute", "tolerationSeconds": 300});
        let unreachable = json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists",
            "effect": "NoExecute", "tolerationSeconds": 300});
        let mut pod = json!({"spec": {"containers": [{"name": "a", "image": "a"}]}});
        default_toleration_seconds(pod.as_object_mut().unwrap());
        assert_eq!(
            pod["spec"]["tolerations"],
            json!([not_ready.clone(), unreachable.clone()])
        );
        // Idempotent: the added tolerations satisfy the check the second time.
        let before = pod.clone();
        default_toleration_seconds(pod.as_object_mut().unwrap());
        assert_eq!(before, pod);

        // Other tolerations are kept, in front; an explicit one for either taint wins.
        let gpu = json!({"key": "gpu", "operator": "Exists", "effect": "NoSchedule"});
        let forever = json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists",
            "effect": "NoExecute"});
        let mut pod = json!({"spec": {"tolerations": [gpu.clone(), forever.clone()]}});
        default_toleration_seconds(pod.as_object_mut().unwrap());
        assert_eq!(
            pod["spec"]["tolerations"],
            json!([gpu, forever, not_ready.clone()])
        );

        // An empty effect matches every effect; a NoSchedule one for the key does not count.
        let any_effect = json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists"});
        let no_schedule = json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists",
            "effect": "NoSchedule"});
        let mut pod = json!({"spec": {"tolerations": [any_effect.clone(), no_schedule.clone()]}});
        default_toleration_seconds(pod.as_object_mut().unwrap());
        assert_eq!(
            pod["spec"]["tolerations"],
            json!([any_effect, no_schedule, unreachable])
        );

        // Tolerating everything (empty key, Exists), as DaemonSet-style pods may: untouched.
        let all = json!([{"operator": "Exists"}]);
        let mut pod = json!({"spec": {"tolerations": all.clone()}});
        default_toleration_seconds(pod.as_object_mut().unwrap());
        assert_eq!(pod["spec"]["tolerations"], all);

        // Odd shapes are left for validation.
        for mut odd in [json!({"spec": 3}), json!({"spec": {"tolerations": "x"}})] {
            let before = odd.clone();
            default_toleration_seconds(odd.as_object_mut().unwrap());
            assert_eq!(before, odd);
        }
    }

    #[test]
    fn host_network_pods_default_host_ports() {
        let mut pod = json!({"spec": {"hostNetwork": true, "serviceAccount": "builder",
            "priorityClassName": "high",
            "containers": [{"name": "a", "image": "a", "ports": [{"containerPort": 8080}]}]}});
        apply_defaults("", "v1", "Pod", &mut pod);
        assert_eq!(pod["spec"]["containers"][0]["ports"][0]["hostPort"], 8080);
        assert_eq!(pod["spec"]["serviceAccountName"], "builder");
        assert!(pod["spec"].get("priority").is_none());
    }
}
