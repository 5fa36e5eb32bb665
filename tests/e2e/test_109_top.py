"""verge top: every node's counters (GET /_verge/stats, verge.stats.query
on the bus) turned into live rows per app and location — requests per
second, p50/p99, 5xx rate, cache hit ratio."""

import json
import subprocess
import threading
import time

APP = """\
name: shop
origins:
  api:
    servers: ["http://127.0.0.1:%d"]
routes:
  - exact: /fail
    respond: {status: 503, body: "no"}
  - exact: /ok
    respond: {status: 200, body: "ok"}
  - path: /c
    proxy: api
    cache: {ttl: 1h}
"""


def load(v, path, stop):
    while not stop.is_set():
        v.get(path)
        time.sleep(0.005)


def test_top_rows_per_app_and_location_over_nats(verge, verge_bin, nats_server, origin):
    n = nats_server()
    o = origin("a")
    fra = verge(APP % o.port, args=["--nats", n.url, "--node-id", "f1", "--location", "fra"])
    sin = verge(APP % o.port, args=["--nats", n.url, "--node-id", "s1", "--location", "sin"])
    stop = threading.Event()
    threads = [threading.Thread(target=load, args=(fra, "/fail", stop)),
               threading.Thread(target=load, args=(sin, "/ok", stop)),
               threading.Thread(target=load, args=(sin, "/c/x", stop))]
    for t in threads:
        t.start()
    try:
        out = subprocess.run([verge_bin, "top", "--nats", n.url, "--count", "2", "--interval", "1s", "--json"],
                             capture_output=True, text=True, timeout=30)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert out.returncode == 0, out.stderr
    last = json.loads(out.stdout.splitlines()[-1])
    assert last["nodes"] == 2
    rows = {(r["app"], r["location"]): r for r in last["rows"]}
    assert set(rows) == {("shop", "fra"), ("shop", "sin")}, rows
    f, s = rows[("shop", "fra")], rows[("shop", "sin")]
    assert f["rps"] > 20 and s["rps"] > 20, rows
    assert f["error_pct"] == 100.0 and s["error_pct"] == 0.0
    assert s["cache_hit_pct"] > 90 and f["cache_hit_pct"] is None  # sin's cached route; fra never asked it
    assert 0 < f["p50_ms"] <= f["p99_ms"] < 100


def test_top_over_http_prints_a_table(verge, verge_bin):
    v = verge(APP % 9, args=["--admin-token", "tok"])
    for _ in range(20):
        v.get("/ok")
    out = subprocess.run([verge_bin, "top", "--node", "http://127.0.0.1:%d" % v.port, "--token", "tok", "--count",
                          "1", "--interval", "300ms"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "APP" in out.stdout and "shop" in out.stdout, out.stdout
    bad = subprocess.run([verge_bin, "top", "--node", "http://127.0.0.1:%d" % v.port, "--count", "1"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "401" in bad.stderr  # the stats need the admin token
