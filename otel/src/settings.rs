//! The standard OpenTelemetry environment variables, read once and validated at start (a bad value
//! is a configuration error: exit 64 with one line, before any port is bound).
//!
//! Tracing is on when an OTLP endpoint is configured (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT`) and neither `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none`
//! says otherwise. Without an endpoint nothing is recorded or exported, and requests pay nothing.

use std::time::Duration;

/// OTLP/gRPC's conventional port, used in error messages' hints only.
const GRPC_PORT_HINT: &str = "4317 for grpc, 4318 for http/protobuf";

/// The spec's batch span processor defaults (`OTEL_BSP_*`).
pub const DEFAULT_MAX_QUEUE_SIZE: usize = 2048;
pub const DEFAULT_SCHEDULE_DELAY: Duration = Duration::from_millis(5000);
pub const DEFAULT_MAX_EXPORT_BATCH_SIZE: usize = 512;
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_millis(30_000);
/// `OTEL_EXPORTER_OTLP_TIMEOUT` default: 10 s per export call.
pub const DEFAULT_OTLP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// `OTEL_TRACES_SAMPLER` (+ `OTEL_TRACES_SAMPLER_ARG`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    /// Keeps a trace when its id falls in the lowest `ratio` of the id space, so every service
    /// sampling by ratio keeps the same traces.
    TraceIdRatio(f64),
    /// A caller's decision (its `traceparent` sampled flag) wins; `root` decides new traces.
    ParentBased(Root),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Root {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Where spans go: for grpc the collector's URL, for http/protobuf the full `/v1/traces` URL.
    pub endpoint: String,
    pub protocol: Protocol,
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES`, percent-decoded (`service.name` is in `service_name`).
    pub resource: Vec<(String, String)>,
    pub sampler: Sampler,
    pub max_queue_size: usize,
    pub schedule_delay: Duration,
    pub max_export_batch_size: usize,
    pub export_timeout: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SettingsError {
    #[error("{name}={value:?}: {reason}")]
    Invalid { name: &'static str, value: String, reason: String },
}

fn invalid(name: &'static str, value: &str, reason: impl Into<String>) -> SettingsError {
    SettingsError::Invalid { name, value: value.to_owned(), reason: reason.into() }
}

impl Settings {
    /// Reads the variables through `var` (the process environment in the binaries, a map in tests).
    /// `Ok(None)`: tracing is off. `default_service` names the binary (`hgw-agent`, `hgw-dataplane`).
    pub fn from_env(
        var: impl Fn(&str) -> Option<String>,
        default_service: &str,
    ) -> Result<Option<Settings>, SettingsError> {
        let get = |name: &str| var(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        if let Some(disabled) = get("OTEL_SDK_DISABLED") {
            match disabled.to_ascii_lowercase().as_str() {
                "true" => return Ok(None),
                "false" => {}
                _ => return Err(invalid("OTEL_SDK_DISABLED", &disabled, "expected true or false")),
            }
        }
        if let Some(exporter) = get("OTEL_TRACES_EXPORTER") {
            match exporter.to_ascii_lowercase().as_str() {
                "none" => return Ok(None),
                "otlp" => {}
                _ => return Err(invalid("OTEL_TRACES_EXPORTER", &exporter, "hgw exports otlp (or none)")),
            }
        }
        let protocol_name = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
        let protocol = match get(protocol_name)
            .map(|p| (protocol_name, p))
            .or_else(|| get("OTEL_EXPORTER_OTLP_PROTOCOL").map(|p| ("OTEL_EXPORTER_OTLP_PROTOCOL", p)))
        {
            None => Protocol::HttpProtobuf,
            Some((name, p)) => match p.as_str() {
                "grpc" => Protocol::Grpc,
                "http/protobuf" => Protocol::HttpProtobuf,
                _ => return Err(invalid(name, &p, "expected grpc or http/protobuf")),
            },
        };
        let endpoint = match (get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), get("OTEL_EXPORTER_OTLP_ENDPOINT")) {
            (Some(traces), _) => {
                check_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &traces)?;
                // The signal-specific URL is used as given (the spec), for both protocols.
                traces
            }
            (None, Some(base)) => {
                check_url("OTEL_EXPORTER_OTLP_ENDPOINT", &base)?;
                match protocol {
                    Protocol::Grpc => base,
                    Protocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
                }
            }
            (None, None) => return Ok(None),
        };
        let mut resource = match get("OTEL_RESOURCE_ATTRIBUTES") {
            Some(text) => parse_resource(&text)?,
            None => Vec::new(),
        };
        let from_resource = resource.iter().position(|(k, _)| k == "service.name").map(|i| resource.remove(i).1);
        let service_name = get("OTEL_SERVICE_NAME").or(from_resource).unwrap_or_else(|| default_service.to_owned());
        let sampler = parse_sampler(get("OTEL_TRACES_SAMPLER"), get("OTEL_TRACES_SAMPLER_ARG"))?;
        let max_queue_size = count(&get, "OTEL_BSP_MAX_QUEUE_SIZE", DEFAULT_MAX_QUEUE_SIZE)?;
        let max_export_batch_size =
            count(&get, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", DEFAULT_MAX_EXPORT_BATCH_SIZE)?.min(max_queue_size);
        Ok(Some(Settings {
            endpoint,
            protocol,
            service_name,
            resource,
            sampler,
            max_queue_size,
            schedule_delay: millis(&get, "OTEL_BSP_SCHEDULE_DELAY", DEFAULT_SCHEDULE_DELAY)?,
            max_export_batch_size,
            export_timeout: millis(&get, "OTEL_EXPORTER_OTLP_TIMEOUT", DEFAULT_OTLP_TIMEOUT)?.min(millis(
                &get,
                "OTEL_BSP_EXPORT_TIMEOUT",
                DEFAULT_EXPORT_TIMEOUT,
            )?),
        }))
    }
}

fn check_url(name: &'static str, value: &str) -> Result<(), SettingsError> {
    let uri: http::Uri = value.parse().map_err(|e| invalid(name, value, format!("not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") if uri.host().is_some() => Ok(()),
        Some("https") => {
            Err(invalid(name, value, "TLS to the collector is not supported: use a local collector over http://"))
        }
        _ => Err(invalid(name, value, format!("expected http://host:port ({GRPC_PORT_HINT})"))),
    }
}

fn count(get: &impl Fn(&str) -> Option<String>, name: &'static str, default: usize) -> Result<usize, SettingsError> {
    match get(name) {
        None => Ok(default),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(invalid(name, &text, "expected a positive integer")),
        },
    }
}

fn millis(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: Duration,
) -> Result<Duration, SettingsError> {
    match get(name) {
        None => Ok(default),
        Some(text) => match text.parse::<u64>() {
            Ok(n) if n > 0 => Ok(Duration::from_millis(n)),
            _ => Err(invalid(name, &text, "expected a positive number of milliseconds")),
        },
    }
}

fn parse_sampler(name: Option<String>, arg: Option<String>) -> Result<Sampler, SettingsError> {
    let ratio = || -> Result<f64, SettingsError> {
        match &arg {
            // The spec's default when the argument is missing.
            None => Ok(1.0),
            Some(text) => match text.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(invalid("OTEL_TRACES_SAMPLER_ARG", text, "expected a ratio between 0 and 1")),
            },
        }
    };
    let Some(name) = name else {
        return Ok(Sampler::ParentBased(Root::AlwaysOn));
    };
    Ok(match name.to_ascii_lowercase().as_str() {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::TraceIdRatio(ratio()?),
        "parentbased_always_on" => Sampler::ParentBased(Root::AlwaysOn),
        "parentbased_always_off" => Sampler::ParentBased(Root::AlwaysOff),
        "parentbased_traceidratio" => Sampler::ParentBased(Root::TraceIdRatio(ratio()?)),
        _ => {
            return Err(invalid(
                "OTEL_TRACES_SAMPLER",
                &name,
                "expected always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio",
            ));
        }
    })
}

/// `key1=value1,key2=value2`, values percent-encoded (the spec's W3C Baggage form, without properties).
fn parse_resource(text: &str) -> Result<Vec<(String, String)>, SettingsError> {
    let mut out = Vec::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(invalid("OTEL_RESOURCE_ATTRIBUTES", text, format!("{pair:?} is not key=value")));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(invalid("OTEL_RESOURCE_ATTRIBUTES", text, format!("{pair:?} has an empty key")));
        }
        let value = percent_decode(value.trim())
            .ok_or_else(|| invalid("OTEL_RESOURCE_ATTRIBUTES", text, format!("{pair:?}: bad percent-encoding")))?;
        out.push((key.to_owned(), value));
    }
    Ok(out)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<Settings>, SettingsError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_env(|name| map.get(name).cloned(), "hgw-test")
    }

    #[test]
    fn off_without_an_endpoint_or_when_disabled() {
        assert_eq!(settings(&[]), Ok(None));
        assert_eq!(settings(&[("OTEL_SERVICE_NAME", "x")]), Ok(None));
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        assert_eq!(settings(&[endpoint, ("OTEL_SDK_DISABLED", "true")]), Ok(None));
        assert_eq!(settings(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]), Ok(None));
    }

    #[test]
    fn defaults_follow_the_spec() {
        let s = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/")]).unwrap().unwrap();
        assert_eq!(s.endpoint, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(s.protocol, Protocol::HttpProtobuf);
        assert_eq!(s.service_name, "hgw-test");
        assert_eq!(s.sampler, Sampler::ParentBased(Root::AlwaysOn));
        assert_eq!((s.max_queue_size, s.max_export_batch_size), (2048, 512));
        assert_eq!((s.schedule_delay, s.export_timeout), (DEFAULT_SCHEDULE_DELAY, DEFAULT_OTLP_TIMEOUT));
    }

    #[test]
    fn reads_every_variable() {
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "edge"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=ignored, deployment.environment=prod%20eu,team=api"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((s.endpoint.as_str(), s.protocol), ("http://collector:4317", Protocol::Grpc));
        assert_eq!(s.service_name, "edge");
        assert_eq!(
            s.resource,
            vec![("deployment.environment".into(), "prod eu".into()), ("team".into(), "api".into())]
        );
        assert_eq!(s.sampler, Sampler::ParentBased(Root::TraceIdRatio(0.01)));
        assert_eq!((s.max_queue_size, s.max_export_batch_size), (100, 100));
        assert_eq!(s.schedule_delay, Duration::from_millis(200));
        // service.name from the resource when OTEL_SERVICE_NAME is absent; the traces URL as given.
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/custom"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=gw"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((s.endpoint.as_str(), s.service_name.as_str()), ("http://c:4318/custom", "gw"));
    }

    #[test]
    fn bad_values_are_named() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        for (vars, name) in [
            (vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4318")], "OTEL_EXPORTER_OTLP_ENDPOINT"),
            (vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318")], "OTEL_EXPORTER_OTLP_ENDPOINT"),
            (vec![endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")], "OTEL_EXPORTER_OTLP_PROTOCOL"),
            (vec![endpoint, ("OTEL_TRACES_SAMPLER", "sometimes")], "OTEL_TRACES_SAMPLER"),
            (
                vec![endpoint, ("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "2")],
                "OTEL_TRACES_SAMPLER_ARG",
            ),
            (vec![endpoint, ("OTEL_RESOURCE_ATTRIBUTES", "novalue")], "OTEL_RESOURCE_ATTRIBUTES"),
            (vec![endpoint, ("OTEL_RESOURCE_ATTRIBUTES", "k=%zz")], "OTEL_RESOURCE_ATTRIBUTES"),
            (vec![endpoint, ("OTEL_BSP_MAX_QUEUE_SIZE", "0")], "OTEL_BSP_MAX_QUEUE_SIZE"),
            (vec![endpoint, ("OTEL_SDK_DISABLED", "maybe")], "OTEL_SDK_DISABLED"),
        ] {
            match settings(&vars) {
                Err(SettingsError::Invalid { name: got, .. }) => assert_eq!(got, name, "{vars:?}"),
                other => panic!("{vars:?}: {other:?}"),
            }
        }
    }
}
