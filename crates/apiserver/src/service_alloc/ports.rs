//! NodePort allocation: a bitmap of the port range kept at one store key and changed only by
//! compare-and-swap (upstream's `portallocator` over a `RangeAllocation` at
//! `/registry/ranges/servicenodeports`).
//!
//! Every change reads the bitmap, edits it, and writes it back expecting the revision it read;
//! a lost race re-reads and re-applies. So API servers sharing one store never hand out the same
//! port, and the bitmap survives restarts.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use base64::Engine as _;
use rand::Rng;
use serde_json::{Value, json};
use store::{Bytes, Store, StoreError};

/// Upstream's key for the node port bitmap.
pub const NODE_PORTS_KEY: &str = "/registry/ranges/servicenodeports";

/// CAS attempts before giving up on a very busy bitmap.
const MAX_CAS_ATTEMPTS: usize = 64;

/// A validated node port range, e.g. `30000-32767` (both ends included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodePortRange {
    base: u16,
    size: u16,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodePortRangeError {
    #[error("node port range {0:?} is not of the form 30000-32767 (or 30000+2767)")]
    Syntax(String),
    #[error("node port range {0:?} is empty or reversed")]
    Empty(String),
}

impl FromStr for NodePortRange {
    type Err = NodePortRangeError;

    /// Accepts upstream's two spellings (`utilnet.ParsePortRange`): `first-last` and
    /// `first+count`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || NodePortRangeError::Syntax(s.to_string());
        let t = s.trim();
        let (first, last) = if let Some((a, b)) = t.split_once('-') {
            let a: u16 = a.trim().parse().map_err(|_| syntax())?;
            let b: u16 = b.trim().parse().map_err(|_| syntax())?;
            (a, b)
        } else if let Some((a, n)) = t.split_once('+') {
            let a: u16 = a.trim().parse().map_err(|_| syntax())?;
            let n: u16 = n.trim().parse().map_err(|_| syntax())?;
            (a, a.checked_add(n).ok_or_else(syntax)?)
        } else {
            let a: u16 = t.parse().map_err(|_| syntax())?;
            (a, a)
        };
        if first == 0 || last < first {
            return Err(NodePortRangeError::Empty(s.to_string()));
        }
        Ok(NodePortRange {
            base: first,
            size: last - first + 1,
        })
    }
}

impl fmt::Display for NodePortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.base, self.last())
    }
}

impl Default for NodePortRange {
    /// Upstream's `--service-node-port-range` default.
    fn default() -> Self {
        NodePortRange {
            base: 30000,
            size: 2768,
        }
    }
}

impl NodePortRange {
    pub fn first(&self) -> u16 {
        self.base
    }

    pub fn last(&self) -> u16 {
        self.base + (self.size - 1)
    }

    pub fn contains(&self, port: i64) -> bool {
        (i64::from(self.base)..=i64::from(self.last())).contains(&port)
    }

    /// KEP-3668: dynamic allocation prefers the upper band; min(max(16, size/32), 128) ports
    /// at the bottom are kept for static choices.
    fn static_band(&self) -> u16 {
        (self.size / 32).clamp(16, 128).min(self.size)
    }
}

/// Why a node port could not be allocated; the texts are upstream's.
#[derive(Debug, thiserror::Error)]
pub enum PortAllocError {
    #[error("provided port is not in the valid range. The range of valid ports is {range}")]
    NotInRange { port: i64, range: NodePortRange },
    #[error("provided port is already allocated")]
    Allocated { port: u16 },
    #[error("range is full")]
    Full,
    /// Retryable: the store failed or too many writers raced.
    #[error("updating the node port bitmap failed: {0}")]
    Store(#[from] StoreError),
    #[error("the node port bitmap is busy; retry")]
    Contended,
}

/// What one Service write asks of the bitmap.
#[derive(Clone, Debug, Default)]
pub struct PortRequest {
    /// Ports the user named; each must be free.
    pub specific: Vec<u16>,
    /// How many ports to pick.
    pub dynamic: usize,
}

/// Allocates and releases node ports of one range.
pub struct NodePortAllocator {
    store: Arc<dyn Store>,
    range: NodePortRange,
}

impl NodePortAllocator {
    pub fn new(store: Arc<dyn Store>, range: NodePortRange) -> NodePortAllocator {
        NodePortAllocator { store, range }
    }

    pub fn range(&self) -> NodePortRange {
        self.range
    }

