//! Recursive-descent parser for the subset, with SpEL's precedence:
//! `||` < `&&` < comparisons and `matches` (not chainable) < `!` < `.method()` / `[index]`.
//!
//! Types are checked here, not at request time, so an API using a method on the wrong kind of value
//! (`#request.path.size()`) is rejected when its definition is loaded.

use regex::RegexBuilder;

use crate::ast::{CmpOp, Field, Method, MultiMap, Node, Ssl, Ty};
use crate::error::ParseError;
use crate::lexer::{Lexer, Tok, Token};
use crate::ssl::SslSide;
use crate::{MAX_DEPTH, MAX_REGEX_SIZE};

/// Parses `text[start..end]` as one expression; positions refer to the whole `text`.
pub(crate) fn parse_range(text: &str, start: usize, end: usize) -> Result<Node, ParseError> {
    let mut lexer = Lexer::new(text, start, end);
    let cur = lexer.next_token()?;
    if matches!(cur.tok, Tok::End) {
        return Err(ParseError::at(text, start, "empty expression"));
    }
    let mut p = Parser { text, lexer, cur, depth: 0 };
    let (node, _) = p.parse_or()?;
    let t = p.peek();
    match &t.tok {
        Tok::End => Ok(node),
        Tok::Eq | Tok::Ne | Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge => {
            Err(p.error(t.start, "comparisons cannot be chained; add parentheses"))
        }
        Tok::Ident(w) if is_relational_word(w) || w.eq_ignore_ascii_case("matches") => {
            Err(p.error(t.start, "comparisons cannot be chained; add parentheses"))
        }
        Tok::Ident(w) => Err(unsupported_operator_word(text, t.start, w)
            .unwrap_or_else(|| p.error(t.start, format!("unexpected `{w}`, expected an operator or the end")))),
        Tok::Minus => Err(ParseError::unsupported(text, t.start, "the arithmetic operator `-` is not supported")),
        Tok::RParen => Err(p.error(t.start, "unbalanced `)`")),
        other => Err(p.error(t.start, format!("unexpected {}, expected an operator or the end", other.describe()))),
    }
}

struct Parser<'t> {
    text: &'t str,
    lexer: Lexer<'t>,
    /// The lookahead token.
    cur: Token<'t>,
    depth: usize,
}

fn is_relational_word(w: &str) -> bool {
    ["eq", "ne", "lt", "le", "gt", "ge"].iter().any(|k| w.eq_ignore_ascii_case(k))
}

/// SpEL operators spelled as words that the subset does not implement.
fn unsupported_operator_word(text: &str, at: usize, w: &str) -> Option<ParseError> {
    let what = match w.to_ascii_lowercase().as_str() {
        "div" | "mod" => format!("the arithmetic operator `{w}` is not supported"),
        "instanceof" => "the `instanceof` operator is not supported".to_owned(),
        "between" => "the `between` operator is not supported".to_owned(),
        _ => return None,
    };
    Some(ParseError::unsupported(text, at, &what))
}

fn column(text: &str, offset: usize) -> u32 {
    let col = text.get(..offset).map_or(offset, |p| p.chars().count()) + 1;
    u32::try_from(col).unwrap_or(u32::MAX)
}

