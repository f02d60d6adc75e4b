//! Sidecar injection: adds an `hgw-dataplane` container, the node agent's socket and the pod's `hgw`
//! ServiceAccount token to Kubernetes workloads.
//!
//! One piece of code serves both entry points, so they cannot drift: `hgw-agent inject` (YAML in, YAML
//! out, like `linkerd inject`) and `hgw-agent webhook` (a mutating admission webhook answering with a
//! JSONPatch). Objects are handled as `serde_json::Value` because the injector must keep every field it
//! does not know — a typed Pod model would drop fields newer than itself.
//!
//! The sidecar is a native sidecar (an init container with `restartPolicy: Always`, Kubernetes 1.29+):
//! it starts before the application's containers, is ready before they start, and does not keep a Job
//! from completing. It reaches the node agent through a hostPath folder (the agent DaemonSet's socket),
//! and carries a projected ServiceAccount token for audience `hgw` (its identity when it joins the agent
//! over TCP).

pub mod cli;
pub mod patch;
pub mod socket_dir;
pub mod webhook;
pub mod yaml;

use serde_json::{Map, Value, json};

/// Annotation (or label) that turns injection on (`enabled`) or off (`disabled`) for a pod or workload.
pub const ANNOTATION_INJECT: &str = "hgw.io/inject";
/// Written on injected pods and templates: the injector's version. Its presence makes injection idempotent.
pub const ANNOTATION_INJECTED: &str = "hgw.io/injected";
/// Per-pod overrides, read from the pod's (or the workload template's) annotations.
pub const ANNOTATION_TAGS: &str = "hgw.io/tags";
pub const ANNOTATION_IMAGE: &str = "hgw.io/proxy-image";
pub const ANNOTATION_PORT: &str = "hgw.io/proxy-port";
pub const ANNOTATION_CPU_REQUEST: &str = "hgw.io/proxy-cpu-request";
pub const ANNOTATION_CPU_LIMIT: &str = "hgw.io/proxy-cpu-limit";
pub const ANNOTATION_MEMORY_REQUEST: &str = "hgw.io/proxy-memory-request";
pub const ANNOTATION_MEMORY_LIMIT: &str = "hgw.io/proxy-memory-limit";

/// The injected container's name; a pod that already has a container of this name is left alone.
pub const SIDECAR_NAME: &str = "hgw-dataplane";
/// The volume holding the node agent's socket folder (hostPath).
pub const SOCKET_VOLUME: &str = "hgw-agent-socket";
/// The projected ServiceAccount token volume (audience `hgw` by default).
pub const TOKEN_VOLUME: &str = "hgw-token";
/// Where the token is mounted in the sidecar; the file is `token` inside.
pub const TOKEN_MOUNT: &str = "/var/run/secrets/hgw.io/serviceaccount";
/// The token file the sidecar joins a TCP agent with (`--join-token-file`).
pub const TOKEN_FILE: &str = "/var/run/secrets/hgw.io/serviceaccount/token";
/// The volume with the agent's CA (a ConfigMap, key `ca.pem`), for sidecars of a TCP agent.
pub const AGENT_CA_VOLUME: &str = "hgw-agent-ca";
/// Where that ConfigMap is mounted; the sidecar pins `ca.pem` inside (`--agent-ca`).
pub const AGENT_CA_MOUNT: &str = "/var/run/secrets/hgw.io/agent-ca";
/// Token lifetime asked of the kubelet (it rotates the file at 80 %): one hour, Kubernetes' usual.
pub const TOKEN_EXPIRATION_SECONDS: u64 = 3600;

/// What the injector adds, before per-pod overrides. Defaults match the Helm chart's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarConfig {
    pub image: String,
    pub image_pull_policy: String,
    /// How the sidecar reaches its node agent (`unix:/path` or a URL), passed as `--agent`.
    pub agent: String,
    /// Node folder holding the agent's socket (the DaemonSet's hostPath), mounted at the same path.
    pub socket_host_path: String,
    pub proxy_port: u16,
    pub admin_port: u16,
    /// Sharding tags (`--tags` of the dataplane); empty for none.
    pub tags: String,
    pub cpu_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_request: Option<String>,
    pub memory_limit: Option<String>,
    /// Audience of the projected ServiceAccount token (what the agent's TokenReview expects).
    pub token_audience: String,
    /// User and group the sidecar runs as (the image's non-root user; shares the socket folder's group).
    pub user_id: u32,
    /// OpenTelemetry collector for the sidecar's traces (`OTEL_EXPORTER_OTLP_ENDPOINT`), when set.
    pub otlp_endpoint: Option<String>,
    /// ConfigMap (in the pod's namespace, key `ca.pem`) with the agent's CA, pinned by sidecars of an
    /// `https://` agent; those sidecars join with the projected token (the agent's `--join-kubernetes`).
    pub agent_ca_configmap: Option<String>,
}

