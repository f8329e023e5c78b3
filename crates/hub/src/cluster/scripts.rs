//! The Lua scripts that change a room in Redis. Each runs atomically, which is what makes the
//! multi-node hub's guarantees hold without locks between nodes:
//! - `publish` numbers a message, stores it and announces it in one step, so every node sees
//!   the same numbers in the same order, and nothing is announced that is not stored;
//! - `join` registers a member, announces it and reads the history and the member list in one
//!   step, so what the joiner replays and what it then receives live meet exactly;
//! - `leave`, `refresh` and `sweep` keep presence, and only one node ever announces a
//!   member's departure, even when several sweep the same room.
//!
//! Time comes from Redis (`TIME`), not from the nodes, so that presence expiry does not depend
//! on the nodes' clocks agreeing. Every script takes its room's keys in the order of
//! [`RoomKeys`](super::keys::RoomKeys).

use redis::Cmd;

use super::keys::RoomKeys;

/// A script and its SHA-1, run with `EVALSHA` (and loaded again when Redis forgot it).
#[derive(Debug)]
pub(crate) struct Script {
    pub(crate) source: &'static str,
    pub(crate) sha: String,
}

impl Script {
    fn new(source: &'static str) -> Script {
        Script {
            source,
            sha: redis::Script::new(source).get_hash().to_owned(),
        }
    }

    /// An `EVALSHA` of this script on `room`'s keys; the caller adds the arguments.
    pub(crate) fn on(&self, room: &RoomKeys) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha).arg(7).arg(&room.seq).arg(&room.log);
        cmd.arg(&room.epoch).arg(&room.members).arg(&room.names);
        cmd.arg(&room.pseq).arg(&room.channel);
        cmd
    }
}

/// Every script the hub runs.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) publish: Script,
    pub(crate) join: Script,
    pub(crate) leave: Script,
    pub(crate) refresh: Script,
    pub(crate) sweep: Script,
}

impl Scripts {
    pub(crate) fn new() -> Scripts {
        Scripts {
            publish: Script::new(PUBLISH),
            join: Script::new(JOIN),
            leave: Script::new(LEAVE),
            refresh: Script::new(REFRESH),
            sweep: Script::new(SWEEP),
        }
    }

    pub(crate) fn all(&self) -> [&Script; 5] {
        [
            &self.publish,
            &self.join,
            &self.leave,
            &self.refresh,
            &self.sweep,
        ]
    }
}

/// Shared by every script: the keys by name, Redis's clock in ms, the room's epoch (made from
/// `new_epoch` if the room has none), and the presence event publisher.
macro_rules! prelude {
    () => {
        r#"
local seq_key, log_key, epoch_key = KEYS[1], KEYS[2], KEYS[3]
local members_key, names_key, pseq_key, channel = KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function epoch_of(new_epoch)
  local epoch = redis.call('GET', epoch_key)
  if not epoch then
    epoch = new_epoch
    redis.call('SET', epoch_key, epoch)
  end
  return epoch
end
local function announce(event, member, name)
  local count = redis.call('ZCOUNT', members_key, now, '+inf')
  local pseq = redis.call('INCR', pseq_key)
  redis.call('PUBLISH', channel, cjson.encode({k = 'p', v = event, n = name, c = count, o = member, q = pseq}))
end
local function keep(ttl)
  redis.call('PEXPIRE', members_key, ttl * 3)
  redis.call('PEXPIRE', names_key, ttl * 3)
  redis.call('PEXPIRE', pseq_key, ttl * 3)
end
"#
    };
}

/// ARGV: room, from, text, history limit, new epoch, origin member id, plain ("1"/"0").
/// Returns the new sequence number. (The room index is kept outside the script, which may
/// touch only its own room's keys on a Redis Cluster.)
const PUBLISH: &str = concat!(
    prelude!(),
    r#"
local room, from, text, limit = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local epoch = epoch_of(ARGV[5])
local seq = redis.call('INCR', seq_key)
redis.call('XADD', log_key, 'MAXLEN', limit, seq .. '-0', 'f', from, 't', now, 'x', text, 'p', ARGV[7], 'o', ARGV[6])
redis.call('PUBLISH', channel, cjson.encode({k = 'm', s = seq, e = epoch, f = from, t = now, x = text, o = ARGV[6], p = ARGV[7]}))
return seq
"#
);

