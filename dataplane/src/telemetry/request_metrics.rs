//! A request's metrics record as the dataplane keeps it while the request runs, and its protobuf
//! form (`hgw.v1.MetricsRecord`) written straight into the batch being filled.
//!
//! Why not prost's `MetricsRecord` itself: its ~20 text fields are owned `String`s, so every request
//! allocated and freed one per field (ids, method, addresses, host, URI, path, user agent, plan,
//! security type, client identifier, subscription, endpoint) and prost measured the record, then wrote
//! it. Here what the connection and the gateway already share is shared (the ids' header values, the
//! method, the connection's address texts, the API-level fields in [`RecordApi`]), the texts copied
//! from the request at arrival go into one allocation, and the encoder writes the fields in one pass
//! (prost measures the message first, then writes it). The agent
//! reads the same bytes prost would have written (fields in number order; empty and zero fields left
//! out, as proto3 does); the tests decode them with prost.

use std::borrow::Cow;
use std::sync::Arc;

use hgw_proto::v1::ReportApi;
use http::{HeaderValue, Method};

/// The request-level fields of one v4 metrics record. The API-level ones (API id and name, type,
/// organization, environment, entrypoint) travel in its batch's `apis` table or are written from
/// its [`RecordApi`] when the agent has no table: see [`ApiFields`].
///
/// `tenant`, `zone`, `mapped_path` and `custom_metrics` of the wire message are never set by hgw
/// and are not kept.
#[derive(Debug)]
pub struct RequestMetrics {
    pub timestamp_ms: i64,
    /// Shared with the request's `X-Gravitee-Request-Id` (no copy).
    pub request_id: HeaderValue,
    /// The gateway's own id is shared; one the client sent is copied (a value parsed by hyper points
    /// into the connection's read buffer, which a queued record must not keep alive).
    pub transaction_id: HeaderValue,
    pub method: Method,
    pub local_address: Arc<str>,
    /// The client's address (the connection's, or the one trusted proxies forwarded).
    pub remote_address: Arc<str>,
    pub texts: ArrivalTexts,
    pub plan_id: String,
    pub application_id: String,
    pub subscription_id: String,
    /// The answer's `X-Gravitee-Client-Identifier`; `None` when the plan gave none, and then the
    /// record says the subscription (as Gravitee's V3 engine does).
    pub client_identifier: Option<HeaderValue>,
    pub user: String,
    pub security_type: &'static str,
    pub endpoint: String,
    pub status: u32,
    pub error_key: &'static str,
    pub error_message: String,
    pub request_content_length: i64,
    pub request_ended: bool,
    pub response_content_length: i64,
    pub endpoint_response_time_ms: i64,
    pub gateway_response_time_ms: i64,
    pub gateway_latency_ms: i64,
}

/// Empty, with every number 0 (by hand: `HeaderValue` has no `Default`).
impl Default for RequestMetrics {
    fn default() -> RequestMetrics {
        RequestMetrics {
            timestamp_ms: 0,
            request_id: HeaderValue::from_static(""),
            transaction_id: HeaderValue::from_static(""),
            method: Method::default(),
            local_address: Arc::default(),
            remote_address: Arc::default(),
            texts: ArrivalTexts::default(),
            plan_id: String::new(),
            application_id: String::new(),
            subscription_id: String::new(),
            client_identifier: None,
            user: String::new(),
            security_type: "",
            endpoint: String::new(),
            status: 0,
            error_key: "",
            error_message: String::new(),
            request_content_length: 0,
            request_ended: false,
            response_content_length: 0,
            endpoint_response_time_ms: 0,
            gateway_response_time_ms: 0,
            gateway_latency_ms: 0,
        }
    }
}

/// What the request says about itself, as the record copies it at arrival.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestTexts<'a> {
    pub host: &'a str,
    pub uri: &'a str,
    pub path_info: &'a str,
    /// Raw `User-Agent` bytes (not UTF-8 → U+FFFD, as every header value the record keeps).
    pub user_agent: &'a [u8],
}

