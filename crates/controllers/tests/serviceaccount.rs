//! The ServiceAccount controller against a real in-process API server: every active
//! namespace gets a `default` ServiceAccount, and gets it back after it is deleted.

mod common;

use std::time::Duration;

use controllers::serviceaccount;
use controllers::{Context, ControllersConfig};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use tokio_util::sync::CancellationToken;

async fn wait_for_default(
    client: &kube::Client,
    namespace: &str,
    not_uid: Option<&str>,
) -> ServiceAccount {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    for _ in 0..100 {
        if let Some(sa) = accounts.get_opt("default").await.expect("get")
            && sa.metadata.uid.as_deref() != not_uid
        {
            return sa;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no default ServiceAccount in {namespace}");
}

#[tokio::test]
async fn every_namespace_has_a_default_service_account() {
    let api = common::start_api().await;
    let client = api.client.clone();
    let cancel = CancellationToken::new();
    let ctx = Context {
        client: client.clone(),
        config: ControllersConfig::default(),
        shutdown: api.shutdown.clone(),
    };
    tokio::spawn(serviceaccount::run(ctx, cancel.clone()));

    // Namespaces that existed before the controller started.
    wait_for_default(&client, "default", None).await;
    wait_for_default(&client, "kube-system", None).await;

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("team-a".into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    let first = wait_for_default(&client, "team-a", None).await;

    // Deleted: it comes back (a new object).
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "team-a");
    accounts
        .delete("default", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for_default(&client, "team-a", first.metadata.uid.as_deref()).await;

    // A terminating namespace gets nothing back (nobody finalizes it in this test, so it
    // stays Terminating).
    namespaces
        .delete("team-a", &DeleteParams::default())
        .await
        .expect("delete namespace");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = accounts.delete("default", &DeleteParams::default()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(accounts.get_opt("default").await.expect("get").is_none());
    cancel.cancel();
}
