//! The one place that decides what a human may see of a compiled API: every view meant for people
//! (`hgw.v1.Admin/DumpConfig`, the node API, a dataplane's `/config`) goes through [`api`] or [`url`],
//! so a new secret-bearing field is redacted by changing this file alone.
//!
//! Redacted: JWT HMAC secrets, OAuth2 resources' client secrets, cache-redis resources' Redis passwords, generate-jwt signing keys, endpoint client private keys, endpoint proxy passwords, API-key hashes, credential headers
//! (endpoint, health-check, mock and transform-headers values of `Authorization`, `Proxy-Authorization`,
//! `Cookie`, API-key-like and token-like names) and the userinfo of endpoint targets.

use crate::v1::{Api, Flow, Header, step};

/// What replaces a secret value.
pub const REDACTED: &str = "[redacted]";

/// Whether a header name carries credentials (compared case-insensitively).
pub fn is_credential_header(name: &str) -> bool {
    let name = name.trim().to_ascii_lowercase();
    matches!(name.as_str(), "authorization" | "proxy-authorization" | "cookie" | "set-cookie")
        || ["api-key", "apikey", "api_key", "token", "secret", "password", "credential", "session"]
            .iter()
            .any(|part| name.contains(part))
}

/// `scheme://user:pw@host/…` → `scheme://[redacted]@host/…`; other text is returned unchanged.
pub fn url(target: &str) -> String {
    let Some(scheme_end) = target.find("://") else { return target.to_owned() };
    let rest = &target[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}{REDACTED}{}", &target[..scheme_end + 3], &rest[at..]),
        None => target.to_owned(),
    }
}

fn headers(list: &mut [Header]) {
    for header in list {
        if is_credential_header(&header.name) {
            header.value = REDACTED.to_owned();
        }
    }
}

fn flows(list: &mut [Flow]) {
    for flow in list {
        for step in flow.request.iter_mut().chain(flow.response.iter_mut()) {
            match step.policy.as_mut() {
                Some(step::Policy::Mock(mock)) => headers(&mut mock.headers),
                Some(step::Policy::TransformHeaders(transform)) => {
                    headers(&mut transform.add_headers);
                    headers(&mut transform.append_headers);
                }
                Some(step::Policy::GenerateJwt(jwt)) if !jwt.key.is_empty() => {
                    jwt.key = REDACTED.as_bytes().to_vec();
                }
                _ => {}
            }
        }
    }
}

/// A copy of `api` fit for people to read.
pub fn api(api: &Api) -> Api {
    let mut copy = api.clone();
    for plan in &mut copy.plans {
        if let Some(jwt) = plan.jwt.as_mut()
            && !jwt.hmac_secret.is_empty()
        {
            jwt.hmac_secret = REDACTED.to_owned();
        }
        if let Some(introspection) = plan.oauth2.as_mut().and_then(|o| o.introspection.as_mut())
            && !introspection.client_secret.is_empty()
        {
            introspection.client_secret = REDACTED.to_owned();
        }
        flows(&mut plan.flows);
    }
    flows(&mut copy.flows);
    for connection in copy.redis_caches.values_mut() {
        if !connection.password.is_empty() {
            connection.password = REDACTED.to_owned();
        }
    }
    for key in &mut copy.api_keys {
        key.key_sha256 = REDACTED.to_owned();
    }
    for group in &mut copy.endpoint_groups {
        if let Some(check) = group.health_check.as_mut() {
            headers(&mut check.headers);
        }
        for endpoint in &mut group.endpoints {
            endpoint.target = url(&endpoint.target);
            headers(&mut endpoint.headers);
            if let Some(tls) = endpoint.tls.as_mut()
                && !tls.client_key_pem.is_empty()
            {
                tls.client_key_pem = REDACTED.to_owned();
            }
            if let Some(proxy) = endpoint.proxy.as_mut()
                && !proxy.password.is_empty()
            {
                proxy.password = REDACTED.to_owned();
            }
        }
    }
    copy
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{
        ApiKey, Endpoint, EndpointGroup, EndpointProxy, GenerateJwtPolicy, JwtSecurity, Plan, Step, TlsOptions,
    };

    #[test]
    fn urls_lose_their_userinfo_only() {
        assert_eq!(url("http://u:pw@host:8080/p?q=1"), "http://[redacted]@host:8080/p?q=1");
        assert_eq!(url("https://host/p@x"), "https://host/p@x");
        assert_eq!(url("http://a@b@host/"), "http://[redacted]@host/");
        assert_eq!(url("not a url"), "not a url");
    }

    #[test]
    fn every_secret_is_replaced() {
        let original = Api {
            plans: vec![Plan {
                jwt: Some(JwtSecurity { hmac_secret: "hmac-s3cret".into(), ..Default::default() }),
                oauth2: Some(crate::v1::OAuth2Security {
                    introspection: Some(crate::v1::OAuth2Introspection {
                        client_secret: "oauth2-client-s3cret".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            api_keys: vec![ApiKey { key_sha256: "abcdef".into(), ..Default::default() }],
            flows: vec![Flow {
                request: vec![Step {
                    policy: Some(step::Policy::GenerateJwt(GenerateJwtPolicy {
                        key: b"jwt-signing-s3cret".to_vec(),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            endpoint_groups: vec![EndpointGroup {
                endpoints: vec![Endpoint {
                    target: "http://user:pw@backend/".into(),
                    headers: vec![
                        Header { name: "Authorization".into(), value: "Basic xyz".into() },
                        Header { name: "X-Trace".into(), value: "keep".into() },
                    ],
                    tls: Some(TlsOptions {
                        client_key_pem: "-----BEGIN PRIVATE KEY-----".into(),
                        ..Default::default()
                    }),
                    proxy: Some(EndpointProxy {
                        host: "proxy".into(),
                        username: "proxy-user".into(),
                        password: "proxy-s3cret".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = format!("{:?}", api(&original));
        let redacted = api(&original);
        let Some(step::Policy::GenerateJwt(jwt)) = &redacted.flows[0].request[0].policy else { panic!("step kept") };
        assert_eq!(jwt.key, REDACTED.as_bytes());
        for secret in [
            "hmac-s3cret",
            "oauth2-client-s3cret",
            "jwt-signing-s3cret",
            "abcdef",
            "user:pw",
            "Basic xyz",
            "BEGIN PRIVATE KEY",
            "proxy-s3cret",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("keep"));
    }
}
