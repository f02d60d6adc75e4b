//! Gravitee's `oauth2` plan (policy-oauth2) and the generic OAuth2 authorization server resource it
//! names (`gravitee-resource-oauth2-provider-generic`, resource type `oauth2`).
//!
//! The resource, with its client secret, is compiled into the plan's `introspection`, which only the
//! agent uses: dataplanes receive the plan without it (`grpc::discovery`) and ask the agent to
//! introspect (`hgw.v1.OAuth2/Introspect`). A plan naming no enabled resource, or a resource hgw does
//! not implement (Gravitee's AM or Keycloak resources), rejects the API: Gravitee would deploy it and
//! answer every request `401 OAUTH2_MISSING_SERVER`, which no one wants silently.

use hgw_proto::v1 as pb;
use serde_json::Value;

use super::{CompileError, check_el, err, string_list};
use crate::definition::model::{self, norm};

/// The plan's `security.configuration` (at `at`), with the API's `resources`.
pub(super) fn oauth2_security(
    configuration: &Value,
    at: &str,
    resources: &[model::Resource],
) -> Result<pb::OAuth2Security, CompileError> {
    let name = match configuration.get("oauthResource") {
        Some(Value::String(name)) if !name.trim().is_empty() => name.trim(),
        _ => return Err(err(format!("{at}.oauthResource"), "the plan names no OAuth2 resource")),
    };
    if name.contains("{#") {
        return Err(err(format!("{at}.oauthResource"), "Gravitee EL is not supported in this field"));
    }
    let (index, resource) =
        resources.iter().enumerate().find(|(_, r)| r.enabled && r.name == name).ok_or_else(|| {
            err(format!("{at}.oauthResource"), format!("no enabled resource of the API is named `{name}`"))
        })?;
    let introspection = generic_resource(resource, &format!("resources[{index}]"))?;
    if let Some(cache) = configuration.get("oauthCacheResource").and_then(Value::as_str)
        && !cache.trim().is_empty()
    {
        // The agent caches active answers itself (bounded, never past `exp`); a cache resource would
        // only change where, so it is accepted and not used.
        tracing::debug!(cache, "oauth2 plan: oauthCacheResource is served by the agent's own cache");
    }
    let flag = |field: &str, default: bool| configuration.get(field).and_then(Value::as_bool).unwrap_or(default);
    Ok(pb::OAuth2Security {
        required_scopes: string_list(configuration, "requiredScopes", at)?,
        check_required_scopes: flag("checkRequiredScopes", false),
        mode_strict: flag("modeStrict", true),
        extract_payload: flag("extractPayload", false),
        propagate_auth_header: flag("propagateAuthHeader", true),
        introspection: Some(introspection),
    })
}

