//! The JavaScript engine of the `js` and `javascript` policies, apart from the gateway: a job (the
//! scripts to run and a snapshot of the exchange) in, the snapshot as the scripts left it (or why they
//! failed) out. It depends on nothing of the dataplane, so that the fuzz target runs this very code.
//!
//! Each job has its own QuickJS runtime, built without QuickJS's libc (no files, network, processes,
//! timers or module loading), bounded in heap, stack and time; an interrupted script cannot catch the
//! interruption. The bindings are made by `prelude.js` over JSON of the snapshot; the host exposes one
//! function (base64), and reads the state back as JSON, which the caller validates before applying it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rquickjs::context::EvalOptions;
use rquickjs::{Context, Ctx, Function, Object, Runtime};
use serde::{Deserialize, Serialize};

/// Heap of one run: a script that needs more fails (and so does its request).
pub const MEMORY_LIMIT: usize = 32 * 1024 * 1024;
/// Native stack QuickJS may use (deep recursion fails the script instead of the thread).
pub const STACK_LIMIT: usize = 512 * 1024;
/// Time of one `js` run: Gravitee's default `policy.js.timeout`.
pub const GRAAL_TIMEOUT: Duration = Duration::from_millis(100);
/// Time of one `javascript` run (Gravitee's Nashorn policy has no limit; a script that never ends
/// must not hold a thread forever).
pub const NASHORN_TIMEOUT: Duration = Duration::from_secs(1);
const PRELUDE: &str = include_str!("prelude.js");

/// Scripts run one after the other in one context (they share the bindings), on the body when
/// `content`; with `override_content` what they leave replaces it.
#[derive(Debug, Clone)]
pub struct Run {
    pub scripts: Vec<Arc<str>>,
    pub content: bool,
    pub override_content: bool,
}

/// The exchange as the bindings see it, and as the script leaves it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub request: RequestState,
    pub response: ResponseState,
    pub attributes: Vec<(String, String)>,
    pub properties: Vec<(String, String)>,
    /// The phase's body, when a run reads it (UTF-8, lossy: Gravitee's `Buffer.toString()`).
    pub content: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestState {
    pub id: String,
    pub transaction_id: String,
    pub client_identifier: String,
    pub uri: String,
    pub host: String,
    pub original_host: String,
    pub path: String,
    pub path_info: String,
    pub context_path: String,
    pub method: String,
    pub scheme: String,
    pub version: String,
    pub timestamp: i64,
    pub remote_address: String,
    pub local_address: String,
    pub headers: Vec<(String, String)>,
    pub parameters: Vec<(String, Vec<String>)>,
    pub path_parameters: Vec<(String, Vec<String>)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseState {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
}

impl Default for ResponseState {
    fn default() -> Self {
        ResponseState { status: 200, reason: "OK".to_owned(), headers: Vec::new() }
    }
}

/// One step's work for the blocking pool.
pub struct Job {
    pub graal: bool,
    pub legacy: bool,
    /// `request` or `response`: whose content the bindings show.
    pub phase: &'static str,
    pub runs: Arc<[Run]>,
    pub state: State,
    pub timeout: Duration,
}

/// The state after every run, and the body the runs replaced (if they did).
#[derive(Debug)]
pub struct Done {
    pub state: State,
    pub content: Option<String>,
}

#[derive(Debug, PartialEq)]
pub enum Failure {
    /// The script set `result` to a failure.
    Result { code: f64, error: Option<String>, key: Option<String>, content_type: Option<String> },
    /// The script threw (or did not parse, or ran out of memory): the reason, for logs.
    Script(String),
    /// The script ran out of time.
    Timeout(String),
}

/// What the prelude's `finish` gives back.
#[derive(Deserialize)]
struct Finished {
    state: State,
    completion: Option<String>,
    failure: Option<ResultFailure>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResultFailure {
    code: Option<f64>,
    error: Option<String>,
    key: Option<String>,
    content_type: Option<String>,
}

/// Runs a job's scripts, each run in a new context over the state the previous one left.
pub fn execute(mut job: Job) -> Result<Done, Failure> {
    let runtime = Runtime::new().map_err(|e| Failure::Script(format!("the JavaScript engine did not start: {e}")))?;
    runtime.set_memory_limit(MEMORY_LIMIT);
    runtime.set_max_stack_size(STACK_LIMIT);
    let deadline = Instant::now() + job.timeout;
    let timed_out = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&timed_out);
    runtime.set_interrupt_handler(Some(Box::new(move || {
        let late = Instant::now() >= deadline;
        if late {
            flag.store(true, Ordering::Relaxed);
        }
        late
    })));
    let mut state = std::mem::take(&mut job.state);
    let mut replaced = None;
    for run in job.runs.iter() {
        let context = Context::full(&runtime)
            .map_err(|e| Failure::Script(format!("the JavaScript engine did not start: {e}")))?;
        let finished = context.with(|ctx| run_scripts(&ctx, &job, run, &state));
        let finished = finished.map_err(|reason| {
            if timed_out.load(Ordering::Relaxed) { Failure::Timeout(reason) } else { Failure::Script(reason) }
        })?;
        if let Some(failure) = finished.failure {
            return Err(Failure::Result {
                code: failure.code.unwrap_or(500.0),
                error: failure.error,
                key: failure.key,
                content_type: failure.content_type,
            });
        }
        state = finished.state;
        if run.override_content {
            // `js`: the body the script set with `content(..)`; `javascript`: the value of the last
            // script, when it is a string (Gravitee's evaluator reads anything else as "").
            let content = if job.graal { state.content.take() } else { finished.completion };
            let content = content.unwrap_or_default();
            state.content = Some(content.clone());
            replaced = Some(content);
        }
    }
    Ok(Done { state, content: replaced })
}

#[derive(Serialize)]
struct Input<'a> {
    graal: bool,
    legacy: bool,
    phase: &'static str,
    content: bool,
    state: &'a State,
}

