//! Verifying a merchant backend's JWT, as configured per app.
//!
//! The algorithm is fixed by configuration, never taken from the token: a token whose
//! header names another algorithm (including `none`) is refused before any key is used,
//! which is what prevents algorithm confusion (an RS256 public key used as an HS256
//! secret). `exp` is required, and so are `iss` and `aud` when the app configures an
//! issuer or audience (a token that leaves them out is refused, not waved through); `nbf`
//! is checked when present; time claims get a small leeway for clock skew.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use super::jwks::{self, Keys, Refresher};
use crate::config::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum JwtAlgorithm {
    HS256,
    RS256,
    ES256,
}

impl JwtAlgorithm {
    fn algorithm(self) -> Algorithm {
        match self {
            JwtAlgorithm::HS256 => Algorithm::HS256,
            JwtAlgorithm::RS256 => Algorithm::RS256,
            JwtAlgorithm::ES256 => Algorithm::ES256,
        }
    }
}

/// `[apps.jwt]` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    pub algorithm: JwtAlgorithm,
    /// Shared secret (HS256).
    pub secret: Option<Secret>,
    /// PEM public key file (RS256, ES256).
    pub public_key_file: Option<PathBuf>,
    /// JWKS file (RS256, ES256); the token's `kid` picks the key.
    pub jwks_file: Option<PathBuf>,
    /// JWKS URL (RS256, ES256), `https://`: fetched at start-up (a failure stops
    /// start-up), then in the background every `jwks_refresh_secs` and soon (at most every
    /// 30 s) after a token names a `kid` the current set lacks, so a key rotation needs
    /// no restart and no request ever waits for the identity provider.
    pub jwks_url: Option<String>,
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_secs: u64,
    /// Allow an `http://` `jwks_url` (keys fetched without TLS can be replaced on the
    /// way); only for a provider on the same host or a trusted network.
    #[serde(default)]
    pub jwks_allow_http: bool,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Claim naming the merchant; `sub` is used when it is absent.
    #[serde(default = "default_merchant_claim")]
    pub merchant_claim: String,
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
}

fn default_merchant_claim() -> String {
    "merchant_id".into()
}

fn default_leeway() -> u64 {
    30
}

fn default_jwks_refresh() -> u64 {
    300
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token is signed with {0}, but this app accepts only {1:?}")]
    WrongAlgorithm(String, JwtAlgorithm),
    #[error("no key matches the token's `kid`")]
    UnknownKey,
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's issuer (`iss`) is not the one this app accepts")]
    WrongIssuer,
    #[error("the token's audience (`aud`) does not name this app's")]
    WrongAudience,
    #[error("the token has no `{0}` claim")]
    MissingClaim(String),
    #[error("the token names no merchant (`{0}` or `sub`)")]
    NoMerchant(String),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum JwtConfigError {
    #[error("{0}")]
    Invalid(String),
}

/// A ready-to-use verifier for one app.
pub struct JwtVerifier {
    algorithm: JwtAlgorithm,
    keys: Arc<RwLock<Keys>>,
    validation: Validation,
    merchant_claim: String,
    /// `jwks_url` and how often to fetch it again.
    remote: Option<(String, Duration)>,
    /// Keeps a remote key set fresh, once [`JwtVerifier::load`] has fetched it.
    refresher: Option<Refresher>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithm", &self.algorithm)
            .field("keys", &self.keys.read().len())
            .field(
                "jwks_url",
                &self.remote.as_ref().map(|(url, _)| crate::redact::url(url)),
            )
            .finish()
    }
}

