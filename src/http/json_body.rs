//! JSON request bodies that must be objects.

use serde_json::Value;

/// Reads a request body that must be a JSON object into `T`. serde also reads a struct
/// from a JSON array of its fields in order (`["m1", "payments", "trade", {}]`), a form
/// no client is told about and one that `deny_unknown_fields` cannot check (found by
/// fuzz/webhook_bodies and fuzz/publish_bodies). The error is serde_json's message.
pub(crate) fn object<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if !value.is_object() {
        return Err("the body is not a JSON object".into());
    }
    // Parsed again from the bytes, not from the value, which would hide a repeated key.
    serde_json::from_slice(body).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Pair {
        a: String,
        #[serde(default)]
        b: Option<u64>,
    }

    #[test]
    fn objects_only_not_arrays_of_fields() {
        assert_eq!(
            object::<Pair>(br#"{"a":"x","b":1}"#),
            Ok(Pair {
                a: "x".into(),
                b: Some(1)
            })
        );
        assert!(
            serde_json::from_slice::<Pair>(br#"["x", 1]"#).is_ok(),
            "serde would"
        );
        assert!(object::<Pair>(br#"["x", 1]"#).is_err());
        assert!(object::<Pair>(br#""x""#).is_err());
        let repeated = object::<Pair>(br#"{"a":"x","a":"y"}"#).unwrap_err();
        assert!(repeated.contains("duplicate"), "{repeated}");
    }
}
