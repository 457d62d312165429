//! An in-process Kubernetes API server for tests, reached through kube's real `Client`.
//!
//! Where no kube-apiserver can run, controllers are tested against this server: axum on
//! `127.0.0.1:0`, serving the Kubernetes REST API for the resources it is given (the common
//! built-in ones by default, see [`default_kinds`], and custom resources from their CRDs): get,
//! list, watch, create, update, delete, JSON merge / JSON / strategic-merge patch, server-side
//! apply and the status subresource, with discovery documents for clients that ask.
//!
//! What is faithful and what is simplified is written down where it is implemented:
//! [`store`] (resourceVersions, generation, status subresource, preconditions, finalizers,
//! garbage collection, history), [`managed`] (managedFields and server-side apply),
//! [`http`] (paths, content types, watch streams, injected faults), [`schema`] (pruning and
//! defaulting of custom resources), [`selector`] and [`error`] (Status bodies). Custom resources
//! are validated by the [`Validator`] a test gives their [`Kind`] (on creates and updates of the
//! resource, not of its status). In short, what a controller can observe through kube's client
//! behaves as on a real cluster, except: no authentication/authorization or admission, no
//! OpenAPI type checks beyond the validator, lists are atomic in server-side apply, strategic
//! merge patch is a JSON merge patch, and the two Event APIs are separate stores.
//!
//! ```ignore
//! let server = ApiServer::builder().kind(Kind::custom::<MyResource>()).start().await;
//! let client = server.client();
//! let objects: Api<MyResource> = Api::namespaced(client, "default");
//! // … run the code under test …
//! assert!(server.writes().iter().all(|w| w.user.as_deref() == Some("leader")));
//! server.shutdown().await;
//! ```
//!
//! Every server is independent; start one per test. Tell callers apart with
//! [`ApiServer::client_as`] / [`ApiServer::write_kubeconfig_as`] (the bearer token is recorded as
//! the request's `user`). JSON handling dominates its cost, so a benchmark with thousands of objects
//! should run in a release build.
#![forbid(unsafe_code)]

pub mod error;
pub mod http;
pub mod kinds;
pub mod managed;
pub mod schema;
pub mod selector;
pub mod store;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use error::ApiError;
pub use http::{Fault, FaultAction, RequestRecord, WriteCounts};
pub use kinds::{Gvr, Kind, Validator, default_kinds};

/// kube's rustls needs a process-wide crypto provider; `ring`, as kube's own default. Installing
/// it again (or after the caller did) is harmless.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

use http::App;
use store::{DeleteOptions, Store};

/// Settings of an [`ApiServer`] before it starts.
pub struct ApiServerBuilder {
    kinds: Vec<Kind>,
    bookmark_interval: Duration,
    history_limit: usize,
}

impl ApiServerBuilder {
    /// Serves one more resource (or replaces the description of one already served).
    pub fn kind(mut self, kind: Kind) -> Self {
        self.kinds.retain(|k| k.gvr != kind.gvr);
        self.kinds.push(kind);
        self
    }

    /// Does not serve this resource (a cluster without the CRD installed).
    pub fn without(mut self, gvr: &Gvr) -> Self {
        self.kinds.retain(|k| &k.gvr != gvr);
        self
    }

    /// How often a watch with `allowWatchBookmarks` gets a BOOKMARK (a real server: about a
    /// minute). Default: 10 s.
    pub fn bookmark_interval(mut self, interval: Duration) -> Self {
        self.bookmark_interval = interval;
        self
    }

    /// How many changes the server remembers for watches and paginated lists; older
    /// resourceVersions are answered with 410 `Expired`. Default: 2,000 (kube's watcher keeps its
    /// resourceVersion fresh through bookmarks, so only a client that falls this far behind relists).
    pub fn history_limit(mut self, changes: usize) -> Self {
        self.history_limit = changes;
        self
    }

