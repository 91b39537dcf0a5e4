//! Issue #3 end to end: `skiff server` with its built-in node, inside a network namespace made
//! for the test, running real containers from an imported image, driven by the real kubectl.

use std::time::Duration;

use skiff_e2e::node_env::NodeEnv;
use skiff_e2e::{Registry, expect_line, image_fixture};

#[test]
fn a_bound_pod_runs_logs_execs_and_is_cleaned_up() {
    let env = NodeEnv::start("node", &["--pod-max-pids", "200"]);
    let k = &env.k;
    k.run(&["wait", "node/node-1", "--for=jsonpath={.spec.podCIDR}", "--timeout=30s"]).ok();
    let out = k.run(&["get", "node", "node-1", "-o", "jsonpath={.spec.podCIDR} {.status.nodeInfo.containerRuntimeVersion}"]).ok();
    assert!(out.stdout.starts_with("10.42.0.0/24 skiff://"), "{}", out.stdout);

    env.create("box", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: box\nspec:\n  nodeName: node-1\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    image: busybox:1.36\n    imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", \"echo hello from box; exec sleep 1000\"]\n");
    env.wait("box", "--for=condition=Ready", "60s");

    let out = k.run(&["get", "pod", "box", "-o", "wide"]).ok();
    let row = out.stdout.lines().nth(1).unwrap_or_default().to_string();
    assert!(row.contains("Running") && row.contains("1/1") && row.contains("10.42.0.") && row.contains("node-1"), "{}", out.stdout);

    let out = k.run(&["logs", "box"]).ok();
    assert_eq!(out.stdout.trim(), "hello from box");
    let out = k.run(&["exec", "box", "--", "echo", "hi from exec"]).ok();
    assert_eq!(out.stdout.trim(), "hi from exec");
    let out = k.run(&["exec", "box", "--", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", out.stderr);
    let out = k.run(&["exec", "-i", "box", "--", "cat"]);
    assert!(out.status.success(), "{}", out.stderr);
    // -t: a terminal opened inside the container, sized like the user's, and the exit code.
    let out = k.run_on_terminal(&["exec", "-it", "box", "--", "sh", "-c", "sleep 0.5; tty; stty size; exit 4"], 100, 30);
    assert_eq!(out.status.code(), Some(4), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("/dev/pts/0") && out.stdout.contains("30 100"), "{:?}", out.stdout);

    // exec runs as the container's user, like the container itself.
    env.create("user", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: user\nspec:\n  nodeName: node-1\n  terminationGracePeriodSeconds: 1\n  securityContext: {runAsUser: 1000, runAsGroup: 3000}\n  containers:\n  - name: main\n    image: busybox:1.36\n    command: [\"sleep\", \"1000\"]\n    resources:\n      limits: {memory: 64Mi, cpu: 500m}\n");
    env.wait("user", "--for=condition=Ready", "60s");
    // The pod's own cgroup carries the pod-wide limits and the pids limit.
    let uid = env.jsonpath("user", "{.metadata.uid}");
    let pod_cgroup = format!("{}/pod{uid}", env.cgroup_root.0);
    let read = |path: String| std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")).trim().to_string();
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        assert_eq!(read(format!("/sys/fs/cgroup/{pod_cgroup}/memory.max")), "67108864");
        assert_eq!(read(format!("/sys/fs/cgroup/{pod_cgroup}/cpu.max")), "50000 100000");
        assert_eq!(read(format!("/sys/fs/cgroup/{pod_cgroup}/pids.max")), "200");
    } else {
        assert_eq!(read(format!("/sys/fs/cgroup/memory/{pod_cgroup}/memory.limit_in_bytes")), "67108864");
        assert_eq!(read(format!("/sys/fs/cgroup/cpu/{pod_cgroup}/cpu.cfs_quota_us")), "50000");
        assert_eq!(read(format!("/sys/fs/cgroup/pids/{pod_cgroup}/pids.max")), "200");
    }
    assert_eq!(k.run(&["exec", "user", "--", "id", "-u"]).ok().stdout.trim(), "1000");
    assert_eq!(k.run(&["exec", "user", "--", "id", "-g"]).ok().stdout.trim(), "3000");

    // A failing container: restartPolicy Never, exit 3 → Failed with the exit code.
    env.create("fails", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: fails\nspec:\n  nodeName: node-1\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: busybox:1.36\n    command: [\"sh\", \"-c\", \"exit 3\"]\n");
    env.wait("fails", "--for=jsonpath={.status.phase}=Failed", "60s");
    assert_eq!(env.jsonpath("fails", "{.status.containerStatuses[0].state.terminated.exitCode} {.status.containerStatuses[0].state.terminated.reason}"), "3 Error");

    // Deletion honours the grace period: the container gets SIGTERM and time to end.
    let started = std::time::Instant::now();
    let out = k.run(&["delete", "pod", "box", "--timeout=60s"]).ok();
    assert_eq!(out.stdout.trim(), "pod \"box\" deleted");
    // `sleep` as PID 1 ignores SIGTERM, so the node waits out the 2 s grace period, then kills.
    assert!(started.elapsed() >= Duration::from_secs(2), "deleted after {:?}", started.elapsed());
    env.delete_all_and_check_clean();
}

#[test]
fn init_containers_two_containers_logs_crash_loop_and_oom() {
    let env = NodeEnv::start("pods", &[]);

    // Init containers run first and in order; two containers share the pod's localhost.
    env.create(
        "duo",
        r#"apiVersion: v1
kind: Pod
metadata:
  name: duo
spec:
  nodeName: node-1
  terminationGracePeriodSeconds: 1
  volumes:
  - name: work
    emptyDir: {}
  initContainers:
  - name: first
    image: busybox:1.36
    command: ["sh", "-c", "echo first > /work/msg"]
    volumeMounts: [{name: work, mountPath: /work}]
  - name: second
    image: busybox:1.36
    command: ["sh", "-c", "test -f /work/msg && echo second ran after first >> /work/msg"]
    volumeMounts: [{name: work, mountPath: /work}]
  containers:
  - name: web
    image: busybox:1.36
    command: ["sh", "-c", "cat /work/msg; exec httpd -f -p 8080 -h /www"]
    volumeMounts: [{name: work, mountPath: /work}]
  - name: client
    image: busybox:1.36
    command: ["sh", "-c", "until wget -qO- http://127.0.0.1:8080/; do sleep 0.2; done; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.3; done"]
"#,
    );
    env.wait("duo", "--for=condition=Ready", "90s");
    let out = env.k.run(&["get", "pod", "duo"]).ok();
    assert!(out.stdout.lines().nth(1).is_some_and(|r| r.contains("2/2") && r.contains("Running")), "{}", out.stdout);
    let out = env.k.run(&["logs", "duo", "-c", "web"]).ok();
    assert_eq!(out.stdout, "first\nsecond ran after first\n");
    // One /dev/shm and one hostname (UTS namespace) for the whole pod.
    env.k.run(&["exec", "duo", "-c", "web", "--", "sh", "-c", "echo shared > /dev/shm/note"]).ok();
    assert_eq!(env.k.run(&["exec", "duo", "-c", "client", "--", "cat", "/dev/shm/note"]).ok().stdout, "shared\n");
    assert_eq!(env.k.run(&["exec", "duo", "-c", "client", "--", "hostname"]).ok().stdout, "duo\n");
    std::thread::sleep(Duration::from_secs(1));
    let out = env.k.run(&["logs", "duo", "-c", "client"]).ok();
    assert!(out.stdout.starts_with("hello from skiff\ntick 1\n"), "{}", out.stdout);
    let out = env.k.run(&["logs", "duo", "-c", "client", "--tail=1"]).ok();
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
    let last: u32 = out.stdout.trim().trim_start_matches("tick ").parse().expect("a tick line");
    // -f keeps streaming: a later tick arrives on the open stream.
    let (mut follow, lines) = env.k.spawn_lines(&["logs", "-f", "duo", "-c", "client", "--tail=1"]);
    let later = format!("tick {}", last + 3);
    expect_line(&lines, &[&later], Duration::from_secs(20));
    let _ = follow.kill();
    let _ = follow.wait();
    let out = env.k.run(&["get", "pod", "duo", "-o", "jsonpath={.status.initContainerStatuses[*].state.terminated.reason}"]).ok();
    assert_eq!(out.stdout, "Completed Completed");

    // A chatty container: its log rotates at 10 MiB, and a follower carries on in the new file.
    env.create(
        "chatty",
        r#"apiVersion: v1
kind: Pod
metadata:
  name: chatty
spec:
  nodeName: node-1
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", "sleep 2; i=0; while [ $i -lt 250000 ]; do echo line $i of the chatty container; i=$((i+1)); done; exec sleep 1000"]
"#,
    );
    env.wait("chatty", "--for=condition=Ready", "60s");
    let (mut follow, lines) = env.k.spawn_lines(&["logs", "-f", "chatty"]);
    expect_line(&lines, &["line 249999 of the chatty container"], Duration::from_secs(120));
    let _ = follow.kill();
    let _ = follow.wait();
    let out = env.k.run(&["logs", "chatty", "--tail=1"]).ok();
    assert_eq!(out.stdout, "line 249999 of the chatty container\n");
    let uid = env.jsonpath("chatty", "{.metadata.uid}");
    let dir = env.logs.path().join(format!("default_chatty_{uid}")).join("main");
    let files: Vec<String> = std::fs::read_dir(&dir).expect("log dir").flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(files.len() >= 2 && files.iter().any(|f| f.starts_with("0.log.")), "{files:?}");
    assert!(std::fs::metadata(dir.join("0.log")).expect("live log").len() <= 10 * 1024 * 1024);

    // restartPolicy Always with a failing container: back-off shows as CrashLoopBackOff, and
    // --previous shows the last run's output.
    env.create(
        "crash",
        r#"apiVersion: v1
kind: Pod
metadata:
  name: crash
spec:
  nodeName: node-1
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", "echo attempt; exit 1"]
"#,
    );
    let out = env.wait_row("crash", "CrashLoopBackOff", Duration::from_secs(60));
    let row = out.lines().nth(1).unwrap_or_default().to_string();
    assert!(row.contains("0/1"), "{out}");
    let restarts: u32 = env.jsonpath("crash", "{.status.containerStatuses[0].restartCount}").parse().expect("restartCount");
    assert!(restarts >= 1, "restartCount {restarts}");
    assert_eq!(env.jsonpath("crash", "{.status.containerStatuses[0].lastState.terminated.exitCode}"), "1");
    let out = env.k.run(&["logs", "crash", "--previous"]).ok();
    assert_eq!(out.stdout, "attempt\n");

    // 16Mi of memory and a 64 MiB buffer: the kernel's OOM killer ends it, and the status says so.
    env.create(
        "oom",
        r#"apiVersion: v1
kind: Pod
metadata:
  name: oom
spec:
  nodeName: node-1
  restartPolicy: Never
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", "dd if=/dev/zero of=/dev/null bs=64M count=1"]
    resources:
      limits: {memory: 16Mi}
"#,
    );
    env.wait("oom", "--for=jsonpath={.status.phase}=Failed", "60s");
    assert_eq!(env.jsonpath("oom", "{.status.containerStatuses[0].state.terminated.reason}"), "OOMKilled");
    env.wait_row("oom", "OOMKilled", Duration::from_secs(10));

    env.delete_all_and_check_clean();
}

#[test]
fn probes_registry_pulls_and_agent_restart() {
    let env = NodeEnv::start("probes", &["--plain-http-registry", "127.0.0.1:5000"]);
    let registry = Registry::start(env.netns(), env.server.dir.path());
    let layout = image_fixture::busybox_layout(&env.server.dir.path().join("pushed"), "docker.io/library/busybox:1.36");
    registry.push_layout(&layout, "test/busybox", "1.0");

    // An image pulled from the local registry.
    env.create(
        "pulled",
        r#"apiVersion: v1
kind: Pod
metadata:
  name: pulled
spec:
  nodeName: node-1
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: 127.0.0.1:5000/test/busybox:1.0
    command: ["sh", "-c", "echo started; exec sleep 1000"]
    readinessProbe:
      exec: {command: ["cat", "/tmp/ready"]}
      periodSeconds: 1
"#,
    );
    env.wait("pulled", "--for=jsonpath={.status.phase}=Running", "60s");
    assert!(env.jsonpath("pulled", "{.status.containerStatuses[0].imageID}").contains("sha256:"));
    // Readiness drives Ready, both ways.
    assert_eq!(env.jsonpath("pulled", "{.status.conditions[?(@.type==\"Ready\")].status}"), "False");
    env.k.run(&["exec", "pulled", "--", "touch", "/tmp/ready"]).ok();
    env.wait("pulled", "--for=condition=Ready", "30s");
    env.k.run(&["exec", "pulled", "--", "rm", "/tmp/ready"]).ok();
    env.wait("pulled", "--for=condition=Ready=false", "30s");

    // A missing image: ErrImagePull with the registry's words, then ImagePullBackOff.
    env.create(
        "missing",
        r#"apiVersion: v1
kind: Pod
metadata:
  name: missing
spec:
  nodeName: node-1
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: 127.0.0.1:5000/test/nope:1
"#,
    );
    env.wait("missing", "--for=jsonpath={.status.containerStatuses[0].state.waiting.reason}=ErrImagePull", "60s");
    let message = env.jsonpath("missing", "{.status.containerStatuses[0].state.waiting.message}");
    assert!(message.contains("127.0.0.1:5000/test/nope:1") && message.to_lowercase().contains("manifest unknown"), "{message}");
    env.wait_row("missing", "ImagePullBackOff", Duration::from_secs(60));

    // Liveness failure restarts the container.
    env.create(
        "live",
        r#"apiVersion: v1
kind: Pod
metadata:
  name: live
spec:
  nodeName: node-1
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", "touch /tmp/healthy; sleep 2; rm /tmp/healthy; exec sleep 1000"]
    livenessProbe:
      exec: {command: ["cat", "/tmp/healthy"]}
      periodSeconds: 1
      failureThreshold: 1
"#,
    );
    env.wait("live", "--for=jsonpath={.status.containerStatuses[0].restartCount}=1", "60s");

    // The node process dies hard and comes back: running containers are re-adopted untouched.
    env.create(
        "steady",
        r#"apiVersion: v1
kind: Pod
metadata:
  name: steady
spec:
  nodeName: node-1
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", "echo started; exec sleep 1000"]
"#,
    );
    env.wait("steady", "--for=condition=Ready", "60s");
    let before = env.jsonpath("steady", "{.status.containerStatuses[0].containerID} {.status.containerStatuses[0].state.running.startedAt}");
    let mut env = env;
    env.server.kill9();
    env.server.spawn();
    let out = env.k.run(&["wait", "node/node-1", "--for=condition=Ready", "--timeout=60s"]).ok();
    assert!(out.stdout.contains("condition met"), "{}", out.stdout);
    env.wait("steady", "--for=condition=Ready", "30s");
    let after = env.jsonpath("steady", "{.status.containerStatuses[0].containerID} {.status.containerStatuses[0].state.running.startedAt}");
    assert_eq!(before, after, "the container was restarted by the node's restart");
    assert_eq!(env.jsonpath("steady", "{.status.containerStatuses[0].restartCount}"), "0");
    assert_eq!(env.k.run(&["logs", "steady"]).ok().stdout, "started\n");
    assert_eq!(env.k.run(&["exec", "steady", "--", "echo", "still here"]).ok().stdout, "still here\n");

    drop(registry);
    env.delete_all_and_check_clean();
}

#[test]
fn config_map_secret_and_downward_api_volumes() {
    let env = NodeEnv::start("volumes", &["--sync-frequency", "2s"]);
    let k = &env.k;
    k.run(&["create", "secret", "generic", "creds", "--from-literal=password=s3cret"]).ok();
    // The ConfigMap does not exist yet: the pod waits in ContainerCreating with FailedMount.
    env.create(
        "vols",
        r#"apiVersion: v1
kind: Pod
metadata:
  name: vols
  labels: {app: vols, tier: web}
spec:
  nodeName: node-1
  terminationGracePeriodSeconds: 1
  volumes:
  - name: config
    configMap: {name: settings}
  - name: secret
    secret: {secretName: creds, defaultMode: 0400}
  - name: info
    downwardAPI:
      items:
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
      - {path: name, fieldRef: {fieldPath: metadata.name}}
  - name: all
    projected:
      sources:
      - configMap: {name: settings, items: [{key: greeting, path: cm/greeting}]}
      - secret: {name: creds}
  containers:
  - name: main
    image: busybox:1.36
    command: ["sleep", "1000"]
    volumeMounts:
    - {name: config, mountPath: /etc/config}
    - {name: secret, mountPath: /etc/secret}
    - {name: info, mountPath: /etc/info}
    - {name: all, mountPath: /etc/all}
"#,
    );
    env.wait_row("vols", "ContainerCreating", Duration::from_secs(30));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let events = k.run(&["get", "events", "--field-selector", "involvedObject.name=vols,reason=FailedMount", "-o", "jsonpath={.items[*].message}"]).ok().stdout;
        if events.contains(r#"MountVolume.SetUp failed for volume "config" : configmap "settings" not found"#) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no FailedMount event: {events}");
        std::thread::sleep(Duration::from_millis(300));
    }
    k.run(&["create", "configmap", "settings", "--from-literal=greeting=hello"]).ok();
    env.wait("vols", "--for=condition=Ready", "60s");
    let read = |path: &str| k.run(&["exec", "vols", "--", "cat", path]).ok().stdout;
    assert_eq!(read("/etc/config/greeting"), "hello");
    assert_eq!(read("/etc/secret/password"), "s3cret");
    assert_eq!(read("/etc/info/labels"), "app=\"vols\"\ntier=\"web\"");
    assert_eq!(read("/etc/info/name"), "vols");
    assert_eq!(read("/etc/all/cm/greeting"), "hello");
    assert_eq!(read("/etc/all/password"), "s3cret");
    let mode = k.run(&["exec", "vols", "--", "stat", "-L", "-c", "%a", "/etc/secret/password"]);
    if mode.status.success() {
        assert_eq!(mode.stdout.trim(), "400");
    }
    // Read-only for the container.
    let out = k.run(&["exec", "vols", "--", "sh", "-c", "echo x > /etc/config/new"]);
    assert!(!out.status.success(), "wrote into a configMap volume");
    // An edited ConfigMap reaches the running container.
    k.run(&["patch", "configmap", "settings", "--type=merge", "-p", r#"{"data":{"greeting":"bonjour"}}"#]).ok();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while read("/etc/config/greeting") != "bonjour" {
        assert!(std::time::Instant::now() < deadline, "the edit never reached the volume");
        std::thread::sleep(Duration::from_millis(500));
    }
    env.delete_all_and_check_clean();
}
