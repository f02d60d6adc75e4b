//! A documented subset of Apache FreeMarker, the template language of Gravitee's `assign-content`
//! policy: parse once when the API deploys, render per request against a data model the gateway
//! builds (`request`, `response`, `context`).
//!
//! # The subset
//! - Text, `${expression}` interpolations and `<#-- comments -->`.
//! - Directives: `<#if>`/`<#elseif>`/`<#else>`/`</#if>`, `<#list seq as item>`...`</#list>` (also over
//!   a hash's keys with `?keys`), `<#assign name = expression>` (`>` or `/>`).
//! - Expressions: string literals (`'...'`, `"..."`, with `\` escapes), numbers, `true`/`false`,
//!   variables, `.name` and `['key']`/`[index]` access, parentheses, `!` (default: `a!'x'`, `a!`),
//!   `??` (exists), `!x`, `&&`, `||`, `==`/`!=`/`<`/`<=`/`>`/`>=` (also `lt`, `lte`, `gt`, `gte`),
//!   `+` (numbers add, anything else concatenates), `-`, `*`, `/`, `%`.
//! - Built-ins: `?eval`/`?eval_json` (JSON text to a value), `?upper_case`, `?lower_case`, `?trim`,
//!   `?length`, `?size`, `?has_content`, `?c`, `?string`, `?number`, `?json_string`, `?keys`,
//!   `?values`, `?first`, `?last`, `?is_string`, `?is_number`, `?is_boolean`, `?is_sequence`,
//!   `?is_hash`.
//!
//! As FreeMarker does, a missing (null) value is an error wherever it is used, unless `!` or `??`
//! guards it; so is interpolating a boolean, a sequence or a hash. Numbers interpolate the way
//! FreeMarker's default format does for an English locale (`1,234.5`; `?c` gives `1234.5`).
//! Anything else FreeMarker has (macros, functions, `<#include>`, `?api`, `?new`...) is refused
//! when the template is parsed, naming the construct: never run half-understood. Rendering is
//! bounded: loop iterations, nesting depth and output size have limits, so no template and no body
//! can hold a core or fill memory.

use std::fmt;

/// Longest accepted template, in bytes.
pub const MAX_TEMPLATE_LEN: usize = 256 * 1024;
/// Most output a render may produce, in bytes.
pub const MAX_OUTPUT_LEN: usize = 16 * 1024 * 1024;
/// Most loop iterations one render may run, all loops together.
pub const MAX_ITERATIONS: usize = 1_000_000;
/// Deepest nesting of directives and expressions.
pub const MAX_DEPTH: usize = 64;

/// A value of the data model.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Str(String),
    Num(f64),
    Bool(bool),
    Seq(Vec<Value>),
    Hash(Hash),
}

/// A hash: keys in order; `case_insensitive` for HTTP header maps.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Hash {
    pub entries: Vec<(String, Value)>,
    pub case_insensitive: bool,
}

impl Hash {
    pub fn new(entries: Vec<(String, Value)>) -> Hash {
        Hash { entries, case_insensitive: false }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries
            .iter()
            .find(|(k, _)| if self.case_insensitive { k.eq_ignore_ascii_case(key) } else { k == key })
            .map(|(_, v)| v)
    }
}

/// Why a template was refused, or why a render failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

fn error(message: impl Into<String>) -> Error {
    Error { message: message.into() }
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Interpolation(Expr),
    If(Vec<(Expr, Vec<Node>)>, Vec<Node>),
    List { seq: Expr, var: String, body: Vec<Node> },
    Assign(String, Expr),
}

