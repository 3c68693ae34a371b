-- Append events to one partition stream, atomically with the epoch check and dedup.
-- KEYS[1] stream, KEYS[2] epoch key, KEYS[3..] dedup keys (one per event; "" slots use the stream key)
-- ARGV[1] expected epoch, ARGV[2] maxlen, ARGV[3] minid ("0" = no age trim), ARGV[4] dedup ttl ms,
-- ARGV[5..] per event: dedup flag ("1"/"0"), payload
-- Returns {"EPOCH", current} when the epoch differs or is missing, else a flat list of
-- id, dupflag pairs.
local current = redis.call("GET", KEYS[2])
if current ~= ARGV[1] then
  return {"EPOCH", current or ""}
end
local out = {}
local n = (#ARGV - 4) / 2
for i = 1, n do
  local dedup = ARGV[3 + 2 * i]
  local payload = ARGV[4 + 2 * i]
  local key = KEYS[2 + i]
  local seen = false
  if dedup == "1" then
    local prior = redis.call("GET", key)
    if prior then
      out[#out + 1] = prior
      out[#out + 1] = "1"
      seen = true
    end
  end
  if not seen then
    local id = redis.call("XADD", KEYS[1], "MAXLEN", "~", ARGV[2], "*", "e", payload)
    if dedup == "1" then
      redis.call("SET", key, id, "PX", ARGV[4])
    end
    out[#out + 1] = id
    out[#out + 1] = "0"
  end
end
if ARGV[3] ~= "0" then
  redis.call("XTRIM", KEYS[1], "MINID", "~", ARGV[3])
end
return out
