//! Pulling from registries with `oci-client`: mirrors first, then the registry itself (as
//! containerd's `hosts.toml`), manifest lists resolved to linux/amd64, every blob verified
//! against its digest, layers downloaded concurrently into resumable ingest files.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use oci_client::client::{BlobResponse, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use super::manifest::{self, Descriptor, ManifestKind};
use super::reference::ImageRef;
use super::store::{ImageRecord, Store, StoreError, digest_of};

/// Where and how to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// Registry host (`docker.io`) → mirror endpoints tried in order before it, each
    /// `http://host:port` or `https://host:port` (no scheme means https).
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Registry hosts spoken to over plain HTTP.
    pub plain_http: Vec<String>,
    /// Layers downloaded at once per image; 0 means 3 (containerd's default).
    pub max_concurrent_downloads: usize,
}

/// Registry credentials, from `skiff image pull --username` or an imagePullSecret.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// A registry (bearer) token, `identitytoken`/`registrytoken` in a docker config.
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

impl Credentials {
    fn to_auth(&self) -> RegistryAuth {
        match self {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Credentials::Bearer(token) => RegistryAuth::Bearer(token.clone()),
        }
    }
}

/// Progress of one layer download, for a progress bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerProgress {
    pub digest: String,
    pub done: u64,
    pub total: u64,
}

/// Why a pull failed. [`PullError::is_retryable`] tells ErrImagePull that backs off and
/// retries apart from a name or credential that will not work until changed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(
        "image not found: {image} — check the name and tag, or import it with `skiff image import` ({detail})"
    )]
    NotFound { image: String, detail: String },
    #[error(
        "pull access denied for {image}: the registry requires credentials or they are wrong — add an imagePullSecret or `skiff image pull --username` ({detail})"
    )]
    Unauthorized { image: String, detail: String },
    #[error(
        "registry for {image} is unreachable: {detail} — check the network, or configure a mirror"
    )]
    Network { image: String, detail: String },
    #[error("registry error pulling {image}: {detail}")]
    Registry {
        image: String,
        detail: String,
        retryable: bool,
    },
    #[error("{image} has no linux/amd64 image in its manifest list")]
    NoMatchingPlatform { image: String },
    #[error(
        "{image}: {what} {digest} does not match its digest (got {actual}); the registry or a proxy altered it"
    )]
    DigestMismatch {
        image: String,
        what: &'static str,
        digest: String,
        actual: String,
    },
    #[error("{image}: the registry sent an invalid manifest: {detail}")]
    InvalidManifest { image: String, detail: String },
    #[error("storing {image}: {source}")]
    Store {
        image: String,
        #[source]
        source: StoreError,
    },
}

impl PullError {
    /// Whether trying again later may succeed (network trouble, server errors, a corrupted
    /// transfer) rather than needing a different name or credentials.
    pub fn is_retryable(&self) -> bool {
        match self {
            PullError::Network { .. }
            | PullError::DigestMismatch { .. }
            | PullError::Store { .. } => true,
            PullError::Registry { retryable, .. } => *retryable,
            PullError::NotFound { .. }
            | PullError::Unauthorized { .. }
            | PullError::NoMatchingPlatform { .. }
            | PullError::InvalidManifest { .. } => false,
        }
    }

    /// How definitive the error is, to choose which to report when every endpoint failed.
    fn rank(&self) -> u8 {
        match self {
            PullError::Network { .. } => 0,
            PullError::Registry { .. } => 1,
            _ => 2,
        }
    }