#[derive(Debug, Clone)]
enum Expr {
    Literal(Value),
    Var(String),
    Member(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
    Default(Box<Expr>, Option<Box<Expr>>),
    Exists(Box<Expr>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare(Cmp, Box<Expr>, Box<Expr>),
    Arith(char, Box<Expr>, Box<Expr>),
    Neg(Box<Expr>),
    Builtin(Box<Expr>, Builtin),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Builtin {
    Eval,
    UpperCase,
    LowerCase,
    Trim,
    Length,
    Size,
    HasContent,
    C,
    String,
    Number,
    JsonString,
    Keys,
    Values,
    First,
    Last,
    IsString,
    IsNumber,
    IsBoolean,
    IsSequence,
    IsHash,
}

const BUILTINS: &[(&str, Builtin)] = &[
    ("eval", Builtin::Eval),
    ("eval_json", Builtin::Eval),
    ("upper_case", Builtin::UpperCase),
    ("lower_case", Builtin::LowerCase),
    ("trim", Builtin::Trim),
    ("length", Builtin::Length),
    ("size", Builtin::Size),
    ("has_content", Builtin::HasContent),
    ("c", Builtin::C),
    ("string", Builtin::String),
    ("number", Builtin::Number),
    ("json_string", Builtin::JsonString),
    ("keys", Builtin::Keys),
    ("values", Builtin::Values),
    ("first", Builtin::First),
    ("last", Builtin::Last),
    ("is_string", Builtin::IsString),
    ("is_number", Builtin::IsNumber),
    ("is_boolean", Builtin::IsBoolean),
    ("is_sequence", Builtin::IsSequence),
    ("is_hash", Builtin::IsHash),
];

/// Parses a template; the error names the construct and where it is.
pub fn parse(text: &str) -> Result<Template, Error> {
    if text.len() > MAX_TEMPLATE_LEN {
        return Err(error(format!("the template is {} bytes, more than {MAX_TEMPLATE_LEN}", text.len())));
    }
    let mut parser = Parser { text, pos: 0 };
    let (nodes, end) = parser.nodes(0)?;
    match end {
        None => Ok(Template { nodes }),
        Some(tag) => Err(parser.err_at(parser.pos, format!("`{tag}` without its opening directive"))),
    }
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn err_at(&self, at: usize, message: impl fmt::Display) -> Error {
        let line = self.text[..at.min(self.text.len())].matches('\n').count() + 1;
        error(format!("FreeMarker template, line {line}: {message}"))
    }

    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    /// Nodes up to the end of the text or a closing/continuing tag (`</#if>`, `<#else>`,
    /// `<#elseif ...>`, `</#list>`), which is returned (consumed for closers, not for `elseif`).
    fn nodes(&mut self, depth: usize) -> Result<(Vec<Node>, Option<&'static str>), Error> {
        if depth > MAX_DEPTH {
            return Err(self.err_at(self.pos, "directives are nested too deeply"));
        }
        let mut nodes = Vec::new();
        let mut text = String::new();
        while self.pos < self.text.len() {
            let rest = self.rest();
            if rest.starts_with("<#--") {
                let end = rest.find("-->").ok_or_else(|| self.err_at(self.pos, "unclosed comment `<#--`"))?;
                self.pos += end + 3;
            } else if rest.starts_with("${") {
                flush(&mut text, &mut nodes);
                let start = self.pos;
                self.pos += 2;
                let expr = self.expr(depth)?;
                self.skip_ws();
                if !self.rest().starts_with('}') {
                    return Err(self.err_at(start, "expected `}` to close `${`"));
                }
                self.pos += 1;
                nodes.push(Node::Interpolation(expr));
            } else if rest.starts_with("#{") {
                return Err(self.err_at(self.pos, "`#{...}` interpolations are not supported by hgw (use `${...}`)"));
            } else if rest.starts_with("</#")
                || rest.starts_with("<#")
                || rest.starts_with("<@")
                || rest.starts_with("</@")
            {
                flush(&mut text, &mut nodes);
                if let Some(end) = self.directive(&mut nodes, depth)? {
                    return Ok((nodes, Some(end)));
                }
            } else {
                let c = rest.chars().next().unwrap_or_default();
                text.push(c);
                self.pos += c.len_utf8();
            }
        }
        flush(&mut text, &mut nodes);
        Ok((nodes, None))
    }

    fn directive(&mut self, nodes: &mut Vec<Node>, depth: usize) -> Result<Option<&'static str>, Error> {
        let start = self.pos;
        if self.rest().starts_with("<@") || self.rest().starts_with("</@") {
            return Err(self.err_at(start, "user-defined directives (`<@...>`) are not supported by hgw"));
        }
        let closing = self.rest().starts_with("</#");
        self.pos += if closing { 3 } else { 2 };
        let name = self.ident().ok_or_else(|| self.err_at(start, "expected a directive name after `<#`"))?;
        if closing {
            self.skip_ws();
            self.expect('>', start)?;
            return match name.as_str() {
                "if" => Ok(Some("</#if>")),
                "list" => Ok(Some("</#list>")),
                other => Err(self.err_at(start, format!("`</#{other}>` closes a directive hgw does not support"))),
            };
        }
        match name.as_str() {
            "if" => {
                let mut branches = Vec::new();
                let mut condition = self.expr(depth)?;
                self.close_tag(start)?;
                let otherwise = loop {
                    let (body, end) = self.nodes(depth + 1)?;
                    branches.push((condition, body));
                    match end {
                        Some("</#if>") => break Vec::new(),
                        Some("<#elseif") => {
                            condition = self.expr(depth)?;
                            self.close_tag(start)?;
                        }
                        Some("<#else>") => {
                            let (body, end) = self.nodes(depth + 1)?;
                            if end != Some("</#if>") {
                                return Err(self.err_at(start, "`<#if>` is not closed by `</#if>`"));
                            }
                            break body;
                        }
                        _ => return Err(self.err_at(start, "`<#if>` is not closed by `</#if>`")),
                    }
                };
                nodes.push(Node::If(branches, otherwise));
                Ok(None)
            }
            "elseif" => Ok(Some("<#elseif")),
            "else" => {
                self.skip_ws();
                self.expect('>', start)?;
                Ok(Some("<#else>"))
            }
            "list" => {
                let seq = self.expr(depth)?;
                self.skip_ws();
                if self.ident().as_deref() != Some("as") {
                    return Err(self.err_at(start, "expected `as` in `<#list sequence as item>`"));
                }
                self.skip_ws();
                let var = self.ident().ok_or_else(|| self.err_at(start, "expected the loop variable after `as`"))?;
                self.skip_ws();
                if self.rest().starts_with(',') {
                    return Err(
                        self.err_at(start, "`<#list hash as key, value>` is not supported by hgw (use `?keys`)")
                    );
                }
                self.close_tag(start)?;
                let (body, end) = self.nodes(depth + 1)?;
                if end != Some("</#list>") {
                    return Err(self.err_at(start, "`<#list>` is not closed by `</#list>`"));
                }
                nodes.push(Node::List { seq, var, body });
                Ok(None)
            }
            "assign" => {
                self.skip_ws();
                let var = self.ident().ok_or_else(|| self.err_at(start, "expected a name after `<#assign`"))?;
                self.skip_ws();
                self.expect('=', start)?;
                let value = self.expr(depth)?;
                self.close_tag(start)?;
                nodes.push(Node::Assign(var, value));
                Ok(None)
            }
            other => Err(self.err_at(start, format!("the directive `<#{other}>` is not supported by hgw"))),
        }
    }

    fn close_tag(&mut self, start: usize) -> Result<(), Error> {
        self.skip_ws();
        if self.rest().starts_with("/>") {
            self.pos += 2;
            return Ok(());
        }
        self.expect('>', start)
    }

    fn expect(&mut self, c: char, start: usize) -> Result<(), Error> {
        if self.rest().starts_with(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err_at(start, format!("expected `{c}`")))
        }
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.text.len() - trimmed.len();
    }

    fn ident(&mut self) -> Option<String> {
        let rest = self.rest();
        let len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$')).unwrap_or(rest.len());
        if len == 0 || rest.starts_with(|c: char| c.is_ascii_digit()) {
            return None;
        }
        self.pos += len;
        Some(rest[..len].to_owned())
    }

    fn expr(&mut self, depth: usize) -> Result<Expr, Error> {
        if depth > MAX_DEPTH {
            return Err(self.err_at(self.pos, "the expression is nested too deeply"));
        }
        let mut lhs = self.and(depth)?;
        loop {
            self.skip_ws();
            if self.rest().starts_with("||") {
                self.pos += 2;
                lhs = Expr::Or(Box::new(lhs), Box::new(self.and(depth)?));
            } else {
                return Ok(lhs);
            }
        }
    }

    fn and(&mut self, depth: usize) -> Result<Expr, Error> {
        let mut lhs = self.comparison(depth)?;
        loop {
            self.skip_ws();
            if self.rest().starts_with("&&") {
                self.pos += 2;
                lhs = Expr::And(Box::new(lhs), Box::new(self.comparison(depth)?));
            } else {
                return Ok(lhs);
            }
        }
    }

    fn comparison(&mut self, depth: usize) -> Result<Expr, Error> {
        let lhs = self.additive(depth)?;
        self.skip_ws();
        let ops: &[(&str, Cmp)] = &[
            ("==", Cmp::Eq),
            ("!=", Cmp::Ne),
            ("<=", Cmp::Le),
            (">=", Cmp::Ge),
            ("=", Cmp::Eq),
            ("<", Cmp::Lt),
            ("lte ", Cmp::Le),
            ("gte ", Cmp::Ge),
            ("lt ", Cmp::Lt),
            ("gt ", Cmp::Gt),
        ];
        for (token, op) in ops {
            // `>` ends a directive tag: comparisons use `gt` there, as in FreeMarker.
            if self.rest().starts_with(token) {
                self.pos += token.trim_end().len();
                let rhs = self.additive(depth)?;
                return Ok(Expr::Compare(*op, Box::new(lhs), Box::new(rhs)));
            }
        }
        Ok(lhs)
    }

    fn additive(&mut self, depth: usize) -> Result<Expr, Error> {
        let mut lhs = self.multiplicative(depth)?;
        loop {
            self.skip_ws();
            let Some(op) = self.rest().chars().next().filter(|c| *c == '+' || *c == '-') else {
                return Ok(lhs);
            };
            self.pos += 1;
            lhs = Expr::Arith(op, Box::new(lhs), Box::new(self.multiplicative(depth)?));
        }
    }

    fn multiplicative(&mut self, depth: usize) -> Result<Expr, Error> {
        let mut lhs = self.unary(depth)?;
        loop {
            self.skip_ws();
            let Some(op) = self.rest().chars().next().filter(|c| matches!(c, '*' | '/' | '%')) else {
                return Ok(lhs);
            };
            self.pos += 1;
            lhs = Expr::Arith(op, Box::new(lhs), Box::new(self.unary(depth)?));
        }
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, Error> {
        self.skip_ws();
        if self.rest().starts_with('!') {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary(depth + 1)?)));
        }
        if self.rest().starts_with('-') {
            self.pos += 1;
            return Ok(Expr::Neg(Box::new(self.unary(depth + 1)?)));
        }
        self.postfix(depth)
    }

    fn postfix(&mut self, depth: usize) -> Result<Expr, Error> {
        let mut expr = self.primary(depth)?;
        loop {
            let rest = self.rest();
            if rest.starts_with("??") {
                self.pos += 2;
                expr = Expr::Exists(Box::new(expr));
            } else if rest.starts_with('?') {
                let at = self.pos;
                self.pos += 1;
                let name = self.ident().ok_or_else(|| self.err_at(at, "expected a built-in name after `?`"))?;
                let builtin = BUILTINS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, b)| *b)
                    .ok_or_else(|| self.err_at(at, format!("the built-in `?{name}` is not supported by hgw")))?;
                if self.rest().starts_with('(') {
                    return Err(self.err_at(at, format!("`?{name}(...)` with arguments is not supported by hgw")));
                }
                expr = Expr::Builtin(Box::new(expr), builtin);
            } else if rest.starts_with('.') && !rest.starts_with("..") {
                let at = self.pos;
                self.pos += 1;
                let name = self.ident().ok_or_else(|| self.err_at(at, "expected a name after `.`"))?;
                expr = Expr::Member(Box::new(expr), name);
            } else if rest.starts_with('[') {
                let at = self.pos;
                self.pos += 1;
                let key = self.expr(depth + 1)?;
                self.skip_ws();
                if !self.rest().starts_with(']') {
                    return Err(self.err_at(at, "expected `]`"));
                }
                self.pos += 1;
                expr = Expr::Index(Box::new(expr), Box::new(key));
            } else if rest.starts_with('!') && !rest.starts_with("!=") {
                self.pos += 1;
                // `a!` alone, or `a!default`: the default is a primary expression.
                let after = self.rest().trim_start();
                let ends = after.is_empty()
                    || [")", "}", "]", ">", "/>", ",", "&&", "||", "==", "!=", "+", "?"]
                        .iter()
                        .any(|t| after.starts_with(t));
                let default = if ends { None } else { Some(Box::new(self.primary(depth + 1)?)) };
                expr = Expr::Default(Box::new(expr), default);
            } else if rest.starts_with('(') {
                return Err(self.err_at(self.pos, "calling methods or functions is not supported by hgw"));
            } else {
                return Ok(expr);
            }
        }
    }

    fn primary(&mut self, depth: usize) -> Result<Expr, Error> {
        self.skip_ws();
        let at = self.pos;
        let rest = self.rest();
        let first = rest.chars().next().ok_or_else(|| self.err_at(at, "expected an expression"))?;
        if first == '(' {
            self.pos += 1;
            let inner = self.expr(depth + 1)?;
            self.skip_ws();
            self.expect(')', at)?;
            return Ok(inner);
        }
        if first == '\'' || first == '"' {
            return self.string(first);
        }
        if first == 'r' && (rest.starts_with("r\"") || rest.starts_with("r'")) {
            let quote = rest[1..].chars().next().unwrap_or('"');
            self.pos += 2;
            let end = self.rest().find(quote).ok_or_else(|| self.err_at(at, "unclosed raw string"))?;
            let text = self.rest()[..end].to_owned();
            self.pos += end + 1;
            return Ok(Expr::Literal(Value::Str(text)));
        }
        if first.is_ascii_digit() {
            let len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
            let number: f64 = rest[..len].parse().map_err(|_| self.err_at(at, "not a number"))?;
            self.pos += len;
            return Ok(Expr::Literal(Value::Num(number)));
        }
        if first == '[' || first == '{' {
            return Err(self.err_at(at, "sequence and hash literals are not supported by hgw"));
        }
        let name = self.ident().ok_or_else(|| self.err_at(at, format!("unexpected `{first}`")))?;
        Ok(match name.as_str() {
            "true" => Expr::Literal(Value::Bool(true)),
            "false" => Expr::Literal(Value::Bool(false)),
            _ => Expr::Var(name),
        })
    }

    fn string(&mut self, quote: char) -> Result<Expr, Error> {
        let at = self.pos;
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                c if c == quote => {
                    self.pos += i + 1;
                    return Ok(Expr::Literal(Value::Str(out)));
                }
                '\\' => {
                    let (_, escaped) = chars.next().ok_or_else(|| self.err_at(at, "unclosed string"))?;
                    out.push(match escaped {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        other => other,
                    });
                }
                '$' if self.rest()[i..].starts_with("${") => {
                    return Err(self.err_at(at, "`${...}` inside a string literal is not supported by hgw"));
                }
                c => out.push(c),
            }
        }
        Err(self.err_at(at, "unclosed string"))
    }
}

