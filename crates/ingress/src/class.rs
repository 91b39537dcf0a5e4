//! Which Ingresses are Skiff's: the IngressClass binding (networking.k8s.io/v1) and the default
//! class `skiff` this controller makes sure exists.
//!
//! An Ingress is served when, in this order (the order ingress-nginx and Traefik apply):
//! 1. its deprecated `kubernetes.io/ingress.class` annotation is set: it names one of our classes;
//! 2. its `spec.ingressClassName` is set: it names one of our classes;
//! 3. neither is set: the default IngressClass (annotation
//!    `ingressclass.kubernetes.io/is-default-class: "true"`) is ours, or no class is the default.
//!
//! "Our classes" are the configured class name plus every IngressClass whose `spec.controller` is
//! [`CONTROLLER`], so a user may add a second class name for the same controller.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::networking::v1::{Ingress, IngressClass, IngressClassSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;

/// `spec.controller` of Skiff's IngressClass (a domain-prefixed path, as the API requires).
pub const CONTROLLER: &str = "skiff.io/ingress";

/// The deprecated per-Ingress class annotation; controllers must still honour it.
pub const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// Marks the IngressClass that Ingresses without a class get (the admission plugin fills
/// `ingressClassName` from it on create; Ingresses older than that rely on the controller).
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// Why the default IngressClass could not be ensured. Retryable: the API server may be starting.
#[derive(Debug, thiserror::Error)]
pub enum ClassError {
    #[error("ingress: reading IngressClass {name}: {source}")]
    Get {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("ingress: creating the default IngressClass {name}: {source}")]
    Create {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// The served-or-not decision for one snapshot of IngressClasses.
#[derive(Debug, Clone)]
pub(crate) struct ClassSelector {
    ours: HashSet<String>,
    serves_unclassed: bool,
}

impl ClassSelector {
    pub(crate) fn new(configured: &str, classes: &[std::sync::Arc<IngressClass>]) -> Self {
        let mut ours: HashSet<String> = HashSet::from([configured.to_string()]);
        for class in classes {
            let controller = class.spec.as_ref().and_then(|s| s.controller.as_deref());
            if controller == Some(CONTROLLER)
                && let Some(name) = &class.metadata.name
            {
                ours.insert(name.clone());
            }
        }
        let defaults: Vec<&str> = classes
            .iter()
            .filter(|c| is_default_class(&c.metadata))
            .filter_map(|c| c.metadata.name.as_deref())
            .collect();
        let serves_unclassed = defaults.is_empty() || defaults.iter().any(|d| ours.contains(*d));
        ClassSelector {
            ours,
            serves_unclassed,
        }
    }

    pub(crate) fn serves(&self, ingress: &Ingress) -> bool {
        if let Some(class) = ingress
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CLASS_ANNOTATION))
        {
            return self.ours.contains(class.as_str());
        }
        match ingress
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref())
        {
            Some(class) => self.ours.contains(class),
            None => self.serves_unclassed,
        }
    }
}

fn is_default_class(meta: &ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
        .is_some_and(|v| v == "true")
}

/// The IngressClass this controller creates when none named `name` exists.
pub(crate) fn default_class(name: &str) -> IngressClass {
    IngressClass {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            annotations: Some(BTreeMap::from([(
                DEFAULT_CLASS_ANNOTATION.to_string(),
                "true".to_string(),
            )])),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "skiff".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(IngressClassSpec {
            controller: Some(CONTROLLER.to_string()),
            parameters: None,
        }),
    }
}

/// Creates the IngressClass `name` if it does not exist. An existing one is left alone: the
/// user may have removed the default annotation on purpose (k3s does the same with its
/// packaged Traefik class).
pub(crate) async fn ensure_default_class(
    client: &kube::Client,
    name: &str,
) -> Result<(), ClassError> {
    let api: kube::Api<IngressClass> = kube::Api::all(client.clone());
    let existing = api.get_opt(name).await.map_err(|source| ClassError::Get {
        name: name.to_string(),
        source,
    })?;
    if existing.is_some() {
        return Ok(());
    }
    match api
        .create(&PostParams::default(), &default_class(name))
        .await
    {
        Ok(_) => {
            tracing::info!(class = name, "created the default IngressClass");
            Ok(())
        }
        // Another replica (or the user) created it meanwhile: fine.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(source) => Err(ClassError::Create {
            name: name.to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::networking::v1::IngressSpec;

    use super::*;

    fn class(name: &str, controller: &str, default: bool) -> Arc<IngressClass> {
        let mut c = default_class(name);
        c.spec = Some(IngressClassSpec {
            controller: Some(controller.to_string()),
            parameters: None,
        });
        if !default {
            c.metadata.annotations = None;
        }
        Arc::new(c)
    }

    fn ingress(class_name: Option<&str>, annotation: Option<&str>) -> Ingress {
        Ingress {
            metadata: ObjectMeta {
                name: Some("web".into()),
                annotations: annotation
                    .map(|a| BTreeMap::from([(CLASS_ANNOTATION.to_string(), a.to_string())])),
                ..ObjectMeta::default()
            },
            spec: Some(IngressSpec {
                ingress_class_name: class_name.map(str::to_string),
                ..IngressSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn configured_class_and_classes_of_our_controller_are_served() {
        let classes = [
            class("skiff", CONTROLLER, true),
            class("internal", CONTROLLER, false),
            class("nginx", "k8s.io/ingress-nginx", false),
        ];
        let sel = ClassSelector::new("skiff", &classes);
        assert!(sel.serves(&ingress(Some("skiff"), None)));
        assert!(sel.serves(&ingress(Some("internal"), None)));
        assert!(!sel.serves(&ingress(Some("nginx"), None)));
        assert!(!sel.serves(&ingress(Some("missing"), None)));
        assert!(sel.serves(&ingress(None, None)));
    }

    #[test]
    fn the_deprecated_annotation_wins_over_the_field() {
        let sel = ClassSelector::new("skiff", &[class("skiff", CONTROLLER, true)]);
        assert!(!sel.serves(&ingress(Some("skiff"), Some("nginx"))));
        assert!(sel.serves(&ingress(Some("nginx"), Some("skiff"))));
    }

    #[test]
    fn unclassed_ingresses_follow_the_default_class() {
        let other_default = [
            class("skiff", CONTROLLER, false),
            class("nginx", "k8s.io/ingress-nginx", true),
        ];
        assert!(!ClassSelector::new("skiff", &other_default).serves(&ingress(None, None)));
        // Before any class is observed (or when none is default) Skiff serves them.
        assert!(ClassSelector::new("skiff", &[]).serves(&ingress(None, None)));
    }
}
