//! Checks of the `key:signature` strings clients present to subscribe and to sign in.
//!
//! Pusher's rule: the auth endpoint signs `socket_id:channel` (private),
//! `socket_id:channel:channel_data` (presence) or `socket_id::user::user_data` (sign-in)
//! with the app secret; the server recomputes the HMAC and compares in constant time. The
//! key before the colon must be this app's key, so a signature made for another app fails
//! even if the secrets happened to match.

use crate::core::App;
use crate::signing;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing `auth`")]
    Missing,
    #[error("`auth` must look like `<app key>:<hex signature>`")]
    Malformed,
    #[error("invalid key in `auth`: expected this app's key")]
    WrongKey,
    #[error("invalid signature")]
    BadSignature,
}

fn check(app: &App, auth: Option<&str>, signed: &str) -> Result<(), AuthError> {
    let auth = auth.filter(|a| !a.is_empty()).ok_or(AuthError::Missing)?;
    let (key, signature) = auth.split_once(':').ok_or(AuthError::Malformed)?;
    if key != app.key {
        return Err(AuthError::WrongKey);
    }
    if signing::verify_hmac_sha256_hex(app.secret().as_bytes(), signed.as_bytes(), signature) {
        Ok(())
    } else {
        Err(AuthError::BadSignature)
    }
}

/// Private and private-encrypted channels.
pub fn check_private(
    app: &App,
    socket_id: &str,
    channel: &str,
    auth: Option<&str>,
) -> Result<(), AuthError> {
    check(app, auth, &format!("{socket_id}:{channel}"))
}

/// Presence channels: the signature also covers the exact `channel_data` string.
pub fn check_presence(
    app: &App,
    socket_id: &str,
    channel: &str,
    channel_data: &str,
    auth: Option<&str>,
) -> Result<(), AuthError> {
    check(app, auth, &format!("{socket_id}:{channel}:{channel_data}"))
}

/// `pusher:signin`.
pub fn check_signin(
    app: &App,
    socket_id: &str,
    user_data: &str,
    auth: &str,
) -> Result<(), AuthError> {
    check(app, Some(auth), &format!("{socket_id}::user::{user_data}"))
}

/// What an auth endpoint answers (used by tests and by payrelay's own auth endpoint).
pub fn sign_private(app: &App, socket_id: &str, channel: &str) -> String {
    sign(app, &format!("{socket_id}:{channel}"))
}

pub fn sign_presence(app: &App, socket_id: &str, channel: &str, channel_data: &str) -> String {
    sign(app, &format!("{socket_id}:{channel}:{channel_data}"))
}

/// The `shared_secret` of an end-to-end encrypted channel, as Pusher derives it: base64 of
/// SHA-256 over the channel name followed by the app's master key. pusher-js decrypts the
/// channel's events with it; the backend encrypts them with a key derived the same way.
/// `None` when the app has no master key.
pub fn shared_secret(app: &App, channel: &str) -> Option<String> {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let master_key = app.encryption_master_key()?;
    let digest = Sha256::new()
        .chain_update(channel.as_bytes())
        .chain_update(master_key.as_bytes())
        .finalize();
    Some(base64::engine::general_purpose::STANDARD.encode(digest))
}

pub fn sign(app: &App, signed: &str) -> String {
    format!(
        "{}:{}",
        app.key,
        signing::hmac_sha256_hex(app.secret().as_bytes(), signed.as_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AppConfig;

    fn app() -> App {
        let mut config = AppConfig::development();
        config.key = "278d425bdf160c739803".into();
        config.secret = crate::config::Secret::new("7ad3773142a6692b25b8");
        App::from_config(&config)
    }

    #[test]
    fn private_signature_matches_the_published_vector() {
        let app = app();
        let auth = sign_private(&app, "1234.1234", "private-foobar");
        assert_eq!(
            auth,
            "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        assert_eq!(
            check_private(&app, "1234.1234", "private-foobar", Some(&auth)),
            Ok(())
        );
    }

    #[test]
    fn refusals_say_why() {
        let app = app();
        let good = sign_private(&app, "1.1", "private-a");
        assert_eq!(
            check_private(&app, "1.1", "private-a", None),
            Err(AuthError::Missing)
        );
        assert_eq!(
            check_private(&app, "1.1", "private-a", Some("nocolon")),
            Err(AuthError::Malformed)
        );
        let other_key = good.replacen("278d425bdf160c739803", "other", 1);
        assert_eq!(
            check_private(&app, "1.1", "private-a", Some(&other_key)),
            Err(AuthError::WrongKey)
        );
        assert_eq!(
            check_private(&app, "1.2", "private-a", Some(&good)),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            check_private(&app, "1.1", "private-b", Some(&good)),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn presence_signature_covers_channel_data() {
        let app = app();
        let data = r#"{"user_id":"1"}"#;
        let auth = sign_presence(&app, "1.1", "presence-x", data);
        assert_eq!(
            check_presence(&app, "1.1", "presence-x", data, Some(&auth)),
            Ok(())
        );
        assert_eq!(
            check_presence(&app, "1.1", "presence-x", r#"{"user_id":"2"}"#, Some(&auth)),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn signin_uses_the_user_separator() {
        let app = app();
        let data = r#"{"id":"u1"}"#;
        let auth = sign(&app, &format!("1.1::user::{data}"));
        assert_eq!(check_signin(&app, "1.1", data, &auth), Ok(()));
        assert_eq!(
            check_signin(&app, "1.2", data, &auth),
            Err(AuthError::BadSignature)
        );
    }
}