fn flush(text: &mut String, nodes: &mut Vec<Node>) {
    if !text.is_empty() {
        nodes.push(Node::Text(std::mem::take(text)));
    }
}

/// Variables visible while rendering: the data model, then `<#assign>`ed and loop variables.
struct Scope<'m> {
    model: &'m Hash,
    locals: Vec<(String, Value)>,
    iterations: usize,
}

impl Template {
    /// Renders against `model` (top-level variables: `request`, `response`, `context`...).
    pub fn render(&self, model: &Hash) -> Result<String, Error> {
        let mut scope = Scope { model, locals: Vec::new(), iterations: 0 };
        let mut out = String::new();
        render_nodes(&self.nodes, &mut scope, &mut out)?;
        Ok(out)
    }
}

fn render_nodes(nodes: &[Node], scope: &mut Scope<'_>, out: &mut String) -> Result<(), Error> {
    for node in nodes {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Interpolation(expr) => {
                let value = eval(expr, scope)?;
                out.push_str(&display(&value, expr)?);
            }
            Node::If(branches, otherwise) => {
                let mut taken = false;
                for (condition, body) in branches {
                    if truth(&eval(condition, scope)?, condition)? {
                        render_nodes(body, scope, out)?;
                        taken = true;
                        break;
                    }
                }
                if !taken {
                    render_nodes(otherwise, scope, out)?;
                }
            }
            Node::List { seq, var, body } => {
                let items = match eval(seq, scope)? {
                    Value::Seq(items) => items,
                    Value::Null => return Err(missing(seq)),
                    other => return Err(error(format!("`<#list>` needs a sequence, got {}", type_name(&other)))),
                };
                for item in items {
                    scope.iterations += 1;
                    if scope.iterations > MAX_ITERATIONS {
                        return Err(error(format!("more than {MAX_ITERATIONS} loop iterations")));
                    }
                    scope.locals.push((var.clone(), item));
                    let result = render_nodes(body, scope, out);
                    scope.locals.pop();
                    result?;
                }
            }
            Node::Assign(name, expr) => {
                let value = eval(expr, scope)?;
                scope.locals.retain(|(n, _)| n != name);
                scope.locals.push((name.clone(), value));
            }
        }
        if out.len() > MAX_OUTPUT_LEN {
            return Err(error(format!("the output is larger than {MAX_OUTPUT_LEN} bytes")));
        }
    }
    Ok(())
}

