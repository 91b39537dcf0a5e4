//! Server-side apply and `metadata.managedFields`, as upstream's structured-merge-diff and
//! apimachinery's `managedfields` package do them, on `serde_json::Value`.
//!
//! * [`apply`]: a `PATCH` with `application/apply-patch+yaml`. The manager's owned set becomes
//!   exactly the fields of the applied configuration; fields it applied before and no longer
//!   applies are removed unless another manager owns them; changing a field another manager owns
//!   is a conflict ([`ApplyError::Conflicts`], 409) unless `force` moves the ownership.
//! * [`record_update`]: every other write (create, update, JSON/merge/strategic patch): the
//!   fields the request added or changed become the manager's (operation `Update`), and leave
//!   every other manager.
//! * [`manager_from_user_agent`]: the manager name when the request has no `fieldManager`.
//!
//! Inside: `fieldpath` (paths, field sets and their `FieldsV1` encoding), `typed` (the
//! schema-aware field set, compare, merge and remove walks), `managed` (decoding, encoding,
//! sorting and capping `managedFields` entries).
//!
//! Both entry points follow upstream's manager chain (`NewDefaultFieldManager`): the strategy's
//! reset fields are never owned (`status` for the main resource, `spec` for `/status`),
//! `apiVersion`, `kind`, `metadata.name` and the other system metadata are stripped from every
//! set, at most 10 `Update` managers are kept (older ones fold into `ancient-changes`), and a
//! `kubectl` apply may take over fields from client-side apply (the last-applied annotation)
//! without a conflict. Every API version of a kind is treated as the same schema: Skiff serves
//! one version per kind, so no conversion is needed.

mod fieldpath;
mod managed;
mod typed;

use serde_json::{Map, Value};

use self::fieldpath::{FieldSet, PathElement, values_equal};
pub use self::managed::Operation;
use self::managed::{Entry, Managed, ManagerKey};
use self::typed::{Shape, TypedError};
use crate::schema::Definition;

/// The annotation client-side `kubectl apply` keeps the applied configuration in.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The manager whose `kubectl apply --server-side` may take over client-side-applied fields
/// (upstream `lastAppliedManager` / `lastAppliedUpdater` act only for this name).
const KUBECTL_MANAGER: &str = "kubectl";

/// What is written to: the kind's schema, the served version and the subresource.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// The kind's definition (`schema::definition_for_gvk`); `None` for kinds without a schema,
    /// whose objects are then deduced (maps granular, lists atomic) as upstream does for CRDs
    /// without a structural schema.
    pub def: Option<&'a Definition>,
    /// The served `apiVersion`, e.g. `apps/v1` or `v1`; recorded in Update entries.
    pub api_version: &'a str,
    /// The kind, e.g. `Deployment`; an applied configuration must name it.
    pub kind: &'a str,
    /// `None` for the main resource, `Some("status")`, `Some("scale")`.
    pub subresource: Option<&'a str>,
}

/// One field another manager owns that an apply would change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager's name.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: Operation,
    /// The version of the other manager's entry (shown for Update managers).
    pub api_version: String,
    pub subresource: Option<String>,
    /// The field, in upstream's notation: `.spec.replicas`,
    /// `.spec.template.spec.containers[name="nginx"].image`.
    pub field: String,
}

impl Conflict {
    /// Upstream `printManager`: `"kubectl-client-side-apply" using apps/v1` for Update managers,
    /// `"kubectl"` for appliers, with ` with subresource "status"` when there is one.
    pub fn manager_description(&self) -> String {
        let mut out = format!("{:?}", self.manager);
        if let Some(subresource) = &self.subresource {
            out.push_str(&format!(" with subresource {subresource:?}"));
        }
        if self.operation == Operation::Update {
            out.push_str(&format!(" using {}", self.api_version));
        }
        out
    }
}

