//! Signing callbacks, exactly as the official verifiers check them.
//!
//! Standard Webhooks: the secret is `whsec_` + base64 of random bytes; the HMAC key is
//! those bytes (the prefix stripped, the rest base64-decoded); the signed content is
//! `{webhook-id}.{webhook-timestamp}.{body}`; the header is `v1,<base64 HMAC-SHA256>`,
//! several space-separated during a secret rotation. Pusher app webhooks: hex
//! HMAC-SHA256 of the body with the app secret, in `X-Pusher-Signature`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::signing::{hmac_sha256, hmac_sha256_hex};

/// Prefix of a Standard Webhooks signing secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a new secret (the spec allows 24 to 64).
const SECRET_BYTES: usize = 32;

/// A new signing secret: `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> String {
    let bytes: [u8; SECRET_BYTES] = rand::random();
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

/// The HMAC key a secret stands for: the base64 after `whsec_` (a secret without the
/// prefix is read the same way, as the official libraries do).
fn key_of(secret: &str) -> Vec<u8> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    STANDARD
        .decode(encoded)
        .unwrap_or_else(|_| encoded.as_bytes().to_vec())
}

/// The `webhook-signature` header for one message: `v1,<sig>` per secret, space-separated.
pub fn standard_signature(secrets: &[&str], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut content = Vec::with_capacity(id.len() + body.len() + 24);
    content.extend_from_slice(id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.to_string().as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    secrets
        .iter()
        .map(|secret| {
            format!(
                "v1,{}",
                STANDARD.encode(hmac_sha256(&key_of(secret), &content))
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `X-Pusher-Signature`: lower-case hex HMAC-SHA256 of the body with the app secret.
pub fn pusher_signature(app_secret: &[u8], body: &[u8]) -> String {
    hmac_sha256_hex(app_secret, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification (and of its libraries' tests).
    #[test]
    fn the_specification_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let timestamp = 1614265330;
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            standard_signature(&[secret], id, timestamp, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn rotation_signs_with_both_secrets() {
        let (old, new) = (new_secret(), new_secret());
        let header = standard_signature(&[&new, &old], "evt_1", 1, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], standard_signature(&[&new], "evt_1", 1, b"{}"));
        assert_eq!(parts[1], standard_signature(&[&old], "evt_1", 1, b"{}"));
    }

    #[test]
    fn secrets_have_the_spec_shape() {
        let secret = new_secret();
        let decoded = STANDARD
            .decode(secret.strip_prefix("whsec_").unwrap())
            .unwrap();
        assert_eq!(decoded.len(), 32);
        assert_ne!(new_secret(), secret);
    }
}