impl JwtVerifier {
    pub fn new(config: &JwtConfig) -> Result<JwtVerifier, JwtConfigError> {
        let invalid = |m: String| JwtConfigError::Invalid(m);
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))
        };
        let keys = match config.algorithm {
            JwtAlgorithm::HS256 => {
                let secret = config
                    .secret
                    .as_ref()
                    .filter(|s| s.expose().len() >= 16)
                    .ok_or_else(|| invalid("HS256 needs a `secret` of at least 16 bytes".into()))?;
                vec![(None, DecodingKey::from_secret(secret.as_bytes()))]
            }
            JwtAlgorithm::RS256 | JwtAlgorithm::ES256 => {
                match (&config.public_key_file, &config.jwks_file, &config.jwks_url) {
                    (None, None, Some(url)) => {
                        jwks::check_url(url, config.jwks_allow_http).map_err(invalid)?;
                        // Filled by `load`, which fetches it.
                        Vec::new()
                    }
                    (Some(path), None, None) => {
                        let pem = read(path)?;
                        let key = if config.algorithm == JwtAlgorithm::RS256 {
                            DecodingKey::from_rsa_pem(&pem)
                        } else {
                            DecodingKey::from_ec_pem(&pem)
                        }
                        .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
                        vec![(None, key)]
                    }
                    (None, Some(path), None) => jwks::parse(&read(path)?)
                        .map_err(|e| invalid(format!("{}: {e}", path.display())))?,
                    _ => {
                        return Err(invalid(
                            "RS256/ES256 need exactly one of `public_key_file`, `jwks_file` or `jwks_url`"
                                .into(),
                        ));
                    }
                }
            }
        };
        let mut validation = Validation::new(config.algorithm.algorithm());
        validation.leeway = config.leeway_secs;
        validation.validate_nbf = true;
        // A configured issuer or audience is a requirement: a token without the claim
        // is refused, not waved through (jsonwebtoken checks them only when present).
        let mut required = vec!["exp"];
        match &config.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let remote = config
            .jwks_url
            .clone()
            .filter(|_| config.algorithm != JwtAlgorithm::HS256)
            .map(|url| (url, Duration::from_secs(config.jwks_refresh_secs.max(1))));
        Ok(JwtVerifier {
            algorithm: config.algorithm,
            keys: Arc::new(RwLock::new(Arc::new(keys))),
            validation,
            merchant_claim: config.merchant_claim.clone(),
            remote,
            refresher: None,
        })
    }

    /// Builds the verifier and, for a `jwks_url`, fetches its keys (an error if that fails:
    /// a node that cannot verify any merchant should not start as if it could) and starts
    /// refreshing them in the background.
    pub async fn load(config: &JwtConfig) -> Result<JwtVerifier, JwtConfigError> {
        let mut verifier = JwtVerifier::new(config)?;
        if let Some((url, every)) = &verifier.remote {
            let keys = jwks::fetch(url).await.map_err(|e| {
                let url = crate::redact::url(url);
                JwtConfigError::Invalid(format!("jwks_url {url}: {e}"))
            })?;
            *verifier.keys.write() = Arc::new(keys);
            verifier.refresher = Some(Refresher::start(url.clone(), *every, verifier.keys.clone()));
        }
        Ok(verifier)
    }

    /// Verifies `token` against the keys held now and returns the merchant it names. A
    /// `kid` a remote key set lacks asks for a refresh in the background; this call never
    /// waits for the identity provider.
    pub fn merchant(&self, token: &str) -> Result<String, JwtError> {
        let result = self.verify(token);
        if let (Err(JwtError::UnknownKey), Some(refresher)) = (&result, &self.refresher) {
            refresher.nudge();
        }
        result
    }

    /// Verifies `token` against the keys held now and returns the merchant it names.
    pub fn verify(&self, token: &str) -> Result<String, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            // `alg: none` (and any algorithm the library does not know) fails here.
            match unverified_alg(token) {
                Some(alg) => JwtError::WrongAlgorithm(alg, self.algorithm),
                None => JwtError::Malformed,
            }
        })?;
        if header.alg != self.algorithm.algorithm() {
            return Err(JwtError::WrongAlgorithm(
                format!("{:?}", header.alg),
                self.algorithm,
            ));
        }
        let keys = self.keys.read().clone();
        let key = match &header.kid {
            Some(kid) if keys.iter().any(|(k, _)| k.is_some()) => keys
                .iter()
                .find(|(k, _)| k.as_deref() == Some(kid))
                .map(|(_, key)| key)
                .ok_or(JwtError::UnknownKey)?,
            _ => &keys.first().ok_or(JwtError::UnknownKey)?.1,
        };
        let data = jsonwebtoken::decode::<Value>(token, key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => JwtError::Expired,
                ErrorKind::ImmatureSignature => JwtError::NotYetValid,
                ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
                ErrorKind::InvalidAudience => JwtError::WrongAudience,
                ErrorKind::MissingRequiredClaim(claim) => JwtError::MissingClaim(claim.clone()),
                ErrorKind::InvalidSignature => JwtError::BadSignature,
                _ => JwtError::Malformed,
            }
        })?;
        let claims = data.claims;
        let merchant = claims
            .get(&self.merchant_claim)
            .or_else(|| claims.get("sub"))
            .and_then(|v| match v {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            });
        merchant.ok_or_else(|| JwtError::NoMerchant(self.merchant_claim.clone()))
    }
}

