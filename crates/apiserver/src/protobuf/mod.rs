//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) decoded into the
//! JSON form of the object, so that the rest of the server handles one representation.
//!
//! Since 1.32, kubectl's typed clients send `kubectl create deployment|configmap|secret|…`
//! bodies in protobuf (kubernetes PR #125314) and do not retry in JSON on a 415. The body is the
//! magic `k8s\0` followed by a `runtime.Unknown` {typeMeta{apiVersion,kind}=1, raw=2,
//! contentEncoding=3, contentType=4} whose `raw` is the object's message from k8s
//! `generated.proto`.
//!
//! * `schema`: the generated table (see `build.rs`) of every message's fields by tag, with JSON
//!   names and types, and the top-level message of each (apiVersion, kind).
//! * `wire`: the protobuf wire format reader.
//! * `object`: walks a message with the table and writes the JSON form, including the types
//!   whose JSON differs from their message (Time, IntOrString, Quantity, RawExtension …) and
//!   Go's `omitempty` on the zero values gogo-protobuf always writes.
//!
//! [`decode`] is the entry point; any malformed input is a [`ProtobufError`], never a panic.

mod object;
mod schema;
mod wire;

pub use wire::{WireError, WireType};

use serde_json::Value;

/// The media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The four bytes before every Kubernetes protobuf envelope
/// (k8s.io/apimachinery/pkg/runtime/serializer/protobuf).
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// Why a protobuf body could not be decoded. All variants are the client's fault (answer 400)
/// and not retryable: the same bytes fail the same way.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    #[error("protobuf body does not start with the Kubernetes magic bytes \"k8s\\x00\"")]
    BadMagic,
    #[error("malformed protobuf in {path}: {source}")]
    Wire {
        path: String,
        #[source]
        source: WireError,
    },
    #[error(
        "protobuf field {path} (field number {tag} of {message}) has wire type {found}, expected {expected}"
    )]
    WireTypeMismatch {
        path: String,
        message: &'static str,
        tag: u32,
        found: WireType,
        expected: WireType,
    },
    #[error("protobuf envelope has no typeMeta.kind or typeMeta.apiVersion")]
    MissingTypeMeta,
    #[error(
        "protobuf envelope names kind {kind:?} in {api_version:?}, which this server does not know"
    )]
    UnknownKind { api_version: String, kind: String },
    #[error("protobuf envelope content encoding {0:?} is not supported (only identity)")]
    ContentEncoding(String),
    #[error("protobuf envelope content type {0:?} is not supported")]
    ContentType(String),
    #[error("{path} holds embedded JSON that does not parse: {source}")]
    EmbeddedJson {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path} is a time out of the range 0000-01-01 to 9999-12-31 (seconds {seconds}, nanos {nanos})"
    )]
    TimeOutOfRange {
        path: String,
        seconds: i64,
        nanos: i64,
    },
    #[error("{path} is a non-finite number ({value}), which JSON cannot hold")]
    NonFiniteNumber { path: String, value: f64 },
    #[error("the generated protobuf schema table has no message type for {path} (a build.rs bug)")]
    SchemaTable { path: String },
    #[error("{path} nests messages deeper than {limit} levels")]
    TooDeep { path: String, limit: usize },
}

/// Whether a request's `Content-Type` is the Kubernetes protobuf media type (parameters such as
/// `; charset` ignored).
pub fn is_protobuf_media_type(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(MEDIA_TYPE))
}

/// Decodes a Kubernetes protobuf body (`k8s\0` + `runtime.Unknown`) into the JSON form of the
/// object it carries, with `apiVersion` and `kind` from the envelope.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    object::Decoder::default().envelope(body)
}

#[cfg(test)]
mod tests;