fn describe(expr: &Expr) -> String {
    match expr {
        Expr::Var(name) => name.clone(),
        Expr::Member(target, name) => format!("{}.{name}", describe(target)),
        Expr::Index(target, key) => match key.as_ref() {
            Expr::Literal(Value::Str(k)) => format!("{}['{k}']", describe(target)),
            Expr::Literal(Value::Num(n)) => format!("{}[{n}]", describe(target)),
            _ => format!("{}[...]", describe(target)),
        },
        Expr::Builtin(target, _) => format!("{}?...", describe(target)),
        _ => "the expression".to_owned(),
    }
}

fn missing(expr: &Expr) -> Error {
    error(format!("The following has evaluated to null or missing: {}", describe(expr)))
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Str(_) => "a string",
        Value::Num(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::Seq(_) => "a sequence",
        Value::Hash(_) => "a hash",
    }
}

fn truth(value: &Value, expr: &Expr) -> Result<bool, Error> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::Null => Err(missing(expr)),
        other => Err(error(format!("a condition must be a boolean, {} is {}", describe(expr), type_name(other)))),
    }
}

fn display(value: &Value, expr: &Expr) -> Result<String, Error> {
    match value {
        Value::Str(s) => Ok(s.clone()),
        Value::Num(n) => Ok(format_number(*n, true)),
        Value::Null => Err(missing(expr)),
        other => Err(error(format!(
            "{} is {}, which `${{...}}` cannot print (use ?c or ?string for booleans)",
            describe(expr),
            type_name(other)
        ))),
    }
}

