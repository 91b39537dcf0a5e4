//! The real kubectl (1.33 and 1.32) against a real `skiff server`: every command users run in
//! the foundation issue (#2), asserting on what kubectl prints.

use std::time::Duration;

use skiff_e2e::{KUBECTL_VERSIONS, Kubectl, Server, expect_line};

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports:
        - containerPort: 80
        env:
        - name: A
          value: "1"
"#;

fn each_kubectl(f: impl Fn(&Server, &Kubectl)) {
    for v in KUBECTL_VERSIONS {
        let server = Server::start();
        let k = server.kubectl(v);
        f(&server, &k);
    }
}

#[test]
fn apply_creates_then_patches_then_is_unchanged() {
    each_kubectl(|_, k| {
        let f = k.with_file("deploy.yaml", DEPLOYMENT);
        let out = k.run(&["apply", "-f", f.to_str().unwrap_or_default()]).ok();
        assert_eq!(out.stdout.trim(), "deployment.apps/web created", "kubectl {}", k.version);

        let updated = DEPLOYMENT.replace("nginx:1.25", "nginx:1.26").replace("value: \"1\"", "value: \"2\"");
        let f = k.with_file("deploy.yaml", &updated);
        let out = k.run(&["apply", "-f", f.to_str().unwrap_or_default()]).ok();
        assert_eq!(out.stdout.trim(), "deployment.apps/web configured");
        let out = k.run(&["apply", "-f", f.to_str().unwrap_or_default()]).ok();
        assert_eq!(out.stdout.trim(), "deployment.apps/web unchanged");

        let img = k.run(&["get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].env[0].value} {.metadata.generation}"]).ok();
        assert_eq!(img.stdout.trim(), "nginx:1.26 2 2");
        // Defaulting happened server-side, as upstream.
        let strategy = k.run(&["get", "deploy", "web", "-o", "jsonpath={.spec.strategy.type} {.spec.strategy.rollingUpdate.maxSurge} {.spec.template.spec.containers[0].imagePullPolicy}"]).ok();
        assert_eq!(strategy.stdout.trim(), "RollingUpdate 25% IfNotPresent");
    });
}

#[test]
fn apply_server_side_creates() {
    each_kubectl(|_, k| {
        let f = k.with_file("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  key: value\n");
        let out = k.run(&["apply", "--server-side", "-f", f.to_str().unwrap_or_default()]).ok();
        assert_eq!(out.stdout.trim(), "configmap/ssa serverside-applied");
        let out = k.run(&["get", "cm", "ssa", "-o", "jsonpath={.data.key}"]).ok();
        assert_eq!(out.stdout, "value");
    });
}