impl Default for SidecarConfig {
    fn default() -> Self {
        SidecarConfig {
            image: "hgw:latest".into(),
            image_pull_policy: "IfNotPresent".into(),
            agent: "unix:/var/run/hgw/agent.sock".into(),
            socket_host_path: "/var/run/hgw".into(),
            proxy_port: 8082,
            admin_port: 18083,
            tags: String::new(),
            cpu_request: Some("50m".into()),
            cpu_limit: None,
            memory_request: Some("32Mi".into()),
            memory_limit: Some("256Mi".into()),
            token_audience: "hgw".into(),
            user_id: 65532,
            otlp_endpoint: None,
            agent_ca_configmap: None,
        }
    }
}

/// When an object without an `hgw.io/inject` annotation gets a sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultPolicy {
    /// Inject unless opted out (`hgw-agent inject`, and the webhook for labelled namespaces).
    Inject,
    /// Inject only when asked (`hgw.io/inject: enabled` annotation or label): the webhook elsewhere.
    OptIn,
}

/// What happened to one pod template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    /// Left as it was, with the reason (opted out, already injected, not asked, not a workload).
    Skipped(&'static str),
}

/// A workload the injector refuses: a bad override or a malformed object. Never a panic.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InjectError {
    #[error("{kind} {name}: annotation {annotation}: {problem}")]
    Override { kind: String, name: String, annotation: &'static str, problem: String },
    #[error("{kind} {name}: {problem}")]
    Malformed { kind: String, name: String, problem: String },
}

/// Where a kind keeps its pod template (metadata + spec), as a path of object keys.
fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&[]),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" | "ReplicationController" => {
            Some(&["spec", "template"])
        }
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

/// Injects the sidecar into one object (a Pod, a workload with a pod template, or a `List` of them).
/// Returns one outcome per pod template seen (none for kinds without one).
pub fn inject_object(
    object: &mut Value,
    config: &SidecarConfig,
    policy: DefaultPolicy,
) -> Result<Vec<Outcome>, InjectError> {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
    if kind.ends_with("List") && object.get("items").is_some_and(Value::is_array) {
        let mut outcomes = Vec::new();
        if let Some(items) = object.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                outcomes.extend(inject_object(item, config, policy)?);
            }
        }
        return Ok(outcomes);
    }
    let Some(path) = template_path(&kind) else {
        return Ok(Vec::new());
    };
    let name = object_name(object);
    // Annotations on the workload itself count, those on its pod template win; an `hgw.io/inject`
    // label (what the webhook's objectSelector sees) counts where no annotation says otherwise.
    let mut outer = annotations(object).cloned().unwrap_or_default();
    if let Some(label) = object.pointer("/metadata/labels").and_then(|l| l.get(ANNOTATION_INJECT)) {
        outer.entry(ANNOTATION_INJECT.to_owned()).or_insert_with(|| label.clone());
    }
    let mut template = &mut *object;
    for key in path {
        template = template.get_mut(*key).filter(|value| value.is_object()).ok_or_else(|| InjectError::Malformed {
            kind: kind.clone(),
            name: name.clone(),
            problem: format!("no {key} object"),
        })?;
    }
    let mut merged = outer;
    if !path.is_empty() {
        if let Some(inner) = annotations(template) {
            merged.extend(inner.clone());
        }
        if let Some(label) = template.pointer("/metadata/labels").and_then(|l| l.get(ANNOTATION_INJECT))
            && annotations(template).is_none_or(|a| !a.contains_key(ANNOTATION_INJECT))
        {
            merged.insert(ANNOTATION_INJECT.to_owned(), label.clone());
        }
    }
    let outcome = inject_template(template, &merged, config, policy, &kind, &name)?;
    Ok(vec![outcome])
}

