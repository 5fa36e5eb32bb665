"""Operations: health, metrics, logs, reload, shutdown, workers."""

import concurrent.futures
import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest

from harness import RawConn, conn_request, free_port, metric_sum, parse_metrics, wait_for, write_app

ACCESS_KEYS = {"time", "app", "method", "path", "status", "bytes", "duration_us", "upstream", "request_id"}


def manifest(origin_url, extra_routes="", health=""):
    return """\
name: ops
origins:
  api:
    servers: ["%s"]
    %s
routes:
  - exact: /ping
    respond: {body: "pong\\n"}
  - path: /api
    proxy: api
    strip_prefix: /api
%s""" % (origin_url, health, extra_routes)


HEALTH = "health: {path: /healthz, interval: 100ms, timeout: 200ms, rise: 1, fall: 1}"


@pytest.fixture
def o(origin):
    return origin("a")


@pytest.fixture
def v(verge, o):
    return verge(manifest(o.url, health=HEALTH))


# ---- health and metrics ------------------------------------------------------------


def test_health(v):
    r = v.get("/_verge/health")
    assert r.status == 200
    r = v.get("/_verge/health", host="any.host.test")
    assert r.status == 200


def test_metrics_format(v):
    v.get("/ping")
    r = v.get("/_verge/metrics")
    assert r.status == 200
    assert r.headers.get("Content-Type", "").startswith("text/plain"), r
    text = r.text
    assert re.search(r"^# TYPE verge_requests_total counter$", text, re.M), text
    assert re.search(r"^# TYPE verge_request_duration_seconds histogram$", text, re.M), text
    assert re.search(r"^# TYPE verge_connections_open gauge$", text, re.M), text
    assert re.search(r"^# TYPE verge_upstream_up gauge$", text, re.M), text
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert re.match(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? '
                            r'[-+0-9.eEInfNa]+( \d+)?$', line), line


def test_metrics_label_escaping(verge):
    """Route labels come from the manifest: quotes and backslashes in them
    are escaped, so the exposition stays parseable."""
    v = verge("""\
        name: esc
        routes:
          - exact: '/we"ird\\path'
            respond: {body: w}
          - exact: /ok
            respond: {body: ok}
        """)
    v.get("/ok")
    text = v.get("/_verge/metrics").text
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert re.match(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*",?)*\})? '
                            r'[-+0-9.eEInfNa]+( \d+)?$', line), line
    routes = {l.get("route") for _, l, _ in parse_metrics(text) if l.get("app") == "esc"}
    assert '/we"ird\\path' in routes, routes


def test_metrics_count_requests(v):
    before = v.metrics()
    for _ in range(5):
        assert v.get("/ping").status == 200
    assert v.get("/nope").status == 404
    after = v.metrics()
    n200 = metric_sum(after, "verge_requests_total", app="ops", status="200") - \
        metric_sum(before, "verge_requests_total", app="ops", status="200")
    assert n200 == 5, [s for s in after if s[0] == "verge_requests_total"]
    n404 = metric_sum(after, "verge_requests_total", app="ops", status="404") - \
        metric_sum(before, "verge_requests_total", app="ops", status="404")
    assert n404 == 1, [s for s in after if s[0] == "verge_requests_total"]
    routes = {l.get("route") for n, l, _ in after
              if n == "verge_requests_total" and l.get("app") == "ops" and l.get("status") == "200"}
    assert len(routes) == 1 and None not in routes, routes


def test_metrics_per_route(v):
    for _ in range(3):
        v.get("/ping")
    for _ in range(2):
        v.get("/api/x")
    m = v.metrics()
    per_route = {}
    for n, l, val in m:
        if n == "verge_requests_total" and l.get("app") == "ops" and l.get("status") == "200":
            per_route[l["route"]] = per_route.get(l["route"], 0) + val
    assert sorted(per_route.values()) == [2, 3], per_route


