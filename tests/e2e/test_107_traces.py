"""Traces: W3C traceparent continued and propagated to origins, a span per
stage, the keep rules (head sampling, errors, slow requests), the ring
behind GET /_verge/traces/ID, Server-Timing for developers, the trace id in
the access log, and OTLP/HTTP JSON export to a collector that works, fails
or is down."""

import http.server
import json
import threading
import time

from harness import free_port, metric_sum, wait_for

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00-%s-00f067aa0ba902b7-01" % TRACE
UNSAMPLED = "00-%s-00f067aa0ba902b7-00" % TRACE


def app(origin_port):
    return """\
name: tr
origins:
  api:
    servers: ["http://127.0.0.1:%d"]
routes:
  - path: /api
    proxy: api
    strip_prefix: /api
  - exact: /boom
    handler: edge.lua:boom
  - exact: /ok
    handler: edge.lua:ok
""" % origin_port


EDGE = """\
function boom(req) error("kaboom") end
function ok(req) return {body = "ok\\n"} end
"""


TOKEN = ["--admin-token", "tok"]


def spans_of(v, trace, headers=None):
    r = v.get("/_verge/traces/" + trace, headers=headers or {"Authorization": "Bearer tok"})
    return r.status, (r.json() if r.status == 200 else None)


def test_incoming_trace_is_continued_and_reaches_the_origin(verge, origin):
    o = origin("a")
    v = verge(app(o.port), {"edge.lua": EDGE}, args=["--trace-sample", "1"] + TOKEN)
    r = v.get("/api/x", headers={"traceparent": PARENT, "tracestate": "vendor=1"})
    assert r.status == 200
    (rec,) = o.requests
    tp = rec.headers.get("traceparent")
    assert tp.startswith("00-%s-" % TRACE) and tp.endswith("-01"), tp
    assert tp.split("-")[2] != "00f067aa0ba902b7"  # verge's span, not the client's
    assert rec.headers.get("tracestate") == "vendor=1"
    status, recs = spans_of(v, TRACE)
    assert status == 200, status
    (t,) = recs
    assert t["app"] == "tr" and t["route"] == "/api" and t["status"] == 200
    names = [s["name"] for s in t["spans"]]
    for stage in ("request", "route", "upstream", "upstream_connect", "upstream_first_byte", "upstream_body"):
        assert stage in names, names
    root = t["spans"][0]
    assert root["parent_id"] == "00f067aa0ba902b7"  # joins the caller's span
    assert tp.split("-")[2] == root["span_id"]  # the origin's parent is verge's request span
    up = next(s for s in t["spans"] if s["name"] == "upstream")
    assert up["detail"] == "127.0.0.1:%d" % o.port
    assert all(s["start_us"] + s["duration_us"] <= root["duration_us"] + 1 for s in t["spans"])
    assert wait_for(lambda: any(l.get("path") == "/api/x" for l in v.access_log()), 5)  # flushed on a tick
    line = next(l for l in v.access_log() if l.get("path") == "/api/x")
    assert line["trace_id"] == TRACE


def test_keep_rules_errors_and_slow_requests_are_kept_unsampled(verge, origin):
    o = origin("a")
    v = verge(app(o.port), {"edge.lua": EDGE},
              args=["--trace-sample", "0", "--trace-slow", "150ms", "--trace-unsampled", "stages"] + TOKEN)
    fine = "00-%s-00f067aa0ba902b7-00" % ("1" * 32)
    failed = "00-%s-00f067aa0ba902b7-00" % ("2" * 32)
    slow = "00-%s-00f067aa0ba902b7-00" % ("3" * 32)
    assert v.get("/ok", headers={"traceparent": fine}).status == 200
    assert v.get("/boom", headers={"traceparent": failed}).status == 500
    assert v.get("/api/slow?delay=0.3", headers={"traceparent": slow}).status == 200
    assert spans_of(v, "1" * 32)[0] == 404  # not sampled, fine, fast: forgotten
    status, recs = spans_of(v, "2" * 32)
    assert status == 200 and recs[0]["error"] and recs[0]["status"] == 500
    handler = next(s for s in recs[0]["spans"] if s["name"] == "handler")
    assert handler["error"]
    status, recs = spans_of(v, "3" * 32)
    assert status == 200 and recs[0]["spans"][0]["duration_us"] >= 150000
    kept = metric_sum(v.metrics(), "verge_traces_kept_total")
    assert kept == 2, kept


