//! Generates the protobuf → JSON schema table used by `src/protobuf/` to decode kubectl's
//! `application/vnd.kubernetes.protobuf` request bodies.
//!
//! Inputs, combined because none of them alone says everything the decoder needs:
//! * the `k8s-pb` crate's generated source (located with `cargo metadata`): message names,
//!   field tags, protobuf types, repeated/map layout and nested message types, read from the
//!   `#[prost(...)] pub field: Type` declarations;
//! * the upstream OpenAPI v2 spec (`SKIFF_OPENAPI_SPEC`, else `shared/k8s/openapi-v2-v1.33.json`
//!   in an ancestor of this crate): the exact JSON field names (prost snake_cases them, losing
//!   `volumeID` vs `volumeId`), which proto fields Go inlines into their parent (`Volume` holds a
//!   `VolumeSource` on the wire but its members in JSON), and the `x-kubernetes-group-version-kind`
//!   of each top-level type;
//! * a rule for Go's `omitempty`: kubectl's gogo-protobuf encoder writes every non-pointer
//!   field, so optional fields arrive as "", 0 or false where the JSON form has no field. An
//!   optional scalar holding its zero value is dropped, except the pointer fields whose zero was
//!   set on purpose and differs from leaving the field out (`replicas: 0`,
//!   `automountServiceAccountToken: false`, `ttlSecondsAfterFinished: 0`): those are listed by
//!   name below. Required fields always keep their value.
//!
//! Output: `$OUT_DIR/protobuf_schema.rs`, Rust statics (`MESSAGES`, `KINDS`) built from the types
//! in `src/protobuf/schema.rs`; only the messages reachable from a top-level kind are kept.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const SPEC_RELATIVE: &str = "shared/k8s/openapi-v2-v1.33.json";
/// Optional pointer fields (by JSON name) whose zero value ("", 0, false) means something other
/// than "unset" — a default that is not zero, or zero as an explicit choice — so a zero on the
/// wire must reach the JSON form. `storageClassName: ""` asks for no class at all.
const MEANINGFUL_ZERO_FIELDS: &[&str] = &[
    "activeDeadlineSeconds", "allocateLoadBalancerNodePorts", "allowPrivilegeEscalation",
    "automountServiceAccountToken", "backoffLimit", "backoffLimitPerIndex", "completions",
    "defaultMode", "enableServiceLinks", "expirationSeconds", "failedJobsHistoryLimit",
    "fsGroup", "hostUsers", "immutable", "leaseDurationSeconds", "leaseTransitions",
    "maxFailedIndexes", "minDomains", "mode", "optional", "parallelism", "privileged",
    "progressDeadlineSeconds", "ready", "readOnlyRootFilesystem", "replicas",
    "revisionHistoryLimit", "runAsGroup", "runAsNonRoot", "runAsUser", "serving",
    "setHostnameAsFQDN", "shareProcessNamespace", "startingDeadlineSeconds", "storageClassName",
    "successfulJobsHistoryLimit", "suspend", "terminating", "terminationGracePeriodSeconds",
    "timeoutSeconds", "tolerationSeconds", "ttlSecondsAfterFinished", "priority",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SKIFF_OPENAPI_SPEC");
    if let Err(message) = run() {
        // A build script has no caller to hand an error to: stop the build with the reason.
        eprintln!("error generating the protobuf schema table: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let spec_path = locate_spec(&manifest_dir)?;
    println!("cargo:rerun-if-changed={}", spec_path.display());
    let k8s_pb_src = locate_k8s_pb(&manifest_dir)?;

    let spec_text = std::fs::read_to_string(&spec_path)
        .map_err(|e| format!("reading {}: {e}", spec_path.display()))?;
    let spec: serde_json::Value = serde_json::from_str(&spec_text)
        .map_err(|e| format!("parsing {}: {e}", spec_path.display()))?;
    let definitions = spec
        .get("definitions")
        .and_then(|d| d.as_object())
        .ok_or_else(|| format!("{} has no `definitions` object", spec_path.display()))?;

    let mut structs = Vec::new();
    parse_crate(&k8s_pb_src, &k8s_pb_src, &mut structs)?;
    let table = Table::build(&structs, definitions)?;
    let out = PathBuf::from(env("OUT_DIR")?).join("protobuf_schema.rs");
    std::fs::write(&out, table.render()).map_err(|e| format!("writing {}: {e}", out.display()))
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))
}

