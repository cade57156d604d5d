//! Canonical JSON: object keys sorted by their UTF-8 bytes at every depth, no whitespace,
//! serde_json's escaping and number formatting. The bytes that are hashed are stored and
//! exported verbatim, so verifiers never re-encode; canonical form only makes encoding
//! deterministic.

use serde::Serialize;
use serde_json::Value;

pub fn to_string<T: Serialize>(v: &T) -> Result<String, serde_json::Error> {
    let value = serde_json::to_value(v)?;
    let mut out = String::with_capacity(256);
    write(&value, &mut out)?;
    Ok(out)
}

fn write(v: &Value, out: &mut String) -> Result<(), serde_json::Error> {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_unstable();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k)?);
                out.push(':');
                if let Some(val) = m.get(k) {
                    write(val, out)?;
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, val) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(val, out)?;
            }
            out.push(']');
        }
        other => out.push_str(&serde_json::to_string(other)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sorts_keys_recursively() {
        let v = serde_json::json!({"b": 1, "a": {"d": [ {"z": 1, "y": "é"} ], "c": null}});
        assert_eq!(
            super::to_string(&v).unwrap(),
            r#"{"a":{"c":null,"d":[{"y":"é","z":1}]},"b":1}"#
        );
    }
}
