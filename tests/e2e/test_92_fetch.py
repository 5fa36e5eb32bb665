"""verge.fetch and verge.fetch_all through the real node and real origins:
subrequests to the app's origins (by name or URL), parallel fetches that do
not hold up other requests, timeouts, limits, and the egress allow-list."""

import concurrent.futures
import json
import time

import pytest

MANIFEST = """\
name: fx
limits: {lua_timeout: 5s}
origins:
  api: {servers: ["%s"]}
  slow: {servers: ["%s"], timeouts: {read: 10s}}
routes:
  - glob: /f/*
    handler: fetch.lua:dispatch
  - exact: /plain
    respond: {body: "plain\\n"}
"""

FETCH = r"""
local cases = {}

function cases.byname(req)
  local r, err = verge.fetch("api", {path = "/users/7?x=1", headers = {["X-Trace"] = "t1"}})
  if not r then return {status = 502, body = err} end
  local info = verge.json.decode(r.body)
  return {headers = {["x-upstream-status"] = r.status, ["x-origin"] = r.headers["x-origin"]},
          body = info.method .. " " .. info.path}
end

function cases.byurl(req)
  local r = assert(verge.fetch(URL_API .. "/by/url"))
  return {body = verge.json.decode(r.body).path}
end

function cases.post(req)
  local r = assert(verge.fetch("api", {method = "PUT", path = "/put", body = "abc",
                                         headers = {["content-type"] = "text/plain"}}))
  local info = verge.json.decode(r.body)
  return {body = info.method .. " " .. info.body_len}
end

function cases.undeclared(req)
  local r, err = verge.fetch("http://127.0.0.1:1/x")
  return {status = r and 200 or 403, body = tostring(err)}
end

function cases.all(req)
  local t0 = verge.now()
  local rs = verge.fetch_all({
    {"slow", {path = "/a?delay=0.4"}}, {"slow", {path = "/b?delay=0.4"}},
    {"slow", {path = "/c?delay=0.4"}}, {"api", {path = "/d"}},
  })
  local paths = {}
  for i, r in ipairs(rs) do paths[i] = r.error or verge.json.decode(r.body).path end
  return {body = string.format("%.2f %s", verge.now() - t0, table.concat(paths, ","))}
end

function cases.timeout(req)
  local r, err = verge.fetch("slow", {path = "/z?delay=2", timeout = 200})
  return {body = tostring(r) .. " " .. tostring(err)}
end

function cases.maxbody(req)
  local r, err = verge.fetch("api", {path = "/download/100000", max_body = 1000})
  return {body = tostring(r) .. " " .. tostring(err)}
end

function cases.status(req)
  local r = assert(verge.fetch("api", {path = "/status/418"}))
  return {body = tostring(r.status)}
end

function cases.fetchthenread(req)
  -- the client's large body is still arriving; the fetch has its own
  local r = assert(verge.fetch("api", {path = "/small", body = "small"}))
  local sent = verge.json.decode(r.body).body_len
  local mine = assert(req:read_body())
  return {body = string.format("%d %d", sent, #mine)}
end

function cases.headers(req)
  local r = assert(verge.fetch("api", {path = "/h"}))
  local names = {}
  for k, v in pairs(r.headers) do names[#names + 1] = k end
  table.sort(names)
  local ok, err = pcall(function() r.headers["x-new"] = "1" end)
  return {body = string.format("%s|%s|%s|%s", r.headers["X-Origin"], r.headers["x-origin"],
                               table.concat(names, ","), ok and "writable" or err)}
end

function cases.passthrough(req)
  return verge.fetch("api", {path = "/passed"})
end

function cases.allheaders(req)
  -- the fast one completes first: its result is kept while the slow one runs
  local rs = verge.fetch_all({{"api", {path = "/fast"}}, {"slow", {path = "/s?delay=0.2"}}})
  return {body = rs[1].headers["x-origin"] .. " " .. rs[2].headers["x-origin"] .. " " ..
                 verge.json.decode(rs[1].body).path}
end

function dispatch(req)
  return cases[req.path:match("^/f/(.*)$")](req)
end
"""


@pytest.fixture
def fx(verge, origin):
    api, slow = origin("api"), origin("slow")
    v = verge(MANIFEST % (api.url, slow.url), {"fetch.lua": ('URL_API = "%s"\n' % api.url) + FETCH})
    return v, api, slow


def test_fetch_by_origin_name(fx):
    v, api, _ = fx
    r = v.get("/f/byname")
    assert r.status == 200, r.body
    assert r.body == b"GET /users/7?x=1"
    assert r.headers.get("x-upstream-status") == "200" and r.headers.get("x-origin") == "api"
    assert api.requests[-1].headers.get("x-trace") == "t1"


def test_fetch_by_declared_url(fx):
    v, _, _ = fx
    assert v.get("/f/byurl").body == b"/by/url"


def test_fetch_with_body(fx):
    v, _, _ = fx
    assert v.get("/f/post").body == b"PUT 3"


def test_undeclared_target_refused(fx):
    v, _, _ = fx
    r = v.get("/f/undeclared")
    assert r.status == 403 and b"not an origin of this app" in r.body


def test_fetch_all_runs_in_parallel_without_blocking_others(fx):
    v, _, _ = fx
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        fut = ex.submit(v.get, "/f/all")
        time.sleep(0.1)
        t = time.monotonic()
        other = v.get("/plain")
        other_took = time.monotonic() - t
        r = fut.result()
    took, paths = r.body.decode().split(" ")
    assert paths == "/a?delay=0.4,/b?delay=0.4,/c?delay=0.4,/d", paths
    assert float(took) < 1.0, took  # three 0.4 s fetches at once, not one after another
    assert other.status == 200 and other_took < 0.2, other_took


def test_fetch_timeout(fx):
    v, _, _ = fx
    t = time.monotonic()
    assert v.get("/f/timeout").body == b"nil timed out"
    assert time.monotonic() - t < 1.5


def test_fetch_max_body(fx):
    v, _, _ = fx
    assert v.get("/f/maxbody").body == b"nil response body larger than max_body"


def test_fetch_passes_origin_status(fx):
    v, _, _ = fx
    assert v.get("/f/status").body == b"418"


def test_fetch_body_is_its_own_while_the_client_body_streams(fx):
    v, _, _ = fx
    r = v.request("POST", "/f/fetchthenread", body=b"u" * 300000, timeout=20)
    assert r.body == b"5 300000", r.body


def test_client_leaving_mid_fetch(fx):
    import socket
    v, _, slow = fx
    s = socket.create_connection(("127.0.0.1", v.port))
    s.sendall(b"GET /f/all HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.1)
    s.close()
    time.sleep(0.6)
    assert v.get("/f/byname").status == 200


def test_fetch_headers_are_a_read_only_case_insensitive_view(fx):
    v, _, _ = fx
    origin_ci, origin_lc, names, write = v.get("/f/headers").body.decode().split("|")
    assert origin_ci == "api" and origin_lc == "api"
    assert "x-origin" in names.split(",") and names == names.lower()
    assert "read-only" in write, write


def test_fetch_result_returned_as_the_response(fx):
    v, _, _ = fx
    r = v.get("/f/passthrough")
    assert r.status == 200 and r.headers.get("x-origin") == "api"
    assert json.loads(r.body)["path"] == "/passed"


def test_fetch_all_keeps_early_results_until_the_last(fx):
    v, _, _ = fx
    assert v.get("/f/allheaders").body == b"api slow /fast"