    fn classify(image: &ImageRef, err: OciDistributionError) -> PullError {
        let image_s = image.to_string();
        let detail = err.to_string();
        match &err {
            OciDistributionError::ImageManifestNotFoundError(_) => PullError::NotFound {
                image: image_s,
                detail,
            },
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => PullError::Unauthorized {
                image: image_s,
                detail,
            },
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                let message = envelope
                    .errors
                    .iter()
                    .map(|e| e.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ");
                if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::NotFound
                            | OciErrorCode::BlobUnknown
                    )
                }) {
                    PullError::NotFound {
                        image: image_s,
                        detail: message,
                    }
                } else if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
                {
                    PullError::Unauthorized {
                        image: image_s,
                        detail: message,
                    }
                } else {
                    let retryable = codes
                        .iter()
                        .any(|c| matches!(c, OciErrorCode::Toomanyrequests));
                    PullError::Registry {
                        image: image_s,
                        detail: message,
                        retryable,
                    }
                }
            }
            OciDistributionError::ServerError { code, message, .. } => match code {
                404 => PullError::NotFound {
                    image: image_s,
                    detail: message.clone(),
                },
                401 | 403 => PullError::Unauthorized {
                    image: image_s,
                    detail: message.clone(),
                },
                _ => PullError::Registry {
                    image: image_s,
                    detail,
                    retryable: *code >= 500 || *code == 429,
                },
            },
            OciDistributionError::RequestError(_) | OciDistributionError::IoError(_) => {
                // reqwest's Display hides the cause ("error sending request"); show the chain.
                let mut detail = detail;
                let mut source = std::error::Error::source(&err);
                while let Some(s) = source {
                    detail.push_str(": ");
                    detail.push_str(&s.to_string());
                    source = s.source();
                }
                PullError::Network {
                    image: image_s,
                    detail,
                }
            }
            OciDistributionError::DigestError(_) => PullError::DigestMismatch {
                image: image_s,
                what: "content",
                digest: String::new(),
                actual: detail,
            },
            _ => PullError::InvalidManifest {
                image: image_s,
                detail,
            },
        }
    }
}

/// A registry client. Keep one per process: it caches tokens and connections.
pub struct Puller {
    client: Client,
    config: RegistryConfig,
}

/// The scheme-less host of a mirror endpoint, and whether it is plain HTTP.
fn mirror_host(endpoint: &str) -> (String, bool) {
    let (rest, http) = match endpoint.strip_prefix("http://") {
        Some(rest) => (rest, true),
        None => (endpoint.strip_prefix("https://").unwrap_or(endpoint), false),
    };
    (rest.trim_end_matches('/').to_string(), http)
}

