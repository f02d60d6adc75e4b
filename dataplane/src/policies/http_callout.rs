//! `policy-http-callout` (gravitee-policy-http-callout 5.x, APIM 4.6 to 4.10): an HTTP call made
//! before the request (or response) goes on. Its answer is `#calloutResponse` (`status`, `headers`,
//! `content`) for `errorCondition` and the variables, which become context attributes.
//!
//! As Gravitee's policy: the URL, header values and body are rendered first (the exchange's EL);
//! `fireAndForget` goes on at once and ignores the answer; otherwise, with `exitOnError`, a call that
//! fails (connection, TLS, timeout) answers `errorStatusCode` `CALLOUT_HTTP_ERROR` with the failure's
//! message and an answer meeting the condition answers `errorStatusCode` `CALLOUT_EXIT_ON_ERROR` with
//! `errorContent` (EL, default `Request is terminated.`); the variables are set only when it goes on.
//! Engines differ where Gravitee's two implementations do: a failed call without `exitOnError` goes on
//! on the V3 engine but fails the request (`500`) on v4 engines, whose policy returns the error; the V3
//! engine's `CALLOUT_HTTP_ERROR` is always `500`; a variable whose EL fails is skipped on the V3 engine
//! and fails the request (`500`) on v4 engines.
//!
//! The call runs on the dataplane's async client (never blocking other requests), HTTP/1.1, TLS
//! trusting any certificate without a hostname check (Gravitee's `trustAll`, `verifyHost: false`).
//! hgw bounds it: [`CONNECT_TIMEOUT`], [`CALL_TIMEOUT`] for the whole answer, [`MAX_ANSWER`] bytes
//! of body, and [`MAX_FIRE_AND_FORGET`] calls in flight in the background.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use hgw_proto::v1 as pb;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};

use super::el::{CalloutAnswer, ElContext};
use super::{
    Attributes, Outcome, Policy, PolicyError, Reply, RequestExchange, ResponseExchange, ResponseResume, Resume,
    Verdict, header_name, invalid,
};
use crate::http::body::RequestBody;
use crate::http::tls::TlsOptions;
use crate::http::upstream::{ClientKey, HttpOptions, TlsKey, UpstreamClient, UpstreamError};

/// Time to connect to the callout's host.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for the whole answer (headers and body).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest callout answer body read; a larger one is a failed call.
pub const MAX_ANSWER: usize = 1024 * 1024;
/// Fire-and-forget calls in flight at once; past it a call is dropped with a warning.
pub const MAX_FIRE_AND_FORGET: usize = 1024;

const CALLOUT_HTTP_ERROR: &str = "CALLOUT_HTTP_ERROR";
const CALLOUT_EXIT_ON_ERROR: &str = "CALLOUT_EXIT_ON_ERROR";

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug)]
pub struct HttpCallout {
    config: Arc<Config>,
}

#[derive(Debug)]
struct Config {
    method: Method,
    url: hgw_el::Template,
    headers: Vec<(HeaderName, hgw_el::Template)>,
    body: Option<hgw_el::Template>,
    fire_and_forget: bool,
    exit_on_error: bool,
    error_condition: hgw_el::Expression,
    error_status: StatusCode,
    error_content: Option<hgw_el::Template>,
    variables: Vec<(String, Option<hgw_el::Template>)>,
}

/// The call to make, rendered from the exchange.
struct Call {
    method: Method,
    url: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

/// What the policy does to the exchange once the answer is in.
struct Effect {
    reply: Option<Reply>,
    attributes: Vec<(String, Option<String>)>,
}

impl HttpCallout {
    pub fn compile(config: pb::HttpCalloutPolicy) -> Result<HttpCallout, PolicyError> {
        const AT: &str = "policy-http-callout";
        let template =
            |field: String, text: &str| hgw_el::parse_template(text).map_err(|e| invalid(field, format!("EL {e}")));
        let method = Method::from_bytes(config.method.as_bytes())
            .map_err(|_| invalid(format!("{AT}.method"), "not an HTTP method"))?;
        let headers = config
            .headers
            .iter()
            .enumerate()
            .map(|(i, h)| {
                Ok((
                    header_name(&format!("{AT}.headers[{i}].name"), &h.name)?,
                    template(format!("{AT}.headers[{i}].value"), &h.value)?,
                ))
            })
            .collect::<Result<_, PolicyError>>()?;
        let variables = config
            .variables
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let value =
                    v.value.as_deref().map(|t| template(format!("{AT}.variables[{i}].value"), t)).transpose()?;
                Ok((v.name.clone(), value))
            })
            .collect::<Result<_, PolicyError>>()?;
        Ok(HttpCallout {
            config: Arc::new(Config {
                method,
                url: template(format!("{AT}.url"), &config.url)?,
                headers,
                body: (!config.body.is_empty()).then(|| template(format!("{AT}.body"), &config.body)).transpose()?,
                fire_and_forget: config.fire_and_forget,
                exit_on_error: config.exit_on_error,
                error_condition: hgw_el::parse(&config.error_condition)
                    .map_err(|e| invalid(format!("{AT}.errorCondition"), format!("EL {e}")))?,
                error_status: StatusCode::from_u16(u16::try_from(config.error_status_code).unwrap_or(500))
                    .map_err(|_| invalid(format!("{AT}.errorStatusCode"), "not an HTTP status"))?,
                error_content: (!config.error_content.is_empty())
                    .then(|| template(format!("{AT}.errorContent"), &config.error_content))
                    .transpose()?,
                variables,
            }),
        })
    }
}

