//! Multi-document Kubernetes YAML in and out, for `hgw-agent inject`.
//!
//! Each document becomes a `serde_json::Value` (the form the injector and the API server share), so a
//! field the injector does not know is carried through unchanged. Comments and key order are not kept
//! (keys come out sorted), as with `linkerd inject`.

use serde::Deserialize;
use serde_json::Value;

/// YAML that cannot be read, with the document's position (1-based) in the stream.
#[derive(Debug, thiserror::Error)]
#[error("document {document}: {message}")]
pub struct YamlError {
    pub document: usize,
    pub message: String,
}

/// Every document of a YAML stream; empty documents (a lone `---`) are dropped.
pub fn read_documents(text: &str) -> Result<Vec<Value>, YamlError> {
    let mut documents = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(document)
            .map_err(|error| YamlError { document: index + 1, message: error.to_string() })?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// The documents as one YAML stream, separated by `---`.
pub fn write_documents(documents: &[Value]) -> Result<String, YamlError> {
    let mut out = String::new();
    for (index, document) in documents.iter().enumerate() {
        if index > 0 {
            out.push_str("---\n");
        }
        let text = serde_yaml_ng::to_string(document)
            .map_err(|error| YamlError { document: index + 1, message: error.to_string() })?;
        out.push_str(&text);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_round_trip() {
        let text = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: b\nspec:\n  ports: [{port: 80}]\n";
        let documents = read_documents(text).unwrap();
        assert_eq!(documents.len(), 2);
        assert_eq!(documents[1]["spec"]["ports"][0]["port"], 80);
        let again = read_documents(&write_documents(&documents).unwrap()).unwrap();
        assert_eq!(again, documents);
    }

    #[test]
    fn broken_yaml_names_the_document() {
        let error = read_documents("kind: Pod\n---\nkind: [unclosed\n").unwrap_err();
        assert_eq!(error.document, 2);
    }
}
