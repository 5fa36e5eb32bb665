"""Metrics: a real Prometheus server (Debian's) scrapes a node and sees the
series — requests by app/route/status, latency histograms, Lua errors and
limit hits, upstream health, the trace and log machinery — and labels stay
bounded whatever paths and client addresses arrive."""

import json
import shutil
import subprocess
import urllib.parse
import urllib.request

import pytest

from harness import free_port, metric_sum, wait_for

APP = """\
name: shop
origins:
  api:
    servers: ["http://127.0.0.1:%d"]
    health: {path: /healthz, interval: 1s}
limits: {lua_instructions: 100000}
routes:
  - path: /api
    proxy: api
  - exact: /boom
    handler: edge.lua:boom
  - exact: /spin
    handler: edge.lua:spin
  - path: /
    respond: {status: 200, body: "home"}
"""
EDGE = """\
function boom(req) error("kaboom") end
function spin(req) while true do end end
"""


class Prometheus:
    def __init__(self, tmp_path, target_port):
        self.port = free_port()
        conf = tmp_path / "prometheus.yml"
        conf.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: verge\n"
            "    metrics_path: /_verge/metrics\n"
            "    static_configs: [{targets: ['127.0.0.1:%d']}]\n" % target_port)
        self.proc = subprocess.Popen(
            ["prometheus", "--config.file=%s" % conf, "--storage.tsdb.path=%s" % (tmp_path / "tsdb"),
             "--web.listen-address=127.0.0.1:%d" % self.port],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def query(self, q):
        url = "http://127.0.0.1:%d/api/v1/query?query=%s" % (self.port, urllib.parse.quote(q))
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return json.load(r)["data"]["result"]
        except OSError:
            return []

    def value(self, q):
        res = self.query(q)
        return float(res[0]["value"][1]) if res else None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus is installed by scripts/deps.sh")
def test_a_real_prometheus_scrapes_the_node(verge, origin, tmp_path):
    o = origin("a")
    v = verge(APP % o.port, {"edge.lua": EDGE})
    for _ in range(5):
        assert v.get("/api/x").status == 200
    assert v.get("/boom").status == 500
    assert v.get("/spin").status == 503
    p = Prometheus(tmp_path, v.port)
    try:
        assert wait_for(lambda: p.value('up{job="verge"}') == 1, 30), p.proc.stderr.read1(4096) if p.proc.poll() else ""
        assert wait_for(lambda: (p.value('sum(verge_requests_total{app="shop",route="/api",status="200"})') or 0)
                        >= 5, 10)
        assert p.value('sum(verge_request_duration_seconds_count{app="shop",route="/api"})') >= 5
        assert p.value('verge_lua_errors_total{app="shop"}') == 1
        assert p.value('verge_lua_limits_total{app="shop",limit="lua_instructions"}') == 1
        assert p.value('verge_upstream_up{app="shop"}') == 1
        q = p.query('histogram_quantile(0.99, sum by (le) (verge_request_duration_seconds_bucket{app="shop"}))')
        assert q, "the latency histogram is a Prometheus histogram"
    finally:
        p.stop()


def test_labels_stay_bounded_whatever_the_traffic(verge, origin):
    o = origin("a")
    v = verge(APP % o.port, {"edge.lua": EDGE})
    before = len(v.metrics())
    for i in range(300):
        v.get("/page/%d?q=%d" % (i, i), headers={"X-Forwarded-For": "10.0.%d.%d" % (i // 250, i % 250),
                                                   "User-Agent": "bot-%d" % i})
        v.get("/api/item/%d" % i)
    samples = v.metrics()
    routes = {l.get("route") for n, l, _ in samples if n == "verge_requests_total"}
    assert routes <= {"/api", "/boom", "/spin", "/", ""}, routes  # the manifest's routes, never paths
    assert not any("10.0." in json.dumps(l) or "bot-" in json.dumps(l) for _, l, _ in samples)
    assert len(samples) - before < 60, len(samples) - before  # a few new series (statuses, buckets), not 600
    assert metric_sum(samples, "verge_requests_total", route="/") >= 300
