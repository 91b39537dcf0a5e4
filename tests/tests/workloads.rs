//! Issue #4 end to end: the scheduler and the core controllers inside `skiff server`, with its
//! built-in node running real containers in the test's own network namespace, driven by the
//! real kubectl: the declared state is reached and kept, and rollouts move between versions.

use std::time::{Duration, Instant};

use skiff_e2e::node_env::NodeEnv;

/// `(name, phase, deleting)` of the pods with label `app=<app>`.
fn pods(env: &NodeEnv, app: &str) -> Vec<(String, String, bool)> {
    let out = env
        .k
        .run(&[
            "get", "pods", "-l", &format!("app={app}"), "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ])
        .ok();
    out.stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next().unwrap_or_default().to_string();
            let phase = f.next().unwrap_or_default().to_string();
            (name, phase, f.next().is_some())
        })
        .collect()
}

/// Waits until exactly `n` pods of `app` exist, all Running and none deleting.
fn wait_running(env: &NodeEnv, app: &str, n: usize, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut last = Vec::new();
    while Instant::now() < deadline {
        last = pods(env, app);
        if last.len() == n && last.iter().all(|(_, phase, deleting)| phase == "Running" && !deleting) {
            return last.into_iter().map(|(name, ..)| name).collect();
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!(
        "wanted {n} running pods of {app}, have {last:?}\n{}\nserver log tail:\n{}",
        env.k.run(&["get", "pods,rs,deploy", "-o", "wide"]).stdout,
        tail(&env.server.log(), 60)
    );
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn rollout_status(env: &NodeEnv, timeout: &str) -> skiff_e2e::Output {
    env.k.run(&["rollout", "status", "deployment/web", &format!("--timeout={timeout}")])
}

#[test]
fn a_deployment_is_created_healed_scaled_rolled_out_rolled_back_and_deleted() {
    let env = NodeEnv::start("deploy", &[]);
    env.import_image("docker.io/library/busybox:1.37");
    let k = &env.k;

    let out = k.run(&["create", "deployment", "web", "--image=busybox:1.36", "--replicas=3", "--", "httpd", "-f", "-p", "8080", "-h", "/www"]).ok();
    assert_eq!(out.stdout.trim(), "deployment.apps/web created");
    let out = rollout_status(&env, "120s");
    assert!(out.status.success() && out.stdout.contains("successfully rolled out"), "{}{}", out.stdout, out.stderr);
    let first = wait_running(&env, "web", 3, Duration::from_secs(30));
    let out = k.run(&["get", "pods", "-l", "app=web"]).ok();
    assert_eq!(out.stdout.lines().filter(|l| l.contains("1/1") && l.contains("Running")).count(), 3, "{}", out.stdout);
    let out = k.run(&["get", "deployment", "web"]).ok();
    assert!(out.stdout.lines().nth(1).is_some_and(|r| r.contains("3/3")), "{}", out.stdout);
    // One /metrics for the server process: the scheduler counted these placements, and the
    // cluster DNS and ingress families are there too.
    let metrics = k.run(&["get", "--raw", "/metrics"]).ok().stdout;
    let scheduled: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("scheduler_schedule_attempts_total{result=\"scheduled\",profile=\"default-scheduler\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(scheduled >= 3, "scheduler_schedule_attempts_total: {scheduled}\n{metrics}");
    for family in ["scheduler_scheduling_algorithm_duration_seconds", "skiff_scheduler_binds", "skiff_dns_forward_failures", "skiff_ingress_upstream_connect_failures"] {
        assert!(metrics.contains(&format!("# TYPE {family} ")), "/metrics lacks {family}:\n{metrics}");
    }

    // A deleted pod is replaced.
    k.run(&["delete", "pod", &first[0], "--wait=false"]).ok();
    let healed = wait_running(&env, "web", 3, Duration::from_secs(60));
    assert!(!healed.contains(&first[0]), "{healed:?}");

    // Scale up and back down.
    k.run(&["scale", "deployment/web", "--replicas=5"]).ok();
    wait_running(&env, "web", 5, Duration::from_secs(60));
    k.run(&["scale", "deployment/web", "--replicas=2"]).ok();
    wait_running(&env, "web", 2, Duration::from_secs(60));

    // A new image rolls out; history has two revisions; undo goes back.
    k.run(&["set", "image", "deployment/web", "busybox=busybox:1.37"]).ok();
    let out = rollout_status(&env, "120s");
    assert!(out.status.success(), "{}{}", out.stdout, out.stderr);
    wait_running(&env, "web", 2, Duration::from_secs(60));
    let out = k.run(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].spec.containers[0].image}"]).ok();
    assert_eq!(out.stdout, "busybox:1.37 busybox:1.37");
    let out = k.run(&["rollout", "history", "deployment/web"]).ok();
    let revisions: Vec<&str> = out.stdout.lines().skip(2).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(revisions, ["1", "2"], "{}", out.stdout);
    let out = k.run(&["rollout", "undo", "deployment/web"]).ok();
    assert_eq!(out.stdout.trim(), "deployment.apps/web rolled back");
    assert!(rollout_status(&env, "120s").status.success());
    wait_running(&env, "web", 2, Duration::from_secs(60));
    let out = k.run(&["get", "deployment", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image} {.metadata.annotations.deployment\\.kubernetes\\.io/revision}"]).ok();
    assert_eq!(out.stdout, "busybox:1.36 3");
    let out = k.run(&["get", "rs", "-l", "app=web", "--no-headers"]).ok();
    assert_eq!(out.stdout.lines().count(), 2, "the undo reuses the first ReplicaSet: {}", out.stdout);

    // pause: a template change waits; resume rolls it out; restart rolls the same template anew.
    k.run(&["rollout", "pause", "deployment/web"]).ok();
    k.run(&["set", "env", "deployment/web", "STAGE=paused"]).ok();
    std::thread::sleep(Duration::from_secs(2));
    let out = k.run(&["get", "rs", "-l", "app=web", "--no-headers"]).ok();
    assert_eq!(out.stdout.lines().count(), 2, "a paused deployment rolled out: {}", out.stdout);
    k.run(&["rollout", "resume", "deployment/web"]).ok();
    assert!(rollout_status(&env, "120s").status.success());
    let out = k.run(&["rollout", "restart", "deployment/web"]).ok();
    assert_eq!(out.stdout.trim(), "deployment.apps/web restarted");
    assert!(rollout_status(&env, "120s").status.success());
    let out = k.run(&["get", "deployment", "web", "-o", "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}"]).ok();
    assert_eq!(out.stdout, "5");
    wait_running(&env, "web", 2, Duration::from_secs(60));

    // An image that cannot be pulled stalls the rollout and keeps the old pods serving.
    let before = wait_running(&env, "web", 2, Duration::from_secs(10));
    k.run(&["set", "image", "deployment/web", "busybox=busybox:does-not-exist"]).ok();
    let out = rollout_status(&env, "8s");
    assert!(!out.status.success(), "the rollout of a missing image finished: {}", out.stdout);
    let now: Vec<(String, String, bool)> = pods(&env, "web");
    let old_running: Vec<&String> = now.iter().filter(|(_, phase, del)| phase == "Running" && !del).map(|(n, ..)| n).collect();
    assert_eq!(old_running.len(), 2, "{now:?}");
    assert!(before.iter().all(|b| old_running.contains(&b)), "old pods were taken down: {before:?} → {now:?}");
    // The pull fails once the registry lookup gives up (no network leaves the test namespace).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = k.run(&["get", "pods", "-l", "app=web"]).ok();
        if out.stdout.contains("ErrImagePull") || out.stdout.contains("ImagePullBackOff") {
            break;
        }
        assert!(Instant::now() < deadline, "the missing image never failed to pull:\n{}", out.stdout);
        std::thread::sleep(Duration::from_millis(500));
    }
    let still: Vec<(String, String, bool)> = pods(&env, "web");
    assert!(before.iter().all(|b| still.iter().any(|(n, phase, del)| n == b && phase == "Running" && !del)), "old pods were taken down: {still:?}");

    // Deleting the Deployment removes its ReplicaSets and pods.
    k.run(&["delete", "deployment", "web"]).ok();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rs = k.run(&["get", "rs", "-l", "app=web", "--no-headers"]).ok().stdout;
        if rs.trim().is_empty() && pods(&env, "web").is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left after deleting the deployment: {rs}\n{:?}", pods(&env, "web"));
        std::thread::sleep(Duration::from_millis(300));
    }
    env.delete_all_and_check_clean();
}

#[test]
fn unschedulable_pods_say_why_and_placement_follows_selectors_and_taints() {
    let env = NodeEnv::start("sched", &[]);
    let k = &env.k;
    // More cpu than any node has: Pending, with upstream's words.
    env.create(
        "hungry",
        r#"apiVersion: v1
kind: Pod
metadata:
  name: hungry
spec:
  containers:
  - name: main
    image: busybox:1.36
    command: ["sleep", "1000"]
    resources:
      requests: {cpu: "1000"}
"#,
    );
    env.wait("hungry", "--for=jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].reason}=Unschedulable", "30s");
    let message = env.jsonpath("hungry", "{.status.conditions[?(@.type==\"PodScheduled\")].message}");
    assert!(message.starts_with("0/1 nodes are available: 1 Insufficient cpu."), "{message}");
    let out = k.run(&["get", "pod", "hungry"]).ok();
    assert!(out.stdout.contains("Pending"), "{}", out.stdout);
    let out = k.run(&["get", "events", "--field-selector", "involvedObject.name=hungry"]).ok();
    assert!(out.stdout.contains("FailedScheduling"), "{}", out.stdout);

    // A second node with a label and a taint, registered by hand with a live Lease.
    k.run(&["label", "node", "node-1", "disk=hdd"]).ok();
    let node = r#"apiVersion: v1
kind: Node
metadata:
  name: node-2
  labels: {kubernetes.io/hostname: node-2, disk: ssd}
spec:
  taints:
  - {key: dedicated, value: gpu, effect: NoSchedule}
"#;
    env.create("node-2", node);
    let status = r#"{"status":{"capacity":{"cpu":"4","memory":"8Gi","pods":"110"},"allocatable":{"cpu":"4","memory":"8Gi","pods":"110"},"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady","message":"ready","lastHeartbeatTime":null}]}}"#;
    k.run(&["patch", "node", "node-2", "--subresource=status", "--type=merge", "-p", status]).ok();
    // A pod selecting ssd without tolerating the taint cannot go anywhere; tolerating it, it lands on node-2.
    env.create(
        "picky",
        r#"apiVersion: v1
kind: Pod
metadata:
  name: picky
spec:
  nodeSelector: {disk: ssd}
  containers:
  - name: main
    image: busybox:1.36
"#,
    );
    env.wait("picky", "--for=jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].reason}=Unschedulable", "30s");
    let message = env.jsonpath("picky", "{.status.conditions[?(@.type==\"PodScheduled\")].message}");
    assert!(message.starts_with("0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint {dedicated: gpu}."), "{message}");
    env.create(
        "tolerant",
        r#"apiVersion: v1
kind: Pod
metadata:
  name: tolerant
spec:
  nodeSelector: {disk: ssd}
  tolerations: [{key: dedicated, operator: Equal, value: gpu, effect: NoSchedule}]
  containers:
  - name: main
    image: busybox:1.36
"#,
    );
    env.wait("tolerant", "--for=jsonpath={.spec.nodeName}=node-2", "30s");
    // Without a selector the untainted node-1 is the only choice, and the pod really runs.
    env.create(
        "plain",
        r#"apiVersion: v1
kind: Pod
metadata:
  name: plain
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1.36
    command: ["sleep", "1000"]
"#,
    );
    env.wait("plain", "--for=condition=Ready", "60s");
    assert_eq!(env.jsonpath("plain", "{.spec.nodeName}"), "node-1");
    let out = k.run(&["describe", "pod", "plain"]).ok();
    assert!(out.stdout.contains("Successfully assigned default/plain to node-1"), "{}", out.stdout);

    // Cordon: new pods wait; uncordon lets them in.
    let out = k.run(&["cordon", "node-1"]).ok();
    assert_eq!(out.stdout.trim(), "node/node-1 cordoned");
    env.create(
        "later",
        r#"apiVersion: v1
kind: Pod
metadata:
  name: later
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1.36
    command: ["sleep", "1000"]
"#,
    );
    env.wait("later", "--for=jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].reason}=Unschedulable", "30s");
    k.run(&["uncordon", "node-1"]).ok();
    env.wait("later", "--for=condition=Ready", "60s");
    k.run(&["delete", "pod", "tolerant", "picky", "hungry", "--grace-period=0", "--force"]);
    k.run(&["delete", "node", "node-2"]).ok();

    // Drain honours PodDisruptionBudgets, then evicts.
    k.run(&["label", "pod", "later", "app=guarded"]).ok();
    env.create(
        "pdb",
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: guard\nspec:\n  minAvailable: 1\n  selector: {matchLabels: {app: guarded}}\n",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while k.run(&["get", "pdb", "guard", "-o", "jsonpath={.status.currentHealthy}"]).stdout != "1" {
        assert!(Instant::now() < deadline, "the PDB never counted its pod");
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = k.run(&["drain", "node-1", "--force", "--timeout=4s"]);
    assert!(!out.status.success(), "drain ignored the budget: {}", out.stdout);
    assert!(out.stderr.contains("disruption budget"), "{}", out.stderr);
    let out = k.run(&["get", "node", "node-1"]).ok();
    assert!(out.stdout.contains("SchedulingDisabled"), "{}", out.stdout);
    k.run(&["delete", "pdb", "guard"]).ok();
    let out = k.run(&["drain", "node-1", "--force", "--timeout=60s"]).ok();
    assert!(out.stdout.contains("node/node-1 drained"), "{}", out.stdout);
    assert!(k.run(&["get", "pods", "--no-headers"]).stdout.trim().is_empty());
    k.run(&["uncordon", "node-1"]).ok();
    env.delete_all_and_check_clean();
}

#[test]
fn pods_of_a_lost_node_are_evicted_and_replaced_on_a_healthy_one() {
    let env = NodeEnv::start(
        "lost",
        &["--node-monitor-period", "1s", "--node-monitor-grace-period", "5s", "--node-startup-grace-period", "5s"],
    );
    let k = &env.k;
    // A second node whose "kubelet" is this test: registered Ready with a fresh Lease that is
    // then never renewed.
    env.create(
        "ghost",
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: ghost\n  labels: {kubernetes.io/hostname: ghost}\n",
    );
    let date = |format: &str| {
        let out = std::process::Command::new("date").args(["-u", format]).output().expect("date");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let (heartbeat, renewed) = (date("+%Y-%m-%dT%H:%M:%SZ"), date("+%Y-%m-%dT%H:%M:%S.000000Z"));
    let status = format!(
        r#"{{"status":{{"capacity":{{"cpu":"4","memory":"8Gi","pods":"110"}},"allocatable":{{"cpu":"4","memory":"8Gi","pods":"110"}},"conditions":[{{"type":"Ready","status":"True","reason":"KubeletReady","message":"ready","lastHeartbeatTime":"{heartbeat}"}}]}}}}"#
    );
    k.run(&["patch", "node", "ghost", "--subresource=status", "--type=merge", "-p", &status]).ok();
    env.create(
        "ghost-lease",
        &format!("apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: ghost\n  namespace: kube-node-lease\nspec:\n  holderIdentity: ghost\n  leaseDurationSeconds: 40\n  renewTime: \"{renewed}\"\n"),
    );
    // Everything goes to the ghost while node-1 is cordoned.
    k.run(&["cordon", "node-1"]).ok();
    env.create(
        "web",
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      containers:
      - name: main
        image: busybox:1.36
        command: ["sleep", "1000"]
"#,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = k.run(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].spec.nodeName}"]).ok();
        if out.stdout == "ghost ghost" {
            break;
        }
        assert!(Instant::now() < deadline, "pods never landed on the ghost: {}", out.stdout);
        std::thread::sleep(Duration::from_millis(200));
    }
    k.run(&["uncordon", "node-1"]).ok();
    // The ghost goes silent: Unknown, tainted, its pods evicted and replaced on node-1.
    let out = k.run(&["wait", "node/ghost", "--for=condition=Ready=Unknown", "--timeout=60s"]).ok();
    assert!(out.stdout.contains("condition met"), "{}", out.stdout);
    let out = k.run(&["get", "node", "ghost", "-o", "jsonpath={.spec.taints[*].key}"]).ok();
    assert!(out.stdout.contains("node.kubernetes.io/unreachable"), "{}", out.stdout);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = k
            .run(&["get", "pods", "-l", "app=web", "-o", "jsonpath={range .items[*]}{.spec.nodeName} {.status.phase} {.metadata.deletionTimestamp}{\"\\n\"}{end}"])
            .ok();
        let running_here = out.stdout.lines().filter(|l| l.starts_with("node-1 Running") && l.split_whitespace().count() == 2).count();
        if running_here == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no replacements on node-1:\n{}\n{}", out.stdout, tail(&env.server.log(), 40));
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = k.run(&["get", "events", "-A"]).ok();
    assert!(out.stdout.contains("TaintManagerEviction"), "{}", out.stdout);
    // The ghost's pods wait for a kubelet that never comes: remove them by force, like an admin.
    k.run(&["delete", "deployment", "web"]).ok();
    k.run(&["delete", "pods", "--field-selector", "spec.nodeName=ghost", "--force", "--grace-period=0"]);
    k.run(&["delete", "node", "ghost"]).ok();
    env.delete_all_and_check_clean();
}
