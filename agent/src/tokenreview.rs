//! Kubernetes ServiceAccount identity: the agent asks the API server who a projected ServiceAccount
//! token belongs to (`TokenReview`, `authentication.k8s.io/v1`) before it lets a sidecar join.
//!
//! The sidecar presents the token the kubelet projected into its pod for audience `hgw` (see
//! `inject`); the agent posts it to `/apis/authentication.k8s.io/v1/tokenreviews` with its own
//! credentials (its ServiceAccount, bound to a ClusterRole allowing `tokenreviews: create`) and the
//! audience it expects. A token for another audience, expired, or of a deleted pod is refused by the API
//! server; a token of a user that is not a ServiceAccount is refused here. The identity is the
//! ServiceAccount (`system:serviceaccount:NS:NAME`) plus, when the API server says so, the pod.
//!
//! Credentials are read for every review: projected tokens rotate, and a file re-read is cheap next to
//! the round trip.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::identity::check_name;
use crate::identity::join::{Grant, JoinAuthenticator, JoinError};

/// Where a pod finds its own ServiceAccount credentials (in-cluster).
pub const IN_CLUSTER_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The audience sidecar tokens are minted for, and the one the agent checks by default.
pub const DEFAULT_AUDIENCE: &str = "hgw";
/// Longest wait for the API server: a join is retried by the dataplane with backoff.
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach the API server and as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesApi {
    /// `https://host:port` of the API server.
    pub server: String,
    /// CA bundle (PEM) that signed the API server's certificate.
    pub ca_file: PathBuf,
    /// Bearer token file of the agent's own identity (re-read for every review).
    pub token_file: PathBuf,
}

impl KubernetesApi {
    /// The agent's own ServiceAccount, as every pod sees it (`KUBERNETES_SERVICE_HOST`/`_PORT` and the
    /// files in [`IN_CLUSTER_DIR`]); `None` outside a cluster.
    pub fn in_cluster(env: &std::collections::HashMap<String, String>) -> Option<KubernetesApi> {
        let host = env.get("KUBERNETES_SERVICE_HOST")?;
        let port = env.get("KUBERNETES_SERVICE_PORT").map(String::as_str).unwrap_or("443");
        let host = if host.contains(':') { format!("[{host}]") } else { host.clone() };
        Some(KubernetesApi {
            server: format!("https://{host}:{port}"),
            ca_file: Path::new(IN_CLUSTER_DIR).join("ca.crt"),
            token_file: Path::new(IN_CLUSTER_DIR).join("token"),
        })
    }
}

/// Who a token belongs to, as the API server vouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountIdentity {
    pub namespace: String,
    pub service_account: String,
    /// The ServiceAccount's uid: a deleted and re-created account is another identity.
    pub uid: String,
    /// The pod the token was projected into (bound tokens), when the API server says.
    pub pod: Option<String>,
}

impl ServiceAccountIdentity {
    /// The dataplane identity the agent records: `k8s/{namespace}/{service account}[/{pod}]`.
    pub fn dataplane_id(&self) -> String {
        match &self.pod {
            Some(pod) => format!("k8s/{}/{}/{}", self.namespace, self.service_account, pod),
            None => format!("k8s/{}/{}", self.namespace, self.service_account),
        }
    }
}

/// Why a token was not accepted. Messages never carry the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenReviewError {
    #[error("the token is not valid for audience {audience}: {reason}")]
    Unauthenticated { audience: String, reason: String },
    #[error("the token belongs to {0:?}, not a ServiceAccount")]
    NotAServiceAccount(String),
    #[error("the API server refused the review ({status}): {message}")]
    Api { status: u16, message: String },
    #[error("cannot reach the API server: {0}")]
    Transport(String),
    #[error("{path}: {problem}")]
    Credentials { path: String, problem: String },
    #[error("unexpected TokenReview answer: {0}")]
    Answer(String),
}

/// A TokenReview client for one API server and one expected audience.
#[derive(Debug, Clone)]
pub struct TokenReviewer {
    api: KubernetesApi,
    audience: String,
    client: reqwest::Client,
}

