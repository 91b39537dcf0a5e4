//! TLS termination: `spec.tls[].secretName` Secrets (type `kubernetes.io/tls`, keys `tls.crt`
//! and `tls.key`) loaded into a rustls SNI resolver. The certificate is chosen by the client's
//! server name against `spec.tls[].hosts` (exact, then a `*.` wildcard one label deep); a name
//! with no certificate — or no SNI at all — gets the self-signed default certificate generated at
//! start, as ingress-nginx serves its "Fake Certificate".

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The Secret type TLS sections must reference.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// Why a certificate could not be loaded. Not retryable until the Secret changes; the host is
/// served with the default certificate meanwhile.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "secret {secret}: type is {found:?}, an Ingress TLS secret must be {TLS_SECRET_TYPE:?}"
    )]
    SecretType { secret: String, found: String },
    #[error("secret {secret}: data[{key:?}] is missing")]
    MissingKey { secret: String, key: &'static str },
    #[error("secret {secret}: data[\"tls.crt\"] holds no PEM certificate: {reason}")]
    Certificate { secret: String, reason: String },
    #[error("secret {secret}: data[\"tls.key\"] holds no usable PEM private key: {reason}")]
    PrivateKey { secret: String, reason: String },
    #[error("generating the default self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("building the TLS server configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The crypto provider used everywhere in this crate (ring; no process-wide default is
/// installed, so the binary's other TLS users are unaffected).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a `kubernetes.io/tls` Secret into a signing certificate chain.
pub(crate) fn load_secret(secret: &Secret) -> Result<CertifiedKey, TlsError> {
    let name = format!(
        "{}/{}",
        secret.metadata.namespace.as_deref().unwrap_or(""),
        secret.metadata.name.as_deref().unwrap_or("")
    );
    let kind = secret.type_.as_deref().unwrap_or("Opaque");
    if kind != TLS_SECRET_TYPE {
        return Err(TlsError::SecretType {
            secret: name,
            found: kind.to_string(),
        });
    }
    let data = |key: &'static str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.as_slice())
            .filter(|b| !b.is_empty())
            .ok_or_else(|| TlsError::MissingKey {
                secret: name.clone(),
                key,
            })
    };
    certified_key(data("tls.crt")?, data("tls.key")?, &name)
}