    pub async fn start(self) -> ApiServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the API server");
        let address = listener.local_addr().expect("the listener has an address");
        let (stop, stopped) = watch::channel(false);
        let app = Arc::new(App {
            store: Mutex::new(Store::new(self.kinds, self.history_limit)),
            log: Mutex::new(Vec::new()),
            writes: Default::default(),
            faults: Mutex::new(Vec::new()),
            shutdown: stopped.clone(),
            dropped: watch::channel(0).0,
            bookmark_interval: self.bookmark_interval,
            address,
        });
        let router = http::router(app.clone());
        let task = tokio::spawn(async move {
            let mut stopped = stopped;
            let shutdown = async move {
                loop {
                    let stop = *stopped.borrow_and_update();
                    if stop || stopped.changed().await.is_err() {
                        break;
                    }
                }
            };
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
            {
                eprintln!("test API server stopped: {e}");
            }
        });
        ApiServer {
            app,
            address,
            stop,
            task: Some(task),
        }
    }
}

/// A running test API server. Dropping it stops it; [`ApiServer::shutdown`] also waits.
pub struct ApiServer {
    app: Arc<App>,
    address: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl ApiServer {
    /// Starts a server with the default resources on a free loopback port.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    pub fn builder() -> ApiServerBuilder {
        ApiServerBuilder {
            kinds: default_kinds(),
            bookmark_interval: Duration::from_secs(10),
            history_limit: 2_000,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A kube config for this server (default namespace `default`), with no credentials.
    pub fn config(&self) -> kube::Config {
        kube::Config::new(self.url().parse().expect("the server URL is a valid URI"))
    }

    /// A kube config that sends `user` as its bearer token, which the request log records as the
    /// caller: how tests tell two controllers apart.
    pub fn config_as(&self, user: &str) -> kube::Config {
        let mut config = self.config();
        config.auth_info.token = Some(user.to_string().into());
        config
    }

    /// A kube `Client` for this server. Needs a Tokio runtime.
    pub fn client(&self) -> kube::Client {
        install_crypto_provider();
        kube::Client::try_from(self.config()).expect("a kube client for the test API server")
    }

    /// A kube `Client` that identifies itself as `user` (see [`ApiServer::config_as`]).
    pub fn client_as(&self, user: &str) -> kube::Client {
        install_crypto_provider();
        kube::Client::try_from(self.config_as(user)).expect("a kube client for the test API server")
    }

    /// Writes a kubeconfig file pointing at this server, for a spawned binary (`KUBECONFIG` or a
    /// `--kubeconfig` flag).
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        self.write_kubeconfig_as(path, "test")
    }

    /// Like [`ApiServer::write_kubeconfig`], with `user` as the bearer token.
    pub fn write_kubeconfig_as(&self, path: impl AsRef<Path>, user: &str) -> std::io::Result<()> {
        let kubeconfig = format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: test\n  cluster:\n    server: {url}\n\
             users:\n\
             - name: {user:?}\n  user:\n    token: {user:?}\n\
             contexts:\n\
             - name: test\n  context:\n    cluster: test\n    user: {user:?}\n    namespace: default\n\
             current-context: test\n",
            url = self.url(),
        );
        std::fs::write(path, kubeconfig)
    }

    fn kind_index(&self, gvr: &Gvr) -> usize {
        self.app
            .store()
            .kind_index(&gvr.group, &gvr.version, &gvr.resource)
            .unwrap_or_else(|| panic!("the test API server does not serve {gvr}"))
    }

    /// The stored object, as JSON (`namespace` is ignored for cluster-scoped resources).
    pub fn get_json(&self, gvr: &Gvr, namespace: &str, name: &str) -> Option<Value> {
        let kind = self.kind_index(gvr);
        self.app.store().get(kind, namespace, name).ok()
    }

    /// Creates or overwrites an object directly (status included, no resourceVersion check), with
    /// the server's rules for metadata, generation and schema, and watch events. Not logged as a
    /// request. Returns the stored object.
    pub fn put_json(&self, gvr: &Gvr, object: Value) -> Result<Value, ApiError> {
        let kind = self.kind_index(gvr);
        self.app.store().put(kind, object)
    }

