//! A compact index of the upstream OpenAPI definitions, and strict field checks built on it.
//!
//! `build.rs` condenses the upstream v1.33 spec into a small gzip'd JSON index (properties with
//! their types, patch merge keys and strategies, list types, and each definition's
//! group-version-kinds). [`index`] parses it once, on first use, into [`SchemaIndex`]; the full
//! spec is never held in memory.
//!
//! * Lookup: [`definition_for_gvk`], [`definition`], [`SchemaIndex`].
//! * Navigation (for strategic merge patch): [`Definition::property`], [`Property`] (patch
//!   strategy, merge key, list type), [`FieldType`] (`items`, `map_values`, `definition`).
//! * Strict field validation (upstream `fieldValidation=Strict`): [`unknown_fields`] walks a
//!   decoded object against its definition; [`duplicate_fields`] scans raw JSON for repeated
//!   keys. Both report paths in the format of upstream's strict decoder (sigs.k8s.io/json):
//!   keys joined by `.`, list indexes as `[i]`, e.g. `spec.template.spec.containers[0].foo`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Read as _;
use std::sync::OnceLock;

use flate2::read::GzDecoder;
use serde::Deserialize;
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

static SCHEMA_INDEX_GZIP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/schema-index.json.gz"));

/// Upstream's strict decoder stops collecting after this many unknown/duplicate field errors
/// (`saveStrictError` in sigs.k8s.io/json); so do we, so huge bodies cannot grow the message.
pub const MAX_STRICT_ERRORS: usize = 100;

/// Errors of this module. Not retryable: the input itself is at fault.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The body given to [`duplicate_fields`] is not one well-formed JSON document.
    #[error("the request body is not valid JSON: {0}")]
    InvalidJson(#[source] serde_json::Error),
}

/// A group, version and kind, e.g. `apps`/`v1`/`Deployment` (the core group is `""`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GroupVersionKind {
    pub group: String,
    pub version: String,
    pub kind: String,
}

/// A handle on one definition of the global index.
pub type DefinitionRef = &'static Definition;

/// The type of a property, array item or map value.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    String,
    Integer,
    Number,
    Boolean,
    /// A free-form object (`type: object` without properties): any keys, any values.
    Object,
    /// No type constraint (no `type`, or `x-kubernetes-preserve-unknown-fields`).
    Any,
    /// Another definition, by its position in the index (see [`FieldType::definition`]).
    Ref(u32),
    /// `type: array` with this item type.
    Array(Box<FieldType>),
    /// `type: object` with `additionalProperties` of this type: any key is allowed.
    Map(Box<FieldType>),
}

impl FieldType {
    /// The definition a `$ref` points to, resolved in the global [`index`].
    pub fn definition(&self) -> Option<DefinitionRef> {
        match self {
            FieldType::Ref(id) => index().definitions.get(*id as usize),
            _ => None,
        }
    }

    /// The item type of an array.
    pub fn items(&self) -> Option<&FieldType> {
        match self {
            FieldType::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The value type of a map (`additionalProperties`).
    pub fn map_values(&self) -> Option<&FieldType> {
        match self {
            FieldType::Map(values) => Some(values),
            _ => None,
        }
    }

    /// Whether any content is valid here without a closer look: free-form objects, untyped
    /// values, and definitions without properties (IntOrString, Quantity, RawExtension, JSON…).
    pub fn is_opaque(&self) -> bool {
        match self {
            FieldType::Object | FieldType::Any => true,
            FieldType::Ref(_) => self
                .definition()
                .is_none_or(|d| d.is_opaque() || d.preserves_unknown_fields()),
            _ => false,
        }
    }
}

/// `x-kubernetes-patch-strategy`, which may combine `merge` with `retainKeys`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PatchStrategy {
    /// `merge`: lists merge by merge key (or are unioned, for primitives); maps merge.
    pub merge: bool,
    /// `replace`: the field is replaced as a whole.
    pub replace: bool,
    /// `retainKeys`: the client sends `$retainKeys` so the server drops unlisted keys.
    pub retain_keys: bool,
}

impl PatchStrategy {
    fn parse(text: &str) -> PatchStrategy {
        let mut strategy = PatchStrategy::default();
        for part in text.split(',').map(str::trim) {
            match part {
                "merge" => strategy.merge = true,
                "replace" => strategy.replace = true,
                "retainKeys" => strategy.retain_keys = true,
                _ => {}
            }
        }
        strategy
    }
}

/// `x-kubernetes-list-type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListType {
    Atomic,
    Set,
    Map,
}

