//! Network configuration: finding and parsing the network config list in the conf dir, and
//! writing Skiff's default one.
//!
//! Like libcni, files ending in `.conflist`, `.conf` and `.json` are considered in lexical order
//! and the first one is used; a single-plugin `.conf`/`.json` becomes a list of one. A broken
//! first file is an error rather than skipped, so a user's config never silently loses to
//! another.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::CniError;
use super::result::IpNet;

/// The file Skiff writes when the conf dir has no network config.
pub const DEFAULT_CONFLIST_NAME: &str = "10-skiff.conflist";
/// The network name in Skiff's default config (host-local keeps its leases under it).
pub const DEFAULT_NETWORK_NAME: &str = "skiff";
/// The bridge Skiff's default config creates on the node.
pub const DEFAULT_BRIDGE: &str = "cni0";
/// The CNI spec version Skiff's default config speaks: the newest that the plugins in apt's
/// containernetworking-plugins 1.1.1 support.
pub const DEFAULT_CNI_VERSION: &str = "1.0.0";

/// A parsed network config list.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    pub name: String,
    pub cni_version: String,
    /// `disableCheck`: CHECK is then a no-op, as the spec says.
    pub disable_check: bool,
    /// The plugin configs in chain order, as written (each has a `type`).
    pub plugins: Vec<Map<String, Value>>,
    /// The whole list as JSON (cached with ADD results, so DEL uses the config ADD used).
    pub raw: Value,
    /// The file it came from (empty when it came from the result cache).
    pub source: PathBuf,
}

impl NetworkConfigList {
    /// Parses a config list, or a single plugin config (which becomes a list of one).
    pub fn parse(bytes: &[u8], source: &Path) -> Result<Self, CniError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| CniError::ParseConfig {
            path: source.to_path_buf(),
            source: e,
        })?;
        Self::from_value(value, source)
    }

    pub(crate) fn from_value(value: Value, source: &Path) -> Result<Self, CniError> {
        let invalid = |reason: String| CniError::InvalidConfig {
            path: source.to_path_buf(),
            reason,
        };
        let Value::Object(obj) = &value else {
            return Err(invalid("not a JSON object".into()));
        };
        let name = match obj.get("name") {
            // The spec's character set; the name also becomes part of cache file names.
            Some(Value::String(s))
                if !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) =>
            {
                s.clone()
            }
            _ => {
                return Err(invalid(
                    "\"name\" is missing or not letters, digits, '_', '.' and '-'".into(),
                ));
            }
        };
        let cni_version = match obj.get("cniVersion") {
            Some(Value::String(s)) if parse_version(s).is_some() => s.clone(),
            Some(other) => {
                return Err(invalid(format!(
                    "\"cniVersion\" {other} is not a version like \"1.0.0\""
                )));
            }
            None => return Err(invalid("\"cniVersion\" is missing".into())),
        };
        let disable_check = match obj.get("disableCheck") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            // libcni accepts the string form too.
            Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
            Some(other) => return Err(invalid(format!("\"disableCheck\" {other} is not a bool"))),
        };
        let (plugins, raw) = match obj.get("plugins") {
            Some(Value::Array(list)) => {
                let mut plugins = Vec::with_capacity(list.len());
                for (i, p) in list.iter().enumerate() {
                    let Value::Object(p) = p else {
                        return Err(invalid(format!("plugins[{i}] is not an object")));
                    };
                    plugins.push(p.clone());
                }
                (plugins, value.clone())
            }
            Some(_) => return Err(invalid("\"plugins\" is not a list".into())),
            // A single plugin config: the list is just it.
            None => {
                let raw =
                    json!({"cniVersion": cni_version, "name": name, "plugins": [value.clone()]});
                (vec![obj.clone()], raw)
            }
        };
        if plugins.is_empty() {
            return Err(invalid("\"plugins\" is empty".into()));
        }
        for (i, p) in plugins.iter().enumerate() {
            match p.get("type") {
                Some(Value::String(t)) if valid_plugin_type(t) => {}
                _ => {
                    return Err(invalid(format!(
                        "plugins[{i}] has no valid \"type\" (a plugin binary name)"
                    )));
                }
            }
        }
        Ok(NetworkConfigList {
            name,
            cni_version,
            disable_check,
            plugins,
            raw,
            source: source.to_path_buf(),
        })
    }
}

/// A plugin type names a binary in the plugin dirs; no paths.
pub(crate) fn valid_plugin_type(t: &str) -> bool {
    !t.is_empty() && t != "." && t != ".." && !t.contains('/') && !t.contains('\0')
}

