//! The conversions against Gravitee's own test resources and org.json's documented behaviour.

use super::*;

fn x2j(xml: &str) -> String {
    xml_to_json(xml, DEFAULT_MAX_DEPTH).unwrap()
}

fn j2x(json: &str) -> String {
    json_to_xml(json, "root", DEFAULT_MAX_DEPTH).unwrap()
}

#[test]
fn xml_to_json_as_gravitee_tests_expect() {
    // gravitee-policy-xml-json's input.xml / expected.json.
    let input = "<root>\n    <_id>57762dc6ab7d620000000001</_id>\n    <name>name</name><__v>0</__v>\n</root>";
    assert_eq!(x2j(input), r#"{"root":{"_id":"57762dc6ab7d620000000001","name":"name","__v":0}}"#);
    // invalid-input.xml fails; so does invalid-nested-object.xml (beyond 100 levels).
    assert!(xml_to_json("<<<<invalid input>>>>", DEFAULT_MAX_DEPTH).is_err());
    let deep = "<a>".repeat(2000);
    assert_eq!(xml_to_json(&deep, DEFAULT_MAX_DEPTH).unwrap_err(), ConvertError::TooDeep("Too many nested objects"));
    let ok = format!("{}{}", "<a>".repeat(100), "</a>".repeat(100));
    assert!(xml_to_json(&ok, DEFAULT_MAX_DEPTH).is_ok());
}

#[test]
fn xml_attributes_arrays_text_and_values() {
    assert_eq!(
        x2j(r#"<a id="7" flag='TRUE' n="-0" e=""><b>x</b><b>2.50</b><c/><d></d><e>null</e>text</a>"#),
        r#"{"a":{"id":7,"flag":true,"n":-0,"e":["",null],"b":["x",2.5],"c":"","d":"","content":"text"}}"#
    );
    // Numbers: canonical integers (Integer or Long), finite decimals; anything else is text.
    assert_eq!(
        x2j("<r><a>007</a><b>12345678901</b><c>1e400</c><d>1E3</d><e>99999999999999999999</e><f>-</f></r>"),
        r#"{"r":{"a":"007","b":12345678901,"c":"1e400","d":1000,"e":"99999999999999999999","f":"-"}}"#
    );
    assert_eq!(
        x2j("<r><a>1.0E7</a><b>0.0001</b><c>1.5f</c><d>0x1.8p1</d><e>1.</e></r>"),
        r#"{"r":{"a":1.0E7,"b":1.0E-4,"c":1.5,"d":3,"e":1}}"#
    );
    // Text split by a comment is an array, which org.json wraps once more.
    assert_eq!(x2j("<a>1<!-- x -->2</a>"), r#"{"a":[[1,2]]}"#);
    // Mixed text is trimmed and accumulated; CDATA is kept as is; entities: only the five.
    assert_eq!(x2j("<a> x <b/> y </a>"), r#"{"a":{"content":["x","y"],"b":""}}"#);
    assert_eq!(x2j("<a><![CDATA[<1>]]></a>"), r#"{"a":"<1>"}"#);
    assert_eq!(x2j("<a>&lt;&AMP;&#65;&foo;</a>"), r#"{"a":"<&&#65;&foo;"}"#);
    // Text before the first element, processing instructions and comments are skipped.
    assert_eq!(x2j("junk <?xml version=\"1.0\"?><!-- c --><a>1</a><b>2</b>"), r#"{"a":1,"b":2}"#);
    assert_eq!(x2j(""), "{}");
    assert_eq!(x2j(r#"{"not":"xml"}"#), "{}");
    // JSON text escapes: `</`, controls, U+2028.
    assert_eq!(x2j("<a>&lt;/b>\u{1}\u{2028}\"</a>"), "{\"a\":\"<\\/b>\\u0001\\u2028\\\"\"}");
}

#[test]
fn hostile_xml_is_not_expanded() {
    let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY xxe SYSTEM "file:///etc/passwd">
]>
<lolz>&lol2;&xxe;</lolz>"#;
    assert_eq!(x2j(laughs), r#"{"lolz":"&lol2;&xxe;"}"#);
}

#[test]
fn xml_errors_in_org_json_words() {
    let message = |xml: &str| xml_to_json(xml, DEFAULT_MAX_DEPTH).unwrap_err().to_string();
    assert_eq!(message("<a>"), "Unclosed tag a at 4 [character 5 line 1]");
    assert_eq!(message("<a></b>"), "Mismatched a and b at 6 [character 7 line 1]");
    assert_eq!(message("</a>"), "Mismatched close tag a at 3 [character 4 line 1]");
    assert_eq!(message("<a>&x</a>"), "Missing ';' in XML entity: &x at 6 [character 7 line 1]");
    assert_eq!(message("<<a>"), "Misplaced '<' at 2 [character 3 line 1]");
    assert_eq!(message("<a\n><b></a>"), "Mismatched b and a at 10 [character 7 line 2]");
    assert_eq!(message("<a\r\n>\r\n<b></a>"), "Mismatched b and a at 13 [character 6 line 3]");
    assert_eq!(message("<a b=>"), "Missing value at 6 [character 7 line 1]");
    assert_eq!(message("<![CDATA[x"), "Unclosed CDATA at 11 [character 12 line 1]");
}

#[test]
fn json_to_xml_as_gravitee_tests_expect() {
    // gravitee-policy-json-xml's input.json / expected.xml.
    let input = "{\n    \"_id\": \"57762dc6ab7d620000000001\",\n    \"name\": \"name\",\n    \"__v\": 0\n}";
    assert_eq!(j2x(input), "<root><_id>57762dc6ab7d620000000001</_id><name>name</name><__v>0</__v></root>");
    assert!(json_to_xml("invalid input", "root", DEFAULT_MAX_DEPTH).is_err());
    let arrays = format!("{{\"a\":{}", "[".repeat(1000));
    assert_eq!(
        json_to_xml(&arrays, "root", DEFAULT_MAX_DEPTH).unwrap_err(),
        ConvertError::TooDeep("Too many nested objects or arrays")
    );
    let objects = format!("{{{}", "\"a\":{".repeat(1000));
    assert!(matches!(json_to_xml(&objects, "root", DEFAULT_MAX_DEPTH), Err(ConvertError::TooDeep(_))));
}

#[test]
fn json_values_arrays_and_escapes() {
    assert_eq!(
        j2x(r#"{"a":[1,"x",{"b":true}],"n":null,"e":"","o":{},"d":2.0,"f":1e3,"l":[[1,2]],"s":"<&>'\""}"#),
        "<root><a>1</a><a>x</a><a><b>true</b></a><n>null</n><e/><o></o><d>2.0</d><f>1000.0</f>\
         <l><array>1</array><array>2</array></l><s>&lt;&amp;&gt;&apos;&quot;</s></root>"
    );
    // `content` is bare text; arrays of it are joined by newlines.
    assert_eq!(j2x(r#"{"a":{"content":["x",1],"k":"v"}}"#), "<root><a>x\n1<k>v</k></a></root>");
    // Lenient JSON: unquoted and single-quoted text, `;`, trailing commas, text after the object.
    assert_eq!(j2x("{a: hello world; 'b':'c',} trailing"), "<root><a>hello world</a><b>c</b></root>");
    assert_eq!(j2x("{}"), "<root></root>");
    // Keys read as values; empty array slots are null; Java's number text; `?` for a lone surrogate.
    assert_eq!(j2x("{{\"x\":1}:2, 1.50:3, TRUE:4}"), "<root><{\"x\":1}>2</{\"x\":1}><1.5>3</1.5><true>4</true></root>");
    assert_eq!(j2x(r#"{"a":[,1,],"b":[]}"#), "<root><a>null</a><a>1</a></root>");
    assert_eq!(
        j2x(r#"{"a":"\u00e9\uD800","b":-0,"c":1e400,"d":12345678901234567890,"e":0.1,"f":100000000.5}"#),
        "<root><a>é?</a><b>-0.0</b><c>1e400</c><d>12345678901234567890</d><e>0.1</e><f>1.000000005E8</f></root>"
    );
    assert_eq!(json_to_xml(r#"{"a":1}"#, "doc", 100).unwrap(), "<doc><a>1</a></doc>");
}

#[test]
fn json_errors_in_org_json_words() {
    let message = |json: &str| json_to_xml(json, "root", DEFAULT_MAX_DEPTH).unwrap_err().to_string();
    assert_eq!(message(""), "A JSONObject text must begin with '{' at 1 [character 2 line 1]");
    assert_eq!(message("[1]"), "A JSONObject text must begin with '{' at 1 [character 2 line 1]");
    assert_eq!(message(r#"{"a":1,"a":2}"#), "Duplicate key \"a\"");
    assert_eq!(message(r#"{"a" 1}"#), "Expected a ':' after a key at 6 [character 7 line 1]");
    assert_eq!(message(r#"{"a":1"#), "Expected a ',' or '}' at 7 [character 8 line 1]");
    assert_eq!(message(r#"{"a":"\x"}"#), "Illegal escape. at 8 [character 9 line 1]");
    assert_eq!(message(r#"{"a":"\uzzzz"}"#), "For input string: \"zzzz\" under radix 16");
}

#[test]
fn java_number_text() {
    for (d, text) in [
        (1.0, "1.0"),
        (1.5, "1.5"),
        (1000.0, "1000.0"),
        (1.0e7, "1.0E7"),
        (1.0e-3, "0.001"),
        (1.0e-4, "1.0E-4"),
        (123456.789, "123456.789"),
        (-0.0, "-0.0"),
        (1.2345e-10, "1.2345E-10"),
        (9999999.0, "9999999.0"),
    ] {
        assert_eq!(java_double(d), text, "{d}");
    }
    assert_eq!(number_to_string(2.0), "2");
    assert_eq!(number_to_string(-0.0), "-0");
    assert_eq!(number_to_string(1.0e7), "1.0E7");
    assert_eq!(string_to_value("1.5f".into()), JValue::Double(1.5));
    assert_eq!(string_to_value("1.".into()), JValue::Double(1.0));
    assert_eq!(string_to_value("-".into()), JValue::Str("-".into()));
}

#[test]
fn charsets_as_the_policies_read_them() {
    assert_eq!(charset_name(Some("text/xml")), None);
    assert_eq!(charset_name(Some("text/xml; Charset=\"latin1\"")).as_deref(), Some("latin1"));
    assert_eq!(charset_name(Some("text/xml; charset=utf-8; q=x")).as_deref(), Some("x"));
    assert!(legal_charset_name("ISO-8859-1") && !legal_charset_name("utf-8 ") && !legal_charset_name(""));
    assert_eq!(decode(b"\xe9", Some("ISO-8859-1")), "é");
    assert_eq!(decode(b"\xe9", None), "\u{fffd}");
}
