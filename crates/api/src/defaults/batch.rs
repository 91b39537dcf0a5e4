//! batch/v1 defaults (`pkg/apis/batch/v1/defaults.go`) and the Job strategy's selector
//! generation (`pkg/registry/batch/job/strategy.go`).

use serde_json::{Map, Value};

use super::{
    child_object, default_field, default_string, each_object, existing_object, is_empty, pod,
};

/// Legacy and prefixed label names the Job strategy puts on its pod template.
const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
const LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";
const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
const LEGACY_JOB_NAME_LABEL: &str = "job-name";

/// `SetDefaults_Job`.
pub(super) fn default_job(job: &mut Map<String, Value>) {
    let template_labels = job
        .get("spec")
        .and_then(|spec| spec.get("template"))
        .and_then(|template| template.get("metadata"))
        .and_then(|metadata| metadata.get("labels"))
        .filter(|labels| labels.is_object())
        .cloned();
    let Some(spec) = child_object(job, "spec") else {
        return;
    };
    // A non-parallel job may leave both unset; then both are 1.
    let unset =
        |spec: &Map<String, Value>, key: &str| matches!(spec.get(key), None | Some(Value::Null));
    if unset(spec, "completions") && unset(spec, "parallelism") {
        spec.insert("completions".to_owned(), Value::from(1));
    }
    default_field(spec, "parallelism", 1);
    if unset(spec, "backoffLimit") {
        // With a per-index limit the global limit is effectively disabled (math.MaxInt32).
        let limit = if unset(spec, "backoffLimitPerIndex") {
            6
        } else {
            i64::from(i32::MAX)
        };
        spec.insert("backoffLimit".to_owned(), Value::from(limit));
    }
    default_field(spec, "completionMode", "NonIndexed");
    default_field(spec, "suspend", false);
    // The strategy dereferences manualSelector, so it is always materialised as false.
    default_field(spec, "manualSelector", false);
    if let Some(policy) = existing_object(spec, "podFailurePolicy") {
        each_object(policy, "rules", |rule| {
            each_object(rule, "onPodConditions", |pattern| {
                default_string(pattern, "status", "True")
            });
        });
    }
    if unset(spec, "podReplacementPolicy") {
        // Pods are replaced only once fully failed when a pod failure policy must see them.
        let policy = if unset(spec, "podFailurePolicy") {
            "TerminatingOrFailed"
        } else {
            "Failed"
        };
        spec.insert("podReplacementPolicy".to_owned(), Value::from(policy));
    }
    if let Some(template) = existing_object(spec, "template") {
        pod::default_pod_template(template);
    }
    if let Some(labels) = template_labels
        && let Some(metadata) = child_object(job, "metadata")
        && is_empty(metadata, "labels")
    {
        metadata.insert("labels".to_owned(), labels);
    }
}

/// `SetDefaults_CronJob`. The embedded job template gets only pod template defaults, as
/// upstream (SetDefaults_Job runs when the CronJob controller creates the Job).
pub(super) fn default_cron_job(cron_job: &mut Map<String, Value>) {
    let Some(spec) = child_object(cron_job, "spec") else {
        return;
    };
    default_string(spec, "concurrencyPolicy", "Allow");
    default_field(spec, "suspend", false);
    default_field(spec, "successfulJobsHistoryLimit", 3);
    default_field(spec, "failedJobsHistoryLimit", 1);
    if let Some(job_template) = existing_object(spec, "jobTemplate")
        && let Some(job_spec) = existing_object(job_template, "spec")
        && let Some(template) = existing_object(job_spec, "template")
    {
        pod::default_pod_template(template);
    }
}

