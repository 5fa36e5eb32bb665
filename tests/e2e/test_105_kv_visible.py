"""verge.kv global writes that wait until K nodes applied them
(await_visible), against a real nats-server with JetStream: three nodes
confirm; with one node stopped the write reports 2 of 3 at its timeout and
still reaches every node afterwards. The bucket's bound
(limits.kv_global_size) refuses the write that does not fit with "global
store full". POST /_verge/publish/SUBJECT puts an outside system's message
on an app's subjects, behind the admin token."""

import signal
import time

from harness import metric_sum, wait_for
from test_101_kv import KV_LUA, kv, visible
from test_103_publish import Sub

MANIFEST = """\
name: %s
limits: {lua_timeout: 5s%s}
routes:
  - glob: /kv/*
    handler: kv.lua:dispatch
  - glob: /vis/*
    handler: vis.lua:dispatch
"""

# /vis/<set|incr>?k=KEY&v=VALUE&n=K&timeout=MS -> JSON of every result
VIS_LUA = r"""
function dispatch(req)
  local q = req.query
  local op = req.path:match("^/vis/(%w+)")
  local o = {scope = q.scope or "global", await_visible = math.tointeger(tonumber(q.n)),
             timeout = q.timeout and math.tointeger(tonumber(q.timeout))}
  local ok, r = pcall(function()
    if op == "set" then
      local v = q.v
      if q.nil_value then v = nil end
      return table.pack(verge.kv.set(q.k, v, o))
    end
    return table.pack(verge.kv.incr(q.k, tonumber(q.v), o))
  end)
  local out = ok and {results = r, n = r.n} or {raised = tostring(r)}
  if ok then r.n = nil end
  return {status = 200, headers = {["content-type"] = "application/json"}, body = verge.json.encode(out)}
end
"""

TOKEN = "pub-token-1"


def app(name="vis", limits=""):
    return (MANIFEST % (name, limits), {"kv.lua": KV_LUA, "vis.lua": VIS_LUA})


def node(verge, tmp_path, name, nats, apps=None, extra=()):
    args = ["--state-dir", str(tmp_path / ("state-" + name)), "--node-id", name, "--nats", nats.url] + list(extra)
    return verge(apps=apps or [app()], args=args)


def vis(node_, op, **q):
    qs = "&".join("%s=%s" % (k, val) for k, val in q.items())
    r = node_.get("/vis/%s?%s" % (op, qs), timeout=10)
    assert r.status == 200, r.body
    return r.json()


def three(verge, tmp_path, nats_server):
    n = nats_server(jetstream=True)
    return n, [node(verge, tmp_path, x, n) for x in "abc"]


def test_await_visible_three_nodes_confirm(verge, tmp_path, nats_server):
    n, (a, b, c) = three(verge, tmp_path, nats_server)
    r = vis(a, "set", k="cfg", v="one", n=3, timeout=3000)
    res = r["results"]
    # true, rev, visible: no fourth (reason) result when K nodes confirmed
    assert res[0] is True and res[1] >= 1 and res[2] == 3 and r["n"] == 3, r
    # confirmed means applied: the others read it at once, no polling
    for v in (b, c):
        assert kv(v, "get", k="cfg", scope="global")["value"] == "one"
    r = vis(b, "incr", k="hits", v=5, n=3)
    assert r["results"][:3][0] == 5 and r["results"][2] == 3 and r["n"] == 3, r
    assert kv(c, "get", k="hits", scope="global")["value"] == 5
    # K = 2 of 3 returns as soon as one other node confirmed
    r = vis(c, "set", k="two", v="x", n=2)
    assert r["results"][2] == 2 and r["n"] == 3, r
    # K = 1 is the writer alone: no ack traffic needed
    r = vis(a, "set", k="one", v="x", n=1)
    assert r["results"][2] == 1 and r["n"] == 3, r
    m = a.metrics()
    assert metric_sum(m, "verge_kv_visible_seconds_count") >= 1
    assert metric_sum(m, "verge_kv_visible_acks_total", dir="received") >= 2
    assert metric_sum(m, "verge_kv_visible_timeouts_total") == 0
    # b and c acked a's writes; a does not ack its own
    assert metric_sum(b.metrics(), "verge_kv_visible_acks_total", dir="sent") >= 1
    # three writes asked, each acked by the two other nodes (the last ack
    # of the K = 2 write may still be on its way); K = 1 asked nothing
    def sent():
        return [metric_sum(v.metrics(), "verge_kv_visible_acks_total", dir="sent") for v in (a, b, c)]
    assert wait_for(lambda: sum(sent()) == 6, 2), sent()
    time.sleep(0.2)
    assert sum(sent()) == 6
    # a write that did not ask makes no ack traffic
    before = sent()
    assert kv(a, "set", k="quiet", v="1", scope="global")["ok"]
    assert wait_for(lambda: all(visible(v, "quiet", "1") for v in (b, c)), 2)
    time.sleep(0.2)
    assert sent() == before


