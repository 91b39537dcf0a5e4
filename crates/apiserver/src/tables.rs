//! `meta.k8s.io/v1 Table` answers for `kubectl get` (server-side printing).
//!
//! Columns and cells come from `api::printers`; each row carries a `PartialObjectMetadata`
//! (or the full object with `includeObject=Object`) so kubectl can show NAMESPACE for `-A` and
//! labels for `--show-labels`.

use api::catalogue::Resource;
use serde_json::{Value, json};

use crate::object;

pub fn table(res: &Resource, items: &[Value], metadata: Value, include_object: Option<&str>) -> Value {
    let now = jiff::Timestamp::now();
    let columns = api::printers::column_definitions(res.group, res.kind);
    let rows: Vec<Value> = items
        .iter()
        .map(|obj| {
            let cells = api::printers::row_cells(res.group, res.kind, obj, now);
            let row_object = match include_object {
                Some("None") => Value::Null,
                Some("Object") => obj.clone(),
                _ => object::partial_object_metadata(obj),
            };
            json!({"cells": cells, "object": row_object})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}
