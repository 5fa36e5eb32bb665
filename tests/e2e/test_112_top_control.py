"""verge top from the control plane: nodes push their figures on the bus
every second (verge.stats.report.<node>), `verge control --nats` keeps the
latest report of each and GET /v1/top turns two successive ones into rates
per app and location; `verge top --control` draws them and `verge status`
shows the per-app totals. Without a bus, the heartbeats (every second)
carry the same figures."""

import json
import subprocess
import threading
import time

import pytest

from harness import http_request, wait_for, write_app
from test_97_control import CRASH_SIGNALS, Control, bundle_of, upload  # noqa: F401

SHOP = """\
name: shop
hosts: [shop.test]
routes:
  - exact: /ok
    respond: {body: "ok\\n"}
  - exact: /fail
    respond: {status: 503, body: "no\\n"}
"""

BLOG = """\
name: blog
hosts: [blog.test]
routes:
  - exact: /
    respond: {body: "blog\\n"}
"""


@pytest.fixture
def plane(tmp_path, verge_bin):
    planes = []

    def start(args=()):
        c = Control(verge_bin, tmp_path / "cp", tmp_path / "cp-data", args=args).start()
        admin = c.admin_token()

        class Plane:
            control = c
            node_token = c.make_token("nodes", "node", admin)
            read_token = c.make_token("reader", "read", admin)

            @staticmethod
            def deploy(name, manifest):
                d = tmp_path / ("src-" + name)
                write_app(d, manifest)
                sha, data = bundle_of(verge_bin, d, tmp_path / ("%s.tgz" % name))
                r = upload(c, admin, name, data)
                assert r.status in (200, 201), r
                r = c.req("PUT", "/v1/apps/%s/desired" % name, admin, {"version": sha})
                assert r.status == 200, r
                return sha

            @staticmethod
            def top():
                r = c.req("GET", "/v1/top", Plane.read_token)
                assert r.status == 200, r
                return r.json()

        Plane.admin = admin
        planes.append(c)
        return Plane

    yield start
    for c in planes:
        rc = c.stop()
        assert not (rc is not None and rc < 0 and -rc in CRASH_SIGNALS), c.logs()


def start_node(verge, p, tmp_path, node_id, location, nats=None):
    args = ["--control", p.control.url, "--token", p.node_token, "--node-id", node_id, "--location", location,
            "--data", str(tmp_path / ("data-" + node_id))]
    if nats:
        args += ["--nats", nats]
    return verge(None, args=args, apps=[])


def serves(v, path, status):
    try:
        return http_request(v.port, "GET", path, host="shop.test", timeout=2).status == status
    except OSError:
        return False


def load(v, path, stop):
    while not stop.is_set():
        try:
            http_request(v.port, "GET", path, host="shop.test", timeout=2)
        except OSError:
            pass
        time.sleep(0.004)


def rows_of(top):
    return {(r["app"], r["location"]): r for r in top["rows"]}


def verge_cli(verge_bin, *args):
    return subprocess.run([str(verge_bin)] + list(args), capture_output=True, text=True, timeout=60)


