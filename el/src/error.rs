//! The two error types: one for config time (parse), one for request time (eval).

/// An expression or template that cannot be accepted. `column` is 1-based and counts characters
/// (not bytes) from the start of the text given to [`crate::parse`] or [`crate::parse_template`].
///
/// Messages for valid SpEL that hgw does not implement start with `unsupported EL:` so a caller
/// can tell "outside the subset" from "malformed".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct ParseError {
    pub column: usize,
    pub message: String,
}

impl ParseError {
    /// Builds an error at byte offset `offset` of `text` (which must be a char boundary).
    pub(crate) fn at(text: &str, offset: usize, message: impl Into<String>) -> Self {
        let column = text.get(..offset).map_or(offset, |prefix| prefix.chars().count()) + 1;
        ParseError { column, message: message.into() }
    }

    pub(crate) fn unsupported(text: &str, offset: usize, what: &str) -> Self {
        Self::at(text, offset, format!("unsupported EL: {what}"))
    }
}

/// A request-time failure: a method called on null, an index past the end of a list, a value that
/// is not a boolean where one is needed. Gravitee's condition filter treats such an error as
/// "condition not met"; hgw leaves that choice to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EvalError {
    pub message: String,
}

impl EvalError {
    pub(crate) fn at(column: u32, message: impl std::fmt::Display) -> Self {
        EvalError { message: format!("column {column}: {message}") }
    }
}