/// Parses `major.minor.patch` (patch optional, as in "0.3").
pub(crate) fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = match parts.next() {
        Some(p) => p.parse().ok()?,
        None => 0,
    };
    if parts.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}

/// The config files in `conf_dir`, in the order they are considered.
pub fn config_files(conf_dir: &Path) -> Result<Vec<PathBuf>, CniError> {
    let entries = match fs::read_dir(conf_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CniError::ReadConfig {
                path: conf_dir.to_path_buf(),
                source,
            });
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| CniError::ReadConfig {
            path: conf_dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let wanted = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "conflist" | "conf" | "json"));
        // Skip hidden files: editors' and our own temporaries.
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if wanted && !hidden && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Loads the first network config in `conf_dir`.
pub fn load_network(conf_dir: &Path) -> Result<NetworkConfigList, CniError> {
    let Some(path) = config_files(conf_dir)?.into_iter().next() else {
        return Err(CniError::NoNetworkConfig {
            conf_dir: conf_dir.to_path_buf(),
        });
    };
    let bytes = fs::read(&path).map_err(|source| CniError::ReadConfig {
        path: path.clone(),
        source,
    })?;
    NetworkConfigList::parse(&bytes, &path)
}

/// Skiff's default network: a `cni0` bridge that is the pods' gateway and masquerades their
/// traffic leaving the pod network, host-local addresses from the node's pod CIDR (leases under
/// `<data_dir>/cni/networks/skiff`), portmap for hostPort, and loopback.
pub fn default_conflist(pod_cidr: &str, data_dir: &Path) -> Result<Value, CniError> {
    let net: IpNet = pod_cidr.parse().map_err(|e| CniError::InvalidPodCidr {
        cidr: pod_cidr.to_string(),
        reason: format!("{e}"),
    })?;
    if net.network() != net.addr {
        return Err(CniError::InvalidPodCidr {
            cidr: pod_cidr.to_string(),
            reason: format!(
                "has host bits set (the network is {}/{})",
                net.network(),
                net.prefix_len
            ),
        });
    }
    // host-local needs room for the gateway (.1) and at least one pod.
    let max = if net.addr.is_ipv4() { 30 } else { 126 };
    if net.prefix_len > max {
        return Err(CniError::InvalidPodCidr {
            cidr: pod_cidr.to_string(),
            reason: format!("is too small for a gateway and pods (at most /{max})"),
        });
    }
    let default_route = if net.addr.is_ipv4() {
        "0.0.0.0/0"
    } else {
        "::/0"
    };
    Ok(json!({
        "cniVersion": DEFAULT_CNI_VERSION,
        "name": DEFAULT_NETWORK_NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": DEFAULT_BRIDGE,
                "isGateway": true,
                "ipMasq": true,
                // Lets a pod reach itself through a Service VIP that picks it.
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": net.to_string()}]],
                    "routes": [{"dst": default_route}],
                    "dataDir": data_dir.join("cni").join("networks"),
                }
            },
            {
                "type": "portmap",
                "capabilities": {"portMappings": true},
                "snat": true
            },
            {"type": "loopback"}
        ]
    }))
}

/// Writes Skiff's default network config as `<conf_dir>/10-skiff.conflist` (replacing it
/// atomically) and returns its path.
pub fn write_default_conflist(
    conf_dir: &Path,
    pod_cidr: &str,
    data_dir: &Path,
) -> Result<PathBuf, CniError> {
    let conf = default_conflist(pod_cidr, data_dir)?;
    let path = conf_dir.join(DEFAULT_CONFLIST_NAME);
    let write_err = |source| CniError::WriteConfig {
        path: path.clone(),
        source,
    };
    fs::create_dir_all(conf_dir).map_err(write_err)?;
    let bytes = serde_json::to_vec_pretty(&conf).map_err(|e| write_err(io::Error::other(e)))?;
    // A hidden temporary: config_files() ignores it, so no reader sees half a file.
    let tmp = conf_dir.join(format!(".{DEFAULT_CONFLIST_NAME}.tmp"));
    let mut f = fs::File::create(&tmp).map_err(write_err)?;
    f.write_all(&bytes)
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| f.sync_all())
        .map_err(write_err)?;
    fs::rename(&tmp, &path).map_err(write_err)?;
    Ok(path)
}