/// The generic OAuth2 resource's configuration, as the agent will use it.
fn generic_resource(resource: &model::Resource, at: &str) -> Result<pb::OAuth2Introspection, CompileError> {
    match norm(&resource.resource_type).as_str() {
        "oauth2" => {}
        other => {
            return Err(err(
                format!("{at}.type"),
                format!(
                    "OAuth2 resource `{}` is of type `{other}`, which hgw does not support (only the generic \
                     OAuth2 authorization server, type `oauth2`)",
                    resource.name
                ),
            ));
        }
    }
    let at = format!("{at}.configuration");
    let configuration = model::object_or_json_string(&resource.configuration).map_err(|m| err(&at, m))?;
    // Gravitee evaluates the resource's EL once at deployment (secrets, properties): not supported here.
    check_el(&configuration, &at, &|_: &str| false)?;
    let text = |field: &str| -> String {
        configuration.get(field).and_then(Value::as_str).unwrap_or_default().trim().to_owned()
    };
    let flag = |field: &str| configuration.get(field).and_then(Value::as_bool).unwrap_or(false);

    let server = text("authorizationServerUrl");
    let endpoint = text("introspectionEndpoint");
    if endpoint.is_empty() {
        return Err(err(format!("{at}.introspectionEndpoint"), "the resource has no introspection endpoint"));
    }
    let url = if server.is_empty() { endpoint } else { format!("{server}/{endpoint}") };
    let url = merge_slashes(&url);
    let parsed = reqwest::Url::parse(&url)
        .map_err(|e| err(format!("{at}.introspectionEndpoint"), format!("`{url}` is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(err(format!("{at}.introspectionEndpoint"), format!("`{url}` is not an http(s) URL")));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(err(
            format!("{at}.introspectionEndpoint"),
            "credentials in the URL are not supported: use clientId and clientSecret",
        ));
    }
    let method = match text("introspectionEndpointMethod").to_ascii_uppercase().as_str() {
        // Gravitee's form defaults to GET.
        "" | "GET" => "GET",
        "POST" => "POST",
        other => {
            return Err(err(format!("{at}.introspectionEndpointMethod"), format!("`{other}` is not GET or POST")));
        }
    };
    let use_header = flag("useClientAuthorizationHeader");
    let header_name = match text("clientAuthorizationHeaderName") {
        name if name.is_empty() => "Authorization".to_owned(),
        name => name,
    };
    if use_header && axum::http::HeaderName::from_bytes(header_name.as_bytes()).is_err() {
        return Err(err(
            format!("{at}.clientAuthorizationHeaderName"),
            format!("`{header_name}` is not a header name"),
        ));
    }
    let scheme = match text("clientAuthorizationHeaderScheme") {
        scheme if scheme.is_empty() => "Basic".to_owned(),
        scheme => scheme,
    };
    let named = |on: &str, field: &str, default: &str| -> Result<String, CompileError> {
        if !flag(on) {
            return Ok(String::new());
        }
        match text(field) {
            name if !name.is_empty() => Ok(name),
            _ if !default.is_empty() => Ok(default.to_owned()),
            _ => Err(err(format!("{at}.{field}"), format!("`{on}` is set but no name is given"))),
        }
    };
    let token_query_param = named("tokenIsSuppliedByQueryParam", "tokenQueryParamName", "token")?;
    let token_header = named("tokenIsSuppliedByHttpHeader", "tokenHeaderName", "")?;
    if !token_header.is_empty() && axum::http::HeaderName::from_bytes(token_header.as_bytes()).is_err() {
        return Err(err(format!("{at}.tokenHeaderName"), format!("`{token_header}` is not a header name")));
    }
    let token_form_param = if method == "POST" {
        named("tokenIsSuppliedByFormUrlEncoded", "tokenFormUrlEncodedName", "token")?
    } else {
        String::new()
    };
    if token_query_param.is_empty() && token_header.is_empty() && token_form_param.is_empty() {
        return Err(err(
            &at,
            "the token reaches the introspection endpoint nowhere: set tokenIsSuppliedByQueryParam, \
             tokenIsSuppliedByHttpHeader or (with POST) tokenIsSuppliedByFormUrlEncoded",
        ));
    }
    if configuration.get("useSystemProxy").and_then(Value::as_bool) == Some(true)
        || configuration.get("proxy").and_then(|p| p.get("enabled")).and_then(Value::as_bool) == Some(true)
    {
        return Err(err(format!("{at}.proxy"), "a proxy to the authorization server is not supported"));
    }
    let ssl = configuration.get("ssl");
    let trust_all = ssl.and_then(|s| s.get("trustAll")).and_then(Value::as_bool) == Some(true);
    if ssl
        .and_then(|s| s.get("keyStore"))
        .and_then(|k| k.get("type"))
        .and_then(Value::as_str)
        .is_some_and(|t| !t.trim().is_empty() && !t.eq_ignore_ascii_case("none"))
    {
        return Err(err(
            format!("{at}.ssl.keyStore"),
            "client certificates to the authorization server are not supported",
        ));
    }
    Ok(pb::OAuth2Introspection {
        resource: resource.name.clone(),
        url,
        method: method.to_owned(),
        client_id: text("clientId"),
        client_secret: configuration.get("clientSecret").and_then(Value::as_str).unwrap_or_default().to_owned(),
        use_client_authorization_header: use_header,
        client_authorization_header_name: header_name,
        client_authorization_header_scheme: scheme,
        token_query_param,
        token_header,
        token_form_param,
        scope_separator: match configuration.get("scopeSeparator").and_then(Value::as_str) {
            Some(separator) if !separator.is_empty() => separator.to_owned(),
            _ => " ".to_owned(),
        },
        user_claim: match text("userClaim") {
            claim if claim.is_empty() => "sub".to_owned(),
            claim => claim,
        },
        trust_all,
    })
}

