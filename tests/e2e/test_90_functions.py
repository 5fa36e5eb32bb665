"""Edge functions: Lua handlers and the on_request hook through the real
node — the request object, responses, errors, limits that scripts cannot
escape, the sandbox, async sleep without blocking the worker, reload."""

import concurrent.futures
import subprocess
import time

import pytest

from harness import wait_for

MANIFEST = """\
name: fn
hooks: {on_request: edge.lua:pre}
limits: {lua_instructions: 2000000, lua_memory: 16m, lua_timeout: 2s}
routes:
  - exact: /static-ish
    respond: {body: "plain\\n"}
  - glob: /fn/*
    handler: edge.lua:dispatch
  - path: /hello
    handler: edge.lua
"""

EDGE = r"""
local hits = 0

function pre(req)
  if req.path == "/blocked" then
    return {status = 403, body = "blocked by on_request\n"}
  end
  req.ctx.seen = true
end

function handle(req)
  hits = hits + 1
  return {status = 200, headers = {["x-hits"] = hits}, body = "hello\n"}
end

local cases = {}

function cases.echo(req)
  local q = req.query
  local parts = {req.method, req.path, tostring(q.a), tostring(q.sp), req.headers["X-Test"] or "-",
                 req:header("x-test") or "-", tostring(#req:header_values("x-multi")), req.host, req.scheme,
                 tostring(req.ctx.seen), tostring(#req.id > 0), req.client_ip, req.body}
  return {status = 201, headers = {["x-list"] = {"1", "2"}, ["content-type"] = "text/x-echo"},
          body = table.concat(parts, "|")}
end

function cases.loop() while true do end end
function cases.pcallloop()
  while true do pcall(function() while true do end end) end
end
function cases.coloop()
  local co = coroutine.wrap(function() while true do end end)
  while true do pcall(co) end
end
function cases.sortloop()
  local t = {}
  for i = 1, 100 do t[i] = i end
  while true do pcall(table.sort, t, function(a, b) while true do end end) end
end
function cases.membomb() local s = string.rep("x", 1 << 30) return {body = s} end
function cases.memgrow()
  local t = {}
  while true do
    local ok = pcall(function() for i = 1, 1e6 do t[#t + 1] = string.rep("y", 100) .. i end end)
  end
end
function cases.recurse()
  local function f(n) return f(n + 1) + 1 end
  return {body = tostring(select(2, pcall(f, 1)))}
end
function cases.error() local x = nil return x.field end
function cases.patbomb() return {body = tostring(("a"):rep(1000):find(".-.-.-b"))} end
function cases.badresp() return {status = "nope"} end
function cases.badheader() return {headers = {["x-bad"] = "a\r\nb: c"}} end
function cases.none() return nil end
function cases.sleep()
  local t0 = verge.now()
  verge.sleep(300)
  return {body = string.format("%.1f", verge.now() - t0)}
end
function cases.sleeptoolong() verge.sleep(10000) return {body = "late"} end
function cases.sandbox(req)
  local out = {}
  for _, k in ipairs({"io", "debug", "require", "dofile", "loadfile", "package", "collectgarbage"}) do
    out[#out + 1] = k .. "=" .. type(_ENV[k])
  end
  out[#out + 1] = "os.execute=" .. type(os.execute)
  out[#out + 1] = "os.time=" .. type(os.time)
  out[#out + 1] = "string.dump=" .. type(string.dump) .. "/" .. type(("").dump)
  out[#out + 1] = "binary=" .. tostring(load(string.char(27) .. "Lua") ~= nil)
  out[#out + 1] = "loadenv=" .. tostring(load("return io")())
  out[#out + 1] = "getmt=" .. tostring(getmetatable(req))
  -- finalizers run with hooks off: an endless one would hold the worker
  out[#out + 1] = "gc=" .. tostring(pcall(setmetatable, {}, {__gc = function() while true do end end}))
  out[#out + 1] = "setmt=" .. tostring(getmetatable(setmetatable({}, {__index = {}})) ~= nil)
  return {body = table.concat(out, " ")}
end
function cases.keep(req)
  kept = req
  return {body = "kept"}
end
function cases.usekept()
  local ok, err = pcall(function() return kept.method end)
  return {body = tostring(ok) .. " " .. tostring(err):gsub("^.-: ", "")}
end
function cases.log(req)
  verge.log.warn("from lua", {user = "u1", n = 3})
  print("printed", 1, true)
  return {body = "logged"}
end

function cases.readbody(req)
  local streamed = req.body == nil
  local b, err = req:read_body()
  if not b then return {status = 413, body = err} end
  return {body = string.format("%d %s %s", #b, b:sub(1, 5), tostring(streamed))}
end
function cases.readsmall(req)
  local b, err = req:read_body(1000)
  return {status = b and 200 or 413, body = tostring(err)}
end

function cases.hdrpairs(req)
  local names = {}
  for k, v in pairs(req.headers) do names[#names + 1] = k .. "=" .. v end
  table.sort(names)
  req:set_header("x-new", "1")
  local ok = pcall(function() req.headers.x = 1 end)
  return {body = table.concat(names, ";") .. " new=" .. tostring(req.headers["X-New"]) .. " assign=" .. tostring(ok)}
end

function cases.lib(req)
  local out = {}
  local obj = verge.json.decode('{"a":[1,2,{"b":null}],"s":"x"}')
  out[#out + 1] = verge.json.encode({n = #obj.a, null = obj.a[3].b == verge.json.null, s = obj.s})
  out[#out + 1] = verge.base64.encode("hello") .. " " .. verge.base64.decode("aGVsbG8=")
  out[#out + 1] = verge.hex.encode("\1\255") .. " " .. tostring(select(2, verge.hex.decode("zz")) ~= nil)
  out[#out + 1] = verge.crypto.sha256_hex("abc"):sub(1, 16)
  out[#out + 1] = verge.crypto.hmac_sha256_hex("key", "The quick brown fox jumps over the lazy dog"):sub(1, 16)
  out[#out + 1] = tostring(verge.crypto.equals("a", "a")) .. tostring(#verge.crypto.random(16))
  local n = verge.shared.incr("hits", 1, {ttl = 60})
  verge.shared.set("greeting", "hi", {ttl = 0.2})
  out[#out + 1] = tostring(n) .. " " .. tostring(verge.shared.get("greeting"))
  local ok, err = pcall(verge.shared.get, "x", {scope = "global"})
  out[#out + 1] = tostring(ok) .. " " .. tostring(err):match("scope=global[^(]*")
  return {headers = {["content-type"] = "text/plain"}, body = table.concat(out, "\n")}
end
function cases.ttl(req)
  return {body = tostring(verge.shared.get("greeting"))}
end

function dispatch(req)
  local name = req.path:match("^/fn/(.*)$")
  local f = cases[name]
  if not f then return {status = 404, body = "no case " .. name} end
  return f(req)
end
"""


