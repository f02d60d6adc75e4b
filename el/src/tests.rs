use super::*;

/// A request with a few headers, parameters and attributes.
#[derive(Default)]
struct Req {
    path: &'static str,
    method: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    params: Vec<(&'static str, &'static str)>,
    path_params: Vec<(&'static str, &'static str)>,
    attributes: Vec<(&'static str, &'static str)>,
    status: Option<u16>,
    response_headers: Vec<(&'static str, &'static str)>,
}

fn values<'a>(pairs: &'a [(&'static str, &'static str)], name: &str, ci: bool) -> Vec<&'a str> {
    pairs.iter().filter(|(k, _)| if ci { k.eq_ignore_ascii_case(name) } else { *k == name }).map(|(_, v)| *v).collect()
}

impl Context for Req {
    fn request_path(&self) -> Option<&str> {
        Some(self.path)
    }
    fn request_path_info(&self) -> Option<&str> {
        self.path.strip_prefix("/v1")
    }
    fn request_method(&self) -> Option<&str> {
        Some(self.method)
    }
    fn request_host(&self) -> Option<&str> {
        Some("api.example.com")
    }
    fn remote_address(&self) -> Option<&str> {
        Some("10.0.0.1")
    }
    fn request_id(&self) -> Option<&str> {
        Some("req-1")
    }
    fn request_header(&self, name: &str) -> Vec<&str> {
        values(&self.headers, name, true)
    }
    fn query_param(&self, name: &str) -> Vec<&str> {
        values(&self.params, name, false)
    }
    fn path_param(&self, name: &str) -> Option<&str> {
        values(&self.path_params, name, false).first().copied()
    }
    fn attribute(&self, name: &str) -> Option<&str> {
        values(&self.attributes, name, false).first().copied()
    }
    fn api_field(&self, name: &str) -> Option<&str> {
        match name {
            "id" => Some("api-1"),
            "name" => Some("Orders"),
            _ => None,
        }
    }
    fn response_status(&self) -> Option<u16> {
        self.status
    }
    fn response_header(&self, name: &str) -> Vec<&str> {
        values(&self.response_headers, name, true)
    }
    fn request_context_path(&self) -> Option<&str> {
        Some("/v1/")
    }
    fn subscription_field(&self, name: &str) -> Option<&str> {
        (name == "id").then_some("sub-1")
    }
    fn regex_group(&self, index: usize) -> Option<&str> {
        ["42", ""].get(index).copied()
    }
    fn regex_named_group(&self, name: &str) -> Option<&str> {
        (name == "id").then_some("42")
    }
}

fn req() -> Req {
    Req {
        path: "/v1/orders/42",
        method: "POST",
        headers: vec![
            ("X-Foo", "bar"),
            ("Content-Type", "application/json; charset=utf-8"),
            ("Accept", "a"),
            ("accept", "b"),
            ("X-Unicode", "héllo wörld ✓"),
        ],
        params: vec![("q", "rust"), ("n", "10")],
        path_params: vec![("id", "42")],
        attributes: vec![("user", "x"), ("flag", "true"), ("weird", "maybe")],
        status: Some(404),
        response_headers: vec![("Cache-Control", "no-store")],
    }
}

#[track_caller]
fn eval_bool(src: &str) -> bool {
    let e = parse(src).unwrap_or_else(|e| panic!("parse {src}: {e}"));
    e.eval_bool(&req()).unwrap_or_else(|e| panic!("eval {src}: {e}"))
}

#[track_caller]
fn eval_str(src: &str) -> String {
    let e = parse(src).unwrap_or_else(|e| panic!("parse {src}: {e}"));
    e.eval(&req()).unwrap_or_else(|e| panic!("eval {src}: {e}")).to_string()
}

#[track_caller]
fn eval_err(src: &str) -> String {
    let e = parse(src).unwrap_or_else(|e| panic!("parse {src}: {e}"));
    match e.eval(&req()) {
        Ok(v) => panic!("{src} evaluated to {v:?}, expected an error"),
        Err(e) => e.message,
    }
}

#[track_caller]
fn parse_err(src: &str) -> ParseError {
    match parse(src) {
        Ok(e) => panic!("{src} parsed as {e:?}, expected an error"),
        Err(e) => e,
    }
}

#[test]
fn brief_examples() {
    assert!(eval_bool("{#request.headers['X-Foo'][0] == 'bar'}"));
    assert!(eval_bool("{#request.params['q'][0] != null}"));
    assert!(eval_bool("{#request.path matches '^/v1/.*'}"));
    assert!(eval_bool("{#request.method == 'POST' && #request.headers['A'] == null}"));
    assert!(eval_bool("{#context.attributes['user'] == 'x'}"));
    assert!(eval_bool("{#request.pathInfo.contains('/orders')}"));
    assert!(eval_bool("{!(#request.path matches '/internal.*')}"));
    assert!(eval_bool("{#request.headers['Content-Type'][0].startsWith('application/json')}"));
    assert_eq!(eval_str("{'literal'}"), "literal");
    assert!(eval_bool("#request.method == 'POST'"), "bare form");
    assert!(eval_bool("  { #request.method == 'POST' }  "), "whitespace around and inside");
}

