//! Strategic merge patch, as upstream apimachinery's `pkg/util/strategicpatch` applies it on
//! the server (`StrategicMergeMapPatch` with `MergeParallelList` and `IgnoreUnmatchedNulls`).
//!
//! The patch strategy and merge key of each field come from the schema index
//! (`x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`):
//! * maps merge key by key; `null` deletes a key;
//! * lists with strategy `merge` merge by their merge key (containers, env and volumes by
//!   `name`, ports by `containerPort`/`port`, volumeMounts by `mountPath` …); primitive lists
//!   with strategy `merge` (finalizers) are unioned; every other list is replaced;
//! * directives: `$patch: replace | delete` on a map or as a list element (`merge` is rejected,
//!   as upstream does), `$setElementOrder/<list>`, `$retainKeys` (sent by clients for
//!   `retainKeys` fields such as Deployment `strategy` and volumes) and
//!   `$deleteFromPrimitiveList/<list>`.
//!
//! Upstream decodes the result into the Go type, which silently drops directive keys and `null`
//! fields that a patch carried into new content; the JSON produced here is cleaned the same way
//! so that no `$…` key is ever stored.
//!
//! Ordering follows upstream's `normalizeElementOrder`: `$setElementOrder` first, then the
//! order of the patch list, then the order of the live list.

use serde_json::{Map, Value};

use super::PatchError;
use crate::patch::merge_patch;
use crate::schema::{Definition, FieldType, PatchStrategy};

const DIRECTIVE_MARKER: &str = "$patch";
const RETAIN_KEYS_DIRECTIVE: &str = "$retainKeys";
const SET_ELEMENT_ORDER_PREFIX: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST_PREFIX: &str = "$deleteFromPrimitiveList";

// Upstream's messages (k8s.io/apimachinery/pkg/util/mergepatch), kept so users can search them.
const BAD_PRIMITIVE_LIST: &str = "invalid patch format of primitive list";
const BAD_RETAIN_KEYS: &str = "invalid patch format of retainKeys";
const BAD_SET_ELEMENT_ORDER: &str = "invalid patch format of setElementOrder list";

/// Applies a strategic merge patch to `doc`, using `def` (the kind's definition, e.g. from
/// `schema::definition_for_gvk`) for patch strategies and merge keys. Without a definition
/// (a kind the schema does not know) the patch is applied as a JSON merge patch.
pub fn strategic_merge_patch(
    doc: &Value,
    patch: &Value,
    def: Option<&Definition>,
) -> Result<Value, PatchError> {
    let Some(def) = def else {
        return merge_patch(doc, patch);
    };
    let Value::Object(patch) = patch else {
        return Err(PatchError::NotAnObject {
            what: "a strategic merge patch",
        });
    };
    let Value::Object(original) = doc else {
        return Err(PatchError::NotAnObject {
            what: "the object to patch",
        });
    };
    let merged = merge_map(
        original.clone(),
        patch.clone(),
        Schema::Definition(def),
        &Path::root(),
    )?;
    Ok(Value::Object(merged))
}

// ---------------------------------------------------------------------------------------------
// Schema navigation.
// ---------------------------------------------------------------------------------------------

/// What is known about the map being merged.
#[derive(Clone, Copy)]
enum Schema<'a> {
    /// Fields described by a definition.
    Definition(&'a Definition),
    /// A map whose every value has this type (`additionalProperties`).
    Map(&'a FieldType),
    /// Nothing (opaque types, fields the schema does not declare): maps merge key by key and
    /// lists are replaced, as for any field without a patch strategy.
    Unknown,
}

impl<'a> Schema<'a> {
    fn of(field_type: Option<&'a FieldType>) -> Schema<'a> {
        match field_type {
            Some(FieldType::Map(values)) => Schema::Map(values),
            Some(ref_type @ FieldType::Ref(_)) => match ref_type.definition() {
                Some(def) if !def.is_opaque() && !def.preserves_unknown_fields() => {
                    Schema::Definition(def)
                }
                _ => Schema::Unknown,
            },
            _ => Schema::Unknown,
        }
    }

    /// Upstream `LookupPatchMetadataForStruct` / `ForSlice`.
    fn field(self, key: &str) -> FieldMeta<'a> {
        match self {
            Schema::Definition(def) => match def.property(key) {
                Some(property) => FieldMeta {
                    field_type: Some(property.field_type()),
                    strategy: property.patch_strategy(),
                    merge_key: property.patch_merge_key().unwrap_or(""),
                },
                None => FieldMeta::default(),
            },
            Schema::Map(values) => FieldMeta {
                field_type: Some(values),
                ..FieldMeta::default()
            },
            Schema::Unknown => FieldMeta::default(),
        }
    }
}

/// Patch metadata of one field.
#[derive(Default)]
struct FieldMeta<'a> {
    field_type: Option<&'a FieldType>,
    strategy: PatchStrategy,
    merge_key: &'a str,
}

impl<'a> FieldMeta<'a> {
    /// The schema of the field's value when it is a map.
    fn object_schema(&self) -> Schema<'a> {
        Schema::of(self.field_type)
    }

    /// The schema of the field's elements when it is a list.
    fn element_schema(&self) -> Schema<'a> {
        Schema::of(self.field_type.and_then(FieldType::items))
    }
}

/// The field being merged, for error messages: `spec.template.spec.containers[name=nginx]`.
struct Path(String);

impl Path {
    fn root() -> Path {
        Path(String::new())
    }