fn run_scripts(ctx: &Ctx<'_>, job: &Job, run: &Run, state: &State) -> Result<Finished, String> {
    let input = Input { graal: job.graal, legacy: job.legacy, phase: job.phase, content: run.content, state };
    let input = serde_json::to_string(&input).map_err(|e| e.to_string())?;
    let globals = ctx.globals();
    let caught = |e: rquickjs::Error| exception_text(ctx, e);
    globals.set("__hgw_in", input).map_err(caught)?;
    let base64 = Function::new(ctx.clone(), |text: String, decode: bool| -> rquickjs::Result<String> {
        if decode {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| rquickjs::Error::new_from_js_message("string", "base64", "not valid base64"))?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        } else {
            Ok(base64::engine::general_purpose::STANDARD.encode(text.as_bytes()))
        }
    })
    .map_err(caught)?;
    globals.set("__hgw_base64", base64).map_err(caught)?;
    let bindings: Object = ctx.eval_with_options(PRELUDE, EvalOptions::default()).map_err(caught)?;
    let failed: Function = bindings.get("failed").map_err(caught)?;
    let finish: Function = bindings.get("finish").map_err(caught)?;
    let mut completion = rquickjs::Value::new_undefined(ctx.clone());
    for script in &run.scripts {
        // Nashorn ran Gravitee's scripts with `-strict`; GraalJS runs them sloppy.
        let mut options = EvalOptions::default();
        options.strict = !job.graal;
        options.filename = Some("script.js".to_owned());
        completion = ctx.eval_with_options(script.as_bytes(), options).map_err(caught)?;
        if failed.call::<_, bool>(()).map_err(caught)? {
            break;
        }
    }
    let text: String = finish.call((completion,)).map_err(caught)?;
    serde_json::from_str(&text).map_err(|e| format!("the script left the request in a state hgw cannot apply: {e}"))
}

/// The text of what a script threw.
fn exception_text(ctx: &Ctx<'_>, error: rquickjs::Error) -> String {
    if !matches!(error, rquickjs::Error::Exception) {
        return error.to_string();
    }
    let thrown = ctx.catch();
    if let Some(exception) = thrown.as_exception() {
        let name: Option<String> = exception.get("name").ok();
        let message = exception.message().unwrap_or_default();
        return match name {
            Some(name) if !name.is_empty() => format!("{name}: {message}"),
            _ => message,
        };
    }
    match thrown.as_string().and_then(|s| s.to_string().ok()) {
        Some(text) => text,
        None => format!("{:?}", thrown.type_of()),
    }
}
