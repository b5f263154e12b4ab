//! Channel history in Redis: every node of a cluster appends to, and recovers from, the
//! same streams, so a client that reconnects to any node resumes where it left off.
//!
//! Per channel of an app with history on:
//! - `{p}{app}:history:{channel}`: a Redis stream, entry id `0-<offset>`, fields `t` (the
//!   publication's time, ms) and `m` (the message exactly as it was published), at most
//!   `size` entries (`MAXLEN =`);
//! - `{p}{app}:history-meta:{channel}`: a hash of `epoch` and `offset` (the last given).
//!
//! One script gives a publication the next offset, appends it, keeps a cache channel's
//! last event, and `PUBLISH`es it, with its position in a header the script writes
//! ([`wire::POSITIONED`]): the order Redis delivers a channel's publications in is their
//! offset order, on every node. The Redis broker then leaves these publications alone
//! (they are delivered already). Both keys expire `ttl_secs` after the stream's last
//! publication; an event older than `ttl_secs` is not served even while its stream
//! lives. A stream whose keys are gone (expired, evicted, flushed, a restarted Redis)
//! starts again with a new epoch, so a position from before is answered `Gone`, never
//! with a silent gap.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use crate::core::broker::redis::Names;
use crate::core::broker::wire;
use crate::core::channel::is_cache_channel;
use crate::core::history::{Appended, History, HistoryError, Recovered, StreamPosition, keeps};
use crate::core::{App, BrokerMessage, Publication};

/// Appends, caches and publishes. KEYS: stream, meta, cache. ARGV: the message (version
/// 1), size, ttl ms, a fresh epoch (used if the stream has none), the Pub/Sub channel,
/// the publication's time (ms), the cache ttl (ms; 0: not a cache channel).
const APPEND: &str = r"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[4]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'offset', 0)
end
local offset = redis.call('HINCRBY', KEYS[2], 'offset', 1)
local message = string.char(2) .. offset .. '.' .. epoch .. '\n' .. ARGV[1]
redis.call('XADD', KEYS[1], 'MAXLEN', '=', ARGV[2], '0-' .. offset, 't', ARGV[6], 'm', message)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if tonumber(ARGV[7]) > 0 then
  redis.call('SET', KEYS[3], message, 'PX', ARGV[7])
end
redis.call('PUBLISH', ARGV[5], message)
return {offset, epoch}
";

/// The stream's position, creating an empty stream (offset 0, ARGV[1] as its epoch) if
/// it has none. KEYS: stream, meta. ARGV: a fresh epoch, ttl ms.
const LATEST: &str = r"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'offset', 0)
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return {tonumber(redis.call('HGET', KEYS[2], 'offset')), epoch}
";

pub struct RedisHistory {
    names: Names,
    connection: ConnectionManager,
    timeout: Duration,
    cache_ttl: Duration,
    append: redis::Script,
    latest: redis::Script,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// One stream entry as `XRANGE` returns it.
type Entry = (String, Vec<Vec<u8>>);

impl RedisHistory {
    pub fn new(
        names: Names,
        connection: ConnectionManager,
        timeout: Duration,
        cache_ttl: Duration,
    ) -> Self {
        RedisHistory {
            names,
            connection,
            timeout,
            cache_ttl,
            append: redis::Script::new(APPEND),
            latest: redis::Script::new(LATEST),
        }
    }

    fn stream(&self, app: &str, channel: &str) -> String {
        format!("{}{app}:history:{channel}", self.names.prefix())
    }

