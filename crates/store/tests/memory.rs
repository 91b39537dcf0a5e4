//! The in-memory backend against the shared conformance suite.

use store::{Backend, StoreConfig, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backend_conforms() {
    let store = store::open(&Backend::Memory, &StoreConfig::default())
        .await
        .expect("open memory store");
    conformance::run_all(store).await;
}
