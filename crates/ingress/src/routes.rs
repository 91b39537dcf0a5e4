//! The routing table: every served Ingress, its Services and their EndpointSlices flattened into
//! host → path → backend, rebuilt whole on any change and swapped in behind an `Arc` (requests in
//! flight keep the table they started with). Pure: no I/O.
//!
//! Matching follows the networking.k8s.io/v1 API documentation (and ingress-nginx where the API
//! leaves room):
//! * host: an exact host rule beats a wildcard `*.example.com`, which matches exactly one extra
//!   leading DNS label (`a.example.com`, not `example.com` nor `a.b.example.com`); rules without
//!   a host apply to every host that has no rule of its own.
//! * path: `Exact` compares the whole path; `Prefix` compares `/`-separated elements (`/foo`
//!   matches `/foo` and `/foo/bar`, not `/foobar`; a trailing `/` is ignored);
//!   `ImplementationSpecific` is treated as `Prefix`. The longest path wins; at equal length
//!   `Exact` beats `Prefix`; at a full tie the oldest Ingress wins (ingress-nginx sorts by
//!   creationTimestamp).
//! * fallback: a host with rules but no matching path goes to the `defaultBackend` of an Ingress
//!   that defines that host, then to the cluster-wide default (the oldest Ingress with a
//!   `defaultBackend`); otherwise there is no route (404).

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

/// Per-Ingress switch for the HTTP → HTTPS redirect of hosts that have TLS (ingress-nginx's
/// name; default "true").
pub const SSL_REDIRECT_ANNOTATION: &str = "nginx.ingress.kubernetes.io/ssl-redirect";
/// Redirects to HTTPS even when the host has no TLS section (e.g. TLS ends in front of Skiff).
pub const FORCE_SSL_REDIRECT_ANNOTATION: &str = "nginx.ingress.kubernetes.io/force-ssl-redirect";

/// The EndpointSlice label naming the Service a slice belongs to.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathKind {
    Exact,
    Prefix,
}

/// Where a backend's traffic goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// Ready endpoint addresses with the resolved target port, sorted, deduplicated.
    Endpoints(Vec<SocketAddr>),
    /// An `ExternalName` Service: the name is resolved when connecting.
    ExternalName { host: String, port: u16 },
    /// Nothing to send to; the message is the 503 body.
    Unavailable(String),
}

/// One `service.name` + `service.port` (or resource) backend, shared by every path using it so
/// round-robin spreads over all of them.
#[derive(Debug)]
pub(crate) struct Backend {
    /// `namespace/name` of the Service, for logs and error bodies.
    pub(crate) service: String,
    pub(crate) target: Target,
    next: AtomicUsize,
}

impl Backend {
    fn new(service: String, target: Target) -> Self {
        Backend {
            service,
            target,
            next: AtomicUsize::new(0),
        }
    }

    /// Where round-robin starts for the next request.
    pub(crate) fn next_index(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct PathRule {
    /// For `Prefix`, without trailing slashes (`/` becomes empty).
    path: String,
    kind: PathKind,
    backend: Arc<Backend>,
    redirect_https: bool,
}

impl PathRule {
    fn matches(&self, request_path: &str) -> bool {
        match self.kind {
            PathKind::Exact => request_path == self.path,
            PathKind::Prefix => {
                self.path.is_empty()
                    || (request_path.starts_with(self.path.as_str())
                        && matches!(
                            request_path.as_bytes().get(self.path.len()),
                            None | Some(b'/')
                        ))
            }
        }
    }

    fn precedence_len(&self) -> usize {
        self.path.len()
    }
}

#[derive(Debug, Default)]
struct HostRoutes {
    paths: Vec<PathRule>,
    default_backend: Option<Arc<Backend>>,
    /// The host has a loaded certificate, so its default route redirects too.
    tls: bool,
    /// Set when an Ingress for this host disables the redirect.
    no_redirect: bool,
}

impl HostRoutes {
    fn sort(&mut self) {
        // Stable: among equals the oldest Ingress, inserted first, stays first.
        self.paths.sort_by(|a, b| {
            b.precedence_len()
                .cmp(&a.precedence_len())
                .then_with(|| (a.kind == PathKind::Prefix).cmp(&(b.kind == PathKind::Prefix)))
        });
    }
}

/// The outcome of matching a request.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) backend: Arc<Backend>,
    /// Plain-HTTP requests on this route get a 308 to HTTPS.
    pub(crate) redirect_https: bool,
}

/// Host → path → backend for all served Ingresses.
#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    exact: HashMap<String, HostRoutes>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, HostRoutes>,
    /// Rules without a host, and the cluster-wide default backend.
    catch_all: HostRoutes,
}

