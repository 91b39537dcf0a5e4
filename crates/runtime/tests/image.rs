//! Images end to end: a two-layer busybox image built here (tar + gzip + sha256 + JSON), imported
//! as an OCI layout and as a `docker save` archive, unpacked, mounted as an overlay, and pushed
//! to and pulled back from a real local registry (`docker-registry`, also as a docker.io mirror).
//! Overlay tests need root and skip otherwise.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use runtime::image::import::import;
use runtime::image::pull::{Credentials, LayerProgress, PullError, Puller, RegistryConfig};
use runtime::image::snapshot::{cleanup_rootfs, is_mounted, prepare_rootfs, unpack_image};
use runtime::image::store::digest_of;
use runtime::image::{ImageRef, Store};
use serde_json::json;

const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

struct TestImage {
    /// (blob bytes, media type, uncompressed tar)
    layers: Vec<(Vec<u8>, &'static str, Vec<u8>)>,
    config: Vec<u8>,
    manifest: Vec<u8>,
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]) {
    let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
    b.append_data(&mut h, path, data).unwrap();
}

fn dir(b: &mut tar::Builder<Vec<u8>>, path: &str) {
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    b.append_data(&mut h, path, std::io::empty()).unwrap();
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// Layer 1 (gzip): busybox, `sh` as a hard link, `ls` as a symlink, files to delete later.
/// Layer 2 (plain tar): a whiteout for `etc/gone`, `data/` made opaque with a new file.
fn build_image() -> TestImage {
    let busybox = fs::read("/bin/busybox").expect("apt busybox-static provides /bin/busybox");
    let mut b = tar::Builder::new(Vec::new());
    dir(&mut b, "bin/");
    file(&mut b, "bin/busybox", 0o755, &busybox);
    let mut h = header(tar::EntryType::Link, 0o755, 0);
    b.append_link(&mut h, "bin/sh", "bin/busybox").unwrap();
    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
    b.append_link(&mut h, "bin/ls", "busybox").unwrap();
    dir(&mut b, "etc/");
    file(&mut b, "etc/keep", 0o644, b"keep\n");
    file(&mut b, "etc/gone", 0o644, b"gone\n");
    dir(&mut b, "data/");
    file(&mut b, "data/old", 0o644, b"old\n");
    dir(&mut b, "tmp/");
    let layer1 = b.into_inner().unwrap();

    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, "etc/.wh.gone", 0o644, b"");
    dir(&mut b, "data/");
    file(&mut b, "data/.wh..wh..opq", 0o644, b"");
    file(&mut b, "data/new", 0o600, b"new\n");
    file(&mut b, "etc/added", 0o644, b"added\n");
    let layer2 = b.into_inner().unwrap();

    let layers = vec![
        (gzip(&layer1), OCI_LAYER_GZIP, layer1),
        (layer2.clone(), OCI_LAYER, layer2),
    ];
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/bin"], "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"],
                   "WorkingDir": "/data", "User": "0:0", "ExposedPorts": {"8080/tcp": {}}},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| digest_of(&l.2)).collect::<Vec<_>>()},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest_of(&config), "size": config.len()},
        "layers": layers.iter().map(|l| json!({"mediaType": l.1, "digest": digest_of(&l.0), "size": l.0.len()})).collect::<Vec<_>>(),
    }))
    .unwrap();
    TestImage {
        layers,
        config,
        manifest,
    }
}

fn write_blob(root: &Path, bytes: &[u8]) {
    let d = digest_of(bytes);
    fs::write(root.join("blobs/sha256").join(&d["sha256:".len()..]), bytes).unwrap();
}

