//! Gravitee's JavaScript policies, run in an embedded QuickJS engine (rquickjs):
//! - `js` (gravitee-policy-js, GraalJS, APIM 4.11 and later): method-style bindings
//!   (`request.headers().set(..)`, `request.path()`, `result.fail(..)`, `context.get(..)`, `Base64`,
//!   `atob`/`btoa`); a script that throws answers `500 JS_EXECUTION_FAILURE` "JavaScript execution
//!   failed" ("Timeout" when it runs out of time);
//! - `javascript` (gravitee-policy-javascript, Nashorn): bean-style bindings (`request.headers.set(..)`,
//!   `request.path`, `result.state = State.FAILURE`, `context.attributes.x = ..`), scripts in strict
//!   mode as Nashorn's `-strict`; with content, the script's completion value is the new body; a script
//!   that throws answers `500 JAVASCRIPT_EXECUTION_FAILURE` "Internal Server Error" (on the V3 engine,
//!   a 500 with the error's text).
//!
//! A script that sets `result` to a failure answers its `code`, `key` (response templates), `error`
//! (the message; a JSON `contentType` sends it as it is) as Gravitee's failure processor does.
//!
//! **Sandbox** ([`engine`]): each run has its own QuickJS runtime (no state is shared between requests
//! or APIs), without QuickJS's libc: no files, network, processes, timers or module loading; bounded in
//! heap ([`engine::MEMORY_LIMIT`]), stack and time ([`GRAAL_TIMEOUT`], Gravitee's `policy.js.timeout`
//! default; Gravitee gives the Nashorn policy no limit at all, hgw gives it [`NASHORN_TIMEOUT`]).
//! Scripts run on tokio's blocking pool, [`max_concurrent`] at once, never on the proxy's workers.
//!
//! **Bindings.** The host exposes nothing but a snapshot: the prelude (`javascript/prelude.js`) builds
//! the objects over JSON of the exchange, and after the script the state comes back as JSON, is
//! validated here (header names and values, status) and applied. What a script cannot do here
//! that it can in Gravitee: `httpClient` and `Request` (the Nashorn policy's deprecated HTTP client),
//! `context.dictionaries()` (always empty: hgw has no dictionaries), message APIs' `message`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use hgw_proto::v1 as pb;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::sync::Semaphore;

use super::{Outcome, Phase, Policy, Reply, RequestExchange, ResponseExchange, ResponseResume, Resume, Verdict};
use crate::policies::el::RequestInfo;

mod engine;

use engine::{Done, Failure, GRAAL_TIMEOUT, Job, NASHORN_TIMEOUT, RequestState, ResponseState, Run, State, execute};

/// Distinct `result.key` values kept as error keys (response templates, analytics); a script that
/// makes up keys per request cannot grow the dataplane's memory past this.
const MAX_KEYS: usize = 1024;

const JS_EXECUTION_FAILURE: &str = "JS_EXECUTION_FAILURE";
const JAVASCRIPT_EXECUTION_FAILURE: &str = "JAVASCRIPT_EXECUTION_FAILURE";

#[derive(Debug)]
pub struct Javascript {
    graal: bool,
    phase: Phase,
    /// What runs in this step's phase on Gravitee's v4 engines, and on its V3 engine (v2 APIs);
    /// shared with each request's job, not copied.
    modern: Arc<[Run]>,
    legacy: Arc<[Run]>,
}