@pytest.fixture
def v(verge):
    v = verge(MANIFEST, {"edge.lua": EDGE}, args=["--dev"])
    yield v
    assert v.alive(), v.logs()
    assert v.get("/hello").status == 200  # the app still serves after whatever the test did


def test_handler_file_default_function(v):
    r1, r2 = v.get("/hello"), v.get("/hello")
    assert (r1.status, r1.body) == (200, b"hello\n")
    assert int(r2.headers.get("x-hits")) == int(r1.headers.get("x-hits")) + 1  # module state lives per worker


def test_request_object_and_response(v):
    r = v.request("POST", "/fn/echo?a=1&sp=x+y%21", body=b"payload",
                  headers={"X-Test": "tv", "X-Multi": "m1"})
    assert r.status == 201, r.body
    assert r.headers.get("content-type") == "text/x-echo"
    assert r.headers.get_all("x-list") == ["1", "2"]
    parts = r.body.decode().split("|")
    assert parts[:7] == ["POST", "/fn/echo", "1", "x y!", "tv", "tv", "1"], parts
    assert parts[8:] == ["http", "true", "true", "127.0.0.1", "payload"], parts


def test_headers_iterate_and_join(v):
    with v.raw() as c:
        c.send(b"GET /fn/hdrpairs HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\nX-B: b\r\n\r\n")
        r = c.read_response()
    body = r.body.decode()
    assert "x-a=1, 2" in body and "x-b=b" in body and "new=1" in body and "assign=false" in body, body


BIG_MANIFEST = """\
name: big
limits: {lua_memory: 128m}
routes:
  - exact: /big
    handler: big.lua:big
  - exact: /churn
    handler: big.lua:churn
"""

BIG = r"""
function big(req)
  -- 8 MiB made for this request only; it goes out from the Lua string itself
  return {body = string.rep(string.rep(" ", 1019) .. "block", 8192)}
end
function churn(req)
  local t = {}
  for i = 1, 2000 do t[i] = {i, tostring(i) .. string.rep("y", 200)} end
  return {body = tostring(#t)}
end
"""