def test_head_sampling_at_zero_keeps_no_fine_request(verge, origin):
    o = origin("a")
    v = verge(app(o.port), {"edge.lua": EDGE}, args=["--trace-sample", "0"])
    for _ in range(50):
        assert v.get("/ok").status == 200
    assert metric_sum(v.metrics(), "verge_traces_kept_total") == 0


def test_server_timing_for_developers_only(verge, origin):
    o = origin("a")
    v = verge(app(o.port), {"edge.lua": EDGE}, args=["--admin-token", "s3cret"])
    plain = v.get("/api/x")
    assert "server-timing" not in plain.headers and "traceresponse" not in plain.headers
    dbg = v.get("/api/x", headers={"X-Verge-Debug": "s3cret"})
    st = dbg.headers.get("server-timing")
    assert st and "upstream_first_byte;dur=" in st and "total;dur=" in st, st
    assert dbg.headers.get("traceresponse", "").startswith("00-")
    wrong = v.get("/api/x", headers={"X-Verge-Debug": "guess"})
    assert "server-timing" not in wrong.headers
    dev = verge(app(o.port), {"edge.lua": EDGE}, args=["--dev"])
    assert "server-timing" in dev.get("/ok").headers


def test_trace_lookup_needs_the_admin_token(verge, origin):
    o = origin("a")
    v = verge(app(o.port), {"edge.lua": EDGE}, args=["--admin-token", "s3cret", "--trace-sample", "1"])
    v.get("/api/x", headers={"traceparent": PARENT})
    assert spans_of(v, TRACE)[0] == 401
    assert spans_of(v, TRACE, headers={"Authorization": "Bearer nope"})[0] == 401
    assert spans_of(v, TRACE, headers={"Authorization": "Bearer s3cret"})[0] == 200
    assert spans_of(v, "xyz", headers={"Authorization": "Bearer s3cret"})[0] == 400


class Collector:
    """An OTLP/HTTP collector stand-in: records bodies, answers `status`."""

    def __init__(self, status=200, delay=0.0):
        self.status = status
        self.delay = delay
        self.bodies = []
        self.lock = threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(n)
                time.sleep(outer.delay)
                with outer.lock:
                    outer.bodies.append((self.path, self.headers.get("Content-Type"), body))
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self):
        with self.lock:
            out = []
            for path, ctype, body in self.bodies:
                assert path == "/v1/traces" and ctype == "application/json"
                doc = json.loads(body)
                for rs in doc["resourceSpans"]:
                    for ss in rs["scopeSpans"]:
                        out += ss["spans"]
            return out

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_export_to_a_collector(verge, origin):
    o = origin("a")
    c = Collector()
    try:
        v = verge(app(o.port), {"edge.lua": EDGE},
                  args=["--trace-sample", "1", "--trace-export", "http://127.0.0.1:%d/v1/traces" % c.port])
        v.get("/api/x", headers={"traceparent": PARENT})
        assert wait_for(lambda: any(s["traceId"] == TRACE for s in c.spans()), 5)
        mine = [s for s in c.spans() if s["traceId"] == TRACE]
        root = next(s for s in mine if s["kind"] == 2)
        assert root["parentSpanId"] == "00f067aa0ba902b7"
        assert int(root["endTimeUnixNano"]) >= int(root["startTimeUnixNano"]) > 1.6e18
        assert {"upstream", "route"} <= {s["name"] for s in mine}
        assert wait_for(lambda: metric_sum(v.metrics(), "verge_trace_export_spans_total", result="exported") >= 1, 5)
    finally:
        c.close()