impl TokenReviewer {
    /// Reads the CA now (a wrong path is a configuration error at start, not at the first join).
    pub fn new(api: KubernetesApi, audience: &str) -> Result<TokenReviewer, TokenReviewError> {
        let ca_path = api.ca_file.display().to_string();
        let pem = std::fs::read(&api.ca_file)
            .map_err(|e| TokenReviewError::Credentials { path: ca_path.clone(), problem: e.to_string() })?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| TokenReviewError::Credentials { path: ca_path.clone(), problem: e.to_string() })?;
        if certificates.is_empty() {
            return Err(TokenReviewError::Credentials { path: ca_path, problem: "no certificate".into() });
        }
        let mut builder = reqwest::Client::builder().timeout(REVIEW_TIMEOUT).tls_built_in_root_certs(false);
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
        let client = builder.build().map_err(|e| TokenReviewError::Transport(e.to_string()))?;
        Ok(TokenReviewer { api, audience: audience.to_owned(), client })
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Asks the API server who `token` belongs to; only an authenticated ServiceAccount for our
    /// audience passes.
    pub async fn review(&self, token: &str) -> Result<ServiceAccountIdentity, TokenReviewError> {
        let token_path = self.api.token_file.display().to_string();
        let own = std::fs::read_to_string(&self.api.token_file)
            .map_err(|e| TokenReviewError::Credentials { path: token_path.clone(), problem: e.to_string() })?;
        let own = own.trim();
        if own.is_empty() {
            return Err(TokenReviewError::Credentials { path: token_path, problem: "empty".into() });
        }
        let body = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token.trim(), "audiences": [self.audience]},
        });
        let url = format!("{}/apis/authentication.k8s.io/v1/tokenreviews", self.api.server.trim_end_matches('/'));
        let response = self
            .client
            .post(url)
            .bearer_auth(own)
            .json(&body)
            .send()
            .await
            .map_err(|e| TokenReviewError::Transport(without_url(&e)))?;
        let status = response.status();
        let answer: Value = response.json().await.map_err(|e| TokenReviewError::Answer(without_url(&e)))?;
        if !status.is_success() {
            let message = answer.get("message").and_then(Value::as_str).unwrap_or("").to_owned();
            return Err(TokenReviewError::Api { status: status.as_u16(), message });
        }
        identity_from(&answer, &self.audience).map_err(|error| scrub(error, token.trim()))
    }
}

/// The API server's reasons are its own words; should one ever quote the token, it is cut out here.
fn scrub(error: TokenReviewError, token: &str) -> TokenReviewError {
    match error {
        TokenReviewError::Unauthenticated { audience, reason } if !token.is_empty() && reason.contains(token) => {
            TokenReviewError::Unauthenticated { audience, reason: reason.replace(token, "[token]") }
        }
        other => other,
    }
}

/// ServiceAccount tokens as join tokens (`--join-kubernetes`): the API server vouches for the account,
/// and the account bounds the dataplane ids it may use. A token bound to a pod (the sidecar's projected
/// token) allows the pod's name, which is what the injected sidecar asks for; any other token (`kubectl
/// create token`) allows `NAMESPACE.SERVICEACCOUNT` and `NAMESPACE.SERVICEACCOUNT.*`, so one account
/// cannot take the id of another's dataplanes.
#[tonic::async_trait]
impl JoinAuthenticator for TokenReviewer {
    async fn authenticate(&self, token: &str, requested_id: &str) -> Result<Grant, JoinError> {
        check_name(requested_id).map_err(|e| JoinError::BadId(e.to_string()))?;
        let identity = self.review(token).await.map_err(|error| match error {
            TokenReviewError::Unauthenticated { .. } | TokenReviewError::NotAServiceAccount(_) => {
                JoinError::Refused(error.to_string())
            }
            other => JoinError::Unavailable(other.to_string()),
        })?;
        allowed_id(&identity, requested_id)?;
        tracing::info!(dataplane = requested_id, service_account = %identity.dataplane_id(),
            uid = %identity.uid, "ServiceAccount token accepted (TokenReview)");
        Ok(Grant { dataplane_id: requested_id.to_owned() })
    }
}

/// Whether `identity` may act as dataplane `id` (see [`TokenReviewer`]'s [`JoinAuthenticator`]).
fn allowed_id(identity: &ServiceAccountIdentity, id: &str) -> Result<(), JoinError> {
    let (allowed, pattern) = match &identity.pod {
        Some(pod) => (id == pod, pod.clone()),
        None => {
            let account = format!("{}.{}", identity.namespace, identity.service_account);
            let under = id.strip_prefix(account.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('.'));
            (under, format!("{account}.*"))
        }
    };
    if allowed { Ok(()) } else { Err(JoinError::IdNotAllowed { id: id.to_owned(), pattern }) }
}