#[test]
fn create_generators_send_protobuf_and_work() {
    each_kubectl(|_, k| {
        let out = k.run(&["create", "deployment", "web", "--image=nginx:1.25", "--replicas=3"]).ok();
        assert_eq!(out.stdout.trim(), "deployment.apps/web created");
        let out = k.run(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image} {.spec.selector.matchLabels.app}"]).ok();
        assert_eq!(out.stdout.trim(), "3 nginx:1.25 web");

        let out = k.run(&["create", "configmap", "settings", "--from-literal=a=1", "--from-literal=b=two"]).ok();
        assert_eq!(out.stdout.trim(), "configmap/settings created");
        let out = k.run(&["get", "cm", "settings", "-o", "jsonpath={.data.a},{.data.b}"]).ok();
        assert_eq!(out.stdout, "1,two");

        let out = k.run(&["create", "secret", "generic", "creds", "--from-literal=user=admin"]).ok();
        assert_eq!(out.stdout.trim(), "secret/creds created");
        let out = k.run(&["get", "secret", "creds", "-o", "jsonpath={.data.user} {.type}"]).ok();
        assert_eq!(out.stdout.trim(), "YWRtaW4= Opaque");

        let out = k.run(&["create", "namespace", "team-a"]).ok();
        assert_eq!(out.stdout.trim(), "namespace/team-a created");
        let out = k.run(&["get", "ns", "team-a", "-o", "jsonpath={.status.phase}"]).ok();
        assert_eq!(out.stdout, "Active");

        let out = k.run(&["run", "box", "--image=busybox:1.36", "--", "sleep", "3600"]).ok();
        assert_eq!(out.stdout.trim(), "pod/box created");
        let out = k.run(&["get", "pod", "box", "-o", "jsonpath={.metadata.labels.run} {.spec.containers[0].args} {.status.phase}"]).ok();
        assert_eq!(out.stdout.trim(), r#"box ["sleep","3600"] Pending"#);
    });
}

#[test]
fn get_prints_tables_wide_yaml_jsonpath_labels_and_all_namespaces() {
    each_kubectl(|_, k| {
        k.run(&["run", "box", "--image=busybox:1.36", "--labels=tier=fe,app=box"]).ok();
        k.run(&["create", "namespace", "other"]).ok();
        k.run(&["run", "far", "--image=busybox:1.36", "-n", "other"]).ok();

        let out = k.run(&["get", "pods"]).ok();
        let header: Vec<&str> = out.stdout.lines().next().unwrap_or_default().split_whitespace().collect();
        assert_eq!(header, vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
        assert!(out.stdout.lines().any(|l| l.starts_with("box") && l.contains("0/1") && l.contains("Pending")), "{}", out.stdout);
        assert!(!out.stdout.contains("far"));

        let out = k.run(&["get", "pods", "-o", "wide"]).ok();
        assert!(out.stdout.lines().next().unwrap_or_default().contains("NOMINATED NODE"), "{}", out.stdout);

        let out = k.run(&["get", "pods", "-A"]).ok();
        assert!(out.stdout.lines().any(|l| l.starts_with("other") && l.contains("far")), "{}", out.stdout);
        assert!(out.stdout.lines().any(|l| l.starts_with("default") && l.contains("box")), "{}", out.stdout);

        let out = k.run(&["get", "pods", "--show-labels"]).ok();
        assert!(out.stdout.contains("app=box,tier=fe"), "{}", out.stdout);

        let out = k.run(&["get", "pods", "-l", "tier=fe", "-o", "name"]).ok();
        assert_eq!(out.stdout.trim(), "pod/box");
        let out = k.run(&["get", "pods", "-l", "tier in (be)", "-o", "name"]).ok();
        assert_eq!(out.stdout.trim(), "");

        let out = k.run(&["get", "pod", "box", "-o", "yaml"]).ok();
        assert!(out.stdout.contains("kind: Pod") && out.stdout.contains("restartPolicy: Always"), "{}", out.stdout);
        assert!(out.stdout.contains("uid: ") && out.stdout.contains("resourceVersion: "), "{}", out.stdout);

        let out = k.run(&["get", "ns"]).ok();
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease", "other"] {
            assert!(out.stdout.lines().any(|l| l.starts_with(ns) && l.contains("Active")), "{ns} missing:\n{}", out.stdout);
        }

        let out = k.run(&["get", "pods", "--field-selector", "metadata.name=box", "-o", "name"]).ok();
        assert_eq!(out.stdout.trim(), "pod/box");
    });
}

#[test]
fn get_watch_sees_added_modified_deleted() {
    each_kubectl(|_, k| {
        let (mut child, rx) = k.spawn_lines(&["get", "configmaps", "-w", "--output-watch-events"]);
        // The list comes first (kube-root-ca is not created yet, so it is empty); then events.
        std::thread::sleep(Duration::from_millis(700));
        k.run(&["create", "configmap", "watched", "--from-literal=a=1"]).ok();
        expect_line(&rx, &["ADDED", "watched"], Duration::from_secs(10));
        k.run(&["label", "configmap", "watched", "x=y"]).ok();
        expect_line(&rx, &["MODIFIED", "watched"], Duration::from_secs(10));
        k.run(&["delete", "configmap", "watched"]).ok();
        expect_line(&rx, &["DELETED", "watched"], Duration::from_secs(10));
        let _ = child.kill();
        let _ = child.wait();
    });
}

#[test]
fn describe_label_annotate_scale_and_patch() {
    each_kubectl(|_, k| {
        k.run(&["create", "deployment", "web", "--image=nginx:1.25"]).ok();
        let out = k.run(&["describe", "deployment", "web"]).ok();
        assert!(out.stdout.contains("Name:") && out.stdout.contains("web"), "{}", out.stdout);
        assert!(out.stdout.contains("StrategyType:           RollingUpdate"), "{}", out.stdout);
        assert!(out.stdout.contains("nginx:1.25"), "{}", out.stdout);

        let out = k.run(&["label", "deployment", "web", "tier=frontend"]).ok();
        assert_eq!(out.stdout.trim(), "deployment.apps/web labeled");
        let out = k.run(&["annotate", "deployment", "web", "owner=team-a"]).ok();
        assert_eq!(out.stdout.trim(), "deployment.apps/web annotated");
        let out = k.run(&["get", "deploy", "web", "-o", "jsonpath={.metadata.labels.tier} {.metadata.annotations.owner}"]).ok();
        assert_eq!(out.stdout.trim(), "frontend team-a");
        let out = k.run(&["label", "deployment", "web", "tier-"]).ok();
        assert_eq!(out.stdout.trim(), "deployment.apps/web unlabeled");

        let out = k.run(&["scale", "deployment", "web", "--replicas=5"]).ok();
        assert_eq!(out.stdout.trim(), "deployment.apps/web scaled");
        let out = k.run(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]).ok();
        assert_eq!(out.stdout, "5");
        // --current-replicas goes through GET and PUT on the scale subresource.
        k.run(&["scale", "deployment", "web", "--current-replicas=5", "--replicas=2"]).ok();
        let out = k.run(&["scale", "deployment", "web", "--current-replicas=7", "--replicas=1"]).fail();
        assert!(out.stderr.contains("Expected replicas to be 7, was 2"), "{}", out.stderr);

        let out = k.run(&["patch", "deployment", "web", "--type=merge", "-p", r#"{"spec":{"minReadySeconds":3}}"#]).ok();
        assert_eq!(out.stdout.trim(), "deployment.apps/web patched");
        k.run(&["patch", "deployment", "web", "--type=json", "-p", r#"[{"op":"replace","path":"/spec/replicas","value":4}]"#]).ok();
        k.run(&["patch", "deployment", "web", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.27"}]}}}}"#]).ok();
        let out = k.run(&["get", "deploy", "web", "-o", "jsonpath={.spec.minReadySeconds} {.spec.replicas} {.spec.template.spec.containers[*].image}"]).ok();
        assert_eq!(out.stdout.trim(), "3 4 nginx:1.27");
        let out = k.run(&["patch", "deployment", "web", "--type=json", "-p", r#"[{"op":"test","path":"/spec/replicas","value":99}]"#]).fail();
        assert!(out.stderr.contains("value did not match"), "{}", out.stderr);
    });
}

#[test]
fn edit_with_kube_editor() {
    each_kubectl(|_, k| {
        k.run(&["create", "configmap", "conf", "--from-literal=mode=old"]).ok();
        let out = k.run_env(&["edit", "configmap", "conf"], &[("KUBE_EDITOR", "sed -i s/mode:\\ old/mode:\\ new/")]).ok();
        assert_eq!(out.stdout.trim(), "configmap/conf edited");
        let out = k.run(&["get", "cm", "conf", "-o", "jsonpath={.data.mode}"]).ok();
        assert_eq!(out.stdout, "new");
    });
}

#[test]
fn delete_by_name_label_file_and_cascade() {
    each_kubectl(|_, k| {
        for n in ["a", "b", "c"] {
            k.run(&["create", "configmap", n, "--from-literal=x=1"]).ok();
        }
        k.run(&["label", "cm", "b", "c", "group=bc"]).ok();
        let out = k.run(&["delete", "configmap", "a"]).ok();
        assert_eq!(out.stdout.trim(), "configmap \"a\" deleted");
        let out = k.run(&["delete", "configmap", "-l", "group=bc"]).ok();
        assert!(out.stdout.contains("configmap \"b\" deleted") && out.stdout.contains("configmap \"c\" deleted"), "{}", out.stdout);
        let out = k.run(&["get", "configmaps", "-o", "name"]).ok();
        assert_eq!(out.stdout.trim(), "");

        let f = k.with_file("deploy.yaml", DEPLOYMENT);
        k.run(&["apply", "-f", f.to_str().unwrap_or_default()]).ok();
        let out = k.run(&["delete", "-f", f.to_str().unwrap_or_default(), "--cascade=background"]).ok();
        assert_eq!(out.stdout.trim(), "deployment.apps \"web\" deleted");
        let out = k.run(&["get", "deploy", "web"]).fail();
        assert!(out.stderr.contains("Error from server (NotFound): deployments.apps \"web\" not found"), "{}", out.stderr);

        // Foreground: the owner goes only after its dependents; orphan: dependents stay, freed.
        for (owner, cascade) in [("fg", "foreground"), ("or", "orphan")] {
            k.run(&["create", "configmap", owner, "--from-literal=x=1"]).ok();
            let uid = k.run(&["get", "cm", owner, "-o", "jsonpath={.metadata.uid}"]).ok().stdout;
            let dep = format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {owner}-dep\n  ownerReferences:\n  - apiVersion: v1\n    kind: ConfigMap\n    name: {owner}\n    uid: {uid}\n    blockOwnerDeletion: true\n"
            );
            let f = k.with_file("dep.yaml", &dep);
            k.run(&["create", "-f", f.to_str().unwrap_or_default()]).ok();
            let out = k.run(&["delete", "configmap", owner, &format!("--cascade={cascade}"), "--timeout=60s"]).ok();
            assert_eq!(out.stdout.trim(), format!("configmap \"{owner}\" deleted"));
            k.run(&["get", "configmap", owner]).fail();
        }
        k.run(&["get", "configmap", "fg-dep"]).fail();
        let out = k.run(&["get", "configmap", "or-dep", "-o", "jsonpath={.metadata.ownerReferences}"]).ok();
        assert_eq!(out.stdout.trim(), "", "orphaned dependent keeps no reference");

        // Deleting a namespace empties it, then removes it.
        k.run(&["create", "namespace", "doomed"]).ok();
        k.run(&["create", "deployment", "d", "--image=nginx:1.25", "-n", "doomed"]).ok();
        k.run(&["create", "configmap", "c", "--from-literal=a=1", "-n", "doomed"]).ok();
        let out = k.run(&["delete", "namespace", "doomed", "--timeout=60s"]).ok();
        assert_eq!(out.stdout.trim(), "namespace \"doomed\" deleted");
        let out = k.run(&["get", "namespace", "doomed"]).fail();
        assert!(out.stderr.contains("(NotFound)"), "{}", out.stderr);

        let out = k.run(&["delete", "configmap", "nope"]).fail();
        assert!(out.stderr.contains("(NotFound)"), "{}", out.stderr);
        let out = k.run(&["delete", "namespace", "kube-system"]).fail();
        assert!(out.stderr.contains("(Forbidden)") && out.stderr.contains("may not be deleted"), "{}", out.stderr);
    });
}

#[test]
fn wait_for_delete_returns_when_the_object_goes() {
    each_kubectl(|_, k| {
        k.run(&["create", "configmap", "doomed", "--from-literal=x=1"]).ok();
        let (mut child, rx) = k.spawn_lines(&["wait", "--for=delete", "configmap/doomed", "--timeout=30s"]);
        std::thread::sleep(Duration::from_millis(800));
        k.run(&["delete", "configmap", "doomed", "--wait=false"]).ok();
        expect_line(&rx, &["configmap/doomed", "condition met"], Duration::from_secs(15));
        let st = child.wait().expect("wait exits");
        assert!(st.success());
    });
}

#[test]
fn explain_api_resources_and_auth() {
    each_kubectl(|_, k| {
        let out = k.run(&["explain", "deployment.spec.replicas"]).ok();
        assert!(out.stdout.contains("FIELD: replicas") && out.stdout.contains("integer"), "{}", out.stdout);
        let out = k.run(&["explain", "pods.spec.containers.image"]).ok();
        assert!(out.stdout.contains("Container image name"), "{}", out.stdout);

        let out = k.run(&["api-resources"]).ok();
        let deploy = out.stdout.lines().find(|l| l.starts_with("deployments")).unwrap_or_default().to_string();
        let cols: Vec<&str> = deploy.split_whitespace().collect();
        assert_eq!(cols, vec!["deployments", "deploy", "apps/v1", "true", "Deployment"], "{}", out.stdout);
        assert!(out.stdout.lines().any(|l| l.starts_with("namespaces") && l.contains("false")), "{}", out.stdout);

        let out = k.run(&["auth", "can-i", "create", "pods"]).ok();
        assert_eq!(out.stdout.trim(), "yes");
        let out = k.run(&["get", "all"]).ok();
        assert!(out.stderr.is_empty() || out.stderr.contains("No resources found"), "{}", out.stderr);
    });
}

#[test]
fn version_reports_1_33() {
    let server = Server::start();
    let out = server.kubectl("1.33").run(&["version", "-o", "json"]).ok();
    assert!(out.stdout.contains("\"minor\": \"33\""), "{}", out.stdout);
}

#[test]
fn server_dry_run_validates_without_writing() {
    each_kubectl(|_, k| {
        let out = k.run(&["create", "configmap", "ghost", "--from-literal=a=1", "--dry-run=server"]).ok();
        assert_eq!(out.stdout.trim(), "configmap/ghost created (server dry run)");
        let out = k.run(&["get", "configmap", "ghost"]).fail();
        assert!(out.stderr.contains("(NotFound)"), "{}", out.stderr);
        // A dry run still runs validation.
        let out = k.run(&["create", "configmap", "Bad_Name", "--dry-run=server"]).fail();
        assert!(out.stderr.contains("metadata.name: Invalid value: \"Bad_Name\""), "{}", out.stderr);
        let f = k.with_file("deploy.yaml", DEPLOYMENT);
        let out = k.run(&["apply", "-f", f.to_str().unwrap_or_default(), "--dry-run=server"]).ok();
        assert_eq!(out.stdout.trim(), "deployment.apps/web created (server dry run)");
        k.run(&["get", "deploy", "web"]).fail();
    });
}

#[test]
fn server_side_apply_owns_fields_removes_dropped_ones_and_reports_conflicts() {
    each_kubectl(|_, k| {
        let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: owned\n  labels:\n    team: a\ndata:\n  keep: \"1\"\n  drop: \"2\"\n";
        let f = k.with_file("owned.yaml", cm);
        let out = k.run(&["apply", "--server-side", "-f", f.to_str().unwrap_or_default()]).ok();
        assert_eq!(out.stdout.trim(), "configmap/owned serverside-applied");
        let out = k.run(&["get", "cm", "owned", "-o", "jsonpath={.metadata.managedFields[0].manager} {.metadata.managedFields[0].operation}"]).ok();
        assert_eq!(out.stdout.trim(), "kubectl Apply");

        // Re-applying without `drop` removes it: the applier owned it.
        let f = k.with_file("owned.yaml", &cm.replace("  drop: \"2\"\n", ""));
        k.run(&["apply", "--server-side", "-f", f.to_str().unwrap_or_default()]).ok();
        let out = k.run(&["get", "cm", "owned", "-o", "jsonpath={.data}"]).ok();
        assert_eq!(out.stdout.trim(), r#"{"keep":"1"}"#);

        // Another manager changes `keep`; applying the old value conflicts until forced.
        k.run(&["patch", "cm", "owned", "--type=merge", "-p", r#"{"data":{"keep":"changed"}}"#]).ok();
        let f = k.with_file("owned.yaml", &cm.replace("  drop: \"2\"\n", "").replace("keep: \"1\"", "keep: \"3\""));
        let out = k.run(&["apply", "--server-side", "-f", f.to_str().unwrap_or_default()]).fail();
        assert!(out.stderr.contains("conflict") && out.stderr.contains(".data.keep"), "{}", out.stderr);
        k.run(&["apply", "--server-side", "--force-conflicts", "-f", f.to_str().unwrap_or_default()]).ok();
        let out = k.run(&["get", "cm", "owned", "-o", "jsonpath={.data.keep}"]).ok();
        assert_eq!(out.stdout, "3");
    });
}

#[test]
fn events_in_both_api_groups_and_autoscalers_in_both_versions() {
    each_kubectl(|_, k| {
        k.run(&["run", "box", "--image=busybox:1.36"]).ok();
        let uid = k.run(&["get", "pod", "box", "-o", "jsonpath={.metadata.uid}"]).ok().stdout;
        let event = format!(
            "apiVersion: v1\nkind: Event\nmetadata:\n  name: box.1\ninvolvedObject:\n  kind: Pod\n  name: box\n  namespace: default\n  uid: {uid}\nreason: Testing\nmessage: hello from the test\ntype: Normal\ncount: 1\nfirstTimestamp: \"2026-01-01T00:00:00Z\"\nlastTimestamp: \"2026-01-01T00:00:00Z\"\nsource:\n  component: e2e\n"
        );
        let f = k.with_file("event.yaml", &event);
        k.run(&["create", "-f", f.to_str().unwrap_or_default()]).ok();
        let out = k.run(&["get", "events"]).ok();
        assert!(out.stdout.contains("Testing") && out.stdout.contains("pod/box") && out.stdout.contains("hello from the test"), "{}", out.stdout);
        // The same event through events.k8s.io/v1, converted from core storage.
        let out = k.run(&["get", "events.v1.events.k8s.io", "box.1", "-o", "jsonpath={.note} {.regarding.name} {.deprecatedCount}"]).ok();
        assert_eq!(out.stdout.trim(), "hello from the test box 1");
        let out = k.run(&["describe", "pod", "box"]).ok();
        assert!(out.stdout.contains("Testing") && out.stdout.contains("hello from the test"), "{}", out.stdout);

        k.run(&["create", "deployment", "web", "--image=nginx:1.25"]).ok();
        let out = k.run(&["autoscale", "deployment", "web", "--min=2", "--max=5", "--cpu-percent=80"]).ok();
        assert_eq!(out.stdout.trim(), "horizontalpodautoscaler.autoscaling/web autoscaled");
        // autoscaling/v1 is served by conversion from the stored v2 object.
        let out = k.run(&["get", "--raw", "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/web"]).ok();
        let v1: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
        assert_eq!((v1["apiVersion"].as_str(), v1["spec"]["targetCPUUtilizationPercentage"].as_i64()), (Some("autoscaling/v1"), Some(80)), "{v1}");
        let out = k.run(&["get", "hpa.v2.autoscaling", "web", "-o", "jsonpath={.spec.metrics[0].resource.target.averageUtilization}"]).ok();
        assert_eq!(out.stdout.trim(), "80");
        let out = k.run(&["get", "hpa"]).ok();
        assert!(out.stdout.contains("Deployment/web") && out.stdout.contains("80%"), "{}", out.stdout);
    });
}

#[test]
fn registered_nodes_get_a_pod_cidr_each() {
    let server = Server::start();
    let k = server.kubectl("1.33");
    for n in ["n1", "n2"] {
        let f = k.with_file("node.yaml", &format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {n}\n"));
        k.run(&["create", "-f", f.to_str().unwrap_or_default()]).ok();
    }
    let mut cidrs = Vec::new();
    for n in ["n1", "n2"] {
        let out = k.run(&["wait", &format!("node/{n}"), "--for=jsonpath={.spec.podCIDR}", "--timeout=30s"]).ok();
        assert!(out.stdout.contains("condition met"), "{}", out.stdout);
        cidrs.push(k.run(&["get", "node", n, "-o", "jsonpath={.spec.podCIDR}"]).ok().stdout);
    }
    cidrs.sort();
    assert_eq!(cidrs, vec!["10.42.0.0/24", "10.42.1.0/24"]);
}