    /// Deletes an object directly (finalizers and garbage collection apply). Returns it, if found.
    pub fn delete_json(&self, gvr: &Gvr, namespace: &str, name: &str) -> Option<Value> {
        let kind = self.kind_index(gvr);
        self.app
            .store()
            .delete(kind, namespace, name, &DeleteOptions::default())
            .ok()
            .map(|(object, _)| object)
    }

    /// Every stored object of a resource, across namespaces, ordered by namespace and name.
    pub fn list_json(&self, gvr: &Gvr) -> Vec<Value> {
        let kind = self.kind_index(gvr);
        self.app.store().all(kind)
    }

    /// The resourceVersion of the last write.
    pub fn resource_version(&self) -> u64 {
        self.app.store().resource_version()
    }

    /// Forgets the change history: watches and continue tokens from before now get 410 `Expired`.
    pub fn compact(&self) {
        self.app.store().compact();
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.app
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The writes (POST, PUT, PATCH, DELETE) received so far, in order.
    pub fn writes(&self) -> Vec<RequestRecord> {
        self.requests()
            .into_iter()
            .filter(RequestRecord::is_write)
            .collect()
    }

    /// How many writes were received since the start, by kind; not reset by
    /// [`ApiServer::clear_requests`].
    pub fn write_counts(&self) -> WriteCounts {
        self.app.writes.snapshot()
    }

    pub fn clear_requests(&self) {
        self.app
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Answers the next `times` requests whose path starts with `path_prefix` (and whose method is
    /// `method`, if given) with HTTP `code` and a matching Status, without serving them. Note that
    /// kube's client retries 429, 503 and 504 by itself.
    pub fn fail_next(&self, method: Option<&str>, path_prefix: &str, times: usize, code: u16) {
        self.add_fault(method, path_prefix, times, FaultAction::Fail(code));
    }

    /// Like [`ApiServer::fail_next`], for requests whose query string contains `query` too (e.g.
    /// `watch=true`, or `limit=500` for the watcher's list and not a `limit=1` probe).
    pub fn fail_next_with_query(
        &self,
        method: Option<&str>,
        path_prefix: &str,
        query: &str,
        times: usize,
        code: u16,
    ) {
        self.push_fault(Fault {
            method: method.map(str::to_string),
            path_prefix: path_prefix.to_string(),
            query_contains: Some(query.to_string()),
            user: None,
            body_contains: None,
            remaining: times,
            action: FaultAction::Fail(code),
        });
    }

    /// Answers the next `times` matching requests with HTTP `code` and `bytes` bytes of HTML
    /// instead of a `Status`.
    pub fn fail_next_huge(
        &self,
        method: Option<&str>,
        path_prefix: &str,
        times: usize,
        code: u16,
        bytes: usize,
    ) {
        self.add_fault(
            method,
            path_prefix,
            times,
            FaultAction::FailHuge(code, bytes),
        );
    }

    /// Ends every open watch now, abruptly (no bookmark), as a restarted API server or a
    /// load balancer's idle timeout would; clients must watch again.
    pub fn drop_watches(&self) {
        self.app.dropped.send_modify(|n| *n += 1);
    }

    /// Delays the next `times` matching requests by `delay`, then serves them.
    pub fn delay_next(
        &self,
        method: Option<&str>,
        path_prefix: &str,
        times: usize,
        delay: Duration,
    ) {
        self.add_fault(method, path_prefix, times, FaultAction::Delay(delay));
    }

    fn add_fault(
        &self,
        method: Option<&str>,
        path_prefix: &str,
        times: usize,
        action: FaultAction,
    ) {
        self.push_fault(Fault {
            method: method.map(str::to_string),
            path_prefix: path_prefix.to_string(),
            query_contains: None,
            user: None,
            body_contains: None,
            remaining: times,
            action,
        });
    }

    /// Adds a fault as described (see [`Fault`]).
    pub fn push_fault(&self, fault: Fault) {
        self.app
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(fault);
    }

    /// Faults not used up yet.
    pub fn pending_faults(&self) -> Vec<Fault> {
        self.app
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn clear_faults(&self) {
        self.app
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Stops serving: open watches end, and this waits (up to 5 s) for the server to finish.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
