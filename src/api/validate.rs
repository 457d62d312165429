//! Offline validation of MemoryTier manifests: the same rules the API server applies from the CRD
//! (types, ranges, enums, patterns, required fields, CEL `x-kubernetes-validations`), plus unknown
//! fields, which the API server would silently prune.
//!
//! The rules are read from the generated CRD itself, so `tierguard check` and the cluster can never
//! disagree about what is valid.

use std::sync::OnceLock;

use kube::CustomResourceExt;
use kube::core::cel::{CompiledSchema, RootContext, Validator, compile_schema};
use serde_json::Value;

use super::{API_VERSION, KIND, MemoryTier};

/// One thing wrong with a manifest, at a field path such as `spec.canary.sampleRate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl Problem {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

struct Rules {
    schema: Value,
    compiled: CompiledSchema,
}

fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| {
        let crd = MemoryTier::crd();
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .map(|s| serde_json::to_value(s).expect("the CRD schema serializes"))
            .expect("the derived CRD has a schema");
        let compiled = compile_schema(&schema);
        Rules { schema, compiled }
    })
}

/// Whether `text` matches a schema `pattern` (the subset of ECMA-262 the CRD uses). The CRD's
/// patterns are few and checked at every reconcile: each is compiled once (compiling them was
/// the largest share of a healthy reconcile's CPU).
pub fn pattern_matches(pattern: &str, text: &str) -> bool {
    use std::collections::HashMap;
    use std::sync::Mutex;
    /// Patterns kept compiled; past this many (not the CRD's own), they are compiled each time.
    const MAX_COMPILED: usize = 256;
    static COMPILED: OnceLock<Mutex<HashMap<String, Option<regex::Regex>>>> = OnceLock::new();
    let cache = COMPILED.get_or_init(Mutex::default);
    let known = cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(pattern)
        .cloned();
    let compiled = match known {
        Some(compiled) => compiled,
        None => {
            let compiled = regex::Regex::new(pattern).ok();
            let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() < MAX_COMPILED {
                cache.insert(pattern.to_owned(), compiled.clone());
            }
            compiled
        }
    };
    compiled.is_some_and(|re| re.is_match(text))
}

/// Validate one parsed document. Returns the typed object when it is a valid MemoryTier.
pub fn validate_document(doc: &Value) -> Result<MemoryTier, Vec<Problem>> {
    let Some(obj) = doc.as_object() else {
        return Err(vec![Problem::new(
            "<document>",
            format!(
                "expected a Kubernetes object (a mapping), found {}",
                kind_of(doc)
            ),
        )]);
    };
    let mut problems = Vec::new();
    match obj.get("apiVersion").and_then(Value::as_str) {
        Some(API_VERSION) => {}
        Some(other) => problems.push(Problem::new(
            "apiVersion",
            format!(
                "unsupported version {}; expected {API_VERSION:?}",
                quoted(other)
            ),
        )),
        None => problems.push(Problem::new("apiVersion", "required")),
    }
    match obj.get("kind").and_then(Value::as_str) {
        Some(KIND) => {}
        Some(other) => problems.push(Problem::new(
            "kind",
            format!("expected {KIND:?}, found {}", quoted(other)),
        )),
        None => problems.push(Problem::new("kind", "required")),
    }
    check_metadata(obj.get("metadata"), &mut problems);

    let rules = rules();
    if let Some(spec) = obj.get("spec") {
        let spec_schema = &rules.schema["properties"]["spec"];
        check_schema(spec_schema, spec, "spec", &mut problems);
    } else {
        problems.push(Problem::new("spec", "required"));
    }
    if obj.contains_key("status") {
        // Status belongs to the controller; applying it from a manifest is ignored by the server.
        problems.push(Problem::new(
            "status",
            "must not be set in a manifest: the controller owns status",
        ));
    }
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "apiVersion" | "kind" | "metadata" | "spec" | "status"
        ) {
            problems.push(Problem::new(join("", key), "unknown field"));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }

    // CEL rules run on a structurally valid object, as on the API server.
    let root = RootContext {
        api_version: API_VERSION.into(),
        api_group: super::GROUP.into(),
        kind: KIND.into(),
    };
    if let Err(errors) =
        Validator::new().validate_compiled_with_context(&rules.compiled, doc, None, Some(&root))
    {
        for e in errors.iter() {
            problems.push(Problem::new(
                normalize_path(&e.field_path),
                e.message.clone(),
            ));
        }
        return Err(problems);
    }

    let deserializer = doc.clone();
    let tier = serde_path_to_error::deserialize::<_, MemoryTier>(deserializer).map_err(|e| {
        let path = e.path().to_string();
        vec![Problem::new(
            if path == "." {
                "<document>".into()
            } else {
                path
            },
            crate::remote::text::shown(&e.into_inner().to_string(), 300),
        )]
    })?;
    // Both find patterns that match every key; one problem per field is enough.
    let mut problems = value_problems(&tier);
    for p in remediation_problems(&tier) {
        if !problems.iter().any(|q| q.path == p.path) {
            problems.push(p);
        }
    }
    if problems.is_empty() {
        Ok(tier)
    } else {
        Err(problems)
    }
}

