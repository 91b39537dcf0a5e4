//! Leader election on a `coordination.k8s.io/v1` Lease in `kube-system`, with client-go's
//! `tools/leaderelection` semantics, so that of several `skiff server` processes sharing one
//! store only one runs the controllers at a time.
//!
//! * Contending: read the Lease every retry period (jittered by up to 1.2×, like client-go's
//!   `JitterUntil`). An absent Lease is created; one with an empty `holderIdentity` (released)
//!   or whose record has not changed for `leaseDurationSeconds` is taken over. Every write
//!   carries the `resourceVersion` that was read, so two contenders racing for one expired
//!   Lease cannot both win: the loser gets 409 Conflict.
//! * Leading: `work` runs on its own task under a child token; the Lease is renewed every
//!   retry period. A renewal round that has not succeeded within `renew_deadline` means
//!   leadership is lost: the work is cancelled and awaited, then we contend again.
//! * Shutdown (`ctx.shutdown`): the work is cancelled and awaited, then the Lease is released
//!   (client-go's `ReleaseOnCancel`: empty holder, `leaseDurationSeconds: 1`) so another
//!   contender takes over at its next retry instead of waiting out the lease.
//!
//! Expiry is judged from when *this* process last saw the record change, not from the
//! `renewTime` written by the holder: client-go does the same so that clock skew between
//! servers cannot make a live leader look expired.
//!
//! Acquiring and losing leadership is recorded as a core/v1 Event on the Lease (reason
//! `LeaderElection`, "<identity> became leader" / "<identity> stopped leading"), as client-go's
//! resource lock does.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, PostParams};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn};

use crate::Context;
use crate::error_chain;

/// Leader Leases live here, like kube-controller-manager's and kube-scheduler's.
pub const LEASE_NAMESPACE: &str = "kube-system";

/// client-go's `JitterFactor`: waits between acquire attempts are `retry * (1 + rand * 1.2)`,
/// and the renew deadline must exceed `retry * 1.2`.
const JITTER_FACTOR: f64 = 1.2;

/// Errors of leader election. Only `InvalidTimings` and `EmptyIdentity` reach the caller of
/// [`run_with_leadership`] (not retryable: fix the configuration); the API errors are retried
/// every retry period and only logged.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error(
        "invalid leader election timings: {0} (ControllersConfig lease_duration/renew_deadline/retry_period)"
    )]
    InvalidTimings(String),
    #[error("leader election identity is empty (ControllersConfig.identity)")]
    EmptyIdentity,
    #[error("reading Lease {LEASE_NAMESPACE}/{name}")]
    GetLease {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("creating Lease {LEASE_NAMESPACE}/{name}")]
    CreateLease {
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Includes 409 Conflict: another contender wrote the Lease since we read it.
    #[error("updating Lease {LEASE_NAMESPACE}/{name}")]
    UpdateLease {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("Lease {LEASE_NAMESPACE}/{name}: request timed out after {after:?}")]
    Timeout { name: String, after: Duration },
}

/// Runs `work` while this process holds the Lease `kube-system/<lease_name>`.
///
/// `work` gets a token that is cancelled when leadership is lost or on shutdown; it must
/// return soon after. When leadership is lost we contend again and, on winning, call `work`
/// afresh. If `work` returns on its own while we lead, the Lease is released so another
/// server can take over, and we contend again after a retry period. Returns `Ok(())` once
/// `ctx.shutdown` is cancelled (after the work has ended and the Lease has been released), or
/// an error at once if the timings in `ctx.config` cannot give safe leader election.
pub async fn run_with_leadership<F, Fut>(
    ctx: Context,
    lease_name: &str,
    work: F,
) -> Result<(), LeaderError>
where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let timings = Timings::new(
        ctx.config.lease_duration,
        ctx.config.renew_deadline,
        ctx.config.retry_period,
    )?;
    if ctx.config.identity.is_empty() {
        return Err(LeaderError::EmptyIdentity);
    }
    let mut elector = LeaderElector::new(
        ctx.client.clone(),
        lease_name,
        &ctx.config.identity,
        timings,
    );
    let shutdown = ctx.shutdown.clone();
    let mut state = State::Contending;
    loop {
        state = match state {
            State::Contending => {
                if elector.acquire(&shutdown).await {
                    info!(lease = lease_name, identity = %elector.identity, "became leader");
                    elector.record_event("became leader").await;
                    let token = shutdown.child_token();
                    // Aborted if this future is dropped, so the work never outlives the election.
                    let task = AbortOnDropHandle::new(tokio::spawn(work(token.clone())));
                    State::Leading { token, task }
                } else {
                    State::Done
                }
            }
            State::Leading { token, mut task } => {
                let end = elector.renew_until_lost(&shutdown, &mut task).await;
                token.cancel();
                // Wait for the work to end before anything else, so that this process never
                // runs two copies of it.
                if end != LeadEnd::WorkEnded
                    && let Err(e) = (&mut task).await
                {
                    warn!(lease = lease_name, error = %e, "leader work panicked");
                }
                match end {
                    LeadEnd::Lost => {
                        warn!(lease = lease_name, identity = %elector.identity, "leadership lost");
                        elector.record_event("stopped leading").await;
                        State::Contending
                    }
                    LeadEnd::WorkEnded => {
                        warn!(
                            lease = lease_name,
                            "leader work ended on its own; releasing the lease"
                        );
                        elector.release().await;
                        elector.record_event("stopped leading").await;
                        tokio::select! {
                            _ = shutdown.cancelled() => State::Done,
                            _ = tokio::time::sleep(timings.retry_period) => State::Contending,
                        }
                    }
                    LeadEnd::Shutdown => {
                        elector.release().await;
                        elector.record_event("stopped leading").await;
                        State::Done
                    }
                }
            }
            State::Done => return Ok(()),
        };
    }
}