/// Why an apply failed. Not retryable as is: the configuration must change, or (conflicts) be
/// applied with `force`.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The body is not an object (upstream cannot decode it into one).
    #[error("the applied configuration must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    /// The configuration's apiVersion/kind are not the endpoint's (upstream `versionCheckManager`;
    /// shown as `invalid object type: apps/v1, Kind=Deployment`).
    #[error("invalid object type: {0}")]
    WrongKind(String),
    /// Clients may not apply `metadata.managedFields` (upstream `structuredMergeManager.Apply`).
    #[error("metadata.managedFields must be nil")]
    ManagedFieldsInConfig,
    /// The configuration does not fit the kind's schema: a list item without its keys, duplicate
    /// keys, a field the schema does not declare. The object is `namespace/name; gvk`.
    #[error("failed to create typed patch object ({object}): {source}")]
    InvalidConfig {
        object: String,
        #[source]
        source: TypedError,
    },
    /// The stored object's `managedFields` cannot be decoded.
    #[error("failed to decode managed fields: {0}")]
    InvalidManagedFields(String),
    /// Fields owned by other managers would change; apply with `force` to take them.
    #[error("{}", conflicts_message(.0))]
    Conflicts(Vec<Conflict>),
}

impl ApplyError {
    /// The HTTP status upstream answers: 400 for bad requests, 409 for conflicts, and 500 for a
    /// configuration that does not fit the schema (upstream returns that error unconverted; see
    /// kubernetes/kubernetes#118476) or unreadable stored managedFields.
    pub fn http_status(&self) -> u16 {
        match self {
            ApplyError::NotAnObject(_)
            | ApplyError::WrongKind(_)
            | ApplyError::ManagedFieldsInConfig => 400,
            ApplyError::Conflicts(_) => 409,
            ApplyError::InvalidConfig { .. } | ApplyError::InvalidManagedFields(_) => 500,
        }
    }

    /// The `reason` of the Status (`""` is upstream's `StatusReasonUnknown`).
    pub fn reason(&self) -> &'static str {
        match self.http_status() {
            400 => "BadRequest",
            409 => "Conflict",
            _ => "",
        }
    }

    /// The complete `Status` upstream answers with; conflicts carry one
    /// `{"type":"FieldManagerConflict","message":"conflict with \"x\" using apps/v1","field":".spec.replicas"}`
    /// cause each (upstream `NewApplyConflict`).
    pub fn to_status(&self) -> Value {
        let mut status = Map::new();
        status.insert("kind".into(), "Status".into());
        status.insert("apiVersion".into(), "v1".into());
        status.insert("metadata".into(), Value::Object(Map::new()));
        status.insert("status".into(), "Failure".into());
        status.insert("message".into(), self.to_string().into());
        if !self.reason().is_empty() {
            status.insert("reason".into(), self.reason().into());
        }
        if let ApplyError::Conflicts(conflicts) = self {
            let causes: Vec<Value> = conflicts
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "type": "FieldManagerConflict",
                        "message": format!("conflict with {}", c.manager_description()),
                        "field": c.field,
                    })
                })
                .collect();
            status.insert("details".into(), serde_json::json!({ "causes": causes }));
        }
        status.insert("code".into(), self.http_status().into());
        Value::Object(status)
    }
}