    /// Checks a requested port against the range.
    pub fn check_range(&self, port: i64) -> Result<u16, PortAllocError> {
        if !self.range.contains(port) {
            return Err(PortAllocError::NotInRange {
                port,
                range: self.range,
            });
        }
        u16::try_from(port).map_err(|_| PortAllocError::NotInRange {
            port,
            range: self.range,
        })
    }

    /// Reserves the specific ports and picks `dynamic` more, all in one compare-and-swap.
    /// Returns the picked ports. A dry run checks and picks without writing.
    pub async fn allocate(
        &self,
        req: &PortRequest,
        dry_run: bool,
    ) -> Result<Vec<u16>, PortAllocError> {
        for &p in &req.specific {
            self.check_range(i64::from(p))?;
        }
        if req.specific.is_empty() && req.dynamic == 0 {
            return Ok(Vec::new());
        }
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (mut used, rev) = self.read().await?;
            for &p in &req.specific {
                if !used.insert(p) {
                    return Err(PortAllocError::Allocated { port: p });
                }
            }
            let mut picked = Vec::with_capacity(req.dynamic);
            for _ in 0..req.dynamic {
                let p = self.pick(&used).ok_or(PortAllocError::Full)?;
                used.insert(p);
                picked.push(p);
            }
            if dry_run {
                return Ok(picked);
            }
            match self.write(&used, rev).await {
                Ok(()) => return Ok(picked),
                Err(StoreError::Conflict { .. }) | Err(StoreError::AlreadyExists(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(PortAllocError::Contended)
    }

    /// Frees `ports` (ports not allocated, or outside the range, are ignored).
    pub async fn release(&self, ports: &[u16]) -> Result<(), PortAllocError> {
        if ports.is_empty() {
            return Ok(());
        }
        self.update(|used| {
            let mut changed = false;
            for p in ports {
                changed |= used.remove(p);
            }
            changed
        })
        .await
    }

    /// Applies `edit` to the set of allocated ports by compare-and-swap; `edit` returns whether
    /// it changed anything (nothing is written otherwise).
    pub async fn update(
        &self,
        mut edit: impl FnMut(&mut BTreeSet<u16>) -> bool,
    ) -> Result<(), PortAllocError> {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (mut used, rev) = self.read().await?;
            if !edit(&mut used) {
                return Ok(());
            }
            match self.write(&used, rev).await {
                Ok(()) => return Ok(()),
                Err(StoreError::Conflict { .. }) | Err(StoreError::AlreadyExists(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(PortAllocError::Contended)
    }

    /// The allocated ports and the bitmap's revision (0 when it was never written).
    pub async fn read(&self) -> Result<(BTreeSet<u16>, store::Revision), StoreError> {
        match self.store.get(NODE_PORTS_KEY).await? {
            None => Ok((BTreeSet::new(), 0)),
            Some(kv) => Ok((self.decode(&kv.value), kv.mod_revision)),
        }
    }

    /// A free port: random start in the upper band, then the lower band.
    fn pick(&self, used: &BTreeSet<u16>) -> Option<u16> {
        let band = self.range.static_band();
        let bands = [
            (self.range.base + band, self.range.size - band),
            (self.range.base, band),
        ];
        for (start, len) in bands {
            if len == 0 {
                continue;
            }
            let offset = rand::rng().random_range(0..len);
            for step in 0..len {
                let p = start + ((u32::from(offset) + u32::from(step)) % u32::from(len)) as u16;
                if !used.contains(&p) {
                    return Some(p);
                }
            }
        }
        None
    }

    fn decode(&self, raw: &[u8]) -> BTreeSet<u16> {
        let Ok(v) = serde_json::from_slice::<Value>(raw) else {
            tracing::error!(
                key = NODE_PORTS_KEY,
                "the node port bitmap is not JSON; starting from empty (the repair loop re-records every Service's ports)"
            );
            return BTreeSet::new();
        };
        // The bitmap is relative to the range it was written with, which may differ from the
        // configured one after a flag change.
        let Ok(stored) = v
            .get("range")
            .and_then(Value::as_str)
            .unwrap_or("")
            .parse::<NodePortRange>()
        else {
            return BTreeSet::new();
        };
        let bits = base64::engine::general_purpose::STANDARD
            .decode(v.get("data").and_then(Value::as_str).unwrap_or(""))
            .unwrap_or_default();
        let mut out = BTreeSet::new();
        for (byte_index, byte) in bits.iter().enumerate() {
            for bit in 0..8 {
                if byte & (1 << bit) != 0 {
                    let offset = byte_index * 8 + bit;
                    if offset < usize::from(stored.size) {
                        out.insert(stored.base + offset as u16);
                    }
                }
            }
        }
        out
    }

    async fn write(&self, used: &BTreeSet<u16>, rev: store::Revision) -> Result<(), StoreError> {
        let mut bits = vec![0u8; usize::from(self.range.size).div_ceil(8)];
        for &p in used {
            if self.range.contains(i64::from(p)) {
                let offset = usize::from(p - self.range.base);
                bits[offset / 8] |= 1 << (offset % 8);
            }
        }
        let obj = json!({
            "kind": "RangeAllocation",
            "apiVersion": "v1",
            "metadata": {"creationTimestamp": crate::object::now_rfc3339()},
            "range": self.range.to_string(),
            "data": base64::engine::general_purpose::STANDARD.encode(bits),
        });
        let bytes = Bytes::from(obj.to_string());
        if rev == 0 {
            self.store.create(NODE_PORTS_KEY, bytes).await.map(|_| ())
        } else {
            self.store
                .update(NODE_PORTS_KEY, bytes, rev)
                .await
                .map(|_| ())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_parsing() {
        let r: NodePortRange = "30000-32767".parse().expect("range");
        assert_eq!(r, NodePortRange::default());
        assert_eq!(r.static_band(), 86);
        assert_eq!("30000+2767".parse::<NodePortRange>(), Ok(r));
        assert_eq!(r.to_string(), "30000-32767");
        assert!(r.contains(30000) && r.contains(32767) && !r.contains(32768) && !r.contains(29999));
        assert!("32767-30000".parse::<NodePortRange>().is_err());
        assert!("abc".parse::<NodePortRange>().is_err());
        assert!("0-10".parse::<NodePortRange>().is_err());
    }

    #[tokio::test]
    async fn cas_bitmap() {
        let store: Arc<dyn Store> = Arc::new(store::memory::MemoryStore::new());
        let a = NodePortAllocator::new(store.clone(), "31000-31019".parse().expect("range"));
        let got = a
            .allocate(
                &PortRequest {
                    specific: vec![31005],
                    dynamic: 2,
                },
                false,
            )
            .await
            .expect("alloc");
        assert_eq!(got.len(), 2);
        assert!(!got.contains(&31005));
        let err = a
            .allocate(
                &PortRequest {
                    specific: vec![31005],
                    dynamic: 0,
                },
                false,
            )
            .await
            .expect_err("taken");
        assert_eq!(err.to_string(), "provided port is already allocated");
        let err = a
            .allocate(
                &PortRequest {
                    specific: vec![31020],
                    dynamic: 0,
                },
                false,
            )
            .await
            .expect_err("range");
        assert_eq!(
            err.to_string(),
            "provided port is not in the valid range. The range of valid ports is 31000-31019"
        );
        // A second allocator on the same store (another API server) sees the same bitmap.
        let b = NodePortAllocator::new(store.clone(), "31000-31019".parse().expect("range"));
        let rest = b
            .allocate(
                &PortRequest {
                    specific: vec![],
                    dynamic: 17,
                },
                false,
            )
            .await
            .expect("rest");
        let all: BTreeSet<u16> = got
            .iter()
            .chain(rest.iter())
            .copied()
            .chain([31005])
            .collect();
        assert_eq!(all.len(), 20);
        assert!(matches!(
            a.allocate(
                &PortRequest {
                    specific: vec![],
                    dynamic: 1
                },
                false
            )
            .await,
            Err(PortAllocError::Full)
        ));
        a.release(&[31005]).await.expect("release");
        assert_eq!(
            b.allocate(
                &PortRequest {
                    specific: vec![],
                    dynamic: 1
                },
                true
            )
            .await
            .expect("dry"),
            vec![31005]
        );
        assert!(
            b.read().await.expect("read").0.len() == 19,
            "a dry run writes nothing"
        );

        // A range change keeps what still fits.
        let wider = NodePortAllocator::new(store.clone(), "30990-31009".parse().expect("range"));
        let (used, _) = wider.read().await.expect("read");
        assert_eq!(used.len(), 19);
        wider.release(&[]).await.expect("no-op");
    }
}
