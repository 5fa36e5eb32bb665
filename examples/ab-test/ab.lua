-- Visitors without the cookie get a variant (B for SHARE_B percent of
-- them), then keep it: the cookie outlives the session, so the experiment
-- measures a stable population. The variant decides which route serves
-- the page; the URL the visitor sees does not change.

local COOKIE = "ab"
local SHARE_B = 50 -- percent
local MAX_AGE = 30 * 24 * 3600

local function cookie(req, name)
  local all = req.headers["cookie"] or ""
  return all:match("%f[%w_]" .. name .. "=([%w_]+)")
end

local function pick()
  -- 2 random bytes -> 0..65535 -> percent
  local b1, b2 = verge.crypto.random(2):byte(1, 2)
  return ((b1 * 256 + b2) % 100) < SHARE_B and "b" or "a"
end

function assign(req)
  local v = cookie(req, COOKIE)
  if v ~= "a" and v ~= "b" then
    v = pick()
    req.ctx.new_variant = v
  end
  req.ctx.variant = v
  req:set_path("/variant-" .. v .. (req.raw_query ~= "" and ("?" .. req.raw_query) or ""))
end

function remember(req, res)
  if req.ctx.new_variant then
    res.headers["set-cookie"] = string.format("%s=%s; Path=/; Max-Age=%d; SameSite=Lax", COOKIE,
                                              req.ctx.new_variant, MAX_AGE)
  end
  res.headers["x-variant"] = req.ctx.variant
  res.headers["vary"] = "Cookie"
end
