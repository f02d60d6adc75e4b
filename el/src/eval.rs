//! Request-time evaluation. Recursion depth is bounded by the parser's nesting limit; nothing here
//! panics on any context content.

use std::borrow::Cow;
use std::cmp::Ordering;

use crate::ast::{CmpOp, Field, Method, MultiMap, Node, Ssl};
use crate::context::Context;
use crate::error::EvalError;
use crate::value::Value;

fn opt_str(v: Option<&str>) -> Value<'_> {
    v.map_or(Value::Null, |s| Value::Str(Cow::Borrowed(s)))
}

fn list<'a>(ctx: &'a dyn Context, map: MultiMap, key: &str) -> Vec<&'a str> {
    match map {
        MultiMap::RequestHeaders => ctx.request_header(key),
        MultiMap::QueryParams => ctx.query_param(key),
        MultiMap::PathParams => ctx.path_param(key).into_iter().collect(),
        MultiMap::ResponseHeaders => ctx.response_header(key),
        MultiMap::CalloutHeaders => ctx.callout_header(key),
    }
}

fn list_at<'a>(ctx: &'a dyn Context, map: MultiMap, key: &str, index: usize) -> Option<&'a str> {
    match map {
        MultiMap::RequestHeaders => ctx.request_header_at(key, index),
        MultiMap::QueryParams => ctx.query_param_at(key, index),
        MultiMap::PathParams => ctx.path_param(key).filter(|_| index == 0),
        MultiMap::ResponseHeaders => ctx.response_header_at(key, index),
        MultiMap::CalloutHeaders => ctx.callout_header(key).get(index).copied(),
    }
}

fn bool_operand<'a>(node: &'a Node, at: u32, ctx: &'a dyn Context) -> Result<bool, EvalError> {
    eval(node, ctx)?.to_bool().map_err(|e| EvalError::at(at, format_args!("expected a boolean: {e}")))
}

pub(crate) fn eval<'a>(node: &'a Node, ctx: &'a dyn Context) -> Result<Value<'a>, EvalError> {
    Ok(match node {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(*b),
        Node::Int(i) => Value::Int(*i),
        Node::Str(s) => Value::Str(Cow::Borrowed(s)),
        Node::Field(f) => match f {
            Field::Path => opt_str(ctx.request_path()),
            Field::PathInfo => opt_str(ctx.request_path_info()),
            Field::ContextPath => opt_str(ctx.request_context_path()),
            Field::SubscriptionId => opt_str(ctx.subscription_field("id")),
            Field::SubscriptionClientId => opt_str(ctx.subscription_field("clientId")),
            Field::SubscriptionApplicationName => opt_str(ctx.subscription_field("applicationName")),
            Field::Method => opt_str(ctx.request_method()),
            Field::Host => opt_str(ctx.request_host()),
            Field::RemoteAddress => opt_str(ctx.remote_address()),
            Field::LocalAddress => opt_str(ctx.local_address()),
            Field::Id => opt_str(ctx.request_id()),
            Field::TransactionId => opt_str(ctx.transaction_id()),
            Field::ApiId => opt_str(ctx.api_field("id")),
            Field::ApiName => opt_str(ctx.api_field("name")),
            Field::ResponseStatus => ctx.response_status().map_or(Value::Null, |s| Value::Int(i64::from(s))),
            Field::RequestContent => opt_str(ctx.request_content()),
            Field::ResponseContent => opt_str(ctx.response_content()),
            Field::CalloutStatus => ctx.callout_status().map_or(Value::Null, |s| Value::Int(i64::from(s))),
            Field::CalloutContent => opt_str(ctx.callout_content()),
        },
        Node::Multi { map, key } => {
            let values = list(ctx, *map, key);
            if values.is_empty() { Value::Null } else { Value::List(values) }
        }
        Node::MultiAt { map, key, index, at } => match list_at(ctx, *map, key, *index) {
            Some(v) => Value::Str(Cow::Borrowed(v)),
            None => {
                let len = list(ctx, *map, key).len();
                let what = format!("{}['{}']", map.label(), key);
                return Err(if len == 0 {
                    EvalError::at(*at, format_args!("cannot index into null: {what} is absent"))
                } else {
                    EvalError::at(*at, format_args!("index {index} is out of range: {what} has {len} value(s)"))
                });
            }
        },
        Node::Attribute(key) => opt_str(ctx.attribute(key)),
        Node::Ssl(ssl) => match ssl {
            Ssl::ClientHost => opt_str(ctx.ssl_client_host()),
            Ssl::ClientPort => ctx.ssl_client_port().map_or(Value::Null, |p| Value::Int(i64::from(p))),
            Ssl::Dn(side) => opt_str(ctx.ssl_principal(*side).map(|p| p.dn())),
            Ssl::First(side, oid) => opt_str(ctx.ssl_principal(*side).and_then(|p| p.first(oid))),
            Ssl::All(side, key) => {
                let values = ctx.ssl_principal(*side).map(|p| p.all(key)).unwrap_or_default();
                if values.is_empty() { Value::Null } else { Value::List(values) }
            }
        },
        Node::Property(key) => opt_str(ctx.api_property(key)),
        Node::Group { index, at } => match ctx.regex_group(*index) {
            Some(v) => Value::Str(Cow::Borrowed(v)),
            None => {
                return Err(EvalError::at(
                    *at,
                    format_args!("#group[{index}]: the matched expression has no capture group {}", index + 1),
                ));
            }
        },
        Node::GroupName(name) => opt_str(ctx.regex_named_group(name)),
        Node::Index { target, index, at } => match eval(target, ctx)? {
            Value::List(items) => match items.get(*index) {
                Some(v) => Value::Str(Cow::Borrowed(v)),
                None => {
                    return Err(EvalError::at(
                        *at,
                        format_args!("index {index} is out of range: the list has {} value(s)", items.len()),
                    ));
                }
            },
            other => return Err(EvalError::at(*at, format_args!("cannot index into {}", other.type_name()))),
        },
        Node::Call { target, method, arg, at } => {
            let target = eval(target, ctx)?;
            let arg = match arg {
                Some(a) => Some(eval(a, ctx)?),
                None => None,
            };
            call(target, *method, arg, *at)?
        }
        Node::JsonPath { json, path, at } => match eval(json, ctx)? {
            Value::Str(text) => {
                path.read(&text).map_err(|e| EvalError::at(*at, e))?.map_or(Value::Null, |v| Value::Str(Cow::Owned(v)))
            }
            Value::Null => return Err(EvalError::at(*at, "#jsonPath: the JSON is null")),
            other => {
                return Err(EvalError::at(*at, format_args!("#jsonPath reads a string, found {}", other.type_name())));
            }
        },
        Node::Not { operand, at } => Value::Bool(!bool_operand(operand, *at, ctx)?),
        Node::And(items) => {
            for (item, at) in items {
                if !bool_operand(item, *at, ctx)? {
                    return Ok(Value::Bool(false));
                }
            }
            Value::Bool(true)
        }
        Node::Or(items) => {
            for (item, at) in items {
                if bool_operand(item, *at, ctx)? {
                    return Ok(Value::Bool(true));
                }
            }
            Value::Bool(false)
        }
        Node::Compare { op, lhs, rhs, at } => {
            let l = eval(lhs, ctx)?;
            let r = eval(rhs, ctx)?;
            Value::Bool(match op {
                CmpOp::Eq => l.spel_eq(&r),
                CmpOp::Ne => !l.spel_eq(&r),
                CmpOp::Lt => l.spel_cmp(&r, *at)? == Ordering::Less,
                CmpOp::Le => l.spel_cmp(&r, *at)? != Ordering::Greater,
                CmpOp::Gt => l.spel_cmp(&r, *at)? == Ordering::Greater,
                CmpOp::Ge => l.spel_cmp(&r, *at)? != Ordering::Less,
            })
        }
        Node::Matches { lhs, regex, at } => match eval(lhs, ctx)? {
            Value::Str(s) => Value::Bool(regex.is_match(&s)),
            Value::Int(i) => Value::Bool(regex.is_match(&i.to_string())),
            other => {
                return Err(EvalError::at(
                    *at,
                    format_args!("`matches` needs a string on its left, found {}", other.type_name()),
                ));
            }
        },
    })
}

