//! The job file's JSON Schema, derived from the raw types serde reads, so it cannot drift from the parser.

use super::RawJobFile;

/// The job file's JSON Schema (draft 2020-12), for editors (taplo, Even Better TOML) and other tools.
pub fn json_schema() -> serde_json::Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(RawJobFile)).expect("a schema serializes");
    without_null(&mut schema);
    if let Some(object) = schema.as_object_mut() {
        object.insert(
            "$id".into(),
            "https://raw.githubusercontent.com/plateau-bench/plateau/main/docs/job-file.schema.json".into(),
        );
        object.insert("title".into(), "plateau job file".into());
        object.insert(
            "description".into(),
            "A plateau benchmark: the target, the endpoint configurations, the payload, the traffic pattern, when to \
             stop and what is required. See https://github.com/plateau-bench/plateau#job-files."
                .into(),
        );
    }
    schema
}

/// TOML has no null: an optional key is one that may be left out, never one that may be null, so the `null`
/// alternatives schemars gives `Option` fields come out.
pub(super) fn without_null(schema: &mut serde_json::Value) {
    use serde_json::Value;
    match schema {
        Value::Object(object) => {
            if let Some(Value::Array(types)) = object.get_mut("type") {
                types.retain(|kind| kind != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    object.insert("type".into(), only);
                }
            }
            if let Some(Value::Array(alternatives)) = object.get_mut("anyOf") {
                alternatives.retain(|alternative| alternative.get("type").is_none_or(|kind| kind != "null"));
                if alternatives.len() == 1 {
                    let only = alternatives.remove(0);
                    object.remove("anyOf");
                    if let Value::Object(fields) = only {
                        object.extend(fields);
                    }
                }
            }
            object.values_mut().for_each(without_null);
        }
        Value::Array(items) => items.iter_mut().for_each(without_null),
        _ => {}
    }
}
