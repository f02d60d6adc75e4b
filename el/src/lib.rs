//! A documented subset of Gravitee's Expression Language (Spring SpEL), as used in flow
//! conditions, step conditions and policy values (`transform-headers`, `policy-assign-attributes`).
//!
//! Expressions are compiled once ([`parse`], [`parse_template`]) when a definition is loaded and
//! evaluated per request against a [`Context`]. Anything outside the subset is a [`ParseError`]
//! naming the construct and its column, so an API using it is rejected whole instead of being
//! half-applied. Nothing here panics, whatever the input.
//!
//! ```
//! use hgw_el::{Context, parse, parse_template};
//!
//! struct Request;
//! impl Context for Request {
//!     fn request_method(&self) -> Option<&str> {
//!         Some("POST")
//!     }
//!     fn request_header(&self, name: &str) -> Vec<&str> {
//!         if name.eq_ignore_ascii_case("x-token") { vec!["abc"] } else { vec![] }
//!     }
//! }
//!
//! let condition = parse("{#request.method == 'POST' && #request.headers['X-Token'] != null}")?;
//! assert!(condition.eval_bool(&Request)?);
//! let value = parse_template("Bearer {#request.headers['x-token'][0]}")?;
//! assert_eq!(value.render(&Request)?, "Bearer abc");
//! let err = parse("{T(java.lang.Math).random() > 0.5}").unwrap_err();
//! assert_eq!(err.to_string(), "column 2: unsupported EL: type references `T(...)` are not supported");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Where expressions appear
//! - **Conditions** ([`parse`]): the whole text is one expression, either wrapped as in Gravitee
//!   (`{#request.method == 'POST'}`, `{!(#request.path matches '/internal.*')}`) or bare
//!   (`#request.method == 'POST'`). Surrounding whitespace is ignored.
//! - **Templates** ([`parse_template`]): text with embedded expressions, e.g.
//!   `Bearer {#request.headers['t'][0]}`. As in Gravitee, `{` starts an expression only when
//!   followed (after optional spaces) by `#`, `(` or `T(`; any other `{` or `}` is literal text.
//!   Values render as Gravitee renders them: null as nothing, lists joined with `,`.
//!
//! # The subset
//! - **Request**: `#request.path`, `#request.pathInfo`, `#request.method`, `#request.host`,
//!   `#request.remoteAddress`, `#request.localAddress`, `#request.id`, `#request.transactionId`
//!   (strings); `#request.headers['Name']` (list of values, name case-insensitive),
//!   `#request.params['name']` (query parameter values), `#request.pathParams['name']` (the
//!   flow path's `:name` segment, as a one-value list like Gravitee's multi-value map); each of
//!   these three can be indexed: `#request.headers['Name'][0]`.
//! - **Response** (response phase): `#response.status` (integer), `#response.headers['Name']`.
//! - **Bodies**: `#request.content` and `#response.content` (the body as text), where the gateway
//!   buffered it: it does so for the steps whose expressions read them ([`Expression::reads_content`]).
//! - **Context and API**: `#context.attributes['name']` (string), `#api.id`, `#api.name`.
//! - **http-callout**: `#calloutResponse.status` (integer), `#calloutResponse.headers['Name']`,
//!   `#calloutResponse.content`, set while that policy evaluates its condition and variables.
//! - **`#jsonPath(json, 'path')`**: the value at a [`jsonpath`] path in the JSON text `json`, as
//!   text (strings unquoted, numbers and booleans as written, objects and arrays as JSON); JSON
//!   `null` is null; a path that is not there is an evaluation error, as Jayway's JsonPath fails.
//! - **Literals**: `'single'` and `"double"` quoted strings (the quote is escaped by doubling it:
//!   `'it''s'`; no backslash escapes; any Unicode), decimal integers (`-1` allowed), `true`,
//!   `false`, `null` (keywords case-insensitive).
//! - **Operators**, loosest first: `||` / `or`; `&&` / `and`; comparisons `==` `!=` `<` `<=` `>`
//!   `>=` (also `eq` `ne` `lt` `le` `gt` `ge`) and `x matches 'regex'`, which cannot be chained;
//!   `!` / `not`; then method calls and `[index]`. Parentheses group.
//! - **Methods**: on strings `.contains(s)`, `.startsWith(s)`, `.endsWith(s)`, `.length()`
//!   (UTF-16 units, as Java), `.toLowerCase()`, `.toUpperCase()`, `.isEmpty()`; on lists `[i]`,
//!   `.contains(s)`, `.size()`, `.isEmpty()`.
//!
//! # Semantics (as SpEL)
//! - An absent header, parameter, attribute or field is `null`; `null == null` is true, `null`
//!   equals nothing else; values of different types are never equal (`#request.headers['A'] ==
//!   'x'` compares a list with a string: false).
//! - Ordering compares integers numerically and strings lexicographically; `null` sorts first.
//!   Ordering a string against an integer is rejected at parse time.
//! - `matches` is a whole-string match (Java's `String.matches`) using Rust `regex` syntax, which
//!   covers common Java patterns but has no look-around or back-references (those are parse errors).
//!   Patterns are compiled at parse time with a size limit.
//! - `&&`, `||` short-circuit. Their operands, `!`'s operand and a condition's result must be a
//!   boolean, or a string Gravitee converts (`true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`).
//! - Request-time errors ([`EvalError`]): a method called on null, indexing into null (an absent
//!   header) or past the end of a list, `matches` on null, a non-boolean where one is needed.
//!   Gravitee's condition filter treats such an error as "condition not met"; callers here choose.
//!
//! # Not supported (parse errors)
//! Type references `T(...)`, constructors `new`, bean references `@x` / `&x`, assignment `=`,
//! the ternary `? :` and Elvis `?:` operators, safe navigation `?.`, selection and projection
//! (`.?[`, `.![`, `.^[`, `.$[`), inline lists and maps `{...}`, arithmetic and string
//! concatenation (`+ - * / % ^ div mod`), `instanceof`, `between`, functions other than
//! `#jsonPath(...)` (e.g. `#xpath(...)`), other variables (`#properties`, `#dictionaries`,
//! `#this`, ...), other properties (`#request.content`, `#api.version`, ...), other methods,
//! decimal / hex / long literals, bare identifiers. Limits: 4 KiB per expression, 64 KiB per
//! template, nesting deeper than 64 levels.

