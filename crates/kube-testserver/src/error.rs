//! API errors rendered as `meta/v1` `Status` bodies, the way kube-apiserver words them, so kube's
//! `Error::Api` carries the same code, reason and message a real cluster would send.

use std::fmt;

use serde_json::{Value, json};

use super::kinds::Gvr;

/// A failed request: HTTP code, Kubernetes reason and message, optional `details`.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: Value::Null,
        }
    }

    fn about(mut self, gvr: &Gvr, name: &str) -> Self {
        self.details = json!({ "name": name, "group": gvr.group, "kind": gvr.resource });
        self
    }

    pub fn not_found(gvr: &Gvr, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{gvr} \"{name}\" not found")).about(gvr, name)
    }

    /// The answer for a path that names no resource the server serves.
    pub fn no_such_path() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn already_exists(gvr: &Gvr, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{gvr} \"{name}\" already exists"),
        )
        .about(gvr, name)
    }

    /// An optimistic-concurrency failure, e.g. a stale `resourceVersion`.
    pub fn conflict(gvr: &Gvr, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {gvr} \"{name}\": {why}"),
        )
        .about(gvr, name)
    }

    /// The stale-resourceVersion conflict, worded like the API server.
    pub fn modified(gvr: &Gvr, name: &str) -> Self {
        Self::conflict(
            gvr,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// A server-side apply conflict; `causes` are `(manager, field)` pairs.
    pub fn apply_conflict(
        gvr: &Gvr,
        name: &str,
        api_version: &str,
        causes: &[(String, String)],
    ) -> Self {
        let n = causes.len();
        let message = if n == 1 {
            let (manager, field) = &causes[0];
            format!(
                "Apply failed with 1 conflict: conflict with \"{manager}\" using {api_version}: {field}"
            )
        } else {
            let list: Vec<String> = causes
                .iter()
                .map(|(manager, field)| {
                    format!("conflict with \"{manager}\" using {api_version}: {field}")
                })
                .collect();
            format!("Apply failed with {n} conflicts: {}", list.join("\n"))
        };
        let mut error = Self::new(409, "Conflict", message).about(gvr, name);
        error.details["causes"] = causes
            .iter()
            .map(|(manager, field)| {
                json!({
                    "reason": "FieldManagerConflict",
                    "message": format!("conflict with \"{manager}\" using {api_version}"),
                    "field": field,
                })
            })
            .collect();
        error
    }

    /// 422 with one cause per `(field, message)`, e.g. `("metadata.name", "Required value: ...")`.
    pub fn invalid(kind: &str, gvr: &Gvr, name: &str, causes: &[(&str, String)]) -> Self {
        let text: Vec<String> = causes
            .iter()
            .map(|(field, msg)| format!("{field}: {msg}"))
            .collect();
        let message = if text.len() == 1 {
            text[0].clone()
        } else {
            format!("[{}]", text.join(", "))
        };
        let qualified = if gvr.group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{}", gvr.group)
        };
        let mut error = Self::new(
            422,
            "Invalid",
            format!("{qualified} \"{name}\" is invalid: {message}"),
        );
        error.details = json!({
            "name": name,
            "group": gvr.group,
            "kind": kind,
            "causes": causes
                .iter()
                .map(|(field, msg)| json!({ "reason": "FieldValueInvalid", "message": msg, "field": field }))
                .collect::<Vec<_>>(),
        });
        error
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 410 with reason `Expired`: a resourceVersion or continue token older than the kept history.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource: {method}"),
        )
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type}) - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
            ),
        )
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(504, "Timeout", message)
    }

    /// A failure injected by a test: the reason follows the code, as the API server's would.
    pub fn injected(code: u16) -> Self {
        let reason = match code {
            400 => "BadRequest",
            403 => "Forbidden",
            404 => "NotFound",
            409 => "Conflict",
            410 => "Expired",
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "InternalError",
        };
        Self::new(code, reason, format!("injected failure ({code})"))
    }

    /// The `Status` body.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if !self.details.is_null() {
            status["details"] = self.details.clone();
        }
        status
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}
