//! The generic REST handler: one implementation of get, list, create, update, patch, delete
//! and deletecollection for every kind in the catalogue (upstream's `genericregistry.Store`).
//!
//! Flow of a write: decode → check kind/namespace/name against the URL → field validation →
//! defaulting → strategy (create resets, status/spec split, generation) → validation → admission
//! (namespace lifecycle) → store write with an optimistic-concurrency retry loop.
//! Service writes also allocate ClusterIPs and node ports (`service_alloc`) between the
//! strategy and validation; the allocation is committed or reverted with the store write.

use std::sync::Arc;

use api::catalogue::{self, Resource};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use store::{RangeOptions, Revision, StoreError};

use crate::codec::{self, BodyFormat, ResponseShape};
use crate::error::{ApiError, ApiResult, Details};
use crate::request::{FieldValidation, Query};
use crate::{ApiState, object, service_alloc, strategy, tables};

/// Namespaces that exist from the start and may not be deleted.
pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Write options common to create, update and patch.
#[derive(Clone, Debug)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_validation: FieldValidation,
    /// Who is writing, for `metadata.managedFields`: `?fieldManager=`, else derived from the
    /// User-Agent like upstream (`kubectl/v1.33.0 (…)` → `kubectl`).
    pub manager: String,
    /// `?force=true` (server-side apply takes conflicting fields).
    pub force: bool,
    /// The subresource written through (`status`, `scale`), recorded in managedFields.
    pub subresource: Option<&'static str>,
    /// Server-side apply already computed managedFields; do not record an Update.
    pub applied: bool,
}

impl WriteOptions {
    pub fn from_request(q: &Query, headers: &HeaderMap) -> ApiResult<WriteOptions> {
        let manager = match q.get("fieldManager").filter(|m| !m.is_empty()) {
            Some(m) if m.len() > 128 => {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    format!("fieldManager: Too long: may not be more than 128 bytes (got {})", m.len()),
                ));
            }
            Some(m) => m.to_string(),
            None => {
                let ua = headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
                api::apply::manager_from_user_agent(ua)
            }
        };
        Ok(WriteOptions {
            dry_run: q.dry_run()?,
            field_validation: q.field_validation()?,
            manager,
            force: q.flag("force"),
            subresource: None,
            applied: false,
        })
    }

    /// Options for the server's own writes (bootstrap).
    pub fn internal(manager: &str) -> WriteOptions {
        WriteOptions {
            dry_run: false,
            field_validation: FieldValidation::Ignore,
            manager: manager.to_string(),
            force: false,
            subresource: None,
            applied: false,
        }
    }
}

/// The managedFields target of a write to `res`.
fn target<'a>(res: &'a Resource, api_version: &'a str, subresource: Option<&'static str>) -> api::apply::Target<'a> {
    api::apply::Target {
        def: api::schema::definition_for_gvk(res.group, res.version, res.kind),
        api_version,
        kind: res.kind,
        subresource,
    }
}

/// Warnings to send back in `Warning` headers (fieldValidation=Warn).
pub type Warnings = Vec<String>;

/// Reads an object from the store, with its resourceVersion.
pub async fn get_object(state: &ApiState, res: &Resource, ns: Option<&str>, name: &str) -> ApiResult<(Value, Revision)> {
    let key = res.key(ns, name);
    match state.store.get(&key).await? {
        Some(kv) => Ok((decode_stored(res, &kv.value, kv.mod_revision)?, kv.mod_revision)),
        None => Err(ApiError::not_found(res.group, res.plural, name)),
    }
}

/// Decodes a stored value into the shape `res` is served in, with its resourceVersion.
pub fn decode_stored(res: &Resource, bytes: &[u8], rev: Revision) -> ApiResult<Value> {
    let mut v: Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::internal(format!("stored object is corrupt: {e}")))?;
    if api::conversion::needs_conversion(res) {
        v = api::conversion::from_storage(res, &v);
    }
    object::set_resource_version(&mut v, rev);
    Ok(v)
}

fn encode_for_store(res: &Resource, obj: &Value) -> ApiResult<Bytes> {
    let mut o = api::conversion::to_storage(res, obj);
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("selfLink");
    }
    serde_json::to_vec(&o).map(Bytes::from).map_err(|e| ApiError::internal(e.to_string()))
}