mod ast;
mod context;
mod error;
mod eval;
pub mod freemarker;
pub mod java_regex;
pub mod jsonpath;
mod lexer;
mod parser;
pub mod ssl;
mod value;

use std::fmt;
use std::ops::Range;

pub use context::{Context, EmptyContext};
pub use error::{EvalError, ParseError};
pub use java_regex::{JavaMatch, JavaRegex};
pub use ssl::{DnAttribute, SslSide, X500Principal};
pub use value::Value;

/// Longest accepted expression, in bytes. Real conditions are well under 200 bytes; the limit
/// keeps parse time and memory for hostile definitions small.
pub const MAX_EXPRESSION_LEN: usize = 4 * 1024;
/// Longest accepted template, in bytes (header values and attribute values).
pub const MAX_TEMPLATE_LEN: usize = 64 * 1024;
/// Deepest accepted nesting of parentheses, `!`, method calls, indexes and arguments. Bounds the
/// recursion of parsing and evaluation so no input can overflow the stack.
pub const MAX_DEPTH: usize = 64;
/// Size limit for each compiled `matches` regex (and its lazy DFA), in bytes.
pub const MAX_REGEX_SIZE: usize = 256 * 1024;

/// A compiled expression: parse once, evaluate per request.
#[derive(Clone)]
pub struct Expression {
    source: Box<str>,
    root: ast::Node,
}

impl fmt::Debug for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expression").field("source", &self.source).finish_non_exhaustive()
    }
}

/// Compiles one expression: `{#...}` (Gravitee's form) or bare `#...` text.
pub fn parse(text: &str) -> Result<Expression, ParseError> {
    if text.len() > MAX_EXPRESSION_LEN {
        return Err(ParseError::at(
            text,
            0,
            format!("expression is {} bytes long; the limit is {MAX_EXPRESSION_LEN}", text.len()),
        ));
    }
    let start = text.len() - text.trim_start().len();
    let end = text.trim_end().len();
    if start >= end {
        return Err(ParseError::at(text, 0, "empty expression"));
    }
    let (inner_start, inner_end) = if text.as_bytes()[start] == b'{' {
        match find_close(text, start) {
            Some(close) if close + 1 == end => (start + 1, close),
            Some(close) => {
                return Err(ParseError::at(
                    text,
                    close + 1,
                    "unexpected text after the expression's closing `}`; a condition is a single expression",
                ));
            }
            None => return Err(ParseError::at(text, start, "`{` is never closed")),
        }
    } else {
        (start, end)
    };
    let root = parser::parse_range(text, inner_start, inner_end)?;
    Ok(Expression { source: text.into(), root })
}

/// Byte offset of the `}` closing the `{` at `open`, skipping quoted strings and nested braces.
fn find_close(text: &str, open: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut quote = None;
    for (i, &b) in bytes.iter().enumerate().skip(open) {
        match quote {
            // A doubled quote inside a string closes and reopens it, which scans the same way.
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None => match b {
                b'\'' | b'"' => quote = Some(b),
                b'{' => depth += 1,
                b'}' => {
                    if depth <= 1 {
                        return Some(i);
                    }
                    depth -= 1;
                }
                _ => {}
            },
        }
    }
    None
}

impl Expression {
    /// Evaluates against one request. Borrowed strings point into `self` or `ctx`.
    pub fn eval<'a>(&'a self, ctx: &'a dyn Context) -> Result<Value<'a>, EvalError> {
        eval::eval(&self.root, ctx)
    }

    /// Evaluates a condition. A boolean, or a string Gravitee converts to one (`"true"`, `"no"`,
    /// ...), is accepted; anything else (including null) is an error.
    pub fn eval_bool(&self, ctx: &dyn Context) -> Result<bool, EvalError> {
        self.eval(ctx)?
            .to_bool()
            .map_err(|e| EvalError { message: format!("condition did not produce a boolean: {e}") })
    }

