"""Messaging: subscriptions in the manifest run a Lua handler per bus
message (in-process bus, and NATS with plain clients on the app's
documented subjects verge.app.APP.<subject>), with the limits of request
handlers; verge.request from Lua with a timeout; `verge check` refuses a
bad `subscriptions:` section with file:line:col."""

import re
import socket
import subprocess
import time

from harness import metric_sum, wait_for, write_app


class Client:
    """A plain NATS client (the protocol by hand, as any client)."""

    def __init__(self, port, headers=False):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.s.recv(4096)  # INFO
        opts = b'{"verbose":false,"headers":true,"no_responders":true}' if headers else b'{"verbose":false}'
        self.s.sendall(b"CONNECT " + opts + b"\r\n")
        self.buf = b""
        self.sid = 0
        self.flush()

    def flush(self):
        self.s.sendall(b"PING\r\n")
        while b"PONG\r\n" not in self.buf:
            self.buf += self.s.recv(4096)
        before, after = self.buf.split(b"PONG\r\n", 1)
        self.buf = before + after

    def sub(self, subject):
        self.sid += 1
        self.s.sendall(b"SUB %s %d\r\n" % (subject.encode(), self.sid))
        self.flush()

    def pub(self, subject, payload, reply=None):
        r = (b" " + reply.encode()) if reply else b""
        self.s.sendall(b"PUB %s%s %d\r\n%s\r\n" % (subject.encode(), r, len(payload), payload))

    def next(self, timeout=5):
        """(subject, payload) of the next MSG/HMSG, or None after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if b"\r\n" in self.buf:
                line, rest = self.buf.split(b"\r\n", 1)
                if line.startswith(b"MSG ") or line.startswith(b"HMSG "):
                    parts = line.split()
                    n = int(parts[-1])
                    while len(rest) < n + 2:
                        rest += self.s.recv(4096)
                    self.buf = rest[n + 2:]
                    hlen = int(parts[-2]) if line.startswith(b"HMSG ") else 0
                    return parts[1].decode(), rest[:n][hlen:]
                if line == b"PING":
                    self.s.sendall(b"PONG\r\n")
                self.buf = rest
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.s.settimeout(left)
            try:
                self.buf += self.s.recv(4096)
            except socket.timeout:
                return None

    def request(self, subject, payload, timeout=5):
        inbox = "_INBOX.t%d" % (self.sid + 1)
        self.sub(inbox)
        self.pub(subject, payload, inbox)
        return self.next(timeout)


def messages(v, sub, result):
    return metric_sum(v.metrics(), "verge_fn_messages_total", subscription=sub, result=result)


# ---- a handler per message, with NATS and plain clients ----------------------------

ORDERS = """\
name: shop
subscriptions:
  - subject: orders.*
    handler: edge.lua:on_order
routes:
  - exact: /seen
    handler: edge.lua:seen
"""
ORDERS_LUA = """\
function on_order(msg)
  verge.log.info("order", {subject = msg.subject})
  verge.sleep(5)  -- handlers may wait
  local ok, err = verge.kv.set("last", msg.data)
  assert(ok, err)
  verge.shared.incr("n", 1)
  verge.publish("seen." .. msg.subject:gsub("%.", "_"), msg.data .. " " .. tostring(msg.reply))
  if msg.reply then return "ok:" .. msg.data end
end
function seen(req)
  return {body = tostring(verge.shared.get("n")) .. " " .. tostring(verge.kv.get("last")) .. "\\n"}
