//! Results of evaluation.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

use crate::error::EvalError;

/// The result of evaluating an expression. Strings and lists borrow from the expression (literals)
/// or from the [`crate::Context`] wherever possible; only methods that build a new string
/// (`toLowerCase()`, `toUpperCase()`) allocate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Str(Cow<'a, str>),
    /// Multi-valued things: header values, query parameter values, path parameter (one value).
    List(Vec<&'a str>),
}

impl Value<'_> {
    /// The SpEL type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Str(_) => "string",
            Value::List(_) => "list",
        }
    }

    /// Converts to a boolean the way Gravitee does for conditions (Spring's conversion service):
    /// booleans as is; strings `true`/`on`/`yes`/`1` and `false`/`off`/`no`/`0`
    /// (case-insensitive, trimmed); everything else, including null, is an error.
    pub fn to_bool(&self) -> Result<bool, String> {
        match self {
            Value::Bool(b) => Ok(*b),
            Value::Str(s) => {
                let t = s.trim();
                const TRUE: [&str; 4] = ["true", "on", "yes", "1"];
                const FALSE: [&str; 4] = ["false", "off", "no", "0"];
                if TRUE.iter().any(|w| t.eq_ignore_ascii_case(w)) {
                    Ok(true)
                } else if FALSE.iter().any(|w| t.eq_ignore_ascii_case(w)) {
                    Ok(false)
                } else {
                    Err(format!("string {s:?} is not a boolean"))
                }
            }
            other => Err(format!("{} is not a boolean", other.type_name())),
        }
    }

    /// SpEL `==`: null equals only null, integers numerically, strings, booleans and lists by
    /// content; values of different types are never equal.
    pub fn spel_eq(&self, other: &Value<'_>) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::List(a), Value::List(b)) => a == b,
            _ => false,
        }
    }

    /// SpEL ordering (`<`, `<=`, `>`, `>=`): null sorts before everything, integers numerically,
    /// strings like Java's `String.compareTo` (UTF-16 code units), `false` before `true`.
    pub(crate) fn spel_cmp(&self, other: &Value<'_>, column: u32) -> Result<Ordering, EvalError> {
        match (self, other) {
            (Value::Null, Value::Null) => Ok(Ordering::Equal),
            (Value::Null, _) => Ok(Ordering::Less),
            (_, Value::Null) => Ok(Ordering::Greater),
            (Value::Int(a), Value::Int(b)) => Ok(a.cmp(b)),
            (Value::Str(a), Value::Str(b)) => Ok(a.encode_utf16().cmp(b.encode_utf16())),
            (Value::Bool(a), Value::Bool(b)) => Ok(a.cmp(b)),
            (a, b) => {
                Err(EvalError::at(column, format_args!("cannot compare {} with {}", a.type_name(), b.type_name())))
            }
        }
    }
}

/// The text form used when a value is rendered into a [`crate::Template`], as Gravitee's template
/// engine does: null renders as nothing, lists as their values joined with `,`.
impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => Ok(()),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Str(s) => f.write_str(s),
            Value::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    f.write_str(item)?;
                }
                Ok(())
            }
        }
    }
}