def test_top_over_the_bus_three_nodes(verge, verge_bin, plane, nats_server, tmp_path):
    n = nats_server()
    p = plane(["--nats", n.url])
    p.deploy("shop", SHOP)
    p.deploy("blog", BLOG)
    fra = start_node(verge, p, tmp_path, "fra-1", "fra", n.url)
    sin = start_node(verge, p, tmp_path, "sin-1", "sin", n.url)
    iad = start_node(verge, p, tmp_path, "iad-1", "iad", n.url)
    for v in (fra, sin, iad):
        assert wait_for(lambda: serves(v, "/ok", 200), 15)
    # before the load: every node is there, and (once the windows are past
    # the requests above) no requests
    assert wait_for(lambda: p.top()["nodes"] == 3 and len(p.top()["rows"]) == 6, 10), p.top()
    time.sleep(2.5)
    quiet = p.top()
    assert quiet["window_ms"] > 0
    assert all(r["rps"] == 0 and r["requests"] == 0 and r["p99_ms"] is None for r in quiet["rows"]), quiet

    stop = threading.Event()
    threads = [threading.Thread(target=load, args=(fra, "/ok", stop)),
               threading.Thread(target=load, args=(sin, "/fail", stop))]
    for t in threads:
        t.start()
    try:
        def busy():
            rows = rows_of(p.top())
            return rows.get(("shop", "fra"), {}).get("rps", 0) > 20 and \
                rows.get(("shop", "sin"), {}).get("rps", 0) > 20
        assert wait_for(busy, 10), p.top()
        top = p.top()
        out = verge_cli(verge_bin, "top", "--control", p.control.url, "--token", p.read_token, "--count", "2",
                        "--interval", "1s", "--json")
        table = verge_cli(verge_bin, "top", "--control", p.control.url, "--token", p.read_token, "--count", "1")
        status = verge_cli(verge_bin, "status", "--control", p.control.url, "--token", p.read_token)
        status_json = verge_cli(verge_bin, "status", "--control", p.control.url, "--token", p.read_token, "--json")
    finally:
        stop.set()
        for t in threads:
            t.join()

    # the figures came over the bus, every second
    assert top["sources"]["bus"] is True and top["sources"]["bus_reports"] > 0, top["sources"]
    assert 900 <= top["window_ms"] <= 2500, top
    rows = rows_of(top)
    assert set(rows) == {(a, l) for a in ("shop", "blog") for l in ("fra", "sin", "iad")}, rows
    f, s, i = rows[("shop", "fra")], rows[("shop", "sin")], rows[("shop", "iad")]
    assert f["nodes"] == s["nodes"] == i["nodes"] == 1
    assert f["error_pct"] == 0 and f["errors_5xx"] == 0 and f["error_rate"] == 0
    assert s["error_pct"] == 100 and s["errors_5xx"] == s["requests"] > 0
    assert i["rps"] == 0 and i["requests"] == 0  # no load there
    assert 0 < f["p50_ms"] <= f["p99_ms"] < 100, f
    assert all(rows[("blog", l)]["rps"] == 0 for l in ("fra", "sin", "iad"))
    # per-app totals: the locations summed
    apps = {a["app"]: a for a in top["apps"]}
    shop = apps["shop"]
    assert sorted(shop["locations"]) == ["fra", "iad", "sin"] and shop["nodes"] == 3
    assert abs(shop["rps"] - (f["rps"] + s["rps"])) < 0.01
    assert shop["requests"] == f["requests"] + s["requests"]
    assert 0 < shop["error_rate"] < 1

    # verge top --control --json: /v1/top's figures, one line per refresh
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == 2
    last = rows_of(lines[-1])
    assert lines[-1]["nodes"] == 3
    assert last[("shop", "fra")]["rps"] > 20 and last[("shop", "sin")]["error_pct"] == 100, lines[-1]
    # the table
    assert table.returncode == 0, table.stderr
    shop_lines = [ln.split() for ln in table.stdout.splitlines() if ln.startswith("shop")]
    assert sorted(ln[1] for ln in shop_lines) == ["fra", "iad", "sin"], table.stdout
    assert [ln for ln in shop_lines if ln[1] == "sin"][0][6] == "100.00", table.stdout  # 5XX%
    # verge status: per-app live figures from the same source
    assert status.returncode == 0, status.stderr
    st = [ln.split() for ln in status.stdout.splitlines() if ln.startswith("shop ")]
    assert st and st[0][1] == "3" and float(st[0][3]) > 20, status.stdout
    assert status_json.returncode == 0, status_json.stderr
    sj = json.loads(status_json.stdout)
    assert len(sj["nodes"]) == 3 and {a["app"] for a in sj["top"]["apps"]} == {"shop", "blog"}

    # a node that stops reporting leaves the rows
    iad.stop()
    assert wait_for(lambda: p.top()["nodes"] == 2, 10), p.top()
    assert ("shop", "iad") not in rows_of(p.top())


def test_top_without_a_bus_reads_the_heartbeats(verge, verge_bin, plane, tmp_path):
    p = plane()
    p.deploy("shop", SHOP)
    v = start_node(verge, p, tmp_path, "solo", "ams")
    assert wait_for(lambda: serves(v, "/fail", 503), 15)  # only 5xx here
    stop = threading.Event()
    t = threading.Thread(target=load, args=(v, "/fail", stop))
    t.start()
    try:
        assert wait_for(lambda: rows_of(p.top()).get(("shop", "ams"), {}).get("rps", 0) > 20, 10), p.top()
        top = p.top()
        table = verge_cli(verge_bin, "top", "--control", p.control.url, "--token", p.read_token, "--count", "1")
    finally:
        stop.set()
        t.join()
    assert top["sources"]["bus"] is False and top["sources"]["bus_reports"] == 0
    assert top["sources"]["heartbeat_reports"] > 0
    assert 900 <= top["window_ms"] <= 2500, top  # a heartbeat a second
    r = rows_of(top)[("shop", "ams")]
    assert r["nodes"] == 1 and r["error_pct"] == 100
    assert table.returncode == 0 and "shop" in table.stdout and "ams" in table.stdout, table.stdout + table.stderr
    # the API checks the token like every other
    assert p.control.req("GET", "/v1/top").status == 401
    assert p.control.req("GET", "/v1/top", p.node_token).status == 403
    bad = verge_cli(verge_bin, "top", "--control", p.control.url, "--token", "nope", "--count", "1")
    assert bad.returncode == 1 and "401" in bad.stderr, bad.stderr
