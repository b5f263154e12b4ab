//! [`BrokerMessage`]s as bytes between nodes: MessagePack behind a version byte.
//!
//! Every field a hub needs to deliver a publication exactly as the publishing node would
//! travels with it: the audience (invariant 14), the excluded socket, the sender's user
//! id, the flags. Only per-node things stay behind: the encoding cache (each node encodes
//! once for its own subscribers) and the `Instant` it was accepted at, rebuilt from the
//! wall clock so publish-to-delivery latency is measured across nodes too.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{BrokerMessage, WhichConnections};
use crate::core::history::StreamPosition;
use crate::core::presence::Member;
use crate::core::{Audience, Disconnect, EventId, Principal, Publication, SocketId};

/// The first byte of every message; a node ignores (and counts) versions it cannot read.
const VERSION: u8 = 1;
/// A publication whose stream position Redis gave it (the history script): this byte,
/// `"<offset>.<epoch>"`, a newline, then a version-1 message. The script that assigns the
/// offset writes the header, so the position travels without re-encoding the body.
pub const POSITIONED: u8 = 2;
/// The longest position header read (an offset's 20 digits, a dot, an epoch).
const MAX_HEADER: usize = 64;

#[derive(Serialize, Deserialize)]
enum Wire<'a> {
    Publication(#[serde(borrow)] WirePublication<'a>),
    Terminate {
        #[serde(borrow)]
        app: Cow<'a, str>,
        #[serde(borrow)]
        user: Cow<'a, str>,
    },
    MemberAdded {
        #[serde(borrow)]
        app: Cow<'a, str>,
        #[serde(borrow)]
        channel: Cow<'a, str>,
        #[serde(borrow)]
        user: Cow<'a, str>,
        /// `user_info` as JSON text, if any.
        #[serde(borrow)]
        info: Option<Cow<'a, str>>,
    },
    MemberRemoved {
        #[serde(borrow)]
        app: Cow<'a, str>,
        #[serde(borrow)]
        channel: Cow<'a, str>,
        #[serde(borrow)]
        user: Cow<'a, str>,
    },
    Close {
        #[serde(borrow)]
        app: Cow<'a, str>,
        merchant: bool,
        #[serde(borrow)]
        id: Cow<'a, str>,
        #[serde(borrow)]
        which: WireWhich<'a>,
        reason: u8,
    },
}

#[derive(Serialize, Deserialize)]
struct WirePublication<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    app: Cow<'a, str>,
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow)]
    data: Cow<'a, str>,
    exclude: Option<u64>,
    #[serde(borrow)]
    user_id: Option<Cow<'a, str>>,
    relay_only: bool,
    from_client: bool,
    app_event: bool,
    #[serde(borrow)]
    audience: WireAudience<'a>,
    /// Microseconds since the Unix epoch.
    published_us: u64,
    /// Its place in the channel's stream, `"<offset>.<epoch>"`, when history keeps it.
    #[serde(borrow)]
    position: Option<Cow<'a, str>>,
}

#[derive(Serialize, Deserialize)]
enum WireAudience<'a> {
    Unmarked,
    User(#[serde(borrow)] Cow<'a, str>),
    Everyone,
}

