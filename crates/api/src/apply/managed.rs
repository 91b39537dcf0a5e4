//! `metadata.managedFields` entries: decoding, encoding and the bookkeeping upstream's
//! `managedfields` package does around them (manager identity, sort order, the cap on Update
//! managers, the metadata no manager owns).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::Target;
use super::fieldpath::{FieldSet, PathElement};

/// `ManagedFieldsEntry.operation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// Who owns a set (upstream `BuildManagerIdentifier`): the manager name, the operation, the
/// subresource and, for Update entries only, the apiVersion. One applier therefore has one
/// entry whatever version it applies with, while an updater has one per version.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ManagerKey {
    pub manager: String,
    pub operation: Operation,
    pub api_version: Option<String>,
    pub subresource: Option<String>,
}

impl ManagerKey {
    pub fn new(manager: &str, operation: Operation, target: &Target) -> ManagerKey {
        ManagerKey {
            manager: manager.to_owned(),
            operation,
            api_version: (operation == Operation::Update).then(|| target.api_version.to_owned()),
            subresource: target.subresource.map(str::to_owned),
        }
    }

    /// The identifier string upstream sorts managers by (the JSON of the identifying fields).
    fn identifier(&self) -> String {
        let mut object = Map::new();
        if !self.manager.is_empty() {
            object.insert("manager".into(), self.manager.clone().into());
        }
        object.insert("operation".into(), self.operation.as_str().into());
        if let Some(version) = &self.api_version {
            object.insert("apiVersion".into(), version.clone().into());
        }
        if let Some(subresource) = &self.subresource {
            object.insert("subresource".into(), subresource.clone().into());
        }
        Value::Object(object).to_string()
    }
}

/// What one manager owns.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The version the set was recorded with.
    pub api_version: String,
    pub set: FieldSet,
    /// RFC 3339, seconds precision; absent when upstream would not have set it.
    pub time: Option<String>,
}

pub type Managed = BTreeMap<ManagerKey, Entry>;

/// Paths no manager owns (upstream `stripMetaManager`). Removing `metadata` as a member leaves
/// what is below it (labels, annotations …) owned.
pub fn strip_set() -> FieldSet {
    let mut set = FieldSet::new();
    let field = |name: &str| PathElement::Field(name.to_owned());
    set.insert(&[field("apiVersion")]);
    set.insert(&[field("kind")]);
    set.insert(&[field("metadata")]);
    for name in [
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
    ] {
        set.insert(&[field("metadata"), field(name)]);
    }
    set
}

/// Upstream `isResetManagedFields`: `[]` or `[{}]` sent by a client clears the managers.
pub fn is_reset(managed_fields: Option<&Value>) -> bool {
    match managed_fields {
        Some(Value::Array(entries)) => match entries.as_slice() {
            [] => true,
            [Value::Object(only)] => only.is_empty(),
            _ => false,
        },
        _ => false,
    }
}

/// Upstream `DecodeManagedFields`: every entry must have operation `Apply` or `Update`, an
/// apiVersion and fieldsType `FieldsV1`; a later entry with the same identity replaces an
/// earlier one. `None` and `null` decode to no managers.
pub fn decode(managed_fields: Option<&Value>) -> Result<Managed, String> {
    let mut managed = Managed::new();
    let entries = match managed_fields {
        None | Some(Value::Null) => return Ok(managed),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err("managedFields must be a list".into()),
    };
    for (i, entry) in entries.iter().enumerate() {
        let Value::Object(entry) = entry else {
            return Err(format!("managed fields entry {i} is not an object"));
        };
        let text = |field: &str| entry.get(field).and_then(Value::as_str).unwrap_or("");
        let operation = match text("operation") {
            "Apply" => Operation::Apply,
            "Update" => Operation::Update,
            _ => return Err("operation must be `Apply` or `Update`".into()),
        };
        let api_version = text("apiVersion");
        if api_version.is_empty() {
            return Err("apiVersion must not be empty".into());
        }
        match text("fieldsType") {
            "FieldsV1" => {}
            "" => return Err(format!("missing fieldsType in managed fields entry {i}")),
            other => {
                return Err(format!(
                    "invalid fieldsType {other:?} in managed fields entry {i}"
                ));
            }
        }
        let set = match entry.get("fieldsV1") {
            None | Some(Value::Null) => FieldSet::new(),
            Some(fields) => FieldSet::from_fields_v1(fields)
                .map_err(|e| format!("error decoding set of entry {i}: {e}"))?,
        };
        let subresource = Some(text("subresource"))
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let key = ManagerKey {
            manager: text("manager").to_owned(),
            operation,
            api_version: (operation == Operation::Update).then(|| api_version.to_owned()),
            subresource,
        };
        let time = entry.get("time").and_then(Value::as_str).map(str::to_owned);
        managed.insert(
            key,
            Entry {
                api_version: api_version.to_owned(),
                set,
                time,
            },
        );
    }
    Ok(managed)
}

