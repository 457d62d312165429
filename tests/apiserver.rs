mod support;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use support::apiserver::ApiServer;

#[tokio::test]
async fn smoke() {
    let server = ApiServer::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    assert!(cms.get_opt("x").await.unwrap().is_none());
    server.shutdown().await;
}
