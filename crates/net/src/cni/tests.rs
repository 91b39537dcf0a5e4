//! The runtime against scripted fake plugins: they record their environment and stdin and print
//! canned results, so chaining, caching and error handling are checked without touching the
//! network. The real plugins are exercised in tests/cni.rs.

use std::os::unix::fs::PermissionsExt;

use super::*;

struct Fixture {
    dir: tempfile::TempDir,
    runtime: CniRuntime,
}

impl Fixture {
    fn new(conflist: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["bin", "conf", "cache", "log"] {
            fs::create_dir(dir.path().join(sub)).expect("mkdir");
        }
        fs::write(dir.path().join("conf/10-test.conflist"), conflist).expect("conf");
        let runtime = CniRuntime::new(
            vec![dir.path().join("missing-dir"), dir.path().join("bin")],
            dir.path().join("conf"),
            dir.path().join("cache"),
        );
        Fixture { dir, runtime }
    }

    /// A plugin that logs `<seq>-<name>-<command>.{stdin,env}` and then runs `body`.
    fn plugin(&self, name: &str, body: &str) {
        let log = self.dir.path().join("log");
        let script = format!(
            "#!/bin/sh\nd='{}'\nn=$(ls \"$d\" | grep -c stdin)\ncat > \"$d/$n-{name}-$CNI_COMMAND.stdin\"\n\
             env | grep '^CNI_' | sort > \"$d/$n-{name}-$CNI_COMMAND.env\"\n{body}\n",
            log.display()
        );
        let path = self.dir.path().join("bin").join(name);
        fs::write(&path, script).expect("plugin");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    /// Logged invocations in order: (plugin, command, stdin JSON, env lines).
    fn calls(&self) -> Vec<(String, String, Value, String)> {
        let log = self.dir.path().join("log");
        let mut names: Vec<String> = fs::read_dir(&log)
            .expect("log")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".stdin"))
            .collect();
        names.sort_by_key(|n| n.split('-').next().and_then(|s| s.parse::<u32>().ok()));
        names
            .into_iter()
            .map(|n| {
                let stem = n.trim_end_matches(".stdin");
                let mut parts = stem.splitn(3, '-');
                let _seq = parts.next();
                let plugin = parts.next().unwrap_or_default().to_string();
                let command = parts.next().unwrap_or_default().to_string();
                let stdin = serde_json::from_slice(&fs::read(log.join(&n)).expect("stdin"))
                    .expect("stdin json");
                let env = fs::read_to_string(log.join(format!("{stem}.env"))).expect("env");
                (plugin, command, stdin, env)
            })
            .collect()
    }

    fn pod(&self, id: &str) -> PodAttachment {
        PodAttachment {
            container_id: id.into(),
            netns_path: self.dir.path().join("netns-does-not-matter"),
            ifname: "eth0".into(),
            args: PodAttachment::kubernetes_args("default", "web", "uid-1", id),
            port_mappings: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Tcp,
                host_ip: None,
            }],
        }
    }
}

const CHAIN: &str = r#"{"cniVersion":"1.0.0","name":"testnet","plugins":[
  {"type":"first","ipam":{"type":"x"}},
  {"type":"second","capabilities":{"portMappings":true,"bandwidth":true}},
  {"type":"third","capabilities":{"portMappings":false}}]}"#;

const RESULT_A: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"address":"10.9.0.2/24","gateway":"10.9.0.1","interface":0}]}"#;
const RESULT_B: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"address":"10.9.0.2/24","gateway":"10.9.0.1","interface":0}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["10.43.0.10"]}}"#;

fn echo_result(json: &str) -> String {
    format!("[ \"$CNI_COMMAND\" = ADD ] && printf '%s' '{json}'\nexit 0")
}

