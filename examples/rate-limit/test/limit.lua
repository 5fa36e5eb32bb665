local T = verge.test

test("the limit is enforced per window", function()
  -- align with the start of a window so all requests fall into one
  local now = os.time()
  if now % 10 >= 8 then
    os.execute("sleep " .. (10 - now % 10))
  end
  local statuses = {}
  for i = 1, 7 do
    statuses[i] = T.request{path = "/"}.status
  end
  T.eq(table.concat(statuses, ","), "200,200,200,200,200,429,429")
  local r = T.request{path = "/"}
  T.eq(r.status, 429)
  local retry = tonumber(r.headers["retry-after"])
  T.ok(retry >= 1 and retry <= 10, "retry-after in 1..10")
end)