/// Checks a body's apiVersion/kind against the URL and fills them when absent.
pub fn check_type(res: &Resource, obj: &mut Value) -> ApiResult<()> {
    let want_av = res.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => obj["apiVersion"] = json!(want_av),
        Some(av) if av == want_av => {}
        Some(av) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )));
        }
    }
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => obj["kind"] = json!(res.kind),
        Some(k) if k == res.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({}) for {}",
                res.kind,
                res.group_resource()
            )));
        }
    }
    Ok(())
}

/// The namespace in the body must match the URL's (or be empty, then it is filled).
fn check_namespace(res: &Resource, ns: Option<&str>, obj: &mut Value) -> ApiResult<()> {
    if !res.namespaced {
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("namespace");
        }
        return Ok(());
    }
    let Some(ns) = ns else {
        return Err(ApiError::bad_request(format!("{} must be created in a namespace", res.group_resource())));
    };
    match object::namespace(obj) {
        None => {
            object::meta_mut(obj).insert("namespace".into(), json!(ns));
            Ok(())
        }
        Some(body_ns) if body_ns == ns => Ok(()),
        Some(body_ns) => Err(ApiError::bad_request(format!(
            "the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({ns})"
        ))),
    }
}

/// Unknown and duplicate fields, handled as `fieldValidation` asks; unknown fields are then
/// dropped, as upstream's decoding into typed objects does.
fn check_fields(res: &Resource, raw: Option<(&[u8], BodyFormat)>, obj: &mut Value, mode: FieldValidation) -> ApiResult<Warnings> {
    let def = api::schema::definition_for_gvk(res.group, res.version, res.kind);
    let warnings = field_problems(def, raw, obj, mode)?;
    if let Some(def) = def {
        api::schema::prune_unknown_fields(def, obj);
    }
    Ok(warnings)
}

fn field_problems(
    def: Option<&'static api::schema::Definition>,
    raw: Option<(&[u8], BodyFormat)>,
    obj: &Value,
    mode: FieldValidation,
) -> ApiResult<Warnings> {
    if mode == FieldValidation::Ignore {
        return Ok(vec![]);
    }
    let mut problems = Vec::new();
    if let Some((bytes, BodyFormat::Json)) = raw {
        if let Ok(dups) = api::schema::duplicate_fields(bytes) {
            problems.extend(dups.into_iter().map(|p| format!("duplicate field \"{p}\"")));
        }
    }
    if let Some(def) = def {
        problems.extend(api::schema::unknown_fields(def, obj).into_iter().map(|p| format!("unknown field \"{p}\"")));
    }
    if problems.is_empty() {
        return Ok(vec![]);
    }
    match mode {
        FieldValidation::Strict => {
            Err(ApiError::bad_request(format!("strict decoding error: {}", problems.join(", "))))
        }
        _ => Ok(problems),
    }
}

/// Validation failures as a 422 Invalid with one cause per field, like upstream.
fn invalid(res: &Resource, name: &str, errors: &[api::validation::FieldError]) -> ApiError {
    let causes = errors
        .iter()
        .map(|e| json!({"reason": e.reason(), "message": e.message(), "field": e.field}))
        .collect();
    ApiError::new(422, "Invalid", api::validation::invalid_message(res.kind, res.group, name, errors)).with_details(
        Details {
            name: Some(name.to_string()),
            group: Some(res.group.to_string()),
            kind: Some(res.kind.to_string()),
            causes,
            ..Default::default()
        },
    )
}

/// NamespaceLifecycle admission: the namespace must exist and not be terminating.
async fn admit_namespace(state: &ApiState, res: &Resource, ns: Option<&str>) -> ApiResult<()> {
    let Some(ns) = ns.filter(|_| res.namespaced) else { return Ok(()) };
    let nsres = catalogue::find("", "v1", "namespaces").ok_or_else(|| ApiError::internal("no namespaces resource"))?;
    match state.store.get(&nsres.key(None, ns)).await? {
        None => Err(ApiError::not_found("", "namespaces", ns)),
        Some(kv) => {
            let v = decode_stored(nsres, &kv.value, kv.mod_revision)?;
            if object::deletion_timestamp(&v).is_some() || v.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating") {
                Err(ApiError::forbidden(format!(
                    "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    res.group_resource(),
                    object::name(&v).unwrap_or_default()
                ))
                .with_details(Details {
                    name: object::name(&v).map(String::from),
                    group: Some(res.group.into()),
                    kind: Some(res.plural.into()),
                    causes: vec![json!({"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"})],
                    ..Default::default()
                }))
            } else {
                Ok(())
            }
        }
    }
}