impl Javascript {
    /// Which scripts run in `phase`, as Gravitee's policies decide it.
    pub fn compile(config: pb::JavascriptPolicy, phase: Phase) -> Javascript {
        let script = |text: &str| (!text.trim().is_empty()).then(|| Arc::<str>::from(text));
        let request = phase == Phase::Request;
        let (modern, legacy) = if config.graal {
            // `js`: the script, in whichever phase it was put.
            let run = script(&config.script).map(|s| Run {
                scripts: vec![s],
                content: config.read_content,
                override_content: config.read_content && config.override_content,
            });
            (run.clone().into_iter().collect(), run.into_iter().collect())
        } else {
            let (head, body) = if request {
                (&config.on_request_script, &config.on_request_content_script)
            } else {
                (&config.on_response_script, &config.on_response_content_script)
            };
            // v4 engines (JavascriptPolicy.onRequest/onResponse): with content, every configured
            // script runs on the body, in `getScripts()` order, the last one's output replacing it.
            let modern = if script(&config.script).is_none() && script(head).is_none() && script(body).is_none() {
                Vec::new()
            } else if (script(&config.script).is_some() && config.read_content) || script(body).is_some() {
                let all = [
                    &config.script,
                    &config.on_request_script,
                    &config.on_request_content_script,
                    &config.on_response_script,
                    &config.on_response_content_script,
                ];
                vec![Run {
                    scripts: all.into_iter().filter_map(|s| script(s)).collect(),
                    content: true,
                    override_content: config.override_content
                        || script(&config.on_request_content_script).is_some()
                        || script(&config.on_response_content_script).is_some(),
                }]
            } else {
                let only = script(&config.script).or_else(|| script(head));
                only.map(|s| Run { scripts: vec![s], content: false, override_content: false }).into_iter().collect()
            };
            // The V3 engine: the phase's script on the head, then its content script on the body
            // (whose result is the new body), each in its own context.
            let mut legacy = Vec::new();
            if let Some(s) = script(head) {
                legacy.push(Run { scripts: vec![s], content: false, override_content: false });
            }
            if let Some(s) = script(body) {
                legacy.push(Run { scripts: vec![s], content: true, override_content: true });
            }
            (modern, legacy)
        };
        Javascript { graal: config.graal, phase, modern: modern.into(), legacy: legacy.into() }
    }

    fn runs(&self, legacy_engine: bool) -> &Arc<[Run]> {
        if legacy_engine { &self.legacy } else { &self.modern }
    }

    fn reads_content(&self) -> bool {
        self.modern.iter().chain(self.legacy.iter()).any(|run| run.content)
    }

    fn job(&self, state: State, legacy_engine: bool) -> Job {
        Job {
            graal: self.graal,
            legacy: legacy_engine,
            phase: match self.phase {
                Phase::Request => "request",
                Phase::Response => "response",
            },
            runs: Arc::clone(self.runs(legacy_engine)),
            state,
            timeout: if self.graal { GRAAL_TIMEOUT } else { NASHORN_TIMEOUT },
        }
    }
}

impl Policy for Javascript {
    fn on_request(&self, exchange: &mut RequestExchange<'_>) -> Outcome {
        if self.runs(exchange.legacy_engine).is_empty() {
            return Outcome::Continue;
        }
        let state = State::of_request(exchange);
        let job = self.job(state.clone(), exchange.legacy_engine);
        let (graal, legacy_engine) = (self.graal, exchange.legacy_engine);
        Outcome::Wait(Box::pin(async move {
            let done = run(job).await;
            let resume = move |exchange: &mut RequestExchange<'_>| {
                let failure = match done {
                    Err(failure) => failure,
                    Ok(done) => apply_request(exchange, &state, done).err().map(Failure::Script)?,
                };
                Some(failure_reply(graal, failure, legacy_engine))
            };
            Verdict { resume: Some(Resume(Box::new(resume))), ..Verdict::default() }
        }))
    }

    fn on_response_wait(
        &self,
        exchange: &mut ResponseExchange<'_>,
    ) -> Option<futures::future::BoxFuture<'static, Option<ResponseResume>>> {
        if self.runs(exchange.legacy_engine).is_empty() {
            return None;
        }
        let state = State::of_response(exchange);
        let job = self.job(state.clone(), exchange.legacy_engine);
        let (graal, legacy_engine) = (self.graal, exchange.legacy_engine);
        Some(Box::pin(async move {
            let done = run(job).await;
            let resume = move |exchange: &mut ResponseExchange<'_>| {
                let failure = match done {
                    Err(failure) => Some(failure),
                    Ok(done) => apply_response(exchange, &state, done).err().map(Failure::Script),
                };
                if let Some(failure) = failure {
                    exchange.failure = Some(failure_reply(graal, failure, legacy_engine));
                }
            };
            Some(ResponseResume(Box::new(resume)))
        }))
    }

    fn uses_el(&self) -> bool {
        // Not EL, but the same request facts (ids, addresses, properties) fill the bindings.
        true
    }

    fn reads_request_body(&self) -> bool {
        self.reads_content()
    }

    fn reads_response_body(&self) -> bool {
        self.reads_content()
    }
}

