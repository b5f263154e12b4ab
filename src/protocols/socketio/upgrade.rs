//! `GET /socket.io/?EIO=4&transport=websocket`: the WebSocket handshake, done here rather
//! than inside socketioxide, so that the connection socketioxide serves is a
//! [`SwitchedIo`] whose switch the bridge can flip (see `transport.rs`). Everything after
//! the handshake (Engine.IO open packet, heartbeats, Socket.IO framing) is socketioxide's.
//!
//! Only the WebSocket transport is served: anything else gets a 400 that says so, before
//! it could reach socketioxide.

use std::fmt::Display;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::service::Service;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::transport::SwitchedIo;

/// The connection socketioxide is handed.
pub(super) type Connection = SwitchedIo<TokioIo<Upgraded>>;

/// A refusal in the shape of Engine.IO's own errors (`{"code", "message"}`).
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    code: u8,
    message: String,
}

fn refuse(status: StatusCode, code: u8, message: &str) -> Refusal {
    Refusal {
        status,
        code,
        message: message.to_string(),
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = json!({"code": self.code, "message": self.message});
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UPGRADE_REQUIRED {
            // RFC 6455 4.4: name the version this server speaks.
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        response
    }
}

fn query_value<'a>(query: &'a str, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Why this request is not a Socket.IO v4 WebSocket handshake we serve, if it is not.
fn check_transport(query: &str) -> Result<(), Refusal> {
    if query_value(query, "transport").as_deref() != Some("websocket") {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            3,
            "Only the websocket transport is supported: connect with transports: ['websocket'] (EIO=4&transport=websocket)",
        ));
    }
    if query_value(query, "EIO").as_deref() != Some("4") {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            5,
            "Unsupported protocol version: Engine.IO 4 (socket.io-client v3 and later, EIO=4) only",
        ));
    }
    // A sid names a long-polling session to upgrade, and there are none.
    if query_value(query, "sid").is_some() {
        return Err(refuse(StatusCode::BAD_REQUEST, 1, "Session ID unknown"));
    }
    Ok(())
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// RFC 6455 4.2.1: the client's handshake; returns `Sec-WebSocket-Accept`'s value.
fn check_handshake(method: &Method, headers: &HeaderMap) -> Result<HeaderValue, Refusal> {
    let not_websocket = |why: &str| {
        refuse(
            StatusCode::BAD_REQUEST,
            3,
            &format!("Not a WebSocket handshake: {why}"),
        )
    };
    if method != Method::GET {
        return Err(not_websocket("the method must be GET"));
    }
    if !has_token(headers, header::UPGRADE, "websocket") {
        return Err(not_websocket("`Upgrade: websocket` is missing"));
    }
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Err(not_websocket("`Connection: Upgrade` is missing"));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        let mut refusal = not_websocket("`Sec-WebSocket-Version` must be 13");
        refusal.status = StatusCode::UPGRADE_REQUIRED;
        return Err(refusal);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| not_websocket("`Sec-WebSocket-Key` is missing"))?;
    HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
        .map_err(|_| not_websocket("bad `Sec-WebSocket-Key`"))
}

/// Answers the handshake with 101 and, once hyper hands over the connection, gives it to
/// socketioxide's service wrapped in a [`SwitchedIo`], whose switch travels in the
/// request's extensions to the connect middleware.
pub(super) async fn upgrade<S>(service: S, mut request: Request) -> Response
where
    S: Service<(Connection, axum::http::Request<()>), Response = ()> + Send + 'static,
    S::Error: Display,
    S::Future: Send,
{
    let query = request.uri().query().unwrap_or("");
    if let Err(refusal) = check_transport(query) {
        return refusal.into_response();
    }
    let accept = match check_handshake(request.method(), request.headers()) {
        Ok(accept) => accept,
        Err(refusal) => return refusal.into_response(),
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let (parts, _body) = request.into_parts();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!("socket.io upgrade failed: {e}");
                return;
            }
        };
        let (io, switch) = SwitchedIo::new(TokioIo::new(upgraded));
        let mut parts = parts;
        parts.extensions.insert(switch);
        if let Err(e) = service
            .call((io, axum::http::Request::from_parts(parts, ())))
            .await
        {
            tracing::debug!("socket.io connection refused by engine.io: {e}");
        }
    });
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::UPGRADE, HeaderValue::from_static("websocket")),
            (header::CONNECTION, HeaderValue::from_static("Upgrade")),
            (header::SEC_WEBSOCKET_ACCEPT, accept),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_engine_io_4_over_websocket_without_a_session() {
        assert!(check_transport("EIO=4&transport=websocket&apiKey=x").is_ok());
        for query in [
            "EIO=4&transport=polling",
            "EIO=4",
            "EIO=3&transport=websocket",
            "transport=websocket",
            "EIO=4&transport=websocket&sid=abc",
        ] {
            assert_eq!(
                check_transport(query).unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{query}"
            );
        }
    }

    #[test]
    fn the_handshake_is_checked_and_answered_as_rfc_6455_says() {
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        headers.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        // RFC 6455 1.3's example.
        assert_eq!(
            check_handshake(&Method::GET, &headers).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(check_handshake(&Method::POST, &headers).is_err());
        headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert_eq!(
            check_handshake(&Method::GET, &headers).unwrap_err().status,
            StatusCode::UPGRADE_REQUIRED
        );
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        headers.remove(header::SEC_WEBSOCKET_KEY);
        assert!(check_handshake(&Method::GET, &headers).is_err());
    }
}
