//! ClusterIP allocation with `networking.k8s.io/v1` IPAddress objects (upstream's
//! `ipallocator.Allocator` behind the MultiCIDRServiceAllocator, GA in v1.33).
//!
//! An allocated IP is an IPAddress object named after the IP whose `spec.parentRef` names the
//! Service. The object is written with the store's create-if-absent, so the store itself decides
//! who owns an IP: two API servers on one etcd can never both win the same address, and an
//! allocation survives a restart because it is nothing but a stored object.

use std::collections::HashSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::Arc;

use rand::Rng;
use serde_json::{Value, json};
use store::{Bytes, RangeOptions, Store, StoreError};

/// The `managed-by` label value upstream's allocator puts on its IPAddress objects.
pub const IP_ALLOCATOR_MANAGER: &str = "ipallocator.k8s.io";
/// `networking.k8s.io/v1` LabelIPAddressFamily.
pub const LABEL_IP_FAMILY: &str = "ipaddress.kubernetes.io/ip-family";
/// `networking.k8s.io/v1` LabelManagedBy.
pub const LABEL_MANAGED_BY: &str = "ipaddress.kubernetes.io/managed-by";
/// Where IPAddress objects live (the catalogue's `ipaddresses` resource).
pub const IPADDRESS_PREFIX: &str = "/registry/ipaddresses/";
/// Random tries before scanning the whole range for a free address.
const RANDOM_PROBES: usize = 8;

/// An IPv4 service CIDR, validated: a network address with a prefix of /12 to /30.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceCidr {
    network: Ipv4Addr,
    prefix: u8,
}

/// Why a `--service-cidr` value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ServiceCidrError {
    #[error(
        "service CIDR {0:?} is not an IPv4 CIDR like 10.43.0.0/16 (IPv6 service ranges are not supported)"
    )]
    Syntax(String),
    /// Upstream refuses IPv4 ranges wider than /12 (`--service-cluster-ip-range` validation).
    #[error("service CIDR {0} is too large; the prefix length must be at least /12")]
    TooLarge(String),
    #[error(
        "service CIDR {0} is too small; the prefix length must be at most /30 (the first address is the `kubernetes` Service's)"
    )]
    TooSmall(String),
    #[error("service CIDR {given} has host bits set; did you mean {network}?")]
    HostBits { given: String, network: String },
}

impl FromStr for ServiceCidr {
    type Err = ServiceCidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || ServiceCidrError::Syntax(s.to_string());
        let (ip, len) = s.trim().split_once('/').ok_or_else(syntax)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| syntax())?;
        let prefix: u8 = len.parse().map_err(|_| syntax())?;
        if prefix > 32 {
            return Err(syntax());
        }
        if prefix < 12 {
            return Err(ServiceCidrError::TooLarge(s.to_string()));
        }
        if prefix > 30 {
            return Err(ServiceCidrError::TooSmall(s.to_string()));
        }
        let mask = u32::MAX << (32 - u32::from(prefix));
        let network = Ipv4Addr::from(u32::from(ip) & mask);
        if network != ip {
            return Err(ServiceCidrError::HostBits {
                given: s.to_string(),
                network: format!("{network}/{prefix}"),
            });
        }
        Ok(ServiceCidr { network, prefix })
    }
}

impl fmt::Display for ServiceCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Default for ServiceCidr {
    /// k3s's default service range.
    fn default() -> Self {
        ServiceCidr {
            network: Ipv4Addr::new(10, 43, 0, 0),
            prefix: 16,
        }
    }
}

impl ServiceCidr {
    fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }

    /// The first usable address (the network's ".0" is never handed out). The `kubernetes`
    /// Service takes it.
    pub fn first(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// The last usable address (the IPv4 broadcast address is never handed out).
    pub fn last(&self) -> Ipv4Addr {
        Ipv4Addr::from((u32::from(self.network) | !self.mask()) - 1)
    }

    /// Whether `ip` belongs to the network at all (network and broadcast included).
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }

    /// Whether `ip` may be allocated (inside the network, not its network or broadcast address).
    pub fn is_usable(&self, ip: Ipv4Addr) -> bool {
        (u32::from(self.first())..=u32::from(self.last())).contains(&u32::from(ip))
    }

    fn size(&self) -> u32 {
        u32::from(self.last()) - u32::from(self.first()) + 1
    }

    /// KEP-3070: the lower part of the range is preferred for static IPs, so dynamic allocation
    /// starts in the upper part: min(max(16, size/16), 256) addresses are kept aside.
    fn static_band(&self) -> u32 {
        (self.size() / 16).clamp(16, 256).min(self.size())
    }
}

