-- Requests per client in WINDOW seconds above THRESHOLD get the client
-- blocked on every node for BLOCK_FOR seconds.
local THRESHOLD = 20
local WINDOW = 10 -- seconds
local BLOCK_FOR = 300 -- seconds

-- A global key for a client address: IPv6 colons are not KV key characters.
local function block_key(ip)
  return "block." .. ip:gsub(":", "-")
end

-- With --nats the block is global (every node); a node on its own (verge
-- test, verge dev with one pop) keeps it in its shared table instead.
local GLOBAL = pcall(verge.kv.get, "probe", {scope = "global"})

local function blocked(key)
  if GLOBAL then
    return verge.kv.get(key, {scope = "global"}) -- this node's replica: no network
  end
  return verge.shared.get(key)
end

local function block(key)
  if GLOBAL then
    -- acknowledged by JetStream before we answer; the other nodes see it
    -- when their watchers deliver it (milliseconds)
    return verge.kv.set(key, verge.now(), {scope = "global", ttl = BLOCK_FOR})
  end
  return verge.shared.set(key, verge.now(), {ttl = BLOCK_FOR})
end

local DENY = {status = 403, headers = {["x-waf"] = "blocked"}, body = "blocked\n"}

function guard(req)
  local ip = req.client_ip
  local key = block_key(ip)
  if blocked(key) then
    return DENY
  end
  local window = math.floor(verge.now() / WINDOW)
  local n = verge.shared.incr("waf:" .. ip .. ":" .. window, 1, {ttl = WINDOW})
  if n and n > THRESHOLD then
    local ok, err = block(key)
    if ok then
      verge.log.warn("waf: client blocked", {client = ip, requests = n, everywhere = GLOBAL})
    else
      verge.log.error("waf: could not record the block", {client = ip, reason = err})
    end
    return DENY
  end
end
