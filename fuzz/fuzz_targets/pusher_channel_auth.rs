//! What a Pusher client presents to join private and presence channels and to sign in,
//! one field per line:
//!
//! ```text
//! socket_id
//! channel
//! channel_data      (presence: {"user_id":..,"user_info":..})
//! user_data         (sign-in: {"id":..})
//! auth              (key:hex signature)
//! ```
//!
//! Invariants: no panic; a socket id that parses survives display and parse; a channel
//! name that classifies is within Pusher's rules; a made-up `auth` is refused for every
//! kind of check while the signature the auth endpoint issues is accepted; presence
//! members and sign-in users come out only with non-empty ids, the ones the JSON names;
//! merchant channel owners round-trip through the channel name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use payrelay::fuzzing::{self, SocketId};
use payrelay_fuzz::{assert_only_signed, check_channel_data, check_signin, fields, text};

fuzz_target!(|bytes: &[u8]| {
    let parts = fields(bytes, 5);
    let field = |i: usize| parts.get(i).and_then(|f| text(f)).unwrap_or("");
    let (socket_id, channel, channel_data, user_data, auth) =
        (field(0), field(1), field(2), field(3), field(4));

    if let Some(id) = SocketId::parse(socket_id) {
        assert_eq!(
            SocketId::parse(&id.to_string()),
            Some(id),
            "socket id {socket_id:?}"
        );
    }
    if fuzzing::classify_channel(channel).is_ok() {
        assert!(
            !channel.is_empty() && channel.len() <= 164,
            "{channel:?} classified"
        );
    }

    let app = payrelay_fuzz::app();
    let auth = Some(auth).filter(|a| !a.is_empty());
    let private = fuzzing::check_private(&app, socket_id, channel, auth);
    assert_only_signed(
        private,
        auth,
        &fuzzing::sign_private(&app, socket_id, channel),
    );
    let presence = fuzzing::check_presence(&app, socket_id, channel, channel_data, auth);
    assert_only_signed(
        presence,
        auth,
        &fuzzing::sign_presence(&app, socket_id, channel, channel_data),
    );
    let signin = fuzzing::check_signin(&app, socket_id, user_data, auth.unwrap_or(""));
    let signin_signed = fuzzing::sign(&app, &format!("{socket_id}::user::{user_data}"));
    assert_only_signed(signin, auth, &signin_signed);
    assert_eq!(
        fuzzing::check_signin(&app, socket_id, user_data, &signin_signed),
        Ok(())
    );

    check_channel_data(channel_data);
    check_signin(user_data);

    // Merchant channels: the owner named in a channel is a valid merchant id, and the
    // channel built for it names it again.
    if let Some(merchant) = fuzzing::merchant_channel_owner(channel) {
        assert!(
            fuzzing::valid_merchant_id(merchant),
            "{channel:?} owned by {merchant:?}"
        );
        assert!(channel.ends_with(merchant));
    }
    // The first line doubles as a merchant id.
    let merchant = socket_id;
    for kind in fuzzing::MERCHANT_CHANNEL_KINDS {
        if let Some(built) = fuzzing::merchant_private_channel(kind, merchant) {
            assert_eq!(fuzzing::merchant_channel_owner(&built), Some(merchant));
            assert!(
                fuzzing::classify_channel(&built).is_ok(),
                "{built:?} is no channel"
            );
        }
    }
});