/// The client's answer for a script that failed or set a failure.
fn failure_reply(graal: bool, failure: Failure, legacy_engine: bool) -> Reply {
    // The reason stays out of warnings: a script's error text can carry what the script read.
    match &failure {
        Failure::Script(reason) => tracing::debug!(%reason, "JavaScript policy: the script failed"),
        Failure::Timeout(reason) => tracing::debug!(%reason, "JavaScript policy: the script ran out of time"),
        Failure::Result { .. } => {}
    }
    match failure {
        Failure::Result { code, error, key, content_type } => {
            let whole = code.fract() == 0.0 && (100.0..=999.0).contains(&code);
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let status = whole.then(|| StatusCode::from_u16(code as u16).ok()).flatten();
            let status = status.unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let key = key.as_deref().and_then(intern_key);
            let Some(message) = error else {
                // Gravitee's failure processor writes no body for a failure without a message.
                return Reply { status, headers: Vec::new(), body: Bytes::new(), error_key: key, error_message: None };
            };
            let json = content_type.as_deref().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
            if json { Reply::json_message(status, key, message) } else { Reply::error(status, key, message) }
        }
        Failure::Script(reason) | Failure::Timeout(reason) if legacy_engine && !graal => {
            Reply::error(StatusCode::INTERNAL_SERVER_ERROR, None, reason)
        }
        Failure::Script(_) if graal => {
            Reply::error(StatusCode::INTERNAL_SERVER_ERROR, Some(JS_EXECUTION_FAILURE), "JavaScript execution failed")
        }
        Failure::Timeout(_) if graal => {
            Reply::error(StatusCode::INTERNAL_SERVER_ERROR, Some(JS_EXECUTION_FAILURE), "Timeout")
        }
        Failure::Script(_) | Failure::Timeout(_) => {
            Reply::error(StatusCode::INTERNAL_SERVER_ERROR, Some(JAVASCRIPT_EXECUTION_FAILURE), "Internal Server Error")
        }
    }
}

fn header_list(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect()
}

fn version_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_10 => "HTTP_1_0",
        http::Version::HTTP_2 => "HTTP_2",
        _ => "HTTP_1_1",
    }
}

fn multimap(pairs: impl Iterator<Item = (String, String)>) -> Vec<(String, Vec<String>)> {
    let mut map: Vec<(String, Vec<String>)> = Vec::new();
    for (name, value) in pairs {
        match map.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value),
            None => map.push((name, vec![value])),
        }
    }
    map
}

/// The request facts both phases show (`info`: the request as routed; in the response phase, as sent).
fn request_state(info: &RequestInfo, method: &str, path_and_query: (&str, Option<&str>)) -> RequestState {
    let (path, query) = path_and_query;
    RequestState {
        id: info.request_id.clone(),
        transaction_id: info.transaction_id.clone(),
        client_identifier: info.subscription_client_id.clone().unwrap_or_default(),
        uri: match query {
            Some(q) if !q.is_empty() => format!("{path}?{q}"),
            _ => path.to_owned(),
        },
        host: info.host.clone(),
        original_host: info.host.clone(),
        path: path.to_owned(),
        path_info: info.path_info.clone(),
        context_path: info.context_path.clone(),
        method: method.to_owned(),
        scheme: if info.tls.is_some() { "https" } else { "http" }.to_owned(),
        remote_address: info.remote_address.clone(),
        local_address: info.local_address.clone(),
        parameters: multimap(crate::http::query::query_pairs(query.unwrap_or_default())),
        ..RequestState::default()
    }
}

fn properties(info: &RequestInfo) -> Vec<(String, String)> {
    let mut properties: Vec<(String, String)> =
        info.api_properties.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    properties.sort();
    properties
}

impl State {
    fn of_request(exchange: &RequestExchange<'_>) -> State {
        let parts = &*exchange.parts;
        let mut request = request_state(exchange.info, parts.method.as_str(), (parts.uri.path(), parts.uri.query()));
        request.version = version_name(parts.version).to_owned();
        request.timestamp = exchange.now_ms;
        request.headers = header_list(&parts.headers);
        request.path_parameters = multimap(exchange.path_params.iter().cloned());
        State {
            request,
            response: ResponseState::default(),
            attributes: exchange.attributes.clone(),
            properties: properties(exchange.info),
            content: exchange.body.as_deref().map(|b| String::from_utf8_lossy(b).into_owned()),
        }
    }