fn object_name(object: &Value) -> String {
    let metadata = object.get("metadata");
    metadata
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .or_else(|| metadata.and_then(|m| m.get("generateName")).and_then(Value::as_str))
        .unwrap_or("(unnamed)")
        .to_owned()
}

fn annotations(object: &Value) -> Option<&Map<String, Value>> {
    object.pointer("/metadata/annotations").and_then(Value::as_object)
}

/// Injects into a pod template (`{metadata, spec}`), given the annotations that apply to it.
fn inject_template(
    template: &mut Value,
    annotations: &Map<String, Value>,
    config: &SidecarConfig,
    policy: DefaultPolicy,
    kind: &str,
    name: &str,
) -> Result<Outcome, InjectError> {
    let asked = annotations.get(ANNOTATION_INJECT).and_then(Value::as_str).map(str::trim);
    match asked {
        Some(value) if value.eq_ignore_ascii_case("disabled") || value.eq_ignore_ascii_case("false") => {
            return Ok(Outcome::Skipped("opted out (hgw.io/inject: disabled)"));
        }
        Some(value) if value.eq_ignore_ascii_case("enabled") || value.eq_ignore_ascii_case("true") => {}
        Some(_) => {
            return Err(InjectError::Override {
                kind: kind.to_owned(),
                name: name.to_owned(),
                annotation: ANNOTATION_INJECT,
                problem: "expected enabled or disabled".into(),
            });
        }
        None if policy == DefaultPolicy::OptIn => return Ok(Outcome::Skipped("not asked (no hgw.io/inject: enabled)")),
        None => {}
    }
    let malformed = |problem: &str| InjectError::Malformed {
        kind: kind.to_owned(),
        name: name.to_owned(),
        problem: problem.to_owned(),
    };
    let spec = template.get("spec").filter(|s| s.is_object()).ok_or_else(|| malformed("no pod spec"))?;
    let has_sidecar = ["containers", "initContainers"].iter().any(|list| {
        spec.get(*list)
            .and_then(Value::as_array)
            .is_some_and(|c| c.iter().any(|c| c.get("name").and_then(Value::as_str) == Some(SIDECAR_NAME)))
    });
    if has_sidecar || annotations.contains_key(ANNOTATION_INJECTED) {
        return Ok(Outcome::Skipped("already injected"));
    }
    let sidecar = effective_config(annotations, config, kind, name)?;
    let spec = template.get_mut("spec").and_then(Value::as_object_mut).ok_or_else(|| malformed("no pod spec"))?;
    push(spec, "initContainers", container(&sidecar)).map_err(|p| malformed(&p))?;
    for volume in volumes(&sidecar) {
        push(spec, "volumes", volume).map_err(|p| malformed(&p))?;
    }
    let template = template.as_object_mut().ok_or_else(|| malformed("template is not an object"))?;
    let metadata = child_object(template, "metadata").ok_or_else(|| malformed("metadata is not an object"))?;
    let annotations =
        child_object(metadata, "annotations").ok_or_else(|| malformed("metadata.annotations is not an object"))?;
    annotations.insert(ANNOTATION_INJECTED.into(), Value::String(env!("CARGO_PKG_VERSION").into()));
    Ok(Outcome::Injected)
}

fn push(spec: &mut Map<String, Value>, list: &str, item: Value) -> Result<(), String> {
    let slot = spec.entry(list).or_insert_with(|| json!([]));
    if slot.is_null() {
        *slot = json!([]);
    }
    match slot {
        Value::Array(items) => {
            items.push(item);
            Ok(())
        }
        _ => Err(format!("spec.{list} is not a list")),
    }
}

/// `object[key]` as an object, created when missing or null.
fn child_object<'a>(object: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    let slot = object.entry(key).or_insert_with(|| json!({}));
    if slot.is_null() {
        *slot = json!({});
    }
    slot.as_object_mut()
}

