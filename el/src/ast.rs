//! The compiled form of an expression. Columns (`at`) are 1-based character columns in the text
//! that was parsed, kept for request-time error messages.

use regex::Regex;

#[derive(Debug, Clone)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Str(Box<str>),
    /// A single-valued property such as `#request.path` or `#response.status`.
    Field(Field),
    /// `#request.headers['k']` and friends: the list of values, or null when absent.
    Multi {
        map: MultiMap,
        key: Box<str>,
    },
    /// `#request.headers['k'][i]`: looked up without building the list.
    MultiAt {
        map: MultiMap,
        key: Box<str>,
        index: usize,
        at: u32,
    },
    /// `#context.attributes['k']`.
    Attribute(Box<str>),
    /// `#request.ssl.…`: the TLS session (see [`crate::ssl`]).
    Ssl(Ssl),
    /// `#api.properties['k']` (v2: `#properties['k']`).
    Property(Box<str>),
    /// `#group[i]`: the i-th capture of the regular expression a policy just matched
    /// (http-redirect, dynamic-routing, url-rewriting).
    Group {
        index: usize,
        at: u32,
    },
    /// `#groupName['name']`: a named capture of that regular expression.
    GroupName(Box<str>),
    Index {
        target: Box<Node>,
        index: usize,
        at: u32,
    },
    Call {
        target: Box<Node>,
        method: Method,
        arg: Option<Box<Node>>,
        at: u32,
    },
    Not {
        operand: Box<Node>,
        at: u32,
    },
    /// `a && b && c`, flattened so long chains do not deepen the tree.
    And(Vec<(Node, u32)>),
    Or(Vec<(Node, u32)>),
    Compare {
        op: CmpOp,
        lhs: Box<Node>,
        rhs: Box<Node>,
        at: u32,
    },
    /// `lhs matches 'regex'`; the regex is anchored at both ends (Java's `String.matches`).
    Matches {
        lhs: Box<Node>,
        regex: Regex,
        at: u32,
    },
    /// `#jsonPath(json, 'path')`: the value at `path` in `json` read as JSON (see
    /// [`crate::jsonpath`]).
    JsonPath {
        json: Box<Node>,
        path: crate::jsonpath::JsonPath,
        at: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Path,
    PathInfo,
    ContextPath,
    SubscriptionId,
    SubscriptionClientId,
    SubscriptionApplicationName,
    Method,
    Host,
    RemoteAddress,
    LocalAddress,
    Id,
    TransactionId,
    ApiId,
    ApiName,
    ResponseStatus,
    /// `#request.content`: the request body as text (only where the gateway buffered it).
    RequestContent,
    /// `#response.content`: the response body as text (idem).
    ResponseContent,
    /// `#calloutResponse.status` (http-callout, once its call answered).
    CalloutStatus,
    /// `#calloutResponse.content`: the callout's answer as text.
    CalloutContent,
}

impl Node {
    /// Whether evaluating this node may read `#request.content` or `#response.content` (the gateway
    /// then buffers that body before the expression runs).
    pub(crate) fn reads_content(&self) -> bool {
        match self {
            Node::Field(Field::RequestContent | Field::ResponseContent) => true,
            Node::Index { target, .. } => target.reads_content(),
            Node::Call { target, arg, .. } => target.reads_content() || arg.as_ref().is_some_and(|a| a.reads_content()),
            Node::Not { operand, .. } => operand.reads_content(),
            Node::And(items) | Node::Or(items) => items.iter().any(|(n, _)| n.reads_content()),
            Node::Compare { lhs, rhs, .. } => lhs.reads_content() || rhs.reads_content(),
            Node::Matches { lhs, .. } => lhs.reads_content(),
            Node::JsonPath { json, .. } => json.reads_content(),
            _ => false,
        }
    }
}

/// What `#request.ssl` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ssl {
    ClientHost,
    ClientPort,
    /// `.client.dn` / `.server.dn`.
    Dn(crate::SslSide),
    /// `.client.cn` and the other getters: the first value of the type with this OID.
    First(crate::SslSide, &'static str),
    /// `.client.attributes['key']`: every value, by symbol or OID.
    All(crate::SslSide, Box<str>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MultiMap {
    RequestHeaders,
    QueryParams,
    PathParams,
    ResponseHeaders,
    /// `#calloutResponse.headers`.
    CalloutHeaders,
}

impl MultiMap {
    pub(crate) fn label(self) -> &'static str {
        match self {
            MultiMap::RequestHeaders => "#request.headers",
            MultiMap::QueryParams => "#request.params",
            MultiMap::PathParams => "#request.pathParams",
            MultiMap::ResponseHeaders => "#response.headers",
            MultiMap::CalloutHeaders => "#calloutResponse.headers",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Contains,
    StartsWith,
    EndsWith,
    Length,
    ToLowerCase,
    ToUpperCase,
    IsEmpty,
    Size,
}

impl Method {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Method::Contains => "contains",
            Method::StartsWith => "startsWith",
            Method::EndsWith => "endsWith",
            Method::Length => "length",
            Method::ToLowerCase => "toLowerCase",
            Method::ToUpperCase => "toUpperCase",
            Method::IsEmpty => "isEmpty",
            Method::Size => "size",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// What the parser knows about a node's value. Anything read from the context may also be null at
/// request time; `Null` here means "the literal `null`".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    Null,
    Bool,
    Int,
    Str,
    List,
}

impl Ty {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Ty::Null => "null",
            Ty::Bool => "boolean",
            Ty::Int => "integer",
            Ty::Str => "string",
            Ty::List => "list",
        }
    }
}
