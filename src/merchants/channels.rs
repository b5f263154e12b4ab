//! The channels a merchant may listen to: `private-merchant.{id}`,
//! `private-payments.{id}`, `private-notifications.{id}`, and their presence and
//! end-to-end encrypted forms. Anything else is refused by the auth endpoint.

/// The kinds of merchant channel, as the backend API names them.
pub const KINDS: [&str; 3] = ["merchant", "payments", "notifications"];

const PREFIXES: [&str; 3] = ["private-encrypted-", "private-", "presence-"];

/// The merchant a channel belongs to, if it is a merchant channel.
pub fn owner(channel: &str) -> Option<&str> {
    let rest = PREFIXES.iter().find_map(|p| channel.strip_prefix(p))?;
    let (kind, merchant) = rest.split_once('.')?;
    (KINDS.contains(&kind) && super::store::valid_merchant_id(merchant)).then_some(merchant)
}

/// The private channel for `kind` of `merchant` (what `/v1/events` publishes to).
pub fn private_channel(kind: &str, merchant: &str) -> Option<String> {
    (KINDS.contains(&kind) && super::store::valid_merchant_id(merchant))
        .then(|| format!("private-{kind}.{merchant}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merchant_channels_in_every_form() {
        for channel in [
            "private-merchant.merchant_001",
            "private-payments.merchant_001",
            "private-notifications.merchant_001",
            "presence-payments.merchant_001",
            "private-encrypted-merchant.merchant_001",
        ] {
            assert_eq!(owner(channel), Some("merchant_001"), "{channel}");
        }
    }

    #[test]
    fn other_channels_have_no_owner() {
        for channel in [
            "test-channel",
            "private-merchant.",
            "private-orders.m1",
            "merchant.m1",
            "private-merchant.m1.extra",
            "private-cache-merchant.m1",
        ] {
            assert_eq!(owner(channel), None, "{channel}");
        }
    }

    #[test]
    fn publishing_channels() {
        assert_eq!(
            private_channel("payments", "m1").as_deref(),
            Some("private-payments.m1")
        );
        assert_eq!(private_channel("orders", "m1"), None);
        assert_eq!(private_channel("payments", "a.b"), None);
    }
}
