//! The DNS server's configuration: the cluster domain, where to listen, where to forward, the
//! TTL. `DnsConfig::default()` matches a stock CoreDNS `kubernetes` + `forward . /etc/resolv.conf`
//! deployment; `DnsConfig::validate` turns it into the checked form the server runs on.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hickory_proto::rr::Name;

/// The file the upstream resolvers are read from when none are configured (CoreDNS's
/// `forward . /etc/resolv.conf`).
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// What the DNS server serves and where it forwards.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// The cluster domain (kubelet `--cluster-domain`), answered authoritatively.
    pub domain: String,
    /// Addresses to serve on; each gets a UDP socket and a TCP listener.
    pub listen: Vec<SocketAddr>,
    /// Resolvers for every name outside the cluster domain. Empty means "read
    /// /etc/resolv.conf" (see [`DnsConfig::upstreams_from_resolv_conf`]).
    pub upstreams: Vec<SocketAddr>,
    /// TTL of every record Skiff answers itself; CoreDNS's `kubernetes` plugin defaults to 5 s.
    pub ttl: Duration,
    /// How long one upstream may take to answer before the next is tried; after the last, the
    /// client gets SERVFAIL.
    pub upstream_timeout: Duration,
    /// How long an idle client TCP connection is kept open.
    pub tcp_idle_timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            domain: "cluster.local".to_string(),
            // Port 53 on every address: behind the kube-dns Service (10.43.0.10) the service
            // dataplane DNATs to the node; the lead picks concrete addresses.
            listen: vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 53)],
            upstreams: Vec::new(),
            ttl: Duration::from_secs(5),
            // CoreDNS's forward plugin gives up on an upstream after 2 s (its `expire`/read
            // timeout is in that range) and answers SERVFAIL once all are exhausted.
            upstream_timeout: Duration::from_secs(2),
            tcp_idle_timeout: Duration::from_secs(10),
        }
    }
}

/// A configuration that cannot serve: the message names the field and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("dns config: domain {domain:?} is not a valid DNS name: {source}")]
    Domain {
        domain: String,
        #[source]
        source: hickory_proto::ProtoError,
    },
    #[error("dns config: listen is empty; give at least one address to serve on")]
    NoListen,
    #[error("dns config: ttl {0:?} does not fit in 32-bit seconds")]
    Ttl(Duration),
}

/// The checked configuration: the domain parsed into a lowercase fully-qualified name.
#[derive(Clone, Debug)]
pub(crate) struct ValidConfig {
    pub domain: Name,
    /// The domain's labels, lowercase, left to right ("cluster", "local").
    pub domain_labels: Vec<String>,
    pub listen: Vec<SocketAddr>,
    pub upstreams: Vec<SocketAddr>,
    pub ttl: u32,
    pub upstream_timeout: Duration,
    pub tcp_idle_timeout: Duration,
}

impl DnsConfig {
    /// Checks the configuration. Upstreams left empty are read from /etc/resolv.conf here;
    /// finding none is not an error (every forward then answers SERVFAIL, as CoreDNS does
    /// with no healthy upstream).
    pub(crate) fn validate(&self) -> Result<ValidConfig, ConfigError> {
        let trimmed = self.domain.trim().trim_end_matches('.');
        let domain = Name::from_ascii(format!("{trimmed}."))
            .map_err(|source| ConfigError::Domain {
                domain: self.domain.clone(),
                source,
            })?
            .to_lowercase();
        if self.listen.is_empty() {
            return Err(ConfigError::NoListen);
        }
        let ttl = u32::try_from(self.ttl.as_secs()).map_err(|_| ConfigError::Ttl(self.ttl))?;
        let upstreams = if self.upstreams.is_empty() {
            Self::upstreams_from_resolv_conf(Path::new(RESOLV_CONF), &self.listen)
        } else {
            self.upstreams.clone()
        };
        Ok(ValidConfig {
            domain_labels: domain
                .iter()
                .map(|label| String::from_utf8_lossy(label).into_owned())
                .collect(),
            domain,
            listen: self.listen.clone(),
            upstreams,
            ttl,
            upstream_timeout: self.upstream_timeout,
            tcp_idle_timeout: self.tcp_idle_timeout,
        })
    }

    /// The `nameserver` lines of a resolv.conf as port-53 addresses, skipping any that point at
    /// one of our own listen addresses: forwarding to ourselves would loop (the failure CoreDNS's
    /// `loop` plugin exists to detect). An unreadable file yields no upstreams.
    pub fn upstreams_from_resolv_conf(path: &Path, listen: &[SocketAddr]) -> Vec<SocketAddr> {
        match std::fs::read_to_string(path) {
            Ok(text) => parse_resolv_conf(&text, listen),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot read upstream resolvers");
                Vec::new()
            }
        }
    }
}

fn parse_resolv_conf(text: &str, listen: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut upstreams = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        // glibc accepts an IPv6 zone suffix ("fe80::1%eth0"); the zone cannot be expressed in a
        // SocketAddr without an interface index, so such entries are skipped.
        let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        let addr = SocketAddr::new(ip, 53);
        if points_at_us(addr, listen) || upstreams.contains(&addr) {
            continue;
        }
        upstreams.push(addr);
    }
    upstreams
}

fn points_at_us(upstream: SocketAddr, listen: &[SocketAddr]) -> bool {
    listen.iter().any(|own| {
        own.port() == upstream.port()
            && (own.ip() == upstream.ip()
                // A wildcard listener on port 53 also answers on loopback.
                || (own.ip().is_unspecified() && upstream.ip().is_loopback()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_skip_ourselves_and_duplicates() {
        let text = "# generated\nsearch example.com\nnameserver 10.0.0.2\nnameserver 127.0.0.1\n\
                    nameserver 10.0.0.2\nnameserver fe80::1%eth0\nnameserver 2001:db8::53\noptions ndots:5\n";
        let listen = vec!["0.0.0.0:53".parse().expect("addr")];
        assert_eq!(
            parse_resolv_conf(text, &listen),
            vec![
                "10.0.0.2:53".parse::<SocketAddr>().expect("addr"),
                "[2001:db8::53]:53".parse().expect("addr"),
            ]
        );
        // Listening elsewhere, loopback is a legitimate upstream (systemd-resolved's 127.0.0.53).
        let listen = vec!["10.43.0.10:53".parse().expect("addr")];
        assert!(parse_resolv_conf("nameserver 127.0.0.53\n", &listen).len() == 1);
    }

    #[test]
    fn validate_lowercases_domain_and_rejects_bad_input() {
        let config = DnsConfig {
            domain: "Cluster.Local.".into(),
            upstreams: vec!["192.0.2.1:53".parse().expect("addr")],
            ..DnsConfig::default()
        };
        let valid = config.validate().expect("valid");
        assert_eq!(valid.domain.to_ascii(), "cluster.local.");
        assert_eq!(valid.domain_labels, vec!["cluster", "local"]);
        assert_eq!(valid.ttl, 5);

        let empty_listen = DnsConfig {
            listen: Vec::new(),
            ..config.clone()
        };
        assert!(matches!(
            empty_listen.validate(),
            Err(ConfigError::NoListen)
        ));
        let bad_domain = DnsConfig {
            domain: "a..b".into(),
            ..config
        };
        assert!(matches!(
            bad_domain.validate(),
            Err(ConfigError::Domain { .. })
        ));
    }
}