/// Gravitee's duplicate-slash removal on the joined URL (not after `http:`/`https:`).
fn merge_slashes(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => ("", url),
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    let mut previous_slash = false;
    for c in rest.chars() {
        if c == '/' && previous_slash {
            continue;
        }
        previous_slash = c == '/';
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn resource(kind: &str, configuration: Value) -> model::Resource {
        model::Resource { name: "as".into(), resource_type: kind.into(), enabled: true, configuration }
    }

    fn generic() -> Value {
        json!({
            "authorizationServerUrl": "https://idp.example/",
            "introspectionEndpoint": "/oauth2/introspect",
            "introspectionEndpointMethod": "POST",
            "clientId": "gw",
            "clientSecret": "s3cret",
            "useClientAuthorizationHeader": true,
            "clientAuthorizationHeaderName": "Authorization",
            "clientAuthorizationHeaderScheme": "Basic",
            "tokenIsSuppliedByFormUrlEncoded": true,
            "tokenFormUrlEncodedName": "token",
            "userClaim": "sub"
        })
    }

    #[test]
    fn plan_and_generic_resource_compile() {
        let plan = json!({"oauthResource": "as", "checkRequiredScopes": true, "requiredScopes": ["read"],
            "extractPayload": true, "propagateAuthHeader": false});
        let compiled = oauth2_security(&plan, "plans[0].security.configuration", &[resource("oauth2", generic())])
            .expect("compiles");
        assert!(compiled.check_required_scopes && compiled.mode_strict && compiled.extract_payload);
        assert!(!compiled.propagate_auth_header);
        assert_eq!(compiled.required_scopes, ["read"]);
        let i = compiled.introspection.expect("introspection");
        assert_eq!(i.url, "https://idp.example/oauth2/introspect");
        assert_eq!(
            (i.method.as_str(), i.token_form_param.as_str(), i.token_query_param.as_str()),
            ("POST", "token", "")
        );
        assert_eq!(i.client_secret, "s3cret");
        assert_eq!(i.scope_separator, " ");
        assert!(!format!("{i:?}").contains("s3cret"), "Debug hides the secret");
    }

    #[test]
    fn a_missing_or_unsupported_resource_rejects_the_plan() {
        let plan = json!({"oauthResource": "as"});
        let e = oauth2_security(&plan, "plans[0].security.configuration", &[]).unwrap_err();
        assert_eq!(e.path, "plans[0].security.configuration.oauthResource");
        let e = oauth2_security(&json!({}), "p", &[resource("oauth2", generic())]).unwrap_err();
        assert_eq!(e.path, "p.oauthResource");
        let e = oauth2_security(&plan, "p", &[resource("oauth2-am-resource", generic())]).unwrap_err();
        assert_eq!(e.path, "resources[0].type");
        assert!(e.message.contains("oauth2-am-resource"), "{}", e.message);
        let mut disabled = resource("oauth2", generic());
        disabled.enabled = false;
        assert!(oauth2_security(&plan, "p", &[disabled]).is_err());
    }

    #[test]
    fn resource_fields_are_checked() {
        let plan = json!({"oauthResource": "as"});
        let with = |patch: Value| {
            let mut c = generic();
            for (k, v) in patch.as_object().unwrap() {
                c[k] = v.clone();
            }
            oauth2_security(&plan, "p", &[resource("oauth2", c)])
        };
        assert_eq!(
            with(json!({"introspectionEndpointMethod": "PUT"})).unwrap_err().path,
            "resources[0].configuration.introspectionEndpointMethod"
        );
        assert_eq!(
            with(json!({"authorizationServerUrl": "", "introspectionEndpoint": "ftp://x/y"})).unwrap_err().path,
            "resources[0].configuration.introspectionEndpoint"
        );
        assert_eq!(
            with(json!({"clientSecret": "{#secrets.get('x')}"})).unwrap_err().path,
            "resources[0].configuration.clientSecret"
        );
        assert!(with(json!({"tokenIsSuppliedByFormUrlEncoded": false})).is_err(), "the token must go somewhere");
        let get = with(json!({"introspectionEndpointMethod": "GET", "tokenIsSuppliedByQueryParam": true,
            "tokenQueryParamName": "access_token"}))
        .unwrap()
        .introspection
        .unwrap();
        assert_eq!((get.token_query_param.as_str(), get.token_form_param.as_str()), ("access_token", ""));
    }

    #[test]
    fn slashes_merge_as_gravitee() {
        assert_eq!(merge_slashes("http://a:1//b///c"), "http://a:1/b/c");
        assert_eq!(merge_slashes("https://a/b"), "https://a/b");
    }
}
