//! The etcd backend against a real etcd (`/usr/bin/etcd`) started on free 127.0.0.1 ports.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use store::conformance::{self, EtcdServer};
use store::{Backend, Bytes, StoreConfig, StoreError};

const ETCD: &str = "/usr/bin/etcd";

async fn start_etcd(dir: &Path) -> EtcdServer {
    EtcdServer::start(Path::new(ETCD), dir)
        .await
        .expect("start etcd")
}

fn backend(server: &EtcdServer) -> Backend {
    Backend::Etcd {
        endpoints: vec![server.endpoint().to_string()],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_backend_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_etcd(dir.path()).await;
    let store = store::open(&backend(&server), &StoreConfig::default())
        .await
        .expect("open etcd store");
    conformance::run_all(store).await;
}

/// Two Skiff servers sharing one etcd see each other's writes, through reads and watches, and
/// their creates race safely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_sharing_etcd_see_each_others_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_etcd(dir.path()).await;
    let first = store::open(&backend(&server), &StoreConfig::default())
        .await
        .expect("open");
    let second = store::open(&backend(&server), &StoreConfig::default())
        .await
        .expect("open");
    let mut watch = second.watch("/registry/", 0).await.expect("watch");
    let created = first
        .create("/registry/pods/default/a", Bytes::from_static(b"{}"))
        .await
        .expect("create");
    let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("event in time");
    assert_eq!(event.expect("stream item").expect("event").kv, created);
    assert_eq!(
        second.get("/registry/pods/default/a").await.expect("get"),
        Some(created)
    );
    match second
        .create("/registry/pods/default/a", Bytes::from_static(b"{}"))
        .await
    {
        Err(StoreError::AlreadyExists(_)) => {}
        other => panic!("create through the second server: expected AlreadyExists, got {other:?}"),
    }
}

/// With etcd gone, requests fail with the retryable `Unavailable` (not a hang, not a panic), and
/// an open watch ends with an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_etcd_is_unavailable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_etcd(dir.path()).await;
    let endpoint = backend(&server);
    let store = store::open(&endpoint, &StoreConfig::default())
        .await
        .expect("open");
    let mut watch = store.watch("/registry/", 0).await.expect("watch");
    drop(server);
    match store.create("/registry/x", Bytes::from_static(b"{}")).await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("create with etcd stopped: expected Unavailable, got {other:?}"),
    }
    match tokio::time::timeout(Duration::from_secs(30), watch.next()).await {
        Ok(Some(Err(StoreError::Unavailable(_)))) | Ok(None) => {}
        other => panic!("watch with etcd stopped: expected an Unavailable end, got {other:?}"),
    }
    match store::open(&endpoint, &StoreConfig::default()).await {
        Err(StoreError::Unavailable(_)) => {}
        Err(other) => panic!("open with etcd stopped: expected Unavailable, got {other}"),
        Ok(_) => panic!("open with etcd stopped must fail"),
    }
}
