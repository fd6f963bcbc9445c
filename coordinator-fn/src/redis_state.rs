//! The coordinator's state in Redis (the distributed mode). Every multi-key change is one Lua
//! script, so any number of coordinator copies can act at once. The key schema is documented in
//! `doc/protocol.md`.

use std::time::Duration;

use async_trait::async_trait;
use contract::StreamId;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};

use crate::state::{
    EncoderNode, EncoderStatus, IngestNode, PendingEvent, Resumption, StartError, StateError,
    StateStore, StreamRecord,
};
use crate::webapp::WebAppEvent;

/// Stand-in for the chosen encoder's ID in a stream record, replaced inside the script.
const ENCODER_PLACEHOLDER: &str = "__ENCODER__";

/// Picks the least loaded live encoder with room (ties: the smallest ID), skipping `skip`.
const PICK_ENCODER: &str = r#"
local function pick(p, skip)
  local best, best_load = nil, nil
  for _, id in ipairs(redis.call('SMEMBERS', p .. 'encoders')) do
    local cap = redis.call('GET', p .. 'encoder:' .. id)
    if cap and id ~= skip then
      cap = tonumber(cap)
      local load = redis.call('SCARD', p .. 'encoder:' .. id .. ':streams')
      if (cap < 0 or load < cap) and (best_load == nil or load < best_load or (load == best_load and id < best)) then
        best, best_load = id, load
      end
    end
  end
  return best
end
"#;

fn start_script() -> Script {
    Script::new(&format!(
        r#"{PICK_ENCODER}
local p, channel, sid, record = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local holder = redis.call('GET', p .. 'channel:' .. channel)
if holder then return {{'busy', holder}} end
local best = pick(p, '')
if not best then return {{'full', ''}} end
record = string.gsub(record, '{ENCODER_PLACEHOLDER}', best, 1)
redis.call('SET', p .. 'channel:' .. channel, sid)
redis.call('SET', p .. 'stream:' .. sid, record)
redis.call('SADD', p .. 'streams', sid)
redis.call('SADD', p .. 'encoder:' .. best .. ':streams', sid)
return {{'ok', record}}
"#
    ))
}

fn move_script() -> Script {
    Script::new(&format!(
        r#"{PICK_ENCODER}
local p, sid, old = ARGV[1], ARGV[2], ARGV[3]
local record = redis.call('GET', p .. 'stream:' .. sid)
if not record then return false end
local best = pick(p, old)
if not best then return false end
record = string.gsub(record, '"encoder_id":"' .. old .. '"', '"encoder_id":"' .. best .. '"', 1)
redis.call('SET', p .. 'stream:' .. sid, record)
redis.call('SREM', p .. 'encoder:' .. old .. ':streams', sid)
redis.call('SADD', p .. 'encoder:' .. best .. ':streams', sid)
return record
"#
    ))
}

const FINISH: &str = r#"
local p, sid = ARGV[1], ARGV[2]
local record = redis.call('GET', p .. 'stream:' .. sid)
if not record then return false end
local r = cjson.decode(record)
redis.call('DEL', p .. 'stream:' .. sid)
redis.call('SREM', p .. 'streams', sid)
if redis.call('GET', p .. 'channel:' .. r.channel) == sid then
  redis.call('DEL', p .. 'channel:' .. r.channel)
end
redis.call('SREM', p .. 'encoder:' .. r.encoder_id .. ':streams', sid)
redis.call('HDEL', p .. 'jobs:' .. r.encoder_id, sid)
if redis.call('GET', p .. 'lingering:' .. r.channel) == sid then
  redis.call('DEL', p .. 'lingering:' .. r.channel)
end
return record
"#;

/// The record is edited as text (`cjson` would turn `[]` into `{}` and could round large
/// numbers); the field order is the one `serde` writes for [`StreamRecord`].
const PUBLISHER_GONE: &str = r#"
local p, channel, sid, now, linger = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
if redis.call('GET', p .. 'channel:' .. channel) == sid then
  redis.call('DEL', p .. 'channel:' .. channel)
end
local record = redis.call('GET', p .. 'stream:' .. sid)
if not record then return false end
if not string.find(record, '"publishing":true', 1, true) then return record end
record = string.gsub(record, '"publishing":true', '"publishing":false', 1)
record = string.gsub(record, '"publisher_left_at_ms":%d+', '"publisher_left_at_ms":' .. now, 1)
redis.call('SET', p .. 'stream:' .. sid, record)
if linger > 0 and string.find(record, '"key_hash":"%x') then
  redis.call('SET', p .. 'lingering:' .. channel, sid, 'PX', linger)