/// One property of a definition.
#[derive(Debug)]
pub struct Property {
    name: Box<str>,
    field_type: FieldType,
    patch_strategy: PatchStrategy,
    patch_merge_key: Option<Box<str>>,
    list_type: Option<ListType>,
    list_map_keys: Vec<Box<str>>,
    map_type: Option<Box<str>>,
}

impl Property {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn field_type(&self) -> &FieldType {
        &self.field_type
    }

    /// `x-kubernetes-patch-strategy` (all false when absent).
    pub fn patch_strategy(&self) -> PatchStrategy {
        self.patch_strategy
    }

    /// `x-kubernetes-patch-merge-key`, e.g. `name` for containers, `containerPort` for ports.
    pub fn patch_merge_key(&self) -> Option<&str> {
        self.patch_merge_key.as_deref()
    }

    /// `x-kubernetes-list-type`.
    pub fn list_type(&self) -> Option<ListType> {
        self.list_type
    }

    /// `x-kubernetes-list-map-keys` (for `listType: map`).
    pub fn list_map_keys(&self) -> impl Iterator<Item = &str> {
        self.list_map_keys.iter().map(|key| &**key)
    }

    /// `x-kubernetes-map-type` (`atomic` or `granular`).
    pub fn map_type(&self) -> Option<&str> {
        self.map_type.as_deref()
    }
}

/// One definition, e.g. `io.k8s.api.apps.v1.Deployment`.
#[derive(Debug)]
pub struct Definition {
    name: Box<str>,
    group_version_kinds: Vec<GroupVersionKind>,
    required: Vec<Box<str>>,
    properties: Vec<Property>,
    opaque: bool,
    preserve_unknown_fields: bool,
    /// `FieldType::Ref` to this definition, so a definition can start a schema walk.
    as_type: FieldType,
}

impl Definition {
    /// The definition's name in the spec, e.g. `io.k8s.api.core.v1.PodSpec`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `x-kubernetes-group-version-kind` (empty for definitions that are not kinds).
    pub fn group_version_kinds(&self) -> &[GroupVersionKind] {
        &self.group_version_kinds
    }

    /// The `required` property names.
    pub fn required(&self) -> impl Iterator<Item = &str> {
        self.required.iter().map(|name| &**name)
    }

    pub fn properties(&self) -> &[Property] {
        &self.properties
    }

    pub fn property(&self, name: &str) -> Option<&Property> {
        self.properties.iter().find(|p| &*p.name == name)
    }

    /// True for definitions whose JSON is not an object with fixed fields (IntOrString,
    /// Quantity, Time, RawExtension, FieldsV1, apiextensions JSON …).
    pub fn is_opaque(&self) -> bool {
        self.opaque
    }

    /// `x-kubernetes-preserve-unknown-fields: true` on the definition.
    pub fn preserves_unknown_fields(&self) -> bool {
        self.preserve_unknown_fields
    }

    /// This definition as a field type (a `$ref` to it).
    pub fn as_field_type(&self) -> &FieldType {
        &self.as_type
    }
}

/// The parsed schema index.
#[derive(Debug, Default)]
pub struct SchemaIndex {
    definitions: Vec<Definition>,
    by_name: HashMap<Box<str>, u32>,
    by_gvk: HashMap<GroupVersionKind, u32>,
}

