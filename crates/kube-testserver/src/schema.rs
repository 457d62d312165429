//! Structural-schema pruning and defaulting of custom resources, as the API server does on every
//! write: fields the schema does not declare are dropped silently (a misspelt field vanishes, it is
//! not an error), `null` is dropped where the schema does not say `nullable`, and absent fields get
//! the schema's `default`.
//!
//! Simplified: no validation (types, patterns, CEL rules); an object schema with neither
//! `properties` nor `additionalProperties` keeps whatever it holds.

use serde_json::Value;

/// Prunes and defaults a whole custom resource against its `openAPIV3Schema`.
pub fn apply_schema(object: &mut Value, schema: &Value) {
    // apiVersion, kind and metadata are the server's business, not the schema's.
    let kept: Vec<(String, Value)> = ["apiVersion", "kind", "metadata"]
        .into_iter()
        .filter_map(|key| Some((key.to_string(), object.as_object_mut()?.remove(key)?)))
        .collect();
    prune_and_default(object, schema);
    if let Some(map) = object.as_object_mut() {
        map.extend(kept);
    }
}

fn prune_and_default(value: &mut Value, schema: &Value) {
    match value {
        Value::Object(map) => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                let preserve =
                    schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
                if !preserve {
                    map.retain(|key, _| properties.contains_key(key));
                }
                for (name, property) in properties {
                    let nullable = property.get("nullable") == Some(&Value::Bool(true));
                    if map.get(name).is_some_and(Value::is_null) && !nullable {
                        map.remove(name);
                    }
                    if !map.contains_key(name)
                        && let Some(default) = property.get("default")
                    {
                        map.insert(name.clone(), default.clone());
                    }
                    if let Some(child) = map.get_mut(name) {
                        prune_and_default(child, property);
                    }
                }
            } else if let Some(values) =
                schema.get("additionalProperties").filter(|s| s.is_object())
            {
                for child in map.values_mut() {
                    prune_and_default(child, values);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    prune_and_default(item, item_schema);
                }
            }
        }
        _ => {}
    }
}