def test_a_failing_or_dead_collector_never_slows_requests(verge, origin):
    o = origin("a")
    c = Collector(status=500)
    dead = free_port()
    try:
        v = verge(app(o.port), {"edge.lua": EDGE},
                  args=["--trace-sample", "1", "--trace-export", "http://127.0.0.1:%d/v1/traces" % c.port])
        w = verge(app(o.port), {"edge.lua": EDGE},
                  args=["--trace-sample", "1", "--trace-export", "http://127.0.0.1:%d/v1/traces" % dead])
        for node in (v, w):
            for _ in range(20):
                assert node.get("/ok").status == 200
        # each batch is tried 1 + 3 times (0.2 s, 0.4 s, 0.8 s apart), then dropped and counted
        for node in (v, w):
            assert wait_for(lambda: metric_sum(node.metrics(), "verge_trace_export_spans_total",
                                                   result="dropped_failed") >= 1, 10), node.metrics()
            assert metric_sum(node.metrics(), "verge_trace_export_failures_total") >= 4
        assert len(c.bodies) >= 4  # the failing collector was asked, and asked again
        assert v.get("/ok").status == 200
    finally:
        c.close()


def test_verge_trace_finds_a_trace_across_nodes_over_nats(verge, verge_bin, nats_server, origin):
    """A request through node A, proxied to node B, proxied to an origin:
    one trace, a record on each node; `verge trace` gathers both over NATS
    and nests B's request under A's."""
    import subprocess
    n = nats_server()
    o = origin("a")
    b = verge(app(o.port), {"edge.lua": EDGE}, args=["--nats", n.url, "--node-id", "node-b"])
    a = verge(app(b.port).replace("strip_prefix: /api", "strip_prefix: /nothing"), {"edge.lua": EDGE},
              args=["--nats", n.url, "--node-id", "node-a", "--trace-sample", "1"])
    r = a.get("/api/x", headers={"traceparent": PARENT})
    assert r.status == 200, r
    out = subprocess.run([verge_bin, "trace", TRACE, "--nats", n.url, "--json"], capture_output=True, timeout=20)
    assert out.returncode == 0, out.stderr
    recs = json.loads(out.stdout)
    assert sorted(x["node"] for x in recs) == ["node-a", "node-b"], recs
    ra = next(x for x in recs if x["node"] == "node-a")
    rb = next(x for x in recs if x["node"] == "node-b")
    assert rb["spans"][0]["parent_id"] == ra["spans"][0]["span_id"]  # B continues A's trace (sampled flag too)
    human = subprocess.run([verge_bin, "trace", TRACE, "--nats", n.url], capture_output=True, timeout=20, text=True)
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert lines[0].startswith("trace %s: " % TRACE)
    b_root = next(l for l in lines if "node-b" in l and l.lstrip().startswith("request"))
    assert b_root.startswith("  ")  # nested under node A's request
    missing = subprocess.run([verge_bin, "trace", "f" * 32, "--nats", n.url, "--wait", "200ms"],
                             capture_output=True, timeout=20, text=True)
    assert missing.returncode == 1 and "no node holds" in missing.stderr


def test_tracing_off_records_nothing_and_passes_traceparent_through(verge, origin):
    o = origin("a")
    v = verge(app(o.port), {"edge.lua": EDGE}, args=["--trace-sample", "off", "--dev"])
    r = v.get("/api/x", headers={"traceparent": PARENT})
    assert r.status == 200 and "server-timing" not in r.headers
    assert o.requests[0].headers.get("traceparent") == PARENT  # untouched: verge is not in the trace
    assert v.get("/boom").status == 500
    assert spans_of(v, TRACE)[0] == 404
    assert metric_sum(v.metrics(), "verge_traces_kept_total") == 0


