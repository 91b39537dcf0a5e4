//! Component-test support: an in-process API server on the memory store, and a kube client
//! pointed at it over loopback HTTP (exactly how the controllers talk to `skiff server`).

#![allow(dead_code)]

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

/// A running in-process API server; dropping it shuts the server down.
pub struct TestApi {
    pub client: kube::Client,
    pub url: String,
    pub shutdown: CancellationToken,
}

impl Drop for TestApi {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts an API server on 127.0.0.1:0 with a fresh memory store and waits until it is ready
/// (the system namespaces exist).
pub async fn start_api() -> TestApi {
    let shutdown = CancellationToken::new();
    let store: Arc<dyn store::Store> = Arc::new(store::memory::MemoryStore::new());
    let server = apiserver::ApiServer::bind(
        apiserver::ApiServerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            watch_cache_events: 10_000,
        },
        store,
        shutdown.clone(),
    )
    .await
    .expect("bind the API server");
    let url = format!("http://{}", server.local_addr().expect("local addr"));
    tokio::spawn(server.serve());
    let config = kube::Config::new(url.parse().expect("url"));
    let client = kube::Client::try_from(config).expect("kube client");
    // Ready when the bootstrap namespaces exist.
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(client.clone());
    for _ in 0..200 {
        if namespaces
            .get_opt("kube-system")
            .await
            .ok()
            .flatten()
            .is_some()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    TestApi {
        client,
        url,
        shutdown,
    }
}
