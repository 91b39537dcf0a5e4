//! batch/v1 Jobs and CronJobs (pkg/apis/batch/validation).

use serde_json::Value;

use super::meta::{selector_matches, validate_label_selector};
use super::pod::validate_pod_template_spec;
use super::{FieldError, at, immutable, int_at, non_negative, str_at};

const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

pub(super) fn validate_job(job: &Value, errs: &mut Vec<FieldError>) {
    validate_generated_selector(job, errs);
    let spec = at(job, &["spec"]).cloned().unwrap_or(Value::Null);
    validate_job_spec(&spec, "spec", errs);
}

/// `ValidateJobSpec`, shared with CronJob's `spec.jobTemplate.spec`.
fn validate_job_spec(spec: &Value, field: &str, errs: &mut Vec<FieldError>) {
    for key in [
        "parallelism",
        "completions",
        "backoffLimit",
        "ttlSecondsAfterFinished",
        "backoffLimitPerIndex",
        "maxFailedIndexes",
    ] {
        non_negative(spec, &[key], &format!("{field}.{key}"), errs);
    }
    if let Some(deadline) = int_at(spec, &["activeDeadlineSeconds"]).filter(|d| *d <= 0) {
        errs.push(FieldError::invalid(
            format!("{field}.activeDeadlineSeconds"),
            deadline,
            "must be greater than or equal to 1",
        ));
    }
    let mode = str_at(spec, &["completionMode"]);
    if !mode.is_empty() && !["NonIndexed", "Indexed"].contains(&mode) {
        errs.push(FieldError::not_supported(
            format!("{field}.completionMode"),
            mode,
            &["NonIndexed", "Indexed"],
        ));
    }
    if mode == "Indexed" && at(spec, &["completions"]).is_none() {
        errs.push(FieldError::required(
            format!("{field}.completions"),
            "when completion mode is Indexed",
        ));
    }
    let replacement = str_at(spec, &["podReplacementPolicy"]);
    if !replacement.is_empty() && !["Failed", "TerminatingOrFailed"].contains(&replacement) {
        errs.push(FieldError::not_supported(
            format!("{field}.podReplacementPolicy"),
            replacement,
            &["Failed", "TerminatingOrFailed"],
        ));
    }
    if let Some(selector) = at(spec, &["selector"]) {
        validate_label_selector(selector, &format!("{field}.selector"), errs);
    }
    let Some(template) = at(spec, &["template"]) else {
        errs.push(FieldError::required(format!("{field}.template"), ""));
        return;
    };
    if let Some(selector) = at(spec, &["selector"]) {
        let labels = at(template, &["metadata", "labels"]);
        if !selector_matches(selector, labels) {
            errs.push(FieldError::invalid(
                format!("{field}.template.metadata.labels"),
                labels.cloned().unwrap_or(Value::Null),
                "`selector` does not match template `labels`",
            ));
        }
    }
    validate_pod_template_spec(template, &format!("{field}.template"), errs);
    // Always is what pod defaulting fills in, so an unset policy reads as Always here.
    match str_at(template, &["spec", "restartPolicy"]) {
        "" | "Always" => errs.push(FieldError::required(
            format!("{field}.template.spec.restartPolicy"),
            "valid values: \"OnFailure\", \"Never\"",
        )),
        "OnFailure" | "Never" => {}
        other => errs.push(FieldError::not_supported(
            format!("{field}.template.spec.restartPolicy"),
            other,
            &["OnFailure", "Never"],
        )),
    }
}

/// `ValidateGeneratedSelector`: without manualSelector the selector and template labels must be
/// exactly what the strategy generated from the uid.
fn validate_generated_selector(job: &Value, errs: &mut Vec<FieldError>) {
    if at(job, &["spec", "manualSelector"]).and_then(Value::as_bool) == Some(true) {
        return;
    }
    let uid = str_at(job, &["metadata", "uid"]);
    if uid.is_empty() {
        errs.push(FieldError::required("metadata.uid", ""));
        return;
    }
    let name = str_at(job, &["metadata", "name"]);
    let labels = at(job, &["spec", "template", "metadata", "labels"]);
    for (key, expected) in [
        ("controller-uid", uid),
        ("job-name", name),
        (CONTROLLER_UID_LABEL, uid),
        (JOB_NAME_LABEL, name),
    ] {
        let field = format!("spec.template.metadata.labels[{key}]");
        match labels.and_then(|l| l.get(key)).and_then(Value::as_str) {
            None => errs.push(FieldError::required(field, expected)),
            Some(actual) if actual != expected => errs.push(FieldError::invalid(
                field,
                labels.cloned().unwrap_or(Value::Null),
                format!("must be '{expected}'"),
            )),
            Some(_) => {}
        }
    }
    match at(job, &["spec", "selector"]) {
        None => errs.push(FieldError::required("spec.selector", "")),
        Some(selector) => {
            let expected = serde_json::json!({ CONTROLLER_UID_LABEL: uid });
            if !selector_matches(selector, Some(&expected)) {
                errs.push(FieldError::invalid(
                    "spec.selector",
                    selector.clone(),
                    "`selector` not auto-generated",
                ));
            }
        }
    }
}