#[test]
fn fields() {
    assert_eq!(eval_str("#request.path"), "/v1/orders/42");
    assert_eq!(eval_str("#request.pathInfo"), "/orders/42");
    assert_eq!(eval_str("#request.method"), "POST");
    assert_eq!(eval_str("#request.host"), "api.example.com");
    assert_eq!(eval_str("#request.remoteAddress"), "10.0.0.1");
    assert_eq!(eval_str("#request.id"), "req-1");
    assert!(eval_bool("#request.localAddress == null"), "not provided by the host");
    assert!(eval_bool("#request.transactionId == null"));
    assert_eq!(eval_str("#api.id"), "api-1");
    assert_eq!(eval_str("#api.name"), "Orders");
    assert!(eval_bool("#response.status == 404"));
    assert!(eval_bool("#response.headers['cache-control'][0] == 'no-store'"));
    assert!(eval_bool("#request.pathParams['id'][0] == '42'"));
    assert_eq!(eval_str("#request.pathParams['id']"), "42");
    assert!(eval_bool("#request.pathParams['id'] != '42'"), "a list never equals a string, as in SpEL");
    assert!(eval_bool("#request.pathParams['nope'] == null"));
    let empty = parse("#request.path").unwrap();
    assert_eq!(empty.eval(&EmptyContext).unwrap(), Value::Null);
}

#[test]
fn headers_are_case_insensitive_lists() {
    assert!(eval_bool("#request.headers['x-foo'][0] == 'bar'"));
    assert!(eval_bool("#request.headers['X-FOO'][0] == 'bar'"));
    assert_eq!(eval_str("#request.headers['Accept']"), "a,b");
    assert!(eval_bool("#request.headers['Accept'].size() == 2"));
    assert!(eval_bool("#request.headers['Accept'][1] == 'b'"));
    assert!(eval_bool("#request.headers['Accept'].contains('b')"));
    assert!(!eval_bool("#request.headers['Accept'].contains('c')"));
    assert!(!eval_bool("#request.headers['Accept'].contains(null)"));
    assert!(!eval_bool("#request.headers['Accept'].isEmpty()"));
    assert!(eval_bool("#request.headers['Missing'] == null"));
    assert!(eval_bool("(#request.headers['Accept'])[0] == 'a'"), "generic index on a list");
    assert!(eval_bool("#request.params['q'][0] == 'rust'"));
    assert!(eval_bool("#request.params['Q'] == null"), "query parameters are case-sensitive");
}

#[test]
fn comparison_operators() {
    for (src, want) in [
        ("1 == 1", true),
        ("1 != 1", false),
        ("1 < 2", true),
        ("2 <= 2", true),
        ("3 > 2", true),
        ("2 >= 3", false),
        ("-1 < 0", true),
        ("'a' < 'b'", true),
        ("'b' <= 'a'", false),
        ("'abc' > 'abd'", false),
        ("'B' < 'a'", true),
        ("false < true", true),
        ("'x' == 'x'", true),
        ("'x' == \"x\"", true),
        ("1 == '1'", false),
        ("true == 'true'", false),
        ("#response.status >= 400 && #response.status < 500", true),
        ("#response.status eq 404", true),
        ("#response.status NE 404", false),
        ("#response.status lt 500 and #response.status ge 400", true),
        ("#request.params['n'][0] > '9'", false),
    ] {
        assert_eq!(eval_bool(src), want, "{src}");
    }
}

#[test]
fn logical_operators_and_precedence() {
    for (src, want) in [
        ("true && false", false),
        ("true and true", true),
        ("false || true", true),
        ("false OR false", false),
        ("!true", false),
        ("not false", true),
        ("!!true", true),
        // `!` binds tightest, then `&&`, then `||`.
        ("!false && false || true", true),
        ("!false && (false || true)", true),
        ("!(false && false) || false", true),
        ("false && true || true", true),
        ("false && (true || true)", false),
        ("true || false && false", true),
        ("(true || false) && false", false),
        ("!(1 == 1) || 2 > 1", true),
        ("#request.method == 'POST' && #request.path.startsWith('/v1') && !#request.path.endsWith('/')", true),
    ] {
        assert_eq!(eval_bool(src), want, "{src}");
    }
    // Short-circuit: the right side would fail (method on null) but is never evaluated.
    assert!(!eval_bool("false && #request.headers['Nope'][0].isEmpty()"));
    assert!(eval_bool("true || #context.attributes['nope'].isEmpty()"));
}

#[test]
fn null_semantics() {
    assert!(eval_bool("null == null"));
    assert!(!eval_bool("null != null"));
    assert!(!eval_bool("null == 'x'"));
    assert!(!eval_bool("'x' == null"));
    assert!(eval_bool("#context.attributes['nope'] == null"));
    assert!(eval_bool("null < 1"), "null sorts first, as SpEL");
    assert!(eval_bool("'a' > null"));
    assert!(eval_bool("null <= null"));
    let msg = eval_err("#context.attributes['nope'].contains('a')");
    assert!(msg.contains("cannot call `.contains()` on null"), "{msg}");
    assert!(msg.starts_with("column 29:"), "{msg}");
    let msg = eval_err("#request.headers['Nope'][0]");
    assert!(msg.contains("cannot index into null"), "{msg}");
    let msg = eval_err("#request.headers['Accept'][2]");
    assert!(msg.contains("out of range") && msg.contains("2 value(s)"), "{msg}");
    let msg = eval_err("#context.attributes['nope'] matches 'a'");
    assert!(msg.contains("`matches`"), "{msg}");
    let msg = eval_err("#request.path.contains(#context.attributes['nope'])");
    assert!(msg.contains("argument of `.contains()` is null"), "{msg}");
    let msg = eval_err("#context.attributes['nope'] && true");
    assert!(msg.contains("expected a boolean"), "{msg}");
    // A condition that errors is the caller's choice; eval_bool reports it.
    let e = parse("{#request.headers['Nope'][0] == 'x'}").unwrap();
    assert!(e.eval_bool(&req()).is_err());
}