#[derive(Serialize, Deserialize)]
enum WireWhich<'a> {
    Protocol(#[serde(borrow)] Cow<'a, str>),
    Credential(#[serde(borrow)] Cow<'a, str>),
    OlderThan {
        #[serde(borrow)]
        protocol: Cow<'a, str>,
        newest: u64,
        keep: u64,
    },
}

fn reason_code(reason: Disconnect) -> u8 {
    match reason {
        Disconnect::Shutdown => 0,
        Disconnect::SlowConsumer => 1,
        Disconnect::Terminated => 2,
        Disconnect::Replaced => 3,
        Disconnect::Revoked => 4,
    }
}

fn reason_of(code: u8) -> Option<Disconnect> {
    Some(match code {
        0 => Disconnect::Shutdown,
        1 => Disconnect::SlowConsumer,
        2 => Disconnect::Terminated,
        3 => Disconnect::Replaced,
        4 => Disconnect::Revoked,
        _ => return None,
    })
}

/// Protocol names are `&'static str` in the core; one arriving from another node is
/// interned, at most [`MAX_PROTOCOLS`] distinct names of at most 32 bytes (the adapters
/// name a handful), so a stray message cannot grow memory.
const MAX_PROTOCOLS: usize = 32;

fn intern_protocol(name: &str) -> Option<&'static str> {
    static NAMES: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    let names = names.get_or_insert_with(HashSet::new);
    if let Some(known) = names.get(name) {
        return Some(known);
    }
    if name.len() > 32 || names.len() >= MAX_PROTOCOLS {
        return None;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    Some(leaked)
}

fn micros_since_epoch(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A publication as a version-1 message.
pub fn encode_publication(p: &Publication) -> Vec<u8> {
    write(&Wire::Publication(wire_publication(p)))
}

fn wire_publication(p: &Publication) -> WirePublication<'_> {
    WirePublication {
        id: Cow::Owned(p.id.to_string()),
        app: Cow::Borrowed(&p.app_id),
        channel: Cow::Borrowed(&p.channel),
        event: Cow::Borrowed(&p.event),
        data: Cow::Borrowed(&p.data),
        exclude: p.exclude.map(SocketId::to_u64),
        user_id: p.user_id.as_deref().map(Cow::Borrowed),
        relay_only: p.relay_only,
        from_client: p.from_client,
        app_event: p.app_event,
        audience: match &p.audience {
            Audience::Unmarked => WireAudience::Unmarked,
            Audience::User(user) => WireAudience::User(Cow::Borrowed(user)),
            Audience::Everyone => WireAudience::Everyone,
        },
        published_us: micros_since_epoch(p.published_at),
        position: p.position().map(|at| Cow::Owned(at.to_string())),
    }
}

fn write(wire: &Wire<'_>) -> Vec<u8> {
    let mut out = vec![VERSION];
    // Serialising these plain structs into a Vec cannot fail.
    let _ = rmp_serde::encode::write(&mut out, wire);
    out
}

pub fn encode(message: &BrokerMessage) -> Vec<u8> {
    let wire = match message {
        BrokerMessage::Publication(p) => Wire::Publication(wire_publication(p)),
        BrokerMessage::MemberAdded {
            app_id,
            channel,
            member,
        } => Wire::MemberAdded {
            app: Cow::Borrowed(app_id),
            channel: Cow::Borrowed(channel),
            user: Cow::Borrowed(&member.user_id),
            info: member
                .user_info
                .as_ref()
                .map(|info| Cow::Owned(info.to_string())),
        },
        BrokerMessage::MemberRemoved {
            app_id,
            channel,
            user_id,
        } => Wire::MemberRemoved {
            app: Cow::Borrowed(app_id),
            channel: Cow::Borrowed(channel),
            user: Cow::Borrowed(user_id),
        },
        BrokerMessage::TerminateUser { app_id, user_id } => Wire::Terminate {
            app: Cow::Borrowed(app_id),
            user: Cow::Borrowed(user_id),
        },
        BrokerMessage::CloseConnections {
            app_id,
            principal,
            which,
            reason,
        } => Wire::Close {
            app: Cow::Borrowed(app_id),
            merchant: matches!(principal, Principal::Merchant(_)),
            id: Cow::Borrowed(principal.id()),
            which: match which {
                WhichConnections::Protocol(p) => WireWhich::Protocol(Cow::Borrowed(p)),
                WhichConnections::Credential(c) => WireWhich::Credential(Cow::Borrowed(c)),
                WhichConnections::OlderThan {
                    protocol,
                    newest,
                    keep,
                } => WireWhich::OlderThan {
                    protocol: Cow::Borrowed(protocol),
                    newest: newest.to_u64(),
                    keep: *keep as u64,
                },
            },
            reason: reason_code(*reason),
        },
    };
    write(&wire)
}

/// Why a message from another node was not read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown message version {0}")]
    Version(u8),
    #[error("empty message")]
    Empty,
    #[error("malformed message: {0}")]
    Malformed(String),
}