CHAIN = """\
name: chain
origins:
  api:
    servers: ["http://127.0.0.1:%d"]
subscriptions:
  - subject: orders.*
    handler: edge.lua:on_order
routes:
  - exact: /order
    handler: edge.lua:order
  - exact: /ask
    handler: edge.lua:ask
  - exact: /f
    handler: edge.lua:f
"""
CHAIN_LUA = """\
function order(req)
  verge.publish("orders.new", "1")
  return {body = "queued\\n"}
end
function ask(req)
  local answer, err = verge.request("orders.ask", "2", {timeout = 2000})
  return {body = tostring(answer) .. "\\n"}
end
function on_order(msg)
  return "done"
end
function f(req)
  local r = verge.fetch("api", {path = "/x"})
  return {status = r.status, body = "fetched\\n"}
end
"""


def by_name(rec, name):
    return next(s for s in rec["spans"] if s["name"] == name)


def test_a_message_handler_joins_the_trace_that_published(verge, origin):
    o = origin("a")
    v = verge(CHAIN % o.port, {"edge.lua": CHAIN_LUA}, args=["--trace-sample", "1"] + TOKEN)
    assert v.get("/order", headers={"traceparent": PARENT}).body == b"queued\n"
    assert wait_for(lambda: spans_of(v, TRACE)[0] == 200 and len(spans_of(v, TRACE)[1]) == 2, 5)
    recs = spans_of(v, TRACE)[1]
    req = next(r for r in recs if r["route"] == "/order")
    msg = next(r for r in recs if r["route"] == "sub:orders.*")
    assert msg["spans"][0]["name"] == "message" and msg["spans"][0]["detail"] == "orders.new"
    assert msg["spans"][0]["parent_id"] == by_name(req, "handler")["span_id"]  # across the bus
    assert by_name(msg, "handler")["parent_id"] == msg["spans"][0]["span_id"]
    # request/reply too: the answering handler is in the asker's trace
    tp2 = "00-%s-00f067aa0ba902b7-01" % ("5" * 32)
    assert v.get("/ask", headers={"traceparent": tp2}).body == b"done\n"
    assert wait_for(lambda: spans_of(v, "5" * 32)[0] == 200 and len(spans_of(v, "5" * 32)[1]) == 2, 5)


def test_fetch_subrequests_are_spans_and_origins_join(verge, origin):
    o = origin("a")
    v = verge(CHAIN % o.port, {"edge.lua": CHAIN_LUA}, args=["--trace-sample", "1"] + TOKEN)
    assert v.get("/f", headers={"traceparent": PARENT}).body == b"fetched\n"
    (rec,) = spans_of(v, TRACE)[1]
    fetch = by_name(rec, "fetch")
    assert fetch["detail"] == "api" and fetch["duration_us"] > 0
    tp = o.requests[0].headers.get("traceparent")
    assert tp == "00-%s-%s-01" % (TRACE, fetch["span_id"]), tp


def test_trace_context_crosses_nats_in_a_message_header(verge, verge_bin, nats_server, origin):
    import subprocess
    n = nats_server()
    o = origin("a")
    a = verge(CHAIN % o.port, {"edge.lua": CHAIN_LUA}, args=["--nats", n.url, "--trace-sample", "1"])
    b = verge(CHAIN % o.port, {"edge.lua": CHAIN_LUA}, args=["--nats", n.url, "--trace-sample", "1"])
    assert a.get("/ask", headers={"traceparent": PARENT}).body == b"done\n"  # answered by a or b, over NATS

    def records():
        out = subprocess.run([verge_bin, "trace", TRACE, "--nats", n.url, "--json", "--wait", "300ms"],
                             capture_output=True, timeout=20)
        return json.loads(out.stdout) if out.returncode == 0 else []
    assert wait_for(lambda: len(records()) == 2, 5)
    recs = records()
    req = next(r for r in recs if r["route"] == "/ask")
    msg = next(r for r in recs if r["route"] == "sub:orders.*")
    assert msg["spans"][0]["parent_id"] == by_name(req, "handler")["span_id"]
    assert b.alive()


