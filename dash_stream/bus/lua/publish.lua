-- Append events to one partition stream, atomically with the epoch check, dedup and retention.
-- KEYS[1] stream, KEYS[2] epoch key, KEYS[3] trimmed-to key, KEYS[4..] dedup keys (one per event;
-- the stream key when unused)
-- ARGV[1] expected epoch, ARGV[2] max entries, ARGV[3] minid ("0" = no age trim),
-- ARGV[4] dedup window ms, ARGV[5] now ms (the bus clock), ARGV[6] ID ms ("" = server time),
-- ARGV[7..] per event: dedup flag ("1"/"0"), payload
-- Returns {"EPOCH", current} when the epoch differs or is missing, else a flat list of id, dupflag.
-- The trimmed-to key holds the newest ID retention removed, so a reader can tell whether events
-- after its cursor are gone (Redis does not record trimming in XINFO's max-deleted-entry-id).
local current = redis.call("GET", KEYS[2])
if current ~= ARGV[1] then
  return {"EPOCH", current or ""}
end
local now = tonumber(ARGV[5])
local window = tonumber(ARGV[4])
local out = {}
local n = (#ARGV - 6) / 2
for i = 1, n do
  local dedup = ARGV[5 + 2 * i]
  local payload = ARGV[6 + 2 * i]
  local key = KEYS[3 + i]
  local prior = nil
  if dedup == "1" then
    -- value: "<stream id> <expiry ms>"; the TTL only reclaims memory, the expiry decides
    local seen = redis.call("GET", key)
    if seen then
      local sep = string.find(seen, " ", 1, true)
      if tonumber(string.sub(seen, sep + 1)) > now then
        prior = string.sub(seen, 1, sep - 1)
      end
    end
  end
  if prior then
    out[#out + 1] = prior
    out[#out + 1] = "1"
  else
    local id
    if ARGV[6] ~= "" then
      local ok, res = pcall(redis.call, "XADD", KEYS[1], ARGV[6] .. "-*", "e", payload)
      if ok then id = res end
    end
    if not id then
      id = redis.call("XADD", KEYS[1], "*", "e", payload)
    end
    if dedup == "1" then
      redis.call("SET", key, id .. " " .. tostring(now + window), "PX", window)
    end
    out[#out + 1] = id
    out[#out + 1] = "0"
  end
end
local trimmed_to = nil
local maxlen = tonumber(ARGV[2])
local len = redis.call("XLEN", KEYS[1])
if len > maxlen then
  local over = redis.call("XRANGE", KEYS[1], "-", "+", "COUNT", len - maxlen)
  trimmed_to = over[#over][1]
  redis.call("XTRIM", KEYS[1], "MAXLEN", maxlen)
end
if ARGV[3] ~= "0" then
  local old = redis.call("XREVRANGE", KEYS[1], "(" .. ARGV[3], "-", "COUNT", 1)
  if #old > 0 then
    -- MINID trimming runs after MAXLEN trimming, so this ID is the newer of the two
    trimmed_to = old[1][1]
    redis.call("XTRIM", KEYS[1], "MINID", ARGV[3])
  end
end
if trimmed_to then
  redis.call("SET", KEYS[3], trimmed_to)
end
return out
