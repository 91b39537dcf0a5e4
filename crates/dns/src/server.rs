//! The hickory request handler: one query in, one response out. Names in the cluster domain
//! (and PTR names of cluster addresses) are answered from the index with AA set; everything
//! else is relayed upstream. Every response is counted in [`DnsMetrics`].

use std::sync::Arc;
use std::time::Instant;

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::DNSClass;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::answer::{Answer, Authority, Resolution};
use crate::config::ValidConfig;
use crate::forward::Forwarder;
use crate::index::ClusterIndex;
use crate::metrics::DnsMetrics;
use crate::name::labels_in_domain;

/// The smallest UDP payload every resolver must accept (RFC 1035 §4.2.1).
const MIN_UDP_PAYLOAD: u16 = 512;

pub(crate) struct ClusterDnsHandler {
    pub config: Arc<ValidConfig>,
    pub index: ClusterIndex,
    pub forwarder: Forwarder,
    pub metrics: DnsMetrics,
}

/// The content of a response before it is encoded.
enum Reply {
    Authoritative(Answer),
    Forwarded(hickory_proto::op::Message),
    Error(ResponseCode),
}

#[async_trait::async_trait]
impl RequestHandler for ClusterDnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let started = Instant::now();
        let (qtype, reply) = self.reply(request).await;
        let forwarded = matches!(reply, Reply::Forwarded(_));

        // Echo EDNS when the client used it, advertising its own buffer size so the encoder
        // truncates (TC) exactly where the client would have to (RFC 6891 §6.2.5).
        let edns = request.edns.as_ref().map(|theirs| {
            let mut ours = Edns::new();
            ours.set_max_payload(theirs.max_payload().max(MIN_UDP_PAYLOAD));
            ours
        });
        let mut builder = MessageResponseBuilder::new(&request.queries, None);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let sent = match &reply {
            Reply::Authoritative(answer) => {
                metadata.authoritative = true;
                metadata.response_code = answer.rcode;
                let response = builder.build(
                    metadata,
                    answer.answers.iter(),
                    answer.authorities.iter(),
                    std::iter::empty(),
                    answer.additionals.iter(),
                );
                response_handle.send_response(response).await
            }
            Reply::Forwarded(message) => {
                // The upstream's flags (AA, RA, AD …) and rcode stand; only the ID is the
                // client's (restored by the forwarder).
                let mut upstream = message.metadata;
                upstream.truncation = false;
                let response = builder.build(
                    upstream,
                    message.answers.iter(),
                    message.authorities.iter(),
                    std::iter::empty(),
                    message.additionals.iter(),
                );
                response_handle.send_response(response).await
            }
            Reply::Error(rcode) => {
                let response = builder.error_msg(&request.metadata, *rcode);
                response_handle.send_response(response).await
            }
        };
        let rcode = match &reply {
            Reply::Authoritative(answer) => answer.rcode,
            Reply::Forwarded(message) => message.metadata.response_code,
            Reply::Error(rcode) => *rcode,
        };
        self.metrics
            .observe(&qtype, rcode_name(rcode), forwarded, started.elapsed());
        match sent {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(src = %request.src(), %error, "cannot send DNS response");
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

impl ClusterDnsHandler {
    /// Decides the response; also returns the query type for the metrics.
    async fn reply(&self, request: &Request) -> (String, Reply) {
        if request.metadata.op_code != OpCode::Query {
            return ("other".into(), Reply::Error(ResponseCode::NotImp));
        }
        // One question per message: what every resolver sends and all RFC 1035 servers take.
        let [query] = request.queries.queries() else {
            return ("other".into(), Reply::Error(ResponseCode::FormErr));
        };
        let qname = query.original().name();
        let qtype = query.query_type();
        let qtype_name = qtype.to_string();
        let in_domain = labels_in_domain(qname, &self.config.domain_labels).is_some();
        if in_domain && !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
            // Cluster names exist only in class IN; never leak them upstream.
            return (qtype_name, Reply::Error(ResponseCode::Refused));
        }
        let authority = Authority {
            config: &self.config,
            index: &self.index,
        };
        match authority.resolve(qname, qtype) {
            Resolution::Answer(answer) => (qtype_name, Reply::Authoritative(answer)),
            Resolution::Forward => {
                let over_tcp = request.protocol() == Protocol::Tcp;
                match self.forwarder.forward(request.as_slice(), over_tcp).await {
                    Ok(forwarded) => {
                        self.metrics.forwarded(forwarded.upstream);
                        (qtype_name, Reply::Forwarded(forwarded.message))
                    }
                    Err(error) => {
                        tracing::debug!(name = %qname, %error, "no upstream answered");
                        self.metrics.forward_failed();
                        (qtype_name, Reply::Error(ResponseCode::ServFail))
                    }
                }
            }
        }
    }
}

/// The rcode's mnemonic as dig prints it (CoreDNS's metric label values).
fn rcode_name(rcode: ResponseCode) -> &'static str {
    match rcode {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        _ => "OTHER",
    }
}
