//! The Lua scripts, each one atomic step on the server: a lease is taken only where none is held,
//! and only the token holding a lease can commit its value, renew it or abort it.
//!
//! A key of another type than cachette gives it (someone `LPUSH`ed onto an entry, a lease or the
//! index) would make every script touching it fail with `WRONGTYPE`, for ever: the scripts read
//! such a key as absent and drop it ([`PRELUDE`]), so the next write puts cachette's own back.

use redis::Script;

/// Shared by every script. `get`: a string key's value, or false when absent or of another type
/// (then dropped). `own`: drops `k` unless it is absent or of type `t`.
const PRELUDE: &str = r"
local function get(k)
  local v = redis.pcall('GET', k)
  if type(v) == 'table' and v.err then
    if not string.find(v.err, 'WRONGTYPE', 1, true) then return redis.call('GET', k) end
    redis.call('DEL', k)
    return false
  end
  return v
end
local function own(k, t)
  local kt = redis.call('TYPE', k)['ok']
  if kt ~= t and kt ~= 'none' then redis.call('DEL', k) end
end
";

const GET_OR_LOCK: &str = r"
-- KEYS: value, lease, error of the holder waited for, lease set
-- ARGV: token, lease ms, '1' to return a value that is there
if ARGV[3] == '1' then
  local v = get(KEYS[1])
  if v then return {1, v} end
end
local h = get(KEYS[2])
if not h then
  local e = get(KEYS[3])
  if e then return {4, e} end
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  own(KEYS[4], 'set')
  redis.call('SADD', KEYS[4], KEYS[2])
  return {2}
end
return {3, h, redis.call('PTTL', KEYS[2])}
";

const RENEW: &str = r"
-- KEYS: lease   ARGV: token, lease ms
if get(KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
";

const COMMIT: &str = r"
-- KEYS: value, lease, index, lease set
-- ARGV: token, envelope, ttl ms (0: none), index score, channel, message, now ms
if get(KEYS[2]) ~= ARGV[1] then return 0 end
if ARGV[3] == '0' then redis.call('SET', KEYS[1], ARGV[2]) else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
redis.call('DEL', KEYS[2])
own(KEYS[4], 'set')
redis.call('SREM', KEYS[4], KEYS[2])
own(KEYS[3], 'zset')
redis.call('ZADD', KEYS[3], ARGV[4], KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[7])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
";

const PUT: &str = r"
-- KEYS: value, index   ARGV: envelope, ttl ms (0: none), index score, channel, message, now ms
if ARGV[2] == '0' then redis.call('SET', KEYS[1], ARGV[1]) else redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
own(KEYS[2], 'zset')
redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[6])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
";

const ABORT: &str = r"
-- KEYS: lease, error key of this token, lease set
-- ARGV: token, '1' if there is an error, error, keep ms, channel, message
if get(KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
own(KEYS[3], 'set')
redis.call('SREM', KEYS[3], KEYS[1])
if ARGV[2] == '1' then redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4]) end
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
";

const DELETE: &str = r"
-- KEYS: value, lease, index, lease set   ARGV: channel, message
local n = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
own(KEYS[4], 'set')
redis.call('SREM', KEYS[4], KEYS[2])
own(KEYS[3], 'zset')
redis.call('ZREM', KEYS[3], KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return n
";

const CLEAR_SOME: &str = r"
-- KEYS: index, lease set   ARGV: how many
-- Removes up to ARGV[1] entries and leases per call, so a large namespace never blocks the server long.
local n = 0
own(KEYS[1], 'zset')
own(KEYS[2], 'set')
local ks = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #ks > 0 then
  redis.call('UNLINK', unpack(ks))
  redis.call('ZREM', KEYS[1], unpack(ks))
  n = n + #ks
end
local ls = redis.call('SRANDMEMBER', KEYS[2], tonumber(ARGV[1]))
if #ls > 0 then
  redis.call('UNLINK', unpack(ls))
  redis.call('SREM', KEYS[2], unpack(ls))
  n = n + #ls
end
return n
";

/// Scripts, compiled once (hashing the source) per process.
pub(super) struct Scripts {
  pub get_or_lock: Script,
  pub renew: Script,
  pub commit: Script,
  pub put: Script,
  pub abort: Script,
  pub delete: Script,
  pub clear_some: Script,
}

pub(super) fn scripts() -> &'static Scripts {
  static S: std::sync::OnceLock<Scripts> = std::sync::OnceLock::new();
  let script = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
  S.get_or_init(|| Scripts {
    get_or_lock: script(GET_OR_LOCK),
    renew: script(RENEW),
    commit: script(COMMIT),
    put: script(PUT),
    abort: script(ABORT),
    delete: script(DELETE),
    clear_some: script(CLEAR_SOME),
  })
}