/// Creates an object (POST to a collection, or server-side apply of a missing object).
pub async fn create(
    state: &ApiState,
    res: &'static Resource,
    ns: Option<&str>,
    mut obj: Value,
    raw: Option<(&[u8], BodyFormat)>,
    opts: &WriteOptions,
) -> ApiResult<(Value, Warnings)> {
    if res.create_only {
        return crate::reviews::create(res, obj);
    }
    check_type(res, &mut obj)?;
    check_namespace(res, ns, &mut obj)?;
    let warnings = check_fields(res, raw, &mut obj, opts.field_validation)?;

    // Name or generateName.
    let name = match object::name(&obj) {
        Some(n) => n.to_string(),
        None => match object::meta_str(&obj, "generateName") {
            Some(prefix) => {
                // Upstream trims the prefix so that the name fits 63 characters.
                let p: String = prefix.chars().take(58).collect();
                format!("{p}{}", object::generate_suffix())
            }
            None => {
                return Err(invalid(res, "", &[api::validation::FieldError::required(
                    "metadata.name",
                    "name or generateName is required",
                )]));
            }
        },
    };
    let uid = uuid::Uuid::new_v4().to_string();
    {
        let m = object::meta_mut(&mut obj);
        m.insert("name".into(), json!(name));
        m.insert("uid".into(), json!(uid));
        m.insert("creationTimestamp".into(), json!(object::now_rfc3339()));
        for f in ["resourceVersion", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
            m.remove(f);
        }
    }
    if strategy::has_generation(res) {
        object::meta_mut(&mut obj).insert("generation".into(), json!(1));
    }
    api::defaults::apply_defaults(res.group, res.version, res.kind, &mut obj);
    api::defaults::prepare_for_create(res.group, res.version, res.kind, &mut obj, &uid);
    strategy::prepare_for_create(res, &mut obj);
    if !opts.applied {
        let av = res.api_version();
        api::apply::record_update(None, &mut obj, &opts.manager, &target(res, &av, opts.subresource), &object::now_rfc3339());
    }

    // Service allocation happens before validation, like upstream's BeginCreate; whatever
    // fails from here on releases what was allocated.
    let allocation = if service_alloc::is_service(res) {
        Some(state.services.allocate_create(&mut obj, opts.dry_run).await?)
    } else {
        None
    };
    let result = store_new(state, res, ns, &name, obj, opts).await;
    if let Some(allocation) = allocation {
        state.services.finish(allocation, result.is_ok()).await;
    }
    result.map(|obj| (obj, warnings))
}

/// The end of a create: validation, admission and the store write.
async fn store_new(
    state: &ApiState,
    res: &'static Resource,
    ns: Option<&str>,
    name: &str,
    mut obj: Value,
    opts: &WriteOptions,
) -> ApiResult<Value> {
    object::normalize_metadata(&mut obj);
    let errors = api::validation::validate_create(res.group, res.version, res.kind, &obj);
    if !errors.is_empty() {
        return Err(invalid(res, name, &errors));
    }
    admit_namespace(state, res, ns).await?;

    let key = res.key(ns, name);
    if opts.dry_run {
        if state.store.get(&key).await?.is_some() {
            return Err(ApiError::already_exists(res.group, res.plural, name));
        }
        return Ok(obj);
    }
    let bytes = encode_for_store(res, &obj)?;
    match state.store.create(&key, bytes).await {
        Ok(kv) => {
            object::set_resource_version(&mut obj, kv.mod_revision);
            Ok(obj)
        }
        Err(StoreError::AlreadyExists(_)) => Err(ApiError::already_exists(res.group, res.plural, name)),
        Err(e) => Err(e.into()),
    }
}

