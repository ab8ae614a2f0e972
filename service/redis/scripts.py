"""The Lua scripts of the Redis queue: each runs atomically on the server, so a job is enqueued under its
bound, answered exactly once by the worker that owns it, dead-lettered or withdrawn without a race."""

from __future__ import annotations

# KEYS: stream, work key, lease key. ARGV: bound, job json, job budget (slot-steps), allowed work (-1: no
# check), lease ms (the entry is marked leased: its worker aborts it once the lease key is gone).
# -> entry id; nil when the stream already holds `bound` jobs; the work already queued (an integer) when it
# plus this job's budget is over `allowed` (the deadline cannot be met). The work key sums the budgets of
# the stream's entries (every script that removes an entry subtracts its own); reset when the stream is empty.
SUBMIT_LUA = """
local n = redis.call('XLEN', KEYS[1])
if n >= tonumber(ARGV[1]) then return false end
local work = 0
if n == 0 then redis.call('DEL', KEYS[2]) else work = tonumber(redis.call('GET', KEYS[2]) or '0') end
local allowed = tonumber(ARGV[4])
if allowed >= 0 and work + tonumber(ARGV[3]) > allowed then return work end
redis.call('INCRBY', KEYS[2], ARGV[3])
redis.call('SET', KEYS[3], '1', 'PX', ARGV[5])
return redis.call('XADD', KEYS[1], '*', 'job', ARGV[2], 'work', ARGV[3], 'lease', '1')
"""

# Delete entry ARGV[2] of stream KEYS[1], taking its budget off the work key given.
_REMOVE = """
local function remove(work_key)
  local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
  local work = 0
  if #e == 1 then
    local f = e[1][2]
    for i = 1, #f, 2 do if f[i] == 'work' then work = tonumber(f[i + 1]) end end
  end
  local deleted = redis.call('XDEL', KEYS[1], ARGV[2])
  if redis.call('XLEN', KEYS[1]) == 0 then redis.call('DEL', work_key)
  elseif deleted == 1 and work > 0 then redis.call('DECRBY', work_key, work) end
  return deleted
end
"""

# The shared part of the scripts that answer an entry (complete, dead-letter): go on only while the entry
# is still this consumer's (KEYS[1] stream; ARGV[1] group, ARGV[2] entry id, ARGV[3] consumer), and finish
# by pushing the result with a TTL, then XACK and XDEL the entry.
_OWNED_ONLY = _REMOVE + """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then return 0 end
"""


def _answer(result_key: str, result: str, ttl_ms: str, work_key: str) -> str:
    return f"""
redis.call('RPUSH', {result_key}, {result})
redis.call('PEXPIRE', {result_key}, {ttl_ms})
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
remove({work_key})
return 1
"""


# KEYS: stream, result key, work key. ARGV: group, entry id, consumer, result json, ttl ms.
# -> 1 written; 0 when the entry is no longer this consumer's (re-claimed or already answered).
COMPLETE_LUA = _OWNED_ONLY + _answer("KEYS[2]", "ARGV[4]", "ARGV[5]", "KEYS[3]")

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

# KEYS: stream, dead-letter stream, result key, work key. ARGV: group, entry id, consumer, job json,
# deliveries, error result json, ttl ms, dead-letter maxlen. -> 1 moved; 0 when no longer this consumer's.
DEAD_LETTER_LUA = _OWNED_ONLY + """
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*', 'job', ARGV[4], 'deliveries', ARGV[5],
           'entry', ARGV[2])
""" + _answer("KEYS[3]", "ARGV[6]", "ARGV[7]", "KEYS[4]")

# KEYS: stream, abort key, work key. ARGV: group, entry id, ttl ms.
# A job nobody has read yet is removed (1); one being run gets an abort flag its worker checks (0).
# No group yet (no worker ever started) means nobody has read it.
CANCEL_LUA = _REMOVE + """
local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if type(p) ~= 'table' or p.err or #p == 0 then
  return remove(KEYS[3])
end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
return 0
"""