/// An OCI image layout directory naming the image `name`.
fn write_oci_layout(image: &TestImage, root: &Path, name: &str) {
    fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    fs::write(
        root.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    for (blob, _, _) in &image.layers {
        write_blob(root, blob);
    }
    write_blob(root, &image.config);
    write_blob(root, &image.manifest);
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": OCI_MANIFEST, "digest": digest_of(&image.manifest), "size": image.manifest.len(),
        "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "1.0"}}]});
    fs::write(root.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

fn tar_dir(src: &Path, out: &Path) {
    let mut b = tar::Builder::new(fs::File::create(out).unwrap());
    b.append_dir_all(".", src).unwrap();
    b.finish().unwrap();
}

fn check_rootfs(root: &Path) {
    use std::os::unix::fs::MetadataExt;
    assert!(root.join("bin/busybox").is_file());
    assert_eq!(
        fs::metadata(root.join("bin/sh")).unwrap().ino(),
        fs::metadata(root.join("bin/busybox")).unwrap().ino()
    );
    assert_eq!(
        fs::read_link(root.join("bin/ls")).unwrap(),
        PathBuf::from("busybox")
    );
    assert_eq!(fs::read(root.join("etc/keep")).unwrap(), b"keep\n");
    assert_eq!(fs::read(root.join("etc/added")).unwrap(), b"added\n");
    assert!(
        !root.join("etc/gone").exists(),
        "the whiteout deletes etc/gone"
    );
    assert!(!root.join("etc/.wh.gone").exists());
    assert!(
        !root.join("data/old").exists(),
        "the opaque directory hides data/old"
    );
    assert_eq!(fs::read(root.join("data/new")).unwrap(), b"new\n");
    assert_eq!(
        fs::metadata(root.join("data/new")).unwrap().mode() & 0o777,
        0o600
    );
    // The unpacked busybox runs.
    let out = Command::new(root.join("bin/busybox"))
        .args(["echo", "alive"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"alive\n");
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn oci_layout_directory_and_tarball_import_then_unpack() {
    let tmp = tempfile::tempdir().unwrap();
    let image = build_image();
    let layout = tmp.path().join("layout");
    write_oci_layout(&image, &layout, "skiff.test/busybox:1.0");
    let store = Store::open(tmp.path().join("images")).unwrap();

    let refs = import(&store, &layout).unwrap();
    assert_eq!(
        refs,
        vec![ImageRef::parse("skiff.test/busybox:1.0").unwrap()]
    );
    let record = store.resolve("skiff.test/busybox:1.0").unwrap();
    assert_eq!(record.manifest_digest, digest_of(&image.manifest));
    assert_eq!(record.layers.len(), 2);
    assert_eq!(
        record.repo_digest(),
        format!("skiff.test/busybox@{}", digest_of(&image.manifest))
    );
    let inspect = store.inspect("skiff.test/busybox:1.0").unwrap();
    assert_eq!(inspect.config.entrypoint, vec!["/bin/sh", "-c"]);
    assert_eq!(inspect.config.cmd, vec!["echo hi"]);
    assert_eq!(inspect.config.env, vec!["PATH=/bin"]);
    assert_eq!(inspect.config.working_dir.as_deref(), Some("/data"));
    assert_eq!(inspect.config.user.as_deref(), Some("0:0"));
    assert_eq!(inspect.config.exposed_ports, vec!["8080/tcp"]);

    let rootfs = tmp.path().join("flat");
    unpack_image(&store, &record, &rootfs).unwrap();
    check_rootfs(&rootfs);

    // The same layout as a tarball, renamed, goes into a second store.
    let renamed = tmp.path().join("renamed");
    write_oci_layout(&image, &renamed, "busybox:tarball");
    let tarball = tmp.path().join("layout.tar");
    tar_dir(&renamed, &tarball);
    let store2 = Store::open(tmp.path().join("images2")).unwrap();
    assert_eq!(
        import(&store2, &tarball).unwrap(),
        vec![ImageRef::parse("docker.io/library/busybox:tarball").unwrap()]
    );
    let listed = store2.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].reference.to_string(),
        "docker.io/library/busybox:tarball"
    );

    // Removing the only reference collects every blob.
    store.remove("skiff.test/busybox:1.0").unwrap();
    assert!(store.list().unwrap().is_empty());
    assert_eq!(
        fs::read_dir(store.root().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn docker_save_tarball_import() {
    let tmp = tempfile::tempdir().unwrap();
    let image = build_image();
    // The legacy layout: `<id>/layer.tar` (uncompressed), `<config hex>.json`, manifest.json.
    let mut b = tar::Builder::new(Vec::new());
    let config_name = format!("{}.json", &digest_of(&image.config)["sha256:".len()..]);
    file(&mut b, &config_name, 0o644, &image.config);
    let mut layer_paths = Vec::new();
    for (i, (_, _, tar_bytes)) in image.layers.iter().enumerate() {
        let path = format!("layer{i}/layer.tar");
        file(&mut b, &path, 0o644, tar_bytes);
        layer_paths.push(path);
    }
    // Docker links a repeated layer to its first copy.
    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
    b.append_link(&mut h, "dup/layer.tar", "../layer0/layer.tar")
        .unwrap();
    let manifest = json!([{"Config": config_name, "RepoTags": ["busybox:save", "example.com/team/app:v2"], "Layers": layer_paths}]);
    file(
        &mut b,
        "manifest.json",
        0o644,
        &serde_json::to_vec(&manifest).unwrap(),
    );
    file(&mut b, "repositories", 0o644, b"{}");
    let archive = tmp.path().join("save.tar");
    fs::write(&archive, b.into_inner().unwrap()).unwrap();

    let store = Store::open(tmp.path().join("images")).unwrap();
    let mut refs: Vec<String> = import(&store, &archive)
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    refs.sort();
    assert_eq!(
        refs,
        vec!["docker.io/library/busybox:save", "example.com/team/app:v2"]
    );
    let a = store.resolve("busybox:save").unwrap();
    let b = store.resolve("example.com/team/app:v2").unwrap();
    assert_eq!(a.id(), b.id());
    assert_eq!(a.id(), digest_of(&image.config));
    // Removing by image ID removes both references.
    let rootfs = tmp.path().join("flat");
    unpack_image(&store, &a, &rootfs).unwrap();
    check_rootfs(&rootfs);
    assert_eq!(
        store
            .remove(&a.id()["sha256:".len().."sha256:".len() + 12])
            .unwrap()
            .len(),
        2
    );
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn bad_archives_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("images")).unwrap();
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let err = import(&store, &empty).unwrap_err();
    assert!(
        err.to_string().contains("neither an OCI image layout"),
        "{err}"
    );

    // A layout whose layer tries to climb out of the root.
    let mut h = tar::Header::new_old();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(0);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.as_old_mut().name[..12].copy_from_slice(b"../../escape");
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, std::io::empty()).unwrap();
    let evil = b.into_inner().unwrap();
    let config = serde_json::to_vec(&json!({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[digest_of(&evil)]}})).unwrap();
    let manifest = serde_json::to_vec(&json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,
        "config":{"mediaType":OCI_CONFIG,"digest":digest_of(&config),"size":config.len()},
        "layers":[{"mediaType":OCI_LAYER,"digest":digest_of(&evil),"size":evil.len()}]}))
    .unwrap();
    let image = TestImage {
        layers: vec![(evil.clone(), OCI_LAYER, evil)],
        config,
        manifest,
    };
    let layout = tmp.path().join("evil");
    write_oci_layout(&image, &layout, "evil:1");
    import(&store, &layout).unwrap();
    let record = store.resolve("evil:1").unwrap();
    let err = unpack_image(&store, &record, &tmp.path().join("root/a/b")).unwrap_err();
    assert!(
        err.to_string().contains("escapes the root filesystem"),
        "{err}"
    );
    assert!(!tmp.path().join("root/escape").exists());
}

#[test]
fn overlay_rootfs_mount_write_cleanup() {
    if !is_root() {
        eprintln!("skipped: overlayfs needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let image = build_image();
    let layout = tmp.path().join("layout");
    write_oci_layout(&image, &layout, "busybox:overlay");
    let store = Store::open(tmp.path().join("images")).unwrap();
    import(&store, &layout).unwrap();
    let record = store.resolve("busybox:overlay").unwrap();

    let c1 = tmp.path().join("containers/c1");
    let c2 = tmp.path().join("containers/c2");
    let r1 = prepare_rootfs(&store, &record, &c1).unwrap();
    let r2 = prepare_rootfs(&store, &record, &c2).unwrap();
    assert_eq!(r1.layers, r2.layers, "layers are shared between containers");
    assert!(is_mounted(&r1.path));
    check_rootfs(&r1.path);
    // Idempotent for an agent that restarts next to a running container.
    assert_eq!(prepare_rootfs(&store, &record, &c1).unwrap(), r1);

    fs::write(r1.path.join("hello"), b"from c1").unwrap();
    fs::remove_file(r1.path.join("etc/keep")).unwrap();
    assert_eq!(fs::read(r1.upper.join("hello")).unwrap(), b"from c1");
    assert!(!r2.path.join("hello").exists(), "uppers are per container");
    assert!(r2.path.join("etc/keep").exists());

    // Removing the image while containers use it keeps their layers.
    store.remove("busybox:overlay").unwrap();
    for layer in &r1.layers {
        assert!(
            layer.is_dir(),
            "{} was collected while mounted",
            layer.display()
        );
    }

    cleanup_rootfs(&store, &c1).unwrap();
    cleanup_rootfs(&store, &c2).unwrap();
    cleanup_rootfs(&store, &c2).unwrap();
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        !mounts.contains(tmp.path().to_str().unwrap()),
        "left mounted:\n{mounts}"
    );
    assert!(!c1.join("rootfs").exists() && !c1.join("upper").exists() && !c1.join("work").exists());
    // With no container left, garbage collection takes the snapshots.
    store.gc().unwrap();
    assert!(r1.layers.iter().all(|l| !l.exists()));
}

/// A `docker-registry` on a free 127.0.0.1 port, killed by PID on drop.
struct Registry {
    child: Child,
    addr: String,
}

impl Registry {
    fn start(dir: &Path) -> Registry {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.join("registry.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("apt docker-registry provides docker-registry");
        let registry = Registry { child, addr };
        for _ in 0..100 {
            if std::net::TcpStream::connect(&registry.addr).is_ok() {
                return registry;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("docker-registry did not listen on {}", registry.addr);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn push(image: &TestImage, reference: &str) {
    use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });
    let layers: Vec<ImageLayer> = image
        .layers
        .iter()
        .map(|(blob, media, _)| ImageLayer::new(blob.clone(), media.to_string(), None))
        .collect();
    let config = Config::new(image.config.clone(), OCI_CONFIG.to_string(), None);
    let manifest: oci_client::manifest::OciImageManifest =
        serde_json::from_slice(&image.manifest).unwrap();
    let reference: oci_client::Reference = reference.parse().unwrap();
    client
        .push(
            &reference,
            &layers,
            config,
            &oci_client::secrets::RegistryAuth::Anonymous,
            Some(manifest),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_from_a_local_registry_and_through_a_mirror() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(tmp.path());
    let image = build_image();
    push(&image, &format!("{}/test/busybox:1.0", registry.addr)).await;
    push(
        &image,
        &format!("{}/library/busybox:mirrored", registry.addr),
    )
    .await;

    let store = Store::open(tmp.path().join("images")).unwrap();
    let puller = Puller::new(RegistryConfig {
        plain_http: vec![registry.addr.clone()],
        ..Default::default()
    });
    let seen: Mutex<BTreeMap<String, LayerProgress>> = Mutex::new(BTreeMap::new());
    let calls = AtomicU64::new(0);
    let progress = |p: LayerProgress| {
        calls.fetch_add(1, Ordering::Relaxed);
        seen.lock().unwrap().insert(p.digest.clone(), p);
    };
    let reference = ImageRef::parse(&format!("{}/test/busybox:1.0", registry.addr)).unwrap();
    let record = puller
        .pull(&store, &reference, &Credentials::Anonymous, &progress)
        .await
        .unwrap();
    // oci-client re-serialises the manifest on push, so compare what it points at.
    assert_eq!(record.config_digest, digest_of(&image.config));
    assert_eq!(
        store
            .read_blob(&record.manifest_digest)
            .map(|b| digest_of(&b))
            .unwrap(),
        record.manifest_digest
    );
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.len(), 2, "progress for each layer");
    for (blob, _, _) in &image.layers {
        let p = &seen[&digest_of(blob)];
        assert_eq!((p.done, p.total), (blob.len() as u64, blob.len() as u64));
    }
    assert!(calls.load(Ordering::Relaxed) >= 4);
    let rootfs = tmp.path().join("pulled");
    unpack_image(&store, &record, &rootfs).unwrap();
    check_rootfs(&rootfs);

    // Pulling again finds every blob present; a pull by digest matches the stored image.
    let by_digest = reference.with_digest(&record.manifest_digest);
    let again = puller
        .pull(&store, &by_digest, &Credentials::Anonymous, &|_| {})
        .await
        .unwrap();
    assert_eq!(again.config_digest, record.config_digest);

    // Unknown images are a non-retryable "not found" that says what to do.
    let missing = ImageRef::parse(&format!("{}/test/nope:1", registry.addr)).unwrap();
    let err = puller
        .pull(&store, &missing, &Credentials::Anonymous, &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::NotFound { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("skiff image import"), "{err}");

    // docker.io through the mirror, in a fresh store; the reference keeps its docker.io name.
    let mirrored_store = Store::open(tmp.path().join("images-mirror")).unwrap();
    let mirrors = Puller::new(RegistryConfig {
        mirrors: BTreeMap::from([(
            "docker.io".to_string(),
            vec![format!("http://{}", registry.addr)],
        )]),
        ..Default::default()
    });
    let hub = ImageRef::parse("busybox:mirrored").unwrap();
    let record = mirrors
        .pull(&mirrored_store, &hub, &Credentials::Anonymous, &|_| {})
        .await
        .unwrap();
    assert_eq!(
        record.reference.to_string(),
        "docker.io/library/busybox:mirrored"
    );
    assert_eq!(mirrored_store.list().unwrap().len(), 1);

    // A registry nobody listens on is a retryable network error.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let offline = Puller::new(RegistryConfig {
        plain_http: vec![format!("127.0.0.1:{closed}")],
        ..Default::default()
    });
    let err = offline
        .pull(
            &store,
            &ImageRef::parse(&format!("127.0.0.1:{closed}/x/y:1")).unwrap(),
            &Credentials::Anonymous,
            &|_| {},
        )
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    drop(registry);
}
