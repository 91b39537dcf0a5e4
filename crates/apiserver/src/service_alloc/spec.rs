//! Reading and fixing up a Service's spec around allocation: the type predicates, the IP
//! family fields (upstream's `initIPFamilyFields` on a single-stack IPv4 cluster), the
//! values a client may leave out on update (`patchAllocatedValues`), and the fields a type
//! change makes meaningless (the strategy's `dropTypeDependentFields`).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use api::validation::FieldError;
use serde_json::{Map, Value, json};

/// `spec.type`, with the default for a missing one.
pub fn service_type(svc: &Value) -> &str {
    match svc.pointer("/spec/type").and_then(Value::as_str) {
        Some(t) if !t.is_empty() => t,
        _ => "ClusterIP",
    }
}

fn spec_str<'a>(svc: &'a Value, field: &str) -> &'a str {
    svc.get("spec")
        .and_then(|s| s.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Every type but ExternalName has a clusterIP (even "None" counts as one).
pub fn needs_cluster_ip(svc: &Value) -> bool {
    service_type(svc) != "ExternalName"
}

pub fn needs_node_port(svc: &Value) -> bool {
    matches!(service_type(svc), "NodePort" | "LoadBalancer")
}

/// `apiservice.NeedsHealthCheck`: a LoadBalancer that keeps traffic on the receiving node.
pub fn needs_health_check(svc: &Value) -> bool {
    service_type(svc) == "LoadBalancer" && spec_str(svc, "externalTrafficPolicy") == "Local"
}

/// `spec.allocateLoadBalancerNodePorts` false turns off automatic node ports of a
/// LoadBalancer (explicit ones are still honoured).
pub fn should_allocate_node_ports(svc: &Value) -> bool {
    match service_type(svc) {
        "NodePort" => true,
        "LoadBalancer" => svc
            .pointer("/spec/allocateLoadBalancerNodePorts")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        _ => false,
    }
}

pub fn cluster_ip(svc: &Value) -> &str {
    spec_str(svc, "clusterIP")
}

pub fn cluster_ips(svc: &Value) -> Vec<String> {
    strings(svc.pointer("/spec/clusterIPs"))
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

pub fn is_headless(svc: &Value) -> bool {
    cluster_ip(svc) == "None" || cluster_ips(svc).first().is_some_and(|ip| ip == "None")
}

/// `spec.ports[i].nodePort`, 0 when unset.
pub fn port_node_port(port: &Value) -> i64 {
    port.get("nodePort").and_then(Value::as_i64).unwrap_or(0)
}

pub fn ports(svc: &Value) -> &[Value] {
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub fn health_check_node_port(svc: &Value) -> i64 {
    svc.pointer("/spec/healthCheckNodePort")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// `collectServiceNodePorts`: every node port the Service holds, the health check one included.
pub fn node_ports(svc: &Value) -> BTreeSet<u16> {
    let mut out: BTreeSet<u16> = ports(svc)
        .iter()
        .filter_map(|p| u16::try_from(port_node_port(p)).ok())
        .filter(|p| *p != 0)
        .collect();
    if let Ok(hc) = u16::try_from(health_check_node_port(svc))
        && hc != 0
    {
        out.insert(hc);
    }
    out
}

/// The spec object, created when missing (`None` only when the Service is not an object).
pub fn spec_mut(svc: &mut Value) -> Option<&mut Map<String, Value>> {
    let root = svc.as_object_mut()?;
    let spec = root.entry("spec").or_insert_with(|| json!({}));
    if !spec.is_object() {
        *spec = json!({});
    }
    spec.as_object_mut()
}

/// Sets `spec.ports[i].nodePort`.
pub fn set_port_node_port(svc: &mut Value, i: usize, node_port: i64) {
    if let Some(port) = svc
        .pointer_mut(&format!("/spec/ports/{i}"))
        .and_then(Value::as_object_mut)
    {
        if node_port == 0 {
            port.remove("nodePort");
        } else {
            port.insert("nodePort".into(), json!(node_port));
        }
    }
}

pub fn set_health_check_node_port(svc: &mut Value, node_port: i64) {
    if let Some(spec) = spec_mut(svc) {
        if node_port == 0 {
            spec.remove("healthCheckNodePort");
        } else {
            spec.insert("healthCheckNodePort".into(), json!(node_port));
        }
    }
}

fn has_selector(svc: &Value) -> bool {
    svc.pointer("/spec/selector")
        .and_then(Value::as_object)
        .is_some_and(|m| !m.is_empty())
}

/// Fills in the IP family fields for this single-stack IPv4 cluster (upstream's
/// `initIPFamilyFields` with one allocator family): ipFamilyPolicy from the old object or
/// SingleStack (RequireDualStack for headless, selectorless Services), ipFamilies inferred
/// from the clusterIPs or IPv4, and the combinations this cluster cannot serve refused.
pub fn init_ip_family_fields(svc: &mut Value, old: Option<&Value>) -> Result<(), Vec<FieldError>> {
    if !needs_cluster_ip(svc) {
        return Ok(());
    }
    let selectorless_headless = is_headless(svc) && !has_selector(svc);
    let old_policy = old
        .and_then(|o| o.pointer("/spec/ipFamilyPolicy"))
        .and_then(Value::as_str)
        .map(String::from);
    let Some(spec) = spec_mut(svc) else {
        return Ok(());
    };
    // clusterIP and clusterIPs[0] are one value in two fields (v1 defaulting keeps them equal).
    let ip = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut ips = strings(spec.get("clusterIPs"));
    if ips.is_empty() && !ip.is_empty() {
        ips = vec![ip.clone()];
        spec.insert("clusterIPs".into(), json!(ips));
    } else if ip.is_empty() && !ips.is_empty() {
        spec.insert("clusterIP".into(), json!(ips[0]));
    }
    let policy = match spec.get("ipFamilyPolicy").and_then(Value::as_str) {
        Some(p) if !p.is_empty() => p.to_string(),
        _ => {
            let p = old_policy.unwrap_or_else(|| {
                if selectorless_headless {
                    "RequireDualStack".into()
                } else {
                    "SingleStack".into()
                }
            });
            spec.insert("ipFamilyPolicy".into(), json!(p));
            p
        }
    };
    let mut families = strings(spec.get("ipFamilies"));

    // Loose pre-validation (ValidateServiceClusterIPsRelatedFields), so allocation never works
    // on garbage.
    let mut errs = Vec::new();
    let primary = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !ips.is_empty() && ips[0] != primary {
        errs.push(FieldError::invalid(
            "spec.clusterIPs",
            json!(ips),
            "first value must match `clusterIP`",
        ));
    }
    for (i, v) in ips.iter().enumerate() {
        if i == 0 && v == "None" {
            continue;
        }
        if v.parse::<IpAddr>().is_err() {
            errs.push(FieldError::invalid(
                format!("spec.clusterIPs[{i}]"),
                v.as_str(),
                "must be a valid IP address (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ));
        }
    }
    for (i, f) in families.iter().enumerate() {
        if f != "IPv4" && f != "IPv6" {
            errs.push(FieldError::not_supported(
                format!("spec.ipFamilies[{i}]"),
                f.as_str(),
                &["IPv4", "IPv6"],
            ));
        }
    }
    if !["SingleStack", "PreferDualStack", "RequireDualStack"].contains(&policy.as_str()) {
        errs.push(FieldError::not_supported(
            "spec.ipFamilyPolicy",
            policy.as_str(),
            &["PreferDualStack", "RequireDualStack", "SingleStack"],
        ));
    }
    if !errs.is_empty() {
        return Err(errs);
    }

    if policy == "SingleStack" {
        if let Some(o) = old {
            // Same clusterIPs and families as before: SingleStack is a request to drop the
            // secondary ones.
            if cluster_ips(o) == ips && ips.len() > 1 {
                ips.truncate(1);
                spec.insert("clusterIPs".into(), json!(ips));
            }
            if strings(o.pointer("/spec/ipFamilies")) == families && families.len() > 1 {
                families.truncate(1);
                spec.insert("ipFamilies".into(), json!(families));
            }
        }
        if ips.len() == 2 {
            errs.push(FieldError::invalid(
                "spec.ipFamilyPolicy",
                policy.as_str(),
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified",
            ));
        }
        if families.len() == 2 {
            errs.push(FieldError::invalid(
                "spec.ipFamilyPolicy",
                policy.as_str(),
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified",
            ));
        }
    }
    // Infer the families of the given IPs.
    for (i, v) in ips.iter().enumerate() {
        if v == "None" {
            break;
        }
        let family = if v.parse::<std::net::Ipv4Addr>().is_ok() {
            "IPv4"
        } else {
            "IPv6"
        };
        if i >= families.len() {
            if family == "IPv6" {
                errs.push(FieldError::invalid(
                    format!("spec.clusterIPs[{i}]"),
                    json!(ips),
                    "IPv6 is not configured on this cluster",
                ));
            } else {
                families.push(family.to_string());
            }
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    if selectorless_headless {
        // Headless without a selector may list both families even on a single-stack cluster:
        // its endpoints are managed by hand.
        if families.is_empty() {
            families.push("IPv4".into());
        }
        if families.len() < 2 && policy != "SingleStack" {
            let other = if families[0] == "IPv4" {
                "IPv6"
            } else {
                "IPv4"
            };
            families.push(other.into());
        }
        spec.insert("ipFamilies".into(), json!(families));
        return Ok(());
    }
    if policy == "RequireDualStack" {
        errs.push(FieldError::invalid(
            "spec.ipFamilyPolicy",
            policy.as_str(),
            "this cluster is not configured for dual-stack services",
        ));
    }
    for (i, f) in families.iter().enumerate() {
        if f != "IPv4" {
            errs.push(FieldError::invalid(
                format!("spec.ipFamilies[{i}]"),
                f.as_str(),
                "not configured on this cluster",
            ));
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    if families.is_empty() {
        families.push("IPv4".into());
    }
    spec.insert("ipFamilies".into(), json!(families));
    Ok(())
}

/// `patchAllocatedValues`: a client that replaces a Service without the allocated values
/// (clusterIP, node ports, health check port) keeps the old ones, so a PUT of the original
/// manifest is idempotent.
pub fn patch_allocated_values(new: &mut Value, old: &Value) {
    if needs_cluster_ip(old) && needs_cluster_ip(new) {
        let old_ip = cluster_ip(old).to_string();
        let old_ips = cluster_ips(old);
        if let Some(spec) = spec_mut(new) {
            if spec
                .get("clusterIP")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
                && !old_ip.is_empty()
            {
                spec.insert("clusterIP".into(), json!(old_ip));
            }
            if strings(spec.get("clusterIPs")).is_empty() && !old_ips.is_empty() {
                spec.insert("clusterIPs".into(), json!(old_ips));
            }
        }
    }
    if needs_node_port(old) && needs_node_port(new) {
        let used_by = |svc: &Value| -> BTreeSet<i64> {
            ports(svc)
                .iter()
                .map(port_node_port)
                .filter(|p| *p != 0)
                .collect()
        };
        // Ports kept in both can't be patched into another port.
        let used: BTreeSet<i64> = used_by(old).intersection(&used_by(new)).copied().collect();
        // Matched by port name: the user may have changed anything else about the port.
        let by_name: HashMap<String, i64> = ports(old)
            .iter()
            .map(|p| {
                (
                    p.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    port_node_port(p),
                )
            })
            .collect();
        let fills: Vec<(usize, i64)> = ports(new)
            .iter()
            .enumerate()
            .filter(|(_, p)| port_node_port(p) == 0)
            .filter_map(|(i, p)| {
                let name = p.get("name").and_then(Value::as_str).unwrap_or("");
                by_name
                    .get(name)
                    .copied()
                    .filter(|np| *np != 0 && !used.contains(np))
                    .map(|np| (i, np))
            })
            .collect();
        for (i, np) in fills {
            set_port_node_port(new, i, np);
        }
    }
    if needs_health_check(old) && needs_health_check(new) && health_check_node_port(new) == 0 {
        let hc = health_check_node_port(old);
        set_health_check_node_port(new, hc);
    }
}

/// The strategy's `dropTypeDependentFields`: on a type change, values that only applied to the
/// old type are cleared — but only those the user did not touch (changing them and the type
/// together is left to validation).
pub fn drop_type_dependent_fields(new: &mut Value, old: &Value) {
    let same = |path: &str, n: &Value| old.pointer(path) == n.pointer(path);
    if needs_cluster_ip(old) && !needs_cluster_ip(new) {
        let same_ips = same("/spec/clusterIP", new) && cluster_ips(old) == cluster_ips(new);
        let same_families = same("/spec/ipFamilies", new);
        let same_policy = same("/spec/ipFamilyPolicy", new);
        if let Some(spec) = spec_mut(new) {
            if same_ips {
                spec.remove("clusterIP");
                spec.remove("clusterIPs");
            }
            if same_families {
                spec.remove("ipFamilies");
            }
            if same_policy {
                spec.remove("ipFamilyPolicy");
            }
        }
    }
    let node_port_set = |svc: &Value| -> BTreeSet<i64> {
        ports(svc)
            .iter()
            .map(port_node_port)
            .filter(|p| *p != 0)
            .collect()
    };
    if needs_node_port(old) && !needs_node_port(new) && node_port_set(old) == node_port_set(new) {
        for i in 0..ports(new).len() {
            set_port_node_port(new, i, 0);
        }
    }
    if needs_health_check(old)
        && !needs_health_check(new)
        && health_check_node_port(old) == health_check_node_port(new)
    {
        set_health_check_node_port(new, 0);
    }
    let old_lb = service_type(old) == "LoadBalancer";
    let new_lb = service_type(new) == "LoadBalancer";
    if old_lb && !new_lb {
        let same_alloc = same("/spec/allocateLoadBalancerNodePorts", new);
        let same_class = same("/spec/loadBalancerClass", new);
        if let Some(spec) = spec_mut(new) {
            if same_alloc {
                spec.remove("allocateLoadBalancerNodePorts");
            }
            if same_class {
                spec.remove("loadBalancerClass");
            }
        }
        // The API server keeps the load-balancer status coherent with the type.
        if let Some(status) = new.get_mut("status").and_then(Value::as_object_mut) {
            status.insert("loadBalancer".into(), json!({}));
        }
    }
    let externally_accessible = |svc: &Value| {
        needs_node_port(svc)
            || (service_type(svc) == "ClusterIP"
                && svc
                    .pointer("/spec/externalIPs")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty()))
    };
    if externally_accessible(old)
        && !externally_accessible(new)
        && same("/spec/externalTrafficPolicy", new)
        && let Some(spec) = spec_mut(new)
    {
        spec.remove("externalTrafficPolicy");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(spec: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn ip_families_single_stack() {
        let mut s = svc(json!({"selector": {"a": "b"}, "ports": [{"port": 80}]}));
        init_ip_family_fields(&mut s, None).expect("ok");
        assert_eq!(s["spec"]["ipFamilyPolicy"], "SingleStack");
        assert_eq!(s["spec"]["ipFamilies"], json!(["IPv4"]));

        let mut headless = svc(json!({"clusterIP": "None", "selector": {"a": "b"}}));
        init_ip_family_fields(&mut headless, None).expect("ok");
        assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
        assert_eq!(headless["spec"]["ipFamilies"], json!(["IPv4"]));
        assert_eq!(headless["spec"]["ipFamilyPolicy"], "SingleStack");

        let mut bare = svc(json!({"clusterIP": "None"}));
        init_ip_family_fields(&mut bare, None).expect("ok");
        assert_eq!(bare["spec"]["ipFamilyPolicy"], "RequireDualStack");
        assert_eq!(bare["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));

        let mut dual = svc(json!({"ipFamilyPolicy": "RequireDualStack", "selector": {"a": "b"}}));
        let errs = init_ip_family_fields(&mut dual, None).expect_err("dual");
        assert_eq!(
            errs[0].message(),
            "spec.ipFamilyPolicy: Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services"
        );

        let mut v6 = svc(json!({"clusterIP": "fd00::5", "selector": {"a": "b"}}));
        let errs = init_ip_family_fields(&mut v6, None).expect_err("v6");
        assert_eq!(
            errs[0].message(),
            "spec.clusterIPs[0]: Invalid value: [\"fd00::5\"]: IPv6 is not configured on this cluster"
        );

        let mut bad = svc(json!({"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.2"]}));
        let errs = init_ip_family_fields(&mut bad, None).expect_err("mismatch");
        assert_eq!(errs[0].field, "spec.clusterIPs");

        let mut ext = svc(json!({"type": "ExternalName", "externalName": "example.com"}));
        init_ip_family_fields(&mut ext, None).expect("external");
        assert!(ext["spec"].get("ipFamilies").is_none());
    }

    #[test]
    fn allocated_values_survive_a_replace() {
        let old = svc(
            json!({"type": "NodePort", "clusterIP": "10.43.9.9", "clusterIPs": ["10.43.9.9"],
            "ports": [{"name": "http", "port": 80, "nodePort": 30080}, {"name": "https", "port": 443, "nodePort": 30443}]}),
        );
        let mut new = svc(json!({"type": "NodePort",
            "ports": [{"name": "https", "port": 443}, {"name": "http", "port": 8080}]}));
        patch_allocated_values(&mut new, &old);
        assert_eq!(new["spec"]["clusterIP"], "10.43.9.9");
        assert_eq!(new["spec"]["clusterIPs"], json!(["10.43.9.9"]));
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30443);
        assert_eq!(new["spec"]["ports"][1]["nodePort"], 30080);
    }

    #[test]
    fn type_change_drops_what_no_longer_applies() {
        let old = svc(
            json!({"type": "LoadBalancer", "clusterIP": "10.43.9.9", "clusterIPs": ["10.43.9.9"],
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "externalTrafficPolicy": "Local",
            "healthCheckNodePort": 31000, "allocateLoadBalancerNodePorts": true,
            "ports": [{"port": 80, "nodePort": 30080}]}),
        );
        let mut to_cluster_ip = old.clone();
        to_cluster_ip["spec"]["type"] = json!("ClusterIP");
        to_cluster_ip["status"] = json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}});
        drop_type_dependent_fields(&mut to_cluster_ip, &old);
        let spec = &to_cluster_ip["spec"];
        assert!(spec["ports"][0].get("nodePort").is_none());
        assert!(spec.get("healthCheckNodePort").is_none());
        assert!(spec.get("allocateLoadBalancerNodePorts").is_none());
        assert!(spec.get("externalTrafficPolicy").is_none());
        assert_eq!(
            spec["clusterIP"], "10.43.9.9",
            "ClusterIP still needs its IP"
        );
        assert_eq!(to_cluster_ip["status"]["loadBalancer"], json!({}));

        let mut to_external = old.clone();
        to_external["spec"]["type"] = json!("ExternalName");
        drop_type_dependent_fields(&mut to_external, &old);
        assert!(to_external["spec"].get("clusterIP").is_none());
        assert!(to_external["spec"].get("ipFamilies").is_none());
    }
}