/// The defaults with the pod's override annotations applied and checked.
fn effective_config(
    annotations: &Map<String, Value>,
    config: &SidecarConfig,
    kind: &str,
    name: &str,
) -> Result<SidecarConfig, InjectError> {
    let mut sidecar = config.clone();
    let bad = |annotation: &'static str, problem: String| InjectError::Override {
        kind: kind.to_owned(),
        name: name.to_owned(),
        annotation,
        problem,
    };
    let get = |annotation: &'static str| -> Result<Option<String>, InjectError> {
        match annotations.get(annotation) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.trim().to_owned())),
            Some(_) => Err(bad(annotation, "not a string".into())),
        }
    };
    if let Some(tags) = get(ANNOTATION_TAGS)? {
        check_tags(&tags).map_err(|problem| bad(ANNOTATION_TAGS, problem))?;
        sidecar.tags = tags;
    }
    if let Some(image) = get(ANNOTATION_IMAGE)? {
        if image.is_empty() || image.chars().any(char::is_whitespace) {
            return Err(bad(ANNOTATION_IMAGE, "not an image reference".into()));
        }
        sidecar.image = image;
    }
    if let Some(port) = get(ANNOTATION_PORT)? {
        sidecar.proxy_port = match port.parse::<u16>() {
            Ok(port) if port != 0 && port != sidecar.admin_port => port,
            _ => return Err(bad(ANNOTATION_PORT, format!("{port:?} is not a port (1-65535, not the admin port)"))),
        };
    }
    for (annotation, field) in [
        (ANNOTATION_CPU_REQUEST, &mut sidecar.cpu_request),
        (ANNOTATION_CPU_LIMIT, &mut sidecar.cpu_limit),
        (ANNOTATION_MEMORY_REQUEST, &mut sidecar.memory_request),
        (ANNOTATION_MEMORY_LIMIT, &mut sidecar.memory_limit),
    ] {
        if let Some(quantity) = get(annotation)? {
            check_quantity(&quantity).map_err(|problem| bad(annotation, problem))?;
            *field = Some(quantity);
        }
    }
    Ok(sidecar)
}

/// Sharding tags as the dataplane's `--tags` takes them: comma-separated names, `!` to exclude.
pub fn check_tags(tags: &str) -> Result<(), String> {
    for tag in tags.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let name = tag.strip_prefix('!').unwrap_or(tag);
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(format!("{tag:?} is not a sharding tag (letters, digits, '-', '_', '.'; '!' to exclude)"));
        }
    }
    Ok(())
}

/// A Kubernetes resource quantity (`100m`, `0.5`, `64Mi`, `1G`, `1e3`): checked here so a typo is
/// refused by name rather than by the API server's generic message.
pub fn check_quantity(text: &str) -> Result<(), String> {
    let suffixes = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E", ""];
    let number =
        suffixes.iter().find_map(|suffix| text.strip_suffix(suffix).filter(|n| !n.is_empty())).unwrap_or_default();
    let (mantissa, exponent) = match number.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (number, None),
    };
    let digits_ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some((whole, fraction)) => (whole.is_empty() || digits_ok(whole)) && digits_ok(fraction),
        None => digits_ok(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| digits_ok(e.strip_prefix(['+', '-']).unwrap_or(e)));
    if mantissa_ok && exponent_ok {
        Ok(())
    } else {
        Err(format!("{text:?} is not a Kubernetes quantity (e.g. 100m, 0.5, 64Mi)"))
    }
}

/// The folder to mount for a `unix:` agent address: the socket's own folder.
fn socket_mount(config: &SidecarConfig) -> Option<String> {
    let path = config.agent.strip_prefix("unix:")?;
    let parent = std::path::Path::new(path).parent()?.to_str()?;
    Some(if parent.is_empty() { "/".into() } else { parent.into() })
}