end
"""


def test_handler_runs_per_message_from_a_plain_nats_client(verge, nats_server):
    n = nats_server()
    v = verge(ORDERS, {"edge.lua": ORDERS_LUA}, args=["--nats", n.url])
    c = Client(n.port)
    c.sub("verge.app.shop.seen.>")
    c.pub("verge.app.shop.orders.created", b"42")
    assert c.next() == ("verge.app.shop.seen.orders_created", b"42 false")
    c.pub("verge.app.shop.orders.paid", b"43")
    assert c.next() == ("verge.app.shop.seen.orders_paid", b"43 false")
    c.pub("verge.app.shop.other", b"x")  # not subscribed
    c.pub("verge.app.shop.orders.a.b", b"x")  # '*' is one token
    # a request: the handler's string is the answer
    req = Client(n.port)
    assert req.request("verge.app.shop.orders.ask", b"7") == ("_INBOX.t1", b"ok:7")
    assert c.next() == ("verge.app.shop.seen.orders_ask", b"7 true")
    assert v.get("/seen").body == b"3 7\n"
    assert messages(v, "orders.*", "ok") == 3
    assert messages(v, "orders.*", "error") == 0
    assert any(r.get("msg") == "subscribed" and r.get("subject") == "verge.app.shop.orders.*"
               for r in v.log_records())


FANOUT = """\
name: fan
subscriptions:
  - subject: work
    handler: edge.lua:work
  - subject: news
    handler: edge.lua:news
    deliver: all
routes:
  - exact: /n
    handler: edge.lua:counts
"""
FANOUT_LUA = """\
function work(msg) verge.shared.incr("work", 1) end
function news(msg) verge.shared.incr("news", 1) end
function counts(req)
  return {body = tostring(verge.shared.get("work") or 0) .. " " .. tostring(verge.shared.get("news") or 0)}
end
"""


def test_deliver_one_and_all_across_two_nodes(verge, nats_server):
    n = nats_server()
    a = verge(FANOUT, {"edge.lua": FANOUT_LUA}, args=["--nats", n.url], workers=2)
    b = verge(FANOUT, {"edge.lua": FANOUT_LUA}, args=["--nats", n.url], workers=2)
    c = Client(n.port)
    for i in range(40):
        c.pub("verge.app.fan.work", b"%d" % i)
    for i in range(5):
        c.pub("verge.app.fan.news", b"%d" % i)
    c.flush()

    def counts():
        return [tuple(int(x) for x in v.get("/n").body.split()) for v in (a, b)]

    assert wait_for(lambda: sum(w for w, _ in counts()) >= 40 and all(nw >= 5 for _, nw in counts()), 10)
    time.sleep(0.3)
    (wa, na), (wb, nb) = counts()
    assert wa + wb == 40, counts()  # each "one" message handled once, by one node
    assert wa > 0 and wb > 0, counts()  # ... shared between the nodes (a queue group)
    assert na == 5 and nb == 5, counts()  # "all": every node


# ---- limits, errors; the in-process bus -------------------------------------------

LIMITS = """\
name: lim
limits:
  lua_instructions: 200000
  lua_timeout: 300ms
  lua_memory: 4m
subscriptions:
  - subject: jobs
    handler: edge.lua:job
routes:
  - exact: /pub
    handler: edge.lua:pub
  - exact: /done
    handler: edge.lua:done
"""
LIMITS_LUA = """\
function job(msg)
  local d = msg.data
  if d == "loop" then while true do end end
  if d == "budget" then local x = 0 for i = 1, 1e9 do x = x + i end end
  if d == "pcall-loop" then pcall(function() while true do end end) end
  if d == "slow" then verge.sleep(5000) end
  -- 10 KB a step: the 4 MB cap comes after ~400 steps, far from the 200,000-instruction budget
  if d == "memory" then local t = {} for i = 1, 1e7 do t[i] = string.rep("x", 10000) .. i end end
  if d == "error" then error("boom") end
  verge.shared.set("done", d)
end
function pub(req)
  return {body = tostring(verge.publish("jobs", req.query.d)) .. "\\n"}