/// FreeMarker's default number format for an English locale (`#,##0.###`), or the computer format
/// (`?c`: no grouping, every digit).
fn format_number(n: f64, grouped: bool) -> String {
    if !n.is_finite() {
        return if n.is_nan() {
            "NaN".into()
        } else if n > 0.0 {
            "\u{221e}".into()
        } else {
            "-\u{221e}".into()
        };
    }
    if !grouped {
        return format!("{n}");
    }
    let text = format!("{:.3}", n.abs());
    let (int, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let fraction = fraction.trim_end_matches('0');
    let mut out = String::with_capacity(text.len() + int.len() / 3 + 1);
    if n < 0.0 && (int != "0" || !fraction.is_empty()) {
        out.push('-');
    }
    for (i, digit) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    if !fraction.is_empty() {
        out.push('.');
        out.push_str(fraction);
    }
    out
}

fn lookup<'v>(scope: &'v Scope<'_>, name: &str) -> Option<&'v Value> {
    scope.locals.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v).or_else(|| scope.model.get(name))
}

fn eval(expr: &Expr, scope: &Scope<'_>) -> Result<Value, Error> {
    Ok(match expr {
        Expr::Literal(value) => value.clone(),
        Expr::Var(name) => lookup(scope, name).cloned().unwrap_or(Value::Null),
        Expr::Member(target, name) => match eval(target, scope)? {
            Value::Hash(hash) => hash.get(name).cloned().unwrap_or(Value::Null),
            Value::Null => return Err(missing(target)),
            other => {
                return Err(error(format!("{} is {}, which has no `.{name}`", describe(target), type_name(&other))));
            }
        },
        Expr::Index(target, key) => {
            let container = eval(target, scope)?;
            let key_value = eval(key, scope)?;
            match (container, key_value) {
                (Value::Null, _) => return Err(missing(target)),
                (Value::Hash(hash), Value::Str(k)) => hash.get(&k).cloned().unwrap_or(Value::Null),
                (Value::Seq(items), Value::Num(n)) if n >= 0.0 && n.fract() == 0.0 => match items.get(n as usize) {
                    Some(v) => v.clone(),
                    None => {
                        return Err(error(format!(
                            "index {n} is out of bounds: {} has {} item(s)",
                            describe(target),
                            items.len()
                        )));
                    }
                },
                (container, key) => {
                    return Err(error(format!(
                        "{} is {}, which cannot be indexed by {}",
                        describe(target),
                        type_name(&container),
                        type_name(&key)
                    )));
                }
            }
        }
        Expr::Default(target, default) => match eval(target, scope) {
            Ok(Value::Null) | Err(_) => match default {
                Some(d) => eval(d, scope)?,
                None => Value::Str(String::new()),
            },
            Ok(value) => value,
        },
        Expr::Exists(target) => Value::Bool(!matches!(eval(target, scope), Ok(Value::Null) | Err(_))),
        Expr::Not(operand) => Value::Bool(!truth(&eval(operand, scope)?, operand)?),
        Expr::And(a, b) => Value::Bool(truth(&eval(a, scope)?, a)? && truth(&eval(b, scope)?, b)?),
        Expr::Or(a, b) => Value::Bool(truth(&eval(a, scope)?, a)? || truth(&eval(b, scope)?, b)?),
        Expr::Compare(op, a, b) => {
            let (x, y) = (eval(a, scope)?, eval(b, scope)?);
            if matches!(x, Value::Null) {
                return Err(missing(a));
            }
            if matches!(y, Value::Null) {
                return Err(missing(b));
            }
            let ordering = match (&x, &y) {
                (Value::Num(p), Value::Num(q)) => p.partial_cmp(q),
                (Value::Str(p), Value::Str(q)) => Some(p.cmp(q)),
                (Value::Bool(p), Value::Bool(q)) if matches!(op, Cmp::Eq | Cmp::Ne) => Some(p.cmp(q)),
                _ => {
                    return Err(error(format!("cannot compare {} with {}", type_name(&x), type_name(&y))));
                }
            };
            let ordering = ordering.ok_or_else(|| error("cannot compare NaN"))?;
            use std::cmp::Ordering::*;
            Value::Bool(match op {
                Cmp::Eq => ordering == Equal,
                Cmp::Ne => ordering != Equal,
                Cmp::Lt => ordering == Less,
                Cmp::Le => ordering != Greater,
                Cmp::Gt => ordering == Greater,
                Cmp::Ge => ordering != Less,
            })
        }
        Expr::Arith(op, a, b) => {
            let (x, y) = (eval(a, scope)?, eval(b, scope)?);
            match (op, &x, &y) {
                (_, Value::Null, _) => return Err(missing(a)),
                (_, _, Value::Null) => return Err(missing(b)),
                ('+', Value::Num(p), Value::Num(q)) => Value::Num(p + q),
                ('+', _, _) => Value::Str(format!("{}{}", display(&x, a)?, display(&y, b)?)),
                ('-', Value::Num(p), Value::Num(q)) => Value::Num(p - q),
                ('*', Value::Num(p), Value::Num(q)) => Value::Num(p * q),
                ('/', Value::Num(p), Value::Num(q)) => Value::Num(p / q),
                ('%', Value::Num(p), Value::Num(q)) => Value::Num(p % q),
                _ => return Err(error(format!("`{op}` needs numbers, got {} and {}", type_name(&x), type_name(&y)))),
            }
        }
        Expr::Neg(operand) => match eval(operand, scope)? {
            Value::Num(n) => Value::Num(-n),
            Value::Null => return Err(missing(operand)),
            other => return Err(error(format!("`-` needs a number, got {}", type_name(&other)))),
        },
        Expr::Builtin(target, builtin) => builtin_value(*builtin, target, eval(target, scope)?)?,
    })
}