/// Upstream `getConflictMessage`.
fn conflicts_message(conflicts: &[Conflict]) -> String {
    if let [only] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            only.manager_description(),
            only.field
        );
    }
    let mut lines = Vec::new();
    let mut current: Option<String> = None;
    for conflict in conflicts {
        let manager = conflict.manager_description();
        if current.as_deref() != Some(manager.as_str()) {
            lines.push(format!("conflicts with {manager}:"));
            current = Some(manager);
        }
        lines.push(format!("- {}", conflict.field));
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// The manager name upstream derives from the `User-Agent` when a request has no
/// `fieldManager`: the part before the first `/`, printable characters only, at most 128 bytes
/// (`kubectl/v1.33.0 (linux/amd64) kubernetes/abc` → `kubectl`).
pub fn manager_from_user_agent(user_agent: &str) -> String {
    let prefix = user_agent.split('/').next().unwrap_or("");
    let mut out = String::new();
    for c in prefix.chars().filter(|c| !c.is_control()) {
        if out.len() >= 128 {
            break;
        }
        out.push(c);
    }
    out
}

/// Server-side apply of `config` by `manager` to `live` (`None`: the object does not exist and
/// is created). Returns the new object with `metadata.managedFields` updated; when the apply
/// changes nothing else, the live object is returned with only its managedFields updated (so
/// the caller can skip the write when the whole object is unchanged). `now` is the RFC 3339
/// time (`2025-01-01T00:00:00Z`) recorded in the manager's entry.
///
/// The result is not defaulted: as upstream, defaulting runs on the merged object afterwards
/// and the defaulted fields belong to nobody. System metadata the configuration may carry
/// (`creationTimestamp: null`, `uid`) must be restored from the live object by the caller, as
/// for any update.
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
    target: &Target,
    now: &str,
) -> Result<Value, ApplyError> {
    let Value::Object(fields) = config else {
        return Err(ApplyError::NotAnObject(json_type_name(config)));
    };
    let api_version = fields
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = fields.get("kind").and_then(Value::as_str).unwrap_or("");
    if api_version != target.api_version || kind != target.kind {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        return Err(ApplyError::WrongKind(format!(
            "{group}/{version}, Kind={kind}"
        )));
    }
    if config
        .pointer("/metadata/managedFields")
        .is_some_and(|m| !m.is_null())
    {
        return Err(ApplyError::ManagedFieldsInConfig);
    }

    let mut live_object = live.cloned().unwrap_or_else(|| Value::Object(Map::new()));
    let managed_fields = take_managed_fields(&mut live_object);
    let mut managed =
        managed::decode(managed_fields.as_ref()).map_err(ApplyError::InvalidManagedFields)?;

    let shape = Shape::root(target.def);
    let invalid = |source: TypedError| ApplyError::InvalidConfig {
        object: describe_object(config, target),
        source,
    };
    let config_set = typed::field_set(config, &shape, true).map_err(invalid)?;
    let merged = typed::merge(&live_object, config, &shape).map_err(invalid)?;

    let key = ManagerKey::new(manager, Operation::Apply, target);
    let reset = reset_fields(target);
    let last_set = managed.get(&key).map(|entry| entry.set.clone());
    let previous_time = managed.get(&key).and_then(|entry| entry.time.clone());
    managed.insert(
        key.clone(),
        Entry {
            api_version: target.api_version.to_owned(),
            set: config_set.recursive_difference(&reset),
            time: previous_time,
        },
    );
    let pruned = prune(&merged, &managed, last_set.as_ref(), &shape);

    let mut updated = managed.clone();
    if let Err(conflicts) = take_changes(
        &live_object,
        &pruned,
        &mut updated,
        &key,
        force,
        &reset,
        target,
    ) {
        // A kubectl apply that only conflicts on fields it set before with client-side apply
        // (same values as in the last-applied annotation) takes them over (upstream
        // `lastAppliedManager`).
        let allowed = if manager == KUBECTL_MANAGER {
            fields_from_last_applied(&live_object, target, &shape)
        } else {
            None
        };
        let Some(allowed) = allowed else {
            return Err(ApplyError::Conflicts(conflicts));
        };
        let remaining: Vec<Conflict> = conflicts
            .into_iter()
            .filter(|c| !allowed.contains(&c.field))
            .collect();
        if !remaining.is_empty() {
            return Err(ApplyError::Conflicts(remaining));
        }
        updated = managed;
        // With force there are no conflicts, so this cannot fail.
        let _ = take_changes(
            &live_object,
            &pruned,
            &mut updated,
            &key,
            true,
            &reset,
            target,
        );
    }
    let mut managed = updated;
    strip_meta(&mut managed, &key);

    let mut object = if values_equal(&pruned, &live_object) {
        live_object
    } else {
        if let Some(entry) = managed.get_mut(&key) {
            entry.time = Some(now.to_owned());
        }
        pruned
    };
    if target.def.is_some() {
        // A typed object has no nulls: upstream's round trip through the Go type drops them.
        drop_nulls(&mut object);
    }
    if manager == KUBECTL_MANAGER {
        update_last_applied(&mut object, config);
    }
    put_managed_fields(&mut object, &managed);
    Ok(object)
}