    fn meta(&self, app: &str, channel: &str) -> String {
        format!("{}{app}:history-meta:{channel}", self.names.prefix())
    }

    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, HistoryError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(HistoryError::Unavailable(format!(
                "Redis: {}",
                crate::redact::in_text(&e.to_string(), "")
            ))),
            Err(_) => Err(HistoryError::Unavailable(format!(
                "Redis did not answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// An entry's time and publication (with its position), if it can be read.
    fn read(entry: &Entry) -> Option<(u64, u64, Arc<Publication>)> {
        let (id, fields) = entry;
        let offset = id.strip_prefix("0-")?.parse().ok()?;
        let mut time = None;
        let mut message = None;
        for pair in fields.chunks(2) {
            match pair {
                [name, value] if name == b"t" => {
                    time = std::str::from_utf8(value).ok()?.parse().ok();
                }
                [name, value] if name == b"m" => message = Some(value),
                _ => {}
            }
        }
        match wire::decode(message?) {
            Ok(BrokerMessage::Publication(publication)) => Some((offset, time?, publication)),
            _ => None,
        }
    }
}

#[async_trait]
impl History for RedisHistory {
    async fn append(
        &self,
        app: &App,
        publication: &Publication,
    ) -> Result<Option<Appended>, HistoryError> {
        if !keeps(app, publication) {
            return Ok(None);
        }
        // The body as every node reads it, its position added by the script.
        let body = wire::encode_publication(publication);
        let cache_ttl = if is_cache_channel(&publication.channel) && !publication.relay_only {
            ms(self.cache_ttl)
        } else {
            0
        };
        let published_ms = publication
            .published_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
        let mut connection = self.connection.clone();
        let (offset, epoch): (u64, String) = self
            .bounded(
                self.append
                    .key(self.stream(&app.id, &publication.channel))
                    .key(self.meta(&app.id, &publication.channel))
                    .key(self.names.cache(&app.id, &publication.channel))
                    .arg(body)
                    .arg(app.history.size)
                    .arg(ms(app.history.ttl()))
                    .arg(&*StreamPosition::new_epoch())
                    .arg(self.names.channel(&app.id, &publication.channel))
                    .arg(published_ms)
                    .arg(cache_ttl)
                    .invoke_async(&mut connection),
            )
            .await?;
        Ok(Some(Appended {
            position: StreamPosition::new(offset, Arc::from(epoch)),
            // Redis delivers in offset order: nothing to hold.
            order: None,
        }))
    }

    async fn since(
        &self,
        app: &App,
        channel: &str,
        from: Option<&StreamPosition>,
        limit: usize,
    ) -> Result<Recovered, HistoryError> {
        let after = from.map_or(0, |f| f.offset);
        let mut connection = self.connection.clone();
        let ((epoch, top), entries): ((Option<String>, Option<u64>), Vec<Entry>) = self
            .bounded(
                redis::pipe()
                    .cmd("HMGET")
                    .arg(self.meta(&app.id, channel))
                    .arg("epoch")
                    .arg("offset")
                    .cmd("XRANGE")
                    .arg(self.stream(&app.id, channel))
                    .arg(format!("0-{}", after.saturating_add(1)))
                    .arg("+")
                    .arg("COUNT")
                    .arg(limit.max(1))
                    .query_async(&mut connection),
            )
            .await?;
        let (Some(epoch), Some(top)) = (epoch, top) else {
            return Ok(Recovered::Gone { top: None });
        };
        let top_position = StreamPosition::new(top, Arc::from(epoch.as_str()));
        if let Some(from) = from
            && (*from.epoch != *epoch || from.offset > top)
        {
            return Ok(Recovered::Gone {
                top: Some(top_position),
            });
        }
        let oldest_fresh = now_ms().saturating_sub(ms(app.history.ttl()));
        let mut publications = Vec::new();
        let mut expected = after + 1;
        for entry in &entries {
            let Some((offset, time, publication)) = Self::read(entry) else {
                continue;
            };
            if time < oldest_fresh {
                // Too old to serve: a resume that needs it cannot be vouched for.
                if from.is_some() && offset == expected {
                    return Ok(Recovered::Gone {
                        top: Some(top_position),
                    });
                }
                continue;
            }
            if from.is_some() && publications.is_empty() && offset != expected {
                // What followed `from` was trimmed.
                return Ok(Recovered::Gone {
                    top: Some(top_position),
                });
            }
            expected = offset + 1;
            publications.push(publication);
            if publications.len() >= limit {
                break;
            }
        }
        if from.is_some() && publications.is_empty() && after < top {
            return Ok(Recovered::Gone {
                top: Some(top_position),
            });
        }
        Ok(Recovered::Publications {
            publications,
            top: top_position,
        })
    }

    async fn latest(
        &self,
        app: &App,
        channel: &str,
    ) -> Result<Option<StreamPosition>, HistoryError> {
        if !app.history.enabled() {
            return Ok(None);
        }
        let mut connection = self.connection.clone();
        let (offset, epoch): (u64, String) = self
            .bounded(
                self.latest
                    .key(self.stream(&app.id, channel))
                    .key(self.meta(&app.id, channel))
                    .arg(&*StreamPosition::new_epoch())
                    .arg(ms(app.history.ttl()))
                    .invoke_async(&mut connection),
            )
            .await?;
        Ok(Some(StreamPosition::new(offset, Arc::from(epoch))))
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}