def test_await_visible_times_out_with_a_stopped_node(verge, tmp_path, nats_server):
    n, (a, b, c) = three(verge, tmp_path, nats_server)
    c.freeze()
    try:
        t0 = time.monotonic()
        r = vis(a, "set", k="late", v="v1", n=3, timeout=700)
        took = time.monotonic() - t0
    finally:
        c.signal(signal.SIGCONT)
    res = r["results"]
    # the write is acknowledged (true, rev); 2 nodes saw it; the reason says so
    assert res[0] is True and res[1] >= 1 and res[2] == 2 and r["n"] == 4, r
    assert "2 of 3" in res[3] and "700 ms" in res[3], r
    assert 0.6 <= took < 3, took
    assert kv(b, "get", k="late", scope="global")["value"] == "v1"
    # after SIGCONT the stopped node catches up: the write is everywhere
    assert wait_for(lambda: all(visible(v, "late", "v1") for v in (a, b, c)), 5)
    assert metric_sum(a.metrics(), "verge_kv_visible_timeouts_total") == 1
    # and the next write is confirmed by all three again
    r = vis(a, "set", k="after", v="v2", n=3, timeout=3000)
    assert r["results"][2] == 3, r


def test_await_visible_options_are_checked(verge, tmp_path, nats_server):
    n = nats_server(jetstream=True)
    a = node(verge, tmp_path, "a", n)
    assert "needs scope" in vis(a, "set", k="x", v="1", n=2, scope="local")["raised"]
    assert "await_visible must be an integer from 1 to 64" in vis(a, "set", k="x", v="1", n=0)["raised"]
    assert "await_visible must be an integer" in vis(a, "set", k="x", v="1", n=65)["raised"]
    assert "timeout must be" in vis(a, "set", k="x", v="1", n=2, timeout=0)["raised"]
    assert "delete carries no ack" in vis(a, "set", k="x", v="1", n=2, nil_value=1)["raised"]
    # alone, K = 2 cannot be met: the write happens, the answer says 1 of 2
    r = vis(a, "set", k="x", v="1", n=2, timeout=200)
    assert r["results"][0] is True and r["results"][2] == 1 and "1 of 2" in r["results"][3], r
    assert kv(a, "get", k="x", scope="global")["value"] == "1"


def test_replica_bound_refuses_the_write_that_does_not_fit(verge, tmp_path, nats_server):
    n = nats_server(jetstream=True)
    a = node(verge, tmp_path, "a", n, apps=[app("cap", ", kv_global_size: 16KiB")])
    fits = "f" * 8000
    r = kv(a, "set", k="fits", v=fits, scope="global")
    assert r.get("ok") is True, r
    r = kv(a, "set", k="over", v="o" * 9000, scope="global")
    assert "global store full" in r.get("err", ""), r
    assert kv(a, "get", k="over", scope="global") == {}
    assert kv(a, "get", k="fits", scope="global")["value"] == fits
    m = a.metrics()
    assert metric_sum(m, "verge_kv_replica_max_bytes", app="cap") == 16384
    b = metric_sum(m, "verge_kv_replica_bytes", app="cap")
    assert 8000 < b < 16384, b
    assert metric_sum(m, "verge_kv_operations_total", scope="global", op="set", result="error") == 1
    # a small write still fits next to the first
    assert kv(a, "set", k="small", v="s", scope="global")["ok"]


def test_replica_bound_follows_the_manifest(verge, tmp_path, nats_server):
    # a bucket made with the default bound is re-bounded by a smaller one
    n = nats_server(jetstream=True)
    a = node(verge, tmp_path, "a", n, apps=[app("rb")])
    assert kv(a, "set", k="big", v="b" * 9000, scope="global")["ok"]
    assert a.stop() == 0
    a = node(verge, tmp_path, "a", n, apps=[app("rb", ", kv_global_size: 16KiB")])
    assert "global store full" in kv(a, "set", k="big2", v="c" * 9000, scope="global").get("err", "")


