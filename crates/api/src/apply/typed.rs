//! Schema-aware walks over JSON objects, as structured-merge-diff's `typed` package does them:
//! the field set of a value ([`field_set`]), the comparison of two values ([`compare`]), the
//! server-side-apply merge ([`merge`]), the removal of a set of fields ([`remove_items`]) and
//! upstream's `EnsureNamedFieldsAreMembers` ([`ensure_named_fields_are_members`]).
//!
//! The schema comes from the OpenAPI index ([`crate::schema`]) the way upstream's `schemaconv`
//! reads it: a definition with properties is a struct (atomic with `x-kubernetes-map-type:
//! atomic`), `additionalProperties` a map, an array a list whose `x-kubernetes-list-type` says
//! whether it is atomic, a set (`v:` items) or a map keyed by `x-kubernetes-list-map-keys`
//! (`k:` items). Without a schema (kinds the index does not know, free-form and opaque types)
//! values are "deduced" as upstream does: objects are granular maps, lists are atomic.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use serde_json::{Map, Value};

use super::fieldpath::{FieldSet, Path, PathElement, values_equal};
use crate::schema::{Definition, FieldType, ListType, Property};

/// Definitions upstream marks `+structType=atomic` (`x-kubernetes-map-type: atomic` on the
/// definition in the v1.33 spec). The schema index only records map types on properties, so
/// the list is kept here; an owner of one of these owns it whole (`f:selector: {}`).
const ATOMIC_DEFINITIONS: &[&str] = &[
    "io.k8s.api.admissionregistration.v1.MatchResources",
    "io.k8s.api.admissionregistration.v1.NamedRuleWithOperations",
    "io.k8s.api.admissionregistration.v1.ParamKind",
    "io.k8s.api.admissionregistration.v1.ParamRef",
    "io.k8s.api.admissionregistration.v1.Variable",
    "io.k8s.api.admissionregistration.v1alpha1.MatchResources",
    "io.k8s.api.admissionregistration.v1alpha1.NamedRuleWithOperations",
    "io.k8s.api.admissionregistration.v1alpha1.ParamKind",
    "io.k8s.api.admissionregistration.v1alpha1.ParamRef",
    "io.k8s.api.admissionregistration.v1beta1.MatchResources",
    "io.k8s.api.admissionregistration.v1beta1.NamedRuleWithOperations",
    "io.k8s.api.admissionregistration.v1beta1.ParamKind",
    "io.k8s.api.admissionregistration.v1beta1.ParamRef",
    "io.k8s.api.admissionregistration.v1beta1.Variable",
    "io.k8s.api.autoscaling.v1.CrossVersionObjectReference",
    "io.k8s.api.core.v1.ConfigMapKeySelector",
    "io.k8s.api.core.v1.EndpointAddress",
    "io.k8s.api.core.v1.EndpointPort",
    "io.k8s.api.core.v1.LocalObjectReference",
    "io.k8s.api.core.v1.NodeSelector",
    "io.k8s.api.core.v1.NodeSelectorTerm",
    "io.k8s.api.core.v1.ObjectFieldSelector",
    "io.k8s.api.core.v1.ObjectReference",
    "io.k8s.api.core.v1.ResourceFieldSelector",
    "io.k8s.api.core.v1.ScopeSelector",
    "io.k8s.api.core.v1.SecretKeySelector",
    "io.k8s.api.core.v1.SecretReference",
    "io.k8s.api.core.v1.TopologySelectorTerm",
    "io.k8s.api.core.v1.TypedLocalObjectReference",
    "io.k8s.api.discovery.v1.EndpointPort",
    "io.k8s.api.networking.v1.ServiceBackendPort",
    "io.k8s.api.rbac.v1.RoleRef",
    "io.k8s.api.rbac.v1.Subject",
    "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
    "io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference",
];

/// Defaults of list-map key fields (upstream `+default` markers, present in the OpenAPI v3
/// models the API server builds its type converter from, absent from the v2 spec we index):
/// a port applied without `protocol` is keyed `{"containerPort":80,"protocol":"TCP"}`.
const KEY_DEFAULTS: &[(&str, &str, &str)] = &[
    ("io.k8s.api.core.v1.ContainerPort", "protocol", "TCP"),
    ("io.k8s.api.core.v1.ServicePort", "protocol", "TCP"),
];