    fn of_response(exchange: &ResponseExchange<'_>) -> State {
        let info = exchange.info;
        let path = info.path.as_str();
        let query = (!info.query.is_empty()).then_some(info.query.as_str());
        let mut request = request_state(info, &info.method, (path, query));
        request.headers = header_list(&info.headers);
        State {
            request,
            response: ResponseState {
                status: exchange.status.as_u16(),
                reason: exchange.status.canonical_reason().unwrap_or_default().to_owned(),
                headers: header_list(exchange.headers),
            },
            attributes: exchange.attributes.clone(),
            properties: properties(info),
            content: exchange.body.as_deref().map(|b| String::from_utf8_lossy(b).into_owned()),
        }
    }
}

fn header_map(list: &[(String, String)]) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::with_capacity(list.len());
    for (name, value) in list {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("{name:?} is not a header name"))?;
        let value = HeaderValue::from_str(value).map_err(|_| format!("the value of header {name} is not valid"))?;
        map.append(name, value);
    }
    Ok(map)
}

fn query_string(parameters: &[(String, Vec<String>)]) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    let mut query = String::new();
    for (name, values) in parameters {
        for value in values {
            if !query.is_empty() {
                query.push('&');
            }
            query.extend(utf8_percent_encode(name, COMPONENT));
            if !value.is_empty() {
                query.push('=');
                query.extend(utf8_percent_encode(value, COMPONENT));
            }
        }
    }
    query
}

/// What the script changed, onto the request (and the headers its answer will carry).
fn apply_request(exchange: &mut RequestExchange<'_>, before: &State, done: Done) -> Result<(), String> {
    let after = done.state;
    if after.request.headers != before.request.headers {
        exchange.parts.headers = header_map(&after.request.headers)?;
    }
    if after.request.parameters != before.request.parameters {
        let query = query_string(&after.request.parameters);
        let path = exchange.parts.uri.path();
        let target = if query.is_empty() { path.to_owned() } else { format!("{path}?{query}") };
        let mut uri = std::mem::take(&mut exchange.parts.uri).into_parts();
        uri.path_and_query =
            Some(target.parse().map_err(|_| "the query parameters do not make a valid request target".to_owned())?);
        exchange.parts.uri = http::Uri::from_parts(uri).map_err(|e| e.to_string())?;
    }
    if after.response.headers != before.response.headers {
        // Headers set on the response before there is one go on whatever answer the request gets.
        let added = header_map(&after.response.headers)?;
        exchange.response_headers.extend(added.iter().map(|(n, v)| (n.clone(), v.clone())));
    }
    if after.attributes != before.attributes {
        *exchange.attributes = after.attributes;
    }
    if let (Some(content), Some(body)) = (done.content, exchange.body.as_deref_mut()) {
        *body = Bytes::from(content);
    }
    Ok(())
}

/// What the script changed, onto the response.
fn apply_response(exchange: &mut ResponseExchange<'_>, before: &State, done: Done) -> Result<(), String> {
    let after = done.state;
    if after.response.headers != before.response.headers {
        *exchange.headers = header_map(&after.response.headers)?;
    }
    if after.response.status != before.response.status {
        *exchange.status = StatusCode::from_u16(after.response.status)
            .map_err(|_| format!("{} is not an HTTP status", after.response.status))?;
    }
    if after.attributes != before.attributes {
        *exchange.attributes = after.attributes;
    }
    if let (Some(content), Some(body)) = (done.content, exchange.body.as_deref_mut()) {
        *body = Bytes::from(content);
    }
    Ok(())
}

/// How many scripts run at once (each holds a blocking thread and up to [`engine::MEMORY_LIMIT`] of
/// heap).
pub fn max_concurrent() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from) * 4
}

async fn run(job: Job) -> Result<Done, Failure> {
    static PERMITS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    let permits = PERMITS.get_or_init(|| Arc::new(Semaphore::new(max_concurrent())));
    let Ok(permit) = Arc::clone(permits).acquire_owned().await else {
        return Err(Failure::Script("the script pool is closed".to_owned()));
    };
    let ran = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        execute(job)
    })
    .await;
    match ran {
        Ok(done) => done,
        Err(error) => Err(Failure::Script(format!("the script's thread failed: {error}"))),
    }
}