/// reqwest errors name the URL; ours has no secret in it, but keep messages short and stable.
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), "");
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The identity in a TokenReview answer (`status`), or why there is none.
pub fn identity_from(answer: &Value, audience: &str) -> Result<ServiceAccountIdentity, TokenReviewError> {
    let status = answer.get("status").ok_or_else(|| TokenReviewError::Answer("no status".into()))?;
    if status.get("authenticated").and_then(Value::as_bool) != Some(true) {
        let reason = status.get("error").and_then(Value::as_str).unwrap_or("not authenticated").to_owned();
        return Err(TokenReviewError::Unauthenticated { audience: audience.to_owned(), reason });
    }
    // The API server answers with the audiences the token is valid for among those asked (the
    // intersection): ours must be there. No list is no confirmation: a token authenticated for the API
    // server's own audiences (or by an authenticator that ignores audiences) is not a token for us.
    let confirmed = status
        .get("audiences")
        .and_then(Value::as_array)
        .is_some_and(|audiences| audiences.iter().any(|a| a.as_str() == Some(audience)));
    if !confirmed {
        return Err(TokenReviewError::Unauthenticated {
            audience: audience.to_owned(),
            reason: "the API server did not confirm the audience".into(),
        });
    }
    let user = status.get("user").ok_or_else(|| TokenReviewError::Answer("authenticated without user".into()))?;
    let username = user.get("username").and_then(Value::as_str).unwrap_or_default();
    let Some(rest) = username.strip_prefix("system:serviceaccount:") else {
        return Err(TokenReviewError::NotAServiceAccount(username.to_owned()));
    };
    let Some((namespace, service_account)) = rest.split_once(':') else {
        return Err(TokenReviewError::NotAServiceAccount(username.to_owned()));
    };
    if namespace.is_empty() || service_account.is_empty() || service_account.contains(':') {
        return Err(TokenReviewError::NotAServiceAccount(username.to_owned()));
    }
    let pod =
        user.pointer("/extra/authentication.kubernetes.io~1pod-name/0").and_then(Value::as_str).map(str::to_owned);
    Ok(ServiceAccountIdentity {
        namespace: namespace.to_owned(),
        service_account: service_account.to_owned(),
        uid: user.get("uid").and_then(Value::as_str).unwrap_or_default().to_owned(),
        pod,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_account_answer_gives_its_identity() {
        let answer = json!({"status": {"authenticated": true, "audiences": ["hgw"], "user": {
            "username": "system:serviceaccount:shop:web", "uid": "u-1",
            "extra": {"authentication.kubernetes.io/pod-name": ["web-7f9c"]},
        }}});
        let identity = identity_from(&answer, "hgw").unwrap();
        assert_eq!(identity.dataplane_id(), "k8s/shop/web/web-7f9c");
        assert_eq!(identity.uid, "u-1");
    }

    #[test]
    fn refusals_are_named() {
        let unauthenticated = json!({"status": {"authenticated": false, "error": "token has invalid audience"}});
        assert!(matches!(identity_from(&unauthenticated, "hgw"), Err(TokenReviewError::Unauthenticated { .. })));
        let other_audience = json!({"status": {"authenticated": true, "audiences": ["api"], "user": {"username": "system:serviceaccount:a:b"}}});
        assert!(matches!(identity_from(&other_audience, "hgw"), Err(TokenReviewError::Unauthenticated { .. })));
        let no_audiences =
            json!({"status": {"authenticated": true, "user": {"username": "system:serviceaccount:a:b"}}});
        assert!(matches!(identity_from(&no_audiences, "hgw"), Err(TokenReviewError::Unauthenticated { .. })));
        let empty = json!({"status": {"authenticated": true, "audiences": [], "user": {"username": "system:serviceaccount:a:b"}}});
        assert!(matches!(identity_from(&empty, "hgw"), Err(TokenReviewError::Unauthenticated { .. })));
        let user = json!({"status": {"authenticated": true, "audiences": ["hgw"], "user": {"username": "admin"}}});
        assert_eq!(identity_from(&user, "hgw"), Err(TokenReviewError::NotAServiceAccount("admin".into())));
        let odd = json!({"status": {"authenticated": true, "audiences": ["hgw"], "user": {"username": "system:serviceaccount:a"}}});
        assert!(identity_from(&odd, "hgw").is_err());
        assert!(identity_from(&json!({}), "hgw").is_err());
    }

    #[test]
    fn the_account_bounds_the_dataplane_id() {
        let mut identity = ServiceAccountIdentity {
            namespace: "shop".into(),
            service_account: "web".into(),
            uid: "u".into(),
            pod: None,
        };
        assert!(allowed_id(&identity, "shop.web").is_ok());
        assert!(allowed_id(&identity, "shop.web.dp-1").is_ok());
        let other = allowed_id(&identity, "shop.webby").unwrap_err();
        assert_eq!(
            other.to_string(),
            "this join token does not allow dataplane id `shop.webby` (allowed: `shop.web.*`)"
        );
        assert!(allowed_id(&identity, "dp-1").is_err());
        identity.pod = Some("web-7f9c".into());
        assert!(allowed_id(&identity, "web-7f9c").is_ok());
        assert!(allowed_id(&identity, "shop.web").is_err());
    }

    #[test]
    fn a_quoted_token_is_cut_out_of_reasons() {
        let error =
            TokenReviewError::Unauthenticated { audience: "hgw".into(), reason: "bad token abc.def.ghi".into() };
        assert_eq!(
            scrub(error, "abc.def.ghi").to_string(),
            "the token is not valid for audience hgw: bad token [token]"
        );
    }

    #[test]
    fn in_cluster_needs_the_service_host() {
        let mut env = std::collections::HashMap::new();
        assert!(KubernetesApi::in_cluster(&env).is_none());
        env.insert("KUBERNETES_SERVICE_HOST".to_owned(), "10.96.0.1".to_owned());
        assert_eq!(KubernetesApi::in_cluster(&env).unwrap().server, "https://10.96.0.1:443");
    }
}