impl SchemaIndex {
    pub fn len(&self) -> usize {
        self.definitions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.definitions.is_empty()
    }

    pub fn definitions(&self) -> &[Definition] {
        &self.definitions
    }

    /// A definition by its spec name, e.g. `io.k8s.api.core.v1.Pod`.
    pub fn definition(&self, name: &str) -> Option<&Definition> {
        let id = *self.by_name.get(name)?;
        self.definitions.get(id as usize)
    }

    /// The definition carrying `x-kubernetes-group-version-kind` = group/version/kind.
    pub fn definition_for_gvk(
        &self,
        group: &str,
        version: &str,
        kind: &str,
    ) -> Option<&Definition> {
        let key = GroupVersionKind {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: kind.to_owned(),
        };
        let id = *self.by_gvk.get(&key)?;
        self.definitions.get(id as usize)
    }

    fn parse(gzip: &[u8]) -> Result<SchemaIndex, std::io::Error> {
        let mut json = Vec::new();
        GzDecoder::new(gzip).read_to_end(&mut json)?;
        let raw: RawIndex = serde_json::from_slice(&json)?;
        let mut index = SchemaIndex {
            definitions: Vec::with_capacity(raw.definitions.len()),
            by_name: HashMap::with_capacity(raw.definitions.len()),
            by_gvk: HashMap::new(),
        };
        for (id, raw) in raw.definitions.into_iter().enumerate() {
            let id = u32::try_from(id).map_err(std::io::Error::other)?;
            let group_version_kinds: Vec<GroupVersionKind> = raw
                .gvk
                .into_iter()
                .map(|[group, version, kind]| GroupVersionKind {
                    group,
                    version,
                    kind,
                })
                .collect();
            for gvk in &group_version_kinds {
                // Upstream lists a kind under several definitions only for meta types such as
                // DeleteOptions/WatchEvent, which carry every group; the first one wins.
                index.by_gvk.entry(gvk.clone()).or_insert(id);
            }
            index.by_name.insert(raw.name.clone(), id);
            index.definitions.push(Definition {
                name: raw.name,
                group_version_kinds,
                required: raw.required,
                properties: raw.properties.into_iter().map(Property::from).collect(),
                opaque: raw.opaque,
                preserve_unknown_fields: raw.preserve_unknown_fields,
                as_type: FieldType::Ref(id),
            });
        }
        Ok(index)
    }
}

