local T = verge.test

test("security headers on every response", function()
  for _, path in ipairs({"/", "/whoami", "/missing/../x"}) do
    local r = T.request{path = path}
    T.eq(r.headers["x-content-type-options"], "nosniff", path)
    T.contains(r.headers["strict-transport-security"], "max-age=")
  end
end)

test("client identity headers are dropped", function()
  local r = T.request{path = "/whoami", headers = {["X-User"] = "admin"}}
  T.contains(r.body, '"user":null')
end)

test("token moves from the query to Authorization", function()
  local r = T.request{path = "/whoami?token=abc123"}
  T.contains(r.body, '"authorization":"Bearer abc123"')
end)