/// Struct-typed fields that Go declares as values rather than pointers, so a zero object of the
/// kind already has them (`"spec": {}`); see [`with_zero_fields`].
const VALUE_STRUCT_FIELDS: &[&str] = &[
    "metadata",
    "spec",
    "status",
    "template",
    "jobTemplate",
    "strategy",
    "updateStrategy",
];

/// A value that does not fit its schema, named by field (upstream's typed-value validation:
/// `.spec.template.spec.containers: element 0: associative list with keys has an element that
/// omits all key fields ["name"] (and doesn't have default values for any key fields)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypedError {
    pub path: String,
    pub message: String,
}

impl std::error::Error for TypedError {}

impl fmt::Display for TypedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

fn error_at(path: &[PathElement], message: String) -> TypedError {
    TypedError {
        path: Path(path.to_vec()).to_string(),
        message,
    }
}

/// How a list's items are identified.
#[derive(Clone, Debug)]
pub enum ListKind<'a> {
    /// Replaced whole; owned as one field.
    Atomic,
    /// Items are scalars, identified by value (`v:`).
    Set,
    /// Items are objects, identified by these key fields (`k:`).
    Map(Vec<&'a str>),
}

/// The schema of one value.
#[derive(Clone, Debug)]
pub enum Shape<'a> {
    Struct {
        def: &'a Definition,
        atomic: bool,
    },
    Map {
        values: &'a FieldType,
        atomic: bool,
    },
    List {
        items: &'a FieldType,
        kind: ListKind<'a>,
    },
    Scalar,
    /// No schema: deduced from the value (objects granular, lists atomic).
    Deduced,
}

/// What a walk does with one value.
enum Node<'s, 'a> {
    /// A scalar, or a value whose JSON type does not fit its schema.
    Leaf,
    /// An atomic map or list: a leaf unless both sides are empty.
    Atomic,
    /// A granular struct or map.
    Map,
    List(&'s ListKind<'a>),
}

impl<'a> Shape<'a> {
    /// The shape of a whole object of a kind (`None`: a kind without schema).
    pub fn root(def: Option<&'a Definition>) -> Shape<'a> {
        match def {
            Some(def) if !def.is_opaque() && !def.preserves_unknown_fields() => {
                Shape::Struct { def, atomic: false }
            }
            _ => Shape::Deduced,
        }
    }

    fn of(field_type: &'a FieldType, property: Option<&'a Property>) -> Shape<'a> {
        let atomic_map = property.and_then(Property::map_type) == Some("atomic");
        match field_type {
            FieldType::String | FieldType::Integer | FieldType::Number | FieldType::Boolean => {
                Shape::Scalar
            }
            FieldType::Object | FieldType::Any => Shape::Deduced,
            FieldType::Ref(_) => match field_type.definition() {
                Some(def) if !def.is_opaque() && !def.preserves_unknown_fields() => Shape::Struct {
                    def,
                    atomic: atomic_map || ATOMIC_DEFINITIONS.contains(&def.name()),
                },
                // IntOrString, Quantity, Time, RawExtension …: deduced from the value.
                _ => Shape::Deduced,
            },
            FieldType::Array(items) => Shape::List {
                items,
                kind: list_kind(property),
            },
            FieldType::Map(values) => Shape::Map {
                values,
                atomic: atomic_map,
            },
        }
    }

    /// The shape of field `key` of a struct or map.
    pub fn field(&self, key: &str) -> Shape<'a> {
        match self {
            Shape::Struct { def, .. } => match def.property(key) {
                Some(property) => Shape::of(property.field_type(), Some(property)),
                // Undeclared fields (apiVersion/kind at the top, or fields the caller did not
                // prune) have no schema.
                None => Shape::Deduced,
            },
            Shape::Map { values, .. } => Shape::of(values, None),
            _ => Shape::Deduced,
        }
    }

    /// Whether `key` is a declared field of a struct (as opposed to a map key).
    fn declares(&self, key: &str) -> bool {
        matches!(self, Shape::Struct { def, .. } if def.property(key).is_some())
    }

    /// The shape of a list's items.
    fn item(&self) -> Shape<'a> {
        match self {
            Shape::List { items, .. } => Shape::of(items, None),
            _ => Shape::Deduced,
        }
    }

    /// The shape below one path element.
    pub fn child(&self, element: &PathElement) -> Shape<'a> {
        match element {
            PathElement::Field(name) => self.field(name),
            _ => self.item(),
        }
    }

    fn node(&self, value: &Value) -> Node<'_, 'a> {
        match self {
            Shape::Scalar => Node::Leaf,
            Shape::Deduced => match value {
                Value::Object(_) => Node::Map,
                Value::Array(_) => Node::Atomic,
                _ => Node::Leaf,
            },
            Shape::Struct { atomic, .. } | Shape::Map { atomic, .. } => match value {
                Value::Object(_) | Value::Null if *atomic => Node::Atomic,
                Value::Object(_) | Value::Null => Node::Map,
                _ => Node::Leaf,
            },
            Shape::List { kind, .. } => match (kind, value) {
                (ListKind::Atomic, Value::Array(_) | Value::Null) => Node::Atomic,
                (_, Value::Array(_) | Value::Null) => Node::List(kind),
                _ => Node::Leaf,
            },
        }
    }

    /// The item definition of a list of structs, for key defaults.
    fn item_definition(&self) -> Option<&'a Definition> {
        match self {
            Shape::List { items, .. } => items.definition(),
            _ => None,
        }
    }
}