#[test]
fn boolean_results() {
    assert!(eval_bool("#context.attributes['flag']"), "string \"true\" converts as in Gravitee");
    let e = parse("#context.attributes['weird']").unwrap();
    assert!(e.eval_bool(&req()).unwrap_err().message.contains("not a boolean"));
    let e = parse("#request.path").unwrap();
    assert!(e.eval_bool(&req()).is_err());
    let e = parse("#response.status").unwrap();
    assert!(e.eval_bool(&req()).is_err());
    let e = parse("#context.attributes['nope']").unwrap();
    assert!(e.eval_bool(&req()).is_err(), "null is not a boolean");
}

#[test]
fn string_methods() {
    assert!(eval_bool("#request.path.contains('orders')"));
    assert!(eval_bool("#request.path.startsWith('/v1')"));
    assert!(eval_bool("#request.path.endsWith('42')"));
    assert!(eval_bool("#request.path.length() == 13"));
    assert!(eval_bool("''.isEmpty()"));
    assert!(!eval_bool("#request.path.isEmpty()"));
    assert_eq!(eval_str("#request.method.toLowerCase()"), "post");
    assert_eq!(eval_str("'abc'.toUpperCase()"), "ABC");
    assert_eq!(eval_str("'post'.toLowerCase()"), "post");
    assert!(eval_bool("#request.headers['content-type'][0].toLowerCase().startsWith('application/json')"));
    assert!(eval_bool("#request.path.toUpperCase().toLowerCase() == #request.path"));
}

#[test]
fn matches_is_a_whole_string_match() {
    assert!(eval_bool("#request.path matches '/v1/.*'"));
    assert!(!eval_bool("#request.path matches '/v1'"), "prefix only: Java's matches is anchored");
    assert!(!eval_bool("#request.path matches 'orders'"));
    assert!(eval_bool("#request.path matches '.*orders.*'"));
    assert!(eval_bool("#request.path matches '/v1/orders/\\d+'"));
    assert!(eval_bool("#request.path matches 'a|/v1/orders/42'"), "alternation stays inside the anchors");
    assert!(eval_bool("#response.status matches '4\\d\\d'"), "integers convert to text, as in Spring");
    assert!(eval_bool("#request.path MATCHES '/v1/.*'"));
    let e = parse_err("#request.path matches '(unclosed'");
    assert_eq!(e.column, 23);
    assert!(e.message.contains("invalid or unsupported regular expression"), "{e}");
    let e = parse_err("#request.path matches '(?=x)'");
    assert!(e.message.contains("regular expression"), "look-around is not supported: {e}");
    let e = parse_err("#request.path matches #request.method");
    assert!(e.message.contains("string literal pattern"), "{e}");
    let e = parse_err("#request.path matches 'a{1000}{1000}'");
    assert!(e.message.contains("too large"), "{e}");
}

#[test]
fn unicode() {
    assert!(eval_bool("#request.headers['X-Unicode'][0] == 'héllo wörld ✓'"));
    assert!(eval_bool("#request.headers['X-Unicode'][0].contains('ö')"));
    assert!(eval_bool("'✓'.length() == 1"));
    assert!(eval_bool("'😀'.length() == 2"), "UTF-16 units, as Java");
    assert_eq!(eval_str("'ÉTÉ'.toLowerCase()"), "été");
    assert!(!eval_bool("'\u{FFFF}' < '😀'"), "UTF-16 order: surrogates sort before U+FFFF");
    assert!(eval_bool("'日本' matches '日.'"));
    // Columns count characters, not bytes.
    let e = parse_err("'日本語' == @x");
    assert_eq!(e.column, 10, "{e}");
}

#[test]
fn string_literals() {
    assert_eq!(eval_str("'it''s'"), "it's");
    assert_eq!(eval_str("\"say \"\"hi\"\"\""), "say \"hi\"");
    assert_eq!(eval_str("\"it's\""), "it's");
    assert_eq!(eval_str("'a\\nb'"), "a\\nb", "no backslash escapes in SpEL");
    assert_eq!(eval_str("'{#not.an.expression}'"), "{#not.an.expression}");
    assert_eq!(eval_str("{'}'}"), "}", "braces inside strings do not close the expression");
    let e = parse_err("'unterminated");
    assert_eq!((e.column, e.message.as_str()), (1, "unterminated string literal"));
    assert!(eval_bool("TRUE == true && NULL == null"));
}