    fn child(&self, key: &str) -> Path {
        if self.0.is_empty() {
            Path(key.to_owned())
        } else {
            Path(format!("{}.{key}", self.0))
        }
    }

    fn element(&self, merge_key: &str, value: &Value) -> Path {
        let value = match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        Path(format!("{}[{merge_key}={value}]", self.0))
    }

    fn bad_format(&self, message: &str) -> PatchError {
        PatchError::BadFormat {
            field: self.0.clone(),
            message: message.to_owned(),
        }
    }

    fn merge_error(&self, message: String) -> PatchError {
        PatchError::Merge {
            field: self.0.clone(),
            message,
        }
    }

    fn no_merge_key(&self, item: &Value, merge_key: &str) -> PatchError {
        self.merge_error(format!(
            "map: {item} does not contain declared merge key: {merge_key}"
        ))
    }

    fn not_a_map(&self, item: &Value) -> PatchError {
        self.merge_error(format!(
            "expected a map, but received a {}: {item}",
            json_kind_name(item)
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Maps.
// ---------------------------------------------------------------------------------------------

/// Upstream `mergeMap`.
fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    schema: Schema<'_>,
    path: &Path,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(directive) = patch.get(DIRECTIVE_MARKER) {
        return match directive.as_str() {
            Some("replace") => {
                patch.shift_remove(DIRECTIVE_MARKER);
                Ok(decoded_map(patch))
            }
            Some("delete") => Ok(Map::new()),
            _ => Err(path.merge_error(format!(
                "unknown patch type: {directive} in map: {}",
                Value::Object(patch.clone())
            ))),
        };
    }

    apply_retain_keys(&mut original, &mut patch, path)?;
    merge_set_element_order(&mut original, &mut patch, schema, path)?;

    for (key, patch_value) in patch {
        let (key, is_delete_list) = match key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST_PREFIX) {
            Some(rest) => match rest.strip_prefix('/') {
                Some(list) => (list.to_owned(), true),
                None => return Err(path.child(&key).bad_format(BAD_PRIMITIVE_LIST)),
            },
            None => (key, false),
        };
        let field_path = path.child(&key);

        // `null` deletes the key (and, with IgnoreUnmatchedNulls, is never stored).
        if patch_value.is_null() {
            original.shift_remove(&key);
            continue;
        }

        let Some(current) = original.get_mut(&key).map(std::mem::take) else {
            // Not in the original: take the patch value, unless it only deletes entries.
            if !is_delete_list && let Some(value) = remove_directives(patch_value) {
                original.insert(key, value);
            }
            continue;
        };

        let merged = merge_field(
            current,
            patch_value,
            schema.field(&key),
            is_delete_list,
            &field_path,
        )?;
        match merged {
            Some(value) => {
                original.insert(key, value);
            }
            None => {
                original.shift_remove(&key);
            }
        }
    }
    Ok(original)
}

/// Merges one field present in both the original and the patch; `None` removes it.
fn merge_field(
    current: Value,
    patch_value: Value,
    meta: FieldMeta<'_>,
    is_delete_list: bool,
    path: &Path,
) -> Result<Option<Value>, PatchError> {
    if json_kind(&current) != json_kind(&patch_value) {
        // Different JSON types: the patch value wins (a delete list leaves the field alone).
        if is_delete_list {
            return Ok(Some(current));
        }
        return Ok(remove_directives(patch_value));
    }
    match (current, patch_value) {
        (Value::Object(current), Value::Object(patch)) => {
            if meta.strategy.replace {
                return Ok(Some(Value::Object(decoded_map(patch))));
            }
            let merged = merge_map(current, patch, meta.object_schema(), path)?;
            Ok(Some(Value::Object(merged)))
        }
        (Value::Array(current), Value::Array(patch)) => {
            let merged = merge_list_field(current, patch, &meta, is_delete_list, path)?;
            Ok(Some(Value::Array(merged)))
        }
        (_, scalar) => Ok(remove_directives(scalar)),
    }
}

/// Upstream `applyRetainKeysDirective`: drops every key of `original` that `$retainKeys` does
/// not list, after checking the patch sets no key outside that list.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    path: &Path,
) -> Result<(), PatchError> {
    let Some(retain) = patch.shift_remove(RETAIN_KEYS_DIRECTIVE) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(path.bad_format(BAD_RETAIN_KEYS));
    };
    let retained = |key: &str| retain.iter().any(|k| k.as_str() == Some(key));
    for (key, value) in patch.iter() {
        if value.is_null()
            || key.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX)
            || key.starts_with(SET_ELEMENT_ORDER_PREFIX)
        {
            continue;
        }
        if !retained(key) {
            return Err(path.child(key).bad_format(BAD_RETAIN_KEYS));
        }
    }
    original.retain(|key, _| retained(key));
    Ok(())
}