end
return record
"#;

/// `ingest` is the new ingest ID as a JSON string (quotes and escapes included).
const RESUME: &str = r#"
local p, channel, hash, ingest, source = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local now, window = tonumber(ARGV[6]), tonumber(ARGV[7])
if window <= 0 or hash == '' then return false end
if redis.call('EXISTS', p .. 'channel:' .. channel) == 1 then return false end
local sid = redis.call('GET', p .. 'lingering:' .. channel)
if not sid then return false end
local record = redis.call('GET', p .. 'stream:' .. sid)
if not record then return false end
local r = cjson.decode(record)
if r.publishing or r.channel ~= channel or r.key_hash ~= hash then return false end
local left = tonumber(r.publisher_left_at_ms) or 0
if now - left >= window then return false end
record = string.gsub(record, '"publishing":false', '"publishing":true', 1)
record = string.gsub(record, '"publisher_left_at_ms":%d+', '"publisher_left_at_ms":0', 1)
local with_ingest = string.gsub('"ingest_id":' .. ingest .. ',"encoder_id":', '%%', '%%%%')
record = string.gsub(record, '"ingest_id":".-","encoder_id":', with_ingest, 1)
record = string.gsub(record, '"source":"%u+"', '"source":"' .. source .. '"', 1)
redis.call('SET', p .. 'stream:' .. sid, record)
redis.call('SET', p .. 'channel:' .. channel, sid)
redis.call('DEL', p .. 'lingering:' .. channel)
return record
"#;

const FORBID_RESUME: &str = r#"
local p, sid = ARGV[1], ARGV[2]
local record = redis.call('GET', p .. 'stream:' .. sid)
if not record then return 0 end
record = string.gsub(record, '"key_hash":"%x*"', '"key_hash":""', 1)
redis.call('SET', p .. 'stream:' .. sid, record)
local r = cjson.decode(record)
if redis.call('GET', p .. 'lingering:' .. r.channel) == sid then
  redis.call('DEL', p .. 'lingering:' .. r.channel)
end
return 1
"#;

const LEASE: &str = r#"
local p, now, lease, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
for _, sid in ipairs(redis.call('ZRANGEBYSCORE', p .. 'events:due', '-inf', now, 'LIMIT', 0, limit)) do
  local head = redis.call('LINDEX', p .. 'events:' .. sid, 0)
  if head then
    redis.call('ZADD', p .. 'events:due', now + lease, sid)
    local attempts = redis.call('HINCRBY', p .. 'events:attempts', sid, 1)
    table.insert(out, head)
    table.insert(out, attempts)
  else
    redis.call('ZREM', p .. 'events:due', sid)
  end
end
return out
"#;

const DELIVERED: &str = r#"
local p, sid, event_id = ARGV[1], ARGV[2], ARGV[3]
local head = redis.call('LINDEX', p .. 'events:' .. sid, 0)
if head and string.find(head, '"event_id":"' .. event_id .. '"', 1, true) then
  redis.call('LPOP', p .. 'events:' .. sid)
  redis.call('HDEL', p .. 'events:attempts', sid)
end
if redis.call('LLEN', p .. 'events:' .. sid) == 0 then
  redis.call('ZREM', p .. 'events:due', sid)
else
  redis.call('ZADD', p .. 'events:due', 0, sid)
end
return 1
"#;

/// Redis state settings.
#[derive(Debug, Clone)]
pub struct RedisStateConfig {
    /// Prefix of every key (`vs:`), so several deployments can share one Redis.
    pub prefix: String,
    /// How long a node stays registered after its last heartbeat.
    pub node_ttl: Duration,
}

impl Default for RedisStateConfig {
    fn default() -> Self {
        RedisStateConfig {
            prefix: "vs:".into(),
            node_ttl: Duration::from_secs(15),
        }
    }
}

/// [`StateStore`] on Redis.
#[derive(Clone)]
pub struct RedisState {
    conn: ConnectionManager,
    config: RedisStateConfig,
    start: Script,
    moved: Script,
    finish: Script,
    publisher_gone: Script,
    resume: Script,
    forbid_resume: Script,
    lease: Script,
    delivered: Script,
}

fn unavailable(err: redis::RedisError) -> StateError {
    StateError::Unavailable(err.to_string())
}

fn corrupt(what: &str, err: serde_json::Error) -> StateError {
    StateError::Unavailable(format!("unreadable {what} in Redis: {err}"))
}

