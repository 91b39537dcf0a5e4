//! Registry credentials from a pod's `imagePullSecrets`: `kubernetes.io/dockerconfigjson`
//! (`{"auths": {registry: entry}}`) and the legacy `kubernetes.io/dockercfg` (`{registry:
//! entry}`), matched to an image's registry as the kubelet's credential keyring does
//! (`pkg/credentialprovider`): scheme and path ignored, Docker Hub's many names equal. Pure.

use std::collections::BTreeMap;

use base64::Engine;
use runtime::image::pull::Credentials;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
struct Entry {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

/// A registry key's host (`https://index.docker.io/v1/` → `docker.io`).
fn registry_host(key: &str) -> String {
    let key = key.trim();
    let without_scheme = key.split_once("://").map_or(key, |(_, rest)| rest);
    let host = without_scheme
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => host,
    }
}

fn credentials(entry: &Entry) -> Option<Credentials> {
    if let (Some(username), Some(password)) = (&entry.username, &entry.password)
        && !username.is_empty()
    {
        return Some(Credentials::Basic {
            username: username.clone(),
            password: password.clone(),
        });
    }
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (username, password) = text.split_once(':')?;
        return Some(Credentials::Basic {
            username: username.to_string(),
            password: password.to_string(),
        });
    }
    entry
        .identitytoken
        .clone()
        .or_else(|| entry.registrytoken.clone())
        .filter(|t| !t.is_empty())
        .map(Credentials::Bearer)
}

/// One pull secret's entries: its type and its data (`.dockerconfigjson` or `.dockercfg`).
pub fn entries_from_secret(
    type_: Option<&str>,
    data: &BTreeMap<String, Vec<u8>>,
) -> Vec<(String, Credentials)> {
    let auths: BTreeMap<String, Entry> = match type_ {
        Some("kubernetes.io/dockercfg") => data
            .get(".dockercfg")
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default(),
        _ => data
            .get(".dockerconfigjson")
            .and_then(|b| serde_json::from_slice::<DockerConfigJson>(b).ok())
            .map(|c| c.auths)
            .unwrap_or_default(),
    };
    auths
        .iter()
        .filter_map(|(key, entry)| Some((registry_host(key), credentials(entry)?)))
        .collect()
}

/// The first entry for `registry` (the image reference's registry host), else anonymous.
pub fn for_registry(entries: &[(String, Credentials)], registry: &str) -> Credentials {
    let wanted = registry_host(registry);
    entries
        .iter()
        .find(|(host, _)| *host == wanted)
        .map(|(_, c)| c.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_entries_match_the_registry() {
        let auth = base64::engine::general_purpose::STANDARD.encode("bob:pw");
        let json = format!(
            r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{auth}"}},
                           "127.0.0.1:5000": {{"username": "u", "password": "p"}},
                           "http://quay.io/v2/": {{"identitytoken": "tok"}},
                           "broken.io": {{"auth": "!!"}}}}}}"#
        );
        let data = BTreeMap::from([(".dockerconfigjson".to_string(), json.into_bytes())]);
        let entries = entries_from_secret(Some("kubernetes.io/dockerconfigjson"), &data);
        assert_eq!(entries.len(), 3, "{entries:?}");
        assert_eq!(
            for_registry(&entries, "docker.io"),
            Credentials::Basic {
                username: "bob".into(),
                password: "pw".into()
            }
        );
        assert_eq!(
            for_registry(&entries, "127.0.0.1:5000"),
            Credentials::Basic {
                username: "u".into(),
                password: "p".into()
            }
        );
        assert_eq!(
            for_registry(&entries, "quay.io"),
            Credentials::Bearer("tok".into())
        );
        assert_eq!(for_registry(&entries, "ghcr.io"), Credentials::Anonymous);

        let legacy = BTreeMap::from([(
            ".dockercfg".to_string(),
            br#"{"reg.example": {"username": "a", "password": "b"}}"#.to_vec(),
        )]);
        let entries = entries_from_secret(Some("kubernetes.io/dockercfg"), &legacy);
        assert_eq!(
            for_registry(&entries, "reg.example"),
            Credentials::Basic {
                username: "a".into(),
                password: "b".into()
            }
        );
        assert!(entries_from_secret(Some("Opaque"), &BTreeMap::new()).is_empty());
    }
}