/// The election loop, one state at a time.
enum State {
    /// Not leading: try to acquire every (jittered) retry period until we win or shut down.
    Contending,
    /// Leading: `task` runs the work under `token`; the Lease is renewed every retry period.
    Leading {
        token: CancellationToken,
        task: AbortOnDropHandle<()>,
    },
    /// Shut down: the work has ended and the Lease was released.
    Done,
}

/// Why a term of leadership ended.
#[derive(Debug, PartialEq, Eq)]
enum LeadEnd {
    /// A renewal round failed for `renew_deadline`.
    Lost,
    /// The work returned (or panicked) by itself.
    WorkEnded,
    /// `ctx.shutdown` was cancelled.
    Shutdown,
}

/// Validated timings (client-go `NewLeaderElector` rejects the same combinations).
#[derive(Clone, Copy, Debug)]
struct Timings {
    lease_duration: Duration,
    renew_deadline: Duration,
    retry_period: Duration,
}

impl Timings {
    fn new(
        lease_duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    ) -> Result<Self, LeaderError> {
        if lease_duration.is_zero() || renew_deadline.is_zero() || retry_period.is_zero() {
            return Err(LeaderError::InvalidTimings(format!(
                "all must be greater than zero (lease_duration {lease_duration:?}, renew_deadline {renew_deadline:?}, retry_period {retry_period:?})"
            )));
        }
        if lease_duration <= renew_deadline {
            return Err(LeaderError::InvalidTimings(format!(
                "lease_duration ({lease_duration:?}) must be greater than renew_deadline ({renew_deadline:?})"
            )));
        }
        if renew_deadline.as_secs_f64() <= retry_period.as_secs_f64() * JITTER_FACTOR {
            return Err(LeaderError::InvalidTimings(format!(
                "renew_deadline ({renew_deadline:?}) must be greater than retry_period ({retry_period:?}) * {JITTER_FACTOR}"
            )));
        }
        Ok(Self {
            lease_duration,
            renew_deadline,
            retry_period,
        })
    }

    /// `leaseDurationSeconds` is whole seconds; round up so that others never consider the
    /// Lease expired sooner than we do.
    fn lease_duration_seconds(&self) -> i32 {
        let secs =
            self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        i32::try_from(secs).unwrap_or(i32::MAX)
    }

    /// A wait of `retry_period * (1 + rand * 1.2)` (client-go `wait.Jitter`).
    fn jittered_retry(&self) -> Duration {
        // A fresh `RandomState` is randomly seeded: enough randomness to spread contenders.
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let fraction = (random % 10_000) as f64 / 10_000.0;
        self.retry_period.mul_f64(1.0 + fraction * JITTER_FACTOR)
    }
}

/// The last Lease record this process saw, and when it first saw it (monotonic clock).
struct Observation {
    lease: Lease,
    spec: LeaseSpec,
    at: Instant,
}

/// What a contender may do with the Lease record it just read.
#[derive(Debug, PartialEq)]
enum Claim {
    /// Another holder's Lease is still valid: wait.
    HeldByOther(String),
    /// Write this record (acquire, take over, or renew).
    Write(LeaseSpec),
}

