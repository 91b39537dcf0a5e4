//! Leader election against a real in-process API server: two contenders, one leader, and
//! hand-over when the leader stops or its Lease goes stale.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use controllers::leader::{LEASE_NAMESPACE, LeaderError, run_with_leadership};
use controllers::{Context, ControllersConfig};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, ListParams, PostParams};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

fn context(client: &kube::Client, identity: &str) -> Context {
    Context {
        client: client.clone(),
        config: ControllersConfig {
            identity: identity.into(),
            lease_duration: Duration::from_millis(1000),
            renew_deadline: Duration::from_millis(700),
            retry_period: Duration::from_millis(200),
            ..ControllersConfig::default()
        },
        shutdown: CancellationToken::new(),
    }
}

/// Who is running the work right now: the identity's slot is 1 while its work runs.
#[derive(Default)]
struct Board {
    running: [AtomicUsize; 2],
    terms: [AtomicUsize; 2],
}

impl Board {
    fn leaders(&self) -> Vec<usize> {
        (0..2)
            .filter(|&i| self.running[i].load(Ordering::SeqCst) == 1)
            .collect()
    }
}

fn contender(
    ctx: Context,
    lease: &'static str,
    board: Arc<Board>,
    slot: usize,
) -> JoinHandle<Result<(), LeaderError>> {
    tokio::spawn(async move {
        run_with_leadership(ctx, lease, move |token: CancellationToken| {
            let board = board.clone();
            async move {
                board.terms[slot].fetch_add(1, Ordering::SeqCst);
                board.running[slot].store(1, Ordering::SeqCst);
                token.cancelled().await;
                board.running[slot].store(0, Ordering::SeqCst);
            }
        })
        .await
    })
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !check() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_of_two_contenders_leads_and_the_other_takes_over_on_stop() {
    let api = common::start_api().await;
    let board = Arc::new(Board::default());
    let a = context(&api.client, "contender-a");
    let b = context(&api.client, "contender-b");
    let a_task = contender(a.clone(), "test-lease", board.clone(), 0);
    let b_task = contender(b.clone(), "test-lease", board.clone(), 1);

    wait_for("a leader", Duration::from_secs(5), || {
        !board.leaders().is_empty()
    })
    .await;
    // Over several renewal periods there is never more than one leader.
    for _ in 0..40 {
        assert_eq!(board.leaders().len(), 1, "exactly one contender must lead");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let first = board.leaders()[0];
    let leases: Api<Lease> = Api::namespaced(api.client.clone(), LEASE_NAMESPACE);
    let lease = leases.get("test-lease").await.expect("lease");
    let spec = lease.spec.expect("lease spec");
    let names = ["contender-a", "contender-b"];
    assert_eq!(spec.holder_identity.as_deref(), Some(names[first]));
    assert_eq!(spec.lease_duration_seconds, Some(1));
    assert_eq!(spec.lease_transitions, Some(0));
    assert!(spec.acquire_time.is_some() && spec.renew_time.is_some());

    // Stop the leader: its work is cancelled, the Lease released, and the other takes over
    // well within the lease duration.
    let (leader_ctx, leader_task, other) = if first == 0 {
        (&a, a_task, 1)
    } else {
        (&b, b_task, 0)
    };
    leader_ctx.shutdown.cancel();
    let stopped_at = tokio::time::Instant::now();
    leader_task
        .await
        .expect("join")
        .expect("leader returns Ok on shutdown");
    assert_eq!(
        board.running[first].load(Ordering::SeqCst),
        0,
        "the stopped leader's work has ended"
    );
    wait_for(
        "the other contender to lead",
        Duration::from_secs(1),
        || board.leaders() == vec![other],
    )
    .await;
    assert!(
        stopped_at.elapsed() < Duration::from_secs(1),
        "took over within the lease duration"
    );

    let spec = leases
        .get("test-lease")
        .await
        .expect("lease")
        .spec
        .expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some(names[other]));
    assert_eq!(spec.lease_transitions, Some(1));

    // The story is told in Events on the Lease.
    let events: Api<Event> = Api::namespaced(api.client.clone(), LEASE_NAMESPACE);
    let messages: Vec<String> = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("LeaderElection"))
        .filter_map(|e| e.message)
        .collect();
    assert!(
        messages.contains(&format!("{} became leader", names[first])),
        "{messages:?}"
    );
    assert!(
        messages.contains(&format!("{} stopped leading", names[first])),
        "{messages:?}"
    );
    assert!(
        messages.contains(&format!("{} became leader", names[other])),
        "{messages:?}"
    );

    // Shutting the second one down releases the Lease: holder cleared, duration 1 s.
    let other_ctx = if other == 0 { &a } else { &b };
    other_ctx.shutdown.cancel();
    wait_for("the lease to be released", Duration::from_secs(2), || {
        board.leaders().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let spec = leases
        .get("test-lease")
        .await
        .expect("lease")
        .spec
        .expect("spec");
    assert_eq!(spec.holder_identity.as_deref().unwrap_or_default(), "");
    assert_eq!(spec.lease_duration_seconds, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_lease_is_taken_over_only_after_the_lease_duration() {
    let api = common::start_api().await;
    let leases: Api<Lease> = Api::namespaced(api.client.clone(), LEASE_NAMESPACE);
    // A holder that crashed without releasing: its record never changes again.
    let now = jiff::Timestamp::now();
    leases
        .create(
            &PostParams::default(),
            &Lease {
                metadata: ObjectMeta {
                    name: Some("stale".into()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some("crashed".into()),
                    lease_duration_seconds: Some(1),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(4),
                    ..LeaseSpec::default()
                }),
            },
        )
        .await
        .expect("create the stale lease");

    let board = Arc::new(Board::default());
    let ctx = context(&api.client, "successor");
    let started = tokio::time::Instant::now();
    let task = contender(ctx.clone(), "stale", board.clone(), 0);
    // Not before the record has been seen unchanged for leaseDurationSeconds …
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        board.leaders().is_empty(),
        "a lease that may still be live must not be taken"
    );
    // … but soon after.
    wait_for("the successor to lead", Duration::from_secs(3), || {
        board.leaders() == vec![0]
    })
    .await;
    assert!(started.elapsed() >= Duration::from_secs(1));
    let spec = leases
        .get("stale")
        .await
        .expect("lease")
        .spec
        .expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("successor"));
    assert_eq!(spec.lease_transitions, Some(5));

    ctx.shutdown.cancel();
    task.await.expect("join").expect("ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_is_taken_stops_its_work_and_contends_again() {
    let api = common::start_api().await;
    let board = Arc::new(Board::default());
    let ctx = context(&api.client, "first");
    let task = contender(ctx.clone(), "stolen", board.clone(), 0);
    wait_for("first to lead", Duration::from_secs(3), || {
        board.leaders() == vec![0]
    })
    .await;

    // Someone overwrites the Lease with a long, valid term (as a partitioned leader's
    // successor would): the next renewal sees another holder and the work is cancelled.
    let leases: Api<Lease> = Api::namespaced(api.client.clone(), LEASE_NAMESPACE);
    let mut lease = leases.get("stolen").await.expect("lease");
    let now = jiff::Timestamp::now();
    lease.spec = Some(LeaseSpec {
        holder_identity: Some("usurper".into()),
        lease_duration_seconds: Some(2),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(1),
        ..LeaseSpec::default()
    });
    leases
        .replace("stolen", &PostParams::default(), &lease)
        .await
        .expect("steal");
    wait_for("the work to stop", Duration::from_secs(2), || {
        board.leaders().is_empty()
    })
    .await;

    // The usurper never renews: after its 2 s term, "first" leads again with a new term.
    wait_for("first to lead again", Duration::from_secs(5), || {
        board.leaders() == vec![0]
    })
    .await;
    assert_eq!(board.terms[0].load(Ordering::SeqCst), 2);
    let spec = leases
        .get("stolen")
        .await
        .expect("lease")
        .spec
        .expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("first"));
    assert_eq!(spec.lease_transitions, Some(2));

    ctx.shutdown.cancel();
    task.await.expect("join").expect("ok");
}

#[tokio::test]
async fn unsafe_timings_are_refused() {
    let api = common::start_api().await;
    let mut ctx = context(&api.client, "x");
    ctx.config.renew_deadline = Duration::from_millis(1000);
    let result = run_with_leadership(ctx, "bad", |_token: CancellationToken| async {}).await;
    assert!(
        matches!(result, Err(LeaderError::InvalidTimings(_))),
        "{result:?}"
    );
}