/// What every metrics record of one API says about the API, made once when the API is deployed. A
/// request's record shares it instead of copying its texts; the reporter sends it once per batch (the
/// batch's `apis` table) and the record points at it.
#[derive(Debug, PartialEq, Eq)]
pub struct RecordApi {
    pub id: String,
    pub name: String,
    pub organization_id: String,
    pub environment_id: String,
}

impl RecordApi {
    /// Gravitee's API type and entrypoint for every API hgw serves.
    pub const API_TYPE: &'static str = "proxy";
    pub const ENTRYPOINT_ID: &'static str = "http-proxy";

    /// Its entry in a batch's `apis`.
    pub(crate) fn to_report(&self) -> ReportApi {
        ReportApi {
            id: self.id.clone(),
            name: self.name.clone(),
            r#type: Self::API_TYPE.to_owned(),
            organization_id: self.organization_id.clone(),
            environment_id: self.environment_id.clone(),
            entrypoint_id: Self::ENTRYPOINT_ID.to_owned(),
        }
    }
}

/// Where a record's API-level fields go on the wire.
#[derive(Debug, Clone, Copy)]
pub enum ApiFields<'a> {
    /// 1-based index into the batch's `apis` table (the `api` field).
    Table(u32),
    /// Written into the record itself, for an agent that reads no table.
    Inline(&'a RecordApi),
    /// None known (tests, records without an API).
    Absent,
}

/// Host, URI (API keys in its query masked), path within the API and user agent, copied from the
/// request at arrival into one allocation.
#[derive(Debug, Default)]
pub struct ArrivalTexts {
    all: String,
    ends: [usize; 4],
}

impl ArrivalTexts {
    pub fn new(texts: RequestTexts<'_>) -> ArrivalTexts {
        let user_agent = header_text(texts.user_agent);
        let parts = [texts.host, texts.uri, texts.path_info, &user_agent];
        let mut all = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0; 4];
        for (end, part) in ends.iter_mut().zip(parts) {
            all.push_str(part);
            *end = all.len();
        }
        ArrivalTexts { all, ends }
    }

    fn part(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.all.get(start..self.ends[i]).unwrap_or_default()
    }

    pub fn host(&self) -> &str {
        self.part(0)
    }

    pub fn uri(&self) -> &str {
        self.part(1)
    }

    pub fn path_info(&self) -> &str {
        self.part(2)
    }

    pub fn user_agent(&self) -> &str {
        self.part(3)
    }
}

impl RequestMetrics {
    /// The record's `client_identifier`.
    pub fn client_identifier(&self) -> Cow<'_, str> {
        match &self.client_identifier {
            Some(client) => value_text(client),
            None => Cow::Borrowed(&self.subscription_id),
        }
    }

    /// Appends the record to `buf` as field `field` of the enclosing message (length-delimited), its
    /// API-level fields as `api` says.
    pub fn encode(&self, field: u32, api: ApiFields<'_>, buf: &mut Vec<u8>) {
        put_varint(buf, u64::from(field << 3 | LENGTH_DELIMITED));
        // The length goes before the record but is known once it is written: two bytes are kept for
        // it (records of 128 to 16,383 bytes, nearly all of them), and a record of another size is
        // moved to fit. One pass over the fields instead of measuring them first.
        let start = buf.len();
        buf.extend_from_slice(&[0, 0]);
        self.write_fields(api, buf);
        let (length, n) = varint((buf.len() - start - 2) as u64);
        if n == 2 {
            buf[start..start + 2].copy_from_slice(&length[..2]);
        } else {
            buf.splice(start..start + 2, length[..n].iter().copied());
        }
    }

    /// Every field in number order; proto3 leaves out empty texts and zero numbers.
    fn write_fields(&self, api: ApiFields<'_>, buf: &mut Vec<u8>) {
        let inline = match api {
            ApiFields::Inline(api) => Some(api),
            _ => None,
        };
        int(buf, 1, self.timestamp_ms);
        text(buf, 2, &value_text(&self.request_id));
        text(buf, 3, &value_text(&self.transaction_id));
        if let Some(api) = inline {
            text(buf, 4, &api.id);
            text(buf, 5, &api.name);
            text(buf, 6, RecordApi::API_TYPE);
        }
        text(buf, 7, &self.plan_id);
        text(buf, 8, &self.application_id);
        text(buf, 9, &self.subscription_id);
        text(buf, 10, &self.client_identifier());
        if let Some(api) = inline {
            text(buf, 11, &api.organization_id);
            text(buf, 12, &api.environment_id);
        }
        text(buf, 15, self.method.as_str());
        text(buf, 16, &self.local_address);
        text(buf, 17, &self.remote_address);
        text(buf, 18, self.texts.host());
        text(buf, 19, self.texts.uri());
        text(buf, 20, self.texts.path_info());
        text(buf, 22, self.texts.user_agent());
        int(buf, 23, self.request_content_length);
        int(buf, 24, i64::from(self.request_ended));
        if inline.is_some() {
            text(buf, 25, RecordApi::ENTRYPOINT_ID);
        }
        text(buf, 26, &self.endpoint);
        int(buf, 27, self.endpoint_response_time_ms);
        int(buf, 28, i64::from(self.status));
        int(buf, 29, self.response_content_length);
        int(buf, 30, self.gateway_response_time_ms);
        int(buf, 31, self.gateway_latency_ms);
        text(buf, 32, &self.user);
        text(buf, 33, self.security_type);
        text(buf, 34, self.error_key);
        text(buf, 35, &self.error_message);
        if let ApiFields::Table(index) = api {
            int(buf, 37, i64::from(index));
        }
    }
}