pub fn decode(bytes: &[u8]) -> Result<BrokerMessage, DecodeError> {
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version == POSITIONED {
        let end = body
            .iter()
            .take(MAX_HEADER)
            .position(|&b| b == b'\n')
            .ok_or_else(|| DecodeError::Malformed("position header".into()))?;
        let position = std::str::from_utf8(&body[..end])
            .ok()
            .and_then(StreamPosition::parse)
            .ok_or_else(|| DecodeError::Malformed("position".into()))?;
        let inner = &body[end + 1..];
        if inner.first() != Some(&VERSION) {
            return Err(DecodeError::Malformed(
                "a position before no message".into(),
            ));
        }
        let message = decode(inner)?;
        let BrokerMessage::Publication(publication) = &message else {
            return Err(DecodeError::Malformed("a position on a command".into()));
        };
        publication.set_position(position);
        return Ok(message);
    }
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let wire: Wire<'_> =
        rmp_serde::from_slice(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let malformed = |what: &str| DecodeError::Malformed(what.to_string());
    Ok(match wire {
        Wire::Publication(p) => {
            let id = EventId::parse(&p.id).ok_or_else(|| malformed("event id"))?;
            let published_at = UNIX_EPOCH + Duration::from_micros(p.published_us);
            // The same moment on this node's monotonic clock (clocks of a cluster agree
            // closely enough for a latency histogram; a future time counts as now).
            let age = SystemTime::now()
                .duration_since(published_at)
                .unwrap_or_default();
            let now = Instant::now();
            let mut publication = Publication::new(
                Arc::from(p.app),
                Arc::from(p.channel),
                p.event.into(),
                p.data.into(),
            );
            publication.id = id;
            publication.exclude = p.exclude.map(SocketId::from_u64);
            publication.user_id = p.user_id.map(Into::into);
            publication.relay_only = p.relay_only;
            publication.from_client = p.from_client;
            publication.app_event = p.app_event;
            publication.audience = match p.audience {
                WireAudience::Unmarked => Audience::Unmarked,
                WireAudience::User(user) => Audience::User(user.into()),
                WireAudience::Everyone => Audience::Everyone,
            };
            publication.published_at = published_at;
            if let Some(position) = p.position {
                let position =
                    StreamPosition::parse(&position).ok_or_else(|| malformed("position"))?;
                publication.set_position(position);
            }
            publication.accepted_at = now.checked_sub(age).unwrap_or(now);
            BrokerMessage::Publication(Arc::new(publication))
        }
        Wire::MemberAdded {
            app,
            channel,
            user,
            info,
        } => BrokerMessage::MemberAdded {
            app_id: Arc::from(app),
            channel: Arc::from(channel),
            member: Arc::new(Member {
                user_id: Arc::from(user),
                user_info: match info {
                    Some(info) => {
                        Some(serde_json::from_str(&info).map_err(|_| malformed("user_info"))?)
                    }
                    None => None,
                },
            }),
        },
        Wire::MemberRemoved { app, channel, user } => BrokerMessage::MemberRemoved {
            app_id: Arc::from(app),
            channel: Arc::from(channel),
            user_id: Arc::from(user),
        },
        Wire::Terminate { app, user } => BrokerMessage::TerminateUser {
            app_id: Arc::from(app),
            user_id: Arc::from(user),
        },
        Wire::Close {
            app,
            merchant,
            id,
            which,
            reason,
        } => BrokerMessage::CloseConnections {
            app_id: Arc::from(app),
            principal: if merchant {
                Principal::merchant(&id)
            } else {
                Principal::user(&id)
            },
            which: match which {
                WireWhich::Protocol(p) => WhichConnections::Protocol(
                    intern_protocol(&p).ok_or_else(|| malformed("protocol"))?,
                ),
                WireWhich::Credential(c) => WhichConnections::Credential(Arc::from(c)),
                WireWhich::OlderThan {
                    protocol,
                    newest,
                    keep,
                } => WhichConnections::OlderThan {
                    protocol: intern_protocol(&protocol).ok_or_else(|| malformed("protocol"))?,
                    newest: SocketId::from_u64(newest),
                    keep: usize::try_from(keep).unwrap_or(usize::MAX),
                },
            },
            reason: reason_of(reason).ok_or_else(|| malformed("reason"))?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publication_arrives_as_it_left() {
        let mut p = Publication::new(
            "app".into(),
            "private-c".into(),
            "e".into(),
            r#"{"a":1}"#.into(),
        );
        p.exclude = Some(SocketId::random());
        p.user_id = Some("u1".into());
        p.relay_only = true;
        p.from_client = true;
        p.app_event = true;
        p.audience = Audience::User("u9".into());
        p.set_position(StreamPosition::new(7, "ep0ch".into()));
        let p = Arc::new(p);
        let BrokerMessage::Publication(back) =
            decode(&encode(&BrokerMessage::Publication(p.clone()))).unwrap()
        else {
            panic!("not a publication")
        };
        assert_eq!(back.id, p.id);
        assert_eq!(
            (&*back.app_id, &*back.channel, &*back.event, &*back.data),
            ("app", "private-c", "e", r#"{"a":1}"#)
        );
        assert_eq!(back.exclude, p.exclude);
        assert_eq!(back.user_id.as_deref(), Some("u1"));
        assert!(back.relay_only && back.from_client && back.app_event);
        assert_eq!(back.audience, Audience::User("u9".into()));
        assert_eq!(back.position(), p.position());
        assert!(back.accepted_at.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn commands_arrive_as_they_left() {
        let newest = SocketId::random();
        let message = BrokerMessage::CloseConnections {
            app_id: "1".into(),
            principal: Principal::merchant("m1"),
            which: WhichConnections::OlderThan {
                protocol: "plain",
                newest,
                keep: 2,
            },
            reason: Disconnect::Replaced,
        };
        match decode(&encode(&message)).unwrap() {
            BrokerMessage::CloseConnections {
                app_id,
                principal,
                which,
                reason,
            } => {
                assert_eq!(&*app_id, "1");
                assert_eq!(principal, Principal::merchant("m1"));
                assert_eq!(
                    which,
                    WhichConnections::OlderThan {
                        protocol: "plain",
                        newest,
                        keep: 2
                    }
                );
                assert_eq!(reason, Disconnect::Replaced);
            }
            other => panic!("{other:?}"),
        }
        let terminate = BrokerMessage::TerminateUser {
            app_id: "1".into(),
            user_id: "u".into(),
        };
        assert!(matches!(
            decode(&encode(&terminate)).unwrap(),
            BrokerMessage::TerminateUser { user_id, .. } if &*user_id == "u"
        ));
    }

    #[test]
    fn member_announcements_arrive_as_they_left() {
        let member = Arc::new(Member {
            user_id: "u1".into(),
            user_info: Some(serde_json::json!({"name": "Ann", "n": 1.5})),
        });
        let added = BrokerMessage::MemberAdded {
            app_id: "1".into(),
            channel: "presence-x".into(),
            member: member.clone(),
        };
        match decode(&encode(&added)).unwrap() {
            BrokerMessage::MemberAdded {
                channel, member: m, ..
            } => {
                assert_eq!(&*channel, "presence-x");
                assert_eq!(*m, *member);
            }
            other => panic!("{other:?}"),
        }
        let removed = BrokerMessage::MemberRemoved {
            app_id: "1".into(),
            channel: "presence-x".into(),
            user_id: "u1".into(),
        };
        assert!(matches!(
            decode(&encode(&removed)).unwrap(),
            BrokerMessage::MemberRemoved { user_id, .. } if &*user_id == "u1"
        ));
    }

    #[test]
    fn a_position_header_from_the_history_script_is_read() {
        let p = Arc::new(Publication::new(
            "1".into(),
            "c".into(),
            "e".into(),
            "d".into(),
        ));
        let mut bytes = vec![POSITIONED];
        bytes.extend_from_slice(b"42.AbC9\n");
        bytes.extend(encode(&BrokerMessage::Publication(p.clone())));
        let BrokerMessage::Publication(back) = decode(&bytes).unwrap() else {
            panic!("not a publication")
        };
        assert_eq!(
            back.position(),
            Some(&StreamPosition::new(42, "AbC9".into()))
        );
        assert_eq!(back.id, p.id);
        for bad in [
            &b"\x02"[..],
            b"\x02no newline",
            b"\x02x.y\n\x01",
            b"\x0242.ab\n",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        let command = encode(&BrokerMessage::TerminateUser {
            app_id: "1".into(),
            user_id: "u".into(),
        });
        let mut bytes = b"\x021.a\n".to_vec();
        bytes.extend(command);
        assert!(decode(&bytes).is_err());
    }

    #[test]
    fn junk_is_refused_not_panicked_on() {
        assert!(decode(b"").is_err());
        assert!(decode(b"\x02abc").is_err());
        assert!(decode(b"\x01\xff\xff").is_err());
        let mut long = vec![VERSION];
        long.extend(std::iter::repeat_n(0x91u8, 10_000));
        assert!(decode(&long).is_err());
    }
}