#[test]
fn templates() {
    let ctx = req();
    let t = parse_template("plain text").unwrap();
    assert!(t.is_constant());
    assert_eq!(t.render(&ctx).unwrap(), "plain text");

    let t = parse_template("Bearer {#request.headers['X-Foo'][0]}").unwrap();
    assert!(!t.is_constant());
    assert_eq!(t.render(&ctx).unwrap(), "Bearer bar");

    let t =
        parse_template("{#request.method} {#request.path}?q={#request.params['q'][0]}&s={#response.status}").unwrap();
    assert_eq!(t.render(&ctx).unwrap(), "POST /v1/orders/42?q=rust&s=404");
    assert_eq!(t.expressions().count(), 4);

    let t = parse_template("{\"json\": {\"user\": \"{#context.attributes['user']}\"}}").unwrap();
    assert_eq!(t.render(&ctx).unwrap(), "{\"json\": {\"user\": \"x\"}}", "`{{` not followed by `#` is literal");

    let t = parse_template("{Total} {'literal'} } {").unwrap();
    assert!(t.is_constant());
    assert_eq!(t.render(&ctx).unwrap(), "{Total} {'literal'} } {");

    let t = parse_template("[{#context.attributes['nope']}] [{#request.headers['Accept']}] [{ (1 == 1) }]").unwrap();
    assert_eq!(t.render(&ctx).unwrap(), "[] [a,b] [true]", "null renders as nothing, lists joined");

    let t = parse_template("").unwrap();
    assert!(t.is_constant());
    assert_eq!(t.render(&ctx).unwrap(), "");

    let t = parse_template("héllo {#request.method.toLowerCase()} ✓").unwrap();
    assert_eq!(t.render(&ctx).unwrap(), "héllo post ✓");
    let mut buf = String::from(">");
    t.render_into(&ctx, &mut buf).unwrap();
    assert_eq!(buf, ">héllo post ✓");

    let t = parse_template("x={#request.headers['Nope'][0]}").unwrap();
    assert!(t.render(&ctx).is_err());
}

#[test]
fn template_errors_point_into_the_template() {
    let e = parse_template("abc {#request.foo}").unwrap_err();
    assert_eq!(e.column, 15, "{e}");
    assert!(e.message.contains("`#request.foo`"), "{e}");
    let e = parse_template("ab {#request.path").unwrap_err();
    assert_eq!((e.column, e.message.as_str()), (4, "`{` is never closed"));
    let e = parse_template("x {T(java.lang.Math).random()}").unwrap_err();
    assert_eq!(e.column, 4, "{e}");
    assert!(e.message.contains("type references"), "{e}");
    let e = parse_template("é {#}").unwrap_err();
    assert_eq!(e.column, 4, "{e}");
    let e = parse_template("{#request.path == {1}}").unwrap_err();
    assert!(e.message.contains("inline lists"), "{e}");
}

#[test]
fn parse_wrapper_errors() {
    let e = parse_err("{#request.path} == {#request.path}");
    assert_eq!(e.column, 16);
    assert!(e.message.contains("single expression"), "{e}");
    let e = parse_err("{#request.path");
    assert_eq!((e.column, e.message.as_str()), (1, "`{` is never closed"));
    assert_eq!(parse_err("").message, "empty expression");
    assert_eq!(parse_err("   ").message, "empty expression");
    assert_eq!(parse_err("{}").message, "empty expression");
    assert_eq!(parse_err("{  }").column, 2);
}

#[test]
fn unsupported_constructs_are_precise() {
    let cases: &[(&str, usize, &str)] = &[
        ("{T(java.lang.Math).random() > 0.5}", 2, "type references `T(...)`"),
        ("{#jsonPath(#request.content, '$..a')}", 30, "#jsonPath: deep scan"),
        ("{#jsonPath(#request.content, #request.path)}", 30, "must be a string literal"),
        ("{#calloutResponse.body}", 19, "the property `#calloutResponse.body`"),
        ("{#xpath(#request.content, '/a')}", 2, "the function `#xpath(...)`"),
        ("{new java.util.Date()}", 2, "constructor calls `new ...`"),
        ("{#request.path = 'x'}", 16, "assignment `=`"),
        ("{#request.path == 'a' ? true : false}", 23, "ternary operator"),
        ("{#request.path ?: 'x'}", 16, "Elvis operator"),
        ("{#request?.path}", 10, "safe navigation `?.`"),
        ("{#request.headers['A'].^[true]}", 23, "first-match selection `.^[...]`"),
        ("{#request.headers['A'].$[true]}", 23, "last-match selection `.$[...]`"),
        ("{#request.headers['A'].?[true]}", 23, "collection selection `.?[...]`"),
        ("{#request.headers['A'].![true]}", 23, "collection projection `.![...]`"),
        ("{@myBean.check()}", 2, "bean references `@name`"),
        ("{&myFactory}", 2, "factory bean references"),
        ("{#request.path + 'x'}", 16, "the operator `+`"),
        ("{#response.status - 1}", 19, "the arithmetic operator `-`"),
        ("{#response.status * 2}", 19, "the arithmetic operator `*`"),
        ("{#response.status / 2}", 19, "the arithmetic operator `/`"),
        ("{#response.status % 2}", 19, "the arithmetic operator `%`"),
        ("{#response.status ^ 2}", 19, "the arithmetic operator `^`"),
        ("{#response.status div 2}", 19, "the arithmetic operator `div`"),
        ("{#response.status mod 2}", 19, "the arithmetic operator `mod`"),
        ("{#request.path instanceof T(String)}", 16, "`instanceof`"),
        ("{#response.status between {1, 2}}", 19, "`between`"),
        ("{{1, 2}.contains(1)}", 2, "inline lists and maps"),
        ("{#node.version == 'y'}", 2, "the variable `#node`"),
        ("{#dictionaries['d']['k']}", 2, "the variable `#dictionaries`"),
        ("{#this}", 2, "the variable `#this`"),
        ("{#request.timestamp}", 11, "the property `#request.timestamp`"),
        ("{#api.version}", 7, "the property `#api.version`"),
        ("{#request.path.substring(1)}", 16, "the string method `.substring()`"),
        ("{#request.headers['A'].get(0)}", 24, "the list method `.get()`"),
        ("{#request.path.bytes}", 16, "property `.bytes`"),
        ("{#request.getPath()}", 11, "method calls on `#request`"),
        ("{#request.headers}", 18, "must be followed by a key"),
        ("{#request.headers[#request.path]}", 19, "must be a string literal"),
        ("{#request.path[0]}", 15, "indexing into a string"),
        ("{#request.headers['A'][#x]}", 24, "an index must be an integer literal"),
        ("{#response.status > 1.5}", 21, "decimal numbers"),
        ("{#response.status == 0x1F}", 22, "the numeric literal `0x1F`"),
        ("{#response.status == 10L}", 22, "the numeric literal `10L`"),
        ("{request.path == '/'}", 2, "the bare identifier `request`"),
        ("{size()}", 2, "calling `size(...)` on the root object"),
        ("{#response.status.toString()}", 19, "methods on integer values"),
        ("{-#response.status}", 2, "unary `-`"),
        ("{#request.path++}", 15, "increment operator"),
        ("{#request.path | 'x'}", 16, "the operator `|`"),
        ("{#request.path & 'x'}", 16, "the operator `&`"),
    ];
    for (src, column, what) in cases {
        let e = parse_err(src);
        assert!(e.message.starts_with("unsupported EL: "), "{src}: {e}");
        assert!(e.message.contains(what), "{src}: expected {what:?} in {e}");
        assert_eq!(e.column, *column, "{src}: {e}");
    }
    let e = parse_err("{T(java.lang.Math).random()}");
    assert_eq!(e.to_string(), "column 2: unsupported EL: type references `T(...)` are not supported");
}