/// A header value as text; bytes that are not UTF-8 become U+FFFD.
pub fn value_text(value: &HeaderValue) -> Cow<'_, str> {
    header_text(value.as_bytes())
}

/// Most values are visible ASCII (ids, user agents), which `str::from_utf8` checks a word at a time,
/// far faster than the lossy decoder walks them.
fn header_text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

const VARINT: u32 = 0;
const LENGTH_DELIMITED: u32 = 2;

/// A `string` field, left out when empty.
#[inline(always)]
fn text(buf: &mut Vec<u8>, field: u32, text: &str) {
    if !text.is_empty() {
        put_varint(buf, u64::from(field << 3 | LENGTH_DELIMITED));
        put_varint(buf, text.len() as u64);
        buf.extend_from_slice(text.as_bytes());
    }
}

/// An `int64`, `uint32` or `bool` field (all varints), left out when 0. A negative `int64` is its
/// two's complement, ten bytes, as protobuf encodes it.
#[inline(always)]
fn int(buf: &mut Vec<u8>, field: u32, value: i64) {
    if value != 0 {
        put_varint(buf, u64::from(field << 3 | VARINT));
        put_varint(buf, value as u64);
    }
}

/// `value` as a varint (7 bits per byte, low first) and its length.
#[inline]
fn varint(mut value: u64) -> ([u8; 10], usize) {
    let mut bytes = [0; 10];
    let mut n = 0;
    while value >= 0x80 {
        bytes[n] = (value as u8) | 0x80;
        value >>= 7;
        n += 1;
    }
    bytes[n] = value as u8;
    (bytes, n + 1)
}

/// Pushed byte by byte: most are one byte (tags of fields under 16, short texts' lengths), and
/// copying a stack buffer would call `memcpy` for each (measured: 1.6k instructions per record).
#[inline(always)]
fn put_varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

#[cfg(test)]
mod tests {
    use hgw_proto::v1::{MetricsRecord, ReportApi, ReportRequest};
    use prost::Message;

    use super::*;