def test_large_body_outlives_the_call_while_a_slow_client_reads(verge):
    # A body sent from the Lua string itself must stay alive (and unchanged)
    # while a slow client takes it and other calls churn the same heap (one
    # worker: one Lua state) so that the collector runs meanwhile.
    import hashlib
    import socket
    v = verge(BIG_MANIFEST, {"big.lua": BIG}, args=["--workers", "1"])
    want = ("%1024s" % "block").encode() * 8192
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.connect(("127.0.0.1", v.port))
    s.sendall(b"GET /big HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    time.sleep(0.3)
    for _ in range(100):
        assert v.get("/churn").body == b"2000"
    got = b""
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        got += chunk
    s.close()
    body = got.split(b"\r\n\r\n", 1)[1]
    assert len(body) == len(want)
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(want).hexdigest()
    assert v.alive()


def test_on_request_answers_or_passes(v):
    r = v.get("/blocked")
    assert (r.status, r.body) == (403, b"blocked by on_request\n")
    assert v.get("/static-ish").body == b"plain\n"  # hook passed, route ran


@pytest.mark.parametrize("case", ["loop", "pcallloop", "coloop", "sortloop"])
def test_cpu_limit_cannot_be_escaped(v, case):
    t = time.monotonic()
    r = v.get("/fn/" + case, timeout=10)
    assert r.status == 503, r.body
    assert b"limits.lua_instructions" in r.body or b"limits.lua_timeout" in r.body
    assert time.monotonic() - t < 5
    assert any(x.get("msg") == "function stopped at a limit" for x in v.log_records())


@pytest.mark.parametrize("case", ["loop", "pcallloop", "coloop", "sortloop"])
def test_cpu_limit_with_the_default_budget(verge, case):
    """The default budget (100 M instructions) is large: calls start
    without the count hook and the CPU ticker arms it (fn_tick.c); the
    same escapes must still end at a limit."""
    manifest = MANIFEST.replace("lua_instructions: 2000000, ", "").replace("lua_timeout: 2s", "lua_timeout: 5s")
    v = verge(manifest, {"edge.lua": EDGE}, args=["--dev"])
    t = time.monotonic()
    r = v.get("/fn/" + case, timeout=15)
    assert r.status == 503, r.body
    assert b"limits.lua_instructions" in r.body or b"limits.lua_timeout" in r.body
    assert time.monotonic() - t < 10
    assert v.get("/hello").status == 200


@pytest.mark.parametrize("case", ["membomb", "memgrow", "recurse"])
def test_memory_limit(v, case):
    r = v.get("/fn/" + case, timeout=10)
    assert r.status == 503, r.body
    assert b"limits.lua_memory" in r.body
    assert v.get("/fn/echo").status == 201  # memory came back


def test_pattern_backtracking_bomb_is_refused(v):
    """Lua's matcher backtracks in C, out of the hook's reach: this one
    held a worker for 14 s before the sandbox bounded patterns."""
    t = time.monotonic()
    r = v.get("/fn/patbomb", timeout=30)
    assert r.status == 500 and b"pattern too costly" in r.body, r.body
    assert time.monotonic() - t < 3
    assert v.get("/hello").status == 200


def test_script_error_500_with_traceback_in_log(v):
    r = v.get("/fn/error")
    assert r.status == 500
    assert b"attempt to index a nil value" in r.body  # --dev shows it
    recs = [x for x in v.log_records() if x.get("msg") == "function failed"]
    assert recs and "edge.lua:" in recs[-1]["error"] and "traceback" in recs[-1]["error"], recs


def test_script_error_body_hidden_without_dev(verge):
    v = verge(MANIFEST, {"edge.lua": EDGE})
    r = v.get("/fn/error")
    assert r.status == 500 and b"nil value" not in r.body


@pytest.mark.parametrize("case,why", [("badresp", b"status must be"), ("badheader", b"invalid header")])
def test_bad_responses_are_500(v, case, why):
    r = v.get("/fn/" + case)
    assert r.status == 500 and why in r.body, r.body


def test_nil_from_route_handler_is_404(v):
    assert v.get("/fn/none").status == 404


def test_sandbox(v):
    body = v.get("/fn/sandbox").body.decode()
    for want in ["io=nil", "debug=nil", "require=nil", "dofile=nil", "loadfile=nil", "package=nil",
                 "collectgarbage=function", "os.execute=nil", "os.time=function", "string.dump=nil/nil",
                 "binary=false", "loadenv=nil", "getmt=false", "gc=false", "setmt=true"]:
        assert want in body, body


def test_request_object_dies_with_its_request(v):
    assert v.get("/fn/keep").body == b"kept"
    assert v.get("/fn/usekept").body.decode().startswith("false the request is over"), v.get("/fn/usekept").body


def test_library_through_the_node(v):
    lines = v.get("/fn/lib").body.decode().split("\n")
    assert lines[0] == '{"n":3,"null":true,"s":"x"}', lines
    assert lines[1] == "aGVsbG8= hello"
    assert lines[2] == "01ff true"
    assert lines[3] == "ba7816bf8f01cfea"  # SHA-256("abc")
    assert lines[4] == "f7bc83f430538424"  # HMAC-SHA256 (RFC 4231 style vector, Wikipedia's)
    assert lines[5] == "true16"
    assert lines[6] == "1 hi"
    assert lines[7].startswith("false scope=global"), lines[7]
    assert v.get("/fn/lib").body.decode().split("\n")[6].startswith("2 ")  # the counter is shared
    time.sleep(0.3)
    assert v.get("/fn/ttl").body == b"nil"  # the 0.2 s TTL ran out


def test_read_body_small_and_streamed(v):
    r = v.request("POST", "/fn/readbody", body=b"hello")
    assert r.body == b"5 hello false", r.body
    big = b"abcde" + b"z" * 400000
    r = v.request("POST", "/fn/readbody", body=big)
    assert r.body == b"400005 abcde true", r.body
    r = v.request("POST", "/fn/readsmall", body=big)
    assert r.status == 413 and b"larger than the limit" in r.body


def test_read_body_over_app_limit(v):
    r = v.request("POST", "/fn/readbody", body=b"q" * (20 << 20), timeout=30)
    assert r.status == 413


def test_sleep_does_not_block_the_worker(v):
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        t = time.monotonic()
        sleeps = [ex.submit(v.get, "/fn/sleep") for _ in range(5)]
        time.sleep(0.05)
        fast = v.get("/hello")
        fast_at = time.monotonic() - t
        results = [f.result() for f in sleeps]
    assert fast.status == 200 and fast_at < 0.25, fast_at  # answered while 5 handlers slept (1 worker)
    assert all(r.status == 200 and 0.25 <= float(r.body) < 1.0 for r in results), [r.body for r in results]


def test_wall_clock_limit_while_waiting(v):
    t = time.monotonic()
    r = v.get("/fn/sleeptoolong", timeout=10)
    assert r.status == 503 and b"limits.lua_timeout" in r.body
    assert 1.5 < time.monotonic() - t < 4


def test_client_leaving_mid_sleep_is_fine(v):
    import socket
    s = socket.create_connection(("127.0.0.1", v.port))
    s.sendall(b"GET /fn/sleep HTTP/1.1\r\nHost: x\r\n\r\n")
    s.close()
    time.sleep(0.5)
    assert v.get("/fn/echo").status == 201


def test_lua_log_lines_join_the_node_log(v):
    v.get("/fn/log")
    recs = wait_for(lambda: [x for x in v.log_records() if x.get("msg") == "from lua"], 3)
    assert recs and recs[0]["user"] == "u1" and recs[0]["n"] == "3" and recs[0]["app"] == "fn"
    assert recs[0]["request_id"]
    assert [x for x in v.log_records() if x.get("msg") == "printed\t1\ttrue"]


def test_check_reports_lua_syntax_error_with_position(tmp_path, verge_bin):
    (tmp_path / "verge.yaml").write_text(MANIFEST)
    (tmp_path / "edge.lua").write_text("function pre(req)\n  return {\nend\n")
    p = subprocess.run([verge_bin, "check", str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 1
    assert str(tmp_path / "edge.lua") + ":4:1:" in p.stderr or str(tmp_path / "edge.lua") + ":3:1:" in p.stderr, p.stderr


def test_check_reports_missing_function(tmp_path, verge_bin):
    (tmp_path / "verge.yaml").write_text(MANIFEST)
    (tmp_path / "edge.lua").write_text("function pre(req) end\n")
    p = subprocess.run([verge_bin, "check", str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 1
    assert "verge.yaml:" in p.stderr and "no function 'dispatch'" in p.stderr, p.stderr


def test_check_refuses_endless_top_level(tmp_path, verge_bin):
    (tmp_path / "verge.yaml").write_text(MANIFEST)
    (tmp_path / "edge.lua").write_text("while true do pcall(function() while true do end end) end\n")
    p = subprocess.run([verge_bin, "check", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "instruction limit while loading" in p.stderr, p.stderr


def test_handler_outside_app_dir_refused(tmp_path, verge_bin):
    app = tmp_path / "app"
    app.mkdir()
    (tmp_path / "evil.lua").write_text("function handle() end\n")
    (app / "verge.yaml").write_text("name: x\nroutes:\n  - path: /\n    handler: ../evil.lua\n")
    p = subprocess.run([verge_bin, "check", str(app)], capture_output=True, text=True)
    assert p.returncode == 1 and "outside the app directory" in p.stderr, p.stderr


def test_hot_reload_keeps_in_flight_on_old_version(v):
    slow = concurrent.futures.ThreadPoolExecutor(1).submit(v.get, "/fn/sleep")
    time.sleep(0.1)
    (v.app_dirs[0] / "edge.lua").write_text(EDGE.replace('body = "hello\\n"', 'body = "hello v2\\n"'))
    v.reload()
    assert wait_for(lambda: v.get("/hello").body == b"hello v2\n", 3), v.logs()
    r = slow.result()
    assert r.status == 200  # finished on the version it started on


def test_reload_with_broken_lua_keeps_old(v):
    (v.app_dirs[0] / "edge.lua").write_text("this is not lua\n")
    v.reload()
    assert wait_for(lambda: "reload failed" in v.stderr(), 3), v.logs()
    assert v.get("/hello").body == b"hello\n"
    assert "edge.lua:1:" in v.stderr()


# ---- rewriting requests (on_request) and responses (on_response) -------------------

HOOKS_MANIFEST = """\
name: hooks
hooks: {on_request: hooks.lua:pre, on_response: hooks.lua:post}
origins:
  api: {servers: ["%s"]}
routes:
  - path: /api
    proxy: api
    strip_prefix: /api
  - exact: /fixed
    respond: {body: "fixed body\\n"}
  - exact: /fail
    handler: hooks.lua:fail
  - path: /files
    static: public
"""

HOOKS = r"""
function pre(req)
  if req.path == "/old" then req:set_path("/api/new?from=old") end
  req:set_header("x-added", "by-lua")
  req:set_header("x-drop-me", nil)
  req.ctx.t0 = verge.now()
end

function post(req, res)
  res.headers["x-post"] = "seen " .. res.status
  res.headers["x-had-ctx"] = tostring(req.ctx.t0 ~= nil)
  if req.path == "/fixed" then
    res.body = res.body:upper()
  end
  if res.status == 404 then
    return {status = 404, headers = {["content-type"] = "text/plain"}, body = "custom not found\n"}
  end
end

function fail(req) error("boom") end
"""


@pytest.fixture
def hooks(verge, origin):
    o = origin("o")
    v = verge(HOOKS_MANIFEST % o.url, {"hooks.lua": HOOKS, "public/a.txt": "static file\n"})
    return v, o


def test_on_request_rewrites_path_and_headers_before_proxying(hooks):
    v, o = hooks
    r = v.request("GET", "/old", headers={"X-Drop-Me": "1"})
    assert r.status == 200, r.body
    rec = o.requests[-1]
    assert rec.path == "/new?from=old"
    assert rec.headers.get("x-added") == "by-lua" and rec.headers.get("x-drop-me") is None
    assert r.headers.get("x-post") == "seen 200"  # the origin's response went through on_response


def test_on_response_rewrites_bodies_and_keeps_lengths_right(hooks):
    v, _ = hooks
    r = v.get("/fixed")
    assert (r.status, r.body) == (200, b"FIXED BODY\n")
    assert r.headers.get("content-length") == str(len(r.body))
    assert r.headers.get("x-had-ctx") == "true"
    r = v.get("/files/a.txt")
    assert (r.status, r.body, r.headers.get("x-post")) == (200, b"static file\n", "seen 200")
    r = v.get("/nothing-here")
    assert (r.status, r.body) == (404, b"custom not found\n")


def test_on_response_sees_handler_errors(hooks):
    v, _ = hooks
    r = v.get("/fail")
    assert r.status == 500 and r.headers.get("x-post") == "seen 500"


def test_on_response_large_origin_response_passes_unhooked(hooks):
    v, _ = hooks
    r = v.get("/api/download/%d" % (3 << 20), timeout=30)
    assert r.status == 200 and len(r.body) == 3 << 20
    assert r.headers.get("x-post") is None
    assert "too large for on_response" in v.stderr()


# ---- verge test ----------------------------------------------------------------------

APP_TESTS = r"""
local T = verge.test

test("hello answers", function()
  local r = T.request{path = "/hello"}
  T.eq(r.status, 200)
  T.eq(r.body, "hello\n")
end)

function test_on_request_blocks()
  T.eq(T.request{path = "/blocked"}.status, 403)
end

function test_post_echo()
  local r = T.request{method = "POST", path = "/fn/echo?a=1", body = "xyz", headers = {["X-Test"] = "v"}}
  T.eq(r.status, 201)
  T.contains(r.body, "|xyz")
end
"""

FAILING = r"""
function test_wrong_status()
  verge.test.eq(verge.test.request{path = "/hello"}.status, 404, "hello")
end
"""


def write_test_app(tmp_path, tests):
    from harness import write_app
    write_app(tmp_path, MANIFEST, {"edge.lua": EDGE, **tests})
    return tmp_path


def test_verge_test_passes(tmp_path, verge_bin):
    d = write_test_app(tmp_path, {"test/basic.lua": APP_TESTS})
    p = subprocess.run([verge_bin, "test", str(d)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "3 passed, 0 failed" in p.stdout
    assert "ok   hello answers" in p.stdout and "ok   test_post_echo" in p.stdout


def test_verge_test_failure_names_the_line(tmp_path, verge_bin):
    d = write_test_app(tmp_path, {"test/basic.lua": APP_TESTS, "test/zfail.lua": FAILING})
    p = subprocess.run([verge_bin, "test", str(d)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert "3 passed, 1 failed" in p.stdout
    assert "zfail.lua:3: hello: expected 404, got 200" in p.stdout, p.stdout


def test_verge_test_json(tmp_path, verge_bin):
    import json
    d = write_test_app(tmp_path, {"test/zfail.lua": FAILING})
    p = subprocess.run([verge_bin, "test", "--json", str(d)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    out = json.loads(p.stdout)
    assert out["failed"] == 1 and out["passed"] == 0
    t = out["files"][0]["tests"][0]
    assert t["name"] == "test_wrong_status" and not t["ok"] and "zfail.lua:3" in t["error"]


def test_verge_test_broken_app_reports_position(tmp_path, verge_bin):
    from harness import write_app
    write_app(tmp_path, MANIFEST, {"edge.lua": "function pre(\n", "test/a.lua": APP_TESTS})
    p = subprocess.run([verge_bin, "test", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "edge.lua:2:1:" in p.stderr, p.stderr


def test_hot_reload_under_load_fails_no_request(v):
    """Clients hammer a Lua handler on keep-alive connections while the
    code is replaced five times: every request succeeds, and each answer
    comes from a whole version (old or new, never a failure between)."""
    import threading
    from harness import RawConn
    stop = threading.Event()
    bad, seen, counts = [], set(), [0]

    def client():
        with RawConn(v.port, timeout=10) as c:
            while not stop.is_set():
                r = c.request("GET", "/hello")
                counts[0] += 1
                if r.status != 200:
                    bad.append((r.status, r.body[:100]))
                seen.add(r.body)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(1, 6):
            time.sleep(0.3)
            (v.app_dirs[0] / "edge.lua").write_text(EDGE.replace('body = "hello\\n"', 'body = "hello v%d\\n"' % i))
            v.reload()
            assert wait_for(lambda: v.get("/hello").body == b"hello v%d\n" % i, 5), v.logs()
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not bad, bad[:5]
    assert counts[0] > 100
    assert b"hello v5\n" in seen and seen <= {b"hello\n"} | {b"hello v%d\n" % i for i in range(1, 6)}


def test_read_body_over_http2_small_and_streamed(v):
    """The same handler over h2c: a small body whole, a large one streamed
    to Lua (flow control is the backpressure), the limit at the boundary."""
    from test_71_h2_streams import H2
    c = H2(v.port)
    st = c.request("POST", "/fn/readbody", b"hello")
    assert st["status"] == 200 and st["body"] == b"5 hello false", st
    big = b"abcde" + b"z" * 400000
    st = c.request("POST", "/fn/readbody", big)
    assert st["body"] == b"400005 abcde true", st
    st = c.request("POST", "/fn/readsmall", big)
    assert st["status"] == 413 and b"larger than the limit" in st["body"]
    assert c.request("GET", "/hello")["status"] == 200  # same connection, still usable