#[test]
fn malformed_expressions() {
    let cases: &[(&str, usize, &str)] = &[
        ("#request.path ==", 17, "expected a value, found the end"),
        ("(#request.path == '/'", 1, "`(` is never closed"),
        ("#request.path == '/')", 21, "unbalanced `)`"),
        ("#request.path == '/' == true", 22, "cannot be chained"),
        ("1 < 2 < 3", 7, "cannot be chained"),
        ("#request.path 'x'", 15, "unexpected a string literal"),
        ("#", 1, "`#` must be followed by a variable name"),
        ("#request", 9, "must be followed by a property"),
        ("#request.headers['A'", 21, "expected `]`"),
        ("#request.path.contains('a'", 23, "never closed"),
        ("#request.path.contains()", 15, "takes 1 argument(s), found 0"),
        ("#request.path.length(1)", 15, "takes 0 argument(s), found 1"),
        ("#request.path.contains(1)", 24, "must be a string, found integer"),
        ("#request.path < 1", 15, "cannot order string against integer"),
        ("#request.headers['A'] < #request.headers['B']", 23, "cannot order list against list"),
        ("1 && true", 1, "operand of `&&` must be a boolean, found integer"),
        ("true || #request.headers['A']", 9, "operand of `||` must be a boolean, found list"),
        ("!#response.status", 2, "operand of `!` must be a boolean"),
        ("null.isEmpty()", 6, "cannot call `.isEmpty()` on null"),
        ("!#request.path matches 'x'", 1, "`matches` needs a string on its left, found boolean"),
        ("#request.headers['A'][-1]", 23, "negative indexes"),
        ("99999999999999999999 > 1", 1, "out of range"),
        ("and", 1, "found the operator `and`"),
        ("#request.path ==\u{a0}'x'", 17, "unexpected character '\\u{a0}'"),
        ("}", 1, "unexpected `}`"),
    ];
    for (src, column, what) in cases {
        let e = parse_err(src);
        assert!(e.message.contains(what), "{src}: expected {what:?} in {e}");
        assert_eq!(e.column, *column, "{src}: {e}");
    }
}