end
function done(req) return {body = tostring(verge.shared.get("done"))} end
"""


def test_handlers_over_a_limit_are_stopped_counted_and_the_next_message_runs(verge):
    v = verge(LIMITS, {"edge.lua": LIMITS_LUA})  # in-process bus: verge.publish reaches the app's subscription
    expect = {"loop": "limits.lua_instructions", "budget": "limits.lua_instructions",
              "pcall-loop": "limits.lua_instructions", "slow": "limits.lua_timeout",
              "memory": "limits.lua_memory"}
    for i, (d, limit) in enumerate(expect.items()):
        assert v.get("/pub?d=" + d).body == b"true\n"
        assert v.get("/pub?d=ok%d" % i).body == b"true\n"
        assert wait_for(lambda: v.get("/done").body == b"ok%d" % i, 10)
        assert wait_for(lambda: any(r.get("msg") == "function stopped at a limit" and r.get("limit") == limit
                             and r.get("function") == "job" for r in v.log_records()), 5)
    assert v.get("/pub?d=error").body == b"true\n"
    assert v.get("/pub?d=after").body == b"true\n"
    assert wait_for(lambda: v.get("/done").body == b"after", 10)
    assert messages(v, "jobs", "limit") == 5
    assert messages(v, "jobs", "error") == 1
    assert messages(v, "jobs", "ok") == 6
    assert any(r.get("msg") == "function failed" and "boom" in r.get("error", "") for r in v.log_records())
    assert v.get("/done").status == 200  # the app keeps serving


# ---- verge.request ------------------------------------------------------------------

ECHO = """\
name: rr
subscriptions:
  - subject: svc.*
    handler: edge.lua:serve
routes:
  - exact: /ask
    handler: edge.lua:ask
"""
ECHO_LUA = """\
function serve(msg)
  if msg.subject == "svc.slow" then verge.sleep(1000) end
  if msg.subject == "svc.fail" then error("nope") end
  if msg.subject == "svc.fetch" then
    local ok, err = pcall(verge.fetch, "http://127.0.0.1:1/")
    return tostring(ok) .. " " .. tostring(err)
  end
  return "echo:" .. msg.data .. ":" .. msg.subject .. ":" .. NODE
end
function ask(req)
  local t0 = verge.now()
  local r, err = verge.request(req.query.s, req.query.p or "", {timeout = tonumber(req.query.t or "2000")})
  return {body = tostring(r) .. "|" .. tostring(err) .. "|" .. string.format("%.0f", (verge.now() - t0) * 1000)}
end
"""


def ask(v, s, p="", t=2000):
    return v.get("/ask?s=%s&p=%s&t=%d" % (s, p, t)).body.decode().split("|")


def test_request_to_the_apps_own_subscription_in_process(verge):
    # one worker: the answering handler runs on the loop that waits for it
    v = verge(ECHO, {"edge.lua": "NODE = 'one'\n" + ECHO_LUA}, workers=1)
    r, err, _ = ask(v, "svc.echo", "hi")
    assert (r, err) == ("echo:hi:svc.echo:one", "nil")
    r, err, ms = ask(v, "nobody.here")
    assert (r, err) == ("nil", "no responders") and int(ms) < 500
    r, err, ms = ask(v, "svc.slow", t=200)
    assert (r, err) == ("nil", "timeout") and 150 <= int(ms) < 900, ms
    assert v.get("/ask?s=svc.echo&p=x").status == 200  # serving while the slow handler still runs
    r, err, ms = ask(v, "svc.fail", t=300)
    assert (r, err) == ("nil", "timeout")  # a failed handler does not answer
    r, err, _ = ask(v, "svc.fetch")
    assert r.startswith("false") and "not available in message handlers" in r, r
    assert v.get("/ask?s=a..b").status == 500  # a script error, logged
    assert any("verge.request: invalid subject 'a..b'" in r.get("error", "") for r in v.log_records())
    assert wait_for(lambda: messages(v, "svc.*", "error") == 1, 5)


def test_request_across_two_nodes_over_nats(verge, nats_server):
    n = nats_server()
    asker_manifest = "name: rr\nroutes:\n  - exact: /ask\n    handler: edge.lua:ask\n"
    a = verge(asker_manifest, {"edge.lua": "NODE = 'a'\n" + ECHO_LUA}, args=["--nats", n.url])
    b = verge(ECHO, {"edge.lua": "NODE = 'b'\n" + ECHO_LUA}, args=["--nats", n.url])
    r, err, _ = ask(a, "svc.echo", "hi")
    assert (r, err) == ("echo:hi:svc.echo:b", "nil")  # answered by the other node
    r, err, ms = ask(a, "nobody.here")
    assert (r, err) == ("nil", "no responders") and int(ms) < 1000
    r, err, ms = ask(a, "svc.slow", t=200)
    assert (r, err) == ("nil", "timeout") and 150 <= int(ms) < 900, ms
    # a plain client sees the same service
    c = Client(n.port, headers=True)
    assert c.request("verge.app.rr.svc.x", b"q")[1] == b"echo:q:svc.x:b"
    b.stop()
    assert wait_for(lambda: ask(a, "svc.echo", t=300)[1] == "no responders", 5)


# ---- reload ------------------------------------------------------------------------

RELOAD = """\
name: up
subscriptions:
  - subject: ev
    handler: edge.lua:ev