fn container(config: &SidecarConfig) -> Value {
    let mut args = vec![
        "--agent".to_owned(),
        config.agent.clone(),
        "--listen".to_owned(),
        format!("0.0.0.0:{}", config.proxy_port),
        "--admin-listen".to_owned(),
        format!("0.0.0.0:{}", config.admin_port),
    ];
    if !config.tags.is_empty() {
        args.extend(["--tags".to_owned(), config.tags.clone()]);
    }
    // A TCP agent: pin its CA and join with the pod's projected ServiceAccount token (TokenReview).
    let tcp_agent = config.agent_ca_configmap.is_some() && config.agent.starts_with("https://");
    if tcp_agent {
        args.extend([
            "--agent-ca".to_owned(),
            format!("{AGENT_CA_MOUNT}/ca.pem"),
            "--join-token-file".to_owned(),
            TOKEN_FILE.to_owned(),
        ]);
    }
    let mut env = vec![
        json!({"name": "HGW_DATAPLANE_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        json!({"name": "HGW_LOG_FORMAT", "value": "json"}),
    ];
    if let Some(endpoint) = &config.otlp_endpoint {
        env.push(json!({"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": endpoint}));
    }
    let mut resources = json!({});
    for (section, key, value) in [
        ("requests", "cpu", &config.cpu_request),
        ("requests", "memory", &config.memory_request),
        ("limits", "cpu", &config.cpu_limit),
        ("limits", "memory", &config.memory_limit),
    ] {
        if let Some(value) = value {
            resources[section][key] = Value::String(value.clone());
        }
    }
    let mut mounts = Vec::new();
    if let Some(folder) = socket_mount(config) {
        mounts.push(json!({"name": SOCKET_VOLUME, "mountPath": folder, "readOnly": true}));
    }
    mounts.push(json!({"name": TOKEN_VOLUME, "mountPath": TOKEN_MOUNT, "readOnly": true}));
    if tcp_agent {
        mounts.push(json!({"name": AGENT_CA_VOLUME, "mountPath": AGENT_CA_MOUNT, "readOnly": true}));
    }
    json!({
        "name": SIDECAR_NAME,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        // Native sidecar: runs for the pod's whole life, started (and ready) before the app.
        "restartPolicy": "Always",
        "args": args,
        "env": env,
        "ports": [
            {"name": "hgw-http", "containerPort": config.proxy_port, "protocol": "TCP"},
            {"name": "hgw-admin", "containerPort": config.admin_port, "protocol": "TCP"},
        ],
        "startupProbe": {"httpGet": {"path": "/ready", "port": "hgw-admin"}, "periodSeconds": 1, "failureThreshold": 120},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "hgw-admin"}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/live", "port": "hgw-admin"}, "periodSeconds": 10},
        "resources": resources,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": config.user_id,
            "runAsGroup": config.user_id,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    })
}

fn volumes(config: &SidecarConfig) -> Vec<Value> {
    let mut volumes = Vec::new();
    if socket_mount(config).is_some() {
        volumes
            .push(json!({"name": SOCKET_VOLUME, "hostPath": {"path": config.socket_host_path, "type": "Directory"}}));
    }
    volumes.push(json!({
        "name": TOKEN_VOLUME,
        "projected": {"sources": [{"serviceAccountToken": {
            "audience": config.token_audience,
            "expirationSeconds": TOKEN_EXPIRATION_SECONDS,
            "path": "token",
        }}]},
    }));
    if let (Some(configmap), true) = (&config.agent_ca_configmap, config.agent.starts_with("https://")) {
        volumes.push(json!({
            "name": AGENT_CA_VOLUME,
            "configMap": {"name": configmap, "items": [{"key": "ca.pem", "path": "ca.pem"}]},
        }));
    }
    volumes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(annotations: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "annotations": annotations},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]},
        })
    }

    fn sidecar(object: &Value, pointer: &str) -> Value {
        let containers = object.pointer(pointer).and_then(Value::as_array).cloned().unwrap_or_default();
        containers.into_iter().find(|c| c["name"] == SIDECAR_NAME).unwrap_or(Value::Null)
    }

    #[test]
    fn a_pod_gets_the_sidecar_socket_and_token_once() {
        let mut object = pod(json!({}));
        let outcome = inject_object(&mut object, &SidecarConfig::default(), DefaultPolicy::Inject).unwrap();
        assert_eq!(outcome, vec![Outcome::Injected]);
        let container = sidecar(&object, "/spec/initContainers");
        assert_eq!(container["restartPolicy"], "Always");
        assert_eq!(container["args"][1], "unix:/var/run/hgw/agent.sock");
        assert_eq!(container["volumeMounts"][0]["mountPath"], "/var/run/hgw");
        let volumes = object["spec"]["volumes"].as_array().unwrap();
        assert_eq!(volumes[0]["hostPath"]["type"], "Directory");
        assert_eq!(volumes[1]["projected"]["sources"][0]["serviceAccountToken"]["audience"], "hgw");
        assert_eq!(object["metadata"]["annotations"][ANNOTATION_INJECTED], env!("CARGO_PKG_VERSION"));
        // The application container is untouched.
        assert_eq!(object["spec"]["containers"], json!([{"name": "app", "image": "nginx"}]));

        let once = object.clone();
        let again = inject_object(&mut object, &SidecarConfig::default(), DefaultPolicy::Inject).unwrap();
        assert_eq!(again, vec![Outcome::Skipped("already injected")]);
        assert_eq!(object, once);
    }

    #[test]
    fn a_tcp_agent_gets_the_token_file_and_the_pinned_ca() {
        let config = SidecarConfig {
            agent: "https://hgw-agent.hgw-system:18090".into(),
            agent_ca_configmap: Some("hgw-agent-ca".into()),
            ..SidecarConfig::default()
        };
        let mut object = pod(json!({}));
        inject_object(&mut object, &config, DefaultPolicy::Inject).unwrap();
        let container = sidecar(&object, "/spec/initContainers");
        let args: Vec<&str> = container["args"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        let after = |flag: &str| args.iter().position(|a| *a == flag).map(|i| args[i + 1]);
        assert_eq!(after("--join-token-file"), Some(TOKEN_FILE));
        assert_eq!(after("--agent-ca"), Some("/var/run/secrets/hgw.io/agent-ca/ca.pem"));
        assert!(TOKEN_FILE.starts_with(TOKEN_MOUNT));
        let volumes = object["spec"]["volumes"].as_array().unwrap();
        assert!(volumes.iter().all(|v| v.get("hostPath").is_none()), "no socket folder for a TCP agent");
        assert!(volumes.iter().any(|v| v["configMap"]["name"] == "hgw-agent-ca"));
    }

    #[test]
    fn opt_out_and_opt_in() {
        let mut object = pod(json!({"hgw.io/inject": "disabled"}));
        let before = object.clone();
        let outcome = inject_object(&mut object, &SidecarConfig::default(), DefaultPolicy::Inject).unwrap();
        assert!(matches!(outcome[0], Outcome::Skipped(_)));
        assert_eq!(object, before);

        let mut object = pod(json!({}));
        let outcome = inject_object(&mut object, &SidecarConfig::default(), DefaultPolicy::OptIn).unwrap();
        assert!(matches!(outcome[0], Outcome::Skipped(_)));
        let mut object = pod(json!({"hgw.io/inject": "enabled"}));
        let outcome = inject_object(&mut object, &SidecarConfig::default(), DefaultPolicy::OptIn).unwrap();
        assert_eq!(outcome, vec![Outcome::Injected]);
    }

    #[test]
    fn workload_templates_and_overrides() {
        let mut object = json!({
            "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
            "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": {
                "metadata": {"annotations": {"hgw.io/tags": "eu,!beta", "hgw.io/proxy-memory-limit": "64Mi", "hgw.io/proxy-port": "9090"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "job", "image": "busybox"}]},
            }}}},
        });
        inject_object(&mut object, &SidecarConfig::default(), DefaultPolicy::Inject).unwrap();
        let container = sidecar(&object, "/spec/jobTemplate/spec/template/spec/initContainers");
        assert_eq!(container["args"][3], "0.0.0.0:9090");
        assert_eq!(container["args"][7], "eu,!beta");
        assert_eq!(container["resources"]["limits"]["memory"], "64Mi");
        assert_eq!(container["resources"]["requests"]["cpu"], "50m");
    }

    #[test]
    fn bad_overrides_are_named_errors() {
        for (annotation, value) in [
            (ANNOTATION_PORT, "http"),
            (ANNOTATION_PORT, "0"),
            (ANNOTATION_CPU_LIMIT, "lots"),
            (ANNOTATION_TAGS, "a b"),
            (ANNOTATION_INJECT, "maybe"),
        ] {
            let mut object = pod(json!({annotation: value}));
            let error = inject_object(&mut object, &SidecarConfig::default(), DefaultPolicy::Inject).unwrap_err();
            assert!(error.to_string().contains(annotation), "{error}");
        }
        let mut object = json!({"kind": "Deployment", "metadata": {"name": "x"}, "spec": {}});
        assert!(inject_object(&mut object, &SidecarConfig::default(), DefaultPolicy::Inject).is_err());
    }

    #[test]
    fn quantities() {
        for good in ["100m", "0.5", "64Mi", "1G", "1e3", "2", ".5"] {
            assert!(check_quantity(good).is_ok(), "{good}");
        }
        for bad in ["", "Mi", "1.", "abc", "1 Gi", "-1"] {
            assert!(check_quantity(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn other_kinds_pass_through() {
        let mut object = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}});
        let before = object.clone();
        assert!(inject_object(&mut object, &SidecarConfig::default(), DefaultPolicy::Inject).unwrap().is_empty());
        assert_eq!(object, before);
    }
}