/// What the table is built from. `ingresses` are the served ones, oldest first.
pub(crate) struct RouteInputs<'a> {
    pub(crate) ingresses: &'a [Arc<Ingress>],
    pub(crate) services: &'a [Arc<Service>],
    pub(crate) slices: &'a [Arc<EndpointSlice>],
    /// Hosts (exact or `*.` wildcard, as written in `spec.tls[].hosts`) with a loaded
    /// certificate.
    pub(crate) tls_hosts: &'a BTreeSet<String>,
}

impl RouteTable {
    pub(crate) fn build(inputs: &RouteInputs<'_>) -> RouteTable {
        let resolver = BackendResolver::new(inputs.services, inputs.slices);
        let mut table = RouteTable::default();
        for ingress in inputs.ingresses {
            table.add_ingress(ingress, &resolver, inputs.tls_hosts);
        }
        for host in table.exact.values_mut() {
            host.sort();
        }
        for host in table.wildcard.values_mut() {
            host.sort();
        }
        table.catch_all.sort();
        table
    }

    fn add_ingress(
        &mut self,
        ingress: &Ingress,
        resolver: &BackendResolver<'_>,
        tls_hosts: &BTreeSet<String>,
    ) {
        let Some(spec) = &ingress.spec else { return };
        let namespace = ingress.metadata.namespace.as_deref().unwrap_or("default");
        let annotations = ingress.metadata.annotations.as_ref();
        let annotation = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);
        let ssl_redirect = annotation(SSL_REDIRECT_ANNOTATION) != Some("false");
        let force_redirect = annotation(FORCE_SSL_REDIRECT_ANNOTATION) == Some("true");

        let default_backend = spec
            .default_backend
            .as_ref()
            .map(|b| resolver.resolve(namespace, b));
        if self.catch_all.default_backend.is_none() {
            self.catch_all.default_backend = default_backend.clone();
        }

        for rule in spec.rules.iter().flatten() {
            let host = rule
                .host
                .as_deref()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
                .filter(|h| !h.is_empty());
            let tls = host.as_ref().is_some_and(|h| tls_hosts.contains(h));
            let routes = match &host {
                None => &mut self.catch_all,
                Some(h) => match h.strip_prefix("*.") {
                    Some(suffix) => self.wildcard.entry(suffix.to_string()).or_default(),
                    None => self.exact.entry(h.clone()).or_default(),
                },
            };
            routes.tls |= tls;
            routes.no_redirect |= !ssl_redirect;
            if host.is_some() && routes.default_backend.is_none() {
                routes.default_backend = default_backend.clone();
            }
            let Some(http) = &rule.http else { continue };
            for path in &http.paths {
                let kind = match path.path_type.as_str() {
                    "Exact" => PathKind::Exact,
                    // "Prefix", and "ImplementationSpecific" which Skiff implements as Prefix.
                    _ => PathKind::Prefix,
                };
                let raw = path.path.as_deref().unwrap_or("/");
                let normalized = match kind {
                    PathKind::Exact => raw.to_string(),
                    PathKind::Prefix => raw.trim_end_matches('/').to_string(),
                };
                routes.paths.push(PathRule {
                    path: normalized,
                    kind,
                    backend: resolver.resolve(namespace, &path.backend),
                    redirect_https: force_redirect || (tls && ssl_redirect),
                });
            }
        }
    }

    /// Matches a request. `host` is lowercase without port; `path` is the URI path.
    pub(crate) fn route(&self, host: &str, path: &str) -> Option<Route> {
        let wildcard = host
            .split_once('.')
            .and_then(|(_, rest)| self.wildcard.get(rest));
        let server = self.exact.get(host).or(wildcard);
        let routes = server.unwrap_or(&self.catch_all);
        if let Some(rule) = routes.paths.iter().find(|r| r.matches(path)) {
            return Some(Route {
                backend: rule.backend.clone(),
                redirect_https: rule.redirect_https,
            });
        }
        let fallback = routes
            .default_backend
            .as_ref()
            .or(self.catch_all.default_backend.as_ref())?;
        Some(Route {
            backend: fallback.clone(),
            redirect_https: routes.tls && !routes.no_redirect,
        })
    }
}

