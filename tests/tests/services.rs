//! Issue #5 end to end: Services on `skiff server` with its built-in node in the test's own
//! network namespace — EndpointSlices, the nftables dataplane, cluster DNS, NodePort and
//! LoadBalancer — with real busybox httpd backends and a client pod, driven by kubectl.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use skiff_e2e::NODE_IP;
use skiff_e2e::node_env::NodeEnv;

/// The hostnames that answered `count` requests to `url` from the client pod.
fn answers(env: &NodeEnv, url: &str, count: usize) -> Vec<String> {
    let script = format!("for i in $(seq {count}); do timeout 3 wget -qO- {url} || echo FAILED; done");
    let out = env.k.run(&["exec", "client", "--", "sh", "-c", &script]).ok();
    out.stdout.lines().map(str::to_string).collect()
}

fn wait_for<F: FnMut() -> bool>(what: &str, within: Duration, mut ok: F) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn services_route_by_cluster_ip_dns_node_port_and_load_balancer() {
    let env = NodeEnv::start("svc", &[]);
    let k = &env.k;
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
      containers:
      - name: httpd
        image: busybox:1.36
        command: ["sh", "-c", "mkdir -p /tmp/www && hostname > /tmp/www/index.html && hostname > /tmp/www/web && touch /tmp/ready && exec httpd -f -p 8080 -h /tmp/www"]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          exec: {command: ["cat", "/tmp/ready"]}
          periodSeconds: 1
"#,
    );
    env.create(
        "client",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: client\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: busybox:1.36\n    command: [\"sleep\", \"1000\"]\n",
    );
    let out = k.run(&["rollout", "status", "deployment/web", "--timeout=120s"]).ok();
    assert!(out.stdout.contains("successfully rolled out"), "{}", out.stdout);
    env.wait("client", "--for=condition=Ready", "60s");
    let out = k.run(&["expose", "deployment", "web", "--port=80", "--target-port=http"]).ok();
    assert_eq!(out.stdout.trim(), "service/web exposed");
    let cluster_ip = k.run(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]).ok().stdout;
    assert!(cluster_ip.starts_with("10.43."), "{cluster_ip}");
    wait_for("two ready endpoints", Duration::from_secs(30), || {
        k.run(&["get", "endpointslices", "-l", "kubernetes.io/service-name=web", "-o", "jsonpath={.items[*].endpoints[?(@.conditions.ready==true)].addresses[0]}"])
            .stdout
            .split_whitespace()
            .count()
            == 2
    });
    let pods: BTreeSet<String> = k
        .run(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].metadata.name}"])
        .ok()
        .stdout
        .split_whitespace()
        .map(str::to_string)
        .collect();

    // By ClusterIP and by DNS name, spread over both backends (once the node has programmed
    // the Service: kube-proxy-like, at most one sync per second).
    wait_for("the ClusterIP to answer", Duration::from_secs(15), || answers(&env, &format!("http://{cluster_ip}/"), 1).iter().all(|h| pods.contains(h)));
    let by_ip = answers(&env, &format!("http://{cluster_ip}/"), 30);
    let seen: BTreeSet<String> = by_ip.iter().cloned().collect();
    assert_eq!(seen, pods, "{by_ip:?}");
    let by_name = answers(&env, "http://web.default.svc.cluster.local/", 20);
    assert!(
        by_name.iter().all(|h| pods.contains(h)),
        "{by_name:?}\nresolv.conf:\n{}\nnslookup:\n{}\nkube-dns:\n{}\nlog:\n{}",
        k.run(&["exec", "client", "--", "cat", "/etc/resolv.conf"]).stdout,
        k.run(&["exec", "client", "--", "nslookup", "web.default.svc.cluster.local"]).stdout,
        k.run(&["get", "svc,endpointslices", "-n", "kube-system", "-o", "wide"]).stdout,
        env.server.log().lines().filter(|l| l.contains("dns") || l.contains("DNS")).collect::<Vec<_>>().join("\n")
    );
    let short = answers(&env, "http://web/", 4);
    assert!(short.iter().all(|h| pods.contains(h)), "search path: {short:?}");
    let out = k.run(&["exec", "client", "--", "nslookup", "web.default.svc.cluster.local"]).ok();
    assert!(out.stdout.contains(&cluster_ip), "{}", out.stdout);

    // A pod failing readiness gets no traffic.
    let first = pods.iter().next().cloned().unwrap_or_default();
    k.run(&["exec", &first, "--", "rm", "/tmp/ready"]).ok();
    wait_for("one ready endpoint", Duration::from_secs(30), || {
        k.run(&["get", "endpointslices", "-l", "kubernetes.io/service-name=web", "-o", "jsonpath={.items[*].endpoints[?(@.conditions.ready==true)].addresses[0]}"])
            .stdout
            .split_whitespace()
            .count()
            == 1
    });
    std::thread::sleep(Duration::from_millis(1500));
    let after = answers(&env, &format!("http://{cluster_ip}/"), 20);
    assert!(after.iter().all(|h| *h != first && pods.contains(h)), "{after:?}");
    k.run(&["exec", &first, "--", "touch", "/tmp/ready"]).ok();

    // Headless: the name resolves to every ready pod.
    env.create(
        "web-headless",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web-headless\nspec:\n  clusterIP: None\n  selector: {app: web}\n  ports: [{name: http, port: 8080}]\n",
    );
    let pod_ips: BTreeSet<String> = k.run(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].status.podIP}"]).ok().stdout.split_whitespace().map(str::to_string).collect();
    wait_for("headless records", Duration::from_secs(30), || {
        let out = k.run(&["exec", "client", "--", "nslookup", "web-headless.default.svc.cluster.local"]).stdout;
        pod_ips.iter().all(|ip| out.contains(ip.as_str()))
    });

    // SRV for a named port: one target per endpoint, with the port.
    let out = k.run(&["exec", "client", "--", "nslookup", "-type=srv", "_http._tcp.web-headless.default.svc.cluster.local"]).ok();
    assert!(out.stdout.contains("8080") && out.stdout.contains("web-headless.default.svc.cluster.local"), "{}", out.stdout);

    // No endpoints: refused at once, not a timeout.
    k.run(&["create", "service", "clusterip", "nobody", "--tcp=80:80"]).ok();
    let empty_ip = k.run(&["get", "svc", "nobody", "-o", "jsonpath={.spec.clusterIP}"]).ok().stdout;
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    let out = k.run(&["exec", "client", "--", "sh", "-c", &format!("timeout 5 wget -qO- http://{empty_ip}/ 2>&1; echo rc=$?")]).ok();
    assert!(started.elapsed() < Duration::from_secs(4), "took {:?}: {}", started.elapsed(), out.stdout);
    assert!(out.stdout.to_lowercase().contains("refused"), "{}", out.stdout);

    // NodePort on the node's address, from the node itself.
    k.run(&["patch", "svc", "web", "--type=merge", "-p", r#"{"spec":{"type":"NodePort"}}"#]).ok();
    let node_port = k.run(&["get", "svc", "web", "-o", "jsonpath={.spec.ports[0].nodePort}"]).ok().stdout;
    assert!(node_port.parse::<u16>().is_ok_and(|p| (30000..=32767).contains(&p)), "{node_port}");
    let curl = |url: &str| {
        env.netns().command("curl").args(["-sS", "--max-time", "3", url]).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
    };
    wait_for("the NodePort", Duration::from_secs(15), || pods.contains(&curl(&format!("http://{NODE_IP}:{node_port}/"))));

    // LoadBalancer: the node's address in the status, and traffic accepted there.
    let out = k.run(&["expose", "deployment", "web", "--name=web-lb", "--type=LoadBalancer", "--port=8081", "--target-port=8080"]).ok();
    assert_eq!(out.stdout.trim(), "service/web-lb exposed");
    wait_for("the load balancer status", Duration::from_secs(30), || {
        k.run(&["get", "svc", "web-lb", "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}"]).stdout == NODE_IP
    });
    wait_for("the LoadBalancer address", Duration::from_secs(15), || pods.contains(&curl(&format!("http://{NODE_IP}:8081/"))));

    // Ingress: two hosts and two paths, each routed to the right Service, on the node's port 80.
    k.run(&["create", "deployment", "api", "--image=busybox:1.36", "--", "sh", "-c", "mkdir -p /tmp/www/api && echo api > /tmp/www/index.html && echo api > /tmp/www/api/index.html && exec httpd -f -p 8080 -h /tmp/www"]).ok();
    k.run(&["expose", "deployment", "api", "--port=80", "--target-port=8080"]).ok();
    k.run(&["rollout", "status", "deployment/api", "--timeout=120s"]).ok();
    env.create(
        "ingress",
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: sites
spec:
  rules:
  - host: a.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
  - host: b.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
      - {path: /web, pathType: Exact, backend: {service: {name: web, port: {number: 80}}}}
"#,
    );
    let via_ingress = |host: &str, path: &str| {
        env.netns()
            .command("curl")
            .args(["-sS", "--max-time", "3", "-H", &format!("Host: {host}"), &format!("http://{NODE_IP}{path}")])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    wait_for("the Ingress", Duration::from_secs(30), || pods.contains(&via_ingress("a.example.com", "/")));
    assert_eq!(via_ingress("a.example.com", "/api/"), "api");
    assert_eq!(via_ingress("b.example.com", "/"), "api");
    assert!(pods.contains(&via_ingress("b.example.com", "/web")), "b.example.com/web");
    assert!(via_ingress("c.example.com", "/").contains("no Ingress rule matches"), "unknown host");
    wait_for("the Ingress status", Duration::from_secs(30), || {
        k.run(&["get", "ingress", "sites", "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}"]).stdout == NODE_IP
    });
    let out = k.run(&["get", "ingressclass"]).ok();
    assert!(out.stdout.contains("skiff"), "{}", out.stdout);
    k.run(&["delete", "ingress", "sites"]).ok();
    k.run(&["delete", "deployment", "api"]).ok();
    k.run(&["delete", "svc", "api"]).ok();

    // Scaling down: the remaining pod answers everything.
    k.run(&["scale", "deployment/web", "--replicas=1"]).ok();
    wait_for("one endpoint", Duration::from_secs(60), || {
        k.run(&["get", "endpointslices", "-l", "kubernetes.io/service-name=web", "-o", "jsonpath={.items[*].endpoints[*].addresses[0]}"])
            .stdout
            .split_whitespace()
            .count()
            == 1
    });
    std::thread::sleep(Duration::from_millis(1500));
    let left = answers(&env, &format!("http://{cluster_ip}/"), 10);
    let distinct: BTreeSet<&String> = left.iter().collect();
    assert_eq!(distinct.len(), 1, "{left:?}");
    assert!(!left.iter().any(|h| h == "FAILED"), "{left:?}");

    k.run(&["delete", "deployment", "web"]).ok();
    k.run(&["delete", "svc", "web", "web-lb", "web-headless", "nobody"]).ok();
    env.delete_all_and_check_clean();
}