#[tokio::test]
async fn add_chains_results_and_del_runs_in_reverse_with_the_cache() {
    let f = Fixture::new(CHAIN);
    f.plugin("first", &echo_result(RESULT_A));
    f.plugin("second", &echo_result(RESULT_B));
    f.plugin("third", &echo_result(RESULT_B));
    let pod = f.pod("sandbox1");

    let result = f.runtime.add(&pod).await.expect("add");
    assert_eq!(
        result.pod_ips(),
        vec!["10.9.0.2".parse::<IpAddr>().expect("ip")]
    );
    assert_eq!(result.dns.nameservers, ["10.43.0.10"]);
    assert_eq!(
        f.runtime.cached_result(&pod).expect("cache"),
        Some(result.clone())
    );

    let calls = f.calls();
    let order: Vec<(&str, &str)> = calls
        .iter()
        .map(|(p, c, _, _)| (p.as_str(), c.as_str()))
        .collect();
    assert_eq!(
        order,
        [("first", "ADD"), ("second", "ADD"), ("third", "ADD")]
    );
    let (_, _, first_in, env) = &calls[0];
    // Every plugin gets the list's name and version; the first has no prevResult.
    assert_eq!(first_in["name"], "testnet");
    assert_eq!(first_in["cniVersion"], "1.0.0");
    assert!(first_in.get("prevResult").is_none());
    assert!(
        first_in.get("runtimeConfig").is_none(),
        "first declares no capabilities"
    );
    assert!(env.contains("CNI_COMMAND=ADD"));
    assert!(env.contains("CNI_CONTAINERID=sandbox1"));
    assert!(env.contains("CNI_IFNAME=eth0"));
    assert!(env.contains(&format!("CNI_NETNS={}", pod.netns_path.display())));
    assert!(env.contains(
        "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=sandbox1;K8S_POD_UID=uid-1"
    ));
    assert!(env.contains(&format!(
        "CNI_PATH={}:{}",
        f.dir.path().join("missing-dir").display(),
        f.dir.path().join("bin").display()
    )));
    // The second gets the first's result and only the capabilities it declared and we have.
    let (_, _, second_in, _) = &calls[1];
    assert_eq!(
        second_in["prevResult"],
        serde_json::from_str::<Value>(RESULT_A).expect("json")
    );
    assert_eq!(
        second_in["runtimeConfig"],
        serde_json::json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
    );
    // A capability set to false is not injected.
    assert!(calls[2].2.get("runtimeConfig").is_none());

    // DEL: reverse order, the cached final result as prevResult, a gone netns becomes "".
    f.runtime.del(&pod).await.expect("del");
    let calls = f.calls();
    let del: Vec<&(String, String, Value, String)> =
        calls.iter().filter(|c| c.1 == "DEL").collect();
    let order: Vec<&str> = del.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(order, ["third", "second", "first"]);
    for (_, _, stdin, env) in &del {
        assert_eq!(
            stdin["prevResult"],
            serde_json::from_str::<Value>(RESULT_B).expect("json")
        );
        assert!(env.lines().any(|l| l == "CNI_NETNS="), "{env}");
    }
    assert_eq!(f.runtime.cached_result(&pod).expect("cache"), None);

    // A second DEL still runs the chain (from the current config) and succeeds.
    f.runtime.del(&pod).await.expect("del again");
    let after = f.calls();
    assert_eq!(after.iter().filter(|c| c.1 == "DEL").count(), 6);
    assert!(after.last().expect("call").2.get("prevResult").is_none());
}

#[tokio::test]
async fn del_uses_the_config_add_used_even_after_it_changed() {
    let f = Fixture::new(CHAIN);
    for p in ["first", "second", "third"] {
        f.plugin(p, &echo_result(RESULT_A));
    }
    let pod = f.pod("sandbox2");
    f.runtime.add(&pod).await.expect("add");
    fs::write(
        f.dir.path().join("conf/10-test.conflist"),
        r#"{"cniVersion":"1.0.0","name":"othernet","plugins":[{"type":"other"}]}"#,
    )
    .expect("swap config");
    f.runtime.del(&pod).await.expect("del");
    let del: Vec<String> = f
        .calls()
        .into_iter()
        .filter(|c| c.1 == "DEL")
        .map(|c| c.0)
        .collect();
    assert_eq!(del, ["third", "second", "first"]);
}

#[tokio::test]
async fn check_runs_in_order_with_the_cached_result() {
    let f = Fixture::new(CHAIN);
    for p in ["first", "second", "third"] {
        f.plugin(p, &echo_result(RESULT_A));
    }
    let pod = f.pod("sandbox3");
    assert!(matches!(
        f.runtime.check(&pod).await,
        Err(CniError::NoCachedResult { .. })
    ));
    f.runtime.add(&pod).await.expect("add");
    f.runtime.check(&pod).await.expect("check");
    let check: Vec<(String, Value)> = f
        .calls()
        .into_iter()
        .filter(|c| c.1 == "CHECK")
        .map(|c| (c.0, c.2))
        .collect();
    let order: Vec<&str> = check.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(order, ["first", "second", "third"]);
    assert!(
        check
            .iter()
            .all(|c| c.1["prevResult"]["ips"][0]["address"] == "10.9.0.2/24")
    );
}