#[test]
fn limits() {
    // Nesting: 64 levels pass, deeper is rejected (no stack overflow).
    let ok = format!("{}true{}", "(".repeat(MAX_DEPTH - 1), ")".repeat(MAX_DEPTH - 1));
    assert!(parse(&ok).is_ok());
    let deep = format!("{}true{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
    assert!(parse_err(&deep).message.contains("nested deeper than 64"));
    let bangs = format!("{}true", "!".repeat(1000));
    assert!(parse_err(&bangs).message.contains("nested deeper"));
    let calls = format!("'a'{}", ".toLowerCase()".repeat(100));
    assert!(parse_err(&calls).message.contains("nested deeper"));
    let parens = "(".repeat(4000);
    assert!(parse_err(&parens).message.contains("nested deeper"));
    // Long flat chains are fine (flattened), up to the length limit.
    let chain = vec!["true"; 400].join(" && ");
    assert!(chain.len() <= MAX_EXPRESSION_LEN);
    assert!(parse(&chain).unwrap().eval_bool(&req()).unwrap());
    // Length.
    let long = format!("'{}'", "a".repeat(MAX_EXPRESSION_LEN));
    let e = parse_err(&long);
    assert_eq!(e.column, 1);
    assert!(e.message.contains("the limit is 4096"), "{e}");
    let long_template = format!("x{{#request.path == '{}'}}", "a".repeat(MAX_EXPRESSION_LEN));
    assert!(parse_template(&long_template).unwrap_err().message.contains("limit is 4096"));
    assert!(parse_template(&"a".repeat(MAX_TEMPLATE_LEN + 1)).unwrap_err().message.contains("limit is 65536"));
    assert!(parse_template(&"{ab".repeat(10_000)).is_ok(), "literal braces are cheap");
}

#[test]
fn expression_is_shareable() {
    fn assert_traits<T: Clone + Send + Sync + std::fmt::Debug + 'static>() {}
    assert_traits::<Expression>();
    assert_traits::<Template>();
    assert_traits::<ParseError>();
    assert_traits::<EvalError>();
    let src = "{#request.path matches '/v1/.*'}";
    let e = parse(src).unwrap();
    assert_eq!(e.source(), src);
    let copy = e.clone();
    let handle = std::thread::spawn(move || copy.eval_bool(&req()).unwrap());
    assert!(handle.join().unwrap());
    assert!(format!("{e:?}").contains("matches"));
}

/// xorshift64*: a tiny deterministic generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() >> 16) as usize % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const FRAGMENTS: &[&str] = &[
    "{#",
    "{",
    "}",
    "#request",
    ".path",
    ".pathInfo",
    ".headers",
    "['X-Foo']",
    "['Accept']",
    "[0]",
    "[1]",
    "[99]",
    ".params",
    "['q']",
    ".pathParams",
    "['id']",
    "#context.attributes['user']",
    "#context",
    ".attributes",
    "#response.status",
    "#response.headers['Cache-Control']",
    "#api.id",
    "#api",
    ".name",
    "#request.method",
    " == ",
    " != ",
    " < ",
    " <= ",
    " > ",
    " >= ",
    " && ",
    " || ",
    " and ",
    " or ",
    "!",
    " not ",
    " matches ",
    "'^/v1/.*'",
    "'(a+)+$'",
    "'['",
    "(",
    ")",
    "'x'",
    "\"y\"",
    "'it''s'",
    "''",
    "42",
    "-1",
    "0",
    "null",
    "true",
    "false",
    ".contains('a')",
    ".startsWith(",
    ".endsWith('/')",
    ".length()",
    ".toLowerCase()",
    ".toUpperCase()",
    ".isEmpty()",
    ".size()",
    ",",
    "T(",
    "new ",
    "@",
    "?",
    ":",
    "=",
    "+",
    "-",
    "*",
    ".^[",
    ".?[",
    "'",
    "\"",
    "#",
    "é",
    "😀",
    " ",
    "\u{0}",
    "[",
    "]",
    "99999999999999999999",
    "1.5",
    "0x1",
    "eq",
    "lt",
    "#jsonPath(",
    "#this",
];

/// A mostly well-formed expression, so evaluation paths are exercised, not just parse errors.
fn gen_expr(rng: &mut Rng, depth: usize, out: &mut String) {
    const STRINGS: &[&str] = &[
        "#request.path",
        "#request.pathInfo",
        "#request.method",
        "#request.host",
        "#request.id",
        "#request.headers['X-Foo'][0]",
        "#request.headers['Missing'][0]",
        "#request.headers['accept'][1]",
        "#request.params['q'][0]",
        "#request.pathParams['id'][0]",
        "#context.attributes['user']",
        "#context.attributes['flag']",
        "#context.attributes['nope']",
        "#api.id",
        "'x'",
        "'é😀'",
        "''",
        "null",
    ];
    const LISTS: &[&str] = &[
        "#request.headers['Accept']",
        "#request.headers['Missing']",
        "#request.params['q']",
        "#response.headers['cache-control']",
        "#request.pathParams['id']",
    ];
    const INTS: &[&str] = &["#response.status", "404", "-1", "0"];
    const STRING_METHODS: &[&str] = &[".toLowerCase()", ".toUpperCase()"];
    const BOOL_METHODS: &[&str] =
        &[".contains('a')", ".startsWith('/v1')", ".endsWith('2')", ".isEmpty()", ".contains(#request.method)"];
    if depth == 0 {
        match rng.below(4) {
            0 => out.push_str(rng.pick(&["true", "false", "#context.attributes['flag']"])),
            1 => {
                out.push_str(rng.pick(STRINGS));
                out.push_str(rng.pick(STRING_METHODS));
                out.push_str(rng.pick(BOOL_METHODS));
            }
            2 => {
                out.push_str(rng.pick(LISTS));
                out.push_str(rng.pick(&[".size() > 0", ".isEmpty()", ".contains('b')", "[0] == 'a'", " == null"]));
            }
            _ => {
                out.push_str(rng.pick(INTS));
                out.push_str(rng.pick(&[" < ", " == ", " >= "]));
                out.push_str(rng.pick(INTS));
            }
        }
        return;
    }
    match rng.below(7) {
        0 => {
            out.push('(');
            gen_expr(rng, depth - 1, out);
            out.push(')');
        }
        1 => {
            out.push('!');
            gen_expr(rng, depth - 1, out);
        }
        2 | 3 => {
            gen_expr(rng, depth - 1, out);
            out.push_str(rng.pick(&[" && ", " || ", " and ", " or "]));
            gen_expr(rng, depth - 1, out);
        }
        4 => {
            out.push_str(rng.pick(STRINGS));
            out.push_str(rng.pick(&[" == ", " != ", " < ", " >= "]));
            out.push_str(rng.pick(STRINGS));
        }
        5 => {
            out.push_str(rng.pick(STRINGS));
            out.push_str(rng.pick(&[" matches '/v1/.*'", " matches '.*\\d+'", " matches 'x|y'"]));
        }
        _ => gen_expr(rng, 0, out),
    }
}