    /// The text this expression was parsed from, as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether it reads `#request.content` or `#response.content`.
    pub fn reads_content(&self) -> bool {
        self.root.reads_content()
    }
}

/// Text with embedded expressions, e.g. `Bearer {#request.headers['t'][0]}`, or plain text.
#[derive(Clone)]
pub struct Template {
    source: Box<str>,
    parts: Vec<Part>,
}

#[derive(Clone)]
enum Part {
    /// A byte range of `Template::source`.
    Text(Range<usize>),
    Expr(Expression),
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let expressions = self.parts.iter().filter(|p| matches!(p, Part::Expr(_))).count();
        f.debug_struct("Template").field("source", &self.source).field("expressions", &expressions).finish()
    }
}

/// Compiles a template. Every embedded expression must be in the subset.
pub fn parse_template(text: &str) -> Result<Template, ParseError> {
    if text.len() > MAX_TEMPLATE_LEN {
        return Err(ParseError::at(
            text,
            0,
            format!("template is {} bytes long; the limit is {MAX_TEMPLATE_LEN}", text.len()),
        ));
    }
    let bytes = text.as_bytes();
    let mut parts = Vec::new();
    let mut literal_start = 0;
    let mut i = 0;
    while let Some(rel) = text[i..].find('{') {
        let open = i + rel;
        i = open + 1;
        if !starts_expression(bytes, open + 1) {
            continue;
        }
        let close = find_close(text, open).ok_or_else(|| ParseError::at(text, open, "`{` is never closed"))?;
        if close - open > MAX_EXPRESSION_LEN {
            return Err(ParseError::at(
                text,
                open,
                format!("expression is {} bytes long; the limit is {MAX_EXPRESSION_LEN}", close + 1 - open),
            ));
        }
        if literal_start < open {
            parts.push(Part::Text(literal_start..open));
        }
        let root = parser::parse_range(text, open + 1, close)?;
        parts.push(Part::Expr(Expression { source: text[open..=close].into(), root }));
        i = close + 1;
        literal_start = i;
    }
    if literal_start < text.len() {
        parts.push(Part::Text(literal_start..text.len()));
    }
    Ok(Template { source: text.into(), parts })
}

/// Gravitee treats `{` as an expression start when spaces and then `#`, `T` or `(` follow. `{T`
/// is narrowed to `{T(` so ordinary text such as `{Total}` stays literal.
fn starts_expression(bytes: &[u8], mut at: usize) -> bool {
    while bytes.get(at) == Some(&b' ') {
        at += 1;
    }
    match bytes.get(at) {
        Some(b'#' | b'(') => true,
        Some(b'T') => {
            at += 1;
            while bytes.get(at) == Some(&b' ') {
                at += 1;
            }
            bytes.get(at) == Some(&b'(')
        }
        _ => false,
    }
}

impl Template {
    /// Renders the template for one request.
    pub fn render(&self, ctx: &dyn Context) -> Result<String, EvalError> {
        let mut out = String::with_capacity(self.source.len());
        self.render_into(ctx, &mut out)?;
        Ok(out)
    }

    /// Renders like [`Template::render`], except that a template made of one expression and nothing
    /// else answers `None` when the expression is null: Gravitee's template engine then returns null
    /// rather than text (it joins values into text only for templates with literal parts, where a
    /// null renders as nothing).
    pub fn render_nullable(&self, ctx: &dyn Context) -> Result<Option<String>, EvalError> {
        if let [Part::Expr(expr)] = self.parts.as_slice() {
            let value = expr.eval(ctx)?;
            return Ok((!matches!(value, Value::Null)).then(|| value.to_string()));
        }
        self.render(ctx).map(Some)
    }

    /// Renders into `out` (appending), so a caller can reuse one buffer.
    pub fn render_into(&self, ctx: &dyn Context, out: &mut String) -> Result<(), EvalError> {
        use fmt::Write as _;
        for part in &self.parts {
            match part {
                Part::Text(range) => out.push_str(self.source.get(range.clone()).unwrap_or_default()),
                Part::Expr(expr) => {
                    let value = expr.eval(ctx)?;
                    // Writing to a String cannot fail.
                    let _ = write!(out, "{value}");
                }
            }
        }
        Ok(())
    }

    /// True when the template has no expressions: it renders to its source text.
    pub fn is_constant(&self) -> bool {
        !self.parts.iter().any(|p| matches!(p, Part::Expr(_)))
    }

    /// Whether rendering it reads `#request.content` or `#response.content`.
    pub fn reads_content(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Expr(e) if e.reads_content()))
    }

    /// The text this template was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The embedded expressions, in order.
    pub fn expressions(&self) -> impl Iterator<Item = &Expression> {
        self.parts.iter().filter_map(|p| match p {
            Part::Expr(e) => Some(e),
            Part::Text(_) => None,
        })
    }
}

#[cfg(test)]
mod tests;
