-- Inbound: normalise what the application behind sees.
-- Outbound: add security headers to every response, whatever produced it.

local SECURITY = {
  ["strict-transport-security"] = "max-age=31536000; includeSubDomains",
  ["x-content-type-options"] = "nosniff",
  ["referrer-policy"] = "strict-origin-when-cross-origin",
}

function inbound(req)
  -- never trust a client-supplied identity header
  req:set_header("x-user", nil)
  -- a legacy client sends its token in a query parameter: move it to a header
  local token = req.query.token
  if token then
    req:set_header("authorization", "Bearer " .. token)
  end
  req:set_header("x-edge-request-id", req.id)
end

function whoami(req)
  return {
    headers = {["content-type"] = "application/json"},
    body = verge.json.encode({
      authorization = req.headers["authorization"] or verge.json.null,
      user = req.headers["x-user"] or verge.json.null,
      edge_id = req.headers["x-edge-request-id"],
    }),
  }
end

function outbound(req, res)
  for name, value in pairs(SECURITY) do
    res.headers[name] = value
  end
  res.headers["x-powered-by"] = nil -- do not advertise what runs behind
end