impl<'t> Parser<'t> {
    fn peek(&self) -> &Token<'t> {
        &self.cur
    }

    /// Consumes the lookahead and lexes the next one; a lexing error surfaces here.
    fn advance(&mut self) -> Result<Token<'t>, ParseError> {
        let next = self.lexer.next_token()?;
        Ok(std::mem::replace(&mut self.cur, next))
    }

    fn error(&self, offset: usize, message: impl Into<String>) -> ParseError {
        ParseError::at(self.text, offset, message)
    }

    fn col(&self, offset: usize) -> u32 {
        column(self.text, offset)
    }

    fn descend(&mut self, at: usize) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(at, format!("expression is nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    fn ascend(&mut self, levels: usize) {
        self.depth -= levels;
    }

    fn is_word(&self, word: &str) -> bool {
        matches!(&self.peek().tok, Tok::Ident(w) if w.eq_ignore_ascii_case(word))
    }

    fn expect(&mut self, want: Tok<'static>, what: &str) -> Result<Token<'t>, ParseError> {
        let t = self.peek();
        if t.tok == want {
            self.advance()
        } else {
            Err(self.error(t.start, format!("expected {what}, found {}", t.tok.describe())))
        }
    }

    fn parse_or(&mut self) -> Result<(Node, Ty), ParseError> {
        let start = self.peek().start;
        self.descend(start)?;
        let first = self.parse_and()?;
        if !(matches!(self.peek().tok, Tok::OrOr) || self.is_word("or")) {
            self.ascend(1);
            return Ok(first);
        }
        let mut items = vec![self.logical_operand(first, "||", start)?];
        while matches!(self.peek().tok, Tok::OrOr) || self.is_word("or") {
            self.advance()?;
            let at = self.peek().start;
            let next = self.parse_and()?;
            items.push(self.logical_operand(next, "||", at)?);
        }
        self.ascend(1);
        Ok((Node::Or(items), Ty::Bool))
    }

    fn parse_and(&mut self) -> Result<(Node, Ty), ParseError> {
        let start = self.peek().start;
        let first = self.parse_relational()?;
        if !(matches!(self.peek().tok, Tok::AndAnd) || self.is_word("and")) {
            return Ok(first);
        }
        let mut items = vec![self.logical_operand(first, "&&", start)?];
        while matches!(self.peek().tok, Tok::AndAnd) || self.is_word("and") {
            self.advance()?;
            let at = self.peek().start;
            let next = self.parse_relational()?;
            items.push(self.logical_operand(next, "&&", at)?);
        }
        Ok((Node::And(items), Ty::Bool))
    }

    /// Operands of `&&`, `||` and `!` must be booleans; strings are allowed because attributes are
    /// strings and Gravitee converts `"true"`/`"false"` (checked at request time).
    fn logical_operand(&self, (node, ty): (Node, Ty), op: &str, at: usize) -> Result<(Node, u32), ParseError> {
        match ty {
            Ty::Bool | Ty::Str => Ok((node, self.col(at))),
            other => Err(self.error(at, format!("operand of `{op}` must be a boolean, found {}", other.name()))),
        }
    }

    fn parse_relational(&mut self) -> Result<(Node, Ty), ParseError> {
        let lhs_at = self.peek().start;
        let (lhs, lty) = self.parse_unary()?;
        let t = self.peek().clone();
        let op = match &t.tok {
            Tok::Eq => CmpOp::Eq,
            Tok::Ne => CmpOp::Ne,
            Tok::Lt => CmpOp::Lt,
            Tok::Le => CmpOp::Le,
            Tok::Gt => CmpOp::Gt,
            Tok::Ge => CmpOp::Ge,
            Tok::Ident(w) if is_relational_word(w) => match w.to_ascii_lowercase().as_str() {
                "eq" => CmpOp::Eq,
                "ne" => CmpOp::Ne,
                "lt" => CmpOp::Lt,
                "le" => CmpOp::Le,
                "gt" => CmpOp::Gt,
                _ => CmpOp::Ge,
            },
            Tok::Ident(w) if w.eq_ignore_ascii_case("matches") => {
                self.advance()?;
                return self.parse_matches(lhs, lty, lhs_at, t.start);
            }
            Tok::Ident(w) => {
                if let Some(e) = unsupported_operator_word(self.text, t.start, w) {
                    return Err(e);
                }
                return Ok((lhs, lty));
            }
            Tok::Minus => {
                return Err(ParseError::unsupported(
                    self.text,
                    t.start,
                    "the arithmetic operator `-` is not supported",
                ));
            }
            _ => return Ok((lhs, lty)),
        };
        self.advance()?;
        let (rhs, rty) = self.parse_unary()?;
        let ordering = !matches!(op, CmpOp::Eq | CmpOp::Ne);
        if ordering && lty != Ty::Null && rty != Ty::Null && (lty != rty || lty == Ty::List) {
            return Err(self.error(t.start, format!("cannot order {} against {}", lty.name(), rty.name())));
        }
        let at = self.col(t.start);
        Ok((Node::Compare { op, lhs: Box::new(lhs), rhs: Box::new(rhs), at }, Ty::Bool))
    }

    fn parse_matches(&mut self, lhs: Node, lty: Ty, lhs_at: usize, op_at: usize) -> Result<(Node, Ty), ParseError> {
        if !matches!(lty, Ty::Str | Ty::Int) {
            return Err(self.error(lhs_at, format!("`matches` needs a string on its left, found {}", lty.name())));
        }
        let t = self.advance()?;
        let Tok::Str(pattern) = t.tok else {
            return Err(self.error(t.start, "`matches` needs a string literal pattern on its right"));
        };
        // Java's String.matches is a whole-string match.
        let regex = RegexBuilder::new(&format!(r"\A(?:{pattern})\z"))
            .size_limit(MAX_REGEX_SIZE)
            .dfa_size_limit(MAX_REGEX_SIZE)
            .build()
            .map_err(|e| {
                let detail = match e {
                    regex::Error::CompiledTooBig(_) => "the pattern is too large".to_owned(),
                    other => other.to_string().lines().last().unwrap_or("invalid pattern").trim().to_owned(),
                };
                self.error(t.start, format!("invalid or unsupported regular expression: {detail}"))
            })?;
        let at = self.col(op_at);
        Ok((Node::Matches { lhs: Box::new(lhs), regex, at }, Ty::Bool))
    }

    fn parse_unary(&mut self) -> Result<(Node, Ty), ParseError> {
        let t = self.peek().clone();
        if matches!(t.tok, Tok::Bang) || self.is_word("not") {
            self.advance()?;
            self.descend(t.start)?;
            let at = self.peek().start;
            let operand = self.parse_unary()?;
            let (operand, _) = self.logical_operand(operand, "!", at)?;
            self.ascend(1);
            return Ok((Node::Not { operand: Box::new(operand), at: self.col(t.start) }, Ty::Bool));
        }
        match &t.tok {
            Tok::Minus => {
                self.advance()?;
                match self.peek().tok {
                    Tok::Int(v) => {
                        self.advance()?;
                        Ok((Node::Int(-v), Ty::Int))
                    }
                    _ => Err(ParseError::unsupported(
                        self.text,
                        t.start,
                        "unary `-` is supported only before an integer literal",
                    )),
                }
            }
            _ => self.parse_postfix(),
        }
    }

    fn parse_postfix(&mut self) -> Result<(Node, Ty), ParseError> {
        let (mut node, mut ty) = self.parse_primary()?;
        let mut levels = 0;
        loop {
            let t = self.peek().clone();
            match t.tok {
                Tok::Dot => {
                    self.descend(t.start)?;
                    levels += 1;
                    self.advance()?;
                    let name_tok = self.advance()?;
                    let Tok::Ident(name) = name_tok.tok else {
                        return Err(self.error(name_tok.start, "expected a method name after `.`"));
                    };
                    if !matches!(self.peek().tok, Tok::LParen) {
                        return Err(ParseError::unsupported(
                            self.text,
                            name_tok.start,
                            &format!("property `.{name}` on a {} is not supported", ty.name()),
                        ));
                    }
                    (node, ty) = self.parse_call(node, ty, name, name_tok.start)?;
                }
                Tok::LBracket => {
                    self.descend(t.start)?;
                    levels += 1;
                    self.advance()?;
                    let index = self.parse_index()?;
                    match ty {
                        Ty::List => {}
                        Ty::Str => {
                            return Err(ParseError::unsupported(
                                self.text,
                                t.start,
                                "indexing into a string is not supported",
                            ));
                        }
                        other => return Err(self.error(t.start, format!("cannot index into {}", other.name()))),
                    }
                    node = Node::Index { target: Box::new(node), index, at: self.col(t.start) };
                    ty = Ty::Str;
                }
                _ => break,
            }
        }
        self.ascend(levels);
        Ok((node, ty))
    }

    /// After `[`: a non-negative integer literal and `]`.
    fn parse_index(&mut self) -> Result<usize, ParseError> {
        let t = self.advance()?;
        let index = match t.tok {
            Tok::Int(v) => usize::try_from(v).map_err(|_| self.error(t.start, "index out of range"))?,
            Tok::Minus => return Err(self.error(t.start, "negative indexes are not allowed")),
            Tok::Str(_) => return Err(self.error(t.start, "a list is indexed by an integer, e.g. `[0]`")),
            _ => {
                return Err(ParseError::unsupported(
                    self.text,
                    t.start,
                    "an index must be an integer literal, e.g. `[0]`",
                ));
            }
        };
        self.expect(Tok::RBracket, "`]`")?;
        Ok(index)
    }

    fn parse_call(&mut self, target: Node, ty: Ty, name: &str, at: usize) -> Result<(Node, Ty), ParseError> {
        let lparen = self.advance()?;
        let mut args = Vec::new();
        if !matches!(self.peek().tok, Tok::RParen) {
            loop {
                let arg_at = self.peek().start;
                let (arg, aty) = self.parse_or()?;
                args.push((arg, aty, arg_at));
                if matches!(self.peek().tok, Tok::Comma) {
                    self.advance()?;
                } else {
                    break;
                }
            }
        }
        self.expect(Tok::RParen, "`)` closing the method call").map_err(|e| {
            if matches!(self.peek().tok, Tok::End) {
                self.error(lparen.start, "`(` of the method call is never closed")
            } else {
                e
            }
        })?;
        const STRING_METHODS: &str = "contains, startsWith, endsWith, length, toLowerCase, toUpperCase, isEmpty";
        const LIST_METHODS: &str = "contains, size, isEmpty";
        let (method, result) = match (ty, name) {
            (Ty::Str, "contains") => (Method::Contains, Ty::Bool),
            (Ty::Str, "startsWith") => (Method::StartsWith, Ty::Bool),
            (Ty::Str, "endsWith") => (Method::EndsWith, Ty::Bool),
            (Ty::Str, "length") => (Method::Length, Ty::Int),
            (Ty::Str, "toLowerCase") => (Method::ToLowerCase, Ty::Str),
            (Ty::Str, "toUpperCase") => (Method::ToUpperCase, Ty::Str),
            (Ty::Str, "isEmpty") => (Method::IsEmpty, Ty::Bool),
            (Ty::List, "contains") => (Method::Contains, Ty::Bool),
            (Ty::List, "size") => (Method::Size, Ty::Int),
            (Ty::List, "isEmpty") => (Method::IsEmpty, Ty::Bool),
            (Ty::Str, _) => {
                return Err(ParseError::unsupported(
                    self.text,
                    at,
                    &format!("the string method `.{name}()` is not supported (supported: {STRING_METHODS})"),
                ));
            }
            (Ty::List, _) => {
                return Err(ParseError::unsupported(
                    self.text,
                    at,
                    &format!("the list method `.{name}()` is not supported (supported: {LIST_METHODS})"),
                ));
            }
            (Ty::Null, _) => return Err(self.error(at, format!("cannot call `.{name}()` on null"))),
            (other, _) => {
                return Err(ParseError::unsupported(
                    self.text,
                    at,
                    &format!("methods on {} values are not supported", other.name()),
                ));
            }
        };
        let wanted = usize::from(matches!(method, Method::Contains | Method::StartsWith | Method::EndsWith));
        if args.len() != wanted {
            return Err(self.error(at, format!("`.{name}()` takes {wanted} argument(s), found {}", args.len())));
        }
        let arg = match args.pop() {
            Some((arg, aty, arg_at)) => {
                let ok = aty == Ty::Str || (ty == Ty::List && aty == Ty::Null);
                if !ok {
                    return Err(
                        self.error(arg_at, format!("argument of `.{name}()` must be a string, found {}", aty.name()))
                    );
                }
                Some(Box::new(arg))
            }
            None => None,
        };
        Ok((Node::Call { target: Box::new(target), method, arg, at: self.col(at) }, result))
    }

    fn parse_primary(&mut self) -> Result<(Node, Ty), ParseError> {
        let t = self.advance()?;
        match t.tok {
            Tok::Str(s) => Ok((Node::Str(s.into_boxed_str()), Ty::Str)),
            Tok::Int(v) => Ok((Node::Int(v), Ty::Int)),
            Tok::LParen => {
                let inner = self.parse_or()?;
                if !matches!(self.peek().tok, Tok::RParen) {
                    let n = self.peek();
                    if matches!(n.tok, Tok::End) {
                        return Err(self.error(t.start, "`(` is never closed"));
                    }
                    return Err(self.error(n.start, format!("expected `)`, found {}", n.tok.describe())));
                }
                self.advance()?;
                Ok(inner)
            }
            Tok::Var(name) => self.parse_variable(name, t.start),
            Tok::Ident(w) => {
                let lower = w.to_ascii_lowercase();
                match lower.as_str() {
                    "true" => Ok((Node::Bool(true), Ty::Bool)),
                    "false" => Ok((Node::Bool(false), Ty::Bool)),
                    "null" => Ok((Node::Null, Ty::Null)),
                    "t" if w == "T" && matches!(self.peek().tok, Tok::LParen) => {
                        Err(ParseError::unsupported(self.text, t.start, "type references `T(...)` are not supported"))
                    }
                    "new" => Err(ParseError::unsupported(
                        self.text,
                        t.start,
                        "constructor calls `new ...` are not supported",
                    )),
                    "and" | "or" | "matches" | "eq" | "ne" | "lt" | "le" | "gt" | "ge" | "div" | "mod"
                    | "instanceof" | "between" => {
                        Err(self.error(t.start, format!("expected a value, found the operator `{w}`")))
                    }
                    _ if matches!(self.peek().tok, Tok::LParen) => Err(ParseError::unsupported(
                        self.text,
                        t.start,
                        &format!("calling `{w}(...)` on the root object is not supported"),
                    )),
                    _ => Err(ParseError::unsupported(
                        self.text,
                        t.start,
                        &format!(
                            "the bare identifier `{w}` (a property of the root object) is not supported; \
                             variables start with `#`, e.g. `#request`"
                        ),
                    )),
                }
            }
            Tok::End => Err(self.error(t.start, "expected a value, found the end of the expression")),
            other => Err(self.error(t.start, format!("expected a value, found {}", other.describe()))),
        }
    }

    /// `#name` followed by its property path. The shape of each variable is fixed, so everything
    /// up to the map key (and an index right after it) is resolved here.
    fn parse_variable(&mut self, name: &str, at: usize) -> Result<(Node, Ty), ParseError> {
        if name == "jsonPath" && matches!(self.peek().tok, Tok::LParen) {
            return self.parse_json_path(at);
        }
        if matches!(self.peek().tok, Tok::LParen) {
            return Err(ParseError::unsupported(
                self.text,
                at,
                &format!("the function `#{name}(...)` is not supported"),
            ));
        }
        match name {
            "group" => {
                let open = self.peek().clone();
                if !matches!(open.tok, Tok::LBracket) {
                    return Err(self.error(open.start, "`#group` must be indexed, e.g. `#group[0]`"));
                }
                self.advance()?;
                let index = self.parse_index()?;
                return Ok((Node::Group { index, at: self.col(open.start) }, Ty::Str));
            }
            "endpoints" => {
                // Gravitee's endpoint reference: `#endpoints['name']` is the text `name:`, which the
                // endpoint invoker reads as "the endpoint, or endpoint group, called name".
                let name = self.parse_map_key("#endpoints", "default")?;
                return Ok((Node::Str(format!("{name}:").into_boxed_str()), Ty::Str));
            }
            "groupName" => return Ok((Node::GroupName(self.parse_map_key("#groupName", "id")?), Ty::Str)),
            // The V3 engine's name for the API's properties.
            "properties" => return Ok((Node::Property(self.parse_map_key("#properties", "key")?), Ty::Str)),
            _ => {}
        }
        let (props, supported): (&[&str], &str) = match name {
            "request" => (
                &[
                    "path",
                    "pathInfo",
                    "contextPath",
                    "method",
                    "host",
                    "remoteAddress",
                    "localAddress",
                    "id",
                    "transactionId",
                    "headers",
                    "params",
                    "pathParams",
                    "content",
                    "ssl",
                ],
                "path, pathInfo, contextPath, method, host, remoteAddress, localAddress, id, transactionId, headers, params, \
                 pathParams, content, ssl",
            ),
            "response" => (&["status", "headers", "content"], "status, headers, content"),
            "calloutResponse" => (&["status", "headers", "content"], "status, headers, content"),
            "context" => (&["attributes"], "attributes"),
            "api" => (&["id", "name", "properties"], "id, name, properties"),
            "subscription" => (&["id", "clientId", "applicationName"], "id, clientId, applicationName"),
            "this" | "root" => {
                return Err(ParseError::unsupported(
                    self.text,
                    at,
                    &format!("the variable `#{name}` is not supported"),
                ));
            }
            _ => {
                return Err(ParseError::unsupported(
                    self.text,
                    at,
                    &format!(
                        "the variable `#{name}` is not supported (supported: #request, #response, #context, #api, #subscription, \
                         #properties, #calloutResponse in http-callout, #jsonPath(...), and #group/#groupName where a policy \
                         matched a regular expression)"
                    ),
                ));
            }
        };
        let dot = self.peek().clone();
        if !matches!(dot.tok, Tok::Dot) {
            return Err(self.error(dot.start, format!("`#{name}` must be followed by a property, one of: {supported}")));
        }
        self.advance()?;
        let prop_tok = self.advance()?;
        let Tok::Ident(prop) = prop_tok.tok else {
            return Err(self.error(prop_tok.start, format!("expected a property of `#{name}`, one of: {supported}")));
        };
        if matches!(self.peek().tok, Tok::LParen) {
            return Err(ParseError::unsupported(
                self.text,
                prop_tok.start,
                &format!("method calls on `#{name}` are not supported; use its properties ({supported})"),
            ));
        }
        if !props.contains(&prop) {
            return Err(ParseError::unsupported(
                self.text,
                prop_tok.start,
                &format!("the property `#{name}.{prop}` is not supported (supported: {supported})"),
            ));
        }
        if (name, prop) == ("request", "ssl") {
            return self.parse_ssl();
        }
        let field = |f| {
            Ok((
                Node::Field(f),
                if matches!(f, Field::ResponseStatus | Field::CalloutStatus) { Ty::Int } else { Ty::Str },
            ))
        };
        let map = match (name, prop) {
            ("request", "path") => return field(Field::Path),
            ("request", "pathInfo") => return field(Field::PathInfo),
            ("request", "contextPath") => return field(Field::ContextPath),
            ("request", "method") => return field(Field::Method),
            ("request", "host") => return field(Field::Host),
            ("request", "remoteAddress") => return field(Field::RemoteAddress),
            ("request", "localAddress") => return field(Field::LocalAddress),
            ("request", "id") => return field(Field::Id),
            ("request", "transactionId") => return field(Field::TransactionId),
            ("api", "id") => return field(Field::ApiId),
            ("api", "name") => return field(Field::ApiName),
            ("api", "properties") => return Ok((Node::Property(self.parse_key(name, prop)?), Ty::Str)),
            ("subscription", "id") => return field(Field::SubscriptionId),
            ("subscription", "clientId") => return field(Field::SubscriptionClientId),
            ("subscription", "applicationName") => return field(Field::SubscriptionApplicationName),
            ("response", "status") => return field(Field::ResponseStatus),
            ("request", "content") => return field(Field::RequestContent),
            ("response", "content") => return field(Field::ResponseContent),
            ("request", "headers") => Some(MultiMap::RequestHeaders),
            ("request", "params") => Some(MultiMap::QueryParams),
            ("request", "pathParams") => Some(MultiMap::PathParams),
            ("response", "headers") => Some(MultiMap::ResponseHeaders),
            ("calloutResponse", "status") => return field(Field::CalloutStatus),
            ("calloutResponse", "content") => return field(Field::CalloutContent),
            ("calloutResponse", "headers") => Some(MultiMap::CalloutHeaders),
            _ => None, // #context.attributes
        };
        let key = self.parse_key(name, prop)?;
        let Some(map) = map else {
            return Ok((Node::Attribute(key), Ty::Str));
        };
        if matches!(self.peek().tok, Tok::LBracket) {
            let open = self.advance()?;
            let index = self.parse_index()?;
            return Ok((Node::MultiAt { map, key, index, at: self.col(open.start) }, Ty::Str));
        }
        Ok((Node::Multi { map, key }, Ty::List))
    }

    /// `#jsonPath(json, 'path')`: any expression for the JSON text, and a string literal path in the
    /// subset [`crate::jsonpath`] compiles (so a path it cannot follow is refused here, not per request).
    fn parse_json_path(&mut self, at: usize) -> Result<(Node, Ty), ParseError> {
        self.descend(at)?;
        let lparen = self.advance()?;
        let (json, _) = self.parse_or()?;
        self.expect(Tok::Comma, "`,` and the path of `#jsonPath(json, 'path')`")?;
        let path_tok = self.advance()?;
        let Tok::Str(path) = path_tok.tok else {
            return Err(ParseError::unsupported(
                self.text,
                path_tok.start,
                "the path of `#jsonPath(json, 'path')` must be a string literal",
            ));
        };
        let path = crate::jsonpath::JsonPath::parse(&path)
            .map_err(|reason| ParseError::unsupported(self.text, path_tok.start, &format!("#jsonPath: {reason}")))?;
        self.expect(Tok::RParen, "`)` closing `#jsonPath(...)`").map_err(|e| {
            if matches!(self.peek().tok, Tok::End) {
                self.error(lparen.start, "`(` of `#jsonPath(` is never closed")
            } else {
                e
            }
        })?;
        self.ascend(1);
        Ok((Node::JsonPath { json: Box::new(json), path, at: self.col(at) }, Ty::Str))
    }

    /// The property after a `.` that must follow `what`; `supported` lists them for the error.
    fn parse_property(&mut self, what: &str, supported: &str) -> Result<(&'t str, usize), ParseError> {
        let dot = self.peek().clone();
        if !matches!(dot.tok, Tok::Dot) {
            return Err(self.error(dot.start, format!("`{what}` must be followed by a property, one of: {supported}")));
        }
        self.advance()?;
        let tok = self.advance()?;
        let Tok::Ident(prop) = tok.tok else {
            return Err(self.error(tok.start, format!("expected a property of `{what}`, one of: {supported}")));
        };
        if matches!(self.peek().tok, Tok::LParen) {
            return Err(ParseError::unsupported(
                self.text,
                tok.start,
                &format!("method calls on `{what}` are not supported; use its properties ({supported})"),
            ));
        }
        Ok((prop, tok.start))
    }

    /// After `#request.ssl`: `.clientHost`, `.clientPort`, or a side (`client`, `server`) and one of
    /// its certificate subject's properties (Gravitee's `EvaluableSSLSession`/`EvaluableSSLPrincipal`).
    fn parse_ssl(&mut self) -> Result<(Node, Ty), ParseError> {
        const SESSION: &str = "clientHost, clientPort, client, server";
        let (prop, at) = self.parse_property("#request.ssl", SESSION)?;
        let side = match prop {
            "clientHost" => return Ok((Node::Ssl(Ssl::ClientHost), Ty::Str)),
            "clientPort" => return Ok((Node::Ssl(Ssl::ClientPort), Ty::Int)),
            "client" => SslSide::Client,
            "server" => SslSide::Server,
            other => {
                return Err(ParseError::unsupported(
                    self.text,
                    at,
                    &format!("the property `#request.ssl.{other}` is not supported (supported: {SESSION})"),
                ));
            }
        };
        let what = format!("#request.ssl.{}", side.name());
        let getters = crate::ssl::getter_names();
        let (prop, at) = self.parse_property(&what, &getters)?;
        match prop {
            "dn" => Ok((Node::Ssl(Ssl::Dn(side)), Ty::Str)),
            "attributes" => {
                let key = self.parse_map_key(&format!("{what}.attributes"), "ou")?;
                Ok((Node::Ssl(Ssl::All(side, key)), Ty::List))
            }
            other => match crate::ssl::getter_oid(other) {
                Some(oid) => Ok((Node::Ssl(Ssl::First(side, oid)), Ty::Str)),
                None => Err(ParseError::unsupported(
                    self.text,
                    at,
                    &format!("the property `{what}.{other}` is not supported (supported: {getters})"),
                )),
            },
        }
    }

    /// `['name']` after a map-valued property.
    fn parse_key(&mut self, name: &str, prop: &str) -> Result<Box<str>, ParseError> {
        self.parse_map_key(&format!("#{name}.{prop}"), "name")
    }

    /// `['key']` after a map-valued property or variable (`#request.headers`, `#groupName`,
    /// `#endpoints`); `example` shows a key.
    fn parse_map_key(&mut self, map: &str, example: &str) -> Result<Box<str>, ParseError> {
        let open = self.peek().clone();
        if !matches!(open.tok, Tok::LBracket) {
            return Err(ParseError::unsupported(
                self.text,
                open.start,
                &format!("`{map}` must be followed by a key, e.g. `{map}['{example}']`"),
            ));
        }
        self.advance()?;
        let key = self.advance()?;
        let Tok::Str(k) = key.tok else {
            return Err(ParseError::unsupported(
                self.text,
                key.start,
                &format!("the key of `{map}[...]` must be a string literal"),
            ));
        };
        self.expect(Tok::RBracket, "`]`")?;
        Ok(k.into_boxed_str())
    }
}
