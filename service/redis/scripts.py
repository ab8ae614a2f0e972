"""The Lua scripts of the Redis queue: each runs atomically on the server, so a job is enqueued under its
bound, answered exactly once by the worker that owns it, dead-lettered or withdrawn without a race."""

# KEYS: stream. ARGV: bound, job json. -> entry id, or nil when the stream already holds `bound` jobs.
SUBMIT_LUA = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
return redis.call('XADD', KEYS[1], '*', 'job', ARGV[2])
"""

# KEYS: stream, result key. ARGV: group, entry id, consumer, result json, ttl ms.
# -> 1 written; 0 when the entry is no longer this consumer's (re-claimed or already answered).
COMPLETE_LUA = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""

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
DEAD_LETTER_LUA = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*', 'job', ARGV[4], 'deliveries', ARGV[5],
           'entry', ARGV[2])
redis.call('RPUSH', KEYS[3], ARGV[6])
redis.call('PEXPIRE', KEYS[3], ARGV[7])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""

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