def test_metrics_duration_histogram(v):
    before = v.metrics()
    for _ in range(4):
        v.get("/api/x?delay=0.05")
    m = v.metrics()
    cnt = metric_sum(m, "verge_request_duration_seconds_count", app="ops") - \
        metric_sum(before, "verge_request_duration_seconds_count", app="ops")
    assert cnt == 4, [s for s in m if s[0].startswith("verge_request_duration")]
    total = metric_sum(m, "verge_request_duration_seconds_sum", app="ops") - \
        metric_sum(before, "verge_request_duration_seconds_sum", app="ops")
    assert 0.2 <= total < 5, total
    # buckets are cumulative: per series, non-decreasing in le, +Inf == count
    series = {}
    for n, l, val in m:
        if n == "verge_request_duration_seconds_bucket":
            key = tuple(sorted((k, x) for k, x in l.items() if k != "le"))
            series.setdefault(key, []).append((float("inf") if l["le"] == "+Inf" else float(l["le"]), val))
    assert series
    for key, b in series.items():
        b.sort()
        assert [x for _, x in b] == sorted(x for _, x in b), (key, b)
        assert b[-1][0] == float("inf")
        count = [val for n, l, val in m if n == "verge_request_duration_seconds_count"
                 and tuple(sorted(l.items())) == key]
        assert count == [b[-1][1]], (key, b, count)
    # the 50 ms requests are not in a bucket below 0.05 s
    fast = sum(val for n, l, val in m if n == "verge_request_duration_seconds_bucket" and l.get("le") not in
               (None, "+Inf") and float(l["le"]) < 0.05 and "api" in l.get("route", ""))
    assert fast == 0, fast


def test_metrics_connections_open(v):
    def open_now():
        return metric_sum(v.metrics(), "verge_connections_open")

    base = open_now()
    held = [RawConn(v.port) for _ in range(4)]
    try:
        for c in held:
            assert c.request("GET", "/ping").status == 200
        assert open_now() >= base + 4
    finally:
        for c in held:
            c.close()
    assert wait_for(lambda: open_now() <= base, 3), (base, open_now())


def test_metrics_upstream_up(v, o):
    def up():
        vals = [val for n, l, val in v.metrics() if n == "verge_upstream_up" and l.get("app") == "ops"
                and l.get("origin") == "api" and str(o.port) in l.get("server", "")]
        assert len(vals) == 1, vals
        return vals[0]

    assert wait_for(lambda: up() == 1, 2)
    o.health_status = 500
    assert wait_for(lambda: up() == 0, 2), "verge_upstream_up stayed 1 with a failing health check"
    o.health_status = 200
    assert wait_for(lambda: up() == 1, 2)


# ---- logs --------------------------------------------------------------------------


def wait_access(v, pred, timeout=3):
    return wait_for(lambda: [r for r in v.access_log() if pred(r)], timeout)


def test_access_log_fields(v, o):
    r = v.get("/api/hello?x=1")
    assert r.status == 200
    recs = wait_access(v, lambda a: "/api/hello" in str(a.get("path")))
    assert recs, v.logs()
    (a,) = recs
    assert ACCESS_KEYS <= set(a), a
    assert a["app"] == "ops" and a["method"] == "GET" and a["status"] == 200, a
    assert isinstance(a["bytes"], int) and a["bytes"] >= len(r.body), a
    assert isinstance(a["duration_us"], int) and 0 <= a["duration_us"] < 5_000_000, a
    assert a["time"], a
    assert a["request_id"] == r.headers.get("X-Request-Id") == o.requests[0].headers.get("X-Request-Id"), a
    assert "127.0.0.1:%d" % o.port in str(a["upstream"]), a


def test_access_log_respond_and_404(v):
    v.get("/ping")
    v.request("POST", "/missing", body=b"x")

    def two():
        got = [a for a in v.access_log() if a.get("path") in ("/ping", "/missing")]
        return got if len(got) >= 2 else None

    recs = wait_for(two, 3)
    assert recs and len(recs) == 2, v.stdout()
    ping, missing = sorted(recs, key=lambda a: a["path"] != "/ping")
    assert ping["status"] == 200 and ping["bytes"] >= 5 and not ping["upstream"], ping
    assert missing["status"] == 404 and missing["method"] == "POST", missing


def test_access_log_duration(v):
    v.get("/api/slow?delay=0.3")
    recs = wait_access(v, lambda a: "/api/slow" in str(a.get("path")))
    assert recs
    assert 300_000 <= recs[0]["duration_us"] < 3_000_000, recs


def test_access_log_one_line_per_request(v):
    c = v.conn()
    for i in range(30):
        conn_request(c, "GET", "/ping?i=%d" % i)
    c.close()
    assert wait_for(lambda: len([a for a in v.access_log() if str(a.get("path", "")).startswith("/ping")]) >= 30,
                    3)
    time.sleep(0.3)
    assert len([a for a in v.access_log() if str(a.get("path", "")).startswith("/ping")]) == 30
    for line in v.stdout().splitlines():
        if line.strip():
            json.loads(line)  # nothing but JSON on stdout


