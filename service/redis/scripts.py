"""The Lua scripts of the Redis queue: each runs atomically on the server, so a job is enqueued under its
bound, answered exactly once by the worker that owns it, dead-lettered or withdrawn without a race."""

from __future__ import annotations

# KEYS: stream. ARGV: bound, job json. -> entry id, or nil when the stream already holds `bound` jobs.
SUBMIT_LUA = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
return redis.call('XADD', KEYS[1], '*', 'job', ARGV[2])
"""

# The shared part of the scripts that answer an entry (complete, dead-letter): go on only while the entry
# is still this consumer's (KEYS[1] stream; ARGV[1] group, ARGV[2] entry id, ARGV[3] consumer), and finish
# by pushing the result with a TTL, then XACK and XDEL the entry.
_OWNED_ONLY = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then return 0 end
"""


def _answer(result_key: str, result: str, ttl_ms: str) -> str:
    return f"""
redis.call('RPUSH', {result_key}, {result})
redis.call('PEXPIRE', {result_key}, {ttl_ms})
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""


# KEYS: stream, result key. ARGV: group, entry id, consumer, result json, ttl ms.
# -> 1 written; 0 when the entry is no longer this consumer's (re-claimed or already answered).
COMPLETE_LUA = _OWNED_ONLY + _answer("KEYS[2]", "ARGV[4]", "ARGV[5]")

# KEYS: stream. ARGV: group, consumer, entry ids... -> the ids this consumer no longer owns.
# Resets the idle time of the entries it still owns (XCLAIM JUSTID does not count a delivery).
REFRESH_LUA = """
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 0 or p[1][2] ~= ARGV[2] then
    table.insert(lost, ARGV[i])
  else
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  end
end
return lost
"""

# KEYS: stream, dead-letter stream, result key. ARGV: group, entry id, consumer, job json, deliveries,
# error result json, ttl ms, dead-letter maxlen. -> 1 moved; 0 when no longer this consumer's.
DEAD_LETTER_LUA = _OWNED_ONLY + """
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*', 'job', ARGV[4], 'deliveries', ARGV[5],
           'entry', ARGV[2])
""" + _answer("KEYS[3]", "ARGV[6]", "ARGV[7]")

# KEYS: stream, abort key. ARGV: group, entry id, ttl ms.
# A job nobody has read yet is removed (1); one being run gets an abort flag its worker checks (0).
# No group yet (no worker ever started) means nobody has read it.
CANCEL_LUA = """
local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if type(p) ~= 'table' or p.err or #p == 0 then
  return redis.call('XDEL', KEYS[1], ARGV[2])
end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
return 0
"""
