local T = verge.test

test("a new visitor gets a variant and a cookie", function()
  local r = T.request{path = "/"}
  T.eq(r.status, 200)
  local v = r.headers["x-variant"]
  T.ok(v == "a" or v == "b", "variant")
  T.contains(r.headers["set-cookie"], "ab=" .. v .. "; Path=/")
  T.contains(r.body, "Variant " .. v:upper())
end)

test("the cookie keeps the variant", function()
  for _ = 1, 20 do
    local r = T.request{path = "/pricing", headers = {Cookie = "theme=dark; ab=b"}}
    T.eq(r.headers["x-variant"], "b")
    T.eq(r.headers["set-cookie"], nil, "no new cookie for a known visitor")
    T.contains(r.body, "Variant B")
  end
end)

test("both variants are served", function()
  local seen = {}
  for _ = 1, 60 do
    seen[T.request{path = "/"}.headers["x-variant"]] = true
  end
  T.ok(seen.a and seen.b, "60 new visitors all got the same variant")
end)
