//! Field paths and field sets, as structured-merge-diff's `fieldpath` package models them, and
//! their `FieldsV1` encoding (the `fieldsV1` of a `managedFields` entry).
//!
//! A [`PathElement`] is one step into an object: a field name (`f:spec`), the key of an item of
//! an associative list (`k:{"name":"nginx"}`), a value of a set list (`v:"finalizer"`) or an
//! index (`i:0`, only for lists SSA cannot key). A [`FieldSet`] is a tree of such steps: a path
//! is in the set when its last element is one of the `members` of the node its prefix leads to.
//! In `FieldsV1`, a node that is both a member and has members below it carries `".": {}`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

/// One step of a field path.
#[derive(Clone, Debug)]
pub enum PathElement {
    /// A field of a struct or a key of a map: `f:<name>`.
    Field(String),
    /// An item of an associative list, by its key fields sorted by name: `k:{"name":"nginx"}`.
    Key(Vec<(String, Value)>),
    /// An item of a set list, by its value: `v:"foo"`.
    Value(Value),
    /// An item of a list by position: `i:0`.
    Index(usize),
}

impl PathElement {
    fn rank(&self) -> u8 {
        match self {
            PathElement::Field(_) => 0,
            PathElement::Key(_) => 1,
            PathElement::Value(_) => 2,
            PathElement::Index(_) => 3,
        }
    }

