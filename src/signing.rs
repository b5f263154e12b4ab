//! HMAC-SHA256 and MD5 helpers shared by every place that signs or checks a signature.
//!
//! Pusher signs three things with the app secret (channel auth, user sign-in, REST requests)
//! and later protocols sign more (webhooks). Keeping the primitive in one place means there is
//! exactly one constant-time comparison to get right.

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], message: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(message);
    mac
}

/// Lower-case hex of HMAC-SHA256(secret, message).
pub fn hmac_sha256_hex(secret: &[u8], message: &[u8]) -> String {
    hex::encode(mac(secret, message).finalize().into_bytes())
}

/// Raw HMAC-SHA256(secret, message).
pub fn hmac_sha256(secret: &[u8], message: &[u8]) -> [u8; 32] {
    mac(secret, message).finalize().into_bytes().into()
}

/// Checks a hex signature against HMAC-SHA256(secret, message) in constant time.
///
/// Upper- or lower-case hex is accepted; anything that is not 64 hex digits is simply wrong.
pub fn verify_hmac_sha256_hex(secret: &[u8], message: &[u8], signature_hex: &str) -> bool {
    let Ok(given) = hex::decode(signature_hex) else {
        return false;
    };
    mac(secret, message).verify_slice(&given).is_ok()
}

/// Lower-case hex MD5 of `body`, as Pusher's `body_md5` query parameter carries it.
pub fn md5_hex(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector published in Pusher's authentication documentation.
    #[test]
    fn pusher_private_channel_golden_vector() {
        let sig = hmac_sha256_hex(b"7ad3773142a6692b25b8", b"1234.1234:private-foobar");
        assert_eq!(
            sig,
            "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        assert!(verify_hmac_sha256_hex(
            b"7ad3773142a6692b25b8",
            b"1234.1234:private-foobar",
            &sig.to_uppercase()
        ));
    }

    #[test]
    fn wrong_or_malformed_signatures_fail() {
        let secret = b"7ad3773142a6692b25b8";
        let msg = b"1234.1234:private-foobar";
        assert!(!verify_hmac_sha256_hex(secret, msg, "00"));
        assert!(!verify_hmac_sha256_hex(secret, msg, "not hex at all"));
        assert!(!verify_hmac_sha256_hex(secret, msg, ""));
        let other = hmac_sha256_hex(b"another-secret", msg);
        assert!(!verify_hmac_sha256_hex(secret, msg, &other));
    }

    #[test]
    fn md5_matches_known_digest() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    }
}
