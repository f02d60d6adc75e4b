//! W3C Trace Context (`traceparent`, `tracestate`): parsing what a client sends and writing what the
//! backend receives (<https://www.w3.org/TR/trace-context/>).

use http::HeaderValue;

pub const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
pub const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// The longest `tracestate` kept (the spec's 512-character floor); a longer one is dropped whole.
pub const MAX_TRACESTATE: usize = 512;

/// The `sampled` bit of the trace flags.
pub const FLAG_SAMPLED: u8 = 0x01;

/// A parsed `traceparent`: the caller's trace, its span (our parent) and its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub parent_id: u64,
    pub flags: u8,
}

impl TraceParent {
    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    /// Parses a `traceparent` value. Version `00` must be exactly 55 characters; a higher version is
    /// read by its first four fields (the spec's forward compatibility); version `ff`, all-zero ids,
    /// upper-case hex and any other deviation make it invalid (`None`: a new trace starts).
    pub fn parse(value: &[u8]) -> Option<TraceParent> {
        if value.len() < 55 {
            return None;
        }
        let version = hex_u8(&value[0..2])?;
        if version == 0xff
            || (version == 0 && value.len() != 55)
            || (version != 0 && value.len() > 55 && value[55] != b'-')
        {
            return None;
        }
        if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let trace_id = hex_u128(&value[3..35])?;
        let parent_id = u64::try_from(hex_u128(&value[36..52])?).ok()?;
        let flags = hex_u8(&value[53..55])?;
        if trace_id == 0 || parent_id == 0 {
            return None;
        }
        Some(TraceParent { trace_id, parent_id, flags })
    }

    /// The header value for a request whose parent span is `span_id` in this trace.
    pub fn header(trace_id: u128, span_id: u64, flags: u8) -> HeaderValue {
        let mut out = [0u8; 55];
        out[0] = b'0';
        out[1] = b'0';
        out[2] = b'-';
        write_hex(&mut out[3..35], &trace_id.to_be_bytes());
        out[35] = b'-';
        write_hex(&mut out[36..52], &span_id.to_be_bytes());
        out[52] = b'-';
        write_hex(&mut out[53..55], &[flags & FLAG_SAMPLED]);
        HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// A client's `tracestate`, kept when it is short enough and plain visible ASCII; it is forwarded as
/// received and recorded on spans (vendors' entries are theirs to read).
pub fn tracestate(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?.trim();
    (!text.is_empty() && text.len() <= MAX_TRACESTATE).then_some(text)
}

/// Lower-case hex id text, as trace backends print ids.
pub fn trace_id_hex(id: u128) -> String {
    format!("{id:032x}")
}

pub fn span_id_hex(id: u64) -> String {
    format!("{id:016x}")
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_u8(text: &[u8]) -> Option<u8> {
    Some(hex_digit(text[0])? << 4 | hex_digit(text[1])?)
}

fn hex_u128(text: &[u8]) -> Option<u128> {
    text.iter().try_fold(0u128, |acc, &c| Some(acc << 4 | u128::from(hex_digit(c)?)))
}

fn write_hex(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0x0f)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn parses_and_writes_the_spec_example() {
        let parent = TraceParent::parse(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(parent.trace_id, 0x0af7651916cd43dd8448eb211c80319c);
        assert_eq!(parent.parent_id, 0xb7ad6b7169203331);
        assert!(parent.sampled());
        assert_eq!(TraceParent::header(parent.trace_id, parent.parent_id, parent.flags), EXAMPLE);
        assert_eq!(TraceParent::header(1, 2, 0), "00-00000000000000000000000000000001-0000000000000002-00");
    }

    #[test]
    fn refuses_what_the_spec_refuses() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "0g-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert_eq!(TraceParent::parse(bad.as_bytes()), None, "{bad:?}");
        }
        // A future version with more fields is read by the fields it shares with version 00.
        let future = "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-extra";
        assert_eq!(TraceParent::parse(future.as_bytes()).map(|p| p.sampled()), Some(false));
    }

    #[test]
    fn tracestate_is_bounded() {
        assert_eq!(tracestate(&HeaderValue::from_static("congo=t61rcWkgMzE")), Some("congo=t61rcWkgMzE"));
        assert_eq!(tracestate(&HeaderValue::from_static(" ")), None);
        let long = HeaderValue::from_str(&"a".repeat(MAX_TRACESTATE + 1)).unwrap();
        assert_eq!(tracestate(&long), None);
    }
}