# ---- POST /_verge/publish/SUBJECT ------------------------------------------------


def post(v, path, body=b"x", token=TOKEN):
    headers = {"Authorization": "Bearer " + token} if token is not None else {}
    return v.request("POST", path, body=body, headers=headers)


def test_publish_endpoint_reaches_a_plain_nats_subscriber(verge, tmp_path, nats_server):
    n = nats_server()
    a = verge(apps=[app("shop")], args=["--nats", n.url, "--admin-token", TOKEN])
    sub = Sub(n.port, "verge.app.shop.>")
    r = post(a, "/_verge/publish/orders.created", body=b'{"id":7}')
    assert r.status == 202, r
    assert r.json() == {"published": True, "subject": "verge.app.shop.orders.created", "bytes": 8}
    assert sub.next() == ("verge.app.shop.orders.created", b'{"id":7}')
    # the app by name, and a body at the bus's limit (streamed in)
    big = bytes(range(256)) * 4096
    assert len(big) == 1 << 20
    r = post(a, "/_verge/publish/blob?app=shop", body=big)
    assert r.status == 202, r
    assert sub.next() == ("verge.app.shop.blob", big)
    # an empty payload is a message too
    assert post(a, "/_verge/publish/ping", body=b"").status == 202
    assert sub.next() == ("verge.app.shop.ping", b"")


def test_publish_endpoint_refusals(verge, tmp_path, nats_server):
    n = nats_server()
    a = verge(apps=[app("shop")], args=["--nats", n.url, "--admin-token", TOKEN])
    sub = Sub(n.port, "verge.app.>")
    r = post(a, "/_verge/publish/x", token=None)
    assert r.status == 401 and r.headers.get("www-authenticate") == "Bearer", r
    assert post(a, "/_verge/publish/x", token="pub-token-2").status == 401
    assert post(a, "/_verge/publish/x", token=TOKEN + "x").status == 401
    r = post(a, "/_verge/publish/orders.*")
    assert r.status == 400 and "wildcards" in r.json()["error"], r
    assert post(a, "/_verge/publish/orders.>").status == 400
    r = post(a, "/_verge/publish/a..b")
    assert r.status == 400 and "invalid subject" in r.json()["error"], r
    r = post(a, "/_verge/publish/")
    assert r.status == 400 and "no subject" in r.json()["error"], r
    r = post(a, "/_verge/publish/" + "t" * 250)
    assert r.status == 400 and "too long" in r.json()["error"], r
    r = post(a, "/_verge/publish/big", body=b"z" * ((1 << 20) + 1))
    assert r.status == 413, r
    r = post(a, "/_verge/publish/x?app=nope")
    assert r.status == 404 and "no such app" in r.json()["error"], r
    r = a.request("GET", "/_verge/publish/x", headers={"Authorization": "Bearer " + TOKEN})
    assert r.status == 405
    # every refusal left a line with its reason; nothing reached the bus
    logs = a.logs()
    assert logs.count("publish refused") >= 10, logs
    assert "wildcards" in logs and "missing or wrong token" in logs
    assert post(a, "/_verge/publish/ok").status == 202
    assert sub.next() == ("verge.app.shop.ok", b"x")  # the first message the subscriber sees


def test_publish_endpoint_without_a_token_configured(verge, tmp_path, nats_server):
    n = nats_server()
    a = verge(apps=[app("shop")], args=["--nats", n.url])
    assert post(a, "/_verge/publish/x").status == 401
    assert "no --admin-token" in a.logs()


def test_publish_endpoint_with_the_bus_down_past_its_buffer(verge, tmp_path, nats_server):
    n = nats_server()
    a = verge(apps=[app("shop")], args=["--nats", n.url, "--admin-token", TOKEN])
    n.stop()
    assert wait_for(lambda: metric_sum(a.metrics(), "verge_bus_connected") == 0, 5)
    # the bus keeps 8 MiB for the outage; past it the endpoint says so
    mib = b"m" * (1 << 20)
    statuses = [post(a, "/_verge/publish/fill", body=mib).status for _ in range(10)]
    assert statuses[0] == 202 and statuses[-1] == 503, statuses
    r = post(a, "/_verge/publish/fill", body=mib)
    assert r.status == 503 and "buffer is full" in r.json()["error"], r
    assert "buffer is full" in a.logs()