/// Upstream `mergePatchIntoOriginal`: merges each list that has a `$setElementOrder/<list>`
/// directive and puts its elements in that order (server-only elements keep their place
/// relative to the live list).
fn merge_set_element_order(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    schema: Schema<'_>,
    path: &Path,
) -> Result<(), PatchError> {
    let directives: Vec<String> = patch
        .keys()
        .filter(|key| key.starts_with(SET_ELEMENT_ORDER_PREFIX))
        .cloned()
        .collect();
    for directive in directives {
        let Some(order) = patch.shift_remove(&directive) else {
            continue;
        };
        let Some(key) = directive
            .strip_prefix(SET_ELEMENT_ORDER_PREFIX)
            .and_then(|rest| rest.strip_prefix('/'))
            .map(str::to_owned)
        else {
            return Err(path.child(&directive).bad_format(BAD_SET_ELEMENT_ORDER));
        };
        let field_path = path.child(&key);
        let Value::Array(order) = order else {
            return Err(field_path.bad_format(BAD_SET_ELEMENT_ORDER));
        };
        let original_list = match original.get(&key) {
            None => None,
            Some(Value::Array(list)) => Some(list.clone()),
            Some(other) => {
                return Err(field_path.merge_error(format!(
                    "expected a list, but the object has a {}",
                    json_kind_name(other)
                )));
            }
        };
        let patch_list = match patch.shift_remove(&key) {
            None => None,
            Some(Value::Array(list)) => Some(list),
            Some(other) => {
                return Err(field_path.merge_error(format!(
                    "expected a list, but the patch has a {}",
                    json_kind_name(&other)
                )));
            }
        };
        let meta = schema.field(&key);
        let merge_key = meta.merge_key;
        validate_patch_with_order(
            patch_list.as_deref().unwrap_or(&[]),
            &order,
            merge_key,
            &field_path,
        )?;

        let merged = match (&original_list, patch_list.clone()) {
            (Some(current), None) => current.clone(),
            (None, Some(patch)) => remove_directives_in_list(patch),
            (Some(current), Some(patch)) => {
                merge_list_field(current.clone(), patch, &meta, false, &field_path)?
            }
            (None, None) => continue,
        };

        let kind = element_kind(
            &[
                original_list.as_deref().unwrap_or(&[]),
                patch_list.as_deref().unwrap_or(&[]),
            ],
            &field_path,
        )?;
        let Some(kind) = kind else {
            // Nothing to order (upstream errors out on two empty lists; an empty result is
            // the only sensible answer).
            original.insert(key, Value::Array(merged));
            continue;
        };
        let (patch_items, server_only) = partition(merged, &order, merge_key, &field_path)?;
        let ordered = normalize_element_order(
            patch_items,
            server_only,
            &order,
            original_list.as_deref().unwrap_or(&[]),
            merge_key,
            kind,
            &field_path,
        )?;
        original.insert(key, Value::Array(ordered));
    }
    Ok(())
}

/// Upstream `validatePatchWithSetOrderList`: the patch list (deletions aside) must follow the
/// relative order of `$setElementOrder`, and hold nothing it does not list.
fn validate_patch_with_order(
    patch_list: &[Value],
    order: &[Value],
    merge_key: &str,
    path: &Path,
) -> Result<(), PatchError> {
    if order.is_empty() || patch_list.is_empty() {
        return Ok(());
    }
    let mut non_delete = Vec::with_capacity(patch_list.len());
    for item in patch_list {
        if !merge_key.is_empty() {
            let Value::Object(map) = item else {
                return Err(path.not_a_map(item));
            };
            if map.get(DIRECTIVE_MARKER).and_then(Value::as_str) == Some("delete") {
                continue;
            }
        }
        non_delete.push(item);
    }
    let (mut p, mut o) = (0, 0);
    while p < non_delete.len() && o < order.len() {
        if has_directive(non_delete[p]) {
            p += 1;
            continue;
        }
        if merge_key_equal(non_delete[p], &order[o], merge_key, path)? {
            p += 1;
        }
        o += 1;
    }
    if p < non_delete.len() && o >= order.len() {
        return Err(path.merge_error(format!(
            "the order in the patch list {} does not match the $setElementOrder list {}",
            Value::Array(patch_list.to_vec()),
            Value::Array(order.to_vec())
        )));
    }
    Ok(())
}

fn merge_key_equal(
    left: &Value,
    right: &Value,
    merge_key: &str,
    path: &Path,
) -> Result<bool, PatchError> {
    if merge_key.is_empty() {
        return Ok(values_equal(left, right));
    }
    let key_of = |item: &Value| -> Result<Value, PatchError> {
        let Value::Object(map) = item else {
            return Err(path.not_a_map(item));
        };
        map.get(merge_key)
            .cloned()
            .ok_or_else(|| path.no_merge_key(item, merge_key))
    };
    Ok(values_equal(&key_of(left)?, &key_of(right)?))
}

// ---------------------------------------------------------------------------------------------
// Lists.
// ---------------------------------------------------------------------------------------------

/// Upstream `mergeSliceHandler`: lists with strategy `merge` (and deletion lists) merge; any
/// other list is replaced by the patch's.
fn merge_list_field(
    current: Vec<Value>,
    patch: Vec<Value>,
    meta: &FieldMeta<'_>,
    is_delete_list: bool,
    path: &Path,
) -> Result<Vec<Value>, PatchError> {
    if meta.strategy.merge || is_delete_list {
        merge_list(
            current,
            patch,
            meta.element_schema(),
            meta.merge_key,
            is_delete_list,
            path,
        )
    } else {
        Ok(patch.into_iter().map(decoded).collect())
    }
}

