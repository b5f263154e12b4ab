//! How the plain protocol's logical channels map onto core channels.
//!
//! Clients name channels as the seed does (`settings`, `notification.events`). In the
//! core, a global channel G is `private-all.G` and user U's channel C is
//! `private-user-U.C`: one core channel per user and channel, so an event published for U
//! can only reach U's sockets. Both are `private-` channels, so no Pusher client can
//! subscribe to them without a signature only the app's backend can make; the Pusher HTTP
//! API can still publish to them, through the same core path.

use crate::core::App;

const GLOBAL_PREFIX: &str = "private-all.";
const USER_PREFIX: &str = "private-user-";

/// Whether a logical channel is global (everyone) or per user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Global,
    User,
}

pub fn scope(app: &App, channel: &str) -> Option<Scope> {
    let plain = &app.plain;
    if plain.global_channels.iter().any(|c| c == channel) {
        Some(Scope::Global)
    } else if plain.user_channels.iter().any(|c| c == channel) {
        Some(Scope::User)
    } else {
        None
    }
}

/// The core channel a user's socket subscribes to for `channel`.
pub fn core_channel(scope: Scope, channel: &str, user_id: &str) -> String {
    match scope {
        Scope::Global => format!("{GLOBAL_PREFIX}{channel}"),
        Scope::User => format!("{USER_PREFIX}{user_id}.{channel}"),
    }
}

/// The logical channel a core channel stands for (what clients see in `channel`).
pub fn logical_channel(core_channel: &str) -> &str {
    if let Some(channel) = core_channel.strip_prefix(GLOBAL_PREFIX) {
        return channel;
    }
    if let Some(rest) = core_channel.strip_prefix(USER_PREFIX) {
        // User ids contain no `.` (tokens::valid_user_id), so the first `.` ends the id.
        if let Some((_, channel)) = rest.split_once('.') {
            return channel;
        }
    }
    core_channel
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_names_round_trip() {
        let user = core_channel(Scope::User, "notification.events", "120045");
        assert_eq!(user, "private-user-120045.notification.events");
        assert_eq!(logical_channel(&user), "notification.events");
        let global = core_channel(Scope::Global, "settings", "120045");
        assert_eq!(global, "private-all.settings");
        assert_eq!(logical_channel(&global), "settings");
        assert!(crate::core::channel::classify(&user).is_ok());
    }
}
