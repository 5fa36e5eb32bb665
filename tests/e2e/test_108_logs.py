"""verge logs: every node keeps its recent lines (node log, access log,
Lua's verge.log) in a ring; GET /_verge/logs and "verge.logs.query" on the
bus answer with filtering and sampling done on the node; the CLI merges
nodes in time order, follows with cursors, and filters by app, location
and expression."""

import json
import subprocess
import time

from harness import wait_for

APP = """\
name: shop
routes:
  - exact: /ok
    handler: edge.lua:ok
  - exact: /fail
    handler: edge.lua:fail
"""
EDGE = """\
function ok(req)
  verge.log.info("checkout", {cart = req.query.cart or "none"})
  return {body = "ok\\n"}
end
function fail(req) return {status = 503, body = "no\\n"} end
"""
TOKEN = ["--admin-token", "tok"]
AUTH = {"Authorization": "Bearer tok"}


def logs(v, **params):
    q = "&".join("%s=%s" % kv for kv in params.items())
    r = v.get("/_verge/logs?" + q, headers=AUTH)
    assert r.status == 200, r
    return r.json()


def test_history_filters_and_lua_lines_join_access_lines(verge):
    v = verge(APP, {"edge.lua": EDGE}, args=TOKEN)
    assert v.get("/ok?cart=7").status == 200
    assert v.get("/fail").status == 503
    ans = wait_for(lambda: logs(v, filter="status%3E%3D500")["lines"], 5)
    (line,) = logs(v, filter="status%3E%3D500")["lines"]
    assert line["path"] == "/fail" and line["status"] == 503 and line["type"] == "access" and line["trace_id"]
    lua = logs(v, filter="msg%3Dcheckout")["lines"]
    assert len(lua) == 1 and lua[0]["cart"] == "7" and lua[0]["app"] == "shop", lua
    access = logs(v, filter="path%3D%2Fok%3Fcart%3D7")["lines"]
    assert access and access[0]["request_id"] == lua[0]["request_id"]  # one request, two lines, one id
    assert not logs(v, app="other")["lines"]
    assert ans


def test_cursor_and_sampling(verge):
    v = verge(APP, {"edge.lua": EDGE}, args=TOKEN)
    first = logs(v)
    for _ in range(40):
        v.get("/fail")
    assert wait_for(lambda: logs(v, after=first["next"], boot=first["boot"], filter="status%3D503")["matched"] == 40,
                    5)
    page = logs(v, after=first["next"], boot=first["boot"], filter="status%3D503", limit=10)
    assert page["matched"] == 40 and len(page["lines"]) == 10  # sampled on the node, and it says so
    seqs = [l["seq"] for l in page["lines"]]
    assert seqs == sorted(seqs) and seqs[-1] - seqs[0] > 20  # spread over the 40, not the first 10
    later = logs(v, after=page["next"], boot=page["boot"])
    assert later["matched"] == 0 or all(l["seq"] > page["next"] for l in later["lines"])
    stale = logs(v, after=page["next"], boot="0000000000000000")  # another boot's cursor: from the start
    assert stale["lines"][0]["seq"] == 1


def test_bad_filters_and_auth(verge):
    v = verge(APP, {"edge.lua": EDGE}, args=TOKEN)
    assert v.get("/_verge/logs").status == 401
    for bad in ("status%3E%3Dabc", "%3D5", "status", "a%3D1," * 17):
        r = v.get("/_verge/logs?filter=" + bad, headers=AUTH)
        assert r.status == 400 and b"bad filter" in r.body, (bad, r.body)


def test_cli_merges_three_nodes_over_nats_and_follows(verge, verge_bin, nats_server):
    n = nats_server()
    nodes = [verge(APP, {"edge.lua": EDGE}, args=["--nats", n.url, "--node-id", "n%d" % i, "--location", loc])
             for i, loc in enumerate(("fra", "fra", "sin"))]
    for i, v in enumerate(nodes):
        assert v.get("/fail").status == 503
        assert v.get("/ok").status == 200
    out = subprocess.run([verge_bin, "logs", "--nats", n.url, "--filter", "status>=500", "--json"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(l) for l in out.stdout.splitlines()]
    assert sorted(l["node"] for l in lines) == ["n0", "n1", "n2"], lines
    assert [l["time_us"] for l in lines] == sorted(l["time_us"] for l in lines)
    sin = subprocess.run([verge_bin, "logs", "--nats", n.url, "--location", "sin", "--filter", "status=503", "--json"],
                         capture_output=True, text=True, timeout=20)
    assert [json.loads(l)["node"] for l in sin.stdout.splitlines()] == ["n2"]
    human = subprocess.run([verge_bin, "logs", "--nats", n.url, "--app", "shop", "--filter", "status=503"],
                           capture_output=True, text=True, timeout=20)
    assert human.stdout.count(" 503 GET /fail ") == 3, human.stdout
    f = subprocess.Popen([verge_bin, "logs", "-f", "--nats", n.url, "--since", "0s", "--filter", "status=503",
                          "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        assert nodes[1].get("/fail?late=1").status == 503
        deadline = time.time() + 10
        got = None
        while time.time() < deadline and got is None:
            l = json.loads(f.stdout.readline())
            if l.get("path") == "/fail?late=1":
                got = l
        assert got and got["node"] == "n1", got
    finally:
        f.terminate()
        f.wait(5)