#[derive(Deserialize)]
struct RawIndex {
    definitions: Vec<RawDefinition>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDefinition {
    name: Box<str>,
    #[serde(default)]
    gvk: Vec<[String; 3]>,
    #[serde(default)]
    required: Vec<Box<str>>,
    #[serde(default)]
    properties: Vec<RawProperty>,
    #[serde(default)]
    opaque: bool,
    #[serde(default)]
    preserve_unknown_fields: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawProperty {
    name: Box<str>,
    #[serde(rename = "type")]
    field_type: FieldType,
    patch_strategy: Option<String>,
    patch_merge_key: Option<Box<str>>,
    list_type: Option<String>,
    #[serde(default)]
    list_map_keys: Vec<Box<str>>,
    map_type: Option<Box<str>>,
}

impl From<RawProperty> for Property {
    fn from(raw: RawProperty) -> Property {
        Property {
            name: raw.name,
            field_type: raw.field_type,
            patch_strategy: raw
                .patch_strategy
                .as_deref()
                .map(PatchStrategy::parse)
                .unwrap_or_default(),
            patch_merge_key: raw.patch_merge_key,
            list_type: match raw.list_type.as_deref() {
                Some("atomic") => Some(ListType::Atomic),
                Some("set") => Some(ListType::Set),
                Some("map") => Some(ListType::Map),
                _ => None,
            },
            list_map_keys: raw.list_map_keys,
            map_type: raw.map_type,
        }
    }
}

/// The global schema index, parsed from the embedded data on first use.
pub fn index() -> &'static SchemaIndex {
    static INDEX: OnceLock<SchemaIndex> = OnceLock::new();
    // The embedded bytes come from our build script and a unit test parses them; should they
    // ever be corrupt, an empty index degrades to "no schema" (merge-patch semantics, no
    // unknown-field checks) rather than taking the server down.
    INDEX.get_or_init(|| SchemaIndex::parse(SCHEMA_INDEX_GZIP).unwrap_or_default())
}

/// The definition of a kind, e.g. `("apps", "v1", "Deployment")` or `("", "v1", "Pod")`.
pub fn definition_for_gvk(group: &str, version: &str, kind: &str) -> Option<DefinitionRef> {
    index().definition_for_gvk(group, version, kind)
}

/// A definition by spec name, e.g. `io.k8s.api.core.v1.Container`.
pub fn definition(name: &str) -> Option<DefinitionRef> {
    index().definition(name)
}

// ---------------------------------------------------------------------------------------------
// Unknown fields.
// ---------------------------------------------------------------------------------------------

/// Every field of `value` that `def` does not declare, as upstream strict decoding reports them
/// (`unknown field "spec.template.spec.containers[0].foo"`), in document order, at most
/// [`MAX_STRICT_ERRORS`].
///
/// `apiVersion` and `kind` are always allowed at the top level; maps (`additionalProperties`)
/// accept any key; free-form and opaque types (IntOrString, Quantity, RawExtension, JSON,
/// `x-kubernetes-preserve-unknown-fields`) accept anything. Values of the wrong JSON type are
/// not looked into: that is a decoding error, reported elsewhere. As upstream, the contents of
/// an unknown field are not reported again.
pub fn unknown_fields(def: &Definition, value: &Value) -> Vec<String> {
    let mut walk = UnknownFieldWalk {
        path: String::new(),
        found: Vec::new(),
    };
    walk.definition(def, value, true);
    walk.found
}

struct UnknownFieldWalk {
    path: String,
    found: Vec<String>,
}

impl UnknownFieldWalk {
    fn full(&self) -> bool {
        self.found.len() >= MAX_STRICT_ERRORS
    }

    fn definition(&mut self, def: &Definition, value: &Value, top_level: bool) {
        if def.is_opaque() || def.preserves_unknown_fields() {
            return;
        }
        let Value::Object(fields) = value else {
            return;
        };
        for (key, child) in fields {
            if self.full() {
                return;
            }
            match def.property(key) {
                Some(property) => {
                    let len = push_key(&mut self.path, key);
                    self.field(property.field_type(), child);
                    self.path.truncate(len);
                }
                None if top_level && (key == "apiVersion" || key == "kind") => {}
                None => {
                    let len = push_key(&mut self.path, key);
                    self.found.push(self.path.clone());
                    self.path.truncate(len);
                }
            }
        }
    }

    fn field(&mut self, field_type: &FieldType, value: &Value) {
        match (field_type, value) {
            (FieldType::Ref(_), _) => {
                if let Some(def) = field_type.definition() {
                    self.definition(def, value, false);
                }
            }
            (FieldType::Array(items), Value::Array(elements)) => {
                for (i, element) in elements.iter().enumerate() {
                    let len = push_index(&mut self.path, i);
                    self.field(items, element);
                    self.path.truncate(len);
                }
            }
            (FieldType::Map(values), Value::Object(entries)) => {
                for (key, entry) in entries {
                    let len = push_key(&mut self.path, key);
                    self.field(values, entry);
                    self.path.truncate(len);
                }
            }
            _ => {}
        }
    }
}

/// The volume source keys of core/v1 `Volume` (every property but `name`), from the upstream
/// schema: `hostPath`, `emptyDir`, `configMap`, … Defaulting and validation both need them.
pub fn volume_source_keys() -> impl Iterator<Item = &'static str> {
    definition("io.k8s.api.core.v1.Volume")
        .into_iter()
        .flat_map(|d| d.properties().iter())
        .map(|p| p.name())
        .filter(|n| *n != "name")
}