impl Puller {
    pub fn new(config: RegistryConfig) -> Puller {
        // One rustls provider for the whole process: kube uses ring too, and with two
        // providers compiled in, rustls refuses to pick one ("Could not automatically
        // determine the process-level CryptoProvider"). Already installed is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut plain: Vec<String> = config.plain_http.clone();
        for endpoints in config.mirrors.values() {
            for endpoint in endpoints {
                let (host, http) = mirror_host(endpoint);
                if http {
                    plain.push(host);
                }
            }
        }
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(plain),
            platform_resolver: Some(Box::new(oci_client::client::linux_amd64_resolver)),
            max_concurrent_download: config.max_concurrent_downloads.max(1),
            connect_timeout: Some(Duration::from_secs(30)),
            read_timeout: Some(Duration::from_secs(60)),
            ..ClientConfig::default()
        });
        Puller { client, config }
    }

    /// Pulls `image` into `store` and tags it; calls `progress` as layer bytes arrive.
    pub async fn pull(
        &self,
        store: &Store,
        image: &ImageRef,
        credentials: &Credentials,
        progress: &(dyn Fn(LayerProgress) + Send + Sync),
    ) -> Result<ImageRecord, PullError> {
        let mut endpoints: Vec<String> = self
            .config
            .mirrors
            .get(&image.registry)
            .map(|m| m.iter().map(|e| mirror_host(e).0).collect())
            .unwrap_or_default();
        endpoints.push(image.registry.clone());
        let mut best: Option<PullError> = None;
        for endpoint in endpoints {
            let remote = match (&image.tag, &image.digest) {
                (_, Some(digest)) => Reference::with_digest(
                    endpoint.clone(),
                    image.repository.clone(),
                    digest.clone(),
                ),
                (Some(tag), None) => {
                    Reference::with_tag(endpoint.clone(), image.repository.clone(), tag.clone())
                }
                (None, None) => {
                    Reference::with_tag(endpoint.clone(), image.repository.clone(), "latest".into())
                }
            };
            match self
                .pull_from(store, image, &remote, credentials, progress)
                .await
            {
                Ok(record) => return Ok(record),
                Err(e) => {
                    tracing::debug!(image = %image, endpoint, error = %e, "pull from endpoint failed");
                    if best.as_ref().is_none_or(|b| e.rank() > b.rank()) {
                        best = Some(e);
                    }
                }
            }
        }
        Err(best.unwrap_or(PullError::Network {
            image: image.to_string(),
            detail: "no endpoint".into(),
        }))
    }

    async fn pull_from(
        &self,
        store: &Store,
        image: &ImageRef,
        remote: &Reference,
        credentials: &Credentials,
        progress: &(dyn Fn(LayerProgress) + Send + Sync),
    ) -> Result<ImageRecord, PullError> {
        let auth = credentials.to_auth();
        let accepted = [
            manifest::OCI_MANIFEST,
            manifest::DOCKER_MANIFEST,
            manifest::OCI_INDEX,
            manifest::DOCKER_MANIFEST_LIST,
        ];
        let classify = |e| PullError::classify(image, e);
        let invalid = |e: serde_json::Error| PullError::InvalidManifest {
            image: image.to_string(),
            detail: e.to_string(),
        };
        let (mut bytes, _) = self
            .client
            .pull_manifest_raw(remote, &auth, &accepted)
            .await
            .map_err(classify)?;
        let mut digest = digest_of(&bytes);
        if let Some(expected) = &image.digest
            && expected != &digest
        {
            return Err(PullError::DigestMismatch {
                image: image.to_string(),
                what: "manifest",
                digest: expected.clone(),
                actual: digest,
            });
        }
        let manifest = loop {
            match manifest::parse_manifest_or_index(&bytes).map_err(invalid)? {
                ManifestKind::Manifest(m) => break m,
                ManifestKind::Index(index) => {
                    let entry =
                        index
                            .linux_amd64()
                            .ok_or_else(|| PullError::NoMatchingPlatform {
                                image: image.to_string(),
                            })?;
                    let by_digest = remote.clone_with_digest(entry.digest.clone());
                    let (next, _) = self
                        .client
                        .pull_manifest_raw(&by_digest, &auth, &accepted)
                        .await
                        .map_err(classify)?;
                    let actual = digest_of(&next);
                    if actual != entry.digest {
                        return Err(PullError::DigestMismatch {
                            image: image.to_string(),
                            what: "manifest",
                            digest: entry.digest.clone(),
                            actual,
                        });
                    }
                    if matches!(
                        manifest::parse_manifest_or_index(&next).map_err(invalid)?,
                        ManifestKind::Index(_)
                    ) {
                        return Err(PullError::InvalidManifest {
                            image: image.to_string(),
                            detail: "an index inside an index".into(),
                        });
                    }
                    bytes = next;
                    digest = actual;
                }
            }
        };
        let store_err = |source| PullError::Store {
            image: image.to_string(),
            source,
        };
        let blobs: Vec<String> = std::iter::once(digest.clone())
            .chain(std::iter::once(manifest.config.digest.clone()))
            .chain(manifest.layers.iter().map(|l| l.digest.clone()))
            .collect();
        let _lease = store
            .lease(
                &format!("pull:{image}:{}", std::process::id()),
                blobs,
                [],
                false,
            )
            .map_err(store_err)?;
        self.fetch_blob(store, image, remote, &manifest.config, &|_| {})
            .await?;
        let limit = self.config.max_concurrent_downloads.max(1);
        let limit = if self.config.max_concurrent_downloads == 0 {
            3
        } else {
            limit
        };
        // Owned descriptors keep the stream's future `Send` (a borrowing closure trips rustc's
        // higher-ranked lifetime inference), which the agent needs to spawn pulls.
        futures::stream::iter(manifest.layers.clone().into_iter().map(|layer| async move {
            self.fetch_blob(store, image, remote, &layer, progress)
                .await
        }))
        .buffer_unordered(limit)
        .try_collect::<Vec<()>>()
        .await?;
        store
            .write_blob_bytes(Some(&digest), &bytes)
            .map_err(store_err)?;
        store.tag(image, &digest).map_err(store_err)
    }

    /// Downloads one blob into `ingest/<hex>`, resuming a previous partial download with a
    /// range request, verifies it and moves it into the store.
    async fn fetch_blob(
        &self,
        store: &Store,
        image: &ImageRef,
        remote: &Reference,
        layer: &Descriptor,
        progress: &(dyn Fn(LayerProgress) + Send + Sync),
    ) -> Result<(), PullError> {
        let store_err = |source| PullError::Store {
            image: image.to_string(),
            source,
        };
        let io_err = |step: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| PullError::Store {
                image: image.to_string(),
                source: StoreError::Io { step, path, source },
            }
        };
        if store.has_blob(&layer.digest) {
            progress(LayerProgress {
                digest: layer.digest.clone(),
                done: layer.size,
                total: layer.size,
            });
            return Ok(());
        }
        let partial = store.ingest_path(&layer.digest).map_err(store_err)?;
        let mut hasher = Sha256::new();
        let mut done = 0u64;
        if let Ok(existing) = tokio::fs::read(&partial).await
            && (existing.len() as u64) < layer.size
        {
            hasher.update(&existing);
            done = existing.len() as u64;
        }
        let descriptor = oci_client::manifest::OciDescriptor {
            media_type: layer.media_type.clone(),
            digest: layer.digest.clone(),
            size: i64::try_from(layer.size).unwrap_or(i64::MAX),
            ..Default::default()
        };
        let response = if done > 0 {
            self.client
                .pull_blob_stream_partial(remote, &descriptor, done, None)
                .await
        } else {
            self.client
                .pull_blob_stream(remote, &descriptor)
                .await
                .map(BlobResponse::Full)
        }
        .map_err(|e| PullError::classify(image, e))?;
        let (mut stream, mut file) = match response {
            BlobResponse::Partial(stream) => {
                let file = tokio::fs::OpenOptions::new()
                    .append(true)
                    .open(&partial)
                    .await
                    .map_err(io_err("open partial download", &partial))?;
                (stream, file)
            }
            BlobResponse::Full(stream) => {
                // The registry ignored the range: start over.
                hasher = Sha256::new();
                done = 0;
                let file = tokio::fs::File::create(&partial)
                    .await
                    .map_err(io_err("create download", &partial))?;
                (stream, file)
            }
        };
        progress(LayerProgress {
            digest: layer.digest.clone(),
            done,
            total: layer.size,
        });
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| PullError::Network {
                image: image.to_string(),
                detail: e.to_string(),
            })?;
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(io_err("write download", &partial))?;
            done += chunk.len() as u64;
            progress(LayerProgress {
                digest: layer.digest.clone(),
                done,
                total: layer.size,
            });
        }
        file.sync_all()
            .await
            .map_err(io_err("fsync download", &partial))?;
        drop(file);
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != layer.digest {
            // A corrupt partial file must not be resumed from again.
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(PullError::DigestMismatch {
                image: image.to_string(),
                what: "blob",
                digest: layer.digest.clone(),
                actual,
            });
        }
        store
            .commit_file(&partial, &layer.digest)
            .map_err(store_err)
    }
}