fn builtin_value(builtin: Builtin, target: &Expr, value: Value) -> Result<Value, Error> {
    let is = |b: bool| Ok(Value::Bool(b));
    match builtin {
        Builtin::HasContent => {
            return is(match &value {
                Value::Null => false,
                Value::Str(s) => !s.is_empty(),
                Value::Seq(items) => !items.is_empty(),
                Value::Hash(hash) => !hash.entries.is_empty(),
                _ => true,
            });
        }
        Builtin::IsString => return is(matches!(value, Value::Str(_))),
        Builtin::IsNumber => return is(matches!(value, Value::Num(_))),
        Builtin::IsBoolean => return is(matches!(value, Value::Bool(_))),
        Builtin::IsSequence => return is(matches!(value, Value::Seq(_))),
        Builtin::IsHash => return is(matches!(value, Value::Hash(_))),
        _ => {}
    }
    if matches!(value, Value::Null) {
        return Err(missing(target));
    }
    let wrong = |value: &Value| error(format!("`?{builtin:?}` cannot apply to {}", type_name(value)).to_lowercase());
    match (builtin, value) {
        (Builtin::Eval, Value::Str(text)) => {
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| error(format!("?eval: {} is not a JSON value: {e}", describe(target))))?;
            Ok(from_json(json, 0)?)
        }
        (Builtin::UpperCase, Value::Str(s)) => Ok(Value::Str(s.to_uppercase())),
        (Builtin::LowerCase, Value::Str(s)) => Ok(Value::Str(s.to_lowercase())),
        (Builtin::Trim, Value::Str(s)) => Ok(Value::Str(s.trim().to_owned())),
        (Builtin::Length, Value::Str(s)) => Ok(Value::Num(s.chars().count() as f64)),
        (Builtin::Size, Value::Seq(items)) => Ok(Value::Num(items.len() as f64)),
        (Builtin::Size, Value::Hash(hash)) => Ok(Value::Num(hash.entries.len() as f64)),
        (Builtin::C, Value::Num(n)) => Ok(Value::Str(format_number(n, false))),
        (Builtin::C | Builtin::String, Value::Bool(b)) => Ok(Value::Str(b.to_string())),
        (Builtin::C | Builtin::String, Value::Str(s)) => Ok(Value::Str(s)),
        (Builtin::String, Value::Num(n)) => Ok(Value::Str(format_number(n, true))),
        (Builtin::Number, Value::Str(s)) => {
            s.trim().parse::<f64>().map(Value::Num).map_err(|_| error(format!("?number: `{s}` is not a number")))
        }
        (Builtin::Number, Value::Num(n)) => Ok(Value::Num(n)),
        (Builtin::JsonString, Value::Str(s)) => {
            let quoted = serde_json::to_string(&s).unwrap_or_default();
            Ok(Value::Str(quoted[1..quoted.len().saturating_sub(1)].to_owned()))
        }
        (Builtin::Keys, Value::Hash(hash)) => {
            Ok(Value::Seq(hash.entries.into_iter().map(|(k, _)| Value::Str(k)).collect()))
        }
        (Builtin::Values, Value::Hash(hash)) => Ok(Value::Seq(hash.entries.into_iter().map(|(_, v)| v).collect())),
        (Builtin::First, Value::Seq(items)) => {
            items.into_iter().next().ok_or_else(|| error(format!("?first: {} is empty", describe(target))))
        }
        (Builtin::Last, Value::Seq(items)) => {
            items.into_iter().last().ok_or_else(|| error(format!("?last: {} is empty", describe(target))))
        }
        (_, other) => Err(wrong(&other)),
    }
}