/// client-go's `tryAcquireOrRenew` decision: `valid` says whether the record has changed
/// within its `leaseDurationSeconds` as observed locally.
fn claim(
    old: &LeaseSpec,
    identity: &str,
    valid: bool,
    lease_duration_seconds: i32,
    now: Timestamp,
) -> Claim {
    let holder = old.holder_identity.as_deref().unwrap_or_default();
    if !holder.is_empty() && holder != identity && valid {
        return Claim::HeldByOther(holder.to_string());
    }
    let now = MicroTime(now);
    let mut spec = old.clone();
    spec.holder_identity = Some(identity.to_string());
    spec.lease_duration_seconds = Some(lease_duration_seconds);
    spec.renew_time = Some(now.clone());
    if holder == identity {
        // Renewal keeps the acquisition time and transition count.
        spec.acquire_time = old.acquire_time.clone().or_else(|| Some(now.clone()));
        spec.lease_transitions = Some(old.lease_transitions.unwrap_or(0));
    } else {
        spec.acquire_time = Some(now);
        spec.lease_transitions = Some(old.lease_transitions.unwrap_or(0).saturating_add(1));
    }
    Claim::Write(spec)
}

/// The record a leader writes when it steps down (client-go `release`).
fn released(old: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(String::new()),
        lease_duration_seconds: Some(1),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: old.lease_transitions,
        ..old.clone()
    }
}

/// One contender for one Lease.
struct LeaderElector {
    leases: Api<Lease>,
    events: Api<Event>,
    name: String,
    identity: String,
    timings: Timings,
    observed: Option<Observation>,
}

impl LeaderElector {
    fn new(client: kube::Client, name: &str, identity: &str, timings: Timings) -> Self {
        Self {
            leases: Api::namespaced(client.clone(), LEASE_NAMESPACE),
            events: Api::namespaced(client, LEASE_NAMESPACE),
            name: name.to_string(),
            identity: identity.to_string(),
            timings,
            observed: None,
        }
    }

    /// Whether the last record we saw names us as holder.
    fn is_leader(&self) -> bool {
        self.observed
            .as_ref()
            .and_then(|o| o.spec.holder_identity.as_deref())
            == Some(self.identity.as_str())
    }

    /// Tries until the Lease is ours (`true`) or shutdown (`false`).
    async fn acquire(&mut self, shutdown: &CancellationToken) -> bool {
        loop {
            if shutdown.is_cancelled() {
                return false;
            }
            match self.try_acquire_or_renew().await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(e) => {
                    debug!(lease = %self.name, error = %error_chain(&e), "failed to acquire lease")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(self.timings.jittered_retry()) => {}
            }
        }
    }