/// Gravitee's answer to an error its v4 policy chain did not expect.
fn internal_error() -> Reply {
    Reply::error(StatusCode::INTERNAL_SERVER_ERROR, None, "Internal Server Error")
}

impl Config {
    /// Renders the call. A URL whose EL fails is Gravitee's failure for that engine.
    fn prepare(&self, el: &ElContext<'_>, legacy_engine: bool) -> Result<Call, Reply> {
        let url = match self.url.render_nullable(el) {
            Ok(Some(url)) => url,
            // Gravitee's template engine gives nothing back: the URL as configured is called.
            Ok(None) => self.url.source().to_owned(),
            Err(error) => {
                tracing::debug!(%error, "http-callout URL EL failed");
                return Err(if legacy_engine {
                    Reply::error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        Some(CALLOUT_HTTP_ERROR),
                        "Unable to apply expression language on the configured URL",
                    )
                } else {
                    internal_error()
                });
            }
        };
        let headers = self
            .headers
            .iter()
            .filter_map(|(name, value)| {
                // A header whose value renders null or fails is left out (Gravitee's V3 code).
                let value = value.render_nullable(el).ok().flatten()?;
                Some((name.clone(), HeaderValue::from_str(&value).ok()?))
            })
            .collect();
        let body = match &self.body {
            Some(body) => Bytes::from(el.render(body)),
            None => Bytes::new(),
        };
        Ok(Call { method: self.method.clone(), url, headers, body })
    }

    /// What the answer (or the failure) does to the exchange; `el` is the exchange's context.
    fn decide(&self, el: &ElContext<'_>, answer: Result<CalloutAnswer, String>, legacy_engine: bool) -> Effect {
        let fail = |reply| Effect { reply: Some(reply), attributes: Vec::new() };
        let answer = match answer {
            Ok(answer) => answer,
            Err(message) => {
                tracing::warn!(%message, "http-callout failed");
                return match (self.exit_on_error, legacy_engine) {
                    (true, true) => {
                        fail(Reply::error(StatusCode::INTERNAL_SERVER_ERROR, Some(CALLOUT_HTTP_ERROR), message))
                    }
                    (true, false) => fail(Reply::error(self.error_status, Some(CALLOUT_HTTP_ERROR), message)),
                    (false, true) => Effect { reply: None, attributes: Vec::new() },
                    (false, false) => fail(internal_error()),
                };
            }
        };
        let el = el.clone_with_callout(&answer);
        if self.exit_on_error {
            match self.error_condition.eval_bool(&el) {
                Ok(false) => {}
                Ok(true) => {
                    let content = self
                        .error_content
                        .as_ref()
                        .and_then(|t| t.render_nullable(&el).ok().flatten())
                        .filter(|c| !c.is_empty())
                        .unwrap_or_else(|| "Request is terminated.".to_owned());
                    return fail(Reply::error(self.error_status, Some(CALLOUT_EXIT_ON_ERROR), content));
                }
                Err(error) => {
                    tracing::debug!(%error, "http-callout errorCondition failed");
                    return fail(internal_error());
                }
            }
        }
        let mut attributes = Vec::with_capacity(self.variables.len());
        for (name, value) in &self.variables {
            let Some(value) = value else {
                attributes.push((name.clone(), None));
                continue;
            };
            match value.render_nullable(&el) {
                Ok(value) => attributes.push((name.clone(), value)),
                Err(error) if legacy_engine => {
                    tracing::debug!(%error, variable = %name, "http-callout variable skipped")
                }
                Err(error) => {
                    tracing::debug!(%error, variable = %name, "http-callout variable failed");
                    attributes.push((name.clone(), None));
                    return Effect { reply: Some(internal_error()), attributes };
                }
            }
        }
        Effect { reply: None, attributes }
    }
}

fn apply(attributes: &mut Attributes, set: Vec<(String, Option<String>)>) {
    for (name, value) in set {
        match (attributes.iter().position(|(n, _)| *n == name), value) {
            (Some(i), Some(value)) => attributes[i].1 = value,
            (Some(i), None) => {
                attributes.remove(i);
            }
            (None, Some(value)) => attributes.push((name, value)),
            (None, None) => {}
        }
    }
}

