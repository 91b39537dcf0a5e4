//! Walks a protobuf message with the generated schema and writes the object's JSON form as Go's
//! `encoding/json` would write the same object after decoding it from protobuf: the upstream
//! API server's behaviour for protobuf requests.

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use super::schema::{self, FieldSchema, Layout, MessageSchema, Shape, ValueKind};
use super::wire::{Reader, WireError, WireType};
use super::{MAGIC, ProtobufError};

/// Deeper nesting than any Kubernetes object needs (a CRD's schema is the deepest); the limit
/// keeps a crafted body from exhausting the stack.
const MAX_DEPTH: usize = 64;

/// `time.Time{}` (0001-01-01T00:00:00Z) in Unix seconds: Go's zero time, which `metav1.Time`
/// writes as `null` and we leave out.
const GO_ZERO_TIME_UNIX: i64 = -62_135_596_800;

#[derive(Default)]
pub(super) struct Decoder {
    /// JSON names of the fields being decoded, for error messages.
    path: Vec<&'static str>,
    /// The OpenAPI definition of the message being decoded, for error messages.
    message: &'static str,
}

impl Decoder {
    fn path(&self) -> String {
        if self.path.is_empty() {
            "(envelope)".to_owned()
        } else {
            self.path.join(".")
        }
    }

    fn wire(&self, source: WireError) -> ProtobufError {
        ProtobufError::Wire {
            path: self.path(),
            source,
        }
    }