/// The Job strategy's `generateSelector`: labels the pod template with the job name and uid
/// (legacy and `batch.kubernetes.io/` forms, user values kept so validation can reject a
/// conflict) and selects on the prefixed controller-uid label.
pub(super) fn generate_job_selector(job: &mut Map<String, Value>, uid: &str) {
    let name = job
        .get("metadata")
        .and_then(|metadata| metadata.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let Some(spec) = child_object(job, "spec") else {
        return;
    };
    if spec.get("manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let labels = child_object(spec, "template")
        .and_then(|template| child_object(template, "metadata"))
        .and_then(|metadata| child_object(metadata, "labels"));
    if let Some(labels) = labels {
        for key in [LEGACY_JOB_NAME_LABEL, JOB_NAME_LABEL] {
            labels
                .entry(key)
                .or_insert_with(|| Value::from(name.as_str()));
        }
        for key in [LEGACY_CONTROLLER_UID_LABEL, CONTROLLER_UID_LABEL] {
            labels.entry(key).or_insert_with(|| Value::from(uid));
        }
    }
    if let Some(match_labels) =
        child_object(spec, "selector").and_then(|selector| child_object(selector, "matchLabels"))
    {
        match_labels
            .entry(CONTROLLER_UID_LABEL)
            .or_insert_with(|| Value::from(uid));
    }
}

#[cfg(test)]
mod tests {
    use crate::defaults::{apply_defaults, prepare_for_create};
    use serde_json::json;

    /// What `kubectl create job pi --image=perl` posts.
    fn kubectl_create_job() -> serde_json::Value {
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "pi"},
            "spec": {"template": {"metadata": {},
                "spec": {"containers": [{"name": "pi", "image": "perl:5.34", "resources": {}}],
                    "restartPolicy": "Never"}}}})
    }

    #[test]
    fn job_matches_upstream_output() {
        let mut job = kubectl_create_job();
        apply_defaults("batch", "v1", "Job", &mut job);
        prepare_for_create("batch", "v1", "Job", &mut job, "0b1c");
        let spec = &job["spec"];
        assert_eq!(spec["completions"], 1);
        assert_eq!(spec["parallelism"], 1);
        assert_eq!(spec["backoffLimit"], 6);
        assert_eq!(spec["completionMode"], "NonIndexed");
        assert_eq!(spec["suspend"], false);
        assert_eq!(spec["manualSelector"], false);
        assert_eq!(spec["podReplacementPolicy"], "TerminatingOrFailed");
        assert_eq!(
            spec["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "0b1c"}})
        );
        assert_eq!(
            spec["template"]["metadata"]["labels"],
            json!({"job-name": "pi", "batch.kubernetes.io/job-name": "pi",
                "controller-uid": "0b1c", "batch.kubernetes.io/controller-uid": "0b1c"})
        );
        assert_eq!(spec["template"]["spec"]["restartPolicy"], "Never");
        assert_eq!(
            spec["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        // Job labels come from the template only when the template had labels at decode time.
        assert!(job["metadata"].get("labels").is_none());
    }

    #[test]
    fn job_special_cases() {
        let mut job = json!({"metadata": {"name": "j"}, "spec": {"parallelism": 3,
            "backoffLimitPerIndex": 1, "completionMode": "Indexed", "completions": null,
            "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]},
            "manualSelector": true, "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}}}});
        apply_defaults("batch", "v1", "Job", &mut job);
        prepare_for_create("batch", "v1", "Job", &mut job, "u");
        let spec = &job["spec"];
        assert!(spec["completions"].is_null());
        assert_eq!(spec["backoffLimit"], 2147483647);
        assert_eq!(spec["podReplacementPolicy"], "Failed");
        assert_eq!(
            spec["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["status"],
            "True"
        );
        assert_eq!(spec["selector"], json!({"matchLabels": {"a": "b"}}));
        assert_eq!(spec["template"]["metadata"]["labels"], json!({"a": "b"}));
        assert_eq!(job["metadata"]["labels"], json!({"a": "b"}));
    }

    #[test]
    fn cron_job_defaults() {
        let mut cron = json!({"spec": {"schedule": "*/1 * * * *", "jobTemplate": {"spec": {
            "template": {"spec": {"containers": [{"name": "a", "image": "busybox"}]}}}}}});
        apply_defaults("batch", "v1", "CronJob", &mut cron);
        let spec = &cron["spec"];
        assert_eq!(spec["concurrencyPolicy"], "Allow");
        assert_eq!(spec["suspend"], false);
        assert_eq!(spec["successfulJobsHistoryLimit"], 3);
        assert_eq!(spec["failedJobsHistoryLimit"], 1);
        assert!(spec["jobTemplate"]["spec"].get("backoffLimit").is_none());
        assert_eq!(
            spec["jobTemplate"]["spec"]["template"]["spec"]["dnsPolicy"],
            "ClusterFirst"
        );
    }
}