/// A stream record as a script or a read returned it.
fn parse_record(json: Option<String>) -> Result<Option<StreamRecord>, StateError> {
    json.map(|j| serde_json::from_str(&j).map_err(|e| corrupt("stream", e)))
        .transpose()
}

impl RedisState {
    /// Connects (with automatic reconnection) to `url` (`redis://` or `rediss://`).
    pub async fn connect(url: &str, config: RedisStateConfig) -> Result<Self, StateError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(3)))
            .set_response_timeout(Some(Duration::from_secs(3)))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client, manager_config)
            .await
            .map_err(unavailable)?;
        Ok(RedisState {
            conn,
            config,
            start: start_script(),
            moved: move_script(),
            finish: Script::new(FINISH),
            publisher_gone: Script::new(PUBLISHER_GONE),
            resume: Script::new(RESUME),
            forbid_resume: Script::new(FORBID_RESUME),
            lease: Script::new(LEASE),
            delivered: Script::new(DELIVERED),
        })
    }

    /// The JSON values `{kind}:{id}` of every ID in the set `{set}`, by ID; IDs whose value
    /// expired are skipped.
    async fn members<T: serde::de::DeserializeOwned>(
        &self,
        set: &str,
        kind: &'static str,
    ) -> Result<Vec<T>, StateError> {
        let mut conn = self.conn.clone();
        let mut ids: Vec<String> = conn.smembers(self.key(set)).await.map_err(unavailable)?;
        ids.sort();
        let mut out = Vec::new();
        for id in ids {
            let json: Option<String> = conn
                .get(self.key(&format!("{kind}:{id}")))
                .await
                .map_err(unavailable)?;
            if let Some(json) = json {
                out.push(serde_json::from_str(&json).map_err(|e| corrupt(kind, e))?);
            }
        }
        Ok(out)
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.config.prefix)
    }

    fn ttl_ms(&self) -> u64 {
        self.config.node_ttl.as_millis() as u64
    }

    /// Streams assigned to an encoder.
    pub async fn encoder_streams(&self, encoder_id: &str) -> Result<Vec<StreamId>, StateError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn
            .smembers(self.key(&format!("encoder:{encoder_id}:streams")))
            .await
            .map_err(unavailable)?;
        Ok(ids
            .iter()
            .filter_map(|id| StreamId::parse(id).ok())
            .collect())
    }

    /// Stores a job for an encoder, so that it finds it when it (re)subscribes.
    pub async fn store_job(
        &self,
        encoder_id: &str,
        stream_id: &StreamId,
        job_json: &str,
    ) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        conn.hset::<_, _, _, ()>(
            self.key(&format!("jobs:{encoder_id}")),
            stream_id.as_str(),
            job_json,
        )
        .await
        .map_err(unavailable)
    }

    /// The jobs stored for an encoder.
    pub async fn jobs(&self, encoder_id: &str) -> Result<Vec<String>, StateError> {
        let mut conn = self.conn.clone();
        conn.hvals(self.key(&format!("jobs:{encoder_id}")))
            .await
            .map_err(unavailable)
    }

    /// Publishes a message on a node's channel. Returns how many subscribers got it.
    pub async fn publish(&self, channel: &str, message: &str) -> Result<u64, StateError> {
        let mut conn = self.conn.clone();
        conn.publish(self.key(channel), message)
            .await
            .map_err(unavailable)
    }

    pub fn prefix(&self) -> &str {
        &self.config.prefix
    }
}