def test_access_log_off(verge, o):
    v = verge(manifest(o.url), access_log="off")
    for _ in range(3):
        v.get("/ping")
    time.sleep(0.5)
    assert v.access_log() == [], v.stdout()


def test_node_log_is_json_lines(v):
    v.get("/ping")
    v.reload()
    time.sleep(0.5)
    lines = [x for x in v.stderr().splitlines() if x.strip()]
    assert lines, "no node log at all"
    for line in lines:
        rec = json.loads(line)
        assert isinstance(rec, dict), line


def test_node_log_stays_json_on_proxy_errors(verge, origin):
    """Errors inside the HTTP engine (refused or timed-out origins) are logged
    as JSON lines too, not as the engine's own plain text."""
    a = origin("a")
    text = manifest(a.url).replace("    \n", "    timeouts: {connect: 1s, read: 300ms, total: 5s}\n    retries: 0\n")
    text += "  - path: /dead\n    proxy: http://127.0.0.1:%d\n" % free_port()
    v = verge(text)
    assert v.get("/dead").status == 502
    assert v.get("/api/x?delay=1").status in (502, 504)
    time.sleep(0.3)
    for line in v.stderr().splitlines():
        if line.strip():
            assert isinstance(json.loads(line), dict), line


def test_log_level_filters(verge, o):
    v = verge(manifest(o.url), log_level="error")
    v.get("/ping")
    v.stop()
    for rec in v.log_records():
        lvl = str(rec.get("level", rec.get("lvl", ""))).lower()
        assert lvl in ("error", "fatal", "crit", ""), rec


# ---- reload -------------------------------------------------------------------------


def rewrite(v, text):
    write_app(v.app_dirs[0], text)


def test_reload_picks_up_new_route(v, o):
    assert v.get("/new").status == 404
    rewrite(v, manifest(o.url, health=HEALTH, extra_routes="  - exact: /new\n    respond: {body: new}\n"))
    v.reload()
    assert wait_for(lambda: v.get("/new").status == 200, 3), v.logs()
    assert v.get("/new").body == b"new"
    assert v.get("/ping").status == 200


def test_reload_removes_route(v, o):
    rewrite(v, "name: ops\nroutes:\n  - exact: /other\n    respond: {body: other}\n")
    v.reload()
    assert wait_for(lambda: v.get("/other").status == 200, 3), v.logs()
    assert v.get("/ping").status == 404
    assert v.get("/api/x").status == 404


def test_reload_broken_manifest_keeps_old(v, o):
    rewrite(v, manifest(o.url, health=HEALTH, extra_routes="  - exact: /new\n    respond: {body: new}\n"))
    v.reload()
    assert wait_for(lambda: v.get("/new").status == 200, 3)
    n_before = v.stderr().lower().count("reload")
    rewrite(v, "name: ops\nroutes:\n  - exact: /broken\n    respnd: {body: x}\n")
    v.reload()
    assert wait_for(lambda: [x for x in v.stderr().splitlines()[-50:] if "reload" in x.lower()] and
                    v.stderr().lower().count("reload") > n_before, 3), v.logs()
    time.sleep(0.3)
    assert v.alive()
    err_lines = [x for x in v.stderr().splitlines() if "reload" in x.lower() and "respnd" in x]
    assert err_lines, "the reload error does not say what is wrong:\n" + v.stderr()[-3000:]
    assert v.get("/new").status == 200
    assert v.get("/ping").status == 200
    assert v.get("/broken").status == 404
    # a fixed manifest is picked up again
    rewrite(v, manifest(o.url, health=HEALTH, extra_routes="  - exact: /fixed\n    respond: {body: fixed}\n"))
    v.reload()
    assert wait_for(lambda: v.get("/fixed").status == 200, 3), v.logs()


def test_reload_switches_origin(verge, origin):
    a, b = origin("a"), origin("b")
    v = verge(manifest(a.url))
    assert v.get("/api/x").json()["server"] == "a"
    rewrite(v, manifest(b.url))
    v.reload()
    assert wait_for(lambda: v.get("/api/x").json()["server"] == "b", 3), v.logs()



def start_slow_request(v, origin):
    """Starts a 1.5 s proxied request in a thread; returns once the origin has it."""
    result = {}

    def slow():
        try:
            result["r"] = v.get("/api/slow?delay=1.5", timeout=10)
        except Exception as e:  # noqa: BLE001
            result["e"] = e

    t = threading.Thread(target=slow)
    t.start()
    assert wait_for(lambda: origin.active > 0, 2)
    return t, result