/// Builds a certified key from PEM certificate chain and key. `what` names the source in errors.
pub(crate) fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    what: &str,
) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Certificate {
            secret: what.to_string(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate {
            secret: what.to_string(),
            reason: "no CERTIFICATE block".to_string(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::PrivateKey {
        secret: what.to_string(),
        reason: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::PrivateKey {
        secret: what.to_string(),
        reason: e.to_string(),
    })
}

/// The certificate for names nobody configured (ingress-nginx: "Kubernetes Ingress Controller
/// Fake Certificate" for `ingress.local`).
pub(crate) fn default_certificate() -> Result<CertifiedKey, TlsError> {
    let mut params = rcgen::CertificateParams::new(vec!["ingress.local".to_string()])?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "Skiff Ingress Controller Fake Certificate",
    );
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Skiff");
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    certified_key(
        cert.pem().as_bytes(),
        key.serialize_pem().as_bytes(),
        "default certificate",
    )
}

/// Host → certificate for one snapshot of the served Ingresses.
#[derive(Debug, Default)]
pub(crate) struct CertTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl CertTable {
    fn lookup(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        let name = server_name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return Some(k.clone());
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).cloned()
    }

    /// The hosts (as written, `*.` included) that have a certificate.
    pub(crate) fn hosts(&self) -> BTreeSet<String> {
        self.exact
            .keys()
            .cloned()
            .chain(self.wildcard.keys().map(|k| format!("*.{k}")))
            .collect()
    }
}

/// Parsed Secrets kept across rebuilds, keyed by `namespace/name`, so an unchanged Secret is
/// neither parsed nor complained about again.
#[derive(Default)]
pub(crate) struct SecretCache {
    entries: HashMap<String, (String, Option<Arc<CertifiedKey>>)>,
    /// Referenced but absent Secrets, reported once each rather than on every rebuild.
    missing: BTreeSet<String>,
}

impl SecretCache {
    /// Builds the certificate table of the served Ingresses (oldest first: the first Ingress to
    /// claim a host's certificate keeps it, as for paths).
    pub(crate) fn build(
        &mut self,
        ingresses: &[Arc<Ingress>],
        secrets: &[Arc<Secret>],
    ) -> CertTable {
        let by_name: HashMap<(&str, &str), &Secret> = secrets
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
        let mut table = CertTable::default();
        let mut used = BTreeSet::new();
        for ingress in ingresses {
            let namespace = ingress.metadata.namespace.as_deref().unwrap_or("default");
            let Some(spec) = &ingress.spec else { continue };
            for tls in spec.tls.iter().flatten() {
                let Some(secret_name) = tls.secret_name.as_deref() else {
                    continue;
                };
                let key = format!("{namespace}/{secret_name}");
                used.insert(key.clone());
                let Some(secret) = by_name.get(&(namespace, secret_name)) else {
                    if self.missing.insert(key.clone()) {
                        tracing::warn!(
                            ingress = ingress.metadata.name.as_deref().unwrap_or(""),
                            secret = %key,
                            "TLS secret not found; serving the default certificate"
                        );
                    }
                    self.entries.remove(&key);
                    continue;
                };
                self.missing.remove(&key);
                let version = secret.metadata.resource_version.clone().unwrap_or_default();
                let cached = match self.entries.get(&key) {
                    Some((v, parsed)) if *v == version => parsed.clone(),
                    _ => {
                        let parsed = match load_secret(secret) {
                            Ok(k) => Some(Arc::new(k)),
                            Err(e) => {
                                tracing::warn!(error = %e, "ignoring TLS secret; serving the default certificate");
                                None
                            }
                        };
                        self.entries.insert(key.clone(), (version, parsed.clone()));
                        parsed
                    }
                };
                let Some(cert) = cached else { continue };
                // `hosts` empty: ingress-nginx applies the certificate to the Ingress's rule hosts.
                let hosts: Vec<String> = match tls.hosts.as_deref() {
                    Some(h) if !h.is_empty() => h.to_vec(),
                    _ => spec
                        .rules
                        .iter()
                        .flatten()
                        .filter_map(|r| r.host.clone())
                        .collect(),
                };
                for host in hosts {
                    let host = host.trim_end_matches('.').to_ascii_lowercase();
                    let map = match host.strip_prefix("*.") {
                        Some(suffix) => table.wildcard.entry(suffix.to_string()),
                        None => table.exact.entry(host),
                    };
                    map.or_insert_with(|| cert.clone());
                }
            }
        }
        self.entries.retain(|k, _| used.contains(k));
        self.missing.retain(|k| used.contains(k));
        table
    }
}

/// rustls certificate selection by SNI over the current [`CertTable`].
#[derive(Debug)]
pub(crate) struct SniResolver {
    table: RwLock<Arc<CertTable>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    pub(crate) fn new(default: CertifiedKey) -> Self {
        SniResolver {
            table: RwLock::new(Arc::new(CertTable::default())),
            default: Arc::new(default),
        }
    }

    pub(crate) fn replace(&self, table: CertTable) {
        let table = Arc::new(table);
        match self.table.write() {
            Ok(mut t) => *t = table,
            Err(poisoned) => *poisoned.into_inner() = table,
        }
    }

    fn current(&self) -> Arc<CertTable> {
        match self.table.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = hello.server_name().and_then(|n| self.current().lookup(n));
        Some(chosen.unwrap_or_else(|| self.default.clone()))
    }
}

/// The rustls server configuration: the SNI resolver, HTTP/2 and HTTP/1.1 by ALPN.
pub(crate) fn server_config(resolver: Arc<SniResolver>) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use k8s_openapi::api::networking::v1::{IngressSpec, IngressTLS};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn secret(name: &str, host: &str) -> (Arc<Secret>, Vec<u8>) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![host.to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let der = cert.der().to_vec();
        let s = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                resource_version: Some("1".into()),
                ..ObjectMeta::default()
            },
            type_: Some(TLS_SECRET_TYPE.into()),
            data: Some(BTreeMap::from([
                ("tls.crt".to_string(), ByteString(cert.pem().into_bytes())),
                (
                    "tls.key".to_string(),
                    ByteString(key.serialize_pem().into_bytes()),
                ),
            ])),
            ..Secret::default()
        };
        (Arc::new(s), der)
    }

    fn ingress(tls: &[(&[&str], &str)]) -> Arc<Ingress> {
        Arc::new(Ingress {
            metadata: ObjectMeta {
                name: Some("i".into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            spec: Some(IngressSpec {
                tls: Some(
                    tls.iter()
                        .map(|(hosts, secret)| IngressTLS {
                            hosts: Some(hosts.iter().map(|h| h.to_string()).collect()),
                            secret_name: Some(secret.to_string()),
                        })
                        .collect(),
                ),
                ..IngressSpec::default()
            }),
            status: None,
        })
    }

    #[test]
    fn hosts_map_to_their_secret_and_wildcards_cover_one_label() {
        let (a, a_der) = secret("a", "a.example.com");
        let (w, w_der) = secret("w", "*.apps.example.com");
        let mut cache = SecretCache::default();
        let table = cache.build(
            &[ingress(&[
                (&["a.example.com"], "a"),
                (&["*.apps.example.com"], "w"),
            ])],
            &[a, w],
        );
        let der = |n: &str| table.lookup(n).map(|k| k.cert[0].to_vec());
        assert_eq!(der("A.example.com."), Some(a_der));
        assert_eq!(der("x.apps.example.com"), Some(w_der));
        assert_eq!(der("y.x.apps.example.com"), None);
        assert_eq!(der("b.example.com"), None);
        assert_eq!(
            table.hosts(),
            BTreeSet::from([
                "a.example.com".to_string(),
                "*.apps.example.com".to_string()
            ])
        );
    }

    #[test]
    fn broken_or_missing_secrets_are_skipped() {
        let (good, _) = secret("good", "a.example.com");
        let mut bad = (*good).clone();
        bad.metadata.name = Some("bad".into());
        bad.type_ = Some("Opaque".into());
        let mut cache = SecretCache::default();
        let table = cache.build(
            &[ingress(&[
                (&["bad.example.com"], "bad"),
                (&["gone.example.com"], "gone"),
            ])],
            &[Arc::new(bad.clone())],
        );
        assert!(table.hosts().is_empty());
        assert!(matches!(
            load_secret(&bad),
            Err(TlsError::SecretType { .. })
        ));
    }

    #[test]
    fn the_default_certificate_is_generated() {
        let key = default_certificate().expect("default certificate");
        assert_eq!(key.cert.len(), 1);
    }
}
