//! XML ⇄ JSON as Gravitee's `xml-json` (2.0.1) and `json-xml` (3.0.3) policies convert them: both
//! bundle a 2015 copy of org.json (`XML.toJSONObject`, `JSONObject(String)`, `XML.toString`), whose
//! lenient reader, not any XML or JSON standard, decides what a body becomes. So this is a port of
//! that reader's grammar, not a use of an XML crate: a conforming parser would refuse bodies Gravitee
//! converts (text before the first `<`, unquoted attribute values, `<a>1</b>` inside CDATA...), and
//! accept ones it refuses.
//!
//! What the reader does, kept here:
//! - XML → JSON: text before the first `<` and between top-level elements is skipped; `<?...?>`,
//!   comments and `<!...>` declarations (a DOCTYPE with its internal subset included) are skipped;
//!   attributes and child elements become keys, repeated names arrays, text `content`; element text and
//!   attribute values that read as a number, `true`/`false` or `null` (any case) become one; an element
//!   with only text becomes that value, an empty one `""`. Only the five predefined entities are
//!   decoded; any other `&name;` (numeric references included) is kept as written, so no entity is
//!   ever expanded and no external resource read (no XXE, no billion laughs).
//! - JSON → XML: lenient JSON (unquoted and single-quoted strings, `;` between members, trailing
//!   commas), keys in document order, arrays as repeated elements (`<array>` inside an array), `content`
//!   as bare text, the five XML specials escaped, names written as they are.
//! - Errors carry org.json's words and position (` at I [character C line L]`, counted in UTF-16 units
//!   with its quirks), which Gravitee's V3 engine quotes in its answer.
//!
//! Nesting is bounded as Gravitee bounds it (100 levels, `policy.*.maxdepth`), which also bounds the
//! recursion here; the body size is the dataplane's body limit.

use indexmap::IndexMap;

/// Gravitee's default `policy.xml-json.maxdepth` / `policy.json-xml.maxdepth`.
pub const DEFAULT_MAX_DEPTH: i64 = 100;

/// Why a body was not converted, in org.json's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A grammar error at a position of the input.
    #[error("{message} at {index} [character {character} line {line}]")]
    Syntax { message: String, index: i64, character: i64, line: i64 },
    /// Nesting beyond the depth limit (Java's `IllegalArgumentException`).
    #[error("{0}")]
    TooDeep(&'static str),
    /// A JSON object names a key twice.
    #[error("Duplicate key \"{0}\"")]
    DuplicateKey(String),
    /// Anything else org.json reports (its message as is).
    #[error("{0}")]
    Other(String),
}

/// A value as org.json holds it. Integers are Java's `Integer`/`Long` (written alike).
#[derive(Debug, Clone, PartialEq)]
pub enum JValue {
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(String),
    Object(JObject),
    Array(Vec<JValue>),
}

/// A JSON object in insertion order (org.json's `LinkedHashMap`; a key set again keeps its place).
pub type JObject = IndexMap<String, JValue>;