fn unix_seconds(time: Option<&str>) -> i64 {
    time.and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map_or(0, |t| t.as_second())
}

/// The `managedFields` list, sorted as upstream's `sortEncodedManagedFields`: Apply before
/// Update, then oldest first, then by manager, apiVersion and subresource.
pub fn encode(managed: &Managed) -> Vec<Value> {
    let mut entries: Vec<(&ManagerKey, &Entry)> = managed.iter().collect();
    entries.sort_by(|(ka, ea), (kb, eb)| {
        ka.operation
            .cmp(&kb.operation)
            .then_with(|| unix_seconds(ea.time.as_deref()).cmp(&unix_seconds(eb.time.as_deref())))
            .then_with(|| ka.manager.cmp(&kb.manager))
            .then_with(|| ea.api_version.cmp(&eb.api_version))
            .then_with(|| ka.subresource.cmp(&kb.subresource))
    });
    entries
        .into_iter()
        .map(|(key, entry)| {
            // The field order of upstream's ManagedFieldsEntry.
            let mut out = Map::new();
            if !key.manager.is_empty() {
                out.insert("manager".into(), key.manager.clone().into());
            }
            out.insert("operation".into(), key.operation.as_str().into());
            out.insert("apiVersion".into(), entry.api_version.clone().into());
            if let Some(time) = &entry.time {
                out.insert("time".into(), time.clone().into());
            }
            out.insert("fieldsType".into(), "FieldsV1".into());
            out.insert("fieldsV1".into(), entry.set.to_fields_v1());
            if let Some(subresource) = &key.subresource {
                out.insert("subresource".into(), subresource.clone().into());
            }
            Value::Object(out)
        })
        .collect()
}

/// Upstream keeps at most this many Update managers (`DefaultMaxUpdateManagers`).
pub const MAX_UPDATE_MANAGERS: usize = 10;

/// The manager the oldest Update entries fold into.
const ANCIENT_CHANGES: &str = "ancient-changes";

/// Upstream `capUpdateManagers`: past [`MAX_UPDATE_MANAGERS`] Update entries, the oldest ones
/// are merged, per apiVersion, into an `ancient-changes` entry.
pub fn cap_update_managers(managed: &mut Managed) {
    let mut updaters: Vec<ManagerKey> = managed
        .keys()
        .filter(|key| key.operation == Operation::Update)
        .cloned()
        .collect();
    if updaters.len() <= MAX_UPDATE_MANAGERS {
        return;
    }
    updaters.sort_by_cached_key(|key| {
        let time = managed.get(key).and_then(|e| e.time.as_deref());
        (unix_seconds(time), key.identifier())
    });
    let mut length = updaters.len();
    let mut first_by_version: BTreeMap<String, ManagerKey> = BTreeMap::new();
    for key in updaters {
        if length <= MAX_UPDATE_MANAGERS {
            break;
        }
        let Some(entry) = managed.get(&key).cloned() else {
            continue;
        };
        let version = entry.api_version.clone();
        let bucket = ManagerKey {
            manager: ANCIENT_CHANGES.to_owned(),
            operation: Operation::Update,
            api_version: Some(version.clone()),
            subresource: None,
        };
        match first_by_version.get(&version) {
            Some(first) => {
                if !managed.contains_key(&bucket)
                    && let Some(first_entry) = managed.remove(first)
                {
                    managed.insert(bucket.clone(), first_entry);
                }
                if let Some(bucket_entry) = managed.get_mut(&bucket) {
                    bucket_entry.set = entry.set.union(&bucket_entry.set);
                    bucket_entry.time = entry.time.clone();
                }
                managed.remove(&key);
                length -= 1;
            }
            None => {
                first_by_version.insert(version, key);
            }
        }
    }
}

/// Writes `value` as Go's `encoding/json` does for an unstructured object (what upstream puts
/// in the last-applied annotation): compact, map keys sorted, `<`, `>`, `&`, U+2028 and U+2029
/// escaped.
pub fn write_go_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(fields) => {
            let mut keys: Vec<&String> = fields.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_string(key, out);
                out.push(':');
                if let Some(v) = fields.get(key) {
                    write_go_json(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_json(item, out);
            }
            out.push(']');
        }
        Value::String(s) => write_go_string(s, out),
        other => out.push_str(&other.to_string()),
    }
}

fn write_go_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