fn list_kind(property: Option<&Property>) -> ListKind<'_> {
    let Some(property) = property else {
        return ListKind::Atomic;
    };
    match property.list_type() {
        Some(ListType::Atomic) => ListKind::Atomic,
        Some(ListType::Set) => ListKind::Set,
        Some(ListType::Map) => {
            let keys: Vec<&str> = property.list_map_keys().collect();
            if keys.is_empty() {
                ListKind::Set
            } else {
                ListKind::Map(keys)
            }
        }
        // Upstream's schema conversion falls back to the patch strategy for lists without a
        // list type: a merge key makes a map, merge alone a set, anything else is atomic.
        None if property.patch_strategy().merge => match property.patch_merge_key() {
            Some(key) => ListKind::Map(vec![key]),
            None => ListKind::Set,
        },
        None => ListKind::Atomic,
    }
}

fn is_empty_container(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::Object(map)) => map.is_empty(),
        Some(Value::Array(items)) => items.is_empty(),
        Some(_) => false,
    }
}

/// The path element of a list item (upstream `listItemToPathElement`).
fn item_element(shape: &Shape, kind: &ListKind, item: &Value) -> Result<PathElement, String> {
    match kind {
        ListKind::Map(keys) => {
            let Value::Object(fields) = item else {
                return Err(if item.is_null() {
                    "associative list with keys may not have a null element".into()
                } else {
                    "associative list with keys may not have non-map elements".into()
                });
            };
            let item_def = shape.item_definition().map(Definition::name);
            let mut key = Vec::with_capacity(keys.len());
            for name in keys {
                if let Some(value) = fields.get(*name) {
                    key.push(((*name).to_owned(), value.clone()));
                } else if let Some((_, _, default)) = KEY_DEFAULTS
                    .iter()
                    .find(|(def, field, _)| Some(*def) == item_def && field == name)
                {
                    key.push(((*name).to_owned(), Value::String((*default).to_owned())));
                }
                // A key field that is missing and has no default is left out of the key: the
                // item is a different entry from one that sets it (upstream does the same).
            }
            if key.is_empty() {
                let quoted: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
                return Err(format!(
                    "associative list with keys has an element that omits all key fields [{}] (and doesn't have default values for any key fields)",
                    quoted.join(" ")
                ));
            }
            key.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(PathElement::Key(key))
        }
        ListKind::Set | ListKind::Atomic => match item {
            Value::Object(_) => {
                Err("associative list without keys has an element that's a map type".into())
            }
            Value::Array(_) => Err("not supported: associative list with lists as elements".into()),
            Value::Null => {
                Err("associative list without keys has an element that's an explicit null".into())
            }
            scalar => Ok(PathElement::Value(scalar.clone())),
        },
    }
}