#[async_trait]
impl StateStore for RedisState {
    async fn register_encoder(&self, node: EncoderNode) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .sadd(self.key("encoders"), &node.id)
            .ignore()
            .pset_ex(
                self.key(&format!("encoder:{}", node.id)),
                node.capacity,
                self.ttl_ms(),
            )
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn register_ingest(&self, node: IngestNode) -> Result<(), StateError> {
        let json = serde_json::to_string(&node).map_err(|e| corrupt("ingest", e))?;
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .sadd(self.key("ingests"), &node.id)
            .ignore()
            .pset_ex(
                self.key(&format!("ingest:{}", node.id)),
                json,
                self.ttl_ms(),
            )
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn encoders(&self) -> Result<Vec<EncoderStatus>, StateError> {
        let mut conn = self.conn.clone();
        let mut ids: Vec<String> = conn
            .smembers(self.key("encoders"))
            .await
            .map_err(unavailable)?;
        ids.sort();
        let mut out = Vec::new();
        for id in ids {
            let capacity: Option<i64> = conn
                .get(self.key(&format!("encoder:{id}")))
                .await
                .map_err(unavailable)?;
            if let Some(capacity) = capacity {
                let load: u64 = conn
                    .scard(self.key(&format!("encoder:{id}:streams")))
                    .await
                    .map_err(unavailable)?;
                out.push(EncoderStatus { id, capacity, load });
            }
        }
        Ok(out)
    }

    async fn ingests(&self) -> Result<Vec<IngestNode>, StateError> {
        self.members("ingests", "ingest").await
    }

    async fn channel_holder(&self, channel: &str) -> Result<Option<StreamId>, StateError> {
        let mut conn = self.conn.clone();
        let holder: Option<String> = conn
            .get(self.key(&format!("channel:{channel}")))
            .await
            .map_err(unavailable)?;
        Ok(holder.and_then(|h| StreamId::parse(&h).ok()))
    }

    async fn start_stream(&self, mut record: StreamRecord) -> Result<StreamRecord, StartError> {
        record.encoder_id = ENCODER_PLACEHOLDER.to_owned();
        record.publishing = true;
        record.publisher_left_at_ms = 0;
        let json = serde_json::to_string(&record).map_err(|e| corrupt("stream", e))?;
        let mut conn = self.conn.clone();
        let (status, value): (String, String) = self
            .start
            .arg(&self.config.prefix)
            .arg(&record.channel)
            .arg(record.stream_id.as_str())
            .arg(json)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        match status.as_str() {
            "ok" => Ok(serde_json::from_str(&value).map_err(|e| corrupt("stream", e))?),
            "busy" => Err(StartError::ChannelBusy(
                StreamId::parse(&value).unwrap_or_else(|_| record.stream_id.clone()),
            )),
            _ => Err(StartError::NoCapacity),
        }
    }

    async fn publisher_gone(
        &self,
        channel: &str,
        stream_id: &StreamId,
        now_ms: u64,
        linger_ms: u64,
    ) -> Result<Option<StreamRecord>, StateError> {
        let mut conn = self.conn.clone();
        let record: Option<String> = self
            .publisher_gone
            .arg(&self.config.prefix)
            .arg(channel)
            .arg(stream_id.as_str())
            .arg(now_ms)
            .arg(linger_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        parse_record(record)
    }

    async fn resume_stream(
        &self,
        who: &Resumption,
        now_ms: u64,
        window_ms: u64,
    ) -> Result<Option<StreamRecord>, StateError> {
        let ingest = serde_json::to_string(&who.ingest_id).map_err(|e| corrupt("ingest", e))?;
        let mut conn = self.conn.clone();
        let record: Option<String> = self
            .resume
            .arg(&self.config.prefix)
            .arg(&who.channel)
            .arg(&who.key_hash)
            .arg(ingest)
            .arg(who.source.as_str())
            .arg(now_ms)
            .arg(window_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        parse_record(record)
    }

    async fn forbid_resume(&self, stream_id: &StreamId) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        self.forbid_resume
            .arg(&self.config.prefix)
            .arg(stream_id.as_str())
            .invoke_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn finish_stream(
        &self,
        stream_id: &StreamId,
    ) -> Result<Option<StreamRecord>, StateError> {
        let mut conn = self.conn.clone();
        let record: Option<String> = self
            .finish
            .arg(&self.config.prefix)
            .arg(stream_id.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        parse_record(record)
    }

    async fn streams(&self) -> Result<Vec<StreamRecord>, StateError> {
        self.members("streams", "stream").await
    }

    async fn stream(&self, stream_id: &StreamId) -> Result<Option<StreamRecord>, StateError> {
        let mut conn = self.conn.clone();
        let json: Option<String> = conn
            .get(self.key(&format!("stream:{stream_id}")))
            .await
            .map_err(unavailable)?;
        parse_record(json)
    }

    async fn push_event(&self, event: WebAppEvent, now_ms: u64) -> Result<(), StateError> {
        let sid = event.stream_id.to_string();
        let pending = PendingEvent {
            event,
            attempts: 0,
            queued_at_ms: now_ms,
        };
        let json = serde_json::to_string(&pending).map_err(|e| corrupt("event", e))?;
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .rpush(self.key(&format!("events:{sid}")), json)
            .ignore()
            .cmd("ZADD")
            .arg(self.key("events:due"))
            .arg("NX")
            .arg(now_ms)
            .arg(&sid)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn lease_due_events(
        &self,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Vec<PendingEvent>, StateError> {
        let mut conn = self.conn.clone();
        let raw: Vec<redis::Value> = self
            .lease
            .arg(&self.config.prefix)
            .arg(now_ms)
            .arg(lease_ms)
            .arg(100)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut out = Vec::new();
        for pair in raw.chunks(2) {
            let [head, attempts] = pair else { continue };
            let head: String = redis::FromRedisValue::from_redis_value_ref(head)
                .map_err(|e| StateError::Unavailable(e.to_string()))?;
            let attempts: u32 = redis::FromRedisValue::from_redis_value_ref(attempts)
                .map_err(|e| StateError::Unavailable(e.to_string()))?;
            let mut pending: PendingEvent =
                serde_json::from_str(&head).map_err(|e| corrupt("event", e))?;
            pending.attempts = attempts;
            out.push(pending);
        }
        Ok(out)
    }

    async fn event_delivered(&self, event: &WebAppEvent) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        self.delivered
            .arg(&self.config.prefix)
            .arg(event.stream_id.as_str())
            .arg(&event.event_id)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn event_failed(
        &self,
        event: &WebAppEvent,
        next_attempt_ms: u64,
    ) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        redis::cmd("ZADD")
            .arg(self.key("events:due"))
            .arg("XX")
            .arg(next_attempt_ms)
            .arg(event.stream_id.as_str())
            .query_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn event_backlog(&self, now_ms: u64) -> Result<(usize, u64), StateError> {
        let mut conn = self.conn.clone();
        let sids: Vec<String> = conn
            .zrange(self.key("events:due"), 0, 999)
            .await
            .map_err(unavailable)?;
        let mut depth = 0;
        let mut oldest = 0;
        for sid in sids {
            let key = self.key(&format!("events:{sid}"));
            let len: usize = conn.llen(&key).await.map_err(unavailable)?;
            depth += len;
            let head: Option<String> = conn.lindex(&key, 0).await.map_err(unavailable)?;
            if let Some(pending) = head.and_then(|h| serde_json::from_str::<PendingEvent>(&h).ok())
            {
                oldest = oldest.max(now_ms.saturating_sub(pending.queued_at_ms));
            }
        }
        Ok((depth, oldest))
    }

    /// Nodes whose heartbeat expired: removed from the registry and returned
    /// (encoders, ingests). Each dead node is returned to exactly one caller.
    async fn reap_dead_nodes(&self) -> Result<(Vec<String>, Vec<String>), StateError> {
        let mut conn = self.conn.clone();
        let mut dead = (Vec::new(), Vec::new());
        for (set, kind, out) in [
            ("encoders", "encoder", &mut dead.0),
            ("ingests", "ingest", &mut dead.1),
        ] {
            let members: Vec<String> = conn.smembers(self.key(set)).await.map_err(unavailable)?;
            for id in members {
                let alive: bool = conn
                    .exists(self.key(&format!("{kind}:{id}")))
                    .await
                    .map_err(unavailable)?;
                if !alive {
                    let removed: i64 = conn.srem(self.key(set), &id).await.map_err(unavailable)?;
                    if removed == 1 {
                        out.push(id);
                    }
                }
            }
        }
        Ok(dead)
    }

    /// Moves a stream of a dead encoder to the least loaded other encoder with room.
    async fn move_stream(
        &self,
        stream_id: &StreamId,
        from: &str,
    ) -> Result<Option<StreamRecord>, StateError> {
        let mut conn = self.conn.clone();
        let record: Option<String> = self
            .moved
            .arg(&self.config.prefix)
            .arg(stream_id.as_str())
            .arg(from)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        parse_record(record)
    }
}

/// `REDIS_URL` with `REDIS_PASSWORD` put in, when the URL carries no credentials of its own
/// (ElastiCache AUTH: the URL is the endpoint, the password comes from a secret).
pub fn url_with_password(url: &str, password: Option<&str>) -> String {
    let Some(password) = password.filter(|p| !p.is_empty()) else {
        return url.to_owned();
    };
    match url.split_once("://") {
        Some((scheme, rest)) if !rest.split('/').next().unwrap_or("").contains('@') => {
            let encoded: String = password
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            format!("{scheme}://:{encoded}@{rest}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::url_with_password;

    #[test]
    fn the_password_goes_into_a_url_without_credentials() {
        assert_eq!(url_with_password("redis://h:6379", None), "redis://h:6379");
        assert_eq!(
            url_with_password("redis://h:6379", Some("")),
            "redis://h:6379"
        );
        assert_eq!(
            url_with_password("rediss://h.cache.amazonaws.com:6379", Some("p@ss/w rd")),
            "rediss://:p%40ss%2Fw%20rd@h.cache.amazonaws.com:6379"
        );
        assert_eq!(
            url_with_password("redis://:own@h:6379", Some("x")),
            "redis://:own@h:6379"
        );
    }
}