    fn enter(&mut self, segment: &'static str) -> Result<(), ProtobufError> {
        self.path.push(segment);
        if self.path.len() > MAX_DEPTH {
            return Err(ProtobufError::TooDeep {
                path: self.path(),
                limit: MAX_DEPTH,
            });
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.path.pop();
    }

    /// `k8s\0` + `runtime.Unknown` → the object with `apiVersion` and `kind`.
    pub(super) fn envelope(&mut self, body: &[u8]) -> Result<Value, ProtobufError> {
        let message = body.strip_prefix(MAGIC).ok_or(ProtobufError::BadMagic)?;
        let (mut api_version, mut kind) = (String::new(), String::new());
        let mut raw: &[u8] = &[];
        let (mut content_encoding, mut content_type) = (String::new(), String::new());
        let mut r = Reader::new(message);
        while !r.is_empty() {
            let (tag, wire_type) = r.key().map_err(|e| self.wire(e))?;
            match tag {
                1..=4 => {
                    self.expect(tag, wire_type, WireType::LengthDelimited)?;
                    let bytes = r.length_delimited().map_err(|e| self.wire(e))?;
                    match tag {
                        1 => (api_version, kind) = self.type_meta(bytes)?,
                        2 => raw = bytes,
                        3 => content_encoding = String::from_utf8_lossy(bytes).into_owned(),
                        _ => content_type = String::from_utf8_lossy(bytes).into_owned(),
                    }
                }
                _ => r.skip(wire_type).map_err(|e| self.wire(e))?,
            }
        }
        if !content_encoding.is_empty() {
            return Err(ProtobufError::ContentEncoding(content_encoding));
        }
        if kind.is_empty() || api_version.is_empty() {
            return Err(ProtobufError::MissingTypeMeta);
        }
        let mut object = Map::new();
        object.insert("apiVersion".to_owned(), Value::String(api_version.clone()));
        object.insert("kind".to_owned(), Value::String(kind.clone()));
        // The protobuf serializer leaves contentType empty; accept its own name too.
        if !(content_type.is_empty() || super::is_protobuf_media_type(&content_type)) {
            return Err(ProtobufError::ContentType(content_type));
        }
        let schema = schema::kind(&api_version, &kind)
            .ok_or(ProtobufError::UnknownKind { api_version, kind })?;
        self.object_into(schema, raw, &mut object)?;
        Ok(Value::Object(object))
    }

    fn type_meta(&mut self, bytes: &[u8]) -> Result<(String, String), ProtobufError> {
        self.enter("typeMeta")?;
        let (mut api_version, mut kind) = (String::new(), String::new());
        let mut r = Reader::new(bytes);
        while !r.is_empty() {
            let (tag, wire_type) = r.key().map_err(|e| self.wire(e))?;
            if tag == 1 || tag == 2 {
                self.expect(tag, wire_type, WireType::LengthDelimited)?;
                let value = r.length_delimited().map_err(|e| self.wire(e))?;
                let value = String::from_utf8_lossy(value).into_owned();
                if tag == 1 {
                    api_version = value
                } else {
                    kind = value
                }
            } else {
                r.skip(wire_type).map_err(|e| self.wire(e))?;
            }
        }
        self.leave();
        Ok((api_version, kind))
    }

    fn expect(&self, tag: u32, found: WireType, expected: WireType) -> Result<(), ProtobufError> {
        if found == expected {
            Ok(())
        } else {
            Err(ProtobufError::WireTypeMismatch {
                path: self.path(),
                message: self.message,
                tag,
                found,
                expected,
            })
        }
    }

    /// Decodes the fields of an `Object` message into `out` (the parent's map for inline
    /// members). A repeated occurrence of a singular field replaces the earlier one, as Go's
    /// decoder does for scalars.
    fn object_into(
        &mut self,
        schema: &'static MessageSchema,
        bytes: &[u8],
        out: &mut Map<String, Value>,
    ) -> Result<(), ProtobufError> {
        let outer = std::mem::replace(&mut self.message, schema.definition);
        let mut r = Reader::new(bytes);
        while !r.is_empty() {
            let (tag, wire_type) = r.key().map_err(|e| self.wire(e))?;
            let Some(field) = schema.field(tag) else {
                r.skip(wire_type).map_err(|e| self.wire(e))?;
                continue;
            };
            self.enter(field.json)?;
            match field.layout {
                Layout::Single => match self.value(field.value, tag, wire_type, &mut r)? {
                    Some(v) if !(field.omit_zero && is_zero(&v)) => {
                        out.insert(field.json.to_owned(), v);
                    }
                    _ => {
                        out.remove(field.json);
                    }
                },
                Layout::Repeated => {
                    let mut items = Vec::new();
                    if wire_type == WireType::LengthDelimited && is_packable(field.value) {
                        // Packed repeated scalars: parsers must accept both encodings.
                        let packed = r.length_delimited().map_err(|e| self.wire(e))?;
                        let mut p = Reader::new(packed);
                        while !p.is_empty() {
                            let expected = wire_type_of(field.value);
                            items.extend(self.value(field.value, tag, expected, &mut p)?);
                        }
                    } else {
                        // An element that is absent in JSON (an empty Time) is `null` in a list.
                        items.push(
                            self.value(field.value, tag, wire_type, &mut r)?
                                .unwrap_or(Value::Null),
                        );
                    }
                    match out.get_mut(field.json) {
                        Some(Value::Array(existing)) => existing.extend(items),
                        _ => {
                            out.insert(field.json.to_owned(), Value::Array(items));
                        }
                    }
                }
                Layout::Map => {
                    self.expect(tag, wire_type, WireType::LengthDelimited)?;
                    let entry = r.length_delimited().map_err(|e| self.wire(e))?;
                    let (key, value) = self.map_entry(field, entry)?;
                    match out.get_mut(field.json) {
                        Some(Value::Object(existing)) => {
                            existing.insert(key, value);
                        }
                        _ => {
                            let mut map = Map::new();
                            map.insert(key, value);
                            out.insert(field.json.to_owned(), Value::Object(map));
                        }
                    }
                }
                Layout::Inline => {
                    self.expect(tag, wire_type, WireType::LengthDelimited)?;
                    let nested = r.length_delimited().map_err(|e| self.wire(e))?;
                    let schema = self.nested_schema(field.value)?;
                    self.object_into(schema, nested, out)?;
                }
            }
            self.leave();
        }
        self.message = outer;
        Ok(())
    }

    /// A map entry message {key=1, value=2}; a missing key or value is its zero value.
    fn map_entry(
        &mut self,
        field: &FieldSchema,
        bytes: &[u8],
    ) -> Result<(String, Value), ProtobufError> {
        let (mut key, mut value) = (String::new(), None);
        let mut r = Reader::new(bytes);
        while !r.is_empty() {
            let (tag, wire_type) = r.key().map_err(|e| self.wire(e))?;
            match tag {
                1 => {
                    self.expect(tag, wire_type, WireType::LengthDelimited)?;
                    let bytes = r.length_delimited().map_err(|e| self.wire(e))?;
                    key = String::from_utf8_lossy(bytes).into_owned();
                }
                2 => value = Some(self.value(field.value, tag, wire_type, &mut r)?),
                _ => r.skip(wire_type).map_err(|e| self.wire(e))?,
            }
        }
        let value = match value {
            Some(v) => v.unwrap_or(Value::Null),
            None => {
                let zero = zero_encoding(field.value);
                self.value(
                    field.value,
                    2,
                    wire_type_of(field.value),
                    &mut Reader::new(&zero),
                )?
                .unwrap_or(Value::Null)
            }
        };
        Ok((key, value))
    }

    fn nested_schema(&self, value: ValueKind) -> Result<&'static MessageSchema, ProtobufError> {
        match value {
            ValueKind::Message(index) => schema::message(index),
            _ => None,
        }
        // Unreachable with a table build.rs produced; reported rather than panicking.
        .ok_or_else(|| ProtobufError::SchemaTable { path: self.path() })
    }

