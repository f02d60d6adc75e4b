//! Regular expressions written for `java.util.regex`, as Gravitee policies take them.
//!
//! Most Java patterns are also valid for the `regex` crate, which matches in linear time: those use
//! it. A pattern it refuses because it needs backtracking (atomic groups `(?>...)`, look-around,
//! backreferences, possessive quantifiers) is compiled with `fancy-regex` instead, whose matching is
//! bounded by [`BACKTRACK_LIMIT`] steps: a hostile pattern or input ends the match as "no match"
//! instead of holding a core. Both are bounded in compiled size by [`crate::MAX_REGEX_SIZE`].

use std::ops::Range;

/// Backtracking steps one match may take before it is given up (fancy-regex counts them).
pub const BACKTRACK_LIMIT: usize = 100_000;

/// A compiled Java-style regular expression.
#[derive(Debug, Clone)]
pub enum JavaRegex {
    /// Linear-time matching (`regex`).
    Linear(regex::Regex),
    /// Backtracking matching for the constructs `regex` lacks, bounded by [`BACKTRACK_LIMIT`].
    Backtracking(fancy_regex::Regex),
}

/// One match: where it is, its numbered groups (1..; `None` when a group took no part) and its named
/// groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JavaMatch {
    pub range: Range<usize>,
    pub groups: Vec<Option<String>>,
    pub named: Vec<(String, Option<String>)>,
}

impl JavaRegex {
    /// Compiles `pattern`; the error says why neither engine takes it.
    pub fn new(pattern: &str) -> Result<JavaRegex, String> {
        match regex::RegexBuilder::new(pattern)
            .size_limit(crate::MAX_REGEX_SIZE)
            .dfa_size_limit(crate::MAX_REGEX_SIZE)
            .build()
        {
            Ok(linear) => Ok(JavaRegex::Linear(linear)),
            Err(linear_error) => fancy_regex::RegexBuilder::new(pattern)
                .backtrack_limit(BACKTRACK_LIMIT)
                .delegate_size_limit(crate::MAX_REGEX_SIZE)
                .delegate_dfa_size_limit(crate::MAX_REGEX_SIZE)
                .build()
                .map(JavaRegex::Backtracking)
                .map_err(|_| linear_error.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            JavaRegex::Linear(r) => r.as_str(),
            JavaRegex::Backtracking(r) => r.as_str(),
        }
    }

    /// Whether the pattern occurs in `text` (a match given up on the backtracking limit is no match).
    pub fn is_match(&self, text: &str) -> bool {
        match self {
            JavaRegex::Linear(r) => r.is_match(text),
            JavaRegex::Backtracking(r) => r.is_match(text).unwrap_or(false),
        }
    }

    /// Every non-overlapping match, left to right, as Java's `Matcher.find()` loop finds them. Matching
    /// stops at the first match given up on the backtracking limit.
    pub fn matches(&self, text: &str) -> Vec<JavaMatch> {
        // The two engines' capture types differ but read alike.
        macro_rules! java_match {
            ($regex:expr, $captures:expr) => {{
                let c = $captures;
                let owned = |m: Option<&str>| m.map(str::to_owned);
                JavaMatch {
                    range: c.get(0).map_or(0..0, |m| m.range()),
                    groups: (1..c.len()).map(|i| owned(c.get(i).map(|m| m.as_str()))).collect(),
                    named: $regex
                        .capture_names()
                        .flatten()
                        .map(|name| (name.to_owned(), owned(c.name(name).map(|m| m.as_str()))))
                        .collect(),
                }
            }};
        }
        match self {
            JavaRegex::Linear(r) => r.captures_iter(text).map(|c| java_match!(r, c)).collect(),
            JavaRegex::Backtracking(r) => {
                r.captures_iter(text).map_while(Result::ok).map(|c| java_match!(r, c)).collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_when_possible_backtracking_when_java_needs_it() {
        assert!(matches!(JavaRegex::new("a(b+)").unwrap(), JavaRegex::Linear(_)));
        // Gravitee's own url-rewriting test pattern: an atomic group.
        let atomic = JavaRegex::new(r"https?://[^\/]*\/((?>\w|\d|\-|\/|\?|\=|\&)*)").unwrap();
        assert!(matches!(atomic, JavaRegex::Backtracking(_)));
        let found = atomic.matches("see http://localhost:8080/a/b?c=d here");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].groups, vec![Some("a/b?c=d".to_owned())]);
        // Atomic groups do not give back: `(?>a*)a` never matches.
        assert!(!JavaRegex::new("(?>a*)a").unwrap().is_match("aaa"));
        assert!(JavaRegex::new("(a)\\1").unwrap().is_match("aa"));
        assert!(JavaRegex::new("(unclosed").is_err());
    }

    #[test]
    fn named_groups_and_groups_that_took_no_part() {
        let r = JavaRegex::new("(?<scheme>https?)://(x)?(?<host>[a-z]+)").unwrap();
        let found = r.matches("http://abc and https://xdef");
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].groups, vec![Some("http".into()), None, Some("abc".into())]);
        assert!(found[0].named.contains(&("host".into(), Some("abc".into()))));
        assert_eq!(found[1].range, 15..27);
    }

    #[test]
    fn catastrophic_backtracking_is_given_up() {
        // A backreference forces the backtracking engine; nested quantifiers make it exponential.
        let r = JavaRegex::new(r"(a)\1?((a+)+)+b").unwrap();
        let text = "a".repeat(64);
        assert!(!r.is_match(&text), "given up, reported as no match");
        assert!(r.matches(&text).is_empty());
    }
}