fn locate_spec(manifest_dir: &Path) -> Result<PathBuf, String> {
    if let Ok(path) = std::env::var("SKIFF_OPENAPI_SPEC") {
        return Ok(PathBuf::from(path));
    }
    manifest_dir
        .ancestors()
        .map(|dir| dir.join(SPEC_RELATIVE))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            format!(
                "no {SPEC_RELATIVE} above {}; set SKIFF_OPENAPI_SPEC to the Kubernetes 1.33 OpenAPI v2 spec",
                manifest_dir.display()
            )
        })
}

/// The `src` directory of the `k8s-pb` package this crate depends on, from `cargo metadata`.
fn locate_k8s_pb(manifest_dir: &Path) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline"])
        // `--filter-platform`: without it cargo wants every platform's dependencies downloaded
        // (r-efi, windows-sys …), which `--offline` cannot do.
        .arg("--filter-platform")
        .arg(env("TARGET")?)
        .arg("--manifest-path")
        .arg(manifest_dir.join("Cargo.toml"))
        .output()
        .map_err(|e| format!("running cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("parsing cargo metadata output: {e}"))?;
    let this_package = env("CARGO_PKG_NAME")?;
    let packages = metadata["packages"]
        .as_array()
        .ok_or("cargo metadata has no packages")?;
    let this_id = packages
        .iter()
        .find(|p| {
            p["name"] == this_package.as_str()
                && Path::new(p["manifest_path"].as_str().unwrap_or_default())
                    .parent()
                    .is_some_and(|dir| dir == manifest_dir)
        })
        .and_then(|p| p["id"].as_str())
        .ok_or_else(|| format!("cargo metadata does not list {this_package}"))?;
    let nodes = metadata["resolve"]["nodes"]
        .as_array()
        .ok_or("cargo metadata has no resolve graph")?;
    let k8s_pb_id = nodes
        .iter()
        .find(|n| n["id"] == this_id)
        .and_then(|n| n["deps"].as_array())
        .and_then(|deps| deps.iter().find(|d| d["name"] == "k8s_pb"))
        .and_then(|d| d["pkg"].as_str())
        .ok_or_else(|| format!("{this_package} does not depend on k8s-pb"))?;
    let manifest = packages
        .iter()
        .find(|p| p["id"] == k8s_pb_id)
        .and_then(|p| p["manifest_path"].as_str())
        .ok_or("cargo metadata does not list the k8s-pb package")?;
    let src = Path::new(manifest).with_file_name("src");
    println!("cargo:rerun-if-changed={}", src.display());
    Ok(src)
}

/// A `pub struct` of k8s-pb: its Rust module path (`["api", "apps", "v1"]`) and fields.
struct PbStruct {
    module: Vec<String>,
    name: String,
    fields: Vec<PbField>,
}

struct PbField {
    name: String,
    tag: u32,
    /// The protobuf type word of the attribute: `string`, `int32`, `message`, `btree_map` …
    kind: String,
    repeated: bool,
    /// For `btree_map`: the value type word (`string`, `bytes`, `message`).
    map_value: Option<String>,
    /// For message-typed fields and map values: the Rust path of the message type.
    message_path: Option<Vec<String>>,
}

fn parse_crate(root: &Path, dir: &Path, out: &mut Vec<PbStruct>) -> Result<(), String> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            parse_crate(root, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).map_err(|e| e.to_string())?;
            let mut module: Vec<String> = rel
                .parent()
                .map(|p| p.iter().map(|s| s.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            if stem != "mod" && stem != "lib" {
                module.push(stem);
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            parse_file(&text, &module, out).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// Reads the prost-generated declarations of one file. prost writes each attribute on one
/// line and each struct as `pub struct Name {` … `}` at column 0; a field's type may wrap.
fn parse_file(text: &str, module: &[String], out: &mut Vec<PbStruct>) -> Result<(), String> {
    let mut current: Option<PbStruct> = None;
    let mut attribute: Option<String> = None;
    let mut declaration = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("pub struct ") {
            let name = rest.split([' ', '{']).next().unwrap_or_default().to_owned();
            let s = PbStruct {
                module: module.to_vec(),
                name,
                fields: Vec::new(),
            };
            if rest.trim_end().ends_with("{}") {
                out.push(s);
            } else {
                current = Some(s);
            }
            continue;
        }
        let Some(s) = current.as_mut() else { continue };
        if line.starts_with('}') {
            out.extend(current.take());
            continue;
        }
        let trimmed = line.trim();
        if let Some(attr) = trimmed
            .strip_prefix("#[prost(")
            .and_then(|a| a.strip_suffix(")]"))
        {
            attribute = Some(attr.to_owned());
            declaration.clear();
            continue;
        }
        if attribute.is_some() && !trimmed.starts_with("///") {
            declaration.push_str(trimmed);
            if declaration.ends_with(',') && angle_depth(&declaration) == 0 {
                let attr = attribute.take().unwrap_or_default();
                s.fields.push(parse_field(&attr, &declaration)?);
                declaration.clear();
            }
        }
    }
    Ok(())
}

fn angle_depth(s: &str) -> i32 {
    s.chars()
        .map(|c| match c {
            '<' => 1,
            '>' => -1,
            _ => 0,
        })
        .sum()
}

fn parse_field(attr: &str, declaration: &str) -> Result<PbField, String> {
    let (name, ty) = declaration
        .strip_prefix("pub ")
        .and_then(|d| d.split_once(':'))
        .ok_or_else(|| format!("unexpected field declaration `{declaration}`"))?;
    let name = name.trim().trim_start_matches("r#").to_owned();
    let ty = ty.trim().trim_end_matches(',').replace(' ', "");
    let tag = attr
        .split("tag = \"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("no tag in `#[prost({attr})]` of {name}"))?;
    let kind = attr
        .split([',', ' ', '='])
        .next()
        .unwrap_or_default()
        .to_owned();
    let repeated = attr.split(", ").any(|part| part == "repeated");
    let map_value = if kind == "btree_map" {
        let types = attr
            .split('"')
            .nth(1)
            .ok_or_else(|| format!("no map types in {name}"))?;
        let (key, value) = types
            .split_once(", ")
            .ok_or_else(|| format!("bad map types in {name}"))?;
        if key != "string" {
            return Err(format!(
                "map field {name} has key type {key}; only string keys are supported"
            ));
        }
        Some(value.to_owned())
    } else {
        None
    };
    let message_path = if kind == "message" || map_value.as_deref() == Some("message") {
        Some(message_type_path(&ty))
    } else {
        None
    };
    Ok(PbField {
        name,
        tag,
        kind,
        repeated,
        map_value,
        message_path,
    })
}

/// The path of the message type inside `Option<…>`, `Vec<…>`, `Box<…>` or a map's value.
fn message_type_path(ty: &str) -> Vec<String> {
    let mut inner = ty;
    while let Some(open) = inner.find('<') {
        let wrapper = &inner[..open];
        // rustfmt leaves a trailing comma after a wrapped generic argument.
        let body = inner[open + 1..inner.len().saturating_sub(1)].trim_end_matches(',');
        inner = if wrapper.ends_with("BTreeMap") {
            // `BTreeMap<String,Value>`: the key is always `::prost::alloc::string::String`.
            body.split_once(',').map_or(body, |(_, value)| value)
        } else {
            body
        };
    }
    inner
        .trim_start_matches("::")
        .split("::")
        .map(str::to_owned)
        .collect()
}

/// How a message is written in JSON when it is not a plain object; see `src/protobuf/schema.rs`.
const SPECIAL_SHAPES: &[(&str, &str)] = &[
    ("io.k8s.apimachinery.pkg.apis.meta.v1.Time", "Time"),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime",
        "MicroTime",
    ),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.Duration", "Duration"),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1",
        "EmbeddedJson",
    ),
    (
        "io.k8s.apimachinery.pkg.runtime.RawExtension",
        "EmbeddedJson",
    ),
    (
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
        "IntOrString",
    ),
    ("io.k8s.apimachinery.pkg.api.resource.Quantity", "Quantity"),
    (
        "io.k8s.apimachinery.pkg.api.resource.QuantityValue",
        "Quantity",
    ),
    (
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON",
        "EmbeddedJson",
    ),
    (
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1beta1.JSON",
        "EmbeddedJson",
    ),
    (
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrBool",
        "SchemaOrBool",
    ),
    (
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1beta1.JSONSchemaPropsOrBool",
        "SchemaOrBool",
    ),
    (
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrArray",
        "SchemaOrArray",
    ),
    (
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1beta1.JSONSchemaPropsOrArray",
        "SchemaOrArray",
    ),
    (
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrStringArray",
        "SchemaOrStringArray",
    ),
    (
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1beta1.JSONSchemaPropsOrStringArray",
        "SchemaOrStringArray",
    ),
];

/// The tags the decoder reads directly for each special shape: checked here so that a k8s-pb
/// release that renumbered them fails the build instead of decoding garbage.
const SPECIAL_TAGS: &[(&str, &[(u32, &str)])] = &[
    ("Time", &[(1, "int64"), (2, "int32")]),
    ("MicroTime", &[(1, "int64"), (2, "int32")]),
    ("Duration", &[(1, "int64")]),
    ("IntOrString", &[(1, "int64"), (2, "int32"), (3, "string")]),
    ("Quantity", &[(1, "string")]),
    ("EmbeddedJson", &[(1, "bytes")]),
    ("SchemaOrBool", &[(1, "bool"), (2, "message")]),
    ("SchemaOrArray", &[(1, "message"), (2, "message")]),
    ("SchemaOrStringArray", &[(1, "message"), (2, "string")]),
];

fn definition_name(module: &[String], name: &str) -> String {
    let mut out = String::from("io.k8s");
    for (i, segment) in module.iter().enumerate() {
        out.push('.');
        // Go module roots are `apiextensions-apiserver`, `kube-aggregator`: Rust needs `_`.
        if i == 0 {
            out.push_str(&segment.replace('_', "-"))
        } else {
            out.push_str(segment)
        }
    }
    out.push('.');
    out.push_str(name);
    out
}

fn normalize(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn lower_camel(snake: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

struct Table {
    /// Reachable messages in index order: (definition, shape, fields).
    messages: Vec<(String, &'static str, Vec<String>)>,
    /// (apiVersion, kind) → message index, sorted.
    kinds: BTreeMap<(String, String), usize>,
}

impl Table {
    fn build(
        structs: &[PbStruct],
        definitions: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Table, String> {
        // k8s-pb path → struct, and definition name (with the OpenAPI spelling when prost
        // re-cased it: `JsonSchemaProps` is `JSONSchemaProps`).
        let mut by_path: HashMap<Vec<String>, usize> = HashMap::new();
        let mut definition_of: Vec<String> = Vec::new();
        let by_lower: HashMap<String, &String> = definitions
            .keys()
            .map(|k| (k.to_ascii_lowercase(), k))
            .collect();
        for (i, s) in structs.iter().enumerate() {
            let mut path = s.module.clone();
            path.push(s.name.clone());
            by_path.insert(path, i);
            let guess = definition_name(&s.module, &s.name);
            let name = match by_lower.get(&guess.to_ascii_lowercase()) {
                Some(spelled) => (*spelled).clone(),
                None => guess,
            };
            definition_of.push(name);
        }
        let index_of_definition: HashMap<&str, usize> = definition_of
            .iter()
            .enumerate()
            .map(|(i, d)| (d.as_str(), i))
            .collect();

        let resolve = |from: &PbStruct, path: &[String]| -> Result<usize, String> {
            let mut module = from.module.clone();
            let mut rest = path;
            if rest.first().is_some_and(|s| s == "crate") {
                module.clear();
                rest = &rest[1..];
            }
            while rest.first().is_some_and(|s| s == "super") {
                module.pop();
                rest = &rest[1..];
            }
            module.extend(rest.iter().cloned());
            by_path
                .get(&module)
                .copied()
                .ok_or_else(|| format!("{}: unknown message type {}", from.name, path.join("::")))
        };

        // Top-level kinds from the OpenAPI group-version-kind extension.
        let mut kinds = BTreeMap::new();
        for (name, definition) in definitions {
            let Some(gvks) = definition["x-kubernetes-group-version-kind"].as_array() else {
                continue;
            };
            let Some(&index) = index_of_definition.get(name.as_str()) else {
                continue;
            };
            for gvk in gvks {
                let group = gvk["group"].as_str().unwrap_or_default();
                let version = gvk["version"].as_str().unwrap_or_default();
                let kind = gvk["kind"].as_str().unwrap_or_default();
                let api_version = if group.is_empty() {
                    version.to_owned()
                } else {
                    format!("{group}/{version}")
                };
                kinds.insert((api_version, kind.to_owned()), index);
            }
        }

        // Breadth-first from the kinds: struct index → table index.
        let mut table_index: HashMap<usize, usize> = HashMap::new();
        let mut order: Vec<usize> = Vec::new();
        let mut queue: VecDeque<usize> = VecDeque::new();
        let mut visit = |i: usize, order: &mut Vec<usize>, queue: &mut VecDeque<usize>| -> usize {
            *table_index.entry(i).or_insert_with(|| {
                order.push(i);
                queue.push_back(i);
                order.len() - 1
            })
        };
        let top: Vec<usize> = kinds
            .values()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for i in top {
            visit(i, &mut order, &mut queue);
        }
        // The special shapes are always in the table, used by a field or not (no 1.33 field
        // has type metav1.Duration), so that each has a row the decoder is tested against.
        for (i, definition) in definition_of.iter().enumerate() {
            if SPECIAL_SHAPES.iter().any(|(d, _)| d == definition) {
                visit(i, &mut order, &mut queue);
            }
        }
        let mut rows: HashMap<usize, (&'static str, Vec<String>)> = HashMap::new();
        while let Some(i) = queue.pop_front() {
            let s = &structs[i];
            let definition = &definition_of[i];
            let shape = shape_of(s, definition, definitions)?;
            let mut fields = Vec::new();
            // Special shapes keep their field list too: `JSONSchemaPropsOrBool` needs the
            // message index of its `schema` member.
            if shape != "Object" {
                check_special_tags(s, shape)?;
            }
            {
                let properties = definitions
                    .get(definition)
                    .and_then(|d| d["properties"].as_object());
                for f in &s.fields {
                    let nested = match &f.message_path {
                        Some(path) => Some(resolve(s, path)?),
                        None => None,
                    };
                    let nested_index = nested.map(|n| visit(n, &mut order, &mut queue));
                    let json = properties.and_then(|props| {
                        let wanted = normalize(&f.name);
                        props.keys().find(|k| normalize(k) == wanted).cloned()
                    });
                    let inline = json.is_none()
                        && f.kind == "message"
                        && !f.repeated
                        && properties.is_some_and(|props| {
                            // Go embeds the struct with `json:",inline"`: the members of the nested
                            // message are properties of this definition. A nested type without
                            // a definition of its own (`VolumeSource`, `ProbeHandler`) is judged
                            // by its protobuf field names, of which k8s-pb (generated from a
                            // newer release than the spec) may have a few the spec lacks
                            // (`EphemeralContainerCommon.restartPolicyRules`): a majority decides.
                            let parent: BTreeSet<String> =
                                props.keys().map(|k| normalize(k)).collect();
                            nested.is_some_and(|n| {
                                let members: Vec<String> = match definitions
                                    .get(&definition_of[n])
                                    .and_then(|d| d["properties"].as_object())
                                {
                                    Some(inner) => inner.keys().map(|k| normalize(k)).collect(),
                                    None => structs[n]
                                        .fields
                                        .iter()
                                        .map(|g| normalize(&g.name))
                                        .collect(),
                                };
                                let shared = members.iter().filter(|m| parent.contains(*m)).count();
                                shared * 2 > members.len()
                            })
                        });
                    let json = json.unwrap_or_else(|| lower_camel(&f.name));
                    let value = match f.map_value.as_deref().unwrap_or(&f.kind) {
                        "message" => format!(
                            "Message({})",
                            nested_index
                                .ok_or_else(|| format!("{}.{} has no type", s.name, f.name))?
                        ),
                        "string" => "String".to_owned(),
                        "bytes" => "Bytes".to_owned(),
                        "int32" => "Int32".to_owned(),
                        "int64" => "Int64".to_owned(),
                        "bool" => "Bool".to_owned(),
                        "double" => "Double".to_owned(),
                        other => {
                            return Err(format!(
                                "{}.{}: unsupported protobuf type {other}",
                                s.name, f.name
                            ));
                        }
                    };
                    let layout = if inline {
                        "Inline"
                    } else if f.map_value.is_some() {
                        "Map"
                    } else if f.repeated {
                        "Repeated"
                    } else {
                        "Single"
                    };
                    let scalar = f.kind != "message" && f.map_value.is_none() && !f.repeated;
                    let required = definitions
                        .get(definition.as_str())
                        .and_then(|d| d.get("required"))
                        .and_then(|r| r.as_array())
                        .is_some_and(|r| r.iter().any(|n| n.as_str() == Some(json.as_str())));
                    // Status types hold observed counts, never user choices: zero is omitted there.
                    let meaningful = MEANINGFUL_ZERO_FIELDS.contains(&json.as_str())
                        && !definition.ends_with("Status");
                    let omit_zero = scalar && !required && !meaningful;
                    fields.push((
                        f.tag,
                        format!(
                            "f({}, {:?}, ValueKind::{value}, Layout::{layout}, {omit_zero})",
                            f.tag, json
                        ),
                    ));
                }
                fields.sort_by_key(|(tag, _)| *tag);
            }
            rows.insert(i, (shape, fields.into_iter().map(|(_, f)| f).collect()));
        }
        let messages = order
            .iter()
            .map(|i| {
                let (shape, fields) = rows.remove(i).unwrap_or(("Object", Vec::new()));
                (definition_of[*i].clone(), shape, fields)
            })
            .collect();
        let kinds = kinds
            .into_iter()
            .filter_map(|(k, i)| table_index.get(&i).map(|t| (k, *t)))
            .collect();
        Ok(Table { messages, kinds })
    }

    fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "// @generated by crates/apiserver/build.rs from k8s-pb and the OpenAPI spec.\n",
        );
        let _ = writeln!(
            out,
            "pub(super) static MESSAGES: [MessageSchema; {}] = [",
            self.messages.len()
        );
        for (definition, shape, fields) in &self.messages {
            let _ = writeln!(
                out,
                "    MessageSchema {{ definition: {definition:?}, shape: Shape::{shape}, fields: &["
            );
            for field in fields {
                let _ = writeln!(out, "        {field},");
            }
            out.push_str("    ] },\n");
        }
        out.push_str("];\n");
        let _ = writeln!(
            out,
            "pub(super) static KINDS: [(&str, &str, u16); {}] = [",
            self.kinds.len()
        );
        for ((api_version, kind), index) in &self.kinds {
            let _ = writeln!(out, "    ({api_version:?}, {kind:?}, {index}),");
        }
        out.push_str("];\n");
        out
    }
}

fn shape_of(
    s: &PbStruct,
    definition: &str,
    definitions: &serde_json::Map<String, serde_json::Value>,
) -> Result<&'static str, String> {
    if let Some((_, shape)) = SPECIAL_SHAPES.iter().find(|(d, _)| *d == definition) {
        return Ok(shape);
    }
    // gogo wraps a named Go slice type used as a map value (`map[string]ExtraValue`) or a
    // field (`Verbs`) in a message with one repeated `items`; its JSON form is the bare array.
    // Such wrappers have no OpenAPI definition of their own.
    if !definitions.contains_key(definition)
        && s.fields.len() == 1
        && s.fields[0].name == "items"
        && s.fields[0].tag == 1
        && s.fields[0].repeated
        && s.fields[0].kind == "string"
    {
        return Ok("StringList");
    }
    Ok("Object")
}

fn check_special_tags(s: &PbStruct, shape: &str) -> Result<(), String> {
    let expected = SPECIAL_TAGS
        .iter()
        .find(|(name, _)| *name == shape)
        .map_or(&[][..], |(_, t)| t);
    for (tag, kind) in expected {
        let found = s.fields.iter().find(|f| f.tag == *tag);
        if found.is_none_or(|f| f.kind != *kind) {
            return Err(format!(
                "k8s-pb {} no longer has a {kind} field with tag {tag}; update src/protobuf/object.rs",
                s.name
            ));
        }
    }
    Ok(())
}