/// Remediation patterns that would delete every key, decided by the glob's semantics (the same
/// test `redis flush` applies), which no schema pattern or CEL rule can express.
fn remediation_problems(tier: &MemoryTier) -> Vec<Problem> {
    use crate::act::redis::flush::GENERATION_PLACEHOLDER;
    use crate::act::redis::glob::Glob;
    let remediation = &tier.spec.redis.remediation;
    let refuse = |path: String, pattern: &str| {
        Problem::new(
            path,
            format!("{pattern:?} matches every key; name the keys it may delete, e.g. 'session:*'"),
        )
    };
    let mut problems: Vec<Problem> = remediation
        .non_critical_patterns
        .iter()
        .enumerate()
        .filter(|(_, p)| Glob::new(p).matches_everything())
        .map(|(i, p)| {
            refuse(
                format!("spec.redis.remediation.nonCriticalPatterns[{i}]"),
                p,
            )
        })
        .collect();
    if let Some(pattern) = &remediation.generation_pattern
        && Glob::new(&pattern.replace(GENERATION_PLACEHOLDER, "*")).matches_everything()
    {
        problems.push(refuse(
            "spec.redis.remediation.generationPattern".into(),
            pattern,
        ));
    }
    problems
}

/// What the schema cannot say but the controller would refuse when it uses a value: a quantity
/// past 2^64 bytes, a URL that matches `^https?://` but does not parse, a remediation pattern
/// that matches every key. The same functions the controller calls decide, so `tierguard check`
/// and the controller agree.
fn value_problems(tier: &MemoryTier) -> Vec<Problem> {
    let spec = &tier.spec;
    let mut problems = Vec::new();
    if let Some(quantity) = &spec.redis.max_memory
        && let Err(e) = crate::observe::redis::parse_quantity(quantity)
    {
        problems.push(Problem::new("spec.redis.maxMemory", e));
    }
    let mut urls: Vec<(String, &str)> = Vec::new();
    if let Some(p) = &spec.metrics.prometheus {
        urls.push(("spec.metrics.prometheus.url".into(), &p.url));
    }
    if let Some(s) = &spec.metrics.scrape {
        urls.push(("spec.metrics.scrape.url".into(), &s.url));
    }
    if let Some(endpoint) = &spec.warming.endpoint {
        urls.push(("spec.warming.endpoint".into(), endpoint));
    }
    if let Some(probe) = &spec.breaker.probe {
        urls.push(("spec.breaker.probe.healthUrl".into(), &probe.health_url));
        if let Some(url) = &probe.auth_url {
            urls.push(("spec.breaker.probe.authUrl".into(), url));
        }
    }
    for (i, hook) in spec.notify.webhooks.iter().enumerate() {
        if let Some(url) = &hook.url {
            urls.push((format!("spec.notify.webhooks[{i}].url"), url));
        }
    }
    for (path, url) in urls {
        if let Err(e) = http_url(url) {
            problems.push(Problem::new(path, e));
        }
    }
    let remediation = &spec.redis.remediation;
    if remediation.enabled {
        // The current generation is read at run time; any value stands for it here.
        let current = remediation.generation_pattern.as_ref().map(|_| "0");
        use crate::act::redis::flush::FlushPlanError as E;
        match crate::act::redis::remediate::plan_from_spec(remediation, current, true) {
            Ok(_) | Err(E::Nothing) => {}
            Err(e @ E::GenerationPlaceholder(_)) => problems.push(Problem::new(
                "spec.redis.remediation.generationPattern",
                e.to_string(),
            )),
            Err(e @ (E::EmptyPattern(_) | E::MatchesEverything(_))) => {
                let pattern = match &e {
                    E::EmptyPattern(p) | E::MatchesEverything(p) => p.clone(),
                    _ => String::new(),
                };
                let path = match remediation
                    .non_critical_patterns
                    .iter()
                    .position(|p| *p == pattern)
                {
                    Some(i) => format!("spec.redis.remediation.nonCriticalPatterns[{i}]"),
                    None => "spec.redis.remediation.generationPattern".to_owned(),
                };
                problems.push(Problem::new(path, e.to_string()));
            }
            Err(e) => problems.push(Problem::new("spec.redis.remediation", e.to_string())),
        }
    }
    problems
}