/// What kind of update is being applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateKind {
    Main,
    Status,
    /// `pods/binding`: sets `spec.nodeName` and the PodScheduled condition in one write, which
    /// pod update validation otherwise forbids (upstream's BindingREST writes it without the
    /// pod update strategy and without managed fields).
    Binding,
}

/// Read-modify-write with retries on store conflicts (upstream's `GuaranteedUpdate`).
///
/// `mutate` gets the current object (with its resourceVersion) and returns the wanted one. A
/// resourceVersion in the returned object is a precondition: it must equal the current one.
pub async fn update<F>(
    state: &ApiState,
    res: &'static Resource,
    ns: Option<&str>,
    name: &str,
    kind: UpdateKind,
    opts: &WriteOptions,
    mut mutate: F,
) -> ApiResult<(Value, Warnings)>
where
    F: FnMut(&Value) -> ApiResult<(Value, Option<(Vec<u8>, BodyFormat)>)>,
{
    let key = res.key(ns, name);
    for _attempt in 0..16 {
        let Some(kv) = state.store.get(&key).await? else {
            return Err(ApiError::not_found(res.group, res.plural, name));
        };
        let current = decode_stored(res, &kv.value, kv.mod_revision)?;
        let (mut new, raw) = mutate(&current)?;
        check_type(res, &mut new)?;
        check_namespace(res, ns, &mut new)?;
        if let Some(body_name) = object::name(&new) {
            if body_name != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
        }
        let warnings = check_fields(res, raw.as_ref().map(|(b, f)| (b.as_slice(), *f)), &mut new, opts.field_validation)?;
        // A resourceVersion in the new object is an optimistic-concurrency precondition.
        if let Some(rv) = object::resource_version(&new) {
            if rv != kv.mod_revision.to_string() {
                return Err(ApiError::conflict(
                    res.group,
                    res.plural,
                    name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
        }
        // A binding's mutation writes spec and status together from the current object, and
        // records no managed fields: upstream's BindingREST updates the pod in storage directly,
        // outside the pod strategy and the field manager.
        let mut new = if kind == UpdateKind::Binding {
            new
        } else {
            strategy::merge_for_update(res, new, &current, kind == UpdateKind::Status)
        };
        preserve_system_metadata(&mut new, &current, name);
        if kind == UpdateKind::Main {
            api::defaults::apply_defaults(res.group, res.version, res.kind, &mut new);
        }
        if !opts.applied && kind != UpdateKind::Binding {
            let sub = if kind == UpdateKind::Status { Some("status") } else { opts.subresource };
            let av = res.api_version();
            api::apply::record_update(Some(&current), &mut new, &opts.manager, &target(res, &av, sub), &object::now_rfc3339());
        }
        // Service allocation (upstream's BeginUpdate): released again unless the write lands.
        let allocation = if kind == UpdateKind::Main && service_alloc::is_service(res) {
            Some(state.services.allocate_update(&mut new, &current, opts.dry_run).await?)
        } else {
            None
        };
        let outcome = store_update(state, res, name, kind, opts, &key, kv.mod_revision, &current, new).await;
        if let Some(allocation) = allocation {
            state.services.finish(allocation, matches!(outcome, Ok(Some(_)))).await;
        }
        match outcome {
            Ok(Some(obj)) => return Ok((obj, warnings)),
            Ok(None) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(res.group, res.plural, name, "too many concurrent writers; please retry"))
}

/// The end of one update attempt: generation, validation and the store write. `Ok(None)`: the
/// object changed meanwhile, retry.
#[allow(clippy::too_many_arguments)]
async fn store_update(
    state: &ApiState,
    res: &'static Resource,
    name: &str,
    kind: UpdateKind,
    opts: &WriteOptions,
    key: &str,
    mod_revision: Revision,
    current: &Value,
    mut new: Value,
) -> ApiResult<Option<Value>> {
    if strategy::has_generation(res) {
        let generation = current.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
        let bumped = if object::spec_part(&new) != object::spec_part(current) { generation + 1 } else { generation };
        object::meta_mut(&mut new).insert("generation".into(), json!(bumped));
    }
    object::normalize_metadata(&mut new);
    let errors = if kind == UpdateKind::Binding {
        Vec::new()
    } else {
        api::validation::validate_update(res.group, res.version, res.kind, &new, current)
    };
    if !errors.is_empty() {
        return Err(invalid(res, name, &errors));
    }
    // A deleting object whose last finalizer was just removed goes away (upstream's
    // `deleteWithoutFinalizers` on update).
    // Upstream's ShouldDeleteDuringUpdate: only once the grace period is over (a pod in
    // graceful termination keeps taking status writes from its kubelet until then).
    let finalized = object::deletion_timestamp(&new).is_some()
        && object::finalizers(&new).is_empty()
        && new.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0) == 0
        && new.pointer("/spec/finalizers").and_then(Value::as_array).is_none_or(|f| f.is_empty() || res.kind != "Namespace");
    object::set_resource_version(&mut new, mod_revision);
    if new == *current {
        return Ok(Some(current.clone())); // a no-op update writes nothing, like upstream
    }
    if opts.dry_run {
        return Ok(Some(new));
    }
    if finalized {
        return match state.store.delete(key, Some(mod_revision)).await {
            Ok(d) => {
                if service_alloc::is_service(res) {
                    state.services.release_service(&new).await;
                }
                object::set_resource_version(&mut new, d.revision);
                Ok(Some(new))
            }
            Err(StoreError::Conflict { .. }) => Ok(None),
            Err(StoreError::NotFound(_)) => Err(ApiError::not_found(res.group, res.plural, name)),
            Err(e) => Err(e.into()),
        };
    }
    match state.store.update(key, encode_for_store(res, &new)?, mod_revision).await {
        Ok(kv) => {
            object::set_resource_version(&mut new, kv.mod_revision);
            Ok(Some(new))
        }
        Err(StoreError::Conflict { .. }) => Ok(None),
        Err(StoreError::NotFound(_)) => Err(ApiError::not_found(res.group, res.plural, name)),
        Err(e) => Err(e.into()),
    }
}

/// Fields a client may not change through an update.
fn preserve_system_metadata(new: &mut Value, current: &Value, name: &str) {
    let cur_meta = current.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let m = object::meta_mut(new);
    m.insert("name".into(), json!(name));
    for f in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation", "namespace"] {
        match cur_meta.get(f) {
            Some(v) => {
                m.insert(f.into(), v.clone());
            }
            None => {
                m.remove(f);
            }
        }
    }
    m.remove("selfLink");
}

/// Options of a DELETE, from the body (DeleteOptions) and the query.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    pub fn parse(q: &Query, body: &[u8]) -> ApiResult<DeleteOptions> {
        let mut o = DeleteOptions { dry_run: q.dry_run()?, ..Default::default() };
        if !body.iter().all(u8::is_ascii_whitespace) {
            let v: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("the DeleteOptions body could not be decoded: {e}")))?;
            o.grace_period_seconds = v.get("gracePeriodSeconds").and_then(Value::as_i64);
            o.propagation_policy = v.get("propagationPolicy").and_then(Value::as_str).map(String::from);
            if v.get("orphanDependents").and_then(Value::as_bool) == Some(true) && o.propagation_policy.is_none() {
                o.propagation_policy = Some("Orphan".into());
            }
            o.precondition_uid = v.pointer("/preconditions/uid").and_then(Value::as_str).map(String::from);
            o.precondition_rv = v.pointer("/preconditions/resourceVersion").and_then(Value::as_str).map(String::from);
            if let Some(dr) = v.get("dryRun").and_then(Value::as_array) {
                o.dry_run |= dr.iter().any(|d| d == "All");
            }
        }
        if let Some(g) = q.int("gracePeriodSeconds")? {
            o.grace_period_seconds = Some(g);
        }
        if let Some(p) = q.get("propagationPolicy") {
            o.propagation_policy = Some(p.to_string());
        }
        if q.flag("orphanDependents") && o.propagation_policy.is_none() {
            o.propagation_policy = Some("Orphan".into());
        }
        if let Some(p) = &o.propagation_policy {
            if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    format!("propagationPolicy: Unsupported value: {p:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""),
                ));
            }
        }
        if let Some(g) = o.grace_period_seconds {
            if g < 0 {
                return Err(ApiError::new(422, "Invalid", "gracePeriodSeconds: Invalid value: must be >= 0"));
            }
        }
        Ok(o)
    }
}