/// Drops every field the schema does not know, like upstream decoding a body into its Go types
/// (what `fieldValidation=Ignore|Warn` stores). Opaque and preserve-unknown-fields types are kept
/// whole; values of the wrong JSON type are left for validation.
pub fn prune_unknown_fields(def: &Definition, value: &mut Value) {
    prune_definition(def, value, true);
}

fn prune_definition(def: &Definition, value: &mut Value, top_level: bool) {
    if def.is_opaque() || def.preserves_unknown_fields() {
        return;
    }
    let Value::Object(fields) = value else {
        return;
    };
    fields.retain(|key, _| def.property(key).is_some() || (top_level && (key == "apiVersion" || key == "kind")));
    for (key, child) in fields.iter_mut() {
        if let Some(property) = def.property(key) {
            prune_field(property.field_type(), child);
        }
    }
}

fn prune_field(field_type: &FieldType, value: &mut Value) {
    match (field_type, value) {
        (FieldType::Ref(_), value) => {
            if let Some(def) = field_type.definition() {
                prune_definition(def, value, false);
            }
        }
        (FieldType::Array(items), Value::Array(elements)) => {
            for element in elements {
                prune_field(items, element);
            }
        }
        (FieldType::Map(values), Value::Object(entries)) => {
            for entry in entries.values_mut() {
                prune_field(values, entry);
            }
        }
        _ => {}
    }
}

/// Appends `key` to a strict-decoding path (`a` then `a.b`); returns the length to restore.
fn push_key(path: &mut String, key: &str) -> usize {
    let len = path.len();
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
    len
}

/// Appends a list index (`a[0]`); returns the length to restore.
fn push_index(path: &mut String, i: usize) -> usize {
    use fmt::Write as _;
    let len = path.len();
    // Writing to a String cannot fail.
    let _ = write!(path, "[{i}]");
    len
}

// ---------------------------------------------------------------------------------------------
// Duplicate fields.
// ---------------------------------------------------------------------------------------------

/// Keys that appear more than once in the same JSON object of `raw_json`, as paths in upstream's
/// strict-decoding format (`duplicate field "metadata.name"`), in document order, each once, at
/// most [`MAX_STRICT_ERRORS`]. serde_json (like Go's decoder) silently keeps the last value, so
/// this is a separate scan of the raw bytes.
pub fn duplicate_fields(raw_json: &[u8]) -> Result<Vec<String>, SchemaError> {
    let mut scan = DuplicateScan {
        path: String::new(),
        found: Vec::new(),
        reported: HashSet::new(),
    };
    let mut deserializer = serde_json::Deserializer::from_slice(raw_json);
    ScanValue(&mut scan)
        .deserialize(&mut deserializer)
        .map_err(SchemaError::InvalidJson)?;
    deserializer.end().map_err(SchemaError::InvalidJson)?;
    Ok(scan.found)
}

struct DuplicateScan {
    path: String,
    found: Vec<String>,
    reported: HashSet<String>,
}

/// Visits one JSON value, recording duplicate keys below it.
struct ScanValue<'a>(&'a mut DuplicateScan);

impl<'de> DeserializeSeed<'de> for ScanValue<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScanValue<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let scan = self.0;
        let mut i = 0;
        loop {
            let len = push_index(&mut scan.path, i);
            let more = seq.next_element_seed(ScanValue(&mut *scan))?.is_some();
            scan.path.truncate(len);
            if !more {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let scan = self.0;
        let mut keys: HashSet<String> = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let len = push_key(&mut scan.path, &key);
            if keys.contains(&key) {
                if scan.found.len() < MAX_STRICT_ERRORS && scan.reported.insert(scan.path.clone()) {
                    scan.found.push(scan.path.clone());
                }
                map.next_value_seed(ScanValue(&mut *scan))?;
            } else {
                map.next_value_seed(ScanValue(&mut *scan))?;
                keys.insert(key);
            }
            scan.path.truncate(len);
        }
        Ok(())
    }
}

