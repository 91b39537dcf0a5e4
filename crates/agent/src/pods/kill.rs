//! Stopping one container the way upstream's `killContainer` does: a Killing Event, the
//! preStop hook given the whole grace period, then the stop signal — the container's
//! `lifecycle.stopSignal`, else the image's `StopSignal`, else SIGTERM (the CRI runtimes' rule)
//! — with what is left of the grace period but never less than two seconds, then SIGKILL.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{LifecycleHandler, ObjectReference};
use nix::sys::signal::Signal;
use runtime::container::ShimClient;
use tokio::time::Instant;

use super::events::{self, PodEvents};
use super::hooks::{self, HookContext};

/// Upstream's `minimumGracePeriodInSeconds`: the stop signal always gets this long.
const MIN_GRACE: Duration = Duration::from_secs(2);
/// How long a SIGKILLed container gets to be reaped before the kill gives up waiting.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// A signal name or number as image configs and `lifecycle.stopSignal` write it (`SIGQUIT`,
/// `QUIT`, `3`), like containerd's `ParseSignal`.
pub(crate) fn parse_signal(value: &str) -> Option<Signal> {
    let value = value.trim();
    if let Ok(number) = value.parse::<i32>() {
        return Signal::try_from(number).ok();
    }
    let upper = value.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse().ok()
}

/// One container to stop.
pub(crate) struct ContainerKill {
    pub runtime_id: String,
    pub shim_socket: PathBuf,
    /// The Killing Event's message (upstream: `Stopping container main`, or why it is killed).
    pub message: String,
    /// The container as Events' involved object; `None` for a container no longer in the spec.
    pub reference: Option<ObjectReference>,
    pub events: PodEvents,
    /// The preStop hook and what it runs against.
    pub pre_stop: Option<(LifecycleHandler, HookContext)>,
    pub grace: Duration,
    pub signal: Signal,
}

impl ContainerKill {
    /// Stops the container; returns once it has exited (or could not be made to).
    pub async fn run(self) {
        if let Some(reference) = &self.reference {
            self.events
                .normal(reference.clone(), events::KILLING, self.message.clone());
        }
        let mut grace = self.grace;
        if let Some((handler, ctx)) = &self.pre_stop
            && !grace.is_zero()
        {
            let began = Instant::now();
            match tokio::time::timeout(grace, hooks::run(handler, ctx)).await {
                Ok(Ok(())) => {}
                Ok(Err(message)) => {
                    if let Some(reference) = &self.reference {
                        self.events.warning(
                            reference.clone(),
                            events::FAILED_PRE_STOP_HOOK,
                            message,
                        );
                    }
                }
                Err(_) => {
                    tracing::info!(container = %self.runtime_id, ?grace, "preStop hook not completed in grace period");
                }
            }
            // Upstream subtracts the hook's time in whole seconds.
            grace = grace.saturating_sub(Duration::from_secs(began.elapsed().as_secs()));
        }
        let grace = grace.max(MIN_GRACE);
        let Ok(mut shim) = ShimClient::connect(&self.shim_socket).await else {
            return;
        };
        let mut waiter = match ShimClient::connect(&self.shim_socket).await {
            Ok(w) => w,
            Err(_) => return,
        };
        if shim
            .kill(&self.runtime_id, self.signal as i32)
            .await
            .is_err()
        {
            // Not running any more.
            return;
        }
        let exited = tokio::time::timeout(grace, waiter.wait(&self.runtime_id)).await;
        if exited.is_ok() {
            return;
        }
        tracing::info!(container = %self.runtime_id, ?grace, "container did not stop within its grace period; killing it");
        let _ = shim.kill(&self.runtime_id, Signal::SIGKILL as i32).await;
        let mut waiter = match ShimClient::connect(&self.shim_socket).await {
            Ok(w) => w,
            Err(_) => return,
        };
        let _ = tokio::time::timeout(KILL_WAIT, waiter.wait(&self.runtime_id)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_short_name_or_number() {
        assert_eq!(parse_signal("SIGQUIT"), Some(Signal::SIGQUIT));
        assert_eq!(parse_signal("quit"), Some(Signal::SIGQUIT));
        assert_eq!(parse_signal("SIGRTMIN+3"), None);
        assert_eq!(parse_signal("15"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal(" SIGUSR1 "), Some(Signal::SIGUSR1));
        assert_eq!(parse_signal("SIGNOPE"), None);
        assert_eq!(parse_signal("999"), None);
    }
}
