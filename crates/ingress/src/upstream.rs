//! Connections to backends: HTTP/1.1 over TCP with a keep-alive pool per endpoint address.
//!
//! A request is first offered to an idle pooled connection; if that connection turns out to be
//! closed before the request was written (the backend dropped it while idle) hyper hands the
//! request back and it goes to a fresh connection, so a stale keep-alive never costs the client
//! an error. Connect failures also hand the request back ([`SendError::Connect`]), which is what
//! lets the proxy retry the next endpoint without buffering bodies. After a response, the
//! connection returns to the pool once hyper says it can take another request (the response
//! body was read to the end); connections that upgraded (101) never return.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

type Sender = http1::SendRequest<Incoming>;

/// Why a request got no response from one endpoint.
#[derive(Debug)]
pub(crate) enum SendError {
    /// Nothing was written: the connection could not be made. The request comes back so the next
    /// endpoint can be tried.
    Connect {
        request: Box<Request<Incoming>>,
        reason: String,
        timed_out: bool,
    },
    /// The request was sent but no response headers came within the upstream timeout.
    Timeout,
    /// The backend failed after the request was (possibly partly) sent: not retryable, the body
    /// is gone and the request may not be idempotent.
    Upstream(hyper::Error),
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// Idle keep-alive connections by endpoint address.
pub(crate) struct UpstreamPool {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
    connect_timeout: Duration,
    response_timeout: Duration,
    max_idle: usize,
    idle_timeout: Duration,
}

impl UpstreamPool {
    pub(crate) fn new(
        connect_timeout: Duration,
        response_timeout: Duration,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(UpstreamPool {
            idle: Mutex::new(HashMap::new()),
            connect_timeout,
            response_timeout,
            max_idle,
            idle_timeout,
        })
    }

    /// Sends `request` (origin-form URI, Host set) to `addr` and waits for the response headers.
    pub(crate) async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        mut request: Request<Incoming>,
    ) -> Result<Response<Incoming>, SendError> {
        let upgrade = request.headers().contains_key(http::header::UPGRADE);
        while let Some(mut sender) = self.checkout(addr) {
            match self.exchange(&mut sender, request).await {
                Ok(response) => {
                    if !upgrade {
                        self.recycle(addr, sender);
                    }
                    return Ok(response);
                }
                Err(Exchange::NotSent(back)) => request = *back,
                Err(Exchange::Failed(e)) => return Err(e),
            }
        }

        let mut sender = match self.connect(addr).await {
            Ok(s) => s,
            Err((reason, timed_out)) => {
                return Err(SendError::Connect {
                    request: Box::new(request),
                    reason,
                    timed_out,
                });
            }
        };
        match self.exchange(&mut sender, request).await {
            Ok(response) => {
                if !upgrade {
                    self.recycle(addr, sender);
                }
                Ok(response)
            }
            // The fresh connection died before the request went out: as good as refused.
            Err(Exchange::NotSent(back)) => Err(SendError::Connect {
                request: back,
                reason: "connection closed before the request was sent".to_string(),
                timed_out: false,
            }),
            Err(Exchange::Failed(e)) => Err(e),
        }
    }

    async fn exchange(
        &self,
        sender: &mut Sender,
        request: Request<Incoming>,
    ) -> Result<Response<Incoming>, Exchange> {
        match tokio::time::timeout(self.response_timeout, sender.try_send_request(request)).await {
            // Dropping the future closes this connection (hyper has no other way to abort an
            // HTTP/1 exchange); it is not returned to the pool.
            Err(_) => Err(Exchange::Failed(SendError::Timeout)),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(mut e)) => match e.take_message() {
                Some(back) => Err(Exchange::NotSent(Box::new(back))),
                None => Err(Exchange::Failed(SendError::Upstream(e.into_error()))),
            },
        }
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Sender, (String, bool)> {
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Err(_) => {
                    return Err((
                        format!(
                            "connect to {addr} timed out after {:?}",
                            self.connect_timeout
                        ),
                        true,
                    ));
                }
                Ok(Err(e)) => return Err((format!("connect to {addr}: {e}"), false)),
                Ok(Ok(s)) => s,
            };
        // Small proxied requests must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| (format!("HTTP/1.1 handshake with {addr}: {e}"), false))?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(%addr, error = %e, "backend connection ended");
            }
        });
        Ok(sender)
    }

    fn checkout(&self, addr: SocketAddr) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let conns = idle.get_mut(&addr)?;
        // Most recently used first: it is the least likely to have been closed by the backend.
        while let Some(conn) = conns.pop() {
            if !conn.sender.is_closed()
                && conn.sender.is_ready()
                && conn.since.elapsed() < self.idle_timeout
            {
                return Some(conn.sender);
            }
        }
        idle.remove(&addr);
        None
    }

    /// Returns the connection to the pool once its response has been read completely.
    fn recycle(self: &Arc<Self>, addr: SocketAddr, mut sender: Sender) {
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            if sender.ready().await.is_err() {
                return;
            }
            let Some(pool) = pool.upgrade() else { return };
            let mut idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
            let conns = idle.entry(addr).or_default();
            conns.retain(|c| !c.sender.is_closed() && c.since.elapsed() < pool.idle_timeout);
            if conns.len() < pool.max_idle {
                conns.push(Idle {
                    sender,
                    since: Instant::now(),
                });
            }
        });
    }
}

enum Exchange {
    NotSent(Box<Request<Incoming>>),
    Failed(SendError),
}
