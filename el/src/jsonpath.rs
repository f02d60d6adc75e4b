//! The JSONPath subset of `#jsonPath(json, 'path')` (Gravitee's `JsonPathFunction`, Jayway JsonPath):
//! definite paths only, the ones policies use to pick one value out of an answer.
//!
//! A path is `$` (optional, as Jayway adds it) followed by steps: `.name`, `['name']` or `["name"]`,
//! and `[n]` (an array index, n ≥ 0). Wildcards, deep scans (`..`), filters, slices, unions and
//! negative indexes are refused when the expression is parsed, naming what is not supported. Reading
//! is bounded: the JSON is parsed by serde_json (at most 128 levels deep) from text the caller already
//! bounded, and a path has at most [`MAX_STEPS`] steps.

use std::fmt;

/// Most steps in one path.
pub const MAX_STEPS: usize = 64;

/// A compiled path.
#[derive(Clone, PartialEq, Eq)]
pub struct JsonPath {
    steps: Vec<Step>,
}

#[derive(Clone, PartialEq, Eq, Debug)]
enum Step {
    Key(Box<str>),
    Index(usize),
}

impl fmt::Debug for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsonPath({self})")
    }
}

/// Jayway's canonical form (`$['a'][0]`), used in its "No results" message.
impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("$")?;
        for step in &self.steps {
            match step {
                Step::Key(k) => write!(f, "['{k}']")?,
                Step::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

impl JsonPath {
    /// Compiles `text`; the error says which construct is outside the subset.
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        let text = text.trim();
        let mut rest = text.strip_prefix('$').unwrap_or(text);
        if rest.starts_with('@') {
            return Err("`@` (the current node) is only meaningful in filters, which are not supported".into());
        }
        // Jayway reads `name.x` as `$.name.x`.
        let implicit_root = !text.starts_with('$') && !rest.is_empty() && !rest.starts_with(['.', '[']);
        let mut steps = Vec::new();
        let mut first = true;
        while !rest.is_empty() || (first && implicit_root) {
            if steps.len() >= MAX_STEPS {
                return Err(format!("the path has more than {MAX_STEPS} steps"));
            }
            let dotted = if first && implicit_root { Some(rest) } else { rest.strip_prefix('.') };
            first = false;
            if let Some(after) = dotted {
                if after.starts_with('.') {
                    return Err("deep scan `..` is not supported".into());
                }
                let end = after.find(['.', '[']).unwrap_or(after.len());
                let name = &after[..end];
                match name {
                    "" => return Err("a `.` must be followed by a property name".into()),
                    "*" => return Err("the wildcard `*` is not supported".into()),
                    _ if name.contains(['(', ')', '\'', '"', ']', ' ']) => {
                        return Err(format!("`{name}` is not a property name (functions are not supported)"));
                    }
                    _ => steps.push(Step::Key(name.into())),
                }
                rest = &after[end..];
            } else if let Some(after) = rest.strip_prefix('[') {
                let close = after.find(']').ok_or("`[` is never closed")?;
                let inside = after[..close].trim();
                let quoted =
                    |q: char| inside.strip_prefix(q).and_then(|s| s.strip_suffix(q)).filter(|s| !s.contains(q));
                if let Some(key) = quoted('\'').or_else(|| quoted('"')) {
                    steps.push(Step::Key(key.into()));
                } else if !inside.is_empty() && inside.bytes().all(|b| b.is_ascii_digit()) {
                    let index = inside.parse().map_err(|_| format!("index {inside} is out of range"))?;
                    steps.push(Step::Index(index));
                } else {
                    let what = match inside {
                        "*" => "the wildcard `[*]`".to_owned(),
                        _ if inside.starts_with('?') => "filters `[?(...)]`".to_owned(),
                        _ if inside.starts_with('-') => "negative indexes".to_owned(),
                        _ if inside.contains(':') => "slices `[a:b]`".to_owned(),
                        _ if inside.contains(',') => "unions `[a,b]`".to_owned(),
                        other => format!("`[{other}]`"),
                    };
                    return Err(format!("{what} are not supported (only `.name`, `['name']` and `[n]`)"));
                }
                rest = &after[close + 1..];
            } else {
                return Err(format!("unexpected `{}` in the path", rest.chars().next().unwrap_or(' ')));
            }
        }
        Ok(JsonPath { steps })
    }

    /// The value at this path in `json`: text for strings (unquoted), numbers and booleans (as
    /// written), JSON text for objects and arrays, `None` for JSON `null`. Text that is not JSON, or
    /// a path that is not there, is an error (Jayway's `No results for path: ...`).
    pub fn read(&self, json: &str) -> Result<Option<String>, String> {
        let root: serde_json::Value =
            serde_json::from_str(json).map_err(|e| format!("#jsonPath: the text is not JSON ({e})"))?;
        let mut node = &root;
        for step in &self.steps {
            let next = match (step, node) {
                (Step::Key(key), serde_json::Value::Object(map)) => map.get(&**key),
                (Step::Index(i), serde_json::Value::Array(items)) => items.get(*i),
                _ => None,
            };
            node = next.ok_or_else(|| format!("No results for path: {self}"))?;
        }
        Ok(match node {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::JsonPath;

    const DOC: &str = r#"{"name":"Leanne","id":1,"ok":true,"none":null,"address":{"geo":{"lat":"-37.3"}},
        "tags":["a","b"],"weird key":{"x":1.5},"list":[{"v":10},{"v":20}]}"#;

    fn read(path: &str) -> Result<Option<String>, String> {
        JsonPath::parse(path)?.read(DOC)
    }

    #[test]
    fn definite_paths_read_one_value_as_text() {
        assert_eq!(read("$.name").unwrap().as_deref(), Some("Leanne"));
        assert_eq!(read("name").unwrap().as_deref(), Some("Leanne"), "Jayway's implicit root");
        assert_eq!(read("$.id").unwrap().as_deref(), Some("1"));
        assert_eq!(read("$.ok").unwrap().as_deref(), Some("true"));
        assert_eq!(read("$.none").unwrap(), None);
        assert_eq!(read("$.address.geo.lat").unwrap().as_deref(), Some("-37.3"));
        assert_eq!(read("$['address'][\"geo\"]").unwrap().as_deref(), Some(r#"{"lat":"-37.3"}"#));
        assert_eq!(read("$.tags").unwrap().as_deref(), Some(r#"["a","b"]"#));
        assert_eq!(read("$.tags[1]").unwrap().as_deref(), Some("b"));
        assert_eq!(read("$['weird key'].x").unwrap().as_deref(), Some("1.5"));
        assert_eq!(read("$.list[1].v").unwrap().as_deref(), Some("20"));
        assert_eq!(read("$").unwrap().map(|s| s.starts_with('{')), Some(true));
    }

    #[test]
    fn missing_paths_and_non_json_fail() {
        assert_eq!(read("$.nope").unwrap_err(), "No results for path: $['nope']");
        assert_eq!(read("$.tags[5]").unwrap_err(), "No results for path: $['tags'][5]");
        assert_eq!(read("$.name.first").unwrap_err(), "No results for path: $['name']['first']");
        let error = JsonPath::parse("$.a").unwrap().read("not json").unwrap_err();
        assert!(error.starts_with("#jsonPath: the text is not JSON"), "{error}");
        // Deeply nested input is refused by serde_json's recursion limit, not by the stack.
        let deep = "[".repeat(100_000);
        assert!(JsonPath::parse("$[0]").unwrap().read(&deep).is_err());
    }

    #[test]
    fn constructs_outside_the_subset_are_named() {
        for (path, expected) in [
            ("$..name", "deep scan"),
            ("$.*", "wildcard"),
            ("$.tags[*]", "wildcard"),
            ("$.list[?(@.v > 1)]", "filters"),
            ("$.tags[-1]", "negative"),
            ("$.tags[0:1]", "slices"),
            ("$.tags[0,1]", "unions"),
            ("$.tags[0", "never closed"),
            ("$.length()", "functions"),
            ("@.a", "`@`"),
            ("$.", "property name"),
        ] {
            let error = JsonPath::parse(path).unwrap_err();
            assert!(error.contains(expected), "{path}: {error}");
        }
        let long = format!("${}", ".a".repeat(super::MAX_STEPS + 1));
        assert!(JsonPath::parse(&long).unwrap_err().contains("steps"));
    }
}