/// A `result.key` as an error key (`&'static`, as every other policy's): the first [`MAX_KEYS`]
/// distinct keys are kept for the dataplane's lifetime; past them a failure keeps its status and
/// message but not its key (logged once).
fn intern_key(key: &str) -> Option<&'static str> {
    static KEYS: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    static FULL: AtomicBool = AtomicBool::new(false);
    let mut keys = KEYS.get_or_init(Default::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(kept) = keys.get(key) {
        return Some(kept);
    }
    if keys.len() >= MAX_KEYS {
        if !FULL.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                max = MAX_KEYS,
                "JavaScript policies set too many distinct result keys: later ones are dropped"
            );
        }
        return None;
    }
    let kept: &'static str = Box::leak(key.to_owned().into_boxed_str());
    keys.insert(kept);
    Some(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State {
            request: RequestState {
                id: "req-1".into(),
                path: "/api/items".into(),
                method: "POST".into(),
                headers: vec![("content-type".into(), "application/json".into()), ("x-a".into(), "1".into())],
                parameters: vec![("q".into(), vec!["one".into(), "two".into()])],
                ..RequestState::default()
            },
            attributes: vec![("seen".into(), "yes".into())],
            properties: vec![("env".into(), "prod".into())],
            content: Some(r#"[{"firstname":"John"}]"#.into()),
            ..State::default()
        }
    }

    fn job(graal: bool, phase: Phase, runs: Vec<Run>) -> Job {
        let timeout = if graal { GRAAL_TIMEOUT } else { NASHORN_TIMEOUT };
        let phase = if phase == Phase::Request { "request" } else { "response" };
        Job { graal, legacy: false, phase, runs: runs.into(), state: state(), timeout }
    }

    fn run(script: &str, content: bool, override_content: bool) -> Run {
        Run { scripts: vec![Arc::from(script)], content, override_content }
    }

    fn header<'a>(list: &'a [(String, String)], name: &str) -> Vec<&'a str> {
        list.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    #[test]
    fn graal_bindings_change_the_request() {
        let script = "request.headers().set('X-Path', request.path()).add('X-Multi', 'a').add('X-Multi', 'b'); \
            request.headers().remove('x-a'); \
            context.set('who', request.parameter('q') + '/' + context.get('seen') + '/' + context.properties()['env']); \
            request.headers().set('Authorization', 'Basic ' + btoa('user:pässword')); \
            request.headers().set('X-Decoded', atob(btoa('héllo'))); \
            request.headers().set('X-Method', request.method() + ' ' + request.id()); \
            var body = JSON.parse(request.content()); body[0].country = 'US'; request.content(JSON.stringify(body));";
        let done = execute(job(true, Phase::Request, vec![run(script, true, true)])).unwrap();
        let headers = &done.state.request.headers;
        assert_eq!(header(headers, "x-path"), ["/api/items"]);
        assert_eq!(header(headers, "x-multi"), ["a", "b"]);
        assert!(header(headers, "x-a").is_empty());
        assert_eq!(header(headers, "authorization"), ["Basic dXNlcjpww6Rzc3dvcmQ="]);
        assert_eq!(header(headers, "x-decoded"), ["héllo"]);
        assert_eq!(header(headers, "x-method"), ["POST req-1"]);
        assert!(done.state.attributes.contains(&("who".into(), "one/yes/prod".into())));
        assert_eq!(done.content.as_deref(), Some(r#"[{"firstname":"John","country":"US"}]"#));
    }

    #[test]
    fn graal_failures() {
        let fail = "result.fail(401, 'Missing token', 'UNAUTHORIZED');";
        let failure = execute(job(true, Phase::Request, vec![run(fail, false, false)])).unwrap_err();
        assert_eq!(
            failure,
            Failure::Result {
                code: 401.0,
                error: Some("Missing token".into()),
                key: Some("UNAUTHORIZED".into()),
                content_type: None
            }
        );
        // GraalJS exposes methods only: a property write is no failure.
        let property = "result.state = State.FAILURE; result.code = 400;";
        assert!(execute(job(true, Phase::Request, vec![run(property, false, false)])).is_ok());
        let setters = "result.setState(State.FAILURE); result.setCode(400); result.setError('{\"e\":1}'); result.setContentType('application/json');";
        let failure = execute(job(true, Phase::Request, vec![run(setters, false, false)])).unwrap_err();
        let reply = failure_reply(true, failure, false);
        assert_eq!((reply.status.as_u16(), &reply.body[..]), (400, &b"{\"e\":1}"[..]));

        let thrown =
            execute(job(true, Phase::Request, vec![run("throw new Error('boom')", false, false)])).unwrap_err();
        assert_eq!(thrown, Failure::Script("Error: boom".into()));
        let reply = failure_reply(true, thrown, false);
        assert_eq!((reply.status.as_u16(), reply.error_key), (500, Some(JS_EXECUTION_FAILURE)));
        assert_eq!(reply.error_message.as_deref(), Some("JavaScript execution failed"));

        // Content not enabled: `content()` is null for `js`.
        let done = execute(job(
            true,
            Phase::Request,
            vec![run("request.headers().set('x-c', String(request.content()))", false, false)],
        ));
        assert_eq!(header(&done.unwrap().state.request.headers, "x-c"), ["null"]);
    }

    #[test]
    fn limits_stop_hostile_scripts() {
        let endless = execute(job(true, Phase::Request, vec![run("while (true) {}", false, false)])).unwrap_err();
        assert!(matches!(endless, Failure::Timeout(_)), "{endless:?}");
        let reply = failure_reply(true, endless, false);
        assert_eq!(reply.error_message.as_deref(), Some("Timeout"));
        // The interruption cannot be caught by the script.
        let caught =
            execute(job(true, Phase::Request, vec![run("try { while (true) {} } catch (e) {} ", false, false)]));
        assert!(matches!(caught, Err(Failure::Timeout(_))), "{caught:?}");
        let hungry = execute(job(
            false,
            Phase::Request,
            vec![run("var a = []; while (true) { a.push('x'.repeat(1 << 20)); }", false, false)],
        ));
        assert!(matches!(hungry, Err(Failure::Script(_) | Failure::Timeout(_))), "{hungry:?}");
        let deep =
            execute(job(true, Phase::Request, vec![run("function f(n) { return f(n + 1) + 1; } f(0)", false, false)]));
        assert!(matches!(deep, Err(Failure::Script(_))), "{deep:?}");
        // Nothing of the host is reachable: no std/os modules, no require, no import.
        for script in ["std.open('/etc/passwd')", "os.exec(['id'])", "require('fs')", "import('os')"] {
            let result = execute(job(true, Phase::Request, vec![run(script, false, false)]));
            assert!(result.is_err() || script.starts_with("import"), "{script}: {result:?}");
        }
    }

    #[test]
    fn nashorn_bindings() {
        let script = "if (request.headers.containsKey('X-A')) { request.headers.set('X-Javascript-Policy', 'ok'); } \
            context.attributes.count = 100; context.attributes['gravitee.x'] = {a: 1}; \
            request.parameters.add('q', 'three'); request.parameters.set('new', 'a b'); \
            var content = JSON.parse(request.content); content[0].firstname = 'Hacked ' + content[0].firstname; \
            JSON.stringify(content);";
        let done = execute(job(false, Phase::Request, vec![run(script, true, true)])).unwrap();
        assert_eq!(header(&done.state.request.headers, "x-javascript-policy"), ["ok"]);
        assert!(done.state.attributes.contains(&("count".into(), "100".into())));
        assert!(done.state.attributes.contains(&("gravitee.x".into(), r#"{"a":1}"#.into())));
        assert_eq!(
            done.state.request.parameters,
            [
                ("q".to_owned(), vec!["one".to_owned(), "two".into(), "three".into()]),
                ("new".into(), vec!["a b".into()])
            ]
        );
        assert_eq!(query_string(&done.state.request.parameters), "q=one&q=two&q=three&new=a%20b");
        assert_eq!(done.content.as_deref(), Some(r#"[{"firstname":"Hacked John"}]"#));

        // A last value that is not a string is an empty body, as Gravitee's evaluator reads it.
        let done = execute(job(false, Phase::Request, vec![run("var n = 1; n + 1", true, true)])).unwrap();
        assert_eq!(done.content.as_deref(), Some(""));

        let failure =
            "result.state = State.FAILURE; result.code = 400; result.key = 'MY_KEY'; result.error = 'Rejected';";
        let failure = execute(job(false, Phase::Request, vec![run(failure, false, false)])).unwrap_err();
        let reply = failure_reply(false, failure, false);
        assert_eq!((reply.status.as_u16(), reply.error_key), (400, Some("MY_KEY")));
        assert_eq!(reply.error_message.as_deref(), Some("Rejected"));

        // Nashorn ran with -strict: an undeclared variable is an error.
        let strict = execute(job(false, Phase::Request, vec![run("undeclared = 1", false, false)])).unwrap_err();
        let reply = failure_reply(false, strict, false);
        assert_eq!((reply.status.as_u16(), reply.error_key), (500, Some(JAVASCRIPT_EXECUTION_FAILURE)));
        assert_eq!(reply.error_message.as_deref(), Some("Internal Server Error"));
        // Reading content that is not enabled is refused on v4 engines.
        let refused = execute(job(false, Phase::Request, vec![run("request.content", false, false)])).unwrap_err();
        assert!(matches!(&refused, Failure::Script(r) if r.contains("must be enabled")), "{refused:?}");
    }

    #[test]
    fn nashorn_response_phase() {
        let mut response_job = job(
            false,
            Phase::Response,
            vec![run(
                "response.headers.remove('X-Powered-By'); response.headers.set('X-Status', '' + response.status); \
             if (response.status == 200) { response.status(201); }",
                false,
                false,
            )],
        );
        response_job.state.response.headers = vec![("x-powered-by".into(), "Java".into())];
        let done = execute(response_job).unwrap();
        assert_eq!(done.state.response.status, 201);
        assert_eq!(done.state.response.headers, [("X-Status".to_owned(), "200".to_owned())]);
    }

    #[test]
    fn the_engine_decides_which_scripts_run() {
        let config = pb::JavascriptPolicy {
            on_request_script: "request.headers.set('X-Phase', 'on-request')".into(),
            on_request_content_script: "JSON.stringify({ message: 'Hello Universe!' })".into(),
            ..Default::default()
        };
        let policy = Javascript::compile(config, Phase::Request);
        // The V3 engine: the head script, then the content script in its own context.
        assert_eq!(policy.legacy.len(), 2);
        let mut legacy = job(false, Phase::Request, policy.legacy.to_vec());
        legacy.legacy = true;
        let done = execute(legacy).unwrap();
        assert_eq!(header(&done.state.request.headers, "x-phase"), ["on-request"]);
        assert_eq!(done.content.as_deref(), Some(r#"{"message":"Hello Universe!"}"#));
        // v4 engines: every script on the body in one context, the last one's value replacing it.
        assert_eq!(policy.modern.len(), 1);
        assert_eq!(policy.modern[0].scripts.len(), 2);
        let done = execute(job(false, Phase::Request, policy.modern.to_vec())).unwrap();
        assert_eq!(header(&done.state.request.headers, "x-phase"), ["on-request"]);
        assert_eq!(done.content.as_deref(), Some(r#"{"message":"Hello Universe!"}"#));
        // Response scripts do not run in the request phase on the V3 engine.
        let response_only = pb::JavascriptPolicy { on_response_script: "x".into(), ..Default::default() };
        assert!(Javascript::compile(response_only, Phase::Request).legacy.is_empty());
    }

    #[test]
    fn invalid_changes_fail_the_request() {
        let bad =
            execute(job(true, Phase::Request, vec![run("request.headers().set('X-Bad', 'a\\nb')", false, false)]))
                .unwrap();
        assert!(header_map(&bad.state.request.headers).is_err());
        let bad = execute(job(true, Phase::Request, vec![run("request.headers().set('Bad Name', 'x')", false, false)]))
            .unwrap();
        assert!(header_map(&bad.state.request.headers).is_err());
        let status = execute(job(true, Phase::Response, vec![run("response.status('teapot')", false, false)]));
        assert!(matches!(status, Err(Failure::Script(_))), "{status:?}");
    }

    #[test]
    fn keys_are_bounded() {
        assert_eq!(intern_key("SAME"), intern_key("SAME"));
        assert!(std::ptr::eq(intern_key("SAME").unwrap(), intern_key("SAME").unwrap()));
    }
}
