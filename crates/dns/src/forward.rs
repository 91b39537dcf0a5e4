//! Forwarding queries outside the cluster domain to the node's upstream resolvers, like
//! CoreDNS's `forward . /etc/resolv.conf`: the client's query is relayed as-is (with a fresh
//! random ID, so an off-path attacker cannot guess it from the client's), over UDP — retried
//! over TCP when the UDP answer is truncated — or over TCP when the client came over TCP.
//! Each upstream gets `upstream_timeout`; the next is tried on failure; when all fail the
//! caller answers SERVFAIL.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::serialize::binary::DecodeError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Largest UDP answer we accept from an upstream (the EDNS maximum; bigger is truncated by the
/// kernel and then fails to parse, which counts as a failed upstream).
const MAX_UDP_RESPONSE: usize = 65_535;

/// Why a forward failed. All variants are retryable: the next upstream is tried, and the
/// client's resolver retries after SERVFAIL.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream resolvers configured (none given and none usable in /etc/resolv.conf)")]
    NoUpstreams,
    #[error("query too short to carry a DNS header ({0} bytes)")]
    ShortQuery(usize),
    #[error("upstream {upstream}: {step}: {source}")]
    Io {
        upstream: SocketAddr,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("upstream {upstream} did not answer within {timeout:?}")]
    Timeout {
        upstream: SocketAddr,
        timeout: Duration,
    },
    #[error("upstream {upstream} sent an undecodable answer: {source}")]
    Decode {
        upstream: SocketAddr,
        #[source]
        source: DecodeError,
    },
}

/// The upstream set with round-robin start, so load spreads over them.
#[derive(Debug)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    next: AtomicUsize,
}

/// What the upstream said, and which upstream said it.
#[derive(Debug)]
pub struct Forwarded {
    pub message: Message,
    pub upstream: SocketAddr,
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration) -> Self {
        Forwarder {
            upstreams,
            timeout,
            next: AtomicUsize::new(0),
        }
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Relays `query` (wire format) and returns the upstream's answer with its ID set back to
    /// the client's.
    pub async fn forward(&self, query: &[u8], over_tcp: bool) -> Result<Forwarded, ForwardError> {
        if query.len() < 12 {
            return Err(ForwardError::ShortQuery(query.len()));
        }
        if self.upstreams.is_empty() {
            return Err(ForwardError::NoUpstreams);
        }
        let client_id = u16::from_be_bytes([query[0], query[1]]);
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last_error = ForwardError::NoUpstreams;
        for offset in 0..self.upstreams.len() {
            let upstream = self.upstreams[(start + offset) % self.upstreams.len()];
            let id: u16 = rand::random();
            let mut relayed = query.to_vec();
            relayed[..2].copy_from_slice(&id.to_be_bytes());
            let result = if over_tcp {
                self.exchange_tcp(upstream, &relayed, id).await
            } else {
                match self.exchange_udp(upstream, &relayed, id).await {
                    Ok(message) if message.metadata.truncation => {
                        self.exchange_tcp(upstream, &relayed, id).await
                    }
                    other => other,
                }
            };
            match result {
                Ok(mut message) => {
                    message.metadata.id = client_id;
                    return Ok(Forwarded { message, upstream });
                }
                Err(error) => {
                    tracing::debug!(%error, "forward failed; trying the next upstream");
                    last_error = error;
                }
            }
        }
        Err(last_error)
    }

    async fn exchange_udp(
        &self,
        upstream: SocketAddr,
        query: &[u8],
        id: u16,
    ) -> Result<Message, ForwardError> {
        let io = |step| {
            move |source| ForwardError::Io {
                upstream,
                step,
                source,
            }
        };
        let local = match upstream.ip() {
            IpAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            IpAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        };
        // A fresh socket per query: a random source port (RFC 5452) and, being connected,
        // the kernel drops datagrams from anyone but the upstream and reports ICMP
        // unreachable as an error instead of a silent timeout.
        let socket = UdpSocket::bind(local)
            .await
            .map_err(io("bind UDP socket"))?;
        socket.connect(upstream).await.map_err(io("connect UDP"))?;
        let exchange = async {
            socket.send(query).await.map_err(io("send UDP query"))?;
            let mut buffer = vec![0u8; MAX_UDP_RESPONSE];
            loop {
                let len = socket
                    .recv(&mut buffer)
                    .await
                    .map_err(io("receive UDP answer"))?;
                let message = Message::from_vec(&buffer[..len])
                    .map_err(|source| ForwardError::Decode { upstream, source })?;
                // Anything else on this port is stale or spoofed; keep waiting for ours.
                if message.metadata.id == id {
                    return Ok(message);
                }
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ForwardError::Timeout {
                upstream,
                timeout: self.timeout,
            })?
    }

    async fn exchange_tcp(
        &self,
        upstream: SocketAddr,
        query: &[u8],
        id: u16,
    ) -> Result<Message, ForwardError> {
        let io = |step| {
            move |source| ForwardError::Io {
                upstream,
                step,
                source,
            }
        };
        let exchange = async {
            let mut stream = TcpStream::connect(upstream)
                .await
                .map_err(io("connect TCP"))?;
            // RFC 1035 §4.2.2: each message is prefixed with its two-byte length.
            let len = u16::try_from(query.len()).map_err(|_| ForwardError::Io {
                upstream,
                step: "send TCP query",
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "query over 64 KiB"),
            })?;
            let mut framed = Vec::with_capacity(query.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(query);
            stream
                .write_all(&framed)
                .await
                .map_err(io("send TCP query"))?;
            loop {
                let len = stream
                    .read_u16()
                    .await
                    .map_err(io("read TCP answer length"))?;
                let mut buffer = vec![0u8; usize::from(len)];
                stream
                    .read_exact(&mut buffer)
                    .await
                    .map_err(io("read TCP answer"))?;
                let message = Message::from_vec(&buffer)
                    .map_err(|source| ForwardError::Decode { upstream, source })?;
                if message.metadata.id == id {
                    return Ok(message);
                }
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ForwardError::Timeout {
                upstream,
                timeout: self.timeout,
            })?
    }
}