/// ARGV: member id, name, presence ttl (ms), new epoch, replay ("after", "recent" or "none"),
/// its number (since, or how many), the client's epoch ("" if none), replay limit, register
/// ("1": add the member and announce it; "0": a resume of a member already in).
/// Returns {epoch, last seq, first seq held, member count, pseq, {"<joined> <name>", ...},
/// {stream entries}}.
const JOIN: &str = concat!(
    prelude!(),
    r#"
local member, name, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local epoch = epoch_of(ARGV[4])
local last = tonumber(redis.call('GET', seq_key) or '0')
if ARGV[9] == '1' then
  local fresh = redis.call('ZADD', members_key, now + ttl, member)
  redis.call('HSET', names_key, member, now .. ' ' .. name)
  keep(ttl)
  if fresh == 1 then
    announce('joined', member, name)
  end
end
local count = redis.call('ZCOUNT', members_key, now, '+inf')
local pseq = tonumber(redis.call('GET', pseq_key) or '0')
local present = redis.call('ZRANGEBYSCORE', members_key, now, '+inf')
local names = {}
if #present > 0 then
  names = redis.call('HMGET', names_key, unpack(present))
end
local first = last + 1
local oldest = redis.call('XRANGE', log_key, '-', '+', 'COUNT', 1)
if #oldest > 0 then
  first = tonumber(string.match(oldest[1][1], '^(%d+)'))
end
local messages = {}
if ARGV[5] == 'after' then
  local since = tonumber(ARGV[6])
  if (ARGV[7] ~= '' and ARGV[7] ~= epoch) or since > last then
    since = 0
  end
  messages = redis.call('XRANGE', log_key, string.format('%d-0', since + 1), '+', 'COUNT', ARGV[8])
elseif ARGV[5] == 'recent' then
  messages = redis.call('XREVRANGE', log_key, '+', '-', 'COUNT', ARGV[6])
end
return {epoch, last, first, count, pseq, names, messages}
"#
);

/// ARGV: member id. Returns 1 if the member was present (and its departure was announced).
const LEAVE: &str = concat!(
    prelude!(),
    r#"
local member = ARGV[1]
if redis.call('ZREM', members_key, member) == 0 then
  return 0
end
local entry = redis.call('HGET', names_key, member)
redis.call('HDEL', names_key, member)
local name = entry and string.match(entry, '^%d+ (.*)$') or ''
announce('left', member, name)
return 1
"#
);

/// ARGV: member id, name, ttl (ms), joined (ms). Pushes the member's expiry forward; a member
/// that another node already swept (this one could not reach Redis for longer than the ttl)
/// is added and announced again.
const REFRESH: &str = concat!(
    prelude!(),
    r#"
local member, name, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local fresh = redis.call('ZADD', members_key, now + ttl, member)
keep(ttl)
if fresh == 1 then
  redis.call('HSET', names_key, member, ARGV[4] .. ' ' .. name)
  announce('joined', member, name)
end
return fresh
"#
);

/// No ARGV. Removes and announces every member whose expiry has passed (its node stopped
/// refreshing it: killed, or cut off from Redis). Returns how many left.
const SWEEP: &str = concat!(
    prelude!(),
    r#"
local gone = redis.call('ZRANGEBYSCORE', members_key, '-inf', '(' .. now)
for _, member in ipairs(gone) do
  redis.call('ZREM', members_key, member)
  local entry = redis.call('HGET', names_key, member)
  redis.call('HDEL', names_key, member)
  announce('left', member, entry and string.match(entry, '^%d+ (.*)$') or '')
end
return #gone
"#
);
