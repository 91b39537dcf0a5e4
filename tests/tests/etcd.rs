//! `skiff server --datastore-endpoint` on a real etcd: the same kubectl flows work, and two
//! servers sharing one etcd see each other's writes (list and watch).

use std::time::Duration;

use skiff_e2e::{Etcd, Server, expect_line};

#[test]
fn two_servers_share_one_etcd() {
    let etcd = Etcd::start();
    let a = Server::start_with(&["--datastore-endpoint", &etcd.endpoint]);
    let b = Server::start_with(&["--datastore-endpoint", &etcd.endpoint]);
    let (ka, kb) = (a.kubectl("1.33"), b.kubectl("1.32"));

    // B watches while A writes.
    let (mut watch, rx) = kb.spawn_lines(&["get", "configmaps", "-w", "--output-watch-events"]);
    std::thread::sleep(Duration::from_millis(700));
    let out = ka.run(&["create", "deployment", "web", "--image=nginx:1.25", "--replicas=2"]).ok();
    assert_eq!(out.stdout.trim(), "deployment.apps/web created");
    ka.run(&["create", "configmap", "shared", "--from-literal=k=v"]).ok();
    expect_line(&rx, &["ADDED", "shared"], Duration::from_secs(10));
    let out = kb.run(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]).ok();
    assert_eq!(out.stdout, "2");
    kb.run(&["scale", "deploy", "web", "--replicas=4"]).ok();
    let out = ka.run(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas} {.metadata.generation}"]).ok();
    assert_eq!(out.stdout, "4 2");
    ka.run(&["delete", "configmap", "shared"]).ok();
    expect_line(&rx, &["DELETED", "shared"], Duration::from_secs(10));
    let _ = watch.kill();
    let _ = watch.wait();

    // The system namespaces exist once, whichever server created them.
    let out = kb.run(&["get", "ns", "-o", "name"]).ok();
    assert_eq!(out.stdout.lines().filter(|l| *l == "namespace/default").count(), 1);
}

#[test]
fn etcd_outage_is_a_503_service_unavailable() {
    let etcd = Etcd::start();
    let s = Server::start_with(&["--datastore-endpoint", &etcd.endpoint]);
    let k = s.kubectl("1.33");
    k.run(&["create", "configmap", "before", "--from-literal=a=1"]).ok();
    drop(etcd);
    let out = k.run(&["get", "configmap", "before", "--request-timeout=30s"]).fail();
    assert!(out.stderr.contains("ServiceUnavailable") || out.stderr.contains("unavailable"), "{}", out.stderr);
}