/// Upstream `mergeSlice`.
fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    schema: Schema<'_>,
    merge_key: &str,
    is_delete_list: bool,
    path: &Path,
) -> Result<Vec<Value>, PatchError> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let Some(kind) = element_kind(&[&original, &patch], path)? else {
        return Err(path.merge_error("no elements in any of the given lists".to_owned()));
    };

    let (original, patch, merged) = if kind != JsonKind::Object {
        if is_delete_list {
            return Ok(original
                .into_iter()
                .filter(|item| !patch.iter().any(|gone| values_equal(item, gone)))
                .collect());
        }
        // A union: everything from both, each value once.
        let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for item in original.iter().chain(&patch) {
            if !merged.iter().any(|seen| values_equal(seen, item)) {
                merged.push(item.clone());
            }
        }
        (original, patch, merged)
    } else {
        if merge_key.is_empty() {
            return Err(path.merge_error(
                "cannot merge lists of objects without a patch merge key".to_owned(),
            ));
        }
        let (original, patch) = apply_list_directives(original, patch, merge_key, path)?;
        let merged = merge_list_elements(original.clone(), &patch, merge_key, schema, path)?;
        (original, patch, merged)
    };

    let (patch_items, server_only) = partition(merged, &patch, merge_key, path)?;
    normalize_element_order(
        patch_items,
        server_only,
        &patch,
        &original,
        merge_key,
        kind,
        path,
    )
}

/// Upstream `mergeSliceWithSpecialElements`: applies `$patch: delete` elements (removing every
/// element with that merge key) and `$patch: replace` (the list becomes the patch's other
/// elements). Returns the updated original and the patch without directive elements.
fn apply_list_directives(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    merge_key: &str,
    path: &Path,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let directive = item
            .as_object()
            .and_then(|map| map.get(DIRECTIVE_MARKER))
            .cloned();
        match directive {
            None => plain.push(item),
            Some(directive) => match directive.as_str() {
                Some("delete") => {
                    let Some(value) = item.get(merge_key) else {
                        return Err(path.no_merge_key(&item, merge_key));
                    };
                    let mut kept = Vec::with_capacity(original.len());
                    for element in original {
                        let Value::Object(map) = &element else {
                            return Err(path.not_a_map(&element));
                        };
                        if !map.get(merge_key).is_some_and(|v| values_equal(v, value)) {
                            kept.push(element);
                        }
                    }
                    original = kept;
                }
                // Keep going: other directive elements must still be pruned.
                Some("replace") => replace = true,
                Some("merge") => {
                    return Err(path.merge_error(
                        "merging lists cannot yet be specified in the patch".to_owned(),
                    ));
                }
                _ => {
                    return Err(
                        path.merge_error(format!("unknown patch type: {directive} in map: {item}"))
                    );
                }
            },
        }
    }
    if replace {
        let replaced = plain.into_iter().map(decoded).collect();
        return Ok((replaced, Vec::new()));
    }
    Ok((original, plain))
}

/// Upstream `mergeSliceWithoutSpecialElements`: each patch element merges into the original
/// element with the same merge key, or is appended.
fn merge_list_elements(
    mut original: Vec<Value>,
    patch: &[Value],
    merge_key: &str,
    schema: Schema<'_>,
    path: &Path,
) -> Result<Vec<Value>, PatchError> {
    for item in patch {
        let Value::Object(item_map) = item else {
            return Err(path.not_a_map(item));
        };
        let Some(value) = item_map.get(merge_key) else {
            return Err(path.no_merge_key(item, merge_key));
        };
        let mut found = None;
        for (i, element) in original.iter().enumerate() {
            let Value::Object(map) = element else {
                return Err(path.not_a_map(element));
            };
            if map.get(merge_key).is_some_and(|v| values_equal(v, value)) {
                found = Some(i);
                break;
            }
        }
        match found {
            Some(i) => {
                let Value::Object(current) = std::mem::take(&mut original[i]) else {
                    return Err(path.not_a_map(&original[i]));
                };
                let merged = merge_map(
                    current,
                    item_map.clone(),
                    schema,
                    &path.element(merge_key, value),
                )?;
                original[i] = Value::Object(merged);
            }
            None => original.push(decoded(item.clone())),
        }
    }
    Ok(original)
}

/// Splits `merged` into the elements present in `by` and the others (server-only), upstream
/// `partitionPrimitivesByPresentInList` / `partitionMapsByPresentInList`.
fn partition(
    merged: Vec<Value>,
    by: &[Value],
    merge_key: &str,
    path: &Path,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut present = Vec::with_capacity(merged.len());
    let mut server_only = Vec::with_capacity(merged.len());
    for item in merged {
        let found = if merge_key.is_empty() {
            by.iter().any(|other| values_equal(other, &item))
        } else {
            let Value::Object(map) = &item else {
                return Err(path.not_a_map(&item));
            };
            let Some(value) = map.get(merge_key) else {
                return Err(path.no_merge_key(&item, merge_key));
            };
            let mut found = false;
            for other in by {
                let Value::Object(other_map) = other else {
                    return Err(path.not_a_map(other));
                };
                if other_map
                    .get(merge_key)
                    .is_some_and(|v| values_equal(v, value))
                {
                    found = true;
                    break;
                }
            }
            found
        };
        if found {
            present.push(item);
        } else {
            server_only.push(item);
        }
    }
    Ok((present, server_only))
}