/// `ValidateJobSpecUpdate`: selector, template (unless a suspended job that never started
/// changes its scheduling directives), completion mode and pod failure policy are fixed.
pub(super) fn validate_job_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    immutable(new, old, &["spec", "selector"], "spec.selector", errs);
    immutable(
        new,
        old,
        &["spec", "completionMode"],
        "spec.completionMode",
        errs,
    );
    immutable(
        new,
        old,
        &["spec", "podFailurePolicy"],
        "spec.podFailurePolicy",
        errs,
    );
    immutable(
        new,
        old,
        &["spec", "backoffLimitPerIndex"],
        "spec.backoffLimitPerIndex",
        errs,
    );
    // Elastic Indexed Jobs may scale completions together with parallelism.
    let elastic = str_at(new, &["spec", "completionMode"]) == "Indexed"
        && at(new, &["spec", "completions"]) == at(new, &["spec", "parallelism"]);
    if !elastic {
        immutable(new, old, &["spec", "completions"], "spec.completions", errs);
    }
    let suspended = at(old, &["spec", "suspend"]).and_then(Value::as_bool) == Some(true);
    let not_started = at(old, &["status", "startTime"]).is_none();
    let strip = |v: &Value| {
        let mut template = at(v, &["spec", "template"]).cloned().unwrap_or(Value::Null);
        if suspended && not_started {
            if let Some(spec) = template.get_mut("spec").and_then(Value::as_object_mut) {
                for key in ["nodeSelector", "affinity", "tolerations", "schedulingGates"] {
                    spec.remove(key);
                }
            }
            if let Some(metadata) = template.get_mut("metadata").and_then(Value::as_object_mut) {
                metadata.remove("labels");
                metadata.remove("annotations");
            }
        }
        template
    };
    if strip(new) != strip(old) {
        errs.push(FieldError::invalid(
            "spec.template",
            at(new, &["spec", "template"])
                .cloned()
                .unwrap_or(Value::Null),
            "field is immutable",
        ));
    }
}

pub(super) fn validate_cron_job(cron_job: &Value, errs: &mut Vec<FieldError>) {
    let schedule = str_at(cron_job, &["spec", "schedule"]);
    if schedule.is_empty() {
        errs.push(FieldError::required("spec.schedule", ""));
    } else if let Err(detail) = parse_schedule(schedule) {
        errs.push(FieldError::invalid("spec.schedule", schedule, detail));
    }
    let time_zone = str_at(cron_job, &["spec", "timeZone"]);
    if !time_zone.is_empty()
        && (time_zone.contains(' ') || time_zone.starts_with('/') || time_zone.contains(".."))
    {
        errs.push(FieldError::invalid(
            "spec.timeZone",
            time_zone,
            "unknown time zone",
        ));
    }
    let policy = str_at(cron_job, &["spec", "concurrencyPolicy"]);
    if policy.is_empty() {
        errs.push(FieldError::required("spec.concurrencyPolicy", ""));
    } else if !["Allow", "Forbid", "Replace"].contains(&policy) {
        errs.push(FieldError::not_supported(
            "spec.concurrencyPolicy",
            policy,
            &["Allow", "Forbid", "Replace"],
        ));
    }
    for key in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        non_negative(cron_job, &["spec", key], &format!("spec.{key}"), errs);
    }
    match at(cron_job, &["spec", "jobTemplate", "spec"]) {
        Some(job_spec) => {
            validate_job_spec(job_spec, "spec.jobTemplate.spec", errs);
            if at(job_spec, &["manualSelector"]).and_then(Value::as_bool) == Some(true) {
                errs.push(FieldError::not_supported(
                    "spec.jobTemplate.spec.manualSelector",
                    true,
                    &["nil", "false"],
                ));
            }
        }
        None => errs.push(FieldError::required("spec.jobTemplate.spec.template", "")),
    }
}

/// A standard cron schedule as robfig/cron's `ParseStandard` accepts it: five fields or a
/// `@descriptor`. Time zones belong in `spec.timeZone`.
fn parse_schedule(schedule: &str) -> Result<(), String> {
    if schedule.contains("TZ") {
        return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".to_owned());
    }
    if let Some(descriptor) = schedule.strip_prefix('@') {
        return match descriptor {
            "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly" => {
                Ok(())
            }
            d if d.starts_with("every ") => Ok(()),
            _ => Err(format!("unrecognized descriptor: {schedule}")),
        };
    }
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        ));
    }
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    let bounds: [(u32, u32, &[&str], u32); 5] = [
        (0, 59, &[], 0),
        (0, 23, &[], 0),
        (1, 31, &[], 0),
        (1, 12, &MONTHS, 1),
        (0, 6, &DAYS, 0),
    ];
    for (field, (min, max, names, name_base)) in fields.iter().zip(bounds) {
        for part in field.split(',') {
            parse_range(part, min, max, names, name_base)?;
        }
    }
    Ok(())
}

