//! [`IngressConfig`] (what `skiff server`/`skiff agent` pass in) and its validation into
//! [`ValidConfig`], which cannot hold a nonsensical combination.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Settings of the ingress controller and proxy. Defaults follow k3s's Traefik and
/// ingress-nginx: ports 80/443, 60 s upstream read timeout, 5 s connect timeout, 3 tries.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// Plain HTTP listener. Port 0 picks a free port (tests).
    pub http_listen: SocketAddr,
    /// HTTPS listener; `None` serves no TLS (and never redirects to HTTPS).
    pub https_listen: Option<SocketAddr>,
    /// The IngressClass name this controller owns and creates as the default class.
    pub class: String,
    /// Written to `status.loadBalancer.ingress[].ip` of every served Ingress (the node's
    /// addresses). Empty: status is left alone.
    pub status_addresses: Vec<IpAddr>,
    /// How long to wait for a backend's response headers (ingress-nginx proxy-read-timeout).
    pub upstream_timeout: Duration,
    /// How long one TCP connect to an endpoint may take before the next endpoint is tried
    /// (ingress-nginx proxy-connect-timeout).
    pub connect_timeout: Duration,
    /// Endpoints tried per request when connecting fails (ingress-nginx proxy-next-upstream-tries).
    pub max_attempts: usize,
    /// Idle keep-alive connections kept per endpoint (ingress-nginx upstream-keepalive-connections
    /// is per worker; this is per endpoint).
    pub idle_connections_per_endpoint: usize,
    /// How long an idle backend connection is kept (ingress-nginx upstream-keepalive-timeout).
    pub idle_timeout: Duration,
    /// How long open client connections may take to finish after shutdown starts.
    pub drain_timeout: Duration,
}

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig {
            http_listen: SocketAddr::from(([0, 0, 0, 0], 80)),
            https_listen: Some(SocketAddr::from(([0, 0, 0, 0], 443))),
            class: "skiff".to_string(),
            status_addresses: Vec::new(),
            upstream_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            max_attempts: 3,
            idle_connections_per_endpoint: 32,
            idle_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// A configuration the controller refuses, naming the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "ingress config: class {0:?} is not a valid IngressClass name (a lowercase DNS-1123 subdomain)"
    )]
    Class(String),
    #[error("ingress config: http_listen and https_listen are both {0}")]
    SameListen(SocketAddr),
    #[error("ingress config: {field} must be greater than zero")]
    Zero { field: &'static str },
}

/// A validated [`IngressConfig`].
#[derive(Debug, Clone)]
pub(crate) struct ValidConfig(IngressConfig);

impl std::ops::Deref for ValidConfig {
    type Target = IngressConfig;
    fn deref(&self) -> &IngressConfig {
        &self.0
    }
}

impl TryFrom<IngressConfig> for ValidConfig {
    type Error = ConfigError;

    fn try_from(config: IngressConfig) -> Result<Self, ConfigError> {
        if !is_dns1123_subdomain(&config.class) {
            return Err(ConfigError::Class(config.class));
        }
        if let Some(https) = config.https_listen
            && https == config.http_listen
            && https.port() != 0
        {
            return Err(ConfigError::SameListen(https));
        }
        for (field, zero) in [
            ("upstream_timeout", config.upstream_timeout.is_zero()),
            ("connect_timeout", config.connect_timeout.is_zero()),
            ("max_attempts", config.max_attempts == 0),
        ] {
            if zero {
                return Err(ConfigError::Zero { field });
            }
        }
        Ok(ValidConfig(config))
    }
}

fn is_dns1123_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_the_field() {
        assert!(ValidConfig::try_from(IngressConfig::default()).is_ok());
        let bad_class = IngressConfig {
            class: "Skiff_".into(),
            ..IngressConfig::default()
        };
        assert_eq!(
            ValidConfig::try_from(bad_class).err(),
            Some(ConfigError::Class("Skiff_".into()))
        );
        let same = IngressConfig {
            https_listen: Some(IngressConfig::default().http_listen),
            ..IngressConfig::default()
        };
        assert!(matches!(
            ValidConfig::try_from(same),
            Err(ConfigError::SameListen(_))
        ));
        let zero = IngressConfig {
            max_attempts: 0,
            ..IngressConfig::default()
        };
        assert_eq!(
            ValidConfig::try_from(zero).err(),
            Some(ConfigError::Zero {
                field: "max_attempts"
            })
        );
    }
}