fn call<'a>(target: Value<'a>, method: Method, arg: Option<Value<'a>>, at: u32) -> Result<Value<'a>, EvalError> {
    let name = method.name();
    let string_arg = |arg: Option<Value<'a>>| match arg {
        Some(Value::Str(s)) => Ok(s),
        Some(other) => Err(EvalError::at(at, format_args!("argument of `.{name}()` is {}", other.type_name()))),
        None => Err(EvalError::at(at, format_args!("`.{name}()` needs an argument"))),
    };
    Ok(match target {
        Value::Null => return Err(EvalError::at(at, format_args!("cannot call `.{name}()` on null"))),
        Value::Str(s) => match method {
            Method::Contains => Value::Bool(s.contains(&*string_arg(arg)?)),
            Method::StartsWith => Value::Bool(s.starts_with(&*string_arg(arg)?)),
            Method::EndsWith => Value::Bool(s.ends_with(&*string_arg(arg)?)),
            // Java counts UTF-16 code units.
            Method::Length => Value::Int(i64::try_from(s.encode_utf16().count()).unwrap_or(i64::MAX)),
            Method::IsEmpty => Value::Bool(s.is_empty()),
            Method::ToLowerCase => {
                if s.is_ascii() && !s.bytes().any(|b| b.is_ascii_uppercase()) {
                    Value::Str(s)
                } else {
                    Value::Str(Cow::Owned(s.to_lowercase()))
                }
            }
            Method::ToUpperCase => {
                if s.is_ascii() && !s.bytes().any(|b| b.is_ascii_lowercase()) {
                    Value::Str(s)
                } else {
                    Value::Str(Cow::Owned(s.to_uppercase()))
                }
            }
            Method::Size => return Err(EvalError::at(at, "`.size()` is not a string method")),
        },
        Value::List(items) => match method {
            Method::Contains => Value::Bool(match arg {
                Some(Value::Str(s)) => items.iter().any(|v| *v == s),
                _ => false,
            }),
            Method::Size => Value::Int(i64::try_from(items.len()).unwrap_or(i64::MAX)),
            Method::IsEmpty => Value::Bool(items.is_empty()),
            _ => return Err(EvalError::at(at, format_args!("`.{name}()` is not a list method"))),
        },
        other => return Err(EvalError::at(at, format_args!("cannot call `.{name}()` on {}", other.type_name()))),
    })
}
