//! Tokens of the supported subset. Constructs that are valid SpEL but outside the subset and that
//! can be recognised from characters alone (`@bean`, `?.`, `+`, `{...}`, ...) are rejected here, at
//! the position where they start.

use crate::error::ParseError;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok<'t> {
    /// `#name`; the slice is the name without `#`.
    Var(&'t str),
    Ident(&'t str),
    Str(String),
    Int(i64),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Dot,
    Comma,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    AndAnd,
    OrOr,
    Bang,
    Minus,
    End,
}

impl Tok<'_> {
    /// How the token looks in source, for "unexpected ..." messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Var(name) => format!("`#{name}`"),
            Tok::Ident(name) => format!("`{name}`"),
            Tok::Str(_) => "a string literal".to_owned(),
            Tok::Int(i) => format!("`{i}`"),
            Tok::LParen => "`(`".to_owned(),
            Tok::RParen => "`)`".to_owned(),
            Tok::LBracket => "`[`".to_owned(),
            Tok::RBracket => "`]`".to_owned(),
            Tok::Dot => "`.`".to_owned(),
            Tok::Comma => "`,`".to_owned(),
            Tok::Eq => "`==`".to_owned(),
            Tok::Ne => "`!=`".to_owned(),
            Tok::Lt => "`<`".to_owned(),
            Tok::Le => "`<=`".to_owned(),
            Tok::Gt => "`>`".to_owned(),
            Tok::Ge => "`>=`".to_owned(),
            Tok::AndAnd => "`&&`".to_owned(),
            Tok::OrOr => "`||`".to_owned(),
            Tok::Bang => "`!`".to_owned(),
            Tok::Minus => "`-`".to_owned(),
            Tok::End => "the end of the expression".to_owned(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Token<'t> {
    pub(crate) tok: Tok<'t>,
    /// Byte offset into the whole text given to `parse`/`parse_template`.
    pub(crate) start: usize,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b'$'
}

fn is_ident_continue(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}

/// Produces tokens of `text[start..end]` on demand, so an error is reported when the parser
/// reaches it and the leftmost problem wins. Offsets refer to the whole `text`.
pub(crate) struct Lexer<'t> {
    text: &'t str,
    pos: usize,
    end: usize,
}

impl<'t> Lexer<'t> {
    pub(crate) fn new(text: &'t str, start: usize, end: usize) -> Self {
        Lexer { text, pos: start, end }
    }