routes:
  - exact: /get
    handler: edge.lua:get
"""
RELOAD_LUA = """\
function ev(msg)
  if msg.data == "slow" then verge.sleep(400) end
  verge.shared.set(msg.data, VERSION)
end
function get(req) return {body = tostring(verge.shared.get(req.query.k))} end
function pub(req) return {body = tostring(verge.publish("ev", req.query.d))} end
"""


def test_reload_new_messages_run_the_new_version_in_flight_ones_finish(verge, tmp_path):
    routes_pub = "  - exact: /pub\n    handler: edge.lua:pub\n"
    v = verge(RELOAD + routes_pub, {"edge.lua": "VERSION = 'v1'\n" + RELOAD_LUA})
    assert v.get("/pub?d=first").body == b"true"
    assert wait_for(lambda: v.get("/get?k=first").body == b"v1", 5)
    assert v.get("/pub?d=slow").body == b"true"
    time.sleep(0.1)  # the slow call is waiting on v1
    write_app(v.app_dirs[0], RELOAD + routes_pub, {"edge.lua": "VERSION = 'v2'\n" + RELOAD_LUA})
    v.reload()
    assert wait_for(lambda: any(r.get("msg") == "reloaded" for r in v.log_records()), 5)
    assert v.get("/pub?d=second").body == b"true"
    assert wait_for(lambda: v.get("/get?k=second").body == b"v2", 5)
    assert wait_for(lambda: v.get("/get?k=slow").body == b"v1", 5)  # finished on the old version
    # the subscription goes away with the manifest's entry
    write_app(v.app_dirs[0], "name: up\nroutes:\n  - exact: /get\n    handler: edge.lua:get\n" + routes_pub,
              {"edge.lua": "VERSION = 'v3'\n" + RELOAD_LUA})
    v.reload()
    assert wait_for(lambda: sum(1 for r in v.log_records() if r.get("msg") == "reloaded") == 2, 5)
    assert v.get("/pub?d=third").body == b"true"
    time.sleep(0.3)
    assert v.get("/get?k=third").body == b"nil"
    assert v.alive()


# ---- verge check ---------------------------------------------------------------------

DIAG = re.compile(r"(\S+verge\.yaml):(\d+):(\d+): (.*)")


def check(verge_bin, tmp_path, manifest, lua="function on_order() end\n"):
    d = write_app(tmp_path / "c", manifest, {"edge.lua": lua})
    p = subprocess.run([str(verge_bin), "check", str(d)], capture_output=True, timeout=20, cwd=tmp_path,
                       stdin=subprocess.DEVNULL)
    err = p.stderr.decode()
    m = DIAG.search(err)
    return p.returncode, (int(m.group(2)), int(m.group(3)), m.group(4)) if m else err


BASE = "name: c\nroutes:\n  - respond: ok\nsubscriptions:\n"


def test_check_refuses_bad_subscriptions_with_file_line_col(verge_bin, tmp_path):
    rc, out = check(verge_bin, tmp_path, BASE + "  - subject: orders.*\n    handler: edge.lua:on_order\n")
    assert rc == 0, out
    rc, out = check(verge_bin, tmp_path, BASE + "  - subject: orders.*\n    handler: edge.lua:on_order\n"
                    "    delivr: all\n")
    assert rc != 0 and out[:2] == (7, 5) and "did you mean 'deliver'" in out[2], out
    rc, out = check(verge_bin, tmp_path, BASE + "  - subject: 'orders..x'\n    handler: edge.lua:on_order\n")
    assert rc != 0 and out[:2] == (5, 14) and "invalid subject" in out[2], out
    rc, out = check(verge_bin, tmp_path, BASE + "  - subject: 'orders.>.x'\n    handler: edge.lua:on_order\n")
    assert rc != 0 and out[:2] == (5, 14) and "'>' may only be the last" in out[2], out
    rc, out = check(verge_bin, tmp_path, BASE + "  - subject: a\n    handler: edge.lua:missing\n")
    assert rc != 0 and out[:2] == (6, 14) and "no function 'missing'" in out[2], out
    rc, out = check(verge_bin, tmp_path, BASE + "  - subject: a\n    handler: edge.lua:on_order\n    deliver: many\n")
    assert rc != 0 and out[:2] == (7, 14) and "deliver" in out[2], out


# ---- back pressure ----------------------------------------------------------------------

BUSY = """\
name: busy
limits:
  lua_instructions: 10000000000