/// `JSONObject.accumulate`: a first value is set, a second makes an array, later ones are appended.
fn accumulate(object: &mut JObject, key: String, value: JValue) {
    match object.get_mut(&key) {
        // org.json wraps an array set first in another (an element whose only content is text
        // split by a comment or child becomes `[[...]]`).
        None => {
            let value = if let JValue::Array(_) = value { JValue::Array(vec![value]) } else { value };
            object.insert(key, value);
        }
        Some(JValue::Array(items)) => items.push(value),
        Some(existing) => {
            let first = std::mem::replace(existing, JValue::Null);
            *existing = JValue::Array(vec![first, value]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The tokenizer (org.json's JSONTokener over a Java String: UTF-16 units, NUL read as the end).
// ---------------------------------------------------------------------------------------------

const fn u(c: char) -> u16 {
    c as u16
}

struct Tokener {
    src: Vec<u16>,
    pos: usize,
    index: i64,
    character: i64,
    line: i64,
    previous: u16,
    use_previous: bool,
    eof: bool,
}

impl Tokener {
    fn new(text: &str) -> Tokener {
        Tokener {
            src: text.encode_utf16().collect(),
            pos: 0,
            index: 0,
            character: 1,
            line: 1,
            previous: 0,
            use_previous: false,
            eof: false,
        }
    }

    fn next(&mut self) -> u16 {
        let c = if self.use_previous {
            self.use_previous = false;
            self.previous
        } else {
            match self.src.get(self.pos) {
                Some(&c) => {
                    self.pos += 1;
                    if c == 0 {
                        self.eof = true;
                    }
                    c
                }
                None => {
                    self.eof = true;
                    0
                }
            }
        };
        self.index += 1;
        if self.previous == u('\r') {
            self.line += 1;
            self.character = if c == u('\n') { 0 } else { 1 };
        } else if c == u('\n') {
            self.line += 1;
            self.character = 0;
        } else {
            self.character += 1;
        }
        self.previous = c;
        c
    }

    fn back(&mut self) -> Result<(), ConvertError> {
        if self.use_previous || self.index <= 0 {
            return Err(ConvertError::Other("Stepping back two steps is not supported".into()));
        }
        self.index -= 1;
        self.character -= 1;
        self.use_previous = true;
        self.eof = false;
        Ok(())
    }

    fn end(&self) -> bool {
        self.eof && !self.use_previous
    }

    fn more(&mut self) -> Result<bool, ConvertError> {
        self.next();
        if self.end() {
            return Ok(false);
        }
        self.back()?;
        Ok(true)
    }

    fn syntax_error(&self, message: impl Into<String>) -> ConvertError {
        ConvertError::Syntax { message: message.into(), index: self.index, character: self.character, line: self.line }
    }

    /// Reads until the last units read spell `to`; false at the end of the input.
    fn skip_past(&mut self, to: &str) -> bool {
        let to: Vec<u16> = to.encode_utf16().collect();
        let mut window: Vec<u16> = Vec::with_capacity(to.len());
        loop {
            let c = self.next();
            if c == 0 {
                return false;
            }
            if window.len() == to.len() {
                window.remove(0);
            }
            window.push(c);
            if window == to {
                return true;
            }
        }
    }

    // --- XMLTokener ---

    fn next_cdata(&mut self) -> Result<Vec<u16>, ConvertError> {
        let mut sb = Vec::new();
        loop {
            let c = self.next();
            if self.end() {
                return Err(self.syntax_error("Unclosed CDATA"));
            }
            sb.push(c);
            if sb.ends_with(&[u(']'), u(']'), u('>')]) {
                sb.truncate(sb.len() - 3);
                return Ok(sb);
            }
        }
    }

    /// Text up to the next `<` (trimmed, entities decoded), `Lt`, or `None` at the end.
    fn next_content(&mut self) -> Result<Option<Content>, ConvertError> {
        let mut c = self.next();
        while java_whitespace(c) {
            c = self.next();
        }
        if c == 0 {
            return Ok(None);
        }
        if c == u('<') {
            return Ok(Some(Content::Lt));
        }
        let mut sb = Vec::new();
        loop {
            if c == u('<') || c == 0 {
                self.back()?;
                return Ok(Some(Content::Text(java_trim(&sb).to_vec())));
            }
            if c == u('&') {
                self.next_entity(&mut sb)?;
            } else {
                sb.push(c);
            }
            c = self.next();
        }
    }

    /// An entity after `&`: one of the five predefined ones decoded, any other kept as `&name;`
    /// (lowercased, as org.json does).
    fn next_entity(&mut self, out: &mut Vec<u16>) -> Result<(), ConvertError> {
        let mut name = Vec::new();
        loop {
            let c = self.next();
            if java_letter_or_digit(c) || c == u('#') {
                name.push(java_lower(c));
            } else if c == u(';') {
                break;
            } else {
                return Err(self.syntax_error(format!("Missing ';' in XML entity: &{}", java_string(&name))));
            }
        }
        let decoded = match &*String::from_utf16_lossy(&name) {
            "amp" => Some('&'),
            "apos" => Some('\''),
            "gt" => Some('>'),
            "lt" => Some('<'),
            "quot" => Some('"'),
            _ => None,
        };
        match decoded {
            Some(c) => out.push(u(c)),
            None => {
                out.push(u('&'));
                out.extend_from_slice(&name);
                out.push(u(';'));
            }
        }
        Ok(())
    }

    /// Inside `<! ... >`: only `<` and `>` matter (they nest).
    fn next_meta(&mut self) -> Result<Meta, ConvertError> {
        let mut c = self.next();
        while java_whitespace(c) {
            c = self.next();
        }
        match c {
            0 => Err(self.syntax_error("Misshaped meta tag")),
            0x3c => Ok(Meta::Lt),
            0x3e => Ok(Meta::Gt),
            0x2f | 0x3d | 0x21 | 0x3f => Ok(Meta::Other),
            0x22 | 0x27 => {
                let q = c;
                loop {
                    let c = self.next();
                    if c == 0 {
                        return Err(self.syntax_error("Unterminated string"));
                    }
                    if c == q {
                        return Ok(Meta::Other);
                    }
                }
            }
            _ => loop {
                let c = self.next();
                if java_whitespace(c) {
                    return Ok(Meta::Other);
                }
                if [0, u('<'), u('>'), u('/'), u('='), u('!'), u('?'), u('"'), u('\'')].contains(&c) {
                    self.back()?;
                    return Ok(Meta::Other);
                }
            },
        }
    }

    fn next_token(&mut self) -> Result<Token, ConvertError> {
        let mut c = self.next();
        while java_whitespace(c) {
            c = self.next();
        }
        match c {
            0 => Err(self.syntax_error("Misshaped element")),
            0x3c => Err(self.syntax_error("Misplaced '<'")),
            0x3e => Ok(Token::Gt),
            0x2f => Ok(Token::Slash),
            0x3d => Ok(Token::Eq),
            0x21 => Ok(Token::Bang),
            0x3f => Ok(Token::Quest),
            0x22 | 0x27 => {
                let q = c;
                let mut sb = Vec::new();
                loop {
                    let c = self.next();
                    if c == 0 {
                        return Err(self.syntax_error("Unterminated string"));
                    }
                    if c == q {
                        return Ok(Token::Str(sb));
                    }
                    if c == u('&') {
                        self.next_entity(&mut sb)?;
                    } else {
                        sb.push(c);
                    }
                }
            }
            _ => {
                let mut sb = vec![c];
                loop {
                    let c = self.next();
                    if java_whitespace(c) || c == 0 {
                        return Ok(Token::Str(sb));
                    }
                    if [u('>'), u('/'), u('='), u('!'), u('?'), u('['), u(']')].contains(&c) {
                        self.back()?;
                        return Ok(Token::Str(sb));
                    }
                    if [u('<'), u('"'), u('\'')].contains(&c) {
                        return Err(self.syntax_error("Bad character in a name"));
                    }
                    sb.push(c);
                }
            }
        }
    }

    // --- JSONTokener ---

    fn next_clean(&mut self) -> u16 {
        loop {
            let c = self.next();
            if c == 0 || c > u(' ') {
                return c;
            }
        }
    }

    fn next_string(&mut self, quote: u16) -> Result<Vec<u16>, ConvertError> {
        let mut sb = Vec::new();
        loop {
            let c = self.next();
            match c {
                0 | 0x0a | 0x0d => return Err(self.syntax_error("Unterminated string")),
                0x5c => {
                    let c = self.next();
                    match char::from_u32(u32::from(c)).unwrap_or('\0') {
                        'b' => sb.push(0x08),
                        't' => sb.push(u('\t')),
                        'n' => sb.push(u('\n')),
                        'f' => sb.push(0x0c),
                        'r' => sb.push(u('\r')),
                        'u' => {
                            let hex = self.next_n(4)?;
                            sb.push(java_parse_hex_unit(&hex)?);
                        }
                        '"' | '\'' | '\\' | '/' => sb.push(c),
                        _ => return Err(self.syntax_error("Illegal escape.")),
                    }
                }
                _ if c == quote => return Ok(sb),
                _ => sb.push(c),
            }
        }
    }

    fn next_n(&mut self, n: usize) -> Result<Vec<u16>, ConvertError> {
        let mut units = Vec::with_capacity(n);
        while units.len() < n {
            units.push(self.next());
            if self.end() {
                return Err(self.syntax_error("Substring bounds error"));
            }
        }
        Ok(units)
    }
}

enum Content {
    Lt,
    Text(Vec<u16>),
}

enum Meta {
    Lt,
    Gt,
    Other,
}

#[derive(PartialEq)]
enum Token {
    Gt,
    Slash,
    Eq,
    Bang,
    Quest,
    Str(Vec<u16>),
}

impl Token {
    /// Java's `token.toString()` in org.json's messages.
    fn text(&self) -> String {
        match self {
            Token::Gt => ">".into(),
            Token::Slash => "/".into(),
            Token::Eq => "=".into(),
            Token::Bang => "!".into(),
            Token::Quest => "?".into(),
            Token::Str(s) => java_string(s),
        }
    }
}

/// Java's `Character.isWhitespace(char)`.
fn java_whitespace(c: u16) -> bool {
    matches!(c, 0x09..=0x0d | 0x1c..=0x20 | 0x1680 | 0x2000..=0x2006 | 0x2008..=0x200a | 0x2028 | 0x2029 | 0x205f | 0x3000)
}

/// Java's `Character.isLetterOrDigit(char)` (surrogate halves are neither; Unicode's alphabetic and
/// numeric classes stand in for Java's letter and digit categories).
fn java_letter_or_digit(c: u16) -> bool {
    char::from_u32(u32::from(c)).is_some_and(|c| c.is_alphanumeric())
}

/// Java's `Character.toLowerCase(char)` (the first unit of a longer mapping, within the BMP).
fn java_lower(c: u16) -> u16 {
    match char::from_u32(u32::from(c)).and_then(|c| c.to_lowercase().next()) {
        Some(lower) if (lower as u32) <= 0xffff => lower as u16,
        _ => c,
    }
}

/// Java's `String.trim()`: units up to U+0020 off both ends.
fn java_trim(s: &[u16]) -> &[u16] {
    let start = s.iter().position(|&c| c > u(' ')).unwrap_or(s.len());
    let end = s.iter().rposition(|&c| c > u(' ')).map_or(start, |i| i + 1);
    &s[start..end]
}

/// UTF-16 units as a Rust string; an unpaired surrogate becomes `?`, as Java's UTF-8 encoder writes it.
fn java_string(units: &[u16]) -> String {
    char::decode_utf16(units.iter().copied()).map(|r| r.unwrap_or('?')).collect()
}

/// `Integer.parseInt(s, 16)` cast to a char, for `\uXXXX`.
fn java_parse_hex_unit(units: &[u16]) -> Result<u16, ConvertError> {
    let text = java_string(units);
    let digits = text.strip_prefix(['+', '-']).unwrap_or(&text);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ConvertError::Other(format!("For input string: \"{text}\" under radix 16")));
    }
    let value = i32::from_str_radix(&text, 16)
        .map_err(|_| ConvertError::Other(format!("For input string: \"{text}\" under radix 16")))?;
    Ok(value as u16)
}

/// `JSONObject.stringToValue`: `true`/`false`/`null` in any case, a canonical integer, a finite
/// decimal (with `.`, `e` or `E`, or `-0`), else the text itself.
pub fn string_to_value(s: String) -> JValue {
    if s.is_empty() {
        return JValue::Str(s);
    }
    if s.eq_ignore_ascii_case("true") {
        return JValue::Bool(true);
    }
    if s.eq_ignore_ascii_case("false") {
        return JValue::Bool(false);
    }
    if s.eq_ignore_ascii_case("null") {
        return JValue::Null;
    }
    let initial = s.as_bytes()[0];
    if initial.is_ascii_digit() || initial == b'-' {
        if s.contains(['.', 'e', 'E']) || s == "-0" {
            if let Some(d) = java_parse_double(&s).filter(|d| d.is_finite()) {
                return JValue::Double(d);
            }
        } else if let Ok(n) = s.parse::<i64>()
            && n.to_string() == s
        {
            return JValue::Int(n);
        }
    }
    JValue::Str(s)
}

/// `Double.valueOf`: surrounding characters up to U+0020 ignored, an optional sign, digits with an
/// optional point and exponent or Java's hexadecimal form (`0x1.8p1`), an optional `f`/`F`/`d`/`D`
/// suffix.
fn java_parse_double(s: &str) -> Option<f64> {
    let s = s.trim_matches(|c: char| c <= ' ');
    let body = s.strip_suffix(['f', 'F', 'd', 'D']).unwrap_or(s);
    let unsigned = body.strip_prefix(['+', '-']).unwrap_or(body);
    if let Some(hex) = unsigned.strip_prefix("0x").or_else(|| unsigned.strip_prefix("0X")) {
        let magnitude = java_parse_hex_double(hex)?;
        return Some(if body.starts_with('-') { -magnitude } else { magnitude });
    }
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits_ok = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if int.len() + frac.len() == 0 || !digits_ok(int) || !digits_ok(frac) {
        return None;
    }
    if let Some(exponent) = exponent {
        let e = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
        if e.is_empty() || !digits_ok(e) {
            return None;
        }
    }
    body.parse::<f64>().ok()
}

/// The part of a Java hexadecimal float after `0x`: hex digits with an optional point, then a
/// mandatory binary exponent (`p`/`P`).
fn java_parse_hex_double(hex: &str) -> Option<f64> {
    let (mantissa, exponent) = hex.split_once(['p', 'P'])?;
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let hex_ok = |t: &str| t.bytes().all(|b| b.is_ascii_hexdigit());
    let unsigned_exponent = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
    if int.len() + frac.len() == 0
        || !hex_ok(int)
        || !hex_ok(frac)
        || unsigned_exponent.is_empty()
        || !unsigned_exponent.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut value = 0f64;
    for digit in int.chars().chain(frac.chars()) {
        value = value * 16.0 + f64::from(digit.to_digit(16)?);
    }
    let exponent: i32 = exponent.parse().unwrap_or(if exponent.starts_with('-') { i32::MIN } else { i32::MAX });
    let shift = i64::from(exponent) - 4 * frac.len() as i64;
    Some(value * 2f64.powi(shift.clamp(-2000, 2000) as i32))
}

/// Java's `Double.toString` (shortest digits that read back; plain between 10^-3 and 10^7, else
/// `d.dddE±n`).
pub fn java_double(d: f64) -> String {
    if d == 0.0 {
        return if d.is_sign_negative() { "-0.0".into() } else { "0.0".into() };
    }
    if !d.is_finite() {
        return if d.is_nan() {
            "NaN".into()
        } else if d > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let sign = if d < 0.0 { "-" } else { "" };
    let scientific = format!("{:e}", d.abs());
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if (-3..7).contains(&exponent) {
        let (int, frac) = if exponent >= 0 {
            let split = exponent as usize + 1;
            if digits.len() > split {
                (digits[..split].to_owned(), digits[split..].to_owned())
            } else {
                (format!("{digits}{}", "0".repeat(split - digits.len())), "0".to_owned())
            }
        } else {
            ("0".to_owned(), format!("{}{digits}", "0".repeat((-exponent - 1) as usize)))
        };
        format!("{sign}{int}.{frac}")
    } else {
        let rest = if digits.len() > 1 { &digits[1..] } else { "0" };
        format!("{sign}{}.{rest}E{exponent}", &digits[..1])
    }
}

/// `JSONObject.numberToString` for a double: Java's text without trailing fractional zeros.
fn number_to_string(d: f64) -> String {
    let mut s = java_double(d);
    if s.find('.').is_some_and(|i| i > 0) && !s.contains(['e', 'E']) {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// XML → JSON
// ---------------------------------------------------------------------------------------------

/// `XML.toJSONObject(text, maxDepth).toString()`.
pub fn xml_to_json(text: &str, max_depth: i64) -> Result<String, ConvertError> {
    let mut root = JObject::new();
    let mut x = Tokener::new(text);
    while x.more()? && x.skip_past("<") {
        parse_xml(&mut x, &mut root, None, 0, max_depth)?;
    }
    let mut out = String::with_capacity(text.len());
    write_object(&root, &mut out);
    Ok(out)
}

/// One `<...>` construct (the `<` already read) into `context`; true when it closed `name`.
fn parse_xml(
    x: &mut Tokener,
    context: &mut JObject,
    name: Option<&[u16]>,
    depth: i64,
    max_depth: i64,
) -> Result<bool, ConvertError> {
    if depth > max_depth && max_depth > -1 {
        return Err(ConvertError::TooDeep("Too many nested objects"));
    }
    match x.next_token()? {
        Token::Bang => {
            let c = x.next();
            if c == u('-') {
                if x.next() == u('-') {
                    x.skip_past("-->");
                    return Ok(false);
                }
                x.back()?;
            } else if c == u('[') {
                let token = x.next_token()?;
                if token == Token::Str("CDATA".encode_utf16().collect()) && x.next() == u('[') {
                    let data = x.next_cdata()?;
                    if !data.is_empty() {
                        accumulate(context, "content".into(), JValue::Str(java_string(&data)));
                    }
                    return Ok(false);
                }
                return Err(x.syntax_error("Expected 'CDATA['"));
            }
            let mut open = 1;
            while open > 0 {
                match x.next_meta()? {
                    Meta::Lt => open += 1,
                    Meta::Gt => open -= 1,
                    Meta::Other => {}
                }
            }
            Ok(false)
        }
        Token::Quest => {
            x.skip_past("?>");
            Ok(false)
        }
        Token::Slash => {
            let token = x.next_token()?;
            let Some(name) = name else {
                return Err(x.syntax_error(format!("Mismatched close tag {}", token.text())));
            };
            if !matches!(&token, Token::Str(t) if t == name) {
                return Err(x.syntax_error(format!("Mismatched {} and {}", java_string(name), token.text())));
            }
            if x.next_token()? != Token::Gt {
                return Err(x.syntax_error("Misshaped close tag"));
            }
            Ok(true)
        }
        Token::Gt | Token::Eq => Err(x.syntax_error("Misshaped tag")),
        Token::Str(tag_units) => {
            let tag = java_string(&tag_units);
            let mut element = JObject::new();
            let mut pending: Option<Token> = None;
            loop {
                let token = match pending.take() {
                    Some(token) => token,
                    None => x.next_token()?,
                };
                match token {
                    Token::Str(attribute) => {
                        let after = x.next_token()?;
                        if after == Token::Eq {
                            let Token::Str(value) = x.next_token()? else {
                                return Err(x.syntax_error("Missing value"));
                            };
                            accumulate(&mut element, java_string(&attribute), string_to_value(java_string(&value)));
                        } else {
                            accumulate(&mut element, java_string(&attribute), JValue::Str(String::new()));
                            pending = Some(after);
                        }
                    }
                    Token::Slash => {
                        if x.next_token()? != Token::Gt {
                            return Err(x.syntax_error("Misshaped tag"));
                        }
                        let value =
                            if element.is_empty() { JValue::Str(String::new()) } else { JValue::Object(element) };
                        accumulate(context, tag, value);
                        return Ok(false);
                    }
                    Token::Gt => loop {
                        match x.next_content()? {
                            None => return Err(x.syntax_error(format!("Unclosed tag {tag}"))),
                            Some(Content::Text(text)) => {
                                if !text.is_empty() {
                                    accumulate(&mut element, "content".into(), string_to_value(java_string(&text)));
                                }
                            }
                            Some(Content::Lt) => {
                                if parse_xml(x, &mut element, Some(&tag_units), depth + 1, max_depth)? {
                                    let value = if element.is_empty() {
                                        JValue::Str(String::new())
                                    } else if element.len() == 1 && element.contains_key("content") {
                                        element.swap_remove("content").unwrap_or(JValue::Null)
                                    } else {
                                        JValue::Object(element)
                                    };
                                    accumulate(context, tag, value);
                                    return Ok(false);
                                }
                            }
                        }
                    },
                    _ => return Err(x.syntax_error("Misshaped tag")),
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// JSON text (org.json's compact writer)
// ---------------------------------------------------------------------------------------------

fn write_value(value: &JValue, out: &mut String) {
    match value {
        JValue::Null => out.push_str("null"),
        JValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        JValue::Int(n) => out.push_str(&n.to_string()),
        JValue::Double(d) => out.push_str(&number_to_string(*d)),
        JValue::Str(s) => quote(s, out),
        JValue::Object(object) => write_object(object, out),
        JValue::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
    }
}

fn write_object(object: &JObject, out: &mut String) {
    out.push('{');
    for (i, (key, value)) in object.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        quote(key, out);
        out.push(':');
        write_value(value, out);
    }
    out.push('}');
}

/// `JSONObject.quote`: `</` written `<\/`, controls and U+0080–U+009F, U+2000–U+20FF as `\uXXXX`.
fn quote(s: &str, out: &mut String) {
    out.push('"');
    let mut previous = '\0';
    for c in s.chars() {
        match c {
            '\\' | '"' => {
                out.push('\\');
                out.push(c);
            }
            '/' => {
                if previous == '<' {
                    out.push('\\');
                }
                out.push(c);
            }
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            _ if c < ' ' || ('\u{80}'..'\u{a0}').contains(&c) || ('\u{2000}'..'\u{2100}').contains(&c) => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            _ => out.push(c),
        }
        previous = c;
    }
    out.push('"');
}

// ---------------------------------------------------------------------------------------------
// JSON → XML
// ---------------------------------------------------------------------------------------------

/// The JSON reader's state: org.json counts object and array nesting apart (and, on `[]` and a
/// trailing comma, never counts back down).
struct JsonReader {
    x: Tokener,
    object_depth: i64,
    array_depth: i64,
    max_depth: i64,
}

impl JsonReader {
    fn check_depth(&self, depth: i64) -> Result<(), ConvertError> {
        if depth > self.max_depth && self.max_depth > -1 {
            return Err(ConvertError::TooDeep("Too many nested objects or arrays"));
        }
        Ok(())
    }

    fn object(&mut self) -> Result<JObject, ConvertError> {
        let mut object = JObject::new();
        if self.x.next_clean() != u('{') {
            return Err(self.x.syntax_error("A JSONObject text must begin with '{'"));
        }
        loop {
            let key = match self.x.next_clean() {
                0 => return Err(self.x.syntax_error("A JSONObject text must end with '}'")),
                0x7d => {
                    self.object_depth -= 1;
                    return Ok(object);
                }
                _ => {
                    self.x.back()?;
                    java_to_string(&self.value()?)
                }
            };
            if self.x.next_clean() != u(':') {
                return Err(self.x.syntax_error("Expected a ':' after a key"));
            }
            let value = self.value()?;
            if object.contains_key(&key) {
                return Err(ConvertError::DuplicateKey(key));
            }
            object.insert(key, value);
            match self.x.next_clean() {
                0x3b | 0x2c => {
                    if self.x.next_clean() == u('}') {
                        return Ok(object);
                    }
                    self.x.back()?;
                }
                0x7d => {
                    self.object_depth -= 1;
                    return Ok(object);
                }
                _ => return Err(self.x.syntax_error("Expected a ',' or '}'")),
            }
        }
    }

    fn array(&mut self) -> Result<Vec<JValue>, ConvertError> {
        let mut items = Vec::new();
        if self.x.next_clean() != u('[') {
            return Err(self.x.syntax_error("A JSONArray text must start with '['"));
        }
        if self.x.next_clean() == u(']') {
            return Ok(items);
        }
        self.x.back()?;
        loop {
            if self.x.next_clean() == u(',') {
                self.x.back()?;
                items.push(JValue::Null);
            } else {
                self.x.back()?;
                items.push(self.value()?);
            }
            match self.x.next_clean() {
                0x2c => {
                    if self.x.next_clean() == u(']') {
                        return Ok(items);
                    }
                    self.x.back()?;
                }
                0x5d => {
                    self.array_depth -= 1;
                    return Ok(items);
                }
                _ => return Err(self.x.syntax_error("Expected a ',' or ']'")),
            }
        }
    }

    fn value(&mut self) -> Result<JValue, ConvertError> {
        let mut c = self.x.next_clean();
        match c {
            0x22 | 0x27 => Ok(JValue::Str(java_string(&self.x.next_string(c)?))),
            0x7b => {
                self.x.back()?;
                self.check_depth(self.object_depth)?;
                self.object_depth += 1;
                Ok(JValue::Object(self.object()?))
            }
            0x5b => {
                self.x.back()?;
                self.check_depth(self.array_depth)?;
                self.array_depth += 1;
                Ok(JValue::Array(self.array()?))
            }
            _ => {
                let mut sb = Vec::new();
                while c >= u(' ') && !",:]}/\\\"[{;=#".encode_utf16().any(|d| d == c) {
                    sb.push(c);
                    c = self.x.next();
                }
                self.x.back()?;
                let text = java_string(java_trim(&sb));
                if text.is_empty() {
                    return Err(self.x.syntax_error("Missing value"));
                }
                Ok(string_to_value(text))
            }
        }
    }
}

/// Java's `toString()` of a value (a key read as a value; an element's text).
fn java_to_string(value: &JValue) -> String {
    match value {
        JValue::Null => "null".into(),
        JValue::Bool(b) => b.to_string(),
        JValue::Int(n) => n.to_string(),
        JValue::Double(d) => java_double(*d),
        JValue::Str(s) => s.clone(),
        JValue::Object(_) | JValue::Array(_) => {
            let mut out = String::new();
            write_value(value, &mut out);
            out
        }
    }
}

/// `new JSONObject(text, maxDepth)` wrapped as `{root: [it]}` and written by `XML.toString`.
pub fn json_to_xml(text: &str, root: &str, max_depth: i64) -> Result<String, ConvertError> {
    let mut reader = JsonReader { x: Tokener::new(text), object_depth: 0, array_depth: 0, max_depth };
    let payload = reader.object()?;
    let mut out = String::with_capacity(text.len() + 2 * root.len() + 5);
    let mut wrapper = JObject::new();
    wrapper.insert(root.to_owned(), JValue::Array(vec![JValue::Object(payload)]));
    write_xml(&JValue::Object(wrapper), None, &mut out);
    Ok(out)
}

/// `XML.escape`.
fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
}

/// `XML.toString(value, tagName)`.
fn write_xml(value: &JValue, tag: Option<&str>, out: &mut String) {
    match value {
        JValue::Object(object) => {
            if let Some(tag) = tag {
                out.push('<');
                out.push_str(tag);
                out.push('>');
            }
            for (key, value) in object {
                match value {
                    _ if key == "content" => match value {
                        JValue::Array(items) => {
                            for (i, item) in items.iter().enumerate() {
                                if i > 0 {
                                    out.push('\n');
                                }
                                escape(&java_to_string(item), out);
                            }
                        }
                        other => escape(&java_to_string(other), out),
                    },
                    JValue::Array(items) => {
                        for item in items {
                            if let JValue::Array(_) = item {
                                out.push('<');
                                out.push_str(key);
                                out.push('>');
                                write_xml(item, None, out);
                                out.push_str("</");
                                out.push_str(key);
                                out.push('>');
                            } else {
                                write_xml(item, Some(key), out);
                            }
                        }
                    }
                    JValue::Str(s) if s.is_empty() => {
                        out.push('<');
                        out.push_str(key);
                        out.push_str("/>");
                    }
                    _ => write_xml(value, Some(key), out),
                }
            }
            if let Some(tag) = tag {
                out.push_str("</");
                out.push_str(tag);
                out.push('>');
            }
        }
        JValue::Array(items) => {
            for item in items {
                write_xml(item, Some(tag.unwrap_or("array")), out);
            }
        }
        scalar => {
            let mut text = String::new();
            escape(&java_to_string(scalar), &mut text);
            match tag {
                None => {
                    out.push('"');
                    out.push_str(&text);
                    out.push('"');
                }
                Some(tag) if text.is_empty() => {
                    out.push('<');
                    out.push_str(tag);
                    out.push_str("/>");
                }
                Some(tag) => {
                    out.push('<');
                    out.push_str(tag);
                    out.push('>');
                    out.push_str(&text);
                    out.push_str("</");
                    out.push_str(tag);
                    out.push('>');
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Body text
// ---------------------------------------------------------------------------------------------

/// The charset a Content-Type names, as the policies' `CharsetHelper` reads it: the text after the
/// last `=` (quotes removed) once `charset=` appears anywhere (any case); UTF-8 when it does not.
pub fn charset_name(content_type: Option<&str>) -> Option<String> {
    let content_type = content_type?;
    if !content_type.to_ascii_lowercase().contains("charset=") {
        return None;
    }
    let name = &content_type[content_type.rfind('=').map_or(0, |i| i + 1)..];
    Some(name.replace('"', ""))
}

/// Whether Java accepts `name` as a charset name at all (`Charset.isSupported` throws on others).
pub fn legal_charset_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | ':' | '_' | '.'))
}

/// The body as text in the charset named. ISO-8859-1 and US-ASCII are read as such; every other
/// name, known to Java or not (its default charset is UTF-8), as UTF-8 with malformed sequences
/// replaced, as Java's decoder does.
pub fn decode(body: &[u8], charset: Option<&str>) -> String {
    let name = charset.unwrap_or("UTF-8").to_ascii_lowercase();
    match name.as_str() {
        "iso-8859-1" | "iso8859-1" | "iso_8859_1" | "iso8859_1" | "latin1" | "l1" | "8859_1" | "cp819" | "ibm819"
        | "iso_8859-1" | "819" | "csisolatin1" | "iso-ir-100" | "ibm-819" => {
            body.iter().map(|&b| char::from(b)).collect()
        }
        "us-ascii" | "ascii" | "us" | "iso646-us" | "default" | "cp367" | "ibm367" | "646" | "ascii7" | "csascii"
        | "iso_646.irv:1983" | "ansi_x3.4-1968" | "ansi_x3.4-1986" | "iso-ir-6" => {
            body.iter().map(|&b| if b < 0x80 { char::from(b) } else { '\u{fffd}' }).collect()
        }
        _ => String::from_utf8_lossy(body).into_owned(),
    }
}

#[cfg(test)]
mod tests;