/// The path elements of a list's items. Strict (an applied configuration): an item that cannot
/// be keyed or a duplicate key is an error. Lenient (a stored object, upstream's
/// `AllowDuplicates`): unkeyable items fall back to their index and duplicates are kept.
fn item_elements(
    shape: &Shape,
    kind: &ListKind,
    items: &[Value],
    strict: bool,
    path: &[PathElement],
) -> Result<Vec<PathElement>, TypedError> {
    let mut out = Vec::with_capacity(items.len());
    let mut seen = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let element = match item_element(shape, kind, item) {
            Ok(element) => element,
            Err(message) if strict => {
                return Err(error_at(path, format!("element {i}: {message}")));
            }
            Err(_) => PathElement::Index(i),
        };
        if strict && !seen.insert(element.clone()) {
            return Err(error_at(
                path,
                format!("duplicate entries for key {element}"),
            ));
        }
        out.push(element);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Field sets.
// ---------------------------------------------------------------------------------------------

/// Every leaf field, list item and map entry of `value` (upstream `TypedValue.ToFieldSet`):
/// struct fields are members only when null or an empty object; map entries, list items,
/// leaves and atomic values always are. `strict` rejects unkeyable and duplicate list items.
pub fn field_set(value: &Value, shape: &Shape, strict: bool) -> Result<FieldSet, TypedError> {
    let mut out = FieldSet::new();
    let mut path = Vec::new();
    collect_fields(value, shape, strict, &mut path, &mut out)?;
    Ok(out)
}

fn collect_fields(
    value: &Value,
    shape: &Shape,
    strict: bool,
    path: &mut Vec<PathElement>,
    out: &mut FieldSet,
) -> Result<(), TypedError> {
    match shape.node(value) {
        Node::Leaf | Node::Atomic => out.insert(path),
        Node::Map => {
            if let Value::Object(fields) = value {
                for (key, child) in fields {
                    path.push(PathElement::Field(key.clone()));
                    // Upstream rejects an applied field its schema does not declare (this is
                    // reached only when field validation did not already reject it).
                    if strict && matches!(shape, Shape::Struct { .. }) && !shape.declares(key) {
                        return Err(error_at(path, "field not declared in schema".into()));
                    }
                    collect_fields(child, &shape.field(key), strict, path, out)?;
                    let empty_object = matches!(child, Value::Object(m) if m.is_empty());
                    if child.is_null() || empty_object || !shape.declares(key) {
                        out.insert(path);
                    }
                    path.pop();
                }
            }
        }
        Node::List(kind) => {
            if let Value::Array(items) = value {
                let elements = item_elements(shape, kind, items, strict, path)?;
                let item_shape = shape.item();
                for (element, item) in elements.into_iter().zip(items) {
                    path.push(element);
                    collect_fields(item, &item_shape, strict, path, out)?;
                    out.insert(path);
                    path.pop();
                }
            }
        }
    }
    Ok(())
}

/// Upstream `Set.EnsureNamedFieldsAreMembers`: a declared struct field with fields of its own in
/// the set becomes a member too, so that removing the set removes it when nothing else holds it.
pub fn ensure_named_fields_are_members(set: &FieldSet, shape: &Shape) -> FieldSet {
    let mut out = set.clone();
    for (element, child) in set.children() {
        if let PathElement::Field(name) = element
            && shape.declares(name)
        {
            out.insert_member(element.clone());
        }
        out.set_child(
            element.clone(),
            ensure_named_fields_are_members(child, &shape.child(element)),
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Comparison.
// ---------------------------------------------------------------------------------------------

/// The fields that differ between two versions of an object (upstream `typed.Comparison`).
#[derive(Clone, Debug, Default)]
pub struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

impl Comparison {
    /// Drops every path at or below `reset` (upstream `FilterFields` with the strategy's reset
    /// fields).
    pub fn exclude(&mut self, reset: &FieldSet) {
        self.added = self.added.recursive_difference(reset);
        self.modified = self.modified.recursive_difference(reset);
        self.removed = self.removed.recursive_difference(reset);
    }

    pub fn modified_or_added(&self) -> FieldSet {
        self.modified.union(&self.added)
    }
}

/// Compares `lhs` (old) with `rhs` (new), as upstream `TypedValue.Compare`.
pub fn compare(lhs: &Value, rhs: &Value, shape: &Shape) -> Comparison {
    let mut comparison = Comparison::default();
    let mut path = Vec::new();
    compare_values(Some(lhs), Some(rhs), shape, &mut path, &mut comparison);
    comparison
}

fn kind_tag(node: &Node) -> u8 {
    match node {
        Node::Leaf => 0,
        Node::Atomic => 1,
        Node::Map => 2,
        Node::List(_) => 3,
    }
}

fn compare_values(
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    shape: &Shape,
    path: &mut Vec<PathElement>,
    out: &mut Comparison,
) {
    let Some(probe) = rhs.or(lhs) else {
        return;
    };
    let node = shape.node(probe);
    // Values of different kinds (a scalar replaced by an object) changed as a whole.
    if let (Some(l), Some(_)) = (lhs, rhs)
        && kind_tag(&shape.node(l)) != kind_tag(&node)
    {
        out.modified.insert(path);
    }
    let in_leaf = match node {
        Node::Leaf => {
            leaf(lhs, rhs, path, out);
            true
        }
        Node::Atomic => {
            if is_empty_container(lhs) && is_empty_container(rhs) {
                false
            } else {
                leaf(lhs, rhs, path, out);
                true
            }
        }
        Node::Map => {
            let l = lhs.and_then(Value::as_object).filter(|m| !m.is_empty());
            let r = rhs.and_then(Value::as_object).filter(|m| !m.is_empty());
            if let Some(l) = l {
                for (key, lv) in l {
                    path.push(PathElement::Field(key.clone()));
                    let rv = r.and_then(|r| r.get(key));
                    compare_values(Some(lv), rv, &shape.field(key), path, out);
                    path.pop();
                }
            }
            if let Some(r) = r {
                for (key, rv) in r {
                    if l.is_some_and(|l| l.contains_key(key)) {
                        continue;
                    }
                    path.push(PathElement::Field(key.clone()));
                    compare_values(None, Some(rv), &shape.field(key), path, out);
                    path.pop();
                }
            }
            false
        }
        Node::List(kind) => {
            let l = lhs
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let r = rhs
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            if !(l.is_empty() && r.is_empty()) {
                compare_list(l, r, shape, kind, path, out);
            }
            false
        }
    };
    if !in_leaf {
        if lhs.is_none() {
            out.added.insert(path);
        } else if rhs.is_none() {
            out.removed.insert(path);
        }
    }
}

fn leaf(lhs: Option<&Value>, rhs: Option<&Value>, path: &[PathElement], out: &mut Comparison) {
    match (lhs, rhs) {
        (None, Some(_)) => out.added.insert(path),
        (Some(_), None) => out.removed.insert(path),
        (Some(l), Some(r)) if !values_equal(l, r) => out.modified.insert(path),
        _ => {}
    }
}

/// Upstream `compareWalker.visitListItems`: items pair up by key; a key held by several items
/// (allowed in stored objects) is compared as a whole.
fn compare_list(
    l: &[Value],
    r: &[Value],
    shape: &Shape,
    kind: &ListKind,
    path: &mut Vec<PathElement>,
    out: &mut Comparison,
) {
    let item_shape = shape.item();
    let mut order: Vec<PathElement> = Vec::new();
    let mut lhs_items: BTreeMap<PathElement, Vec<&Value>> = BTreeMap::new();
    let mut rhs_items: BTreeMap<PathElement, Vec<&Value>> = BTreeMap::new();
    let lhs_elements = item_elements(shape, kind, l, false, path).unwrap_or_default();
    for (element, item) in lhs_elements.into_iter().zip(l) {
        let entry = lhs_items.entry(element.clone()).or_default();
        if entry.is_empty() {
            order.push(element);
        }
        entry.push(item);
    }
    let rhs_elements = item_elements(shape, kind, r, false, path).unwrap_or_default();
    for (element, item) in rhs_elements.into_iter().zip(r) {
        let entry = rhs_items.entry(element.clone()).or_default();
        if entry.is_empty() && !lhs_items.contains_key(&element) {
            order.push(element);
        }
        entry.push(item);
    }
    for element in order {
        let ls = lhs_items.get(&element).map(Vec::as_slice).unwrap_or(&[]);
        let rs = rhs_items.get(&element).map(Vec::as_slice).unwrap_or(&[]);
        path.push(element);
        match (ls.len(), rs.len()) {
            (0..=1, 0..=1) => {
                compare_values(
                    ls.first().copied(),
                    rs.first().copied(),
                    &item_shape,
                    path,
                    out,
                );
            }
            (2.., 2..) => {
                let same =
                    ls.len() == rs.len() && ls.iter().zip(rs).all(|(a, b)| values_equal(a, b));
                if !same {
                    out.modified.insert(path);
                }
            }
            (2.., _) => {
                if let Some(first) = rs.first() {
                    compare_values(None, Some(first), &item_shape, path, out);
                }
                out.removed.insert(path);
            }
            (_, 2..) => {
                if let Some(first) = ls.first() {
                    compare_values(Some(first), None, &item_shape, path, out);
                }
                out.added.insert(path);
            }
        }
        path.pop();
    }
}

// ---------------------------------------------------------------------------------------------
// Merge.
// ---------------------------------------------------------------------------------------------

/// Merges an applied configuration into a live object (upstream `TypedValue.Merge`): maps and
/// structs merge field by field, associative lists item by item (by key), and everything else
/// (leaves, atomic values) takes the configuration's value. The configuration's list items must
/// be keyable and unique.
pub fn merge(live: &Value, config: &Value, shape: &Shape) -> Result<Value, TypedError> {
    let mut path = Vec::new();
    Ok(merge_values(Some(live), Some(config), shape, &mut path)?.unwrap_or(Value::Null))
}

fn merge_values(
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    shape: &Shape,
    path: &mut Vec<PathElement>,
) -> Result<Option<Value>, TypedError> {
    let Some(probe) = rhs.or(lhs) else {
        return Ok(None);
    };
    let keep_rhs = || rhs.or(lhs).cloned();
    match shape.node(probe) {
        Node::Leaf | Node::Atomic => Ok(keep_rhs()),
        Node::Map => {
            let l = lhs.and_then(Value::as_object).filter(|m| !m.is_empty());
            let r = rhs.and_then(Value::as_object).filter(|m| !m.is_empty());
            if l.is_none() && r.is_none() {
                return Ok(keep_rhs());
            }
            let mut out = Map::new();
            if let Some(l) = l {
                for (key, lv) in l {
                    path.push(PathElement::Field(key.clone()));
                    let rv = r.and_then(|r| r.get(key));
                    if let Some(merged) = merge_values(Some(lv), rv, &shape.field(key), path)? {
                        out.insert(key.clone(), merged);
                    }
                    path.pop();
                }
            }
            if let Some(r) = r {
                for (key, rv) in r {
                    if l.is_some_and(|l| l.contains_key(key)) {
                        continue;
                    }
                    path.push(PathElement::Field(key.clone()));
                    if let Some(merged) = merge_values(None, Some(rv), &shape.field(key), path)? {
                        out.insert(key.clone(), merged);
                    }
                    path.pop();
                }
            }
            Ok(Some(Value::Object(out)))
        }
        Node::List(kind) => {
            let l = lhs
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let r = rhs
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            if l.is_empty() && r.is_empty() {
                return Ok(keep_rhs());
            }
            merge_list(l, r, shape, kind, path).map(|items| Some(Value::Array(items)))
        }
    }
}

/// Upstream `mergingWalker.visitListItems`: the configuration's items keep their relative
/// order, items only the live list has keep their place among them.
fn merge_list(
    l: &[Value],
    r: &[Value],
    shape: &Shape,
    kind: &ListKind,
    path: &mut Vec<PathElement>,
) -> Result<Vec<Value>, TypedError> {
    let item_shape = shape.item();
    let rhs_elements = item_elements(shape, kind, r, true, path)?;
    let lhs_elements = item_elements(shape, kind, l, false, path)?;
    // A key held by several live items has no single live counterpart (`None`).
    let mut lhs_by_key: BTreeMap<&PathElement, Option<&Value>> = BTreeMap::new();
    for (element, item) in lhs_elements.iter().zip(l) {
        lhs_by_key
            .entry(element)
            .and_modify(|slot| *slot = None)
            .or_insert(Some(item));
    }
    let rhs_by_key: BTreeMap<&PathElement, &Value> = rhs_elements.iter().zip(r).collect();
    let mut shared: VecDeque<&PathElement> = rhs_elements
        .iter()
        .filter(|element| lhs_by_key.contains_key(element))
        .collect();
    let mut next_shared = shared.pop_front();
    let mut merged_rhs: BTreeSet<&PathElement> = BTreeSet::new();
    let mut out = Vec::with_capacity(l.len().max(r.len()));
    let (mut li, mut ri) = (0, 0);
    while li < l.len() || ri < r.len() {
        if li < l.len() && ri < r.len() {
            let element = &lhs_elements[li];
            if *element == rhs_elements[ri] {
                merged_rhs.insert(element);
                let lhs_item = lhs_by_key.get(element).copied().flatten();
                path.push(element.clone());
                let merged = merge_values(lhs_item, Some(&r[ri]), &item_shape, path)?;
                path.pop();
                out.extend(merged);
                li += 1;
                ri += 1;
                next_shared = shared.pop_front();
                continue;
            }
            // A live item the configuration also holds waits for its turn in the
            // configuration's order.
            if rhs_by_key.contains_key(element) && next_shared.is_some_and(|next| next != element) {
                li += 1;
                continue;
            }
        }
        if li < l.len() {
            let element = &lhs_elements[li];
            if !rhs_by_key.contains_key(element) {
                path.push(element.clone());
                let merged = merge_values(Some(&l[li]), None, &item_shape, path)?;
                path.pop();
                out.extend(merged);
                li += 1;
                continue;
            } else if merged_rhs.contains(element) {
                li += 1;
            }
        }
        if ri < r.len() {
            let element = &rhs_elements[ri];
            merged_rhs.insert(element);
            let lhs_item = lhs_by_key.get(element).copied().flatten();
            path.push(element.clone());
            let merged = merge_values(lhs_item, Some(&r[ri]), &item_shape, path)?;
            path.pop();
            out.extend(merged);
            ri += 1;
            if next_shared.is_some_and(|next| next == element) {
                next_shared = shared.pop_front();
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Removal.
// ---------------------------------------------------------------------------------------------

/// `value` without the fields, list items and map entries that are members of `set` (upstream
/// `TypedValue.RemoveItems`). A struct, map or list emptied by the removal is removed too, as
/// upstream's typed round trip drops the `null` it leaves.
pub fn remove_items(value: &Value, set: &FieldSet, shape: &Shape) -> Value {
    remove_from(value, set, shape).unwrap_or(Value::Null)
}

fn remove_from(value: &Value, set: &FieldSet, shape: &Shape) -> Option<Value> {
    match (shape.node(value), value) {
        (Node::Map, Value::Object(fields)) => {
            if fields.is_empty() {
                return None;
            }
            let mut out = Map::new();
            for (key, child) in fields {
                let element = PathElement::Field(key.clone());
                if set.has_member(&element) {
                    continue;
                }
                match set.child(&element) {
                    Some(below) => {
                        if let Some(kept) = remove_from(child, below, &shape.field(key)) {
                            out.insert(key.clone(), kept);
                        }
                    }
                    None => {
                        out.insert(key.clone(), child.clone());
                    }
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        (Node::List(kind), Value::Array(items)) => {
            if items.is_empty() {
                return None;
            }
            let elements = item_elements(shape, kind, items, false, &[]).unwrap_or_default();
            let item_shape = shape.item();
            let mut out = Vec::with_capacity(items.len());
            for (element, item) in elements.iter().zip(items) {
                if set.has_member(element) {
                    continue;
                }
                match set.child(element) {
                    Some(below) => out.extend(remove_from(item, below, &item_shape)),
                    None => out.push(item.clone()),
                }
            }
            (!out.is_empty()).then_some(Value::Array(out))
        }
        _ => Some(value.clone()),
    }
}

// ---------------------------------------------------------------------------------------------
// Zero values.
// ---------------------------------------------------------------------------------------------

/// `value` with the fields a Go object of the kind always has filled in: required fields (as
/// `null`) and value-typed structs such as `spec`, `spec.template` and `spec.strategy` (as
/// objects). Upstream compares typed Go objects, where these are never absent, so e.g. a new
/// Deployment's field set holds `spec.template.spec.containers` but not `spec.template` itself
/// (no `".": {}` under `f:template`); filling both sides of a comparison reproduces that.
pub fn with_zero_fields(value: &Value, def: Option<&Definition>) -> Value {
    let mut out = value.clone();
    if let Some(def) = def {
        fill_zero(&mut out, def, 0);
    }
    out
}

fn fill_zero(value: &mut Value, def: &Definition, depth: usize) {
    // Required struct fields can nest (JSONSchemaProps); Go's zero values stop at pointers.
    const MAX_DEPTH: usize = 8;
    let Value::Object(fields) = value else {
        return;
    };
    if depth > MAX_DEPTH {
        return;
    }
    for property in def.properties() {
        let name = property.name();
        let required = def.required().any(|r| r == name);
        // ReplicationController's template is the one pointer among these names.
        let value_struct = VALUE_STRUCT_FIELDS.contains(&name)
            && def.name() != "io.k8s.api.core.v1.ReplicationControllerSpec";
        let struct_def = match Shape::of(property.field_type(), Some(property)) {
            Shape::Struct { def, .. } => Some(def),
            _ => None,
        };
        match (struct_def, fields.get_mut(name)) {
            (Some(inner), Some(child)) => fill_zero(child, inner, depth + 1),
            (Some(inner), None) if value_struct => {
                let mut child = Value::Object(Map::new());
                fill_zero(&mut child, inner, depth + 1);
                fields.insert(name.to_owned(), child);
            }
            // Required fields are never omitted by Go's encoder; pointers, slices and maps
            // among them are null.
            (_, None) if required => {
                fields.insert(name.to_owned(), Value::Null);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::schema::definition_for_gvk;

    fn deployment() -> Shape<'static> {
        Shape::root(definition_for_gvk("apps", "v1", "Deployment"))
    }

    fn encoded(set: &FieldSet) -> Value {
        set.to_fields_v1()
    }

    #[test]
    fn field_set_of_an_applied_deployment() {
        let config = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [
                         {"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80}]}]}}}
        });
        let set = field_set(&config, &deployment(), true).expect("valid");
        assert_eq!(
            encoded(&set),
            json!({
                "f:apiVersion": {}, "f:kind": {},
                "f:metadata": {"f:labels": {"f:app": {}}, "f:name": {}},
                "f:spec": {"f:replicas": {}, "f:selector": {},
                    "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {
                        ".": {}, "f:image": {}, "f:name": {},
                        "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                            ".": {}, "f:containerPort": {}}}}}}}}
            })
        );
    }

    #[test]
    fn unkeyable_and_duplicate_items_are_rejected_in_configs() {
        let missing = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
        let err = field_set(&missing, &deployment(), true).expect_err("no key");
        assert_eq!(err.path, ".spec.template.spec.containers");
        assert!(err.message.starts_with("element 0: associative list with keys has an element that omits all key fields [\"name\"]"));
        let duplicate =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}, {"name": "a"}]}}}});
        let err = merge(&json!({}), &duplicate, &deployment()).expect_err("duplicate");
        assert_eq!(
            err.to_string(),
            ".spec.template.spec.containers: duplicate entries for key [name=\"a\"]"
        );
        // Stored objects are tolerated.
        assert!(field_set(&missing, &deployment(), false).is_ok());
    }

    #[test]
    fn merge_keeps_live_items_in_place_and_config_order() {
        let live = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1"}, {"name": "side", "image": "s"}, {"name": "b", "image": "b:1"}]}}}});
        let config = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "b", "image": "b:2"}, {"name": "a", "image": "a:2"}]}}}});
        let merged = merge(&live, &config, &deployment()).expect("merge");
        let names: Vec<&str> = merged["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, ["side", "b", "a"]);
        assert_eq!(
            merged["spec"]["template"]["spec"]["containers"][1]["image"],
            "b:2"
        );
    }

    #[test]
    fn compare_reports_added_modified_removed() {
        let old = json!({"spec": {"replicas": 1, "paused": true, "template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}});
        let new = json!({"spec": {"replicas": 2, "minReadySeconds": 5, "template": {"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b"}]}}}});
        let cmp = compare(&old, &new, &deployment());
        assert_eq!(
            encoded(&cmp.modified),
            json!({"f:spec": {"f:replicas": {}}})
        );
        assert_eq!(encoded(&cmp.removed), json!({"f:spec": {"f:paused": {}}}));
        assert_eq!(
            encoded(&cmp.added),
            json!({"f:spec": {"f:minReadySeconds": {}, "f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"b\"}": {".": {}, "f:name": {}}}}}}})
        );
    }

    #[test]
    fn remove_items_drops_emptied_parents() {
        let value = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 1}});
        let mut set = FieldSet::new();
        set.insert(&[
            PathElement::Field("metadata".into()),
            PathElement::Field("labels".into()),
            PathElement::Field("a".into()),
        ]);
        assert_eq!(
            remove_items(&value, &set, &deployment()),
            json!({"spec": {"replicas": 1}})
        );
    }

    #[test]
    fn zero_fields_follow_go_value_structs() {
        let def = definition_for_gvk("apps", "v1", "Deployment");
        let zero = with_zero_fields(&json!({}), def);
        assert_eq!(zero["spec"]["template"]["spec"]["containers"], Value::Null);
        assert!(zero["spec"]["strategy"].is_object());
        assert!(zero["status"].is_object());
        assert!(zero["spec"].get("minReadySeconds").is_none());
    }
}