/// A JSON value as a data-model value (bounded nesting).
pub fn from_json(json: serde_json::Value, depth: usize) -> Result<Value, Error> {
    if depth > MAX_DEPTH {
        return Err(error("the JSON value is nested too deeply"));
    }
    Ok(match json {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => Value::Num(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(s) => Value::Str(s),
        serde_json::Value::Array(items) => {
            Value::Seq(items.into_iter().map(|v| from_json(v, depth + 1)).collect::<Result<_, _>>()?)
        }
        serde_json::Value::Object(map) => Value::Hash(Hash::new(
            map.into_iter().map(|(k, v)| Ok((k, from_json(v, depth + 1)?))).collect::<Result<_, Error>>()?,
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Hash {
        let headers = Hash {
            entries: vec![("X-Name".into(), Value::Seq(vec![Value::Str("Ada".into()), Value::Str("B".into())]))],
            case_insensitive: true,
        };
        Hash::new(vec![(
            "request".into(),
            Value::Hash(Hash::new(vec![
                ("headers".into(), Value::Hash(headers)),
                ("content".into(), Value::Str(r#"{"symbol":"EUR","items":[1,2,3],"n":1234.5}"#.into())),
                ("method".into(), Value::Str("POST".into())),
            ])),
        )])
    }

    fn render(template: &str) -> Result<String, Error> {
        parse(template)?.render(&model())
    }

    #[test]
    fn interpolation_access_and_missing_values() {
        assert_eq!(render("Hi ${request.headers['x-name'][0]}!").unwrap(), "Hi Ada!");
        assert_eq!(render("${request.method?lower_case}").unwrap(), "post");
        let missing = render("from ${request.headers['requestHeader'][0]}").unwrap_err();
        assert!(missing.message.contains("null or missing: request.headers['requestHeader']"), "{missing}");
        assert_eq!(
            render("${request.headers['nope']!'none'}|${(request.x.y)!}|${(request.nope??)?c}").unwrap(),
            "none||false"
        );
    }

    #[test]
    fn eval_json_lists_conditions_and_assign() {
        let t = "<#assign body = request.content?eval>${body.symbol}:<#list body.items as i>${i}<#if i lt 3>,</#if></#list>\
                 <#if body.n gt 1000> big ${body.n} ${body.n?c}<#elseif true>small<#else>none</#if>";
        assert_eq!(render(t).unwrap(), "EUR:1,2,3 big 1,234.5 1234.5");
        assert_eq!(render("<#-- note -->${1 + 2}${'a' + 1}${(3 == 3)?c}").unwrap(), "3a1true");
    }

    #[test]
    fn unsupported_constructs_are_refused_when_parsed() {
        for (template, expected) in [
            ("<#macro m></#macro>", "the directive `<#macro>`"),
            ("${x?api}", "the built-in `?api`"),
            ("<@my.directive/>", "user-defined directives"),
            ("${x.method()}", "calling methods"),
            ("<#if true>open", "not closed"),
            ("${'unclosed}", "unclosed string"),
            ("${x", "expected `}`"),
        ] {
            let e = parse(template).unwrap_err();
            assert!(e.message.contains(expected), "{template}: {e}");
        }
        // A boolean cannot be printed without ?c, as in FreeMarker.
        assert!(render("${true}").unwrap_err().message.contains("a boolean"));
    }

    #[test]
    fn renders_are_bounded() {
        let nested = "<#assign s = request.content?eval>".to_owned()
            + &"<#list s.items as a>".repeat(10)
            + "x"
            + &"</#list>".repeat(10);
        // 3^10 = 59049 iterations: within the limit.
        assert_eq!(render(&nested).unwrap().len(), 59049);
        let deep = "<#if true>".repeat(MAX_DEPTH + 2);
        assert!(parse(&deep).unwrap_err().message.contains("nested too deeply"));
        assert_eq!(format_number(-1234567.891, true), "-1,234,567.891");
        assert_eq!(format_number(0.5, true), "0.5");
        assert_eq!(format_number(42.0, false), "42");
    }
}
