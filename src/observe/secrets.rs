//! Resolving the spec's `SecretKeyRef`s: from the cluster (the controller), or from flags and the
//! environment (the `tierguard observe` command, for local use).
//!
//! A Secret in the cluster is used only when it is marked for tierguard with the label
//! [`USABLE_LABEL`]`=true`. Whoever may create a MemoryTier may name any Secret of its namespace;
//! the label is how whoever may change that Secret agrees to its use. The Secret's metadata is read
//! first, so an unmarked Secret's data never reaches the controller.
//!
//! Secret values never appear in errors, logs or `Debug` output.

use std::collections::BTreeMap;
use std::future::Future;

use k8s_openapi::api::core::v1::Secret;

use crate::api::SecretKeyRef;

/// Why a secret value could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("Secret {namespace}/{name} not found")]
    SecretNotFound { namespace: String, name: String },
    #[error("Secret {namespace}/{name} has no key {key:?}")]
    KeyNotFound {
        namespace: String,
        name: String,
        key: String,
    },
    #[error(
        "Secret {namespace}/{name} is not marked for tierguard: a Secret is used only when it carries the label {label}=true; if this tier may use it, run: kubectl label secret -n {namespace} {name} {label}=true",
        label = USABLE_LABEL
    )]
    NotMarked { namespace: String, name: String },
    #[error("key {key:?} of Secret {name} is not UTF-8 text")]
    NotUtf8 { name: String, key: String },
    #[error("reading Secret {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// Not given locally, and no cluster to read it from.
    #[error(
        "secret {name}/{key} is not given: pass --secret {name}/{key}=VALUE or set {env} ({why})"
    )]
    NotGiven {
        name: String,
        key: String,
        env: String,
        why: String,
    },
}

/// The label that marks a Secret as usable by tierguard (its value must be `true`).
pub const USABLE_LABEL: &str = "tierguard.dev/usable";

/// Whether labels mark their object as usable by tierguard.
pub fn marked_usable(labels: Option<&BTreeMap<String, String>>) -> bool {
    labels
        .and_then(|l| l.get(USABLE_LABEL))
        .is_some_and(|v| v == "true")
}

impl SecretError {
    /// The API server could not answer (5xx, 429, a timeout, no connection): the Secret may be
    /// there and readable. Missing, forbidden or unusable Secrets are not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            SecretError::Api { source, .. } => match source.as_ref() {
                kube::Error::Api(status) => status.code >= 500 || status.code == 429,
                // Transport failures and timeouts: no answer at all.
                _ => true,
            },
            _ => false,
        }
    }
}

/// Something that turns a `SecretKeyRef` into the secret's value.
pub trait SecretResolver: Send + Sync {
    fn resolve(
        &self,
        reference: &SecretKeyRef,
    ) -> impl Future<Output = Result<String, SecretError>> + Send;
}

/// Trailing line breaks are dropped: `kubectl create secret --from-file` keeps the file's final
/// newline, which would otherwise end up inside a token or a URL.
fn clean(value: String) -> String {
    let trimmed = value.trim_end_matches(['\n', '\r']);
    if trimmed.len() == value.len() {
        value
    } else {
        trimmed.to_owned()
    }
}

/// Secrets of one namespace, read through the Kubernetes API.
#[derive(Clone)]
pub struct KubeSecrets {
    api: kube::Api<Secret>,
    namespace: String,
}

impl KubeSecrets {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        KubeSecrets {
            api: kube::Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
        }
    }
}

impl KubeSecrets {
    fn api_error(&self, name: &str, source: kube::Error) -> SecretError {
        SecretError::Api {
            namespace: self.namespace.clone(),
            name: name.to_owned(),
            source: Box::new(source),
        }
    }

    fn not_found(&self, name: &str) -> SecretError {
        SecretError::SecretNotFound {
            namespace: self.namespace.clone(),
            name: name.to_owned(),
        }
    }

    fn not_marked(&self, name: &str) -> SecretError {
        SecretError::NotMarked {
            namespace: self.namespace.clone(),
            name: name.to_owned(),
        }
    }
}

impl SecretResolver for KubeSecrets {
    async fn resolve(&self, reference: &SecretKeyRef) -> Result<String, SecretError> {
        let name = &reference.name;
        // Metadata first: the data of a Secret not marked for tierguard is never fetched.
        let meta = self
            .api
            .get_metadata_opt(name)
            .await
            .map_err(|e| self.api_error(name, e))?
            .ok_or_else(|| self.not_found(name))?;
        if !marked_usable(meta.metadata.labels.as_ref()) {
            return Err(self.not_marked(name));
        }
        let secret = self
            .api
            .get_opt(name)
            .await
            .map_err(|e| self.api_error(name, e))?
            .ok_or_else(|| self.not_found(name))?;
        // The label may have gone between the two reads.
        if !marked_usable(secret.metadata.labels.as_ref()) {
            return Err(self.not_marked(name));
        }
        let from_data = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&reference.key))
            .map(|bytes| {
                String::from_utf8(bytes.0.clone()).map_err(|_| SecretError::NotUtf8 {
                    name: reference.name.clone(),
                    key: reference.key.clone(),
                })
            });
        // stringData is write-only on a real API server, but a Secret read from a file has it.
        let from_string_data = || {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(&reference.key))
                .cloned()
                .map(Ok)
        };
        match from_data.or_else(from_string_data) {
            Some(value) => value.map(clean),
            None => Err(SecretError::KeyNotFound {
                namespace: self.namespace.clone(),
                name: reference.name.clone(),
                key: reference.key.clone(),
            }),
        }
    }
}

/// Secret values given on the command line (`NAME/KEY=VALUE`) or in the environment
/// (`TIERGUARD_SECRET_<NAME>_<KEY>`, see [`env_var_name`]).
#[derive(Clone, Default)]
pub struct LocalSecrets {
    values: BTreeMap<(String, String), String>,
    use_env: bool,
}