/// Records the manager of a non-apply write (`POST`, `PUT`, JSON/merge/strategic `PATCH`):
/// `old` is the stored object (`None` on create), `new` the object about to be stored (after
/// defaulting, so that defaulted fields belong to the creator as upstream); its
/// `metadata.managedFields` is rewritten. `manager` is the `fieldManager` parameter or, without
/// one, [`manager_from_user_agent`] (an empty name becomes `unknown`, as upstream).
///
/// As upstream, a request may set `metadata.managedFields` itself (a non-empty, valid list
/// replaces the stored one); `[]` or `[{}]` resets them, after which the request's manager
/// owns what it changed. Otherwise (absent, invalid) the stored entries are kept. Writes to a
/// subresource never take managedFields from the request. Never fails: like upstream's
/// `UpdateNoErrors`, a problem leaves the stored managedFields in place.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    target: &Target,
    now: &str,
) {
    let mut live = old.cloned().unwrap_or_else(|| Value::Object(Map::new()));
    let live_fields = take_managed_fields(&mut live);
    let request_fields = take_managed_fields(new);
    let stored = || managed::decode(live_fields.as_ref()).unwrap_or_default();
    let mut managed = if target.subresource.is_some() {
        stored()
    } else if managed::is_reset(request_fields.as_ref()) {
        Managed::new()
    } else {
        match managed::decode(request_fields.as_ref()) {
            Ok(from_request) if !from_request.is_empty() => from_request,
            _ => stored(),
        }
    };

    let shape = Shape::root(target.def);
    let reset = reset_fields(target);
    let mut comparison = typed::compare(
        &typed::with_zero_fields(&live, target.def),
        &typed::with_zero_fields(new, target.def),
        &shape,
    );
    comparison.exclude(&reset);
    let changed = comparison.modified_or_added();
    for entry in managed.values_mut() {
        entry.set = entry
            .set
            .difference(&changed)
            .difference(&comparison.removed);
    }
    managed.retain(|_, entry| !entry.set.is_empty());

    let name = if manager.is_empty() {
        "unknown"
    } else {
        manager
    };
    let key = ManagerKey::new(name, Operation::Update, target);
    let mut owned = changed
        .recursive_difference(&reset)
        .difference(&managed::strip_set());
    if !owned.is_empty() {
        if let Some(previous) = managed.get(&key) {
            owned = owned.union(&previous.set);
        }
        managed.insert(
            key,
            Entry {
                api_version: target.api_version.to_owned(),
                set: owned,
                time: Some(now.to_owned()),
            },
        );
    }
    managed::cap_update_managers(&mut managed);
    put_managed_fields(new, &managed);
}

/// Upstream `Updater.prune`: removes what the applier owned before and no longer applies,
/// unless some manager (the applier's new set included) still owns it.
fn prune(merged: &Value, managed: &Managed, last_set: Option<&FieldSet>, shape: &Shape) -> Value {
    let Some(last) = last_set.filter(|set| !set.is_empty()) else {
        return merged.clone();
    };
    let ensure = |set: &FieldSet| typed::ensure_named_fields_are_members(set, shape);
    let fields_of =
        |value: &Value| ensure(&typed::field_set(value, shape, false).unwrap_or_default());
    let last = ensure(last);
    let pruned = typed::remove_items(merged, &last, shape);

    // addBackOwnedItems: take back everything someone still owns.
    let all_owned = managed
        .values()
        .fold(FieldSet::new(), |acc, entry| acc.union(&entry.set));
    let merged_set = fields_of(merged);
    let keep = fields_of(&pruned).union(&ensure(&all_owned));
    let pruned = typed::remove_items(merged, &merged_set.difference(&keep), shape);

    // addBackDanglingItems: only what the applier owned last time may go.
    let gone = merged_set
        .difference(&fields_of(&pruned))
        .intersection(&last);
    typed::remove_items(merged, &gone, shape)
}

/// Upstream `Updater.update` for an apply: other managers' fields that `new` changes are
/// conflicts (moved to `key` with `force`), fields it removes leave their owners.
fn take_changes(
    live: &Value,
    new: &Value,
    managed: &mut Managed,
    key: &ManagerKey,
    force: bool,
    reset: &FieldSet,
    target: &Target,
) -> Result<(), Vec<Conflict>> {
    let shape = Shape::root(target.def);
    let mut comparison = typed::compare(
        &typed::with_zero_fields(live, target.def),
        &typed::with_zero_fields(new, target.def),
        &shape,
    );
    comparison.exclude(reset);
    let changed = comparison.modified_or_added();
    let mut conflicts = Vec::new();
    for (other, entry) in managed.iter() {
        if other == key {
            continue;
        }
        for path in entry.set.intersection(&changed).paths() {
            conflicts.push(Conflict {
                manager: other.manager.clone(),
                operation: other.operation,
                api_version: entry.api_version.clone(),
                subresource: other.subresource.clone(),
                field: path.to_string(),
            });
        }
    }
    if !force && !conflicts.is_empty() {
        return Err(conflicts);
    }
    for (other, entry) in managed.iter_mut() {
        if other != key {
            entry.set = entry
                .set
                .difference(&changed)
                .difference(&comparison.removed);
        }
    }
    managed.retain(|_, entry| !entry.set.is_empty());
    Ok(())
}

