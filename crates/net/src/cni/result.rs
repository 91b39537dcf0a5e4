//! The CNI result (spec 0.3.0 – 1.0.0 "Success" output) and the IP prefix type it is written in.
//!
//! Results travel between chained plugins as raw JSON (each plugin must see exactly what the
//! previous one printed); this typed form is what the runtime hands its caller at the end.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An address with a prefix length, as CNI writes them: `10.42.0.5/24`, `fd00::1/64`.
/// The address keeps its host bits (an interface address is not a network).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

/// Why a string is not an `address/prefix`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not an IP prefix (address/length, e.g. 10.42.0.0/24): {reason}")]
pub struct IpNetParseError {
    pub value: String,
    pub reason: &'static str,
}

impl IpNet {
    /// The network this prefix lies in (host bits cleared).
    pub fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }

    /// Whether `ip` lies inside this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let other = IpNet {
            addr: ip,
            prefix_len: self.prefix_len,
        };
        self.addr.is_ipv4() == ip.is_ipv4() && other.network() == self.network()
    }
}

impl FromStr for IpNet {
    type Err = IpNetParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| IpNetParseError {
            value: s.to_string(),
            reason,
        };
        let (addr, len) = s.split_once('/').ok_or_else(|| err("missing /length"))?;
        let addr: IpAddr = addr.parse().map_err(|_| err("bad address"))?;
        let prefix_len: u8 = len.parse().map_err(|_| err("bad prefix length"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(err("prefix length too long for the address family"));
        }
        Ok(IpNet { addr, prefix_len })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a successful ADD chain returns (the last plugin's result).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    pub cni_version: String,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
}

impl CniResult {
    /// The pod's addresses: those on an interface inside the sandbox, in result order (so the
    /// first is the primary `status.podIP`, as the kubelet takes it). Falls back to every
    /// address when the result names no sandbox interfaces (some plugins omit them).
    pub fn pod_ips(&self) -> Vec<IpAddr> {
        let in_sandbox = |ip: &&IpConfig| {
            ip.interface
                .and_then(|i| self.interfaces.get(i))
                .is_some_and(|iface| iface.sandbox.as_deref().is_some_and(|s| !s.is_empty()))
        };
        let pod: Vec<IpAddr> = self
            .ips
            .iter()
            .filter(in_sandbox)
            .map(|ip| ip.address.addr)
            .collect();
        if pod.is_empty() {
            self.ips.iter().map(|ip| ip.address.addr).collect()
        } else {
            pod
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The namespace path for interfaces inside the pod; absent for host-side ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipnet_parses_and_prints() {
        let n: IpNet = "10.42.0.5/24".parse().expect("parse");
        assert_eq!(n.to_string(), "10.42.0.5/24");
        assert_eq!(n.network(), "10.42.0.0".parse::<IpAddr>().expect("ip"));
        assert!(n.contains("10.42.0.200".parse().expect("ip")));
        assert!(!n.contains("10.42.1.1".parse().expect("ip")));
        assert!(!n.contains("::1".parse().expect("ip")));
        let all: IpNet = "0.0.0.0/0".parse().expect("parse");
        assert!(all.contains("192.0.2.1".parse().expect("ip")));
        let v6: IpNet = "fd00:42::7/64".parse().expect("parse");
        assert!(v6.contains("fd00:42::1".parse().expect("ip")));
        for bad in [
            "10.42.0.0",
            "10.42.0.0/33",
            "x/24",
            "10.42.0.0/-1",
            "::/129",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn bridge_result_parses_and_pod_ips_skip_host_interfaces() {
        // Shape of a bridge plugin 1.0.0 result: host bridge, host veth, pod eth0.
        let raw = r#"{
          "cniVersion": "1.0.0",
          "interfaces": [
            {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"},
            {"name": "veth1234", "mac": "aa:bb:cc:dd:ee:02"},
            {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/run/netns/p"}
          ],
          "ips": [{"address": "10.42.0.5/24", "gateway": "10.42.0.1", "interface": 2}],
          "routes": [{"dst": "0.0.0.0/0"}],
          "dns": {}
        }"#;
        let r: CniResult = serde_json::from_str(raw).expect("parse");
        assert_eq!(
            r.pod_ips(),
            vec!["10.42.0.5".parse::<IpAddr>().expect("ip")]
        );
        assert_eq!(r.ips[0].gateway, Some("10.42.0.1".parse().expect("ip")));
        assert_eq!(r.routes[0].dst.prefix_len, 0);
        // 0.3.x/0.4.0 results carry "version" in ips: ignored.
        let old = r#"{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.1.0.2/16"}]}"#;
        let r: CniResult = serde_json::from_str(old).expect("parse");
        assert_eq!(r.pod_ips(), vec!["10.1.0.2".parse::<IpAddr>().expect("ip")]);
        // Round trip keeps the wire form.
        let back = serde_json::to_value(&r).expect("ser");
        assert_eq!(back["ips"][0]["address"], "10.1.0.2/16");
    }
}