/// An http(s) URL with a host, as the observers and actuators need it.
fn http_url(text: &str) -> Result<(), String> {
    let url = url::Url::parse(text).map_err(|e| format!("{} is not a URL: {e}", quoted(text)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{}: the scheme must be http or https",
            quoted(text)
        ));
    }
    if !url.has_host() {
        return Err(format!("{} has no host", quoted(text)));
    }
    Ok(())
}

/// Validate a MemoryTier as read from the cluster: its spec against the CRD's rules. Server-set
/// metadata and the controller's own status are not the user's to get wrong, so they are ignored.
pub fn validate_tier(tier: &MemoryTier) -> Result<(), Vec<Problem>> {
    let spec =
        serde_json::to_value(&tier.spec).map_err(|e| vec![Problem::new("spec", e.to_string())])?;
    let doc = serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": tier.metadata.name.clone().unwrap_or_else(|| "unnamed".into())},
        "spec": spec,
    });
    validate_document(&doc).map(|_| ())
}

fn check_metadata(metadata: Option<&Value>, problems: &mut Vec<Problem>) {
    let Some(metadata) = metadata else {
        problems.push(Problem::new("metadata", "required"));
        return;
    };
    let Some(meta) = metadata.as_object() else {
        problems.push(Problem::new("metadata", "must be a mapping"));
        return;
    };
    match meta.get("name").and_then(Value::as_str) {
        None if meta.contains_key("generateName") => {}
        None => problems.push(Problem::new("metadata.name", "required")),
        Some(name) => {
            if name.len() > 253
                || !pattern_matches(
                    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
                    name,
                )
            {
                problems.push(Problem::new(
                    "metadata.name",
                    format!("{} is not a valid name: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters", quoted(name)),
                ));
            }
        }
    }
}

/// Walk `value` against an OpenAPI v3 structural schema, as the API server does.
fn check_schema(schema: &Value, value: &Value, path: &str, problems: &mut Vec<Problem>) {
    if value.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) != Some(true) {
            problems.push(Problem::new(path, "must not be null"));
        }
        return;
    }
    let expected = schema.get("type").and_then(Value::as_str);
    let type_ok = match expected {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("boolean") => value.is_boolean(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        _ => true,
    };
    if !type_ok {
        let hint = match (expected, value) {
            (Some("string"), Value::Number(_)) => " (quote it, e.g. \"10m\")",
            (Some("boolean"), Value::String(_)) => " (write true or false without quotes)",
            (Some("number" | "integer"), Value::String(_)) => {
                " (write a plain number, without quotes or units)"
            }
            _ => "",
        };
        problems.push(Problem::new(
            path,
            format!(
                "expected {}, found {}{hint}",
                expected.unwrap_or("?"),
                kind_of(value)
            ),
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(|v| v.to_string()).collect();
        problems.push(Problem::new(
            path,
            format!(
                "{} is not one of {}",
                crate::remote::text::shown(&value.to_string(), MAX_QUOTED_CHARS),
                list.join(", ")
            ),
        ));
    }
    match value {
        Value::Number(n) => check_number(schema, n.as_f64().unwrap_or(f64::NAN), path, problems),
        Value::String(s) => check_string(schema, s, path, problems),
        Value::Array(items) => {
            let len = items.len() as u64;
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && len > max
            {
                problems.push(Problem::new(
                    path,
                    format!("has {len} items, at most {max} allowed"),
                ));
            }
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && len < min
            {
                problems.push(Problem::new(
                    path,
                    format!("has {len} items, at least {min} required"),
                ));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check_schema(item_schema, item, &format!("{path}[{i}]"), problems);
                }
            }
        }
        Value::Object(fields) => check_object(schema, fields, path, problems),
        _ => {}
    }
}

fn check_number(schema: &Value, n: f64, path: &str, problems: &mut Vec<Problem>) {
    let min = schema.get("minimum").and_then(Value::as_f64);
    let max = schema.get("maximum").and_then(Value::as_f64);
    let out_of_range = min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m);
    if out_of_range {
        let text = match (min, max) {
            (Some(lo), Some(hi)) => format!("must be between {lo} and {hi}, found {n}"),
            (Some(lo), None) => format!("must be at least {lo}, found {n}"),
            (None, Some(hi)) => format!("must be at most {hi}, found {n}"),
            (None, None) => unreachable!("out of range needs a bound"),
        };
        problems.push(Problem::new(path, text));
    }
}

