//! `POST /reports`: gzip-compressed NDJSON batches of analytics documents (GRAVITEE-FORMATS.md,
//! Reports, inferred). A batch is accepted or refused whole, so a client can safely retry or keep it.

use std::io::Read;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use axum::{Json, Router, body::Bytes};
use flate2::read::GzDecoder;
use serde_json::{Value, json};

use super::{ApiError, SimState};

pub const REPORTS: &str = "/reports";

/// Decompressed size above which a batch is refused: 1000 documents are a few MiB; more is a
/// compression bomb or a runaway client.
pub const MAX_DECOMPRESSED_BYTES: u64 = 256 * 1024 * 1024;

pub fn routes() -> Router<Arc<SimState>> {
    Router::new().route(REPORTS, post(post_reports))
}

async fn post_reports(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    state.authorize(&headers)?;
    let result = decode_batch(&headers, &body);
    let mut store = state.store();
    store.reports.requests += 1;
    store.reports.bytes += body.len() as u64;
    match result {
        Ok(documents) => {
            let accepted = documents.len();
            store.reports.store(documents);
            Ok(Json(json!({"accepted": accepted})))
        }
        Err(e) => {
            store.reports.rejected += 1;
            tracing::warn!(reason = %e.message, "report batch rejected");
            Err(e)
        }
    }
}

/// Checks the headers, gunzips and parses every non-empty line as a JSON object.
pub fn decode_batch(headers: &HeaderMap, body: &[u8]) -> Result<Vec<Value>, ApiError> {
    let encoding = header_value(headers, header::CONTENT_ENCODING);
    if !encoding.eq_ignore_ascii_case("gzip") {
        return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Encoding must be gzip"));
    }
    let content_type = header_value(headers, header::CONTENT_TYPE);
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    if !media_type.eq_ignore_ascii_case("application/x-ndjson") {
        return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/x-ndjson"));
    }
    let mut text = String::new();
    GzDecoder::new(body)
        .take(MAX_DECOMPRESSED_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| ApiError::bad_request(format!("body is not valid gzip of UTF-8 text: {e}")))?;
    if text.len() as u64 > MAX_DECOMPRESSED_BYTES {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "decompressed batch is too large"));
    }
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| match serde_json::from_str::<Value>(line) {
            Ok(doc @ Value::Object(_)) => Ok(doc),
            Ok(_) => Err(ApiError::bad_request(format!("line {} is not a JSON object", n + 1))),
            Err(e) => Err(ApiError::bad_request(format!("line {} is not valid JSON: {e}", n + 1))),
        })
        .collect()
}

fn header_value(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use axum::http::HeaderValue;
    use flate2::{Compression, write::GzEncoder};

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn headers(encoding: &'static str, content_type: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        h
    }

    #[test]
    fn accepts_ndjson_with_blank_lines() {
        let body = gzip(b"{\"a\":1}\n\n{\"b\":2}\n");
        let docs = decode_batch(&headers("gzip", "application/x-ndjson; charset=utf-8"), &body).unwrap();
        assert_eq!(docs, vec![json!({"a": 1}), json!({"b": 2})]);
    }

    #[test]
    fn refuses_wrong_headers_bad_gzip_and_bad_lines() {
        let body = gzip(b"{}\n");
        let status = |r: Result<Vec<Value>, ApiError>| r.unwrap_err().status;
        assert_eq!(
            status(decode_batch(&headers("identity", "application/x-ndjson"), &body)),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(
            status(decode_batch(&headers("gzip", "application/json"), &body)),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        let ok = headers("gzip", "application/x-ndjson");
        assert_eq!(status(decode_batch(&ok, b"{}\n")), StatusCode::BAD_REQUEST);
        assert_eq!(status(decode_batch(&ok, &gzip(b"{}\nnot json\n"))), StatusCode::BAD_REQUEST);
        assert_eq!(status(decode_batch(&ok, &gzip(b"[1]\n"))), StatusCode::BAD_REQUEST);
    }
}