def test_a_slow_collector_costs_the_exporter_not_the_requests(verge, origin):
    o = origin("a")
    c = Collector(delay=3.0)  # longer than the export timeout (2 s): every post fails, slowly
    try:
        v = verge(app(o.port), {"edge.lua": EDGE},
                  args=["--trace-sample", "1", "--trace-export", "http://127.0.0.1:%d/v1/traces" % c.port])
        worst = 0.0
        for _ in range(100):
            t0 = time.monotonic()
            assert v.get("/ok").status == 200
            worst = max(worst, time.monotonic() - t0)
        assert worst < 0.5, worst  # requests never wait for the exporter
        assert wait_for(lambda: metric_sum(v.metrics(), "verge_trace_export_failures_total") >= 1, 10)
    finally:
        c.close()


STAGES = """\
name: stages
hooks: {on_response: edge.lua:after}
routes:
  - exact: /waf
    handler: edge.lua:waf
"""
STAGES_LUA = """\
function waf(req)
  local blocked = verge.kv.get("block/" .. req.client_ip)
  verge.log.info("checked", {blocked = tostring(blocked)})
  return {body = "ok\\n"}
end
function after(req, res)
  res.headers["x-after"] = "1"
  return res
end
"""


def test_every_stage_is_a_span(verge):
    v = verge(STAGES, {"edge.lua": STAGES_LUA}, args=["--trace-sample", "1"] + TOKEN)
    conn = v.conn()
    conn.request("GET", "/waf", headers={"traceparent": PARENT})
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("x-after") == "1"
    r.read()
    second = "00-%s-00f067aa0ba902b7-01" % ("6" * 32)
    conn.request("GET", "/waf", headers={"traceparent": second})
    conn.getresponse().read()
    (rec,) = spans_of(v, TRACE)[1]
    names = [s["name"] for s in rec["spans"]]
    for stage in ("request", "accept", "route", "handler", "kv.get", "on_response", "send"):
        assert stage in names, names
    assert by_name(rec, "kv.get")["parent_id"] == by_name(rec, "handler")["span_id"]  # the lookup is the Lua call's
    assert by_name(rec, "kv.get")["detail"] == "local"
    accept = by_name(rec, "accept")
    assert accept["start_us"] <= 0 or accept["start_us"] < by_name(rec, "route")["start_us"]
    (again,) = spans_of(v, "6" * 32)[1]
    assert "accept" not in [s["name"] for s in again["spans"]]  # the connection was set up once
    assert wait_for(lambda: any(l.get("msg") == "checked" for l in v.log_records()), 5)
    line = next(l for l in v.log_records() if l.get("msg") == "checked")
    assert line["trace_id"] == TRACE  # Lua's log line joins the trace


def test_unsampled_requests_keep_only_their_own_span_by_default(verge, origin):
    """Head sampling skipped it: only the request's span is timed (cheap), yet
    an error or a slow request is still kept, with status and duration."""
    o = origin("a")
    v = verge(app(o.port), {"edge.lua": EDGE}, args=["--trace-sample", "0"] + TOKEN)
    failed = "00-%s-00f067aa0ba902b7-00" % ("8" * 32)
    assert v.get("/boom", headers={"traceparent": failed}).status == 500
    assert v.get("/api/x", headers={"traceparent": "00-%s-00f067aa0ba902b7-00" % ("9" * 32)}).status == 200
    status, recs = spans_of(v, "8" * 32)
    assert status == 200 and recs[0]["error"] and recs[0]["status"] == 500
    assert [s["name"] for s in recs[0]["spans"]] == ["request"]
    assert spans_of(v, "9" * 32)[0] == 404
    tp = o.requests[0].headers.get("traceparent")  # still propagated, unsampled
    assert tp.startswith("00-%s-" % ("9" * 32)) and tp.endswith("-00"), tp