fn check_string(schema: &Value, s: &str, path: &str, problems: &mut Vec<Problem>) {
    let len = s.chars().count() as u64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        let text = if min == 1 && len == 0 {
            "must not be empty".to_owned()
        } else {
            format!("must be at least {min} characters long")
        };
        problems.push(Problem::new(path, text));
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        problems.push(Problem::new(
            path,
            format!("must be at most {max} characters long"),
        ));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
        && !pattern_matches(pattern, s)
    {
        let text = if pattern == super::DURATION_PATTERN {
            match s.parse::<super::Duration>() {
                Err(e) => e.to_string(),
                Ok(_) => format!("invalid duration {}", quoted(s)),
            }
        } else {
            format!("{} does not match the pattern {pattern}", quoted(s))
        };
        problems.push(Problem::new(path, text));
    }
}

fn check_object(
    schema: &Value,
    fields: &serde_json::Map<String, Value>,
    path: &str,
    problems: &mut Vec<Problem>,
) {
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    let preserve = schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true);
    let count = fields.len() as u64;
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
        && count > max
    {
        problems.push(Problem::new(
            path,
            format!("has {count} entries, at most {max} allowed"),
        ));
    }
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if !fields.contains_key(name) {
                problems.push(Problem::new(join(path, name), "required"));
            }
        }
    }
    for (name, field) in fields {
        let field_path = join(path, name);
        if let Some(field_schema) = properties.and_then(|p| p.get(name)) {
            check_schema(field_schema, field, &field_path, problems);
        } else if let Some(value_schema) = additional.filter(|a| a.is_object()) {
            let key = crate::remote::text::shown(name, MAX_QUOTED_CHARS);
            check_schema(value_schema, field, &format!("{path}[{key}]"), problems);
        } else if !preserve {
            let known: Vec<&str> = properties
                .map(|p| p.keys().map(String::as_str).collect())
                .unwrap_or_default();
            let hint = closest(name, &known)
                .map(|k| format!(" (did you mean {k:?}?)"))
                .unwrap_or_default();
            problems.push(Problem::new(field_path, format!("unknown field{hint}")));
        }
    }
}

fn join(path: &str, name: &str) -> String {
    // A field name comes from the manifest too: shown by its start.
    let name = crate::remote::text::shown(name, MAX_QUOTED_CHARS);
    if path.is_empty() {
        name
    } else {
        format!("{path}.{name}")
    }
}

/// The longest value quoted in a problem.
const MAX_QUOTED_CHARS: usize = 60;

/// A value from the manifest, quoted in a problem: escaped and shown by its start.
fn quoted(value: &str) -> String {
    format!("{:?}", crate::remote::text::shown(value, MAX_QUOTED_CHARS))
}

