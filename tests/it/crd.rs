//! The CRD in crds/ is exactly what `tierguard crd` prints, and it carries what kubectl and the API
//! server need: descriptions, validation rules, printer columns and the status subresource.

use serde_json::Value;

fn crd_json() -> Value {
    let yaml =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/memorytier.yaml"))
            .unwrap();
    serde_saphyr::from_str(&yaml).expect("crds/memorytier.yaml parses")
}

#[test]
fn crd_file_matches_the_generated_crd() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tierguard"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/memorytier.yaml"))
            .unwrap();
    assert!(
        generated == committed,
        "crds/memorytier.yaml is stale: run scripts/regen-crd"
    );
}

/// Every property under spec (recursively) has a description.
fn assert_described(schema: &Value, path: &str, missing: &mut Vec<String>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            let p = format!("{path}.{name}");
            if prop
                .get("description")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                missing.push(p.clone());
            }
            assert_described(prop, &p, missing);
        }
    }
    if let Some(items) = schema.get("items") {
        assert_described(items, &format!("{path}[]"), missing);
    }
}

fn count_rules(schema: &Value) -> usize {
    let here = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let below: usize = schema
        .get("properties")
        .and_then(Value::as_object)
        .map_or(0, |p| p.values().map(count_rules).sum());
    here + below + schema.get("items").map_or(0, count_rules)
}

#[test]
fn crd_is_complete() {
    let crd = crd_json();
    assert_eq!(crd["metadata"]["name"], "memorytiers.tierguard.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "mt");
    assert_eq!(crd["spec"]["names"]["categories"][0], "tierguard");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(
        version["subresources"]["status"].is_object(),
        "status subresource"
    );
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Phase", "Canary", "Memory", "Age"]);

    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let mut missing = Vec::new();
    assert_described(spec, "spec", &mut missing);
    assert!(
        missing.is_empty(),
        "spec fields without a description: {missing:?}"
    );
    assert!(count_rules(spec) >= 15, "CEL rules: {}", count_rules(spec));
}