#[tokio::test]
async fn plugin_errors_are_parsed_and_a_failed_add_is_undone() {
    let f = Fixture::new(CHAIN);
    f.plugin("first", &echo_result(RESULT_A));
    f.plugin(
        "second",
        r#"[ "$CNI_COMMAND" = ADD ] || exit 0
printf '%s' '{"cniVersion":"1.0.0","code":11,"msg":"iptables is locked","details":"try later"}'
exit 1"#,
    );
    f.plugin("third", "exit 0");
    let pod = f.pod("sandbox4");
    let err = f.runtime.add(&pod).await.expect_err("add fails");
    match &err {
        CniError::Plugin {
            plugin,
            command,
            code,
            msg,
            details,
        } => {
            assert_eq!(plugin, "second");
            assert_eq!(*command, Command::Add);
            assert_eq!(*code, 11);
            assert_eq!(msg, "iptables is locked");
            assert_eq!(details, "try later");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.is_retryable());
    assert!(err.to_string().contains("second"));
    // Rolled back: DEL of the whole chain in reverse, no prevResult, nothing cached.
    let del: Vec<String> = f
        .calls()
        .into_iter()
        .filter(|c| c.1 == "DEL")
        .map(|c| c.0)
        .collect();
    assert_eq!(del, ["third", "second", "first"]);
    assert_eq!(f.runtime.cached_result(&pod).expect("cache"), None);
}

#[tokio::test]
async fn non_json_failures_missing_plugins_and_timeouts_are_clear() {
    let f = Fixture::new(CHAIN);
    f.plugin("first", "echo 'boom: no such bridge' >&2\nexit 3");
    let pod = f.pod("sandbox5");
    match f.runtime.add(&pod).await {
        Err(CniError::PluginFailed { plugin, output, .. }) => {
            assert_eq!(plugin, "first");
            assert_eq!(output, "boom: no such bridge");
        }
        other => panic!("unexpected {other:?}"),
    }

    let f = Fixture::new(CHAIN);
    f.plugin("first", &echo_result(RESULT_A));
    let err = f
        .runtime
        .add(&f.pod("sandbox6"))
        .await
        .expect_err("missing");
    assert!(matches!(&err, CniError::PluginNotFound { plugin, .. } if plugin == "second"));
    assert!(
        err.to_string()
            .contains("install containernetworking-plugins")
    );
    assert!(!err.is_retryable());

    let f = Fixture::new(CHAIN);
    f.plugin("first", "exec sleep 30");
    let runtime = f
        .runtime
        .clone()
        .with_plugin_timeout(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let err = runtime.add(&f.pod("sandbox7")).await.expect_err("timeout");
    assert!(
        matches!(&err, CniError::Timeout { plugin, .. } if plugin == "first"),
        "{err}"
    );
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(10));

    let f = Fixture::new(CHAIN);
    f.plugin("first", "printf 'not json'; exit 0");
    assert!(matches!(
        f.runtime.add(&f.pod("sandbox8")).await,
        Err(CniError::InvalidResult { .. })
    ));
}

#[tokio::test]
async fn attachments_are_validated() {
    let f = Fixture::new(CHAIN);
    let mut pod = f.pod("ok");
    pod.container_id = "../etc".into();
    assert!(matches!(
        f.runtime.add(&pod).await,
        Err(CniError::InvalidAttachment {
            field: "container_id",
            ..
        })
    ));
    let mut pod = f.pod("ok");
    pod.ifname = "a-very-long-interface".into();
    assert!(matches!(
        f.runtime.del(&pod).await,
        Err(CniError::InvalidAttachment {
            field: "ifname",
            ..
        })
    ));
    let mut pod = f.pod("ok");
    pod.args.push(("X".into(), "a;b".into()));
    assert!(matches!(
        f.runtime.check(&pod).await,
        Err(CniError::InvalidAttachment { field: "args", .. })
    ));
}

#[tokio::test]
async fn cache_lookup_is_not_fooled_by_similar_ids() {
    let f = Fixture::new(CHAIN);
    for p in ["first", "second", "third"] {
        f.plugin(p, &echo_result(RESULT_A));
    }
    // "testnet-x-abc-eth0" ends like "...-abc-eth0"; after a config swap, "abc" must not find it.
    f.runtime.add(&f.pod("x-abc")).await.expect("add");
    fs::write(
        f.dir.path().join("conf/10-test.conflist"),
        r#"{"cniVersion":"1.0.0","name":"testnet-x","plugins":[{"type":"first"}]}"#,
    )
    .expect("swap");
    assert_eq!(
        f.runtime.cached_result(&f.pod("abc")).expect("lookup"),
        None
    );
    assert!(
        f.runtime
            .cached_result(&f.pod("x-abc"))
            .expect("lookup")
            .is_some()
    );
}

#[tokio::test]
async fn fake_cni_hands_out_addresses_and_records() {
    let fake = FakeCni::new();
    let pod = |id: &str| PodAttachment {
        container_id: id.into(),
        netns_path: PathBuf::from(format!("/run/netns/{id}")),
        ifname: "eth0".into(),
        args: Vec::new(),
        port_mappings: Vec::new(),
    };
    let a = PodNetwork::add(&fake, &pod("a")).await.expect("add a");
    let b = PodNetwork::add(&fake, &pod("b")).await.expect("add b");
    assert_eq!(
        a.pod_ips(),
        vec!["10.42.0.2".parse::<IpAddr>().expect("ip")]
    );
    assert_eq!(
        b.pod_ips(),
        vec!["10.42.0.3".parse::<IpAddr>().expect("ip")]
    );
    PodNetwork::check(&fake, &pod("a")).await.expect("check");
    PodNetwork::del(&fake, &pod("a")).await.expect("del");
    assert!(PodNetwork::check(&fake, &pod("a")).await.is_err());
    assert_eq!(fake.attached(), ["b"]);
    fake.fail_adds(true);
    assert!(PodNetwork::add(&fake, &pod("c")).await.is_err());
    let commands: Vec<Command> = fake.calls().iter().map(|c| c.command).collect();
    assert_eq!(
        commands,
        [
            Command::Add,
            Command::Add,
            Command::Check,
            Command::Del,
            Command::Check,
            Command::Add
        ]
    );
}