/// Upstream `stripMetaManager`: nobody owns apiVersion, kind, name, namespace and the system
/// metadata.
fn strip_meta(managed: &mut Managed, key: &ManagerKey) {
    if let Some(entry) = managed.get_mut(key) {
        entry.set = entry.set.difference(&managed::strip_set());
        if entry.set.is_empty() {
            managed.remove(key);
        }
    }
}

/// The strategy's reset fields (upstream `GetResetFields`): a write to the main resource does
/// not own `status`, a write to `/status` owns neither `spec` nor (Deployments) the labels nor
/// (Pods) the deletion timestamp and owner references, which its strategy resets.
fn reset_fields(target: &Target) -> FieldSet {
    let field = |name: &str| PathElement::Field(name.to_owned());
    let mut reset = FieldSet::new();
    let def_name = target.def.map(Definition::name).unwrap_or("");
    if target.subresource == Some("status") {
        reset.insert(&[field("spec")]);
        match def_name {
            "io.k8s.api.apps.v1.Deployment" => {
                reset.insert(&[field("metadata"), field("labels")]);
            }
            "io.k8s.api.core.v1.Pod" => {
                reset.insert(&[field("metadata"), field("deletionTimestamp")]);
                reset.insert(&[field("metadata"), field("ownerReferences")]);
            }
            _ => {}
        }
    } else if target
        .def
        .is_none_or(|def| def.property("status").is_some())
    {
        reset.insert(&[field("status")]);
    }
    reset
}

/// Upstream `allowedConflictsFromLastApplied`: the fields of the last-applied annotation whose
/// values the live object still has.
fn fields_from_last_applied(live: &Value, target: &Target, shape: &Shape) -> Option<Vec<String>> {
    let annotation = live
        .pointer("/metadata/annotations")?
        .get(LAST_APPLIED_ANNOTATION)?
        .as_str()
        .filter(|s| !s.is_empty())?;
    let last_applied: Value = serde_json::from_str(annotation).ok()?;
    if last_applied.get("apiVersion").and_then(Value::as_str) != Some(target.api_version) {
        return None;
    }
    let set = typed::field_set(&last_applied, shape, true).ok()?;
    let comparison = typed::compare(&last_applied, live, shape);
    let unchanged = set
        .difference(&comparison.modified)
        .difference(&comparison.added)
        .difference(&comparison.removed);
    Some(unchanged.paths().iter().map(ToString::to_string).collect())
}

/// Upstream `lastAppliedUpdater`: a kubectl apply to an object that has the client-side
/// last-applied annotation rewrites it to the applied configuration, so that a later
/// client-side apply sees what server-side apply did.
fn update_last_applied(object: &mut Value, config: &Value) {
    let has_annotation = object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED_ANNOTATION))
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty());
    if !has_annotation {
        return;
    }
    let mut applied = config.clone();
    if let Some(annotations) = applied
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.shift_remove(LAST_APPLIED_ANNOTATION);
    }
    let mut encoded = String::new();
    managed::write_go_json(&applied, &mut encoded);
    // Go's json.Encoder ends the document with a newline, and so does the annotation.
    encoded.push('\n');
    if let Some(annotations) = object
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.insert(LAST_APPLIED_ANNOTATION.to_owned(), Value::String(encoded));
    }
}

fn take_managed_fields(object: &mut Value) -> Option<Value> {
    object
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .and_then(|meta| meta.shift_remove("managedFields"))
}

fn put_managed_fields(object: &mut Value, managed: &Managed) {
    let entries = managed::encode(managed);
    let Value::Object(fields) = object else {
        return;
    };
    let meta = fields
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(meta) = meta else {
        return;
    };
    if entries.is_empty() {
        meta.shift_remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(entries));
    }
}

fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            fields.retain(|_, v| !v.is_null());
            fields.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// `namespace/name; group/version, Kind=kind`, as upstream's `objectGVKNN`.
fn describe_object(config: &Value, target: &Target) -> String {
    let meta = |field: &str| {
        config
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let (group, version) = target
        .api_version
        .split_once('/')
        .unwrap_or(("", target.api_version));
    format!(
        "{}/{}; {group}/{version}, Kind={}",
        meta("namespace"),
        meta("name"),
        target.kind
    )
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests;
