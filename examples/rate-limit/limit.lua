-- A fixed window per client: at most LIMIT requests per WINDOW seconds.
-- verge.shared is shared by every worker of the node, and incr is atomic,
-- so the count holds whichever worker takes the request. Keys expire with
-- their window, so the table does not grow with past clients.

local LIMIT = 5
local WINDOW = 10 -- seconds

function check(req)
  local now = verge.now()
  local window = math.floor(now / WINDOW)
  local key = "rl:" .. req.client_ip .. ":" .. window
  local n, err = verge.shared.incr(key, 1, {ttl = WINDOW})
  if not n then
    verge.log.warn("rate limiter unavailable, letting the request through", {reason = err})
    return nil
  end
  if n > LIMIT then
    local retry = math.ceil((window + 1) * WINDOW - now)
    return {
      status = 429,
      headers = {["retry-after"] = retry, ["x-ratelimit-limit"] = LIMIT},
      body = "too many requests\n",
    }
  end
  req.ctx.remaining = LIMIT - n
end