#[cfg(test)]
mod prune_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn volume_sources_come_from_the_schema() {
        let keys: Vec<&str> = volume_source_keys().collect();
        assert!(keys.contains(&"emptyDir") && keys.contains(&"configMap") && keys.contains(&"csi"), "{keys:?}");
        assert!(!keys.contains(&"name"));
    }

    #[test]
    fn pruning_drops_only_unknown_fields() {
        let def = definition_for_gvk("apps", "v1", "Deployment").expect("Deployment");
        let mut v = json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "bogus": 1,
            "metadata": {"name": "x", "labels": {"any-key": "v"}, "nope": true},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "c", "junk": 1, "resources": {"limits": {"cpu": "1"}}}]}}}
        });
        prune_unknown_fields(def, &mut v);
        assert_eq!(v, json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "x", "labels": {"any-key": "v"}},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": "1"}}}]}}}
        }));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment() -> DefinitionRef {
        definition_for_gvk("apps", "v1", "Deployment").expect("Deployment in index")
    }

    fn property(def: &str, name: &str) -> &'static Property {
        definition(def)
            .and_then(|d| d.property(name))
            .unwrap_or_else(|| panic!("{def}.{name} in index"))
    }

    #[test]
    fn index_holds_every_definition_and_kinds() {
        assert!(index().len() > 700);
        assert_eq!(deployment().name(), "io.k8s.api.apps.v1.Deployment");
        assert_eq!(
            definition_for_gvk("", "v1", "Pod").map(|d| d.name()),
            Some("io.k8s.api.core.v1.Pod")
        );
        assert_eq!(
            definition_for_gvk("batch", "v1", "CronJob").map(|d| d.name()),
            Some("io.k8s.api.batch.v1.CronJob")
        );
        assert!(definition_for_gvk("apps", "v1", "Nope").is_none());
        let gvks = deployment().group_version_kinds();
        assert_eq!(gvks.len(), 1);
        assert_eq!(gvks[0].kind, "Deployment");
        assert!(deployment().required().next().is_none());
        assert_eq!(
            definition("io.k8s.api.apps.v1.DeploymentSpec")
                .map(|d| d.required().collect::<Vec<_>>()),
            Some(vec!["selector", "template"])
        );
    }

    #[test]
    fn navigation_reaches_patch_metadata() {
        let spec = deployment().property("spec").expect("spec");
        let spec_def = spec.field_type().definition().expect("DeploymentSpec");
        let strategy = spec_def.property("strategy").expect("strategy");
        assert_eq!(
            strategy.patch_strategy(),
            PatchStrategy {
                retain_keys: true,
                ..PatchStrategy::default()
            }
        );

        let containers = property("io.k8s.api.core.v1.PodSpec", "containers");
        assert!(containers.patch_strategy().merge);
        assert_eq!(containers.patch_merge_key(), Some("name"));
        assert_eq!(containers.list_type(), Some(ListType::Map));
        let container = containers
            .field_type()
            .items()
            .and_then(FieldType::definition)
            .expect("Container");
        assert_eq!(container.name(), "io.k8s.api.core.v1.Container");

        let ports = property("io.k8s.api.core.v1.Container", "ports");
        assert_eq!(ports.patch_merge_key(), Some("containerPort"));
        assert_eq!(ports.list_type(), Some(ListType::Map));
        assert_eq!(
            ports.list_map_keys().collect::<Vec<_>>(),
            ["containerPort", "protocol"]
        );

        let volumes = property("io.k8s.api.core.v1.PodSpec", "volumes");
        assert!(volumes.patch_strategy().merge && volumes.patch_strategy().retain_keys);

        let finalizers = property(
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            "finalizers",
        );
        assert!(finalizers.patch_strategy().merge);
        assert_eq!(finalizers.field_type().items(), Some(&FieldType::String));

        let limits = property("io.k8s.api.core.v1.ResourceRequirements", "limits");
        let quantity = limits.field_type().map_values().expect("map");
        assert!(quantity.is_opaque());
        assert_eq!(
            quantity.definition().map(|d| d.name()),
            Some("io.k8s.apimachinery.pkg.api.resource.Quantity")
        );
        assert!(!FieldType::String.is_opaque());
    }

    #[test]
    fn unknown_fields_use_upstream_paths() {
        let object = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app.kubernetes.io/name": "web"}, "nmae": "x"},
            "spec": {
                "replicas": 1,
                "foo": {"deep": true},
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [
                        {"name": "a", "image": "nginx", "ports": [{"containerPort": 80, "bogus": 1}]},
                        {"name": "b", "image": "nginx", "imagePullPolice": "Always",
                         "resources": {"limits": {"cpu": "1", "memory": 5}}}
                    ]}
                },
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}}
            },
            "status": {}
        });
        assert_eq!(
            unknown_fields(deployment(), &object),
            [
                "metadata.nmae",
                "spec.foo",
                "spec.template.spec.containers[0].ports[0].bogus",
                "spec.template.spec.containers[1].imagePullPolice",
            ]
        );
    }

    #[test]
    fn unknown_fields_tolerate_wrong_types_and_opaque_values() {
        let pod = definition_for_gvk("", "v1", "Pod").expect("Pod");
        // Wrong JSON types are a decoding error, not unknown fields.
        assert!(unknown_fields(pod, &json!({"spec": "x", "metadata": [1]})).is_empty());
        assert!(unknown_fields(pod, &json!("not an object")).is_empty());
        // RawExtension accepts anything.
        let revision = definition_for_gvk("apps", "v1", "ControllerRevision").expect("CR");
        assert!(
            unknown_fields(
                revision,
                &json!({"data": {"anything": {"goes": 1}}, "revision": 1})
            )
            .is_empty()
        );
        // Nested objects without TypeMeta do not get apiVersion/kind for free.
        assert_eq!(
            unknown_fields(pod, &json!({"spec": {"kind": "x"}})),
            ["spec.kind"]
        );
    }

    #[test]
    fn unknown_fields_stop_at_the_upstream_limit() {
        let mut metadata = serde_json::Map::new();
        for i in 0..150 {
            metadata.insert(format!("x{i}"), json!(1));
        }
        let found = unknown_fields(deployment(), &json!({ "metadata": metadata }));
        assert_eq!(found.len(), MAX_STRICT_ERRORS);
        assert_eq!(found[0], "metadata.x0");
    }

    #[test]
    fn duplicate_fields_report_paths() {
        let raw = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","name":"b","labels":{"x":"1","x":"2","x":"3"}},
            "spec":{"containers":[{"name":"c"},{"name":"d","image":"i","image":"j"}]},"kind":"Pod"}"#;
        assert_eq!(
            duplicate_fields(raw).expect("valid JSON"),
            [
                "metadata.name",
                "metadata.labels.x",
                "spec.containers[1].image",
                "kind"
            ]
        );
        assert!(
            duplicate_fields(br#"{"a":{"b":1},"c":{"b":2}}"#)
                .expect("ok")
                .is_empty()
        );
        assert!(duplicate_fields(b"[1,2,{}]").expect("ok").is_empty());
    }

    #[test]
    fn duplicate_fields_reject_invalid_json() {
        assert!(matches!(
            duplicate_fields(br#"{"a":1"#),
            Err(SchemaError::InvalidJson(_))
        ));
        assert!(matches!(
            duplicate_fields(br#"{"a":1} {"b":2}"#),
            Err(SchemaError::InvalidJson(_))
        ));
    }
}