subscriptions:
  - subject: jobs
    handler: edge.lua:job
routes:
  - exact: /n
    handler: edge.lua:n
"""
BUSY_LUA = """\
function job(msg)
  if msg.data == "spin" then local t = os.clock() while os.clock() - t < 1.5 do end end
  verge.shared.incr("n", 1)
end
function n(req) return {body = tostring(verge.shared.get("n") or 0)} end
"""


def test_a_full_worker_queue_drops_counted_and_logged(verge, nats_server):
    n = nats_server()
    v = verge(BUSY, {"edge.lua": BUSY_LUA}, args=["--nats", n.url], workers=1)
    c = Client(n.port)
    c.pub("verge.app.busy.jobs", b"spin")  # holds the only worker's loop for 1.5 s
    c.flush()
    time.sleep(0.2)
    total = 6000
    for i in range(total):
        c.pub("verge.app.busy.jobs", b"x")
    c.flush()

    def accounted():
        return messages(v, "jobs", "ok") + messages(v, "jobs", "dropped")

    assert wait_for(lambda: accounted() == total + 1, 20)
    dropped = messages(v, "jobs", "dropped")
    assert 0 < dropped <= total - 4096, dropped  # the queue holds 4096 per worker
    assert int(v.get("/n").body) == total + 1 - dropped
    assert any(r.get("msg") == "message dropped" and r.get("reason") == "the worker's queue is full"
               for r in v.log_records())


def test_removing_an_app_while_its_handler_waits(verge):
    """The app goes away (its directory now holds another app) while a
    handler sleeps and another waits in verge.request: both finish on the
    old version, then its Lua states go (run under ASan: no use after
    free)."""
    gone = """\
name: gone
subscriptions:
  - subject: ev
    handler: edge.lua:ev
  - subject: svc
    handler: edge.lua:svc
routes:
  - exact: /pub
    handler: edge.lua:pub
"""
    lua = """\
function ev(msg)
  if msg.data == "ask" then
    local r, err = verge.request("svc", "x", {timeout = 300})
    verge.log.info("asked", {answer = tostring(r), err = tostring(err)})
  else
    verge.sleep(300)
    verge.log.info("slept", {data = msg.data})
  end
end
function svc(msg) verge.sleep(1000) return "late" end
function pub(req) return {body = tostring(verge.publish("ev", req.query.d))} end
"""
    v = verge(gone, {"edge.lua": lua}, workers=2)
    assert v.get("/pub?d=a").body == b"true"
    assert v.get("/pub?d=ask").body == b"true"
    time.sleep(0.1)
    write_app(v.app_dirs[0], "name: other\nroutes:\n  - respond: ok\n", {})
    v.reload()
    assert wait_for(lambda: any(r.get("msg") == "reloaded" for r in v.log_records()), 5)
    assert wait_for(lambda: any(r.get("msg") == "slept" and r.get("app") == "gone" for r in v.log_records()), 5)
    assert wait_for(lambda: any(r.get("msg") == "asked" and r.get("err") == "timeout" for r in v.log_records()), 5)
    time.sleep(1.2)  # the late answer finds no call waiting
    assert v.get("/").body == b"ok"
    assert v.alive()