    /// One value of a field; `None` when the JSON form leaves it out (an unset Time).
    fn value(
        &mut self,
        kind: ValueKind,
        tag: u32,
        wire_type: WireType,
        r: &mut Reader<'_>,
    ) -> Result<Option<Value>, ProtobufError> {
        self.expect(tag, wire_type, wire_type_of(kind))?;
        let value = match kind {
            ValueKind::String => {
                let bytes = r.length_delimited().map_err(|e| self.wire(e))?;
                // Go's encoding/json writes invalid UTF-8 as U+FFFD.
                Value::String(String::from_utf8_lossy(bytes).into_owned())
            }
            ValueKind::Bytes => {
                let bytes = r.length_delimited().map_err(|e| self.wire(e))?;
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            ValueKind::Int32 => Value::from(r.varint().map_err(|e| self.wire(e))? as i32),
            ValueKind::Int64 => Value::from(r.varint().map_err(|e| self.wire(e))? as i64),
            ValueKind::Bool => Value::Bool(r.varint().map_err(|e| self.wire(e))? != 0),
            ValueKind::Double => {
                let bits = r.fixed64().map_err(|e| self.wire(e))?;
                self.double(f64::from_le_bytes(bits))?
            }
            ValueKind::Message(_) => {
                let bytes = r.length_delimited().map_err(|e| self.wire(e))?;
                let schema = self.nested_schema(kind)?;
                return self.message(schema, bytes);
            }
        };
        Ok(Some(value))
    }

    /// Go writes a whole float64 without a fraction (`1`, not `1.0`).
    fn double(&self, value: f64) -> Result<Value, ProtobufError> {
        if !value.is_finite() {
            return Err(ProtobufError::NonFiniteNumber {
                path: self.path(),
                value,
            });
        }
        const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
        if value.fract() == 0.0 && value.abs() < EXACT {
            return Ok(Value::from(value as i64));
        }
        Ok(Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn message(
        &mut self,
        schema: &'static MessageSchema,
        bytes: &[u8],
    ) -> Result<Option<Value>, ProtobufError> {
        let value = match schema.shape {
            Shape::Object => {
                let mut map = Map::new();
                self.object_into(schema, bytes, &mut map)?;
                Value::Object(map)
            }
            Shape::Time | Shape::MicroTime => {
                // metav1.Time marshals a zero time as nothing at all (time_proto.go), and its
                // JSON form is `null`: leave the field out.
                if bytes.is_empty() {
                    return Ok(None);
                }
                let fields = self.scalars(schema, bytes)?;
                let seconds = fields.int(1);
                let nanos = fields.int(2);
                return self.time(seconds, nanos, schema.shape == Shape::MicroTime);
            }
            Shape::Duration => {
                let fields = self.scalars(schema, bytes)?;
                Value::String(go_duration(fields.int(1)))
            }
            Shape::IntOrString => {
                let mut fields = self.scalars(schema, bytes)?;
                // intstr.Type: 0 = Int, 1 = String.
                if fields.int(1) == 1 {
                    fields
                        .take(3)
                        .unwrap_or_else(|| Value::String(String::new()))
                } else {
                    Value::from(fields.int(2) as i32)
                }
            }
            Shape::Quantity => {
                let mut fields = self.scalars(schema, bytes)?;
                // A zero resource.Quantity marshals as "0".
                match fields.take(1) {
                    Some(Value::String(s)) if !s.is_empty() => Value::String(s),
                    _ => Value::String("0".to_owned()),
                }
            }
            Shape::EmbeddedJson => {
                let raw = raw_bytes(bytes).map_err(|e| self.wire(e))?;
                self.embedded_json(raw)?
            }
            Shape::StringList => {
                let mut map = Map::new();
                self.object_into(schema, bytes, &mut map)?;
                map.into_iter()
                    .next()
                    .map_or(Value::Array(Vec::new()), |(_, v)| v)
            }
            Shape::SchemaOrBool | Shape::SchemaOrArray | Shape::SchemaOrStringArray => {
                let mut fields = self.scalars(schema, bytes)?;
                match schema.shape {
                    // JSONSchemaPropsOrBool.MarshalJSON: the schema if set, else the bool.
                    Shape::SchemaOrBool => fields
                        .take(2)
                        .unwrap_or_else(|| Value::Bool(fields.int(1) != 0)),
                    // …OrArray / …OrStringArray: the list if non-empty, else the schema, else
                    // null.
                    _ => match fields.take(2) {
                        Some(Value::Array(items)) if !items.is_empty() => Value::Array(items),
                        _ => fields.take(1).unwrap_or(Value::Null),
                    },
                }
            }
        };
        Ok(Some(value))
    }

    /// The fields of a special message by tag, decoded with the table (repeated ones as arrays).
    fn scalars(
        &mut self,
        schema: &'static MessageSchema,
        bytes: &[u8],
    ) -> Result<Fields, ProtobufError> {
        let mut map = Map::new();
        self.object_into(schema, bytes, &mut map)?;
        Ok(Fields { schema, map })
    }

    fn time(&self, seconds: i64, nanos: i64, micro: bool) -> Result<Option<Value>, ProtobufError> {
        // time.Unix normalises nanoseconds outside [0, 1e9) into the seconds.
        let total = i128::from(seconds) * 1_000_000_000 + i128::from(nanos);
        let (seconds_n, nanos_n) = (
            total.div_euclid(1_000_000_000),
            total.rem_euclid(1_000_000_000),
        );
        if seconds_n == i128::from(GO_ZERO_TIME_UNIX) && nanos_n == 0 {
            return Ok(None);
        }
        let out_of_range = || ProtobufError::TimeOutOfRange {
            path: self.path(),
            seconds,
            nanos,
        };
        let seconds_n = i64::try_from(seconds_n).map_err(|_| out_of_range())?;
        let nanos_n = i32::try_from(nanos_n).map_err(|_| out_of_range())?;
        let timestamp = jiff::Timestamp::new(seconds_n, nanos_n).map_err(|_| out_of_range())?;
        let civil = jiff::tz::Offset::UTC.to_datetime(timestamp);
        // Go refuses to marshal years outside [0, 9999].
        if civil.year() < 0 {
            return Err(out_of_range());
        }
        let mut text = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            civil.year(),
            civil.month(),
            civil.day(),
            civil.hour(),
            civil.minute(),
            civil.second()
        );
        if micro {
            text.push_str(&format!(".{:06}", nanos_n / 1_000));
        }
        text.push('Z');
        Ok(Some(Value::String(text)))
    }

    /// `RawExtension.Raw` and friends hold JSON; a client may also embed a protobuf-encoded
    /// object (its own `k8s\0` envelope), which is decoded the same way as the request.
    fn embedded_json(&mut self, raw: Option<&[u8]>) -> Result<Value, ProtobufError> {
        let Some(raw) = raw.filter(|r| !r.is_empty()) else {
            // RawExtension/FieldsV1 MarshalJSON write `null` for no bytes.
            return Ok(Value::Null);
        };
        if raw.starts_with(MAGIC) {
            // The nested decoder starts at this depth, so the nesting limit still holds.
            let mut nested = Decoder {
                path: self.path.clone(),
                message: self.message,
            };
            return nested.envelope(raw);
        }
        serde_json::from_slice(raw).map_err(|source| ProtobufError::EmbeddedJson {
            path: self.path(),
            source,
        })
    }
}

/// The decoded fields of a special message, read by tag.
struct Fields {
    schema: &'static MessageSchema,
    map: Map<String, Value>,
}

impl Fields {
    fn take(&mut self, tag: u32) -> Option<Value> {
        self.schema.field(tag).and_then(|f| self.map.remove(f.json))
    }

    fn int(&self, tag: u32) -> i64 {
        self.schema
            .field(tag)
            .and_then(|f| self.map.get(f.json))
            .and_then(|v| v.as_i64().or_else(|| v.as_bool().map(i64::from)))
            .unwrap_or(0)
    }
}

/// Field 1 (bytes) of a {raw=1} message, read without the table so that any other field is
/// skipped. `None` when the field is absent.
fn raw_bytes(bytes: &[u8]) -> Result<Option<&[u8]>, WireError> {
    let mut raw = None;
    let mut r = Reader::new(bytes);
    while !r.is_empty() {
        let (tag, wire_type) = r.key()?;
        if tag == 1 && wire_type == WireType::LengthDelimited {
            raw = Some(r.length_delimited()?);
        } else {
            r.skip(wire_type)?;
        }
    }
    Ok(raw)
}

fn wire_type_of(kind: ValueKind) -> WireType {
    match kind {
        ValueKind::Int32 | ValueKind::Int64 | ValueKind::Bool => WireType::Varint,
        ValueKind::Double => WireType::Fixed64,
        ValueKind::String | ValueKind::Bytes | ValueKind::Message(_) => WireType::LengthDelimited,
    }
}

fn is_packable(kind: ValueKind) -> bool {
    wire_type_of(kind) != WireType::LengthDelimited
}

/// The encoding of a map value that was left out of its entry: the type's zero value.
fn zero_encoding(kind: ValueKind) -> Vec<u8> {
    match kind {
        ValueKind::Double => vec![0; 8],
        // A zero varint, or an empty length-delimited value.
        _ => vec![0],
    }
}

/// Go's `omitempty` zero values of the scalar kinds.
fn is_zero(value: &Value) -> bool {
    match value {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

/// Go's `time.Duration.String()`: "1h2m3.5s", "1m30s", "1.5s", "100ms", "2µs", "0s".
pub(super) fn go_duration(nanoseconds: i64) -> String {
    if nanoseconds == 0 {
        return "0s".to_owned();
    }
    let u = nanoseconds.unsigned_abs();
    let text = if u < 1_000_000_000 {
        let (unit, digits, suffix) = if u < 1_000 {
            (1, 0, "ns")
        } else if u < 1_000_000 {
            (1_000, 3, "µs")
        } else {
            (1_000_000, 6, "ms")
        };
        format!("{}{suffix}", with_fraction(u / unit, u % unit, digits))
    } else {
        let seconds = u / 1_000_000_000;
        let fraction = with_fraction(seconds % 60, u % 1_000_000_000, 9);
        let (hours, minutes) = (seconds / 3600, seconds / 60 % 60);
        if hours > 0 {
            format!("{hours}h{minutes}m{fraction}s")
        } else if minutes > 0 {
            format!("{minutes}m{fraction}s")
        } else {
            format!("{fraction}s")
        }
    };
    if nanoseconds < 0 {
        format!("-{text}")
    } else {
        text
    }
}

/// `whole.fraction` with the fraction's trailing zeros (and a bare dot) dropped.
fn with_fraction(whole: u64, fraction: u64, digits: usize) -> String {
    if fraction == 0 || digits == 0 {
        return whole.to_string();
    }
    let fraction = format!("{fraction:0digits$}");
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_go() {
        for (ns, text) in [
            (0, "0s"),
            (1, "1ns"),
            (1_500, "1.5µs"),
            (100_000_000, "100ms"),
            (1_500_000_000, "1.5s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_723_500_000_000, "1h2m3.5s"),
            (-90_000_000_000, "-1m30s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
        ] {
            assert_eq!(go_duration(ns), text, "{ns}");
        }
    }

    #[test]
    fn duration_message() {
        use prost::Message as _;
        let schema = schema::MESSAGES
            .iter()
            .find(|m| m.shape == Shape::Duration)
            .expect("Duration is in the table");
        let bytes = k8s_pb::apimachinery::pkg::apis::meta::v1::Duration {
            duration: Some(90_000_000_000),
        }
        .encode_to_vec();
        assert_eq!(
            Decoder::default().message(schema, &bytes).expect("decodes"),
            Some(Value::from("1m30s"))
        );
    }

    #[test]
    fn times_read_like_go() {
        let d = Decoder::default();
        let t = |s, n, micro| d.time(s, n, micro).expect("in range");
        assert_eq!(
            t(1_704_164_645, 0, false),
            Some(Value::from("2024-01-02T03:04:05Z"))
        );
        // Time drops the fraction; MicroTime keeps microseconds.
        assert_eq!(
            t(1_704_164_645, 123_456_789, false),
            Some(Value::from("2024-01-02T03:04:05Z"))
        );
        assert_eq!(
            t(1_704_164_645, 123_456_789, true),
            Some(Value::from("2024-01-02T03:04:05.123456Z"))
        );
        assert_eq!(t(0, 0, false), Some(Value::from("1970-01-01T00:00:00Z")));
        assert_eq!(t(GO_ZERO_TIME_UNIX, 0, false), None);
        assert!(d.time(i64::MAX, 0, false).is_err());
    }
}
