local T = verge.test

test("a client over the threshold is blocked", function()
  local seen403 = false
  for i = 1, 45 do -- 45 fast requests: one window holds more than 20 even across a window edge
    local r = T.request{path = "/"}
    if r.status == 403 then
      seen403 = true
      T.eq(r.headers["x-waf"], "blocked")
    end
  end
  T.ok(seen403, "the 21st request of a window is refused")
  T.eq(T.request{path = "/"}.status, 403) -- and stays refused
end)