/// The `alg` a token claims, read without trusting it (for the error message only).
pub(crate) fn unverified_alg(token: &str) -> Option<String> {
    use base64::Engine;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    let alg = value.get("alg")?.as_str()?;
    Some(alg.chars().take(16).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");
    const HS_SECRET: &str = "merchant-jwt-secret-0123456789";

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn config(algorithm: JwtAlgorithm) -> JwtConfig {
        JwtConfig {
            algorithm,
            secret: (algorithm == JwtAlgorithm::HS256).then(|| Secret::new(HS_SECRET)),
            public_key_file: match algorithm {
                JwtAlgorithm::HS256 => None,
                JwtAlgorithm::RS256 => Some(format!("{FIXTURES}/rs256-public.pem").into()),
                JwtAlgorithm::ES256 => Some(format!("{FIXTURES}/es256-public.pem").into()),
            },
            jwks_file: None,
            jwks_url: None,
            jwks_refresh_secs: 300,
            jwks_allow_http: false,
            issuer: None,
            audience: None,
            merchant_claim: default_merchant_claim(),
            leeway_secs: 5,
        }
    }

    fn hs(claims: Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(HS_SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn pem(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
    }

    #[test]
    fn hs256_tokens_name_their_merchant() {
        let v = JwtVerifier::new(&config(JwtAlgorithm::HS256)).unwrap();
        let token = hs(json!({"merchant_id": "merchant_001", "exp": now() + 60}));
        assert_eq!(v.verify(&token).unwrap(), "merchant_001");
        let token = hs(json!({"sub": "m2", "exp": now() + 60}));
        assert_eq!(v.verify(&token).unwrap(), "m2", "falls back to sub");
    }

    #[test]
    fn time_claims_are_enforced() {
        let v = JwtVerifier::new(&config(JwtAlgorithm::HS256)).unwrap();
        let expired = hs(json!({"merchant_id": "m", "exp": now() - 60}));
        assert_eq!(v.verify(&expired), Err(JwtError::Expired));
        let early = hs(json!({"merchant_id": "m", "exp": now() + 600, "nbf": now() + 300}));
        assert_eq!(v.verify(&early), Err(JwtError::NotYetValid));
        let forever = hs(json!({"merchant_id": "m"}));
        assert_eq!(
            v.verify(&forever),
            Err(JwtError::MissingClaim("exp".into()))
        );
        // Within the leeway is fine.
        let just = hs(json!({"merchant_id": "m", "exp": now() - 2}));
        assert!(v.verify(&just).is_ok());
    }

    #[test]
    fn alg_none_and_algorithm_confusion_are_refused() {
        use base64::Engine;
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let none = format!(
            "{}.{}.",
            b64(json!({"alg": "none", "typ": "JWT"})),
            b64(json!({"merchant_id": "m", "exp": now() + 60}))
        );
        let hs_verifier = JwtVerifier::new(&config(JwtAlgorithm::HS256)).unwrap();
        assert!(
            matches!(hs_verifier.verify(&none), Err(JwtError::WrongAlgorithm(a, _)) if a == "none")
        );

        // An RS256 app's public key used as an HS256 secret.
        let rs_verifier = JwtVerifier::new(&config(JwtAlgorithm::RS256)).unwrap();
        let confused = encode(
            &Header::new(Algorithm::HS256),
            &json!({"merchant_id": "m", "exp": now() + 60}),
            &EncodingKey::from_secret(&pem("rs256-public.pem")),
        )
        .unwrap();
        assert!(matches!(
            rs_verifier.verify(&confused),
            Err(JwtError::WrongAlgorithm(..))
        ));
        assert_eq!(rs_verifier.verify("not.a.jwt"), Err(JwtError::Malformed));
    }

    #[test]
    fn rs256_and_es256_verify_with_pem_public_keys() {
        let claims = json!({"merchant_id": "m-rs", "exp": now() + 60});
        let rs = encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &EncodingKey::from_rsa_pem(&pem("rs256-private.pem")).unwrap(),
        )
        .unwrap();
        let v = JwtVerifier::new(&config(JwtAlgorithm::RS256)).unwrap();
        assert_eq!(v.verify(&rs).unwrap(), "m-rs");

        let es = encode(
            &Header::new(Algorithm::ES256),
            &json!({"merchant_id": "m-es", "exp": now() + 60}),
            &EncodingKey::from_ec_pem(&pem("es256-private.pem")).unwrap(),
        )
        .unwrap();
        let v = JwtVerifier::new(&config(JwtAlgorithm::ES256)).unwrap();
        assert_eq!(v.verify(&es).unwrap(), "m-es");
    }

    /// Well-formed tokens, correctly signed, by a key the app does not trust: each must
    /// fail on the signature, not on decoding.
    #[test]
    fn a_well_formed_token_signed_by_another_key_is_refused() {
        let claims = json!({"merchant_id": "m", "exp": now() + 60});
        let other_hs = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"another-secret-0123456789-abcdef"),
        )
        .unwrap();
        let v = JwtVerifier::new(&config(JwtAlgorithm::HS256)).unwrap();
        assert_eq!(v.verify(&other_hs), Err(JwtError::BadSignature));

        let other_rs = encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &EncodingKey::from_rsa_pem(&pem("rs256-other-private.pem")).unwrap(),
        )
        .unwrap();
        let v = JwtVerifier::new(&config(JwtAlgorithm::RS256)).unwrap();
        assert_eq!(v.verify(&other_rs), Err(JwtError::BadSignature));

        let other_es = encode(
            &Header::new(Algorithm::ES256),
            &claims,
            &EncodingKey::from_ec_pem(&pem("es256-other-private.pem")).unwrap(),
        )
        .unwrap();
        let v = JwtVerifier::new(&config(JwtAlgorithm::ES256)).unwrap();
        assert_eq!(v.verify(&other_es), Err(JwtError::BadSignature));

        // The same claims re-signed by the trusted key verify: only the key differed.
        let good = encode(
            &Header::new(Algorithm::ES256),
            &claims,
            &EncodingKey::from_ec_pem(&pem("es256-private.pem")).unwrap(),
        )
        .unwrap();
        assert_eq!(v.verify(&good).unwrap(), "m");
    }

    #[test]
    fn issuer_and_audience_when_configured() {
        let mut c = config(JwtAlgorithm::HS256);
        c.issuer = Some("https://api.example".into());
        c.audience = Some("payrelay".into());
        let v = JwtVerifier::new(&c).unwrap();
        let good = hs(
            json!({"merchant_id": "m", "exp": now() + 60, "iss": "https://api.example", "aud": "payrelay"}),
        );
        assert!(v.verify(&good).is_ok());
        let wrong = hs(
            json!({"merchant_id": "m", "exp": now() + 60, "iss": "https://evil", "aud": "payrelay"}),
        );
        assert_eq!(v.verify(&wrong), Err(JwtError::WrongIssuer));
        let wrong = hs(
            json!({"merchant_id": "m", "exp": now() + 60, "iss": "https://api.example", "aud": "other"}),
        );
        assert_eq!(v.verify(&wrong), Err(JwtError::WrongAudience));
        let several = hs(
            json!({"merchant_id": "m", "exp": now() + 60, "iss": "https://api.example", "aud": ["other", "payrelay"]}),
        );
        assert!(
            v.verify(&several).is_ok(),
            "one of several audiences is enough"
        );
    }

    /// Issue 12 item 14: a configured `issuer` / `audience` must be present in the token,
    /// not only right when present.
    #[test]
    fn configured_issuer_and_audience_are_required() {
        let mut c = config(JwtAlgorithm::HS256);
        c.issuer = Some("https://api.example".into());
        c.audience = Some("payrelay".into());
        let v = JwtVerifier::new(&c).unwrap();
        let no_iss = hs(json!({"merchant_id": "m", "exp": now() + 60, "aud": "payrelay"}));
        assert_eq!(v.verify(&no_iss), Err(JwtError::MissingClaim("iss".into())));
        let no_aud =
            hs(json!({"merchant_id": "m", "exp": now() + 60, "iss": "https://api.example"}));
        assert_eq!(v.verify(&no_aud), Err(JwtError::MissingClaim("aud".into())));
        let neither = hs(json!({"merchant_id": "m", "exp": now() + 60}));
        assert!(matches!(v.verify(&neither), Err(JwtError::MissingClaim(_))));

        // Only what is configured is required.
        let mut c = config(JwtAlgorithm::HS256);
        c.audience = Some("payrelay".into());
        let v = JwtVerifier::new(&c).unwrap();
        let aud_only = hs(json!({"merchant_id": "m", "exp": now() + 60, "aud": "payrelay"}));
        assert!(v.verify(&aud_only).is_ok());
        let plain = JwtVerifier::new(&config(JwtAlgorithm::HS256)).unwrap();
        let bare = hs(json!({"merchant_id": "m", "exp": now() + 60}));
        assert!(plain.verify(&bare).is_ok());
    }

    #[test]
    fn weak_or_missing_key_material_is_a_config_error() {
        let mut c = config(JwtAlgorithm::HS256);
        c.secret = Some(Secret::new("short"));
        assert!(JwtVerifier::new(&c).is_err());
        let mut c = config(JwtAlgorithm::RS256);
        c.public_key_file = None;
        assert!(JwtVerifier::new(&c).is_err());
    }
}