    /// Renews every retry period while the work runs (client-go `renew`).
    async fn renew_until_lost(
        &mut self,
        shutdown: &CancellationToken,
        task: &mut AbortOnDropHandle<()>,
    ) -> LeadEnd {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return LeadEnd::Shutdown,
                joined = &mut *task => {
                    if let Err(e) = joined {
                        warn!(lease = %self.name, error = %e, "leader work panicked");
                    }
                    return LeadEnd::WorkEnded;
                }
                _ = tokio::time::sleep(self.timings.retry_period) => {}
            }
            // One renewal round: retry every retry period until the renew deadline.
            let deadline = Instant::now() + self.timings.renew_deadline;
            loop {
                let attempt = tokio::time::timeout_at(deadline, self.try_acquire_or_renew());
                let outcome = tokio::select! {
                    _ = shutdown.cancelled() => return LeadEnd::Shutdown,
                    outcome = attempt => outcome,
                };
                match outcome {
                    Ok(Ok(true)) => break,
                    Ok(Ok(false)) => {
                        // Someone else holds it: only possible if our record was overwritten.
                        return LeadEnd::Lost;
                    }
                    Ok(Err(e)) => {
                        debug!(lease = %self.name, error = %error_chain(&e), "failed to renew lease")
                    }
                    Err(_) => return LeadEnd::Lost,
                }
                if Instant::now() + self.timings.retry_period >= deadline {
                    return LeadEnd::Lost;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return LeadEnd::Shutdown,
                    _ = tokio::time::sleep(self.timings.retry_period) => {}
                }
            }
        }
    }

    /// One read-decide-write of the Lease; `Ok(true)` when we hold it afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaderError> {
        let now = Timestamp::now();
        let current =
            self.leases
                .get_opt(&self.name)
                .await
                .map_err(|source| LeaderError::GetLease {
                    name: self.name.clone(),
                    source,
                })?;
        let Some(lease) = current else {
            let spec = match claim(
                &LeaseSpec::default(),
                &self.identity,
                false,
                self.timings.lease_duration_seconds(),
                now,
            ) {
                Claim::Write(spec) => LeaseSpec {
                    lease_transitions: Some(0),
                    ..spec
                },
                Claim::HeldByOther(_) => return Ok(false),
            };
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(LEASE_NAMESPACE.to_string()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec),
            };
            let created = self
                .leases
                .create(&PostParams::default(), &lease)
                .await
                .map_err(|source| LeaderError::CreateLease {
                    name: self.name.clone(),
                    source,
                })?;
            self.observe(created);
            return Ok(true);
        };

        self.observe(lease);
        let Some(observed) = self.observed.as_ref() else {
            return Ok(false);
        };
        let ttl =
            Duration::from_secs(observed.spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
        let valid = observed.at + ttl > Instant::now();
        match claim(
            &observed.spec,
            &self.identity,
            valid,
            self.timings.lease_duration_seconds(),
            now,
        ) {
            Claim::HeldByOther(holder) => {
                debug!(lease = %self.name, %holder, "lease is held by another contender and has not expired");
                Ok(false)
            }
            Claim::Write(spec) => {
                // The write carries the resourceVersion we read: a racing contender gets 409.
                let mut next = observed.lease.clone();
                next.spec = Some(spec);
                let updated = self
                    .leases
                    .replace(&self.name, &PostParams::default(), &next)
                    .await
                    .map_err(|source| LeaderError::UpdateLease {
                        name: self.name.clone(),
                        source,
                    })?;
                self.observe(updated);
                Ok(true)
            }
        }
    }

    /// Remembers a record, restarting the expiry clock only when it changed.
    fn observe(&mut self, lease: Lease) {
        let spec = lease.spec.clone().unwrap_or_default();
        match &mut self.observed {
            Some(o) if o.spec == spec => o.lease = lease,
            _ => {
                self.observed = Some(Observation {
                    lease,
                    spec,
                    at: Instant::now(),
                })
            }
        }
    }

    /// Steps down by clearing the holder (client-go `ReleaseOnCancel`). Bounded by the renew
    /// deadline: at shutdown the API server may already be gone, and the Lease then simply
    /// expires.
    async fn release(&mut self) {
        if !self.is_leader() {
            return;
        }
        let Some(observed) = self.observed.as_ref() else {
            return;
        };
        let mut next = observed.lease.clone();
        next.spec = Some(released(&observed.spec, Timestamp::now()));
        let params = PostParams::default();
        let write = self.leases.replace(&self.name, &params, &next);
        match tokio::time::timeout(self.timings.renew_deadline, write).await {
            Ok(Ok(updated)) => {
                info!(lease = %self.name, identity = %self.identity, "released lease");
                self.observe(updated);
            }
            Ok(Err(source)) => {
                let e = LeaderError::UpdateLease {
                    name: self.name.clone(),
                    source,
                };
                warn!(error = %error_chain(&e), "failed to release lease; it will expire");
            }
            Err(_) => {
                let e = LeaderError::Timeout {
                    name: self.name.clone(),
                    after: self.timings.renew_deadline,
                };
                warn!(error = %error_chain(&e), "failed to release lease; it will expire");
            }
        }
    }

    /// Records a `LeaderElection` Event on the Lease. Best effort, like client-go's recorder.
    async fn record_event(&self, what: &str) {
        let now = Timestamp::now();
        let seconds = Timestamp::from_second(now.as_second()).unwrap_or(now);
        let lease_meta = self
            .observed
            .as_ref()
            .map(|o| o.lease.metadata.clone())
            .unwrap_or_default();
        let event = Event {
            metadata: ObjectMeta {
                // Upstream names events `<object>.<hex nanoseconds>`.
                name: Some(format!("{}.{:x}", self.name, now.as_nanosecond())),
                namespace: Some(LEASE_NAMESPACE.to_string()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some("coordination.k8s.io/v1".into()),
                kind: Some("Lease".into()),
                name: Some(self.name.clone()),
                namespace: Some(LEASE_NAMESPACE.to_string()),
                uid: lease_meta.uid,
                resource_version: lease_meta.resource_version,
                ..ObjectReference::default()
            },
            reason: Some("LeaderElection".into()),
            message: Some(format!("{} {what}", self.identity)),
            type_: Some("Normal".into()),
            source: Some(EventSource {
                component: Some(self.name.clone()),
                host: None,
            }),
            reporting_component: Some(self.name.clone()),
            reporting_instance: Some(self.identity.clone()),
            first_timestamp: Some(Time(seconds)),
            last_timestamp: Some(Time(seconds)),
            count: Some(1),
            ..Event::default()
        };
        if let Err(e) = self.events.create(&PostParams::default(), &event).await {
            debug!(lease = %self.name, error = %e, "failed to record leader election event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("timestamp")
    }

    fn held(holder: &str, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(ts(100))),
            renew_time: Some(MicroTime(ts(110))),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_valid_lease_of_another_holder_is_left_alone() {
        assert_eq!(
            claim(&held("a", 3), "b", true, 15, ts(120)),
            Claim::HeldByOther("a".into())
        );
    }

    #[test]
    fn an_expired_lease_is_taken_over_with_a_new_transition() {
        let Claim::Write(spec) = claim(&held("a", 3), "b", false, 15, ts(200)) else {
            panic!("expected a write")
        };
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.acquire_time, Some(MicroTime(ts(200))));
        assert_eq!(spec.renew_time, Some(MicroTime(ts(200))));
        assert_eq!(spec.lease_duration_seconds, Some(15));
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let spec = released(&held("a", 3), ts(150));
        assert_eq!(spec.holder_identity.as_deref(), Some(""));
        assert_eq!(spec.lease_duration_seconds, Some(1));
        assert_eq!(spec.lease_transitions, Some(3));
        // Even while the released record is "valid", an empty holder can be claimed.
        let Claim::Write(next) = claim(&spec, "b", true, 15, ts(151)) else {
            panic!("expected a write")
        };
        assert_eq!(next.holder_identity.as_deref(), Some("b"));
        assert_eq!(next.lease_transitions, Some(4));
    }

    #[test]
    fn renewal_keeps_acquire_time_and_transitions() {
        let Claim::Write(spec) = claim(&held("a", 3), "a", true, 15, ts(120)) else {
            panic!("expected a write")
        };
        assert_eq!(spec.acquire_time, Some(MicroTime(ts(100))));
        assert_eq!(spec.renew_time, Some(MicroTime(ts(120))));
        assert_eq!(spec.lease_transitions, Some(3));
    }

    #[test]
    fn other_spec_fields_survive_a_claim() {
        let old = LeaseSpec {
            strategy: Some("OldestEmulationVersion".into()),
            ..held("a", 0)
        };
        let Claim::Write(spec) = claim(&old, "b", false, 15, ts(200)) else {
            panic!("expected a write")
        };
        assert_eq!(spec.strategy.as_deref(), Some("OldestEmulationVersion"));
    }

    #[test]
    fn timings_are_validated_like_client_go() {
        let s = Duration::from_secs;
        assert!(Timings::new(s(15), s(10), s(2)).is_ok());
        assert!(
            Timings::new(
                Duration::from_millis(1000),
                Duration::from_millis(700),
                Duration::from_millis(200)
            )
            .is_ok()
        );
        assert!(matches!(
            Timings::new(s(10), s(10), s(2)),
            Err(LeaderError::InvalidTimings(_))
        ));
        assert!(matches!(
            Timings::new(s(15), s(2), s(2)),
            Err(LeaderError::InvalidTimings(_))
        ));
        assert!(matches!(
            Timings::new(s(15), s(10), s(0)),
            Err(LeaderError::InvalidTimings(_))
        ));
    }

    #[test]
    fn lease_duration_rounds_up_to_whole_seconds() {
        let t = Timings::new(
            Duration::from_millis(1500),
            Duration::from_millis(700),
            Duration::from_millis(200),
        )
        .expect("timings");
        assert_eq!(t.lease_duration_seconds(), 2);
        let t = Timings::new(
            Duration::from_secs(15),
            Duration::from_secs(10),
            Duration::from_secs(2),
        )
        .expect("timings");
        assert_eq!(t.lease_duration_seconds(), 15);
    }

    #[test]
    fn jitter_stays_within_client_go_bounds() {
        let t = Timings::new(
            Duration::from_secs(15),
            Duration::from_secs(10),
            Duration::from_secs(2),
        )
        .expect("timings");
        for _ in 0..100 {
            let d = t.jittered_retry();
            assert!(
                d >= Duration::from_secs(2) && d <= Duration::from_millis(4400),
                "{d:?}"
            );
        }
    }
}
