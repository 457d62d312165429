//! A minimal Kubernetes API server on loopback that serves Secrets (GET only), enough for
//! kube's real `Client` to read them, and a kubeconfig pointing at it.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::exporter::spawn_server;

/// Secrets by (namespace, name), each a map of key to value.
pub type Secrets = BTreeMap<(String, String), BTreeMap<String, String>>;

pub struct SecretApi {
    server: super::exporter::ServerHandle,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn get_secret(
    State(secrets): State<Arc<Secrets>>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
) -> Response {
    match secrets.get(&(namespace.clone(), name.clone())) {
        Some(data) => {
            let data: BTreeMap<&String, String> = data
                .iter()
                .map(|(k, v)| (k, base64(v.as_bytes())))
                .collect();
            let body = json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1"},
                "type": "Opaque", "data": data,
            });
            (
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response()
        }
        None => {
            let body = json!({
                "apiVersion": "v1", "kind": "Status", "status": "Failure",
                "message": format!("secrets \"{name}\" not found"),
                "reason": "NotFound", "details": {"name": name, "kind": "secrets"}, "code": 404,
            });
            (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response()
        }
    }
}

impl SecretApi {
    pub fn start(secrets: Secrets) -> Self {
        let app = Router::new()
            .route(
                "/api/v1/namespaces/{namespace}/secrets/{name}",
                axum::routing::get(get_secret),
            )
            .with_state(Arc::new(secrets));
        let server = spawn_server(0, app);
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: http://{}\n\
             users:\n- name: test\n  user: {{}}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: default\n\
             current-context: test\n",
            server.addr()
        );
        std::fs::write(&kubeconfig, config).expect("write kubeconfig");
        SecretApi {
            server,
            kubeconfig,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }
}