/// Deterministic pseudo-random inputs (20,000): well-formed expressions, mutated ones, and
/// soups of EL fragments and raw characters. Parsing, evaluating and rendering must never panic.
/// Runs in every `cargo test`; `el/fuzz` explores further.
#[test]
fn random_inputs_never_panic() {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let ctx = req();
    let (mut parsed, mut evaluated) = (0, 0);
    for round in 0..20_000 {
        let mut s = String::new();
        match round % 3 {
            0 => {
                s.push('{');
                let depth = rng.below(6);
                gen_expr(&mut rng, depth, &mut s);
                s.push('}');
            }
            1 => {
                let depth = rng.below(6);
                gen_expr(&mut rng, depth, &mut s);
                // Mutate: insert a fragment or a raw character, or cut the text short.
                for _ in 0..1 + rng.below(3) {
                    let mut at = rng.below(s.len() + 1);
                    while !s.is_char_boundary(at) {
                        at -= 1;
                    }
                    match rng.below(3) {
                        0 => s.insert_str(at, rng.pick(FRAGMENTS)),
                        1 => s.insert(at, char::from_u32(rng.below(0x2_0000) as u32).unwrap_or('\u{fffd}')),
                        _ => s.truncate(at),
                    }
                }
            }
            _ => {
                for _ in 0..1 + rng.below(24) {
                    if rng.below(10) == 0 {
                        s.push(char::from_u32(rng.below(0x2_0000) as u32).unwrap_or('\u{fffd}'));
                    } else {
                        s.push_str(rng.pick(FRAGMENTS));
                    }
                }
            }
        }
        if let Ok(e) = parse(&s) {
            parsed += 1;
            if e.eval(&ctx).is_ok() {
                evaluated += 1;
            }
            let _ = e.eval_bool(&ctx);
            let _ = e.eval_bool(&EmptyContext);
        }
        let template = format!("a {{{s}}} b {s}");
        if let Ok(t) = parse_template(&template) {
            let _ = t.render(&ctx);
            let _ = t.render(&EmptyContext);
        }
    }
    assert!(parsed > 5_000 && evaluated > 3_000, "generator too weak: {parsed} parsed, {evaluated} evaluated");
}

#[test]
fn context_path_and_regex_groups() {
    assert_eq!(eval_str("#request.contextPath"), "/v1/");
    assert!(eval_bool("#request.contextPath == '/v1/'"));
    assert_eq!(eval_str("#group[0]"), "42");
    assert_eq!(eval_str("#groupName['id']"), "42");
    assert!(eval_bool("#groupName['other'] == null"));
    assert!(eval_err("#group[5]").contains("no capture group 6"));
    let t = parse_template("/items/{#group[0]}/{#groupName['id']}").unwrap();
    assert_eq!(t.render(&req()).unwrap(), "/items/42/42");
    assert!(parse("#group").is_err(), "#group must be indexed");
    assert_eq!(eval_str("#endpoints['second-group']"), "second-group:");
    assert_eq!(eval_str("#subscription.id"), "sub-1");
    assert!(eval_bool("#subscription.clientId == null"));
    assert!(parse("#subscription.metadata").is_err(), "only id, clientId and applicationName");
    assert!(parse("#groupName[0]").is_err(), "#groupName takes a string key");
}

#[test]
fn a_template_that_is_one_null_expression_is_null() {
    let req = Req { headers: vec![("X-A", "a")], ..Req::default() };
    let nullable = |text: &str| parse_template(text).unwrap().render_nullable(&req);
    assert_eq!(nullable("{#request.headers['nope']}").unwrap(), None);
    assert_eq!(nullable("{#context.attributes['nope']}").unwrap(), None);
    assert_eq!(nullable("{#request.headers['X-A'][0]}").unwrap().as_deref(), Some("a"));
    // With literal text around it, null renders as nothing.
    assert_eq!(nullable("a{#request.headers['nope']}b").unwrap().as_deref(), Some("ab"));
    assert_eq!(nullable(" {#request.headers['nope']}").unwrap().as_deref(), Some(" "));
    assert_eq!(nullable("plain").unwrap().as_deref(), Some("plain"));
    assert!(nullable("{#request.headers['nope'][0]}").is_err());
}

#[test]
fn content_fields_are_known_to_read_the_body() {
    assert!(crate::parse("{#request.content}").unwrap().reads_content());
    assert!(crate::parse("{#request.method == 'POST' && #response.content.contains('x')}").unwrap().reads_content());
    assert!(!crate::parse("{#request.path}").unwrap().reads_content());
    assert!(crate::parse_template("a {#response.content} b").unwrap().reads_content());
    assert!(!crate::parse_template("a {#request.id} b").unwrap().reads_content());
    // Absent unless the host provides it: null, rendered as nothing.
    let t = crate::parse_template("[{#request.content}]").unwrap();
    assert_eq!(t.render(&crate::EmptyContext).unwrap(), "[]");
}

#[test]
fn api_properties() {
    struct Props;
    impl crate::Context for Props {
        fn api_property(&self, key: &str) -> Option<&str> {
            (key == "env").then_some("prod")
        }
    }
    let t = crate::parse_template("{#api.properties['env']}/{#properties['env']}/{#api.properties['none']}").unwrap();
    assert_eq!(t.render(&Props).unwrap(), "prod/prod/");
}

/// A TLS session with a client certificate.
struct Tls(X500Principal);