/// kube-cel reports paths like `spec.canary.reducedRate` or `spec.canary..reducedRate` (a rule's
/// relative fieldPath appended); print them the way the rest of the checker does.
fn normalize_path(path: &str) -> String {
    let trimmed = path.trim_start_matches('.');
    let mut out = String::with_capacity(trimmed.len());
    let mut last_dot = false;
    for c in trimmed.chars() {
        if c == '.' && last_dot {
            continue;
        }
        last_dot = c == '.';
        out.push(c);
    }
    if out.is_empty() {
        "<document>".into()
    } else {
        out
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Whether `name` is `known` misspelt: the same but for case, or a typo or two away.
pub fn looks_like(name: &str, known: &str) -> bool {
    name.len() < 4 * known.len() && closest(name, &[known]).is_some()
}

/// The known name nearest to a misspelt one, if it is close enough to be a likely typo.
fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let name_lower = name.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (levenshtein(&name_lower, &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> Value {
        json!({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": "t", "namespace": "n"},
            "spec": {"target": {"configMapName": "flags"}},
        })
    }

    fn paths(doc: &Value) -> Vec<String> {
        validate_document(doc)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.path)
            .collect()
    }

    #[test]
    fn a_minimal_tier_is_valid_and_gets_the_runbook_defaults() {
        let tier = validate_document(&minimal()).expect("valid");
        assert_eq!(tier.spec.canary.sample_rate, 0.10);
        assert_eq!(tier.spec.canary.reduced_rate, 0.05);
        assert_eq!(tier.spec.rollback.p50_latency_ms, 1000.0);
        assert_eq!(tier.spec.rollback.p50_latency_for.to_string(), "10m");
        assert_eq!(tier.spec.breaker.max_open_duration.to_string(), "4h");
        assert_eq!(tier.spec.redis.memory_levels.critical, 90.0);
        assert_eq!(tier.spec.cache.ttl.to_string(), "1h");
    }

    #[test]
    fn structural_errors_name_the_field() {
        let mut doc = minimal();
        doc["spec"]["canary"] = json!({"sampleRate": 1.5});
        assert_eq!(paths(&doc), ["spec.canary.sampleRate"]);

        let mut doc = minimal();
        doc["spec"]["canary"] = json!({"sampelRate": 0.2});
        let problems = validate_document(&doc).unwrap_err();
        assert_eq!(problems[0].path, "spec.canary.sampelRate");
        assert!(
            problems[0].message.contains("sampleRate"),
            "{}",
            problems[0].message
        );

        let mut doc = minimal();
        doc["spec"]["rollback"] = json!({"p50LatencyFor": "ten minutes"});
        assert_eq!(paths(&doc), ["spec.rollback.p50LatencyFor"]);

        let mut doc = minimal();
        doc["spec"]["mode"] = json!("Yolo");
        assert_eq!(paths(&doc), ["spec.mode"]);
    }

    #[test]
    fn cel_rules_run_offline() {
        let mut doc = minimal();
        doc["spec"]["canary"] = json!({"sampleRate": 0.1, "reducedRate": 0.2});
        assert_eq!(paths(&doc), ["spec.canary.reducedRate"]);

        let mut doc = minimal();
        doc["spec"]["redis"] =
            json!({"memoryLevels": {"watch": 85, "warning": 80, "critical": 90}});
        assert_eq!(paths(&doc), ["spec.redis.memoryLevels.warning"]);

        let mut doc = minimal();
        doc["spec"]["notify"] = json!({"escalation": [
            {"level": 1, "after": "0s"}, {"level": 2, "after": "30m"}, {"level": 3, "after": "15m"}]});
        assert_eq!(paths(&doc), ["spec.notify.escalation"]);
    }

    #[test]
    fn the_breaker_probe_is_bounded_and_needs_its_key_for_the_authenticated_call() {
        let probe = |extra: Value| {
            let mut doc = minimal();
            let mut p = json!({"healthUrl": "https://api.mem0.ai/v1/health"});
            json_patch::merge(&mut p, &extra);
            doc["spec"]["breaker"] = json!({"probe": p});
            doc
        };
        let tier = validate_document(&probe(json!({}))).expect("valid");
        let p = tier.spec.breaker.probe.unwrap();
        assert_eq!(
            (
                p.interval.to_string(),
                p.timeout.to_string(),
                p.auth_scheme.as_str()
            ),
            ("1m".to_owned(), "3s".to_owned(), "Bearer")
        );
        assert_eq!(
            paths(&probe(
                json!({"authUrl": "https://api.mem0.ai/v1/users/me"})
            )),
            ["spec.breaker.probe.apiKeySecretRef"]
        );
        assert_eq!(
            paths(&probe(json!({"timeout": "30s"}))),
            ["spec.breaker.probe.timeout"]
        );
        assert_eq!(
            paths(&probe(json!({"interval": "100ms"}))),
            ["spec.breaker.probe.interval"]
        );
        assert_eq!(
            paths(&probe(json!({"healthUrl": "https://"}))),
            ["spec.breaker.probe.healthUrl"]
        );
        assert_eq!(
            paths(&probe(json!({"authScheme": "Bearer x"}))),
            ["spec.breaker.probe.authScheme"]
        );
    }
}