/// Convenience for a single pull with its own client.
pub async fn pull(
    store: &Store,
    config: &RegistryConfig,
    image: &ImageRef,
    credentials: &Credentials,
    progress: &(dyn Fn(LayerProgress) + Send + Sync),
) -> Result<ImageRecord, PullError> {
    Puller::new(config.clone())
        .pull(store, image, credentials, progress)
        .await
}

/// Compile-time check that a pull can run in a spawned task.
#[allow(dead_code)]
fn assert_pull_is_send(p: &Puller, s: &Store, i: &ImageRef, c: &Credentials) {
    fn is_send<T: Send>(_: T) {}
    is_send(p.pull(s, i, c, &|_| {}));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_whether_to_retry() {
        let image = ImageRef::parse("nope:1").unwrap();
        let not_found = PullError::classify(
            &image,
            OciDistributionError::ImageManifestNotFoundError("x".into()),
        );
        assert!(!not_found.is_retryable());
        assert!(
            not_found
                .to_string()
                .starts_with("image not found: docker.io/library/nope:1")
        );
        let denied = PullError::classify(
            &image,
            OciDistributionError::UnauthorizedError { url: "u".into() },
        );
        assert!(matches!(denied, PullError::Unauthorized { .. }) && !denied.is_retryable());
        let server = PullError::classify(
            &image,
            OciDistributionError::ServerError {
                code: 503,
                url: "u".into(),
                message: "busy".into(),
            },
        );
        assert!(server.is_retryable());
        let missing = PullError::classify(
            &image,
            OciDistributionError::ServerError {
                code: 404,
                url: "u".into(),
                message: "".into(),
            },
        );
        assert!(matches!(missing, PullError::NotFound { .. }));
        let io = PullError::classify(
            &image,
            OciDistributionError::IoError(std::io::Error::other("reset")),
        );
        assert!(io.is_retryable());
    }

    #[test]
    fn mirror_endpoints() {
        assert_eq!(
            mirror_host("http://127.0.0.1:5000/"),
            ("127.0.0.1:5000".to_string(), true)
        );
        assert_eq!(
            mirror_host("mirror.example.com"),
            ("mirror.example.com".to_string(), false)
        );
    }
}