/// Upstream `normalizeElementOrder`: sorts the patch's elements by `patch_order` and the
/// server-only ones by `server_order`, then interleaves them, keeping a server-only element
/// before a patch element only when the live list had it first.
fn normalize_element_order(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: &str,
    kind: JsonKind,
    path: &Path,
) -> Result<Vec<Value>, PatchError> {
    let patch_items = sort_by_order(patch_items, patch_order, merge_key, kind, path)?;
    let server_only = sort_by_order(server_only, server_order, merge_key, kind, path)?;

    let position = |item: &Value| index_of(server_order, item, merge_key, kind);
    let mut out = Vec::with_capacity(patch_items.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = patch_items.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => match (position(l), position(r)) {
                (Some(li), Some(ri)) => li < ri,
                _ => false,
            },
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    Ok(out)
}

/// Upstream `normalizeSliceOrder`: a stable sort by position in `order` (elements it lacks go
/// last); `$patch: delete` elements go to the end.
fn sort_by_order(
    items: Vec<Value>,
    order: &[Value],
    merge_key: &str,
    kind: JsonKind,
    path: &Path,
) -> Result<Vec<Value>, PatchError> {
    let mut deletions = Vec::new();
    let mut keep = Vec::with_capacity(items.len());
    if kind == JsonKind::Object {
        for item in order.iter().chain(&items) {
            let Value::Object(map) = item else {
                return Err(path.not_a_map(item));
            };
            if !map.contains_key(merge_key) {
                return Err(path.no_merge_key(item, merge_key));
            }
        }
        for item in items {
            if item.get(DIRECTIVE_MARKER).and_then(Value::as_str) == Some("delete") {
                deletions.push(item);
            } else {
                keep.push(item);
            }
        }
    } else {
        keep = items;
    }
    let mut keyed: Vec<(usize, Value)> = keep
        .into_iter()
        .map(|item| {
            let position = index_of(order, &item, merge_key, kind).unwrap_or(usize::MAX);
            (position, item)
        })
        .collect();
    keyed.sort_by_key(|(position, _)| *position);
    let mut sorted: Vec<Value> = keyed.into_iter().map(|(_, item)| item).collect();
    sorted.extend(deletions);
    Ok(sorted)
}

/// Position of `item` in `list`, by merge key for objects and by value otherwise.
fn index_of(list: &[Value], item: &Value, merge_key: &str, kind: JsonKind) -> Option<usize> {
    if kind == JsonKind::Object {
        let wanted = item.get(merge_key);
        list.iter()
            .position(|other| match (other.get(merge_key), wanted) {
                (Some(a), Some(b)) => values_equal(a, b),
                (None, None) => true,
                _ => false,
            })
    } else {
        list.iter().position(|other| values_equal(other, item))
    }
}

// ---------------------------------------------------------------------------------------------
// Values.
// ---------------------------------------------------------------------------------------------

/// The JSON type of a value, as upstream compares Go types (`reflect.TypeOf`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JsonKind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

fn json_kind(value: &Value) -> JsonKind {
    match value {
        Value::Null => JsonKind::Null,
        Value::Bool(_) => JsonKind::Bool,
        Value::Number(_) => JsonKind::Number,
        Value::String(_) => JsonKind::String,
        Value::Array(_) => JsonKind::Array,
        Value::Object(_) => JsonKind::Object,
    }
}

fn json_kind_name(value: &Value) -> &'static str {
    match json_kind(value) {
        JsonKind::Null => "null",
        JsonKind::Bool => "boolean",
        JsonKind::Number => "number",
        JsonKind::String => "string",
        JsonKind::Array => "list",
        JsonKind::Object => "map",
    }
}

/// Upstream `sliceElementType`: the one JSON type of all (non-null) elements; `None` when there
/// are no elements. Lists of lists are not supported.
fn element_kind(lists: &[&[Value]], path: &Path) -> Result<Option<JsonKind>, PatchError> {
    let mut kind = None;
    for item in lists.iter().flat_map(|list| list.iter()) {
        let item_kind = json_kind(item);
        match (item_kind, kind) {
            (JsonKind::Null, _) => {}
            (JsonKind::Array, _) => {
                return Err(PatchError::Unprocessable {
                    field: path.0.clone(),
                    message: "lists of lists are not supported".to_owned(),
                });
            }
            (_, None) => kind = Some(item_kind),
            (_, Some(seen)) if seen != item_kind => {
                return Err(path.merge_error("list element types are not identical".to_owned()));
            }
            _ => {}
        }
    }
    Ok(kind)
}

/// Equality as Go's `==` on decoded JSON: numbers compare by value (`1` equals `1.0`).
fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        _ => a == b,
    }
}

fn has_directive(item: &Value) -> bool {
    item.as_object()
        .is_some_and(|map| map.contains_key(DIRECTIVE_MARKER))
}

fn is_directive_key(key: &str) -> bool {
    key == DIRECTIVE_MARKER
        || key == RETAIN_KEYS_DIRECTIVE
        || key.starts_with(SET_ELEMENT_ORDER_PREFIX)
        || key.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX)
}

/// New content taken from the patch (upstream `discardNullValuesFromPatch` then
/// `removeDirectives`): a map carrying `$patch` is dropped altogether (`None`), list elements
/// carrying `$patch` are dropped, `null` map values are discarded, and other directive keys
/// are removed as the typed decode would.
fn remove_directives(value: Value) -> Option<Value> {
    match value {
        Value::Object(map) => {
            if map.contains_key(DIRECTIVE_MARKER) {
                return None;
            }
            let mut out = Map::with_capacity(map.len());
            for (key, child) in map {
                if child.is_null() || is_directive_key(&key) {
                    continue;
                }
                if let Some(child) = remove_directives(child) {
                    out.insert(key, child);
                }
            }
            Some(Value::Object(out))
        }
        Value::Array(items) => Some(Value::Array(remove_directives_in_list(items))),
        other => Some(other),
    }
}

fn remove_directives_in_list(items: Vec<Value>) -> Vec<Value> {
    items.into_iter().filter_map(remove_directives).collect()
}