/// Deletes one object: finalizers and graceful pod deletion keep it (with a
/// deletionTimestamp) until they are done; otherwise it is removed at once.
pub async fn delete(
    state: &ApiState,
    res: &'static Resource,
    ns: Option<&str>,
    name: &str,
    opts: &DeleteOptions,
) -> ApiResult<(Value, StatusCode)> {
    if res.kind == "Namespace" && res.group.is_empty() && SYSTEM_NAMESPACES.contains(&name) {
        return Err(ApiError::forbidden(format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted")));
    }
    let key = res.key(ns, name);
    for _attempt in 0..16 {
        let Some(kv) = state.store.get(&key).await? else {
            return Err(ApiError::not_found(res.group, res.plural, name));
        };
        let current = decode_stored(res, &kv.value, kv.mod_revision)?;
        if let Some(uid) = &opts.precondition_uid {
            if object::uid(&current) != Some(uid.as_str()) {
                return Err(ApiError::conflict(res.group, res.plural, name, &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    object::uid(&current).unwrap_or_default()
                )));
            }
        }
        if let Some(rv) = &opts.precondition_rv {
            if *rv != kv.mod_revision.to_string() {
                return Err(ApiError::conflict(res.group, res.plural, name, &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    kv.mod_revision
                )));
            }
        }

        let mut updated = current.clone();
        let mut finalizers = object::finalizers(&current);
        match opts.propagation_policy.as_deref() {
            Some("Foreground") if !finalizers.iter().any(|f| f == "foregroundDeletion") => {
                finalizers.push("foregroundDeletion".into())
            }
            Some("Orphan") if !finalizers.iter().any(|f| f == "orphan") => finalizers.push("orphan".into()),
            _ => {}
        }
        let is_namespace = res.group.is_empty() && res.kind == "Namespace";
        if is_namespace {
            // The namespace controller empties it, then removes the `kubernetes` spec finalizer
            // through `namespaces/<name>/finalize`.
            updated["status"] = json!({"phase": "Terminating"});
        }
        // Graceful pod deletion: a pod on a node keeps running until its kubelet has stopped it
        // (pkg/registry/core/pod/strategy.go CheckGracefulDelete).
        let pod_grace = if res.group.is_empty() && res.kind == "Pod" {
            let on_node = current.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
            let terminal = matches!(
                current.pointer("/status/phase").and_then(Value::as_str),
                Some("Succeeded") | Some("Failed")
            );
            let grace = opts.grace_period_seconds.unwrap_or_else(|| {
                current.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(30)
            });
            (on_node && !terminal && grace > 0).then_some(grace)
        } else {
            None
        };
        let ns_pending = is_namespace
            && current.pointer("/spec/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());

        if finalizers.is_empty() && pod_grace.is_none() && !ns_pending {
            if opts.dry_run {
                return Ok((current, StatusCode::OK));
            }
            return match state.store.delete(&key, Some(kv.mod_revision)).await {
                Ok(d) => {
                    // upstream's AfterDelete: the Service's ClusterIPs and node ports go back.
                    if service_alloc::is_service(res) {
                        state.services.release_service(&current).await;
                    }
                    let mut gone = current;
                    object::set_resource_version(&mut gone, d.revision);
                    Ok((gone, StatusCode::OK))
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound(_)) => Err(ApiError::not_found(res.group, res.plural, name)),
                Err(e) => Err(e.into()),
            };
        }

        // Keep the object, marked for deletion.
        object::set_finalizers(&mut updated, &finalizers);
        let grace = pod_grace.unwrap_or(0);
        {
            let already = object::deletion_timestamp(&current).is_some();
            let cur_grace = current.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64);
            let m = object::meta_mut(&mut updated);
            // A second delete may only shorten the grace period.
            if !already || cur_grace.is_some_and(|g| grace < g) {
                m.insert("deletionTimestamp".into(), json!(object::rfc3339_in(grace)));
                m.insert("deletionGracePeriodSeconds".into(), json!(grace));
            }
            if strategy::has_generation(res) && !already {
                let generation = m.get("generation").and_then(Value::as_i64).unwrap_or(1);
                m.insert("generation".into(), json!(generation + 1));
            }
        }
        if updated == current {
            return Ok((current, StatusCode::OK));
        }
        if opts.dry_run {
            return Ok((updated, StatusCode::OK));
        }
        match state.store.update(&key, encode_for_store(res, &updated)?, kv.mod_revision).await {
            Ok(kv) => {
                object::set_resource_version(&mut updated, kv.mod_revision);
                // 202 Accepted when deletion was only started, like upstream.
                return Ok((updated, StatusCode::OK));
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound(_)) => return Err(ApiError::not_found(res.group, res.plural, name)),
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::conflict(res.group, res.plural, name, "too many concurrent writers; please retry"))
}

/// Selection for lists and watches.
pub struct Selection {
    pub label: Option<api::selectors::LabelSelector>,
    pub field: Option<api::selectors::FieldSelector>,
}

impl Selection {
    /// Parses and checks the selectors (an unsupported field label is a 400 even when nothing
    /// would be listed).
    pub fn from_query(res: &Resource, q: &Query) -> ApiResult<Selection> {
        let label = match q.get("labelSelector").filter(|s| !s.trim().is_empty()) {
            Some(s) => Some(
                api::selectors::parse_label_selector(s)
                    .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?,
            ),
            None => None,
        };
        let field = match q.get("fieldSelector").filter(|s| !s.trim().is_empty()) {
            Some(s) => {
                let f = api::selectors::parse_field_selector(s).map_err(|e| ApiError::bad_request(e.to_string()))?;
                f.validate(res.group, res.kind).map_err(|e| ApiError::bad_request(e.to_string()))?;
                Some(f)
            }
            None => None,
        };
        Ok(Selection { label, field })
    }

    pub fn matches(&self, res: &Resource, obj: &Value) -> ApiResult<bool> {
        if let Some(l) = &self.label {
            if !l.matches(&object::labels(obj)) {
                return Ok(false);
            }
        }
        if let Some(f) = &self.field {
            return f.matches(res.group, res.kind, obj).map_err(|e| ApiError::bad_request(e.to_string()));
        }
        Ok(true)
    }
}

/// A continue token: the revision of the first page and the last key returned.
fn encode_continue(rev: Revision, last_key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(json!({"v": "skiff/v1", "rv": rev, "start": last_key}).to_string())
}

fn decode_continue(token: &str) -> ApiResult<(Revision, String)> {
    use base64::Engine;
    let bad = || ApiError::bad_request("continue key is not valid: the token could not be decoded");
    let raw = base64::engine::general_purpose::STANDARD.decode(token).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rev = v.get("rv").and_then(Value::as_i64).ok_or_else(bad)?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?.to_string();
    Ok((rev, start))
}

/// Lists objects: selectors applied, `limit`/`continue` chunking, resourceVersion semantics.
pub async fn list(state: &ApiState, res: &'static Resource, ns: Option<&str>, q: &Query) -> ApiResult<(Vec<Value>, Revision, Option<String>)> {
    let sel = Selection::from_query(res, q)?;
    let limit = q.int("limit")?.filter(|l| *l > 0).map(|l| l as usize);
    let prefix = res.namespace_prefix(ns);
    let (mut revision, mut start_after) = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let (rev, start) = decode_continue(token)?;
            if !start.starts_with(&prefix) {
                return Err(ApiError::bad_request("continue key is not valid: it does not belong to this list"));
            }
            (Some(rev), Some(start))
        }
        None => (None, None),
    };
    if revision.is_none() {
        let rv = q.get("resourceVersion").filter(|s| !s.is_empty());
        let exact = q.get("resourceVersionMatch") == Some("Exact");
        if let Some(rv) = rv {
            let parsed: Revision = rv.parse().map_err(|_| {
                ApiError::bad_request(format!("resourceVersion: Invalid value: {rv:?}: must be a non-negative integer"))
            })?;
            if exact {
                revision = Some(parsed);
            } else if parsed > 0 {
                // NotOlderThan: the latest state is never older; but a future version is a 504.
                let current = state.store.current_revision().await?;
                if parsed > current {
                    return Err(StoreError::FutureRevision { requested: parsed, current }.into());
                }
            }
        }
    }
    let mut items = Vec::new();
    loop {
        // Read a page at least as large as what is still wanted (selectors may filter some out).
        let page = limit.map(|l| (l - items.len()).max(1).max(l.min(500)));
        let r = state
            .store
            .range(&prefix, RangeOptions { revision, limit: page, start_after: start_after.clone() })
            .await
            .map_err(|e| match e {
                StoreError::Compacted { .. } if q.get("continue").is_some() => ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ),
                other => other.into(),
            })?;
        let served_rev = r.revision;
        revision = Some(r.revision);
        let mut last_key = None;
        for kv in &r.kvs {
            last_key = Some(kv.key.clone());
            let obj = decode_stored(res, &kv.value, kv.mod_revision)?;
            if sel.matches(res, &obj)? {
                items.push(obj);
                if limit.is_some_and(|l| items.len() >= l) {
                    let more_here = kv.key != r.kvs.last().map(|k| k.key.clone()).unwrap_or_default();
                    if more_here || r.more {
                        return Ok((items, served_rev, Some(encode_continue(served_rev, &kv.key))));
                    }
                    return Ok((items, served_rev, None));
                }
            }
        }
        if !r.more {
            return Ok((items, served_rev, None));
        }
        start_after = last_key;
    }
}