    /// A record with every field hgw sets, as the dataplane fills it.
    fn filled() -> RequestMetrics {
        RequestMetrics {
            timestamp_ms: 1_764_000_000_123,
            request_id: HeaderValue::from_static("4b1c3d1e-0000-4000-8000-000000000001"),
            transaction_id: HeaderValue::from_static("client-transaction"),
            method: Method::PATCH,
            local_address: "127.0.0.1".into(),
            remote_address: "2001:db8::7".into(),
            plan_id: "plan-1".into(),
            application_id: "app-é".into(),
            subscription_id: "sub-1".into(),
            client_identifier: Some(HeaderValue::from_static("client-1")),
            user: "alice".into(),
            security_type: "API_KEY",
            endpoint: "http://backend:8080/orders".into(),
            status: 504,
            error_key: "GATEWAY_TIMEOUT",
            error_message: "Request timeout".into(),
            request_content_length: 300,
            request_ended: true,
            response_content_length: 70_000,
            endpoint_response_time_ms: 5_001,
            gateway_response_time_ms: 5_003,
            gateway_latency_ms: 2,
            texts: ArrivalTexts::new(RequestTexts {
                host: "api.example.com:8082",
                uri: "/orders/42?api-key=*****&q=ü",
                path_info: "/42",
                user_agent: b"curl/8.5\xff",
            }),
        }
    }

    /// The same record as prost's message, written out field by field.
    fn expected() -> MetricsRecord {
        MetricsRecord {
            timestamp_ms: 1_764_000_000_123,
            request_id: "4b1c3d1e-0000-4000-8000-000000000001".into(),
            transaction_id: "client-transaction".into(),
            plan_id: "plan-1".into(),
            application_id: "app-é".into(),
            subscription_id: "sub-1".into(),
            client_identifier: "client-1".into(),
            http_method: "PATCH".into(),
            local_address: "127.0.0.1".into(),
            remote_address: "2001:db8::7".into(),
            host: "api.example.com:8082".into(),
            uri: "/orders/42?api-key=*****&q=ü".into(),
            path_info: "/42".into(),
            user_agent: "curl/8.5\u{fffd}".into(),
            request_content_length: 300,
            request_ended: true,
            endpoint: "http://backend:8080/orders".into(),
            endpoint_response_time_ms: 5_001,
            status: 504,
            response_content_length: 70_000,
            gateway_response_time_ms: 5_003,
            gateway_latency_ms: 2,
            user: "alice".into(),
            security_type: "API_KEY".into(),
            error_key: "GATEWAY_TIMEOUT".into(),
            error_message: "Request timeout".into(),
            ..Default::default()
        }
    }

    fn api() -> RecordApi {
        RecordApi {
            id: "a1".into(),
            name: "Orders".into(),
            organization_id: "org".into(),
            environment_id: "env".into(),
        }
    }

    /// Encoded as `ReportRequest.records` (field 3) and read back the way the agent reads it.
    fn round_trip(record: &RequestMetrics, api: ApiFields<'_>) -> (MetricsRecord, Vec<u8>) {
        let mut buf = Vec::new();
        record.encode(3, api, &mut buf);
        let batch = ReportRequest::decode(buf.as_slice()).expect("a ReportRequest");
        assert_eq!(batch.records.len(), 1);
        let decoded = batch.records.into_iter().next().unwrap_or_default();
        (decoded, buf)
    }

    #[test]
    fn prost_reads_every_field_hgw_writes() {
        let (decoded, bytes) = round_trip(&filled(), ApiFields::Table(3));
        assert_eq!(decoded, MetricsRecord { api: 3, ..expected() });
        // Byte for byte what prost writes for the same message (fields in number order, defaults out).
        let mut prost_form = Vec::new();
        prost::encoding::message::encode(3, &MetricsRecord { api: 3, ..expected() }, &mut prost_form);
        assert_eq!(bytes, prost_form);
    }

    /// Lists every field of the wire message without `..`: a field added to `hgw.v1.MetricsRecord`
    /// stops this from compiling until the encoder above writes it (or this says why it does not).
    #[test]
    fn the_encoder_knows_every_field_of_the_wire_message() {
        let MetricsRecord {
            timestamp_ms: _,
            request_id: _,
            transaction_id: _,
            api_id: _,
            api_name: _,
            api_type: _,
            plan_id: _,
            application_id: _,
            subscription_id: _,
            client_identifier: _,
            organization_id: _,
            environment_id: _,
            // Never set by hgw (Gravitee fills them from its node's tags and the flows' mapped paths).
            tenant: _,
            zone: _,
            http_method: _,
            local_address: _,
            remote_address: _,
            host: _,
            uri: _,
            path_info: _,
            mapped_path: _,
            user_agent: _,
            request_content_length: _,
            request_ended: _,
            entrypoint_id: _,
            endpoint: _,
            endpoint_response_time_ms: _,
            status: _,
            response_content_length: _,
            gateway_response_time_ms: _,
            gateway_latency_ms: _,
            user: _,
            security_type: _,
            error_key: _,
            error_message: _,
            // Never set by hgw: no assign-metrics policy yet.
            custom_metrics: _,
            api: _,
        } = expected();
    }

