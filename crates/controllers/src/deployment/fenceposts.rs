//! How far a RollingUpdate may go above and below `spec.replicas` (upstream deploymentutil
//! `MaxSurge`, `MaxUnavailable`, `ResolveFenceposts` and intstr's
//! `GetScaledValueFromIntOrPercent`): percentages of the desired replicas, surge rounded up,
//! unavailability rounded down, and never both zero.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// A `maxSurge`/`maxUnavailable` value that is neither an integer nor a percentage. Validation
/// refuses these, so this only shows for objects stored before validation existed; not
/// retryable until the spec changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FencepostError {
    #[error("invalid value for IntOrString: invalid type: string is not a percentage: {0:?}")]
    NotAPercentage(String),
    #[error("invalid value for IntOrString: invalid value {0:?}")]
    InvalidPercentage(String),
}

/// Upstream `GetScaledValueFromIntOrPercent`: an integer as is, `N%` of `total` rounded up or
/// down.
pub(crate) fn scaled_value(
    value: &IntOrString,
    total: i32,
    round_up: bool,
) -> Result<i32, FencepostError> {
    match value {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let digits = s
                .strip_suffix('%')
                .ok_or_else(|| FencepostError::NotAPercentage(s.clone()))?;
            let percent: i64 = digits
                .parse()
                .map_err(|_| FencepostError::InvalidPercentage(s.clone()))?;
            let product = percent.saturating_mul(i64::from(total));
            let scaled = if round_up {
                -(-product).div_euclid(100)
            } else {
                product.div_euclid(100)
            };
            Ok(scaled.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32)
        }
    }
}

/// The desired replicas (`spec.replicas`, defaulted to 1 by the API server).
pub(crate) fn desired_replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// True unless the strategy is Recreate (the server defaults an empty type to RollingUpdate).
pub(crate) fn is_rolling_update(d: &Deployment) -> bool {
    strategy_type(d) == "RollingUpdate"
}

/// `spec.strategy.type`, with the API server's default.
pub(crate) fn strategy_type(d: &Deployment) -> &str {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .filter(|t| !t.is_empty())
        .unwrap_or("RollingUpdate")
}

/// Upstream `ResolveFenceposts`: (surge, unavailable) for `desired` replicas. Unset values count
/// as 0; if both resolve to 0 (a small percentage rounded down), unavailability becomes 1 so
/// the rollout can move at all.
pub(crate) fn resolve_fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    desired: i32,
) -> Result<(i32, i32), FencepostError> {
    let zero = IntOrString::Int(0);
    let surge = scaled_value(max_surge.unwrap_or(&zero), desired, true)?;
    let unavailable = scaled_value(max_unavailable.unwrap_or(&zero), desired, false)?;
    if surge == 0 && unavailable == 0 {
        return Ok((0, 1));
    }
    Ok((surge, unavailable))
}

fn deployment_fenceposts(d: &Deployment) -> Result<(i32, i32), FencepostError> {
    let rolling = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    resolve_fenceposts(
        rolling.and_then(|r| r.max_surge.as_ref()),
        rolling.and_then(|r| r.max_unavailable.as_ref()),
        desired_replicas(d),
    )
}

/// Upstream `MaxSurge`: 0 for Recreate (and, as upstream, for an invalid value).
pub(crate) fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling_update(d) {
        return 0;
    }
    deployment_fenceposts(d).map_or(0, |(surge, _)| surge)
}

/// Upstream `MaxUnavailable`: 0 for Recreate or zero replicas, never more than the replicas.
pub(crate) fn max_unavailable(d: &Deployment) -> i32 {
    let desired = desired_replicas(d);
    if !is_rolling_update(d) || desired == 0 {
        return 0;
    }
    deployment_fenceposts(d).map_or(0, |(_, unavailable)| unavailable.min(desired))
}

/// The surge, or the error an invalid value gives (upstream `NewRSNewReplicas` reports it).
pub(crate) fn checked_max_surge(d: &Deployment) -> Result<i32, FencepostError> {
    let rolling = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let zero = IntOrString::Int(0);
    scaled_value(
        rolling.and_then(|r| r.max_surge.as_ref()).unwrap_or(&zero),
        desired_replicas(d),
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.to_string())
    }

    fn deployment(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
                "template": {"metadata": {"labels": {"app": "web"}}},
            },
        }))
        .expect("deployment")
    }

    #[test]
    fn percentages_round_surge_up_and_unavailable_down() {
        assert_eq!(scaled_value(&pct("25%"), 10, true), Ok(3));
        assert_eq!(scaled_value(&pct("25%"), 10, false), Ok(2));
        assert_eq!(scaled_value(&pct("25%"), 3, true), Ok(1));
        assert_eq!(scaled_value(&pct("25%"), 3, false), Ok(0));
        assert_eq!(scaled_value(&IntOrString::Int(2), 3, false), Ok(2));
    }

    #[test]
    fn malformed_values_are_errors() {
        assert!(matches!(
            scaled_value(&pct("25"), 4, true),
            Err(FencepostError::NotAPercentage(_))
        ));
        assert!(matches!(
            scaled_value(&pct("x%"), 4, true),
            Err(FencepostError::InvalidPercentage(_))
        ));
    }

    #[test]
    fn both_zero_after_rounding_allows_one_unavailable() {
        assert_eq!(
            resolve_fenceposts(Some(&pct("10%")), Some(&pct("10%")), 3),
            Ok((1, 0))
        );
        assert_eq!(
            resolve_fenceposts(Some(&pct("0%")), Some(&pct("10%")), 3),
            Ok((0, 1))
        );
    }

    #[test]
    fn max_unavailable_is_capped_at_the_replicas() {
        let d = deployment(2, IntOrString::Int(1), IntOrString::Int(5));
        assert_eq!(max_unavailable(&d), 2);
        assert_eq!(max_surge(&d), 1);
        let zero = deployment(0, IntOrString::Int(1), IntOrString::Int(1));
        assert_eq!(max_unavailable(&zero), 0);
    }

    #[test]
    fn recreate_has_no_fenceposts() {
        let mut d = deployment(4, IntOrString::Int(1), IntOrString::Int(1));
        if let Some(strategy) = d.spec.as_mut().and_then(|s| s.strategy.as_mut()) {
            strategy.type_ = Some("Recreate".into());
        }
        assert_eq!(max_surge(&d), 0);
        assert_eq!(max_unavailable(&d), 0);
    }
}
