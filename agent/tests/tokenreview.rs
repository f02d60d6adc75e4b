//! TokenReview against a real kube-apiserver (started by tests/deploy/k8s.sh, which runs this test with
//! `--ignored` and the environment below): a ServiceAccount token minted by `kubectl create token --audience
//! hgw` is accepted with its identity, using the agent's own credentials from the Helm chart's
//! ServiceAccount and ClusterRole; the same account's token for the default audience, garbage, and a
//! reviewer without rights are refused. As the join authenticator (`--join-kubernetes`), the account
//! bounds the dataplane ids.
//!
//! HGW_TEST_KUBE_SERVER, HGW_TEST_KUBE_CA: the API server and its CA. HGW_TEST_KUBE_AGENT_TOKEN: a file with
//! the agent ServiceAccount's token. HGW_TEST_KUBE_HGW_TOKEN / HGW_TEST_KUBE_API_TOKEN: tokens of
//! ServiceAccount shop/web for audience hgw / the API server's. HGW_TEST_KUBE_NOBODY_TOKEN: a file with the
//! token of an account without the TokenReview right.

use std::path::PathBuf;

use hgw_agent::identity::join::{JoinAuthenticator, JoinError};
use hgw_agent::tokenreview::{KubernetesApi, TokenReviewError, TokenReviewer};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run tests/deploy/k8s.sh"))
}

fn reviewer(token_file: &str) -> TokenReviewer {
    let api = KubernetesApi {
        server: env("HGW_TEST_KUBE_SERVER"),
        ca_file: PathBuf::from(env("HGW_TEST_KUBE_CA")),
        token_file: PathBuf::from(env(token_file)),
    };
    TokenReviewer::new(api, "hgw").expect("reviewer")
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run by tests/deploy/k8s.sh"]
async fn service_account_tokens_are_checked_by_the_api_server() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let agent = reviewer("HGW_TEST_KUBE_AGENT_TOKEN");
    let identity = agent.review(&env("HGW_TEST_KUBE_HGW_TOKEN")).await.expect("a token for audience hgw");
    assert_eq!((identity.namespace.as_str(), identity.service_account.as_str()), ("shop", "web"));
    assert!(!identity.uid.is_empty());
    assert_eq!(identity.dataplane_id(), "k8s/shop/web");

    let other_audience = agent.review(&env("HGW_TEST_KUBE_API_TOKEN")).await.unwrap_err();
    assert!(matches!(other_audience, TokenReviewError::Unauthenticated { .. }), "{other_audience}");
    let garbage = agent.review("not-a-token").await.unwrap_err();
    assert!(matches!(garbage, TokenReviewError::Unauthenticated { .. }), "{garbage}");
    assert!(!garbage.to_string().contains("not-a-token"));

    // As the join authenticator: the account bounds the ids (the token is not bound to a pod).
    let joined = agent.authenticate(&env("HGW_TEST_KUBE_HGW_TOKEN"), "shop.web.dp-1").await.expect("join");
    assert_eq!(joined.dataplane_id, "shop.web.dp-1");
    let elsewhere = agent.authenticate(&env("HGW_TEST_KUBE_HGW_TOKEN"), "shop.nobody").await.unwrap_err();
    assert!(matches!(elsewhere, JoinError::IdNotAllowed { .. }), "{elsewhere}");
    let api_token = env("HGW_TEST_KUBE_API_TOKEN");
    let refused = agent.authenticate(&api_token, "shop.web.dp-1").await.unwrap_err();
    assert!(matches!(refused, JoinError::Refused(_)), "{refused}");
    assert!(!refused.to_string().contains(&api_token));

    let nobody = reviewer("HGW_TEST_KUBE_NOBODY_TOKEN");
    let refused = nobody.review(&env("HGW_TEST_KUBE_HGW_TOKEN")).await.unwrap_err();
    assert!(matches!(refused, TokenReviewError::Api { status: 403, .. }), "{refused}");
}