    /// The `FieldsV1` key of this element.
    pub fn to_fields_key(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(fields) => {
                let mut object = Map::new();
                for (name, value) in fields {
                    object.insert(name.clone(), value.clone());
                }
                format!("k:{}", Value::Object(object))
            }
            PathElement::Value(value) => format!("v:{value}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    /// Parses a `FieldsV1` key (`f:…`, `k:…`, `v:…`, `i:…`).
    pub fn from_fields_key(key: &str) -> Result<PathElement, String> {
        let Some((kind, rest)) = key.split_at_checked(2) else {
            return Err(format!("invalid path element {key:?}"));
        };
        match kind {
            "f:" => Ok(PathElement::Field(rest.to_owned())),
            "v:" => serde_json::from_str(rest)
                .map(PathElement::Value)
                .map_err(|e| format!("invalid value in path element {key:?}: {e}")),
            "k:" => match serde_json::from_str::<Value>(rest) {
                Ok(Value::Object(object)) => {
                    let mut fields: Vec<(String, Value)> = object.into_iter().collect();
                    fields.sort_by(|a, b| a.0.cmp(&b.0));
                    Ok(PathElement::Key(fields))
                }
                Ok(_) => Err(format!("the key in path element {key:?} is not an object")),
                Err(e) => Err(format!("invalid key in path element {key:?}: {e}")),
            },
            "i:" => rest
                .parse()
                .map(PathElement::Index)
                .map_err(|e| format!("invalid index in path element {key:?}: {e}")),
            _ => Err(format!("unknown path element type in {key:?}")),
        }
    }
}

/// structured-merge-diff's `PathElement.Compare`: field names, then keys, then values, then
/// indexes; the encoded `FieldsV1` lists members in this order.
impl Ord for PathElement {
    fn cmp(&self, other: &PathElement) -> Ordering {
        match (self, other) {
            (PathElement::Field(a), PathElement::Field(b)) => a.cmp(b),
            (PathElement::Key(a), PathElement::Key(b)) => compare_fields(a, b),
            (PathElement::Value(a), PathElement::Value(b)) => compare_values(a, b),
            (PathElement::Index(a), PathElement::Index(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for PathElement {
    fn partial_cmp(&self, other: &PathElement) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for PathElement {
    fn eq(&self, other: &PathElement) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for PathElement {}

/// Upstream's path notation, used in conflict messages: `.spec.replicas`,
/// `.spec.containers[name="nginx"]`, `.metadata.finalizers[="a"]`, `[0]`.
impl fmt::Display for PathElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(fields) => {
                f.write_str("[")?;
                for (i, (name, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{name}={value}")?;
                }
                f.write_str("]")
            }
            PathElement::Value(value) => write!(f, "[={value}]"),
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// A path, displayed in upstream's notation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Path(pub Vec<PathElement>);

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for element in &self.0 {
            write!(f, "{element}")?;
        }
        Ok(())
    }
}

/// structured-merge-diff's `FieldList.Compare`: field by field, the shorter list first.
fn compare_fields(a: &[(String, Value)], b: &[(String, Value)]) -> Ordering {
    for ((an, av), (bn, bv)) in a.iter().zip(b) {
        let order = an.cmp(bn).then_with(|| compare_values(av, bv));
        if order != Ordering::Equal {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

/// structured-merge-diff's `value.Compare`, a total order on JSON values: numbers (compared
/// numerically across integers and floats), then strings, booleans, lists, maps and null.
pub fn compare_values(a: &Value, b: &Value) -> Ordering {
    fn rank(value: &Value) -> u8 {
        match value {
            Value::Number(_) => 0,
            Value::String(_) => 1,
            Value::Bool(_) => 2,
            Value::Array(_) => 3,
            Value::Object(_) => 4,
            Value::Null => 5,
        }
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            match (
                x.as_i64().map(i128::from).or(x.as_u64().map(i128::from)),
                y.as_i64().map(i128::from).or(y.as_u64().map(i128::from)),
            ) {
                (Some(x), Some(y)) => x.cmp(&y),
                _ => {
                    let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
                    x.partial_cmp(&y).unwrap_or(Ordering::Equal)
                }
            }
        }
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (x, y) in x.iter().zip(y) {
                let order = compare_values(x, y);
                if order != Ordering::Equal {
                    return order;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            let mut x: Vec<_> = x.iter().collect();
            let mut y: Vec<_> = y.iter().collect();
            x.sort_by(|a, b| a.0.cmp(b.0));
            y.sort_by(|a, b| a.0.cmp(b.0));
            for ((xk, xv), (yk, yv)) in x.iter().zip(&y) {
                let order = xk.cmp(yk).then_with(|| compare_values(xv, yv));
                if order != Ordering::Equal {
                    return order;
                }
            }
            x.len().cmp(&y.len())
        }
        _ => rank(a).cmp(&rank(b)),
    }
}

/// Whether two JSON values are equal in structured-merge-diff's sense: as `value.Equals`, numbers
/// compare numerically (`1` equals `1.0`) and map key order does not matter.
pub fn values_equal(a: &Value, b: &Value) -> bool {
    compare_values(a, b) == Ordering::Equal
}

/// A set of field paths (structured-merge-diff's `fieldpath.Set`). Children are never empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet {
    members: BTreeSet<PathElement>,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    pub fn new() -> FieldSet {
        FieldSet::default()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.is_empty()
    }

    /// Adds `path`; the empty path is not representable and is ignored (upstream ignores it too:
    /// the root is never owned).
    pub fn insert(&mut self, path: &[PathElement]) {
        let Some((last, prefix)) = path.split_last() else {
            return;
        };
        let mut node = self;
        for element in prefix {
            node = node.children.entry(element.clone()).or_default();
        }
        node.members.insert(last.clone());
    }

    #[cfg(test)]
    pub fn has(&self, path: &[PathElement]) -> bool {
        let Some((last, prefix)) = path.split_last() else {
            return false;
        };
        let mut node = self;
        for element in prefix {
            match node.children.get(element) {
                Some(child) => node = child,
                None => return false,
            }
        }
        node.members.contains(last)
    }

    /// Whether `element` (directly below this node) is a member.
    pub fn has_member(&self, element: &PathElement) -> bool {
        self.members.contains(element)
    }

    /// The paths below `element`, relative to it (upstream `WithPrefix`).
    pub fn child(&self, element: &PathElement) -> Option<&FieldSet> {
        self.children.get(element)
    }

    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.members.extend(other.members.iter().cloned());
        for (element, child) in &other.children {
            let merged = match out.children.get(element) {
                Some(mine) => mine.union(child),
                None => child.clone(),
            };
            out.children.insert(element.clone(), merged);
        }
        out
    }

    /// The paths of `self` that are not in `other`; a member of `other` does not take the
    /// paths below it away (upstream `Difference`).
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.difference(&other.members).cloned().collect();
        let mut children = BTreeMap::new();
        for (element, child) in &self.children {
            let rest = match other.children.get(element) {
                Some(theirs) => child.difference(theirs),
                None => child.clone(),
            };
            if !rest.is_empty() {
                children.insert(element.clone(), rest);
            }
        }
        FieldSet { members, children }
    }

    /// The paths of `self` that are neither in `other` nor below one of its members (upstream
    /// `RecursiveDifference`, used to filter out reset fields such as `status`).
    pub fn recursive_difference(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.difference(&other.members).cloned().collect();
        let mut children = BTreeMap::new();
        for (element, child) in &self.children {
            if other.members.contains(element) {
                continue;
            }
            let rest = match other.children.get(element) {
                Some(theirs) => child.recursive_difference(theirs),
                None => child.clone(),
            };
            if !rest.is_empty() {
                children.insert(element.clone(), rest);
            }
        }
        FieldSet { members, children }
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.intersection(&other.members).cloned().collect();
        let mut children = BTreeMap::new();
        for (element, child) in &self.children {
            if let Some(theirs) = other.children.get(element) {
                let both = child.intersection(theirs);
                if !both.is_empty() {
                    children.insert(element.clone(), both);
                }
            }
        }
        FieldSet { members, children }
    }

    /// Every path, in upstream's `Iterate` order: a node's members, then its children's paths.
    pub fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        let mut prefix = Vec::new();
        self.collect_paths(&mut prefix, &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Path>) {
        for member in &self.members {
            let mut path = prefix.clone();
            path.push(member.clone());
            out.push(Path(path));
        }
        for (element, child) in &self.children {
            prefix.push(element.clone());
            child.collect_paths(prefix, out);
            prefix.pop();
        }
    }

    /// Inserts a member for `element` (used by schema-aware rewrites of the set).
    pub(super) fn insert_member(&mut self, element: PathElement) {
        self.members.insert(element);
    }

    pub(super) fn children(&self) -> impl Iterator<Item = (&PathElement, &FieldSet)> {
        self.children.iter()
    }

    pub(super) fn set_child(&mut self, element: PathElement, child: FieldSet) {
        if child.is_empty() {
            self.children.remove(&element);
        } else {
            self.children.insert(element, child);
        }
    }

    /// The `FieldsV1` form: `{"f:spec":{"f:replicas":{}}}`, with `".": {}` on nodes that are
    /// members and have members below them, keys in path-element order (upstream
    /// `Set.ToJSON`).
    pub fn to_fields_v1(&self) -> Value {
        Value::Object(self.emit(false))
    }

    fn emit(&self, include_self: bool) -> Map<String, Value> {
        let mut out = Map::new();
        if include_self && !self.is_empty() {
            out.insert(".".into(), Value::Object(Map::new()));
        }
        let mut members = self.members.iter().peekable();
        let mut children = self.children.iter().peekable();
        loop {
            let order = match (members.peek(), children.peek()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(m), Some((c, _))) => (*m).cmp(*c),
            };
            match order {
                Ordering::Less => {
                    if let Some(member) = members.next() {
                        out.insert(member.to_fields_key(), Value::Object(Map::new()));
                    }
                }
                Ordering::Greater => {
                    if let Some((element, child)) = children.next() {
                        out.insert(element.to_fields_key(), Value::Object(child.emit(false)));
                    }
                }
                Ordering::Equal => {
                    members.next();
                    if let Some((element, child)) = children.next() {
                        out.insert(element.to_fields_key(), Value::Object(child.emit(true)));
                    }
                }
            }
        }
        out
    }

    /// Parses `FieldsV1` (upstream `Set.FromJSON`): an empty object marks a member, `"."`
    /// marks the node itself as a member of its parent.
    pub fn from_fields_v1(fields: &Value) -> Result<FieldSet, String> {
        let Value::Object(object) = fields else {
            return Err("fieldsV1 must be a JSON object".into());
        };
        Ok(FieldSet::read(object)?.0)
    }

    /// Returns the set below a node and whether the node carried `"."`.
    fn read(object: &Map<String, Value>) -> Result<(FieldSet, bool), String> {
        let mut set = FieldSet::new();
        let mut is_member = false;
        for (key, value) in object {
            if key == "." {
                is_member = true;
                continue;
            }
            let element = PathElement::from_fields_key(key)?;
            let Value::Object(inner) = value else {
                return Err(format!("the value of {key:?} must be a JSON object"));
            };
            let (child, child_is_member) = FieldSet::read(inner)?;
            if child.is_empty() {
                set.members.insert(element);
            } else {
                if child_is_member {
                    set.members.insert(element.clone());
                }
                set.children.insert(element, child);
            }
        }
        Ok((set, is_member))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn field(name: &str) -> PathElement {
        PathElement::Field(name.into())
    }

    #[test]
    fn fields_v1_round_trips_with_dot_markers() {
        let fields = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:name": {}}},
                       "f:finalizers": {"v:\"a\"": {}}}
        });
        let set = FieldSet::from_fields_v1(&fields).expect("valid");
        assert!(set.has(&[field("metadata"), field("labels")]));
        assert!(!set.has(&[field("metadata")]));
        assert!(set.has(&[
            field("spec"),
            field("containers"),
            PathElement::Key(vec![("name".into(), json!("nginx"))]),
        ]));
        assert_eq!(set.to_fields_v1(), fields);
        assert_eq!(
            serde_json::to_string(&set.to_fields_v1()).expect("json"),
            serde_json::to_string(&fields).expect("json")
        );
    }

    #[test]
    fn paths_display_in_upstream_notation() {
        let mut set = FieldSet::new();
        set.insert(&[field("spec"), field("replicas")]);
        set.insert(&[
            field("spec"),
            field("ports"),
            PathElement::Key(vec![
                ("port".into(), json!(80)),
                ("protocol".into(), json!("TCP")),
            ]),
            field("name"),
        ]);
        set.insert(&[
            field("metadata"),
            field("finalizers"),
            PathElement::Value(json!("x")),
        ]);
        let shown: Vec<String> = set.paths().iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                ".metadata.finalizers[=\"x\"]",
                ".spec.replicas",
                ".spec.ports[port=80,protocol=\"TCP\"].name"
            ]
        );
    }

    #[test]
    fn set_operations_follow_upstream() {
        let mut a = FieldSet::new();
        a.insert(&[field("spec"), field("replicas")]);
        a.insert(&[field("spec"), field("paused")]);
        a.insert(&[field("status"), field("replicas")]);
        let mut b = FieldSet::new();
        b.insert(&[field("spec"), field("replicas")]);
        b.insert(&[field("status")]);
        let mut only_paused = FieldSet::new();
        only_paused.insert(&[field("spec"), field("paused")]);
        let mut diff = only_paused.clone();
        diff.insert(&[field("status"), field("replicas")]);
        assert_eq!(a.difference(&b), diff);
        assert_eq!(a.recursive_difference(&b), only_paused);
        let mut both = FieldSet::new();
        both.insert(&[field("spec"), field("replicas")]);
        assert_eq!(a.intersection(&b), both);
        assert!(a.union(&b).has(&[field("status")]));
    }

    #[test]
    fn bad_fields_v1_is_rejected() {
        assert!(FieldSet::from_fields_v1(&json!({"x:y": {}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"f:a": 1})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"k:[1]": {}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!([])).is_err());
    }

    #[test]
    fn numbers_compare_numerically() {
        assert!(values_equal(&json!(1), &json!(1.0)));
        assert_eq!(compare_values(&json!(1), &json!("a")), Ordering::Less);
        assert!(values_equal(
            &json!({"a": 1, "b": 2}),
            &json!({"b": 2, "a": 1})
        ));
    }
}
