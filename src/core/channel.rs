//! Channel names and what their prefixes mean.
//!
//! Channel names follow Pusher's rules because Pusher's naming is the one every wire style
//! maps onto (see ARCHITECTURE.md): the prefix decides who may subscribe and whether the
//! channel keeps its last event. The core needs the cache rule; adapters need the rest.

/// Longest channel name accepted (Pusher's limit).
pub const MAX_CHANNEL_NAME_LEN: usize = 164;

/// The channel a signed-in Pusher user receives `sendToUser` events on.
pub const SERVER_TO_USER_PREFIX: &str = "#server-to-user-";

/// The first character of the node's internal channels (other than
/// [`SERVER_TO_USER_PREFIX`]): `#payload-{uuid}`, say. Only the node's own rooms publish
/// to them ([`Core::publish_internal`](super::Core::publish_internal)) and subscribe
/// connections to them ([`Session::subscribe_internal`](super::Session::subscribe_internal)).
/// [`classify`] refuses them, so no API or client naming one gets anywhere: every adapter
/// that validates a name with it refuses them without knowing they exist.
pub const INTERNAL_MARK: char = '#';

/// Whether `name` is a well-formed internal channel (`#` + a name [`classify`] accepts,
/// and not `#server-to-user-…`).
pub fn is_internal(name: &str) -> bool {
    match name.strip_prefix(INTERNAL_MARK) {
        Some(rest) => {
            !name.starts_with(SERVER_TO_USER_PREFIX)
                && name.len() <= MAX_CHANNEL_NAME_LEN
                && !rest.is_empty()
                && classify(rest).is_ok()
        }
        None => false,
    }
}

/// Whether `name` names an internal channel, without validating the rest (cheap: for
/// filters on hot paths).
pub fn looks_internal(name: &str) -> bool {
    name.starts_with(INTERNAL_MARK) && !name.starts_with(SERVER_TO_USER_PREFIX)
}

/// Access rule implied by a channel's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    Public,
    Private,
    PrivateEncrypted,
    Presence,
    /// `#server-to-user-{id}`: only the socket signed in as `{id}` may subscribe.
    ServerToUser,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelInfo {
    pub kind: ChannelKind,
    /// `cache-`, `private-cache-`, `private-encrypted-cache-`, `presence-cache-`.
    pub cached: bool,
}

impl ChannelKind {
    pub fn needs_auth(self) -> bool {
        matches!(
            self,
            ChannelKind::Private | ChannelKind::PrivateEncrypted | ChannelKind::Presence
        )
    }
}

/// Why a channel name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelNameError {
    #[error("channel name is empty")]
    Empty,
    #[error("channel name is longer than {MAX_CHANNEL_NAME_LEN} characters")]
    TooLong,
    #[error("channel name contains a character other than letters, digits and _ - = @ , . ;")]
    BadCharacter,
}

/// Classifies a channel name, refusing names Pusher would refuse.
pub fn classify(name: &str) -> Result<ChannelInfo, ChannelNameError> {
    if name.is_empty() {
        return Err(ChannelNameError::Empty);
    }
    if name.len() > MAX_CHANNEL_NAME_LEN {
        return Err(ChannelNameError::TooLong);
    }
    let (rest, server_to_user) = match name.strip_prefix(SERVER_TO_USER_PREFIX) {
        Some(user) if !user.is_empty() => (user, true),
        _ => (name, false),
    };
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"_-=@,.;".contains(&b);
    if !rest.bytes().all(allowed) {
        return Err(ChannelNameError::BadCharacter);
    }
    if server_to_user {
        return Ok(ChannelInfo {
            kind: ChannelKind::ServerToUser,
            cached: false,
        });
    }
    let info = |kind, cached| ChannelInfo { kind, cached };
    Ok(if name.starts_with("private-encrypted-cache-") {
        info(ChannelKind::PrivateEncrypted, true)
    } else if name.starts_with("private-encrypted-") {
        info(ChannelKind::PrivateEncrypted, false)
    } else if name.starts_with("private-cache-") {
        info(ChannelKind::Private, true)
    } else if name.starts_with("private-") {
        info(ChannelKind::Private, false)
    } else if name.starts_with("presence-cache-") {
        info(ChannelKind::Presence, true)
    } else if name.starts_with("presence-") {
        info(ChannelKind::Presence, false)
    } else {
        info(ChannelKind::Public, name.starts_with("cache-"))
    })
}

/// Whether the channel keeps its last event for new subscribers (cheap, no validation).
pub fn is_cache_channel(name: &str) -> bool {
    [
        "cache-",
        "private-cache-",
        "private-encrypted-cache-",
        "presence-cache-",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// Whether this is a presence channel (cheap, no validation).
pub fn is_presence_channel(name: &str) -> bool {
    name.starts_with("presence-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_decide_kind_and_cache() {
        let c = |n| classify(n).unwrap();
        assert_eq!(c("orders").kind, ChannelKind::Public);
        assert!(!c("orders").cached);
        assert!(c("cache-rates").cached);
        assert_eq!(c("private-merchant.m_001").kind, ChannelKind::Private);
        assert_eq!(c("private-cache-x").kind, ChannelKind::Private);
        assert!(c("private-cache-x").cached);
        assert_eq!(c("private-encrypted-x").kind, ChannelKind::PrivateEncrypted);
        assert!(c("private-encrypted-cache-x").cached);
        assert_eq!(c("presence-room").kind, ChannelKind::Presence);
        assert!(c("presence-cache-room").cached);
        assert_eq!(c("#server-to-user-42").kind, ChannelKind::ServerToUser);
        for name in [
            "cache-a",
            "private-cache-a",
            "private-encrypted-cache-a",
            "presence-cache-a",
        ] {
            assert!(is_cache_channel(name));
        }
        assert!(!is_cache_channel("private-a"));
    }

    #[test]
    fn bad_names_are_refused() {
        assert_eq!(classify(""), Err(ChannelNameError::Empty));
        assert_eq!(classify(&"a".repeat(165)), Err(ChannelNameError::TooLong));
        assert!(classify(&"a".repeat(164)).is_ok());
        assert_eq!(classify("has space"), Err(ChannelNameError::BadCharacter));
        assert_eq!(classify("#other"), Err(ChannelNameError::BadCharacter));
        assert_eq!(
            classify("#server-to-user-"),
            Err(ChannelNameError::BadCharacter)
        );
        assert_eq!(classify("ünïcode"), Err(ChannelNameError::BadCharacter));
        assert!(classify("a_b-c=d@e,f.g;h").is_ok());
    }

    #[test]
    fn internal_channels_are_refused_by_classify() {
        assert!(is_internal("#payload-0f1e2d3c-aaaa-4bbb-8ccc-0123456789ab"));
        assert!(classify("#payload-0f1e").is_err(), "no client may name one");
        assert!(!is_internal("#server-to-user-42"));
        assert!(!is_internal("#"));
        assert!(!is_internal("#has space"));
        assert!(!is_internal("payload-1"));
        assert!(!is_internal(&format!("#{}", "a".repeat(164))));
    }
}