/// The callouts' client: one pool for every API, TLS trusting any certificate as Gravitee's.
fn client() -> &'static UpstreamClient {
    static CLIENT: OnceLock<UpstreamClient> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let http = HttpOptions { connect_timeout: CONNECT_TIMEOUT, ..HttpOptions::from(None) };
        let tls = TlsOptions { trust_all: true, verify_hostname: false, ..TlsOptions::default() };
        ClientKey::new(&http, true, Some(TlsKey::new(Arc::new(tls))), None).build()
    })
}

/// Makes the call; any failure is its message (Gravitee's `CALLOUT_HTTP_ERROR` text).
async fn call(call: Call) -> Result<CalloutAnswer, String> {
    let uri: Uri = call.url.trim().parse().map_err(|e| format!("Invalid URL {}: {e}", call.url))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!("Invalid URL {}: only http and https URLs are called", call.url));
    }
    let authority = uri.authority().map(ToString::to_string).unwrap_or_default();
    let mut request = Request::new(RequestBody::buffered(call.body));
    *request.method_mut() = call.method;
    *request.uri_mut() = uri;
    for (name, value) in call.headers {
        request.headers_mut().insert(name, value);
    }
    let exchange = async {
        let response = client().request(request).await.map_err(|error| match UpstreamError::classify(&error) {
            UpstreamError::ConnectionRefused => format!("Connection refused: {authority}"),
            UpstreamError::ConnectTimeout => format!("connection timed out: {authority}"),
            other => other.to_string(),
        })?;
        let (parts, body) = response.into_parts();
        let content = Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("the callout answer could not be read ({e}; at most {MAX_ANSWER} bytes)"))?
            .to_bytes();
        Ok(CalloutAnswer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            content: String::from_utf8_lossy(&content).into_owned(),
        })
    };
    tokio::time::timeout(CALL_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("The timeout period of {}ms has been exceeded", CALL_TIMEOUT.as_millis())))
}

/// Starts a fire-and-forget call in the background, unless too many are in flight.
fn fire(prepared: Call) {
    if IN_FLIGHT.fetch_add(1, Ordering::Relaxed) >= MAX_FIRE_AND_FORGET {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
        tracing::warn!(
            limit = MAX_FIRE_AND_FORGET,
            "http-callout: too many fire-and-forget calls in flight, one dropped"
        );
        return;
    }
    tokio::spawn(async move {
        if let Err(message) = call(prepared).await {
            tracing::debug!(%message, "fire-and-forget http-callout failed");
        }
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    });
}

impl Policy for HttpCallout {
    fn on_request(&self, exchange: &mut RequestExchange<'_>) -> Outcome {
        let prepared = match self.config.prepare(&exchange.el(), exchange.legacy_engine) {
            Ok(prepared) => prepared,
            Err(reply) => return Outcome::Respond(reply),
        };
        if self.config.fire_and_forget {
            fire(prepared);
            return Outcome::Continue;
        }
        let config = Arc::clone(&self.config);
        Outcome::Wait(Box::pin(async move {
            let answer = call(prepared).await;
            let resume = move |exchange: &mut RequestExchange<'_>| {
                let effect = config.decide(&exchange.el(), answer, exchange.legacy_engine);
                apply(exchange.attributes, effect.attributes);
                effect.reply
            };
            Verdict { resume: Some(Resume(Box::new(resume))), ..Verdict::default() }
        }))
    }

    fn on_response_wait(
        &self,
        exchange: &mut ResponseExchange<'_>,
    ) -> Option<BoxFuture<'static, Option<ResponseResume>>> {
        let prepared = match self.config.prepare(&exchange.el(), exchange.legacy_engine) {
            Ok(prepared) => prepared,
            Err(reply) => {
                exchange.failure = Some(reply);
                return None;
            }
        };
        if self.config.fire_and_forget {
            fire(prepared);
            return None;
        }
        let config = Arc::clone(&self.config);
        Some(Box::pin(async move {
            let answer = call(prepared).await;
            let resume = move |exchange: &mut ResponseExchange<'_>| {
                let effect = config.decide(&exchange.el(), answer, exchange.legacy_engine);
                apply(exchange.attributes, effect.attributes);
                if let Some(reply) = effect.reply {
                    exchange.failure = Some(reply);
                }
            };
            Some(ResponseResume(Box::new(resume)))
        }))
    }

    fn uses_el(&self) -> bool {
        true
    }

    fn reads_request_body(&self) -> bool {
        self.reads_content()
    }

    fn reads_response_body(&self) -> bool {
        self.reads_content()
    }
}

impl HttpCallout {
    fn reads_content(&self) -> bool {
        let c = &self.config;
        c.url.reads_content()
            || c.headers.iter().any(|(_, t)| t.reads_content())
            || c.body.as_ref().is_some_and(hgw_el::Template::reads_content)
            || c.error_content.as_ref().is_some_and(hgw_el::Template::reads_content)
            || c.error_condition.reads_content()
            || c.variables.iter().any(|(_, t)| t.as_ref().is_some_and(hgw_el::Template::reads_content))
    }
}