impl Context for Tls {
    fn ssl_principal(&self, side: SslSide) -> Option<&X500Principal> {
        (side == SslSide::Client).then_some(&self.0)
    }
    fn ssl_client_host(&self) -> Option<&str> {
        Some("10.0.0.9")
    }
    fn ssl_client_port(&self) -> Option<u16> {
        Some(50123)
    }
}

#[test]
fn ssl_session_and_certificate_subjects() {
    let attribute =
        |oid: &str, value: &str| vec![DnAttribute { oid: oid.into(), value: Some(value.into()), der: vec![] }];
    let tls = Tls(X500Principal::new(&[
        attribute("2.5.4.6", "FR"),
        attribute("2.5.4.10", "Gravitee"),
        attribute("2.5.4.11", "B"),
        attribute("2.5.4.11", "A"),
        attribute("2.5.4.3", "app-a"),
    ]));
    let render = |text: &str| parse_template(text).unwrap().render(&tls).unwrap();
    assert_eq!(render("{#request.ssl.client.cn}"), "app-a");
    assert_eq!(render("{#request.ssl.client.ou}"), "A");
    assert_eq!(render("{#request.ssl.client.attributes['OU'][1]}"), "B");
    assert_eq!(
        render("{#request.ssl.client.attributes['OU'][0]}|{#request.ssl.client.attributes['2.5.4.11'][1]}"),
        "A|B"
    );
    assert_eq!(render("{#request.ssl.client.attributes['2.5.4.11']}"), "A,B");
    assert_eq!(render("{#request.ssl.client.dn}"), "CN=app-a,OU=A,OU=B,O=Gravitee,C=FR");
    assert_eq!(render("{#request.ssl.clientHost}:{#request.ssl.clientPort}"), "10.0.0.9:50123");
    assert!(parse("{#request.ssl.client.attributes['ou'].size() == 2}").unwrap().eval_bool(&tls).unwrap());
    assert!(parse("{#request.ssl.client.businessCategory == null}").unwrap().eval_bool(&tls).unwrap());
    // No certificate on that side (or plain HTTP): null, as Gravitee's empty principal.
    assert!(parse("{#request.ssl.server.cn == null}").unwrap().eval_bool(&tls).unwrap());
    assert!(parse("{#request.ssl.client.dn == null}").unwrap().eval_bool(&EmptyContext).unwrap());
    assert!(parse("{#request.ssl.clientPort == null}").unwrap().eval_bool(&EmptyContext).unwrap());
    for (text, message) in [
        ("{#request.ssl.client.CN}", "the property `#request.ssl.client.CN` is not supported"),
        ("{#request.ssl.peer}", "the property `#request.ssl.peer` is not supported"),
        ("{#request.ssl.client}", "`#request.ssl.client` must be followed by a property"),
        ("{#request.ssl.client.getAll('ou')}", "method calls on `#request.ssl.client` are not supported"),
    ] {
        let error = parse(text).unwrap_err().to_string();
        assert!(error.contains(message), "{text}: {error}");
    }
}

/// The http-callout policy's answer, as it exposes it to its condition and variables.
struct Callout;

impl Context for Callout {
    fn callout_status(&self) -> Option<u16> {
        Some(502)
    }
    fn callout_header(&self, name: &str) -> Vec<&str> {
        if name.eq_ignore_ascii_case("x-id") { vec!["7", "8"] } else { vec![] }
    }
    fn callout_content(&self) -> Option<&str> {
        Some(r#"{"user":{"name":"ann","age":40},"ok":true}"#)
    }
    fn request_content(&self) -> Option<&str> {
        Some("not json")
    }
}

#[test]
fn callout_response_and_json_path() {
    let holds = |src: &str| parse(src).unwrap().eval_bool(&Callout).unwrap();
    assert!(holds("{#calloutResponse.status >= 400 and #calloutResponse.status <= 599}"));
    assert!(holds("{#calloutResponse.headers['X-Id'][1] == '8'}"));
    assert!(holds("{#jsonPath(#calloutResponse.content, '$.ok')}"));
    assert!(holds("{#jsonPath(#calloutResponse.content, '$.user.name') == 'ann'}"));
    let render = |src: &str| parse_template(src).unwrap().render(&Callout).unwrap();
    assert_eq!(render("{#jsonPath(#calloutResponse.content, '$.user.age')}"), "40");
    // An object renders as JSON; its key order follows serde_json's features in the build.
    let user: serde_json::Value =
        serde_json::from_str(&render("{#jsonPath(#calloutResponse.content, \"$['user']\")}")).unwrap();
    assert_eq!(user, serde_json::json!({"name": "ann", "age": 40}));
    assert_eq!(render("{#calloutResponse.content.length()}"), "42");
    // Outside the policy there is no callout answer: null, as an absent value.
    assert!(parse("{#calloutResponse.status == null}").unwrap().eval_bool(&Req::default()).unwrap());
    let missing = parse_template("{#jsonPath(#calloutResponse.content, '$.user.mail')}").unwrap();
    assert!(missing.render(&Callout).unwrap_err().to_string().contains("No results for path: $['user']['mail']"));
    let not_json = parse_template("{#jsonPath(#request.content, '$.a')}").unwrap();
    assert!(not_json.render(&Callout).unwrap_err().to_string().contains("not JSON"));
    assert!(parse_template("{#jsonPath(#request.content, '$.a')}").unwrap().reads_content());
}