/// Resolves Ingress backends to endpoint addresses, deduplicating identical backends.
struct BackendResolver<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    resolved: std::cell::RefCell<HashMap<String, Arc<Backend>>>,
}

impl<'a> BackendResolver<'a> {
    fn new(services: &'a [Arc<Service>], slices: &'a [Arc<EndpointSlice>]) -> Self {
        let services = services
            .iter()
            .filter_map(|s| {
                Some((
                    (
                        s.metadata.namespace.as_deref()?,
                        s.metadata.name.as_deref()?,
                    ),
                    s.as_ref(),
                ))
            })
            .collect();
        let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for slice in slices {
            let owner = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL));
            if let (Some(ns), Some(svc)) = (slice.metadata.namespace.as_deref(), owner) {
                by_service
                    .entry((ns, svc.as_str()))
                    .or_default()
                    .push(slice);
            }
        }
        BackendResolver {
            services,
            slices: by_service,
            resolved: Default::default(),
        }
    }

    fn resolve(&self, namespace: &str, backend: &IngressBackend) -> Arc<Backend> {
        let Some(svc) = &backend.service else {
            let what = backend
                .resource
                .as_ref()
                .map(|r| format!("{} {namespace}/{}", r.kind, r.name))
                .unwrap_or_else(|| "an empty backend".to_string());
            return Arc::new(Backend::new(
                what.clone(),
                Target::Unavailable(format!(
                    "backend {what} is not a Service; Skiff's ingress proxies only to Services"
                )),
            ));
        };
        let port = svc.port.as_ref();
        let port_key = match (
            port.and_then(|p| p.number),
            port.and_then(|p| p.name.as_deref()),
        ) {
            (Some(n), _) => n.to_string(),
            (None, Some(name)) => name.to_string(),
            (None, None) => String::new(),
        };
        let key = format!("{namespace}/{}:{port_key}", svc.name);
        if let Some(b) = self.resolved.borrow().get(&key) {
            return b.clone();
        }
        let service = format!("{namespace}/{}", svc.name);
        let target = self.target(
            namespace,
            &svc.name,
            port.and_then(|p| p.number),
            port.and_then(|p| p.name.as_deref()),
        );
        let backend = Arc::new(Backend::new(service, target));
        self.resolved.borrow_mut().insert(key, backend.clone());
        backend
    }

    fn target(
        &self,
        namespace: &str,
        name: &str,
        number: Option<i32>,
        port_name: Option<&str>,
    ) -> Target {
        let Some(service) = self.services.get(&(namespace, name)) else {
            return Target::Unavailable(format!("service {namespace}/{name} does not exist"));
        };
        let spec = service.spec.as_ref();
        let ports: &[ServicePort] = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
        let service_port = ports.iter().find(|p| match (number, port_name) {
            (Some(n), _) => p.port == n,
            (None, Some(want)) => p.name.as_deref() == Some(want),
            (None, None) => false,
        });

        if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
            let host = spec
                .and_then(|s| s.external_name.clone())
                .unwrap_or_default();
            let port = number.or(service_port.map(|p| p.port));
            return match port.and_then(|p| u16::try_from(p).ok()) {
                Some(port) if !host.is_empty() => Target::ExternalName { host, port },
                _ => Target::Unavailable(format!(
                    "ExternalName service {namespace}/{name} needs spec.externalName and a port number"
                )),
            };
        }

        let Some(service_port) = service_port else {
            let wanted = match (number, port_name) {
                (Some(n), _) => format!("port {n}"),
                (None, Some(p)) => format!("port named {p:?}"),
                (None, None) => "a port in the Ingress backend".to_string(),
            };
            return Target::Unavailable(format!("service {namespace}/{name} has no {wanted}"));
        };
        // EndpointSlice ports carry the Service port's name ("" when unnamed) and the resolved
        // target port, per endpoint group.
        let want_name = service_port.name.as_deref().unwrap_or("");
        let want_protocol = service_port.protocol.as_deref().unwrap_or("TCP");
        let mut addrs = Vec::new();
        for slice in self.slices.get(&(namespace, name)).into_iter().flatten() {
            if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
                continue;
            }
            let port = slice.ports.iter().flatten().find(|p| {
                p.name.as_deref().unwrap_or("") == want_name
                    && p.protocol.as_deref().unwrap_or("TCP") == want_protocol
            });
            let Some(port) = port
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok())
            else {
                continue;
            };
            for endpoint in &slice.endpoints {
                // Unknown readiness is to be read as ready (EndpointConditions.ready docs).
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true);
                if !ready {
                    continue;
                }
                // Consumers use the first address (the others are alternatives for one pod).
                if let Some(ip) = endpoint
                    .addresses
                    .first()
                    .and_then(|a| a.parse::<IpAddr>().ok())
                {
                    addrs.push(SocketAddr::new(ip, port));
                }
            }
        }
        addrs.sort();
        addrs.dedup();
        if addrs.is_empty() {
            Target::Unavailable(format!("no ready endpoints for service {namespace}/{name}"))
        } else {
            Target::Endpoints(addrs)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::ServiceSpec;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::api::networking::v1::{
        HTTPIngressPath, HTTPIngressRuleValue, IngressRule, IngressServiceBackend, IngressSpec,
        ServiceBackendPort,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn backend(service: &str) -> IngressBackend {
        IngressBackend {
            service: Some(IngressServiceBackend {
                name: service.to_string(),
                port: Some(ServiceBackendPort {
                    number: Some(80),
                    name: None,
                }),
            }),
            resource: None,
        }
    }

    /// (path, pathType, service).
    type PathSpec<'a> = (&'a str, &'a str, &'a str);

    /// `rules`: (host, paths).
    fn ingress(
        name: &str,
        rules: &[(Option<&str>, &[PathSpec<'_>])],
        default: Option<&str>,
    ) -> Arc<Ingress> {
        Arc::new(Ingress {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            spec: Some(IngressSpec {
                default_backend: default.map(backend),
                rules: Some(
                    rules
                        .iter()
                        .map(|(host, paths)| IngressRule {
                            host: host.map(str::to_string),
                            http: Some(HTTPIngressRuleValue {
                                paths: paths
                                    .iter()
                                    .map(|(path, kind, svc)| HTTPIngressPath {
                                        path: Some(path.to_string()),
                                        path_type: kind.to_string(),
                                        backend: backend(svc),
                                    })
                                    .collect(),
                            }),
                        })
                        .collect(),
                ),
                ..IngressSpec::default()
            }),
            status: None,
        })
    }

    fn service(name: &str) -> Arc<Service> {
        Arc::new(Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            status: None,
        })
    }

    fn slice(service: &str, port: i32, endpoints: &[(&str, Option<bool>)]) -> Arc<EndpointSlice> {
        Arc::new(EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{service}-abc")),
                namespace: Some("default".into()),
                labels: Some(BTreeMap::from([(
                    SERVICE_NAME_LABEL.into(),
                    service.into(),
                )])),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".into(),
            endpoints: endpoints
                .iter()
                .map(|(ip, ready)| Endpoint {
                    addresses: vec![ip.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        ..EndpointConditions::default()
                    }),
                    ..Endpoint::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(port),
                protocol: Some("TCP".into()),
                app_protocol: None,
            }]),
        })
    }

    fn table(ingresses: &[Arc<Ingress>]) -> RouteTable {
        let services: Vec<_> = ["a", "b", "c", "d", "def"]
            .into_iter()
            .map(service)
            .collect();
        let slices = vec![
            slice("a", 8080, &[("10.42.0.1", Some(true))]),
            slice("b", 8080, &[("10.42.0.2", None)]),
            slice("c", 8080, &[("10.42.0.3", Some(true))]),
            slice("d", 8080, &[("10.42.0.4", Some(false))]),
            slice("def", 8080, &[("10.42.0.9", Some(true))]),
        ];
        RouteTable::build(&RouteInputs {
            ingresses,
            services: &services,
            slices: &slices,
            tls_hosts: &BTreeSet::from(["secure.example.com".to_string()]),
        })
    }

    fn svc(table: &RouteTable, host: &str, path: &str) -> Option<String> {
        table.route(host, path).map(|r| r.backend.service.clone())
    }

    #[test]
    fn prefix_matches_whole_path_elements() {
        let t = table(&[ingress(
            "i",
            &[(None, &[("/foo", "Prefix", "a"), ("/", "Prefix", "b")])],
            None,
        )]);
        assert_eq!(svc(&t, "x", "/foo").as_deref(), Some("default/a"));
        assert_eq!(svc(&t, "x", "/foo/").as_deref(), Some("default/a"));
        assert_eq!(svc(&t, "x", "/foo/bar").as_deref(), Some("default/a"));
        assert_eq!(svc(&t, "x", "/foobar").as_deref(), Some("default/b"));
        assert_eq!(svc(&t, "x", "/").as_deref(), Some("default/b"));
    }

    #[test]
    fn trailing_slash_of_a_prefix_is_ignored_and_exact_is_literal() {
        // The API documentation's table: Prefix /aaa/bbb/ matches /aaa/bbb; Exact /foo does not
        // match /foo/.
        let t = table(&[ingress(
            "i",
            &[(
                None,
                &[("/aaa/bbb/", "Prefix", "a"), ("/foo", "Exact", "b")],
            )],
            None,
        )]);
        assert_eq!(svc(&t, "x", "/aaa/bbb").as_deref(), Some("default/a"));
        assert_eq!(svc(&t, "x", "/aaa/bbbxyz"), None);
        assert_eq!(svc(&t, "x", "/foo").as_deref(), Some("default/b"));
        assert_eq!(svc(&t, "x", "/foo/"), None);
    }

    #[test]
    fn longest_path_wins_then_exact_beats_prefix() {
        let t = table(&[ingress(
            "i",
            &[(
                None,
                &[
                    ("/", "Prefix", "a"),
                    ("/api", "Prefix", "b"),
                    ("/api", "Exact", "c"),
                    ("/api/v1", "ImplementationSpecific", "def"),
                ],
            )],
            None,
        )]);
        assert_eq!(svc(&t, "x", "/api").as_deref(), Some("default/c"));
        assert_eq!(svc(&t, "x", "/api/v2").as_deref(), Some("default/b"));
        assert_eq!(svc(&t, "x", "/api/v1/pods").as_deref(), Some("default/def"));
        assert_eq!(svc(&t, "x", "/other").as_deref(), Some("default/a"));
    }

    #[test]
    fn hosts_exact_then_single_label_wildcard_then_catch_all() {
        let t = table(&[ingress(
            "i",
            &[
                (Some("foo.example.com"), &[("/", "Prefix", "a")]),
                (Some("*.example.com"), &[("/", "Prefix", "b")]),
                (None, &[("/", "Prefix", "c")]),
            ],
            None,
        )]);
        assert_eq!(
            svc(&t, "foo.example.com", "/").as_deref(),
            Some("default/a")
        );
        assert_eq!(
            svc(&t, "bar.example.com", "/").as_deref(),
            Some("default/b")
        );
        assert_eq!(
            svc(&t, "a.bar.example.com", "/").as_deref(),
            Some("default/c")
        );
        assert_eq!(svc(&t, "example.com", "/").as_deref(), Some("default/c"));
    }

    #[test]
    fn default_backends_of_the_host_then_of_the_cluster() {
        let t = table(&[
            ingress("old", &[(None, &[("/only", "Exact", "a")])], Some("def")),
            ingress(
                "new",
                &[(Some("h.example.com"), &[("/x", "Exact", "b")])],
                Some("c"),
            ),
            ingress(
                "plain",
                &[(Some("p.example.com"), &[("/x", "Exact", "b")])],
                None,
            ),
        ]);
        assert_eq!(svc(&t, "h.example.com", "/y").as_deref(), Some("default/c"));
        assert_eq!(
            svc(&t, "p.example.com", "/y").as_deref(),
            Some("default/def")
        );
        assert_eq!(svc(&t, "other", "/nothing").as_deref(), Some("default/def"));
        let no_default = table(&[ingress("i", &[(None, &[("/x", "Exact", "a")])], None)]);
        assert!(no_default.route("h", "/y").is_none());
    }

    #[test]
    fn the_oldest_ingress_wins_a_duplicate_path() {
        let t = table(&[
            ingress("old", &[(Some("h"), &[("/", "Prefix", "a")])], None),
            ingress("new", &[(Some("h"), &[("/", "Prefix", "b")])], None),
        ]);
        assert_eq!(svc(&t, "h", "/").as_deref(), Some("default/a"));
    }

    #[test]
    fn backends_resolve_ready_endpoints_and_explain_when_unavailable() {
        let t = table(&[ingress(
            "i",
            &[(
                None,
                &[
                    ("/b", "Prefix", "b"),
                    ("/d", "Prefix", "d"),
                    ("/gone", "Prefix", "missing"),
                ],
            )],
            None,
        )]);
        let target = |p: &str| t.route("h", p).map(|r| r.backend.target.clone());
        // ready: null counts as ready.
        assert_eq!(
            target("/b"),
            Some(Target::Endpoints(vec![
                "10.42.0.2:8080".parse().expect("addr")
            ]))
        );
        assert_eq!(
            target("/d"),
            Some(Target::Unavailable(
                "no ready endpoints for service default/d".into()
            ))
        );
        assert_eq!(
            target("/gone"),
            Some(Target::Unavailable(
                "service default/missing does not exist".into()
            ))
        );
    }

    #[test]
    fn identical_backends_share_one_round_robin() {
        let t = table(&[ingress(
            "i",
            &[(None, &[("/x", "Prefix", "a"), ("/y", "Prefix", "a")])],
            None,
        )]);
        let x = t.route("h", "/x").expect("route").backend;
        let y = t.route("h", "/y").expect("route").backend;
        assert!(Arc::ptr_eq(&x, &y));
    }

    #[test]
    fn tls_hosts_redirect_unless_disabled() {
        let mut off = (*ingress(
            "off",
            &[(Some("secure.example.com"), &[("/off", "Prefix", "b")])],
            None,
        ))
        .clone();
        off.metadata.annotations = Some(BTreeMap::from([(
            SSL_REDIRECT_ANNOTATION.to_string(),
            "false".to_string(),
        )]));
        let t = table(&[
            ingress(
                "i",
                &[
                    (Some("secure.example.com"), &[("/", "Prefix", "a")]),
                    (Some("plain.example.com"), &[("/", "Prefix", "a")]),
                ],
                None,
            ),
            Arc::new(off),
        ]);
        assert!(
            t.route("secure.example.com", "/")
                .expect("route")
                .redirect_https
        );
        assert!(
            !t.route("secure.example.com", "/off")
                .expect("route")
                .redirect_https
        );
        assert!(
            !t.route("plain.example.com", "/")
                .expect("route")
                .redirect_https
        );
    }
}
