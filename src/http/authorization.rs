//! The credentials of an `Authorization` header for one scheme.
//!
//! RFC 7235 2.1: the scheme is case-insensitive, so `bearer x`, `Bearer x` and `BEARER x`
//! are the same credential (clients and proxies differ in how they write it); the
//! credentials themselves are taken as given, without the surrounding whitespace.

use axum::http::{HeaderMap, header};

/// The credentials after `scheme` in the `Authorization` header, if it uses that scheme
/// and carries any.
pub fn credentials<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<&'a str> {
    let value = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim_start();
    let (given, rest) = value.split_once(' ')?;
    if !given.eq_ignore_ascii_case(scheme) {
        return None;
    }
    Some(rest.trim()).filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn of(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_scheme_matches_in_any_case() {
        for value in ["Bearer abc", "bearer abc", "BEARER  abc ", " bEaReR abc"] {
            assert_eq!(credentials(&of(value), "Bearer"), Some("abc"), "{value}");
        }
        assert_eq!(credentials(&of("Basic abc"), "Bearer"), None);
        assert_eq!(credentials(&of("Bearerabc"), "Bearer"), None);
        assert_eq!(credentials(&of("Bearer "), "Bearer"), None);
        assert_eq!(credentials(&HeaderMap::new(), "Bearer"), None);
        assert_eq!(
            credentials(&of("basic a2V5OnNlY3JldA=="), "Basic"),
            Some("a2V5OnNlY3JldA==")
        );
    }
}