/// Writes Skiff's default config unless the conf dir already has a network config (so users
/// can swap in another CNI). Returns the path written, if any.
pub fn ensure_default_conflist(
    conf_dir: &Path,
    pod_cidr: &str,
    data_dir: &Path,
) -> Result<Option<PathBuf>, CniError> {
    if config_files(conf_dir)?.is_empty() {
        write_default_conflist(conf_dir, pod_cidr, data_dir).map(Some)
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_conflist_has_the_chain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = Path::new("/var/lib/skiff");
        let path = write_default_conflist(dir.path(), "10.42.3.0/24", data).expect("write");
        assert_eq!(path, dir.path().join("10-skiff.conflist"));
        let list = load_network(dir.path()).expect("load");
        assert_eq!(list.name, "skiff");
        assert_eq!(list.cni_version, "1.0.0");
        let types: Vec<&str> = list
            .plugins
            .iter()
            .filter_map(|p| p["type"].as_str())
            .collect();
        assert_eq!(types, ["bridge", "portmap", "loopback"]);
        let bridge = &list.plugins[0];
        assert_eq!(bridge["bridge"], "cni0");
        assert_eq!(bridge["isGateway"], true);
        assert_eq!(bridge["ipMasq"], true);
        assert_eq!(bridge["hairpinMode"], true);
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.42.3.0/24");
        assert_eq!(bridge["ipam"]["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(bridge["ipam"]["dataDir"], "/var/lib/skiff/cni/networks");
        assert_eq!(list.plugins[1]["capabilities"]["portMappings"], true);
        assert_eq!(list.plugins[1]["snat"], true);
        // No temporary left behind.
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 1);
    }

    #[test]
    fn bad_pod_cidrs_are_refused() {
        let d = Path::new("/d");
        for bad in ["10.42.0.0", "10.42.0.1/24", "10.42.0.0/31", "banana/8"] {
            assert!(
                matches!(
                    default_conflist(bad, d),
                    Err(CniError::InvalidPodCidr { .. })
                ),
                "{bad}"
            );
        }
        let v6 = default_conflist("fd00:42::/64", d).expect("v6");
        assert_eq!(v6["plugins"][0]["ipam"]["routes"][0]["dst"], "::/0");
    }

    #[test]
    fn the_first_file_in_lexical_order_wins_and_users_keep_theirs() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            load_network(dir.path()),
            Err(CniError::NoNetworkConfig { .. })
        ));
        fs::write(
            dir.path().join("05-user.conf"),
            r#"{"cniVersion":"0.4.0","name":"user","type":"ptp","ipam":{"type":"host-local"}}"#,
        )
        .expect("write");
        fs::write(dir.path().join("00-notes.txt"), "ignored").expect("write");
        fs::write(dir.path().join(".01-hidden.conflist"), "{").expect("write");
        let written =
            ensure_default_conflist(dir.path(), "10.42.0.0/24", Path::new("/d")).expect("ensure");
        assert_eq!(written, None, "a user's config is kept");
        let list = load_network(dir.path()).expect("load");
        assert_eq!(list.name, "user");
        assert_eq!(list.plugins.len(), 1);
        assert_eq!(list.raw["plugins"][0]["type"], "ptp");
        // A broken first file is an error naming it, not skipped.
        fs::write(dir.path().join("01-broken.conflist"), "{").expect("write");
        match load_network(dir.path()) {
            Err(CniError::ParseConfig { path, .. }) => {
                assert!(path.ends_with("01-broken.conflist"))
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn invalid_lists_name_the_problem() {
        let p = Path::new("x.conflist");
        for (raw, needle) in [
            (r#"[]"#, "not a JSON object"),
            (
                r#"{"cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}"#,
                "name",
            ),
            (
                r#"{"name":"n","plugins":[{"type":"bridge"}]}"#,
                "cniVersion",
            ),
            (
                r#"{"name":"n","cniVersion":"one","plugins":[{"type":"a"}]}"#,
                "cniVersion",
            ),
            (r#"{"name":"n","cniVersion":"1.0.0","plugins":[]}"#, "empty"),
            (
                r#"{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"../x"}]}"#,
                "type",
            ),
            (
                r#"{"name":"n","cniVersion":"1.0.0","plugins":[3]}"#,
                "plugins[0]",
            ),
            (
                r#"{"name":"a/b","cniVersion":"1.0.0","plugins":[{"type":"a"}]}"#,
                "name",
            ),
        ] {
            let err = NetworkConfigList::parse(raw.as_bytes(), p).expect_err(raw);
            assert!(err.to_string().contains(needle), "{raw}: {err}");
        }
        let ok =
            r#"{"name":"n","cniVersion":"1.0.0","disableCheck":true,"plugins":[{"type":"a"}]}"#;
        assert!(
            NetworkConfigList::parse(ok.as_bytes(), p)
                .expect("ok")
                .disable_check
        );
    }

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("1.0.0"), Some((1, 0, 0)));
        assert_eq!(parse_version("0.3"), Some((0, 3, 0)));
        assert_eq!(parse_version("1.0.0.0"), None);
        assert_eq!(parse_version("v1"), None);
    }
}