    /// The next token; `End` at the end, repeatedly.
    pub(crate) fn next_token(&mut self) -> Result<Token<'t>, ParseError> {
        let text = self.text;
        let bytes = text.as_bytes();
        let end = self.end;
        while self.pos < end && matches!(bytes[self.pos], b' ' | b'\t' | b'\r' | b'\n') {
            self.pos += 1;
        }
        let at = self.pos;
        if at >= end {
            return Ok(Token { tok: Tok::End, start: end });
        }
        let b = bytes[at];
        let next = if at + 1 < end { bytes[at + 1] } else { 0 };
        let next2 = if at + 2 < end { bytes[at + 2] } else { 0 };
        let unsupported = |what: &str| Err(ParseError::unsupported(text, at, what));
        let (tok, len) = match b {
            b'\'' | b'"' => {
                let (s, len) = lex_string(text, at, end)?;
                (Tok::Str(s), len)
            }
            b'0'..=b'9' => lex_number(text, at, end)?,
            b'#' => {
                if !is_ident_start(next) {
                    return Err(ParseError::at(text, at, "`#` must be followed by a variable name, e.g. `#request`"));
                }
                let mut j = at + 1;
                while j < end && is_ident_continue(bytes[j]) {
                    j += 1;
                }
                (Tok::Var(&text[at + 1..j]), j - at)
            }
            _ if is_ident_start(b) => {
                let mut j = at;
                while j < end && is_ident_continue(bytes[j]) {
                    j += 1;
                }
                (Tok::Ident(&text[at..j]), j - at)
            }
            b'(' => (Tok::LParen, 1),
            b')' => (Tok::RParen, 1),
            b'[' => (Tok::LBracket, 1),
            b']' => (Tok::RBracket, 1),
            b',' => (Tok::Comma, 1),
            b'.' => match (next, next2) {
                (b'?', b'[') => return unsupported("collection selection `.?[...]` is not supported"),
                (b'!', b'[') => return unsupported("collection projection `.![...]` is not supported"),
                (b'^', b'[') => return unsupported("first-match selection `.^[...]` is not supported"),
                (b'$', b'[') => return unsupported("last-match selection `.$[...]` is not supported"),
                _ => (Tok::Dot, 1),
            },
            b'?' => match next {
                b'.' => return unsupported("safe navigation `?.` is not supported"),
                b':' => return unsupported("the Elvis operator `?:` is not supported"),
                _ => return unsupported("the ternary operator `? :` is not supported"),
            },
            b':' => return unsupported("the ternary operator `? :` is not supported"),
            b'=' => match next {
                b'=' => (Tok::Eq, 2),
                _ => return unsupported("assignment `=` is not supported (did you mean `==`?)"),
            },
            b'!' => match next {
                b'=' => (Tok::Ne, 2),
                _ => (Tok::Bang, 1),
            },
            b'<' => match next {
                b'=' => (Tok::Le, 2),
                _ => (Tok::Lt, 1),
            },
            b'>' => match next {
                b'=' => (Tok::Ge, 2),
                _ => (Tok::Gt, 1),
            },
            b'&' => match next {
                b'&' => (Tok::AndAnd, 2),
                _ if is_ident_start(next) => return unsupported("factory bean references `&name` are not supported"),
                _ => return unsupported("the operator `&` is not supported (did you mean `&&`?)"),
            },
            b'|' => match next {
                b'|' => (Tok::OrOr, 2),
                _ => return unsupported("the operator `|` is not supported (did you mean `||`?)"),
            },
            b'@' => return unsupported("bean references `@name` are not supported"),
            b'+' => match next {
                b'+' => return unsupported("the increment operator `++` is not supported"),
                _ => return unsupported("the operator `+` (arithmetic or string concatenation) is not supported"),
            },
            b'-' => match next {
                b'-' => return unsupported("the decrement operator `--` is not supported"),
                _ => (Tok::Minus, 1),
            },
            b'*' | b'/' | b'%' | b'^' => {
                return unsupported(&format!("the arithmetic operator `{}` is not supported", b as char));
            }
            b'{' => return unsupported("inline lists and maps `{...}` are not supported"),
            b'}' => return Err(ParseError::at(text, at, "unexpected `}`")),
            _ => {
                let c = text.get(at..).and_then(|rest| rest.chars().next()).unwrap_or('\u{fffd}');
                return Err(ParseError::at(text, at, format!("unexpected character {c:?}")));
            }
        };
        self.pos = at + len;
        Ok(Token { tok, start: at })
    }
}

/// A SpEL string literal: `'...'` or `"..."`; the delimiter is escaped by doubling it (`'it''s'`).
/// There are no backslash escapes. Returns the value and the literal's length in bytes.
fn lex_string(text: &str, at: usize, end: usize) -> Result<(String, usize), ParseError> {
    let quote = text.as_bytes()[at];
    let body = &text[at + 1..end];
    let mut value = String::new();
    let mut rest = body;
    loop {
        match rest.find(quote as char) {
            None => return Err(ParseError::at(text, at, "unterminated string literal")),
            Some(q) => {
                value.push_str(&rest[..q]);
                let after = &rest[q + 1..];
                if after.as_bytes().first() == Some(&quote) {
                    value.push(quote as char);
                    rest = &after[1..];
                } else {
                    let consumed = body.len() - after.len();
                    return Ok((value, consumed + 1));
                }
            }
        }
    }
}

fn lex_number<'t>(text: &'t str, at: usize, end: usize) -> Result<(Tok<'t>, usize), ParseError> {
    let bytes = text.as_bytes();
    let mut j = at;
    while j < end && bytes[j].is_ascii_digit() {
        j += 1;
    }
    let digits = &text[at..j];
    let followed_by_digit = j + 1 < end && bytes[j + 1].is_ascii_digit();
    if j < end && bytes[j] == b'.' && followed_by_digit {
        return Err(ParseError::unsupported(text, at, "decimal numbers are not supported, only integers"));
    }
    if j < end && is_ident_continue(bytes[j]) {
        let mut k = j;
        while k < end && is_ident_continue(bytes[k]) {
            k += 1;
        }
        return Err(ParseError::unsupported(
            text,
            at,
            &format!("the numeric literal `{}` is not supported, only decimal integers", &text[at..k]),
        ));
    }
    match digits.parse::<i64>() {
        Ok(v) => Ok((Tok::Int(v), j - at)),
        Err(_) => Err(ParseError::at(text, at, format!("integer literal `{digits}` is out of range"))),
    }
}
