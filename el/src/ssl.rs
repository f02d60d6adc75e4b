//! `#request.ssl`: the TLS session's certificates as Gravitee's EL shows them.
//!
//! Gravitee exposes a certificate's subject through `EvaluableSSLPrincipal`: named attributes
//! (`#request.ssl.client.cn`, `.o`, `.ou`, …: the first value of that attribute type), the
//! distinguished name as Java prints it (`.dn`, RFC 2253), and every value of every attribute by
//! symbol or OID, case-insensitive (`.attributes['ou'][1]`, `.attributes['2.5.4.11']`). Gravitee
//! reads the attributes back out of the RFC 2253 text, whose order is the reverse of the
//! certificate's, so "first" here means first in that text: the most specific RDN.
//!
//! The host parses certificates; this module only turns their attributes into what EL reads, so
//! the EL crate needs no X.509 code.

use std::fmt::Write as _;

/// Which certificate of the session: `#request.ssl.client` (the one the client presented) or
/// `#request.ssl.server` (the gateway's own, the one chosen for the client's SNI name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslSide {
    Client,
    Server,
}

impl SslSide {
    pub(crate) fn name(self) -> &'static str {
        match self {
            SslSide::Client => "client",
            SslSide::Server => "server",
        }
    }
}

/// One attribute of a distinguished name, as read from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnAttribute {
    /// The attribute type's OID, dotted (`2.5.4.3`).
    pub oid: String,
    /// Its value as text (`None`: not a string type; the DN then shows it as `#` + hex DER).
    pub value: Option<String>,
    /// The value's DER encoding (tag, length, content): how RFC 2253 writes types without a keyword.
    pub der: Vec<u8>,
}

/// A certificate's subject, ready for EL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct X500Principal {
    /// RFC 2253, as Java's `X500Principal.getName()`.
    dn: String,
    /// The first attribute of each RDN, most specific first: `(oid, value)`.
    attributes: Vec<(String, String)>,
}

/// The attribute types Bouncy Castle's `BCStyle` names (Gravitee's source of attribute names):
/// getter name in Gravitee's `EvaluableSSLPrincipal` (SpEL property), symbol for `attributes[...]`,
/// OID.
const TYPES: &[(&str, Option<&str>, &str)] = &[
    ("businessCategory", Some("BusinessCategory"), "2.5.4.15"),
    ("c", Some("C"), "2.5.4.6"),
    ("cn", Some("CN"), "2.5.4.3"),
    ("countryOfCitizenship", Some("CountryOfCitizenship"), "1.3.6.1.5.5.7.9.4"),
    ("countryOfResidence", Some("CountryOfResidence"), "1.3.6.1.5.5.7.9.5"),
    ("dateOfBirth", Some("DateOfBirth"), "1.3.6.1.5.5.7.9.1"),
    ("dc", Some("DC"), "0.9.2342.19200300.100.1.25"),
    ("description", Some("DESCRIPTION"), "2.5.4.13"),
    ("dmdName", None, "2.5.4.54"),
    ("dnQualifier", Some("DN"), "2.5.4.46"),
    ("e", Some("E"), "1.2.840.113549.1.9.1"),
    ("emailAddress", Some("E"), "1.2.840.113549.1.9.1"),
    ("gender", Some("Gender"), "1.3.6.1.5.5.7.9.3"),
    ("generation", Some("GENERATION"), "2.5.4.44"),
    ("givenname", Some("GIVENNAME"), "2.5.4.42"),
    ("initials", Some("INITIALS"), "2.5.4.43"),
    ("l", Some("L"), "2.5.4.7"),
    ("name", Some("Name"), "2.5.4.41"),
    ("nameAtBirth", Some("NameAtBirth"), "1.3.36.8.3.14"),
    ("o", Some("O"), "2.5.4.10"),
    ("organizationIdentifier", Some("organizationIdentifier"), "2.5.4.97"),
    ("ou", Some("OU"), "2.5.4.11"),
    ("placeOfBirth", Some("PlaceOfBirth"), "1.3.6.1.5.5.7.9.2"),
    ("postalAddress", Some("PostalAddress"), "2.5.4.16"),
    ("postalCode", Some("PostalCode"), "2.5.4.17"),
    ("pseudonym", Some("Pseudonym"), "2.5.4.65"),
    ("role", Some("ROLE"), "2.5.4.72"),
    ("serialnumber", Some("SERIALNUMBER"), "2.5.4.5"),
    ("st", Some("ST"), "2.5.4.8"),
    ("street", Some("STREET"), "2.5.4.9"),
    ("surname", Some("SURNAME"), "2.5.4.4"),
    ("t", Some("T"), "2.5.4.12"),
    ("telephoneNumber", Some("TelephoneNumber"), "2.5.4.20"),
    ("uid", Some("UID"), "0.9.2342.19200300.100.1.1"),
    ("uniqueIdentifier", Some("UniqueIdentifier"), "2.5.4.45"),
    ("unstructuredAddress", Some("unstructuredAddress"), "1.2.840.113549.1.9.8"),
];

/// Symbols of types outside the getters that `attributes[...]` still knows.
const MORE_SYMBOLS: &[(&str, &str)] = &[("unstructuredName", "1.2.840.113549.1.9.2")];

/// The keywords Java's RFC 2253 form writes; other types are written as `OID=#hex`.
const RFC2253_KEYWORDS: &[(&str, &str)] = &[
    ("CN", "2.5.4.3"),
    ("C", "2.5.4.6"),
    ("L", "2.5.4.7"),
    ("ST", "2.5.4.8"),
    ("O", "2.5.4.10"),
    ("OU", "2.5.4.11"),
    ("STREET", "2.5.4.9"),
    ("DC", "0.9.2342.19200300.100.1.25"),
    ("UID", "0.9.2342.19200300.100.1.1"),
];