impl std::fmt::Debug for LocalSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSecrets")
            .field("keys", &self.values.keys().collect::<Vec<_>>())
            .field("use_env", &self.use_env)
            .finish()
    }
}

/// Why a `--secret` flag was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "--secret {shown}: {reason}; write it as NAME/KEY=VALUE, e.g. redis-auth/url=redis://:password@host:6379"
)]
pub struct SecretFlagError {
    /// The flag up to the `=`, never the value.
    shown: String,
    reason: &'static str,
}

impl LocalSecrets {
    /// Values from flags only.
    pub fn new() -> Self {
        LocalSecrets::default()
    }

    /// Also look values up in the environment when no flag gives them.
    pub fn with_env(mut self) -> Self {
        self.use_env = true;
        self
    }

    pub fn insert(&mut self, name: &str, key: &str, value: &str) {
        self.values
            .insert((name.to_owned(), key.to_owned()), value.to_owned());
    }

    /// Parse one `NAME/KEY=VALUE` flag.
    pub fn add_flag(&mut self, flag: &str) -> Result<(), SecretFlagError> {
        let (reference, value) = flag.split_once('=').ok_or(SecretFlagError {
            shown: "<flag without =>".to_owned(),
            reason: "missing '=VALUE'",
        })?;
        let err = |reason| SecretFlagError {
            shown: reference.to_owned(),
            reason,
        };
        let (name, key) = reference
            .split_once('/')
            .ok_or_else(|| err("missing '/KEY' after the Secret name"))?;
        if name.is_empty() {
            return Err(err("the Secret name is empty"));
        }
        if key.is_empty() {
            return Err(err("the key is empty"));
        }
        self.insert(name, key, value);
        Ok(())
    }

    /// The value given locally, if any.
    pub fn get(&self, reference: &SecretKeyRef) -> Option<String> {
        if let Some(v) = self
            .values
            .get(&(reference.name.clone(), reference.key.clone()))
        {
            return Some(clean(v.clone()));
        }
        if self.use_env {
            return std::env::var(env_var_name(reference)).ok().map(clean);
        }
        None
    }
}

/// The environment variable that may hold a secret's value: `TIERGUARD_SECRET_` followed by the
/// Secret name and the key, upper-cased, every character other than a letter or digit as `_`.
/// `redis-auth`/`url` → `TIERGUARD_SECRET_REDIS_AUTH_URL`.
pub fn env_var_name(reference: &SecretKeyRef) -> String {
    let part = |s: &str| {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect::<String>()
    };
    format!(
        "TIERGUARD_SECRET_{}_{}",
        part(&reference.name),
        part(&reference.key)
    )
}

/// Local values first; what is still missing comes from the cluster when there is one.
pub struct LocalThenCluster {
    pub local: LocalSecrets,
    /// The cluster, or why there is none (shown when a value is missing).
    pub cluster: Result<KubeSecrets, String>,
}

impl SecretResolver for LocalThenCluster {
    async fn resolve(&self, reference: &SecretKeyRef) -> Result<String, SecretError> {
        if let Some(value) = self.local.get(reference) {
            return Ok(value);
        }
        match &self.cluster {
            Ok(cluster) => cluster.resolve(reference).await,
            Err(why) => Err(SecretError::NotGiven {
                name: reference.name.clone(),
                key: reference.key.clone(),
                env: env_var_name(reference),
                why: why.clone(),
            }),
        }
    }
}

impl SecretResolver for LocalSecrets {
    async fn resolve(&self, reference: &SecretKeyRef) -> Result<String, SecretError> {
        self.get(reference).ok_or_else(|| SecretError::NotGiven {
            name: reference.name.clone(),
            key: reference.key.clone(),
            env: env_var_name(reference),
            why: "no cluster is consulted".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, key: &str) -> SecretKeyRef {
        SecretKeyRef {
            name: name.into(),
            key: key.into(),
        }
    }

    #[test]
    fn flags_parse_and_errors_never_show_the_value() {
        let mut s = LocalSecrets::new();
        s.add_flag("redis-auth/url=redis://:p=w@h:1/").unwrap();
        assert_eq!(s.get(&r("redis-auth", "url")).unwrap(), "redis://:p=w@h:1/");
        let e = s.add_flag("redis-auth=hunter2").unwrap_err().to_string();
        assert!(e.contains("missing '/KEY'"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = s.add_flag("hunter2").unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(s.add_flag("/k=v").is_err());
        assert!(s.add_flag("n/=v").is_err());
        assert!(!format!("{s:?}").contains("p=w"));
    }

    #[test]
    fn env_var_names_are_predictable() {
        assert_eq!(
            env_var_name(&r("redis-auth", "url")),
            "TIERGUARD_SECRET_REDIS_AUTH_URL"
        );
        assert_eq!(
            env_var_name(&r("prom.creds", "basic-auth")),
            "TIERGUARD_SECRET_PROM_CREDS_BASIC_AUTH"
        );
    }

    #[tokio::test]
    async fn missing_local_value_names_the_secret_key_and_flag() {
        let e = LocalSecrets::new()
            .resolve(&r("redis-auth", "url"))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("redis-auth/url"), "{e}");
        assert!(e.contains("--secret redis-auth/url=VALUE"), "{e}");
        assert!(e.contains("TIERGUARD_SECRET_REDIS_AUTH_URL"), "{e}");
    }

    #[test]
    fn trailing_newlines_are_dropped() {
        assert_eq!(clean("token\n".into()), "token");
        assert_eq!(clean("token\r\n".into()), "token");
        assert_eq!(clean("to ken".into()), "to ken");
    }
}