/// Wraps items into a `<Kind>List` (or a Table / PartialObjectMetadataList).
pub fn list_response(res: &Resource, items: Vec<Value>, rev: Revision, cont: Option<String>, shape: ResponseShape, q: &Query) -> Value {
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    match shape {
        ResponseShape::Table => tables::table(res, &items, meta, q.get("includeObject")),
        ResponseShape::Metadata => json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": meta,
            "items": items.iter().map(object::partial_object_metadata).collect::<Vec<_>>(),
        }),
        ResponseShape::Object => json!({
            "kind": res.list_kind(),
            "apiVersion": res.api_version(),
            "metadata": meta,
            "items": items,
        }),
    }
}

/// One object in the shape the client asked for.
pub fn object_response(res: &Resource, obj: Value, shape: ResponseShape, q: &Query) -> Value {
    match shape {
        ResponseShape::Table => {
            let rv = object::resource_version(&obj).unwrap_or_default().to_string();
            tables::table(res, std::slice::from_ref(&obj), json!({"resourceVersion": rv}), q.get("includeObject"))
        }
        ResponseShape::Metadata => object::partial_object_metadata(&obj),
        ResponseShape::Object => obj,
    }
}

/// Deletes every object of a collection that matches the selectors.
pub async fn delete_collection(state: &ApiState, res: &'static Resource, ns: Option<&str>, q: &Query, opts: &DeleteOptions) -> ApiResult<Value> {
    let (items, rev, _) = list(state, res, ns, &strip_paging(q)).await?;
    let mut deleted = Vec::new();
    for item in items {
        let Some(name) = object::name(&item).map(String::from) else { continue };
        match delete(state, res, object::namespace(&item).or(ns), &name, opts).await {
            Ok((obj, _)) => deleted.push(obj),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json!({"kind": res.list_kind(), "apiVersion": res.api_version(), "metadata": {"resourceVersion": rev.to_string()}, "items": deleted}))
}

fn strip_paging(q: &Query) -> Query {
    let mut raw = Vec::new();
    for key in ["labelSelector", "fieldSelector"] {
        if let Some(v) = q.get(key) {
            raw.push(format!("{key}={}", form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()));
        }
    }
    Query::parse(Some(&raw.join("&")))
}

/// Collects `Warning` headers for a response.
pub fn warning_headers(headers: &mut HeaderMap, warnings: &[String]) {
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(v) = http::HeaderValue::from_str(&text) {
            headers.append("warning", v);
        }
    }
}

pub type SharedState = Arc<ApiState>;

pub fn body_format(headers: &HeaderMap) -> ApiResult<BodyFormat> {
    codec::BodyFormat::from_headers(headers)
}