def test_inflight_request_survives_reload(verge, origin):
    a = origin("a")
    v = verge(manifest(a.url))
    t, result = start_slow_request(v, a)
    rewrite(v, manifest(a.url, extra_routes="  - exact: /new\n    respond: {body: new}\n"))
    v.reload()
    assert wait_for(lambda: v.get("/new").status == 200, 3), v.logs()
    t.join(10)
    assert "e" not in result, result
    r = result["r"]
    assert r.status == 200 and r.json()["path"] == "/slow?delay=1.5", r


def test_many_reloads_under_load(verge, origin):
    a = origin("a")
    v = verge(manifest(a.url), workers=3)
    stop = threading.Event()
    bad = []

    def load():
        while not stop.is_set():
            try:
                r = v.get("/api/x", timeout=5)
                if r.status != 200:
                    bad.append(r.status)
            except Exception as e:  # noqa: BLE001
                bad.append(repr(e))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(25):
            rewrite(v, manifest(a.url, extra_routes="  - exact: /gen%d\n    respond: {body: g}\n" % i))
            v.reload()
            time.sleep(0.06)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert wait_for(lambda: v.get("/gen24").status == 200, 3)
    assert not bad, bad[:10]
    assert v.alive()


# ---- shutdown -------------------------------------------------------------------------


def test_sigterm_idle_exits_zero(v):
    v.signal(signal.SIGTERM)
    assert v.proc.wait(5) == 0, v.logs()


def test_sigterm_drains_inflight(verge, origin):
    a = origin("a")
    v = verge(manifest(a.url))
    t, result = start_slow_request(v, a)
    v.signal(signal.SIGTERM)
    time.sleep(0.3)
    assert v.alive(), "exited without waiting for the in-flight request"
    t.join(10)
    assert "e" not in result, (result, v.logs())
    assert result["r"].status == 200 and result["r"].json()["path"] == "/slow?delay=1.5"
    try:
        rc = v.proc.wait(5)
    except subprocess.TimeoutExpired:
        pytest.fail("still running 5s after the drained request\n" + v.logs())
    assert rc == 0, v.logs()


def test_sigterm_stops_accepting(verge, origin):
    a = origin("a")
    v = verge(manifest(a.url))
    t = threading.Thread(target=lambda: v.get("/api/slow?delay=1.5", timeout=10))
    t.start()
    assert wait_for(lambda: a.active > 0, 2)
    v.signal(signal.SIGTERM)
    time.sleep(0.3)

    def refused():
        try:
            r = v.get("/ping", timeout=2)
            return r.status == 503
        except OSError:
            return True

    assert refused(), "new connections still served while draining"
    t.join(10)


def test_sigterm_closes_idle_keepalive(verge, o):
    v = verge(manifest(o.url))
    c = RawConn(v.port)
    assert c.request("GET", "/ping").status == 200
    v.signal(signal.SIGTERM)
    try:
        assert v.proc.wait(5) == 0, v.logs()
    except subprocess.TimeoutExpired:
        pytest.fail("an idle keep-alive connection held up shutdown\n" + v.logs())
    finally:
        c.close()


# ---- workers ------------------------------------------------------------------------------


def threads_of(pid):
    return len(os.listdir("/proc/%d/task" % pid))


def test_workers(verge, origin):
    a = origin("a", delay=0.02)
    v1 = verge(manifest(a.url), workers=1)
    v4 = verge(manifest(a.url), workers=4)
    assert threads_of(v4.proc.pid) >= threads_of(v1.proc.pid) + 3, (threads_of(v1.proc.pid),
                                                                     threads_of(v4.proc.pid))
    v2 = verge(manifest(a.url), workers=2)

    def one(i):
        return v2.get("/api/w%d" % i).status

    with concurrent.futures.ThreadPoolExecutor(20) as ex:
        statuses = list(ex.map(one, range(200)))
    assert statuses == [200] * 200
    m = v2.metrics()
    assert metric_sum(m, "verge_requests_total", app="ops", status="200") == 200


def test_workers_share_health_state(verge, origin):
    a, b = origin("a"), origin("b")
    text = """\
name: ops
origins:
  api:
    servers: ["%s", "%s"]
    %s
routes:
  - path: /api
    proxy: api
""" % (a.url, b.url, HEALTH)
    v = verge(text, workers=3)
    b.health_status = 500
    time.sleep(0.6)
    a.reset()
    b.reset()
    for _ in range(30):
        assert v.get("/api/x").status == 200  # a new connection each: spread over workers
    assert b.count() == 0 and a.count() == 30