/// The OID a property name (`cn`, `emailAddress`) reads, if Gravitee has that getter.
pub(crate) fn getter_oid(property: &str) -> Option<&'static str> {
    TYPES.iter().find(|(getter, _, _)| *getter == property).map(|(_, _, oid)| *oid)
}

/// The getters, for error messages.
pub(crate) fn getter_names() -> String {
    let mut names: Vec<&str> = TYPES.iter().map(|(getter, _, _)| *getter).collect();
    names.extend(["dn", "attributes"]);
    names.join(", ")
}

fn symbol_of(oid: &str) -> Option<&'static str> {
    TYPES
        .iter()
        .find(|(_, _, o)| *o == oid)
        .and_then(|(_, symbol, _)| *symbol)
        .or_else(|| MORE_SYMBOLS.iter().find(|(_, o)| *o == oid).map(|(s, _)| *s))
}

/// Escapes a value as Java writes it in RFC 2253 (`,` `=` `+` `<` `>` `#` `;` `"` `\` with a backslash;
/// `#` only first; a leading or trailing space too).
fn escape_rfc2253(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '=' | '+' | '<' | '>' | ';' | '"' | '\\')
            || (c == '#' && i == 0)
            || (c == ' ' && (i == 0 || i == last));
        if special {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Escapes a value as Bouncy Castle's `IETFUtils.valueToString` does (what Gravitee returns).
fn escape_ietf(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '"' | '\\' | '+' | '=' | '<' | '>' | ';')
            || (c == '#' && i == 0)
            || (c == ' ' && (i == 0 || i == last));
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl X500Principal {
    /// A subject from its RDNs in certificate (ASN.1) order, each a set of attributes.
    pub fn new(rdns: &[Vec<DnAttribute>]) -> X500Principal {
        let mut dn = String::new();
        let mut attributes = Vec::with_capacity(rdns.len());
        for rdn in rdns.iter().rev() {
            if rdn.is_empty() {
                continue;
            }
            if !dn.is_empty() {
                dn.push(',');
            }
            for (i, attribute) in rdn.iter().enumerate() {
                if i > 0 {
                    dn.push('+');
                }
                let keyword = RFC2253_KEYWORDS.iter().find(|(_, oid)| *oid == attribute.oid).map(|(k, _)| *k);
                match (keyword, &attribute.value) {
                    (Some(keyword), Some(value)) => {
                        dn.push_str(keyword);
                        dn.push('=');
                        escape_rfc2253(value, &mut dn);
                    }
                    _ => {
                        dn.push_str(&attribute.oid);
                        dn.push_str("=#");
                        for byte in &attribute.der {
                            let _ = write!(dn, "{byte:02x}");
                        }
                    }
                }
            }
            let first = &rdn[0];
            if let Some(value) = &first.value {
                attributes.push((first.oid.clone(), escape_ietf(value)));
            }
        }
        X500Principal { dn, attributes }
    }

    /// `.dn`: the distinguished name in RFC 2253 form.
    pub fn dn(&self) -> &str {
        &self.dn
    }

    /// `.cn`, `.o`, …: the first value of the attribute type `oid`.
    pub fn first(&self, oid: &str) -> Option<&str> {
        self.attributes.iter().find(|(o, _)| o == oid).map(|(_, v)| v.as_str())
    }

    /// `.attributes['key']`: every value of the type named by `key`, an OID or a symbol
    /// (`OU`, `ou`, `2.5.4.11`), case-insensitive.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.attributes
            .iter()
            .filter(|(oid, _)| {
                oid.eq_ignore_ascii_case(key) || symbol_of(oid).is_some_and(|s| s.eq_ignore_ascii_case(key))
            })
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(oid: &str, value: &str) -> Vec<DnAttribute> {
        vec![DnAttribute { oid: oid.into(), value: Some(value.into()), der: Vec::new() }]
    }

    #[test]
    fn names_read_most_specific_first_as_gravitee_does() {
        // Certificate order C, O, OU=Test3, OU=Test2, OU=Test, CN; Java prints it reversed.
        let email = DnAttribute {
            oid: "1.2.840.113549.1.9.1".into(),
            value: Some("a@b.c".into()),
            der: vec![0x16, 0x05, b'a', b'@', b'b', b'.', b'c'],
        };
        let principal = X500Principal::new(&[
            attr("2.5.4.6", "US"),
            attr("2.5.4.10", "ACME, Inc"),
            attr("2.5.4.11", "Test3"),
            attr("2.5.4.11", "Test2"),
            attr("2.5.4.11", "Test"),
            attr("2.5.4.3", "John Doe"),
            vec![email],
        ]);
        assert_eq!(
            principal.dn(),
            "1.2.840.113549.1.9.1=#16056140622e63,CN=John Doe,OU=Test,OU=Test2,OU=Test3,O=ACME\\, Inc,C=US"
        );
        assert_eq!(principal.first(getter_oid("ou").unwrap()), Some("Test"));
        assert_eq!(principal.first(getter_oid("o").unwrap()), Some("ACME\\, Inc"));
        assert_eq!(principal.first(getter_oid("e").unwrap()), Some("a@b.c"));
        assert_eq!(principal.first(getter_oid("emailAddress").unwrap()), Some("a@b.c"));
        assert_eq!(principal.first(getter_oid("businessCategory").unwrap()), None);
        for key in ["OU", "ou", "oU", "2.5.4.11"] {
            assert_eq!(principal.all(key), ["Test", "Test2", "Test3"], "{key}");
        }
        assert_eq!(principal.all("E"), ["a@b.c"]);
        assert!(principal.all("nope").is_empty());
        assert_eq!(getter_oid("CN"), None, "SpEL properties are the getters' names");
    }
}