/// The Service an IPAddress belongs to (`spec.parentRef`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
}

impl ServiceRef {
    pub fn of(service: &Value) -> ServiceRef {
        let meta = |f: &str| {
            service
                .pointer(&format!("/metadata/{f}"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        ServiceRef {
            namespace: meta("namespace"),
            name: meta("name"),
        }
    }

    /// Reads `spec.parentRef` of an IPAddress; `None` unless it names a core Service.
    pub fn from_ip_address(ip_address: &Value) -> Option<ServiceRef> {
        let parent = ip_address.pointer("/spec/parentRef")?;
        let field = |f: &str| parent.get(f).and_then(Value::as_str).unwrap_or("");
        if !field("group").is_empty() || field("resource") != "services" {
            return None;
        }
        Some(ServiceRef {
            namespace: field("namespace").to_string(),
            name: field("name").to_string(),
        })
    }
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Why an IP could not be allocated. The texts after "failed to allocate IP x: " are upstream's.
#[derive(Debug, thiserror::Error)]
pub enum IpAllocError {
    /// Outside every service CIDR: upstream's `ErrMismatchedNetwork`, plus the range so the
    /// user knows what would have worked.
    #[error("the provided network does not match the current range ({cidr})")]
    MismatchedNetwork { cidr: ServiceCidr },
    /// The network or broadcast address of the range: upstream's `ErrNotInRange`.
    #[error("provided IP {ip} is not in the valid range")]
    NotInRange { ip: Ipv4Addr },
    #[error("provided IP is already allocated")]
    Allocated,
    #[error("range is full")]
    Full,
    /// Retryable: the store failed.
    #[error("writing the IPAddress object failed: {0}")]
    Store(#[from] StoreError),
}

/// Allocates and releases ClusterIPs of one service CIDR.
pub struct ClusterIpAllocator {
    store: Arc<dyn Store>,
    cidr: ServiceCidr,
}

impl ClusterIpAllocator {
    pub fn new(store: Arc<dyn Store>, cidr: ServiceCidr) -> ClusterIpAllocator {
        ClusterIpAllocator { store, cidr }
    }

    pub fn cidr(&self) -> ServiceCidr {
        self.cidr
    }

    /// Checks that `ip` may be asked for, without allocating it.
    pub fn check_range(&self, ip: Ipv4Addr) -> Result<(), IpAllocError> {
        if !self.cidr.contains(ip) {
            return Err(IpAllocError::MismatchedNetwork { cidr: self.cidr });
        }
        if !self.cidr.is_usable(ip) {
            return Err(IpAllocError::NotInRange { ip });
        }
        Ok(())
    }

    /// Reserves a user-chosen IP for `owner`. A dry run checks the range and whether it is
    /// taken, and writes nothing.
    pub async fn allocate(
        &self,
        ip: Ipv4Addr,
        owner: &ServiceRef,
        dry_run: bool,
    ) -> Result<(), IpAllocError> {
        self.check_range(ip)?;
        if dry_run {
            return match self.store.get(&ip_address_key(ip)).await? {
                Some(_) => Err(IpAllocError::Allocated),
                None => Ok(()),
            };
        }
        match self
            .store
            .create(&ip_address_key(ip), ip_address_object(ip, owner))
            .await
        {
            Ok(_) => Ok(()),
            Err(StoreError::AlreadyExists(_)) => Err(IpAllocError::Allocated),
            Err(e) => Err(e.into()),
        }
    }

    /// Picks a free IP for `owner`: a random start in the upper band, scanning upwards with
    /// wrap-around, then the lower band (upstream's `allocateNextService`). A lost race for an
    /// address (another API server created it first) just moves on to the next one.
    pub async fn allocate_next(
        &self,
        owner: &ServiceRef,
        dry_run: bool,
    ) -> Result<Ipv4Addr, IpAllocError> {
        let first = u32::from(self.cidr.first());
        let band = self.cidr.static_band();
        let size = self.cidr.size();
        let upper = (first + band, size - band);
        let lower = (first, band);
        // A mostly free range (the usual case, even at 10,000 Services in a /16) is served by a
        // few random create-if-absent probes, without reading every IPAddress.
        if !dry_run && upper.1 > 0 {
            for _ in 0..RANDOM_PROBES {
                let candidate = Ipv4Addr::from(upper.0 + rand::rng().random_range(0..upper.1));
                match self
                    .store
                    .create(
                        &ip_address_key(candidate),
                        ip_address_object(candidate, owner),
                    )
                    .await
                {
                    Ok(_) => return Ok(candidate),
                    Err(StoreError::AlreadyExists(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let taken = self.allocated_set().await?;
        for (start, len) in [upper, lower] {
            if len == 0 {
                continue;
            }
            let offset = rand::rng().random_range(0..len);
            for step in 0..len {
                let candidate = Ipv4Addr::from(start + (offset + step) % len);
                if taken.contains(&candidate) {
                    continue;
                }
                if dry_run {
                    return Ok(candidate);
                }
                match self
                    .store
                    .create(
                        &ip_address_key(candidate),
                        ip_address_object(candidate, owner),
                    )
                    .await
                {
                    Ok(_) => return Ok(candidate),
                    Err(StoreError::AlreadyExists(_)) => {
                        tracing::debug!(ip = %candidate, "mid-air collision allocating a ClusterIP; trying the next one");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Err(IpAllocError::Full)
    }

    /// Releases `ip` if it is still held by `owner` (an IPAddress that names another Service is
    /// left alone: it is that Service's, and deleting it would let the IP be handed out twice).
    pub async fn release(&self, ip: Ipv4Addr, owner: &ServiceRef) -> Result<bool, StoreError> {
        let key = ip_address_key(ip);
        let Some(kv) = self.store.get(&key).await? else {
            return Ok(false);
        };
        let current: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
        if ServiceRef::from_ip_address(&current).as_ref() != Some(owner) {
            tracing::warn!(ip = %ip, service = %owner, "not releasing a ClusterIP whose IPAddress names another owner");
            return Ok(false);
        }
        match self.store.delete(&key, Some(kv.mod_revision)).await {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound(_)) | Err(StoreError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every IPv4 address that has an IPAddress object, whoever made it.
    async fn allocated_set(&self) -> Result<HashSet<Ipv4Addr>, StoreError> {
        Ok(list_ip_addresses(self.store.as_ref())
            .await?
            .into_iter()
            .filter_map(|(ip, _, _)| ip)
            .collect())
    }
}

/// The storage key of the IPAddress object for `ip`.
pub fn ip_address_key(ip: Ipv4Addr) -> String {
    format!("{IPADDRESS_PREFIX}{ip}")
}

/// The IPAddress object the allocator writes, shaped like upstream's `newIPAddress`.
pub fn ip_address_object(ip: Ipv4Addr, owner: &ServiceRef) -> Bytes {
    let obj = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IPAddress",
        "metadata": {
            "name": ip.to_string(),
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": crate::object::now_rfc3339(),
            "labels": {LABEL_IP_FAMILY: "IPv4", LABEL_MANAGED_BY: IP_ALLOCATOR_MANAGER},
        },
        "spec": {"parentRef": {"resource": "services", "namespace": owner.namespace, "name": owner.name}},
    });
    Bytes::from(obj.to_string())
}

/// Every stored IPAddress object: its IPv4 address (`None` for IPv6 or a malformed name), the
/// decoded object, and its mod revision.
pub async fn list_ip_addresses(
    store: &dyn Store,
) -> Result<Vec<(Option<Ipv4Addr>, Value, store::Revision)>, StoreError> {
    let mut out = Vec::new();
    let mut start_after = None;
    loop {
        let page = store
            .range(
                IPADDRESS_PREFIX,
                RangeOptions {
                    revision: None,
                    limit: Some(1000),
                    start_after: start_after.clone(),
                },
            )
            .await?;
        for kv in &page.kvs {
            let name = kv.key.trim_start_matches(IPADDRESS_PREFIX);
            let value: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
            out.push((name.parse().ok(), value, kv.mod_revision));
        }
        if !page.more {
            return Ok(out);
        }
        start_after = page.kvs.last().map(|kv| kv.key.clone());
        if start_after.is_none() {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(name: &str) -> ServiceRef {
        ServiceRef {
            namespace: "default".into(),
            name: name.into(),
        }
    }

    #[test]
    fn cidr_parsing_and_bounds() {
        let c: ServiceCidr = "10.43.0.0/16".parse().expect("cidr");
        assert_eq!(c, ServiceCidr::default());
        assert_eq!(c.first(), Ipv4Addr::new(10, 43, 0, 1));
        assert_eq!(c.last(), Ipv4Addr::new(10, 43, 255, 254));
        assert_eq!(c.static_band(), 256);
        assert!(c.is_usable(Ipv4Addr::new(10, 43, 7, 9)));
        assert!(!c.is_usable(Ipv4Addr::new(10, 43, 255, 255)));
        assert!(c.contains(Ipv4Addr::new(10, 43, 255, 255)));
        assert!(!c.contains(Ipv4Addr::new(10, 44, 0, 1)));
        assert_eq!(c.to_string(), "10.43.0.0/16");
        let small: ServiceCidr = "192.168.5.0/28".parse().expect("cidr");
        assert_eq!(
            small.static_band(),
            14,
            "a tiny range is all static band, capped at its size"
        );
        assert!(matches!(
            "10.43.0.1/16".parse::<ServiceCidr>(),
            Err(ServiceCidrError::HostBits { .. })
        ));
        assert!(matches!(
            "10.0.0.0/8".parse::<ServiceCidr>(),
            Err(ServiceCidrError::TooLarge(_))
        ));
        assert!(matches!(
            "10.0.0.0/31".parse::<ServiceCidr>(),
            Err(ServiceCidrError::TooSmall(_))
        ));
        assert!(matches!(
            "fd00::/108".parse::<ServiceCidr>(),
            Err(ServiceCidrError::Syntax(_))
        ));
        assert!(matches!(
            "10.43.0.0".parse::<ServiceCidr>(),
            Err(ServiceCidrError::Syntax(_))
        ));
    }

    #[tokio::test]
    async fn allocations_are_ip_address_objects() {
        let store: Arc<dyn Store> = Arc::new(store::memory::MemoryStore::new());
        let alloc = ClusterIpAllocator::new(store.clone(), "10.96.0.0/28".parse().expect("cidr"));
        let ip = Ipv4Addr::new(10, 96, 0, 5);
        alloc
            .allocate(ip, &owner("a"), false)
            .await
            .expect("static");
        assert!(matches!(
            alloc.allocate(ip, &owner("b"), false).await,
            Err(IpAllocError::Allocated)
        ));
        assert!(matches!(
            alloc.allocate(ip, &owner("b"), true).await,
            Err(IpAllocError::Allocated)
        ));
        let out = Ipv4Addr::new(10, 97, 0, 5);
        let err = alloc
            .allocate(out, &owner("b"), false)
            .await
            .expect_err("out of range");
        assert_eq!(
            err.to_string(),
            "the provided network does not match the current range (10.96.0.0/28)"
        );
        let err = alloc
            .allocate(Ipv4Addr::new(10, 96, 0, 15), &owner("b"), false)
            .await
            .expect_err("broadcast");
        assert_eq!(
            err.to_string(),
            "provided IP 10.96.0.15 is not in the valid range"
        );

        let kv = store
            .get("/registry/ipaddresses/10.96.0.5")
            .await
            .expect("get")
            .expect("object");
        let obj: Value = serde_json::from_slice(&kv.value).expect("json");
        assert_eq!(
            obj["spec"]["parentRef"],
            json!({"resource": "services", "namespace": "default", "name": "a"})
        );
        assert_eq!(
            obj["metadata"]["labels"][LABEL_MANAGED_BY],
            IP_ALLOCATOR_MANAGER
        );

        // 14 usable addresses, one taken: 13 more, then full.
        let mut got = HashSet::new();
        for i in 0..13 {
            let ip = alloc
                .allocate_next(&owner(&format!("s{i}")), false)
                .await
                .expect("next");
            assert!(alloc.cidr().is_usable(ip));
            assert!(got.insert(ip), "{ip} handed out twice");
        }
        assert!(!got.contains(&Ipv4Addr::new(10, 96, 0, 5)));
        assert!(matches!(
            alloc.allocate_next(&owner("x"), false).await,
            Err(IpAllocError::Full)
        ));

        // Release only by the owner.
        assert!(!alloc.release(ip, &owner("b")).await.expect("release"));
        assert!(alloc.release(ip, &owner("a")).await.expect("release"));
        assert!(!alloc.release(ip, &owner("a")).await.expect("release twice"));
        assert_eq!(
            alloc
                .allocate_next(&owner("y"), false)
                .await
                .expect("freed"),
            ip
        );
    }
}
