//! Reading Kubernetes manifests: multi-document YAML into [`Value`]s.
//!
//! The parser (serde_yaml_ng, libyaml underneath) reads YAML 1.2. Kubernetes
//! reads manifests with a YAML 1.1 reader, which differs where it matters
//! for manifests: an unquoted `yes`, `no`, `on`, `off`, `y` or `n` is a
//! boolean there and a string here. [`yaml11_booleans`] finds those, so a
//! manifest is only accepted when both readers agree on it.

use serde::Deserialize;

use crate::openapi::Value;

/// Parses every document of a YAML stream (`---`-separated), skipping empty
/// ones, into JSON values as Kubernetes would see them. YAML 1.1 merge keys
/// (`<<: *anchor`) are applied, as Kubernetes' reader applies them.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, String> {
    let mut documents = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let in_document = |err: String| format!("document {}: {err}", index + 1);
        let mut yaml = serde_yaml_ng::Value::deserialize(document)
            .map_err(|err| in_document(err.to_string()))?;
        yaml.apply_merge()
            .map_err(|err| in_document(err.to_string()))?;
        let value = to_json(&yaml, "").map_err(in_document)?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// The JSON value of a YAML one, refusing what JSON cannot hold (keys that
/// are not strings, tags, non-finite numbers) with the field's path.
fn to_json(yaml: &serde_yaml_ng::Value, path: &str) -> Result<Value, String> {
    use serde_yaml_ng::Value as Y;
    Ok(match yaml {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(*b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .ok_or_else(|| format!("{path}: {n} has no JSON equivalent"))?
            }
        }
        Y::String(s) => Value::String(s.clone()),
        Y::Sequence(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| to_json(item, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Y::Mapping(mapping) => {
            let mut fields = serde_json::Map::with_capacity(mapping.len());
            for (key, value) in mapping {
                let Y::String(key) = key else {
                    return Err(format!(
                        "{path}: a key that is not a string ({key:?}): JSON has only string keys"
                    ));
                };
                let field_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                fields.insert(key.clone(), to_json(value, &field_path)?);
            }
            Value::Object(fields)
        }
        Y::Tagged(tagged) => {
            return Err(format!(
                "{path}: YAML tag {} has no JSON equivalent",
                tagged.tag
            ))
        }
    })
}

/// The plain (unquoted) scalars that YAML 1.1 reads as booleans.
const YAML11_BOOLEANS: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
    "OFF",
];

/// Lines (1-based) holding a plain (unquoted, untagged) scalar that
/// Kubernetes' YAML 1.1 reader takes for a boolean while this parser takes
/// it for a string, with the scalar: values, keys, list items, in block or
/// flow style. Read from the parser's events (saphyr-parser), so quoted
/// scalars, comments and the text of block scalars are never mistaken for
/// one. Stops at a syntax error, which [`parse_documents`] reports.
pub fn yaml11_booleans(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for next in saphyr_parser::Parser::new_from_str(text) {
        let Ok((event, span)) = next else {
            break;
        };
        if let saphyr_parser::Event::Scalar(value, saphyr_parser::ScalarStyle::Plain, _, None) =
            event
        {
            if YAML11_BOOLEANS.contains(&value.as_ref()) {
                found.push((span.start.line(), value.into_owned()));
            }
        }
    }
    found
}
