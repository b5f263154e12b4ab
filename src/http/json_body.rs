//! JSON request bodies that must be objects.

/// Reads a request body that must be a JSON object into `T`. serde also reads a struct
/// from a JSON array of its fields in order (`["m1", "payments", "trade", {}]`), a form
/// no client is told about and one that `deny_unknown_fields` cannot check (found by
/// fuzz/webhook_bodies and fuzz/publish_bodies). The error is serde_json's message.
pub(crate) fn object<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    // A JSON object is the only value that opens with `{`: checking that byte keeps the
    // publish path at one parse.
    let opens_an_object = body
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        == Some(&b'{');
    if !opens_an_object {
        // serde_json's own message when it is not JSON at all.
        serde_json::from_slice::<serde::de::IgnoredAny>(body).map_err(|e| e.to_string())?;
        return Err("the body is not a JSON object".into());
    }
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
        assert_eq!(
            object::<Pair>(b" \n[\"x\"]"),
            Err("the body is not a JSON object".into())
        );
        assert!(
            object::<Pair>(b"nonsense")
                .unwrap_err()
                .contains("expected")
        );
        assert_eq!(object::<Pair>(b" {\"a\":\"x\"}").unwrap().a, "x");
        let repeated = object::<Pair>(br#"{"a":"x","a":"y"}"#).unwrap_err();
        assert!(repeated.contains("duplicate"), "{repeated}");
    }
}