/// Patch content that upstream stores as is, then decodes into the Go type: directive keys
/// and `null` fields do not survive that decode, so they are dropped here.
fn decoded(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(decoded_map(map)),
        Value::Array(items) => Value::Array(items.into_iter().map(decoded).collect()),
        other => other,
    }
}

fn decoded_map(map: Map<String, Value>) -> Map<String, Value> {
    map.into_iter()
        .filter(|(key, child)| !child.is_null() && !is_directive_key(key))
        .map(|(key, child)| (key, decoded(child)))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::schema::definition_for_gvk;

    fn deployment_def() -> &'static Definition {
        definition_for_gvk("apps", "v1", "Deployment").expect("Deployment")
    }

    fn pod_def() -> &'static Definition {
        definition_for_gvk("", "v1", "Pod").expect("Pod")
    }

    fn patch_deployment(doc: &Value, patch: Value) -> Value {
        strategic_merge_patch(doc, &patch, Some(deployment_def())).expect("patch applies")
    }

    fn patch_pod(doc: &Value, patch: Value) -> Value {
        strategic_merge_patch(doc, &patch, Some(pod_def())).expect("patch applies")
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}
                },
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [{
                            "name": "nginx",
                            "image": "nginx:1.25",
                            "args": ["-g", "daemon off;"],
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}]
                        }],
                        "volumes": [{"name": "data", "emptyDir": {}}]
                    }
                }
            }
        })
    }

    fn containers(doc: &Value) -> &Vec<Value> {
        doc["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("containers")
    }

    fn names(list: &Value) -> Vec<&str> {
        list.as_array()
            .expect("list")
            .iter()
            .map(|item| item["name"].as_str().expect("name"))
            .collect()
    }

    /// The body `kubectl apply` sends for an image change (see notes/kubectl-wire.md, apply).
    #[test]
    fn kubectl_apply_image_change() {
        let patch = json!({
            "metadata": {"annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"kind\":\"Deployment\"}\n"
            }},
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "nginx"}],
                "containers": [{"image": "nginx:1.26", "name": "nginx"}]
            }}}
        });
        let patched = patch_deployment(&deployment(), patch);
        let mut expected = deployment();
        expected["metadata"]["annotations"] = json!({
            "kubectl.kubernetes.io/last-applied-configuration": "{\"kind\":\"Deployment\"}\n"
        });
        expected["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.26");
        assert_eq!(patched, expected);
        assert!(!patched.to_string().contains('$'), "no directive is stored");
    }

    #[test]
    fn containers_merge_by_name_and_new_ones_go_first_without_order() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "sidecar", "image": "busybox"},
            {"name": "nginx", "image": "nginx:1.27"}
        ]}}}});
        let patched = patch_deployment(&deployment(), patch);
        // Upstream mergeSortedSlice: patch elements first unless the live list had a
        // server-only element before them.
        assert_eq!(
            names(&patched["spec"]["template"]["spec"]["containers"]),
            ["sidecar", "nginx"]
        );
        let nginx = &containers(&patched)[1];
        assert_eq!(nginx["image"], "nginx:1.27");
        assert_eq!(
            nginx["ports"],
            json!([{"containerPort": 80, "protocol": "TCP"}])
        );
    }

    #[test]
    fn set_element_order_places_new_and_server_only_elements() {
        let mut doc = deployment();
        doc["spec"]["template"]["spec"]["containers"] = json!([
            {"name": "a", "image": "a"},
            {"name": "live-only", "image": "x"},
            {"name": "b", "image": "b"}
        ]);
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "c"}, {"name": "a"}],
            "containers": [{"name": "c", "image": "c"}]
        }}}});
        let patched = patch_deployment(&doc, patch);
        // "live-only" stays before "b", where the live list had it.
        assert_eq!(
            names(&patched["spec"]["template"]["spec"]["containers"]),
            ["live-only", "b", "c", "a"]
        );

        // Reordering only: a server-only element keeps its place between its live neighbours.
        doc["spec"]["template"]["spec"]["containers"] = json!([
            {"name": "a"}, {"name": "b"}, {"name": "x"}, {"name": "c"}, {"name": "d"}
        ]);
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}, {"name": "d"}, {"name": "c"}]
        }}}});
        let patched = patch_deployment(&doc, patch);
        assert_eq!(
            names(&patched["spec"]["template"]["spec"]["containers"]),
            ["b", "a", "x", "d", "c"]
        );

        // An order list naming an element the patch list puts out of order is rejected.
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "b", "image": "b2"}, {"name": "a", "image": "a2"}]
        }}}});
        let err = strategic_merge_patch(&doc, &patch, Some(deployment_def())).expect_err("order");
        assert!(
            err.to_string().contains("spec.template.spec.containers"),
            "{err}"
        );
    }

    #[test]
    fn delete_container_with_patch_directive() {
        let mut doc = deployment();
        doc["spec"]["template"]["spec"]["containers"] = json!([
            {"name": "nginx", "image": "nginx"},
            {"name": "sidecar", "image": "busybox"}
        ]);
        let patch = json!({"spec": {"template": {"spec": {
            "containers": [{"$patch": "delete", "name": "sidecar"}]
        }}}});
        let patched = patch_deployment(&doc, patch);
        assert_eq!(
            containers(&patched),
            &vec![json!({"name": "nginx", "image": "nginx"})]
        );

        // The way kubectl apply removes one: an order list without it plus the delete.
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "nginx"}],
            "containers": [{"$patch": "delete", "name": "sidecar"}]
        }}}});
        let patched = patch_deployment(&doc, patch);
        assert_eq!(
            names(&patched["spec"]["template"]["spec"]["containers"]),
            ["nginx"]
        );
    }

    #[test]
    fn env_var_removal_and_update() {
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "nginx"}],
            "containers": [{
                "name": "nginx",
                "$setElementOrder/env": [{"name": "B"}, {"name": "C"}],
                "env": [{"$patch": "delete", "name": "A"}, {"name": "B", "value": "20"}, {"name": "C", "value": "3"}]
            }]
        }}}});
        let patched = patch_deployment(&deployment(), patch);
        assert_eq!(
            containers(&patched)[0]["env"],
            json!([{"name": "B", "value": "20"}, {"name": "C", "value": "3"}])
        );
        // A null value deletes the field inside a merged element.
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "nginx", "env": [{"name": "B", "value": null}]}
        ]}}}});
        let patched = patch_deployment(&deployment(), patch);
        assert_eq!(
            containers(&patched)[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B"}])
        );
    }

    #[test]
    fn ports_merge_by_container_port_and_mounts_by_path() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{
            "name": "nginx",
            "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}],
            "volumeMounts": [{"mountPath": "/data", "readOnly": true}, {"mountPath": "/cache", "name": "cache"}]
        }]}}}});
        let patched = patch_deployment(&deployment(), patch);
        let nginx = &containers(&patched)[0];
        assert_eq!(
            nginx["ports"],
            json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}, {"containerPort": 443}])
        );
        assert_eq!(
            nginx["volumeMounts"],
            json!([
                {"name": "data", "mountPath": "/data", "readOnly": true},
                {"mountPath": "/cache", "name": "cache"}
            ])
        );
    }

    #[test]
    fn service_ports_merge_by_port() {
        let service = definition_for_gvk("", "v1", "Service").expect("Service");
        let doc = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}});
        let patch = json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}});
        let patched = strategic_merge_patch(&doc, &patch, Some(service)).expect("applies");
        assert_eq!(
            patched["spec"]["ports"],
            json!([{"port": 80, "targetPort": 9090}, {"port": 443}])
        );
    }

    #[test]
    fn non_merge_lists_are_replaced() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "nginx", "args": ["-v"]}
        ]}}}});
        let patched = patch_deployment(&deployment(), patch);
        assert_eq!(containers(&patched)[0]["args"], json!(["-v"]));
    }

    #[test]
    fn primitive_merge_lists_are_unioned_and_deleted_from() {
        let doc = json!({"metadata": {"name": "p", "finalizers": ["a", "b"]}});
        let patched = patch_pod(&doc, json!({"metadata": {"finalizers": ["c", "a"]}}));
        // Patch elements in patch order; "b" (server-only) stays after "a", as in the live list.
        assert_eq!(patched["metadata"]["finalizers"], json!(["c", "a", "b"]));

        let patched = patch_pod(
            &doc,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a", "zzz"]}}),
        );
        assert_eq!(patched["metadata"]["finalizers"], json!(["b"]));

        // Deleting from a list the object does not have adds nothing.
        let patched = patch_pod(
            &json!({"metadata": {"name": "p"}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        );
        assert_eq!(patched, json!({"metadata": {"name": "p"}}));

        let err = strategic_merge_patch(
            &doc,
            &json!({"metadata": {"$deleteFromPrimitiveList": ["a"]}}),
            Some(pod_def()),
        )
        .expect_err("no list name");
        assert_eq!(err.http_status(), 400);
        assert!(
            err.to_string()
                .contains("invalid patch format of primitive list")
        );
    }

    #[test]
    fn null_deletes_and_maps_merge() {
        let patch =
            json!({"metadata": {"labels": {"app": null, "tier": "web"}}, "spec": {"paused": null}});
        let patched = patch_deployment(&deployment(), patch);
        assert_eq!(patched["metadata"]["labels"], json!({"tier": "web"}));
        // Nulls inside new content are not stored.
        let patched = patch_deployment(
            &deployment(),
            json!({"metadata": {"annotations": {"a": "1", "b": null}}}),
        );
        assert_eq!(patched["metadata"]["annotations"], json!({"a": "1"}));
    }

    #[test]
    fn patch_replace_and_delete_on_maps() {
        let patch = json!({"metadata": {"labels": {"$patch": "replace", "only": "this"}}});
        let patched = patch_deployment(&deployment(), patch);
        assert_eq!(patched["metadata"]["labels"], json!({"only": "this"}));

        let patch = json!({"spec": {"selector": {"$patch": "delete"}}});
        let patched = patch_deployment(&deployment(), patch);
        assert_eq!(patched["spec"]["selector"], json!({}));

        let patch = json!({"metadata": {"labels": {"$patch": "merge", "x": "y"}}});
        let err = strategic_merge_patch(&deployment(), &patch, Some(deployment_def()))
            .expect_err("merge directive on a map is rejected upstream");
        assert!(err.to_string().contains("metadata.labels"), "{err}");
        assert!(err.to_string().contains("unknown patch type"), "{err}");
    }

    #[test]
    fn patch_replace_on_a_list() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "only", "image": "busybox"},
            {"$patch": "replace"}
        ]}}}});
        let patched = patch_deployment(&deployment(), patch);
        assert_eq!(
            containers(&patched),
            &vec![json!({"name": "only", "image": "busybox"})]
        );

        let patch = json!({"spec": {"template": {"spec": {"containers": [{"$patch": "merge"}]}}}});
        let err = strategic_merge_patch(&deployment(), &patch, Some(deployment_def()))
            .expect_err("merge directive in a list is rejected upstream");
        assert!(
            err.to_string()
                .contains("merging lists cannot yet be specified"),
            "{err}"
        );
    }

    /// `kubectl apply` switching a Deployment from RollingUpdate to Recreate: the
    /// `retainKeys` strategy makes it send `$retainKeys`, which drops `rollingUpdate`.
    #[test]
    fn deployment_strategy_retain_keys() {
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let patched = patch_deployment(&deployment(), patch);
        assert_eq!(patched["spec"]["strategy"], json!({"type": "Recreate"}));

        // Without the directive the server merges (and validation will complain), as upstream.
        let patched = patch_deployment(
            &deployment(),
            json!({"spec": {"strategy": {"type": "Recreate"}}}),
        );
        assert!(patched["spec"]["strategy"]["rollingUpdate"].is_object());

        // A patch key missing from $retainKeys is a malformed patch.
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate",
                                                  "rollingUpdate": {"maxSurge": 1}}}});
        let err = strategic_merge_patch(&deployment(), &patch, Some(deployment_def()))
            .expect_err("retainKeys mismatch");
        assert_eq!(err.http_status(), 400);
        assert!(
            err.to_string().contains("spec.strategy.rollingUpdate"),
            "{err}"
        );
    }

    #[test]
    fn volume_source_switch_with_retain_keys() {
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/volumes": [{"name": "data"}],
            "volumes": [{"$retainKeys": ["configMap", "name"], "configMap": {"name": "cfg"}, "name": "data"}]
        }}}});
        let patched = patch_deployment(&deployment(), patch);
        assert_eq!(
            patched["spec"]["template"]["spec"]["volumes"],
            json!([{"name": "data", "configMap": {"name": "cfg"}}])
        );
    }

    #[test]
    fn unknown_kind_falls_back_to_merge_patch() {
        let doc = json!({"spec": {"items": [{"name": "a", "x": 1}], "keep": true}});
        let patch = json!({"spec": {"items": [{"name": "a", "y": 2}]}});
        let patched = strategic_merge_patch(&doc, &patch, None).expect("merge patch");
        assert_eq!(
            patched,
            json!({"spec": {"items": [{"name": "a", "y": 2}], "keep": true}})
        );
    }

    #[test]
    fn errors_name_the_field() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
        let err = strategic_merge_patch(&deployment(), &patch, Some(deployment_def()))
            .expect_err("missing merge key");
        assert_eq!(err.http_status(), 500);
        let message = err.to_string();
        assert!(
            message.contains("field \"spec.template.spec.containers\""),
            "{message}"
        );
        assert!(
            message.contains("does not contain declared merge key: name"),
            "{message}"
        );

        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "nginx", "ports": ["80"]}
        ]}}}});
        let err = strategic_merge_patch(&deployment(), &patch, Some(deployment_def()))
            .expect_err("mixed element types");
        assert!(
            err.to_string()
                .contains("list element types are not identical"),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("spec.template.spec.containers[name=nginx].ports"),
            "{err}"
        );

        let err = strategic_merge_patch(
            &json!({"metadata": {"finalizers": [["a"]]}}),
            &json!({"metadata": {"finalizers": [["b"]]}}),
            Some(pod_def()),
        )
        .expect_err("list of lists");
        assert_eq!(err.http_status(), 422);

        let err = strategic_merge_patch(&deployment(), &json!([1]), Some(deployment_def()))
            .expect_err("not an object");
        assert_eq!(err.http_status(), 400);
    }

    #[test]
    fn type_changes_and_unknown_fields_merge_leniently() {
        // A field the schema does not know merges as a plain map; its lists are replaced.
        let doc = json!({"spec": {"custom": {"a": 1, "list": [1, 2]}}});
        let patch = json!({"spec": {"custom": {"b": 2, "list": [3]}}});
        let patched = patch_deployment(&doc, patch);
        assert_eq!(
            patched["spec"]["custom"],
            json!({"a": 1, "list": [3], "b": 2})
        );
        // A value of another JSON type replaces the old one.
        let patched = patch_deployment(
            &json!({"spec": {"replicas": "x"}}),
            json!({"spec": {"replicas": 3}}),
        );
        assert_eq!(patched["spec"]["replicas"], 3);
        // Quantities in a map merge by key.
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "nginx", "resources": {"limits": {"cpu": "2"}}}
        ]}}}});
        let mut doc = deployment();
        doc["spec"]["template"]["spec"]["containers"][0]["resources"] =
            json!({"limits": {"cpu": "1", "memory": "1Gi"}});
        let patched = patch_deployment(&doc, patch);
        assert_eq!(
            containers(&patched)[0]["resources"],
            json!({"limits": {"cpu": "2", "memory": "1Gi"}})
        );
    }

    #[test]
    fn new_lists_from_the_patch_lose_their_directives() {
        let mut doc = deployment();
        doc["spec"]["template"]["spec"]
            .as_object_mut()
            .expect("spec")
            .shift_remove("volumes");
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/volumes": [{"name": "v"}],
            "volumes": [{"name": "v", "emptyDir": {}}, {"name": "gone", "$patch": "delete"}]
        }}}});
        let patched = patch_deployment(&doc, patch);
        assert_eq!(
            patched["spec"]["template"]["spec"]["volumes"],
            json!([{"name": "v", "emptyDir": {}}])
        );
    }
}