fn parse_range(
    expr: &str,
    min: u32,
    max: u32,
    names: &[&str],
    name_base: u32,
) -> Result<(), String> {
    let (range, step) = match expr.split_once('/') {
        Some((range, step)) => (range, Some(step)),
        None => (expr, None),
    };
    let value = |s: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(i as u32 + name_base);
        }
        s.parse::<u32>().map_err(|_| {
            format!("failed to parse int from {s}: strconv.Atoi: parsing {s:?}: invalid syntax")
        })
    };
    let (start, end) = if range == "*" || range == "?" {
        (min, max)
    } else if let Some((a, b)) = range.split_once('-') {
        (value(a)?, value(b)?)
    } else {
        let v = value(range)?;
        (v, if step.is_some() { max } else { v })
    };
    if start < min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({min}): {expr}"
        ));
    }
    if end > max {
        return Err(format!(
            "end of range ({end}) above maximum ({max}): {expr}"
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    if let Some(step) = step {
        let step = value(step)?;
        if step == 0 {
            return Err(format!("step of range should be a positive number: {expr}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_schedule;
    use crate::validation::{FieldError, validate_create, validate_update};
    use serde_json::{Value, json};

    fn messages(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(FieldError::message).collect()
    }

    fn created_job(restart: Option<&str>) -> Value {
        let mut spec = json!({"containers": [{"name": "pi", "image": "perl"}]});
        if let Some(r) = restart {
            spec["restartPolicy"] = json!(r);
        }
        let mut job = json!({"metadata": {"name": "pi", "namespace": "d", "uid": "u1"},
            "spec": {"template": {"spec": spec}}});
        crate::defaults::apply_defaults("batch", "v1", "Job", &mut job);
        crate::defaults::prepare_for_create("batch", "v1", "Job", &mut job, "u1");
        job
    }

    #[test]
    fn job_rules() {
        let job = created_job(Some("Never"));
        assert!(
            validate_create("batch", "v1", "Job", &job).is_empty(),
            "{:?}",
            messages(&validate_create("batch", "v1", "Job", &job))
        );
        assert_eq!(
            messages(&validate_create("batch", "v1", "Job", &created_job(None))),
            vec![
                "spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\""
            ]
        );
        let mut tampered = job.clone();
        tampered["spec"]["selector"] =
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "other"}});
        let m = messages(&validate_create("batch", "v1", "Job", &tampered));
        assert!(m.contains(&"spec.selector: Invalid value: {\"matchLabels\":{\"batch.kubernetes.io/controller-uid\":\"other\"}}: `selector` not auto-generated".to_owned()), "{m:?}");
        let mut new = job.clone();
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("perl:2");
        let m = messages(&validate_update("batch", "v1", "Job", &new, &job));
        assert_eq!(m.len(), 1);
        assert!(m[0].starts_with("spec.template: Invalid value: {"), "{m:?}");
        assert!(m[0].ends_with(": field is immutable"));
    }

    #[test]
    fn cron_job_rules() {
        for ok in [
            "*/5 * * * *",
            "0 0 1 jan,jul mon-fri",
            "@hourly",
            "@every 5m",
            "0 9-17/2 * * 1",
        ] {
            assert_eq!(parse_schedule(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            parse_schedule("* * *"),
            Err("expected exactly 5 fields, found 3: [* * *]".to_owned())
        );
        assert!(
            parse_schedule("61 * * * *")
                .is_err_and(|e| e.starts_with("end of range (61) above maximum (59)"))
        );
        assert!(parse_schedule("TZ=UTC 0 * * * *").is_err());
        let mut cron = json!({"metadata": {"name": "c", "namespace": "d"}, "spec": {"schedule": "bad",
            "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "a"}], "restartPolicy": "OnFailure"}}}}}});
        crate::defaults::apply_defaults("batch", "v1", "CronJob", &mut cron);
        assert_eq!(
            messages(&validate_create("batch", "v1", "CronJob", &cron)),
            vec![
                "spec.schedule: Invalid value: \"bad\": expected exactly 5 fields, found 1: [bad]"
            ]
        );
        cron["spec"]["schedule"] = json!("0 * * * *");
        cron["metadata"]["name"] = json!("c".repeat(53));
        assert_eq!(
            messages(&validate_create("batch", "v1", "CronJob", &cron)),
            vec![format!(
                "metadata.name: Invalid value: \"{}\": must be no more than 52 characters",
                "c".repeat(53)
            )]
        );
    }
}
