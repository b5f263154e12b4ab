//! URLs as they may be logged: without the credentials they carry.
//!
//! Operators put secrets in URLs (`redis://default:password@host`, a JWKS URL with an
//! `?access_token=`), and a URL is exactly what an error message or a log line wants to
//! name. Every URL or DSN that reaches a log, an error or a metric passes through [`url`]
//! first: the user-info part and every query value become `***`, the fragment goes, and
//! what remains (scheme, host, port, path, parameter names) still says which endpoint is
//! meant.

const MASK: &str = "***";

/// `raw` with its user-info, query values and fragment masked.
pub fn url(raw: &str) -> String {
    let (before_fragment, fragment) = match raw.split_once('#') {
        Some((before, _)) => (before, Some(MASK)),
        None => (raw, None),
    };
    let (base, query) = match before_fragment.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (before_fragment, None),
    };
    let mut shown = without_userinfo(base);
    if let Some(query) = query {
        shown.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) => format!("{name}={MASK}"),
                // A bare `?token` may be the secret itself.
                None if pair.is_empty() => String::new(),
                None => MASK.to_string(),
            })
            .collect();
        shown.push_str(&pairs.join("&"));
    }
    if let Some(fragment) = fragment {
        shown.push('#');
        shown.push_str(fragment);
    }
    shown
}

/// `scheme://user:password@host/path` → `scheme://***@host/path`.
fn without_userinfo(base: &str) -> String {
    let Some((scheme, rest)) = base.split_once("://") else {
        return base.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://{MASK}@{host}{path}"),
        None => base.to_string(),
    }
}

/// `text` (an error message of a library that may have quoted `raw`) with every secret part
/// of `raw` masked: the URL itself, its password and its query values.
pub fn in_text(text: &str, raw: &str) -> String {
    let mut text = text.replace(raw, &url(raw));
    for secret in secrets(raw) {
        text = text.replace(secret, MASK);
    }
    text
}

/// The parts of `raw` that [`url`] masks, longest first (so one never hides in another).
fn secrets(raw: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let before_fragment = raw.split('#').next().unwrap_or(raw);
    let (base, query) = match before_fragment.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (before_fragment, None),
    };
    if let Some((_, rest)) = base.split_once("://") {
        let authority = rest.split('/').next().unwrap_or(rest);
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            found.push(userinfo);
            found.extend(userinfo.split(':'));
        }
    }
    for pair in query.unwrap_or("").split('&') {
        found.push(pair.split_once('=').map_or(pair, |(_, value)| value));
    }
    // Very short parts ("", "0", a user name like "u") would mask unrelated text.
    found.retain(|s| s.len() >= 4);
    found.sort_by_key(|s| std::cmp::Reverse(s.len()));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_masked_and_the_endpoint_stays_recognisable() {
        for (raw, shown) in [
            (
                "redis://default:pw@cache:6379/0",
                "redis://***@cache:6379/0",
            ),
            ("redis://:pw@cache", "redis://***@cache"),
            ("redis://cache:6379", "redis://cache:6379"),
            (
                "https://idp.example/jwks.json",
                "https://idp.example/jwks.json",
            ),
            (
                "https://u:p@idp.example/jwks?access_token=t&kid=1#frag",
                "https://***@idp.example/jwks?access_token=***&kid=***#***",
            ),
            (
                "https://idp.example/jwks?secret",
                "https://idp.example/jwks?***",
            ),
            ("https://a@b@host/p@x", "https://***@host/p@x"),
            ("sqlite://payrelay.db", "sqlite://payrelay.db"),
            ("sqlite:x.db?vfs=v", "sqlite:x.db?vfs=***"),
            (
                "postgres://app:pw@db/payrelay?sslmode=require",
                "postgres://***@db/payrelay?sslmode=***",
            ),
            ("not a url", "not a url"),
        ] {
            assert_eq!(url(raw), shown, "{raw}");
        }
    }

    #[test]
    fn library_messages_lose_the_secrets_they_quote() {
        let raw = "redis://default:hunter2@cache:6379/0?password=other-secret";
        let text = format!("failed to connect to {raw}; auth hunter2 refused; other-secret");
        let cleaned = in_text(&text, raw);
        assert!(!cleaned.contains("hunter2"), "{cleaned}");
        assert!(!cleaned.contains("other-secret"), "{cleaned}");
        assert!(
            cleaned.contains("redis://***@cache:6379/0?password=***"),
            "{cleaned}"
        );
    }
}