    #[test]
    fn an_agent_without_the_table_gets_the_api_fields_in_the_record() {
        let api = api();
        let (decoded, _) = round_trip(&filled(), ApiFields::Inline(&api));
        let mut want = expected();
        want.set_api(ReportApi {
            id: "a1".into(),
            name: "Orders".into(),
            r#type: "proxy".into(),
            organization_id: "org".into(),
            environment_id: "env".into(),
            entrypoint_id: "http-proxy".into(),
        });
        assert_eq!(decoded, want);
    }

    #[test]
    fn an_empty_record_is_an_empty_message_and_numbers_of_every_width_survive() {
        let (decoded, bytes) = round_trip(&RequestMetrics::default(), ApiFields::Absent);
        // `Method::default()` is GET: the only field an otherwise empty record writes.
        assert_eq!(decoded, MetricsRecord { http_method: "GET".into(), ..Default::default() });
        // The record's tag and length, then field 15's tag, length and text.
        assert_eq!(bytes.len(), 1 + 1 + (1 + 1 + 3));
        for value in [1, 127, 128, 16_383, 16_384, i64::MAX, -1, i64::MIN] {
            let record = RequestMetrics { gateway_latency_ms: value, status: value as u32, ..Default::default() };
            let (decoded, _) = round_trip(&record, ApiFields::Absent);
            assert_eq!((decoded.gateway_latency_ms, decoded.status), (value, value as u32), "{value}");
        }
    }

    #[test]
    fn the_client_identifier_falls_back_to_the_subscription() {
        let record = RequestMetrics { subscription_id: "sub-9".into(), ..Default::default() };
        assert_eq!(round_trip(&record, ApiFields::Absent).0.client_identifier, "sub-9");
        let record = RequestMetrics {
            subscription_id: "sub-9".into(),
            client_identifier: Some(HeaderValue::from_static("hash")),
            ..Default::default()
        };
        assert_eq!(round_trip(&record, ApiFields::Absent).0.client_identifier, "hash");
    }

    #[test]
    fn texts_are_kept_apart_in_one_buffer() {
        let t = filled().texts;
        assert_eq!(
            (t.host(), t.uri(), t.path_info(), t.user_agent()),
            ("api.example.com:8082", "/orders/42?api-key=*****&q=ü", "/42", "curl/8.5\u{fffd}")
        );
        let t = ArrivalTexts::new(RequestTexts { path_info: "/", ..Default::default() });
        assert_eq!((t.host(), t.uri(), t.path_info(), t.user_agent()), ("", "", "/", ""));
        let t = ArrivalTexts::default();
        assert_eq!((t.host(), t.uri(), t.path_info(), t.user_agent()), ("", "", "", ""));
    }

    #[test]
    fn varints_read_back_and_lengths_of_every_size_fit() {
        for value in [0, 1, 127, 128, 300, 16_383, 16_384, u64::from(u32::MAX), u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, value);
            assert_eq!(prost::encoding::decode_varint(&mut buf.as_slice()).unwrap(), value);
            assert_eq!(buf.len(), prost::encoding::encoded_len_varint(value), "{value}");
        }
        // A record of over 16,383 bytes takes a three-byte length (its bytes move to fit).
        let record = RequestMetrics {
            texts: ArrivalTexts::new(RequestTexts { uri: &"/x".repeat(10_000), ..Default::default() }),
            ..Default::default()
        };
        let (decoded, bytes) = round_trip(&record, ApiFields::Absent);
        assert_eq!(decoded.uri.len(), 20_000);
        let mut prost_form = Vec::new();
        prost::encoding::message::encode(3, &decoded, &mut prost_form);
        assert_eq!(bytes, prost_form);
    }
}
